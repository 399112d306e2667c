//! SQL analysis: what a statement does to protected columns.
//!
//! Given statement text and the protected schema, [`analyze`] decides
//! whether the statement can be relayed as is, how it must be rewritten
//! (literals replaced by envelopes, equality predicates widened to every
//! live key version), which bound parameters must be encrypted, or why it
//! must be refused. Nothing here touches the network or a key: the session
//! applies the plan with the keyring.
//!
//! The flow: [`Prefilter`] (a substring scan for protected names) lets
//! most statements skip parsing; the rest are parsed with sqlparser's
//! PostgreSQL dialect and walked (`analyze` → `query` / `insert` /
//! `update` / `copy`, expressions in `expr`, names in `scope`, result
//! columns and server-side copies of protected data in `read`), and edits
//! are expressed as byte ranges of the original text (`span`), so the
//! statement is never re-printed from the AST.

mod analyze;
pub mod approval;
pub mod bulk;
mod copy;
mod error;
mod expr;
mod insert;
mod online;
mod operand;
pub mod plan;
mod prefilter;
mod query;
mod read;
pub mod role;
pub mod schema;
mod scope;
mod span;
mod update;

#[cfg(test)]
mod tests;

pub use bulk::{BulkRead, ReadKind};
pub use error::Refusal;
pub use plan::{
    apply, render_text, CopyFormat, CopyIn, Edit, EditKind, ParamTarget, ParamUsage, Plan, Rewrite,
};
pub use prefilter::Prefilter;
pub use schema::{quote_ident, ColumnInfo, ProtectedColumn, Schema, TableInfo, LEGACY_PREFIX};

/// Analyses `sql` (one or more statements) against `schema`.
///
/// Builds a [`Prefilter`] each call; callers on the hot path keep one and
/// use [`analyze_with`].
pub fn analyze(sql: &str, schema: &dyn Schema) -> Result<Plan, Refusal> {
    analyze_with(sql, schema, &Prefilter::new(&schema.protected_names()))
}

/// Analyses `sql` with a prebuilt pre-filter.
///
/// Text that mentions no protected name passes without parsing. Text that
/// mentions one but does not parse is refused (fail closed); text that
/// parses and touches no protected column passes. In a multi-statement
/// string every statement is analysed and one refusal refuses the whole.
pub fn analyze_with(
    sql: &str,
    schema: &dyn Schema,
    prefilter: &Prefilter,
) -> Result<Plan, Refusal> {
    analyze_full(sql, schema, prefilter).plan
}

/// The plan of a statement text and, for the bulk-read guard, what its
/// statements read.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// How to relay the text, or why it is refused.
    pub plan: Result<Plan, Refusal>,
    /// Statements that return protected columns, in order. Kept even when
    /// the plan is a refusal (a `COPY … TO` of protected columns is refused
    /// for now, but a capped role must still be told it is a bulk read).
    pub reads: Vec<BulkRead>,
}

/// [`analyze_with`], also returning the facts the bulk-read guard needs.
pub fn analyze_full(sql: &str, schema: &dyn Schema, prefilter: &Prefilter) -> Analysis {
    let refused = |r: Refusal| Analysis {
        plan: Err(r),
        reads: Vec::new(),
    };
    if !prefilter.might_touch(sql) {
        return Analysis {
            plan: Ok(Plan::Passthrough),
            reads: Vec::new(),
        };
    }
    // The standalone SET is answered by the session before planning; any
    // other mention would carry a token to the server.
    if bulk::mentions_approval(sql) {
        return refused(bulk::approval_elsewhere());
    }
    if let Err(r) = online::check_text(sql) {
        return refused(r);
    }
    let Some((statements, source)) = span::parse(sql) else {
        let name = prefilter.first_match(sql).unwrap_or("");
        let table = match schema.table(None, name) {
            Some(t) => format!("protected table {}.{}", t.schema, t.name),
            None => "a protected table".to_owned(),
        };
        return refused(Refusal::unparsable(&table));
    };
    let mut ctx = analyze::Ctx::new(&source, schema);
    let mut result = Ok(());
    for st in &statements {
        result = ctx.statement(st);
        if result.is_err() {
            break;
        }
    }
    let reads = std::mem::take(&mut ctx.reads);
    Analysis {
        plan: result.and_then(|()| ctx.finish(&statements)),
        reads,
    }
}
