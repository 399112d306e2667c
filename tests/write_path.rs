//! Encrypt on write, end to end: applications write plaintext through
//! pgveil with ordinary drivers; PostgreSQL stores only envelopes. Every
//! test reads the raw table directly from PostgreSQL to prove it, and
//! every refusal is tried through a real driver.

mod common;

use common::*;
use futures_util::SinkExt;
use pgveil::config::Config;
use pgveil::server::Proxy;
use std::net::SocketAddr;
use std::sync::OnceLock;
use tokio_postgres::error::SqlState;

const POLICY: &str = r#"
[[columns]]
table = "public.guests"
column = "name"
type = "text"
encrypt = "randomized"
level = 3
mask = "name"

[[columns]]
table = "guests"
column = "id_number"
type = "text"
encrypt = "searchable"
level = 4
mask = "cn_id"

[[columns]]
table = "guests"
column = "phone"
type = "text"
encrypt = "searchable"
level = 3
mask = "phone"

[[columns]]
table = "guests"
column = "email"
type = "text"
encrypt = "none"
level = 3
mask = "email"

[[columns]]
table = "guests"
column = "birth_date"
type = "date"
encrypt = "randomized"
level = 2
mask = "year"

[[columns]]
table = "guests"
column = "vip_level"
type = "int4"
encrypt = "searchable"
level = 2
"#;

fn protected_config(keyring_dir: &std::path::Path) -> Config {
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n\n[keyring]\ndir = \"{}\"\nmaster_key_file = \"{}\"\n{POLICY}",
        db().addr(),
        keyring_dir.display(),
        demo_master_key_file().display()
    );
    Config::parse(&text).unwrap()
}

fn setup_schema() {
    db().psql(
        "DROP TABLE IF EXISTS guests, stays; \
         CREATE TABLE guests (id serial PRIMARY KEY, name bytea, id_number bytea UNIQUE, \
           phone bytea, email text, birth_date bytea, vip_level bytea, note text); \
         CREATE TABLE stays (id serial PRIMARY KEY, guest_id int, room text);",
    )
    .unwrap();
}

/// The protected proxy shared by this binary (schema created first).
fn veil() -> SocketAddr {
    static PROXY: OnceLock<Proxy> = OnceLock::new();
    PROXY
        .get_or_init(|| {
            setup_schema();
            let dir = demo_keyring_dir();
            start_proxy(protected_config(&dir))
        })
        .local_addr()
}

async fn client() -> tokio_postgres::Client {
    connect_to(veil(), "postgres", None).await.unwrap()
}

/// Everything PostgreSQL stores for `guests`, read directly.
fn raw_guests() -> String {
    db().psql("COPY guests TO STDOUT").unwrap()
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Asserts that no plaintext value (nor its hex form, as bytea would
/// print it) is stored anywhere in the table.
fn assert_not_stored(values: &[&str]) {
    let raw = raw_guests();
    for v in values {
        assert!(!raw.contains(v), "plaintext {v:?} stored:\n{raw}");
        assert!(
            !raw.contains(&hex(v)),
            "hex of plaintext {v:?} stored:\n{raw}"
        );
    }
}

async fn ids(c: &tokio_postgres::Client, sql: &str) -> Vec<i32> {
    let mut v: Vec<i32> = c
        .simple_query(sql)
        .await
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|s| s.parse().ok()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn simple_protocol_inserts_store_only_envelopes() {
    let c = client().await;
    c.batch_execute(
        "INSERT INTO guests (name, id_number, phone, email, birth_date, vip_level, note) VALUES \
           ('张三丰', '110105194912310021', '13800138000', 'zhang@example.com', '1949-12-31', '042', 'sp1'), \
           ('Alice Smith', '310101199001010012', '13900139000', 'alice@example.com', DEFAULT, NULL, 'sp1'); \
         INSERT INTO guests VALUES (DEFAULT, 'Bob Jones', '440106198502020033', '13700137000', 'bob@example.com', '1985-02-02', 7, 'sp2');",
    )
    .await
    .unwrap();
    assert_not_stored(&[
        "张三丰",
        "110105194912310021",
        "13800138000",
        "Alice Smith",
        "13900139000",
        "Bob Jones",
        "13700137000",
        "1949-12-31",
    ]);
    // Plaintext columns (encrypt = "none") stay readable in the database.
    assert!(raw_guests().contains("zhang@example.com"));
    // Searchable equality finds the rows; '42' and '042' are one int4 value.
    let one = ids(&c, "SELECT id FROM guests WHERE phone = '13800138000'").await;
    assert_eq!(one.len(), 1);
    assert_eq!(
        ids(
            &c,
            "SELECT id FROM guests WHERE vip_level = '42' AND note = 'sp1'"
        )
        .await,
        one
    );
    assert_eq!(
        ids(&c, "SELECT id FROM guests WHERE vip_level = 42").await,
        one
    );
    let both = ids(
        &c,
        "SELECT id FROM guests WHERE phone IN ('13800138000', '13900139000')",
    )
    .await;
    assert_eq!(both.len(), 2);
    let not_first = ids(
        &c,
        "SELECT id FROM guests WHERE note = 'sp1' AND phone <> '13800138000'",
    )
    .await;
    assert_eq!(not_first.len(), 1);
    assert_eq!(
        ids(
            &c,
            "SELECT id FROM guests WHERE note = 'sp1' AND vip_level IS NULL"
        )
        .await
        .len(),
        1
    );
}

#[tokio::test]
async fn extended_protocol_binds_plain_values_to_protected_columns() {
    let c = client().await;
    let insert = c
        .prepare("INSERT INTO guests (name, id_number, phone, note) VALUES ($1, $2, $3, $4) RETURNING id")
        .await
        .unwrap();
    // Drivers see the logical types, so a &str binds to a bytea column.
    assert_eq!(insert.params()[0], tokio_postgres::types::Type::TEXT);
    assert_eq!(insert.params()[2], tokio_postgres::types::Type::TEXT);
    let mut inserted = Vec::new();
    for i in 0..20 {
        let phone = format!("1860000{i:04}");
        let id_number = format!("51010420000101{i:04}");
        let row = c
            .query_one(&insert, &[&format!("扩展 {i}"), &id_number, &phone, &"ext"])
            .await
            .unwrap();
        inserted.push(row.get::<_, i32>(0));
    }
    assert_not_stored(&["18600000007", "510104200001010007", "扩展 7"]);
    // Lookup with a bound parameter, prepared once, executed many times.
    let find = c
        .prepare("SELECT id FROM guests WHERE phone = $1")
        .await
        .unwrap();
    assert_eq!(find.params()[0], tokio_postgres::types::Type::TEXT);
    for i in [0, 7, 19] {
        let rows = c.query(&find, &[&format!("1860000{i:04}")]).await.unwrap();
        assert_eq!(rows.len(), 1, "phone #{i}");
        assert_eq!(rows[0].get::<_, i32>(0), inserted[i]);
    }
    // A protected int4 takes an i32 parameter.
    let n = c
        .execute(
            "UPDATE guests SET vip_level = $1 WHERE id_number = $2",
            &[&5i32, &"510104200001010003"],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let rows = c
        .query(
            "SELECT id FROM guests WHERE vip_level = $1 AND note = 'ext'",
            &[&5i32],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i32>(0), inserted[3]);
}

#[tokio::test]
async fn update_delete_and_upsert() {
    let c = client().await;
    c.batch_execute(
        "INSERT INTO guests (name, id_number, phone, note) VALUES ('Up Date', '110105197001010099', '13500135000', 'upd')",
    )
    .await
    .unwrap();
    c.batch_execute(
        "UPDATE guests SET phone = '13511111111' WHERE id_number = '110105197001010099'",
    )
    .await
    .unwrap();
    assert_eq!(
        ids(&c, "SELECT id FROM guests WHERE phone = '13500135000'")
            .await
            .len(),
        0
    );
    assert_eq!(
        ids(&c, "SELECT id FROM guests WHERE phone = '13511111111'")
            .await
            .len(),
        1
    );
    // ON CONFLICT on the searchable unique column.
    c.batch_execute(
        "INSERT INTO guests (name, id_number, phone, note) VALUES ('Up Date', '110105197001010099', '13522222222', 'upd') \
         ON CONFLICT (id_number) DO UPDATE SET phone = EXCLUDED.phone",
    )
    .await
    .unwrap();
    assert_eq!(
        ids(&c, "SELECT id FROM guests WHERE phone = '13522222222'")
            .await
            .len(),
        1
    );
    assert_not_stored(&[
        "13500135000",
        "13511111111",
        "13522222222",
        "110105197001010099",
    ]);
    // Transactions and savepoints keep working.
    c.batch_execute(
        "BEGIN; SAVEPOINT a; UPDATE guests SET phone = '13533333333' WHERE note = 'upd'; \
         ROLLBACK TO SAVEPOINT a; COMMIT;",
    )
    .await
    .unwrap();
    assert_eq!(
        ids(&c, "SELECT id FROM guests WHERE phone = '13522222222'")
            .await
            .len(),
        1
    );
    let n = c
        .execute("DELETE FROM guests WHERE phone = $1", &[&"13522222222"])
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn copy_from_stdin_encrypts_text_and_csv() {
    let c = client().await;
    let sink = c
        .copy_in("COPY guests (name, phone, id_number, note) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..500 {
        data.push_str(&format!(
            "拷贝 {i}\t1770000{i:04}\t4401061980010{i:05}\tcopy\n"
        ));
    }
    // Split mid-row to prove rows are reassembled across CopyData messages.
    let (a, b) = data.split_at(1001);
    sink.send(bytes::Bytes::from(a.to_owned())).await.unwrap();
    sink.send(bytes::Bytes::from(b.to_owned())).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 500);
    let sink = c
        .copy_in("COPY guests (phone, name, note) FROM STDIN WITH (FORMAT csv, HEADER true)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        "phone,name,note\n17888880001,\"Smith, \"\"Jr\"\"\",csv\n17888880002,,csv\n".as_bytes(),
    ))
    .await
    .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    assert_not_stored(&[
        "17700000123",
        "拷贝 123",
        "440106198001000123",
        "17888880001",
        "Smith",
    ]);
    assert_eq!(
        ids(&c, "SELECT id FROM guests WHERE phone = '17700000499'")
            .await
            .len(),
        1
    );
    assert_eq!(
        ids(&c, "SELECT id FROM guests WHERE phone = '17888880001'")
            .await
            .len(),
        1
    );
    assert_eq!(
        ids(
            &c,
            "SELECT id FROM guests WHERE note = 'csv' AND name IS NULL"
        )
        .await
        .len(),
        1
    );
}

/// Runs `sql` through pgveil and returns (SQLSTATE, message) of the error.
async fn refused(c: &tokio_postgres::Client, sql: &str) -> (String, String) {
    let err = c.batch_execute(sql).await.expect_err(sql);
    let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

#[tokio::test]
async fn unaccountable_statements_are_refused() {
    let c = client().await;
    for (sql, column) in [
        ("SELECT id FROM guests WHERE phone LIKE '138%'", "phone"),
        (
            "SELECT id FROM guests WHERE id_number ILIKE '1101%'",
            "id_number",
        ),
        ("SELECT id FROM guests WHERE phone > '13800000000'", "phone"),
        (
            "SELECT id FROM guests WHERE phone BETWEEN '1' AND '2'",
            "phone",
        ),
        ("SELECT id FROM guests ORDER BY phone", "phone"),
        ("SELECT upper(phone::text) FROM guests", "phone"),
        ("SELECT id FROM guests WHERE name = 'Alice Smith'", "name"),
        (
            "UPDATE guests SET phone = upper(note) WHERE id = 1",
            "phone",
        ),
        (
            "INSERT INTO guests (phone) SELECT note FROM guests",
            "phone",
        ),
        ("SELECT id FROM guests WHERE vip_level + 1 = 3", "vip_level"),
    ] {
        let (code, msg) = refused(&c, sql).await;
        assert_eq!(code, "0A000", "{sql}: {msg}");
        assert!(msg.starts_with("pgveil:"), "{sql}: {msg}");
        assert!(
            msg.contains(column),
            "{sql}: message should name {column}: {msg}"
        );
        for literal in ["138", "Alice", "1380000"] {
            assert!(
                !msg.contains(literal),
                "{sql}: message leaks a literal: {msg}"
            );
        }
    }
    // A statement naming a protected table that does not parse.
    let (code, msg) = refused(&c, "SELEC phone FROM guests WHERE").await;
    assert_eq!(code, "0A000");
    assert!(msg.contains("could not be parsed"), "{msg}");
    // COPY in binary format into encrypted columns.
    let err = c
        .copy_in::<_, bytes::Bytes>("COPY guests (phone) FROM STDIN (FORMAT binary)")
        .await
        .err()
        .expect("binary COPY refused");
    assert_eq!(err.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{err}");
    // An invalid value for the logical type: 22P02, value not echoed.
    let (code, msg) = refused(
        &c,
        "INSERT INTO guests (birth_date) VALUES ('not-a-date-xyz')",
    )
    .await;
    assert_eq!(code, "22P02", "{msg}");
    assert!(
        msg.contains("birth_date") && !msg.contains("not-a-date-xyz"),
        "{msg}"
    );
    let err = c
        .execute("INSERT INTO guests (vip_level) VALUES ($1)", &[&"12x"])
        .await;
    assert!(err.is_err(), "text for an int4 column must not be accepted");
    // Statements that touch no protected table pass even if unparsable:
    // the server reports its own error.
    let (code, _) = refused(&c, "SELEC 1 FROM stays").await;
    assert_eq!(code, "42601");
    // The session is still usable.
    assert_eq!(
        c.query_one("SELECT 1::int4", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[tokio::test]
async fn a_refusal_aborts_the_transaction_like_a_server_error() {
    let c = client().await;
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO stays (guest_id, room) VALUES (1, 'tx-room')")
        .await
        .unwrap();
    let (code, _) = refused(&c, "SELECT id FROM guests ORDER BY phone").await;
    assert_eq!(code, "0A000");
    let (code, _) = refused(&c, "SELECT 1").await;
    assert_eq!(code, "25P02", "transaction must be aborted after a refusal");
    c.batch_execute("COMMIT").await.unwrap(); // becomes ROLLBACK on the server
    let n: i64 = connect_direct()
        .await
        .query_one("SELECT count(*) FROM stays WHERE room = 'tx-room'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // Extended protocol: a refused Parse inside a pipeline.
    let (a, b) = tokio::join!(
        c.query("SELECT id FROM guests WHERE phone = $1", &[&"13800138000"]),
        c.query("SELECT id FROM guests WHERE name = $1", &[&"Alice Smith"]),
    );
    assert!(a.is_ok(), "{a:?}");
    let err = b.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{err}");
    assert_eq!(
        c.query_one("SELECT 2::int4", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
}

#[tokio::test]
async fn psql_writes_and_finds_through_pgveil() {
    let out = psql(
        veil(),
        "postgres",
        None,
        &["-q"],
        "INSERT INTO guests (name, phone, note) VALUES ('Psql Person', '15012345678', 'psql');\n\
         SELECT count(*) FROM guests WHERE phone = '15012345678';\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    assert_not_stored(&["15012345678", "Psql Person"]);
}

#[tokio::test]
async fn equality_finds_rows_written_under_every_live_key_version() {
    // A private copy of the demo keyring, rotated half way through.
    let keys = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("keyring/keyring.toml");
    std::fs::copy(&src, keys.path().join("keyring.toml")).unwrap();
    let _ = veil(); // schema exists
    let before = start_proxy(protected_config(keys.path()));
    let c1 = connect_to(before.local_addr(), "postgres", None)
        .await
        .unwrap();
    c1.batch_execute("INSERT INTO guests (phone, note) VALUES ('16600000001', 'rot')")
        .await
        .unwrap();
    let master = pgveil::crypto::MasterKey::demo();
    let mut ring = pgveil::crypto::Keyring::open(keys.path(), &master).unwrap();
    let v2 = ring.rotate().unwrap();
    assert_eq!(v2, 2);
    let after = start_proxy(protected_config(keys.path()));
    let c2 = connect_to(after.local_addr(), "postgres", None)
        .await
        .unwrap();
    c2.execute(
        "INSERT INTO guests (phone, note) VALUES ($1, 'rot')",
        &[&"16600000001"],
    )
    .await
    .unwrap();
    // Two rows with the same phone under two key versions: both found.
    assert_eq!(
        ids(&c2, "SELECT id FROM guests WHERE phone = '16600000001'")
            .await
            .len(),
        2
    );
    let rows = c2
        .query("SELECT id FROM guests WHERE phone = $1", &[&"16600000001"])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    before.shutdown();
    after.shutdown();
}

#[tokio::test]
async fn group_by_distinct_and_self_join_on_a_searchable_column() {
    let c = client().await;
    c.batch_execute(
        "INSERT INTO guests (phone, note) VALUES ('13200000001', 'grp'), ('13200000001', 'grp'), ('13200000002', 'grp')",
    )
    .await
    .unwrap();
    let rows = c
        .query(
            "SELECT count(*) FROM guests WHERE note = 'grp' GROUP BY phone ORDER BY count(*)",
            &[],
        )
        .await
        .unwrap();
    let counts: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(counts, [1, 2]);
    let distinct: i64 = c
        .query_one(
            "SELECT count(DISTINCT phone) FROM guests WHERE note = 'grp'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, 2);
    let pairs: i64 = c
        .query_one(
            "SELECT count(*) FROM guests a JOIN guests b ON a.phone = b.phone \
             WHERE a.note = 'grp' AND b.note = 'grp' AND a.id < b.id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pairs, 1);
    // Joining two different protected columns would compare ciphertexts of
    // different keys: refused.
    let (code, msg) = refused(
        &c,
        "SELECT count(*) FROM guests a JOIN guests b ON a.phone = b.id_number",
    )
    .await;
    assert_eq!(code, "0A000", "{msg}");
}

#[tokio::test]
async fn policy_table_created_later_is_refused_until_the_catalog_knows_it() {
    let _ = veil();
    db().psql("DROP TABLE IF EXISTS late_guests").unwrap();
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n[keyring]\ndir = \"{}\"\nmaster_key_file = \"{}\"\n\
         [[columns]]\ntable = \"late_guests\"\ncolumn = \"phone\"\ntype = \"text\"\nencrypt = \"searchable\"\nlevel = 3\n",
        db().addr(),
        demo_keyring_dir().display(),
        demo_master_key_file().display()
    );
    let proxy = start_proxy(Config::parse(&text).unwrap());
    let c = connect_to(proxy.local_addr(), "postgres", None)
        .await
        .unwrap();
    // Unknown to the catalog: a plaintext write must not get through.
    let (code, msg) = refused(&c, "INSERT INTO late_guests (phone) VALUES ('13100000000')").await;
    assert_eq!(code, "0A000");
    assert!(msg.contains("public.late_guests"), "{msg}");
    // DDL through pgveil triggers a catalog reload.
    c.batch_execute("CREATE TABLE late_guests (id serial, phone bytea)")
        .await
        .unwrap();
    let ok = eventually(std::time::Duration::from_secs(10), || async {
        c.batch_execute("INSERT INTO late_guests (phone) VALUES ('13100000000')")
            .await
            .is_ok()
    })
    .await;
    assert!(ok, "insert still refused after the table was created");
    let raw = db().psql("COPY late_guests TO STDOUT").unwrap();
    assert!(
        !raw.contains(&hex("13100000000")) && !raw.contains("13100000000"),
        "{raw}"
    );
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM late_guests WHERE phone = $1",
            &[&"13100000000"],
        )
        .await
        .unwrap()
        .get(0);
    assert!(n >= 1);
    proxy.shutdown();
}

#[tokio::test]
async fn non_utf8_statement_touching_protected_columns_is_refused() {
    use tokio::io::AsyncWriteExt;
    let (mut s, _) = raw::login(veil()).await;
    let mut q = b"INSERT INTO guests (phone) VALUES ('138".to_vec();
    q.extend([0xff, 0xfe]);
    q.extend(b"')\0");
    s.write_all(&raw::frame(b'Q', &q)).await.unwrap();
    let msgs = raw::read_until_ready(&mut s).await;
    let codes: Vec<String> = msgs
        .iter()
        .filter(|m| m.0 == b'E')
        .filter_map(|m| raw::error_field(&m.1, b'C'))
        .collect();
    assert_eq!(codes, ["22021"], "{msgs:?}");
    // Invalid UTF-8 elsewhere is the server's business.
    s.write_all(&raw::frame(b'Q', b"SELECT '\xff'\0"))
        .await
        .unwrap();
    let msgs = raw::read_until_ready(&mut s).await;
    assert!(msgs.iter().any(|m| m.0 == b'E'), "{msgs:?}");
    assert_eq!(msgs.last().map(|m| m.0), Some(b'Z'));
}

#[tokio::test]
async fn malformed_bind_for_a_protected_statement_is_never_relayed() {
    use tokio::io::AsyncWriteExt;
    let (mut s, _) = raw::login(veil()).await;
    let mut parse = b"s_bad\0INSERT INTO guests (phone) VALUES ($1)\0".to_vec();
    parse.extend(0i16.to_be_bytes());
    // Bind claims 2 parameters but carries one, with a plaintext phone.
    let mut bind = b"\0s_bad\0".to_vec();
    bind.extend(0i16.to_be_bytes());
    bind.extend(2i16.to_be_bytes());
    bind.extend(11i32.to_be_bytes());
    bind.extend(b"19900001111");
    let mut wire = raw::frame(b'P', &parse);
    wire.extend(raw::frame(b'B', &bind));
    wire.extend(raw::frame(b'E', b"\0\0\0\0\0"));
    wire.extend(raw::frame(b'S', b""));
    s.write_all(&wire).await.unwrap();
    let msgs = raw::read_until_ready(&mut s).await;
    let codes: Vec<String> = msgs
        .iter()
        .filter(|m| m.0 == b'E')
        .filter_map(|m| raw::error_field(&m.1, b'C'))
        .collect();
    assert_eq!(codes, ["08P01"], "{msgs:?}");
    assert_not_stored(&["19900001111"]);
    // The connection goes on.
    s.write_all(&raw::query("SELECT 1")).await.unwrap();
    let msgs = raw::read_until_ready(&mut s).await;
    assert!(msgs.iter().any(|m| m.0 == b'D'), "{msgs:?}");
}
