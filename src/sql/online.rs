//! Statements over a column that `pgveil migrate encrypt` converts online.
//!
//! An online migration renames the plaintext column to a hidden
//! `__pgveil_legacy_<column>`, adds the column again as `bytea` at the end
//! of the table, and moves values from the one to the other in batches.
//! Writes need nothing from analysis: they name the new column, and a
//! trigger clears the old value of every row whose column is assigned.
//! Reads must combine both, so every reference to the column in a base
//! table is rewritten to
//!
//! ```sql
//! COALESCE(col, pgveil.legacy_text(tbl."__pgveil_legacy_col"))
//! ```
//!
//! — an envelope, or the legacy value's text form, which the read path
//! already shows as legacy plaintext for a column being migrated.
//! `pgveil.legacy_text` (created by the migration) is
//! `convert_to(value::text, 'UTF8')` under the `DateStyle`,
//! `IntervalStyle` and `extra_float_digits` the batches encrypt with, so
//! the client's own settings cannot change the text pgveil parses. A select
//! item keeps its name (`AS col`), and `*` over such a table becomes its
//! visible columns. Such a result column has no origin in the server's
//! RowDescription, so the statement's result columns must be known by
//! position ([`super::plan::Rewrite::results`]); where they cannot be (a
//! cursor, SQL-level PREPARE, several statements in one string, `*` over a
//! table pgveil does not know), the statement is refused. So are the few
//! forms whose meaning the split would change: the hidden column named by
//! a client, a reference from a correlated subquery or through a view,
//! INSERT or COPY FROM without a column list. `COPY table TO` is sent as
//! `COPY (SELECT …) TO` with the same fields.

use std::collections::BTreeMap;

use sqlparser::ast::{Ident, SelectItem, WildcardAdditionalOptions};
use sqlparser::tokenizer::Span;

use super::analyze::Ctx;
use super::error::Refusal;
use super::plan::{Edit, EditKind};
use super::schema::{quote_ident as quote, ColumnInfo, ProtectedColumn, TableInfo, LEGACY_PREFIX};
use super::scope::{ColKind, Relation, Scope};
use crate::crypto::LogicalType;

/// A column reference rewritten to read both forms.
#[derive(Debug)]
pub(crate) struct LegacyRef {
    end: usize,
    text: String,
    /// The select item's output name, when the reference is one.
    alias: Option<String>,
}

/// The rewrites of one statement text, keyed by start byte so a reference
/// analysed twice is rewritten once.
pub(crate) type LegacyRefs = BTreeMap<usize, LegacyRef>;

const HINT: &str = "pgveil migrate encrypt is moving this column online; this form is \
                    supported again once the migration has finished";

/// Refuses a text that names a hidden column: only pgveil's own rewrites
/// may read the old values, so that they are shown by role.
pub(crate) fn check_text(sql: &str) -> Result<(), Refusal> {
    let lower = sql.to_ascii_lowercase();
    if lower.contains(LEGACY_PREFIX) {
        return Err(Refusal::unsupported(format!(
            "columns named {LEGACY_PREFIX}... hold the plaintext of a column pgveil is migrating \
             and cannot be named in statements; read the column being migrated instead"
        )));
    }
    Ok(())
}

/// How SQL names a relation's columns: its alias, or its schema-qualified
/// table name.
fn qualifier(rel: &Relation) -> Option<String> {
    if rel.name.is_empty() {
        return None;
    }
    Some(match &rel.schema {
        Some(s) => format!("{}.{}", quote(s), quote(&rel.name)),
        None => quote(&rel.name),
    })
}

/// The old value of `pc` in `qual`'s row, in the stored form of the read
/// path's legacy plaintext (UTF-8 text in pgveil's formats, raw bytes for
/// `bytea`).
fn legacy_value(qual: &str, pc: &ProtectedColumn, legacy: &str) -> String {
    let col = format!("{qual}.{}", quote(legacy));
    match pc.logical_type {
        LogicalType::Bytea => col,
        _ => format!("pgveil.legacy_text({col})"),
    }
}

impl Ctx<'_> {
    /// Rewrites a reference to a column migrated online (called for every
    /// resolved reference; `pc.legacy` is `None` for all other columns).
    pub(crate) fn legacy_ref(
        &mut self,
        idents: &[Ident],
        sc: &Scope<'_>,
        pc: &ProtectedColumn,
    ) -> Result<(), Refusal> {
        let Some(legacy) = &pc.legacy else {
            return Ok(());
        };
        let (Some(first), Some(last)) = (idents.first(), idents.last()) else {
            return Ok(());
        };
        let range = self
            .src
            .range(Span::new(first.span.start, last.span.end))
            .ok_or_else(|| Refusal::unlocated(&pc.full_name))?;
        if self.legacy_refs.contains_key(&range.start) {
            return Ok(());
        }
        let Some(rel) = sc.origin(idents) else {
            return Err(Refusal::on_column(
                &pc.full_name,
                "a reference from a correlated subquery",
                HINT,
            ));
        };
        if !rel.base {
            // A subquery's or CTE's column: its own select item already
            // combines both forms.
            return Ok(());
        }
        if !rel.hidden.contains(legacy) {
            return Err(Refusal::on_column(
                &pc.full_name,
                "a read through a view",
                HINT,
            ));
        }
        let qual = match idents.len() {
            1 => qualifier(rel).ok_or_else(|| Refusal::unlocated(&pc.full_name))?,
            n => {
                let q = self
                    .src
                    .range(Span::new(first.span.start, idents[n - 2].span.end))
                    .and_then(|r| self.src.text(&r))
                    .ok_or_else(|| Refusal::unlocated(&pc.full_name))?;
                q.to_owned()
            }
        };
        let original = self
            .src
            .text(&range)
            .ok_or_else(|| Refusal::unlocated(&pc.full_name))?;
        let text = format!("COALESCE({original}, {})", legacy_value(&qual, pc, legacy));
        self.legacy_refs.insert(
            range.start,
            LegacyRef {
                end: range.end,
                text,
                alias: None,
            },
        );
        Ok(())
    }

    /// After a select item that is a bare column reference was analysed:
    /// if it was rewritten, its result column is combined (no origin), and
    /// an unaliased one keeps its name.
    /// `parens`: how many parentheses enclose the reference in the item.
    pub(crate) fn legacy_item(
        &mut self,
        idents: &[Ident],
        aliased: bool,
        parens: usize,
    ) -> Result<(), Refusal> {
        let (Some(first), Some(last)) = (idents.first(), idents.last()) else {
            return Ok(());
        };
        let Some(start) = self.src.byte(first.span.start) else {
            return Ok(());
        };
        let Some(end) = self.legacy_refs.get(&start).map(|r| r.end) else {
            return Ok(());
        };
        self.merged = true;
        if aliased {
            return Ok(());
        }
        let unlocated = || Refusal::unlocated("a column being migrated");
        let name = self
            .src
            .range(last.span)
            .and_then(|n| self.src.text(&n))
            .ok_or_else(unlocated)?
            .to_owned();
        // `(col)`: the name goes after the parentheses.
        let mut outer = start..end;
        for _ in 0..parens {
            outer = self.src.paren_extent(&outer).ok_or_else(unlocated)?;
        }
        if outer.end == end {
            if let Some(r) = self.legacy_refs.get_mut(&start) {
                r.alias = Some(name);
            }
        } else {
            self.legacy_refs.insert(
                outer.end,
                LegacyRef {
                    end: outer.end,
                    text: String::new(),
                    alias: Some(name),
                },
            );
        }
        Ok(())
    }

    /// `*` or `q.*` over relations of which one has a column migrated
    /// online: replaced by the visible columns, each such column read in
    /// both forms. Returns whether it did.
    pub(crate) fn legacy_wildcard(
        &mut self,
        item: &SelectItem,
        rels: &[Relation],
    ) -> Result<bool, Refusal> {
        let migrating = |r: &Relation| r.base && !r.hidden.is_empty();
        if !rels.iter().any(migrating) {
            return Ok(false);
        }
        let (start, opts): (Span, &WildcardAdditionalOptions) = match item {
            SelectItem::Wildcard(o) => (o.wildcard_token.0.span, o),
            SelectItem::QualifiedWildcard(
                sqlparser::ast::SelectItemQualifiedWildcardKind::ObjectName(n),
                o,
            ) => (sqlparser::ast::Spanned::span(n), o),
            _ => return Ok(false),
        };
        let refuse = || {
            Refusal::unsupported(format!(
                "this form of * over a table with a column being migrated cannot be rewritten; \
                 list the columns ({HINT})"
            ))
        };
        if opts.opt_ilike.is_some()
            || opts.opt_exclude.is_some()
            || opts.opt_except.is_some()
            || opts.opt_replace.is_some()
            || opts.opt_rename.is_some()
            || opts.opt_alias.is_some()
        {
            return Err(refuse());
        }
        let range = self
            .src
            .range(Span::new(start.start, opts.wildcard_token.0.span.end))
            .ok_or_else(refuse)?;
        let mut list = Vec::new();
        for rel in rels {
            let q = qualifier(rel).ok_or_else(refuse)?;
            match (&rel.cols, migrating(rel)) {
                (Some(cols), true) => {
                    for c in cols {
                        let name = quote(&c.name);
                        match &c.kind {
                            ColKind::Protected(
                                pc @ ProtectedColumn {
                                    legacy: Some(legacy),
                                    ..
                                },
                            ) => {
                                if !rel.hidden.iter().any(|h| h == legacy) {
                                    return Err(refuse());
                                }
                                self.merged = true;
                                list.push(format!(
                                    "COALESCE({q}.{name}, {}) AS {name}",
                                    legacy_value(&q, pc, legacy)
                                ));
                            }
                            _ => list.push(format!("{q}.{name}")),
                        }
                    }
                }
                _ => list.push(format!("{q}.*")),
            }
        }
        self.legacy_refs.insert(
            range.start,
            LegacyRef {
                end: range.end,
                text: list.join(", "),
                alias: None,
            },
        );
        Ok(true)
    }

    /// Refuses INSERT or COPY FROM without a column list into a table with
    /// a hidden column: the server would count the hidden column among
    /// the positions.
    pub(crate) fn legacy_positions(
        &self,
        hidden: &[String],
        table: &str,
        what: &str,
    ) -> Result<(), Refusal> {
        if hidden.is_empty() {
            return Ok(());
        }
        Err(Refusal::unsupported(format!(
            "{what} {table} without a column list is not supported while a column of it is being \
             migrated online: name the columns"
        )))
    }

    /// `COPY table [(columns)] TO` of a column migrated online: the
    /// statement to send instead, `COPY (SELECT …) TO` with the same fields
    /// in the same order and the options as written. `None` when no listed
    /// column is moving.
    pub(crate) fn legacy_copy_out(
        &self,
        info: &TableInfo,
        name: Span,
        columns: &[Ident],
    ) -> Result<Option<String>, Refusal> {
        let listed: Vec<String> = columns.iter().map(super::scope::norm).collect();
        let fields: Vec<&ColumnInfo> = if listed.is_empty() {
            info.columns.iter().collect()
        } else {
            listed.iter().filter_map(|n| info.column(n)).collect()
        };
        let moving = |c: &ColumnInfo| c.protected.as_ref().is_some_and(|p| p.legacy.is_some());
        let Some(first) = fields.iter().copied().find(|c| moving(c)) else {
            return Ok(None);
        };
        let unlocated = || Refusal::unlocated(&first.name);
        let start = self.src.range(name).ok_or_else(unlocated)?;
        let end = match (columns.first(), columns.last()) {
            (Some(a), Some(b)) => {
                let inner = self
                    .src
                    .range(Span::new(a.span.start, b.span.end))
                    .ok_or_else(unlocated)?;
                self.src.paren_extent(&inner).ok_or_else(unlocated)?.end
            }
            _ => start.end,
        };
        let q = format!("{}.{}", quote(&info.schema), quote(&info.name));
        let mut list = Vec::with_capacity(fields.len());
        for c in fields {
            let name = quote(&c.name);
            match c
                .protected
                .as_ref()
                .and_then(|p| p.legacy.as_deref().map(|l| (p, l)))
            {
                Some((pc, legacy)) => list.push(format!(
                    "COALESCE({q}.{name}, {}) AS {name}",
                    legacy_value(&q, pc, legacy)
                )),
                None => list.push(format!("{q}.{name}")),
            }
        }
        let sql = self.src.sql;
        let (before, after) = (
            sql.get(..start.start).ok_or_else(unlocated)?,
            sql.get(end..).ok_or_else(unlocated)?,
        );
        Ok(Some(format!(
            "{before}(SELECT {} FROM {q}){after}",
            list.join(", ")
        )))
    }

    /// The rewrites as edits, for the plan.
    pub(crate) fn legacy_edits(&mut self) -> Vec<Edit> {
        std::mem::take(&mut self.legacy_refs)
            .into_iter()
            .map(|(start, r)| Edit {
                range: start..r.end,
                kind: EditKind::Text(match r.alias {
                    Some(a) => format!("{} AS {a}", r.text),
                    None => r.text,
                }),
            })
            .collect()
    }
}
