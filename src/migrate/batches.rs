//! One pass over a column: read a batch, decide per value, write the
//! changed values back, commit; repeat until the table is done.
//!
//! Each batch is its own transaction: its rows are locked (`FOR NO KEY
//! UPDATE`, with `lock_timeout`) while they are read and rewritten, so a
//! concurrent writer either commits before the batch reads the row (and the
//! batch sees its envelope) or waits for the batch and then overwrites it.
//! A failure rolls back only the current batch. The stop flag (Ctrl-C) is
//! checked between batches.

use super::error::MigrateError;
use super::plan::{Keyset, Target};
use super::progress::Progress;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};

/// How long a batch waits for a row lock before the run stops.
pub const LOCK_TIMEOUT: &str = "5s";

/// What to do with one stored value.
pub enum Change {
    /// Leave it.
    Keep,
    /// Replace it with these bytes.
    Write(Vec<u8>),
}

/// Settings of one pass.
#[derive(Debug, Clone, Copy)]
pub struct PassOptions {
    /// Rows per batch (and transaction).
    pub batch_size: u32,
    /// Read and decide, but write nothing and lock nothing.
    pub dry_run: bool,
}

/// What a pass saw and did.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassStats {
    /// Rows read (NULLs included).
    pub rows: u64,
    /// Values rewritten (or that would be, in a dry run).
    pub changed: u64,
}

/// Where the next batch starts.
enum Cursor {
    Start,
    AfterKey(Vec<String>),
    Blocks { next: i64, step: i64, end: i64 },
}

struct Row {
    key: Vec<String>,
    value: Option<Vec<u8>>,
}

/// Runs `decide` over every non-NULL value of the column, batch by batch.
pub async fn run_pass<F>(
    client: &mut Client,
    target: &Target,
    opts: PassOptions,
    progress: &Progress,
    stop: &AtomicBool,
    mut decide: F,
) -> Result<PassStats, MigrateError>
where
    F: FnMut(&[u8]) -> Result<Change, String>,
{
    let mut stats = PassStats::default();
    let mut cursor = match target.keys {
        Keyset::Pk(_) => Cursor::Start,
        Keyset::Ctid => block_cursor(client, target, opts.batch_size).await?,
    };
    let select_first = target.select_sql(false, !opts.dry_run);
    let select_next = target.select_sql(true, !opts.dry_run);
    let update = target.update_sql();
    let column = target.name.to_string();
    loop {
        if stop.load(Ordering::Relaxed) {
            progress.abandon();
            return Err(MigrateError::Interrupted {
                column,
                done: stats.rows,
            });
        }
        let position = match &cursor {
            Cursor::Start => "the first batch".to_owned(),
            Cursor::AfterKey(k) => format!("the batch after {}", target.describe_key(k)),
            Cursor::Blocks { next, .. } => format!("the batch at heap block {next}"),
        };
        let batch_err = |e: tokio_postgres::Error| MigrateError::Batch {
            column: column.clone(),
            key: position.clone(),
            reason: super::error::describe_db(&e),
        };
        let tx = client.transaction().await.map_err(batch_err)?;
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            .await
            .map_err(batch_err)?;
        let rows = match read_batch(
            &tx,
            target,
            &mut cursor,
            opts.batch_size,
            &select_first,
            &select_next,
        )
        .await
        {
            Ok(Some(rows)) => rows,
            Ok(None) => break,
            Err(e) => return Err(batch_err(e)),
        };
        let key_len = target.key_len();
        let mut keys: Vec<Vec<String>> = vec![Vec::new(); key_len];
        let mut values: Vec<Vec<u8>> = Vec::new();
        for row in &rows {
            let Some(v) = &row.value else { continue };
            match decide(v) {
                Ok(Change::Keep) => {}
                Ok(Change::Write(new)) => {
                    for (k, part) in keys.iter_mut().zip(&row.key) {
                        k.push(part.clone());
                    }
                    values.push(new);
                }
                Err(reason) => {
                    progress.abandon();
                    return Err(MigrateError::Batch {
                        column,
                        key: target.describe_key(&row.key),
                        reason,
                    });
                }
            }
        }
        if !opts.dry_run && !values.is_empty() {
            let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(key_len + 1);
            for k in &keys {
                params.push(k);
            }
            params.push(&values);
            tx.execute(update.as_str(), &params)
                .await
                .map_err(batch_err)?;
        }
        tx.commit().await.map_err(batch_err)?;
        stats.rows += rows.len() as u64;
        stats.changed += values.len() as u64;
        progress.inc(rows.len() as u64);
        if let (Keyset::Pk(_), Some(last)) = (&target.keys, rows.last()) {
            cursor = Cursor::AfterKey(last.key.clone());
        }
    }
    Ok(stats)
}

/// Reads the next batch; `None` when the table is done.
async fn read_batch(
    tx: &Transaction<'_>,
    target: &Target,
    cursor: &mut Cursor,
    batch_size: u32,
    first: &str,
    next: &str,
) -> Result<Option<Vec<Row>>, tokio_postgres::Error> {
    let key_len = target.key_len();
    let convert = |rows: Vec<tokio_postgres::Row>| -> Vec<Row> {
        rows.into_iter()
            .map(|r| Row {
                key: (0..key_len).map(|i| r.get::<_, String>(i)).collect(),
                value: r.get::<_, Option<Vec<u8>>>(key_len),
            })
            .collect()
    };
    let limit = i64::from(batch_size);
    match cursor {
        Cursor::Start => {
            let rows = tx.query(first, &[&limit]).await?;
            Ok((!rows.is_empty()).then(|| convert(rows)))
        }
        Cursor::AfterKey(key) => {
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&limit];
            for k in key.iter() {
                params.push(k);
            }
            let rows = tx.query(next, &params).await?;
            Ok((!rows.is_empty()).then(|| convert(rows)))
        }
        Cursor::Blocks {
            next: from,
            step,
            end,
        } => loop {
            if *from >= *end {
                // The table may have grown since the pass started.
                let now = relation_blocks(tx, target.oid).await?;
                if *from >= now {
                    return Ok(None);
                }
                *end = now;
            }
            let lo = format!("({from},0)");
            let hi = format!("({},0)", *from + *step);
            *from += *step;
            let rows = tx.query(next, &[&lo, &hi]).await?;
            if !rows.is_empty() {
                return Ok(Some(convert(rows)));
            }
        },
    }
}

async fn relation_blocks(
    client: &impl tokio_postgres::GenericClient,
    oid: u32,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT (pg_relation_size($1::oid) / current_setting('block_size')::int8)::int8",
            &[&oid],
        )
        .await?;
    Ok(row.get(0))
}

/// Block ranges sized so a batch holds about `batch_size` rows.
async fn block_cursor(
    client: &Client,
    target: &Target,
    batch_size: u32,
) -> Result<Cursor, MigrateError> {
    let err = |e| target.db_error("sizing the table", &e);
    let end = relation_blocks(client, target.oid).await.map_err(err)?;
    let row = client
        .query_one(
            "SELECT reltuples::float8, relpages::int8 FROM pg_class WHERE oid = $1",
            &[&target.oid],
        )
        .await
        .map_err(err)?;
    let (tuples, pages): (f64, i64) = (row.get(0), row.get(1));
    let per_block = if tuples > 0.0 && pages > 0 {
        (tuples / pages as f64).max(1.0)
    } else {
        50.0
    };
    let step = ((f64::from(batch_size) / per_block) as i64).max(1);
    Ok(Cursor::Blocks { next: 0, step, end })
}
