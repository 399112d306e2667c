//! The startup phase as seen from the client side.
//!
//! Before a StartupMessage a client may ask for TLS or GSSAPI encryption
//! (answered `N`: pgveil speaks plaintext here until TLS is configured, and
//! the client then proceeds or gives up as its `sslmode` says), or send a
//! CancelRequest for another connection.

use super::SessionError;
use crate::net::{next_startup, StartupPacket};
use crate::proto::keydata::CancelKey;
use crate::proto::startup::StartupKind;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What the client's startup phase ended with.
#[derive(Debug)]
pub(super) enum Request {
    /// A StartupMessage to forward upstream.
    Startup(StartupPacket),
    /// A cancel for the session holding this key.
    Cancel(CancelKey),
    /// The client left before sending a StartupMessage.
    Gone,
}

/// Reads startup packets until one that ends the phase.
///
/// Bytes after the packet stay in `buf` for the relay: a pipelining client
/// may send its first messages right behind the StartupMessage.
pub(super) async fn negotiate<S>(
    client: &mut S,
    buf: &mut BytesMut,
) -> Result<Request, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let packet = loop {
            if let Some(p) = next_startup(buf).map_err(SessionError::ClientFrame)? {
                break p;
            }
            buf.reserve(1024);
            if client.read_buf(buf).await.map_err(SessionError::Client)? == 0 {
                return Ok(Request::Gone);
            }
        };
        match StartupKind::of(packet.code()) {
            StartupKind::Ssl | StartupKind::GssEnc => {
                client.write_all(b"N").await.map_err(SessionError::Client)?;
            }
            StartupKind::Cancel => {
                return Ok(match CancelKey::from_cancel_request(packet.payload()) {
                    Some(key) => Request::Cancel(key),
                    None => Request::Gone,
                });
            }
            StartupKind::Startup => return Ok(Request::Startup(packet)),
            StartupKind::Unknown(code) => {
                return Err(SessionError::UnsupportedProtocol {
                    major: (code >> 16) as u16,
                    minor: (code & 0xffff) as u16,
                })
            }
        }
    }
}
