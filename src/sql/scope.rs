//! Which relation a column reference names.
//!
//! Each SELECT (and the target of an INSERT, UPDATE or DELETE) gets a
//! [`Scope`] of the relations in its FROM clause, linked to the enclosing
//! query's scope for correlated references and to the CTEs in force.
//! Resolution follows PostgreSQL (unquoted names fold to lower case) and
//! fails closed: when a reference might name an encrypted column but
//! cannot be pinned to one, it is an error, not a guess.

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart, TableAlias};

use super::error::Refusal;
use super::schema::{ProtectedColumn, Schema, TableInfo};

/// What a relation's column holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ColKind {
    /// Plaintext, not governed by a policy.
    Plain,
    /// A protected column (possibly `Protection::None`).
    Protected(ProtectedColumn),
    /// Derived in a way pgveil cannot trace (e.g. a UNION of different columns).
    Unknown,
}

impl ColKind {
    /// The column's policy when it is stored encrypted.
    pub fn encrypted(&self) -> Option<&ProtectedColumn> {
        match self {
            ColKind::Protected(pc) if pc.protection.encrypts() => Some(pc),
            _ => None,
        }
    }
}

/// An output column of a relation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Col {
    pub name: String,
    pub kind: ColKind,
}

/// The columns a query or relation produces.
#[derive(Debug, Clone, Default)]
pub(crate) struct Output {
    /// `None` when the columns cannot be listed (e.g. `*` over an unknown table).
    pub cols: Option<Vec<Col>>,
    /// The unknown columns may carry protected data.
    pub opaque: bool,
}

/// One FROM item.
#[derive(Debug, Clone)]
pub(crate) struct Relation {
    /// Name that qualifies columns: the alias, or the table name.
    pub name: String,
    /// Schema of an unaliased base table, for `schema.table.column`.
    pub schema: Option<String>,
    /// Columns in order, when known.
    pub cols: Option<Vec<Col>>,
    /// Columns unknown and possibly protected.
    pub opaque: bool,
    /// A table or view of the schema (not a subquery, CTE or function).
    pub base: bool,
    /// The table's hidden columns (see `TableInfo::hidden`).
    pub hidden: Vec<String>,
}

impl Relation {
    /// A base table known to the schema.
    pub fn table(info: &TableInfo) -> Self {
        let cols = info
            .columns
            .iter()
            .map(|c| Col {
                name: c.name.clone(),
                kind: c
                    .protected
                    .clone()
                    .map_or(ColKind::Plain, ColKind::Protected),
            })
            .collect();
        Relation {
            name: info.name.clone(),
            schema: Some(info.schema.clone()),
            cols: Some(cols),
            opaque: false,
            base: true,
            hidden: info.hidden.clone(),
        }
    }

    /// A relation whose columns nobody knows (a table unknown to the
    /// catalog, a set-returning function).
    pub fn unknown(name: String, opaque: bool) -> Self {
        Relation {
            name,
            schema: None,
            cols: None,
            opaque,
            base: false,
            hidden: Vec::new(),
        }
    }

    /// A subquery or CTE with the given output.
    pub fn derived(name: String, out: Output) -> Self {
        Relation {
            name,
            schema: None,
            cols: out.cols,
            opaque: out.opaque,
            base: false,
            hidden: Vec::new(),
        }
    }

    /// Applies `AS alias (c1, c2, ...)`.
    pub fn aliased(mut self, alias: Option<&TableAlias>) -> Self {
        if let Some(a) = alias {
            self.name = norm(&a.name);
            self.schema = None;
            if let Some(cols) = &mut self.cols {
                for (col, new) in cols.iter_mut().zip(&a.columns) {
                    col.name = norm(&new.name);
                }
            }
        }
        self
    }

    /// Whether a column might be encrypted.
    pub fn has_encrypted(&self) -> bool {
        self.opaque
            || self
                .cols
                .iter()
                .flatten()
                .any(|c| c.kind.encrypted().is_some() || c.kind == ColKind::Unknown)
    }

    /// Whether a column is protected (any protection) or might be.
    pub fn has_protected(&self) -> bool {
        self.opaque
            || self
                .cols
                .iter()
                .flatten()
                .any(|c| matches!(c.kind, ColKind::Protected(_) | ColKind::Unknown))
    }

    fn col(&self, name: &str) -> Option<&Col> {
        self.cols.as_ref()?.iter().find(|c| c.name == name)
    }
}

/// The relations visible at one query level.
#[derive(Debug, Default)]
pub(crate) struct Scope<'p> {
    pub rels: Vec<Relation>,
    /// CTEs defined at this level (visible here and below).
    pub ctes: Vec<Relation>,
    pub parent: Option<&'p Scope<'p>>,
}

/// PostgreSQL's identifier folding: unquoted names fold to lower case.
pub(crate) fn norm(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    }
}

/// The identifier parts of an object name; `None` if a part is not a plain name.
pub(crate) fn name_parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(norm(i)),
            _ => None,
        })
        .collect()
}

fn ambiguous(name: &str) -> Refusal {
    Refusal::unsupported(format!(
        "column reference {name} might name an encrypted column but pgveil cannot tell which table it comes from; \
         qualify it with its table name or alias"
    ))
}

impl<'p> Scope<'p> {
    /// A scope nested in `parent`.
    pub fn child(parent: Option<&'p Scope<'p>>) -> Self {
        Scope {
            rels: Vec::new(),
            ctes: Vec::new(),
            parent,
        }
    }

    /// Looks up a CTE by name in this scope and its ancestors.
    pub fn cte(&self, name: &str) -> Option<&Relation> {
        self.ctes
            .iter()
            .rev()
            .find(|r| r.name == name)
            .or_else(|| self.parent?.cte(name))
    }

    /// Resolves a FROM-clause table name to a relation.
    pub fn lookup_table(&self, schema: &dyn Schema, name: &ObjectName) -> Relation {
        let Some(parts) = name_parts(name) else {
            return Relation::unknown(String::new(), true);
        };
        let (sch, table) = match parts.as_slice() {
            [t] => {
                if let Some(cte) = self.cte(t) {
                    return cte.clone();
                }
                (None, t.as_str())
            }
            [s, t] | [_, s, t] => (Some(s.as_str()), t.as_str()),
            _ => return Relation::unknown(parts.last().cloned().unwrap_or_default(), true),
        };
        match schema.table(sch, table) {
            Some(info) => Relation::table(info),
            None => Relation::unknown(table.to_owned(), false),
        }
    }

    /// Resolves a column reference: `Some` for a protected column, `None`
    /// for a plain one, an error when it might be encrypted but cannot be
    /// pinned down.
    pub fn resolve(&self, idents: &[Ident]) -> Result<Option<ProtectedColumn>, Refusal> {
        let parts: Vec<String> = idents.iter().map(norm).collect();
        let display = parts.join(".");
        let kind = match parts.as_slice() {
            [c] => self.unqualified(c, &display)?,
            [q, c] => self.qualified(None, q, c, &display)?,
            [s, t, c] | [_, s, t, c] => self.qualified(Some(s), t, c, &display)?,
            _ => {
                if self.any_encrypted() {
                    return Err(ambiguous(&display));
                }
                ColKind::Plain
            }
        };
        match kind {
            ColKind::Plain => Ok(None),
            ColKind::Protected(pc) => Ok(Some(pc)),
            ColKind::Unknown => Err(ambiguous(&display)),
        }
    }

    fn any_encrypted(&self) -> bool {
        self.rels.iter().any(Relation::has_encrypted)
            || self.parent.is_some_and(Scope::any_encrypted)
    }

    fn unqualified(&self, c: &str, display: &str) -> Result<ColKind, Refusal> {
        let mut found: Vec<&ColKind> = Vec::new();
        let mut unknown_rels = false;
        for rel in &self.rels {
            match &rel.cols {
                Some(_) => found.extend(rel.col(c).map(|col| &col.kind)),
                None => {
                    if rel.opaque {
                        return Err(ambiguous(display));
                    }
                    unknown_rels = true;
                }
            }
        }
        let outer = |s: &Self| -> Result<ColKind, Refusal> {
            match s.parent {
                Some(p) => p.unqualified(c, display),
                None => Ok(ColKind::Plain),
            }
        };
        match found.as_slice() {
            [] if unknown_rels => match outer(self) {
                Ok(ColKind::Plain) => Ok(ColKind::Plain),
                Ok(k) if k.encrypted().is_none() && k != ColKind::Unknown => Ok(ColKind::Plain),
                _ => Err(ambiguous(display)),
            },
            [] => outer(self),
            [one] => {
                if unknown_rels && (one.encrypted().is_some() || **one == ColKind::Unknown) {
                    return Err(ambiguous(display));
                }
                Ok((*one).clone())
            }
            many => {
                if many
                    .iter()
                    .any(|k| k.encrypted().is_some() || **k == ColKind::Unknown)
                {
                    return Err(ambiguous(display));
                }
                Ok(many
                    .iter()
                    .find(|k| matches!(k, ColKind::Protected(_)))
                    .map_or(ColKind::Plain, |k| (*k).clone()))
            }
        }
    }

    fn qualified(
        &self,
        schema: Option<&String>,
        q: &str,
        c: &str,
        display: &str,
    ) -> Result<ColKind, Refusal> {
        let rel = self
            .rels
            .iter()
            .find(|r| r.name == q && (schema.is_none() || r.schema.as_ref() == schema));
        match rel {
            Some(rel) => match (&rel.cols, rel.col(c)) {
                (Some(_), Some(col)) => Ok(col.kind.clone()),
                (Some(_), None) => Ok(ColKind::Plain),
                (None, _) if rel.opaque => Err(ambiguous(display)),
                (None, _) => Ok(ColKind::Plain),
            },
            None => match self.parent {
                Some(p) => p.qualified(schema, q, c, display),
                // The server rejects a reference to a missing FROM entry;
                // refuse first so no literal beside it reaches the server.
                None => Err(ambiguous(display)),
            },
        }
    }

    /// The relation a name used as a value stands for (a whole-row
    /// reference such as `SELECT g FROM guests g`), when no column of that
    /// name is in scope: PostgreSQL prefers the column.
    pub fn whole_row(&self, parts: &[String]) -> Option<&Relation> {
        match parts {
            [c] => {
                if self.rels.iter().any(|r| r.col(c).is_some()) {
                    return None;
                }
                self.rels
                    .iter()
                    .find(|r| &r.name == c)
                    .or_else(|| self.parent?.whole_row(parts))
            }
            [q, c] => {
                let col = self.rels.iter().any(|r| &r.name == q && r.col(c).is_some());
                if col {
                    return None;
                }
                self.relation(parts)
            }
            _ => None,
        }
    }

    /// The relation of this level (not an enclosing query's) that a
    /// column reference names, when exactly one does.
    pub fn origin(&self, idents: &[Ident]) -> Option<&Relation> {
        let parts: Vec<String> = idents.iter().map(norm).collect();
        match parts.as_slice() {
            [c] => {
                let mut found = self.rels.iter().filter(|r| r.col(c).is_some());
                let one = found.next()?;
                found.next().is_none().then_some(one)
            }
            [q, _] => self.rels.iter().find(|r| &r.name == q),
            [s, t, _] | [_, s, t, _] => self
                .rels
                .iter()
                .find(|r| &r.name == t && r.schema.as_ref() == Some(s)),
            _ => None,
        }
    }

    /// The first relation in scope (this level and outward) with protected columns.
    pub fn any_protected_rel(&self) -> Option<&Relation> {
        self.rels
            .iter()
            .find(|r| r.has_protected())
            .or_else(|| self.parent?.any_protected_rel())
    }

    /// The relation named `q` (for `q.*`), searching outward.
    pub fn relation(&self, parts: &[String]) -> Option<&Relation> {
        let (schema, q) = match parts {
            [q] => (None, q),
            [s, q] | [_, s, q] => (Some(s), q),
            _ => return None,
        };
        self.rels
            .iter()
            .find(|r| &r.name == q && (schema.is_none() || r.schema.as_ref() == schema))
            .or_else(|| self.parent?.relation(parts))
    }
}
