//! Test harness: one throwaway PostgreSQL per test binary, pgveil running
//! in-process in front of it, and helpers to reach both with real clients.
//!
//! The server is started on first use and cleaned up by `TempDb`'s watchdog
//! when the test process exits.

#![allow(dead_code)] // each test binary uses a different subset

pub mod certs;

use pgveil::config::Config;
use pgveil::server::Proxy;
use pgveil::tempdb::TempDb;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The test binary's PostgreSQL server. It accepts TLS too (with the
/// certificates of [`certs`]), so upstream TLS can be tested against it;
/// plaintext connections work as before.
pub fn db() -> &'static TempDb {
    static DB: OnceLock<TempDb> = OnceLock::new();
    DB.get_or_init(|| {
        match TempDb::start_with_tls(&[], &certs::certs().cert_pem, &certs::certs().key_pem) {
            Ok(db) => db,
            Err(e) => panic!("cannot start the test PostgreSQL: {e}"),
        }
    })
}

/// The runtime pgveil runs on in tests; separate from each test's own
/// runtime so proxies outlive individual tests.
pub fn proxy_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| pgveil::server::runtime(2).expect("build proxy runtime"))
}

/// The default configuration pointing at the test server.
pub fn config() -> Config {
    let mut cfg = Config::default();
    cfg.proxy.listen = "127.0.0.1:0".into();
    cfg.proxy.upstream = db().addr();
    cfg.admin.listen = "127.0.0.1:0".into();
    cfg
}

/// Starts a proxy with `cfg` on the proxy runtime. The admin listener
/// gets a free port unless the test chose one: many proxies run at once.
pub fn start_proxy(mut cfg: Config) -> Proxy {
    if cfg.admin.listen == pgveil::config::AdminConfig::default().listen {
        cfg.admin.listen = "127.0.0.1:0".into();
    }
    std::thread::spawn(move || proxy_runtime().block_on(Proxy::bind(cfg)))
        .join()
        .expect("proxy thread")
        .expect("bind proxy")
}

/// A proxy with the default configuration, shared by a test binary.
pub fn proxy() -> &'static Proxy {
    static PROXY: OnceLock<Proxy> = OnceLock::new();
    PROXY.get_or_init(|| start_proxy(config()))
}

/// A 0600 copy of the demo master key (git does not keep file modes, and
/// pgveil refuses a key file others can read). Demo key: tests only.
pub fn demo_master_key_file() -> std::path::PathBuf {
    static KEY: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = KEY.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("master.key");
        std::fs::write(&path, include_str!("../../keyring/demo-master.key")).expect("write key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
        dir
    });
    dir.path().join("master.key")
}

/// The repository's demo keyring directory.
pub fn demo_keyring_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("keyring")
}

/// The shared proxy's address.
pub fn proxy_addr() -> SocketAddr {
    proxy().local_addr()
}

/// A libpq-style connection string.
pub fn conn_str(addr: SocketAddr, user: &str, password: Option<&str>) -> String {
    let mut s = format!(
        "host={} port={} user={user} dbname=postgres connect_timeout=10",
        addr.ip(),
        addr.port()
    );
    if let Some(p) = password {
        s.push_str(&format!(" password={p}"));
    }
    s
}

/// Connects tokio-postgres through `addr`, driving the connection in the
/// background.
pub async fn connect_to(
    addr: SocketAddr,
    user: &str,
    password: Option<&str>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) =
        tokio_postgres::connect(&conn_str(addr, user, password), tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Connects as the superuser through the shared proxy.
pub async fn connect() -> tokio_postgres::Client {
    connect_to(proxy_addr(), "postgres", None)
        .await
        .expect("connect through pgveil")
}

/// The direct (not proxied) address of the test server.
pub fn direct_addr() -> SocketAddr {
    format!("127.0.0.1:{}", db().port())
        .parse()
        .expect("loopback address")
}

/// Connects tokio-postgres directly to PostgreSQL, bypassing pgveil.
pub async fn connect_direct() -> tokio_postgres::Client {
    connect_to(direct_addr(), "postgres", None)
        .await
        .expect("connect directly")
}

/// Runs psql against `addr` with the given extra arguments and stdin.
pub fn psql(
    addr: SocketAddr,
    user: &str,
    password: Option<&str>,
    args: &[&str],
    stdin: &str,
) -> Output {
    run_tool(
        "psql",
        addr,
        user,
        password,
        &[
            &["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", "postgres"],
            args,
        ]
        .concat(),
        stdin,
    )
}

/// Runs a PostgreSQL client program (psql, pgbench) against `addr`.
pub fn run_tool(
    tool: &str,
    addr: SocketAddr,
    user: &str,
    password: Option<&str>,
    args: &[&str],
    stdin: &str,
) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(db().bindir().join(tool));
    cmd.args([
        "-h",
        &addr.ip().to_string(),
        "-p",
        &addr.port().to_string(),
        "-U",
        user,
    ])
    .args(args)
    .env_remove("PGPASSWORD")
    .env("PGCONNECT_TIMEOUT", "10")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let mut child = cmd.spawn().expect("spawn client tool");
    if let Some(mut s) = child.stdin.take() {
        s.write_all(stdin.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait for client tool")
}

/// Polls `check` every 50 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A bare protocol client for what drivers do not expose (ParameterStatus,
/// malformed frames): writes raw bytes, reads back tagged messages.
pub mod raw {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A StartupMessage for protocol 3.0 with the given parameters.
    pub fn startup(params: &[(&str, &str)]) -> Vec<u8> {
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for (k, v) in params {
            body.extend(k.as_bytes());
            body.push(0);
            body.extend(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    /// A tagged frame.
    pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend(((body.len() + 4) as u32).to_be_bytes());
        out.extend(body);
        out
    }

    /// A simple Query frame.
    pub fn query(sql: &str) -> Vec<u8> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        frame(b'Q', &body)
    }

    /// Reads one tagged message; `None` at EOF.
    pub async fn read_msg(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
        let tag = s.read_u8().await.ok()?;
        let len = s.read_u32().await.ok()? as usize;
        let mut body = vec![0; len.checked_sub(4)?];
        s.read_exact(&mut body).await.ok()?;
        Some((tag, body))
    }

    /// Reads messages until ReadyForQuery (inclusive) or EOF.
    pub async fn read_until_ready(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(m) = read_msg(s).await {
            let done = m.0 == b'Z';
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    /// Connects as the trust superuser and reads through the first
    /// ReadyForQuery.
    pub async fn login(addr: std::net::SocketAddr) -> (TcpStream, Vec<(u8, Vec<u8>)>) {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&startup(&[("user", "postgres"), ("database", "postgres")]))
            .await
            .expect("send startup");
        let msgs = read_until_ready(&mut s).await;
        (s, msgs)
    }

    /// The value of one field (e.g. `b'C'` for SQLSTATE) of an ErrorResponse body.
    pub fn error_field(body: &[u8], field: u8) -> Option<String> {
        let mut rest = body;
        while let Some((&kind, tail)) = rest.split_first() {
            if kind == 0 {
                return None;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            if kind == field {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }
}
