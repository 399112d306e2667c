//! Sealing: events become chained lines in the order they are recorded,
//! under one lock, on the thread that records them.
//!
//! Sealing a record (its JSON, a SHA-256 pass, the HMAC, the next key) takes
//! about a microsecond. Handing every record to the writer thread instead
//! cost more than that on a machine with few cores: an owned record
//! allocated on one thread and freed on another, and a writer thread that
//! the scheduler keeps preempting while it seals. So a session seals its own
//! record into the shared pending buffer, and the writer thread only takes
//! the buffer, writes and fsyncs it: file I/O stays off the sessions' path.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::Notify;

use super::chain::Chain;
use super::error::AuditError;
use super::handle::Health;
use super::record::{Stamped, StatementView};
use crate::crypto::Keyring;

/// Sealed bytes not yet taken by the writer at most. Beyond this the
/// writer is behind (or failing) by far more than a group commit: the trail
/// reports itself unhealthy, so new statements on protected columns are
/// refused, until the writer has caught up.
const MAX_PENDING_BYTES: usize = 64 << 20;

/// The chain and the lines sealed since the writer last took them.
pub(super) struct Sealer {
    chain: Chain,
    keyring: Keyring,
    checkpoint_every: u64,
    pending: Vec<u8>,
    /// Sequence number of the first line in `pending`.
    pending_first_seq: Option<u64>,
    /// The shutdown checkpoint is sealed: nothing may follow it.
    closed: bool,
    /// [`MAX_PENDING_BYTES`], smaller in tests.
    max_pending: usize,
}

impl Sealer {
    pub(super) fn new(chain: Chain, keyring: Keyring, checkpoint_every: u64) -> Self {
        Sealer {
            chain,
            keyring,
            checkpoint_every,
            pending: Vec::with_capacity(64 * 1024),
            pending_first_seq: None,
            closed: false,
            max_pending: MAX_PENDING_BYTES,
        }
    }

    /// Seals one event; a checkpoint follows when `checkpoint_every`
    /// records have accumulated.
    pub(super) fn seal(&mut self, rec: &Stamped) -> Result<(), AuditError> {
        self.check_open()?;
        let seq = self.chain.seq;
        self.chain.seal(rec, &mut self.pending)?;
        self.sealed(seq)
    }

    /// Seals one statement record (see [`StatementView`]).
    pub(super) fn seal_statement(
        &mut self,
        ts: SystemTime,
        statement: &StatementView<'_>,
    ) -> Result<(), AuditError> {
        self.check_open()?;
        let seq = self.chain.seq;
        self.chain.seal_statement(ts, statement, &mut self.pending);
        self.sealed(seq)
    }

    /// Seals a signed checkpoint; `reason` says why.
    pub(super) fn checkpoint(&mut self, reason: &str) -> Result<(), AuditError> {
        self.check_open()?;
        let seq = self.chain.seq;
        self.chain.checkpoint(
            SystemTime::now(),
            reason,
            self.keyring.signing_key(),
            &mut self.pending,
        )?;
        self.pending_first_seq.get_or_insert(seq);
        Ok(())
    }

    /// The lines sealed from now on go to a new file (see `chain::Head`).
    pub(super) fn new_file(&mut self) {
        self.chain.new_file();
    }

    /// Seals the shutdown checkpoint; later events are refused.
    pub(super) fn close(&mut self) -> Result<(), AuditError> {
        let sealed = self.checkpoint("shutdown");
        self.closed = true;
        sealed
    }

    /// Moves the pending lines to the end of `into`; returns the first
    /// one's sequence number (`None` when there were none).
    pub(super) fn take(&mut self, into: &mut Vec<u8>) -> Option<u64> {
        if into.is_empty() {
            std::mem::swap(into, &mut self.pending);
        } else {
            into.extend_from_slice(&self.pending);
            self.pending.clear();
        }
        self.pending_first_seq.take()
    }

    /// Sequence number of the next record.
    pub(super) fn seq(&self) -> u64 {
        self.chain.seq
    }

    /// Records since the last checkpoint.
    pub(super) fn since_checkpoint(&self) -> u64 {
        self.chain.since_checkpoint
    }

    /// Bytes sealed and not yet taken.
    pub(super) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn check_open(&self) -> Result<(), AuditError> {
        if self.closed {
            return Err(AuditError::Unavailable("the audit trail is closed"));
        }
        Ok(())
    }

    fn sealed(&mut self, seq: u64) -> Result<(), AuditError> {
        self.pending_first_seq.get_or_insert(seq);
        if self.chain.since_checkpoint >= self.checkpoint_every {
            self.checkpoint("count")?;
        }
        Ok(())
    }
}

/// What sessions and the writer share: the sealer, and the writer's
/// wake-up for the first line of a batch.
pub(super) struct Sealing {
    sealer: Mutex<Sealer>,
    /// Rung when a line lands in an empty pending buffer; the writer then
    /// waits one group-commit interval and writes everything sealed by then.
    pub(super) wake: Notify,
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealing").finish_non_exhaustive()
    }
}

impl Sealing {
    pub(super) fn new(sealer: Sealer) -> Self {
        Sealing {
            sealer: Mutex::new(sealer),
            wake: Notify::new(),
        }
    }

    /// The sealer, or `Unavailable` when a panic while sealing left it in
    /// an unknown state (a half-sealed line must not be continued).
    pub(super) fn lock(&self) -> Result<MutexGuard<'_, Sealer>, AuditError> {
        self.sealer
            .lock()
            .map_err(|_| AuditError::Unavailable("the audit sealer failed"))
    }

    /// Seals with `f` and wakes the writer for a new batch; marks the trail
    /// unhealthy when sealing failed or the writer is far behind.
    pub(super) fn record(
        &self,
        health: &Health,
        f: impl FnOnce(&mut Sealer) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let (first, behind, sealed) = match self.lock() {
            Ok(mut s) => {
                let first = s.pending_len() == 0;
                let sealed = f(&mut s);
                (first, s.pending_len() > s.max_pending, sealed)
            }
            Err(e) => (false, false, Err(e)),
        };
        if first {
            self.wake.notify_one();
        }
        if sealed.is_err() || behind {
            let why = if sealed.is_err() {
                "a record could not be sealed"
            } else {
                "the writer is behind"
            };
            if health.ok.swap(false, Ordering::AcqRel) {
                tracing::error!(
                    reason = why,
                    "audit trail unavailable; refusing statements on protected columns until the writer catches up"
                );
            }
        }
        sealed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{self, GENESIS};
    use crate::audit::record::{Event, Outcome};
    use std::sync::atomic::AtomicBool;

    fn sealing(checkpoint_every: u64, max_pending: usize) -> (Sealing, Health) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("keyring");
        let keyring = Keyring::open(&dir, &crate::crypto::MasterKey::demo()).expect("demo keyring");
        let mut sealer = Sealer::new(Chain::new(5, GENESIS, [3; 32]), keyring, checkpoint_every);
        sealer.max_pending = max_pending;
        let health = Health {
            ok: AtomicBool::new(true),
            closed: AtomicBool::new(false),
        };
        (Sealing::new(sealer), health)
    }

    fn reload() -> Stamped {
        Stamped::now(Event::ConfigReloaded {
            path: "p".into(),
            outcome: "ok".into(),
            detail: None,
        })
    }

    fn statement() -> StatementView<'static> {
        StatementView {
            conn: 1,
            user: "u",
            role: None,
            fingerprint: Some("SELECT ?"),
            shown: &[],
            planned: &[],
            rows: 0,
            bytes: 0,
            affected: None,
            outcome: Outcome::Ok,
            sqlstate: None,
            duration_us: 0,
            approval: None,
            written: None,
        }
    }

    fn lines(bytes: &[u8]) -> Vec<serde_json::Map<String, serde_json::Value>> {
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| chain::parse(l).expect("a sealed line").fields)
            .collect()
    }

    #[test]
    fn lines_are_taken_in_order_with_a_checkpoint_every_n() {
        let (sealing, health) = sealing(3, MAX_PENDING_BYTES);
        for _ in 0..2 {
            sealing
                .record(&health, |s| s.seal(&reload()))
                .expect("sealed");
        }
        let mut out = Vec::new();
        let first = sealing.lock().expect("lock").take(&mut out);
        assert_eq!(first, Some(5));
        let ts = std::time::SystemTime::now();
        sealing
            .record(&health, |s| s.seal_statement(ts, &statement()))
            .expect("sealed");
        // Taken into a buffer that still holds the earlier lines: appended.
        let first = sealing.lock().expect("lock").take(&mut out);
        assert_eq!(first, Some(7));
        let recs = lines(&out);
        let kinds: Vec<&str> = recs
            .iter()
            .map(|r| r["kind"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            kinds,
            [
                "config_reloaded",
                "config_reloaded",
                "statement",
                "checkpoint"
            ]
        );
        let seqs: Vec<u64> = recs.iter().filter_map(|r| r["seq"].as_u64()).collect();
        assert_eq!(seqs, [5, 6, 7, 8]);
        assert!(health.ok.load(Ordering::Acquire));
        assert_eq!(sealing.lock().expect("lock").take(&mut Vec::new()), None);
    }

    #[test]
    fn a_writer_far_behind_makes_the_trail_unhealthy_without_losing_records() {
        let (sealing, health) = sealing(1000, 1024);
        let mut n = 0;
        while health.ok.load(Ordering::Acquire) {
            sealing
                .record(&health, |s| s.seal(&reload()))
                .expect("still sealed");
            n += 1;
            assert!(n < 100, "1 KiB of backlog never reported");
        }
        let mut out = Vec::new();
        sealing.lock().expect("lock").take(&mut out);
        assert_eq!(lines(&out).len(), n);
    }

    #[test]
    fn nothing_is_sealed_after_the_shutdown_checkpoint() {
        let (sealing, health) = sealing(1000, MAX_PENDING_BYTES);
        sealing.lock().expect("lock").close().expect("closed");
        let refused = sealing.record(&health, |s| s.seal(&reload()));
        assert!(matches!(refused, Err(AuditError::Unavailable(_))));
        assert!(!health.ok.load(Ordering::Acquire));
        let mut out = Vec::new();
        sealing.lock().expect("lock").take(&mut out);
        let recs = lines(&out);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0]["reason"], "shutdown");
    }
}
