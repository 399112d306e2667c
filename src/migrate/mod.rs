//! `pgveil migrate`: bring existing data under protection, move it to the
//! active key version, or take it back out — online, in batches, resumable.
//!
//! * [`encrypt`] — a plaintext column of any logical type becomes a `bytea`
//!   column of envelopes. Step 1 changes the column type **in place** to
//!   `bytea` holding the UTF-8 text form of each value (one `ALTER TABLE …
//!   TYPE bytea USING convert_to(col::text, 'UTF8')`, recorded as
//!   `encrypting` in `pgveil.migrations` in the same transaction). From then
//!   on pgveil's write path works on the column (it is `bytea`, as the
//!   policy requires) and writes only envelopes. Step 2 encrypts, batch by
//!   batch, every value that is not a valid envelope of the column.
//! * [`reencrypt`] — rewrites every envelope not under the active key
//!   version (or not in the policy's mode), and counts rows per version
//!   before and after.
//! * [`decrypt`] — decrypts envelopes back to the text form batch by batch,
//!   then, under a short exclusive lock, decrypts any envelope written
//!   meanwhile and restores the original type.
//!
//! **Why this is resumable and never encrypts twice.** A value is an
//! envelope exactly when it authenticates under the column's keys
//! ([`classify`]): a plaintext cannot carry a valid AES-GCM tag bound to
//! the column's name. Every batch therefore decides from the stored value
//! alone, with no progress record that could disagree with the data; a run
//! that is killed leaves committed batches encrypted and the rest plaintext,
//! and the next run skips the former. An envelope under a *destroyed* key
//! version stops the run instead of being taken for plaintext.
//!
//! The layout: [`plan`] resolves a policy to the live column and its batch
//! key, [`batches`] runs one pass, [`state`] keeps `pgveil.migrations`,
//! [`progress`] reports. `docs/MIGRATE.md` is the operator's guide.

mod batches;
mod decrypt;
mod encrypt;
mod error;
mod online;
mod plan;
mod progress;
mod reencrypt;
mod state;

pub use error::MigrateError;

use crate::config::Config;
use crate::crypto::envelope::{self, Header, FORMAT_V1};
use crate::crypto::{ColumnCipher, CryptoError, Format, Keyring, LogicalType, Mode};
use batches::PassOptions;
use plan::Target;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `pgveil migrate <command>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum MigrateCommand {
    /// Encrypt a plaintext column in place, online (resumable).
    Encrypt(MigrateArgs),
    /// Rewrite envelopes made under older key versions with the active one.
    Reencrypt(MigrateArgs),
    /// Decrypt an encrypted column back to its original type (roll back).
    Decrypt(MigrateArgs),
}

/// Options shared by the three commands.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// Configuration file (TOML) with the `[[columns]]` policies.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Table of the column to migrate (`schema.table` or `table`).
    #[arg(long, requires = "column", conflicts_with = "all")]
    pub table: Option<String>,
    /// The column to migrate; it must have a policy.
    #[arg(long, requires = "table")]
    pub column: Option<String>,
    /// Every encrypted policy column.
    #[arg(long)]
    pub all: bool,
    /// Rows per batch; each batch is one transaction.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_size: u32,
    /// Print what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Largest table (MiB, with its indexes and TOAST) whose column type
    /// change may run. The type change rewrites the whole table under an
    /// ACCESS EXCLUSIVE lock: reads and writes wait for it. Larger tables
    /// are refused until the change is scheduled and this is raised.
    #[arg(long, default_value_t = 1024)]
    pub max_rewrite_mb: u64,
    /// `encrypt`: change the column's type in place (one table rewrite
    /// under an ACCESS EXCLUSIVE lock) instead of moving it online to a
    /// new column; keeps the column's position, defaults and dependents.
    #[arg(long)]
    pub in_place: bool,
}

/// Which of the three operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Encrypt,
    Reencrypt,
    Decrypt,
}

/// What every operation needs: the connection, the keys, the options and
/// the Ctrl-C flag.
pub(crate) struct Ctx {
    client: tokio_postgres::Client,
    keyring: Keyring,
    opts: PassOptions,
    max_rewrite_mb: u64,
    /// `encrypt --in-place`.
    in_place: bool,
    /// For the connections an online move opens besides `client`.
    config: Config,
    stop: Arc<AtomicBool>,
}

impl Ctx {
    /// One pass over `t` under a progress display labelled `label` for
    /// `total` rows; returns what it did and its rate in rows per second.
    async fn pass<F>(
        &mut self,
        t: &Target,
        label: String,
        total: u64,
        decide: F,
    ) -> Result<(batches::PassStats, f64), MigrateError>
    where
        F: FnMut(&[u8]) -> Result<batches::Change, String>,
    {
        let progress = progress::Progress::new(label, total);
        let stats = batches::run_pass(
            &mut self.client,
            t,
            self.opts,
            &progress,
            &self.stop,
            decide,
        )
        .await?;
        Ok((stats, progress.finish()))
    }
}

/// The table rewrite a column type change costs, as measured on the
/// reference machine (docs/PERFORMANCE.md): about 0.9 s per 100 MiB.
const REWRITE_MS_PER_MIB: u64 = 9;

/// Checks a table rewrite (a column type change) against
/// `--max-rewrite-mb` and says what it will block; returns the line to
/// print before it.
async fn rewrite_allowed(ctx: &Ctx, t: &Target, what: &str) -> Result<String, MigrateError> {
    let bytes: i64 = ctx
        .client
        .query_one(
            "SELECT pg_total_relation_size($1::text::regclass)",
            &[&t.table_sql],
        )
        .await
        .map_err(|e| t.db_error("measuring the table", &e))?
        .get(0);
    let mib = u64::try_from(bytes).unwrap_or(0).div_ceil(1024 * 1024);
    let secs = (mib * REWRITE_MS_PER_MIB).div_ceil(1000).max(1);
    let line = format!(
        "{}: {what} rewrites {} ({mib} MiB with indexes) under an ACCESS EXCLUSIVE lock: reads \
         and writes of the table wait for it, about {secs} s here at 0.9 s per 100 MiB",
        t.name, t.table_sql
    );
    if mib > ctx.max_rewrite_mb && !ctx.opts.dry_run {
        return Err(MigrateError::Usage(format!(
            "{line}. That is more than --max-rewrite-mb {}: schedule it for a quiet time and run \
             again with --max-rewrite-mb {mib} or more",
            ctx.max_rewrite_mb
        )));
    }
    Ok(line)
}

/// Runs one `pgveil migrate` command to the end, printing a summary on
/// stdout and progress on stderr.
pub fn run(cmd: MigrateCommand) -> Result<(), MigrateError> {
    let (op, args) = match cmd {
        MigrateCommand::Encrypt(a) => (Op::Encrypt, a),
        MigrateCommand::Reencrypt(a) => (Op::Reencrypt, a),
        MigrateCommand::Decrypt(a) => (Op::Decrypt, a),
    };
    let config = Config::load(&args.config).map_err(|e| MigrateError::Usage(e.to_string()))?;
    let runtime = crate::server::runtime(2)
        .map_err(|e| MigrateError::Usage(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(run_async(op, &args, &config))
}

async fn run_async(op: Op, args: &MigrateArgs, config: &Config) -> Result<(), MigrateError> {
    let policies: Vec<&crate::policy::ColumnPolicy> = match (&args.table, &args.column) {
        (Some(t), Some(c)) => {
            let want = crate::policy::QualifiedName::parse(t, c).map_err(MigrateError::Usage)?;
            let found: Vec<_> = config
                .columns
                .iter()
                .filter(|p| crate::policy::QualifiedName::of(p).ok().as_ref() == Some(&want))
                .collect();
            if found.is_empty() {
                return Err(MigrateError::Usage(format!(
                    "{want} has no [[columns]] policy in {}; add one (with its type and encrypt mode) first",
                    args.config.display()
                )));
            }
            found
        }
        _ if args.all || op == Op::Reencrypt => config
            .columns
            .iter()
            .filter(|p| p.encrypt.encrypts())
            .collect(),
        _ => {
            return Err(MigrateError::Usage(
                "name a column with --table T --column C, or use --all".into(),
            ))
        }
    };
    let keyring = Keyring::load(&config.keyring)?;
    let client = crate::catalog::connect(config).await?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::Relaxed);
                eprintln!("pgveil migrate: stopping after the current batch (Ctrl-C)");
            }
        });
    }
    let mut ctx = Ctx {
        client,
        keyring,
        opts: PassOptions {
            batch_size: args.batch_size,
            dry_run: args.dry_run,
        },
        max_rewrite_mb: args.max_rewrite_mb,
        in_place: args.in_place,
        config: config.clone(),
        stop,
    };
    let mut versions = reencrypt::VersionTally::default();
    for policy in policies {
        let target = Target::resolve(&ctx.client, policy).await?;
        match op {
            Op::Encrypt => encrypt::run(&mut ctx, target, args.all).await?,
            Op::Reencrypt => reencrypt::run(&mut ctx, &target, &mut versions).await?,
            Op::Decrypt => decrypt::run(&mut ctx, &target).await?,
        }
    }
    if op == Op::Reencrypt && !args.dry_run {
        versions.report(&ctx.keyring);
    }
    Ok(())
}

/// What a stored value of a protected column is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// A valid envelope of this column (its plaintext was appended to the
    /// output buffer).
    Envelope {
        /// Key version it was made under.
        version: u32,
        /// Its mode.
        mode: Mode,
    },
    /// Not an envelope of this column: legacy plaintext.
    Legacy,
}

/// Decides whether `value` is an envelope of the column by decrypting it;
/// on success the plaintext (in `format`) is appended to `plain`.
///
/// An envelope under a destroyed key version is an error, never legacy
/// plaintext: encrypting it again would hide the loss.
pub(crate) fn classify(
    cipher: &ColumnCipher,
    value: &[u8],
    format: Format,
    plain: &mut Vec<u8>,
) -> Result<Stored, String> {
    let Some(h) = Header::parse(value) else {
        return Ok(Stored::Legacy);
    };
    let Some(mode) = Mode::from_byte(h.mode).filter(|_| h.format == FORMAT_V1) else {
        return Ok(Stored::Legacy);
    };
    match cipher.decrypt(value, format, plain) {
        Ok(()) => Ok(Stored::Envelope {
            version: h.version,
            mode,
        }),
        Err(CryptoError::DestroyedKeyVersion { version, .. }) => Err(format!(
            "the value is an envelope under key version {version}, which was destroyed; it cannot be migrated"
        )),
        Err(_) => Ok(Stored::Legacy),
    }
}

/// The wire format legacy plaintext is kept in while a column is
/// migrating: raw bytes for `bytea`, the UTF-8 text form for every other
/// type.
pub(crate) fn legacy_format(ty: LogicalType) -> Format {
    match ty {
        LogicalType::Bytea => Format::Binary,
        _ => Format::Text,
    }
}

/// The SQL type to restore when nothing better was recorded.
pub(crate) fn sql_type(ty: LogicalType) -> &'static str {
    match ty {
        // `char` alone means char(1) in SQL and would truncate.
        LogicalType::Char => "bpchar",
        other => other.name(),
    }
}

/// SQL that is true for every value shaped like an envelope (length,
/// format and mode bytes). A superset of the real envelopes, used to find
/// candidates cheaply on the server. The length bound is the shortest
/// envelope of any mode (an empty searchable value, 22 bytes), so short
/// searchable values (an int4 is 26 bytes) are never taken for plaintext.
/// The retired pre-release searchable mode (2) is not an envelope here.
pub(crate) fn envelope_shape_sql(col: &str) -> String {
    format!(
        "(length({col}) >= {} AND get_byte({col}, 0) = {FORMAT_V1} AND get_byte({col}, 1) IN ({}, {}))",
        envelope::MIN_LEN,
        Mode::Randomized.byte(),
        Mode::Searchable.byte(),
    )
}

/// The batch change that replaces a legacy value `v` (in `format`) with
/// its envelope.
pub(crate) fn encrypted(
    cipher: &ColumnCipher,
    v: &[u8],
    format: Format,
) -> Result<batches::Change, String> {
    let mut out = Vec::with_capacity(v.len() + 48);
    cipher
        .encrypt(v, format, &mut out)
        .map_err(|e| reason(&e))?;
    Ok(batches::Change::Write(out))
}

/// A crypto error as a batch reason (without the `pgveil:` prefix).
pub(crate) fn reason(e: &CryptoError) -> String {
    let s = e.to_string();
    s.strip_prefix("pgveil: ").unwrap_or(&s).to_owned()
}

/// Prints what the operator must know about indexes on a migrated column.
pub(crate) fn report_indexes(t: &Target) {
    for (name, def) in &t.indexes {
        let advice = match t.mode {
            Some(Mode::Searchable) => format!(
                "it indexes envelopes now: equality lookups through pgveil still use it; \
                 after the migration run `REINDEX INDEX CONCURRENTLY {}` to compact it",
                plan::ident(name)
            ),
            _ => format!(
                "randomized envelopes cannot be looked up or kept unique by an index: \
                 `DROP INDEX CONCURRENTLY {}` after the migration (a UNIQUE index no longer \
                 enforces uniqueness of the values)",
                plan::ident(name)
            ),
        };
        println!("{}: index {name} ({def}): {advice}", t.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every envelope the cipher writes has the shape the server-side
    /// filter looks for, including the shortest ones (searchable bool,
    /// empty text); the retired mode 2 does not.
    #[test]
    fn envelope_shape_covers_every_mode_and_length() {
        assert_eq!(
            envelope_shape_sql("c"),
            "(length(c) >= 22 AND get_byte(c, 0) = 1 AND get_byte(c, 1) IN (1, 3))"
        );
        assert_eq!(envelope::MIN_LEN, envelope::overhead(Mode::Searchable));
        assert!(envelope::MIN_LEN <= envelope::overhead(Mode::Randomized));
    }
}
