//! Queries: WITH, set operations, SELECT, FROM and joins, and the clauses
//! that would sort or group ciphertext.
//!
//! Each query returns its [`Output`] so an enclosing query can tell which
//! of a subquery's or CTE's columns are still encrypted columns (a
//! predicate on them is rewritten like one on the base column) and which
//! it cannot trace (then using them fails closed).

use sqlparser::ast::{
    Distinct, Expr, GroupByExpr, JoinConstraint, JoinOperator, OrderBy, OrderByKind, Query, Select,
    SelectItem, SelectItemQualifiedWildcardKind, SetExpr, SetQuantifier, TableFactor,
    TableWithJoins, Value,
};

use super::analyze::Ctx;
use super::error::Refusal;
use super::expr::randomized;
use super::operand::column_ref;
use super::read::{output_leak, query_key, Leak};
use super::scope::{name_parts, norm, Col, ColKind, Output, Relation, Scope};
use crate::policy::Protection;

/// A projection item's output column (for ORDER BY / GROUP BY by name or
/// position, DISTINCT, and the query's output).
struct Item {
    col: Col,
}

impl Ctx<'_> {
    /// Analyses a query in the scope `outer` (for correlated references).
    pub fn query(&mut self, q: &Query, outer: Option<&Scope<'_>>) -> Result<Output, Refusal> {
        // Scopes only live as long as this call; re-borrow to a common lifetime.
        let mut sc = Scope::child(outer);
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                let name = norm(&cte.alias.name);
                if with.recursive {
                    sc.ctes.push(Relation::unknown(name.clone(), true));
                }
                let out = self.query(&cte.query, Some(&sc))?;
                let rel = Relation::derived(name.clone(), out).aliased(Some(&cte.alias));
                sc.ctes.retain(|r| r.name != name);
                sc.ctes.push(rel);
            }
        }
        let out = self.set_expr(&q.body, &sc, q.order_by.as_ref())?;
        if let Some(limit) = &q.limit_clause {
            self.children(limit, false, &sc)?;
        }
        if let Some(fetch) = &q.fetch {
            self.children(fetch, false, &sc)?;
        }
        self.outputs.insert(query_key(q), output_leak(&out));
        Ok(out)
    }

    fn set_expr(
        &mut self,
        body: &SetExpr,
        sc: &Scope<'_>,
        order_by: Option<&OrderBy>,
    ) -> Result<Output, Refusal> {
        let out = match body {
            SetExpr::Select(s) => return self.select(s, sc, order_by),
            SetExpr::Query(q) => self.query(q, Some(sc))?,
            SetExpr::SetOperation {
                left,
                right,
                op,
                set_quantifier,
            } => {
                let l = self.set_expr(left, sc, None)?;
                let r = self.set_expr(right, sc, None)?;
                let named = |o: &Output| {
                    o.cols.iter().flatten().find_map(|c| match &c.kind {
                        ColKind::Protected(pc) => Some(pc.full_name.clone()),
                        _ => None,
                    })
                };
                let involved = named(&l).or_else(|| named(&r));
                let merged = merge(l, r);
                // Each result column must be the same protected column on
                // both sides (or plain on both): pgveil then knows what it
                // is although PostgreSQL reports no origin for it.
                if let Some(Leak::Subquery(None)) = output_leak(&merged) {
                    let what = match &involved {
                        Some(c) => format!("protected column {c}"),
                        None => "a column pgveil cannot trace next to protected columns".to_owned(),
                    };
                    return Err(Refusal::unsupported(format!(
                        "{op} over {what} next to a different column or a computed value is not \
                         supported: PostgreSQL does not say which table a set operation's result \
                         column comes from, so each must be the same protected column on both sides \
                         for pgveil to decrypt or mask it; run the queries separately"
                    )));
                }
                // Without ALL the server compares rows; randomized
                // envelopes of equal values differ.
                if !matches!(set_quantifier, SetQuantifier::All) {
                    if let Some(pc) = merged.cols.iter().flatten().find_map(|c| match &c.kind {
                        ColKind::Protected(pc) if pc.protection == Protection::Randomized => {
                            Some(pc)
                        }
                        _ => None,
                    }) {
                        return Err(Refusal::on_column(
                            &pc.full_name,
                            &format!("{op} without ALL"),
                            "its values are encrypted with random nonces, so the server cannot tell \
                             equal values apart; use UNION ALL and remove duplicates in the application",
                        ));
                    }
                }
                merged
            }
            SetExpr::Values(values) => {
                let mut width = 0;
                for row in &values.rows {
                    width = width.max(row.content.len());
                    for x in &row.content {
                        self.expr(x, sc, false)?;
                        // VALUES rows are result columns too.
                        if let Some(leak) = self.leak(x, sc)? {
                            return Err(leak.result());
                        }
                    }
                }
                let cols = (1..=width)
                    .map(|i| Col {
                        name: format!("column{i}"),
                        kind: ColKind::Plain,
                    })
                    .collect();
                Output {
                    cols: Some(cols),
                    opaque: false,
                }
            }
            SetExpr::Insert(st) | SetExpr::Update(st) | SetExpr::Delete(st) => {
                self.dml_output(st, sc)?
            }
            SetExpr::Table(t) => {
                let name = t.table_name.as_ref().map(norm).unwrap_or_default();
                let parts: Vec<String> = match &t.schema_name {
                    Some(s) => vec![norm(s), name],
                    None => vec![name],
                };
                let rel = match parts.as_slice() {
                    [t] => sc
                        .cte(t)
                        .cloned()
                        .or_else(|| self.schema.table(None, t).map(Relation::table)),
                    [s, t] => self.schema.table(Some(s), t).map(Relation::table),
                    _ => None,
                };
                let rel = rel.unwrap_or_else(|| Relation::unknown(String::new(), false));
                for c in rel.cols.iter().flatten() {
                    if let ColKind::Protected(pc) = &c.kind {
                        self.touch(pc);
                    }
                }
                Output {
                    cols: rel.cols,
                    opaque: rel.opaque,
                }
            }
            SetExpr::Merge(st) => {
                self.statement(st)?;
                Output::default()
            }
        };
        if let Some(ob) = order_by {
            self.order_by_output(ob, &out)?;
        }
        Ok(out)
    }

    /// Output of a data-modifying statement used as a query (CTE).
    fn dml_output(
        &mut self,
        st: &sqlparser::ast::Statement,
        sc: &Scope<'_>,
    ) -> Result<Output, Refusal> {
        use sqlparser::ast::Statement;
        match st {
            Statement::Insert(i) => self.insert(i, Some(sc)),
            Statement::Update(u) => self.update(u, Some(sc)),
            Statement::Delete(d) => self.delete(d, Some(sc)),
            other => {
                self.statement(other)?;
                Ok(Output::default())
            }
        }
    }

    /// ORDER BY over the output of a set operation: by name or position.
    fn order_by_output(&mut self, ob: &OrderBy, out: &Output) -> Result<(), Refusal> {
        let OrderByKind::Expressions(list) = &ob.kind else {
            return Ok(());
        };
        for o in list {
            let col = match &o.expr {
                Expr::Identifier(i) => out.cols.iter().flatten().find(|c| c.name == norm(i)),
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => n
                        .parse::<usize>()
                        .ok()
                        .and_then(|k| out.cols.as_ref()?.get(k.checked_sub(1)?)),
                    _ => None,
                },
                _ => None,
            };
            if let Some(pc) = col.and_then(|c| c.kind.encrypted()) {
                return Err(Refusal::on_column(&pc.full_name, "ORDER BY", ORDER_HINT));
            }
        }
        Ok(())
    }

    fn select(
        &mut self,
        s: &Select,
        outer: &Scope<'_>,
        order_by: Option<&OrderBy>,
    ) -> Result<Output, Refusal> {
        let mut sc = Scope::child(Some(outer));
        for twj in &s.from {
            self.add_from(twj, &mut sc)?;
        }
        // Clauses pgveil has no special rule for are checked generically.
        self.children(&s.lateral_views, false, &sc)?;
        self.children(&s.prewhere, false, &sc)?;
        self.children(&s.connect_by, false, &sc)?;
        self.children(&s.cluster_by, false, &sc)?;
        self.children(&s.distribute_by, false, &sc)?;
        self.children(&s.sort_by, false, &sc)?;
        self.children(&s.named_window, false, &sc)?;
        self.children(&s.qualify, false, &sc)?;
        self.children(&s.top, false, &sc)?;

        let items = self.projection(&s.projection, &sc)?;
        if let Some(w) = &s.selection {
            self.expr(w, &sc, false)?;
        }
        match &s.group_by {
            GroupByExpr::Expressions(list, _) => {
                for e in list {
                    self.group_key(e, &sc, &items, "GROUP BY")?;
                }
            }
            GroupByExpr::All(_) => self.distinct_items(&items, "GROUP BY ALL")?,
        }
        if let Some(h) = &s.having {
            self.expr(h, &sc, false)?;
        }
        match &s.distinct {
            Some(Distinct::Distinct) => self.distinct_items(&items, "DISTINCT")?,
            Some(Distinct::On(list)) => {
                for e in list {
                    self.group_key(e, &sc, &items, "DISTINCT ON")?;
                }
            }
            _ => {}
        }
        if let Some(ob) = order_by {
            match &ob.kind {
                OrderByKind::Expressions(list) => {
                    for o in list {
                        self.order_key(&o.expr, &sc, &items)?;
                        self.children(&o.with_fill, false, &sc)?;
                    }
                }
                OrderByKind::All(_) => {
                    if let Some(pc) = items.iter().find_map(|i| i.col.kind.encrypted()) {
                        return Err(Refusal::on_column(&pc.full_name, "ORDER BY", ORDER_HINT));
                    }
                }
            }
        }
        let opaque = items.iter().any(|i| i.col.kind == ColKind::Unknown);
        let cols = if items.iter().any(|i| i.col.name == "*") {
            None
        } else {
            Some(items.into_iter().map(|i| i.col).collect())
        };
        let out = Output {
            opaque: opaque || (cols.is_none() && sc_has_protected(&sc)),
            cols,
        };
        if s.into.is_some() {
            if let Some(leak) = output_leak(&out) {
                return Err(leak.copy("SELECT ... INTO"));
            }
        }
        Ok(out)
    }

    /// Checks select-list (or RETURNING) items and lists their output.
    fn projection(&mut self, list: &[SelectItem], sc: &Scope<'_>) -> Result<Vec<Item>, Refusal> {
        let mut items = Vec::new();
        for item in list {
            match item {
                SelectItem::UnnamedExpr(e)
                | SelectItem::ExprWithAlias { expr: e, .. }
                | SelectItem::ExprWithAliases { expr: e, .. } => {
                    self.expr(e, sc, true)?;
                    self.result_item(e, sc)?;
                    if let Some(idents) = column_ref(e) {
                        let aliased = !matches!(item, SelectItem::UnnamedExpr(_));
                        let mut parens = 0;
                        let mut inner = e;
                        while let Expr::Nested(x) = inner {
                            parens += 1;
                            inner = x;
                        }
                        self.legacy_item(idents, aliased, parens)?;
                    }
                    let kind = match column_ref(e) {
                        Some(idents) => sc
                            .resolve(idents)?
                            .map_or(ColKind::Plain, ColKind::Protected),
                        None => ColKind::Plain,
                    };
                    let name = match item {
                        SelectItem::ExprWithAlias { alias, .. } => norm(alias),
                        SelectItem::ExprWithAliases { aliases, .. } => {
                            aliases.first().map(norm).unwrap_or_default()
                        }
                        _ => match column_ref(e) {
                            Some(idents) => idents.last().map(norm).unwrap_or_default(),
                            None => String::from("?column?"),
                        },
                    };
                    items.push(Item {
                        col: Col { name, kind },
                    });
                }
                SelectItem::Wildcard(_) => {
                    let rels: Vec<Relation> = sc.rels.clone();
                    self.legacy_wildcard(item, &rels)?;
                    for rel in &rels {
                        self.expand(rel, &mut items);
                    }
                }
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(name),
                    _,
                ) => {
                    let rel = name_parts(name).and_then(|p| sc.relation(&p).cloned());
                    match rel {
                        Some(rel) => {
                            self.legacy_wildcard(item, std::slice::from_ref(&rel))?;
                            self.expand(&rel, &mut items)
                        }
                        None => items.push(Item {
                            col: Col {
                                name: "*".into(),
                                kind: ColKind::Plain,
                            },
                        }),
                    }
                }
                SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::Expr(e), _) => {
                    self.expr(e, sc, false)?;
                    if let Some(leak) = self.leak(e, sc)? {
                        return Err(leak.result());
                    }
                    items.push(Item {
                        col: Col {
                            name: "*".into(),
                            kind: ColKind::Unknown,
                        },
                    });
                }
            }
        }
        Ok(items)
    }

    /// `*` over one relation.
    fn expand(&mut self, rel: &Relation, items: &mut Vec<Item>) {
        match &rel.cols {
            Some(cols) => {
                for c in cols {
                    if let ColKind::Protected(pc) = &c.kind {
                        self.touch(pc);
                    }
                    items.push(Item { col: c.clone() });
                }
            }
            None => {
                let kind = if rel.opaque {
                    ColKind::Unknown
                } else {
                    ColKind::Plain
                };
                items.push(Item {
                    col: Col {
                        name: "*".into(),
                        kind,
                    },
                });
            }
        }
    }

    /// The kind of the projection item a key names by position (`2`) or
    /// output name; `None` when it names neither.
    fn item_kind(e: &Expr, items: &[Item]) -> Option<ColKind> {
        match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => {
                    let k = n.parse::<usize>().ok()?;
                    items.get(k.checked_sub(1)?).map(|i| i.col.kind.clone())
                }
                _ => None,
            },
            Expr::Identifier(i) => {
                let name = norm(i);
                items
                    .iter()
                    .find(|it| it.col.name == name)
                    .map(|it| it.col.kind.clone())
            }
            _ => None,
        }
    }

    /// The kinds a GROUP BY / ORDER BY key may stand for: the output item
    /// it names and the input column it names (PostgreSQL prefers one or
    /// the other depending on the clause; both are checked).
    fn key_kinds(
        &mut self,
        e: &Expr,
        sc: &Scope<'_>,
        items: &[Item],
    ) -> Result<Option<Vec<ColKind>>, Refusal> {
        let mut kinds: Vec<ColKind> = Self::item_kind(e, items).into_iter().collect();
        match column_ref(e) {
            Some(idents) => kinds.push(
                self.column(idents, sc)?
                    .map_or(ColKind::Plain, ColKind::Protected),
            ),
            None if kinds.is_empty() => return Ok(None),
            None => {}
        }
        Ok(Some(kinds))
    }

    fn group_key(
        &mut self,
        e: &Expr,
        sc: &Scope<'_>,
        items: &[Item],
        what: &str,
    ) -> Result<(), Refusal> {
        match self.key_kinds(e, sc, items)? {
            Some(kinds) => kinds.iter().try_for_each(|k| grouping(k, what)),
            None => self.expr(e, sc, false),
        }
    }

    fn distinct_items(&mut self, items: &[Item], what: &str) -> Result<(), Refusal> {
        items.iter().try_for_each(|i| grouping(&i.col.kind, what))
    }

    fn order_key(&mut self, e: &Expr, sc: &Scope<'_>, items: &[Item]) -> Result<(), Refusal> {
        let Some(kinds) = self.key_kinds(e, sc, items)? else {
            return self.expr(e, sc, false);
        };
        for k in kinds {
            if k == ColKind::Unknown {
                return Err(Refusal::unsupported(
                    "ORDER BY a column pgveil cannot trace while encrypted columns are in scope; order by a plaintext column",
                ));
            }
            if let Some(pc) = k.encrypted() {
                return Err(Refusal::on_column(&pc.full_name, "ORDER BY", ORDER_HINT));
            }
        }
        Ok(())
    }

    /// Adds the relations of one FROM item (with its joins) to `sc`.
    pub fn add_from(&mut self, twj: &TableWithJoins, sc: &mut Scope<'_>) -> Result<(), Refusal> {
        self.relation(&twj.relation, sc)?;
        for join in &twj.joins {
            let before = sc.rels.len();
            self.relation(&join.relation, sc)?;
            let constraint = match &join.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c)
                | JoinOperator::CrossJoin(c)
                | JoinOperator::Semi(c)
                | JoinOperator::LeftSemi(c)
                | JoinOperator::RightSemi(c)
                | JoinOperator::Anti(c)
                | JoinOperator::LeftAnti(c)
                | JoinOperator::RightAnti(c)
                | JoinOperator::StraightJoin(c) => Some(c),
                JoinOperator::AsOf {
                    match_condition,
                    constraint,
                } => {
                    self.expr(match_condition, sc, false)?;
                    Some(constraint)
                }
                _ => None,
            };
            match constraint {
                Some(JoinConstraint::On(e)) => self.expr(e, sc, false)?,
                Some(JoinConstraint::Using(names)) | Some(JoinConstraint::UsingAlias(names, _)) => {
                    for n in names {
                        if let Some(parts) = name_parts(n) {
                            if let Some(c) = parts.last() {
                                self.join_column(c, sc, before)?;
                            }
                        }
                    }
                }
                Some(JoinConstraint::Natural) => {
                    let names: Vec<String> = sc.rels[before..]
                        .iter()
                        .flat_map(|r| r.cols.iter().flatten().map(|c| c.name.clone()))
                        .collect();
                    let unknown = sc.rels.iter().any(|r| r.cols.is_none());
                    if unknown && sc.rels.iter().any(Relation::has_encrypted) {
                        return Err(Refusal::unsupported(
                            "NATURAL JOIN with a table whose columns pgveil cannot list, next to encrypted columns; \
                             join with ON and name the columns",
                        ));
                    }
                    for c in names {
                        self.join_column(&c, sc, before)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `USING (c)` / NATURAL: both sides' `c` must be the same searchable
    /// column when either is encrypted.
    fn join_column(&mut self, c: &str, sc: &Scope<'_>, split: usize) -> Result<(), Refusal> {
        let find = |rels: &[Relation]| -> Option<ColKind> {
            rels.iter().find_map(|r| {
                r.cols
                    .as_ref()?
                    .iter()
                    .find(|col| col.name == c)
                    .map(|col| col.kind.clone())
            })
        };
        let (left, right) = sc.rels.split_at(split.min(sc.rels.len()));
        let (l, r) = (find(left), find(right));
        let Some((l, r)) = l.zip(r) else {
            return Ok(());
        };
        if let Some(pc) = [l.encrypted(), r.encrypted()]
            .into_iter()
            .flatten()
            .find(|pc| pc.legacy.is_some())
        {
            return Err(Refusal::on_column(
                &pc.full_name,
                "JOIN USING or NATURAL JOIN",
                "while it is being migrated online, join with ON",
            ));
        }
        match (l.encrypted(), r.encrypted()) {
            (None, None) => Ok(()),
            (Some(a), Some(b)) if a.full_name == b.full_name => {
                if a.protection != Protection::Searchable {
                    return Err(randomized(a, "join"));
                }
                self.touch(&a.clone());
                Ok(())
            }
            (Some(a), _) | (None, Some(a)) => Err(Refusal::on_column(
                &a.full_name,
                "join with a different column",
                "each column has its own key; join only on the same searchable column",
            )),
        }
    }

    /// Adds one FROM relation to `sc`.
    fn relation(&mut self, tf: &TableFactor, sc: &mut Scope<'_>) -> Result<(), Refusal> {
        let rel = match tf {
            TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } => sc.lookup_table(self.schema, name).aliased(alias.as_ref()),
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                ..
            } => {
                let out = if *lateral {
                    self.query(subquery, Some(sc))?
                } else {
                    self.query(subquery, sc.parent)?
                };
                Relation::derived(String::new(), out).aliased(alias.as_ref())
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => return self.add_from(table_with_joins, sc),
            TableFactor::Table { name, alias, .. } => {
                self.children(tf, false, sc)?;
                self.no_leak_in(tf, sc)?;
                let name = name_parts(name)
                    .and_then(|p| p.last().cloned())
                    .unwrap_or_default();
                Relation::unknown(name, false).aliased(alias.as_ref())
            }
            TableFactor::Function { alias, .. }
            | TableFactor::UNNEST { alias, .. }
            | TableFactor::TableFunction { alias, .. } => {
                self.children(tf, false, sc)?;
                self.no_leak_in(tf, sc)?;
                Relation::unknown(String::new(), false).aliased(alias.as_ref())
            }
            _ => {
                if let Some(t) = self.mentions_protected(tf) {
                    return Err(Refusal::unsupported(format!(
                        "this kind of FROM item over protected table {t} is not supported; use a plain table reference"
                    )));
                }
                self.children(tf, false, sc)?;
                Relation::unknown(String::new(), true)
            }
        };
        sc.rels.push(rel);
        Ok(())
    }

    /// Checks RETURNING items in the target's scope and lists their output.
    pub fn returning(
        &mut self,
        items: Option<&Vec<SelectItem>>,
        sc: &Scope<'_>,
    ) -> Result<Output, Refusal> {
        let Some(items) = items else {
            return Ok(Output {
                cols: Some(Vec::new()),
                opaque: false,
            });
        };
        let items = self.projection(items, sc)?;
        Ok(Output {
            cols: Some(items.into_iter().map(|i| i.col).collect()),
            opaque: false,
        })
    }
}

const ORDER_HINT: &str =
    "ciphertext has no order; sort in the application or by a plaintext column";

fn grouping(kind: &ColKind, what: &str) -> Result<(), Refusal> {
    match kind {
        ColKind::Unknown => Err(Refusal::unsupported(format!(
            "{what} over a column pgveil cannot trace while encrypted columns are in scope; name the column directly"
        ))),
        k => match k.encrypted() {
            Some(pc) if pc.protection != Protection::Searchable => Err(randomized(pc, what)),
            _ => Ok(()),
        },
    }
}

fn sc_has_protected(sc: &Scope<'_>) -> bool {
    sc.rels.iter().any(Relation::has_protected)
}

/// Output of `a UNION b`: a column stays protected only when both sides
/// agree on it.
fn merge(l: Output, r: Output) -> Output {
    let opaque = l.opaque || r.opaque;
    match (l.cols, r.cols) {
        (Some(a), Some(b)) => {
            let cols = a
                .into_iter()
                .zip(b)
                .map(|(x, y)| {
                    let kind = if x.kind == y.kind {
                        x.kind
                    } else if x.kind != ColKind::Plain || y.kind != ColKind::Plain {
                        // A protected column (even one stored in plaintext,
                        // which has a mask) next to anything else.
                        ColKind::Unknown
                    } else {
                        ColKind::Plain
                    };
                    Col { name: x.name, kind }
                })
                .collect();
            Output {
                cols: Some(cols),
                opaque,
            }
        }
        (a, b) => {
            let enc = |c: &Option<Vec<Col>>| c.iter().flatten().any(|c| c.kind != ColKind::Plain);
            Output {
                opaque: opaque || enc(&a) || enc(&b),
                cols: None,
            }
        }
    }
}
