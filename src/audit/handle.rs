//! The proxy's handle on the audit trail: start it, log to it, check
//! whether it is healthy, close it.
//!
//! One [`Audit`] is shared by every session (in `server::Shared`). Logging
//! seals the record on the caller's thread into the shared pending buffer
//! (see `sealer.rs`) and never waits for I/O; the writer thread writes and
//! fsyncs what has been sealed. A statement on protected columns is
//! forwarded only while the trail is healthy, and its record is sealed
//! once its result has ended and the reply has been handed to the client
//! socket: no access goes unrecorded for want of a slot.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

use super::config::AuditConfig;
use super::error::AuditError;
use super::record::{ApprovalIssued, ApprovalUsed, Event, Stamped, StatementView};
use super::sealer::Sealing;
use super::track::SessionAudit;
use super::writer::{Ctl, Writer};

/// Whether the audit trail can currently be written. Sessions read it
/// before forwarding a statement on protected columns.
#[derive(Debug)]
pub struct Health {
    /// The last write succeeded.
    pub(super) ok: AtomicBool,
    /// The writer has stopped for good.
    pub(super) closed: AtomicBool,
}

/// A value on cache lines of its own. Sessions on every worker change
/// `sealing_soon` twice per audited reply, while every audited statement
/// reads the pointers beside it; sharing their cache line made each of
/// those reads a miss on the other core.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(super) struct OwnLine<T>(pub(super) T);

impl<T> std::ops::Deref for OwnLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The running audit trail.
#[derive(Debug)]
pub struct Audit {
    sealing: Arc<Sealing>,
    ctl: mpsc::Sender<Ctl>,
    health: Arc<Health>,
    next_conn: AtomicU64,
    /// Sessions holding ended statements whose records they have not
    /// sealed yet (they seal right after handing the reply to the client
    /// socket); [`Audit::flush`] waits for them.
    pub(super) sealing_soon: OwnLine<AtomicUsize>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Audit {
    /// Starts the audit trail when `[audit] path` is set: opens the keyring
    /// for the checkpoint signing key, continues the chain on disk, durably
    /// writes the run's start record and starts the writer thread. An error
    /// means pgveil must not start (it could not record accesses).
    pub fn start(config: &crate::config::Config) -> Result<Option<Arc<Audit>>, AuditError> {
        let cfg: &AuditConfig = &config.audit;
        let Some(path) = cfg.path.as_deref() else {
            return Ok(None);
        };
        let master = crate::crypto::MasterKey::load(&config.keyring)?;
        let keyring = crate::crypto::Keyring::open(&config.keyring.dir, &master)?;
        let health = Arc::new(Health {
            ok: AtomicBool::new(true),
            closed: AtomicBool::new(false),
        });
        let writer = Writer::open(cfg, path, keyring, &master, health.clone())?;
        let sealing = writer.sealing();
        let (ctl, rx) = mpsc::channel(64);
        let interval = cfg.checkpoint_interval;
        let thread = std::thread::Builder::new()
            .name("pgveil-audit".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt.block_on(writer.run(rx, interval)),
                    Err(e) => tracing::error!(error = %e, "audit writer runtime failed to start"),
                }
            })
            .map_err(|source| AuditError::Io {
                action: "start the writer thread for",
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Some(Arc::new(Audit {
            sealing,
            ctl,
            health,
            next_conn: AtomicU64::new(1),
            sealing_soon: OwnLine(AtomicUsize::new(0)),
            thread: Mutex::new(Some(thread)),
        })))
    }

    /// Whether records are being written; when not, statements on
    /// protected columns must be refused.
    pub fn healthy(&self) -> bool {
        self.health.ok.load(Ordering::Acquire)
    }

    /// Records an event; fails (and marks the trail unhealthy, so protected
    /// statements are refused) when it cannot be sealed.
    pub fn log(&self, event: Event) -> Result<(), AuditError> {
        // Stamped under the lock that orders the records: `ts` never runs
        // backwards from one `seq` to the next.
        self.sealing
            .record(&self.health, |s| s.seal(&Stamped::now(event)))
    }

    /// Records a statement on protected columns (stamped as [`Audit::log`]).
    pub(super) fn statement(&self, statement: &StatementView<'_>) -> Result<(), AuditError> {
        self.sealing.record(&self.health, |s| {
            s.seal_statement(SystemTime::now(), statement)
        })
    }

    /// A session's audit state for a client at `client`.
    pub fn session(self: &Arc<Self>, client: SocketAddr) -> SessionAudit {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        SessionAudit::new(self.clone(), conn, client)
    }

    /// Records an approval (vault rule). Called by the approval code.
    pub fn approval_issued(&self, approval: ApprovalIssued) -> Result<(), AuditError> {
        self.log(Event::ApprovalIssued(approval))
    }

    /// Records the use of an approval. Called by the approval code.
    pub fn approval_used(&self, used: ApprovalUsed) -> Result<(), AuditError> {
        self.log(Event::ApprovalUsed(used))
    }

    /// Records a configuration reload; `result` is `Err(reason)` when the
    /// reload failed (the reason must not contain values).
    pub fn config_reloaded(&self, path: &str, result: Result<(), &str>) -> Result<(), AuditError> {
        self.log(Event::ConfigReloaded {
            path: path.to_owned(),
            outcome: if result.is_ok() { "ok" } else { "failed" }.to_owned(),
            detail: result.err().map(str::to_owned),
        })
    }

    /// Waits until every record so far is written — including those of
    /// statements whose replies have just been sent and are being sealed
    /// (waited for up to a second); `false` when the write failed.
    pub async fn flush(&self) -> bool {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        while self.sealing_soon.load(Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let (tx, rx) = oneshot::channel();
        if self.ctl.send(Ctl::Flush(tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Writes the final (shutdown) checkpoint and stops the writer. Later
    /// records are refused; statements on protected columns too.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.ctl.send(Ctl::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let thread = match self.thread.lock() {
            Ok(mut t) => t.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}
