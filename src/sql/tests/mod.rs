//! Tests of the whole analysis against a fixed schema.

use super::*;
use crate::crypto::LogicalType;
use crate::policy::Protection;

mod copy;
mod online;
mod read;
mod select;
mod spans;
mod write;

struct TestSchema {
    tables: Vec<TableInfo>,
}

fn pc(col: &str, ty: LogicalType, protection: Protection) -> ProtectedColumn {
    ProtectedColumn {
        full_name: format!("public.guests.{col}"),
        logical_type: ty,
        protection,
        level: 3,
        legacy: None,
    }
}

fn schema() -> TestSchema {
    let col = |name: &str, p: Option<ProtectedColumn>| ColumnInfo {
        name: name.into(),
        protected: p,
    };
    let guests = TableInfo {
        schema: "public".into(),
        name: "guests".into(),
        columns: vec![
            col("id", None),
            col(
                "name",
                Some(pc("name", LogicalType::Text, Protection::Randomized)),
            ),
            col(
                "phone",
                Some(pc("phone", LogicalType::Text, Protection::Searchable)),
            ),
            col(
                "id_number",
                Some(pc("id_number", LogicalType::Text, Protection::Searchable)),
            ),
            col(
                "email",
                Some(pc("email", LogicalType::Text, Protection::None)),
            ),
            col(
                "birth_date",
                Some(pc("birth_date", LogicalType::Date, Protection::Randomized)),
            ),
        ],
        hidden: Vec::new(),
    };
    let stays = TableInfo {
        schema: "public".into(),
        name: "stays".into(),
        columns: vec![
            col("id", None),
            col("guest_id", None),
            col("room", None),
            col("phone", None),
        ],
        hidden: Vec::new(),
    };
    TestSchema {
        tables: vec![guests, stays],
    }
}

impl Schema for TestSchema {
    fn table(&self, schema: Option<&str>, name: &str) -> Option<&TableInfo> {
        let schema = schema.unwrap_or("public");
        self.tables
            .iter()
            .find(|t| t.schema == schema && t.name == name)
    }
    fn protected_names(&self) -> Vec<String> {
        self.tables
            .iter()
            .filter(|t| t.is_protected())
            .map(|t| t.name.clone())
            .collect()
    }
}

fn plan(sql: &str) -> Result<Plan, Refusal> {
    analyze(sql, &schema())
}

fn short(c: &ProtectedColumn) -> &str {
    c.full_name.rsplit('.').next().unwrap_or("")
}

fn render(kind: &EditKind) -> Result<String, ()> {
    Ok(match kind {
        EditKind::Text(t) => t.clone(),
        EditKind::Encrypt { column, value } => format!("ENC({},{})", short(column), value),
        EditKind::MatchList { column, value } => format!("MATCH({},{})", short(column), value),
        // The array form, as rendered for a column with several live versions.
        EditKind::MatchParam { index, .. } => format!("${index}::bytea[]"),
    })
}

/// The rewritten SQL, the parameters as (index, column, usage), and touched.
fn rewrite(sql: &str) -> (String, Vec<(usize, String, ParamUsage)>, Vec<String>) {
    match plan(sql) {
        Ok(Plan::Rewrite(r)) => {
            let text = apply(sql, &r.edits, render).unwrap();
            let params = r
                .params
                .iter()
                .map(|p| (p.index, short(&p.column).to_owned(), p.usage))
                .collect();
            (text, params, r.touched)
        }
        other => panic!("expected a rewrite of {sql:?}, got {other:?}"),
    }
}

fn text(sql: &str) -> String {
    rewrite(sql).0
}

/// Asserts a 0A000 refusal naming `column` and not containing `secret`.
fn refused(sql: &str, column: &str, secret: &str) -> String {
    match plan(sql) {
        Err(r) => {
            assert_eq!(r.sqlstate, "0A000", "{r:?}");
            assert!(r.message.starts_with("pgveil: "), "{r:?}");
            assert!(
                r.message.contains(column),
                "message should name {column}: {}",
                r.message
            );
            if !secret.is_empty() {
                assert!(
                    !r.message.contains(secret),
                    "message leaks a literal: {}",
                    r.message
                );
            }
            r.message
        }
        Ok(p) => panic!("expected {sql:?} to be refused, got {p:?}"),
    }
}

fn passthrough(sql: &str) {
    assert_eq!(plan(sql), Ok(Plan::Passthrough), "{sql}");
}
