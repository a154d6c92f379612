//! The command line: tokens, config errors, environment overrides.

use std::process::Command;

use crate::support::*;

#[test]
fn token_list_never_shows_secrets_and_revoke_by_owner_works() {
    let p = TestPatgate::start("");
    let a = p.mint("code:read", "acme", "1h");
    let b = p.mint("code:write,agentpools:read", "*", "30d");
    let out = p.cli(&["token", "list", "--json"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains(&a.token) && !text.contains(&b.token) && !text.contains("patg_"));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert!(v.as_array().unwrap().iter().all(|t| t["state"] == "active"));
    let table = String::from_utf8(p.cli(&["token", "list"]).stdout).unwrap();
    assert!(table.starts_with("ID") && table.contains(&a.id) && !table.contains("patg_"));

    let out = p.cli(&["token", "revoke", "--owner", "alice", "--all"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Revoked 2 token(s) of alice");
    let v: serde_json::Value = serde_json::from_slice(&p.cli(&["token", "list", "--json"]).stdout).unwrap();
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["state"] == "revoked" && t["revoked_by"].as_str().is_some_and(|a| a.starts_with("cli:") && a.contains('@'))));
    let out = p.cli(&["token", "revoke", "nosuchid"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token with id nosuchid"));
}

#[test]
fn bad_token_arguments_are_refused_clearly() {
    let p = TestPatgate::start("");
    for (args, want) in [
        (
            vec!["--scopes", "code:delete", "--orgs", "acme", "--expires-in", "1h"],
            "unknown scope `code:delete`",
        ),
        (
            vec!["--scopes", "code:read", "--orgs", "a/b", "--expires-in", "1h"],
            "invalid organization `a/b`",
        ),
        (
            vec!["--scopes", "code:read", "--orgs", "acme", "--expires-in", "soon"],
            "--expires-in",
        ),
    ] {
        let mut all = vec!["token", "create", "--name", "n", "--owner", "o"];
        all.extend(args);
        let out = p.cli(&all);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn a_bad_config_names_the_file_and_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout = \"forever\"\n[[routes]]\npath = \"/{org}/**\"\nupstream = \"git-http-backend:r\"\nrules = \"git\"\n").unwrap();
    let out = Command::new(BIN).arg("--config").arg(&path).arg("check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3: server.header_read_timeout: `forever` is not a duration"),
        "{err}"
    );
    // The same file fixed through the environment.
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env("PATGATE__SERVER__HEADER_READ_TIMEOUT", "10s")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml: no such file"));
}

#[test]
fn the_environment_overrides_the_file() {
    // The file's listen address is invalid; the environment's is used.
    let p = TestPatgate::start_with_env("", &[("PATGATE__SERVER__LISTEN", "127.0.0.1:0")]);
    assert!(p.addr.port() != 0);
}

#[test]
fn json_logs_carry_one_access_event_per_request_without_secrets() {
    let p = TestPatgate::start("[log]\nformat = \"json\"\n");
    let t = p.mint_live("code:read", "acme");
    let r = http(
        p.addr,
        &format!(
            "GET /acme/x.git/config HTTP/1.1\r\nHost: h\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            basic("u", &t.token)
        ),
    );
    assert_eq!(r.status, 403);
    assert!(p.log_shows("\"url.path\":\"/acme/x.git/config\""), "{}", p.log());
    let log = p.log();
    assert!(!log.contains(&t.token));
    let access: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "patgate::access" && v["url.path"] == "/acme/x.git/config")
        .collect();
    assert_eq!(access.len(), 1, "{log}");
    assert_eq!(access[0]["http.status"], 403);
    assert_eq!(access[0]["token.id"], t.id.as_str());
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_then_exits_zero() {
    let up = spawn_upstream(false);
    let slow = spawn_upstream(true);
    let extra = format!(
        "[[routes]]\npath = \"/{{org}}/_apis/slow/**\"\nupstream = \"http://{}\"\nresponse_timeout = \"1s\"\nrules = [ {{ scope = \"agentpools:read\" }} ]\n\n[[routes]]\npath = \"/{{org}}/_apis/fast/**\"\nupstream = \"http://{}\"\nrules = [ {{ scope = \"agentpools:read\" }} ]\n",
        slow.addr, up.addr
    );
    let mut p = TestPatgate::start(&extra);
    let t = p.mint_live("agentpools:read", "acme");
    // An idle keep-alive connection does not hold the shutdown up.
    let mut idle = std::net::TcpStream::connect(p.addr).unwrap();
    use std::io::Write;
    write!(
        idle,
        "GET /acme/_apis/fast/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\n\r\n",
        t.token
    )
    .unwrap();
    // A request in flight (its upstream answers only by the 1 s timeout) is answered.
    let addr = p.addr;
    let token = t.token.clone();
    let in_flight = std::thread::spawn(move || {
        http(
            addr,
            &format!("GET /acme/_apis/slow/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (status, _) = p.terminate();
    assert!(status.success(), "{status:?}\n{}", p.log());
    assert_eq!(in_flight.join().unwrap().status, 504);
    assert!(p.log_shows("Stopped"), "{}", p.log());
    // Uses seen by the server were written back on the way out.
    let v: serde_json::Value = serde_json::from_slice(&p.cli(&["token", "list", "--json"]).stdout).unwrap();
    assert!(v[0]["last_used_at"].is_string(), "{v}");
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn show_update_regenerate_and_filters_on_the_store() {
    let p = TestPatgate::start("");
    p.init_repo("acme", "demo");
    let t = p.mint_live("code:write", "acme,globex");
    let other = p.mint("code:read", "acme", "1h");
    p.cli(&["token", "revoke", &other.id]);

    let v = json_of(&p.cli(&["token", "show", &t.id, "--json"]));
    assert_eq!((v["state"].as_str(), v["scopes"][0].as_str()), (Some("active"), Some("code:write")));

    // Narrowing works; widening is refused and names the field.
    let v = json_of(&p.cli(&[
        "token",
        "update",
        &t.id,
        "--scopes",
        "code:read",
        "--orgs",
        "acme",
        "--name",
        "ro",
        "--json",
    ]));
    assert_eq!((v["name"].as_str(), v["scopes"][0].as_str()), (Some("ro"), Some("code:read")));
    let out = p.cli(&["token", "update", &t.id, "--scopes", "code:write"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("scopes: may only be narrowed"));

    let revoked = json_of(&p.cli(&["token", "list", "--state", "revoked", "--json"]));
    assert_eq!(revoked.as_array().unwrap().len(), 1);
    assert_eq!(revoked[0]["id"], other.id.as_str());
    let active = json_of(&p.cli(&["token", "list", "--owner", "alice", "--state", "active", "--json"]));
    assert_eq!(active.as_array().unwrap().len(), 1);

    // A regenerated token keeps its id; the old secret is refused, the new one admitted.
    let v = json_of(&p.cli(&["token", "regenerate", &t.id, "--json"]));
    assert_eq!(v["id"], t.id.as_str());
    let fresh = v["token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, t.token);
    let probe = |secret: &str| {
        let req = format!(
            "GET /acme/demo.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            basic("", secret)
        );
        http(p.addr, &req).status
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while probe(&fresh) != 200 || probe(&t.token) != 401 {
        assert!(std::time::Instant::now() < deadline, "regeneration never reached the server");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = p.cli(&["token", "regenerate", &other.id]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is revoked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn admin_url_mode_needs_a_token_and_a_reachable_server() {
    let out = Command::new(BIN)
        .args(["token", "--admin-url", "http://127.0.0.1:1", "list"])
        .env_remove("PATGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PATGATE_ADMIN_TOKEN"));
    let out = Command::new(BIN)
        .args(["token", "--admin-url", "http://127.0.0.1:1", "list"])
        .env("PATGATE_ADMIN_TOKEN", "patg_whatever")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot reach the admin API at http://127.0.0.1:1") && !err.contains("patg_"),
        "{err}"
    );
}

#[test]
fn token_commands_work_through_the_admin_api() {
    let p = TestPatgate::start("");
    let admin = p.mint_caller("root", "tokens:admin");
    let manage = p.mint_caller("carol", "tokens:manage,code:manage,agentpools:manage");
    let url = format!("http://{}", p.admin_addr());
    let token_file = p.dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{}\n", admin.token)).unwrap();
    let as_admin = |args: &[&str]| {
        Command::new(BIN)
            .args(["token", "--admin-url", &url, "--token-file"])
            .arg(&token_file)
            .args(args)
            .env_remove("PATGATE_CONFIG")
            .output()
            .unwrap()
    };
    let as_carol = |args: &[&str]| {
        Command::new(BIN)
            .args(["token", "--admin-url", &url])
            .args(args)
            .env("PATGATE_ADMIN_TOKEN", &manage.token)
            .output()
            .unwrap()
    };

    // Carol makes her own token; the owner defaults to the caller.
    let v = json_of(&as_carol(&[
        "create",
        "--name",
        "laptop",
        "--scopes",
        "code:read",
        "--orgs",
        "acme",
        "--json",
    ]));
    assert_eq!(v["owner"], "carol");
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(v["token"].as_str().unwrap().starts_with("patg_"));
    // She cannot make one for someone else; the refusal is the API's one line.
    let out = as_carol(&[
        "create",
        "--name",
        "x",
        "--owner",
        "dave",
        "--scopes",
        "code:read",
        "--orgs",
        "acme",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let v = json_of(&as_carol(&["update", &id, "--name", "old laptop", "--json"]));
    assert_eq!(v["name"], "old laptop");
    let v = json_of(&as_carol(&["regenerate", &id, "--json"]));
    assert_eq!(v["id"], id.as_str());

    // The admin sees every owner; the table never shows a secret.
    let all = json_of(&as_admin(&["list", "--json"]));
    assert_eq!(all.as_array().unwrap().len(), 3);
    let table = String::from_utf8(as_admin(&["list", "--owner", "carol"]).stdout).unwrap();
    assert!(table.contains(&id) && !table.contains("patg_"), "{table}");
    let out = as_admin(&["revoke", &id]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("Revoked token {id}"));
    let out = as_admin(&["revoke", "--owner", "carol", "--all"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Revoked 1 token(s) of carol");
    let out = as_admin(&["show", "nosuchid"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("404") && !err.contains(&admin.token), "{err}");
}

/// Runs patgate in an empty folder with the config pointing nowhere: what these commands
/// print comes from the command line's definition alone.
fn without_config(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(BIN)
        .args(args)
        .current_dir(dir.path())
        .env("PATGATE_CONFIG", dir.path().join("missing.toml"))
        .output()
        .unwrap()
}

#[test]
fn completions_for_bash_zsh_and_fish_name_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F _patgate"),
        ("zsh", "#compdef patgate"),
        ("fish", "complete -c patgate"),
    ] {
        let out = without_config(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: no `{marker}`:\n{script}");
        for word in [
            "serve",
            "check-config",
            "token",
            "create",
            "revoke",
            "completions",
            "man",
            "config",
            "expires-in",
        ] {
            assert!(script.contains(word), "{shell} completions do not name {word}");
        }
        std::fs::write(dir.path().join(shell), script).unwrap();
    }
    let bash = dir.path().join("bash");
    let out = Command::new("bash").arg("-n").arg(&bash).output().unwrap();
    assert!(out.status.success(), "bash -n: {}", String::from_utf8_lossy(&out.stderr));
    // And it completes: `patgate to<TAB>` and `patgate token re<TAB>`.
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            r#"source "$1"
            COMP_WORDS=(patgate to); COMP_CWORD=1; _patgate patgate to patgate; echo "${COMPREPLY[*]}"
            COMP_WORDS=(patgate token re); COMP_CWORD=2; _patgate patgate re token; echo "${COMPREPLY[*]}""#,
        )
        .arg("bash")
        .arg(&bash)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "token\nregenerate revoke\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unknown_shell_is_refused_with_the_valid_ones() {
    let out = without_config(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
    for shell in ["bash", "zsh", "fish"] {
        assert!(err.contains(shell), "{err}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn the_man_page_is_roff_that_names_the_commands() {
    let out = without_config(&["man"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains("\n.TH patgate 1 "), "{page}");
    assert!(page.contains("\n.SH SYNOPSIS\n") && page.contains("\n.SH SUBCOMMANDS\n"), "{page}");
    for command in ["serve", "check\\-config", "token", "completions"] {
        assert!(page.contains(&format!("patgate\\-{command}(1)")), "no {command}:\n{page}");
    }

    // With --dir: one page per command, subcommands of subcommands too, no help page.
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let out = without_config(&["man", "--dir", pages.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut names: Vec<String> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for want in [
        "patgate.1",
        "patgate-serve.1",
        "patgate-token.1",
        "patgate-token-create.1",
        "patgate-man.1",
    ] {
        assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
    let create = std::fs::read_to_string(pages.join("patgate-token-create.1")).unwrap();
    assert!(
        create.contains(".TH patgate-token-create 1 ") && create.contains("\\-\\-expires\\-in"),
        "{create}"
    );
}

#[test]
fn version_names_the_commit_and_the_build_day() {
    let out = without_config(&["--version"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).unwrap();
    // patgate 0.1.0 (1a2b3c4 2026-12-06), or (1a2b3c4-dirty ...), or (unknown ...) without git.
    let rest = line
        .strip_prefix(&format!("patgate {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("{line:?}"));
    let (commit, day) = rest.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned());
    match head {
        Some(head) => assert!(commit == head || commit == format!("{head}-dirty"), "{commit} is not HEAD {head}"),
        None => assert_eq!(commit, "unknown"),
    }
    let parts: Vec<&str> = day.split('-').collect();
    assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [4, 2, 2], "{day}");
    assert!(parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())), "{day}");
    assert_eq!(without_config(&["-V"]).stdout, line.as_bytes());
}
