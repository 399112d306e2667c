//! `pgveil migrate decrypt`: the way back, for rolling back.
//!
//! 1. Record the column as `decrypting` (the read path then accepts both
//!    forms again).
//! 2. Batches replace every envelope with its plaintext in the legacy form
//!    (UTF-8 text form, raw bytes for `bytea`).
//! 3. One short transaction: lock the table (`ACCESS EXCLUSIVE`, with
//!    `lock_timeout`), decrypt any envelope written since its batch (found
//!    by shape on the server, so this reads only candidates), restore the
//!    original type with `ALTER COLUMN … TYPE orig USING
//!    convert_from(col, 'UTF8')::orig`, and forget the column in
//!    `pgveil.migrations`.
//!
//! After step 3 the policy must be removed (or set to `encrypt = "none"`)
//! and pgveil reloaded: until then pgveil's writes of envelopes into the
//! restored column fail with a type error (nothing is written).

use super::batches::Change;
use super::plan::Target;
use super::state::{self, State};
use super::{
    classify, envelope_shape_sql, legacy_format, report_indexes, Ctx, MigrateError, Stored,
};
use crate::crypto::{LogicalType, Mode};
use tokio_postgres::types::ToSql;

pub(super) async fn run(ctx: &mut Ctx, t: &Target) -> Result<(), MigrateError> {
    let name = t.name.to_string();
    let recorded = state::get(&ctx.client, t).await?;
    if state::legacy(&ctx.client, t).await?.is_some() {
        return Err(MigrateError::Usage(format!(
            "{name} is being encrypted online; run the same `pgveil migrate encrypt` again to \
             finish it, then decrypt"
        )));
    }
    if !t.is_bytea() {
        println!(
            "{name}: already {} in the database; nothing to decrypt",
            t.db_type
        );
        return Ok(());
    }
    let original = recorded
        .as_ref()
        .map(|(_, ty)| ty.clone())
        .unwrap_or_else(|| super::sql_type(t.logical).to_owned());
    let cipher = ctx
        .keyring
        .column(&name, t.logical, t.mode.unwrap_or(Mode::Randomized))?;
    let format = legacy_format(t.logical);
    report_indexes(t);
    // Checked before the pass: the type change comes at the end of it.
    let rewrite =
        super::rewrite_allowed(ctx, t, &format!("the type change back to {original}")).await?;
    eprintln!("{rewrite}");
    if !ctx.opts.dry_run {
        state::ensure(&ctx.client, t).await?;
        state::set(&ctx.client, t, State::Decrypting, &original).await?;
    }
    let total = t.count_rows(&ctx.client).await?;
    let mut plain = Vec::new();
    let mut decide = |v: &[u8]| -> Result<Change, String> {
        plain.clear();
        match classify(&cipher, v, format, &mut plain)? {
            Stored::Envelope { .. } => Ok(Change::Write(plain.clone())),
            Stored::Legacy => Ok(Change::Keep),
        }
    };
    let (stats, rate) = ctx
        .pass(t, format!("decrypt {name}"), total, &mut decide)
        .await?;
    if ctx.opts.dry_run {
        println!(
            "{name}: would decrypt {} of {} row(s), then change the column type bytea -> {original}",
            stats.changed, stats.rows
        );
        return Ok(());
    }
    let late = finish(ctx, t, &original, &mut decide).await?;
    println!(
        "{name}: {} row(s), {} value(s) decrypted ({late} written meanwhile), {rate:.0} rows/s; \
         column type bytea -> {original}. Remove its [[columns]] policy (or set encrypt = \"none\") \
         and reload pgveil.",
        stats.rows, stats.changed
    );
    Ok(())
}

/// Step 3, under an exclusive lock: returns how many late envelopes it
/// decrypted.
async fn finish<F>(
    ctx: &mut Ctx,
    t: &Target,
    original: &str,
    decide: &mut F,
) -> Result<u64, MigrateError>
where
    F: FnMut(&[u8]) -> Result<Change, String>,
{
    let err = |e| t.db_error("restoring the original type", &e);
    let tx = ctx.client.transaction().await.map_err(err)?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}'; SET LOCAL DateStyle = 'ISO, YMD'; \
         LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        super::batches::LOCK_TIMEOUT,
        t.table_sql
    ))
    .await
    .map_err(err)?;
    let c = &t.column_sql;
    let rows = tx
        .query(
            &format!(
                "SELECT {}, {c} FROM {} WHERE {c} IS NOT NULL AND {}",
                t.key_select_sql(),
                t.table_sql,
                envelope_shape_sql(c)
            ),
            &[],
        )
        .await
        .map_err(err)?;
    let key_len = t.key_len();
    let mut keys: Vec<Vec<String>> = vec![Vec::new(); key_len];
    let mut values: Vec<Vec<u8>> = Vec::new();
    for r in &rows {
        let key: Vec<String> = (0..key_len).map(|i| r.get(i)).collect();
        let v: Vec<u8> = r.get(key_len);
        match decide(&v) {
            Ok(Change::Keep) => {}
            Ok(Change::Write(p)) => {
                for (k, part) in keys.iter_mut().zip(&key) {
                    k.push(part.clone());
                }
                values.push(p);
            }
            Err(why) => {
                return Err(MigrateError::Batch {
                    column: t.name.to_string(),
                    key: t.describe_key(&key),
                    reason: why,
                })
            }
        }
    }
    if !values.is_empty() {
        let mut params: Vec<&(dyn ToSql + Sync)> = keys.iter().map(|k| k as _).collect();
        params.push(&values);
        tx.execute(t.update_sql().as_str(), &params)
            .await
            .map_err(err)?;
    }
    if original != "bytea" {
        let using = match t.logical {
            LogicalType::Bytea => format!("{c}::text::{original}"),
            _ => format!("convert_from({c}, 'UTF8')::{original}"),
        };
        tx.batch_execute(&format!(
            "ALTER TABLE {} ALTER COLUMN {c} TYPE {original} USING {using}",
            t.table_sql
        ))
        .await
        .map_err(err)?;
    }
    state::clear(&tx, t).await?;
    tx.commit().await.map_err(err)?;
    Ok(values.len() as u64)
}
