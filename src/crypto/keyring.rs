//! The keyring: numbered root-key versions and the signing key, unwrapped
//! in memory.
//!
//! A root key never encrypts a value itself; it is the HKDF input from
//! which each column's keys are derived ([`Keyring::column`]). Rotation adds
//! a version and demotes the old active one to decrypt-only, so old data
//! still reads; destroying a version erases its wrapped key from the file,
//! which makes every value under it unreadable (crypto-shredding).
//!
//! Every change is made under the directory lock on a fresh read of the
//! file and written back atomically (see [`super::store`]).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::column::{ColumnCipher, RootSlot};
use super::config::KeyringConfig;
use super::error::{CryptoError, Result};
use super::master::MasterKey;
use super::secret::Secret32;
use super::store::{self, KeyState, KeyringFile, SigningEntry, VersionEntry};
use super::types::{LogicalType, Mode};

/// What `keyring list` shows about one version (no key material).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionInfo {
    /// Version number, from 1.
    pub version: u32,
    /// Its state.
    pub state: KeyState,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Destruction time, for destroyed versions.
    pub destroyed_unix: Option<u64>,
}

/// An opened keyring: root keys of live versions and the signing key.
pub struct Keyring {
    dir: PathBuf,
    master: MasterKey,
    file: KeyringFile,
    /// Index `v - 1` holds version `v`; `None` when destroyed.
    roots: Vec<Option<Secret32>>,
    active: u32,
    signing: Ed25519KeyPair,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("dir", &self.dir)
            .field("active", &self.active)
            .field("versions", &self.roots.len())
            .finish_non_exhaustive()
    }
}

fn root_aad(version: u32) -> Vec<u8> {
    let mut a = b"pgveil keyring v1 root key ".to_vec();
    a.extend_from_slice(&version.to_be_bytes());
    a
}
const SIGNING_AAD: &[u8] = b"pgveil keyring v1 signing seed";

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_root_entry(master: &MasterKey, rng: &SystemRandom, version: u32) -> Result<VersionEntry> {
    let root = Secret32::random(rng).ok_or(CryptoError::Random)?;
    Ok(VersionEntry {
        version,
        state: KeyState::Active,
        created_unix: now_unix(),
        destroyed_unix: None,
        wrapped_key: Some(master.wrap(&root_aad(version), &root, rng)?),
    })
}

impl Keyring {
    /// Opens the keyring named by the config, with the master key from the
    /// config or environment: what the proxy calls at startup.
    pub fn load(cfg: &KeyringConfig) -> Result<Keyring> {
        let master = MasterKey::load(cfg)?;
        Keyring::open(&cfg.dir, &master)
    }

    /// Opens the keyring in `dir` and unwraps its keys with `master`.
    pub fn open(dir: &Path, master: &MasterKey) -> Result<Keyring> {
        let file = store::load(dir)?;
        Keyring::from_file(dir, master.clone(), file)
    }

    /// Creates a new keyring in `dir` (created if missing, mode 0700) with
    /// key version 1 active and a fresh signing key. Refuses to overwrite an
    /// existing keyring: that would destroy every key in it.
    pub fn init(dir: &Path, master: &MasterKey, label: Option<&str>) -> Result<Keyring> {
        create_dir_private(dir)?;
        let _lock = store::lock(dir)?;
        if store::file_path(dir).exists() {
            return Err(CryptoError::KeyringExists {
                dir: dir.to_path_buf(),
            });
        }
        let rng = SystemRandom::new();
        let seed = Secret32::random(&rng).ok_or(CryptoError::Random)?;
        let pair =
            Ed25519KeyPair::from_seed_unchecked(seed.expose()).map_err(|_| CryptoError::Random)?;
        let file = KeyringFile {
            format: store::FILE_FORMAT,
            label: label.map(str::to_string),
            signing: SigningEntry {
                public_key: hex(pair.public_key().as_ref()),
                wrapped_seed: master.wrap(SIGNING_AAD, &seed, &rng)?,
            },
            versions: vec![new_root_entry(master, &rng, 1)?],
        };
        store::save(dir, &file)?;
        Keyring::from_file(dir, master.clone(), file)
    }

    fn from_file(dir: &Path, master: MasterKey, file: KeyringFile) -> Result<Keyring> {
        let path = store::file_path(dir);
        store::check(&file).map_err(|reason| CryptoError::KeyringCorrupt {
            path: path.clone(),
            reason,
        })?;
        let mut roots = Vec::with_capacity(file.versions.len());
        let mut active = 0;
        for v in &file.versions {
            if v.state == KeyState::Active {
                active = v.version;
            }
            roots.push(match &v.wrapped_key {
                None => None,
                Some(w) => Some(master.unwrap_key(&root_aad(v.version), w).ok_or_else(|| {
                    CryptoError::MasterKeyMismatch {
                        what: format!("key version {}", v.version),
                    }
                })?),
            });
        }
        let seed = master
            .unwrap_key(SIGNING_AAD, &file.signing.wrapped_seed)
            .ok_or_else(|| CryptoError::MasterKeyMismatch {
                what: "the signing key".to_string(),
            })?;
        let signing = Ed25519KeyPair::from_seed_unchecked(seed.expose()).map_err(|_| {
            CryptoError::KeyringCorrupt {
                path: path.clone(),
                reason: "the signing seed is not a valid Ed25519 seed".into(),
            }
        })?;
        if hex(signing.public_key().as_ref()) != file.signing.public_key.to_ascii_lowercase() {
            return Err(CryptoError::KeyringCorrupt {
                path,
                reason: "the signing public key does not match the wrapped seed".into(),
            });
        }
        Ok(Keyring {
            dir: dir.to_path_buf(),
            master,
            file,
            roots,
            active,
            signing,
        })
    }

    /// Applies `change` to a fresh read of the file under the directory
    /// lock, writes it atomically and reloads `self` from it, so concurrent
    /// commands never lose each other's changes.
    fn modify<T>(
        &mut self,
        change: impl FnOnce(&mut KeyringFile, &MasterKey) -> Result<T>,
    ) -> Result<T> {
        let _lock = store::lock(&self.dir)?;
        let mut file = store::load(&self.dir)?;
        let out = change(&mut file, &self.master)?;
        store::save(&self.dir, &file)?;
        *self = Keyring::from_file(&self.dir, self.master.clone(), file)?;
        Ok(out)
    }

    /// Adds a new active key version; the previous active version becomes
    /// decrypt-only. Returns the new version number. New values are then
    /// written under it once the proxy rebuilds its column ciphers.
    pub fn rotate(&mut self) -> Result<u32> {
        self.modify(|file, master| {
            let next = file
                .versions
                .last()
                .map_or(Some(1), |v| v.version.checked_add(1))
                .ok_or(CryptoError::VersionsExhausted)?;
            let entry = new_root_entry(master, &SystemRandom::new(), next)?;
            for v in &mut file.versions {
                if v.state == KeyState::Active {
                    v.state = KeyState::DecryptOnly;
                }
            }
            file.versions.push(entry);
            Ok(next)
        })
    }

    /// Erases the wrapped key of `version` from the keyring file, making
    /// every value encrypted under it unreadable (crypto-shredding). The
    /// active version cannot be destroyed: rotate first.
    ///
    /// Copies of the keyring file (backups) still hold the wrapped key;
    /// they must be destroyed too for the data to be truly gone.
    pub fn destroy(&mut self, version: u32) -> Result<()> {
        self.modify(|file, _| {
            let v = file
                .versions
                .iter_mut()
                .find(|v| v.version == version)
                .ok_or(CryptoError::NoSuchVersion { version })?;
            match v.state {
                KeyState::Active => Err(CryptoError::DestroyActive { version }),
                KeyState::Destroyed => Err(CryptoError::AlreadyDestroyed { version }),
                KeyState::DecryptOnly => {
                    v.state = KeyState::Destroyed;
                    v.destroyed_unix = Some(now_unix());
                    v.wrapped_key = None;
                    Ok(())
                }
            }
        })
    }

    /// The directory the keyring lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The label stored in the file (the demo keyring's says DEMO).
    pub fn label(&self) -> Option<&str> {
        self.file.label.as_deref()
    }

    /// The version new values are encrypted under.
    pub fn active_version(&self) -> u32 {
        self.active
    }

    /// Every version with its state, ascending.
    pub fn versions(&self) -> impl Iterator<Item = VersionInfo> + '_ {
        self.file.versions.iter().map(|v| VersionInfo {
            version: v.version,
            state: v.state,
            created_unix: v.created_unix,
            destroyed_unix: v.destroyed_unix,
        })
    }

    /// Builds the cipher of one protected column: derives its keys under
    /// every live version once, so the value path never runs HKDF or a key
    /// schedule. `column` is the full name `schema.table.column`, exactly
    /// as it must be bound into every envelope of that column.
    pub fn column(&self, column: &str, ty: LogicalType, mode: Mode) -> Result<ColumnCipher> {
        let roots: Vec<RootSlot<'_>> = self
            .roots
            .iter()
            .map(|r| match r {
                Some(k) => RootSlot::Live(k),
                None => RootSlot::Destroyed,
            })
            .collect();
        ColumnCipher::new(column, ty, mode, self.active, &roots)
    }

    /// The HMAC key of the `pseudonym` mask for one column.
    ///
    /// Pseudonyms must stay stable across key rotations (analysts count and
    /// join on them), so the key is derived from the *oldest* live root-key
    /// version rather than the active one; it changes only when that
    /// version is destroyed.
    pub fn pseudonym_key(&self, column: &str) -> Result<ring::hmac::Key> {
        let root = self
            .roots
            .iter()
            .flatten()
            .next()
            .ok_or(CryptoError::Random)?;
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"pgveil pseudonym v1")
            .extract(root.expose());
        let info = [b"pseudonym\0".as_slice(), column.as_bytes()];
        let okm = prk
            .expand(&info, ring::hmac::HMAC_SHA256)
            .map_err(|_| CryptoError::Random)?;
        Ok(ring::hmac::Key::from(okm))
    }

    /// The Ed25519 key that signs approval tokens and audit checkpoints.
    pub fn signing_key(&self) -> &Ed25519KeyPair {
        &self.signing
    }

    /// The signing key's 32-byte public key, for verifiers.
    pub fn signing_public_key(&self) -> &[u8] {
        self.signing.public_key().as_ref()
    }
}

/// Creates the keyring directory readable by its owner only.
fn create_dir_private(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(source) => Err(CryptoError::Io {
            action: "create keyring directory",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests;
