//! The messages a new user meets in the first hour: a mistake in the file or in an
//! environment variable, no config where patgate looks, a port in use, a lifespan in a
//! unit patgate does not know. Each names what the user must change.

use std::net::TcpListener;
use std::process::{Command, Output};

use crate::support::*;

const ROUTE: &str = "[[routes]]\npath = \"/{org}/**\"\nupstream = \"git-http-backend:repos\"\nrules = \"git\"\n";

/// Runs `patgate --config FILE ARGS` with `toml` in FILE and the given variables; no
/// other `PATGATE` variable of the test's own environment gets through.
fn run(toml: &str, args: &[&str], env: &[(&str, &str)]) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("patgate.toml");
    std::fs::write(&path, toml).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir.path()).arg("--config").arg(&path).args(args);
    clear_patgate_env(&mut cmd);
    cmd.envs(env.iter().copied());
    (cmd.output().unwrap(), path.display().to_string())
}

fn clear_patgate_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PATGATE") {
            cmd.env_remove(k);
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_variable_s_mistake_names_the_variable() {
    let (out, file) = run(ROUTE, &["check-config"], &[("PATGATE__SERVER__LISTN", "1")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: environment variable PATGATE__SERVER__LISTN: server.listn: unknown field `listn`"),
        "{err}"
    );
    assert!(!err.contains(&file), "the file is not to blame: {err}");

    let (out, _) = run(ROUTE, &["check-config"], &[("PATGATE__SERVER__LISTEN", "localhost:22080")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: environment variable PATGATE__SERVER__LISTEN: server.listen: `localhost:22080` is not an address"),
        "{err}"
    );
    assert!(err.contains("a host name is not accepted: write an IP address"), "{err}");
}

#[test]
fn a_file_s_mistake_names_its_line_and_key() {
    let (out, file) = run(
        &format!("{ROUTE}\n[server]\nlisten = \"127.0.0.1:0\"\nlistn = 1\n"),
        &["check-config"],
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with(&format!("error: {file}:8: server.listn: unknown field `listn`")),
        "{err}"
    );

    // A syntax error: one line, with its line and column, and nothing after the reason.
    let (out, file) = run(&format!("{ROUTE}\n[server]\nlisten = \"127.0.0.1:0\n"), &["check-config"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.starts_with(&format!("error: {file}:7: ")), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.trim_end().ends_with(')') && err.contains("(column "), "{err}");
    assert!(!err.contains("` in "), "{err}");
}

#[test]
fn no_config_here_says_how_to_name_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir.path()).arg("check-config");
    clear_patgate_env(&mut cmd);
    let out = cmd.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let here = dir.path().canonicalize().unwrap();
    assert!(
        err.starts_with(&format!("error: config/patgate.toml: no such file under {}", here.display())),
        "{err}"
    );
    assert!(err.contains("--config FILE") && err.contains("PATGATE_CONFIG"), "{err}");
}

#[test]
fn a_port_in_use_names_the_key_that_asked_for_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("[store]\nurl = \"sqlite://{}\"\n", dir.path().join("p.db").display());

    let toml = format!("[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"{port}\"\n{store}{ROUTE}");
    let (out, file) = run(&toml, &["serve"], &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("error: {file}:4: admin.listen: cannot listen on {port}: ")),
        "{err}"
    );
    assert!(err.contains("in use"), "{err}");

    let toml = format!("[admin]\nenabled = false\n{store}{ROUTE}");
    let (out, _) = run(&toml, &["serve"], &[("PATGATE__SERVER__LISTEN", &port.to_string())]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "error: environment variable PATGATE__SERVER__LISTEN: server.listen: cannot listen on {port}: "
        )),
        "{err}"
    );
}

#[test]
fn a_lifespan_in_an_unknown_unit_is_refused_with_the_units() {
    let p = TestPatgate::start("");
    for lifespan in ["1month", "10y", "6m"] {
        let out = p.cli(&[
            "token",
            "create",
            "--name",
            "n",
            "--owner",
            "o",
            "--scopes",
            "code:read",
            "--orgs",
            "acme",
            "--expires-in",
            lifespan,
        ]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{lifespan}: {err}");
        assert!(err.contains("--expires-in"), "{err}");
        assert!(err.contains("s (seconds), h (hours), d (days), w (weeks)"), "{err}");
    }
    let ok = p.cli(&[
        "token",
        "create",
        "--name",
        "n",
        "--owner",
        "o",
        "--scopes",
        "code:read",
        "--orgs",
        "acme",
        "--expires-in",
        "2w",
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));

    // The admin API reads lifespans the same way.
    let admin = p.mint_caller("alice", "tokens:manage,code:manage,agentpools:manage");
    let body = serde_json::json!({"name": "n", "scopes": ["code:read"], "orgs": ["acme"], "expires_in": "1month"});
    let a = p.api("POST", "/admin/v1/tokens", Some(&admin.token), Some(&body));
    assert_eq!(a.status, 400, "{:?}", a.raw);
    assert!(a.error().contains("s (seconds), h (hours), d (days), w (weeks)"), "{}", a.error());
}
