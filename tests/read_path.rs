//! Decrypt and mask on read, by policy role, through real drivers.

mod common;

use common::*;
use pgveil::config::Config;
use pgveil::server::Proxy;
use std::net::SocketAddr;
use std::sync::OnceLock;

const POLICY: &str = r#"
[[columns]]
table = "rguests"
column = "name"
type = "text"
encrypt = "randomized"
level = 3
mask = "name"

[[columns]]
table = "rguests"
column = "id_number"
type = "text"
encrypt = "searchable"
level = 4
mask = "cn_id"

[[columns]]
table = "rguests"
column = "phone"
type = "text"
encrypt = "searchable"
level = 3
mask = "phone"

[[columns]]
table = "rguests"
column = "email"
type = "text"
encrypt = "none"
level = 3
mask = "email"

[[columns]]
table = "rguests"
column = "birth_date"
type = "date"
encrypt = "randomized"
level = 2
mask = "year"

[[columns]]
table = "rguests"
column = "vip_level"
type = "int4"
encrypt = "searchable"
level = 2

[[columns]]
table = "rcopy"
column = "name"
type = "text"
encrypt = "randomized"
level = 3
mask = "name"

[[columns]]
table = "rcopy"
column = "phone"
type = "text"
encrypt = "searchable"
level = 3
mask = "phone"

[[columns]]
table = "rcopy"
column = "id_number"
type = "text"
encrypt = "randomized"
level = 4
mask = "cn_id"

[[columns]]
table = "rcopy"
column = "email"
type = "text"
encrypt = "none"
level = 3
mask = "email"

[[roles]]
name = "frontdesk"
members = ["frontdesk"]
clearance = 2
columns = { "public.rguests.id_number" = "mask" }

[[roles]]
name = "manager"
members = ["managers"]
clearance = 4

[[roles]]
name = "auditor"
members = ["auditors"]
clearance = 0
columns = { "public.rguests.id_number" = "deny", "public.rcopy.id_number" = "deny" }

[[roles]]
name = "analyst"
members = ["analysts"]
clearance = 1
columns = { "public.rguests.name" = "pseudonym", "public.rguests.id_number" = "pseudonym" }

[defaults]
role = "none"
"#;

/// The protected proxy, with roles and two guests written through it.
fn veil() -> SocketAddr {
    static PROXY: OnceLock<Proxy> = OnceLock::new();
    PROXY
        .get_or_init(|| {
            db().psql(
                "DROP TABLE IF EXISTS rguests CASCADE; \
                 CREATE TABLE rguests (id int PRIMARY KEY, name bytea, id_number bytea, phone bytea, \
                   email text, birth_date bytea, vip_level bytea, note text); \
                 GRANT ALL ON rguests TO PUBLIC; \
                 DO $$ BEGIN \
                   CREATE ROLE frontdesk; CREATE ROLE managers; CREATE ROLE auditors; CREATE ROLE analysts; \
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
                 DO $$ BEGIN \
                   CREATE ROLE fd_alice LOGIN IN ROLE frontdesk; \
                   CREATE ROLE mgr_bob LOGIN IN ROLE managers; \
                   CREATE ROLE aud_carol LOGIN IN ROLE auditors; \
                   CREATE ROLE nobody_dan LOGIN; \
                   CREATE ROLE ana_erin LOGIN IN ROLE analysts; \
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
                 DO $$ BEGIN \
                   CREATE ROLE mf_gina LOGIN IN ROLE managers, frontdesk; \
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
                 CREATE VIEW rguests_pv AS SELECT id, phone, name AS guest_name, note FROM rguests; \
                 CREATE VIEW rguests_vv AS SELECT id, phone AS tel FROM rguests_pv; \
                 CREATE VIEW rguests_cv AS SELECT id, note, encode(phone, 'hex') AS phone_hex FROM rguests; \
                 GRANT SELECT ON rguests_pv, rguests_vv, rguests_cv TO PUBLIC; \
                 DROP TABLE IF EXISTS rcopy; \
                 CREATE TABLE rcopy (id int PRIMARY KEY, name bytea, phone bytea, id_number bytea, email text, note text); \
                 GRANT ALL ON rcopy TO PUBLIC;",
            )
            .unwrap();
            let text = format!(
                "[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n[keyring]\ndir = \"{}\"\nmaster_key_file = \"{}\"\n{POLICY}",
                db().addr(),
                demo_keyring_dir().display(),
                demo_master_key_file().display()
            );
            let proxy = start_proxy(Config::parse(&text).unwrap());
            let addr = proxy.local_addr();
            std::thread::spawn(move || {
                tokio::runtime::Runtime::new().unwrap().block_on(async move {
                    let c = connect_to(addr, "postgres", None).await.unwrap();
                    c.batch_execute(
                        "INSERT INTO rguests VALUES \
                         (1, '张三丰', '110105194912310021', '13812345678', 'zhang.san@example.com', '1949-12-31', 42, 'a'), \
                         (2, 'Alice Smith', '310101199001010012', '13987654321', 'alice@example.com', '1990-05-17', NULL, 'b')",
                    )
                    .await
                    .unwrap();
                    c.batch_execute(
                        "INSERT INTO rcopy VALUES \
                         (1, '张三丰', '13812345678', '110105194912310021', 'zhang.san@example.com', 'tab\there'), \
                         (2, 'Back\\slash', NULL, NULL, NULL, NULL)",
                    )
                    .await
                    .unwrap();
                })
            })
            .join()
            .unwrap();
            proxy
        })
        .local_addr()
}

async fn as_user(user: &str) -> tokio_postgres::Client {
    connect_to(veil(), user, None).await.unwrap()
}

/// Simple-protocol rows as text (NULL as "NULL").
async fn text_rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    c.simple_query(sql)
        .await
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

// Row 99 is a corrupted row that one test inserts and removes; the others
// leave it out so tests can run in parallel.
const ALL: &str =
    "SELECT name, id_number, phone, email, birth_date, vip_level FROM rguests WHERE id < 90 ORDER BY id";

#[tokio::test]
async fn manager_sees_clear_values_in_text_and_binary() {
    let c = as_user("mgr_bob").await;
    assert_eq!(
        text_rows(&c, ALL).await,
        vec![
            vec![
                "张三丰",
                "110105194912310021",
                "13812345678",
                "zhang.san@example.com",
                "1949-12-31",
                "42"
            ],
            vec![
                "Alice Smith",
                "310101199001010012",
                "13987654321",
                "alice@example.com",
                "1990-05-17",
                "NULL"
            ],
        ]
    );
    // Extended protocol, binary results, logical types.
    let rows = c
        .query(
            "SELECT name, phone, vip_level FROM rguests WHERE phone = $1",
            &[&"13812345678"],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "张三丰");
    assert_eq!(rows[0].get::<_, String>(1), "13812345678");
    assert_eq!(rows[0].get::<_, i32>(2), 42);
    assert_eq!(
        rows[0].columns()[2].type_(),
        &tokio_postgres::types::Type::INT4
    );
}

#[tokio::test]
async fn frontdesk_sees_masks_above_its_clearance() {
    let c = as_user("fd_alice").await;
    assert_eq!(
        text_rows(&c, ALL).await,
        vec![
            vec![
                "张**",
                "110105********0021",
                "138****5678",
                "z********@example.com",
                "1949-12-31",
                "42"
            ],
            vec![
                "A**** S****",
                "310101********0012",
                "139****4321",
                "a****@example.com",
                "1990-05-17",
                "NULL"
            ],
        ]
    );
    let rows = c
        .query("SELECT phone, name FROM rguests WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "138****5678");
    assert_eq!(rows[0].get::<_, String>(1), "张**");
}

#[tokio::test]
async fn users_in_no_role_get_the_default_role() {
    let c = as_user("nobody_dan").await;
    assert_eq!(
        text_rows(&c, ALL).await,
        vec![
            vec![
                "张**",
                "110105********0021",
                "138****5678",
                "z********@example.com",
                "1949-01-01",
                "NULL"
            ],
            vec![
                "A**** S****",
                "310101********0012",
                "139****4321",
                "a****@example.com",
                "1990-01-01",
                "NULL"
            ],
        ]
    );
}

#[tokio::test]
async fn denied_column_refuses_the_whole_result() {
    let c = as_user("aud_carol").await;
    let err = c
        .simple_query("SELECT id, id_number FROM rguests ORDER BY id")
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("error from pgveil");
    assert_eq!(db.code().code(), "42501");
    assert!(
        db.message().contains("public.rguests.id_number"),
        "{}",
        db.message()
    );
    let err = c
        .query("SELECT id_number FROM rguests WHERE id = $1", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    // Other columns still work for the auditor (masked at clearance 0).
    assert_eq!(
        text_rows(&c, "SELECT phone FROM rguests WHERE id = 1").await,
        vec![vec!["138****5678"]]
    );
}

/// `sql` is refused with 42501 naming `column`, through the simple and the
/// extended protocol.
async fn refused_as_denied(c: &tokio_postgres::Client, sql: &str, column: &str) {
    let err = c.simple_query(sql).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{sql}: {err}");
    let err = c.query(sql, &[]).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{sql}: {err}");
    let message = err.as_db_error().map(|e| e.message()).unwrap_or_default();
    assert!(message.contains(column), "{sql}: {message}");
}

#[tokio::test]
async fn denied_column_is_refused_before_the_server_runs_the_statement() {
    db().psql(
        "DROP SEQUENCE IF EXISTS deny_probe; CREATE SEQUENCE deny_probe; \
         GRANT USAGE, SELECT, UPDATE ON SEQUENCE deny_probe TO PUBLIC;",
    )
    .unwrap();
    let probe = || {
        db().psql("SELECT last_value, is_called FROM deny_probe")
            .unwrap()
    };
    let before = probe();
    let c = as_user("aud_carol").await;
    // Had the server run these, nextval would have moved the sequence.
    let sql = "SELECT id_number, nextval('deny_probe') FROM rguests WHERE id = 1";
    refused_as_denied(&c, sql, "public.rguests.id_number").await;
    assert_eq!(probe(), before, "the server ran a statement pgveil refused");
    // A cursor over the column is refused at DECLARE, not at FETCH.
    c.simple_query("BEGIN").await.unwrap();
    let err = c
        .simple_query("DECLARE dc CURSOR FOR SELECT id_number FROM rguests")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    c.simple_query("ROLLBACK").await.unwrap();
    // The same statement without the column runs (and moves the sequence).
    c.simple_query("SELECT phone, nextval('deny_probe') FROM rguests WHERE id = 1")
        .await
        .unwrap();
    assert_ne!(probe(), before);
}

#[tokio::test]
async fn returning_a_denied_column_is_refused_before_the_change() {
    // Row 97: outside the `id < 90` rows the other tests compare.
    let c = as_user("aud_carol").await;
    db().psql(
        "INSERT INTO rguests (id, note) VALUES (97, 'before') \
         ON CONFLICT (id) DO UPDATE SET note = 'before'",
    )
    .unwrap();
    let note = || db().psql("SELECT note FROM rguests WHERE id = 97").unwrap();
    let before = note();
    assert!(before.contains("before"), "{before}");
    for sql in [
        "UPDATE rguests SET note = 'after' WHERE id = 97 RETURNING id_number",
        "DELETE FROM rguests WHERE id = 97 RETURNING id, id_number",
    ] {
        refused_as_denied(&c, sql, "public.rguests.id_number").await;
        // Refused before the server ran it: the row is as it was.
        assert_eq!(note(), before, "{sql} changed the row");
    }
    // Returning a column the role may see runs (masked).
    let rows = text_rows(
        &c,
        "UPDATE rguests SET note = 'after' WHERE id = 97 RETURNING id, note",
    )
    .await;
    assert_eq!(rows, vec![vec!["97", "after"]]);
    assert_ne!(note(), before);
}

#[tokio::test]
async fn cursors_and_row_limited_portals_are_masked() {
    let mut c = as_user("fd_alice").await;
    let rows = text_rows(
        &c,
        "BEGIN; DECLARE cur CURSOR FOR SELECT phone FROM rguests WHERE id < 90 ORDER BY id; FETCH 1 FROM cur; FETCH 1 FROM cur; COMMIT;",
    )
    .await;
    assert_eq!(rows, vec![vec!["138****5678"], vec!["139****4321"]]);
    let tx = c.transaction().await.unwrap();
    let stmt = tx
        .prepare("SELECT phone FROM rguests ORDER BY id")
        .await
        .unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    let first = tx.query_portal(&portal, 1).await.unwrap();
    let second = tx.query_portal(&portal, 1).await.unwrap();
    assert_eq!(first[0].get::<_, String>(0), "138****5678");
    assert_eq!(second[0].get::<_, String>(0), "139****4321");
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn bypass_attempts_never_return_encrypted_plaintext_to_frontdesk() {
    let c = as_user("fd_alice").await;
    // Values of encrypted columns the frontdesk role may not see in the clear.
    let secrets = ["13812345678", "110105194912310021", "张三丰"];
    let check = |what: &str, text: String| {
        for s in secrets {
            assert!(!text.contains(s), "{what} leaked {s}: {text}");
        }
    };
    // SET ROLE to a role with more clearance does not change the policy role.
    let r = c.simple_query("SET ROLE managers").await;
    if r.is_ok() {
        check("SET ROLE", format!("{:?}", text_rows(&c, ALL).await));
        c.simple_query("RESET ROLE").await.unwrap();
    }
    // CTE, subquery in FROM, join.
    for sql in [
        "WITH g AS (SELECT * FROM rguests WHERE id < 90) SELECT phone, id_number, name FROM g",
        "SELECT phone FROM (SELECT phone, id FROM rguests) s WHERE id < 90",
        "SELECT a.phone FROM rguests a JOIN rguests b ON a.id = b.id WHERE a.id < 90",
    ] {
        match c.simple_query(sql).await {
            Ok(_) => check(sql, format!("{:?}", text_rows(&c, sql).await)),
            Err(e) => assert!(e.as_db_error().is_some(), "{sql}: {e}"),
        }
    }
    // Whole-row references, casts, row_to_json: refused or ciphertext only.
    for sql in [
        "SELECT g FROM rguests g",
        "SELECT row_to_json(g) FROM rguests g",
        "SELECT phone::text FROM rguests",
    ] {
        if let Ok(msgs) = c.simple_query(sql).await {
            check(sql, format!("{msgs:?}"));
            let rows = text_rows(&c, sql).await;
            check(sql, format!("{rows:?}"));
        }
    }
    // COPY TO STDOUT.
    let out = psql(
        veil(),
        "fd_alice",
        None,
        &["-c", "COPY rguests TO STDOUT"],
        "",
    );
    check("COPY TO", String::from_utf8_lossy(&out.stdout).into_owned());
    // A view over the table.
    db().psql("CREATE OR REPLACE VIEW rguests_v AS SELECT id, phone FROM rguests; GRANT SELECT ON rguests_v TO PUBLIC;")
        .unwrap();
    if let Ok(msgs) = c.simple_query("SELECT phone FROM rguests_v").await {
        check("view", format!("{msgs:?}"));
    }
}

#[tokio::test]
async fn psql_shows_masked_values() {
    let out = psql(
        veil(),
        "fd_alice",
        None,
        &[
            "-c",
            "SELECT phone, name FROM rguests WHERE id < 90 ORDER BY id",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "138****5678|张**\n139****4321|A**** S****\n"
    );
}

#[tokio::test]
async fn corrupted_ciphertext_is_an_error_not_a_panic() {
    let _ = veil();
    db().psql(
        "INSERT INTO rguests (id, phone, note) SELECT 99, set_byte(phone, 20, get_byte(phone, 20) # 1), 'bad' FROM rguests WHERE id = 1",
    )
    .unwrap();
    let c = as_user("mgr_bob").await;
    let err = c
        .simple_query("SELECT phone FROM rguests WHERE id = 99")
        .await
        .unwrap_err();
    let db_err = err.as_db_error().expect("error from pgveil");
    assert_eq!(db_err.code().code(), "XX001", "{}", db_err.message());
    assert!(db_err.message().contains("phone"), "{}", db_err.message());
    // The session and others keep working.
    assert_eq!(
        text_rows(&c, "SELECT phone FROM rguests WHERE id = 2").await,
        vec![vec!["13987654321"]]
    );
    db().psql("DELETE FROM rguests WHERE id = 99").unwrap();
}

/// Columns stored in plaintext (`encrypt = "none"`) are masked when read
/// directly; computed and whole-row references to them are refused, since
/// PostgreSQL would compute them over the plaintext.
#[tokio::test]
async fn plaintext_stored_columns_are_not_reachable_through_expressions() {
    let c = as_user("fd_alice").await;
    for sql in [
        "SELECT g FROM rguests g",
        "SELECT row_to_json(g) FROM rguests g",
        "SELECT upper(email) FROM rguests",
        "SELECT email || '' FROM rguests",
    ] {
        let err = c.simple_query(sql).await.expect_err(sql);
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db.code().code(), "0A000", "{sql}: {}", db.message());
        assert!(!db.message().contains("zhang.san"), "{}", db.message());
    }
}

/// COPY TO STDOUT is not masked by role yet, so protected columns may not
/// leave through it: refused; plain columns of the same table still can.
/// `COPY` through psql as `user`; stdout, or the error text.
fn psql_copy(user: &str, sql: &str) -> Result<String, String> {
    let out = psql(veil(), user, None, &["-c", sql], "");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(stdout + &String::from_utf8_lossy(&out.stderr))
    }
}

#[tokio::test]
async fn copy_to_stdout_is_decrypted_and_masked_by_role() {
    let _ = veil();
    // Text format: clear for the manager, with COPY's escapes intact.
    assert_eq!(
        psql_copy("mgr_bob", "COPY rcopy TO STDOUT").unwrap(),
        "1\t张三丰\t13812345678\t110105194912310021\tzhang.san@example.com\ttab\\there\n\
         2\tBack\\\\slash\t\\N\t\\N\t\\N\t\\N\n"
    );
    // Masked for the front desk, NULLs stay NULL.
    assert_eq!(
        psql_copy(
            "fd_alice",
            "COPY rcopy (id, phone, name, email, id_number) TO STDOUT"
        )
        .unwrap(),
        "1\t138****5678\t张**\tz********@example.com\t110105********0021\n\
         2\t\\N\tB*********\t\\N\t\\N\n"
    );
    // CSV with a header and a custom delimiter.
    assert_eq!(
        psql_copy(
            "fd_alice",
            "COPY rcopy (id, phone) TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER ';')"
        )
        .unwrap(),
        "id;phone\n1;138****5678\n2;\n"
    );
    // The auditor may not see ID numbers: refused, no row sent.
    let err = psql_copy("aud_carol", "COPY rcopy TO STDOUT").unwrap_err();
    assert!(
        err.contains("public.rcopy.id_number") && !err.contains("张"),
        "{err}"
    );
    assert_eq!(
        psql_copy("aud_carol", "COPY rcopy (id, phone) TO STDOUT").unwrap(),
        "1\t138****5678\n2\t\\N\n"
    );
    // Binary format cannot be masked: refused.
    let err = psql_copy("mgr_bob", "COPY rcopy TO STDOUT WITH (FORMAT binary)").unwrap_err();
    assert!(err.contains("binary"), "{err}");
    // Plain columns of the table pass as they are.
    assert_eq!(
        psql_copy("fd_alice", "COPY rcopy (id, note) TO STDOUT").unwrap(),
        "1\ttab\\there\n2\t\\N\n"
    );
}

#[tokio::test]
async fn copy_to_stdout_through_the_extended_protocol_is_masked() {
    use futures_util::TryStreamExt;
    let c = as_user("fd_alice").await;
    let stream = c
        .copy_out("COPY rcopy (id, phone) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let text: String = chunks.iter().map(|b| String::from_utf8_lossy(b)).collect();
    assert_eq!(text, "1\t138****5678\n2\t\\N\n");
    // The session goes on normally afterwards.
    assert_eq!(phone(&c).await, MASKED);
}

#[tokio::test]
async fn analyst_gets_stable_per_column_pseudonyms() {
    let c = as_user("ana_erin").await;
    let rows = text_rows(
        &c,
        "SELECT name, id_number, phone FROM rguests WHERE id < 90 ORDER BY id",
    )
    .await;
    assert_eq!(rows.len(), 2);
    for r in &rows {
        for token in &r[..2] {
            assert!(token.starts_with("pn_") && token.len() == 19, "{token}");
        }
    }
    assert_ne!(
        rows[0][0], rows[1][0],
        "different names, different pseudonyms"
    );
    assert_eq!(rows[0][2], "138****5678");
    // Stable: the same value gives the same token on another connection.
    let again = text_rows(
        &as_user("ana_erin").await,
        "SELECT name FROM rguests WHERE id = 1",
    )
    .await;
    assert_eq!(again[0][0], rows[0][0]);
}

#[tokio::test]
async fn table_recreated_outside_pgveil_is_picked_up_from_its_new_oid() {
    let _ = veil(); // roles exist
    db().psql("DROP TABLE IF EXISTS reborn; CREATE TABLE reborn (id int, phone bytea); GRANT ALL ON reborn TO PUBLIC;")
        .unwrap();
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n[keyring]\ndir = \"{}\"\nmaster_key_file = \"{}\"\n\
         [[columns]]\ntable = \"reborn\"\ncolumn = \"phone\"\ntype = \"text\"\nencrypt = \"searchable\"\nlevel = 3\n\
         [[roles]]\nname = \"manager\"\nmembers = [\"managers\"]\nclearance = 4\n",
        db().addr(),
        demo_keyring_dir().display(),
        demo_master_key_file().display()
    );
    let proxy = start_proxy(Config::parse(&text).unwrap());
    // Re-created directly on the server: a new OID pgveil has not seen.
    db().psql("DROP TABLE reborn; CREATE TABLE reborn (id int, phone bytea); GRANT ALL ON reborn TO PUBLIC;")
        .unwrap();
    let c = connect_to(proxy.local_addr(), "mgr_bob", None)
        .await
        .unwrap();
    c.batch_execute("INSERT INTO reborn VALUES (1, '13700001111')")
        .await
        .unwrap();
    let decrypted = eventually(std::time::Duration::from_secs(10), || async {
        text_rows(&c, "SELECT phone FROM reborn").await == vec![vec!["13700001111".to_owned()]]
    })
    .await;
    assert!(
        decrypted,
        "results of the re-created table were never decrypted"
    );
    proxy.shutdown();
}

/// `phone` of guest 1 as `c` sees it.
async fn phone(c: &tokio_postgres::Client) -> String {
    text_rows(c, "SELECT phone FROM rguests WHERE id = 1").await[0][0].clone()
}

const CLEAR: &str = "13812345678";
const MASKED: &str = "138****5678";

#[tokio::test]
async fn set_role_changes_the_policy_role_and_reset_restores_it() {
    let c = as_user("mf_gina").await;
    assert_eq!(phone(&c).await, CLEAR, "member of managers");
    c.simple_query("SET ROLE frontdesk").await.unwrap();
    assert_eq!(phone(&c).await, MASKED, "after SET ROLE frontdesk");
    // A role the user is not a member of: PostgreSQL refuses, nothing changes.
    let err = c.simple_query("SET ROLE auditors").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    assert_eq!(phone(&c).await, MASKED);
    c.simple_query("RESET ROLE").await.unwrap();
    assert_eq!(phone(&c).await, CLEAR, "after RESET ROLE");
    c.simple_query("SET role = 'frontdesk'").await.unwrap();
    assert_eq!(phone(&c).await, MASKED);
    c.simple_query("SET ROLE NONE").await.unwrap();
    assert_eq!(phone(&c).await, CLEAR);
    // Extended protocol: SET ROLE sent as a prepared statement.
    c.execute("SET ROLE frontdesk", &[]).await.unwrap();
    assert_eq!(phone(&c).await, MASKED);
    c.execute("RESET ROLE", &[]).await.unwrap();
    assert_eq!(phone(&c).await, CLEAR);
}

#[tokio::test]
async fn role_changes_follow_transactions_and_savepoints() {
    let c = as_user("mf_gina").await;
    // SET LOCAL ends with the transaction.
    c.batch_execute("BEGIN").await.unwrap();
    c.simple_query("SET LOCAL ROLE frontdesk").await.unwrap();
    assert_eq!(phone(&c).await, MASKED);
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(phone(&c).await, CLEAR, "SET LOCAL ROLE outlived COMMIT");
    // A rolled-back SET ROLE is undone.
    c.batch_execute("BEGIN").await.unwrap();
    c.simple_query("SET ROLE frontdesk").await.unwrap();
    assert_eq!(phone(&c).await, MASKED);
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(phone(&c).await, CLEAR, "SET ROLE outlived ROLLBACK");
    // ROLLBACK TO SAVEPOINT brings back the role in effect at the savepoint.
    c.batch_execute("BEGIN").await.unwrap();
    c.simple_query("SET ROLE frontdesk").await.unwrap();
    c.simple_query("SAVEPOINT a").await.unwrap();
    c.simple_query("RESET ROLE").await.unwrap();
    assert_eq!(phone(&c).await, CLEAR);
    c.simple_query("ROLLBACK TO SAVEPOINT a").await.unwrap();
    assert_eq!(
        phone(&c).await,
        MASKED,
        "ROLLBACK TO did not restore the role"
    );
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(phone(&c).await, MASKED, "committed SET ROLE was lost");
    // An error in the transaction, then ROLLBACK: back to the committed role.
    c.batch_execute("BEGIN").await.unwrap();
    c.simple_query("RESET ROLE").await.unwrap();
    assert!(c.simple_query("SELECT 1/0").await.is_err());
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(phone(&c).await, MASKED);
    c.simple_query("RESET ROLE").await.unwrap();
    assert_eq!(phone(&c).await, CLEAR);
}

#[tokio::test]
async fn statements_prepared_before_set_role_are_shown_by_the_new_role() {
    let c = as_user("mf_gina").await;
    let stmt = c
        .prepare("SELECT phone FROM rguests WHERE id = $1")
        .await
        .unwrap();
    let rows = c.query(&stmt, &[&1i32]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), CLEAR);
    c.simple_query("SET ROLE frontdesk").await.unwrap();
    let rows = c.query(&stmt, &[&1i32]).await.unwrap();
    assert_eq!(
        rows[0].get::<_, String>(0),
        MASKED,
        "stale plan after SET ROLE"
    );
    c.simple_query("RESET ROLE").await.unwrap();
    let rows = c.query(&stmt, &[&1i32]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), CLEAR);
}

#[tokio::test]
async fn role_changes_pgveil_cannot_follow_are_refused() {
    let c = as_user("mf_gina").await;
    for sql in [
        "SELECT set_config('role', 'frontdesk', false)",
        "SELECT set_config('role', 'frontdesk', true)",
        "DO $$ BEGIN SET ROLE frontdesk; END $$",
        "DO $$ BEGIN EXECUTE 'set role frontdesk'; END $$",
        "SET ROLE frontdesk; SELECT phone FROM rguests WHERE id = 1",
    ] {
        let err = c.simple_query(sql).await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert!(
            db.message().starts_with("pgveil:"),
            "{sql}: {}",
            db.message()
        );
        assert!(
            ["42501", "0A000"].contains(&db.code().code()),
            "{sql}: {}",
            db.code().code()
        );
        // The server's role did not change behind pgveil's back.
        let who = text_rows(&c, "SELECT current_user").await;
        assert_eq!(who, vec![vec!["mf_gina"]], "{sql}");
    }
    // Harmless set_config still works.
    c.simple_query("SELECT set_config('application_name', 'x', false)")
        .await
        .unwrap();
}

#[tokio::test]
async fn role_set_in_the_startup_packet_is_followed() {
    let mut cfg = tokio_postgres::Config::new();
    let addr = veil();
    cfg.host(addr.ip().to_string())
        .port(addr.port())
        .user("mf_gina")
        .dbname("postgres")
        .options("-c role=frontdesk");
    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    assert_eq!(phone(&c).await, MASKED);
    c.simple_query("RESET ROLE").await.unwrap();
    assert_eq!(phone(&c).await, CLEAR);
}

#[test]
fn psql_set_role_then_select_is_masked() {
    let out = psql(
        veil(),
        "mf_gina",
        None,
        &[
            "-c",
            "SET ROLE frontdesk",
            "-c",
            "SELECT phone FROM rguests WHERE id = 1",
        ],
        "",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(MASKED) && !stdout.contains(CLEAR),
        "{stdout}"
    );
}

#[tokio::test]
async fn views_exposing_protected_columns_are_decrypted_and_masked_by_role() {
    let mgr = as_user("mgr_bob").await;
    let fd = as_user("fd_alice").await;
    let sql = "SELECT phone, guest_name, note FROM rguests_pv WHERE id = 1";
    assert_eq!(text_rows(&mgr, sql).await, vec![vec![CLEAR, "张三丰", "a"]]);
    assert_eq!(text_rows(&fd, sql).await, vec![vec![MASKED, "张**", "a"]]);
    // A view of a view.
    let sql = "SELECT tel FROM rguests_vv WHERE id = 1";
    assert_eq!(text_rows(&mgr, sql).await, vec![vec![CLEAR]]);
    assert_eq!(text_rows(&fd, sql).await, vec![vec![MASKED]]);
    // Equality on the view's column is encrypted like on the table's, in
    // the simple and the extended protocol.
    assert_eq!(
        text_rows(
            &mgr,
            "SELECT id FROM rguests_pv WHERE phone = '13812345678'"
        )
        .await,
        vec![vec!["1"]]
    );
    let rows = mgr
        .query(
            "SELECT guest_name FROM rguests_vv JOIN rguests_pv USING (id) WHERE tel = $1",
            &[&CLEAR],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "张三丰");
    // Transforming the view's protected column is refused like on the table.
    let err = fd
        .simple_query("SELECT upper(phone) FROM rguests_pv")
        .await
        .unwrap_err();
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.message().starts_with("pgveil:")),
        "{err}"
    );
}

#[tokio::test]
async fn view_columns_computed_from_protected_columns_are_refused() {
    let mgr = as_user("mgr_bob").await;
    for sql in [
        "SELECT phone_hex FROM rguests_cv",
        "SELECT * FROM rguests_cv WHERE id = 1",
    ] {
        let err = mgr.simple_query(sql).await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db.code().code(), "0A000", "{sql}");
        assert!(
            db.message().contains("public.rguests_cv.phone_hex"),
            "{}",
            db.message()
        );
        let err = mgr.query(sql, &[]).await.unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some("0A000"), "{sql}: {err}");
    }
    // Its other columns still read normally.
    assert_eq!(
        text_rows(&mgr, "SELECT id, note FROM rguests_cv WHERE id = 1").await,
        vec![vec!["1", "a"]]
    );
}

#[tokio::test]
async fn returning_shows_protected_columns_by_role() {
    let mgr = as_user("mgr_bob").await;
    let fd = as_user("fd_alice").await;
    let rows = text_rows(
        &mgr,
        "INSERT INTO rguests (id, name, phone) VALUES (95, '王五', '13700001111') RETURNING id, phone, name",
    )
    .await;
    assert_eq!(rows, vec![vec!["95", "13700001111", "王五"]]);
    let rows = fd
        .query(
            "UPDATE rguests SET phone = $1 WHERE id = 95 RETURNING phone, name",
            &[&"13700002222"],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "137****2222");
    assert_eq!(rows[0].get::<_, String>(1), "王*");
    let rows = text_rows(&fd, "DELETE FROM rguests WHERE id = 95 RETURNING phone").await;
    assert_eq!(rows, vec![vec!["137****2222"]]);
}

#[tokio::test]
async fn union_of_the_same_protected_columns_is_decrypted_and_masked() {
    let mgr = as_user("mgr_bob").await;
    let fd = as_user("fd_alice").await;
    let sql = "SELECT id, phone, name FROM rguests WHERE id = 1 \
               UNION ALL SELECT id, phone, name FROM rguests WHERE id = 2 ORDER BY id";
    assert_eq!(
        text_rows(&mgr, sql).await,
        vec![
            vec!["1", CLEAR, "张三丰"],
            vec!["2", "13987654321", "Alice Smith"]
        ]
    );
    assert_eq!(
        text_rows(&fd, sql).await,
        vec![
            vec!["1", MASKED, "张**"],
            vec!["2", "139****4321", "A**** S****"]
        ]
    );
    // Extended protocol with binary results, and a subquery over the union.
    let rows = fd
        .query(
            "SELECT u.phone FROM (SELECT phone FROM rguests WHERE id = $1 \
             UNION SELECT phone FROM rguests WHERE id = $1) u",
            &[&1i32],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "UNION over a searchable column deduplicates");
    assert_eq!(rows[0].get::<_, String>(0), MASKED);
    // Without ALL over a randomized column, or over different columns: refused.
    for sql in [
        "SELECT name FROM rguests UNION SELECT name FROM rguests",
        "SELECT phone FROM rguests UNION ALL SELECT id_number FROM rguests",
        "SELECT phone FROM rguests UNION ALL SELECT 'x'",
    ] {
        let err = mgr.simple_query(sql).await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db.code().code(), "0A000", "{sql}: {}", db.message());
    }
}

/// Parse, Bind, Describe(portal), Execute and Sync in one write, as libpq's
/// PQexecParams and JDBC send them; returns the text cells of the DataRows.
async fn pipelined_rows(user: &str, sql: &str, describe: u8) -> Vec<Vec<Option<String>>> {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(veil()).await.unwrap();
    s.write_all(&raw::startup(&[("user", user), ("database", "postgres")]))
        .await
        .unwrap();
    raw::read_until_ready(&mut s).await;
    let mut batch = Vec::new();
    let mut parse = b"s1\0".to_vec();
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    batch.extend(raw::frame(b'P', &parse));
    batch.extend(raw::frame(b'B', b"p1\0s1\0\0\0\0\0\0\0"));
    let target: &[u8] = if describe == b'P' { b"Pp1\0" } else { b"Ss1\0" };
    batch.extend(raw::frame(b'D', target));
    batch.extend(raw::frame(b'E', b"p1\0\0\0\0\0"));
    batch.extend(raw::frame(b'S', b""));
    s.write_all(&batch).await.unwrap();
    raw::read_until_ready(&mut s)
        .await
        .into_iter()
        .filter(|(tag, _)| *tag == b'D')
        .map(|(_, body)| {
            let n = u16::from_be_bytes([body[0], body[1]]) as usize;
            let mut at = 2;
            (0..n)
                .map(|_| {
                    let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                    at += 4;
                    if len < 0 {
                        return None;
                    }
                    let v = String::from_utf8_lossy(&body[at..at + len as usize]).into_owned();
                    at += len as usize;
                    Some(v)
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn pipelined_describe_and_execute_are_masked() {
    let sql = "SELECT phone, email FROM rguests WHERE id = 1";
    for describe in [b'P', b'S'] {
        let rows = pipelined_rows("fd_alice", sql, describe).await;
        assert_eq!(
            rows,
            vec![vec![
                Some(MASKED.to_owned()),
                Some("z********@example.com".to_owned())
            ]],
            "Describe {}",
            describe as char
        );
        let rows = pipelined_rows("mgr_bob", sql, describe).await;
        assert_eq!(
            rows,
            vec![vec![
                Some(CLEAR.to_owned()),
                Some("zhang.san@example.com".to_owned())
            ]]
        );
    }
}
