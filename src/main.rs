//! The `pgveil` command: `serve` runs the proxy, `demo` runs it in front of
//! a throwaway database with sample data, `check` validates a configuration
//! and `reload` asks a running proxy to reload its own.

use clap::{Parser, Subcommand};
use pgveil::config::{Config, ConfigError, LogConfig, LogFormat};
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
    /// Ask a running `pgveil serve` to reload its configuration file
    /// (policies, roles, TLS certificates) through its admin listener, as
    /// SIGHUP does. Prints the outcome; exits non-zero if it was rejected.
    Reload {
        /// The configuration file the proxy runs with; its `[admin] listen`
        /// says where to reach it.
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
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            upstream,
        } => load_config(config, listen, upstream).and_then(|cfg| {
            init_logging(&cfg.log);
            pgveil::server::serve(cfg).map_err(|e| format!("pgveil: {e}"))
        }),
        Command::Demo { port } => {
            init_logging(&LogConfig::default());
            pgveil::demo::run(port).map_err(|e| e.to_string())
        }
        Command::Check { config } => {
            init_logging(&LogConfig::default());
            check(&config)
        }
        Command::Reload { config } => reload(&config),
        Command::Keyring { config, command } => load_config(config, None, None).and_then(|cfg| {
            init_logging(&cfg.log);
            pgveil::crypto::cli::run(&command, &cfg.keyring, &mut std::io::stdout())
                .map_err(|e| e.to_string())?;
            pgveil::audit::spool::keyring_command(&cfg, &command).map_err(|e| e.to_string())
        }),
        Command::Migrate { command } => {
            init_logging(&LogConfig::default());
            pgveil::migrate::run(command).map_err(|e| e.to_string())
        }
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
        // Already listed with its line by the static check.
        Err(pgveil::catalog::CatalogError::Tls(_)) => {}
        Err(e) => problems.push(pgveil::policy::Problem {
            line: None,
            subject: "[proxy] upstream".into(),
            message: format!("live schema not checked: {e}"),
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

/// `pgveil reload`: POST /reload to the admin listener named in the file.
fn reload(path: &std::path::Path) -> Result<(), String> {
    use std::io::{Read, Write};
    // An invalid file would be rejected by the proxy too; say so here first.
    let cfg = Config::load(path).map_err(|e| e.to_string())?;
    if cfg.admin.listen.is_empty() {
        return Err(format!(
            "pgveil: {} has no [admin] listen; send SIGHUP to the pgveil process instead",
            path.display()
        ));
    }
    let addr = match cfg.admin.listen.rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => cfg.admin.listen.clone(),
    };
    let fail = |e: std::io::Error| {
        format!("pgveil: cannot reach the admin listener at {addr}: {e}; is pgveil serve running with this file?")
    };
    let mut stream = std::net::TcpStream::connect(&addr).map_err(fail)?;
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(120)));
    stream
        .write_all(b"POST /reload HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        .map_err(fail)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(fail)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let ok = head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200");
    if ok {
        println!("{}", body.trim_end());
        Ok(())
    } else {
        Err(body.trim_end().to_owned())
    }
}

/// Logs go to stderr; `RUST_LOG` overrides `[log] level` (default `info`).
/// `[log] format = "json"` writes one JSON object per line.
fn init_logging(cfg: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
