//! `pgveil migrate encrypt` without a table rewrite: the column moves to a
//! new `bytea` column while the table stays readable and writable.
//!
//! A type change to `bytea` rewrites the whole table under an `ACCESS
//! EXCLUSIVE` lock. Instead:
//!
//! 1. **Split** (one short transaction, metadata only): the column is
//!    renamed to a hidden `__pgveil_legacy_<column>`; once every running
//!    pgveil has confirmed it reloaded its catalog (they LISTEN on
//!    `pgveil_catalog` and answer on `pgveil_catalog_ack`), it is added
//!    again as `bytea` (at the end of the table). Two triggers keep the split
//!    honest: assigning the column clears the row's old value, and nothing
//!    may write a new old value. A NOT NULL column becomes a `NOT VALID`
//!    check that one of the two is set. The state row names the hidden
//!    column, and `NOTIFY pgveil_catalog` tells running pgveils to reload
//!    their catalog, which makes them read both columns (see
//!    `sql/online.rs`) and write only the new one.
//! 2. **Batches** read old values in key order, encrypt them and write the
//!    envelopes, clearing the old values — keeping an envelope the
//!    application wrote meanwhile. Whether a row is done is in the data
//!    (its old value is NULL), so a killed run resumes where it stopped
//!    and never encrypts a value twice.
//! 3. **Finish**: NOT NULL is proven by a check validated online, then one
//!    short transaction sets it, drops the triggers and the hidden column
//!    (metadata only), records the column as `encrypted` and notifies.
//!
//! The price is the column's position: it is last in `SELECT *` from the
//! split on. Defaults, views, rules, triggers, policies, foreign keys and
//! generated columns on the column are refused up front, since the split
//! would leave them on the old column.

use super::plan::{ident, Target};
use super::state::{self, State};
use super::{legacy_format, Ctx, MigrateError};
use crate::crypto::ColumnCipher;
use crate::sql::LEGACY_PREFIX;

/// Passes after the first before giving up on rows that keep escaping.
const MAX_EXTRA_PASSES: usize = 3;

/// The names of what the split creates, derived from the table and the
/// hidden column's attribute number so a resumed run finds them again.
struct Names {
    legacy: String,
    legacy_name: String,
    either_check_name: String,
    clear_fn: String,
    guard_fn: String,
    clear_trigger: String,
    guard_trigger: String,
    either_check: String,
    final_check: String,
}

impl Names {
    fn new(t: &Target, legacy: &str, legacy_attnum: i16) -> Names {
        let tag = format!("{}_{legacy_attnum}", t.oid);
        Names {
            legacy: ident(legacy),
            legacy_name: legacy.to_owned(),
            either_check_name: format!("pgveil_notnull_{legacy_attnum}"),
            clear_fn: format!("pgveil.{}", ident(&format!("legacy_clear_{tag}"))),
            guard_fn: format!("pgveil.{}", ident(&format!("legacy_guard_{tag}"))),
            clear_trigger: ident(&format!("pgveil_legacy_clear_{legacy_attnum}")),
            guard_trigger: ident(&format!("pgveil_legacy_guard_{legacy_attnum}")),
            either_check: ident(&format!("pgveil_notnull_{legacy_attnum}")),
            final_check: ident(&format!("pgveil_notnull_final_{legacy_attnum}")),
        }
    }
}

/// The hidden column's name for `column` (PostgreSQL names are at most 63
/// bytes; a long name falls back to the attribute number).
fn legacy_name(column: &str, attnum: i16) -> String {
    let name = format!("{LEGACY_PREFIX}{column}");
    if name.len() <= 63 {
        name
    } else {
        format!("{LEGACY_PREFIX}{attnum}")
    }
}

/// Runs an online encryption from wherever it stands: `legacy` is the
/// hidden column recorded by an earlier run, if any.
pub(super) async fn run(
    ctx: &mut Ctx,
    mut t: Target,
    cipher: &ColumnCipher,
    legacy: Option<String>,
) -> Result<(), MigrateError> {
    let name = t.name.to_string();
    let dry = ctx.opts.dry_run;
    let resumed = legacy.is_some();
    let legacy = match legacy {
        Some(l) => l,
        None => {
            refuse_dependents(ctx, &t).await?;
            let legacy = legacy_name(&t.name.column, t.attnum);
            if dry {
                let n: i64 = ctx
                    .client
                    .query_one(
                        &format!("SELECT count({}) FROM {}", t.column_sql, t.table_sql),
                        &[],
                    )
                    .await
                    .map_err(|e| t.db_error("counting values", &e))?
                    .get(0);
                println!(
                    "{name}: would move the column online to a new bytea column (it becomes the last \
                     column; the old values stay in hidden column {legacy} until encrypted), then \
                     encrypt {n} non-NULL value(s) in batches of {}",
                    ctx.opts.batch_size
                );
                return Ok(());
            }
            let acks = Acks::listen(ctx).await?;
            rename(ctx, &t, &legacy, &acks.notify_sql()).await?;
            acks.wait(&name).await;
            legacy
        }
    };
    let legacy_attnum = attnum_of(ctx, &t, &legacy).await?;
    let names = Names::new(&t, &legacy, legacy_attnum);
    if !dry && !column_exists(ctx, &t).await? {
        if resumed {
            // Killed between the two steps: make sure every pgveil knows.
            let acks = Acks::listen(ctx).await?;
            ctx.client
                .batch_execute(&acks.notify_sql())
                .await
                .map_err(|e| t.db_error("notifying pgveil", &e))?;
            acks.wait(&name).await;
        }
        add_column(ctx, &t, &names).await?;
        println!(
            "{name}: moved to a new bytea column, now the table's last column; old values in \
             {legacy} until encrypted. INSERT and COPY FROM without a column list now follow the \
             new column order (pgveil refuses them until the move ends)"
        );
    }
    let notnull = has_constraint(ctx, &t, &names).await?;
    for (index, def) in &t.indexes {
        let advice = match t.mode {
            Some(crate::crypto::Mode::Searchable) => format!(
                "for lookups through pgveil, index the new column: CREATE INDEX CONCURRENTLY ON {} ({})",
                t.table_sql, t.column_sql
            ),
            _ => "randomized envelopes cannot be looked up or kept unique by an index".to_owned(),
        };
        println!(
            "{name}: index {index} ({def}) is on the old values and is dropped when the migration \
             finishes; {advice}"
        );
    }
    t.legacy_sql = Some(names.legacy.clone());
    // Old values are read in the text forms pgveil parses.
    ctx.client
        .batch_execute(
            "SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 1; SET IntervalStyle = 'postgres'",
        )
        .await
        .map_err(|e| t.db_error("setting the session", &e))?;
    let format = legacy_format(t.logical);
    let mut decide = |v: &[u8]| super::encrypted(cipher, v, format);
    let mut changed = 0;
    let mut rate = 0.0;
    for pass in 0..=MAX_EXTRA_PASSES {
        let total = u64::try_from(pending(ctx, &t, &names).await?).unwrap_or(0);
        let (stats, r) = ctx
            .pass(&t, format!("encrypt {name}"), total, &mut decide)
            .await?;
        if pass == 0 {
            rate = r;
        }
        changed += stats.changed;
        if dry {
            println!(
                "{name}: would encrypt {} value(s) still in {legacy}",
                stats.changed
            );
            return Ok(());
        }
        if pending(ctx, &t, &names).await? == 0 {
            finish(ctx, &t, &names, notnull).await?;
            println!(
                "{name}: {changed} value(s) encrypted online, {rate:.0} rows/s; hidden column \
                 dropped; column recorded as encrypted"
            );
            return Ok(());
        }
    }
    Err(MigrateError::Usage(format!(
        "{name}: old values keep escaping the batches (is the primary key changing?); run again"
    )))
}

/// Objects the split would leave attached to the old column.
async fn refuse_dependents(ctx: &Ctx, t: &Target) -> Result<(), MigrateError> {
    let rows = ctx
        .client
        .query(
            "SELECT pg_describe_object(d.classid, d.objid, d.objsubid) FROM pg_depend d \
              WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND d.refobjsubid = $2::int2 \
                AND (d.classid IN ('pg_rewrite'::regclass, 'pg_trigger'::regclass, \
                                   'pg_policy'::regclass, 'pg_attrdef'::regclass) \
                     OR (d.classid = 'pg_constraint'::regclass AND EXISTS ( \
                           SELECT 1 FROM pg_constraint c WHERE c.oid = d.objid AND c.contype IN ('f', 'p', 'x')))) \
              ORDER BY 1",
            &[&t.oid, &t.attnum],
        )
        .await
        .map_err(|e| t.db_error("looking up what depends on the column", &e))?;
    if rows.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Err(MigrateError::Usage(format!(
        "{}: {} depend(s) on the column; an online migration would leave them on the old values. \
         Drop them and recreate them afterwards, or run with --in-place (one table rewrite under \
         an ACCESS EXCLUSIVE lock)",
        t.name,
        list.join(", ")
    )))
}

/// The longest step 1 waits for running pgveils to confirm they reloaded
/// their catalog after the rename. In between, statements naming the
/// column fail, which is what a pgveil still planning with the old catalog
/// must do: with the new column in place it would read and filter on the
/// new column alone.
const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Confirmations from running pgveils that their catalog knows about the
/// move (see `catalog::ACK_CHANNEL`).
struct Acks {
    /// The listening connections of the pgveils running now, by backend
    /// process id.
    expected: std::collections::HashSet<i32>,
    /// `(sender, payload)` of each acknowledgement.
    rx: tokio::sync::mpsc::UnboundedReceiver<(i32, String)>,
    /// Sent with the change; acknowledgements carry it back.
    token: String,
    /// Keeps the listening connection open.
    _client: tokio_postgres::Client,
}

impl Acks {
    /// Listens for acknowledgements and notes which pgveils must send one;
    /// call before the change they acknowledge.
    async fn listen(ctx: &Ctx) -> Result<Acks, MigrateError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let on: crate::catalog::OnNotification = Box::new(move |pid, payload| {
            let _ = tx.send((pid, payload.to_owned()));
        });
        let (client, _) =
            crate::catalog::connect_with(&ctx.config, "pgveil migrate", Some(on)).await?;
        let usage = |e: tokio_postgres::Error| {
            MigrateError::Usage(format!("cannot listen for pgveil's acknowledgements: {e}"))
        };
        client
            .batch_execute(&format!("LISTEN {}", crate::catalog::ACK_CHANNEL))
            .await
            .map_err(usage)?;
        let expected = client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                &[&crate::catalog::LISTENER_NAME],
            )
            .await
            .map_err(usage)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let token = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        Ok(Acks {
            expected,
            rx,
            token,
            _client: client,
        })
    }

    /// The notification that asks for the acknowledgements.
    fn notify_sql(&self) -> String {
        format!(
            "NOTIFY {}, {}",
            crate::catalog::CHANGES_CHANNEL,
            super::plan::literal(&self.token)
        )
    }

    /// Waits until every pgveil running at [`Acks::listen`] has reloaded
    /// its catalog after the notification, or [`ACK_TIMEOUT`].
    async fn wait(mut self, column: &str) {
        let start = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        let total = self.expected.len();
        while !self.expected.is_empty() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((pid, payload))) => {
                    if payload == self.token {
                        self.expected.remove(&pid);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        let ms = start.elapsed().as_millis();
        if self.expected.is_empty() {
            eprintln!("{column}: {total} running pgveil(s) reloaded their catalog in {ms} ms");
        } else {
            eprintln!(
                "{column}: WARNING: {} of {total} running pgveil(s) did not confirm a catalog reload \
                 within {} s; until they reload they may read and filter on the new column alone. \
                 Reload them (SIGHUP or POST /reload)",
                self.expected.len(),
                ACK_TIMEOUT.as_secs()
            );
        }
    }
}

/// The function pgveil's rewrites read a hidden column's old values
/// through (`sql/online.rs`): their text form printed with the settings
/// the batches encrypt with, whatever the client's own `DateStyle`,
/// `IntervalStyle` or `extra_float_digits`, so a value not moved yet reads
/// exactly as it will once it is an envelope. Application roles call it
/// through pgveil, hence `USAGE` on the schema for everyone (the schema's
/// table stays private); its own `search_path` is pinned so that a
/// client's cannot substitute `convert_to`.
///
/// Concurrent `CREATE OR REPLACE` or `GRANT` of the same object fail in
/// PostgreSQL ("tuple concurrently updated"), so migrations running side by
/// side take turns on a transaction-scoped advisory lock first (always
/// before any table lock, so they cannot deadlock).
const LEGACY_TEXT_FN: &str = "SELECT pg_advisory_xact_lock(7081960543233154405);
    CREATE SCHEMA IF NOT EXISTS pgveil;
    CREATE OR REPLACE FUNCTION pgveil.legacy_text(anyelement) RETURNS bytea
      LANGUAGE sql STABLE PARALLEL SAFE
      SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' SET extra_float_digits = 1
      SET search_path = pg_catalog
      AS $pgveil$ SELECT convert_to($1::text, 'UTF8') $pgveil$;
    GRANT USAGE ON SCHEMA pgveil TO PUBLIC;";

/// Step 1a, in one transaction: the column becomes the hidden one.
async fn rename(ctx: &mut Ctx, t: &Target, legacy: &str, notify: &str) -> Result<(), MigrateError> {
    let (tbl, c, l) = (&t.table_sql, &t.column_sql, &ident(legacy));
    let sql = format!(
        "SET LOCAL lock_timeout = '{lock}';
         ALTER TABLE {tbl} RENAME COLUMN {c} TO {l};
         COMMENT ON COLUMN {tbl}.{l} IS 'pgveil: values of column {col} not encrypted yet; dropped when pgveil migrate encrypt finishes';
         {notify};",
        lock = super::batches::LOCK_TIMEOUT,
        col = t.name.column.replace('\'', "''"),
    );
    let err = |e| t.db_error("renaming the column to its hidden name", &e);
    let tx = ctx.client.transaction().await.map_err(err)?;
    state::ensure(&tx, t).await?;
    state::set(&tx, t, State::Encrypting, &t.db_type).await?;
    state::set_legacy(&tx, t, Some(legacy)).await?;
    tx.batch_execute(LEGACY_TEXT_FN).await.map_err(err)?;
    tx.batch_execute(&sql).await.map_err(err)?;
    tx.commit().await.map_err(err)
}

/// Step 1b, in one transaction: the new column, the triggers, and NOT
/// NULL carried over as a check that one of the two is set.
async fn add_column(ctx: &mut Ctx, t: &Target, n: &Names) -> Result<(), MigrateError> {
    let (tbl, c, l) = (&t.table_sql, &t.column_sql, &n.legacy);
    let notnull: bool = ctx
        .client
        .query_one(
            &format!(
                "SELECT attnotnull FROM pg_attribute WHERE attrelid = $1 AND attname = {}",
                crate::migrate::plan::literal(&n.legacy_name)
            ),
            &[&t.oid],
        )
        .await
        .map_err(|e| t.db_error("reading the hidden column", &e))?
        .get(0);
    let mut sql = format!(
        "SET LOCAL lock_timeout = '{lock}';
         ALTER TABLE {tbl} ADD COLUMN {c} bytea;
         CREATE OR REPLACE FUNCTION {clear_fn}() RETURNS trigger LANGUAGE plpgsql AS $pgveil$
           BEGIN NEW.{l} := NULL; RETURN NEW; END $pgveil$;
         CREATE OR REPLACE FUNCTION {guard_fn}() RETURNS trigger LANGUAGE plpgsql AS $pgveil$
           BEGIN
             IF NEW.{l} IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.{l}::text IS DISTINCT FROM OLD.{l}::text) THEN
               RAISE EXCEPTION 'pgveil: column {col} is being encrypted online; its old values can only be cleared'
                 USING ERRCODE = '55000';
             END IF;
             RETURN NEW;
           END $pgveil$;
         CREATE TRIGGER {clear_trigger} BEFORE UPDATE OF {c} ON {tbl} FOR EACH ROW EXECUTE FUNCTION {clear_fn}();
         CREATE TRIGGER {guard_trigger} BEFORE INSERT OR UPDATE OF {l} ON {tbl} FOR EACH ROW EXECUTE FUNCTION {guard_fn}();",
        lock = super::batches::LOCK_TIMEOUT,
        col = t.name.column.replace('\'', "''"),
        clear_fn = n.clear_fn,
        guard_fn = n.guard_fn,
        clear_trigger = n.clear_trigger,
        guard_trigger = n.guard_trigger,
    );
    if notnull {
        sql.push_str(&format!(
            "ALTER TABLE {tbl} ALTER COLUMN {l} DROP NOT NULL;
             ALTER TABLE {tbl} ADD CONSTRAINT {check} CHECK ({c} IS NOT NULL OR {l} IS NOT NULL) NOT VALID;",
            check = n.either_check
        ));
    }
    sql.push_str(&format!("NOTIFY {};", crate::catalog::CHANGES_CHANNEL));
    let err = |e| t.db_error("adding the new bytea column", &e);
    let tx = ctx.client.transaction().await.map_err(err)?;
    // Again for a run resumed after a rename made by an earlier version.
    tx.batch_execute(LEGACY_TEXT_FN).await.map_err(err)?;
    tx.batch_execute(&sql).await.map_err(err)?;
    tx.commit().await.map_err(err)
}

/// Whether the column exists under its own name (step 1b has run).
async fn column_exists(ctx: &Ctx, t: &Target) -> Result<bool, MigrateError> {
    Ok(ctx
        .client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = $1 AND attname = $2 \
               AND NOT attisdropped)",
            &[&t.oid, &t.name.column],
        )
        .await
        .map_err(|e| t.db_error("looking up the column", &e))?
        .get(0))
}

/// Step 3: NOT NULL proven online, then one short transaction.
async fn finish(ctx: &mut Ctx, t: &Target, n: &Names, notnull: bool) -> Result<(), MigrateError> {
    let (tbl, c, l) = (&t.table_sql, &t.column_sql, &n.legacy);
    let lock = super::batches::LOCK_TIMEOUT;
    let err = |e| t.db_error("finishing the online migration", &e);
    if notnull {
        ctx.client
            .batch_execute(&format!(
                "SET lock_timeout = '{lock}';
                 ALTER TABLE {tbl} DROP CONSTRAINT IF EXISTS {f};
                 ALTER TABLE {tbl} ADD CONSTRAINT {f} CHECK ({c} IS NOT NULL) NOT VALID;
                 ALTER TABLE {tbl} VALIDATE CONSTRAINT {f};
                 RESET lock_timeout;",
                f = n.final_check
            ))
            .await
            .map_err(err)?;
    }
    let mut sql = format!("SET LOCAL lock_timeout = '{lock}';");
    if notnull {
        sql.push_str(&format!(
            "ALTER TABLE {tbl} ALTER COLUMN {c} SET NOT NULL;
             ALTER TABLE {tbl} DROP CONSTRAINT {f};
             ALTER TABLE {tbl} DROP CONSTRAINT IF EXISTS {e};",
            f = n.final_check,
            e = n.either_check
        ));
    }
    sql.push_str(&format!(
        "DROP TRIGGER {ct} ON {tbl};
         DROP TRIGGER {gt} ON {tbl};
         ALTER TABLE {tbl} DROP COLUMN {l};
         DROP FUNCTION {cf}();
         DROP FUNCTION {gf}();
         NOTIFY pgveil_catalog;",
        ct = n.clear_trigger,
        gt = n.guard_trigger,
        cf = n.clear_fn,
        gf = n.guard_fn,
    ));
    let original = state::get(&ctx.client, t)
        .await?
        .map(|(_, ty)| ty)
        .unwrap_or_else(|| super::sql_type(t.logical).to_owned());
    let tx = ctx.client.transaction().await.map_err(err)?;
    tx.batch_execute(&sql).await.map_err(err)?;
    state::set(&tx, t, State::Encrypted, &original).await?;
    state::set_legacy(&tx, t, None).await?;
    tx.commit().await.map_err(err)
}

/// Old values not encrypted yet.
async fn pending(ctx: &Ctx, t: &Target, n: &Names) -> Result<i64, MigrateError> {
    Ok(ctx
        .client
        .query_one(
            &format!(
                "SELECT count(*) FROM {} WHERE {} IS NOT NULL",
                t.table_sql, n.legacy
            ),
            &[],
        )
        .await
        .map_err(|e| t.db_error("counting values not encrypted yet", &e))?
        .get(0))
}

/// The hidden column's attribute number (an error if it is gone).
async fn attnum_of(ctx: &Ctx, t: &Target, legacy: &str) -> Result<i16, MigrateError> {
    let row = ctx
        .client
        .query_opt(
            "SELECT attnum FROM pg_attribute WHERE attrelid = $1 AND attname = $2 AND NOT attisdropped",
            &[&t.oid, &legacy],
        )
        .await
        .map_err(|e| t.db_error("looking up the hidden column", &e))?;
    match row {
        Some(r) => Ok(r.get(0)),
        None => Err(MigrateError::Usage(format!(
            "{}: pgveil.migrations says the old values are in column {legacy}, which does not exist; \
             it was changed by hand: check the table and the row in pgveil.migrations",
            t.name
        ))),
    }
}

/// Whether step 1b made the NOT NULL check (the column was NOT NULL).
async fn has_constraint(ctx: &Ctx, t: &Target, n: &Names) -> Result<bool, MigrateError> {
    Ok(ctx
        .client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = $1 AND conname = $2)",
            &[&t.oid, &n.either_check_name],
        )
        .await
        .map_err(|e| t.db_error("looking up constraints", &e))?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_names_fit_postgres_identifiers() {
        assert_eq!(legacy_name("phone", 3), "__pgveil_legacy_phone");
        let long = "x".repeat(60);
        assert_eq!(legacy_name(&long, 7), "__pgveil_legacy_7");
        assert!(legacy_name(&"y".repeat(47), 1).len() <= 63);
    }
}
