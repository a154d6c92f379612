//! Build information for `patgate --version` and the start-up log: the commit the binary is
//! built from and the build day, as `PATGATE_COMMIT` and `PATGATE_BUILD_DATE` for
//! `src/build_info.rs`. It must stay cheap: it reruns only when HEAD moves or when a file that
//! goes into the binary changes (which recompiles the crate anyway), never on a second
//! `cargo build` of an unchanged tree.
//!
//! - Commit: `PATGATE_BUILD_COMMIT` if set (for builds without `.git`, such as the Docker
//!   build context); else `git rev-parse --short HEAD`, with `-dirty` when the binary's sources
//!   (`src/`, `build.rs`, `Cargo.toml`, `Cargo.lock`) differ from that commit; else `unknown`.
//! - Date: the UTC day of `SOURCE_DATE_EPOCH` if set and not empty (reproducible builds), else
//!   of now.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// What goes into the binary: an edit here can make the tree dirty, and recompiles patgate anyway.
const SOURCES: [&str; 4] = ["src", "build.rs", "Cargo.toml", "Cargo.lock"];

fn main() {
    println!("cargo:rerun-if-env-changed=PATGATE_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    for path in SOURCES {
        println!("cargo:rerun-if-changed={path}");
    }
    let commit = match std::env::var("PATGATE_BUILD_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => git_commit().unwrap_or_else(|| "unknown".into()),
    };
    println!("cargo:rustc-env=PATGATE_COMMIT={commit}");
    println!("cargo:rustc-env=PATGATE_BUILD_DATE={}", build_date());
}

/// The short hash of HEAD, `-dirty` if the sources differ from it; None without git or `.git`.
fn git_commit() -> Option<String> {
    let hash = git(&["rev-parse", "--short", "HEAD"])?;
    // HEAD moves on commit, checkout and reset: watch it and the branch it points to. Only
    // files that exist: cargo reruns a build script on every build while a watched file is missing.
    let mut watch = vec![git_path("HEAD")?];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let loose = git_path(&branch)?;
        watch.push(if loose.exists() { loose } else { git_path("packed-refs")? });
    }
    for path in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    // GIT_OPTIONAL_LOCKS=0: status does not refresh the index behind a concurrent git command.
    let mut status = vec!["status", "--porcelain", "--"];
    status.extend(SOURCES);
    let dirty = !git(&status)?.is_empty();
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}

/// Where git keeps `name` (HEAD, a ref, packed-refs), worktrees included.
fn git_path(name: &str) -> Option<PathBuf> {
    git(&["rev-parse", "--git-path", name]).map(|p| Path::new(env!("CARGO_MANIFEST_DIR")).join(p))
}

/// A git command's trimmed stdout, run in the package's folder; None if it cannot run or fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_owned())
}

/// The build day, YYYY-MM-DD in UTC.
fn build_date() -> String {
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse::<i64>()
            .unwrap_or_else(|_| panic!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds")),
        _ => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().try_into().unwrap_or(i64::MAX)),
    };
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, http://howardhinnant.github.io/date_algorithms.html).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}
