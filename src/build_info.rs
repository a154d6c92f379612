//! What this binary is: its version, the commit it was built from and the build day, as
//! `build.rs` found them. Read by `--version`, the man page and the start-up log; it holds
//! constants only and computes nothing at run time.

/// The crate's version, e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The short hash of the commit built from, with `-dirty` when the sources differed from it;
/// `unknown` when built without git or `.git` (unless `PATGATE_BUILD_COMMIT` named it).
pub const COMMIT: &str = env!("PATGATE_COMMIT");

/// The build day in UTC, `YYYY-MM-DD` (from `SOURCE_DATE_EPOCH` when that is set).
pub const BUILD_DATE: &str = env!("PATGATE_BUILD_DATE");

/// The version as `--version` shows it: `0.1.0 (1a2b3c4 2026-12-06)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("PATGATE_COMMIT"),
    " ",
    env!("PATGATE_BUILD_DATE"),
    ")"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_long_version_names_version_commit_and_day() {
        assert_eq!(LONG_VERSION, format!("{VERSION} ({COMMIT} {BUILD_DATE})"));
        assert!(!COMMIT.is_empty() && !COMMIT.contains(char::is_whitespace), "{COMMIT}");
        let day: Vec<&str> = BUILD_DATE.split('-').collect();
        assert_eq!(day.iter().map(|p| p.len()).collect::<Vec<_>>(), [4, 2, 2], "{BUILD_DATE}");
        assert!(day.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())), "{BUILD_DATE}");
    }
}
