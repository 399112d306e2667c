//! A socket that is either plain TCP or TLS over TCP.
//!
//! One enum instead of a generic parameter keeps the session code written
//! once; the plaintext arm is a direct call into the `TcpStream`, so the
//! relay of a plaintext connection costs one branch per poll and no
//! allocation. The TLS state is boxed: it is large and exists only for
//! connections that use it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection's transport. `T` is the TLS stream type of the side
/// (server-side TLS toward clients, client-side TLS toward PostgreSQL).
#[derive(Debug)]
pub enum MaybeTls<T> {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<T>),
    /// The socket was handed to a TLS handshake that failed; every
    /// operation reports `NotConnected`.
    Closed,
}

/// The client's side: pgveil is the TLS server.
pub type ClientStream = MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

/// The PostgreSQL server's side: pgveil is the TLS client.
pub type ServerStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

impl<T> MaybeTls<T> {
    /// Takes the plain socket out for a TLS handshake, leaving `Closed`.
    pub fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, MaybeTls::Closed) {
            MaybeTls::Plain(tcp) => Some(tcp),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }
}

fn closed() -> io::Error {
    io::Error::from(io::ErrorKind::NotConnected)
}

impl<T: AsyncRead + Unpin> AsyncRead for MaybeTls<T> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            MaybeTls::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            MaybeTls::Closed => Poll::Ready(Err(closed())),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            MaybeTls::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            MaybeTls::Closed => Poll::Ready(Ok(())),
        }
    }
}
