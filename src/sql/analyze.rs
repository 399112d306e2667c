//! The analysis state for one statement text and the statement dispatch.
//!
//! [`Ctx`] collects edits, protected parameters and touched columns while
//! the statement-specific modules (`query`, `expr`, `insert`, `update`,
//! `copy`) walk the AST; [`Ctx::finish`] checks the result as a whole (a
//! parameter used both for a protected column and elsewhere, overlapping
//! edits) and turns it into a [`Plan`].
//!
//! DDL, transaction control, SET/SHOW and the like pass through even when
//! they name a protected table: they carry no protected values, and schema
//! changes are the DBA's business (the catalog refreshes after DDL).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::{ControlFlow, Range};

use sqlparser::ast::{Expr, ObjectName, Statement, Value, Visit, Visitor};

use super::bulk::{BulkRead, ReadKind};
use super::error::Refusal;
use super::operand::param_index;
use super::plan::{CopyIn, Edit, EditKind, ParamTarget, ParamUsage, Plan, Rewrite};
use super::read::{output_leak, Leak};
use super::schema::{ProtectedColumn, Schema, TableInfo};
use super::scope::{name_parts, norm, ColKind};
use super::span::Source;

/// Why a statement reading a column migrated online is refused when its
/// result columns cannot be listed by position.
fn merged_unlocated() -> Refusal {
    Refusal::unsupported(
        "a column being migrated online (pgveil migrate encrypt) can only be read by a single \
         SELECT, INSERT, UPDATE or DELETE ... RETURNING whose result columns pgveil can list \
         (not a cursor, SQL-level PREPARE, several statements at once, or * over a table pgveil \
         does not know); read it that way until the migration has finished",
    )
}

/// Analysis state for one statement text.
pub(crate) struct Ctx<'s> {
    pub src: &'s Source<'s>,
    pub schema: &'s dyn Schema,
    edits: Vec<Edit>,
    params: BTreeMap<usize, (ProtectedColumn, ParamUsage)>,
    /// Byte offsets of placeholders already assigned to a protected column.
    handled: HashSet<usize>,
    touched: Vec<String>,
    pub copy: Option<CopyIn>,
    /// Set by `COPY table TO STDOUT` with protected columns.
    pub copy_out: Option<CopyIn>,
    /// What each analysed query's result is derived from, by [`query_key`].
    pub outputs: HashMap<usize, Option<Leak>>,
    /// The protected column behind each result column of the last
    /// top-level query (see [`Rewrite::results`]).
    results: Vec<Option<ProtectedColumn>>,
    /// Statements returning protected columns, for the bulk-read guard.
    pub reads: Vec<BulkRead>,
    /// References to columns migrated online, rewritten to read both forms.
    pub legacy_refs: super::online::LegacyRefs,
    /// A result column combines both forms of such a column: it has no
    /// origin, so the result columns must be known by position.
    pub merged: bool,
}

impl<'s> Ctx<'s> {
    pub fn new(src: &'s Source<'s>, schema: &'s dyn Schema) -> Self {
        Ctx {
            src,
            schema,
            edits: Vec::new(),
            params: BTreeMap::new(),
            handled: HashSet::new(),
            touched: Vec::new(),
            copy: None,
            copy_out: None,
            outputs: HashMap::new(),
            results: Vec::new(),
            reads: Vec::new(),
            legacy_refs: Default::default(),
            merged: false,
        }
    }

    /// Records that the statement touches `pc`.
    pub fn touch(&mut self, pc: &ProtectedColumn) {
        if !self.touched.contains(&pc.full_name) {
            self.touched.push(pc.full_name.clone());
        }
    }

    /// Adds an edit; a missing range means the text position is unknown.
    pub fn edit(
        &mut self,
        range: Option<Range<usize>>,
        kind: EditKind,
        column: &str,
    ) -> Result<(), Refusal> {
        let range = range.ok_or_else(|| Refusal::unlocated(column))?;
        self.edits.push(Edit { range, kind });
        Ok(())
    }

    /// Records that `$index`, whose `$` is at byte `at`, is used for `pc`.
    pub fn param(
        &mut self,
        index: usize,
        at: Option<usize>,
        pc: &ProtectedColumn,
        usage: ParamUsage,
    ) -> Result<(), Refusal> {
        let at = at.ok_or_else(|| Refusal::unlocated(&pc.full_name))?;
        self.touch(pc);
        self.handled.insert(at);
        match self.params.get(&index) {
            None => {
                self.params.insert(index, (pc.clone(), usage));
                Ok(())
            }
            Some((prev, prev_usage)) if prev.full_name == pc.full_name && *prev_usage == usage => Ok(()),
            Some((prev, _)) => Err(Refusal::unsupported(format!(
                "parameter ${index} is used for encrypted column {} and also for {} in another role; \
                 bind a separate parameter for each use",
                prev.full_name, pc.full_name
            ))),
        }
    }

    /// Analyses one statement.
    pub fn statement(&mut self, st: &Statement) -> Result<(), Refusal> {
        match st {
            Statement::Query(q) => {
                let out = self.query(q, None)?;
                self.set_results(&out)?;
                self.note_read(ReadKind::Select, q, &out);
                Ok(())
            }
            Statement::Insert(i) => {
                let out = self.insert(i, None)?;
                self.set_results(&out)?;
                self.note_returning(&out, true);
                Ok(())
            }
            Statement::Update(u) => {
                let out = self.update(u, None)?;
                self.set_results(&out)?;
                self.note_returning(&out, u.selection.is_some());
                Ok(())
            }
            Statement::Delete(d) => {
                let out = self.delete(d, None)?;
                self.set_results(&out)?;
                self.note_returning(&out, d.selection.is_some());
                Ok(())
            }
            Statement::Copy { .. } => self.copy(st),
            Statement::Explain { statement, .. } => self.statement(statement),
            Statement::Prepare { statement, .. } => {
                let before = self.params.len();
                self.statement(statement)?;
                if self.params.len() > before {
                    return Err(Refusal::unsupported(
                        "SQL-level PREPARE with parameters for encrypted columns is not supported \
                         (EXECUTE would send plaintext); use the extended protocol's prepared statements",
                    ));
                }
                Ok(())
            }
            Statement::Declare { stmts, .. } => {
                for d in stmts {
                    if let Some(q) = &d.for_query {
                        let out = self.query(q, None)?;
                        let name = d.names.first().map(norm).unwrap_or_default();
                        self.note_read(ReadKind::Cursor(name), q, &out);
                    }
                }
                Ok(())
            }
            Statement::CreateTable(ct) => match &ct.query {
                Some(q) => self.server_copy(q, "CREATE TABLE ... AS"),
                None => Ok(()),
            },
            Statement::CreateView(cv) if self.mentions_hidden(&cv.query).is_some() => {
                let table = self.mentions_hidden(&cv.query).unwrap_or_default();
                Err(Refusal::unsupported(format!(
                    "a view over {table} cannot be created while a column of it is being migrated \
                     online: the view would keep the column's hidden old values; create it once \
                     pgveil migrate encrypt has finished"
                )))
            }
            Statement::CreateView(cv) if cv.materialized => {
                self.server_copy(&cv.query, "CREATE MATERIALIZED VIEW")
            }
            Statement::Merge(_) => match self.mentions_protected(st) {
                Some(table) => Err(Refusal::unsupported(format!(
                    "MERGE involving protected table {table} is not supported; use INSERT ... ON CONFLICT or UPDATE"
                ))),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Records what each result column of a statement is. A column that
    /// combines both forms of a column migrated online is found only this
    /// way, so its result must list every column.
    fn set_results(&mut self, out: &super::scope::Output) -> Result<(), Refusal> {
        // `*` over a relation pgveil cannot list stands for an unknown
        // number of columns: positions after it would be guesses.
        if self.merged
            && out
                .cols
                .as_ref()
                .is_none_or(|cols| cols.iter().any(|c| c.name == "*"))
        {
            return Err(merged_unlocated());
        }
        self.results = out
            .cols
            .iter()
            .flatten()
            .map(|c| match &c.kind {
                ColKind::Protected(pc) => Some(pc.clone()),
                _ => None,
            })
            .collect();
        Ok(())
    }

    /// A query whose result the server stores (`CREATE TABLE AS`, a
    /// materialized view): refused when a result column holds protected data.
    fn server_copy(&mut self, q: &sqlparser::ast::Query, what: &str) -> Result<(), Refusal> {
        let out = self.query(q, None)?;
        match output_leak(&out) {
            Some(leak) => Err(leak.copy(what)),
            None => Ok(()),
        }
    }

    /// The first protected table a node names, as `schema.table`.
    pub fn mentions_protected<V: Visit>(&self, node: &V) -> Option<String> {
        self.mentions_table(node, TableInfo::is_protected)
    }

    /// The first table with a column being migrated online that a node
    /// names, as `schema.table`.
    pub fn mentions_hidden<V: Visit>(&self, node: &V) -> Option<String> {
        self.mentions_table(node, |t| !t.hidden.is_empty())
    }

    /// The first table a node names that `pick` selects, as `schema.table`.
    fn mentions_table<V: Visit>(&self, node: &V, pick: fn(&TableInfo) -> bool) -> Option<String> {
        struct Find<'a> {
            schema: &'a dyn Schema,
            pick: fn(&TableInfo) -> bool,
        }
        impl Visitor for Find<'_> {
            type Break = String;
            fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<String> {
                let info = match name_parts(name).as_deref() {
                    Some([t]) => self.schema.table(None, t),
                    Some([s, t]) | Some([_, s, t]) => self.schema.table(Some(s), t),
                    _ => None,
                };
                match info {
                    Some(i) if (self.pick)(i) => {
                        ControlFlow::Break(format!("{}.{}", i.schema, i.name))
                    }
                    _ => ControlFlow::Continue(()),
                }
            }
        }
        match node.visit(&mut Find {
            schema: self.schema,
            pick,
        }) {
            ControlFlow::Break(t) => Some(t),
            ControlFlow::Continue(()) => None,
        }
    }

    /// Checks the whole text and builds the plan.
    pub fn finish(mut self, statements: &[Statement]) -> Result<Plan, Refusal> {
        if self.merged
            && (statements.len() != 1
                || !matches!(
                    statements.first(),
                    Some(
                        Statement::Query(_)
                            | Statement::Insert(_)
                            | Statement::Update(_)
                            | Statement::Delete(_)
                    )
                ))
        {
            return Err(merged_unlocated());
        }
        let legacy = self.legacy_edits();
        self.edits.extend(legacy);
        if let Some(copy) = self.copy.take() {
            if statements.len() > 1 {
                return Err(Refusal::unsupported(
                    "COPY into a table with encrypted columns must be sent as a statement of its own",
                ));
            }
            return Ok(Plan::CopyIn(copy));
        }
        if let Some(copy) = self.copy_out.take() {
            if statements.len() > 1 {
                return Err(Refusal::unsupported(
                    "COPY ... TO STDOUT of protected columns must be sent as a statement of its own",
                ));
            }
            return Ok(Plan::CopyOut(copy));
        }
        self.check_plain_params(statements)?;
        if self.edits.is_empty() && self.params.is_empty() && self.touched.is_empty() {
            return Ok(Plan::Passthrough);
        }
        self.edits.sort_by_key(|e| (e.range.start, e.range.end));
        for pair in self.edits.windows(2) {
            if pair[0].range.end > pair[1].range.start {
                return Err(Refusal::unsupported(
                    "statement could not be rewritten safely for its encrypted columns; \
                     split it into simpler statements with plain literals or $n parameters",
                ));
            }
        }
        let params = self
            .params
            .into_iter()
            .map(|(index, (column, usage))| ParamTarget {
                index,
                column,
                usage,
            })
            .collect();
        let results = if statements.len() == 1 && self.results.iter().any(Option::is_some) {
            self.results.into()
        } else {
            Vec::new().into()
        };
        Ok(Plan::Rewrite(Rewrite {
            edits: self.edits,
            params,
            touched: self.touched,
            results,
        }))
    }

    /// A parameter bound to a protected column must not also be used as a
    /// plain value elsewhere: it would reach the server as ciphertext there
    /// or as plaintext here.
    fn check_plain_params(&self, statements: &[Statement]) -> Result<(), Refusal> {
        struct Plain<'a> {
            ctx: &'a Ctx<'a>,
        }
        impl Visitor for Plain<'_> {
            type Break = usize;
            fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<usize> {
                if let Expr::Value(v) = e {
                    if let Value::Placeholder(p) = &v.value {
                        let at = self.ctx.src.range(v.span).map(|r| r.start);
                        if let Some(n) = param_index(p) {
                            let handled = at.is_some_and(|b| self.ctx.handled.contains(&b));
                            if !handled && self.ctx.params.contains_key(&n) {
                                return ControlFlow::Break(n);
                            }
                        }
                    }
                }
                ControlFlow::Continue(())
            }
        }
        let mut plain = Plain { ctx: self };
        let found = statements.iter().try_for_each(|st| st.visit(&mut plain));
        match found {
            ControlFlow::Break(n) => {
                let col = self
                    .params
                    .get(&n)
                    .map(|(c, _)| c.full_name.as_str())
                    .unwrap_or("?");
                Err(Refusal::unsupported(format!(
                    "parameter ${n} is bound to encrypted column {col} and also used elsewhere as a plain value; \
                     bind a separate parameter for each use"
                )))
            }
            ControlFlow::Continue(()) => Ok(()),
        }
    }
}
