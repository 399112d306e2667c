//! Events from other pgveil processes (the keyring commands).
//!
//! Only the proxy's writer appends to the audit file, so the chain never
//! forks. A command like `pgveil keyring rotate` instead drops its event
//! into the spool directory (`.<name>.spool/` next to the audit file) with
//! an atomic write; the writer seals spooled events into the chain at its
//! next tick (or at its next start, when no proxy is running) and then
//! deletes them.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::AuditError;
use super::files::sibling;
use super::record::{Event, Stamped};

/// An event another process hands to the writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SpoolEvent {
    /// A key rotation.
    KeyRotated {
        /// The new active version.
        version: u32,
        /// The demoted version.
        previous: Option<u32>,
    },
    /// A key destruction.
    KeyDestroyed {
        /// The destroyed version.
        version: u32,
    },
    /// `pgveil approve` issued an approval.
    ApprovalIssued(super::record::ApprovalIssued),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpoolFile {
    /// When the event happened, milliseconds since the Unix epoch.
    ts_ms: u64,
    event: SpoolEvent,
}

impl SpoolEvent {
    fn into_event(self) -> Event {
        let source = "keyring-cli".to_owned();
        match self {
            SpoolEvent::KeyRotated { version, previous } => Event::KeyRotated {
                version,
                previous,
                source,
            },
            SpoolEvent::KeyDestroyed { version } => Event::KeyDestroyed { version, source },
            SpoolEvent::ApprovalIssued(a) => Event::ApprovalIssued(a),
        }
    }
}

/// The spool directory of the audit file `path`.
pub fn dir(path: &Path) -> PathBuf {
    sibling(path, ".spool")
}

/// Hands `event` to the writer of the audit file `path`.
pub fn put(path: &Path, event: SpoolEvent) -> Result<(), AuditError> {
    let dir = dir(path);
    let io = |action, p: &Path| {
        let p = p.to_path_buf();
        move |source| AuditError::Io {
            action,
            path: p,
            source,
        }
    };
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("create spool directory", &dir))?;
    }
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let body = serde_json::to_vec(&SpoolFile {
        ts_ms: u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX),
        event,
    })?;
    let nanos = since_epoch.as_nanos();
    let name = format!("{nanos:024}-{}.json", std::process::id());
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp")
        .tempfile_in(&dir)
        .map_err(io("create a file in", &dir))?;
    tmp.write_all(&body)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io("write", tmp.path()))?;
    let target = dir.join(name);
    tmp.persist(&target).map_err(|e| AuditError::Io {
        action: "write",
        path: target.clone(),
        source: e.error,
    })?;
    super::files::sync_dir(&dir).map_err(io("sync", &dir))?;
    Ok(())
}

/// Spooled events not yet taken, oldest first, skipping `taken`. A file
/// that does not parse is reported once in the log and left in place.
pub fn take(path: &Path, taken: &[PathBuf]) -> Vec<(PathBuf, Stamped)> {
    let dir = dir(path);
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json") && !taken.contains(p))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|p| {
            let parsed = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<SpoolFile>(&b).ok());
            match parsed {
                Some(f) => Some((
                    p,
                    Stamped {
                        ts: std::time::UNIX_EPOCH + std::time::Duration::from_millis(f.ts_ms),
                        event: f.event.into_event(),
                    },
                )),
                None => {
                    tracing::warn!(file = %p.display(), "unreadable audit spool file left in place");
                    None
                }
            }
        })
        .collect()
}

/// After `pgveil approve` issued `approval`, hands the event to the audit
/// trail of the configuration `config` (when `[audit] path` is set). The
/// approver's free-text reason is left out: it is not checked for values.
pub fn approval_issued(config: &Path, approval: &crate::guard::Approval) -> Result<(), AuditError> {
    let cfg = crate::config::Config::load(config).map_err(|e| AuditError::Io {
        action: "read",
        path: config.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let Some(path) = cfg.audit.path.as_deref() else {
        return Ok(());
    };
    let expires =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(approval.expires_unix_ms);
    put(
        path,
        SpoolEvent::ApprovalIssued(super::record::ApprovalIssued {
            approval: approval.id.clone(),
            requester: approval.requester.clone(),
            approver: approval.approver.clone(),
            scope: approval.tables.join(","),
            max_rows: Some(approval.max_rows),
            single_use: Some(approval.single_use),
            expires: Some(super::record::rfc3339(expires)),
        }),
    )
}

/// After a successful `pgveil keyring rotate|destroy`, hands the event to
/// the audit trail of `cfg` (when `[audit] path` is set). The key change
/// has happened by then; an error here tells the operator it is not yet
/// recorded.
pub fn keyring_command(
    cfg: &crate::config::Config,
    cmd: &crate::crypto::cli::KeyringCommand,
) -> Result<(), AuditError> {
    use crate::crypto::cli::KeyringCommand;
    let Some(path) = cfg.audit.path.as_deref() else {
        return Ok(());
    };
    let event = match cmd {
        KeyringCommand::Rotate => {
            let file = crate::crypto::store::load(&cfg.keyring.dir)?;
            let active = file
                .versions
                .iter()
                .rfind(|v| v.state == crate::crypto::KeyState::Active)
                .map_or(0, |v| v.version);
            SpoolEvent::KeyRotated {
                version: active,
                previous: active.checked_sub(1).filter(|v| *v > 0),
            }
        }
        KeyringCommand::Destroy { version, .. } => SpoolEvent::KeyDestroyed { version: *version },
        KeyringCommand::Init | KeyringCommand::List => return Ok(()),
    };
    put(path, event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_then_take() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("a.jsonl");
        put(
            &p,
            SpoolEvent::KeyRotated {
                version: 2,
                previous: Some(1),
            },
        )
        .expect("put");
        put(&p, SpoolEvent::KeyDestroyed { version: 1 }).expect("put");
        let got = take(&p, &[]);
        assert_eq!(got.len(), 2);
        assert!(matches!(
            got[0].1.event,
            Event::KeyRotated { version: 2, .. }
        ));
        assert!(matches!(
            got[1].1.event,
            Event::KeyDestroyed { version: 1, .. }
        ));
        let again = take(&p, &[got[0].0.clone()]);
        assert_eq!(again.len(), 1);
    }
}
