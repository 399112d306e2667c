//! Accepting clients and owning what sessions share.
//!
//! One task per client connection; the only cross-connection state on the
//! relay path is the cancel-key registry. [`Proxy::bind`] is what both the
//! `serve` command and the tests use, so tests run exactly the code users do.
//!
//! Lifecycle: [`Proxy::drain`] (SIGTERM/SIGINT in `serve`) stops accepting,
//! then each session closes itself once it is idle outside a transaction,
//! or with 57P01 after `shutdown_timeout`. SIGHUP and `POST /reload`
//! reload the configuration file ([`reload`]).

pub mod cancel;
pub mod reload;

use crate::admin::metrics;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::net::tweaks;
use crate::rewrite::{Protector, ReadPolicy};
use crate::session;
use crate::tls::UpstreamTls;
use cancel::CancelRegistry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// TLS toward clients as currently configured; replaced on reload so a
/// renewed certificate is used by the next connection.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// The acceptor, when `[tls]` has a certificate.
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// `[tls] require`.
    pub require: bool,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("enabled", &self.acceptor.is_some())
            .field("require", &self.require)
            .finish()
    }
}

/// State shared by every session of one proxy.
#[derive(Debug)]
pub struct Shared {
    /// The configuration the proxy was started with. Listener, upstream and
    /// runtime settings come from here; they need a restart to change.
    pub config: Config,
    /// The latest configuration accepted by a reload (policies, roles).
    current: RwLock<Arc<Config>>,
    /// Routes CancelRequests to the right upstream backend.
    pub cancels: CancelRegistry,
    /// Column protection; `None` when no `[[columns]]` are configured, and
    /// then every message is relayed untouched.
    pub protector: Option<Arc<Protector>>,
    /// Wakes the catalog reloader (after DDL passes through).
    pub reload_catalog: Option<Arc<Notify>>,
    client_tls: RwLock<ClientTls>,
    /// TLS toward the PostgreSQL server, when `[upstream_tls]` enables it.
    pub upstream_tls: Option<UpstreamTls>,
    active: AtomicUsize,
    all_closed: Notify,
    draining: CancellationToken,
    reloading: tokio::sync::Mutex<()>,
    /// The audit trail, when `[audit] path` is set.
    pub audit: Option<Arc<crate::audit::Audit>>,
}

impl Shared {
    /// The configuration as last (re)loaded.
    pub fn current_config(&self) -> Arc<Config> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_current_config(&self, config: Config) {
        let config = Arc::new(config);
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    /// TLS toward clients for a connection starting now.
    pub fn client_tls(&self) -> ClientTls {
        match self.client_tls.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_client_tls(&self, tls: ClientTls) {
        match self.client_tls.write() {
            Ok(mut t) => *t = tls,
            Err(poisoned) => *poisoned.into_inner() = tls,
        }
    }

    /// Whether a graceful shutdown has begun.
    pub fn draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Cancelled when a graceful shutdown begins; sessions watch it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.draining.clone()
    }

    /// Client connections open now.
    pub fn active_clients(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a new client connection; the slot is released on drop.
    fn admit(self: &Arc<Self>) -> ClientSlot {
        let now = self.active.fetch_add(1, Ordering::AcqRel) + 1;
        let max = self.config.proxy.max_client_connections;
        metrics().clients_accepted.inc();
        metrics().clients_active.inc();
        ClientSlot {
            shared: self.clone(),
            over_limit: max > 0 && now > max,
        }
    }
}

/// One accepted client connection, counted against
/// `max_client_connections` until dropped.
#[derive(Debug)]
pub struct ClientSlot {
    shared: Arc<Shared>,
    over_limit: bool,
}

impl ClientSlot {
    /// Whether this connection is one too many; it is refused with 53300
    /// once its startup packet has been read (so the client sees why).
    pub fn over_limit(&self) -> bool {
        self.over_limit
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        metrics().clients_active.dec();
        if self.shared.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.all_closed.notify_waiters();
        }
    }
}

/// A listening proxy. Dropping it does not stop it; call [`Proxy::shutdown`]
/// or [`Proxy::drain`].
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    admin_stop: CancellationToken,
}

impl Proxy {
    /// Binds the listen address (and the admin address, when configured)
    /// and starts accepting on the current runtime.
    ///
    /// With `[[columns]]` configured, the keyring and the catalog are loaded
    /// first; if either fails, pgveil does not start (fail closed). TLS
    /// files that cannot be loaded stop it too.
    pub async fn bind(config: Config) -> std::io::Result<Proxy> {
        let acceptor = crate::tls::acceptor(&config.tls).map_err(std::io::Error::other)?;
        let upstream_tls = UpstreamTls::from_config(&config).map_err(std::io::Error::other)?;
        let protector = if config.columns.is_empty() {
            None
        } else {
            let keyring = Keyring::load(&config.keyring).map_err(std::io::Error::other)?;
            let catalog = Catalog::load(&config)
                .await
                .map_err(std::io::Error::other)?;
            for missing in catalog.missing() {
                warn!(%missing, "policy names a table or column the database does not have; statements mentioning it are refused");
            }
            let policy = ReadPolicy::from_config(&config).map_err(std::io::Error::other)?;
            Some(Arc::new(
                Protector::new(catalog, keyring, policy).map_err(std::io::Error::other)?,
            ))
        };
        let reload_catalog = protector.as_ref().map(|_| Arc::new(Notify::new()));
        let audit = crate::audit::Audit::start(&config).map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(&config.proxy.listen).await?;
        let addr = listener.local_addr()?;
        let admin = if config.admin.listen.is_empty() {
            None
        } else {
            let l = TcpListener::bind(&config.admin.listen).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("[admin] listen {}: {e}", config.admin.listen),
                )
            })?;
            Some(l)
        };
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let shared = Arc::new(Shared {
            current: RwLock::new(Arc::new(config.clone())),
            client_tls: RwLock::new(ClientTls {
                acceptor,
                require: config.tls.require,
            }),
            config,
            cancels: CancelRegistry::default(),
            protector,
            reload_catalog,
            upstream_tls,
            active: AtomicUsize::new(0),
            all_closed: Notify::new(),
            draining: CancellationToken::new(),
            reloading: tokio::sync::Mutex::new(()),
            audit,
        });
        if let (Some(p), Some(n)) = (&shared.protector, &shared.reload_catalog) {
            let tokens = crate::catalog::PendingTokens::default();
            let (reloaded, acks) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(reload_loop(
                shared.clone(),
                p.clone(),
                n.clone(),
                tokens.clone(),
                reloaded,
            ));
            tokio::spawn(listen_loop(shared.clone(), n.clone(), tokens, acks));
        }
        let stop = CancellationToken::new();
        let admin_stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        if let Some(l) = admin {
            tokio::spawn(crate::admin::serve(l, shared.clone(), admin_stop.clone()));
        }
        info!(
            %addr,
            upstream = %shared.config.proxy.upstream,
            tls = shared.client_tls().acceptor.is_some(),
            upstream_tls = shared.upstream_tls.is_some(),
            "pgveil listening"
        );
        Ok(Proxy {
            addr,
            admin_addr,
            shared,
            stop,
            admin_stop,
        })
    }

    /// The address clients connect to (useful when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address, when `[admin] listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The shared state, for inspection by tests and the admin side.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting new clients; running sessions continue.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Graceful shutdown: stop accepting, let every session finish its
    /// current transaction (each closes itself when idle, or with 57P01
    /// after `shutdown_timeout`), and resolve once all are gone. The admin
    /// listener answers `/health` with 503 meanwhile and stops at the end.
    pub async fn drain(&self) {
        self.stop.cancel();
        self.shared.draining.cancel();
        // Sessions enforce the timeout themselves; this bound only covers
        // a session stuck in its final flush.
        let limit = self.shared.config.proxy.shutdown_timeout + Duration::from_secs(10);
        let all_closed = async {
            loop {
                let notified = self.shared.all_closed.notified();
                if self.shared.active_clients() == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(limit, all_closed).await.is_err() {
            warn!(
                open = self.shared.active_clients(),
                "sessions still open after the shutdown timeout; exiting anyway"
            );
        }
        self.admin_stop.cancel();
    }

    /// Reloads the configuration file, as SIGHUP does.
    pub async fn reload(&self) -> Result<String, reload::ReloadError> {
        reload::reload(&self.shared).await
    }
}

/// Reloads the catalog whenever a session signals DDL.
///
/// Also reloads every `[catalog] refresh` interval, so DDL run directly on
/// the server (not through pgveil) is picked up within that time.
async fn reload_loop(
    shared: Arc<Shared>,
    protector: Arc<Protector>,
    notify: Arc<Notify>,
    tokens: crate::catalog::PendingTokens,
    reloaded: tokio::sync::mpsc::UnboundedSender<Vec<String>>,
) {
    loop {
        let every = shared.current_config().catalog.refresh;
        let signalled = tokio::select! {
            _ = notify.notified() => true,
            _ = tokio::time::sleep(every) => false,
        };
        // Let the DDL commit first; several signals in a row coalesce. A
        // `pgveil migrate` notification comes after its commit, and the
        // migration waits for the reload: no pause then.
        let notified = tokens.lock().map(|t| !t.is_empty()).unwrap_or(false);
        if !notified {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Not while a configuration reload swaps the policy: the catalog
        // must be loaded for the policy it is combined with.
        let _reloading = shared.reloading.lock().await;
        let config = shared.current_config();
        // Notifications received so far are answered once this load is in
        // force; later ones wait for the next.
        let answered: Vec<String> = tokens
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        match Catalog::load(&config).await {
            Ok(catalog) => {
                match protector.replace_catalog(catalog) {
                    Ok(()) => {
                        if signalled {
                            info!("catalog reloaded");
                        } else {
                            debug!("catalog refreshed");
                        }
                        // Acknowledged by the listener (`pgveil migrate`
                        // waits for it).
                        if !answered.is_empty() {
                            let _ = reloaded.send(answered);
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "catalog reload failed; keeping the old one");
                        keep_for_next(&tokens, answered);
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "catalog reload failed; keeping the old one");
                keep_for_next(&tokens, answered);
            }
        }
    }
}

/// Puts tokens back for the next reload after one failed: they may only
/// be answered once a reload is in force.
fn keep_for_next(tokens: &crate::catalog::PendingTokens, answered: Vec<String>) {
    if let Ok(mut t) = tokens.lock() {
        t.extend(answered);
    }
}

/// Listens for `pgveil migrate`'s notifications (see
/// `catalog::CHANGES_CHANNEL`) and signals the reload loop, so an online
/// migration's schema changes reach the catalog within moments rather
/// than at the next `[catalog] refresh`. Reconnects after a failure, and
/// reloads then in case a notification was missed.
async fn listen_loop(
    shared: Arc<Shared>,
    notify: Arc<Notify>,
    tokens: crate::catalog::PendingTokens,
    mut acks: tokio::sync::mpsc::UnboundedReceiver<Vec<String>>,
) {
    let mut first = true;
    loop {
        if !first {
            notify.notify_one();
        }
        first = false;
        let config = shared.current_config();
        match crate::catalog::listen(&config, notify.clone(), tokens.clone(), &mut acks).await {
            Ok(()) => debug!("catalog listener connection ended"),
            Err(e) => debug!(error = %e, "catalog listener cannot connect"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tweaks::tune(&stream, &shared.config.proxy);
                    let slot = shared.admit();
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        session::run(stream, peer, shared, slot).await;
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    // Dropping the listener here refuses new connections at the socket.
    debug!("accept loop stopped");
}

/// Builds the runtime, binds, and serves until SIGINT or SIGTERM, then
/// drains. SIGHUP reloads the configuration file.
pub fn serve(config: Config) -> std::io::Result<()> {
    let runtime = runtime(config.proxy.workers)?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        // Handlers first: a signal that arrives once the port is open must
        // not hit the default action (exit without draining).
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let proxy = Proxy::bind(config).await?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    // The outcome is logged (and counted) by reload itself.
                    let _ = proxy.reload().await;
                }
            }
        }
        info!(
            timeout = ?proxy.shared.config.proxy.shutdown_timeout,
            open = proxy.shared.active_clients(),
            "shutting down: no new clients; sessions close when their transaction ends"
        );
        tokio::select! {
            _ = proxy.drain() => info!("all sessions closed"),
            _ = term.recv() => warn!("second signal: exiting without waiting for sessions"),
            _ = int.recv() => warn!("second signal: exiting without waiting for sessions"),
        }
        if let Some(audit) = &proxy.shared.audit {
            audit.close().await;
        }
        Ok(())
    })
}

/// The tokio runtime pgveil runs on: `workers` threads, or one per CPU.
///
/// One worker means a current-thread runtime: no work stealing and no
/// cross-thread wake-ups, the cheapest per message when the proxy shares a
/// small machine with the database (PgBouncer's model).
pub fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers == 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    builder.enable_all().build()
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn wait_for_shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
