//! TLS on both sides, through real clients: psql (libpq) with
//! `sslmode=require` and `verify-full`, tokio-postgres with a rustls
//! connector and SCRAM, `[tls] require`, and `[upstream_tls]` against the
//! test PostgreSQL (which runs with `ssl = on`).

mod common;

use common::certs::certs;
use pgveil::config::{Config, UpstreamTlsMode};
use pgveil::server::Proxy;
use std::net::SocketAddr;
use std::sync::OnceLock;

fn tls_config(require: bool) -> Config {
    let mut cfg = common::config();
    cfg.tls.cert = Some(certs().cert.clone());
    cfg.tls.key = Some(certs().key.clone());
    cfg.tls.require = require;
    cfg
}

/// A proxy offering TLS to clients (not requiring it).
fn tls_proxy() -> &'static Proxy {
    static P: OnceLock<Proxy> = OnceLock::new();
    P.get_or_init(|| common::start_proxy(tls_config(false)))
}

/// Runs psql with a full libpq connection string (so sslmode and friends
/// can be given) and returns (success, stdout + stderr).
fn psql_conninfo(conninfo: &str, password: Option<&str>, sql: &str) -> (bool, String) {
    let mut cmd = std::process::Command::new(common::db().bindir().join("psql"));
    cmd.args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        conninfo,
        "-c",
        sql,
    ])
    .env_remove("PGPASSWORD")
    .env_remove("PGSSLMODE")
    .env("PGCONNECT_TIMEOUT", "10");
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd.output().expect("run psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn conninfo(addr: SocketAddr, host: &str, user: &str, extra: &str) -> String {
    format!(
        "host={host} port={} user={user} dbname=postgres {extra}",
        addr.port()
    )
}

#[test]
fn psql_connects_with_sslmode_require_and_verify_full() {
    let addr = tls_proxy().local_addr();
    let (ok, out) = psql_conninfo(
        &conninfo(addr, "127.0.0.1", "postgres", "sslmode=require"),
        None,
        "\\conninfo",
    );
    assert!(ok, "{out}");
    assert!(out.contains("SSL connection"), "{out}");

    let ca = certs().ca.display().to_string();
    let (ok, out) = psql_conninfo(
        &conninfo(
            addr,
            "localhost",
            "scram_user",
            &format!("sslmode=verify-full sslrootcert={ca}"),
        ),
        Some("scram_pass"),
        "select current_user",
    );
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "scram_user");

    // verify-full checks the name: the certificate is for localhost and
    // 127.0.0.1, not for this name.
    let (ok, out) = psql_conninfo(
        &conninfo(
            addr,
            "127.0.0.1",
            "postgres",
            &format!("sslmode=verify-full sslrootcert={ca} hostaddr=127.0.0.1 host=wrong.example"),
        ),
        None,
        "select 1",
    );
    assert!(!ok, "{out}");
    assert!(out.contains("wrong.example"), "{out}");

    // Plaintext is still allowed when not required.
    let (ok, out) = psql_conninfo(
        &conninfo(addr, "127.0.0.1", "postgres", "sslmode=disable"),
        None,
        "select 7",
    );
    assert!(ok && out.trim() == "7", "{out}");
}

#[tokio::test]
async fn tokio_postgres_scram_over_tls() {
    let addr = tls_proxy().local_addr();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(common::certs::client_config());
    let mut pg = tokio_postgres::Config::new();
    pg.host("localhost")
        .port(addr.port())
        .user("scram_user")
        .password("scram_pass")
        .dbname("postgres")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, conn) = pg.connect(tls).await.expect("connect over TLS with SCRAM");
    tokio::spawn(conn);
    let row = client
        .query_one("select current_user::text, $1::int4 + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "scram_user");
    assert_eq!(row.get::<_, i32>(1), 42);
    // Extended protocol and a larger result over TLS.
    let rows = client
        .query(
            "select g, repeat('x', 1000) from generate_series(1, 2000) g",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2000);
}

#[test]
fn require_refuses_plaintext_clients_with_28000() {
    let proxy = common::start_proxy(tls_config(true));
    let addr = proxy.local_addr();
    let (ok, out) = psql_conninfo(
        &conninfo(addr, "127.0.0.1", "postgres", "sslmode=disable"),
        None,
        "select 1",
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("pgveil: this proxy requires TLS; connect with sslmode=require"),
        "{out}"
    );
    let (ok, out) = psql_conninfo(
        &conninfo(addr, "127.0.0.1", "postgres", "sslmode=require"),
        None,
        "select 1",
    );
    assert!(ok && out.trim() == "1", "{out}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let err = common::connect_to(addr, "postgres", None)
            .await
            .expect_err("plaintext refused");
        let code = err.as_db_error().map(|e| e.code().code().to_owned());
        assert_eq!(code.as_deref(), Some("28000"), "{err}");
    });
}

#[test]
fn without_tls_a_client_that_insists_is_refused_as_postgresql_does() {
    let addr = common::proxy_addr();
    let (ok, out) = psql_conninfo(
        &conninfo(addr, "127.0.0.1", "postgres", "sslmode=require"),
        None,
        "select 1",
    );
    assert!(!ok, "{out}");
    assert!(out.contains("server does not support SSL"), "{out}");
    let (ok, out) = psql_conninfo(
        &conninfo(addr, "127.0.0.1", "postgres", "sslmode=prefer"),
        None,
        "select 1",
    );
    assert!(ok, "{out}");
}

/// `ssl` of the backend serving this connection, as PostgreSQL sees it.
async fn upstream_uses_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

fn upstream_tls_proxy(mode: UpstreamTlsMode, server_name: Option<&str>) -> Proxy {
    let mut cfg = common::config();
    // "localhost" resolves to the loopback address the server listens on.
    cfg.proxy.upstream = format!("localhost:{}", common::db().port());
    cfg.upstream_tls.mode = mode;
    cfg.upstream_tls.ca = Some(certs().ca.clone());
    cfg.upstream_tls.server_name = server_name.map(str::to_owned);
    common::start_proxy(cfg)
}

#[tokio::test]
async fn upstream_tls_require_and_verify_full() {
    // Sanity: the shared proxy talks to the server in plaintext.
    assert!(!upstream_uses_tls(&common::connect().await).await);

    for mode in [UpstreamTlsMode::Require, UpstreamTlsMode::VerifyFull] {
        let proxy = upstream_tls_proxy(mode, None);
        let addr = proxy.local_addr();
        let client = common::connect_to(addr, "postgres", None).await.unwrap();
        assert!(upstream_uses_tls(&client).await, "{mode:?}");
        // SCRAM from a plaintext client, server reached over TLS.
        let client = common::connect_to(addr, "scram_user", Some("scram_pass"))
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert!(upstream_uses_tls(&client).await);
        // pgveil's own catalog connection uses the same settings.
        let mut cfg = common::config();
        cfg.proxy.upstream = format!("localhost:{}", common::db().port());
        cfg.upstream_tls.mode = mode;
        cfg.upstream_tls.ca = Some(certs().ca.clone());
        let catalog = pgveil::catalog::connect(&cfg).await.unwrap();
        assert!(upstream_uses_tls(&catalog).await, "{mode:?} catalog");
        proxy.shutdown();
    }
}

#[tokio::test]
async fn upstream_tls_withdraws_channel_binding() {
    use common::raw;
    use tokio::io::AsyncWriteExt;
    let proxy = upstream_tls_proxy(UpstreamTlsMode::VerifyFull, None);
    // Directly, over TLS, the server offers SCRAM-SHA-256-PLUS; through
    // pgveil it must not, because the binding would be to pgveil's session.
    let mut s = tokio::net::TcpStream::connect(proxy.local_addr())
        .await
        .unwrap();
    s.write_all(&raw::startup(&[
        ("user", "scram_user"),
        ("database", "postgres"),
    ]))
    .await
    .unwrap();
    let (tag, body) = raw::read_msg(&mut s).await.expect("auth request");
    assert_eq!(tag, b'R');
    assert_eq!(&body[..4], &10i32.to_be_bytes(), "AuthenticationSASL");
    let mechanisms = String::from_utf8_lossy(&body[4..]).into_owned();
    assert!(mechanisms.contains("SCRAM-SHA-256\0"), "{mechanisms:?}");
    assert!(!mechanisms.contains("PLUS"), "{mechanisms:?}");
    proxy.shutdown();
}

#[tokio::test]
async fn upstream_verify_full_refuses_a_certificate_for_another_name() {
    let proxy = upstream_tls_proxy(UpstreamTlsMode::VerifyFull, Some("db.example"));
    let err = common::connect_to(proxy.local_addr(), "postgres", None)
        .await
        .expect_err("certificate name mismatch must fail");
    let db = err.as_db_error().expect("an ErrorResponse from pgveil");
    assert_eq!(db.code().code(), "08001", "{db:?}");
    assert!(
        db.message().contains("TLS handshake failed") && db.message().contains("[upstream_tls]"),
        "{}",
        db.message()
    );
    proxy.shutdown();
}

#[test]
fn bad_tls_files_stop_the_proxy_with_the_path() {
    let mut cfg = common::config();
    cfg.tls.cert = Some("/nonexistent/pgveil.crt".into());
    cfg.tls.key = Some(certs().key.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(Proxy::bind(cfg))
        .expect_err("missing certificate must stop the proxy");
    assert!(err.to_string().contains("/nonexistent/pgveil.crt"), "{err}");

    // A key that does not belong to the certificate.
    let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("other.key");
    std::fs::write(&key, other).unwrap();
    let mut cfg = common::config();
    cfg.tls.cert = Some(certs().cert.clone());
    cfg.tls.key = Some(key);
    let err = rt.block_on(Proxy::bind(cfg)).expect_err("mismatched key");
    assert!(err.to_string().contains("[tls]"), "{err}");
}

#[test]
fn tls_on_both_sides_explains_channel_binding() {
    let mut cfg = tls_config(false);
    cfg.proxy.upstream = format!("localhost:{}", common::db().port());
    cfg.upstream_tls.mode = UpstreamTlsMode::VerifyFull;
    cfg.upstream_tls.ca = Some(certs().ca.clone());
    let proxy = common::start_proxy(cfg);
    let addr = proxy.local_addr();
    // libpq over TLS supports channel binding and, offered none, tells the
    // server so; PostgreSQL (itself on TLS) would call that a downgrade.
    // pgveil says what to do instead.
    let (ok, out) = psql_conninfo(
        &conninfo(addr, "127.0.0.1", "scram_user", "sslmode=require"),
        Some("scram_pass"),
        "select 1",
    );
    assert!(!ok, "{out}");
    assert!(out.contains("channel_binding=disable"), "{out}");
    for extra in ["sslmode=require channel_binding=disable", "sslmode=disable"] {
        let (ok, out) = psql_conninfo(
            &conninfo(addr, "127.0.0.1", "scram_user", extra),
            Some("scram_pass"),
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
        );
        assert!(ok && out.trim() == "t", "{extra}: {out}");
    }
    proxy.shutdown();
}

/// A client that reads slowly makes pgveil's TLS writes wait on a full
/// socket; what rustls buffered must still be flushed once the socket
/// drains, or the end of the result would sit in pgveil forever.
#[tokio::test]
async fn slow_tls_reader_gets_the_whole_result() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = tls_proxy().local_addr();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'S');
    let connector =
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(common::certs::client_config()));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(&common::raw::startup(&[
        ("user", "postgres"),
        ("database", "postgres"),
    ]))
    .await
    .unwrap();
    tls.write_all(&common::raw::query(
        "select repeat('x', 1000) from generate_series(1, 8000)",
    ))
    .await
    .unwrap();
    tls.flush().await.unwrap();
    // Let every buffer on the way fill up.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let read_all = async {
        let mut rows = 0;
        let mut ready = 0;
        let mut since_pause = 0;
        while ready < 2 {
            // Keep reading slowly, so pgveil's socket stays full.
            if since_pause > 64 * 1024 {
                since_pause = 0;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            since_pause += 1024;
            let tag = tls.read_u8().await.unwrap();
            let len = tls.read_u32().await.unwrap() as usize;
            let mut body = vec![0; len - 4];
            tls.read_exact(&mut body).await.unwrap();
            match tag {
                b'D' => rows += 1,
                b'Z' => ready += 1,
                _ => {}
            }
        }
        rows
    };
    let rows = tokio::time::timeout(std::time::Duration::from_secs(60), read_all)
        .await
        .expect("the whole result arrives");
    assert_eq!(rows, 8000);
}
