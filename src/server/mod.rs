//! Accepting clients and owning what sessions share.
//!
//! One task per client connection; the only cross-connection state on the
//! relay path is the cancel-key registry. [`Proxy::bind`] is what both the
//! `serve` command and the tests use, so tests run exactly the code users do.

pub mod cancel;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::net::tweaks;
use crate::rewrite::{Protector, ReadPolicy};
use crate::session;
use cancel::CancelRegistry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

/// State shared by every session of one proxy.
#[derive(Debug)]
pub struct Shared {
    /// The configuration the proxy was started with.
    pub config: Config,
    /// Routes CancelRequests to the right upstream backend.
    pub cancels: CancelRegistry,
    /// Column protection; `None` when no `[[columns]]` are configured, and
    /// then every message is relayed untouched.
    pub protector: Option<Arc<Protector>>,
    /// Wakes the catalog reloader (after DDL passes through).
    pub reload_catalog: Option<Arc<Notify>>,
    /// The audit trail, when `[audit] path` is set.
    pub audit: Option<Arc<crate::audit::Audit>>,
}

/// A listening proxy. Dropping it does not stop it; call [`Proxy::shutdown`].
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl Proxy {
    /// Binds the listen address and starts accepting on the current runtime.
    ///
    /// With `[[columns]]` configured, the keyring and the catalog are loaded
    /// first; if either fails, pgveil does not start (fail closed).
    pub async fn bind(config: Config) -> std::io::Result<Proxy> {
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
        let shared = Arc::new(Shared {
            config,
            cancels: CancelRegistry::default(),
            protector,
            reload_catalog,
            audit,
        });
        if let (Some(p), Some(n)) = (&shared.protector, &shared.reload_catalog) {
            tokio::spawn(reload_loop(shared.clone(), p.clone(), n.clone()));
        }
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept_loop(listener, shared.clone(), stopped));
        info!(%addr, upstream = %shared.config.proxy.upstream, "pgveil listening");
        Ok(Proxy { addr, shared, stop })
    }

    /// The address clients connect to (useful when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state, for inspection by tests and the admin side.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting new clients; running sessions continue.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

/// Reloads the catalog whenever a session signals DDL.
///
/// Also reloads every `[catalog] refresh` interval, so DDL run directly on
/// the server (not through pgveil) is picked up within that time.
async fn reload_loop(shared: Arc<Shared>, protector: Arc<Protector>, notify: Arc<Notify>) {
    let every = shared.config.catalog.refresh;
    loop {
        let signalled = tokio::select! {
            _ = notify.notified() => true,
            _ = tokio::time::sleep(every) => false,
        };
        // Let the DDL commit first; several signals in a row coalesce.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        match Catalog::load(&shared.config).await {
            Ok(catalog) => match protector.replace_catalog(catalog) {
                Ok(()) if signalled => info!("catalog reloaded"),
                Ok(()) => debug!("catalog refreshed"),
                Err(e) => warn!(error = %e, "catalog reload failed; keeping the old one"),
            },
            Err(e) => warn!(error = %e, "catalog reload failed; keeping the old one"),
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tweaks::tune(&stream);
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        session::run(stream, peer, shared).await;
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
    debug!("accept loop stopped");
}

/// Builds the runtime, binds, and serves until SIGINT or SIGTERM.
pub fn serve(config: Config) -> std::io::Result<()> {
    let runtime = runtime(config.proxy.workers)?;
    runtime.block_on(async {
        let proxy = Proxy::bind(config).await?;
        wait_for_shutdown_signal().await?;
        info!("shutting down");
        proxy.shutdown();
        if let Some(audit) = &proxy.shared().audit {
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
