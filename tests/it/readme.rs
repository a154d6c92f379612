//! The README renders: a table is one block of rows under its header, so that no row
//! after a stray paragraph or blank line shows as text.

#[test]
fn every_table_row_belongs_to_a_table() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut in_code = false;
    let mut orphans = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        if in_code || !line.starts_with('|') {
            continue;
        }
        let after_row = i > 0 && lines[i - 1].starts_with('|');
        let is_header = lines.get(i + 1).is_some_and(|next| next.starts_with("|---"));
        if !after_row && !is_header {
            orphans.push(format!("README.md:{}: {line}", i + 1));
        }
    }
    assert!(orphans.is_empty(), "rows outside a table:\n{}", orphans.join("\n"));
}
