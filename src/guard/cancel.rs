//! Cancelling the upstream query whose result crossed a cap.
//!
//! A CancelRequest travels on a new connection to the server, so it is sent
//! from a spawned task; the session gets a receiver that completes when the
//! server has taken the request (it closes the connection after reading
//! it) or the attempt failed. The session stops reading the server's
//! replies until then, so the ReadyForQuery that lets the client send its
//! next query cannot overtake the cancel: a cancel that arrives while the
//! backend is idle is ignored by PostgreSQL, one that arrived late could
//! otherwise hit the client's next statement.

use crate::net::stream::MaybeTls;
use crate::proto::keydata::CancelKey;
use crate::tls::UpstreamTls;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// How long the server gets to close the cancel connection.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// Sends a CancelRequest for `key` to `upstream` in the background, over
/// TLS when the sessions' own upstream connections use it (the request
/// carries the backend's secret key, which must not cross the network in
/// the clear when `[upstream_tls]` says the network is not trusted).
/// Returns `None` (nothing to wait for) outside a tokio runtime.
pub fn spawn(
    upstream: String,
    tls: Option<UpstreamTls>,
    connect_timeout: Duration,
    key: CancelKey,
) -> Option<oneshot::Receiver<()>> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let (done, wait) = oneshot::channel();
    handle.spawn(async move {
        match send(&upstream, tls.as_ref(), connect_timeout, &key).await {
            Ok(()) => tracing::info!("bulk read cancelled upstream"),
            Err(e) => tracing::warn!(error = %e, "cancel of a refused bulk read not sent"),
        }
        let _ = done.send(());
    });
    Some(wait)
}

async fn send(
    upstream: &str,
    tls: Option<&UpstreamTls>,
    connect_timeout: Duration,
    key: &CancelKey,
) -> std::io::Result<()> {
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(upstream).await?;
        match tls {
            None => Ok(MaybeTls::Plain(tcp)),
            Some(tls) => tls.connect(tcp).await.map_err(std::io::Error::other),
        }
    };
    let mut server = tokio::time::timeout(connect_timeout, connect)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    server.write_all(&key.cancel_request()).await?;
    server.flush().await?;
    // The server closes the connection once it has signalled the backend.
    let mut sink = [0u8; 16];
    let _ = tokio::time::timeout(CANCEL_WAIT, server.read(&mut sink)).await;
    Ok(())
}
