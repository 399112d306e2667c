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

use crate::proto::keydata::CancelKey;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// How long the server gets to close the cancel connection.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// Sends a CancelRequest for `key` to `upstream` in the background.
/// Returns `None` (nothing to wait for) outside a tokio runtime.
pub fn spawn(
    upstream: String,
    connect_timeout: Duration,
    key: CancelKey,
) -> Option<oneshot::Receiver<()>> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let (done, wait) = oneshot::channel();
    handle.spawn(async move {
        match send(&upstream, connect_timeout, &key).await {
            Ok(()) => tracing::info!("bulk read cancelled upstream"),
            Err(e) => tracing::warn!(error = %e, "cancel of a refused bulk read not sent"),
        }
        let _ = done.send(());
    });
    Some(wait)
}

async fn send(upstream: &str, connect_timeout: Duration, key: &CancelKey) -> std::io::Result<()> {
    let mut server =
        tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(upstream))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    server.write_all(&key.cancel_request()).await?;
    // The server closes the connection once it has signalled the backend.
    let mut sink = [0u8; 16];
    let _ = tokio::time::timeout(CANCEL_WAIT, server.read(&mut sink)).await;
    Ok(())
}
