//! Repository patterns and address ranges (`patgate::auth::restrictions`): any text is
//! refused or read into a value that prints back to a text that reads the same; a parsed
//! pattern covers itself and matches what it prints; matching never panics, whatever the
//! repository segment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patgate::auth::restrictions::{AllowFrom, Repos};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line is the list, the rest a repository segment and an address to try.
    let (list, probe) = text.split_once('\n').unwrap_or((text, "x"));
    if let Ok(repos) = Repos::parse(list) {
        let again = Repos::parse(&repos.to_string()).expect("a printed list reads back");
        assert_eq!(again, repos);
        assert!(repos.is_subset_of(&repos));
        if let Repos::List(patterns) = &repos {
            for p in patterns {
                let shown = p.to_string();
                let (org, name) = shown.split_once('/').unwrap();
                if !name.contains('*') {
                    assert!(p.matches(org, name), "{shown}");
                    if !name.ends_with(".git") {
                        assert!(p.matches(org, &format!("{name}.git")), "{shown}");
                    }
                }
                let _ = p.matches(org, probe);
            }
        }
        let _ = repos.admits("acme", probe);
    }
    if let Ok(ranges) = AllowFrom::parse(list) {
        let again = AllowFrom::parse(&ranges.to_string()).expect("printed ranges read back");
        assert_eq!(again, ranges);
        assert!(ranges.is_subset_of(&ranges));
        if let Ok(ip) = probe.trim().parse() {
            let _ = ranges.admits(ip);
        }
    }
});
