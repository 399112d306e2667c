//! `pgveil migrate` against a real PostgreSQL: every logical type goes
//! plaintext → envelopes → plaintext with its values and types intact; a
//! SIGKILLed run resumes without loss or double encryption; rotation then
//! `reencrypt` then `destroy` keeps every row readable; 50,000 rows of every
//! type migrate while a writer goes through pgveil, and read back equal
//! through pgveil; legacy plaintext is read only while a column migrates.
//!
//! Each test owns its table, so tests run in parallel on one server.

mod common;

use common::*;
use pgveil::config::Config;
use pgveil::crypto::{Format, Keyring, LogicalType, Mode};
use pgveil::migrate::{MigrateArgs, MigrateCommand};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Columns of the all-types table: (column, SQL type, logical type, generator over `i`).
const TYPES: &[(&str, &str, &str, &str)] = &[
    ("c_text", "text", "text", "'name ' || i || ' ü'"),
    ("c_varchar", "varchar(20)", "varchar", "'v' || i"),
    ("c_char", "char(6)", "char", "'c' || (i % 100)"),
    ("c_int2", "int2", "int2", "(i % 30000 - 15000)::int2"),
    ("c_int4", "int4", "int4", "i * 7 - 1000"),
    ("c_int8", "int8", "int8", "i::int8 * 1000000007"),
    (
        "c_numeric",
        "numeric(12,4)",
        "numeric",
        "(i / 7.0)::numeric(12,4)",
    ),
    ("c_float4", "float4", "float4", "(i / 3.0)::float4"),
    ("c_float8", "float8", "float8", "i * 1.1::float8 / 7"),
    ("c_bool", "bool", "bool", "i % 2 = 0"),
    ("c_date", "date", "date", "date '1990-01-01' + i"),
    (
        "c_time",
        "time",
        "time",
        "time '00:00' + i * interval '17.25 second'",
    ),
    (
        "c_timestamp",
        "timestamp",
        "timestamp",
        "timestamp '2020-01-01' + i * interval '1 hour 3 min 5.123456 sec'",
    ),
    (
        "c_timestamptz",
        "timestamptz",
        "timestamptz",
        "timestamptz '2020-01-01 00:00+02' + i * interval '37 min'",
    ),
    ("c_uuid", "uuid", "uuid", "md5(i::text)::uuid"),
    (
        "c_json",
        "json",
        "json",
        "json_build_object('i', i, 'n', 'x' || i)",
    ),
    (
        "c_jsonb",
        "jsonb",
        "jsonb",
        "jsonb_build_object('i', i, 'k', 'y' || i)",
    ),
    ("c_bytea", "bytea", "bytea", "decode(md5(i::text), 'hex')"),
];

/// A copy of the demo keyring this test may rotate and destroy.
fn own_keyring() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("keyring/keyring.toml");
    std::fs::copy(src, dir.path().join("keyring.toml")).unwrap();
    dir
}

fn demo_keyring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("keyring")
}

/// Writes a config with `policies` (TOML `[[columns]]`) and returns its path and parsed form.
fn write_config(dir: &Path, keyring: &Path, policies: &str) -> (PathBuf, Config) {
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n\n[keyring]\ndir = \"{}\"\nmaster_key_file = \"{}\"\n{policies}",
        db().addr(),
        keyring.display(),
        demo_master_key_file().display()
    );
    let path = dir.join("pgveil.toml");
    std::fs::write(&path, &text).unwrap();
    (path, Config::parse(&text).unwrap())
}

/// A config with the demo keyring and `policies`, written into a
/// temporary directory that lives as long as the returned guard.
fn demo_config(policies: &str) -> (tempfile::TempDir, PathBuf, Config) {
    let tmp = tempfile::tempdir().unwrap();
    let (path, cfg) = write_config(tmp.path(), &demo_keyring(), policies);
    (tmp, path, cfg)
}

fn policy(table: &str, column: &str, ty: &str, mode: &str) -> String {
    format!(
        "\n[[columns]]\ntable = \"{table}\"\ncolumn = \"{column}\"\ntype = \"{ty}\"\nencrypt = \"{mode}\"\nlevel = 3\n"
    )
}

fn args(config: &Path, table: Option<(&str, &str)>, batch_size: u32) -> MigrateArgs {
    MigrateArgs {
        config: config.to_owned(),
        table: table.map(|t| t.0.to_owned()),
        column: table.map(|t| t.1.to_owned()),
        all: table.is_none(),
        batch_size,
        dry_run: false,
        max_rewrite_mb: 1024,
        in_place: false,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Rows of a simple query as text, read directly from PostgreSQL in UTC.
fn text_rows(sql: &str) -> Vec<Vec<Option<String>>> {
    rt().block_on(async {
        let c = connect_direct().await;
        c.batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
            .await
            .unwrap();
        c.simple_query(sql)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect()
    })
}

/// `id → stored bytes` of one column, read directly.
fn stored(table: &str, column: &str) -> HashMap<i64, Option<Vec<u8>>> {
    rt().block_on(async {
        let c = connect_direct().await;
        c.query(&format!("SELECT id::int8, {column} FROM {table}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    })
}

/// Asserts every value of `column` is an envelope that decrypts to the
/// original text form; returns the key versions seen.
fn assert_decrypts(
    cfg: &Config,
    table: &str,
    column: &str,
    ty: &str,
    mode: Mode,
    original: &HashMap<i64, Option<String>>,
) -> HashMap<u32, usize> {
    let keyring = Keyring::load(&cfg.keyring).unwrap();
    let ty: LogicalType = ty.parse().unwrap();
    let cipher = keyring
        .column(&format!("public.{table}.{column}"), ty, mode)
        .unwrap();
    let now = stored(table, column);
    assert_eq!(now.len(), original.len(), "{table}.{column}: row count");
    let mut versions = HashMap::new();
    for (id, want) in original {
        let got = now.get(id).unwrap_or_else(|| panic!("row {id} lost"));
        match (want, got) {
            (None, None) => {}
            (Some(want), Some(env)) => {
                let mut out = Vec::new();
                cipher
                    .decrypt(env, Format::Text, &mut out)
                    .unwrap_or_else(|e| panic!("{table}.{column} id {id}: {e}"));
                // char comes back unpadded (docs/FORMAT.md).
                let want = match ty {
                    LogicalType::Char => want.trim_end_matches(' '),
                    _ => want.as_str(),
                };
                assert_eq!(
                    std::str::from_utf8(&out).unwrap(),
                    want,
                    "{table}.{column} id {id}"
                );
                let v = u32::from_be_bytes(env[2..6].try_into().unwrap());
                *versions.entry(v).or_default() += 1;
            }
            _ => panic!("{table}.{column} id {id}: NULL changed"),
        }
    }
    versions
}

fn originals(table: &str, column: &str) -> HashMap<i64, Option<String>> {
    text_rows(&format!("SELECT id::text, {column} FROM {table}"))
        .into_iter()
        .map(|r| (r[0].as_deref().unwrap().parse().unwrap(), r[1].clone()))
        .collect()
}

fn create_all_types(table: &str, rows: u32) {
    let cols: Vec<String> = TYPES
        .iter()
        .map(|(c, sql, _, _)| format!("{c} {sql}"))
        .collect();
    let gens: Vec<String> = TYPES
        .iter()
        .map(|(_, _, _, g)| format!("CASE WHEN i % 13 = 0 THEN NULL ELSE {g} END"))
        .collect();
    db().psql(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id serial PRIMARY KEY, {}, note text); \
         INSERT INTO {table} ({}) SELECT {} FROM generate_series(1, {rows}) i;",
        cols.join(", "),
        TYPES.iter().map(|t| t.0).collect::<Vec<_>>().join(", "),
        gens.join(", ")
    ))
    .unwrap();
}

#[test]
fn every_type_encrypts_and_decrypts_back() {
    let table = "mig_types";
    create_all_types(table, 5000);
    let before: Vec<_> = TYPES.iter().map(|t| originals(table, t.0)).collect();
    let types_before = text_rows(&format!(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
          WHERE attrelid = '{table}'::regclass AND attnum > 0 ORDER BY attnum"
    ));
    let (_tmp, path, cfg) = demo_config(&all_type_policies(table));

    // A dry run changes nothing.
    let mut dry = args(&path, None, 1000);
    dry.dry_run = true;
    pgveil::migrate::run(MigrateCommand::Encrypt(dry)).unwrap();
    assert_eq!(originals(table, "c_text"), before[0]);

    pgveil::migrate::run(MigrateCommand::Encrypt(args(&path, None, 700))).unwrap();
    // No plaintext at rest: every value is an envelope of its column, and
    // the raw table dump holds none of the text values.
    for (i, (c, _, ty, _)) in TYPES.iter().enumerate() {
        let mode = if i % 2 == 0 {
            Mode::Randomized
        } else {
            Mode::Searchable
        };
        assert_decrypts(&cfg, table, c, ty, mode, &before[i]);
    }
    let raw = db().psql(&format!("COPY {table} TO STDOUT")).unwrap();
    for needle in [
        "name 1",
        "v12",
        "1990-01-0",
        "\"n\" : \"x1\"",
        "\"k\": \"y1\"",
    ] {
        assert!(!raw.contains(needle), "plaintext {needle:?} at rest");
    }
    let types_mid = text_rows(&format!(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = '{table}'::regclass \
          AND attname LIKE 'c\\_%' AND atttypid = 'bytea'::regtype"
    ));
    assert_eq!(types_mid[0][0].as_deref(), Some("18"));

    // Running again is a no-op (idempotent, nothing encrypted twice).
    pgveil::migrate::run(MigrateCommand::Encrypt(args(
        &path,
        Some((table, "c_int4")),
        1000,
    )))
    .unwrap();
    assert_decrypts(&cfg, table, "c_int4", "int4", Mode::Searchable, &before[4]);

    // The online migration leaves no trace but the new order: no hidden
    // column, trigger or helper function is left behind.
    let leftovers = text_rows(&format!(
        "SELECT (SELECT count(*) FROM pg_attribute WHERE attrelid = '{table}'::regclass \
                   AND attname LIKE '\\_\\_pgveil%' AND NOT attisdropped) \
              + (SELECT count(*) FROM pg_trigger WHERE tgrelid = '{table}'::regclass) \
              + (SELECT count(*) FROM pg_proc \
                  WHERE proname ~ ('^legacy_(clear|guard)_' || '{table}'::regclass::oid || '_'))"
    ));
    assert_eq!(leftovers[0][0].as_deref(), Some("0"));

    // decrypt restores the original types (modifiers included) and values;
    // the columns moved online stay at the end of the table.
    pgveil::migrate::run(MigrateCommand::Decrypt(args(&path, None, 1000))).unwrap();
    let columns = |sql: &str| {
        let mut rows = text_rows(sql);
        rows.sort();
        rows
    };
    let types_after = columns(&format!(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
          WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped"
    ));
    let mut types_before = types_before;
    types_before.sort();
    assert_eq!(types_after, types_before);
    for (i, (c, ..)) in TYPES.iter().enumerate() {
        assert_eq!(originals(table, c), before[i], "{c} after decrypt");
    }
}

#[test]
fn a_killed_run_resumes_without_loss() {
    let table = "mig_kill";
    db().psql(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int PRIMARY KEY, phone text); \
         INSERT INTO {table} SELECT i, '+86 138 ' || lpad(i::text, 8, '0') FROM generate_series(1, 20000) i;"
    ))
    .unwrap();
    let original = originals(table, "phone");
    let (_tmp, path, cfg) = demo_config(&policy(table, "phone", "text", "searchable"));
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgveil"))
            .args(["migrate", "encrypt", "--config"])
            .arg(&path)
            .args(["--table", table, "--column", "phone", "--batch-size", "50"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let shaped = || {
        text_rows(&format!(
            "SELECT count(*) FROM {table} WHERE phone::text LIKE '\\\\x010300%'"
        ))
        .first()
        .and_then(|r| r[0].clone())
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0)
    };
    let mut child = run();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        // Absent for a moment while an online run moves it.
        let column_is_bytea = text_rows(&format!(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
              WHERE attrelid = '{table}'::regclass AND attname = 'phone'"
        ))
        .first()
        .and_then(|r| r[0].as_deref())
            == Some("bytea");
        if column_is_bytea && shaped() >= 1000 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = shaped();
    assert!(
        partial > 0 && partial < 20000,
        "kill landed mid-run ({partial} of 20000 encrypted)"
    );
    let status = run().wait().unwrap();
    assert!(status.success());
    let versions = assert_decrypts(&cfg, table, "phone", "text", Mode::Searchable, &original);
    assert_eq!(versions.values().sum::<usize>(), 20000);
}

#[test]
fn rotation_then_reencrypt_then_destroy_keeps_every_row() {
    let table = "mig_rotate";
    db().psql(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigint PRIMARY KEY, name text, born date); \
         INSERT INTO {table} SELECT i, 'guest ' || i, date '1970-01-01' + i FROM generate_series(1, 5000) i;"
    ))
    .unwrap();
    let names = originals(table, "name");
    let born = originals(table, "born");
    let keyring = own_keyring();
    let tmp = tempfile::tempdir().unwrap();
    let policies =
        policy(table, "name", "text", "randomized") + &policy(table, "born", "date", "searchable");
    let (path, cfg) = write_config(tmp.path(), keyring.path(), &policies);
    pgveil::migrate::run(MigrateCommand::Encrypt(args(&path, None, 1000))).unwrap();
    let active_before = Keyring::load(&cfg.keyring).unwrap().active_version();
    use pgveil::crypto::cli::{run as keyring_cmd, KeyringCommand};
    keyring_cmd(&KeyringCommand::Rotate, &cfg.keyring, &mut Vec::new()).unwrap();
    // Half the rows are rewritten under the new version (as new writes would be).
    pgveil::migrate::run(MigrateCommand::Reencrypt(args(
        &path,
        Some((table, "name")),
        300,
    )))
    .unwrap();
    let v = assert_decrypts(&cfg, table, "name", "text", Mode::Randomized, &names);
    assert_eq!(v.keys().copied().collect::<Vec<_>>(), [active_before + 1]);
    pgveil::migrate::run(MigrateCommand::Reencrypt(args(&path, None, 1000))).unwrap();
    keyring_cmd(
        &KeyringCommand::Destroy {
            version: active_before,
            yes: true,
        },
        &cfg.keyring,
        &mut Vec::new(),
    )
    .unwrap();
    let v = assert_decrypts(&cfg, table, "born", "date", Mode::Searchable, &born);
    assert_eq!(v.keys().copied().collect::<Vec<_>>(), [active_before + 1]);
    assert_decrypts(&cfg, table, "name", "text", Mode::Randomized, &names);
}

#[test]
fn a_bad_value_stops_the_run_naming_the_row_and_keeping_earlier_batches() {
    let table = "mig_bad";
    db().psql(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int PRIMARY KEY, n text); \
         INSERT INTO {table} SELECT i, CASE WHEN i = 2500 THEN 'secret-not-a-number' ELSE i::text END \
           FROM generate_series(1, 3000) i;"
    ))
    .unwrap();
    let (_tmp, path, _) = demo_config(&policy(table, "n", "int4", "randomized"));
    let err = pgveil::migrate::run(MigrateCommand::Encrypt(args(
        &path,
        Some((table, "n")),
        1000,
    )))
    .unwrap_err()
    .to_string();
    assert!(err.contains("primary key (\"id\")=(2500)"), "{err}");
    assert!(err.contains("int4"), "{err}");
    assert!(!err.contains("secret"), "value leaked: {err}");
    // Batches 1-2000 are committed; the failing batch rolled back.
    let done = text_rows(&format!(
        "SELECT count(*) FILTER (WHERE get_byte(n, 0) = 1), count(*) FROM {table}"
    ));
    assert_eq!(done[0][0].as_deref(), Some("2000"));
}

#[test]
fn a_table_rewrite_larger_than_allowed_is_refused_before_anything_changes() {
    let table = "mig_big";
    db().psql(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int PRIMARY KEY, phone text); \
         INSERT INTO {table} SELECT i, (13800000000 + i)::text FROM generate_series(1, 20000) i;"
    ))
    .unwrap();
    let type_of = || {
        text_rows(&format!(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
              WHERE attrelid = '{table}'::regclass AND attname = 'phone'"
        ))[0][0]
            .clone()
    };
    let (_tmp, path, _) = demo_config(&policy(table, "phone", "text", "searchable"));
    let mut small = args(&path, Some((table, "phone")), 1000);
    small.max_rewrite_mb = 0;
    small.in_place = true;
    let err = pgveil::migrate::run(MigrateCommand::Encrypt(small.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ACCESS EXCLUSIVE") && err.contains("--max-rewrite-mb"),
        "{err}"
    );
    assert_eq!(type_of().as_deref(), Some("text"), "nothing may change");
    // Allowed: it runs, and the way back is checked the same way.
    pgveil::migrate::run(MigrateCommand::Encrypt(args(
        &path,
        Some((table, "phone")),
        1000,
    )))
    .unwrap();
    assert_eq!(type_of().as_deref(), Some("bytea"));
    let err = pgveil::migrate::run(MigrateCommand::Decrypt(small))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--max-rewrite-mb"), "{err}");
    assert_eq!(type_of().as_deref(), Some("bytea"));
    let state = text_rows(&format!(
        "SELECT state FROM pgveil.migrations WHERE table_name = '{table}' AND column_name = 'phone'"
    ));
    assert_eq!(
        state[0][0].as_deref(),
        Some("encrypted"),
        "decrypt must not have started"
    );
}

#[test]
fn a_table_without_primary_key_is_batched_by_ctid() {
    let table = "mig_nopk";
    db().psql(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int, email text); \
         INSERT INTO {table} SELECT i, 'user' || i || '@example.com' FROM generate_series(1, 5000) i; ANALYZE {table};"
    ))
    .unwrap();
    let original = originals(table, "email");
    let (_tmp, path, cfg) = demo_config(&policy(table, "email", "varchar", "randomized"));
    pgveil::migrate::run(MigrateCommand::Encrypt(args(&path, None, 400))).unwrap();
    assert_decrypts(&cfg, table, "email", "varchar", Mode::Randomized, &original);
}

/// Policies for every column of the all-types table (modes alternate) and
/// a role that sees everything in the clear, for reading back.
/// A policy role that sees every column in clear, for `postgres`.
const ROLE_ALL: &str = "\n[[roles]]\nname = \"all\"\nmembers = [\"postgres\"]\nclearance = 4\n";

/// After an online move of a NOT NULL column: NOT NULL is back and no
/// hidden column is left.
fn assert_moved_with_not_null(table: &str, column: &str) {
    let rest = text_rows(&format!(
        "SELECT attnotnull::text, (SELECT count(*) FROM pg_attribute WHERE attrelid = '{table}'::regclass \
                AND attname LIKE '%legacy%' AND NOT attisdropped)::text \
           FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attname = '{column}'"
    ));
    assert_eq!(rest, vec![vec![Some("true".into()), Some("0".into())]]);
}

fn all_type_policies(table: &str) -> String {
    let mut policies = String::new();
    for (i, (c, _, ty, _)) in TYPES.iter().enumerate() {
        let mode = if i % 2 == 0 {
            "randomized"
        } else {
            "searchable"
        };
        policies.push_str(&policy(table, c, ty, mode));
    }
    policies + ROLE_ALL
}

#[test]
fn fifty_thousand_rows_of_every_type_migrate_under_a_live_writer() {
    let table = "mig_live";
    create_all_types(table, 50_000);
    let mut expected: Vec<HashMap<i64, Option<String>>> =
        TYPES.iter().map(|t| originals(table, t.0)).collect();
    let (_tmp, path, cfg) = demo_config(&all_type_policies(table));
    let proxy = start_proxy(cfg.clone());
    let migrate = std::thread::spawn({
        let path = path.clone();
        move || pgveil::migrate::run(MigrateCommand::Encrypt(args(&path, None, 1000)))
    });
    let written = rt().block_on(async {
        let direct = connect_direct().await;
        // Writes through pgveil need the column to be bytea (step 1).
        loop {
            // Absent for a moment while the online run moves it.
            let ty: Option<String> = direct
                .query_opt(
                    &format!(
                        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                          WHERE attrelid = '{table}'::regclass AND attname = 'c_text'"
                    ),
                    &[],
                )
                .await
                .unwrap()
                .map(|r| r.get(0));
            // A failed run ends the wait; the join below reports it.
            if ty.as_deref() == Some("bytea") || migrate.is_finished() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let c = connect_to(proxy.local_addr(), "postgres", None)
            .await
            .unwrap();
        let insert = c
            .prepare(&format!(
                "INSERT INTO {table} (c_text, note) VALUES ($1, 'live') RETURNING id"
            ))
            .await
            .unwrap();
        let update = c
            .prepare(&format!("UPDATE {table} SET c_text = $1 WHERE id = $2"))
            .await
            .unwrap();
        let mut written = Vec::new();
        let mut i = 0i64;
        while !migrate.is_finished() || i < 200 {
            i += 1;
            let v = format!("live {i} ü");
            let id: i32 = c.query_one(&insert, &[&v]).await.unwrap().get(0);
            written.push((i64::from(id), v, true));
            // Rewrite a row spread over the table, ahead of and behind the batches.
            let target = (i * 7919) % 50_000 + 1;
            let v = format!("updated {i}");
            c.execute(&update, &[&v, &(target as i32)]).await.unwrap();
            written.push((target, v, false));
        }
        written
    });
    migrate.join().unwrap().unwrap();
    for (id, v, inserted) in written {
        expected[0].insert(id, Some(v));
        if inserted {
            for other in expected.iter_mut().skip(1) {
                other.insert(id, None);
            }
        }
    }
    assert!(expected[0].len() > 50_000);
    // At rest: every value is an envelope of its column.
    for (i, (c, _, ty, _)) in TYPES.iter().enumerate() {
        let mode = if i % 2 == 0 {
            Mode::Randomized
        } else {
            Mode::Searchable
        };
        assert_decrypts(&cfg, table, c, ty, mode, &expected[i]);
    }
    // Through pgveil: every value reads back equal, in text format.
    let cols: Vec<&str> = TYPES.iter().map(|t| t.0).collect();
    let rows = rt().block_on(async {
        let c = connect_to(proxy.local_addr(), "postgres", None)
            .await
            .unwrap();
        c.simple_query(&format!("SELECT id, {} FROM {table}", cols.join(", ")))
            .await
            .unwrap()
    });
    let mut seen = 0;
    for m in rows {
        let tokio_postgres::SimpleQueryMessage::Row(r) = m else {
            continue;
        };
        seen += 1;
        let id: i64 = r.get(0).unwrap().parse().unwrap();
        for (k, (c, _, ty, _)) in TYPES.iter().enumerate() {
            let want = expected[k][&id].as_deref();
            let want = if *ty == "char" {
                want.map(|w| w.trim_end_matches(' '))
            } else {
                want
            };
            assert_eq!(r.get(k + 1), want, "{c} of row {id} through pgveil");
        }
    }
    assert_eq!(seen, expected[0].len());
    proxy.shutdown();
}

#[test]
fn pgveil_reads_legacy_plaintext_only_while_a_column_is_migrating() {
    let table = "mig_mixed";
    db().psql(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int PRIMARY KEY, phone text, born date); \
         INSERT INTO {table} SELECT i, '139' || lpad(i::text, 8, '0'), date '1990-01-01' + i \
           FROM generate_series(1, 50) i;"
    ))
    .unwrap();
    let (_tmp, path, cfg) = demo_config(
        &(policy(table, "phone", "text", "searchable")
            + &policy(table, "born", "date", "randomized")
            + ROLE_ALL),
    );
    let mut in_place = args(&path, None, 20);
    in_place.in_place = true;
    pgveil::migrate::run(MigrateCommand::Encrypt(in_place)).unwrap();
    // The state of a run that is still going: rows 51.. are not encrypted yet.
    db().psql(&format!(
        "INSERT INTO {table} VALUES (51, convert_to('13900000051', 'UTF8'), convert_to('1990-02-21', 'UTF8')); \
         UPDATE pgveil.migrations SET state = 'encrypting' WHERE table_name = '{table}';"
    ))
    .unwrap();
    let proxy = start_proxy(cfg.clone());
    rt().block_on(async {
        let c = connect_to(proxy.local_addr(), "postgres", None)
            .await
            .unwrap();
        for id in [1i32, 50, 51] {
            // Text format (simple protocol) and binary (extended).
            let sql = format!("SELECT phone, born FROM {table} WHERE id = {id}");
            let msgs = c.simple_query(&sql).await.unwrap();
            let row = msgs
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some((r.get(0).map(str::to_owned), r.get(1).map(str::to_owned)))
                    }
                    _ => None,
                })
                .unwrap();
            let phone = format!("139{id:08}");
            assert_eq!(row.0.as_deref(), Some(phone.as_str()), "row {id}");
            let rows = c
                .query(
                    &format!("SELECT phone, born FROM {table} WHERE id = $1"),
                    &[&id],
                )
                .await
                .unwrap();
            assert_eq!(rows[0].get::<_, String>(0), phone, "row {id} binary");
            let born = match id {
                1 => "1990-01-02",
                50 => "1990-02-20",
                _ => "1990-02-21",
            };
            assert_eq!(row.1.as_deref(), Some(born), "row {id} date");
        }
    });
    // Once the column is recorded as encrypted, the same legacy value is an
    // error again (never shown as plaintext by guesswork).
    db().psql(&format!(
        "UPDATE pgveil.migrations SET state = 'encrypted' WHERE table_name = '{table}';"
    ))
    .unwrap();
    proxy.shutdown();
    let proxy = start_proxy(cfg);
    rt().block_on(async {
        let c = connect_to(proxy.local_addr(), "postgres", None)
            .await
            .unwrap();
        let err = c
            .simple_query(&format!("SELECT phone FROM {table} WHERE id = 51"))
            .await
            .unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some("XX001"), "{err}");
        let ok = c
            .simple_query(&format!("SELECT phone FROM {table} WHERE id = 5"))
            .await;
        assert!(ok.is_ok(), "{ok:?}");
    });
    proxy.shutdown();
}

/// Starts `pgveil migrate encrypt` of `table.column` (online, batches of
/// 10) on its own thread, for tests that read and write meanwhile.
fn encrypt_in_background(
    path: &Path,
    table: &'static str,
    column: &'static str,
) -> std::thread::JoinHandle<Result<(), pgveil::migrate::MigrateError>> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        let mut a = args(&path, Some((table, column)), 10);
        a.all = false;
        pgveil::migrate::run(MigrateCommand::Encrypt(a))
    })
}

/// Waits until an online run has added `column` again beside its hidden
/// twin; fails when the run ends first.
async fn wait_for_new_column<T>(
    direct: &tokio_postgres::Client,
    table: &str,
    column: &str,
    migrate: &std::thread::JoinHandle<T>,
) {
    let sql = format!(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = '{table}'::regclass \
           AND attname IN ('{column}', '__pgveil_legacy_{column}') AND NOT attisdropped"
    );
    while direct.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) < 2 {
        assert!(
            !migrate.is_finished(),
            "the migration ended before it added the new column"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Makes an online run of `table` wait at row `id` until [`resume`]: a
/// trigger on that row's UPDATE takes a shared advisory lock that the
/// returned connection holds. Set before the run starts, it keeps the row
/// (and every batch after it) unmoved for as long as the test reads,
/// however fast or slow the machine: a row lock could only be taken once
/// the new column exists (the column change would wait for it), and a run
/// can finish before a test that waits for that window sees it.
async fn pause_at_row(table: &str, id: i32) -> tokio_postgres::Client {
    db().psql(&format!(
        "CREATE OR REPLACE FUNCTION {table}_pause() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN PERFORM pg_advisory_xact_lock_shared(hashtext('{table}')); RETURN NEW; END $$; \
         CREATE TRIGGER {table}_pause BEFORE UPDATE ON {table} FOR EACH ROW \
           WHEN (OLD.id = {id}) EXECUTE FUNCTION {table}_pause();"
    ))
    .unwrap();
    let pauser = connect_direct().await;
    pauser
        .execute(
            &format!("SELECT pg_advisory_lock(hashtext('{table}'))"),
            &[],
        )
        .await
        .unwrap();
    pauser
}

/// Lets a run paused by [`pause_at_row`] go on (within the batches'
/// `lock_timeout` of 5 s, or the run stops).
async fn resume(pauser: tokio_postgres::Client, table: &str) {
    pauser
        .execute(
            &format!("SELECT pg_advisory_unlock(hashtext('{table}'))"),
            &[],
        )
        .await
        .unwrap();
}

/// Runs `op` again while PostgreSQL or pgveil says the column is moving
/// under it (docs/MIGRATE.md, "Online"): an undefined column (between the
/// two steps of the split), a value that is not an envelope (read by a
/// pgveil that has not reloaded since the rename), a serialization failure (pgveil refuses a
/// result its catalog is not ready for), a prepared statement the server
/// re-planned or lost meanwhile. Any other error fails the test.
async fn retrying<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
{
    for _ in 0..200 {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                use tokio_postgres::error::SqlState;
                let code = e.code().cloned();
                let message = e.as_db_error().map(|d| d.message()).unwrap_or_default();
                let transient = code == Some(SqlState::T_R_SERIALIZATION_FAILURE)
                    || code == Some(SqlState::UNDEFINED_COLUMN)
                    || code == Some(SqlState::INVALID_SQL_STATEMENT_NAME)
                    || message == "cached plan must not change result type"
                    // Read by a pgveil that has not seen the rename yet: the
                    // hidden column is where it expects envelopes.
                    || (code == Some(SqlState::DATA_CORRUPTED) && message.contains("not a pgveil envelope"));
                assert!(transient, "unexpected error: {e:?}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    panic!("still failing after 200 tries");
}

#[test]
fn online_encrypt_keeps_the_table_readable_and_writable_through_pgveil() {
    let table = "mig_online";
    db().psql(&format!(
        "DROP TABLE IF EXISTS {table}; \
         CREATE TABLE {table} (id int PRIMARY KEY, phone text NOT NULL, note text); \
         CREATE INDEX {table}_phone ON {table} (phone); \
         INSERT INTO {table} SELECT i, '139' || lpad(i::text, 8, '0'), 'n' || i \
           FROM generate_series(1, 10000) i;"
    ))
    .unwrap();
    let mut expected = originals(table, "phone");
    let (_tmp, path, cfg) = demo_config(&(policy(table, "phone", "text", "searchable") + ROLE_ALL));
    let proxy = start_proxy(cfg.clone());
    let addr = proxy.local_addr();
    let (mid_reads, written) = rt().block_on(async {
        let c = connect_to(addr, "postgres", None).await.unwrap();
        // Prepared before the migration starts: prepared again by pgveil
        // when the column moves, and again when it has moved.
        let by_id = c
            .prepare(&format!("SELECT id, phone FROM {table} WHERE id = $1"))
            .await
            .unwrap();
        // The run cannot finish its last batch until the first round below
        // is over, so that round reads while old values remain.
        let mut pause = Some(pause_at_row(table, 10000).await);
        let migrate = encrypt_in_background(&path, table, "phone");
        let direct = connect_direct().await;
        let pending = || async {
            direct
                .query_one(
                    &format!(
                        "SELECT count(*) FROM pg_attribute WHERE attrelid = '{table}'::regclass \
                           AND attname = '__pgveil_legacy_phone' AND NOT attisdropped"
                    ),
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 1
        };
        while !pending().await {
            assert!(
                !migrate.is_finished(),
                "the migration ended before it split the column"
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        wait_for_new_column(&direct, table, "phone", &migrate).await;
        let mut mid_reads = 0;
        let mut written = Vec::new();
        let mut i = 0i32;
        while !migrate.is_finished() {
            i += 1;
            // Rows of the last batch wait for the held row: not written here.
            let id = (i * 7919) % 9900 + 1;
            let still_legacy = pending().await;
            // The prepared statement, in binary format.
            let row = retrying(|| async { c.query_one(&by_id, &[&id]).await }).await;
            let want = expected[&i64::from(id)].clone();
            assert_eq!(row.get::<_, Option<String>>(1), want, "row {id}");
            // `*`, in text format: the column is last while it moves.
            let sql = format!("SELECT * FROM {table} WHERE id = {id}");
            let msgs = retrying(|| async { c.simple_query(&sql).await }).await;
            let row = msgs
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                    _ => None,
                })
                .unwrap();
            let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
            assert_eq!(names, ["id", "note", "phone"]);
            assert_eq!(row.get(2).map(str::to_owned), want, "row {id} by *");
            // A condition sees both forms.
            let nulls: i64 = retrying(|| async {
                c.query_one(
                    &format!("SELECT count(*) FROM {table} WHERE phone IS NULL"),
                    &[],
                )
                .await
            })
            .await
            .get(0);
            assert_eq!(nulls, 0);
            // Writes go to the new column and win over the old value.
            if i % 3 == 1 {
                let v = format!("updated {i}");
                retrying(|| async {
                    c.execute(
                        &format!("UPDATE {table} SET phone = $1 WHERE id = $2"),
                        &[&v, &id],
                    )
                    .await
                })
                .await;
                expected.insert(i64::from(id), Some(v.clone()));
                written.push(id);
            }
            if still_legacy && pending().await {
                mid_reads += 1;
                // Only pgveil's own rewrites may read the old values.
                let err = c
                    .simple_query(&format!("SELECT __pgveil_legacy_phone FROM {table}"))
                    .await
                    .unwrap_err();
                assert!(
                    err.as_db_error()
                        .is_some_and(|d| d.message().contains("cannot be named")),
                    "{err:?}"
                );
                // COPY TO reads both forms too, every row.
                if mid_reads == 1 {
                    use futures_util::TryStreamExt;
                    let sql = format!("COPY {table} (id, phone) TO STDOUT");
                    let chunks: Vec<bytes::Bytes> =
                        retrying(|| async { c.copy_out(&sql).await?.try_collect().await }).await;
                    let text = String::from_utf8(chunks.concat()).unwrap();
                    let mut lines = 0;
                    for line in text.lines() {
                        let (id, phone) = line.split_once('\t').unwrap();
                        let id: i64 = id.parse().unwrap();
                        assert_eq!(Some(phone), expected[&id].as_deref(), "COPY row {id}");
                        lines += 1;
                    }
                    assert_eq!(lines, expected.len());
                }
                let err = c
                    .execute(
                        &format!("INSERT INTO {table} VALUES (99999, 'x', 'y')"),
                        &[],
                    )
                    .await
                    .unwrap_err();
                assert!(
                    err.as_db_error()
                        .is_some_and(|d| d.message().contains("column list")),
                    "{err:?}"
                );
            }
            // One round with the run paused is enough.
            if let Some(pause) = pause.take() {
                resume(pause, table).await;
            }
        }
        if let Some(pause) = pause.take() {
            resume(pause, table).await;
        }
        migrate.join().unwrap().unwrap();
        // After the move, the statement prepared before it still reads.
        for id in [1, 5000, 10000] {
            let row = retrying(|| async { c.query_one(&by_id, &[&id]).await }).await;
            assert_eq!(
                row.get::<_, Option<String>>(1),
                expected[&i64::from(id)],
                "row {id} after"
            );
        }
        (mid_reads, written)
    });
    assert!(
        mid_reads > 0,
        "no read happened while the column was moving"
    );
    assert!(!written.is_empty());
    // At rest: envelopes only, the hidden column gone, NOT NULL back.
    assert_decrypts(&cfg, table, "phone", "text", Mode::Searchable, &expected);
    assert_moved_with_not_null(table, "phone");
    let raw = db().psql(&format!("COPY {table} TO STDOUT")).unwrap();
    assert!(!raw.contains("13900000"), "plaintext at rest");
    proxy.shutdown();
}

/// A `bytea` column added to a protected table behind pgveil's back may be
/// the envelope column of an online move that pgveil has not heard of: it
/// is refused (40001) until the catalog has reloaded, which the refusal
/// itself sets off, and then read as the plain column it is.
#[test]
fn a_bytea_column_pgveil_has_not_seen_is_refused_until_the_catalog_reloads() {
    let table = "mig_added";
    db().psql(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int PRIMARY KEY, phone bytea, note text); \
         INSERT INTO {table} VALUES (1, NULL, 'a');"
    ))
    .unwrap();
    let (_tmp, _, cfg) = demo_config(&(policy(table, "phone", "text", "searchable") + ROLE_ALL));
    let proxy = start_proxy(cfg);
    rt().block_on(async {
        let c = connect_to(proxy.local_addr(), "postgres", None)
            .await
            .unwrap();
        let sql = format!("SELECT id, note FROM {table}");
        assert_eq!(c.simple_query(&sql).await.unwrap().len(), 3);
        // Other tests' migrations notify every pgveil of this database, so
        // a reload may slip in between the change and the read: try a few
        // new columns, and require a refusal for at least one.
        let mut refused = None;
        let mut sql = String::new();
        for n in 0..5 {
            db().psql(&format!(
                "ALTER TABLE {table} ADD COLUMN extra{n} bytea; UPDATE {table} SET extra{n} = '\\x0102';"
            ))
            .unwrap();
            sql = format!("SELECT extra{n} FROM {table}");
            if let Err(e) = c.query(&sql, &[]).await {
                refused = Some(e);
                break;
            }
        }
        let err = refused.expect("an unseen bytea column was read before any catalog reload");
        let db_err = err.as_db_error().unwrap();
        assert_eq!(
            db_err.code(),
            &tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
        );
        assert!(db_err.message().contains("does not know yet"), "{db_err:?}");
        // The other connections' statements are unaffected meanwhile.
        let other = connect_to(proxy.local_addr(), "postgres", None)
            .await
            .unwrap();
        other
            .simple_query(&format!("SELECT id, note FROM {table}"))
            .await
            .unwrap();
        let rows = retrying(|| async { c.query(&sql, &[]).await }).await;
        assert_eq!(rows[0].get::<_, Vec<u8>>(0), vec![1u8, 2]);
    });
    proxy.shutdown();
}

/// What an online move would leave on the old values is named up front,
/// and nothing changes; `--in-place` is the way around it.
#[test]
fn an_online_move_refuses_dependents_it_would_strand() {
    let table = "mig_deps";
    db().psql(&format!(
        "DROP VIEW IF EXISTS {table}_v; DROP TABLE IF EXISTS {table}; \
         CREATE TABLE {table} (id int PRIMARY KEY, phone text DEFAULT 'none', note text); \
         INSERT INTO {table} SELECT i, 'p' || i, 'n' FROM generate_series(1, 10) i; \
         CREATE VIEW {table}_v AS SELECT id, phone FROM {table};"
    ))
    .unwrap();
    let (_tmp, path, cfg) = demo_config(&policy(table, "phone", "text", "randomized"));
    let one = || args(&path, Some((table, "phone")), 1000);
    let err = pgveil::migrate::run(MigrateCommand::Encrypt(one()))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("view {table}_v")), "{err}");
    assert!(err.contains("default value"), "{err}");
    assert!(err.contains("--in-place"), "{err}");
    let columns = text_rows(&format!(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
          WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    ));
    assert_eq!(
        columns,
        [["id", "integer"], ["phone", "text"], ["note", "text"]]
            .map(|r| r.map(|c| Some(c.to_owned())).to_vec())
            .to_vec()
    );
    // Without them, the move runs.
    db().psql(&format!(
        "DROP VIEW {table}_v; ALTER TABLE {table} ALTER COLUMN phone DROP DEFAULT;"
    ))
    .unwrap();
    pgveil::migrate::run(MigrateCommand::Encrypt(one())).unwrap();
    let originals: HashMap<i64, Option<String>> =
        (1..=10).map(|i| (i, Some(format!("p{i}")))).collect();
    assert_decrypts(&cfg, table, "phone", "text", Mode::Randomized, &originals);
}

/// A `date` as its binary wire form: days since 2000-01-01.
struct WireDate(i32);

impl<'a> tokio_postgres::types::FromSql<'a> for WireDate {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(WireDate(i32::from_be_bytes(raw.try_into()?)))
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::DATE
    }
}

/// A client's `DateStyle` (or its `search_path`) does not reach the old
/// values of a date column moving online: a row not moved yet reads like a
/// moved one, in text and in binary format.
#[test]
fn a_client_date_style_does_not_change_dates_not_moved_yet() {
    let table = "mig_datestyle";
    let rows = 2000;
    db().psql(&format!(
        "DROP TABLE IF EXISTS {table}; \
         CREATE TABLE {table} (id int PRIMARY KEY, d date); \
         INSERT INTO {table} SELECT i, DATE '2024-03-01' + (i % 300) \
           FROM generate_series(1, {rows}) i;"
    ))
    .unwrap();
    let expected = originals(table, "d");
    let (_tmp, path, cfg) = demo_config(&(policy(table, "d", "date", "randomized") + ROLE_ALL));
    let proxy = start_proxy(cfg);
    let addr = proxy.local_addr();
    rt().block_on(async {
        let direct = connect_direct().await;
        let days = |id: i32| {
            let direct = &direct;
            async move {
                direct
                    .query_one(
                        &format!("SELECT (DATE '2024-03-01' + ({id} % 300)) - DATE '2000-01-01'"),
                        &[],
                    )
                    .await
                    .unwrap()
                    .get::<_, i32>(0)
            }
        };
        // The last row stays an old value while this test reads it.
        let pause = pause_at_row(table, rows).await;
        let migrate = encrypt_in_background(&path, table, "d");
        wait_for_new_column(&direct, table, "d", &migrate).await;
        let held_is_old = || async {
            direct
                .query_one(
                    &format!("SELECT __pgveil_legacy_d IS NOT NULL FROM {table} WHERE id = {rows}"),
                    &[],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        };
        assert!(held_is_old().await, "the paused row was moved");

        // Nor does a `convert_to` of the client's earlier in its search_path.
        direct
            .batch_execute(
                "CREATE SCHEMA IF NOT EXISTS pgveil_test_shadow; \
                 CREATE OR REPLACE FUNCTION pgveil_test_shadow.convert_to(text, name) \
                   RETURNS bytea LANGUAGE sql AS $$ SELECT '\\x00'::bytea $$;",
            )
            .await
            .unwrap();
        let c = connect_to(addr, "postgres", None).await.unwrap();
        c.batch_execute(
            "SET DateStyle = 'SQL, DMY'; \
             SET search_path = pgveil_test_shadow, pg_catalog, public",
        )
        .await
        .unwrap();
        let by_id = retrying(|| async {
            c.prepare(&format!("SELECT d FROM {table} WHERE id = $1"))
                .await
        })
        .await;
        for id in [1, rows] {
            let want = expected[&i64::from(id)].clone().unwrap();
            // Text: the ISO form pgveil shows for every stored date.
            let sql = format!("SELECT d FROM {table} WHERE id = {id}");
            let msgs = retrying(|| async { c.simple_query(&sql).await }).await;
            let got = msgs.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            });
            assert_eq!(got.as_deref(), Some(want.as_str()), "row {id} in text");
            // Binary: the same day.
            let row = retrying(|| async { c.query_one(&by_id, &[&id]).await }).await;
            assert_eq!(
                row.get::<_, WireDate>(0).0,
                days(id).await,
                "row {id} in binary"
            );
        }
        assert!(
            held_is_old().await,
            "the held row must still hold its old value while read"
        );
        resume(pause, table).await;
        migrate.join().unwrap().unwrap();
    });
}

/// A run stopped between renaming the column and adding it again (the
/// state a kill at that moment leaves) is finished by the next run.
#[test]
fn a_run_stopped_between_the_rename_and_the_new_column_resumes() {
    let table = "mig_split";
    db().psql(&format!(
        "DROP TABLE IF EXISTS {table}; \
         CREATE TABLE {table} (id int PRIMARY KEY, phone text NOT NULL, note text); \
         INSERT INTO {table} SELECT i, 'p' || i, 'n' FROM generate_series(1, 500) i; \
         CREATE SCHEMA IF NOT EXISTS pgveil; \
         CREATE TABLE IF NOT EXISTS pgveil.migrations ( \
           table_schema text NOT NULL, table_name text NOT NULL, column_name text NOT NULL, \
           state text NOT NULL CHECK (state IN ('encrypting', 'encrypted', 'decrypting')), \
           original_type text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), \
           PRIMARY KEY (table_schema, table_name, column_name)); \
         ALTER TABLE pgveil.migrations ADD COLUMN IF NOT EXISTS legacy_column text; \
         DELETE FROM pgveil.migrations WHERE table_name = '{table}'; \
         INSERT INTO pgveil.migrations (table_schema, table_name, column_name, state, original_type, legacy_column) \
           VALUES ('public', '{table}', 'phone', 'encrypting', 'text', '__pgveil_legacy_phone'); \
         ALTER TABLE {table} RENAME COLUMN phone TO __pgveil_legacy_phone;"
    ))
    .unwrap();
    let (_tmp, path, cfg) = demo_config(&policy(table, "phone", "text", "randomized"));
    pgveil::migrate::run(MigrateCommand::Encrypt(args(
        &path,
        Some((table, "phone")),
        100,
    )))
    .unwrap();
    let originals: HashMap<i64, Option<String>> =
        (1..=500).map(|i| (i, Some(format!("p{i}")))).collect();
    assert_decrypts(&cfg, table, "phone", "text", Mode::Randomized, &originals);
    assert_moved_with_not_null(table, "phone");
}
