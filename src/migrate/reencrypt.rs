//! `pgveil migrate reencrypt`: every envelope not under the active key
//! version (or not in the policy's mode) is decrypted and encrypted again,
//! batch by batch. Counts per key version are taken on the server (bytes
//! 2..6 of each envelope) before and after, so the operator sees that a
//! decrypt-only version is no longer used before destroying it.

use super::batches::Change;
use super::plan::Target;
use super::state::{self, State};
use super::{classify, envelope_shape_sql, reason, Ctx, MigrateError, Stored};
use crate::crypto::{Format, KeyState, Keyring};
use std::collections::BTreeMap;

/// Rows per key version, summed over the columns of one run.
#[derive(Debug, Default)]
pub(super) struct VersionTally {
    columns: usize,
    rows: BTreeMap<u32, i64>,
}

impl VersionTally {
    /// Prints, for every decrypt-only version, whether the migrated
    /// columns still use it.
    pub(super) fn report(&self, keyring: &Keyring) {
        for v in keyring.versions() {
            if v.state != KeyState::DecryptOnly {
                continue;
            }
            match self.rows.get(&v.version).copied().unwrap_or(0) {
                0 => println!(
                    "key version {}: no rows left in the {} column(s) migrated; \
                     `pgveil keyring destroy --version {} --yes` loses nothing in them",
                    v.version, self.columns, v.version
                ),
                n => println!(
                    "key version {}: {n} row(s) still use it; destroying it would lose them",
                    v.version
                ),
            }
        }
    }
}

pub(super) async fn run(
    ctx: &mut Ctx,
    t: &Target,
    tally: &mut VersionTally,
) -> Result<(), MigrateError> {
    let name = t.name.to_string();
    let Some(mode) = t.mode else {
        return Err(MigrateError::Usage(format!(
            "{name}: the policy says encrypt = \"none\"; nothing to re-encrypt"
        )));
    };
    if !t.is_bytea() {
        return Err(MigrateError::Usage(format!(
            "{name} is {} in the database, not encrypted; run `pgveil migrate encrypt` first",
            t.db_type
        )));
    }
    if let Some((s @ (State::Encrypting | State::Decrypting), _)) =
        state::get(&ctx.client, t).await?
    {
        let cmd = if s == State::Encrypting {
            "encrypt"
        } else {
            "decrypt"
        };
        return Err(MigrateError::Usage(format!(
            "{name} is mid-migration; finish `pgveil migrate {cmd}` first"
        )));
    }
    let cipher = ctx.keyring.column(&name, t.logical, mode)?;
    let active = cipher.active_version();
    let before = counts(ctx, t).await?;
    print_counts(&name, "before", &before, active);
    if ctx.opts.dry_run {
        let stale: i64 = before
            .iter()
            .filter(|(v, _)| *v != active)
            .map(|(_, n)| n)
            .sum();
        println!("{name}: would re-encrypt {stale} value(s) under key version {active}");
        return Ok(());
    }
    let total = t.count_rows(&ctx.client).await?;
    let mut plain = Vec::new();
    let (stats, rate) = ctx
        .pass(t, format!("reencrypt {name}"), total, |v: &[u8]| {
            plain.clear();
            match classify(&cipher, v, Format::Binary, &mut plain)? {
                Stored::Envelope { version, mode: m } if version == active && m == mode => {
                    Ok(Change::Keep)
                }
                Stored::Envelope { .. } => {
                    let mut out = Vec::with_capacity(v.len());
                    cipher
                        .encrypt(&plain, Format::Binary, &mut out)
                        .map_err(|e| reason(&e))?;
                    Ok(Change::Write(out))
                }
                Stored::Legacy => Err(
                    "the value is not an envelope of this column (written around pgveil, or \
                     altered); run `pgveil migrate encrypt` on the column first"
                        .into(),
                ),
            }
        })
        .await?;
    let after = counts(ctx, t).await?;
    print_counts(&name, "after", &after, active);
    println!(
        "{name}: {} row(s), {} value(s) re-encrypted under key version {active}, {rate:.0} rows/s",
        stats.rows, stats.changed
    );
    tally.columns += 1;
    for (v, n) in after {
        *tally.rows.entry(v).or_default() += n;
    }
    Ok(())
}

/// Rows per key version, read from the envelope headers on the server.
async fn counts(ctx: &Ctx, t: &Target) -> Result<Vec<(u32, i64)>, MigrateError> {
    let c = &t.column_sql;
    let sql = format!(
        "SELECT ('x' || encode(substring({c} from 3 for 4), 'hex'))::bit(32)::int8, count(*) \
           FROM {} WHERE {c} IS NOT NULL AND {} GROUP BY 1 ORDER BY 1",
        t.table_sql,
        envelope_shape_sql(c)
    );
    let rows = ctx
        .client
        .query(&sql, &[])
        .await
        .map_err(|e| t.db_error("counting rows per key version", &e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u32, r.get::<_, i64>(1)))
        .collect())
}

fn print_counts(name: &str, when: &str, counts: &[(u32, i64)], active: u32) {
    if counts.is_empty() {
        println!("{name}: {when}: no envelopes");
    }
    for (v, n) in counts {
        let mark = if *v == active { " (active)" } else { "" };
        println!("{name}: {when}: key version {v}{mark}: {n} row(s)");
    }
}
