//! The protected part of the upstream schema, loaded from the server's
//! catalog over a dedicated connection.
//!
//! Policies name tables and columns; the catalog turns them into what the
//! relay needs: every column of each protected table in attribute order
//! (so an INSERT without a column list maps positions), and table OID +
//! attribute number → policy (so a RowDescription field maps to its source
//! column). A table named in a policy but absent from the database is
//! remembered as *missing*: statements that mention it are refused until a
//! reload finds it, because relaying them could write plaintext into a
//! column that is meant to be encrypted.

use crate::config::Config;
use crate::crypto::LogicalType;
use crate::policy::{ColumnPolicy, QualifiedName};
use crate::sql::{ColumnInfo, ProtectedColumn, Schema, TableInfo};
use std::collections::HashMap;

mod connect;
mod migrating;
pub mod views;
pub use connect::{
    connect, connect_with, listen, OnNotification, PendingTokens, ACK_CHANNEL, CHANGES_CHANNEL,
    LISTENER_NAME,
};
pub use migrating::Migrating;
pub use views::ViewDef;

/// Why the catalog could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Connecting to or querying the upstream failed.
    #[error("pgveil: cannot load the catalog from {addr} as {user}: {source}")]
    Db {
        /// Upstream address.
        addr: String,
        /// Catalog user.
        user: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// `[catalog] password_env` names an unset variable.
    #[error("pgveil: [catalog] password_env names {0}, which is not set")]
    MissingPassword(String),
    /// A policy that passed `pgveil check` cannot be resolved (bad name or type).
    #[error("pgveil: invalid column policy: {0}")]
    Policy(String),
    /// `[upstream_tls]` cannot be set up for the catalog connection.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Columns the server reported per `(schema, table)`: table OID, attnum, name.
pub type TableColumns = HashMap<(String, String), Vec<(u32, i16, String)>>;

/// The protected tables, their columns, and OID/attnum lookups.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    tables: HashMap<(String, String), TableInfo>,
    by_attr: HashMap<(u32, i16), ProtectedColumn>,
    table_oids: std::collections::HashSet<u32>,
    missing: Vec<String>,
    /// PostgreSQL role → every role it is a member of (itself included).
    memberships: HashMap<String, Vec<String>>,
    /// View columns that may be computed from a protected column:
    /// `(view OID, attnum)` → `schema.view.column`.
    computed: HashMap<(u32, i16), String>,
    /// Columns `pgveil migrate` is encrypting or decrypting right now, by
    /// full name: their values may still be legacy plaintext.
    migrating: std::collections::HashSet<String>,
    /// Every column (table OID, attnum) of the protected tables and views,
    /// so a result field the catalog has never seen (a column added since
    /// the last load) is noticed instead of being relayed as plaintext.
    attrs: std::collections::HashSet<(u32, i16)>,
    /// Policy columns the database does not have, by full name, in case
    /// one is the column of an online migration between its two steps.
    absent: HashMap<String, ProtectedColumn>,
    /// Identifies the set of online migrations in progress (0: none), so
    /// a statement prepared under another set is prepared again.
    online_epoch: u64,
}

impl Catalog {
    /// Builds a catalog from policies and the columns the server reported
    /// for each table: `(schema, table) → [(table oid, attnum, name)]`.
    pub fn build(
        policies: &[ColumnPolicy],
        columns: &TableColumns,
    ) -> Result<Catalog, CatalogError> {
        let mut cat = Catalog::default();
        let mut wanted: HashMap<(String, String), Vec<(QualifiedName, ProtectedColumn)>> =
            HashMap::new();
        for p in policies {
            let name = QualifiedName::of(p).map_err(CatalogError::Policy)?;
            let logical_type = p
                .logical_type
                .parse::<LogicalType>()
                .map_err(|e| CatalogError::Policy(e.to_string()))?;
            let level = u8::try_from(p.level)
                .ok()
                .filter(|l| (1..=4).contains(l))
                .ok_or_else(|| CatalogError::Policy(format!("{name}: level {}", p.level)))?;
            let protected = ProtectedColumn {
                full_name: name.to_string(),
                logical_type,
                protection: p.encrypt,
                level,
                legacy: None,
            };
            wanted
                .entry((name.schema.clone(), name.table.clone()))
                .or_default()
                .push((name, protected));
        }
        for (key, cols) in wanted {
            let Some(attrs) = columns.get(&key).filter(|a| !a.is_empty()) else {
                cat.missing.push(format!("{}.{}", key.0, key.1));
                continue;
            };
            let mut info = TableInfo {
                schema: key.0.clone(),
                name: key.1.clone(),
                columns: Vec::with_capacity(attrs.len()),
                hidden: Vec::new(),
            };
            for (oid, attnum, attname) in attrs {
                cat.table_oids.insert(*oid);
                cat.attrs.insert((*oid, *attnum));
                let protected = cols
                    .iter()
                    .find(|(n, _)| &n.column == attname)
                    .map(|(_, p)| p.clone());
                if let Some(p) = &protected {
                    cat.by_attr.insert((*oid, *attnum), p.clone());
                }
                info.columns.push(ColumnInfo {
                    name: attname.clone(),
                    protected,
                });
            }
            // A policy column the table does not have: keep it visible as
            // missing rather than silently unprotected.
            for (n, p) in &cols {
                if info.column(&n.column).is_none() {
                    cat.missing.push(n.to_string());
                    cat.absent.insert(n.to_string(), p.clone());
                }
            }
            cat.tables.insert(key, info);
        }
        cat.missing.sort();
        Ok(cat)
    }

    /// The PostgreSQL roles `user` belongs to, directly or inherited,
    /// itself included (just itself when unknown).
    pub fn memberships(&self, user: &str) -> Vec<String> {
        self.memberships
            .get(user)
            .cloned()
            .unwrap_or_else(|| vec![user.to_owned()])
    }

    /// Replaces the role memberships (loaded with the catalog).
    pub fn set_memberships(&mut self, memberships: HashMap<String, Vec<String>>) {
        self.memberships = memberships;
    }

    /// Policy tables or columns the database did not have at load time.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// Whether `pgveil migrate` is converting the column, so a stored value
    /// that is not one of its envelopes is legacy plaintext, not an error.
    pub fn is_migrating(&self, full_name: &str) -> bool {
        self.migrating.contains(full_name)
    }

    /// Whether the catalog has seen this column of a protected table or
    /// view.
    pub fn knows_attr(&self, table_oid: u32, attnum: i16) -> bool {
        self.attrs.contains(&(table_oid, attnum))
    }

    /// The name of a view column that may be computed from a protected
    /// column, which no role may receive (see [`views`]).
    pub fn computed(&self, table_oid: u32, attnum: i16) -> Option<&str> {
        self.computed.get(&(table_oid, attnum)).map(String::as_str)
    }

    /// Maps view columns to the protected columns they expose unchanged,
    /// and marks the other columns of views that read protected data as
    /// computed. Views of views resolve in as many passes as they nest.
    pub fn add_views(&mut self, views: &[ViewDef]) {
        for _ in 0..=views.len() {
            let mut changed = false;
            for v in views {
                let reads_protected = v
                    .depends
                    .iter()
                    .any(|d| self.by_attr.contains_key(d) || self.computed.contains_key(d));
                for (attnum, col) in &v.columns {
                    let key = (v.oid, *attnum);
                    if self.by_attr.contains_key(&key) || self.computed.contains_key(&key) {
                        continue;
                    }
                    let target = v.targets.iter().find(|t| t.resno == *attnum && !t.junk);
                    let origin = target.filter(|t| t.plain_var).and_then(|t| t.origin);
                    if let Some(p) = origin.and_then(|o| self.by_attr.get(&o)).cloned() {
                        self.by_attr.insert(key, p);
                        changed = true;
                    } else if origin.is_some_and(|o| self.computed.contains_key(&o))
                        || (origin.is_none() && reads_protected)
                    {
                        self.computed
                            .insert(key, format!("{}.{}.{}", v.schema, v.name, col));
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        for v in views {
            let columns: Vec<ColumnInfo> = v
                .columns
                .iter()
                .map(|(attnum, name)| ColumnInfo {
                    name: name.clone(),
                    protected: self.by_attr.get(&(v.oid, *attnum)).cloned(),
                })
                .collect();
            let touches = v
                .columns
                .iter()
                .any(|(a, _)| self.computed.contains_key(&(v.oid, *a)));
            if !columns.iter().any(|c| c.protected.is_some()) && !touches {
                continue;
            }
            self.table_oids.insert(v.oid);
            self.attrs
                .extend(v.columns.iter().map(|(attnum, _)| (v.oid, *attnum)));
            let key = (v.schema.clone(), v.name.clone());
            self.tables.entry(key).or_insert(TableInfo {
                schema: v.schema.clone(),
                name: v.name.clone(),
                columns,
                hidden: Vec::new(),
            });
        }
    }

    /// Whether a table OID belongs to a protected table.
    pub fn knows_table(&self, table_oid: u32) -> bool {
        self.table_oids.contains(&table_oid)
    }

    /// The policy of the column a RowDescription field comes from.
    pub fn by_attr(&self, table_oid: u32, attnum: i16) -> Option<&ProtectedColumn> {
        self.by_attr.get(&(table_oid, attnum))
    }

    /// Every protected column, for building ciphers once.
    pub fn protected_columns(&self) -> impl Iterator<Item = &ProtectedColumn> {
        self.tables
            .values()
            .flat_map(|t| t.columns.iter().filter_map(|c| c.protected.as_ref()))
    }

    /// Loads the columns of every policy table from the upstream server.
    pub async fn load(config: &Config) -> Result<Catalog, CatalogError> {
        let client = connect(config).await?;
        let err = |source| CatalogError::Db {
            addr: config.proxy.upstream.clone(),
            user: config.catalog.user.clone(),
            source,
        };
        let stmt = client
            .prepare(
                "SELECT c.oid, a.attnum, a.attname::text \
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                   JOIN pg_attribute a ON a.attrelid = c.oid \
                  WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
                  ORDER BY a.attnum",
            )
            .await
            .map_err(err)?;
        let mut columns = TableColumns::new();
        for p in &config.columns {
            let name = QualifiedName::of(p).map_err(CatalogError::Policy)?;
            let key = (name.schema, name.table);
            if columns.contains_key(&key) {
                continue;
            }
            let rows = client.query(&stmt, &[&key.0, &key.1]).await.map_err(err)?;
            let attrs = rows
                .iter()
                .map(|r| {
                    (
                        r.get::<_, u32>(0),
                        r.get::<_, i16>(1),
                        r.get::<_, String>(2),
                    )
                })
                .collect();
            columns.insert(key, attrs);
        }
        let mut catalog = Catalog::build(&config.columns, &columns)?;
        let rows = client
            .query(
                "SELECT u.rolname::text, r.rolname::text FROM pg_roles u \
                   JOIN pg_roles r ON pg_has_role(u.oid, r.oid, 'MEMBER')",
                &[],
            )
            .await
            .map_err(err)?;
        let mut memberships: HashMap<String, Vec<String>> = HashMap::new();
        for r in rows {
            memberships
                .entry(r.get::<_, String>(0))
                .or_default()
                .push(r.get::<_, String>(1));
        }
        catalog.set_memberships(memberships);
        let migrating = migrating::load(&client).await.map_err(err)?;
        catalog.set_migrating(&migrating, &columns);
        let views = load_views(&client).await.map_err(err)?;
        catalog.add_views(&views);
        Ok(catalog)
    }
}

impl Schema for Catalog {
    /// An unqualified name resolves to `public` when the catalog has the
    /// table there, otherwise to the protected table of that name in any
    /// other schema. pgveil does not follow each session's `search_path`,
    /// so it errs toward protection: a name that could mean a protected
    /// table is always treated as that table, never as unprotected.
    fn table(&self, schema: Option<&str>, name: &str) -> Option<&TableInfo> {
        match schema {
            Some(s) => self.tables.get(&(s.to_owned(), name.to_owned())),
            None => self
                .tables
                .get(&("public".to_owned(), name.to_owned()))
                .or_else(|| {
                    let mut others: Vec<&TableInfo> =
                        self.tables.values().filter(|t| t.name == name).collect();
                    others.sort_by(|a, b| a.schema.cmp(&b.schema));
                    others.into_iter().next()
                }),
        }
    }

    fn protected_names(&self) -> Vec<String> {
        self.tables
            .values()
            .filter(|t| t.is_protected())
            .map(|t| t.name.to_lowercase())
            .collect()
    }
}

/// Every view and materialized view outside the system schemas, with its
/// rule's target list and the columns it depends on.
async fn load_views(
    client: &tokio_postgres::Client,
) -> Result<Vec<ViewDef>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, r.ev_action::text, \
                    ARRAY(SELECT a.attnum FROM pg_attribute a \
                           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                           ORDER BY a.attnum), \
                    ARRAY(SELECT a.attname::text FROM pg_attribute a \
                           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                           ORDER BY a.attnum), \
                    ARRAY(SELECT d.refobjid FROM pg_depend d \
                           WHERE d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid \
                             AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 \
                           ORDER BY d.refobjid, d.refobjsubid), \
                    ARRAY(SELECT d.refobjsubid::int2 FROM pg_depend d \
                           WHERE d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid \
                             AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 \
                           ORDER BY d.refobjid, d.refobjsubid) \
               FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE r.rulename = '_RETURN' AND c.relkind IN ('v', 'm') \
                AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                AND n.nspname NOT LIKE 'pg\\_%'",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let attnums: Vec<i16> = r.get(4);
            let names: Vec<String> = r.get(5);
            let dep_oids: Vec<u32> = r.get(6);
            let dep_cols: Vec<i16> = r.get(7);
            ViewDef {
                oid: r.get(0),
                schema: r.get(1),
                name: r.get(2),
                columns: attnums.into_iter().zip(names).collect(),
                // A rule pgveil cannot read: every column counts as computed.
                targets: views::target_list(r.get::<_, &str>(3)).unwrap_or_default(),
                depends: dep_oids.into_iter().zip(dep_cols).collect(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(text: &str) -> Vec<ColumnPolicy> {
        #[derive(serde::Deserialize)]
        struct F {
            columns: Vec<ColumnPolicy>,
        }
        match toml::from_str::<F>(text) {
            Ok(f) => f.columns,
            Err(e) => panic!("{e}"),
        }
    }

    /// An online move: the hidden column leaves the visible ones and may
    /// not be shown; the policy column knows it; between the two steps
    /// the policy column is not "missing"; each stage has its own epoch.
    #[test]
    fn an_online_move_hides_the_old_column_and_marks_each_stage() {
        let p = policies(
            "[[columns]]\ntable = \"guests\"\ncolumn = \"phone\"\ntype = \"text\"\nencrypt = \"searchable\"\nlevel = 3\n",
        );
        let moving = [Migrating {
            schema: "public".into(),
            table: "guests".into(),
            column: "phone".into(),
            legacy: Some("__pgveil_legacy_phone".into()),
        }];
        let stage = |names: &[(i16, &str)]| {
            let mut cols = HashMap::new();
            cols.insert(
                ("public".to_owned(), "guests".to_owned()),
                names
                    .iter()
                    .map(|(a, n)| (500, *a, (*n).to_owned()))
                    .collect(),
            );
            let mut cat = Catalog::build(&p, &cols).unwrap();
            cat.set_migrating(&moving, &cols);
            cat
        };
        let before = {
            let mut cols = HashMap::new();
            cols.insert(
                ("public".to_owned(), "guests".to_owned()),
                vec![(500, 1, "id".to_owned()), (500, 2, "phone".to_owned())],
            );
            Catalog::build(&p, &cols).unwrap()
        };
        // Renamed, new column not added yet.
        let gap = stage(&[(1, "id"), (2, "__pgveil_legacy_phone")]);
        assert!(gap.missing().is_empty(), "{:?}", gap.missing());
        let t = gap.table(None, "guests").unwrap();
        let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "phone"]);
        assert_eq!(t.hidden, ["__pgveil_legacy_phone"]);
        assert!(gap
            .computed(500, 2)
            .is_some_and(|c| c.contains("__pgveil_legacy_phone")));
        // Both columns.
        let moving_now = stage(&[(1, "id"), (2, "__pgveil_legacy_phone"), (3, "phone")]);
        let pc = moving_now.by_attr(500, 3).unwrap();
        assert_eq!(pc.legacy.as_deref(), Some("__pgveil_legacy_phone"));
        assert!(moving_now.by_attr(500, 2).is_none());
        assert!(moving_now.knows_attr(500, 3) && moving_now.knows_attr(500, 2));
        assert!(moving_now.is_migrating("public.guests.phone"));
        let epochs = [
            before.online_epoch(),
            gap.online_epoch(),
            moving_now.online_epoch(),
        ];
        assert_eq!(epochs[0], 0);
        assert!(epochs[1] != 0 && epochs[2] != 0 && epochs[1] != epochs[2]);
    }

    #[test]
    fn maps_columns_in_order_and_notes_missing() {
        let p = policies(
            "[[columns]]\ntable = \"guests\"\ncolumn = \"phone\"\ntype = \"text\"\nencrypt = \"searchable\"\nlevel = 3\n\
             [[columns]]\ntable = \"guests\"\ncolumn = \"ghost\"\ntype = \"text\"\nlevel = 3\n\
             [[columns]]\ntable = \"later\"\ncolumn = \"x\"\ntype = \"int4\"\nlevel = 2\n",
        );
        let mut cols = HashMap::new();
        cols.insert(
            ("public".to_owned(), "guests".to_owned()),
            vec![(500, 1, "id".to_owned()), (500, 3, "phone".to_owned())],
        );
        let cat = Catalog::build(&p, &cols).unwrap();
        let t = cat.table(None, "guests").unwrap();
        assert_eq!(t.columns.len(), 2);
        assert!(t.columns[0].protected.is_none());
        assert_eq!(
            t.columns[1]
                .protected
                .as_ref()
                .map(|c| c.full_name.as_str()),
            Some("public.guests.phone")
        );
        assert_eq!(cat.by_attr(500, 3).map(|c| c.level), Some(3));
        assert!(cat.by_attr(500, 1).is_none());
        assert_eq!(cat.missing(), ["public.guests.ghost", "public.later"]);
        // Unqualified names never resolve to "unprotected" when a protected
        // table of that name exists in another schema.
        let p2 = policies(
            "[[columns]]\ntable = \"hotel.vip\"\ncolumn = \"phone\"\ntype = \"text\"\nlevel = 3\n",
        );
        let mut cols2 = HashMap::new();
        cols2.insert(
            ("hotel".to_owned(), "vip".to_owned()),
            vec![(600, 1, "phone".to_owned())],
        );
        let cat2 = Catalog::build(&p2, &cols2).unwrap();
        assert_eq!(
            cat2.table(None, "vip").map(|t| t.schema.as_str()),
            Some("hotel")
        );
        assert!(cat2.table(Some("public"), "vip").is_none());
        assert_eq!(cat.protected_names(), ["guests"]);
    }
}
