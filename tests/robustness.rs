//! Bad input and failures: each gets a clear error for that one client, no
//! panic, and every other connection keeps working.

mod common;

use common::*;
use proptest::prelude::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads to EOF (bounded) and returns every message received.
async fn read_all(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), raw::read_msg(s)).await {
        out.push(m);
    }
    out
}

fn sqlstates(msgs: &[(u8, Vec<u8>)]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.0 == b'E')
        .filter_map(|m| raw::error_field(&m.1, b'C'))
        .collect()
}

fn messages(msgs: &[(u8, Vec<u8>)]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.0 == b'E')
        .filter_map(|m| raw::error_field(&m.1, b'M'))
        .collect()
}

/// Proves the proxy still serves ordinary clients.
async fn still_serves(addr: std::net::SocketAddr) {
    let client = connect_to(addr, "postgres", None)
        .await
        .expect("proxy still accepts clients");
    let v: i32 = client.query_one("select 41 + 1", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
}

#[tokio::test]
async fn malformed_length_closes_only_that_connection() {
    let addr = proxy_addr();
    let bystander = connect().await;
    let (mut s, _) = raw::login(addr).await;
    // Length 2 is smaller than the length field itself.
    s.write_all(&[b'Q', 0, 0, 0, 2]).await.unwrap();
    let msgs = read_all(&mut s).await;
    assert_eq!(sqlstates(&msgs), ["08P01"]);
    assert!(
        messages(&msgs)[0].starts_with("pgveil: invalid message length"),
        "{msgs:?}"
    );
    assert_eq!(
        bystander
            .query_one("select 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    still_serves(addr).await;
}

#[tokio::test]
async fn two_gigabyte_length_is_refused_from_the_header() {
    let addr = proxy_addr();
    let (mut s, _) = raw::login(addr).await;
    // Claims 2 GB and sends nothing more: refused at once, nothing allocated
    // for the promised body (the test would hang or OOM otherwise).
    s.write_all(&[b'Q', 0x80, 0, 0, 0]).await.unwrap();
    let msgs = read_all(&mut s).await;
    assert_eq!(sqlstates(&msgs), ["08P01"]);
    assert!(messages(&msgs)[0].contains("exceeds the limit"), "{msgs:?}");
    still_serves(addr).await;
}

#[tokio::test]
async fn oversized_messages_respect_max_message_bytes() {
    let mut cfg = config();
    cfg.proxy.max_message_bytes = 64 * 1024;
    let proxy = start_proxy(cfg);
    let addr = proxy.local_addr();
    // From the client: a 100 KB query.
    let (mut s, _) = raw::login(addr).await;
    let sql = format!("select '{}'", "x".repeat(100_000));
    s.write_all(&raw::query(&sql)).await.unwrap();
    let msgs = read_all(&mut s).await;
    assert_eq!(sqlstates(&msgs), ["08P01"]);
    assert!(
        messages(&msgs)[0].contains("of 100015 bytes exceeds the limit of 65536 bytes"),
        "{msgs:?}"
    );
    // From the server: a row larger than the cap ends that session with a
    // clear error instead of buffering without bound.
    let client = connect_to(addr, "postgres", None).await.unwrap();
    let err = client
        .query_one("select repeat('y', 100000)", &[])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("08P01") || err.is_closed() || err.as_db_error().is_some(),
        "{err}"
    );
    still_serves(addr).await;
}

#[tokio::test]
async fn unsupported_protocol_version_is_refused() {
    let addr = proxy_addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Protocol 2.0 StartupMessage.
    let mut pkt = 12u32.to_be_bytes().to_vec();
    pkt.extend(0x0002_0000u32.to_be_bytes());
    pkt.extend(b"u\0\0\0");
    let len = pkt.len() as u32;
    pkt[..4].copy_from_slice(&len.to_be_bytes());
    s.write_all(&pkt).await.unwrap();
    let msgs = read_all(&mut s).await;
    assert_eq!(sqlstates(&msgs), ["0A000"]);
    assert!(
        messages(&msgs)[0].contains("unsupported frontend protocol 2.0"),
        "{msgs:?}"
    );
    still_serves(addr).await;
}

#[tokio::test]
async fn oversized_startup_packet_is_refused() {
    let addr = proxy_addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&1_000_000u32.to_be_bytes()).await.unwrap();
    let msgs = read_all(&mut s).await;
    assert_eq!(sqlstates(&msgs), ["08P01"]);
    assert!(
        messages(&msgs)[0].contains("invalid startup packet length"),
        "{msgs:?}"
    );
    still_serves(addr).await;
}

#[tokio::test]
async fn silent_client_is_dropped_after_startup_timeout() {
    let mut cfg = config();
    cfg.proxy.startup_timeout = Duration::from_millis(300);
    let proxy = start_proxy(cfg);
    let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("proxy closes the idle connection")
        .unwrap_or(0);
    assert_eq!(n, 0);
    still_serves(proxy.local_addr()).await;
}

#[tokio::test]
async fn unreachable_upstream_gives_08001() {
    let mut cfg = config();
    cfg.proxy.upstream = format!("127.0.0.1:{}", pgveil::tempdb::free_port().unwrap());
    let proxy = start_proxy(cfg);
    let err = connect_to(proxy.local_addr(), "postgres", None)
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("an ErrorResponse from pgveil");
    assert_eq!(db.code().code(), "08001");
    assert!(
        db.message()
            .starts_with("pgveil: cannot connect to the PostgreSQL server"),
        "{}",
        db.message()
    );
}

#[tokio::test]
async fn server_going_away_gives_the_client_an_error_and_others_continue() {
    // A second server just for this test, so stopping it harms nobody else.
    let doomed = pgveil::tempdb::TempDb::start().unwrap();
    let mut cfg = config();
    cfg.proxy.upstream = doomed.addr();
    let proxy = start_proxy(cfg);
    let (mut s, _) = raw::login(proxy.local_addr()).await;
    let bystander = connect().await; // through the shared proxy, other server
    drop(doomed); // immediate shutdown of the whole server
    let msgs = read_all(&mut s).await;
    let codes = sqlstates(&msgs);
    assert!(
        codes
            .iter()
            .any(|c| ["08006", "57P01", "57P02"].contains(&c.as_str())),
        "{msgs:?}"
    );
    assert_eq!(
        bystander
            .query_one("select 7", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
}

#[tokio::test]
async fn cancel_with_unknown_key_is_ignored() {
    let addr = proxy_addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut pkt = 16u32.to_be_bytes().to_vec();
    pkt.extend(80_877_102u32.to_be_bytes());
    pkt.extend(12345i32.to_be_bytes());
    pkt.extend([9, 9, 9, 9]);
    s.write_all(&pkt).await.unwrap();
    let msgs = read_all(&mut s).await;
    assert!(msgs.is_empty(), "{msgs:?}");
    still_serves(addr).await;
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random bytes as the first thing a client sends: the connection may be
    /// refused or closed, but the proxy never panics and keeps serving.
    #[test]
    fn random_startup_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        rt().block_on(async {
            let addr = proxy_addr();
            let mut s = TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(&data).await;
            let _ = s.shutdown().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), read_all(&mut s)).await;
            still_serves(addr).await;
        });
    }

    /// Random bytes after a successful login.
    #[test]
    fn random_bytes_after_login(data in proptest::collection::vec(any::<u8>(), 1..300)) {
        rt().block_on(async {
            let addr = proxy_addr();
            let (mut s, _) = raw::login(addr).await;
            let _ = s.write_all(&data).await;
            let _ = s.shutdown().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), read_all(&mut s)).await;
            still_serves(addr).await;
        });
    }
}
