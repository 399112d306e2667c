//! SELECT predicates and the statements refused for them.

use super::*;

// ---- SELECT predicates ----

#[test]
fn select_equality_literal_and_param() {
    let (t, params, touched) =
        rewrite("SELECT id, name FROM guests WHERE phone = '13800001111' OR phone = $1");
    assert_eq!(t, "SELECT id, name FROM guests WHERE phone = ANY(MATCH(phone,13800001111)) OR phone = ANY($1::bytea[])");
    assert_eq!(params, vec![(1, "phone".into(), ParamUsage::MatchArray)]);
    assert_eq!(touched, vec!["public.guests.name", "public.guests.phone"]);
}

#[test]
fn select_not_equal_variants() {
    assert_eq!(
        text("SELECT 1 FROM guests WHERE phone != $1"),
        "SELECT 1 FROM guests WHERE phone <> ALL($1::bytea[])"
    );
    assert_eq!(
        text("SELECT 1 FROM guests WHERE phone<>'x'"),
        "SELECT 1 FROM guests WHERE phone<> ALL(MATCH(phone,x))"
    );
}

#[test]
fn select_literal_on_the_left() {
    assert_eq!(
        text("SELECT 1 FROM guests g WHERE '5' = g.phone"),
        "SELECT 1 FROM guests g WHERE g.phone = ANY(MATCH(phone,5))"
    );
    assert_eq!(
        text("SELECT 1 FROM guests WHERE $2 <> phone"),
        "SELECT 1 FROM guests WHERE phone <> ALL($2::bytea[])"
    );
}

#[test]
fn select_equality_with_cast_literal_and_param() {
    assert_eq!(
        text("SELECT 1 FROM guests WHERE phone = '5'::text"),
        "SELECT 1 FROM guests WHERE phone = ANY(MATCH(phone,5))"
    );
    assert_eq!(
        text("SELECT 1 FROM guests WHERE phone = $1::text"),
        "SELECT 1 FROM guests WHERE phone = ANY($1::bytea[])"
    );
    assert_eq!(
        text("SELECT 1 FROM guests WHERE (phone) = ('5')"),
        "SELECT 1 FROM guests WHERE (phone) = ANY(MATCH(phone,5))"
    );
}

#[test]
fn select_in_list_mixed() {
    let (t, params, _) = rewrite("SELECT * FROM guests WHERE phone IN ('a', $2, 'b')");
    assert_eq!(
        t,
        "SELECT * FROM guests WHERE phone = ANY(MATCH(phone,a) || $2::bytea[] || MATCH(phone,b))"
    );
    assert_eq!(params, vec![(2, "phone".into(), ParamUsage::MatchArray)]);
    assert_eq!(
        text("SELECT 1 FROM guests WHERE phone NOT IN ('a' , NULL)"),
        "SELECT 1 FROM guests WHERE phone <> ALL(MATCH(phone,a) || ARRAY[NULL]::bytea[])"
    );
}

#[test]
fn select_is_null_allowed() {
    let (t, _, touched) =
        rewrite("SELECT id FROM guests WHERE name IS NULL AND birth_date IS NOT NULL");
    assert_eq!(
        t,
        "SELECT id FROM guests WHERE name IS NULL AND birth_date IS NOT NULL"
    );
    assert_eq!(
        touched,
        vec!["public.guests.name", "public.guests.birth_date"]
    );
}

#[test]
fn select_unicode_before_predicate() {
    let sql = "SELECT '宾客' AS 标签, id FROM guests WHERE phone = '电话号码'";
    assert_eq!(
        text(sql),
        "SELECT '宾客' AS 标签, id FROM guests WHERE phone = ANY(MATCH(phone,电话号码))"
    );
}

#[test]
fn select_join_on_and_subqueries() {
    let t = text("SELECT s.room FROM stays s JOIN guests g ON g.id = s.guest_id AND g.phone = '1' WHERE s.id IN (SELECT id FROM guests WHERE id_number = 'x')");
    assert_eq!(t, "SELECT s.room FROM stays s JOIN guests g ON g.id = s.guest_id AND g.phone = ANY(MATCH(phone,1)) WHERE s.id IN (SELECT id FROM guests WHERE id_number = ANY(MATCH(id_number,x)))");
}

#[test]
fn select_cte_and_derived_table_predicates() {
    let t = text("WITH c AS (SELECT id, phone FROM guests WHERE phone = '1') SELECT * FROM c WHERE c.phone = $1");
    assert_eq!(t, "WITH c AS (SELECT id, phone FROM guests WHERE phone = ANY(MATCH(phone,1))) SELECT * FROM c WHERE c.phone = ANY($1::bytea[])");
    let t = text("SELECT * FROM (SELECT phone AS p FROM guests) x WHERE p = 'z'");
    assert_eq!(
        t,
        "SELECT * FROM (SELECT phone AS p FROM guests) x WHERE p = ANY(MATCH(phone,z))"
    );
}

#[test]
fn select_self_join_group_by_distinct_count_allowed() {
    let (t, _, _) = rewrite("SELECT a.id FROM guests a JOIN guests b ON a.phone = b.phone");
    assert_eq!(
        t,
        "SELECT a.id FROM guests a JOIN guests b ON a.phone = b.phone"
    );
    rewrite("SELECT phone, count(*) FROM guests GROUP BY phone HAVING count(*) > 1");
    rewrite("SELECT DISTINCT phone FROM guests");
    rewrite("SELECT count(DISTINCT id_number), count(name) FROM guests");
    rewrite("SELECT a.id FROM guests a JOIN guests b USING (phone)");
}

#[test]
fn select_star_touches_every_protected_column() {
    let (_, _, touched) = rewrite("SELECT * FROM guests");
    assert_eq!(touched.len(), 5);
}

#[test]
fn multi_statement_edits_span_the_whole_text() {
    let t = text("BEGIN; INSERT INTO guests (phone) VALUES ('1'); SELECT * FROM stays; UPDATE guests SET name = 'n' WHERE phone = '1'; COMMIT");
    assert_eq!(t, "BEGIN; INSERT INTO guests (phone) VALUES (ENC(phone,1)); SELECT * FROM stays; UPDATE guests SET name = ENC(name,n) WHERE phone = ANY(MATCH(phone,1)); COMMIT");
}

#[test]
fn multi_statement_one_refusal_refuses_all() {
    refused(
        "INSERT INTO guests (phone) VALUES ('1'); SELECT * FROM guests WHERE name LIKE 'L%'",
        "public.guests.name",
        "L%",
    );
}

#[test]
fn explain_analyze_is_rewritten() {
    let t = text("EXPLAIN ANALYZE INSERT INTO guests (phone) VALUES ('1')");
    assert_eq!(
        t,
        "EXPLAIN ANALYZE INSERT INTO guests (phone) VALUES (ENC(phone,1))"
    );
}

// ---- refusals ----

#[test]
fn refuse_like_ilike_similar() {
    let m = refused(
        "SELECT * FROM guests WHERE phone LIKE '138%'",
        "public.guests.phone",
        "138%",
    );
    assert!(m.contains("LIKE"));
    refused(
        "SELECT * FROM guests WHERE name ILIKE '%lei%'",
        "public.guests.name",
        "lei",
    );
    refused(
        "SELECT * FROM guests WHERE phone SIMILAR TO '1%'",
        "public.guests.phone",
        "1%",
    );
}

#[test]
fn refuse_ordering_comparisons_and_between() {
    refused(
        "SELECT * FROM guests WHERE birth_date < '2000-01-01'",
        "public.guests.birth_date",
        "2000-01-01",
    );
    refused(
        "SELECT * FROM guests WHERE phone >= $1",
        "public.guests.phone",
        "",
    );
    refused(
        "SELECT * FROM guests WHERE birth_date BETWEEN '1990-01-01' AND '2000-01-01'",
        "public.guests.birth_date",
        "1990",
    );
}

#[test]
fn refuse_order_by_by_name_alias_and_position() {
    refused(
        "SELECT id FROM guests ORDER BY phone",
        "public.guests.phone",
        "",
    );
    refused(
        "SELECT phone AS p FROM guests ORDER BY p DESC",
        "public.guests.phone",
        "",
    );
    refused(
        "SELECT id, name FROM guests ORDER BY 2",
        "public.guests.name",
        "",
    );
    rewrite("SELECT id, phone FROM guests ORDER BY 1");
}

#[test]
fn refuse_arithmetic_concat_functions_casts() {
    refused("SELECT phone || 'x' FROM guests", "public.guests.phone", "");
    refused(
        "SELECT birth_date + 1 FROM guests",
        "public.guests.birth_date",
        "",
    );
    refused("SELECT upper(name) FROM guests", "public.guests.name", "");
    refused(
        "SELECT * FROM guests WHERE lower(phone) = 'x'",
        "public.guests.phone",
        "",
    );
    refused("SELECT phone::text FROM guests", "public.guests.phone", "");
    refused("SELECT max(phone) FROM guests", "public.guests.phone", "");
    refused(
        "SELECT CASE WHEN id = 1 THEN phone END FROM guests",
        "public.guests.phone",
        "",
    );
}

#[test]
fn refuse_equality_on_randomized_column() {
    let m = refused(
        "SELECT * FROM guests WHERE name = 'Li Lei'",
        "public.guests.name",
        "Li Lei",
    );
    assert!(
        m.contains("randomized") && m.contains("encrypt = \"searchable\""),
        "{m}"
    );
    refused(
        "SELECT * FROM guests WHERE name IN ('a')",
        "public.guests.name",
        "",
    );
    refused(
        "SELECT * FROM guests WHERE $1 = birth_date",
        "public.guests.birth_date",
        "",
    );
    refused(
        "SELECT name FROM guests GROUP BY name",
        "public.guests.name",
        "",
    );
    refused("SELECT DISTINCT name FROM guests", "public.guests.name", "");
    refused(
        "SELECT count(DISTINCT name) FROM guests",
        "public.guests.name",
        "",
    );
    refused(
        "SELECT a.id FROM guests a JOIN guests b ON a.name = b.name",
        "public.guests.name",
        "",
    );
}

#[test]
fn refuse_comparisons_between_different_columns() {
    refused(
        "SELECT 1 FROM guests WHERE phone = id_number",
        "public.guests.phone",
        "",
    );
    refused(
        "SELECT 1 FROM guests g JOIN stays s ON s.phone = g.phone",
        "public.guests.phone",
        "",
    );
    refused(
        "SELECT 1 FROM guests WHERE phone = email",
        "public.guests.phone",
        "",
    );
    refused(
        "SELECT 1 FROM guests WHERE phone = '1' || '2'",
        "public.guests.phone",
        "",
    );
}

#[test]
fn none_protection_column_is_not_refused_in_predicates_and_order() {
    // Read-path rule: computing on it in the select list is refused (see
    // `read_*` tests); predicates and ORDER BY on plaintext stay allowed.
    let (t, _, touched) =
        rewrite("SELECT email FROM guests WHERE email LIKE '%@x' ORDER BY lower(email)");
    assert_eq!(
        t,
        "SELECT email FROM guests WHERE email LIKE '%@x' ORDER BY lower(email)"
    );
    assert_eq!(touched, vec!["public.guests.email"]);
}

#[test]
fn refuse_ambiguous_unqualified_column() {
    // stays also has a (plain) phone column: which one is meant cannot be known.
    refused(
        "SELECT 1 FROM guests g, stays s WHERE phone = '1'",
        "phone",
        "",
    );
    // Qualified, it is fine.
    text("SELECT 1 FROM guests g, stays s WHERE g.phone = '1' AND s.phone = '1'");
}

#[test]
fn refuse_column_from_untraceable_relation() {
    refused(
        "SELECT 1 FROM (SELECT * FROM guests, unknown_t) x WHERE x.phone = '1'",
        "phone",
        "",
    );
}

#[test]
fn refuse_same_param_for_two_columns_or_plain_use() {
    let m = refused(
        "SELECT 1 FROM guests WHERE phone = $1 OR id_number = $1",
        "$1",
        "",
    );
    assert!(m.contains("public.guests.phone"));
    refused(
        "INSERT INTO guests (id, phone) VALUES ($1, $1)",
        "public.guests.phone",
        "",
    );
    refused(
        "UPDATE guests SET phone = $1 WHERE phone = $1",
        "public.guests.phone",
        "",
    );
}

#[test]
fn same_param_twice_for_same_use_is_fine() {
    let (_, params, _) = rewrite("SELECT 1 FROM guests WHERE phone = $1 OR phone IN ($1)");
    assert_eq!(params, vec![(1, "phone".into(), ParamUsage::MatchArray)]);
}

#[test]
fn refuse_scalar_subquery_of_encrypted_column() {
    refused("SELECT (SELECT phone FROM guests LIMIT 1)", "encrypted", "");
}

#[test]
fn refuse_merge_on_protected_table() {
    refused(
        "MERGE INTO guests g USING stays s ON g.id = s.guest_id WHEN MATCHED THEN UPDATE SET phone = '1'",
        "public.guests",
        "",
    );
}

#[test]
fn refuse_sql_prepare_with_protected_params() {
    refused(
        "PREPARE p (text) AS INSERT INTO guests (phone) VALUES ($1)",
        "PREPARE",
        "",
    );
}
