//! The keyring file on disk: its TOML schema, checks, atomic writes and
//! the lock that serializes keyring commands.
//!
//! `keyring/keyring.toml` holds only wrapped keys, so it can be backed up
//! like any config file. A write goes to a temporary file in the same
//! directory, is fsynced, renamed over the old file and the directory is
//! fsynced: after a crash the file is either the old or the new version,
//! never a torn one, so no key is ever lost by a half-written file.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{CryptoError, Result};

/// Name of the keyring file inside the keyring directory.
pub const KEYRING_FILE: &str = "keyring.toml";
/// Name of the lock file that serializes keyring commands.
const LOCK_FILE: &str = ".keyring.lock";
/// The only keyring file format this code writes and reads.
pub(crate) const FILE_FORMAT: u32 = 1;

/// State of one root-key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyState {
    /// Encrypts new values and decrypts old ones. Exactly one version is
    /// active.
    Active,
    /// Decrypts values written under it; never encrypts.
    DecryptOnly,
    /// Its wrapped key is erased: values under it cannot be decrypted.
    Destroyed,
}

impl KeyState {
    /// The name used in the file and in `keyring list`.
    pub fn name(&self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::DecryptOnly => "decrypt-only",
            KeyState::Destroyed => "destroyed",
        }
    }
}

/// The whole keyring file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyringFile {
    /// File format version, [`FILE_FORMAT`].
    pub format: u32,
    /// Free text shown by `keyring list` (the demo keyring says DEMO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The Ed25519 signing key for approvals and audit checkpoints.
    pub signing: SigningEntry,
    /// Root-key versions, ascending.
    pub versions: Vec<VersionEntry>,
}

/// The wrapped Ed25519 seed and its public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SigningEntry {
    /// Public key, lowercase hex, so verifiers need no master key.
    pub public_key: String,
    /// The 32-byte seed wrapped under the master key (base64).
    pub wrapped_seed: String,
}

/// One root-key version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionEntry {
    /// Version number, from 1.
    pub version: u32,
    /// Its state.
    pub state: KeyState,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Destruction time, for destroyed versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroyed_unix: Option<u64>,
    /// The root key wrapped under the master key (base64); absent once
    /// destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped_key: Option<String>,
}

/// Path of the keyring file in `dir`.
pub(crate) fn file_path(dir: &Path) -> PathBuf {
    dir.join(KEYRING_FILE)
}

/// Reads and checks the keyring file in `dir`.
pub(crate) fn load(dir: &Path) -> Result<KeyringFile> {
    let path = file_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CryptoError::KeyringMissing {
                dir: dir.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(CryptoError::Io {
                action: "read keyring file",
                path,
                source,
            })
        }
    };
    let file: KeyringFile = toml::from_str(&text).map_err(|e| CryptoError::KeyringCorrupt {
        path: path.clone(),
        reason: e.message().to_string(),
    })?;
    check(&file).map_err(|reason| CryptoError::KeyringCorrupt { path, reason })?;
    Ok(file)
}

/// The invariants every keyring file keeps.
pub(crate) fn check(file: &KeyringFile) -> Result<(), String> {
    if file.format != FILE_FORMAT {
        return Err(format!(
            "unsupported keyring format {} (this pgveil reads {FILE_FORMAT})",
            file.format
        ));
    }
    let mut active = 0;
    for (i, v) in file.versions.iter().enumerate() {
        if i64::from(v.version) != i as i64 + 1 {
            return Err(format!(
                "key versions must be numbered 1, 2, 3, … in order; entry {} has version {}",
                i + 1,
                v.version
            ));
        }
        match (v.state, &v.wrapped_key) {
            (KeyState::Destroyed, Some(_)) => {
                return Err(format!(
                    "destroyed key version {} still has a key",
                    v.version
                ))
            }
            (KeyState::Active | KeyState::DecryptOnly, None) => {
                return Err(format!("key version {} has no wrapped key", v.version))
            }
            _ => {}
        }
        if v.state == KeyState::Active {
            active += 1;
        }
    }
    if active != 1 {
        return Err(format!(
            "exactly one key version must be active, found {active}"
        ));
    }
    Ok(())
}

/// Serializes `file` and writes it atomically into `dir`.
pub(crate) fn save(dir: &Path, file: &KeyringFile) -> Result<()> {
    save_with_hook(dir, file, |_| Ok(()))
}

const HEADER: &str = "\
# pgveil keyring. Every key here is wrapped (AES-256-GCM) by the master key.
# Manage it with `pgveil keyring init|rotate|list|destroy`; do not edit by hand.
";

/// [`save`] with a hook called after the temporary file is written and
/// synced but before it replaces the old file, so tests can simulate a
/// crash at the worst moment.
pub(crate) fn save_with_hook(
    dir: &Path,
    file: &KeyringFile,
    before_rename: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<()> {
    check(file).map_err(|reason| CryptoError::KeyringCorrupt {
        path: file_path(dir),
        reason,
    })?;
    let body = toml::to_string(file).map_err(|e| CryptoError::KeyringCorrupt {
        path: file_path(dir),
        reason: e.to_string(),
    })?;
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| CryptoError::Io {
            action,
            path,
            source,
        }
    };
    // NamedTempFile creates the file with mode 0600 in the same directory,
    // so the rename below stays on one file system and is atomic.
    let mut tmp = tempfile::Builder::new()
        .prefix(".keyring.toml.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io("create a temporary file in", dir))?;
    tmp.write_all(HEADER.as_bytes())
        .and_then(|_| tmp.write_all(body.as_bytes()))
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(io("write", tmp.path()))?;
    before_rename(tmp.path()).map_err(io("write", tmp.path()))?;
    let target = file_path(dir);
    tmp.persist(&target).map_err(|e| CryptoError::Io {
        action: "replace keyring file",
        path: target.clone(),
        source: e.error,
    })?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))?;
    Ok(())
}

/// An exclusive lock on the keyring directory, held while a command reads,
/// changes and writes the keyring, so two concurrent `rotate`s cannot both
/// create version N+1.
pub(crate) struct DirLock {
    _lock: nix::fcntl::Flock<File>,
}

/// Takes the keyring directory's lock, waiting for another command to
/// finish.
pub(crate) fn lock(dir: &Path) -> Result<DirLock> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| CryptoError::Io {
            action: "open lock file",
            path: path.clone(),
            source,
        })?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(
        |(_, errno)| CryptoError::Io {
            action: "lock",
            path,
            source: std::io::Error::from(errno),
        },
    )?;
    Ok(DirLock { _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyringFile {
        KeyringFile {
            format: FILE_FORMAT,
            label: Some("test".into()),
            signing: SigningEntry {
                public_key: "00".into(),
                wrapped_seed: "AA==".into(),
            },
            versions: vec![
                VersionEntry {
                    version: 1,
                    state: KeyState::Destroyed,
                    created_unix: 1,
                    destroyed_unix: Some(3),
                    wrapped_key: None,
                },
                VersionEntry {
                    version: 2,
                    state: KeyState::Active,
                    created_unix: 2,
                    destroyed_unix: None,
                    wrapped_key: Some("BB==".into()),
                },
            ],
        }
    }

    #[test]
    fn save_then_load_round_trips() {
        let d = tempfile::tempdir().expect("tempdir");
        save(d.path(), &sample()).expect("save");
        assert_eq!(load(d.path()).expect("load"), sample());
        let leftovers: Vec<_> = std::fs::read_dir(d.path())
            .expect("readdir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn crash_before_rename_keeps_old_file() {
        let d = tempfile::tempdir().expect("tempdir");
        save(d.path(), &sample()).expect("save");
        let before = std::fs::read(file_path(d.path())).expect("read");
        let mut changed = sample();
        changed.label = Some("changed".into());
        let r = save_with_hook(d.path(), &changed, |tmp| {
            // The new content is complete and synced in the temp file…
            assert!(std::fs::read_to_string(tmp)?.contains("changed"));
            // …and then the process "dies".
            Err(std::io::Error::other("simulated crash"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(file_path(d.path())).expect("read"), before);
        assert_eq!(load(d.path()).expect("load"), sample());
    }

    #[test]
    fn invariants_are_checked() {
        let mut two_active = sample();
        two_active.versions[0].state = KeyState::Active;
        two_active.versions[0].wrapped_key = Some("x".into());
        assert!(check(&two_active).is_err());
        let mut gap = sample();
        gap.versions[1].version = 3;
        assert!(check(&gap).is_err());
        let mut kept = sample();
        kept.versions[0].wrapped_key = Some("x".into());
        assert!(check(&kept).is_err());
        let d = tempfile::tempdir().expect("tempdir");
        assert!(save(d.path(), &two_active).is_err());
        std::fs::write(file_path(d.path()), "format = 1\nbogus = 2\n").expect("write");
        assert!(matches!(
            load(d.path()),
            Err(CryptoError::KeyringCorrupt { .. })
        ));
        std::fs::remove_file(file_path(d.path())).expect("rm");
        assert!(matches!(
            load(d.path()),
            Err(CryptoError::KeyringMissing { .. })
        ));
    }

    #[test]
    fn lock_is_reentrant_across_sequential_commands() {
        let d = tempfile::tempdir().expect("tempdir");
        drop(lock(d.path()).expect("lock 1"));
        drop(lock(d.path()).expect("lock 2"));
    }
}
