//! The read path's view of a statement: which result columns pgveil can
//! decrypt or mask, and which server-side copies of protected data it must
//! refuse.
//!
//! The session decrypts or masks a result column only when PostgreSQL's
//! RowDescription maps it to a protected table column (table OID and
//! attribute number). That holds for a column selected as it is (`email`,
//! `g.email`, `*`, `g.*`, also through subqueries in FROM, CTEs and views).
//! A result column *computed* from a protected column (a function, an
//! operator, a cast, CASE, COALESCE, an aggregate other than `count`, a
//! window function, a scalar subquery, a whole-row reference such as
//! `SELECT g FROM guests g` or `row_to_json(g)`, or any column of a
//! UNION/INTERSECT/EXCEPT) has OID 0: the server would send ciphertext for
//! an encrypted column and the plaintext of an `encrypt = "none"` column,
//! so it is refused. So is copying a protected column on the server
//! (`CREATE TABLE AS`, `SELECT INTO`, `INSERT ... SELECT` into another
//! column, `COPY (SELECT ...) TO`), where no result passes pgveil at all.

use sqlparser::ast::{Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Query, Visit};

use super::analyze::Ctx;
use super::error::Refusal;
use super::expr::{for_each_child, Child};
use super::operand::column_ref;
use super::scope::{name_parts, norm, ColKind, Output, Relation, Scope};

/// What a computed value is derived from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Leak {
    /// A protected column, by full name.
    Column(String),
    /// A whole row of a relation (its name) with protected columns.
    WholeRow(String, Option<String>),
    /// A subquery whose result holds a protected (or untraceable) column.
    Subquery(Option<String>),
}

const HINT_SELECT: &str =
    "select the column itself (pgveil decrypts or masks a column only when it is \
                           read as it is) and compute in the application";

impl Leak {
    /// The refusal for a result column derived this way.
    pub fn result(&self) -> Refusal {
        match self {
            Leak::Column(c) => Refusal::unsupported(format!(
                "a result column computed from protected column {c} is not supported: the server would \
                 compute it over stored data pgveil cannot decrypt or mask; {HINT_SELECT}"
            )),
            Leak::WholeRow(rel, col) => Refusal::unsupported(format!(
                "a whole-row reference to {rel} is not supported: it has protected columns{} that pgveil \
                 cannot decrypt or mask inside a row value; select the columns themselves",
                col.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()
            )),
            Leak::Subquery(c) => Refusal::unsupported(format!(
                "a subquery returning {} as a result column is not supported: PostgreSQL does not say \
                 which table it comes from, so pgveil cannot decrypt or mask it; join the table and \
                 select the column itself",
                protected_display(c)
            )),
        }
    }

    /// The refusal for copying a value derived this way on the server.
    pub fn copy(&self, what: &str) -> Refusal {
        let src = self.describe();
        Refusal::unsupported(format!(
            "{what} would copy {src} on the server, where pgveil cannot decrypt, mask or re-encrypt it; \
             read the column through pgveil and write the values back with literals or $n parameters"
        ))
    }

    /// What the value is derived from, for a message.
    pub fn describe(&self) -> String {
        match self {
            Leak::Column(c) => format!("protected column {c}"),
            Leak::WholeRow(rel, col) => format!(
                "a whole row of {rel}{}",
                col.as_ref()
                    .map(|c| format!(" (protected column {c})"))
                    .unwrap_or_default()
            ),
            Leak::Subquery(c) => protected_display(c),
        }
    }
}

fn protected_display(c: &Option<String>) -> String {
    match c {
        Some(c) => format!("protected column {c}"),
        None => "a column pgveil cannot trace next to protected columns".to_owned(),
    }
}

/// The first protected (or untraceable) column of a query's output.
pub(crate) fn output_leak(out: &Output) -> Option<Leak> {
    for c in out.cols.iter().flatten() {
        match &c.kind {
            ColKind::Protected(pc) => return Some(Leak::Subquery(Some(pc.full_name.clone()))),
            ColKind::Unknown => return Some(Leak::Subquery(None)),
            ColKind::Plain => {}
        }
    }
    out.opaque.then_some(Leak::Subquery(None))
}

/// The first protected column of a relation, when it has one (or may).
fn rel_leak(rel: &Relation) -> Option<Leak> {
    if !rel.has_protected() {
        return None;
    }
    let col = rel.cols.iter().flatten().find_map(|c| match &c.kind {
        ColKind::Protected(pc) => Some(pc.full_name.clone()),
        _ => None,
    });
    Some(Leak::WholeRow(rel.name.clone(), col))
}

fn is_count(name: &str) -> bool {
    name == "count" || name == "pg_catalog.count"
}

impl Ctx<'_> {
    /// Checks one select-list (or RETURNING) expression: a protected column
    /// selected as it is passes, anything computed from one is refused.
    pub fn result_item(&self, e: &Expr, sc: &Scope<'_>) -> Result<(), Refusal> {
        if let Some(idents) = column_ref(e) {
            if sc.resolve(idents)?.is_some() {
                return Ok(());
            }
        }
        match self.leak(e, sc)? {
            Some(l) => Err(l.result()),
            None => Ok(()),
        }
    }

    /// The first protected column (or whole row, or subquery result) the
    /// value of `e` is derived from. `count(col)` derives nothing; a
    /// subquery's predicates do not count, only its result; `EXISTS` none.
    pub fn leak(&self, e: &Expr, sc: &Scope<'_>) -> Result<Option<Leak>, Refusal> {
        match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
                let Some(idents) = column_ref(e) else {
                    return Ok(None);
                };
                if let Some(pc) = sc.resolve(idents)? {
                    return Ok(Some(Leak::Column(pc.full_name)));
                }
                let parts: Vec<String> = idents.iter().map(norm).collect();
                Ok(sc.whole_row(&parts).and_then(rel_leak))
            }
            Expr::QualifiedWildcard(name, _) => Ok(name_parts(name)
                .and_then(|p| sc.relation(&p))
                .and_then(rel_leak)
                .or_else(|| sc.any_protected_rel().and_then(rel_leak))),
            Expr::Wildcard(_) => Ok(sc.any_protected_rel().and_then(rel_leak)),
            Expr::Exists { .. } | Expr::Value(_) | Expr::TypedString(_) => Ok(None),
            Expr::Function(f) => {
                let args: Vec<&FunctionArgExpr> = match &f.args {
                    FunctionArguments::List(list) => list
                        .args
                        .iter()
                        .map(|a| match a {
                            FunctionArg::Named { arg, .. }
                            | FunctionArg::ExprNamed { arg, .. }
                            | FunctionArg::Unnamed(arg) => arg,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                let name = f.name.to_string().to_ascii_lowercase();
                if is_count(&name) {
                    let plain = match args.as_slice() {
                        [FunctionArgExpr::Expr(x)] => column_ref(x).is_some(),
                        [_] => true,
                        _ => false,
                    };
                    if plain {
                        return Ok(None);
                    }
                }
                for a in &args {
                    let found = match a {
                        FunctionArgExpr::QualifiedWildcard(n) => name_parts(n)
                            .and_then(|p| sc.relation(&p))
                            .and_then(rel_leak),
                        FunctionArgExpr::Wildcard => None,
                        FunctionArgExpr::WildcardWithOptions(_) => {
                            sc.any_protected_rel().and_then(rel_leak)
                        }
                        FunctionArgExpr::Expr(_) => None,
                    };
                    if found.is_some() {
                        return Ok(found);
                    }
                }
                self.leak_children(e, sc)
            }
            _ => self.leak_children(e, sc),
        }
    }

    /// What the result of an already analysed subquery is derived from
    /// (an unknown subquery is assumed to leak: fail closed).
    fn query_leak(&self, q: &Query) -> Option<Leak> {
        match self.outputs.get(&query_key(q)) {
            Some(l) => l.clone(),
            None => Some(Leak::Subquery(None)),
        }
    }

    /// Refuses a node (a function in FROM) whose direct child expressions
    /// are computed from protected columns: its columns reach the result
    /// unmapped.
    pub fn no_leak_in<N: Visit>(&self, node: &N, sc: &Scope<'_>) -> Result<(), Refusal> {
        for_each_child(node, false, |child| {
            let found = match child {
                Child::Expr(x) => match column_ref(x) {
                    // A bare column passed to a table function is computed on too.
                    Some(idents) => match sc.resolve(idents)? {
                        Some(pc) => Some(Leak::Column(pc.full_name)),
                        None => self.leak(x, sc)?,
                    },
                    None => self.leak(x, sc)?,
                },
                Child::Query(q) => self.query_leak(q),
            };
            match found {
                Some(leak) => Err(leak.result()),
                None => Ok(()),
            }
        })
    }

    fn leak_children(&self, e: &Expr, sc: &Scope<'_>) -> Result<Option<Leak>, Refusal> {
        let mut found: Option<Leak> = None;
        for_each_child(e, true, |child| {
            if found.is_some() {
                return Ok(());
            }
            found = match child {
                Child::Expr(x) => self.leak(x, sc)?,
                Child::Query(q) => self.query_leak(q),
            };
            Ok(())
        })?;
        Ok(found)
    }
}

/// Identifies a query node of the statement being analysed (the AST
/// outlives the analysis, so its address is stable and unique).
pub(crate) fn query_key(q: &Query) -> usize {
    std::ptr::from_ref(q) as usize
}
