//! The read path: result columns and server-side copies.

use super::*;

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
fn returning_clauses_are_reads_checked_before_the_change() {
    let r = reads("UPDATE guests SET note = 'x' WHERE id = 1 RETURNING id, phone");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].kind, ReadKind::Returning);
    assert_eq!(short(&r[0].columns[0]), "phone");
    assert!(r[0].unfiltered.is_empty());
    // Without WHERE every row's value comes back.
    let r = reads("DELETE FROM guests RETURNING name, phone, name");
    assert_eq!(r[0].kind, ReadKind::Returning);
    assert_eq!(r[0].columns.len(), 2);
    assert_eq!(r[0].unfiltered, ["public.guests"]);
    let r = reads("UPDATE guests SET note = 'x' RETURNING *");
    assert_eq!(r[0].columns.len(), 5);
    assert_eq!(r[0].unfiltered, ["public.guests"]);
    // An INSERT returns the rows it inserts.
    let r = reads("INSERT INTO guests (id, phone) VALUES (1, '1') RETURNING phone");
    assert_eq!(r[0].kind, ReadKind::Returning);
    assert!(r[0].unfiltered.is_empty());
    // Nothing protected returned, or no RETURNING: nothing to check.
    assert!(reads("UPDATE guests SET note = 'x' RETURNING id").is_empty());
    assert!(reads("DELETE FROM guests WHERE phone = '1'").is_empty());
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
