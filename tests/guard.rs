//! Bulk-read limits and two-person approvals, through real drivers, on the
//! demo hotel database (3,000 encrypted guests) and the demo policy with
//! limits added: front desk `max_rows = 100`, `window_rows = 400` per 10
//! minutes; analysts `max_bytes = 3000`; managers and auditors unlimited.
//!
//! The window is per user, so each test that reads as a front-desk clerk
//! logs in as its own member of `frontdesk` (alice is one of them).

mod common;

use common::*;
use pgveil::config::Config;
use pgveil::server::Proxy;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_postgres::SimpleQueryMessage;

/// Front-desk members, one per test that counts rows.
const CLERKS: &[&str] = &[
    "alice",
    "fd_exec",
    "fd_page",
    "fd_copy",
    "fd_cursor",
    "fd_portal",
    "fd_appr",
    "fd_once",
    "fd_late",
    "fd_forge",
    "fd_owner",
    "fd_thief",
    "fd_table",
    "fd_psql",
    "fd_tx",
    "fd_slow",
];

struct Veil {
    _proxy: Proxy,
    addr: SocketAddr,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

fn veil() -> &'static Veil {
    static VEIL: OnceLock<Veil> = OnceLock::new();
    VEIL.get_or_init(|| std::thread::spawn(setup).join().expect("guard test setup"))
}

fn setup() -> Veil {
    db().psql(pgveil::demo::HOTEL_SQL).unwrap();
    let mut roles = String::from(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO PUBLIC;\n\
         CREATE ROLE frontdesk NOLOGIN; CREATE ROLE managers NOLOGIN;\n\
         CREATE ROLE analysts NOLOGIN; CREATE ROLE auditors NOLOGIN;\n\
         CREATE ROLE bob LOGIN IN ROLE managers; CREATE ROLE carol LOGIN IN ROLE analysts;\n\
         CREATE ROLE dave LOGIN IN ROLE auditors;\n\
         CREATE ROLE reviewers NOLOGIN; CREATE ROLE erin LOGIN IN ROLE reviewers;\n\
         CREATE TABLE probe_log (n int); GRANT ALL ON probe_log TO PUBLIC;\n\
         CREATE TABLE slow_log (n int); GRANT ALL ON slow_log TO PUBLIC;\n\
         CREATE FUNCTION slow_probe() RETURNS int LANGUAGE sql VOLATILE \
           AS 'SELECT pg_sleep(0.002); INSERT INTO slow_log VALUES (1) RETURNING 1';\n\
         CREATE FUNCTION probe() RETURNS int LANGUAGE sql VOLATILE \
           AS 'INSERT INTO probe_log VALUES (1) RETURNING 1';\n",
    );
    for c in CLERKS {
        roles.push_str(&format!("CREATE ROLE {c} LOGIN IN ROLE frontdesk;\n"));
    }
    db().psql(&roles).unwrap();
    let policy = pgveil::demo::DEMO_POLICY
        .replace(
            "members = [\"frontdesk\"]\nclearance = 2\n",
            "members = [\"frontdesk\"]\nclearance = 2\nmax_rows = 100\nwindow_rows = 400\nwindow = \"10m\"\n",
        )
        .replace(
            "members = [\"analysts\"]\nclearance = 1\n",
            "members = [\"analysts\"]\nclearance = 1\nmax_rows = 1000\nmax_bytes = 3000\n",
        );
    assert!(policy.contains("max_bytes = 3000") && policy.contains("window_rows = 400"));
    let policy = format!(
        "{policy}\n[[roles]]\nname = \"reviewer\"\nmembers = [\"reviewers\"]\nclearance = 2\n\
         max_rows = 100\nprecheck = \"explain\"\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgveil.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n\
             [keyring]\ndir = \"{}\"\nmaster_key_file = \"{}\"\n\
             [approvals]\napprovers = [\"bob\"]\n\
             [[columns]]\ntable = \"stays\"\ncolumn = \"notes\"\ntype = \"text\"\nencrypt = \"none\"\n\
             level = 3\nmask = \"fixed('***')\"\n\n{policy}",
            db().addr(),
            demo_keyring_dir().display(),
            demo_master_key_file().display()
        ),
    )
    .unwrap();
    pgveil::migrate::run(pgveil::migrate::MigrateCommand::Encrypt(
        pgveil::migrate::MigrateArgs {
            config: config.clone(),
            table: None,
            column: None,
            all: true,
            batch_size: 1000,
            dry_run: false,
            max_rewrite_mb: 1024,
            in_place: true,
        },
    ))
    .unwrap();
    let proxy = start_proxy(Config::load(&config).unwrap());
    Veil {
        addr: proxy.local_addr(),
        _proxy: proxy,
        config,
        _dir: dir,
    }
}

async fn as_user(user: &str) -> tokio_postgres::Client {
    connect_to(veil().addr, user, None).await.unwrap()
}

/// Rows of a simple query, or its error as (SQLSTATE, message).
async fn rows(c: &tokio_postgres::Client, sql: &str) -> Result<Vec<Vec<String>>, (String, String)> {
    match c.simple_query(sql).await {
        Ok(msgs) => Ok(msgs
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL").to_owned())
                        .collect(),
                ),
                _ => None,
            })
            .collect()),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("{sql}: not a server error: {e}"));
            Err((db.code().code().to_owned(), db.message().to_owned()))
        }
    }
}

/// Asserts a 42501 refusal whose message contains every `needle`.
fn refused(result: Result<Vec<Vec<String>>, (String, String)>, needles: &[&str]) -> String {
    match result {
        Ok(r) => panic!("expected a refusal, got {} rows", r.len()),
        Err((code, msg)) => {
            assert_eq!(code, "42501", "{msg}");
            for n in needles {
                assert!(msg.contains(n), "missing {n:?} in: {msg}");
            }
            msg
        }
    }
}

/// Logs in with the bare protocol as `user` (trust).
async fn raw_login(user: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(veil().addr).await.unwrap();
    s.write_all(&raw::startup(&[("user", user), ("database", "postgres")]))
        .await
        .unwrap();
    let msgs = raw::read_until_ready(&mut s).await;
    assert_eq!(msgs.last().map(|m| m.0), Some(b'Z'), "login as {user}");
    s
}

/// Sends one simple query and returns every message up to ReadyForQuery.
async fn raw_query(s: &mut tokio::net::TcpStream, sql: &str) -> Vec<(u8, Vec<u8>)> {
    s.write_all(&raw::query(sql)).await.unwrap();
    let msgs = tokio::time::timeout(Duration::from_secs(20), raw::read_until_ready(s))
        .await
        .expect("reply within 20 s");
    assert_eq!(msgs.last().map(|m| m.0), Some(b'Z'), "{sql}");
    msgs
}

fn count(msgs: &[(u8, Vec<u8>)], tag: u8) -> usize {
    msgs.iter().filter(|m| m.0 == tag).count()
}

/// Runs `pgveil approve` with the test configuration.
fn approve(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .arg("approve")
        .args(args)
        .arg("--config")
        .arg(&veil().config)
        .output()
        .unwrap()
}

/// Mints a token: `requester` approved by bob for `tables`.
fn token(requester: &str, tables: &str, max_rows: &str, ttl: &str) -> String {
    let out = approve(&[
        "--requester",
        requester,
        "--approver",
        "bob",
        "--tables",
        tables,
        "--max-rows",
        max_rows,
        "--ttl",
        ttl,
        "--reason",
        "annual audit export",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("pgveil-approval-1."), "{stdout}");
    last
}

fn probes() -> String {
    db().psql("SELECT count(*) FROM probe_log").unwrap()
}

#[tokio::test]
async fn full_table_reads_are_refused_before_execution() {
    let c = as_user("alice").await;
    refused(
        rows(&c, "SELECT phone FROM guests").await,
        &[
            "before execution",
            "public.guests",
            "no WHERE clause",
            "max_rows = 100",
            "pgveil approve --requester alice",
        ],
    );
    // The server never ran them: the probe in the select list never fired.
    for sql in [
        "SELECT id, phone, probe() FROM guests",
        "SELECT id, phone, probe() FROM guests WHERE id > 0 LIMIT 500",
        "SELECT g.name, probe() FROM stays s JOIN guests g ON g.id = s.guest_id",
    ] {
        refused(rows(&c, sql).await, &["before execution"]);
    }
    assert_eq!(probes().trim(), "0");
    // Extended protocol too.
    let err = c.query("SELECT phone FROM guests", &[]).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    // A RETURNING clause without WHERE returns every row it changes: it is
    // refused before the change (all 3,000 guests are still there below).
    refused(
        rows(&c, "DELETE FROM guests RETURNING id, phone").await,
        &["before execution", "the RETURNING clause", "public.guests"],
    );
    // Columns the role cannot see in any form, or no protected column at
    // all, are not bulk reads of protected data.
    assert_eq!(rows(&c, "SELECT id FROM guests").await.unwrap().len(), 3000);
    // The session stays usable; a lookup is shown masked.
    assert_eq!(
        rows(&c, "SELECT phone FROM guests WHERE id = 1")
            .await
            .unwrap(),
        vec![vec!["130****7919".to_owned()]]
    );
    assert_eq!(
        rows(&c, "SELECT phone FROM guests ORDER BY id LIMIT 3")
            .await
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn results_over_the_cap_are_refused_with_no_row_delivered() {
    let mut s = raw_login("fd_exec").await;
    for sql in [
        "SELECT phone FROM guests WHERE true",
        "SELECT phone FROM guests WHERE 1=1",
        "SELECT id, name, phone FROM guests WHERE id > 0",
    ] {
        let msgs = raw_query(&mut s, sql).await;
        assert_eq!(count(&msgs, b'D'), 0, "{sql}: a DataRow reached the client");
        assert_eq!(count(&msgs, b'T'), 0, "{sql}");
        assert_eq!(count(&msgs, b'E'), 1, "{sql}");
        let err = &msgs.iter().find(|m| m.0 == b'E').unwrap().1;
        assert_eq!(raw::error_field(err, b'C').as_deref(), Some("42501"));
        let text = raw::error_field(err, b'M').unwrap_or_default();
        assert!(
            text.contains("max_rows = 100") && text.contains("none of its rows were sent"),
            "{text}"
        );
        assert!(text.contains("pgveil approve"), "{text}");
    }
    // Exactly at the cap: every row arrives; one more: none does.
    let msgs = raw_query(&mut s, "SELECT phone FROM guests WHERE id <= 100").await;
    assert_eq!(count(&msgs, b'D'), 100);
    assert_eq!(count(&msgs, b'E'), 0);
    let msgs = raw_query(&mut s, "SELECT phone FROM guests WHERE id <= 101").await;
    assert_eq!((count(&msgs, b'D'), count(&msgs, b'E')), (0, 1));
    // The connection is still usable (and was not hit by the cancel).
    let msgs = raw_query(&mut s, "SELECT phone FROM guests WHERE id = 2").await;
    assert_eq!((count(&msgs, b'D'), count(&msgs, b'E')), (1, 0));
    // Extended protocol, with a parameter.
    let c = as_user("fd_exec").await;
    let err = c
        .query("SELECT phone FROM guests WHERE id > $1", &[&0i32])
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    let ok = c
        .query(
            "SELECT phone FROM guests WHERE id BETWEEN $1 AND $2",
            &[&1i32, &50i32],
        )
        .await
        .unwrap();
    assert_eq!(ok.len(), 50);
}

#[tokio::test]
async fn crossing_the_cap_cancels_the_query_upstream() {
    // Each row takes the server ~2 ms and logs itself: uncancelled, the
    // statement would run for ~6 s and commit 3,000 log rows. Cancelled,
    // it is aborted and its log rows are rolled back.
    assert_slow_read_is_cancelled(&as_user("fd_slow").await).await;
}

/// Runs the slow capped read on `c`: refused, cancelled on the server
/// (its log rows rolled back), and the connection usable afterwards.
async fn assert_slow_read_is_cancelled(c: &tokio_postgres::Client) {
    refused(
        rows(
            c,
            "SELECT id, phone, slow_probe() FROM guests WHERE id > 0 ORDER BY id",
        )
        .await,
        &["max_rows = 100"],
    );
    // The next statement on the connection runs after the refused one has
    // ended on the server, and was not hit by the cancel.
    assert_eq!(
        rows(c, "SELECT phone FROM guests WHERE id = 5")
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        db().psql("SELECT count(*) FROM slow_log").unwrap().trim(),
        "0"
    );
}

#[tokio::test]
async fn crossing_the_cap_cancels_the_query_upstream_over_tls() {
    // The same as above through a proxy that reaches PostgreSQL over TLS:
    // the cancel (which carries the backend's secret key) goes over TLS
    // too, and still stops the query.
    let mut cfg = Config::load(&veil().config).unwrap();
    cfg.proxy.upstream = format!("localhost:{}", db().port());
    cfg.upstream_tls.mode = pgveil::config::UpstreamTlsMode::VerifyFull;
    cfg.upstream_tls.ca = Some(common::certs::certs().ca.clone());
    let proxy = start_proxy(cfg);
    let c = connect_to(proxy.local_addr(), "fd_slow", None)
        .await
        .unwrap();
    assert_slow_read_is_cancelled(&c).await;
}

#[tokio::test]
async fn refused_result_fails_the_transaction_and_the_session_recovers() {
    let c = as_user("fd_tx").await;
    c.batch_execute("BEGIN").await.unwrap();
    refused(
        rows(&c, "SELECT phone FROM guests WHERE id > 0").await,
        &["max_rows = 100"],
    );
    // As after any error, the transaction block is aborted on the server
    // too, whether the cancel reached the query or it had already ended.
    let err = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("25P02"), "{err}");
    let msgs = c.simple_query("COMMIT").await.unwrap();
    assert!(
        msgs.iter()
            .any(|m| matches!(m, SimpleQueryMessage::CommandComplete(_))),
        "{msgs:?}"
    );
    // Extended protocol, a row-limited portal in a transaction.
    let mut c2 = as_user("fd_tx").await;
    let tx = c2.transaction().await.unwrap();
    let err = tx
        .query("SELECT phone FROM guests WHERE id > $1", &[&0i32])
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    let err = tx.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("25P02"), "{err}");
    tx.rollback().await.unwrap();
    assert_eq!(
        rows(&c, "SELECT phone FROM guests WHERE id < 11")
            .await
            .unwrap()
            .len(),
        10
    );
}

#[tokio::test]
async fn paging_is_caught_by_the_window_across_connections() {
    let a = as_user("fd_page").await;
    let b = as_user("fd_page").await;
    // 400 rows per 10 minutes: twenty pages of twenty, alternating
    // connections, then the window is full.
    for page in 0..20 {
        let c = if page % 2 == 0 { &a } else { &b };
        let sql = format!(
            "SELECT id, phone FROM guests ORDER BY id LIMIT 20 OFFSET {}",
            page * 20
        );
        assert_eq!(rows(c, &sql).await.unwrap().len(), 20, "page {page}");
    }
    let msg = refused(
        rows(
            &b,
            "SELECT id, phone FROM guests ORDER BY id LIMIT 20 OFFSET 400",
        )
        .await,
        &[
            "user fd_page may receive 400 protected rows per 10m",
            "has received 400",
            "frees up",
        ],
    );
    assert!(
        msg.contains("none of this result's rows were sent"),
        "{msg}"
    );
    // Also on a fresh connection, and for a single row.
    let c = as_user("fd_page").await;
    refused(
        rows(&c, "SELECT phone FROM guests WHERE id = 1").await,
        &["window"],
    );
    // Other clerks have their own window.
    let other = as_user("fd_psql").await;
    assert_eq!(
        rows(&other, "SELECT phone FROM guests WHERE id = 1")
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn explain_precheck_refuses_by_the_servers_estimate() {
    let c = as_user("erin").await;
    // The estimate (about 3,000 rows) is above the cap: refused before the
    // query runs, although it has a WHERE clause.
    refused(
        rows(&c, "SELECT phone FROM guests WHERE id > 0").await,
        &[
            "before execution",
            "the server estimates",
            "precheck = \"explain\"",
        ],
    );
    // Under the cap by estimate (a primary-key lookup): runs, masked.
    assert_eq!(
        rows(&c, "SELECT phone FROM guests WHERE id = 1")
            .await
            .unwrap(),
        vec![vec!["130****7919".to_owned()]]
    );
    assert_eq!(
        rows(&c, "SELECT phone FROM guests WHERE id IN (1, 2, 3)")
            .await
            .unwrap()
            .len(),
        3
    );
    // In a transaction the EXPLAIN does not disturb the block.
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        rows(&c, "SELECT phone FROM guests WHERE id IN (4, 5, 6)")
            .await
            .unwrap()
            .len(),
        3
    );
    refused(
        rows(&c, "SELECT phone FROM guests WHERE id > 0").await,
        &["the server estimates"],
    );
    c.batch_execute("ROLLBACK").await.unwrap();
    // The extended protocol is not explained; counting still applies.
    let err = c
        .query("SELECT phone FROM guests WHERE id > $1", &[&0i32])
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
}

#[tokio::test]
async fn roles_without_limits_are_unaffected() {
    let bob = as_user("bob").await;
    let all = rows(&bob, "SELECT id, phone FROM guests ORDER BY id")
        .await
        .unwrap();
    assert_eq!(all.len(), 3000);
    assert_eq!(all[0][1], "13000007919");
    let dave = as_user("dave").await;
    let masked = rows(&dave, "SELECT phone FROM guests").await.unwrap();
    assert_eq!(masked.len(), 3000);
    assert_eq!(masked[0][0].len(), "130****7919".len());
    let out = psql(
        veil().addr,
        "bob",
        None,
        &["-c", "SELECT phone FROM guests"],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3000);
}

#[tokio::test]
async fn copy_to_is_capped() {
    for sql in [
        "COPY guests TO STDOUT",
        "COPY guests (id, phone) TO STDOUT",
        "COPY (SELECT phone FROM guests) TO STDOUT",
    ] {
        let out = psql(veil().addr, "fd_copy", None, &["-c", sql], "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sql}");
        assert!(out.stdout.is_empty(), "{sql}");
        assert!(
            err.contains("bulk read refused before execution") && err.contains("max_rows = 100"),
            "{sql}: {err}"
        );
    }
    // A role without limits streams the whole table, decrypted by role.
    let out = psql(
        veil().addr,
        "bob",
        None,
        &["-c", "COPY guests (id, phone) TO STDOUT"],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 3000);
    assert!(!text.contains("\\x"), "ciphertext in COPY output");
}

#[tokio::test]
async fn cursors_count_every_fetch() {
    let c = as_user("fd_cursor").await;
    refused(
        rows(
            &c,
            "BEGIN; DECLARE whole CURSOR FOR SELECT phone FROM guests",
        )
        .await,
        &["cursor's query", "no WHERE clause"],
    );
    c.batch_execute("ROLLBACK").await.unwrap();
    c.batch_execute(
        "BEGIN; DECLARE c CURSOR FOR SELECT phone FROM guests WHERE id > 0 ORDER BY id",
    )
    .await
    .unwrap();
    assert_eq!(rows(&c, "FETCH 60 FROM c").await.unwrap().len(), 60);
    refused(
        rows(&c, "FETCH 60 FROM c").await,
        &["max_rows = 100", "counted over every FETCH from cursor c"],
    );
    c.batch_execute("ROLLBACK").await.unwrap();
    // Several FETCHes in one query text count against their cursor too.
    refused(
        rows(
            &c,
            "BEGIN; DECLARE d CURSOR FOR SELECT phone FROM guests WHERE id > 0; \
             FETCH 50 FROM d; FETCH 50 FROM d; FETCH 1 FROM d",
        )
        .await,
        &["cursor d"],
    );
    c.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn row_limited_portals_count_across_executes() {
    let mut c = as_user("fd_portal").await;
    let tx = c.transaction().await.unwrap();
    let stmt = tx
        .prepare("SELECT phone FROM guests WHERE id > $1 ORDER BY id")
        .await
        .unwrap();
    let portal = tx.bind(&stmt, &[&0i32]).await.unwrap();
    assert_eq!(tx.query_portal(&portal, 60).await.unwrap().len(), 60);
    let err = tx.query_portal(&portal, 60).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    let msg = err
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(msg.contains("every Execute of the portal"), "{msg}");
    drop(tx);
    // Rolled back; the connection is fine.
    assert_eq!(
        rows(&c, "SELECT phone FROM guests WHERE id = 3")
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn max_bytes_caps_results() {
    let c = as_user("carol").await;
    let small = rows(&c, "SELECT name, id_number FROM guests WHERE id <= 10")
        .await
        .unwrap();
    assert!(small[0][0].starts_with("pn_"), "{small:?}");
    refused(
        rows(&c, "SELECT name, id_number FROM guests WHERE id <= 200").await,
        &["max_bytes = 3000 of policy role analyst"],
    );
}

#[tokio::test]
async fn approval_lifts_the_cap_for_its_tables() {
    let t = token("fd_appr", "public.guests", "5000", "2h");
    let c = as_user("fd_appr").await;
    refused(
        rows(&c, "SELECT phone FROM guests").await,
        &["no WHERE clause"],
    );
    // Answered like a SET; then the whole table is readable, masked.
    let msgs = c
        .simple_query(&format!("SET pgveil.approval = '{t}'"))
        .await
        .unwrap();
    assert!(matches!(
        msgs.as_slice(),
        [SimpleQueryMessage::CommandComplete(0)]
    ));
    let all = rows(&c, "SELECT phone FROM guests").await.unwrap();
    assert_eq!(all.len(), 3000);
    assert_eq!(all[0][0].len(), "130****7919".len());
    // Reusable within its TTL, also in a transaction (SET answers with the
    // transaction's status), and through the extended protocol.
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    tx.batch_execute(&format!("SET pgveil.approval = '{t}'"))
        .await
        .unwrap();
    assert_eq!(
        tx.query("SELECT phone FROM guests WHERE id > $1", &[&0i32])
            .await
            .unwrap()
            .len(),
        3000
    );
    tx.commit().await.unwrap();
    // COPY streams uncounted, so it never runs under an approval.
    refused(
        rows(&c, "COPY guests (id, phone) TO STDOUT").await,
        &["not counted against approval"],
    );
    // Not above its own max_rows.
    refused(
        rows(&c, "SELECT phone FROM guests WHERE true LIMIT 6000").await,
        &["5000 rows allowed by approval"],
    );
    // RESET drops it.
    c.batch_execute("RESET pgveil.approval").await.unwrap();
    refused(
        rows(&c, "SELECT phone FROM guests").await,
        &["no WHERE clause"],
    );
    // psql: SET then the export on the same connection.
    let t = token("fd_psql", "guests", "1000", "10m");
    let out = psql(
        veil().addr,
        "fd_psql",
        None,
        &[
            "-c",
            &format!("SET pgveil.approval = '{t}'"),
            "-c",
            "SELECT phone FROM guests WHERE id <= 500",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains('*'))
            .count(),
        500
    );
}

#[tokio::test]
async fn single_use_approval_is_consumed_and_cannot_be_replayed() {
    let t = token("fd_once", "public.guests", "5000", "0");
    let a = as_user("fd_once").await;
    a.batch_execute(&format!("SET pgveil.approval = '{t}'"))
        .await
        .unwrap();
    assert_eq!(
        rows(&a, "SELECT phone FROM guests").await.unwrap().len(),
        3000
    );
    // Consumed by that statement.
    refused(
        rows(&a, "SELECT phone FROM guests").await,
        &["no WHERE clause"],
    );
    // Replayed on another connection: refused when set.
    let b = as_user("fd_once").await;
    refused(
        rows(&b, &format!("SET pgveil.approval = '{t}'")).await,
        &["single use", "already been used"],
    );
}

#[tokio::test]
async fn expired_approval_is_refused() {
    let t = token("fd_late", "public.guests", "5000", "1s");
    // Wait past the expiry (however long minting took).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = as_user("fd_late").await;
    refused(
        rows(&c, &format!("SET pgveil.approval = '{t}'")).await,
        &["expired at"],
    );
    refused(
        rows(&c, "SELECT phone FROM guests").await,
        &["no WHERE clause"],
    );
}

#[tokio::test]
async fn forged_approval_is_refused() {
    let t = token("fd_forge", "public.guests", "5000", "2h");
    // Flip one byte of the signed payload, to another base64 letter.
    let mut bytes = t.clone().into_bytes();
    let at = "pgveil-approval-1.".len() + 10;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(bytes).unwrap();
    assert_ne!(forged, t);
    let c = as_user("fd_forge").await;
    refused(
        rows(&c, &format!("SET pgveil.approval = '{forged}'")).await,
        &["signature does not verify"],
    );
    refused(
        rows(&c, "SET pgveil.approval = 'not-a-token'").await,
        &["not a pgveil approval token"],
    );
    refused(
        rows(&c, "SELECT phone FROM guests").await,
        &["no WHERE clause"],
    );
}

#[tokio::test]
async fn approval_for_another_user_is_refused() {
    let t = token("fd_owner", "public.guests", "5000", "2h");
    let c = as_user("fd_thief").await;
    refused(
        rows(&c, &format!("SET pgveil.approval = '{t}'")).await,
        &["issued to user fd_owner, not to fd_thief"],
    );
}

#[tokio::test]
async fn approval_for_another_table_is_refused() {
    let t = token("fd_table", "public.stays", "10000", "2h");
    let c = as_user("fd_table").await;
    c.batch_execute(&format!("SET pgveil.approval = '{t}'"))
        .await
        .unwrap();
    refused(
        rows(&c, "SELECT phone FROM guests").await,
        &["covers public.stays, not public.guests"],
    );
    refused(
        rows(&c, "SELECT phone FROM guests WHERE id > 0").await,
        &["max_rows = 100", "covers public.stays, not public.guests"],
    );
    // It does lift the cap on the table it names.
    assert_eq!(
        rows(&c, "SELECT notes FROM stays").await.unwrap().len(),
        8000
    );
}

#[test]
fn approve_refuses_self_approval_and_unlisted_approvers() {
    let _ = veil();
    for (requester, approver, expect) in [
        ("bob", "bob", "second person"),
        ("alice", "carol", "carol is not an approver"),
    ] {
        let out = approve(&[
            "--requester",
            requester,
            "--approver",
            approver,
            "--tables",
            "public.guests",
            "--max-rows",
            "10",
            "--ttl",
            "1h",
            "--reason",
            "r",
        ]);
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{err}");
    }
    let out = approve(&[
        "--requester",
        "alice",
        "--approver",
        "bob",
        "--tables",
        "public.stays_typo",
        "--max-rows",
        "10",
        "--ttl",
        "1h",
        "--reason",
        "r",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no protected columns"));
}

#[tokio::test]
async fn the_approval_setting_never_reaches_the_server_in_other_statements() {
    let c = as_user("bob").await;
    for sql in [
        "BEGIN; SET pgveil.approval = 'x'",
        "SELECT set_config('pgveil.approval', 'x', false)",
        "SET LOCAL pgveil.approval = 'x'",
    ] {
        refused(rows(&c, sql).await, &["statement of its own"]);
        let _ = c.batch_execute("ROLLBACK").await;
    }
    // The prepared-statement path never carries it either.
    let err = c.prepare("SET pgveil.approval = 'x'").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
}
