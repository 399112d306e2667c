//! Columns `pgveil migrate` is converting, as the catalog sees them
//! (`pgveil.migrations`): their stored values may be legacy plaintext, and
//! a column moved online has a hidden twin that analysis must read too and
//! no result may show.

use super::{Catalog, TableColumns};
use crate::sql::ColumnInfo;

/// One row of `pgveil.migrations` the catalog acts on: a column that is
/// being encrypted or decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrating {
    /// Schema of the table.
    pub schema: String,
    /// The table.
    pub table: String,
    /// The policy column.
    pub column: String,
    /// For an online encryption: the hidden column holding the values
    /// not encrypted yet.
    pub legacy: Option<String>,
}

impl Catalog {
    /// Records the columns being migrated (loaded with the catalog, before
    /// the views). A column migrated online has a hidden twin holding the
    /// values not encrypted yet: it leaves the table's visible columns, its
    /// policy column learns its name (so analysis reads both), and the
    /// twin itself counts as computed from protected data, so no result
    /// and no view may show it.
    pub fn set_migrating(&mut self, migrating: &[Migrating], columns: &TableColumns) {
        self.migrating = migrating
            .iter()
            .map(|m| format!("{}.{}.{}", m.schema, m.table, m.column))
            .collect();
        // Between the two steps of its start, an online migration's column
        // exists only under its hidden name. It is not missing: statements
        // naming it are rewritten as usual and fail at the server until
        // the new column exists, and the rest of the table stays usable.
        for m in migrating.iter().filter(|m| m.legacy.is_some()) {
            let full = format!("{}.{}.{}", m.schema, m.table, m.column);
            let Some(pc) = self.absent.remove(&full) else {
                continue;
            };
            self.missing.retain(|x| x != &full);
            if let Some(info) = self.tables.get_mut(&(m.schema.clone(), m.table.clone())) {
                info.columns.push(ColumnInfo {
                    name: m.column.clone(),
                    protected: Some(pc),
                });
            }
        }
        let mut online: Vec<(&str, &str, &str, &str, bool)> = migrating
            .iter()
            .filter_map(|m| {
                let l = m.legacy.as_deref()?;
                let moved = columns
                    .get(&(m.schema.clone(), m.table.clone()))
                    .is_some_and(|cols| cols.iter().any(|(_, _, n)| n == &m.column));
                Some((
                    m.schema.as_str(),
                    m.table.as_str(),
                    m.column.as_str(),
                    l,
                    moved,
                ))
            })
            .collect();
        online.sort_unstable();
        self.online_epoch = if online.is_empty() {
            0
        } else {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            online.hash(&mut h);
            h.finish() | 1
        };
        for m in migrating {
            let Some(legacy) = &m.legacy else { continue };
            let key = (m.schema.clone(), m.table.clone());
            let Some(info) = self.tables.get_mut(&key) else {
                continue;
            };
            info.columns.retain(|c| &c.name != legacy);
            if !info.hidden.contains(legacy) {
                info.hidden.push(legacy.clone());
            }
            if let Some(pc) = info
                .columns
                .iter_mut()
                .find(|c| c.name == m.column)
                .and_then(|c| c.protected.as_mut())
            {
                pc.legacy = Some(legacy.clone());
            }
            for (oid, attnum, name) in columns.get(&key).into_iter().flatten() {
                if name == &m.column {
                    if let Some(pc) = self.by_attr.get_mut(&(*oid, *attnum)) {
                        pc.legacy = Some(legacy.clone());
                    }
                } else if name == legacy {
                    self.computed.insert(
                        (*oid, *attnum),
                        format!("{}.{}.{legacy}", m.schema, m.table),
                    );
                }
            }
        }
    }

    /// Which online migrations are in progress (0: none): statements
    /// read differently under each set.
    pub fn online_epoch(&self) -> u64 {
        self.online_epoch
    }
}

/// The columns `pgveil migrate` is converting, from `pgveil.migrations`
/// (none before its first run; `legacy_column` is absent before the first
/// online run).
pub(super) async fn load(
    client: &tokio_postgres::Client,
) -> Result<Vec<Migrating>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT m.table_schema, m.table_name, m.column_name, \
                    CASE WHEN m.state = 'encrypting' THEN to_jsonb(m)->>'legacy_column' END \
               FROM pgveil.migrations m WHERE m.state IN ('encrypting', 'decrypting') \
                AND to_regclass('pgveil.migrations') IS NOT NULL",
            &[],
        )
        .await;
    match rows {
        Ok(rows) => Ok(rows
            .iter()
            .map(|r| Migrating {
                schema: r.get(0),
                table: r.get(1),
                column: r.get(2),
                legacy: r.get(3),
            })
            .collect()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}
