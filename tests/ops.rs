//! Operations through real clients: graceful shutdown (SIGTERM with an open
//! transaction, 57P01 after `shutdown_timeout`), `max_client_connections`,
//! `idle_timeout`, `/metrics` and `/health`, and live reload of roles.
//!
//! Timeouts here are the behaviour under test (a 1 s `idle_timeout` must
//! close a session); every wait for it is bounded generously, so a slow
//! machine makes the test slower, never wrong.

mod common;

use common::raw;
use pgveil::config::Config;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

fn pgveil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgveil"))
}

/// A plain HTTP/1.0 request to the admin listener: (status, body).
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: pgveil\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, body.to_owned())
}

/// The value of one sample line (`name{labels} value`) in /metrics text.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http(addr, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// Reads messages until an ErrorResponse (returned) or EOF (`None`).
async fn next_error(s: &mut tokio::net::TcpStream) -> Option<(String, String)> {
    while let Some((tag, body)) = raw::read_msg(s).await {
        if tag == b'E' {
            return Some((
                raw::error_field(&body, b'C').unwrap_or_default(),
                raw::error_field(&body, b'M').unwrap_or_default(),
            ));
        }
    }
    None
}

#[tokio::test]
async fn metrics_and_health_follow_a_workload() {
    let proxy = common::start_proxy(common::config());
    let admin = proxy.admin_addr().expect("admin listener");
    let before = tokio::task::spawn_blocking(move || scrape(admin))
        .await
        .unwrap();
    let client = common::connect_to(proxy.local_addr(), "postgres", None)
        .await
        .unwrap();
    for i in 0..20 {
        client.simple_query("select 1").await.unwrap();
        let row = client.query_one("select $1::int4", &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i);
    }
    drop(client);
    let after = tokio::task::spawn_blocking(move || scrape(admin))
        .await
        .unwrap();
    let grew = |series: &str, by: f64| {
        let (a, b) = (sample(&before, series), sample(&after, series));
        assert!(b - a >= by, "{series}: {a} -> {b}\n{after}");
    };
    grew("pgveil_client_connections_total", 1.0);
    grew("pgveil_upstream_connections_total", 1.0);
    grew("pgveil_statements_total{outcome=\"relayed\"}", 40.0);
    grew("pgveil_bytes_total{direction=\"client_to_server\"}", 500.0);
    grew("pgveil_bytes_total{direction=\"server_to_client\"}", 500.0);
    grew("pgveil_statement_overhead_seconds_count", 40.0);
    assert!(after.contains("# TYPE pgveil_statement_overhead_seconds histogram"));

    let (status, body) = tokio::task::spawn_blocking(move || http(admin, "GET", "/health"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ok"), "{body}");
    let (status, _) = tokio::task::spawn_blocking(move || http(admin, "GET", "/nope"))
        .await
        .unwrap();
    assert_eq!(status, 404);
    // Reload without a file is refused, the proxy keeps running.
    let (status, body) = tokio::task::spawn_blocking(move || http(admin, "POST", "/reload"))
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("without --config"), "{body}");
    proxy.shutdown();
}

#[tokio::test]
async fn max_client_connections_refuses_extra_clients_with_53300() {
    let mut cfg = common::config();
    cfg.proxy.max_client_connections = 2;
    let proxy = common::start_proxy(cfg);
    let addr = proxy.local_addr();
    let a = common::connect_to(addr, "postgres", None).await.unwrap();
    let b = common::connect_to(addr, "postgres", None).await.unwrap();
    let err = common::connect_to(addr, "postgres", None)
        .await
        .expect_err("third client refused");
    let db = err.as_db_error().expect("ErrorResponse");
    assert_eq!(db.code().code(), "53300", "{db:?}");
    assert!(db.message().contains("max_client_connections"), "{db:?}");
    // The first two still work; when one leaves, a new client gets in.
    b.simple_query("select 1").await.unwrap();
    drop(b);
    let ok = common::eventually(Duration::from_secs(20), || async {
        common::connect_to(addr, "postgres", None).await.is_ok()
    })
    .await;
    assert!(ok, "a slot must free up when a client leaves");
    a.simple_query("select 1").await.unwrap();
    proxy.shutdown();
}

#[tokio::test]
async fn idle_timeout_closes_idle_sessions_only() {
    let mut cfg = common::config();
    cfg.proxy.idle_timeout = Duration::from_secs(1);
    let proxy = common::start_proxy(cfg);
    let addr = proxy.local_addr();
    // In a transaction: not idle, so it must survive the idle timeout.
    let (mut busy, msgs) = raw::login(addr).await;
    assert_eq!(msgs.last().map(|m| m.0), Some(b'Z'));
    busy.write_all(&raw::query("begin")).await.unwrap();
    let reply = raw::read_until_ready(&mut busy).await;
    assert_eq!(reply.last().map(|m| m.1.clone()), Some(b"T".to_vec()));

    let (mut idle, _) = raw::login(addr).await;
    let started = Instant::now();
    let (code, message) = tokio::time::timeout(Duration::from_secs(60), next_error(&mut idle))
        .await
        .expect("idle session closed within the safety limit")
        .expect("FATAL before EOF");
    assert_eq!(code, "57P05", "{message}");
    assert!(message.contains("idle_timeout"), "{message}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(
        raw::read_msg(&mut idle).await.is_none(),
        "closed after the FATAL"
    );

    // Still more than the timeout later, the transaction can go on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    busy.write_all(&raw::query("commit")).await.unwrap();
    let reply = raw::read_until_ready(&mut busy).await;
    assert!(reply.iter().any(|m| m.0 == b'C'), "{reply:?}");
    proxy.shutdown();
}

#[tokio::test]
async fn drain_closes_a_session_idle_in_transaction_after_the_timeout() {
    let mut cfg = common::config();
    cfg.proxy.shutdown_timeout = Duration::from_secs(1);
    let proxy = std::sync::Arc::new(common::start_proxy(cfg));
    let addr = proxy.local_addr();
    let (mut in_tx, _) = raw::login(addr).await;
    in_tx.write_all(&raw::query("begin")).await.unwrap();
    raw::read_until_ready(&mut in_tx).await;
    let (mut idle, _) = raw::login(addr).await;

    let drained = {
        let proxy = proxy.clone();
        common::proxy_runtime().spawn(async move { proxy.drain().await })
    };
    // The idle session is closed at once, the one in a transaction only
    // after shutdown_timeout; both with 57P01.
    for s in [&mut idle, &mut in_tx] {
        let (code, message) = tokio::time::timeout(Duration::from_secs(60), next_error(s))
            .await
            .expect("closed within the safety limit")
            .expect("FATAL before EOF");
        assert_eq!(code, "57P01", "{message}");
        assert!(message.contains("shutting down"), "{message}");
    }
    tokio::time::timeout(Duration::from_secs(60), drained)
        .await
        .expect("drain finishes once sessions are gone")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after drain"
    );
}

/// `pgveil serve` as deployed: SIGHUP and `pgveil reload` keep it running;
/// SIGTERM with a transaction open stops new connections, lets the
/// transaction commit, then the process exits.
#[tokio::test]
async fn sigterm_lets_an_open_transaction_commit_then_exits() {
    let db = common::db();
    db.psql("CREATE TABLE IF NOT EXISTS ops_shutdown (n int)")
        .unwrap();
    let port = pgveil::tempdb::free_port().unwrap();
    let admin_port = pgveil::tempdb::free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgveil.toml");
    std::fs::write(
        &path,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"{}\"\nshutdown_timeout = \"60s\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n",
            db.addr()
        ),
    )
    .unwrap();
    let mut child = pgveil()
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = common::eventually(Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    assert!(up, "pgveil serve did not listen");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);

    // Reload by signal and by command; the proxy keeps serving.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let out = pgveil()
        .args(["reload", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("0 protected column(s)"), "{text}");

    let client = common::connect_to(addr, "postgres", None).await.unwrap();
    client
        .batch_execute("begin; insert into ops_shutdown values (1)")
        .await
        .unwrap();

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let refused = common::eventually(Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refused, "new connections must be refused after SIGTERM");
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "exited before the transaction ended"
    );

    client
        .batch_execute("insert into ops_shutdown values (2); commit")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "pgveil did not exit after the commit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let committed = db.psql("select count(*) from ops_shutdown").unwrap();
    assert_eq!(committed.trim(), "2");
}

async fn phone(c: &tokio_postgres::Client) -> String {
    c.query_one("select phone from ops_guests where id = 1", &[])
        .await
        .unwrap()
        .get::<_, String>(0)
}

const RELOAD_POLICY: &str = r#"
[[columns]]
table = "ops_guests"
column = "phone"
type = "text"
encrypt = "searchable"
level = 3
mask = "phone"

[[roles]]
name = "clerk"
members = ["ops_clerk"]
clearance = CLEARANCE
"#;

/// Writes the config next to a private copy of the demo keyring (so the
/// test can rotate it).
fn write_reload_config(path: &std::path::Path, clearance: &str) {
    let keyring = path.with_file_name("keyring");
    if !keyring.exists() {
        std::fs::create_dir(&keyring).unwrap();
        std::fs::copy(
            common::demo_keyring_dir().join("keyring.toml"),
            keyring.join("keyring.toml"),
        )
        .unwrap();
    }
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [keyring]\ndir = \"{}\"\nmaster_key_file = \"{}\"\n{}",
        common::db().addr(),
        keyring.display(),
        common::demo_master_key_file().display(),
        RELOAD_POLICY.replace("CLEARANCE", clearance)
    );
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn reload_changes_a_roles_clearance_for_an_open_session() {
    let db = common::db();
    db.psql(
        "DROP TABLE IF EXISTS ops_guests; CREATE TABLE ops_guests (id int, phone bytea); \
         DO $$ BEGIN CREATE ROLE ops_clerk LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
         GRANT ALL ON ops_guests TO ops_clerk;",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgveil.toml");
    write_reload_config(&path, "2");
    let cfg = Config::load(&path).unwrap();
    let proxy = common::start_proxy(cfg);
    let admin = proxy.admin_addr().expect("admin");
    let before = tokio::task::spawn_blocking(move || scrape(admin))
        .await
        .unwrap();

    let client = common::connect_to(proxy.local_addr(), "ops_clerk", None)
        .await
        .unwrap();
    client
        .execute("insert into ops_guests values (1, $1)", &[&"13812345678"])
        .await
        .unwrap();
    assert_eq!(phone(&client).await, "138****5678");
    // A statement prepared (and described) before the reload.
    let prepared = client
        .prepare("select phone from ops_guests where id = 1")
        .await
        .unwrap();
    let run_prepared = || async {
        client
            .query_one(&prepared, &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    assert_eq!(run_prepared().await, "138****5678");

    // Clearance 3 reaches the column's level: the same session sees it clear.
    write_reload_config(&path, "3");
    let (status, body) = tokio::task::spawn_blocking(move || http(admin, "POST", "/reload"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("1 protected column(s), 1 role(s)"), "{body}");
    assert_eq!(
        run_prepared().await,
        "13812345678",
        "prepared before the reload"
    );
    assert_eq!(phone(&client).await, "13812345678");

    // An invalid file is rejected and the running policy kept.
    write_reload_config(&path, "9");
    let (status, body) = tokio::task::spawn_blocking(move || http(admin, "POST", "/reload"))
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("reload rejected") && body.contains("clearance"),
        "{body}"
    );
    assert_eq!(phone(&client).await, "13812345678");

    // Back to 2 through the Proxy API (what SIGHUP calls).
    write_reload_config(&path, "2");
    let summary = common::proxy_runtime()
        .spawn({
            let shared = proxy.shared().clone();
            async move { pgveil::server::reload::reload(&shared).await }
        })
        .await
        .unwrap()
        .unwrap();
    assert!(summary.contains("protected column"), "{summary}");
    assert_eq!(phone(&client).await, "138****5678");

    // Statements prepared before the rotation: an equality lookup rendered
    // for one key version, and an insert.
    let lookup = client
        .prepare("select id from ops_guests where phone = $1 order by id")
        .await
        .unwrap();
    let insert = client
        .prepare("insert into ops_guests values ($1, $2)")
        .await
        .unwrap();
    assert_eq!(
        client
            .query(&lookup, &[&"13812345678"])
            .await
            .unwrap()
            .len(),
        1
    );

    // Key rotation takes effect on reload: new writes use version 2, and
    // searchable equality finds rows under both versions.
    let out = pgveil()
        .args(["keyring", "rotate", "--config"])
        .arg(&path)
        .env_remove("PGVEIL_MASTER_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = tokio::task::spawn_blocking(move || http(admin, "POST", "/reload"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    client
        .execute("insert into ops_guests values (2, $1)", &[&"13812345678"])
        .await
        .unwrap();
    let versions = db
        .psql("select string_agg(get_byte(phone, 5)::text, ',' order by id) from ops_guests")
        .unwrap();
    assert_eq!(versions.trim(), "1,2", "key version byte of each envelope");
    let found = client
        .query(
            "select id from ops_guests where phone = $1 order by id",
            &[&"13812345678"],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    // The lookup prepared before the rotation is prepared again behind the
    // client's back and finds both rows; the old insert writes version 2.
    let look_up = || async {
        let rows = client.query(&lookup, &[&"13812345678"]).await.unwrap();
        rows.iter().map(|r| r.get(0)).collect::<Vec<i32>>()
    };
    assert_eq!(
        look_up().await,
        [1, 2],
        "statement prepared before the rotation"
    );
    client
        .execute(&insert, &[&3i32, &"13812345678"])
        .await
        .unwrap();
    assert_eq!(look_up().await, [1, 2, 3]);
    let versions = db
        .psql("select get_byte(phone, 5) from ops_guests where id = 3")
        .unwrap();
    assert_eq!(versions.trim(), "2", "insert prepared before the rotation");

    let after = tokio::task::spawn_blocking(move || scrape(admin))
        .await
        .unwrap();
    let grew = |series: &str, by: f64| {
        let (a, b) = (sample(&before, series), sample(&after, series));
        assert!(b - a >= by, "{series}: {a} -> {b}\n{after}");
    };
    let col = "{column=\"public.ops_guests.phone\"}";
    grew(&format!("pgveil_encryptions_total{col}"), 1.0);
    grew(&format!("pgveil_decryptions_total{col}"), 4.0);
    grew(&format!("pgveil_masks_applied_total{col}"), 2.0);
    grew("pgveil_statements_total{outcome=\"rewritten\"}", 1.0);
    grew("pgveil_config_reloads_total{outcome=\"applied\"}", 3.0);
    grew("pgveil_config_reloads_total{outcome=\"rejected\"}", 1.0);
    assert!(
        sample(&after, "pgveil_plan_cache_total{outcome=\"hit\"}")
            + sample(&after, "pgveil_plan_cache_total{outcome=\"miss\"}")
            > 0.0,
        "{after}"
    );
    proxy.shutdown();
}

#[test]
fn check_reports_tls_and_role_problems_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgveil.toml");
    std::fs::write(
        &path,
        format!(
            "[proxy]\nupstream = \"{}\"\n\n[tls]\ncert = \"/nonexistent/server.crt\"\nkey = \"/nonexistent/server.key\"\n\n\
             [upstream_tls]\nmode = \"verify-full\"\n\n[[roles]]\nname = \"clerk\"\nclearance = 7\n",
            common::db().addr()
        ),
    )
    .unwrap();
    let out = pgveil()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    for needle in [
        "line 5: [tls] cert: cannot read [tls] cert /nonexistent/server.crt",
        "line 9: [upstream_tls] mode: [upstream_tls] mode = \"verify-full\" needs ca",
        "line 11: [[roles]] clerk:",
        "pgveil: 3 problem(s)",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

/// `[log] format = "json"` gives one JSON object per line, `RUST_LOG`
/// overrides `[log] level`, and even at trace level no SQL literal
/// reaches the log.
#[tokio::test]
async fn json_logs_at_trace_level_carry_no_sql_literals() {
    let port = pgveil::tempdb::free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgveil.toml");
    std::fs::write(
        &path,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"{}\"\n[admin]\nlisten = \"\"\n\
             [log]\nlevel = \"warn\"\nformat = \"json\"\n",
            common::db().addr()
        ),
    )
    .unwrap();
    let child = pgveil()
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "trace")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = common::eventually(Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    assert!(up, "pgveil serve did not listen");
    let client = common::connect_to(addr, "postgres", None).await.unwrap();
    let row = client
        .query_one(
            "select 'SECRET-LITERAL-42'::text, $1::text",
            &[&"SECRET-PARAM-43"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "SECRET-LITERAL-42");
    drop(client);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("authenticated")),
        "RUST_LOG=trace must override level = \"warn\":\n{log}"
    );
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
    assert!(!log.contains("SECRET-LITERAL-42"), "{log}");
    assert!(!log.contains("SECRET-PARAM-43"), "{log}");
}
