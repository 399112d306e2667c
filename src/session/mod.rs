//! One client connection, from its first byte to its last.
//!
//! A session is one tokio task that owns everything about its connection,
//! so no state here needs a lock. The phases follow the protocol:
//!
//! 1. [`startup`]: answer SSLRequest/GSSENCRequest, route a CancelRequest,
//!    or accept a StartupMessage;
//! 2. connect upstream and forward the StartupMessage unchanged;
//! 3. [`relay`] frames both ways until either side leaves. Authentication
//!    happens inside the relay, end to end between client and server; the
//!    [`backend`] handler watches it only to withdraw channel binding and to
//!    learn when it succeeded.

mod backend;
mod frontend;
mod protect;
mod relay;
mod results;
mod roles;
mod startup;

use crate::net::FrameError;
use crate::proto::error::{sqlstate, Severity};
use crate::proto::keydata::CancelKey;
use crate::server::cancel::Registration;
use crate::server::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{debug, info, warn, Instrument};

/// Why a session ended abnormally. Each variant knows what, if anything,
/// the client should be told.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Reading from or writing to the client failed; nobody left to tell.
    #[error("client connection failed: {0}")]
    Client(std::io::Error),
    /// The client sent a frame that cannot be parsed.
    #[error("malformed message from client: {0}")]
    ClientFrame(FrameError),
    /// The server sent a frame that cannot be parsed.
    #[error("malformed message from server: {0}")]
    ServerFrame(FrameError),
    /// The client sent no complete startup packet in time.
    #[error("no startup packet within the startup timeout")]
    StartupTimeout,
    /// The client asked for a protocol major version other than 3.
    #[error("unsupported frontend protocol {major}.{minor}")]
    UnsupportedProtocol {
        /// Requested major version.
        major: u16,
        /// Requested minor version.
        minor: u16,
    },
    /// The upstream server could not be reached.
    #[error("cannot connect to the PostgreSQL server at {addr}: {reason}")]
    Connect {
        /// The configured upstream.
        addr: String,
        /// The socket error or timeout.
        reason: String,
    },
    /// The random source failed while minting a cancel key.
    #[error("cannot mint a cancel key: system random source failed")]
    Random,
}

impl SessionError {
    /// The FATAL error to send the client before closing, if any.
    fn client_error(&self) -> Option<(&'static str, String)> {
        match self {
            SessionError::Client(_) | SessionError::StartupTimeout => None,
            SessionError::ClientFrame(e) => Some((
                sqlstate::PROTOCOL_VIOLATION,
                format!("pgveil: {e}; closing the connection"),
            )),
            SessionError::ServerFrame(e) => Some((
                sqlstate::PROTOCOL_VIOLATION,
                format!("pgveil: the PostgreSQL server sent an invalid message ({e}); closing the connection"),
            )),
            SessionError::UnsupportedProtocol { major, minor } => Some((
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("pgveil: unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.x"),
            )),
            SessionError::Connect { .. } => Some((
                sqlstate::CANNOT_CONNECT,
                format!("pgveil: {self}; check [proxy] upstream and that the server is running"),
            )),
            SessionError::Random => Some((sqlstate::INTERNAL, format!("pgveil: {self}"))),
        }
    }
}

/// Per-connection state the handlers read and update.
struct Session<'a> {
    shared: &'a Shared,
    /// User named in the StartupMessage; authenticated once `authenticated`.
    user: String,
    /// Set when the server sent AuthenticationOk.
    authenticated: bool,
    /// The client's cancel key; forgotten when the session ends.
    cancel: Option<Registration<'a>>,
    /// The server already told the client why it is closing.
    server_said_fatal: bool,
    /// Column-protection state, when policies are configured.
    protect: Option<protect::ProtectState>,
    /// The role the StartupMessage sets (`options=-c role=…`), which is
    /// in effect from the first statement.
    startup_role: Option<String>,
    /// Audit state, when `[audit]` is on; its drop records the close.
    audit: Option<crate::audit::SessionAudit>,
}

/// Runs one client connection to completion. Never panics on input and
/// never returns an error: how the session ended is logged here.
pub async fn run(client: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let span = tracing::info_span!("session", %peer);
    async move {
        let mut client = client;
        match serve(&mut client, peer, &shared).await {
            Ok(()) => debug!("session closed"),
            Err(e) => {
                match &e {
                    SessionError::Client(_) => debug!(error = %e, "session ended"),
                    _ => warn!(error = %e, "session ended"),
                }
                if let Some((code, msg)) = e.client_error() {
                    let mut out = bytes::BytesMut::new();
                    crate::proto::error::write_error(&mut out, Severity::Fatal, code, &msg);
                    // Best effort: the client may already be gone.
                    let _ = client.write_all(&out).await;
                    let _ = client.shutdown().await;
                }
            }
        }
    }
    .instrument(span)
    .await
}

async fn serve(
    client: &mut TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<(), SessionError> {
    let cfg = &shared.config.proxy;
    let mut client_in = bytes::BytesMut::with_capacity(16 * 1024);
    let packet = match tokio::time::timeout(
        cfg.startup_timeout,
        startup::negotiate(client, &mut client_in),
    )
    .await
    {
        Err(_) => return Err(SessionError::StartupTimeout),
        Ok(r) => r?,
    };
    let packet = match packet {
        startup::Request::Startup(p) => p,
        startup::Request::Cancel(key) => {
            forward_cancel(&key, shared).await;
            return Ok(());
        }
        startup::Request::Gone => return Ok(()),
    };
    let user = crate::proto::startup::param(packet.payload(), "user")
        .unwrap_or_default()
        .to_owned();

    let mut server = connect_upstream(shared).await?;
    let mut session = Session {
        shared,
        user,
        authenticated: false,
        cancel: None,
        server_said_fatal: false,
        startup_role: roles::startup_role(packet.payload()),
        protect: shared
            .protector
            .is_some()
            .then(protect::ProtectState::default),
        audit: shared.audit.as_ref().map(|a| a.session(peer)),
    };
    relay::Relay::new(client_in, packet.bytes, cfg.max_message_bytes)
        .run(&mut session, client, &mut server)
        .await
}

/// Opens a tuned TCP connection to the configured upstream.
async fn connect_upstream(shared: &Shared) -> Result<TcpStream, SessionError> {
    let cfg = &shared.config.proxy;
    let fail = |reason: String| SessionError::Connect {
        addr: cfg.upstream.clone(),
        reason,
    };
    let stream = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(&cfg.upstream))
        .await
        .map_err(|_| fail(format!("timed out after {:?}", cfg.connect_timeout)))?
        .map_err(|e| fail(e.to_string()))?;
    crate::net::tweaks::tune(&stream);
    Ok(stream)
}

/// Sends a client's cancel to the upstream backend its key maps to.
///
/// An unknown key is dropped silently, as PostgreSQL does, so a prober
/// learns nothing about which keys exist.
async fn forward_cancel(key: &CancelKey, shared: &Shared) {
    let Some(upstream) = shared.cancels.lookup(key) else {
        info!("cancel request with an unknown key ignored");
        return;
    };
    let result = async {
        let mut server = connect_upstream(shared).await?;
        server
            .write_all(&upstream.cancel_request())
            .await
            .map_err(|e| SessionError::Connect {
                addr: shared.config.proxy.upstream.clone(),
                reason: e.to_string(),
            })?;
        // The server closes the connection once it has read the request.
        let mut sink = [0u8; 16];
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut server, &mut sink),
        )
        .await;
        Ok::<(), SessionError>(())
    }
    .await;
    match result {
        Ok(()) => info!("cancel request forwarded"),
        Err(e) => warn!(error = %e, "cancel request not forwarded"),
    }
}
