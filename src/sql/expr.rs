//! Expressions: what may be done with an encrypted column, and the
//! rewrite of equality predicates.
//!
//! Allowed on an encrypted column: reading it as a whole, `IS [NOT] NULL`,
//! `count(col)`, and on a *searchable* column equality with literals and
//! parameters (`=`, `<>`, `IN`, `NOT IN`), equality with the same column
//! (self-joins), GROUP BY and DISTINCT. Equality is rewritten to match any
//! live key version: `col = 'v'` becomes `col = ANY(<envelopes of v>)`,
//! `col = $1` becomes `col = ANY($1::bytea[])` (or `ANY(ARRAY[$1::bytea])`). Everything else that
//! would compute on ciphertext is refused with a message naming the
//! column. Expressions pgveil has no rule for are descended generically
//! (every child expression and subquery is checked), so a new kind of
//! expression fails closed.

use std::ops::{ControlFlow, Range};

use sqlparser::ast::{
    BinaryOperator, DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, InTarget, Query, UnaryOperator, Visit, Visitor,
};
use sqlparser::tokenizer::Token;

use super::analyze::Ctx;
use super::error::Refusal;
use super::operand::{classify, column_ref, Operand};
use super::plan::{EditKind, ParamUsage};
use super::schema::ProtectedColumn;
use super::scope::{ColKind, Scope};
use crate::policy::Protection;

const HINT_COMPUTE: &str = "read the column and compute in the application";
const HINT_ORDER: &str = "ciphertext has no order; sort or filter ranges in the application";
const HINT_MATCH: &str = "compare it with = against a literal or a $n parameter";

/// A direct child of an expression (or other AST node).
pub(crate) enum Child<'a> {
    Expr(&'a Expr),
    Query(&'a Query),
}

/// Calls `f` on each direct child expression or subquery of `node`.
/// `root_is_expr` tells whether `node` is itself an expression (which the
/// visitor reports first and must be skipped).
pub(crate) fn for_each_child<N: Visit>(
    node: &N,
    root_is_expr: bool,
    mut f: impl FnMut(Child<'_>) -> Result<(), Refusal>,
) -> Result<(), Refusal> {
    struct Children<'f, F> {
        depth: usize,
        target: usize,
        f: &'f mut F,
    }
    impl<F: FnMut(Child<'_>) -> Result<(), Refusal>> Visitor for Children<'_, F> {
        type Break = Refusal;
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<Refusal> {
            if self.depth == self.target {
                if let Err(r) = (self.f)(Child::Expr(e)) {
                    return ControlFlow::Break(r);
                }
            }
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<Refusal> {
            self.depth = self.depth.saturating_sub(1);
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<Refusal> {
            if self.depth == self.target {
                if let Err(r) = (self.f)(Child::Query(q)) {
                    return ControlFlow::Break(r);
                }
            }
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<Refusal> {
            self.depth = self.depth.saturating_sub(1);
            ControlFlow::Continue(())
        }
    }
    let mut v = Children {
        depth: 0,
        target: usize::from(root_is_expr),
        f: &mut f,
    };
    match node.visit(&mut v) {
        ControlFlow::Break(r) => Err(r),
        ControlFlow::Continue(()) => Ok(()),
    }
}

fn what_of(op: &BinaryOperator) -> (&'static str, &'static str) {
    use BinaryOperator::*;
    match op {
        Lt | LtEq | Gt | GtEq | Spaceship => ("ordering comparison", HINT_ORDER),
        Plus | Minus | Multiply | Divide | Modulo | MyIntegerDivide => ("arithmetic", HINT_COMPUTE),
        StringConcat => ("string concatenation", HINT_COMPUTE),
        _ => ("an operator", HINT_COMPUTE),
    }
}

impl Ctx<'_> {
    /// Resolves a column reference and records a protected one as touched.
    pub fn column(
        &mut self,
        idents: &[sqlparser::ast::Ident],
        sc: &Scope<'_>,
    ) -> Result<Option<ProtectedColumn>, Refusal> {
        let pc = sc.resolve(idents)?;
        if let Some(pc) = &pc {
            self.touch(pc);
            if pc.legacy.is_some() {
                self.legacy_ref(idents, sc, pc)?;
            }
        }
        Ok(pc)
    }

    /// The encrypted column `e` directly names, if any.
    fn encrypted_ref(
        &mut self,
        e: &Expr,
        sc: &Scope<'_>,
    ) -> Result<Option<ProtectedColumn>, Refusal> {
        match column_ref(e) {
            Some(idents) => Ok(self
                .column(idents, sc)?
                .filter(|pc| pc.protection.encrypts())),
            None => Ok(None),
        }
    }

    /// Refuses `what` when `e` is an encrypted column.
    fn refuse_direct(
        &mut self,
        e: &Expr,
        sc: &Scope<'_>,
        what: &str,
        hint: &str,
    ) -> Result<(), Refusal> {
        match self.encrypted_ref(e, sc)? {
            Some(pc) => Err(Refusal::on_column(&pc.full_name, what, hint)),
            None => Ok(()),
        }
    }

    /// Checks (and rewrites) an expression. `bare_ok`: a bare encrypted
    /// column is allowed here (a select-list item, read as a whole).
    pub fn expr(&mut self, e: &Expr, sc: &Scope<'_>, bare_ok: bool) -> Result<(), Refusal> {
        match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
                if let Some(pc) = self.encrypted_ref(e, sc)? {
                    if !bare_ok {
                        return Err(Refusal::on_column(
                            &pc.full_name,
                            "an expression",
                            HINT_COMPUTE,
                        ));
                    }
                }
                Ok(())
            }
            Expr::Nested(inner) => self.expr(inner, sc, bare_ok),
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And | BinaryOperator::Or | BinaryOperator::Xor => {
                    self.expr(left, sc, false)?;
                    self.expr(right, sc, false)
                }
                BinaryOperator::Eq => self.equality(e, left, right, true, sc),
                BinaryOperator::NotEq => self.equality(e, left, right, false, sc),
                _ => {
                    let (what, hint) = what_of(op);
                    self.refuse_direct(left, sc, what, hint)?;
                    self.refuse_direct(right, sc, what, hint)?;
                    self.expr(left, sc, false)?;
                    self.expr(right, sc, false)
                }
            },
            Expr::Like { expr, pattern, .. }
            | Expr::ILike { expr, pattern, .. }
            | Expr::SimilarTo { expr, pattern, .. }
            | Expr::RLike { expr, pattern, .. } => {
                let hint = "pattern matching needs the plaintext; use equality on a searchable column or filter in the application";
                self.refuse_direct(expr, sc, "LIKE/ILIKE/SIMILAR TO", hint)?;
                self.refuse_direct(pattern, sc, "LIKE/ILIKE/SIMILAR TO", hint)?;
                self.generic(e, sc)
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                for x in [expr, low, high] {
                    self.refuse_direct(x, sc, "BETWEEN", HINT_ORDER)?;
                }
                self.generic(e, sc)
            }
            Expr::IsNull(x) | Expr::IsNotNull(x) => match column_ref(x) {
                Some(idents) => self.column(idents, sc).map(drop),
                None => self.expr(x, sc, false),
            },
            Expr::In {
                expr,
                target: InTarget::List(list),
                negated,
                ..
            } => self.in_list(expr, list, *negated, sc),
            Expr::In {
                expr,
                target: InTarget::Subquery(q),
                ..
            } => self.in_subquery(expr, q, sc),
            Expr::Exists { subquery, .. } => self.query(subquery, Some(sc)).map(drop),
            Expr::Subquery(q) => {
                let out = self.query(q, Some(sc))?;
                let encrypted = out.opaque
                    || out
                        .cols
                        .iter()
                        .flatten()
                        .any(|c| c.kind.encrypted().is_some() || c.kind == ColKind::Unknown);
                if encrypted {
                    return Err(Refusal::unsupported(
                        "a scalar subquery returning an encrypted column is not supported; \
                         join the table or compare the column directly",
                    ));
                }
                Ok(())
            }
            Expr::Function(f) => self.function(f, sc),
            Expr::Cast {
                expr, data_type, ..
            } => {
                self.refuse_direct(expr, sc, &format!("a cast to {data_type}"), HINT_COMPUTE)?;
                self.expr(expr, sc, false)
            }
            Expr::UnaryOp { op, expr } => {
                let what = if *op == UnaryOperator::Not {
                    "NOT"
                } else {
                    "an operator"
                };
                self.refuse_direct(expr, sc, what, HINT_COMPUTE)?;
                self.expr(expr, sc, false)
            }
            Expr::Value(_) | Expr::TypedString(_) => Ok(()),
            _ => self.generic(e, sc),
        }
    }

    /// Checks every child of an expression pgveil has no rule for.
    pub fn generic<N: Visit>(&mut self, node: &N, sc: &Scope<'_>) -> Result<(), Refusal> {
        self.children(node, true, sc)
    }

    /// Checks every child expression and subquery of `node`.
    pub fn children<N: Visit>(
        &mut self,
        node: &N,
        root_is_expr: bool,
        sc: &Scope<'_>,
    ) -> Result<(), Refusal> {
        for_each_child(node, root_is_expr, |child| match child {
            Child::Expr(x) => self.expr(x, sc, false),
            Child::Query(q) => self.query(q, Some(sc)).map(drop),
        })
    }

    fn function(&mut self, f: &Function, sc: &Scope<'_>) -> Result<(), Refusal> {
        let name = f.name.to_string().to_ascii_lowercase();
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
        let distinct = matches!(&f.args, FunctionArguments::List(l) if l.duplicate_treatment == Some(DuplicateTreatment::Distinct));
        if let (true, [FunctionArgExpr::Expr(arg)]) = (
            name == "count" || name == "pg_catalog.count",
            args.as_slice(),
        ) {
            if let Some(idents) = column_ref(arg) {
                let pc = self.column(idents, sc)?;
                if let Some(pc) =
                    pc.filter(|pc| distinct && pc.protection == Protection::Randomized)
                {
                    return Err(randomized(&pc, "COUNT(DISTINCT ...)"));
                }
                if let Some(filter) = &f.filter {
                    self.expr(filter, sc, false)?;
                }
                if let Some(over) = &f.over {
                    self.children(over, false, sc)?;
                }
                return self.children(&f.within_group, false, sc);
            }
        }
        for a in &args {
            if let FunctionArgExpr::Expr(x) = a {
                self.refuse_direct(x, sc, &format!("function {name}()"), HINT_COMPUTE)?;
            }
        }
        self.children(f, false, sc)
    }

    /// `left = right` or `left <> right`.
    fn equality(
        &mut self,
        whole: &Expr,
        left: &Expr,
        right: &Expr,
        eq: bool,
        sc: &Scope<'_>,
    ) -> Result<(), Refusal> {
        let lo = classify(left, self.src);
        let ro = classify(right, self.src);
        let lk = self.operand_kind(&lo, sc)?;
        let rk = self.operand_kind(&ro, sc)?;
        match (
            lk.as_ref().and_then(|k| k.encrypted()),
            rk.as_ref().and_then(|k| k.encrypted()),
        ) {
            (Some(a), Some(b)) => {
                if a.full_name != b.full_name {
                    return Err(Refusal::on_column(
                        &a.full_name,
                        &format!("comparison with another column ({})", b.full_name),
                        "each column has its own key; only the same searchable column can be compared with itself",
                    ));
                }
                if a.protection != Protection::Searchable {
                    return Err(randomized(a, "equality"));
                }
                Ok(())
            }
            (Some(pc), None) => {
                let pc = pc.clone();
                self.match_operand(&pc, &lo, &ro, false, eq, rk.is_some(), whole)
            }
            (None, Some(pc)) => {
                let pc = pc.clone();
                self.match_operand(&pc, &ro, &lo, true, eq, lk.is_some(), whole)
            }
            (None, None) => {
                self.expr(left, sc, false)?;
                self.expr(right, sc, false)
            }
        }
    }

    /// The column kind of an operand that is a column reference.
    fn operand_kind(
        &mut self,
        o: &Operand<'_>,
        sc: &Scope<'_>,
    ) -> Result<Option<ColKind>, Refusal> {
        match o {
            Operand::Column { idents, .. } => Ok(Some(
                self.column(idents, sc)?
                    .map_or(ColKind::Plain, ColKind::Protected),
            )),
            _ => Ok(None),
        }
    }

    /// Rewrites `col = other` (or `other = col` when `swapped`).
    #[allow(clippy::too_many_arguments)]
    fn match_operand(
        &mut self,
        pc: &ProtectedColumn,
        col: &Operand<'_>,
        other: &Operand<'_>,
        swapped: bool,
        eq: bool,
        other_is_column: bool,
        _whole: &Expr,
    ) -> Result<(), Refusal> {
        let name = pc.full_name.as_str();
        if other_is_column {
            return Err(Refusal::on_column(
                name,
                "comparison with a plaintext column",
                "compare it with a literal, a $n parameter, or the same searchable column",
            ));
        }
        let what = if eq { "equality" } else { "inequality (<>)" };
        if matches!(other, Operand::Null) {
            return Ok(());
        }
        if pc.protection != Protection::Searchable {
            return Err(randomized(pc, what));
        }
        let target = match other {
            Operand::Literal { value, range } => (
                range.clone(),
                EditKind::MatchList {
                    column: pc.clone(),
                    value: value.clone(),
                },
            ),
            Operand::Param {
                index, range, at, ..
            } => {
                self.param(*index, *at, pc, ParamUsage::MatchArray)?;
                (
                    range.clone(),
                    EditKind::MatchParam {
                        index: *index,
                        column: pc.clone(),
                    },
                )
            }
            _ => {
                return Err(Refusal::on_column(
                    name,
                    &format!("{what} with a computed expression"),
                    HINT_MATCH,
                ))
            }
        };
        let Operand::Column {
            range: Some(col_range),
            ..
        } = col
        else {
            return Err(Refusal::unlocated(name));
        };
        let other_range = target.0.clone().ok_or_else(|| Refusal::unlocated(name))?;
        let (first, second) = if swapped {
            (&other_range, col_range)
        } else {
            (col_range, &other_range)
        };
        let op = self
            .operator_between(first, second)
            .ok_or_else(|| Refusal::unlocated(name))?;
        let open = if eq { "= ANY(" } else { "<> ALL(" };
        if swapped {
            let col_text = self
                .src
                .text(col_range)
                .ok_or_else(|| Refusal::unlocated(name))?
                .to_owned();
            self.edit(Some(other_range), EditKind::Text(col_text), name)?;
            self.edit(
                Some(op.start..col_range.start),
                EditKind::Text(open.to_owned()),
                name,
            )?;
            self.edit(Some(col_range.clone()), target.1, name)?;
            self.edit(
                Some(col_range.end..col_range.end),
                EditKind::Text(")".to_owned()),
                name,
            )
        } else {
            self.edit(
                Some(op.start..other_range.start),
                EditKind::Text(open.to_owned()),
                name,
            )?;
            self.edit(Some(other_range.clone()), target.1, name)?;
            self.edit(
                Some(other_range.end..other_range.end),
                EditKind::Text(")".to_owned()),
                name,
            )
        }
    }

    /// The byte range of the single `=`/`<>`/`!=` token between two operands.
    fn operator_between(
        &self,
        first: &Range<usize>,
        second: &Range<usize>,
    ) -> Option<Range<usize>> {
        let i = self.src.next_after(first.end)?;
        let t = self.src.tok(i)?;
        let next = self.src.tok(i + 1)?;
        (matches!(t.token, Token::Eq | Token::Neq | Token::DoubleEq)
            && next.range.start == second.start)
            .then(|| t.range.clone())
    }

    /// `x [NOT] IN (a, b, ...)`.
    fn in_list(
        &mut self,
        expr: &Expr,
        list: &[Expr],
        negated: bool,
        sc: &Scope<'_>,
    ) -> Result<(), Refusal> {
        let col = classify(expr, self.src);
        let pc = match self.operand_kind(&col, sc)? {
            Some(k) => k.encrypted().cloned(),
            None => None,
        };
        let Some(pc) = pc else {
            self.expr(expr, sc, false)?;
            for x in list {
                self.expr(x, sc, false)?;
            }
            return Ok(());
        };
        let name = pc.full_name.clone();
        if pc.protection != Protection::Searchable {
            return Err(randomized(&pc, "IN (...)"));
        }
        let unlocated = || Refusal::unlocated(&name);
        let Operand::Column {
            range: Some(col_range),
            ..
        } = &col
        else {
            return Err(unlocated());
        };
        // Head: `[NOT] IN (` → `= ANY(` / `<> ALL(`.
        let mut i = self.src.next_after(col_range.end).ok_or_else(unlocated)?;
        let head_start = self.src.tok(i).ok_or_else(unlocated)?.range.start;
        if negated {
            i += 1;
        }
        let in_kw = self.src.tok(i).ok_or_else(unlocated)?;
        let paren = self.src.tok(i + 1).ok_or_else(unlocated)?;
        if !matches!(&in_kw.token, Token::Word(w) if w.value.eq_ignore_ascii_case("in"))
            || paren.token != Token::LParen
        {
            return Err(unlocated());
        }
        let open = if negated { "<> ALL(" } else { "= ANY(" };
        self.edit(
            Some(head_start..paren.range.end),
            EditKind::Text(open.to_owned()),
            &name,
        )?;
        let mut prev_end: Option<usize> = None;
        for x in list {
            let (range, kind) = match classify(x, self.src) {
                Operand::Literal { value, range } => (
                    range,
                    EditKind::MatchList {
                        column: pc.clone(),
                        value,
                    },
                ),
                Operand::Param {
                    index, range, at, ..
                } => {
                    self.param(index, at, &pc, ParamUsage::MatchArray)?;
                    (
                        range,
                        EditKind::MatchParam {
                            index,
                            column: pc.clone(),
                        },
                    )
                }
                Operand::Null => {
                    let range = match x {
                        Expr::Value(v) => self.src.range(v.span),
                        _ => None,
                    };
                    (range, EditKind::Text("ARRAY[NULL]::bytea[]".to_owned()))
                }
                _ => {
                    return Err(Refusal::on_column(
                        &name,
                        "IN with a computed expression",
                        HINT_MATCH,
                    ))
                }
            };
            let range = range.ok_or_else(unlocated)?;
            if let Some(end) = prev_end {
                let comma = self
                    .src
                    .next_after(end)
                    .and_then(|c| self.src.tok(c).map(|t| (c, t)));
                match comma {
                    Some((c, t))
                        if t.token == Token::Comma
                            && self
                                .src
                                .tok(c + 1)
                                .is_some_and(|n| n.range.start == range.start) => {}
                    _ => return Err(unlocated()),
                }
                self.edit(
                    Some(end..range.start),
                    EditKind::Text(" || ".to_owned()),
                    &name,
                )?;
            }
            prev_end = Some(range.end);
            self.edit(Some(range), kind, &name)?;
        }
        let end = prev_end.ok_or_else(unlocated)?;
        match self.src.next_after(end).and_then(|c| self.src.tok(c)) {
            Some(t) if t.token == Token::RParen => Ok(()),
            _ => Err(unlocated()),
        }
    }

    /// `x [NOT] IN (SELECT ...)`.
    fn in_subquery(&mut self, expr: &Expr, q: &Query, sc: &Scope<'_>) -> Result<(), Refusal> {
        let out = self.query(q, Some(sc))?;
        let sub = match out.cols.as_deref() {
            Some([one]) => Some(one.kind.clone()),
            _ => None,
        };
        let pc = self.encrypted_ref(expr, sc)?;
        match (pc, sub) {
            (Some(pc), Some(ColKind::Protected(s))) if s.full_name == pc.full_name => {
                if pc.protection != Protection::Searchable {
                    return Err(randomized(&pc, "IN (SELECT ...)"));
                }
                Ok(())
            }
            (Some(pc), _) => Err(Refusal::on_column(
                &pc.full_name,
                "IN (SELECT ...) over a different column",
                "the subquery must select the same searchable column",
            )),
            (None, sub) => {
                if out.opaque
                    || sub
                        .as_ref()
                        .is_some_and(|k| k.encrypted().is_some() || *k == ColKind::Unknown)
                {
                    return Err(Refusal::unsupported(
                        "IN (SELECT ...) compares a plaintext value with an encrypted column; \
                         compare the encrypted column with a literal or $n parameter instead",
                    ));
                }
                self.expr(expr, sc, false)
            }
        }
    }
}

/// Equality-like operations need searchable mode.
pub(crate) fn randomized(pc: &ProtectedColumn, what: &str) -> Refusal {
    Refusal::unsupported(format!(
        "{what} on column {} is not supported: it is encrypted with randomized mode; \
         declare it encrypt = \"searchable\" to allow equality",
        pc.full_name
    ))
}
