//! The relay loop: frames both ways, one task, no locks.
//!
//! Each direction has an input buffer (bytes read, not yet cut into frames)
//! and an output buffer (bytes queued for the other side). One task waits on
//! all four operations at once, so a slow reader on one side never stops the
//! other direction: pipelined clients and COPY in both directions cannot
//! deadlock through pgveil. Writes come first, so what a batch of reads
//! queued goes out in one write before the next read.
//!
//! Reading from a side stops while the output it feeds holds more than
//! [`HIGH_WATER`] bytes: back-pressure instead of unbounded buffering.
//!
//! The [`Lifecycle`] timers (graceful shutdown, idle timeout) are polled
//! only when nothing else can progress, so a busy connection never looks
//! at them; when one fires, the session ends with a FATAL the client can
//! read (57P01, 57P05) and Terminate goes upstream.

use super::frontend::Flow;
use super::{Session, SessionError};
use crate::net::{next_frame, read_hint};
use crate::proto::error::{sqlstate, write_error, Severity};
use crate::proto::tag;
use bytes::{Buf, BytesMut};
use std::future::poll_fn;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;
use tokio_util::io::poll_read_buf;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::{debug, info};

/// Output queued for one side above which pgveil stops reading the other.
const HIGH_WATER: usize = 256 * 1024;

/// How long the final flush to a departing peer may take.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// The four buffers of one connection pair.
pub(super) struct Relay {
    client_in: BytesMut,
    server_in: BytesMut,
    to_client: BytesMut,
    to_server: BytesMut,
    max_message: usize,
    /// Client frames wait in `client_in` while the session refuses a result
    /// (see [`Session::client_paused`]).
    client_stalled: bool,
    /// A flush of that side returned `Pending`: TLS may hold encrypted
    /// bytes that only a later flush writes out.
    unflushed_client: bool,
    unflushed_server: bool,
}

/// Which side ended the relay.
enum End {
    /// The client sent Terminate or closed its socket.
    Client { terminated: bool },
    /// The server closed its socket.
    Server,
    /// pgveil closes the session: shutdown or idle timeout.
    Proxy(Closing),
}

/// Why pgveil itself closes a session.
#[derive(Debug, Clone, Copy)]
enum Closing {
    /// Graceful shutdown: idle, or `shutdown_timeout` passed.
    Shutdown,
    /// Idle for `idle_timeout`.
    Idle,
    /// A client message pgveil cannot relay (see [`Flow::Refuse`]).
    Refused(&'static str, &'static str),
}

/// The timers that can end a session from pgveil's side. Allocated once per
/// session; polled only when the relay has nothing else to do.
pub(super) struct Lifecycle {
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    shutdown_timeout: Duration,
    /// Set once shutdown began: the moment pgveil stops waiting.
    deadline: Option<Pin<Box<Sleep>>>,
    idle_timeout: Duration,
    idle_timer: Option<Pin<Box<Sleep>>>,
}

impl Lifecycle {
    /// Timers from `[proxy] shutdown_timeout` and `idle_timeout`.
    pub(super) fn new(shutdown: CancellationToken, cfg: &crate::config::ProxyConfig) -> Self {
        let idle_timer =
            (!cfg.idle_timeout.is_zero()).then(|| Box::pin(tokio::time::sleep(cfg.idle_timeout)));
        Lifecycle {
            shutdown: Box::pin(shutdown.cancelled_owned()),
            shutdown_timeout: cfg.shutdown_timeout,
            deadline: None,
            idle_timeout: cfg.idle_timeout,
            idle_timer,
        }
    }

    /// Whether the session must end now. Registers wakers for every timer
    /// that has not fired, so the relay is woken when one does.
    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        idle: bool,
        idle_since: Option<Instant>,
    ) -> Option<Closing> {
        if self.deadline.is_none() && self.shutdown.as_mut().poll(cx).is_ready() {
            info!(timeout = ?self.shutdown_timeout, "shutdown: closing the session once its transaction ends");
            self.deadline = Some(Box::pin(tokio::time::sleep(self.shutdown_timeout)));
        }
        if let Some(deadline) = self.deadline.as_mut() {
            if idle || deadline.as_mut().poll(cx).is_ready() {
                return Some(Closing::Shutdown);
            }
        }
        if let Some(timer) = self.idle_timer.as_mut() {
            while timer.as_mut().poll(cx).is_ready() {
                let now = tokio::time::Instant::now();
                match idle_since {
                    Some(since) if idle && since.elapsed() >= self.idle_timeout => {
                        return Some(Closing::Idle)
                    }
                    Some(since) if idle => {
                        let left = self.idle_timeout.saturating_sub(since.elapsed());
                        timer.as_mut().reset(now + left);
                    }
                    _ => timer.as_mut().reset(now + self.idle_timeout),
                }
            }
        }
        None
    }
}

impl Relay {
    /// `client_in` holds any bytes the client sent after its startup packet;
    /// `startup` is that packet, sent upstream first.
    pub(super) fn new(client_in: BytesMut, startup: bytes::Bytes, max_message: usize) -> Self {
        let mut to_server = BytesMut::with_capacity(16 * 1024);
        to_server.extend_from_slice(&startup);
        Relay {
            client_in,
            server_in: BytesMut::with_capacity(16 * 1024),
            to_client: BytesMut::with_capacity(16 * 1024),
            to_server,
            max_message,
            client_stalled: false,
            unflushed_client: false,
            unflushed_server: false,
        }
    }

    /// Relays until one side leaves, then closes the other politely.
    pub(super) async fn run<C, S>(
        mut self,
        session: &mut Session<'_>,
        client: &mut C,
        server: &mut S,
        mut lifecycle: Lifecycle,
    ) -> Result<(), SessionError>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // Frames the client pipelined behind its startup packet.
        let end = match self.drain_client(session)? {
            Some(end) => end,
            None => {
                poll_fn(|cx| self.poll_step(cx, session, client, server, &mut lifecycle)).await?
            }
        };
        match end {
            End::Proxy(why) => {
                let (code, message) = match why {
                    Closing::Shutdown => {
                        crate::admin::metrics().sessions_closed_shutdown.inc();
                        (
                            sqlstate::ADMIN_SHUTDOWN,
                            "pgveil: terminating connection because the proxy is shutting down; reconnect in a moment",
                        )
                    }
                    Closing::Idle => {
                        crate::admin::metrics().sessions_closed_idle.inc();
                        (
                            sqlstate::IDLE_SESSION_TIMEOUT,
                            "pgveil: terminating connection due to idle timeout ([proxy] idle_timeout)",
                        )
                    }
                    Closing::Refused(code, message) => (code, message),
                };
                info!(reason = ?why, idle = session.idle, "pgveil closes the session");
                write_error(&mut self.to_client, Severity::Fatal, code, message);
                // The server rolls back whatever transaction is still open.
                self.to_server
                    .extend_from_slice(&[tag::TERMINATE, 0, 0, 0, 4]);
                let _ = tokio::time::timeout(FINAL_FLUSH, async {
                    let _ = client.write_all_buf(&mut self.to_client).await;
                    let _ = client.flush().await;
                    let _ = server.write_all_buf(&mut self.to_server).await;
                    let _ = server.flush().await;
                })
                .await;
                let _ = client.shutdown().await;
                let _ = server.shutdown().await;
            }
            End::Client { terminated } => {
                debug!(terminated, "client left");
                if !terminated {
                    // Tell the server the session is over instead of letting
                    // it log an unexpected EOF.
                    self.to_server
                        .extend_from_slice(&[tag::TERMINATE, 0, 0, 0, 4]);
                }
                let _ = tokio::time::timeout(FINAL_FLUSH, async {
                    let _ = server.write_all_buf(&mut self.to_server).await;
                    let _ = server.flush().await;
                })
                .await;
                let _ = server.shutdown().await;
            }
            End::Server => {
                debug!("server left");
                if !session.server_said_fatal {
                    write_error(
                        &mut self.to_client,
                        Severity::Fatal,
                        sqlstate::CONNECTION_FAILURE,
                        "pgveil: the connection to the PostgreSQL server was lost; reconnect to continue",
                    );
                }
                let _ = tokio::time::timeout(FINAL_FLUSH, async {
                    let _ = client.write_all_buf(&mut self.to_client).await;
                    let _ = client.flush().await;
                })
                .await;
                let _ = client.shutdown().await;
            }
        }
        Ok(())
    }

    /// Makes all the progress possible without blocking; returns `Pending`
    /// only when every enabled operation is pending, so each has registered
    /// its waker. Written as one poll function rather than `select!` so the
    /// four operations can borrow the two streams in turn.
    fn poll_step<C, S>(
        &mut self,
        cx: &mut Context<'_>,
        session: &mut Session<'_>,
        client: &mut C,
        server: &mut S,
        lifecycle: &mut Lifecycle,
    ) -> Poll<Result<End, SessionError>>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let mut progressed = false;
            // Writes first: what the last reads queued goes out in one write.
            match poll_write_out(cx, server, &mut self.to_server, &mut self.unflushed_server) {
                Poll::Ready(Ok(true)) => progressed = true,
                Poll::Ready(Ok(false)) | Poll::Pending => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(End::Server)),
            }
            match poll_write_out(cx, client, &mut self.to_client, &mut self.unflushed_client) {
                Poll::Ready(Ok(true)) => progressed = true,
                Poll::Ready(Ok(false)) | Poll::Pending => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(SessionError::Client(e))),
            }
            // The replies are on their way: now seal their audit records.
            session.seal_finished();
            if self.to_server.len() < HIGH_WATER && !session.client_paused() {
                self.client_in
                    .reserve(read_hint(&self.client_in, self.max_message));
                match poll_read_buf(Pin::new(&mut *client), cx, &mut self.client_in) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Ok(End::Client { terminated: false }))
                    }
                    Poll::Ready(Ok(n)) => {
                        session.tally.from_client += n as u64;
                        if let Some(end) = self.drain_client(session)? {
                            return Poll::Ready(Ok(end));
                        }
                        progressed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(SessionError::Client(e))),
                    Poll::Pending => {}
                }
            }
            // The bulk-read guard holds server replies while a refused
            // result's cancel is on its way (see session/protect/guarded.rs).
            if session.server_paused() && session.poll_resume(cx).is_ready() {
                self.drain_server(session)?;
                progressed = true;
                if let Some(end) = self.resume_client(session)? {
                    return Poll::Ready(Ok(end));
                }
            }
            if self.to_client.len() < HIGH_WATER && !session.server_paused() {
                self.server_in
                    .reserve(read_hint(&self.server_in, self.max_message));
                match poll_read_buf(Pin::new(&mut *server), cx, &mut self.server_in) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Ok(End::Server))
                    }
                    Poll::Ready(Ok(n)) => {
                        session.tally.from_server += n as u64;
                        self.drain_server(session)?;
                        progressed = true;
                        if let Some(end) = self.resume_client(session)? {
                            return Poll::Ready(Ok(end));
                        }
                    }
                    Poll::Pending => {}
                }
            }
            if !progressed {
                // Nothing to move: only now look at the timers. "Idle" also
                // needs nothing queued either way, so a FATAL cannot cut
                // into a reply still being written.
                let quiet = session.idle
                    && self.to_client.is_empty()
                    && self.to_server.is_empty()
                    && self.client_in.is_empty();
                if let Some(why) = lifecycle.poll_close(cx, quiet, session.idle_since) {
                    return Poll::Ready(Ok(End::Proxy(why)));
                }
                return Poll::Pending;
            }
        }
    }

    /// Handles every complete client frame buffered so far. The time spent
    /// counts toward the statement's overhead metric.
    fn drain_client(&mut self, session: &mut Session<'_>) -> Result<Option<End>, SessionError> {
        let started = Instant::now();
        let result = self.drain_client_frames(session);
        session.tally.busy += started.elapsed();
        result
    }

    fn drain_client_frames(
        &mut self,
        session: &mut Session<'_>,
    ) -> Result<Option<End>, SessionError> {
        loop {
            if session.client_paused() {
                self.client_stalled = true;
                return Ok(None);
            }
            let Some(frame) = next_frame(&mut self.client_in, self.max_message)
                .map_err(SessionError::ClientFrame)?
            else {
                return Ok(None);
            };
            session.idle = false;
            match session.on_client_frame(&frame, &mut self.to_server) {
                Flow::Continue => {}
                Flow::Close => return Ok(Some(End::Client { terminated: true })),
                Flow::Refuse(code, message) => {
                    return Ok(Some(End::Proxy(Closing::Refused(code, message))))
                }
            }
        }
    }

    /// Handles the client frames that waited while a result was refused.
    fn resume_client(&mut self, session: &mut Session<'_>) -> Result<Option<End>, SessionError> {
        if !self.client_stalled || session.client_paused() {
            return Ok(None);
        }
        self.client_stalled = false;
        self.drain_client(session)
    }

    /// Handles every complete server frame buffered so far.
    fn drain_server(&mut self, session: &mut Session<'_>) -> Result<(), SessionError> {
        let started = Instant::now();
        let result = self.drain_server_frames(session);
        session.tally.busy += started.elapsed();
        if session.tally.statement_done {
            // A ReadyForQuery went by: one statement round trip's sample.
            session.tally.statement_done = false;
            session.tally.fold_statement();
        }
        result
    }

    fn drain_server_frames(&mut self, session: &mut Session<'_>) -> Result<(), SessionError> {
        while !session.server_paused() {
            let Some(frame) = next_frame(&mut self.server_in, self.max_message)
                .map_err(SessionError::ServerFrame)?
            else {
                break;
            };
            session.on_server_frame(&frame, &mut self.to_client)?;
        }
        session.take_injected(&mut self.to_server);
        Ok(())
    }
}

/// Writes as much of `out` as the socket takes now, flushing once it is
/// empty (a no-op for TCP; for TLS it writes the records rustls still
/// holds). A flush that could not finish is retried on later calls until
/// it does, even with nothing new to write: otherwise the tail of a reply
/// could stay inside rustls until the next message. `Ready(Ok(true))`
/// means bytes moved; `Ready(Ok(false))` means there was nothing to write.
fn poll_write_out<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    io: &mut W,
    out: &mut BytesMut,
    unflushed: &mut bool,
) -> Poll<std::io::Result<bool>> {
    if out.is_empty() {
        if !*unflushed {
            return Poll::Ready(Ok(false));
        }
        return match Pin::new(io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                *unflushed = false;
                Poll::Ready(Ok(false))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        };
    }
    match Pin::new(&mut *io).poll_write(cx, out) {
        Poll::Ready(Ok(0)) => Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
        Poll::Ready(Ok(n)) => {
            out.advance(n);
            if out.is_empty() {
                match Pin::new(io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => *unflushed = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => *unflushed = true,
                }
            }
            Poll::Ready(Ok(true))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}
