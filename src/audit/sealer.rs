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
        let (first, backlog, sealed) = match self.lock() {
            Ok(mut s) => {
                let first = s.pending_len() == 0;
                let sealed = f(&mut s);
                (first, s.pending_len(), sealed)
            }
            Err(e) => (false, 0, Err(e)),
        };
        if first {
            self.wake.notify_one();
        }
        if sealed.is_err() || backlog > MAX_PENDING_BYTES {
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
