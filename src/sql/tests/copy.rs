//! COPY plans and malformed input.

use super::*;

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
    let names = field_names(&c.fields);
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
    let names = field_names(&out.fields);
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

/// The short names of a COPY layout's protected fields (`None` for the
/// others), in order.
fn field_names(fields: &[Option<ProtectedColumn>]) -> Vec<Option<&str>> {
    fields.iter().map(|f| f.as_ref().map(short)).collect()
}
