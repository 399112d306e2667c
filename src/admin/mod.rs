//! The admin listener (`[admin] listen`): `/metrics`, `/health`, `/reload`.
//!
//! A deliberately small HTTP/1.x server: one request per connection, no
//! keep-alive, no body parsing. It is for Prometheus, a load balancer's
//! health probe and `pgveil reload`, on loopback or a management network,
//! so it needs nothing a full HTTP stack would add.
//!
//! * `GET /metrics`: every counter in Prometheus text format ([`metrics`]).
//! * `GET /health`: `200` while pgveil accepts clients and the upstream
//!   answers a TCP connect; `503` while shutting down or when the upstream
//!   is unreachable.
//! * `POST /reload`: reloads the configuration file (as SIGHUP does) and
//!   answers with the outcome; `409` when the new file was rejected.

pub mod metrics;

pub use metrics::{metrics, ColumnCounters, Tally};

use crate::server::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Largest request head read; anything longer is answered 431.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves admin requests until `stop` is cancelled.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin listener (metrics, health, reload)");
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, &shared).await {
                            debug!(error = %e, "admin request failed");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn handle(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let complete = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Ok(true);
            }
            if head.len() > MAX_REQUEST {
                return Ok(false);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                // HTTP/0.9-style clients close after the request line.
                return Ok(!head.is_empty());
            }
            head.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let (status, body) = match complete {
        Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(false)) => (431, "request too large\n".to_owned()),
        Ok(Ok(true)) => route(&head, shared).await,
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let content_type = if body.starts_with("# HELP") || body.starts_with("# TYPE") {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let response = format!(
        "HTTP/1.0 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn route(head: &[u8], shared: &Shared) -> (u16, String) {
    let line = head
        .split(|b| *b == b'\n')
        .next()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => (200, metrics().render()),
        ("GET", "/health") => health(shared).await,
        ("POST", "/reload") => match crate::server::reload::reload(shared).await {
            Ok(summary) => (200, format!("{summary}\n")),
            Err(e) => (409, format!("{e}\n")),
        },
        (_, "/metrics" | "/health" | "/reload") => (405, "method not allowed\n".into()),
        _ => (
            404,
            "not found; try /metrics, /health or POST /reload\n".into(),
        ),
    }
}

async fn health(shared: &Shared) -> (u16, String) {
    if shared.draining() {
        return (503, "shutting down\n".into());
    }
    let upstream = &shared.config.proxy.upstream;
    let limit = shared
        .config
        .proxy
        .connect_timeout
        .min(Duration::from_secs(2));
    match tokio::time::timeout(limit, TcpStream::connect(upstream)).await {
        Ok(Ok(_)) => (
            200,
            format!(
                "ok: accepting clients ({} connected); upstream {upstream} reachable\n",
                shared.active_clients()
            ),
        ),
        Ok(Err(e)) => (503, format!("upstream {upstream} unreachable: {e}\n")),
        Err(_) => (
            503,
            format!("upstream {upstream} did not answer in {limit:?}\n"),
        ),
    }
}
