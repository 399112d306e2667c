//! `pgveil audit …`: verify a trail, print it with every statement whole,
//! print the checkpoint public key.
//!
//! `main` parses the command and calls [`run`]; output goes to the writer
//! given so tests can read it. The verdict maps to the exit code: 0 when
//! everything is intact and sealed, 1 when a record was altered, inserted,
//! deleted or reordered or a checkpoint forged, 2 when what is there is
//! intact but the end is not sealed by a shutdown checkpoint (pgveil still
//! running, crashed, or the end of the trail was cut off). `show` exits 2
//! when some record names a query its file does not hold.

use std::io::Write;
use std::path::PathBuf;

use super::error::AuditError;
use super::verify::{self, Options, TailState};
use crate::config::Config;

/// The audit subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum AuditCommand {
    /// Check audit files (a rotated series: several files or a directory).
    Verify {
        /// Audit files or directories; default: `[audit] path` and its
        /// rotated files, from --config.
        files: Vec<PathBuf>,
        /// The checkpoint public key: 64 hex digits, or a file holding them.
        #[arg(long)]
        public_key: Option<String>,
        /// Configuration file: the public key comes from its keyring, and
        /// when the master key is available every MAC is checked too.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Accept a trail whose first record is not seq 0 (older files archived).
        #[arg(long)]
        partial: bool,
    },
    /// Print a trail with every statement whole: records that refer to
    /// their query by id get its fingerprint, tables and columns (for
    /// reading, `jq`, `grep`; the printed lines are not the sealed bytes).
    Show {
        /// Audit files or directories; default: `[audit] path` and its
        /// rotated files, from --config.
        files: Vec<PathBuf>,
        /// Configuration file naming the trail.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the public key that verifies checkpoints (hex).
    PublicKey {
        /// Configuration file naming the keyring.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// How a verification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Intact and sealed (exit 0).
    Ok,
    /// Tampered with (exit 1).
    Tampered,
    /// Intact so far, but the end is not sealed (exit 2).
    Unsealed,
}

impl Verdict {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Verdict::Ok => 0,
            Verdict::Tampered => 1,
            Verdict::Unsealed => 2,
        }
    }
}

fn load(config: &std::path::Path) -> Result<Config, String> {
    Config::load(config).map_err(|e| e.to_string())
}

fn public_key_of(cfg: &Config) -> Result<Vec<u8>, String> {
    let file = crate::crypto::store::load(&cfg.keyring.dir).map_err(|e| e.to_string())?;
    super::chain::unhex::<32>(file.signing.public_key.trim())
        .map(|k| k.to_vec())
        .ok_or_else(|| "pgveil: the keyring's signing public key is not valid hex".to_owned())
}

/// The files of a trail: those named, or `[audit] path` of the
/// configuration and its rotated files.
fn trail(files: &[PathBuf], cfg: Option<&Config>, verb: &str) -> Result<Vec<PathBuf>, String> {
    let mut targets = files.to_vec();
    if targets.is_empty() {
        let path = cfg.and_then(|c| c.audit.path.clone()).ok_or(format!(
            "pgveil: name the audit files to {verb}, or a --config with [audit] path"
        ))?;
        targets = super::files::rotated(&path);
        if path.exists() {
            targets.push(path);
        }
    }
    let files = verify::collect(&targets).map_err(|e: AuditError| e.to_string())?;
    if files.is_empty() {
        return Err(format!("pgveil: no audit files to {verb}"));
    }
    Ok(files)
}

/// Runs one audit command; `Err` is a message for the user (exit 1).
pub fn run(cmd: &AuditCommand, out: &mut dyn Write) -> Result<Verdict, String> {
    let w = |e: std::io::Error| format!("pgveil: cannot write output: {e}");
    match cmd {
        AuditCommand::Show { files, config } => {
            let cfg = config.as_deref().map(load).transpose()?;
            let files = trail(files, cfg.as_ref(), "show")?;
            let unresolved = super::show::show(&files, out).map_err(|e| e.to_string())?;
            if unresolved > 0 {
                eprintln!(
                    "pgveil: {unresolved} record(s) name a query their file does not hold \
                     (printed as they are): part of the file is missing"
                );
                return Ok(Verdict::Unsealed);
            }
            Ok(Verdict::Ok)
        }
        AuditCommand::PublicKey { config } => {
            let cfg = load(config)?;
            writeln!(out, "{}", super::chain::hex(&public_key_of(&cfg)?)).map_err(w)?;
            Ok(Verdict::Ok)
        }
        AuditCommand::Verify {
            files,
            public_key,
            config,
            partial,
        } => {
            let cfg = config.as_deref().map(load).transpose()?;
            let public_key = match (public_key, &cfg) {
                (Some(k), _) => verify::parse_public_key(k).map_err(|e| e.to_string())?,
                (None, Some(cfg)) => public_key_of(cfg)?,
                (None, None) => {
                    return Err("pgveil: give --public-key KEY or --config FILE".to_owned())
                }
            };
            let master = cfg
                .as_ref()
                .and_then(|c| crate::crypto::MasterKey::load(&c.keyring).ok());
            let files = trail(files, cfg.as_ref(), "verify")?;
            let report = verify::verify(
                &files,
                &Options {
                    public_key,
                    master,
                    partial: *partial,
                },
            )
            .map_err(|e| e.to_string())?;
            let macs = if report.macs_checked {
                "; every MAC verified"
            } else {
                ""
            };
            if let Some(p) = &report.problem {
                writeln!(
                    out,
                    "FAILED: {p}\n{} records before it verified ({} checkpoints)",
                    report.records, report.checkpoints
                )
                .map_err(w)?;
                return Ok(Verdict::Tampered);
            }
            if let Some(first) = report.unresolved.first() {
                writeln!(
                    out,
                    "note: {} statement record(s), the first seq {first}, name a query their file \
                     does not hold (was part of a file deleted while pgveil ran?); `pgveil audit \
                     show` prints them as they are",
                    report.unresolved.len()
                )
                .map_err(w)?;
            }
            for seq in &report.unclean_runs {
                writeln!(
                    out,
                    "note: a pgveil run ended without a shutdown checkpoint after record seq {seq} \
                     (a crash); the records are sealed by later checkpoints"
                )
                .map_err(w)?;
            }
            let summary = format!(
                "{} records, {} checkpoints in {} file(s){macs}",
                report.records,
                report.checkpoints,
                files.len()
            );
            match &report.tail {
                TailState::Sealed => {
                    writeln!(out, "OK: {summary}").map_err(w)?;
                    Ok(Verdict::Ok)
                }
                TailState::Empty => {
                    writeln!(out, "OK: 0 records (the files are empty)").map_err(w)?;
                    Ok(Verdict::Unsealed)
                }
                TailState::Unsealed {
                    last_checkpoint,
                    records_after,
                } => {
                    let after = last_checkpoint
                        .map_or("the start".to_owned(), |s| format!("checkpoint seq {s}"));
                    writeln!(
                        out,
                        "OK: {summary}\nUNSEALED: the trail does not end with a shutdown checkpoint; \
                         {records_after} record(s) after {after} are not covered by a signature. \
                         pgveil is still running or crashed, or the end of the trail was truncated."
                    )
                    .map_err(w)?;
                    Ok(Verdict::Unsealed)
                }
                TailState::Torn { file, line } => {
                    writeln!(
                        out,
                        "OK: {summary}\nTRUNCATED: the last line ({}:{line}) is incomplete: the trail \
                         was cut off mid-record (or pgveil crashed while writing it).",
                        file.display()
                    )
                    .map_err(w)?;
                    Ok(Verdict::Unsealed)
                }
            }
        }
    }
}
