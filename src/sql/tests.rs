//! Tests of the whole analysis against a fixed schema.

use super::*;
use crate::crypto::LogicalType;
use crate::policy::Protection;

struct TestSchema {
    tables: Vec<TableInfo>,
}

fn pc(col: &str, ty: LogicalType, protection: Protection) -> ProtectedColumn {
    ProtectedColumn {
        full_name: format!("public.guests.{col}"),
        logical_type: ty,
        protection,
        level: 3,
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

// ---- pre-filter and pass-through ----

#[test]
fn unrelated_statement_passes_without_parsing() {
    passthrough("SELECT * FROM stays WHERE room = '101'");
    // Not even valid SQL: no protected name, so the server reports the error.
    passthrough("SELEKT garbage ((( FROM stays");
}

#[test]
fn unparsable_statement_naming_protected_table_is_refused() {
    let m = refused(
        "SELEKT phone FROM guests WHERE phone = '13800001111' (((",
        "public.guests",
        "13800001111",
    );
    assert!(m.contains("could not be parsed"));
}

#[test]
fn protected_table_with_only_plain_columns_used_passes() {
    passthrough("SELECT id FROM guests WHERE id = 5");
}

#[test]
fn name_in_a_string_only_is_analysed_and_passes() {
    passthrough("SELECT 'guests' FROM stays");
}

#[test]
fn transaction_control_and_ddl_pass() {
    passthrough("BEGIN");
    passthrough("SAVEPOINT guests_sp");
    passthrough("ALTER TABLE guests ADD COLUMN note text");
    passthrough("SET search_path = public; SHOW search_path");
    passthrough("COMMIT");
}

// ---- INSERT ----

#[test]
fn insert_with_column_list_encrypts_literals() {
    let (t, params, touched) =
        rewrite("INSERT INTO guests (id, name, phone) VALUES (1, 'Li Lei', '13800001111')");
    assert_eq!(
        t,
        "INSERT INTO guests (id, name, phone) VALUES (1, ENC(name,Li Lei), ENC(phone,13800001111))"
    );
    assert!(params.is_empty());
    assert_eq!(touched, vec!["public.guests.name", "public.guests.phone"]);
}

#[test]
fn insert_without_column_list_uses_table_order() {
    let t = text("INSERT INTO guests VALUES (1, 'n', 'p', 'x', 'e@x', DATE '2020-01-01')");
    assert_eq!(t, "INSERT INTO guests VALUES (1, ENC(name,n), ENC(phone,p), ENC(id_number,x), 'e@x', ENC(birth_date,2020-01-01))");
}

#[test]
fn insert_multi_row_default_and_null() {
    let t = text("insert into guests (id, phone, name) values (1, '111', DEFAULT), (2, NULL, 'b')");
    assert_eq!(t, "insert into guests (id, phone, name) values (1, ENC(phone,111), DEFAULT), (2, NULL, ENC(name,b))");
}

#[test]
fn insert_params_become_value_targets() {
    let (t, params, _) = rewrite("INSERT INTO guests (id, phone, name) VALUES ($1, $2, $3)");
    assert_eq!(
        t,
        "INSERT INTO guests (id, phone, name) VALUES ($1, $2, $3)"
    );
    assert_eq!(
        params,
        vec![
            (2, "phone".into(), ParamUsage::Value),
            (3, "name".into(), ParamUsage::Value)
        ]
    );
}

#[test]
fn insert_param_cast_is_edited_away() {
    let (t, params, _) =
        rewrite("INSERT INTO guests (phone, name) VALUES ($1::text, CAST($2 AS varchar(20)))");
    assert_eq!(t, "INSERT INTO guests (phone, name) VALUES ($1, $2)");
    assert_eq!(params.len(), 2);
}

#[test]
fn insert_literal_casts_and_signed_numbers() {
    let t = text("INSERT INTO guests (phone, name, birth_date) VALUES ('42'::int4, CAST('x' AS text), '2020-01-02'::date)");
    assert_eq!(t, "INSERT INTO guests (phone, name, birth_date) VALUES (ENC(phone,42), ENC(name,x), ENC(birth_date,2020-01-02))");
    let t = text("INSERT INTO guests (phone, name) VALUES (-5, - 7)");
    assert_eq!(
        t,
        "INSERT INTO guests (phone, name) VALUES (ENC(phone,-5), ENC(name,-7))"
    );
}

#[test]
fn insert_timestamp_with_time_zone_cast() {
    let t =
        text("INSERT INTO guests (name) VALUES ('2020-01-01 10:00+08'::timestamp with time zone)");
    assert_eq!(
        t,
        "INSERT INTO guests (name) VALUES (ENC(name,2020-01-01 10:00+08))"
    );
}

#[test]
fn insert_after_chinese_text_comments_and_newlines() {
    let sql = "/* 宾客登记 */ INSERT INTO guests\n  (id, name, -- 姓名\n phone)\nVALUES (7, '李雷', '13800001111') -- 完\n";
    let t = text(sql);
    assert_eq!(
        t,
        "/* 宾客登记 */ INSERT INTO guests\n  (id, name, -- 姓名\n phone)\nVALUES (7, ENC(name,李雷), ENC(phone,13800001111)) -- 完\n"
    );
}

#[test]
fn insert_escape_and_dollar_strings_are_unescaped() {
    let t = text(
        "INSERT INTO guests (name, phone, id_number) VALUES (E'O\\'Brien\\n', $$a'b$$, 'it''s')",
    );
    assert_eq!(t, "INSERT INTO guests (name, phone, id_number) VALUES (ENC(name,O'Brien\n), ENC(phone,a'b), ENC(id_number,it's))");
    let t = text("INSERT INTO guests (name) VALUES ($tag$x$tag$)");
    assert_eq!(t, "INSERT INTO guests (name) VALUES (ENC(name,x))");
}

#[test]
fn insert_backslash_in_standard_string_is_literal() {
    let t = text("INSERT INTO guests (name) VALUES ('a\\b')");
    assert_eq!(t, "INSERT INTO guests (name) VALUES (ENC(name,a\\b))");
}

#[test]
fn insert_returning_and_quoted_identifiers() {
    let t = text("INSERT INTO \"guests\" (\"phone\") VALUES ('1') RETURNING id, phone");
    assert_eq!(
        t,
        "INSERT INTO \"guests\" (\"phone\") VALUES (ENC(phone,1)) RETURNING id, phone"
    );
    // A quoted identifier keeps its case: "Phone" is not phone.
    let (t, _, _) = rewrite("INSERT INTO guests (\"Phone\", name) VALUES ('1', 'n')");
    assert_eq!(
        t,
        "INSERT INTO guests (\"Phone\", name) VALUES ('1', ENC(name,n))"
    );
}

#[test]
fn insert_schema_qualified_and_uppercase() {
    let t = text("INSERT INTO PUBLIC.GUESTS (PHONE) VALUES ('1')");
    assert_eq!(t, "INSERT INTO PUBLIC.GUESTS (PHONE) VALUES (ENC(phone,1))");
}

#[test]
fn insert_plain_email_is_touched_not_edited() {
    let (t, params, touched) = rewrite("INSERT INTO guests (id, email) VALUES (1, 'a@b.c')");
    assert_eq!(t, "INSERT INTO guests (id, email) VALUES (1, 'a@b.c')");
    assert!(params.is_empty());
    assert_eq!(touched, vec!["public.guests.email"]);
}

#[test]
fn insert_on_conflict_excluded_same_column_allowed() {
    let t = text(
        "INSERT INTO guests (id, phone) VALUES (1, '1') ON CONFLICT (id) DO UPDATE SET phone = EXCLUDED.phone, name = $1",
    );
    assert_eq!(t, "INSERT INTO guests (id, phone) VALUES (1, ENC(phone,1)) ON CONFLICT (id) DO UPDATE SET phone = EXCLUDED.phone, name = $1");
    let (_, params, _) =
        rewrite("INSERT INTO guests (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET name = $1");
    assert_eq!(params, vec![(1, "name".into(), ParamUsage::Value)]);
    let t = text("INSERT INTO guests (id, phone) VALUES (1, '1') ON CONFLICT DO NOTHING");
    assert_eq!(
        t,
        "INSERT INTO guests (id, phone) VALUES (ENC(phone,1)) ON CONFLICT DO NOTHING"
            .replace("(ENC", "(1, ENC")
    );
}

#[test]
fn insert_on_conflict_other_column_refused() {
    refused(
        "INSERT INTO guests (id, phone) VALUES (1, '1') ON CONFLICT (id) DO UPDATE SET phone = EXCLUDED.id_number",
        "public.guests.phone",
        "",
    );
}

#[test]
fn insert_computed_value_refused() {
    refused(
        "INSERT INTO guests (phone) VALUES (upper('13800001111'))",
        "public.guests.phone",
        "13800001111",
    );
    refused(
        "INSERT INTO guests (phone) VALUES ('138' || '0000')",
        "public.guests.phone",
        "0000",
    );
    refused(
        "INSERT INTO guests (phone) VALUES ((SELECT '1'))",
        "public.guests.phone",
        "",
    );
}

#[test]
fn insert_select_from_other_column_refused_same_column_allowed() {
    refused(
        "INSERT INTO guests (id, phone) SELECT id, room FROM stays",
        "public.guests.phone",
        "",
    );
    refused(
        "INSERT INTO guests (phone) SELECT id_number FROM guests",
        "public.guests.phone",
        "",
    );
    let (t, _, _) = rewrite("INSERT INTO guests (phone) SELECT phone FROM guests WHERE id = 1");
    assert_eq!(
        t,
        "INSERT INTO guests (phone) SELECT phone FROM guests WHERE id = 1"
    );
}

#[test]
fn insert_with_cte_and_values() {
    let t = text("WITH x AS (SELECT 1) INSERT INTO guests (phone) VALUES ('5')");
    assert_eq!(
        t,
        "WITH x AS (SELECT 1) INSERT INTO guests (phone) VALUES (ENC(phone,5))"
    );
}

// ---- UPDATE / DELETE ----

#[test]
fn update_set_literal_param_and_where() {
    let (t, params, _) =
        rewrite("UPDATE guests SET phone = '139', name = $1 WHERE id_number = $2 AND id = 3");
    assert_eq!(t, "UPDATE guests SET phone = ENC(phone,139), name = $1 WHERE id_number = ANY($2::bytea[]) AND id = 3");
    assert_eq!(
        params,
        vec![
            (1, "name".into(), ParamUsage::Value),
            (2, "id_number".into(), ParamUsage::MatchArray)
        ]
    );
}

#[test]
fn update_same_column_noop_allowed() {
    let t = text("UPDATE guests SET phone = phone, name = '1' WHERE id = 1");
    assert_eq!(
        t,
        "UPDATE guests SET phone = phone, name = ENC(name,1) WHERE id = 1"
    );
}

#[test]
fn update_expression_into_encrypted_column_refused() {
    refused(
        "UPDATE guests SET phone = upper(phone)",
        "public.guests.phone",
        "",
    );
    refused(
        "UPDATE guests SET phone = id_number",
        "public.guests.phone",
        "",
    );
    refused(
        "UPDATE guests g SET phone = s.room FROM stays s WHERE s.guest_id = g.id",
        "public.guests.phone",
        "",
    );
}

#[test]
fn update_returning_allowed() {
    let (t, _, touched) = rewrite("UPDATE guests SET email = 'x' WHERE id = 1 RETURNING phone");
    assert_eq!(
        t,
        "UPDATE guests SET email = 'x' WHERE id = 1 RETURNING phone"
    );
    assert_eq!(touched, vec!["public.guests.email", "public.guests.phone"]);
}

#[test]
fn delete_where_equality_rewritten() {
    let t = text("DELETE FROM guests WHERE phone <> '1' OR id_number IN ('a', 'b')");
    assert_eq!(t, "DELETE FROM guests WHERE phone <> ALL(MATCH(phone,1)) OR id_number = ANY(MATCH(id_number,a) || MATCH(id_number,b))");
}

#[test]
fn delete_using_join() {
    let t = text("DELETE FROM guests g USING stays s WHERE s.guest_id = g.id AND g.phone = '5'");
    assert_eq!(t, "DELETE FROM guests g USING stays s WHERE s.guest_id = g.id AND g.phone = ANY(MATCH(phone,5))");
}

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

// ---- COPY ----

fn copy_plan(sql: &str) -> CopyIn {
    match plan(sql) {
        Ok(Plan::CopyIn(c)) => c,
        other => panic!("expected CopyIn for {sql:?}, got {other:?}"),
    }
}

#[test]
fn copy_text_defaults_all_columns() {
    let c = copy_plan("COPY guests FROM STDIN");
    assert_eq!(c.format, CopyFormat::Text);
    assert_eq!(c.delimiter, b'\t');
    assert_eq!(c.null, "\\N");
    assert!(!c.header);
    let names: Vec<Option<&str>> = c.fields.iter().map(|f| f.as_ref().map(short)).collect();
    assert_eq!(
        names,
        vec![
            None,
            Some("name"),
            Some("phone"),
            Some("id_number"),
            None,
            Some("birth_date")
        ]
    );
}

#[test]
fn copy_csv_options_and_column_list() {
    let c = copy_plan("COPY guests (phone, id) FROM STDIN WITH (FORMAT csv, HEADER true, DELIMITER ';', NULL 'NA', QUOTE '''', ESCAPE '\\')");
    assert_eq!(c.format, CopyFormat::Csv);
    assert_eq!(
        (c.delimiter, c.quote, c.escape, c.header),
        (b';', b'\'', b'\\', true)
    );
    assert_eq!(c.null, "NA");
    assert_eq!(c.fields.len(), 2);
    assert!(c.fields[0].is_some() && c.fields[1].is_none());
}

#[test]
fn copy_legacy_csv_header() {
    let c = copy_plan("COPY guests FROM STDIN CSV HEADER");
    assert_eq!(
        (c.format, c.delimiter, c.quote, c.escape, c.header),
        (CopyFormat::Csv, b',', b'"', b'"', true)
    );
    assert_eq!(c.null, "");
}

#[test]
fn copy_binary_and_files_refused() {
    let m = refused(
        "COPY guests FROM STDIN WITH (FORMAT binary)",
        "public.guests",
        "",
    );
    assert!(m.contains("binary"));
    refused("COPY guests FROM STDIN BINARY", "public.guests", "");
    refused(
        "COPY guests FROM '/tmp/guests.csv'",
        "public.guests",
        "/tmp/guests.csv",
    );
    refused("COPY guests FROM PROGRAM 'cat x'", "public.guests", "cat x");
}

#[test]
fn copy_out_and_plain_tables_pass() {
    // Plain columns of a protected table leave through COPY TO STDOUT as
    // they are; protected ones are masked by the session.
    passthrough("COPY guests (id, note) TO STDOUT");
    let out = match plan("COPY guests TO STDOUT") {
        Ok(Plan::CopyOut(c)) => c,
        other => panic!("expected CopyOut, got {other:?}"),
    };
    assert_eq!(out.format, CopyFormat::Text);
    let names: Vec<Option<&str>> = out.fields.iter().map(|f| f.as_ref().map(short)).collect();
    assert_eq!(
        names,
        vec![
            None,
            Some("name"),
            Some("phone"),
            Some("id_number"),
            Some("email"),
            Some("birth_date")
        ],
        "every protected column, encrypted or not"
    );
    match plan("COPY guests (id, email) TO STDOUT (FORMAT csv, HEADER)") {
        Ok(Plan::CopyOut(c)) => {
            assert_eq!(
                (c.format, c.header, c.fields.len()),
                (CopyFormat::Csv, true, 2)
            );
            assert!(c.fields[0].is_none() && c.fields[1].is_some());
        }
        other => panic!("expected CopyOut, got {other:?}"),
    }
    let msg = refused(
        "COPY guests TO STDOUT WITH (FORMAT binary)",
        "public.guests",
        "",
    );
    assert!(msg.contains("binary"), "{msg}");
    refused("COPY guests TO STDOUT; SELECT 1", "COPY", "");
    passthrough("COPY (SELECT id FROM stays) TO STDOUT WITH (FORMAT csv)");
    passthrough("COPY stays TO '/tmp/stays.csv'");
    passthrough("COPY stays FROM STDIN");
}

// ---- robustness ----

#[test]
fn typed_string_and_boolean_literals() {
    let t = text("UPDATE guests SET birth_date = DATE '1990-05-06', name = TRUE WHERE id = 1");
    assert_eq!(t, "UPDATE guests SET birth_date = ENC(birth_date,1990-05-06), name = ENC(name,true) WHERE id = 1");
}

#[test]
fn prefilter_reuse_with_analyze_with() {
    let s = schema();
    let pf = Prefilter::new(&s.protected_names());
    assert_eq!(analyze_with("SELECT 1", &s, &pf), Ok(Plan::Passthrough));
    assert!(matches!(
        analyze_with("INSERT INTO guests (phone) VALUES ('1')", &s, &pf),
        Ok(Plan::Rewrite(_))
    ));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]
        #[test]
        fn random_text_never_panics(s in "\\PC{0,80}") {
            let _ = plan(&s);
            let _ = plan(&format!("SELECT * FROM guests WHERE {s}"));
            let _ = plan(&format!("INSERT INTO guests (phone) VALUES ({s})"));
        }

        #[test]
        fn sqlish_text_never_panics(parts in proptest::collection::vec(prop_oneof![
            Just("SELECT"), Just("phone"), Just("guests"), Just("="), Just("'x'"), Just("$1"), Just("IN"),
            Just("("), Just(")"), Just(","), Just("::text"), Just("WHERE"), Just("FROM"), Just("中"), Just("\n"),
            Just("INSERT INTO"), Just("VALUES"), Just("-"), Just("NOT"), Just("g.phone"), Just("UPDATE"), Just("SET"),
        ], 0..24)) {
            let s = parts.join(" ");
            if let Ok(Plan::Rewrite(r)) = plan(&s) {
                let mut last = 0;
                for e in &r.edits {
                    prop_assert!(e.range.start >= last && e.range.end >= e.range.start && e.range.end <= s.len());
                    last = e.range.end;
                }
            }
        }
    }
}

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

// ---- read path: result columns and server-side copies ----

/// Asserts the statement is not refused.
fn allowed(sql: &str) {
    if let Err(r) = plan(sql) {
        panic!("expected {sql:?} to be allowed, got {r:?}");
    }
}

#[test]
fn read_plain_columns_stars_and_aliases_allowed() {
    for sql in [
        "SELECT email FROM guests",
        "SELECT email AS e, g.email, guests.email FROM guests, guests g",
        "SELECT (email) FROM guests",
        "SELECT public.guests.email FROM public.guests",
        "SELECT * FROM guests",
        "SELECT g.* FROM guests g",
        "SELECT g.*, s.room FROM guests g JOIN stays s ON s.guest_id = g.id",
        "SELECT name, phone, birth_date FROM guests WHERE phone = '1'",
        "SELECT upper(room), s FROM stays s",
        "SELECT row_to_json(s) FROM stays s JOIN guests g ON g.id = s.guest_id",
        "SELECT id, upper(s.room) FROM guests g JOIN stays s ON s.guest_id = g.id",
        "SELECT phone || 'x' FROM stays",
    ] {
        allowed(sql);
    }
}

#[test]
fn read_count_allowed() {
    for sql in [
        "SELECT count(email), count(DISTINCT email), count(*) FROM guests",
        "SELECT count(g.email) FROM guests g",
        "SELECT count(phone) OVER () FROM guests",
        "SELECT count(*) FILTER (WHERE email LIKE '%@x') FROM guests",
        "SELECT (SELECT count(email) FROM guests)",
    ] {
        allowed(sql);
    }
}

#[test]
fn read_computed_from_none_column_refused() {
    for sql in [
        "SELECT upper(email) FROM guests",
        "SELECT email || '' FROM guests",
        "SELECT email::text FROM guests",
        "SELECT CAST(email AS varchar) FROM guests",
        "SELECT coalesce(email, '') FROM guests",
        "SELECT CASE WHEN true THEN email END FROM guests",
        "SELECT CASE WHEN email LIKE '%@x' THEN 1 END FROM guests",
        "SELECT email IS NULL FROM guests",
        "SELECT id, lower(g.email) AS e FROM guests g",
        "SELECT min(email) FROM guests",
        "SELECT max(email) FROM guests",
        "SELECT string_agg(email, ',') FROM guests",
        "SELECT array_agg(email) FROM guests",
        "SELECT count(upper(email)) FROM guests",
        "SELECT lag(email) OVER (ORDER BY id) FROM guests",
        "SELECT row_number() OVER (PARTITION BY email) FROM guests",
        "SELECT ARRAY[email] FROM guests",
        "SELECT (email, id) FROM guests",
    ] {
        let msg = refused(sql, "public.guests.email", "%@x");
        assert!(msg.contains("select the column itself"), "{sql}: {msg}");
    }
}

#[test]
fn read_computed_from_encrypted_column_refused() {
    refused("SELECT upper(phone) FROM guests", "public.guests.phone", "");
    refused("SELECT name::text FROM guests", "public.guests.name", "");
    refused(
        "SELECT max(birth_date) FROM guests",
        "public.guests.birth_date",
        "",
    );
    refused(
        "SELECT coalesce(phone, '000') FROM guests",
        "public.guests.phone",
        "000",
    );
}

#[test]
fn read_scalar_subquery_returning_protected_refused() {
    refused(
        "SELECT (SELECT email FROM guests LIMIT 1)",
        "public.guests.email",
        "",
    );
    refused(
        "SELECT id, (SELECT g2.email FROM guests g2 WHERE g2.id = g.id) FROM guests g",
        "public.guests.email",
        "",
    );
    refused(
        "SELECT upper((SELECT email FROM guests LIMIT 1))",
        "public.guests.email",
        "",
    );
    refused(
        "SELECT ARRAY(SELECT email FROM guests)",
        "public.guests.email",
        "",
    );
    // A subquery used only as a predicate returns no protected value.
    allowed("SELECT EXISTS (SELECT email FROM guests WHERE email = 'a')");
    allowed("SELECT id FROM guests WHERE email IN (SELECT email FROM guests WHERE id = 1)");
}

#[test]
fn read_whole_row_references_refused() {
    for sql in [
        "SELECT g FROM guests g",
        "SELECT guests FROM guests",
        "SELECT row_to_json(g) FROM guests g",
        "SELECT row_to_json(g.*) FROM guests g",
        "SELECT to_jsonb(g) FROM guests g",
        "SELECT g::text FROM guests g",
        "SELECT ROW(g.*) FROM guests g",
        "SELECT hstore(g) FROM guests g",
        "SELECT (g).email FROM guests g",
        "SELECT json_agg(g) FROM guests g",
        "WITH c AS (SELECT email FROM guests) SELECT c FROM c",
        "SELECT s FROM (SELECT email FROM guests) s",
    ] {
        let msg = refused(sql, "public.guests.", "");
        assert!(
            msg.contains("whole-row") || msg.contains("computed"),
            "{sql}: {msg}"
        );
    }
    // sqlparser does not parse `(g).*`: refused as unparsable (fail closed).
    assert!(plan("SELECT (g).* FROM guests g").is_err());
}

#[test]
fn read_rule_applies_at_every_level() {
    for sql in [
        "WITH c AS (SELECT upper(email) AS e FROM guests) SELECT e FROM c",
        "SELECT x FROM (SELECT lower(email) AS x FROM guests) s",
        "DECLARE c CURSOR FOR SELECT upper(email) FROM guests",
        "EXPLAIN ANALYZE SELECT upper(email) FROM guests",
        "INSERT INTO guests (id) VALUES (1) RETURNING upper(email)",
        "UPDATE guests SET id = 2 WHERE id = 1 RETURNING email || ''",
        "DELETE FROM guests g WHERE id = 1 RETURNING g",
        "SELECT 1 FROM guests WHERE id IN (SELECT length(email) FROM guests)",
    ] {
        refused(sql, "public.guests.", "");
    }
    for sql in [
        "WITH c AS (SELECT email FROM guests) SELECT email FROM c",
        "SELECT e FROM (SELECT email AS e FROM guests) s",
        "DECLARE c CURSOR FOR SELECT email, g.* FROM guests g",
        "EXPLAIN ANALYZE SELECT email FROM guests",
        "INSERT INTO guests (id) VALUES (1) RETURNING email, *",
        "UPDATE guests SET id = 2 WHERE id = 1 RETURNING email",
        "DELETE FROM guests g WHERE id = 1 RETURNING g.*",
    ] {
        allowed(sql);
    }
}

#[test]
fn read_set_operations_over_protected_refused() {
    for sql in [
        "SELECT email FROM guests UNION SELECT 'x'",
        "SELECT 'x' UNION ALL SELECT email FROM guests",
        "SELECT email FROM guests EXCEPT SELECT 'x'",
        "SELECT phone FROM guests UNION ALL SELECT id_number FROM guests",
        "SELECT e FROM (SELECT email AS e FROM guests UNION SELECT 'x') u",
        // Without ALL the server compares randomized envelopes.
        "SELECT * FROM guests UNION SELECT * FROM guests",
        "SELECT name FROM guests WHERE id = 1 INTERSECT SELECT name FROM guests",
    ] {
        let msg = refused(sql, "public.guests.", "'x'");
        assert!(
            msg.contains("set operation") || msg.contains("without ALL"),
            "{sql}: {msg}"
        );
    }
    allowed("SELECT id FROM guests UNION SELECT id FROM stays");
    allowed("SELECT id FROM guests WHERE email = 'a' UNION SELECT guest_id FROM stays");
    allowed("SELECT email FROM guests INTERSECT SELECT email FROM guests");
    allowed("SELECT phone FROM guests UNION SELECT phone FROM guests");
}

#[test]
fn set_operations_of_the_same_columns_map_their_results() {
    let results = |sql: &str| match plan(sql) {
        Ok(Plan::Rewrite(r)) => r
            .results
            .iter()
            .map(|c| c.as_ref().map(|c| short(c).to_owned()))
            .collect::<Vec<_>>(),
        other => panic!("{sql}: {other:?}"),
    };
    assert_eq!(
        results("SELECT id, phone, name FROM guests WHERE id = 1 UNION ALL SELECT id, phone, name FROM guests WHERE id = 2"),
        vec![None, Some("phone".to_owned()), Some("name".to_owned())]
    );
    assert_eq!(
        results("SELECT u.name FROM (SELECT name FROM guests UNION ALL SELECT name FROM guests) u"),
        vec![Some("name".to_owned())]
    );
    // Several statements: unknown, so empty.
    assert!(results("SELECT phone FROM guests; SELECT name FROM guests").is_empty());
}

#[test]
fn read_server_side_copies_refused() {
    for sql in [
        "CREATE TABLE t AS SELECT email FROM guests",
        "CREATE TABLE t AS SELECT * FROM guests",
        "CREATE TEMP TABLE t AS TABLE guests",
        "CREATE MATERIALIZED VIEW mv AS SELECT id, email FROM guests",
        "SELECT email INTO t FROM guests",
        "SELECT * INTO TEMP t FROM guests",
        "INSERT INTO stays (phone) SELECT email FROM guests",
        "INSERT INTO stays SELECT id, id, 'r', email FROM guests",
        "INSERT INTO stays (phone) SELECT g.phone FROM guests g",
        "INSERT INTO stays (phone) VALUES ((SELECT email FROM guests LIMIT 1))",
        "UPDATE stays s SET phone = g.email FROM guests g WHERE g.id = s.guest_id",
        "COPY (SELECT email FROM guests) TO STDOUT",
        "COPY (SELECT * FROM guests) TO STDOUT WITH (FORMAT csv)",
        "COPY guests TO '/tmp/guests.csv'",
        "COPY guests (email) TO PROGRAM 'cat'",
    ] {
        refused(sql, "public.guests", "/tmp");
    }
    for sql in [
        "CREATE TABLE t AS SELECT id FROM guests WHERE email = 'a'",
        "SELECT id INTO t FROM guests",
        "INSERT INTO stays (id) SELECT id FROM guests",
        "INSERT INTO guests (id, email) SELECT id + 1, email FROM guests",
        "UPDATE guests SET email = lower(email) WHERE id = 1",
        "COPY (SELECT id FROM guests) TO STDOUT",
        "COPY guests (id, note) TO STDOUT",
    ] {
        allowed(sql);
    }
}

#[test]
fn read_values_and_from_functions_over_protected_refused() {
    for sql in [
        "SELECT * FROM (VALUES ((SELECT email FROM guests LIMIT 1))) v",
        "SELECT x FROM guests g, LATERAL upper(g.email) x",
        "SELECT x FROM guests g, unnest(ARRAY[g.email]) x",
        "SELECT x FROM guests g CROSS JOIN LATERAL jsonb_each(to_jsonb(g)) x",
        "SELECT x FROM guests g, LATERAL (SELECT upper(g.email)) x",
    ] {
        refused(sql, "public.guests.", "");
    }
    allowed("SELECT x FROM guests g, generate_series(1, g.id) x");
    allowed("SELECT * FROM (VALUES (1, 'a')) v");
}

#[test]
fn read_copy_query_predicates_are_rewritten() {
    let t = text("COPY (SELECT id FROM guests WHERE phone = '1') TO STDOUT");
    assert_eq!(
        t,
        "COPY (SELECT id FROM guests WHERE phone = ANY(MATCH(phone,1))) TO STDOUT"
    );
}

/// What the bulk-read guard learns from each statement.
fn reads(sql: &str) -> Vec<BulkRead> {
    let s = schema();
    analyze_full(sql, &s, &Prefilter::new(&s.protected_names())).reads
}

#[test]
fn bulk_read_facts_are_recorded_per_statement() {
    let r = reads("SELECT phone, id FROM guests");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].kind, ReadKind::Select);
    assert_eq!(short(&r[0].columns[0]), "phone");
    assert_eq!(r[0].unfiltered, ["public.guests"]);
    assert_eq!(r[0].limit, None);
    // WHERE anywhere on the path to the table, or a LIMIT, bounds it.
    for sql in [
        "SELECT phone FROM guests WHERE true",
        "SELECT phone FROM (SELECT * FROM guests WHERE id < 5) s",
        "WITH g AS (SELECT * FROM guests) SELECT phone FROM g WHERE id = 1",
        "SELECT g.phone FROM stays s JOIN guests g ON g.id = s.guest_id WHERE s.room = '1'",
    ] {
        let r = reads(sql);
        assert_eq!(r.len(), 1, "{sql}");
        assert!(r[0].unfiltered.is_empty(), "{sql}: {:?}", r[0].unfiltered);
    }
    let r = reads("SELECT phone FROM guests ORDER BY id LIMIT 20 OFFSET 40");
    assert_eq!(r[0].limit, Some(20));
    let r = reads("SELECT * FROM guests FETCH FIRST 7 ROWS ONLY");
    assert_eq!(r[0].limit, Some(7));
    assert_eq!(r[0].columns.len(), 5);
    let r = reads("WITH g AS (SELECT * FROM guests) SELECT phone FROM g");
    assert_eq!(r[0].unfiltered, ["public.guests"]);
    // No protected column in the result: nothing to guard.
    assert!(reads("SELECT id FROM guests").is_empty());
    assert!(reads("SELECT count(phone) FROM guests").is_empty());
    assert!(reads("SELECT id FROM guests WHERE phone = '1'").is_empty());
}

#[test]
fn bulk_read_facts_for_cursors_and_copy() {
    let r =
        reads("BEGIN; DECLARE \"Cur\" CURSOR FOR SELECT name FROM guests; FETCH 5 FROM \"Cur\"");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].kind, ReadKind::Cursor("Cur".into()));
    assert_eq!(r[0].unfiltered, ["public.guests"]);
    // COPY TO of protected columns is masked by the session; the guard
    // learns it is a whole-table read.
    let s = schema();
    let a = analyze_full(
        "COPY guests (id, phone) TO STDOUT",
        &s,
        &Prefilter::new(&s.protected_names()),
    );
    assert!(matches!(a.plan, Ok(Plan::CopyOut(_))), "{:?}", a.plan);
    assert_eq!(a.reads.len(), 1);
    assert_eq!(a.reads[0].kind, ReadKind::CopyTo);
    assert_eq!(a.reads[0].unfiltered, ["public.guests"]);
    assert!(reads("COPY guests (id) TO STDOUT").is_empty());
    assert_eq!(
        bulk::fetch_cursors("fetch 10 from c; SELECT 1; FETCH NEXT IN \"D\""),
        Some(vec![Some("c".into()), None, Some("D".into())])
    );
}

#[test]
fn approval_setting_never_reaches_the_server_in_a_statement() {
    let s = schema();
    let mut names = s.protected_names();
    names.push(bulk::APPROVAL_SETTING.into());
    let p = Prefilter::new(&names);
    for sql in [
        "BEGIN; SET pgveil.approval = 'x'",
        "SELECT set_config('PGVEIL.APPROVAL', 'x', false)",
    ] {
        let err = analyze_with(sql, &s, &p).unwrap_err();
        assert_eq!(err.sqlstate, "42501", "{sql}");
        assert!(!err.message.contains("'x'"), "{}", err.message);
    }
}
