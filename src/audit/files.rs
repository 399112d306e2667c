//! The audit files on disk: the active file, its rotated predecessors, and
//! where a restarted writer continues the chain.
//!
//! The active file is `[audit] path`; on rotation it is renamed to
//! `<path>.<first sequence number, 20 digits>`, so names sort in sequence
//! order. Hidden siblings hold the writer's lock (`.<name>.lock`) and the
//! spool of events from other processes (`.<name>.spool/`).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::chain::{self, GENESIS};
use super::error::AuditError;

/// Where the writer continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// Sequence number of the next record.
    pub next_seq: u64,
    /// Hash of the last line.
    pub prev_hash: [u8; 32],
    /// Bytes of a torn last line that were removed.
    pub torn_bytes: u64,
    /// First sequence number in the active file, if it has records.
    pub active_first_seq: Option<u64>,
    /// Size of the active file after recovery.
    pub active_len: u64,
}

/// The rotated name for the active file whose first record is `first_seq`.
pub fn rotated_name(path: &Path, first_seq: u64) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{first_seq:020}"));
    path.with_file_name(name)
}

/// A hidden sibling of the active file: `.<name><suffix>`.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(suffix);
    path.with_file_name(name)
}

/// Rotated files of `path`, oldest first.
pub fn rotated(path: &Path) -> Vec<PathBuf> {
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Some(stem) = path.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let prefix = format!("{stem}.");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let digits = name.strip_prefix(&prefix)?;
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| dir.join(&name))
        })
        .collect();
    out.sort();
    out
}

/// Maps an I/O error to [`AuditError::Io`] naming what was done to `path`.
pub(super) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AuditError {
    let path = path.to_path_buf();
    move |source| AuditError::Io {
        action,
        path,
        source,
    }
}

/// Reads where the chain stands, removing a torn last line (a crash in the
/// middle of a write) from the active file.
pub fn recover(path: &Path) -> Result<Tail, AuditError> {
    let mut tail = Tail {
        next_seq: 0,
        prev_hash: GENESIS,
        torn_bytes: 0,
        active_first_seq: None,
        active_len: 0,
    };
    let last_from = |file: &Path, text: &[u8], tail: &mut Tail| -> Result<bool, AuditError> {
        let Some(last) = text.split(|b| *b == b'\n').rfind(|l| !l.is_empty()) else {
            return Ok(false);
        };
        let parsed = chain::parse(last).ok_or_else(|| AuditError::Unreadable {
            path: file.to_path_buf(),
            reason: "not a sealed audit record".into(),
        })?;
        let seq = parsed.seq().ok_or_else(|| AuditError::Unreadable {
            path: file.to_path_buf(),
            reason: "no sequence number".into(),
        })?;
        tail.next_seq = seq + 1;
        tail.prev_hash = chain::line_link(last).ok_or_else(|| AuditError::Unreadable {
            path: file.to_path_buf(),
            reason: "not a sealed audit record".into(),
        })?;
        Ok(true)
    };
    match std::fs::read(path) {
        Ok(mut text) => {
            if !text.is_empty() && !text.ends_with(b"\n") {
                let keep = text.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
                tail.torn_bytes = (text.len() - keep) as u64;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io("open", path))?;
                f.set_len(keep as u64)
                    .and_then(|()| f.sync_all())
                    .map_err(io("remove a torn last line from", path))?;
                text.truncate(keep);
            }
            tail.active_len = text.len() as u64;
            if let Some(first) = text.split(|b| *b == b'\n').find(|l| !l.is_empty()) {
                tail.active_first_seq = chain::parse(first).and_then(|p| p.seq());
            }
            if last_from(path, &text, &mut tail)? {
                return Ok(tail);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("read", path)(e)),
    }
    if let Some(newest) = rotated(path).pop() {
        let mut text = Vec::new();
        File::open(&newest)
            .and_then(|mut f| f.read_to_end(&mut text))
            .map_err(io("read", &newest))?;
        last_from(&newest, &text, &mut tail)?;
    }
    Ok(tail)
}

/// Fsyncs a directory so a rename or a new file in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let p = Path::new("/var/log/audit.jsonl");
        assert_eq!(
            rotated_name(p, 42),
            PathBuf::from("/var/log/audit.jsonl.00000000000000000042")
        );
        assert_eq!(
            sibling(p, ".lock"),
            PathBuf::from("/var/log/.audit.jsonl.lock")
        );
    }

    #[test]
    fn empty_and_missing_start_at_genesis() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("a.jsonl");
        assert_eq!(recover(&p).expect("missing").next_seq, 0);
        std::fs::write(&p, "").expect("write");
        assert_eq!(recover(&p).expect("empty").prev_hash, GENESIS);
        std::fs::write(&p, "garbage\n").expect("write");
        assert!(matches!(recover(&p), Err(AuditError::Unreadable { .. })));
    }
}
