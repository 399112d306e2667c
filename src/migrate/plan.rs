//! What a migration works on: the column as the database has it, how its
//! rows are cut into batches, and the SQL for reading and writing one batch.
//!
//! Batches follow the primary key (keyset pagination: `WHERE (pk) > (last)
//! ORDER BY pk LIMIT n`), so each batch is an index range scan however far
//! the run has come. A table without a primary key, or whose key includes
//! the migrated column, is cut by ranges of heap blocks on `ctid` instead
//! (a TID range scan). Key values travel as text and are cast back to their
//! column type, so any key type works.

use super::error::{describe_db, MigrateError};
use crate::crypto::{LogicalType, Mode};
use crate::policy::{ColumnPolicy, QualifiedName};
use tokio_postgres::{Client, GenericClient};

/// How rows are ordered into batches.
#[derive(Debug, Clone)]
pub enum Keyset {
    /// Primary-key columns: (quoted name, type as `format_type` prints it).
    Pk(Vec<(String, String)>),
    /// No usable primary key: heap block ranges.
    Ctid,
}

/// One policy column resolved against the live schema.
#[derive(Debug, Clone)]
pub struct Target {
    /// `schema.table.column`.
    pub name: QualifiedName,
    /// The policy's logical type.
    pub logical: LogicalType,
    /// The policy's mode (`None` for `encrypt = "none"`).
    pub mode: Option<Mode>,
    /// The column's type in the database now (`format_type`).
    pub db_type: String,
    /// Table OID.
    pub oid: u32,
    /// How batches are cut.
    pub keys: Keyset,
    /// Indexes that include the column: (name, definition).
    pub indexes: Vec<(String, String)>,
    /// Quoted `"schema"."table"`.
    pub table_sql: String,
    /// Quoted `"column"`.
    pub column_sql: String,
    /// The column's attribute number.
    pub attnum: i16,
    /// During an online encryption: the quoted hidden column the values
    /// not encrypted yet are read from (and cleared in).
    pub legacy_sql: Option<String>,
}

pub use crate::sql::quote_ident as ident;

/// Quotes a string literal for SQL.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Target {
    /// Looks the policy's column up in the database.
    pub async fn resolve(client: &Client, policy: &ColumnPolicy) -> Result<Target, MigrateError> {
        let name = QualifiedName::of(policy).map_err(MigrateError::Usage)?;
        let logical: LogicalType = policy.logical_type.parse()?;
        let mode = match policy.encrypt {
            crate::policy::Protection::None => None,
            crate::policy::Protection::Randomized => Some(Mode::Randomized),
            crate::policy::Protection::Searchable => Some(Mode::Searchable),
        };
        let db = |action| {
            let column = name.to_string();
            move |e: tokio_postgres::Error| MigrateError::Db {
                column,
                action,
                reason: describe_db(&e),
            }
        };
        let lookup = |column: String| {
            let name = &name;
            async move {
                client
                    .query_opt(
                        "SELECT c.oid, format_type(a.atttypid, a.atttypmod), a.attnum \
                           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                           JOIN pg_attribute a ON a.attrelid = c.oid \
                          WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3 \
                            AND a.attnum > 0 AND NOT a.attisdropped",
                        &[&name.schema, &name.table, &column],
                    )
                    .await
            }
        };
        let mut row = lookup(name.column.clone())
            .await
            .map_err(db("looking up the column"))?;
        if row.is_none() {
            // An online encryption stopped between renaming the column and
            // adding it again: the column is its hidden twin for now.
            if let Some(legacy) = super::state::legacy_of(client, &name)
                .await
                .map_err(db("reading pgveil.migrations"))?
            {
                row = lookup(legacy).await.map_err(db("looking up the column"))?;
            }
        }
        let Some(row) = row else {
            return Err(MigrateError::Usage(format!(
                "column {name} does not exist in the database"
            )));
        };
        let oid: u32 = row.get(0);
        let db_type: String = row.get(1);
        let attnum: i16 = row.get(2);
        let pk = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnum \
                   FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                  WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
                &[&oid],
            )
            .await
            .map_err(db("looking up the primary key"))?;
        let keys = if pk.is_empty() || pk.iter().any(|r| r.get::<_, i16>(2) == attnum) {
            Keyset::Ctid
        } else {
            Keyset::Pk(
                pk.iter()
                    .map(|r| (ident(r.get::<_, &str>(0)), r.get::<_, String>(1)))
                    .collect(),
            )
        };
        let indexes = client
            .query(
                "SELECT ic.relname::text, pg_get_indexdef(i.indexrelid) \
                   FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
                  WHERE i.indrelid = $1 AND $2::int2 = ANY(i.indkey::int2[]) ORDER BY 1",
                &[&oid, &attnum],
            )
            .await
            .map_err(db("looking up indexes"))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(Target {
            table_sql: format!("{}.{}", ident(&name.schema), ident(&name.table)),
            column_sql: ident(&name.column),
            name,
            logical,
            mode,
            db_type,
            oid,
            keys,
            indexes,
            attnum,
            legacy_sql: None,
        })
    }

    /// Whether the column is `bytea` in the database.
    pub fn is_bytea(&self) -> bool {
        self.db_type == "bytea"
    }

    /// Rows in the table (exact; one sequential scan).
    pub async fn count_rows(&self, client: &impl GenericClient) -> Result<u64, MigrateError> {
        let sql = format!("SELECT count(*) FROM {}", self.table_sql);
        let n: i64 = client
            .query_one(&sql, &[])
            .await
            .map_err(|e| self.db_error("counting rows", &e))?
            .get(0);
        Ok(n.max(0) as u64)
    }

    /// A [`MigrateError::Db`] for this column.
    pub fn db_error(&self, action: &'static str, e: &tokio_postgres::Error) -> MigrateError {
        MigrateError::Db {
            column: self.name.to_string(),
            action,
            reason: describe_db(e),
        }
    }

    /// A row's key as an operator reads it: `primary key (id)=(42)` or `ctid (0,1)`.
    pub fn describe_key(&self, key: &[String]) -> String {
        match &self.keys {
            Keyset::Pk(cols) => format!(
                "primary key ({})=({})",
                cols.iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                key.join(", ")
            ),
            Keyset::Ctid => format!("ctid {}", key.join("")),
        }
    }

    /// SQL for the next batch. Parameters: `$1` limit (pk only), then the
    /// last key's parts as text (pk), or the block range as `tid` text (ctid).
    pub fn select_sql(&self, after_key: bool, lock: bool) -> String {
        let lock = if lock { " FOR NO KEY UPDATE" } else { "" };
        let c = &self.column_sql;
        // Online, the values come from the hidden column, as the stored
        // form of legacy plaintext, and only where one is left.
        let (value, pending) = match &self.legacy_sql {
            Some(l) if self.logical == LogicalType::Bytea => (format!("t.{l}"), Some(l)),
            Some(l) => (format!("convert_to(t.{l}::text, 'UTF8')"), Some(l)),
            None => (format!("t.{c}"), None),
        };
        match &self.keys {
            Keyset::Pk(cols) => {
                // Qualified, so ORDER BY means the column and not the
                // `::text` output column of the same name.
                let names: Vec<String> = cols.iter().map(|(n, _)| format!("t.{n}")).collect();
                let select: Vec<String> = names.iter().map(|n| format!("{n}::text")).collect();
                let mut conds = Vec::new();
                if after_key {
                    let params: Vec<String> = cols
                        .iter()
                        .enumerate()
                        .map(|(i, (_, ty))| format!("${}::text::{ty}", i + 2))
                        .collect();
                    conds.push(format!("({}) > ({})", names.join(", "), params.join(", ")));
                }
                if let Some(l) = pending {
                    conds.push(format!("t.{l} IS NOT NULL"));
                }
                let filter = if conds.is_empty() {
                    String::new()
                } else {
                    format!(" WHERE {}", conds.join(" AND "))
                };
                format!(
                    "SELECT {}, {value} FROM {} AS t{filter} ORDER BY {} LIMIT $1{lock}",
                    select.join(", "),
                    self.table_sql,
                    names.join(", ")
                )
            }
            Keyset::Ctid => format!(
                "SELECT t.ctid::text, {value} FROM {} AS t WHERE t.ctid >= $1::text::tid AND t.ctid < $2::text::tid{}{lock}",
                self.table_sql,
                pending
                    .map(|l| format!(" AND t.{l} IS NOT NULL"))
                    .unwrap_or_default()
            ),
        }
    }

    /// SQL writing one batch: key arrays as `text[]`, then the new values
    /// as `bytea[]`. Online, a row the application wrote meanwhile keeps
    /// its envelope, and the old value is cleared either way.
    pub fn update_sql(&self) -> String {
        let (cols, cond): (Vec<String>, Vec<String>) = match &self.keys {
            Keyset::Pk(cols) => cols
                .iter()
                .enumerate()
                .map(|(i, (n, ty))| (format!("k{i}"), format!("t.{n} = v.k{i}::{ty}")))
                .unzip(),
            Keyset::Ctid => (vec!["k0".into()], vec!["t.ctid = v.k0::tid".into()]),
        };
        let c = &self.column_sql;
        let set = match &self.legacy_sql {
            Some(l) => format!("{c} = COALESCE(t.{c}, v.e), {l} = NULL"),
            None => format!("{c} = v.e"),
        };
        let n = cols.len();
        let arrays: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
        format!(
            "UPDATE {} AS t SET {set} FROM unnest({}, ${}::bytea[]) AS v({}, e) WHERE {}",
            self.table_sql,
            arrays.join(", "),
            n + 1,
            cols.join(", "),
            cond.join(" AND ")
        )
    }

    /// The select list of a row's key parts as text.
    pub fn key_select_sql(&self) -> String {
        match &self.keys {
            Keyset::Pk(cols) => cols
                .iter()
                .map(|(n, _)| format!("{n}::text"))
                .collect::<Vec<_>>()
                .join(", "),
            Keyset::Ctid => "ctid::text".into(),
        }
    }

    /// Number of key parts per row.
    pub fn key_len(&self) -> usize {
        match &self.keys {
            Keyset::Pk(cols) => cols.len(),
            Keyset::Ctid => 1,
        }
    }
}
