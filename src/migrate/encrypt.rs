//! `pgveil migrate encrypt`: plaintext column → `bytea` envelopes.
//!
//! By default a column that is not `bytea` yet is moved online
//! ([`super::online`]); with `--in-place`, or for a `bytea` column:
//!
//! 1. If the column is not `bytea` yet: in one transaction, record it as
//!    `encrypting` and `ALTER COLUMN … TYPE bytea USING
//!    convert_to(col::text, 'UTF8')` (text forms printed with `DateStyle =
//!    ISO` and shortest-exact floats). This rewrites the table under an
//!    `ACCESS EXCLUSIVE` lock, once; `lock_timeout` keeps it from queueing
//!    behind long transactions. Column order, defaults, NOT NULL and
//!    indexes stay (indexes are rebuilt over the new bytes).
//! 2. Batches encrypt every value that is not an envelope of the column.
//! 3. A check on the server counts values not shaped like envelopes; if a
//!    row escaped the pass (a primary key changed under it, a ctid moved),
//!    another pass runs.
//! 4. The column is recorded as `encrypted`.

use super::batches::Change;
use super::plan::Target;
use super::state::{self, State};
use super::{
    classify, envelope_shape_sql, legacy_format, report_indexes, Ctx, MigrateError, Stored,
};
use crate::crypto::LogicalType;

/// Passes after the first before giving up on rows that keep escaping.
const MAX_EXTRA_PASSES: usize = 3;

pub(super) async fn run(ctx: &mut Ctx, mut t: Target, all: bool) -> Result<(), MigrateError> {
    let name = t.name.to_string();
    let Some(mode) = t.mode else {
        return Err(MigrateError::Usage(format!(
            "{name}: the policy says encrypt = \"none\"; set randomized or searchable first"
        )));
    };
    let cipher = ctx.keyring.column(&name, t.logical, mode)?;
    let recorded = state::get(&ctx.client, &t).await?;
    match recorded {
        Some((State::Decrypting, _)) => {
            return Err(MigrateError::Usage(format!(
                "{name} is being decrypted; finish `pgveil migrate decrypt` first"
            )))
        }
        Some((State::Encrypted, _)) if all && t.is_bytea() => {
            println!("{name}: already encrypted");
            return Ok(());
        }
        _ => {}
    }
    let legacy = state::legacy(&ctx.client, &t).await?;
    if legacy.is_some() || (!t.is_bytea() && !ctx.in_place) {
        return super::online::run(ctx, t, &cipher, legacy).await;
    }
    report_indexes(&t);
    let dry = ctx.opts.dry_run;
    if !t.is_bytea() {
        let rewrite = super::rewrite_allowed(ctx, &t, "the type change to bytea").await?;
        eprintln!("{rewrite}");
        if dry {
            let n = non_null(ctx, &t).await?;
            println!(
                "{name}: would change the column type {} -> bytea (one table rewrite under an \
                 ACCESS EXCLUSIVE lock), then encrypt {n} non-NULL value(s) in batches of {}",
                t.db_type, ctx.opts.batch_size
            );
            return Ok(());
        }
        convert_to_bytea(ctx, &t).await?;
        println!("{name}: column type {} -> bytea", t.db_type);
        t.db_type = "bytea".into();
    } else if !dry && recorded.is_none() {
        state::ensure(&ctx.client, &t).await?;
        state::set(
            &ctx.client,
            &t,
            State::Encrypting,
            super::sql_type(t.logical),
        )
        .await?;
    }
    let format = legacy_format(t.logical);
    let mut plain = Vec::new();
    let kept = std::cell::Cell::new(0u64);
    let mut decide = |v: &[u8]| {
        plain.clear();
        match classify(&cipher, v, format, &mut plain)? {
            Stored::Envelope { .. } => {
                kept.set(kept.get() + 1);
                Ok(Change::Keep)
            }
            Stored::Legacy => super::encrypted(&cipher, v, format),
        }
    };
    let mut changed = 0;
    let mut rate = 0.0;
    let mut total_rows = 0;
    let mut already = 0;
    for pass in 0..=MAX_EXTRA_PASSES {
        let total = t.count_rows(&ctx.client).await?;
        let (stats, r) = ctx
            .pass(&t, format!("encrypt {name}"), total, &mut decide)
            .await?;
        if pass == 0 {
            rate = r;
            total_rows = stats.rows;
            already = kept.get();
        }
        changed += stats.changed;
        if dry {
            println!(
                "{name}: would encrypt {} of {} row(s) (the others are NULL or envelopes already)",
                stats.changed, stats.rows
            );
            return Ok(());
        }
        if unshaped(ctx, &t).await? == 0 {
            state::set(&ctx.client, &t, State::Encrypted, &original(ctx, &t).await?).await?;
            println!(
                "{name}: {total_rows} row(s), {changed} value(s) encrypted, {already} already envelopes, \
                 {rate:.0} rows/s; column recorded as encrypted"
            );
            return Ok(());
        }
    }
    Err(MigrateError::Usage(format!(
        "{name}: values that are not envelopes keep appearing; is something writing plaintext \
         around pgveil? Stop it and run again"
    )))
}

/// Step 1: the type change, with the state change, in one transaction.
async fn convert_to_bytea(ctx: &mut Ctx, t: &Target) -> Result<(), MigrateError> {
    let err = |e| t.db_error("changing the column type to bytea", &e);
    let tx = ctx.client.transaction().await.map_err(err)?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}'; SET LOCAL DateStyle = 'ISO, YMD'; \
         SET LOCAL extra_float_digits = 1; SET LOCAL IntervalStyle = 'postgres'",
        super::batches::LOCK_TIMEOUT
    ))
    .await
    .map_err(err)?;
    state::ensure(&tx, t).await?;
    state::set(&tx, t, State::Encrypting, &t.db_type).await?;
    let c = &t.column_sql;
    let using = match t.logical {
        LogicalType::Bytea => format!("{c}::text::bytea"),
        _ => format!("convert_to({c}::text, 'UTF8')"),
    };
    tx.batch_execute(&format!(
        "ALTER TABLE {} ALTER COLUMN {c} TYPE bytea USING {using}; NOTIFY {}",
        t.table_sql,
        crate::catalog::CHANGES_CHANNEL
    ))
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)
}

/// The original type recorded for the column (kept across re-runs).
async fn original(ctx: &Ctx, t: &Target) -> Result<String, MigrateError> {
    Ok(state::get(&ctx.client, t)
        .await?
        .map(|(_, ty)| ty)
        .unwrap_or_else(|| super::sql_type(t.logical).to_owned()))
}

async fn non_null(ctx: &Ctx, t: &Target) -> Result<i64, MigrateError> {
    let sql = format!("SELECT count({}) FROM {}", t.column_sql, t.table_sql);
    Ok(ctx
        .client
        .query_one(&sql, &[])
        .await
        .map_err(|e| t.db_error("counting values", &e))?
        .get(0))
}

/// Values that cannot be envelopes (checked on the server, one scan).
async fn unshaped(ctx: &Ctx, t: &Target) -> Result<i64, MigrateError> {
    let c = &t.column_sql;
    let sql = format!(
        "SELECT count(*) FROM {} WHERE {c} IS NOT NULL AND NOT {}",
        t.table_sql,
        envelope_shape_sql(c)
    );
    Ok(ctx
        .client
        .query_one(&sql, &[])
        .await
        .map_err(|e| t.db_error("checking for plaintext", &e))?
        .get(0))
}
