//! Span edge cases and the fallbacks taken when a span is unknown.

use super::*;

// ---- spans and fallbacks ----

#[test]
fn casts_of_many_types_rewrite_exactly_or_refuse() {
    let types = [
        "text",
        "int",
        "int4",
        "varchar(20)",
        "character varying",
        "double precision",
        "numeric(10, 2)",
        "timestamp with time zone",
        "timestamp(3) without time zone",
        "\"text\"",
        "pg_catalog.text",
        "text[]",
        "bpchar",
        "bool",
        "uuid",
        "jsonb",
        "interval",
        "time with time zone",
    ];
    for ty in types {
        let sql = format!("INSERT INTO guests (name) VALUES ('x'::{ty}) RETURNING id");
        match plan(&sql) {
            Ok(Plan::Rewrite(r)) => {
                let out = apply(&sql, &r.edits, render).unwrap();
                assert_eq!(
                    out, "INSERT INTO guests (name) VALUES (ENC(name,x)) RETURNING id",
                    "type {ty}"
                );
            }
            Err(r) => assert!(r.message.contains("cannot locate"), "type {ty}: {r:?}"),
            Ok(p) => panic!("type {ty}: {p:?}"),
        }
    }
}

#[test]
fn empty_spans_are_refused_not_guessed() {
    use sqlparser::tokenizer::{Location, Span};
    let (_, src) = span::parse("select 1").unwrap();
    assert_eq!(src.range(Span::empty()), None);
    assert_eq!(
        src.range(Span::new(Location::new(1, 3), Location::new(1, 2))),
        None
    );
    assert_eq!(src.byte(Location::new(9, 1)), None);
    let ctx_edit = {
        let schema = schema();
        let mut ctx = analyze::Ctx::new(&src, &schema);
        ctx.edit(None, EditKind::Text(String::new()), "public.guests.phone")
    };
    let r = ctx_edit.unwrap_err();
    assert_eq!(r.sqlstate, "0A000");
    assert!(r.message.contains("public.guests.phone"));
}

#[test]
fn literal_spans_match_their_tokens_in_multibyte_multiline_text() {
    let sql = "UPDATE guests\n SET name = '王小明', -- 名字\n     phone = E'\\u4e2d\\x41'\n WHERE id_number = $$身份证$$";
    let t = text(sql);
    assert_eq!(
        t,
        "UPDATE guests\n SET name = ENC(name,王小明), -- 名字\n     phone = ENC(phone,中A)\n WHERE id_number = ANY(MATCH(id_number,身份证))"
    );
}

#[test]
fn comment_between_operator_and_literal_is_consumed() {
    let t = text("SELECT 1 FROM guests WHERE phone = /* the number */ '5'");
    assert_eq!(t, "SELECT 1 FROM guests WHERE phone = ANY(MATCH(phone,5))");
}

#[test]
fn correlated_and_lateral_subqueries_resolve_outer_columns() {
    let t = text("SELECT s.id FROM stays s WHERE EXISTS (SELECT 1 FROM guests g WHERE g.id = s.guest_id AND g.phone = '1')");
    assert_eq!(t, "SELECT s.id FROM stays s WHERE EXISTS (SELECT 1 FROM guests g WHERE g.id = s.guest_id AND g.phone = ANY(MATCH(phone,1)))");
    refused(
        "SELECT 1 FROM guests g, LATERAL (SELECT g.phone || 'x' AS p) x",
        "public.guests.phone",
        "",
    );
}

#[test]
fn union_of_different_columns_cannot_be_compared() {
    refused("SELECT * FROM (SELECT phone FROM guests UNION SELECT id_number FROM guests) u WHERE u.phone = '1'", "phone", "");
    // The same column on both sides stays that column: its literal is encrypted.
    let (text, _, _) = rewrite(
        "SELECT * FROM (SELECT phone FROM guests UNION ALL SELECT phone FROM guests) u WHERE u.phone = '1'",
    );
    assert!(!text.contains("'1'"), "{text}");
}

#[test]
fn in_subquery_same_column_allowed_other_refused() {
    rewrite("SELECT id FROM guests WHERE phone IN (SELECT phone FROM guests WHERE id = 2)");
    refused(
        "SELECT id FROM guests WHERE phone IN (SELECT id_number FROM guests)",
        "public.guests.phone",
        "",
    );
    refused(
        "SELECT id FROM stays WHERE phone IN (SELECT phone FROM guests)",
        "IN (SELECT",
        "",
    );
}

#[test]
fn recursive_cte_over_protected_data_fails_closed() {
    refused(
        "WITH RECURSIVE r AS (SELECT id, phone FROM guests UNION ALL SELECT r.id + 1, r.phone FROM r WHERE r.id < 3) SELECT * FROM r WHERE r.phone = '1'",
        "r.",
        "",
    );
}

#[test]
fn unknown_qualifier_is_refused() {
    refused(
        "SELECT 1 FROM guests g WHERE guests.phone = '13800001111'",
        "guests.phone",
        "13800001111",
    );
}

#[test]
fn window_and_filter_clauses_are_checked() {
    refused(
        "SELECT row_number() OVER (ORDER BY phone) FROM guests",
        "public.guests.phone",
        "",
    );
    refused(
        "SELECT count(*) FILTER (WHERE name LIKE 'a%') FROM guests",
        "public.guests.name",
        "",
    );
    rewrite("SELECT count(phone) OVER (PARTITION BY id) FROM guests");
}

#[test]
fn limit_param_stays_plain() {
    let (t, params, _) = rewrite("SELECT id FROM guests WHERE phone = $1 LIMIT $2");
    assert_eq!(
        t,
        "SELECT id FROM guests WHERE phone = ANY($1::bytea[]) LIMIT $2"
    );
    assert_eq!(params.len(), 1);
    refused("SELECT id FROM guests WHERE phone = $1 LIMIT $1", "$1", "");
}

#[test]
fn is_distinct_from_and_any_are_refused() {
    refused(
        "SELECT 1 FROM guests WHERE phone IS DISTINCT FROM '1'",
        "public.guests.phone",
        "",
    );
    refused(
        "SELECT 1 FROM guests WHERE phone = ANY($1)",
        "public.guests.phone",
        "",
    );
}

#[test]
fn equality_with_null_needs_no_edit() {
    let (t, _, touched) = rewrite("SELECT 1 FROM guests WHERE name = NULL");
    assert_eq!(t, "SELECT 1 FROM guests WHERE name = NULL");
    assert_eq!(touched, vec!["public.guests.name"]);
}

#[test]
fn declare_cursor_and_table_statement() {
    let t = text("DECLARE c CURSOR FOR SELECT id FROM guests WHERE phone = '1'");
    assert_eq!(
        t,
        "DECLARE c CURSOR FOR SELECT id FROM guests WHERE phone = ANY(MATCH(phone,1))"
    );
    // sqlparser does not parse `TABLE t` for PostgreSQL: refused, not passed.
    refused("TABLE guests", "public.guests", "");
}

#[test]
fn unparsable_unicode_identifier_is_refused_without_echoing_text() {
    let r = plan("SELECT * FROM U&\"\\0067uests\" WHERE (((").unwrap_err();
    assert_eq!(r.sqlstate, "0A000");
    assert!(r.message.contains("a protected table"), "{}", r.message);
}
