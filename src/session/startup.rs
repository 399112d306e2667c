//! The startup phase as seen from the client side.
//!
//! Before a StartupMessage a client may ask for TLS or GSSAPI encryption,
//! or send a CancelRequest for another connection. SSLRequest is answered
//! `S` and followed by a TLS handshake when `[tls]` is configured; the
//! client then sends its startup packets inside TLS. Otherwise, and always
//! for GSSENCRequest, the answer is `N` and the client proceeds in
//! plaintext or gives up, as its `sslmode` says (libpq's "server does not
//! support SSL").

use super::SessionError;
use crate::net::{next_startup, ClientStream, StartupPacket};
use crate::proto::keydata::CancelKey;
use crate::proto::startup::StartupKind;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// Reads startup packets until one that ends the phase, upgrading the
/// connection to TLS on the way when the client asks and `tls` is set.
///
/// Bytes after the packet stay in `buf` for the relay: a pipelining client
/// may send its first messages right behind the StartupMessage.
pub(super) async fn negotiate(
    client: &mut ClientStream,
    buf: &mut BytesMut,
    tls: Option<&tokio_rustls::TlsAcceptor>,
) -> Result<Request, SessionError> {
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
            StartupKind::Ssl if !client.is_tls() => match tls {
                Some(acceptor) => {
                    // Anything already buffered was sent in plaintext before
                    // the handshake and may have been injected (CVE-2021-23214).
                    if !buf.is_empty() {
                        return Err(SessionError::DataAfterSslRequest);
                    }
                    client.write_all(b"S").await.map_err(SessionError::Client)?;
                    client.flush().await.map_err(SessionError::Client)?;
                    crate::tls::accept(client, acceptor)
                        .await
                        .map_err(SessionError::ClientTls)?;
                }
                None => client.write_all(b"N").await.map_err(SessionError::Client)?,
            },
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
