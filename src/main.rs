//! The patgate binary: parses the command line, loads the config, and runs a command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use patgate::auth::scope::ScopeSet;
use patgate::auth::Orgs;
use patgate::config::{self, Config};
use patgate::store::{self, NewToken, Store, TokenRecord};
use patgate::{app, telemetry};

/// A token-authenticating reverse proxy for self-hosted git and build infrastructure.
#[derive(Parser)]
#[command(version, about)]
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
    /// Create, list and revoke tokens in the store.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print its secret, this once.
    Create(CreateArgs),
    /// List tokens (never their secrets).
    List {
        /// One JSON array instead of a table.
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
    /// Who the token acts as; sent upstream as X-Patgate-User and REMOTE_USER.
    #[arg(long)]
    owner: String,
    /// Comma-separated scopes, e.g. code:read,agentpools:read; `full` for all.
    #[arg(long, value_delimiter = ',', required = true)]
    scopes: Vec<String>,
    /// Comma-separated organizations, or '*' for all.
    #[arg(long)]
    orgs: String,
    /// Lifespan, e.g. 90s, 12h, 30d.
    #[arg(long, value_parser = parse_lifespan)]
    expires_in: Duration,
    /// Print one JSON object with id, token and expires_at.
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

fn parse_lifespan(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e}; write e.g. 90s, 12h, 30d"))?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
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

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            telemetry::init(&config.log);
            app::serve(config, shutdown_signal()).await?;
            Ok(())
        }
        Command::CheckConfig => {
            println!("{}: ok ({} routes)", config.source.display(), config.proxy.routes.iter().count());
            Ok(())
        }
        Command::Token(t) => {
            telemetry::init(&telemetry::Config {
                filter: "warn".into(),
                ..config.log.clone()
            });
            let store = Store::open(&config.store.location).await?;
            token(t, &store).await
        }
    }
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

const ACTOR: &str = "cli";

async fn token(command: TokenCommand, store: &Store) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(a) => {
            let scopes = ScopeSet::parse(&a.scopes).context("--scopes")?;
            let orgs = Orgs::parse(&a.orgs).context("--orgs")?;
            let new = NewToken {
                name: a.name,
                owner: a.owner,
                orgs,
                scopes,
                lifespan: a.expires_in,
            };
            let created = store.create(new, Some(ACTOR.into())).await?;
            let r = &created.record;
            if a.json {
                let mut v = serde_json::to_value(r)?;
                v["token"] = serde_json::Value::String(created.secret.expose().to_owned());
                println!("{v}");
            } else {
                println!("Created token {} ({}) for {}", r.id, r.name, r.owner);
                println!("  scopes:  {}", r.scopes);
                println!("  orgs:    {}", r.orgs);
                println!("  expires: {}", store::format_time(r.expires_at));
                println!();
                println!("  {}", created.secret.expose());
                println!();
                println!("Copy the token now: it is shown only this once.");
            }
            Ok(())
        }
        TokenCommand::List { json } => {
            let all = store.list_all(None).await?;
            if json {
                let now = store::now();
                let rows: Vec<serde_json::Value> = all
                    .iter()
                    .map(|r| {
                        let mut v = serde_json::to_value(r).unwrap_or_default();
                        v["state"] = serde_json::to_value(r.state(now)).unwrap_or_default();
                        v
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                print_table(&all);
            }
            Ok(())
        }
        TokenCommand::Revoke(a) => {
            if let Some(id) = a.target.id {
                let before = store.get(&id).await?;
                store.revoke(&id, Some(ACTOR.into())).await?;
                if before.revoked_at.is_some() {
                    println!("Token {id} was already revoked");
                } else {
                    println!("Revoked token {id}");
                }
            } else if let Some(owner) = a.target.owner {
                let n = store.revoke_owner(&owner, Some(ACTOR.into())).await?;
                println!("Revoked {n} token(s) of {owner}");
            }
            Ok(())
        }
    }
}

fn print_table(all: &[TokenRecord]) {
    let now = store::now();
    let rows: Vec<[String; 8]> = all
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.name.clone(),
                r.owner.clone(),
                format!("{:?}", r.state(now)).to_lowercase(),
                r.scopes.to_string(),
                r.orgs.to_string(),
                store::format_time(r.expires_at),
                r.last_used_at.map(store::format_time).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let head = ["ID", "NAME", "OWNER", "STATE", "SCOPES", "ORGS", "EXPIRES", "LAST USED"].map(String::from);
    let mut widths = head.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    for row in std::iter::once(&head).chain(&rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}
