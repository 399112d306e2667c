//! The view of the database schema that SQL analysis needs.
//!
//! The catalog (loaded from the upstream server) implements [`Schema`];
//! tests implement it with a fixed map. Identifiers are normalized the way
//! PostgreSQL does before lookup: unquoted names folded to lower case,
//! quoted names kept as written.

use crate::crypto::LogicalType;
use crate::policy::Protection;

/// A protected column: what the policy says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedColumn {
    /// `schema.table.column`, the name keys are derived from.
    pub full_name: String,
    /// The type clients see.
    pub logical_type: LogicalType,
    /// How it is stored.
    pub protection: Protection,
    /// Sensitivity grade, 1..=4.
    pub level: u8,
    /// While `pgveil migrate encrypt` converts the column online: the
    /// hidden column that still holds the not-yet-encrypted values (see
    /// [`LEGACY_PREFIX`]). A read of the column must combine both, so
    /// analysis rewrites every reference to it.
    pub legacy: Option<String>,
}

/// How the hidden columns of online migrations are named:
/// `__pgveil_legacy_<column>`. Clients may never name them; analysis
/// refuses any statement text that does.
pub const LEGACY_PREFIX: &str = "__pgveil_legacy_";

/// One column of a table, protected or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Column name as stored in the catalog.
    pub name: String,
    /// The policy, when the column is protected.
    pub protected: Option<ProtectedColumn>,
}

/// A table (or view) and its columns in attribute-number order, without
/// dropped columns, so an INSERT without a column list maps positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Columns in attnum order, without the hidden columns of online
    /// migrations, so `*` and INSERT positions mean what they will mean
    /// once the migration ends.
    pub columns: Vec<ColumnInfo>,
    /// Names of hidden columns (old values of columns being migrated
    /// online): when there are any, `*`, INSERT and COPY without a column
    /// list are rewritten to name the visible columns.
    pub hidden: Vec<String>,
}

impl TableInfo {
    /// Whether any column of the table is protected.
    pub fn is_protected(&self) -> bool {
        self.columns.iter().any(|c| c.protected.is_some())
    }

    /// Looks up a column by its normalized name.
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Quotes an identifier for SQL that pgveil writes itself (always
/// quoted, so the name means exactly the stored one).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What analysis asks of the schema.
pub trait Schema {
    /// Resolves a table reference. `schema` is `None` for an unqualified
    /// name, which resolves through the search path (`public`).
    fn table(&self, schema: Option<&str>, name: &str) -> Option<&TableInfo>;

    /// Lower-cased names of every table or view that has a protected
    /// column, for the cheap pre-filter that lets statements which cannot
    /// touch protected data skip parsing.
    fn protected_names(&self) -> Vec<String>;
}
