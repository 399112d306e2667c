//! One `[[columns]]` entry and the names in it.

use serde::Deserialize;

/// How a column is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protection {
    /// Plaintext in the database; still governed by masks and bulk limits.
    None,
    /// AES-256-GCM with a random nonce: reveals nothing but length.
    Randomized,
    /// Deterministic AES-256-GCM-SIV per column and key version: allows
    /// `=`, `IN`, joins, GROUP BY on the column, and so reveals which rows
    /// share a value.
    Searchable,
}

impl Protection {
    /// Whether the database holds an envelope (and so the column must be `bytea`).
    pub fn encrypts(self) -> bool {
        !matches!(self, Protection::None)
    }
}

fn default_protection() -> Protection {
    Protection::Randomized
}

/// One protected column as written in the config file.
///
/// `type`, `level` and `mask` are kept as written and checked by
/// [`crate::policy::check_static`], so all problems are reported together.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnPolicy {
    /// `schema.table` or `table` (schema `public`); quoted parts keep case.
    pub table: toml::Spanned<String>,
    /// The column name; quoted keeps case.
    pub column: String,
    /// Logical type the application sees (`text`, `int4`, `date`, ...).
    #[serde(rename = "type")]
    pub logical_type: String,
    /// `none`, `randomized` (default) or `searchable`.
    #[serde(default = "default_protection")]
    pub encrypt: Protection,
    /// Sensitivity grade, 1 (low) to 4 (extreme).
    pub level: i64,
    /// Mask shown to roles below the column's level (read path).
    #[serde(default)]
    pub mask: Option<String>,
}

/// A schema-qualified column name, resolved the way PostgreSQL resolves
/// identifiers: unquoted parts fold to lower case, quoted parts keep it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QualifiedName {
    /// Schema, `public` when not given.
    pub schema: String,
    /// Table (or view).
    pub table: String,
    /// Column.
    pub column: String,
}

impl QualifiedName {
    /// Resolves a policy's table and column names.
    pub fn of(policy: &ColumnPolicy) -> Result<Self, String> {
        Self::parse(policy.table.get_ref(), &policy.column)
    }

    /// Resolves a table (`schema.table` or `table`) and a column name as
    /// written on a command line or in a policy.
    pub fn parse(table: &str, column: &str) -> Result<Self, String> {
        let parts = split_identifiers(table)?;
        let (schema, table) = match parts.as_slice() {
            [t] => ("public".to_owned(), t.clone()),
            [s, t] => (s.clone(), t.clone()),
            _ => return Err(format!("table {table:?} must be `schema.table` or `table`")),
        };
        let column = match split_identifiers(column)?.as_slice() {
            [c] => c.clone(),
            _ => return Err(format!("column {column:?} must be a single name")),
        };
        Ok(QualifiedName {
            schema,
            table,
            column,
        })
    }
}

impl std::fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.schema, self.table, self.column)
    }
}

/// Splits `a.b` / `"A"."b.c"` into identifiers, folding unquoted ones.
fn split_identifiers(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = s.trim().chars().peekable();
    loop {
        let mut ident = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        ident.push('"');
                    }
                    Some('"') => break,
                    Some(c) => ident.push(c),
                    None => return Err(format!("unterminated quoted identifier in {s:?}")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if !(c.is_alphanumeric() || c == '_' || c == '$') {
                    return Err(format!("invalid character {c:?} in name {s:?}"));
                }
                ident.extend(c.to_lowercase());
                chars.next();
            }
        }
        if ident.is_empty() {
            return Err(format!("empty name in {s:?}"));
        }
        out.push(ident);
        match chars.next() {
            None => return Ok(out),
            Some('.') => continue,
            Some(c) => return Err(format!("unexpected {c:?} in name {s:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(table: &str, column: &str) -> ColumnPolicy {
        let text = format!("table = {table:?}\ncolumn = {column:?}\ntype = \"text\"\nlevel = 3\n");
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn names_resolve_like_postgres() {
        let n = QualifiedName::of(&policy("Guests", "Phone")).unwrap();
        assert_eq!(n.to_string(), "public.guests.phone");
        let n = QualifiedName::of(&policy("\"Hotel\".\"VIP.Guests\"", "\"E-Mail\"")).unwrap();
        assert_eq!(
            (n.schema.as_str(), n.table.as_str(), n.column.as_str()),
            ("Hotel", "VIP.Guests", "E-Mail")
        );
        assert!(QualifiedName::of(&policy("a.b.c", "x")).is_err());
        assert!(QualifiedName::of(&policy("a..b", "x")).is_err());
        assert!(QualifiedName::of(&policy("\"open", "x")).is_err());
        assert!(QualifiedName::of(&policy("guests", "a b")).is_err());
    }

    #[test]
    fn protection_defaults_to_randomized() {
        let p = policy("guests", "phone");
        assert_eq!(p.encrypt, Protection::Randomized);
        assert!(p.encrypt.encrypts());
    }
}
