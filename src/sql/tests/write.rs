//! Pass-through, INSERT, UPDATE and DELETE rewrites.

use super::*;

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
