//! The writer: the only code that appends to the audit file.
//!
//! It runs on its own thread (with its own small runtime), so `write` and
//! `fsync` never stall a session's task. Sessions seal their records into
//! the shared pending buffer (`sealer.rs`); the writer takes whatever has
//! been sealed, writes it in one `write` and one `fsync`, and only then
//! counts it as written. When a write fails (disk full, permissions, the
//! file removed or replaced) it clears the shared health flag — sessions
//! then refuse statements on protected columns — keeps the taken lines in
//! memory and retries until the file can be written again.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::chain::Chain;
use super::config::AuditConfig;
use super::error::AuditError;
use super::files::{self, io, Tail};
use super::handle::Health;
use super::record::{Event, Stamped};
use super::sealer::{Sealer, Sealing};
use super::spool;
use crate::crypto::Keyring;

/// What the writer is asked besides writing what is sealed.
#[derive(Debug)]
pub enum Ctl {
    /// Answer once everything sealed before has been written (or failed).
    Flush(oneshot::Sender<bool>),
    /// Write a final checkpoint and stop.
    Shutdown(oneshot::Sender<()>),
}

/// How long to wait before retrying a failed write.
const RETRY: Duration = Duration::from_millis(200);
/// How often the spool is read when no checkpoint is due sooner.
const SPOOL_EVERY: Duration = Duration::from_secs(1);
/// Group commit: after the first record of a batch is sealed, the writer
/// waits this long and then writes and fsyncs everything sealed by then in
/// one go. It bounds wake-ups and fsyncs to a few hundred per second under
/// load, at the price of this much extra delay before a record is on disk.
const GROUP_COMMIT: Duration = Duration::from_millis(5);

pub(super) struct Writer {
    path: PathBuf,
    max_file_bytes: u64,
    sealing: Arc<Sealing>,
    health: Arc<Health>,
    file: Option<File>,
    /// (device, inode) of the open file, to notice it being replaced.
    file_id: (u64, u64),
    /// Bytes of the open file that are known written.
    file_len: u64,
    /// First sequence number in the open file.
    file_first_seq: Option<u64>,
    /// Lines taken from the sealer and not yet durably written, and the
    /// first one's seq.
    unwritten: Vec<u8>,
    unwritten_first_seq: Option<u64>,
    /// The file is full and sealed; rename it before writing more.
    rotate_due: bool,
    /// Spool files whose events are sealed but not yet written.
    spooled: Vec<PathBuf>,
    /// The shutdown checkpoint is sealed: nothing may follow it, not even
    /// a rotation's checkpoint (the next start rotates instead).
    closing: bool,
    /// Held for as long as the writer runs.
    _lock: nix::fcntl::Flock<File>,
}

impl Writer {
    /// Opens (or creates) the audit file, continues the chain from what is
    /// on disk, and durably writes the run's start record. Any failure here
    /// stops pgveil from starting.
    pub(super) fn open(
        cfg: &AuditConfig,
        path: &Path,
        keyring: Keyring,
        master: &crate::crypto::MasterKey,
        health: Arc<Health>,
    ) -> Result<Writer, AuditError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io("create audit directory", dir))?;
        }
        let lock_path = files::sibling(path, ".lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("open lock file", &lock_path))?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| AuditError::Locked {
                path: path.to_path_buf(),
            })?;
        let Tail {
            next_seq,
            prev_hash,
            torn_bytes,
            active_first_seq,
            active_len,
        } = files::recover(path)?;
        let rng = ring::rand::SystemRandom::new();
        let mut key = [0u8; 32];
        ring::rand::SecureRandom::fill(&rng, &mut key)
            .map_err(|_| AuditError::Unavailable("system random source failed"))?;
        let mut run = [0u8; 16];
        ring::rand::SecureRandom::fill(&rng, &mut run)
            .map_err(|_| AuditError::Unavailable("system random source failed"))?;
        let run = super::chain::hex(&run);
        let aad = format!("{}{run}", super::chain::KEY_WRAP_DOMAIN);
        let wrapped_key = crate::crypto::wrap_secret(master, aad.as_bytes(), &key)?;
        let start = Event::Start {
            run: run.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            wrapped_key,
            key_commit: super::chain::hex(&super::chain::commit(&key)),
            public_key: super::chain::hex(keyring.signing_public_key()),
            torn_bytes,
        };
        let chain = Chain::new(next_seq, prev_hash, key);
        key.fill(0);
        let sealer = Sealer::new(chain, keyring, cfg.checkpoint_every);
        let mut w = Writer {
            path: path.to_path_buf(),
            max_file_bytes: cfg.max_file_bytes,
            sealing: Arc::new(Sealing::new(sealer)),
            health,
            file: None,
            file_id: (0, 0),
            file_len: active_len,
            file_first_seq: active_first_seq,
            unwritten: Vec::with_capacity(64 * 1024),
            unwritten_first_seq: None,
            rotate_due: false,
            spooled: Vec::new(),
            closing: false,
            _lock: lock,
        };
        w.reopen(false)?;
        w.sealing.lock()?.seal(&Stamped::now(start))?;
        w.ingest_spool()?;
        w.try_flush()?;
        info!(path = %path.display(), seq = next_seq, %run, "audit trail open");
        Ok(w)
    }

    /// Opens the active file for appending; `fresh` means a file the
    /// writer had open vanished and a new one is started.
    fn reopen(&mut self, fresh: bool) -> Result<(), AuditError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(io("open", &self.path))?;
        let meta = file.metadata().map_err(io("inspect", &self.path))?;
        if fresh || meta.len() == 0 {
            self.file_first_seq = None;
        }
        self.file_len = meta.len();
        self.file_id = (meta.dev(), meta.ino());
        self.file = Some(file);
        if let Some(dir) = self.path.parent() {
            files::sync_dir(dir).map_err(io("sync directory of", &self.path))?;
        }
        Ok(())
    }

    /// What sessions seal into.
    pub(super) fn sealing(&self) -> Arc<Sealing> {
        self.sealing.clone()
    }

    /// Seals spooled events from other processes.
    fn ingest_spool(&mut self) -> Result<(), AuditError> {
        for (file, rec) in spool::take(&self.path, &self.spooled) {
            self.sealing.lock()?.seal(&rec)?;
            self.spooled.push(file);
        }
        Ok(())
    }

    /// Takes everything sealed so far into `unwritten`.
    fn take(&mut self) -> Result<(), AuditError> {
        let first = self.sealing.lock()?.take(&mut self.unwritten);
        if self.unwritten_first_seq.is_none() {
            self.unwritten_first_seq = first;
        }
        Ok(())
    }

    /// Appends `unwritten` to the open file and fsyncs it.
    fn write_unwritten(&mut self) -> Result<(), AuditError> {
        let file = self
            .file
            .as_mut()
            .ok_or(AuditError::Unavailable("no file"))?;
        // A failed write may have left part of a line: cut back to what is
        // known written before appending again.
        let on_disk = file.metadata().map_err(io("inspect", &self.path))?.len();
        if on_disk != self.file_len {
            file.set_len(self.file_len)
                .map_err(io("truncate a partial write in", &self.path))?;
        }
        file.write_all(&self.unwritten)
            .and_then(|()| file.sync_data())
            .map_err(io("write", &self.path))?;
        self.file_len += self.unwritten.len() as u64;
        if self.file_first_seq.is_none() {
            self.file_first_seq = self.unwritten_first_seq;
        }
        self.unwritten.clear();
        self.unwritten_first_seq = None;
        Ok(())
    }

    /// Checks that the path still names the file being written: an audit
    /// file deleted or replaced under pgveil must not silently swallow
    /// records into an unlinked inode.
    fn check_identity(&self) -> Result<(), AuditError> {
        let meta = std::fs::metadata(&self.path).map_err(io("inspect", &self.path))?;
        if (meta.dev(), meta.ino()) != self.file_id {
            return Err(AuditError::Io {
                action: "keep writing",
                path: self.path.clone(),
                source: std::io::Error::other("the audit file was replaced by another file"),
            });
        }
        Ok(())
    }

    /// Writes and fsyncs the pending lines, rotating when the file is full.
    fn try_flush(&mut self) -> Result<(), AuditError> {
        if self.file.is_none() || self.check_identity().is_err() {
            match std::fs::symlink_metadata(&self.path) {
                // Gone (deleted, or its directory replaced): start a new
                // file once the path can be created again.
                Err(_) => {
                    // Records from now on write their queries in full again
                    // (those already sealed may refer to the lost file).
                    self.sealing.lock()?.new_file();
                    self.reopen(true)?
                }
                Ok(_) if self.file.is_none() => self.reopen(false)?,
                Ok(_) => self.check_identity()?,
            }
        }
        if self.rotate_due {
            self.rotate()?;
        }
        self.take()?;
        if self.unwritten.is_empty() {
            return Ok(());
        }
        self.write_unwritten()?;
        for f in self.spooled.drain(..) {
            let _ = std::fs::remove_file(&f);
        }
        if self.file_len >= self.max_file_bytes && !self.closing {
            // Seal the full file, then rename it away. The checkpoint is
            // sealed and taken under one lock: a session's record sealed in
            // between would otherwise follow it into the full file.
            {
                let mut sealer = self.sealing.lock()?;
                sealer.checkpoint("rotate")?;
                sealer.new_file();
                let first = sealer.take(&mut self.unwritten);
                if self.unwritten_first_seq.is_none() {
                    self.unwritten_first_seq = first;
                }
            }
            self.write_unwritten()?;
            self.rotate_due = true;
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), AuditError> {
        let first = match self.file_first_seq {
            Some(seq) => seq,
            None => self.sealing.lock()?.seq(),
        };
        let target = files::rotated_name(&self.path, first);
        std::fs::rename(&self.path, &target).map_err(io("rotate", &self.path))?;
        self.rotate_due = false;
        self.file = None;
        self.reopen(true)?;
        info!(rotated = %target.display(), "audit file rotated");
        Ok(())
    }

    /// Flushes and updates the health flag; logs transitions.
    fn flush(&mut self) -> bool {
        match self.try_flush() {
            Ok(()) => {
                if !self.health.ok.swap(true, Ordering::AcqRel) {
                    info!(
                        "audit trail writable again; statements on protected columns are accepted"
                    );
                }
                true
            }
            Err(e) => {
                if self.health.ok.swap(false, Ordering::AcqRel) {
                    error!(error = %e, "audit trail cannot be written; refusing statements on protected columns until it can");
                }
                if self.check_identity().is_err() {
                    self.file = None;
                }
                false
            }
        }
    }

    /// The writer's loop; returns after a shutdown request or when the
    /// proxy's handle is gone.
    pub(super) async fn run(mut self, mut ctl: mpsc::Receiver<Ctl>, interval: Duration) {
        let mut checkpoint_tick = tokio::time::interval(interval);
        checkpoint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        checkpoint_tick.reset();
        let mut spool_tick = tokio::time::interval(SPOOL_EVERY);
        spool_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sealing = self.sealing.clone();
        loop {
            let healthy = self.health.ok.load(Ordering::Acquire);
            tokio::select! {
                () = sealing.wake.notified() => {
                    tokio::time::sleep(GROUP_COMMIT).await;
                    self.flush();
                }
                msg = ctl.recv() => match msg {
                    Some(Ctl::Flush(tx)) => {
                        let ok = self.flush();
                        let _ = tx.send(ok);
                    }
                    Some(Ctl::Shutdown(done)) => {
                        self.shutdown();
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.shutdown();
                        return;
                    }
                },
                _ = checkpoint_tick.tick() => {
                    let sealed = self.sealing.lock().and_then(|mut s| {
                        if s.since_checkpoint() > 0 {
                            s.checkpoint("interval")
                        } else {
                            Ok(())
                        }
                    });
                    if let Err(e) = sealed {
                        warn!(error = %e, "audit checkpoint failed");
                    }
                    self.flush();
                }
                _ = spool_tick.tick() => {
                    if healthy {
                        if let Err(e) = self.ingest_spool() {
                            warn!(error = %e, "audit spool not read");
                        }
                        self.flush();
                    }
                }
                () = tokio::time::sleep(RETRY), if !healthy => {
                    self.flush();
                }
            }
        }
    }

    fn shutdown(&mut self) {
        let closed = self.sealing.lock().and_then(|mut s| s.close());
        if let Err(e) = closed {
            warn!(error = %e, "final audit checkpoint failed");
        }
        self.closing = true;
        // A few retries: a shutdown while the disk is full should not
        // lose the tail if space comes back quickly.
        for _ in 0..5 {
            if self.flush() {
                break;
            }
            std::thread::sleep(RETRY);
        }
        if !self.unwritten.is_empty() {
            error!(
                bytes = self.unwritten.len(),
                "audit records could not be written before shutdown"
            );
        }
        self.health.ok.store(false, Ordering::Release);
        self.health.closed.store(true, Ordering::Release);
        let seq = self.sealing.lock().map(|s| s.seq()).unwrap_or_default();
        info!(seq, "audit trail closed");
    }
}
