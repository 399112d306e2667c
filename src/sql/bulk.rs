//! What the bulk-read guard needs to know about a statement, recorded as
//! plain facts so they can be cached with the plan and judged per role at
//! execution.
//!
//! A plan is shared by every connection that sends the same text, but
//! whether a statement is a blocked bulk read depends on the caller's
//! policy role (its limits, and which columns it sees at all). So analysis
//! only records, for each statement that returns protected columns (a
//! SELECT, the query of a `DECLARE … CURSOR`, a `COPY … TO`): which
//! protected columns reach the result as they are, which protected tables
//! are read by a SELECT block with no WHERE clause, and the literal LIMIT.
//! `guard::precheck` decides with the role in hand.

use std::collections::HashMap;

use sqlparser::ast::{
    Expr, LimitClause, Query, SetExpr, Statement, TableFactor, TableWithJoins, Value,
};

use super::analyze::Ctx;
use super::error::Refusal;
use super::schema::{ProtectedColumn, TableInfo};
use super::scope::{name_parts, norm, ColKind, Output};

/// The session setting that carries an approval token. pgveil answers
/// `SET pgveil.approval = '…'` itself; any other statement that names it is
/// refused so a token never reaches the server (or its logs).
pub const APPROVAL_SETTING: &str = "pgveil.approval";

/// A statement that returns protected data, as the guard sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkRead {
    /// What kind of statement returns the rows.
    pub kind: ReadKind,
    /// Protected columns that reach the result as they are, without
    /// duplicates, in first-seen order.
    pub columns: Vec<ProtectedColumn>,
    /// The result may carry protected columns pgveil cannot name (`*` over
    /// a relation it cannot list): treated as visible to every role.
    pub opaque: bool,
    /// Protected tables (`schema.table`) read by a SELECT block that has
    /// no WHERE clause and no LIMIT above it.
    pub unfiltered: Vec<String>,
    /// The statement's own literal `LIMIT n` / `FETCH FIRST n ROWS`, if any.
    pub limit: Option<u64>,
}

/// The statement kinds the guard checks before execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadKind {
    /// A query (SELECT, VALUES, TABLE, WITH …).
    Select,
    /// `DECLARE name CURSOR FOR query`; FETCHes count against it.
    Cursor(String),
    /// `COPY table TO` or `COPY (query) TO`.
    CopyTo,
    /// The RETURNING clause of an INSERT, UPDATE or DELETE: checked before
    /// the statement runs, since a refusal at the result would come after
    /// its change.
    Returning,
}

impl BulkRead {
    /// Tables (`schema.table`) of the protected columns in the result.
    pub fn tables(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| table_of(&c.full_name))
    }
}

/// The protected columns a result carries as they are (without
/// duplicates, in first-seen order), and whether it may carry some pgveil
/// cannot name.
fn protected_output(out: &Output) -> (Vec<ProtectedColumn>, bool) {
    let mut columns: Vec<ProtectedColumn> = Vec::new();
    let mut opaque = out.opaque;
    for c in out.cols.iter().flatten() {
        match &c.kind {
            ColKind::Protected(pc) => {
                if !columns.iter().any(|x| x.full_name == pc.full_name) {
                    columns.push(pc.clone());
                }
            }
            ColKind::Unknown => opaque = true,
            ColKind::Plain => {}
        }
    }
    (columns, opaque)
}

/// `schema.table` of a column's full name `schema.table.column`.
pub fn table_of(full_name: &str) -> &str {
    full_name.rsplit_once('.').map_or(full_name, |(t, _)| t)
}

impl Ctx<'_> {
    /// Records the facts of a query whose result reaches the client.
    pub fn note_read(&mut self, kind: ReadKind, q: &Query, out: &Output) {
        let (columns, opaque) = protected_output(out);
        if columns.is_empty() && !opaque {
            return;
        }
        let mut unfiltered = Vec::new();
        let mut walk = Walk {
            ctx: self,
            ctes: Vec::new(),
            depth: 0,
            out: &mut unfiltered,
        };
        walk.query(q, false);
        self.reads.push(BulkRead {
            kind,
            columns,
            opaque,
            unfiltered,
            limit: query_limit(q),
        });
    }

    /// Records the RETURNING clause of an INSERT, UPDATE or DELETE.
    /// `filtered`: the statement changes only the rows a WHERE clause picks
    /// (an INSERT returns the rows it inserts); otherwise every row of the
    /// tables it returns protected columns of comes back.
    pub fn note_returning(&mut self, out: &Output, filtered: bool) {
        let (columns, opaque) = protected_output(out);
        if columns.is_empty() && !opaque {
            return;
        }
        let mut unfiltered: Vec<String> = Vec::new();
        if !filtered {
            for c in &columns {
                let t = table_of(&c.full_name);
                if !unfiltered.iter().any(|x| x == t) {
                    unfiltered.push(t.to_owned());
                }
            }
        }
        self.reads.push(BulkRead {
            kind: ReadKind::Returning,
            columns,
            opaque,
            unfiltered,
            limit: None,
        });
    }

    /// Records `COPY table [(columns)] TO …`: the whole table is read.
    pub fn note_copy_table(&mut self, info: &TableInfo, listed: &[String]) {
        let columns: Vec<ProtectedColumn> = info
            .columns
            .iter()
            .filter(|c| listed.is_empty() || listed.contains(&c.name))
            .filter_map(|c| c.protected.clone())
            .collect();
        if columns.is_empty() {
            return;
        }
        self.reads.push(BulkRead {
            kind: ReadKind::CopyTo,
            columns,
            opaque: false,
            unfiltered: vec![format!("{}.{}", info.schema, info.name)],
            limit: None,
        });
    }
}

/// Finds protected tables read with no WHERE clause (and no LIMIT) on the
/// path from the result down to the table: the top query, its set
/// operations, derived tables in FROM and the CTEs they reference.
/// Subqueries inside expressions only filter or compute, so they are not
/// followed.
struct Walk<'c, 's, 'q> {
    ctx: &'c Ctx<'s>,
    /// CTEs in scope, innermost last.
    ctes: Vec<HashMap<String, &'q Query>>,
    depth: usize,
    out: &'c mut Vec<String>,
}

impl<'q> Walk<'_, '_, 'q> {
    fn query(&mut self, q: &'q Query, filtered: bool) {
        // Deeply nested or recursive CTEs: stop following (a guard miss here
        // is still caught by counting during execution).
        if self.depth > 32 {
            return;
        }
        self.depth += 1;
        let filtered = filtered || query_limit(q).is_some();
        let mut scope = HashMap::new();
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                scope.insert(norm(&cte.alias.name), &*cte.query);
            }
        }
        self.ctes.push(scope);
        self.set_expr(&q.body, filtered);
        self.ctes.pop();
        self.depth -= 1;
    }

    fn set_expr(&mut self, body: &'q SetExpr, filtered: bool) {
        match body {
            SetExpr::Select(s) => {
                let filtered = filtered || s.selection.is_some();
                for twj in &s.from {
                    self.from(twj, filtered);
                }
            }
            SetExpr::Query(q) => self.query(q, filtered),
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left, filtered);
                self.set_expr(right, filtered);
            }
            SetExpr::Table(t) => {
                if let Some(name) = &t.table_name {
                    let parts = match &t.schema_name {
                        Some(s) => vec![norm(s), norm(name)],
                        None => vec![norm(name)],
                    };
                    self.table(&parts, filtered);
                }
            }
            _ => {}
        }
    }

    fn from(&mut self, twj: &'q TableWithJoins, filtered: bool) {
        self.factor(&twj.relation, filtered);
        for j in &twj.joins {
            self.factor(&j.relation, filtered);
        }
    }

    fn factor(&mut self, tf: &'q TableFactor, filtered: bool) {
        match tf {
            TableFactor::Table { name, .. } => {
                if let Some(parts) = name_parts(name) {
                    self.table(&parts, filtered);
                }
            }
            TableFactor::Derived { subquery, .. } => self.query(subquery, filtered),
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.from(table_with_joins, filtered),
            _ => {}
        }
    }

    fn table(&mut self, parts: &[String], filtered: bool) {
        if let [name] = parts {
            let cte = self.ctes.iter().rev().find_map(|s| s.get(name).copied());
            if let Some(q) = cte {
                self.query(q, filtered);
                return;
            }
        }
        if filtered {
            return;
        }
        let info = match parts {
            [t] => self.ctx.schema.table(None, t),
            [s, t] | [_, s, t] => self.ctx.schema.table(Some(s), t),
            _ => None,
        };
        if let Some(info) = info.filter(|i| i.is_protected()) {
            let name = format!("{}.{}", info.schema, info.name);
            if !self.out.contains(&name) {
                self.out.push(name);
            }
        }
    }
}

/// A query's own literal row limit: `LIMIT n` or `FETCH FIRST n ROWS ONLY`
/// (the smaller when both are written).
fn query_limit(q: &Query) -> Option<u64> {
    let limit = match &q.limit_clause {
        Some(LimitClause::LimitOffset { limit: Some(e), .. }) => number(e),
        Some(LimitClause::OffsetCommaLimit { limit, .. }) => number(limit),
        _ => None,
    };
    let fetch = q
        .fetch
        .as_ref()
        .filter(|f| !f.percent && !f.with_ties)
        .and_then(|f| f.quantity.as_ref())
        .and_then(number);
    match (limit, fetch) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn number(e: &Expr) -> Option<u64> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        Expr::Nested(inner) => number(inner),
        _ => None,
    }
}

/// The cursor each statement of `sql` fetches from (`None` for statements
/// that are not FETCH), in statement order, so the session can attribute
/// each FETCH result to its cursor. `None` when the text does not parse.
pub fn fetch_cursors(sql: &str) -> Option<Vec<Option<String>>> {
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let statements = sqlparser::parser::Parser::parse_sql(&dialect, sql).ok()?;
    Some(
        statements
            .iter()
            .map(|st| match st {
                Statement::Fetch { name, .. } => Some(norm(name)),
                _ => None,
            })
            .collect(),
    )
}

/// Whether `sql` names the approval setting (ASCII case-insensitive).
pub fn mentions_approval(sql: &str) -> bool {
    let needle = APPROVAL_SETTING.as_bytes();
    sql.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The refusal for a statement that names the approval setting in any way
/// other than the standalone `SET` pgveil answers itself.
pub fn approval_elsewhere() -> Refusal {
    Refusal {
        sqlstate: "42501",
        message: format!(
            "pgveil: {APPROVAL_SETTING} may only be set by a statement of its own, sent as a simple \
             query: SET {APPROVAL_SETTING} = '<token>' (psql, or batch_execute in a driver); the \
             statement was not sent to the server"
        ),
    }
}
