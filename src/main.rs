//! The patgate binary: parses the command line, loads the config, and runs a command:
//! `serve` ([`app`]), or the token and audit commands ([`cli`]). `completions` and `man`
//! print what the command line itself defines, without a config.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use patgate::config::{self, Config};
use patgate::{app, build_info, telemetry};

use cli::{AuditArgs, TokenArgs};

mod cli;

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
        (Command::Token(t), config) => cli::run_token(t, config).await,
        (Command::Audit(a), config) => cli::run_audit(a, config).await,
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

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("cannot listen for SIGTERM");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("Shutting down");
}
