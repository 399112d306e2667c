//! UPDATE and DELETE: assignments into encrypted columns (see `insert`)
//! and WHERE predicates (see `expr`).

use sqlparser::ast::{Delete, FromTable, Update, UpdateTableFromKind};

use super::analyze::Ctx;
use super::error::Refusal;
use super::scope::{Output, Relation, Scope};

impl Ctx<'_> {
    /// Analyses an UPDATE; returns the RETURNING output.
    pub fn update(&mut self, up: &Update, outer: Option<&Scope<'_>>) -> Result<Output, Refusal> {
        let mut sc = Scope::child(outer);
        self.add_from(&up.table, &mut sc)?;
        let target: Relation = sc
            .rels
            .first()
            .cloned()
            .unwrap_or_else(|| Relation::unknown(String::new(), true));
        if let Some(UpdateTableFromKind::AfterSet(from) | UpdateTableFromKind::BeforeSet(from)) =
            &up.from
        {
            for twj in from {
                self.add_from(twj, &mut sc)?;
            }
        }
        for a in &up.assignments {
            self.assignment(&a.target, &a.value, &target, &sc)?;
        }
        if let Some(w) = &up.selection {
            self.expr(w, &sc, false)?;
        }
        self.children(&up.order_by, false, &sc)?;
        self.children(&up.limit, false, &sc)?;
        self.returning(up.returning.as_ref(), &sc)
    }

    /// Analyses a DELETE; returns the RETURNING output.
    pub fn delete(&mut self, del: &Delete, outer: Option<&Scope<'_>>) -> Result<Output, Refusal> {
        let mut sc = Scope::child(outer);
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &del.from;
        for twj in from {
            self.add_from(twj, &mut sc)?;
        }
        for twj in del.using.iter().flatten() {
            self.add_from(twj, &mut sc)?;
        }
        if let Some(w) = &del.selection {
            self.expr(w, &sc, false)?;
        }
        self.children(&del.order_by, false, &sc)?;
        self.children(&del.limit, false, &sc)?;
        self.returning(del.returning.as_ref(), &sc)
    }
}
