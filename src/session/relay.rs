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

use super::frontend::Flow;
use super::{Session, SessionError};
use crate::net::{next_frame, read_hint};
use crate::proto::error::{sqlstate, write_error, Severity};
use crate::proto::tag;
use bytes::{Buf, BytesMut};
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;
use tracing::debug;

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
}

/// Which side ended the relay.
enum End {
    /// The client sent Terminate or closed its socket.
    Client { terminated: bool },
    /// The server closed its socket.
    Server,
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
        }
    }

    /// Relays until one side leaves, then closes the other politely.
    pub(super) async fn run<C, S>(
        mut self,
        session: &mut Session<'_>,
        client: &mut C,
        server: &mut S,
    ) -> Result<(), SessionError>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // Frames the client pipelined behind its startup packet.
        let end = match self.drain_client(session)? {
            Some(end) => end,
            None => poll_fn(|cx| self.poll_step(cx, session, client, server)).await?,
        };
        match end {
            End::Client { terminated } => {
                debug!(terminated, "client left");
                if !terminated {
                    // Tell the server the session is over instead of letting
                    // it log an unexpected EOF.
                    self.to_server
                        .extend_from_slice(&[tag::TERMINATE, 0, 0, 0, 4]);
                }
                let _ =
                    tokio::time::timeout(FINAL_FLUSH, server.write_all_buf(&mut self.to_server))
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
                let _ =
                    tokio::time::timeout(FINAL_FLUSH, client.write_all_buf(&mut self.to_client))
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
    ) -> Poll<Result<End, SessionError>>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let mut progressed = false;
            // Writes first: what the last reads queued goes out in one write.
            match poll_write_out(cx, server, &mut self.to_server) {
                Poll::Ready(Ok(true)) => progressed = true,
                Poll::Ready(Ok(false)) | Poll::Pending => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(End::Server)),
            }
            match poll_write_out(cx, client, &mut self.to_client) {
                Poll::Ready(Ok(true)) => progressed = true,
                Poll::Ready(Ok(false)) | Poll::Pending => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(SessionError::Client(e))),
            }
            if self.to_server.len() < HIGH_WATER && !session.client_paused() {
                self.client_in
                    .reserve(read_hint(&self.client_in, self.max_message));
                match poll_read_buf(Pin::new(&mut *client), cx, &mut self.client_in) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Ok(End::Client { terminated: false }))
                    }
                    Poll::Ready(Ok(_)) => {
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
                    Poll::Ready(Ok(_)) => {
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
                return Poll::Pending;
            }
        }
    }

    /// Handles every complete client frame buffered so far.
    fn drain_client(&mut self, session: &mut Session<'_>) -> Result<Option<End>, SessionError> {
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
            if session.on_client_frame(&frame, &mut self.to_server) == Flow::Close {
                return Ok(Some(End::Client { terminated: true }));
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
/// empty (a no-op for TCP; needed for TLS). `Ready(Ok(true))` means bytes
/// moved; `Ready(Ok(false))` means there was nothing to write.
fn poll_write_out<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    io: &mut W,
    out: &mut BytesMut,
) -> Poll<std::io::Result<bool>> {
    if out.is_empty() {
        return Poll::Ready(Ok(false));
    }
    match Pin::new(&mut *io).poll_write(cx, out) {
        Poll::Ready(Ok(0)) => Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
        Poll::Ready(Ok(n)) => {
            out.advance(n);
            if out.is_empty() {
                if let Poll::Ready(Err(e)) = Pin::new(io).poll_flush(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            Poll::Ready(Ok(true))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}
