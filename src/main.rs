//! The patgate binary: parses the command line, loads the config, and runs a command.
//! `completions` and `man` print what the command line itself defines, without a config.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use patgate::audit::{Action, Actor, AuditEntry, Outcome};
use patgate::auth::restrictions::{AllowFrom, Repos};
use patgate::auth::scope::ScopeSet;
use patgate::auth::Orgs;
use patgate::client::{AdminClient, AuditFilter, CreateRequest, RotateRequest, TokenView, UpdateRequest};
use patgate::config::{self, Config};
use patgate::store::{self, NewToken, Store, TokenUpdate};
use patgate::{app, build_info, telemetry};

/// A token-authenticating reverse proxy for self-hosted git and build infrastructure.
#[derive(Parser)]
#[command(version = build_info::LONG_VERSION, about)]
struct Cli {
    /// The config file.
    #[arg(long, global = true, env = "PATGATE_CONFIG", default_value = "config/patgate.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve,
    /// Load and validate the config, then exit.
    CheckConfig,
    /// Create, list, change and revoke tokens: in the store, or through a running
    /// server's admin API with --admin-url.
    Token(TokenArgs),
    /// Read the audit trail: in the store, or through a running server's admin API with
    /// --admin-url (which needs a token with auditlog:read).
    Audit(AuditArgs),
    /// Print the shell completion script for patgate.
    ///
    /// For example: patgate completions bash > ~/.local/share/bash-completion/completions/patgate
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print patgate's man page (roff), or write one page per command into a folder.
    ///
    /// For example: patgate man | gzip > /usr/local/share/man/man1/patgate.1.gz
    Man {
        /// Write patgate.1, patgate-serve.1, patgate-token-create.1, ... into this folder.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct TokenArgs {
    /// Work through this server's admin API (http://HOST:PORT) instead of on the store.
    /// The caller's token is read from PATGATE_ADMIN_TOKEN or --token-file.
    #[arg(long, env = "PATGATE_ADMIN_URL", global = true)]
    admin_url: Option<String>,
    /// A file holding the token for --admin-url (instead of PATGATE_ADMIN_TOKEN).
    #[arg(long, global = true, requires = "admin_url")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Args)]
struct AuditArgs {
    /// Work through this server's admin API (http://HOST:PORT) instead of on the store.
    /// The caller's token is read from PATGATE_ADMIN_TOKEN or --token-file.
    #[arg(long, env = "PATGATE_ADMIN_URL", global = true)]
    admin_url: Option<String>,
    /// A file holding the token for --admin-url (instead of PATGATE_ADMIN_TOKEN).
    #[arg(long, global = true, requires = "admin_url")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List audit entries, newest first.
    List(AuditListArgs),
}

#[derive(Args)]
struct AuditListArgs {
    /// Only entries at or after this time (RFC 3339, e.g. 2030-01-31T00:00:00Z).
    #[arg(long, value_parser = parse_time)]
    from: Option<i64>,
    /// Only entries before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    to: Option<i64>,
    /// Only this owner's entries.
    #[arg(long)]
    owner: Option<String>,
    /// Only this token's entries.
    #[arg(long)]
    token_id: Option<String>,
    /// Only entries with this outcome.
    #[arg(long, value_parser = ["success", "failure"])]
    outcome: Option<String>,
    /// Only entries of this action (create, update, regenerate, revoke, revoke_all,
    /// leak_report, policy_refusal, auth_refused, access, ...).
    #[arg(long, value_parser = parse_action)]
    action: Option<Action>,
    /// The most entries to print, newest first.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
    /// One JSON array of entries instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print its secret, this once.
    Create(CreateArgs),
    /// List tokens (never their secrets).
    List(ListArgs),
    /// Show one token.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Rename a token, narrow its scopes or organizations, or move its expiry.
    Update(UpdateArgs),
    /// Give a token a new secret under the same id; the old secret stops working at once.
    Regenerate {
        id: String,
        /// Print one JSON object with the token and its new secret.
        #[arg(long)]
        json: bool,
    },
    /// Give a token a new secret and a new expiry in one step. The old secret stops
    /// working at once, and if it is ever presented again the token is revoked (someone
    /// holds a secret they should not). A token with tokens:manage may rotate itself.
    Rotate {
        id: String,
        /// The new lifespan from now: a whole number and s, h, d or w (e.g. 30d). Needed on
        /// the store; through the admin API it defaults to the server's policy.
        #[arg(long, value_parser = parse_lifespan)]
        expires_in: Option<Duration>,
        /// Print one JSON object with the token and its new secret.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one token by id, or every token of an owner.
    Revoke(RevokeArgs),
}

#[derive(Args)]
struct CreateArgs {
    /// What the token is for.
    #[arg(long)]
    name: String,
    /// Who the token acts as; sent upstream as X-Patgate-User and REMOTE_USER. Needed on
    /// the store; through the admin API it defaults to the caller.
    #[arg(long)]
    owner: Option<String>,
    /// Comma-separated scopes, e.g. code:read,agentpools:read; `full` for all.
    #[arg(long, value_delimiter = ',', required = true)]
    scopes: Vec<String>,
    /// Comma-separated organizations, or '*' for all.
    #[arg(long)]
    orgs: String,
    /// Comma-separated repositories the token is limited to, as ORG/NAME patterns within
    /// its organizations (`acme/infra-*,acme/app`); all when left out (through the admin
    /// API, a caller without tokens:admin passes on its own).
    #[arg(long)]
    repos: Option<String>,
    /// Comma-separated client address ranges the token may be used from
    /// (`10.0.0.0/8,2001:db8::/32`); anywhere when left out (through the admin API, a
    /// caller without tokens:admin passes on its own).
    #[arg(long)]
    allow_from: Option<String>,
    /// Lifespan: a whole number and s, h, d or w (90s, 12h, 30d, 2w). Needed on the store;
    /// through the admin API it defaults to the server's policy.
    #[arg(long, value_parser = parse_lifespan)]
    expires_in: Option<Duration>,
    /// Print one JSON object with the token and its secret (`token`).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ListArgs {
    /// Only this owner's tokens.
    #[arg(long)]
    owner: Option<String>,
    /// Only tokens in this state.
    #[arg(long, value_parser = ["active", "expired", "revoked"])]
    state: Option<String>,
    /// One JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct UpdateArgs {
    id: String,
    #[arg(long)]
    name: Option<String>,
    /// The new scopes: a subset of the current ones.
    #[arg(long, value_delimiter = ',')]
    scopes: Option<Vec<String>>,
    /// The new organizations: a subset of the current ones.
    #[arg(long)]
    orgs: Option<String>,
    /// The new repository patterns: each within a current one.
    #[arg(long)]
    repos: Option<String>,
    /// The new client address ranges: each within a current one.
    #[arg(long)]
    allow_from: Option<String>,
    /// A new lifespan counted from now: a whole number and s, h, d or w (e.g. 30d).
    #[arg(long, value_parser = parse_lifespan)]
    expires_in: Option<Duration>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct RevokeTarget {
    /// The token's id.
    id: Option<String>,
    /// Revoke every live token of this owner (with --all).
    #[arg(long, requires = "all")]
    owner: Option<String>,
}

#[derive(Args)]
struct RevokeArgs {
    #[command(flatten)]
    target: RevokeTarget,
    /// With --owner: revoke all of that owner's tokens.
    #[arg(long, requires = "owner")]
    all: bool,
}

/// An RFC 3339 time, as Unix seconds.
fn parse_time(s: &str) -> Result<i64, String> {
    patgate::admin::request::parse_time(s).ok_or_else(|| format!("`{s}` is not an RFC 3339 time such as 2030-01-31T12:00:00Z"))
}

fn parse_action(s: &str) -> Result<Action, String> {
    Action::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        format!("use one of {}", names.join(", "))
    })
}

fn parse_lifespan(s: &str) -> Result<Duration, String> {
    patgate::auth::lifespan::parse(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // These print what the command line defines: no config, no runtime.
    let printed = match &cli.command {
        Command::Completions { shell } => Some(print_completions(*shell)),
        Command::Man { dir } => Some(print_man(dir.as_deref())),
        _ => None,
    };
    if let Some(result) = printed {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // Through the admin API the CLI needs no config file; everything else does.
    let config = match &cli.command {
        Command::Token(TokenArgs { admin_url: Some(_), .. }) | Command::Audit(AuditArgs { admin_url: Some(_), .. }) => None,
        _ => match config::load(&cli.config) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .and_then(|rt| rt.block_on(run(cli.command, config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Option<Config>) -> anyhow::Result<()> {
    match (command, config) {
        (Command::Serve, Some(config)) => {
            telemetry::init(&config.log);
            app::serve(config, shutdown_signal()).await?;
            Ok(())
        }
        (Command::CheckConfig, Some(config)) => {
            println!("{}: ok ({} routes)", config.source.display(), config.proxy.routes.iter().count());
            Ok(())
        }
        (Command::Token(t), config) => {
            let log = config.as_ref().map(|c| c.log.clone()).unwrap_or_default();
            telemetry::init(&telemetry::Config {
                filter: "warn".into(),
                ..log
            });
            let backend = match (&t.admin_url, config) {
                (Some(url), _) => Backend::Admin(Box::new(AdminClient::new(url, &admin_token(t.token_file.as_deref())?)?)),
                (None, Some(config)) => Backend::Store(Store::open(&config.store.location).await?),
                (None, None) => unreachable!("the config is loaded unless --admin-url is given"),
            };
            token(t.command, &backend).await
        }
        (Command::Audit(a), config) => {
            let log = config.as_ref().map(|c| c.log.clone()).unwrap_or_default();
            telemetry::init(&telemetry::Config {
                filter: "warn".into(),
                ..log
            });
            let backend = match (&a.admin_url, config) {
                (Some(url), _) => Backend::Admin(Box::new(AdminClient::new(url, &admin_token(a.token_file.as_deref())?)?)),
                (None, Some(config)) => Backend::Store(Store::open(&config.store.location).await?),
                (None, None) => unreachable!("the config is loaded unless --admin-url is given"),
            };
            audit(a.command, &backend).await
        }
        (Command::Completions { .. } | Command::Man { .. }, _) => unreachable!("printed before the config is loaded"),
        (_, None) => unreachable!("the config is loaded for serve and check-config"),
    }
}

fn print_completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "patgate", &mut out);
    write_stdout(&out)
}

/// The man page of patgate to stdout, or with `dir` one page per command (but `help`) into it.
fn print_man(dir: Option<&Path>) -> anyhow::Result<()> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let Some(dir) = dir else {
        let mut out = Vec::new();
        man_page(cmd).render(&mut out)?;
        return write_stdout(&out);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut todo = vec![cmd];
    while let Some(cmd) = todo.pop() {
        todo.extend(cmd.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
        let page = man_page(cmd);
        let path = dir.join(page.get_filename());
        let mut out = Vec::new();
        page.render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn man_page(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd)
        .date(build_info::BUILD_DATE)
        .source(format!("patgate {}", build_info::VERSION))
        .manual("patgate manual")
}

/// Writes all of `bytes`; a closed pipe (`patgate man | head`) is not an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow::Error::new(e).context("cannot write to stdout")),
        _ => Ok(()),
    }
}

/// The caller's token for --admin-url: from --token-file or PATGATE_ADMIN_TOKEN, never
/// from the command line (where other users could read it).
fn admin_token(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read --token-file {}", path.display()))?,
        None => std::env::var("PATGATE_ADMIN_TOKEN")
            .map_err(|_| anyhow::anyhow!("--admin-url needs a token: set PATGATE_ADMIN_TOKEN or give --token-file"))?,
    };
    let token = token.trim().to_owned();
    anyhow::ensure!(!token.is_empty(), "the admin token is empty");
    Ok(token)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("cannot listen for SIGTERM");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("Shutting down");
}

/// Where token commands are carried out: on the store directly (no policies: this is how
/// the first admin token is made), or through a running server's admin API.
enum Backend {
    Store(Store),
    Admin(Box<AdminClient>),
}

/// Who the store's event feed and `revoked_by` name for a change made by the CLI on the
/// store: `cli:USER@HOST`. The user is the login name the environment gives (or the
/// numeric uid): a hint for the audit trail, not an authentication, since whoever can
/// open the store can change any token anyway.
fn actor() -> String {
    use std::os::unix::fs::MetadataExt;
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty() && u.len() <= 64))
        .or_else(|| std::fs::metadata("/proc/self").ok().map(|m| format!("uid {}", m.uid())))
        .unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= 253)
        .unwrap_or_else(|| "unknown".into());
    let clean = |s: &str| -> String { s.chars().filter(|c| !c.is_control()).collect() };
    format!("cli:{}@{}", clean(&user), clean(&host))
}

impl Backend {
    /// At most `limit` audit entries, newest first.
    async fn audit(&self, a: &AuditListArgs) -> anyhow::Result<Vec<AuditEntry>> {
        let limit = a.limit as usize;
        match self {
            Backend::Store(store) => {
                let mut query = store::AuditQuery {
                    from: a.from.map(|s| s.saturating_mul(1000)),
                    to: a.to.map(|s| s.saturating_mul(1000)),
                    owner: a.owner.clone(),
                    token_id: a.token_id.clone(),
                    outcome: a.outcome.as_deref().and_then(Outcome::from_name),
                    action: a.action,
                    ..store::AuditQuery::default()
                };
                let mut out = Vec::new();
                loop {
                    query.limit = (limit - out.len()).min(store::MAX_PAGE);
                    let page = store.audit_page(&query).await?;
                    out.extend(page.entries);
                    match page.next {
                        Some(next) if out.len() < limit => query.after = Some(next),
                        _ => return Ok(out),
                    }
                }
            }
            Backend::Admin(api) => {
                let filter = AuditFilter {
                    from: a.from.map(store::format_time),
                    to: a.to.map(store::format_time),
                    owner: a.owner.clone(),
                    token_id: a.token_id.clone(),
                    outcome: a.outcome.clone(),
                    action: a.action.map(|a| a.as_str().to_owned()),
                };
                Ok(api.audit(&filter, limit).await?)
            }
        }
    }

    async fn create(&self, a: CreateArgs) -> anyhow::Result<(TokenView, String)> {
        let scopes = ScopeSet::parse(&a.scopes).context("--scopes")?;
        let orgs = Orgs::parse(&a.orgs).context("--orgs")?;
        let repos = a.repos.as_deref().map(Repos::parse).transpose().context("--repos")?;
        let allow_from = a.allow_from.as_deref().map(AllowFrom::parse).transpose().context("--allow-from")?;
        match self {
            Backend::Store(store) => {
                let new = NewToken {
                    name: a.name,
                    owner: a.owner.context("--owner is needed when working on the store")?,
                    orgs,
                    repos: repos.unwrap_or_default(),
                    allow_from: allow_from.unwrap_or_default(),
                    scopes,
                    lifespan: a.expires_in.context("--expires-in is needed when working on the store")?,
                };
                let created = store.create(new, &Actor::named(actor())).await?;
                Ok((TokenView::of(&created.record, store::now()), created.secret.expose().to_owned()))
            }
            Backend::Admin(api) => {
                let req = CreateRequest {
                    name: a.name,
                    owner: a.owner,
                    scopes: a.scopes,
                    orgs,
                    repos,
                    allow_from,
                    expires_in: a.expires_in.map(|d| humantime::format_duration(d).to_string()),
                };
                let w = api.create(&req).await?;
                Ok((w.token, w.secret))
            }
        }
    }

    async fn list(&self, owner: Option<String>, state: Option<String>) -> anyhow::Result<Vec<TokenView>> {
        match self {
            Backend::Store(store) => {
                let now = store::now();
                let all = store.list_all(owner).await?;
                Ok(all
                    .iter()
                    .filter(|r| state.as_deref().is_none_or(|s| r.state(now).as_str() == s))
                    .map(|r| TokenView::of(r, now))
                    .collect())
            }
            Backend::Admin(api) => Ok(api.list(owner.as_deref(), state.as_deref()).await?),
        }
    }

    async fn get(&self, id: &str) -> anyhow::Result<TokenView> {
        match self {
            Backend::Store(store) => Ok(TokenView::of(&store.get(id).await?, store::now())),
            Backend::Admin(api) => Ok(api.get(id).await?),
        }
    }

    async fn update(&self, a: UpdateArgs) -> anyhow::Result<TokenView> {
        let scopes = a.scopes.as_deref().map(ScopeSet::parse).transpose().context("--scopes")?;
        let orgs = a.orgs.as_deref().map(Orgs::parse).transpose().context("--orgs")?;
        let repos = a.repos.as_deref().map(Repos::parse).transpose().context("--repos")?;
        let allow_from = a.allow_from.as_deref().map(AllowFrom::parse).transpose().context("--allow-from")?;
        match self {
            Backend::Store(store) => {
                let update = TokenUpdate {
                    name: a.name,
                    scopes,
                    orgs,
                    repos,
                    allow_from,
                    expires_at: a
                        .expires_in
                        .map(|d| store::now().saturating_add(d.as_secs().min(i64::MAX as u64) as i64)),
                };
                let r = store.update(&a.id, update, &Actor::named(actor())).await?;
                Ok(TokenView::of(&r, store::now()))
            }
            Backend::Admin(api) => {
                let req = UpdateRequest {
                    name: a.name,
                    scopes: a.scopes,
                    orgs,
                    repos,
                    allow_from,
                    expires_in: a.expires_in.map(|d| humantime::format_duration(d).to_string()),
                };
                Ok(api.update(&a.id, &req).await?)
            }
        }
    }

    async fn regenerate(&self, id: &str) -> anyhow::Result<(TokenView, String)> {
        match self {
            Backend::Store(store) => {
                let c = store.regenerate(id, &Actor::named(actor())).await?;
                Ok((TokenView::of(&c.record, store::now()), c.secret.expose().to_owned()))
            }
            Backend::Admin(api) => {
                let w = api.regenerate(id).await?;
                Ok((w.token, w.secret))
            }
        }
    }

    async fn rotate(&self, id: &str, expires_in: Option<Duration>) -> anyhow::Result<(TokenView, String)> {
        match self {
            Backend::Store(store) => {
                let d = expires_in.context("--expires-in is needed when working on the store")?;
                let at = store::now().saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                let c = store.rotate(id, at, &Actor::named(actor())).await?;
                Ok((TokenView::of(&c.record, store::now()), c.secret.expose().to_owned()))
            }
            Backend::Admin(api) => {
                let req = RotateRequest {
                    expires_in: expires_in.map(|d| humantime::format_duration(d).to_string()),
                };
                let w = api.rotate(id, &req).await?;
                Ok((w.token, w.secret))
            }
        }
    }

    /// Revokes one token; says whether it was revoked already.
    async fn revoke(&self, id: &str) -> anyhow::Result<bool> {
        let before = self.get(id).await?;
        match self {
            Backend::Store(store) => {
                store.revoke(id, &Actor::named(actor())).await?;
            }
            Backend::Admin(api) => {
                api.revoke(id).await?;
            }
        }
        Ok(before.revoked_at.is_some())
    }

    async fn revoke_owner(&self, owner: &str) -> anyhow::Result<usize> {
        match self {
            Backend::Store(store) => Ok(store.revoke_owner(owner, &Actor::named(actor())).await?),
            Backend::Admin(api) => Ok(api.revoke_owner(owner).await?),
        }
    }
}

async fn token(command: TokenCommand, backend: &Backend) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(a) => {
            let json = a.json;
            let (t, secret) = backend.create(a).await?;
            if json {
                let mut v = serde_json::to_value(&t)?;
                v["token"] = secret.into();
                println!("{v}");
            } else {
                println!("Created token {} ({}) for {}", t.id, t.name, t.owner);
                print_secret(&t, &secret);
            }
        }
        TokenCommand::List(a) => {
            let all = backend.list(a.owner, a.state).await?;
            if a.json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                print_table(&all);
            }
        }
        TokenCommand::Show { id, json } => {
            let t = backend.get(&id).await?;
            if json {
                println!("{}", serde_json::to_string(&t)?);
            } else {
                print_table(std::slice::from_ref(&t));
            }
        }
        TokenCommand::Update(a) => {
            let json = a.json;
            let t = backend.update(a).await?;
            if json {
                println!("{}", serde_json::to_string(&t)?);
            } else {
                println!("Updated token {}", t.id);
                print_table(std::slice::from_ref(&t));
            }
        }
        TokenCommand::Regenerate { id, json } => {
            let (t, secret) = backend.regenerate(&id).await?;
            if json {
                let mut v = serde_json::to_value(&t)?;
                v["token"] = secret.into();
                println!("{v}");
            } else {
                println!(
                    "Regenerated token {} ({}) for {}; the old secret no longer works",
                    t.id, t.name, t.owner
                );
                print_secret(&t, &secret);
            }
        }
        TokenCommand::Rotate { id, expires_in, json } => {
            let (t, secret) = backend.rotate(&id, expires_in).await?;
            if json {
                let mut v = serde_json::to_value(&t)?;
                v["token"] = secret.into();
                println!("{v}");
            } else {
                println!(
                    "Rotated token {} ({}) for {}; the old secret no longer works, and its use would revoke the token",
                    t.id, t.name, t.owner
                );
                print_secret(&t, &secret);
            }
        }
        TokenCommand::Revoke(a) => {
            if let Some(id) = a.target.id {
                if backend.revoke(&id).await? {
                    println!("Token {id} was already revoked");
                } else {
                    println!("Revoked token {id}");
                }
            } else if let Some(owner) = a.target.owner {
                let n = backend.revoke_owner(&owner).await?;
                println!("Revoked {n} token(s) of {owner}");
            }
        }
    }
    Ok(())
}

fn print_secret(t: &TokenView, secret: &str) {
    println!("  scopes:  {}", t.scopes.join(","));
    println!("  orgs:    {}", t.orgs);
    if !t.repos.is_all() {
        println!("  repos:   {}", t.repos);
    }
    if !t.allow_from.is_anywhere() {
        println!("  from:    {}", t.allow_from);
    }
    println!("  expires: {}", t.expires_at);
    println!();
    println!("  {secret}");
    println!();
    println!("Copy the token now: it is shown only this once.");
}

async fn audit(command: AuditCommand, backend: &Backend) -> anyhow::Result<()> {
    match command {
        AuditCommand::List(a) => {
            let entries = backend.audit(&a).await?;
            if a.json {
                println!("{}", serde_json::to_string(&entries)?);
            } else {
                print_audit(&entries);
            }
        }
    }
    Ok(())
}

fn print_audit(entries: &[AuditEntry]) {
    let or_dash = |s: Option<String>| s.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into());
    let rows: Vec<[String; 8]> = entries
        .iter()
        .map(|e| {
            let time = serde_json::to_value(e).ok().and_then(|v| v["time"].as_str().map(str::to_owned));
            let request = [e.method.clone(), e.path.clone(), e.status.map(|s| s.to_string())];
            let mut detail: Vec<String> = vec![request.into_iter().flatten().collect::<Vec<_>>().join(" ")];
            if e.action == Action::Access {
                detail.push(format!("{} request(s)", e.count));
            }
            detail.extend(e.reason.clone());
            detail.retain(|d| !d.is_empty());
            [
                or_dash(time),
                e.action.as_str().to_owned(),
                e.outcome.as_str().to_owned(),
                or_dash(e.token_id.clone()),
                or_dash(e.owner.clone()),
                or_dash(e.actor.clone()),
                or_dash(e.client.map(|c| c.to_string())),
                or_dash(Some(detail.join("; "))),
            ]
        })
        .collect();
    print_columns(["TIME", "ACTION", "OUTCOME", "TOKEN", "OWNER", "ACTOR", "CLIENT", "DETAIL"], &rows);
}

fn print_table(all: &[TokenView]) {
    let rows: Vec<[String; 9]> = all
        .iter()
        .map(|t| {
            [
                t.id.clone(),
                t.name.clone(),
                t.owner.clone(),
                t.state.clone(),
                t.scopes.join(","),
                t.orgs.to_string(),
                t.expires_at.clone(),
                t.last_used_at.clone().unwrap_or_else(|| "-".into()),
                t.last_used_from.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_columns(
        ["ID", "NAME", "OWNER", "STATE", "SCOPES", "ORGS", "EXPIRES", "LAST USED", "FROM"],
        &rows,
    );
}

/// A table: a head and rows, each column as wide as its widest cell.
fn print_columns<const N: usize>(head: [&str; N], rows: &[[String; N]]) {
    let head = head.map(String::from);
    let mut widths = head.clone().map(|h| h.chars().count());
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    for row in std::iter::once(&head).chain(rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}
