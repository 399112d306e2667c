//! The `pgveil` command: `serve` runs the proxy, `demo` runs it in front of
//! a throwaway database with sample data.

use clap::{Parser, Subcommand};
use pgveil::config::{Config, ConfigError};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pgveil",
    version,
    about = "PostgreSQL proxy that protects personal data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address, overriding `[proxy] listen`.
        #[arg(long)]
        listen: Option<String>,
        /// PostgreSQL server address, overriding `[proxy] upstream`.
        #[arg(long)]
        upstream: Option<String>,
    },
    /// Start a throwaway PostgreSQL with a hotel's sample guest data and
    /// pgveil in front of it; Ctrl-C stops both and deletes the data.
    Demo {
        /// Port pgveil listens on.
        #[arg(long, default_value_t = 6432)]
        port: u16,
    },
    /// Validate a configuration file and, when the upstream is reachable,
    /// its column policies against the live schema. Lists every problem.
    Check {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Manage the keyring: root-key versions wrapped by the master key.
    Keyring {
        /// Configuration file whose `[keyring]` section names the keyring.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: pgveil::crypto::cli::KeyringCommand,
    },
    /// Approve a one-off bulk export: prints a signed approval token (last
    /// line) that the requester sets with `SET pgveil.approval = '<token>'`.
    Approve(pgveil::guard::cli::ApproveArgs),
    /// Encrypt existing plaintext columns online, re-encrypt after a key
    /// rotation, or decrypt back (roll back). Batched and resumable; see
    /// docs/MIGRATE.md.
    Migrate {
        #[command(subcommand)]
        command: pgveil::migrate::MigrateCommand,
    },
    /// Check the audit trail (`verify`) or print the key that checks it
    /// (`public-key`); see docs/AUDIT.md.
    Audit {
        #[command(subcommand)]
        command: pgveil::audit::cli::AuditCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            upstream,
        } => load_config(config, listen, upstream)
            .and_then(|cfg| pgveil::server::serve(cfg).map_err(|e| format!("pgveil: {e}"))),
        Command::Demo { port } => pgveil::demo::run(port).map_err(|e| e.to_string()),
        Command::Check { config } => check(&config),
        Command::Keyring { config, command } => load_config(config, None, None).and_then(|cfg| {
            pgveil::crypto::cli::run(&command, &cfg.keyring, &mut std::io::stdout())
                .map_err(|e| e.to_string())?;
            pgveil::audit::spool::keyring_command(&cfg, &command).map_err(|e| e.to_string())
        }),
        Command::Migrate { command } => pgveil::migrate::run(command).map_err(|e| e.to_string()),
        Command::Approve(args) => pgveil::guard::cli::run(&args, &mut std::io::stdout())
            .map_err(|e| e.to_string())
            .and_then(|approval| {
                pgveil::audit::spool::approval_issued(&args.config, &approval)
                    .map_err(|e| e.to_string())
            }),
        Command::Audit { command } => {
            return match pgveil::audit::cli::run(&command, &mut std::io::stdout()) {
                Ok(verdict) => ExitCode::from(verdict.code()),
                Err(msg) => {
                    eprintln!("{msg}");
                    ExitCode::FAILURE
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(
    path: Option<PathBuf>,
    listen: Option<String>,
    upstream: Option<String>,
) -> Result<Config, String> {
    let mut cfg = match path {
        Some(p) => Config::load(&p),
        None => Ok(Config::default()),
    }
    .map_err(|e| e.to_string())?;
    let apply = |slot: &mut String, flag, v: Option<String>| -> Result<(), ConfigError> {
        match v {
            Some(v) => Config::override_addr(slot, flag, &v),
            None => Ok(()),
        }
    };
    apply(&mut cfg.proxy.listen, "--listen", listen).map_err(|e| e.to_string())?;
    apply(&mut cfg.proxy.upstream, "--upstream", upstream).map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// `pgveil check`: static problems, then live-schema problems; exit
/// non-zero if there is any.
fn check(path: &std::path::Path) -> Result<(), String> {
    let (cfg, text, mut problems) = Config::load_for_check(path).map_err(|e| e.to_string())?;
    let runtime = pgveil::server::runtime(1).map_err(|e| format!("pgveil: {e}"))?;
    match runtime.block_on(pgveil::policy::live::check_live(&cfg, &text)) {
        Ok(live) => problems.extend(live),
        Err(e) => problems.push(pgveil::policy::Problem {
            line: None,
            subject: "(live schema)".into(),
            message: e.to_string(),
        }),
    }
    if problems.is_empty() {
        println!(
            "{}: OK ({} protected column(s) checked against {})",
            path.display(),
            cfg.columns.len(),
            cfg.proxy.upstream
        );
        return Ok(());
    }
    problems.sort_by_key(|p| p.line);
    for p in &problems {
        println!("{p}");
    }
    Err(format!(
        "pgveil: {} problem(s) in {}",
        problems.len(),
        path.display()
    ))
}

/// Logs go to stderr; `RUST_LOG` sets the level (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
