//! Statements over a column being migrated online: `phone` of `guests`
//! has a hidden twin `__pgveil_legacy_phone` holding the values not
//! encrypted yet.

use super::*;

const LEGACY: &str = "__pgveil_legacy_phone";

fn migrating() -> TestSchema {
    let mut s = schema();
    let guests = &mut s.tables[0];
    guests.hidden.push(LEGACY.into());
    for c in &mut guests.columns {
        if let Some(pc) = c
            .protected
            .as_mut()
            .filter(|p| p.full_name.ends_with(".phone"))
        {
            pc.legacy = Some(LEGACY.into());
        }
    }
    s
}

fn plan_m(sql: &str) -> Result<Plan, Refusal> {
    analyze(sql, &migrating())
}

/// The rewritten text and the protected column of each result column.
fn rewrite_m(sql: &str) -> (String, Vec<Option<String>>) {
    match plan_m(sql) {
        Ok(Plan::Rewrite(r)) => (
            apply(sql, &r.edits, render).unwrap(),
            r.results
                .iter()
                .map(|c| c.as_ref().map(|c| short(c).to_owned()))
                .collect(),
        ),
        other => panic!("expected a rewrite of {sql:?}, got {other:?}"),
    }
}

fn refused_m(sql: &str, needle: &str) {
    match plan_m(sql) {
        Err(r) => {
            assert_eq!(r.sqlstate, "0A000", "{r:?}");
            assert!(r.message.contains(needle), "{sql:?}: {}", r.message);
        }
        Ok(p) => panic!("expected {sql:?} to be refused, got {p:?}"),
    }
}

const BOTH: &str =
    r#"COALESCE(phone, pgveil.legacy_text("public"."guests"."__pgveil_legacy_phone"))"#;

#[test]
fn a_selected_column_reads_both_forms_under_its_own_name() {
    let (sql, results) = rewrite_m("SELECT id, phone FROM guests WHERE id = 1");
    assert_eq!(
        sql,
        format!("SELECT id, {BOTH} AS phone FROM guests WHERE id = 1")
    );
    assert_eq!(results, vec![None, Some("phone".into())]);

    let (sql, results) = rewrite_m("SELECT g.phone AS p, g.name FROM guests g WHERE g.phone = $1");
    let both = r#"COALESCE(g.phone, pgveil.legacy_text(g."__pgveil_legacy_phone"))"#;
    assert_eq!(
        sql,
        format!("SELECT {both} AS p, g.name FROM guests g WHERE {both} = ANY(ARRAY[$1::bytea])")
            .replace("ANY(ARRAY[$1::bytea])", "ANY($1::bytea[])")
    );
    assert_eq!(results, vec![Some("phone".into()), Some("name".into())]);
}

#[test]
fn a_parenthesised_item_is_named_after_its_parentheses() {
    let (sql, results) = rewrite_m("SELECT ((phone)), id FROM guests");
    assert_eq!(sql, format!("SELECT (({BOTH})) AS phone, id FROM guests"));
    assert_eq!(results, vec![Some("phone".into()), None]);
}

#[test]
fn conditions_see_the_old_value_too() {
    let (sql, results) = rewrite_m("SELECT id FROM guests WHERE phone IS NULL");
    assert_eq!(sql, format!("SELECT id FROM guests WHERE {BOTH} IS NULL"));
    assert_eq!(results, Vec::<Option<String>>::new());
    let (sql, _) = rewrite_m("SELECT count(phone) FROM guests");
    assert_eq!(sql, format!("SELECT count({BOTH}) FROM guests"));
}

#[test]
fn star_lists_the_visible_columns() {
    let (sql, results) = rewrite_m("SELECT * FROM guests WHERE id = 2");
    let q = r#""public"."guests""#;
    assert_eq!(
        sql,
        format!(
            "SELECT {q}.\"id\", {q}.\"name\", COALESCE({q}.\"phone\", pgveil.legacy_text({q}.\"{LEGACY}\")) AS \"phone\", \
             {q}.\"id_number\", {q}.\"email\", {q}.\"birth_date\" FROM guests WHERE id = 2"
        )
    );
    assert_eq!(results.len(), 6);
    assert_eq!(results[2].as_deref(), Some("phone"));

    let (sql, results) =
        rewrite_m("SELECT s.room, g.* FROM guests g JOIN stays s ON s.guest_id = g.id");
    assert!(
        sql.starts_with(r#"SELECT s.room, "g"."id", "g"."name", COALESCE("g"."phone", "#),
        "{sql}"
    );
    assert_eq!(results.len(), 7);
    assert_eq!(results[3].as_deref(), Some("phone"));
    // Both relations of an unqualified *: the other keeps its own *.
    let (sql, _) = rewrite_m("SELECT * FROM stays s JOIN guests g ON s.guest_id = g.id");
    assert!(sql.starts_with(r#"SELECT "s".*, "g"."id", "#), "{sql}");
}

#[test]
fn a_subquery_combines_once() {
    let (sql, results) = rewrite_m("SELECT x.phone FROM (SELECT phone FROM guests) x");
    assert_eq!(
        sql,
        format!("SELECT x.phone FROM (SELECT {BOTH} AS phone FROM guests) x")
    );
    assert_eq!(results, vec![Some("phone".into())]);
}

#[test]
fn writes_name_the_new_column_and_returning_reads_both() {
    let (sql, _) = rewrite_m("INSERT INTO guests (id, phone) VALUES (1, '555')");
    assert_eq!(
        sql,
        "INSERT INTO guests (id, phone) VALUES (1, ENC(phone,555))"
    );
    let (sql, results) =
        rewrite_m("UPDATE guests SET phone = $1 WHERE id = $2 RETURNING id, phone");
    assert_eq!(
        sql,
        format!("UPDATE guests SET phone = $1 WHERE id = $2 RETURNING id, {BOTH} AS phone")
    );
    assert_eq!(results, vec![None, Some("phone".into())]);
}

#[test]
fn forms_the_split_would_change_are_refused() {
    refused_m(
        "SELECT __pgveil_legacy_phone FROM guests",
        "__pgveil_legacy_",
    );
    refused_m(
        r#"SELECT "__PGVEIL_LEGACY_phone" FROM guests"#,
        "__pgveil_legacy_",
    );
    refused_m(
        "INSERT INTO guests VALUES (1, 'a', '555')",
        "without a column list",
    );
    refused_m("COPY guests FROM STDIN", "without a column list");
    refused_m("DECLARE c CURSOR FOR SELECT phone FROM guests", "cursor");
    refused_m("PREPARE p AS SELECT phone FROM guests", "PREPARE");
    refused_m("SELECT phone FROM guests; SELECT 1", "several statements");
    refused_m(
        "SELECT * FROM guests JOIN unknown_t u ON u.id = guests.id",
        "does not know",
    );
    refused_m(
        "UPDATE guests SET name = $1 FROM unknown_t u WHERE u.id = guests.id RETURNING u.*, guests.phone",
        "does not know",
    );
    refused_m(
        "SELECT id FROM guests g WHERE EXISTS (SELECT 1 FROM stays s WHERE s.guest_id = g.id AND g.phone IS NULL)",
        "correlated subquery",
    );
    refused_m(
        "UPDATE guests SET phone = phone WHERE id = 1",
        "public.guests.phone",
    );
    refused_m(
        "SELECT g.id FROM guests g JOIN guests h USING (phone)",
        "JOIN USING",
    );
    refused_m(
        "CREATE VIEW v AS SELECT * FROM guests",
        "view over public.guests",
    );
    refused_m(
        "CREATE VIEW v AS SELECT id FROM guests",
        "view over public.guests",
    );
}

#[test]
fn copy_to_reads_both_forms_with_the_same_fields() {
    let q = r#""public"."guests""#;
    let both = format!(r#"COALESCE({q}."phone", pgveil.legacy_text({q}."{LEGACY}")) AS "phone""#);
    let copy = |sql: &str| match plan_m(sql) {
        Ok(Plan::CopyOut(c)) => c,
        other => panic!("{sql:?}: {other:?}"),
    };
    let c = copy("COPY guests (id, phone) TO STDOUT WITH (FORMAT csv)");
    assert_eq!(
        c.sql.as_deref(),
        Some(
            format!("COPY (SELECT {q}.\"id\", {both} FROM {q}) TO STDOUT WITH (FORMAT csv)")
                .as_str()
        )
    );
    assert_eq!(c.fields.len(), 2);
    assert_eq!(c.fields[1].as_ref().map(short), Some("phone"));
    let c = copy("COPY public.guests TO STDOUT");
    let sql = c.sql.unwrap();
    assert!(
        sql.starts_with(&format!("COPY (SELECT {q}.\"id\", {q}.\"name\", {both}, ")),
        "{sql}"
    );
    assert!(sql.ends_with(&format!(" FROM {q}) TO STDOUT")), "{sql}");
    assert_eq!(c.fields.len(), 6);
    // Columns not moving: the statement is sent as written.
    assert_eq!(copy("COPY guests (id, name) TO STDOUT").sql, None);
}

#[test]
fn other_tables_and_columns_are_unchanged() {
    let (sql, results) = rewrite_m("SELECT name FROM guests WHERE id = 1");
    assert_eq!(sql, "SELECT name FROM guests WHERE id = 1");
    assert_eq!(results, vec![Some("name".into())]);
    assert_eq!(plan_m("SELECT * FROM stays"), Ok(Plan::Passthrough));
    assert!(matches!(
        plan_m("COPY guests (id, name) TO STDOUT"),
        Ok(Plan::CopyOut(_))
    ));
    // Without the migration, * is left to the server.
    assert_eq!(text("SELECT * FROM guests"), "SELECT * FROM guests");
}
