//! One client connection, from its first byte to its last.
//!
//! A session is one tokio task that owns everything about its connection,
//! so no state here needs a lock. The phases follow the protocol:
//!
//! 1. [`startup`]: answer SSLRequest (`S` and a TLS handshake when `[tls]`
//!    is configured, `N` otherwise) and GSSENCRequest (`N`), route a
//!    CancelRequest, or accept a StartupMessage; then enforce `[tls]
//!    require`, `max_client_connections` and shutdown;
//! 2. connect upstream (over TLS when `[upstream_tls]` says so) and forward
//!    the StartupMessage unchanged;
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

use crate::admin::{metrics, Tally};
use crate::net::{ClientStream, FrameError, MaybeTls, ServerStream};
use crate::proto::error::{sqlstate, Severity};
use crate::proto::keydata::CancelKey;
use crate::server::cancel::Registration;
use crate::server::{ClientSlot, Shared};
use crate::tls::TlsError;
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
    /// The TLS handshake with the client failed.
    #[error("client {0}")]
    ClientTls(TlsError),
    /// The client sent bytes behind its SSLRequest, before the handshake;
    /// they could be injected by a man in the middle, so they are refused.
    #[error("unencrypted data after SSLRequest")]
    DataAfterSslRequest,
    /// TLS to the upstream could not be established.
    #[error("cannot connect to the PostgreSQL server at {addr}: {source}")]
    UpstreamTls {
        /// The configured upstream.
        addr: String,
        /// What went wrong.
        source: TlsError,
    },
    /// `[tls] require` and the client did not negotiate TLS.
    #[error("client did not use TLS, which [tls] require demands")]
    TlsRequired,
    /// `max_client_connections` is reached.
    #[error("too many client connections (max_client_connections = {0})")]
    TooManyClients(usize),
    /// A new connection arrived during a graceful shutdown.
    #[error("pgveil is shutting down")]
    ShuttingDown,
}

impl SessionError {
    /// The FATAL error to send the client before closing, if any.
    fn client_error(&self) -> Option<(&'static str, String)> {
        match self {
            SessionError::Client(_)
            | SessionError::StartupTimeout
            | SessionError::ClientTls(_) => None,
            SessionError::DataAfterSslRequest => Some((
                sqlstate::PROTOCOL_VIOLATION,
                format!("pgveil: {self}; closing the connection"),
            )),
            SessionError::UpstreamTls { .. } => Some((
                sqlstate::CANNOT_CONNECT,
                format!("pgveil: {self}; check [upstream_tls]"),
            )),
            SessionError::TlsRequired => Some((
                sqlstate::INVALID_AUTHORIZATION,
                "pgveil: this proxy requires TLS; connect with sslmode=require (or verify-full)".into(),
            )),
            SessionError::TooManyClients(max) => Some((
                sqlstate::TOO_MANY_CONNECTIONS,
                format!("pgveil: sorry, too many clients already ({max} connected, [proxy] max_client_connections); try again later"),
            )),
            SessionError::ShuttingDown => Some((
                sqlstate::CANNOT_CONNECT_NOW,
                "pgveil: the proxy is shutting down; connect again in a moment".into(),
            )),
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
    /// The last server message was ReadyForQuery `I` and the client has
    /// sent nothing since: no transaction, nothing in flight. A graceful
    /// shutdown may close the session now; `idle_timeout` counts from here.
    idle: bool,
    /// When `idle` last became true, if `idle_timeout` is configured.
    idle_since: Option<std::time::Instant>,
    /// Counts not yet folded into the shared metrics.
    tally: Tally,
    /// The server asked for SASL over an upstream TLS connection; the
    /// client's next message is its SASLInitialResponse.
    expect_sasl_initial: bool,
    /// The role the StartupMessage sets (`options=-c role=…`), which is
    /// in effect from the first statement.
    startup_role: Option<String>,
    /// Audit state, when `[audit]` is on; its drop records the close.
    audit: Option<crate::audit::SessionAudit>,
}

/// Runs one client connection to completion. Never panics on input and
/// never returns an error: how the session ended is logged here.
pub async fn run(client: TcpStream, peer: SocketAddr, shared: Arc<Shared>, slot: ClientSlot) {
    let span = tracing::info_span!("session", %peer);
    async move {
        let mut client = MaybeTls::Plain(client);
        match serve(&mut client, peer, &shared, &slot).await {
            Ok(()) => debug!("session closed"),
            Err(e) => {
                match &e {
                    SessionError::Client(_) | SessionError::ClientTls(_) => {
                        debug!(error = %e, "session ended")
                    }
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
        drop(slot);
    }
    .instrument(span)
    .await
}

async fn serve(
    client: &mut ClientStream,
    peer: SocketAddr,
    shared: &Shared,
    slot: &ClientSlot,
) -> Result<(), SessionError> {
    let cfg = &shared.config.proxy;
    let mut client_in = bytes::BytesMut::with_capacity(16 * 1024);
    let tls = shared.client_tls();
    let packet = match tokio::time::timeout(
        cfg.startup_timeout,
        startup::negotiate(client, &mut client_in, tls.acceptor.as_ref()),
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
    if tls.require && !client.is_tls() {
        metrics().clients_refused_tls.inc();
        return Err(SessionError::TlsRequired);
    }
    if slot.over_limit() {
        metrics().clients_refused_limit.inc();
        return Err(SessionError::TooManyClients(cfg.max_client_connections));
    }
    if shared.draining() {
        return Err(SessionError::ShuttingDown);
    }
    let user = crate::proto::startup::param(packet.payload(), "user")
        .unwrap_or_default()
        .to_owned();
    debug!(%user, tls = client.is_tls(), "startup packet received");

    let mut server = connect_upstream(shared).await?;
    let _upstream = UpstreamGauge::open();
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
        idle: false,
        idle_since: None,
        tally: Tally::default(),
        expect_sasl_initial: false,
        audit: shared.audit.as_ref().map(|a| a.session(peer)),
    };
    let lifecycle = relay::Lifecycle::new(shared.shutdown_token(), cfg);
    let result = relay::Relay::new(client_in, packet.bytes, cfg.max_message_bytes)
        .run(&mut session, client, &mut server, lifecycle)
        .await;
    session.tally.fold();
    result
}

/// Counts an open upstream connection in the metrics while it lives.
struct UpstreamGauge;

impl UpstreamGauge {
    fn open() -> Self {
        metrics().upstream_opened.inc();
        metrics().upstream_active.inc();
        UpstreamGauge
    }
}

impl Drop for UpstreamGauge {
    fn drop(&mut self) {
        metrics().upstream_active.dec();
    }
}

/// Opens a tuned connection to the configured upstream, negotiating TLS
/// when `[upstream_tls]` enables it.
async fn connect_upstream(shared: &Shared) -> Result<ServerStream, SessionError> {
    let cfg = &shared.config.proxy;
    let fail = |reason: String| SessionError::Connect {
        addr: cfg.upstream.clone(),
        reason,
    };
    let connect = async {
        let stream = TcpStream::connect(&cfg.upstream)
            .await
            .map_err(|e| fail(e.to_string()))?;
        crate::net::tweaks::tune(&stream, cfg);
        match &shared.upstream_tls {
            None => Ok(MaybeTls::Plain(stream)),
            Some(tls) => tls
                .connect(stream)
                .await
                .map_err(|source| SessionError::UpstreamTls {
                    addr: cfg.upstream.clone(),
                    source,
                }),
        }
    };
    let result = tokio::time::timeout(cfg.connect_timeout, connect)
        .await
        .map_err(|_| fail(format!("timed out after {:?}", cfg.connect_timeout)))
        .and_then(|r| r);
    if result.is_err() {
        metrics().upstream_failed.inc();
    }
    result
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
        let _ = server.flush().await;
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
