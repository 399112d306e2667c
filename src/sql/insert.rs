//! INSERT: values written into encrypted columns.
//!
//! A literal becomes an [`EditKind::Encrypt`]; a `$n` becomes a
//! [`ParamUsage::Value`] target (a cast around it, `$1::text`, is edited
//! away so the server infers `bytea`); NULL and DEFAULT stay. Anything else
//! written into an encrypted column is refused, except a copy of the same
//! column (`SET c = c`, `SET c = EXCLUDED.c`, `INSERT ... SELECT c` from
//! the same column), which moves an envelope that stays valid for it.

use sqlparser::ast::{
    AssignmentTarget, Expr, Insert, OnConflictAction, OnInsert, SetExpr, TableObject,
};

use super::analyze::Ctx;
use super::error::Refusal;
use super::operand::{classify, Operand};
use super::plan::{EditKind, ParamUsage};
use super::read::Leak;
use super::schema::ProtectedColumn;
use super::scope::{name_parts, ColKind, Output, Relation, Scope};

const HINT_WRITE: &str = "write a literal or a $n parameter (compute the value in the application)";

impl Ctx<'_> {
    /// Checks (and rewrites) `e` written into the column of kind `target`.
    pub fn write(&mut self, target: &ColKind, e: &Expr, sc: &Scope<'_>) -> Result<(), Refusal> {
        match target {
            ColKind::Protected(pc) if pc.protection.encrypts() => self.write_encrypted(pc, e, sc),
            ColKind::Protected(pc) => {
                self.touch(pc);
                self.expr(e, sc, false)?;
                self.write_copy(Some(pc), e, sc)
            }
            _ => {
                self.expr(e, sc, false)?;
                self.write_copy(None, e, sc)
            }
        }
    }

    /// A value derived from a protected column, written into another
    /// column (`target`, `None` for a plain one), is a server-side copy.
    fn write_copy(
        &self,
        target: Option<&ProtectedColumn>,
        e: &Expr,
        sc: &Scope<'_>,
    ) -> Result<(), Refusal> {
        match self.leak(e, sc)? {
            Some(Leak::Column(c)) if target.is_some_and(|t| t.full_name == c) => Ok(()),
            Some(leak) => Err(leak.copy("writing it into another column")),
            None => Ok(()),
        }
    }

    fn write_encrypted(
        &mut self,
        pc: &ProtectedColumn,
        e: &Expr,
        sc: &Scope<'_>,
    ) -> Result<(), Refusal> {
        self.touch(pc);
        let name = pc.full_name.as_str();
        match classify(e, self.src) {
            Operand::Literal { value, range } => self.edit(
                range,
                EditKind::Encrypt {
                    column: pc.clone(),
                    value,
                },
                name,
            ),
            Operand::Param {
                index,
                range,
                cast,
                at,
            } => {
                self.param(index, at, pc, ParamUsage::Value)?;
                if cast {
                    self.edit(range, EditKind::Text(format!("${index}")), name)?;
                }
                Ok(())
            }
            Operand::Null | Operand::Default => Ok(()),
            Operand::Column { idents, .. } => match self.column(idents, sc)? {
                // While migrating online, the column alone is not the value.
                Some(src) if src.full_name == pc.full_name && src.legacy.is_none() => Ok(()),
                _ => Err(Refusal::on_column(
                    name,
                    "writing another column's value",
                    HINT_WRITE,
                )),
            },
            _ => Err(Refusal::on_column(
                name,
                "writing a computed expression",
                HINT_WRITE,
            )),
        }
    }

    /// Analyses an INSERT; returns the RETURNING output.
    pub fn insert(&mut self, ins: &Insert, outer: Option<&Scope<'_>>) -> Result<Output, Refusal> {
        let TableObject::TableName(table_name) = &ins.table else {
            let mut sc = Scope::child(outer);
            sc.rels.clear();
            if let Some(t) = self.mentions_protected(ins) {
                return Err(Refusal::unsupported(format!(
                    "INSERT into a table function naming protected table {t} is not supported"
                )));
            }
            return Ok(Output::default());
        };
        let rel = Scope::child(outer).lookup_table(self.schema, table_name);
        let rel = match &ins.table_alias {
            Some(a) => Relation {
                name: super::scope::norm(&a.alias),
                schema: None,
                ..rel
            },
            None => rel,
        };
        if ins.columns.is_empty() && ins.source.is_some() {
            self.legacy_positions(&rel.hidden, &rel.name, "INSERT INTO")?;
        }
        let targets: Vec<ColKind> = match (&rel.cols, ins.columns.is_empty()) {
            (Some(cols), true) => cols.iter().map(|c| c.kind.clone()).collect(),
            (Some(cols), false) => ins
                .columns
                .iter()
                .map(|n| {
                    let name = name_parts(n)
                        .and_then(|p| p.last().cloned())
                        .unwrap_or_default();
                    cols.iter()
                        .find(|c| c.name == name)
                        .map_or(ColKind::Plain, |c| c.kind.clone())
                })
                .collect(),
            (None, _) => Vec::new(),
        };
        let values_scope = Scope::child(outer);
        if let Some(source) = &ins.source {
            match (
                &*source.body,
                &source.with,
                &source.order_by,
                &source.limit_clause,
            ) {
                (SetExpr::Values(values), None, None, None) => {
                    for row in &values.rows {
                        for (i, e) in row.content.iter().enumerate() {
                            let target = targets.get(i).unwrap_or(&ColKind::Plain);
                            self.write(target, e, &values_scope)?;
                        }
                    }
                }
                _ => {
                    let out = self.query(source, outer)?;
                    for (i, t) in targets.iter().enumerate() {
                        let Some(pc) = t.encrypted() else { continue };
                        self.touch(pc);
                        let same = match out.cols.as_ref().and_then(|c| c.get(i)) {
                            Some(col) => {
                                matches!(&col.kind, ColKind::Protected(s) if s.full_name == pc.full_name)
                            }
                            None => false,
                        };
                        if !same {
                            return Err(Refusal::on_column(
                                &pc.full_name,
                                "INSERT ... SELECT of another column or expression",
                                "insert literals or $n parameters, or select the same column",
                            ));
                        }
                    }
                    // A protected column selected into any other column is
                    // a copy pgveil cannot decrypt, mask or re-encrypt.
                    let cols = out.cols.as_deref().unwrap_or_default();
                    for (i, col) in cols.iter().enumerate() {
                        let leak = match &col.kind {
                            ColKind::Protected(src) => match targets.get(i) {
                                Some(ColKind::Protected(t)) if t.full_name == src.full_name => None,
                                _ => Some(Leak::Column(src.full_name.clone())),
                            },
                            ColKind::Unknown => Some(Leak::Subquery(None)),
                            ColKind::Plain => None,
                        };
                        if let Some(leak) = leak {
                            return Err(leak.copy("INSERT ... SELECT into another column"));
                        }
                    }
                    if out.cols.is_none() && out.opaque {
                        return Err(Leak::Subquery(None).copy("INSERT ... SELECT"));
                    }
                }
            }
        }
        for a in &ins.assignments {
            // MySQL-style `INSERT ... SET`; PostgreSQL rejects it, but check anyway.
            let sc = Scope {
                rels: vec![rel.clone()],
                ctes: Vec::new(),
                parent: outer,
            };
            self.assignment(&a.target, &a.value, &rel, &sc)?;
        }
        let mut sc = Scope::child(outer);
        sc.rels.push(rel.clone());
        match &ins.on {
            Some(OnInsert::OnConflict(oc)) => {
                if let OnConflictAction::DoUpdate(du) = &oc.action {
                    let mut excluded = rel.clone();
                    excluded.name = "excluded".into();
                    excluded.schema = None;
                    sc.rels.push(excluded);
                    for a in &du.assignments {
                        self.assignment(&a.target, &a.value, &rel, &sc)?;
                    }
                    if let Some(w) = &du.selection {
                        self.expr(w, &sc, false)?;
                    }
                    sc.rels.truncate(1);
                }
                if let Some(sqlparser::ast::ConflictTarget::Columns {
                    predicate: Some(p), ..
                }) = &oc.conflict_target
                {
                    self.expr(p, &sc, false)?;
                }
            }
            Some(other) => self.children(other, false, &sc)?,
            None => {}
        }
        self.returning(ins.returning.as_ref(), &sc)
    }

    /// `SET target = value` on the table `rel`.
    pub fn assignment(
        &mut self,
        target: &AssignmentTarget,
        value: &Expr,
        rel: &Relation,
        sc: &Scope<'_>,
    ) -> Result<(), Refusal> {
        let kind_of = |n: &sqlparser::ast::ObjectName| -> ColKind {
            let name = name_parts(n)
                .and_then(|p| p.last().cloned())
                .unwrap_or_default();
            match &rel.cols {
                Some(cols) => cols
                    .iter()
                    .find(|c| c.name == name)
                    .map_or(ColKind::Plain, |c| c.kind.clone()),
                None if rel.opaque => ColKind::Unknown,
                None => ColKind::Plain,
            }
        };
        match target {
            AssignmentTarget::ColumnName(n) => {
                let kind = kind_of(n);
                if kind == ColKind::Unknown {
                    return Err(Refusal::unsupported(
                        "cannot tell whether an assigned column is encrypted; update the base table directly",
                    ));
                }
                self.write(&kind, value, sc)
            }
            AssignmentTarget::Tuple(names) => {
                if let Some(pc) = names
                    .iter()
                    .map(kind_of)
                    .find_map(|k| k.encrypted().cloned())
                {
                    return Err(Refusal::on_column(
                        &pc.full_name,
                        "multi-column SET (a, b) = (...)",
                        "assign the encrypted column on its own: SET col = literal or $n",
                    ));
                }
                self.expr(value, sc, false)
            }
        }
    }
}
