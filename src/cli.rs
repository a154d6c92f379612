//! The token and audit commands, written once over [`Tokens`]: carried out on the store
//! ([`on_store`]: no policy applies; this is how the first admin token is made) or
//! through a running server's admin API ([`admin_api`]: the server's policies apply).
//! Only the binary uses this module.

pub mod admin_api;
pub mod on_store;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use patgate::audit::{Action, AuditEntry};
use patgate::auth::restrictions::{AllowFrom, Repos};
use patgate::auth::scope::ScopeSet;
use patgate::auth::Orgs;
use patgate::config::Config;
use patgate::store::{Store, TokenRecord, TokenState};
use patgate::telemetry;
use serde::{Deserialize, Serialize};

use admin_api::AdminClient;

#[derive(Args)]
pub struct TokenArgs {
    /// Work through this server's admin API (http://HOST:PORT) instead of on the store.
    /// The caller's token is read from PATGATE_ADMIN_TOKEN or --token-file.
    #[arg(long, env = "PATGATE_ADMIN_URL", global = true)]
    pub admin_url: Option<String>,
    /// A file holding the token for --admin-url (instead of PATGATE_ADMIN_TOKEN).
    #[arg(long, global = true, requires = "admin_url")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Args)]
pub struct AuditArgs {
    /// Work through this server's admin API (http://HOST:PORT) instead of on the store.
    /// The caller's token is read from PATGATE_ADMIN_TOKEN or --token-file.
    #[arg(long, env = "PATGATE_ADMIN_URL", global = true)]
    pub admin_url: Option<String>,
    /// A file holding the token for --admin-url (instead of PATGATE_ADMIN_TOKEN).
    #[arg(long, global = true, requires = "admin_url")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// List audit entries, newest first.
    List(AuditListArgs),
}

#[derive(Args)]
pub struct AuditListArgs {
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
pub enum TokenCommand {
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
pub struct CreateArgs {
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
pub struct ListArgs {
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
pub struct UpdateArgs {
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
pub struct RevokeTarget {
    /// The token's id.
    id: Option<String>,
    /// Revoke every live token of this owner (with --all).
    #[arg(long, requires = "all")]
    owner: Option<String>,
}

#[derive(Args)]
pub struct RevokeArgs {
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

/// A token as the admin API shows it, and as the CLI prints it in either mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub orgs: Orgs,
    /// Absent from a server that predates repositories: all.
    #[serde(default)]
    pub repos: Repos,
    #[serde(default)]
    pub allow_from: AllowFrom,
    pub scopes: Vec<String>,
    pub created_at: String,
    #[serde(default)]
    pub rotated_at: Option<String>,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
    pub last_used_at: Option<String>,
    /// The client address of that use.
    #[serde(default)]
    pub last_used_from: Option<String>,
    pub state: String,
}

impl TokenView {
    /// The view of a stored record at `now` (Unix seconds).
    pub fn of(record: &TokenRecord, now: i64) -> TokenView {
        let state: TokenState = record.state(now);
        let mut v = serde_json::to_value(record).expect("a token record serializes");
        v["state"] = state.as_str().into();
        serde_json::from_value(v).expect("a serialized token record reads back")
    }
}

/// A new token as the command line gives it, read and checked.
pub struct NewTokenSpec {
    pub name: String,
    pub owner: Option<String>,
    /// The scopes as given (the admin API reads them itself) and as read.
    pub scope_names: Vec<String>,
    pub scopes: ScopeSet,
    pub orgs: Orgs,
    pub repos: Option<Repos>,
    pub allow_from: Option<AllowFrom>,
    pub expires_in: Option<Duration>,
}

/// A change to a token as the command line gives it, read and checked.
pub struct ChangeSpec {
    pub name: Option<String>,
    pub scope_names: Option<Vec<String>>,
    pub scopes: Option<ScopeSet>,
    pub orgs: Option<Orgs>,
    pub repos: Option<Repos>,
    pub allow_from: Option<AllowFrom>,
    pub expires_in: Option<Duration>,
}

/// Where the token and audit commands are carried out: the store, or a server's admin
/// API. The commands themselves ([`token`], [`audit`]) are written once, over this.
pub trait Tokens {
    /// Creates a token; its view and its secret.
    async fn create(&self, new: NewTokenSpec) -> anyhow::Result<(TokenView, String)>;
    /// Every token, newest first, of `owner` and in `state` where given.
    async fn list(&self, owner: Option<String>, state: Option<String>) -> anyhow::Result<Vec<TokenView>>;
    async fn get(&self, id: &str) -> anyhow::Result<TokenView>;
    async fn update(&self, id: &str, change: ChangeSpec) -> anyhow::Result<TokenView>;
    /// A new secret under the same id.
    async fn regenerate(&self, id: &str) -> anyhow::Result<(TokenView, String)>;
    /// A new secret and a new expiry under the same id.
    async fn rotate(&self, id: &str, expires_in: Option<Duration>) -> anyhow::Result<(TokenView, String)>;
    async fn revoke(&self, id: &str) -> anyhow::Result<()>;
    /// Revokes every live token of `owner`; how many.
    async fn revoke_owner(&self, owner: &str) -> anyhow::Result<usize>;
    /// At most `a.limit` audit entries, newest first.
    async fn audit(&self, a: &AuditListArgs) -> anyhow::Result<Vec<AuditEntry>>;
}

/// Runs `patgate token ...`: on the store named by `config`, or through `--admin-url`.
pub async fn run_token(t: TokenArgs, config: Option<Config>) -> anyhow::Result<()> {
    quiet_logs(config.as_ref());
    match (&t.admin_url, config) {
        (Some(url), _) => token(t.command, &AdminClient::new(url, &admin_token(t.token_file.as_deref())?)?).await,
        (None, Some(config)) => token(t.command, &Store::open(&config.store.location).await?).await,
        (None, None) => unreachable!("the config is loaded unless --admin-url is given"),
    }
}

/// Runs `patgate audit ...`: on the store named by `config`, or through `--admin-url`.
pub async fn run_audit(a: AuditArgs, config: Option<Config>) -> anyhow::Result<()> {
    quiet_logs(config.as_ref());
    match (&a.admin_url, config) {
        (Some(url), _) => audit(a.command, &AdminClient::new(url, &admin_token(a.token_file.as_deref())?)?).await,
        (None, Some(config)) => audit(a.command, &Store::open(&config.store.location).await?).await,
        (None, None) => unreachable!("the config is loaded unless --admin-url is given"),
    }
}

/// Logs of the config's format, warnings only: a command's output is its answer.
fn quiet_logs(config: Option<&Config>) {
    let log = config.map(|c| c.log.clone()).unwrap_or_default();
    telemetry::init(&telemetry::Config {
        filter: "warn".into(),
        ..log
    });
}

impl CreateArgs {
    fn read(self) -> anyhow::Result<NewTokenSpec> {
        Ok(NewTokenSpec {
            scopes: ScopeSet::parse(&self.scopes).context("--scopes")?,
            orgs: Orgs::parse(&self.orgs).context("--orgs")?,
            repos: self.repos.as_deref().map(Repos::parse).transpose().context("--repos")?,
            allow_from: self
                .allow_from
                .as_deref()
                .map(AllowFrom::parse)
                .transpose()
                .context("--allow-from")?,
            scope_names: self.scopes,
            name: self.name,
            owner: self.owner,
            expires_in: self.expires_in,
        })
    }
}

impl UpdateArgs {
    fn read(self) -> anyhow::Result<(String, ChangeSpec)> {
        let change = ChangeSpec {
            scopes: self.scopes.as_deref().map(ScopeSet::parse).transpose().context("--scopes")?,
            orgs: self.orgs.as_deref().map(Orgs::parse).transpose().context("--orgs")?,
            repos: self.repos.as_deref().map(Repos::parse).transpose().context("--repos")?,
            allow_from: self
                .allow_from
                .as_deref()
                .map(AllowFrom::parse)
                .transpose()
                .context("--allow-from")?,
            scope_names: self.scopes,
            name: self.name,
            expires_in: self.expires_in,
        };
        Ok((self.id, change))
    }
}

/// Revokes one token; says whether it was revoked already.
async fn revoke(backend: &impl Tokens, id: &str) -> anyhow::Result<bool> {
    let before = backend.get(id).await?;
    backend.revoke(id).await?;
    Ok(before.revoked_at.is_some())
}

/// Carries out a token command on `backend`.
async fn token(command: TokenCommand, backend: &impl Tokens) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(a) => {
            let json = a.json;
            let (t, secret) = backend.create(a.read()?).await?;
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
            let (id, change) = a.read()?;
            let t = backend.update(&id, change).await?;
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
                if revoke(backend, &id).await? {
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

/// Carries out an audit command on `backend`.
async fn audit(command: AuditCommand, backend: &impl Tokens) -> anyhow::Result<()> {
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
