//! The master key: the one secret an operator provides.
//!
//! It only wraps (AES-256-GCM) the keyring's root keys and signing seed, so
//! the keyring directory can be backed up without exposing any key, and a
//! leaked keyring file is useless without the master key.
//!
//! Sources, in order: `[keyring] master_key_file` if configured, else the
//! environment variable `PGVEIL_MASTER_KEY`. A key file holds either exactly
//! 32 raw bytes, or the base64 text of 32 bytes (surrounding whitespace and
//! a trailing newline allowed); a file of exactly 32 bytes is read as raw.
//! The file must not be readable by group or others.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use super::config::KeyringConfig;
use super::error::{CryptoError, Result};
use super::secret::{wipe, Secret32};

/// Name of the environment variable holding the base64 master key.
pub const MASTER_KEY_ENV: &str = "PGVEIL_MASTER_KEY";

/// The demo master key (base64), the content of `keyring/demo-master.key`.
/// Public on purpose: it opens only the demo keyring in the repository.
const DEMO_MASTER_KEY_B64: &str = include_str!("../../keyring/demo-master.key");

/// The 32-byte key that wraps the keyring's keys.
#[derive(Clone, Debug)]
pub struct MasterKey {
    key: Secret32,
}

impl MasterKey {
    /// Uses the given bytes as master key (tests and tools that obtained
    /// the key by other means).
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey {
            key: Secret32::new(bytes),
        }
    }

    /// Decodes base64 text (standard alphabet, padding optional,
    /// surrounding whitespace ignored). `source_name` names where the text
    /// came from, for the error message.
    pub fn from_base64(text: &str, source_name: &str) -> Result<MasterKey> {
        let malformed = |reason| CryptoError::MasterKeyMalformed {
            source_name: source_name.to_string(),
            reason,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(malformed("it is empty"));
        }
        let mut decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trimmed.trim_end_matches('='))
            .map_err(|_| malformed("not valid base64"))?;
        let result = <[u8; 32]>::try_from(decoded.as_slice())
            .map(MasterKey::from_bytes)
            .map_err(|_| malformed("it must decode to exactly 32 bytes"));
        wipe(&mut decoded);
        result
    }

    /// Reads a key file, refusing one that group or others can read.
    pub fn from_file(path: &Path) -> Result<MasterKey> {
        let io = |source| CryptoError::Io {
            action: "read master key file",
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        // Check the opened file, not the path, so a swap in between is moot.
        let meta = file.metadata().map_err(io)?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(CryptoError::MasterKeyFilePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        if !meta.is_file() || meta.len() > 4096 {
            return Err(CryptoError::MasterKeyMalformed {
                source_name: path.display().to_string(),
                reason: "it must be a regular file of 32 raw bytes or base64 text",
            });
        }
        let mut buf = Vec::with_capacity(64);
        file.read_to_end(&mut buf).map_err(io)?;
        let result = if let Ok(raw) = <[u8; 32]>::try_from(buf.as_slice()) {
            Ok(MasterKey::from_bytes(raw))
        } else {
            match std::str::from_utf8(&buf) {
                Ok(text) => MasterKey::from_base64(text, &path.display().to_string()),
                Err(_) => Err(CryptoError::MasterKeyMalformed {
                    source_name: path.display().to_string(),
                    reason: "it is neither 32 raw bytes nor base64 text",
                }),
            }
        };
        wipe(&mut buf);
        result
    }

    /// Loads the master key as configured: `master_key_file` if set, else
    /// `PGVEIL_MASTER_KEY`. A startup error, never a panic, when neither
    /// gives a valid key.
    pub fn load(cfg: &KeyringConfig) -> Result<MasterKey> {
        let env = std::env::var(MASTER_KEY_ENV).ok();
        Self::from_sources(cfg, env.as_deref())
    }

    /// [`MasterKey::load`] with the environment value passed in, so tests
    /// do not depend on (or race over) the process environment.
    pub fn from_sources(cfg: &KeyringConfig, env_value: Option<&str>) -> Result<MasterKey> {
        match (&cfg.master_key_file, env_value) {
            (Some(path), _) => MasterKey::from_file(path),
            (None, Some(text)) => MasterKey::from_base64(text, MASTER_KEY_ENV),
            (None, None) => Err(CryptoError::MasterKeyMissing),
        }
    }

    /// The master key of the repository's demo keyring (`keyring/`).
    ///
    /// For the demo and tests only: git does not preserve the file's 0600
    /// mode, so [`MasterKey::from_file`] refuses the checked-out
    /// `keyring/demo-master.key`; this accessor avoids copying it around.
    /// It opens nothing but the demo keyring, whose keys are public.
    pub fn demo() -> MasterKey {
        // The file is part of the source tree and tested to decode; fall
        // back to a fixed pattern only to avoid a panic path.
        MasterKey::from_base64(DEMO_MASTER_KEY_B64, "demo key")
            .unwrap_or_else(|_| MasterKey::from_bytes([0x42; 32]))
    }

    fn aead(&self) -> Result<LessSafeKey> {
        UnboundKey::new(&AES_256_GCM, self.key.expose())
            .map(LessSafeKey::new)
            .map_err(|_| CryptoError::Random)
    }

    /// Wraps a 32-byte key: base64 of nonce ‖ ciphertext ‖ tag, with `aad`
    /// binding it to its role (e.g. the key version).
    pub(crate) fn wrap(&self, aad: &[u8], key: &Secret32, rng: &SystemRandom) -> Result<String> {
        let aead = self.aead()?;
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut buf = Vec::with_capacity(NONCE_LEN + 32 + 16);
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(key.expose());
        let tag = aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf[NONCE_LEN..],
            )
            .map_err(|_| CryptoError::Random)?;
        buf.extend_from_slice(tag.as_ref());
        Ok(base64::engine::general_purpose::STANDARD.encode(&buf))
    }

    /// Opens a key wrapped by [`MasterKey::wrap`]; `None` when it does not
    /// authenticate (wrong master key, wrong `aad`, altered text).
    pub(crate) fn unwrap_key(&self, aad: &[u8], wrapped: &str) -> Option<Secret32> {
        let aead = self.aead().ok()?;
        let mut buf = base64::engine::general_purpose::STANDARD
            .decode(wrapped.trim())
            .ok()?;
        if buf.len() != NONCE_LEN + 32 + 16 {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&buf[..NONCE_LEN]).ok()?;
        let result = aead
            .open_in_place(nonce, Aad::from(aad), &mut buf[NONCE_LEN..])
            .ok()
            .and_then(|pt| <[u8; 32]>::try_from(&pt[..]).ok())
            .map(Secret32::new);
        wipe(&mut buf);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_key(dir: &Path, name: &str, content: &[u8], mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        let mut f = std::fs::File::create(&p).expect("create");
        f.write_all(content).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    #[test]
    fn key_file_raw_and_base64() {
        let d = tempfile::tempdir().expect("tempdir");
        let raw = write_key(d.path(), "raw", &[7u8; 32], 0o600);
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let txt = write_key(d.path(), "txt", format!("{b64}\n").as_bytes(), 0o400);
        let a = MasterKey::from_file(&raw).expect("raw");
        let b = MasterKey::from_file(&txt).expect("b64");
        assert_eq!(a.key.expose(), b.key.expose());
    }

    #[test]
    fn key_file_readable_by_others_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let p = write_key(d.path(), "k", &[7u8; 32], mode);
            let err = MasterKey::from_file(&p).expect_err("must refuse");
            let msg = err.to_string();
            assert!(msg.contains(&format!("chmod 600 {}", p.display())), "{msg}");
            assert!(msg.starts_with("pgveil:"));
        }
    }

    #[test]
    fn malformed_keys_are_errors() {
        let d = tempfile::tempdir().expect("tempdir");
        for content in [
            &b""[..],
            b"short",
            b"not base64 at all!!!!",
            &[0xff; 31],
            &[1; 33],
        ] {
            let p = write_key(d.path(), "k", content, 0o600);
            assert!(matches!(
                MasterKey::from_file(&p),
                Err(CryptoError::MasterKeyMalformed { .. })
            ));
        }
        let missing = d.path().join("nope");
        assert!(matches!(
            MasterKey::from_file(&missing),
            Err(CryptoError::Io { .. })
        ));
        let cfg = KeyringConfig::default();
        assert!(matches!(
            MasterKey::from_sources(&cfg, None),
            Err(CryptoError::MasterKeyMissing)
        ));
        assert!(MasterKey::from_sources(&cfg, Some("AAAA")).is_err());
        let good = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert!(MasterKey::from_sources(&cfg, Some(&good)).is_ok());
    }

    #[test]
    fn demo_key_decodes() {
        assert!(MasterKey::from_base64(DEMO_MASTER_KEY_B64, "demo").is_ok());
    }

    #[test]
    fn wrap_binds_aad_and_key() {
        let rng = SystemRandom::new();
        let m = MasterKey::from_bytes([1; 32]);
        let k = Secret32::new([5; 32]);
        let w = m.wrap(b"v1", &k, &rng).expect("wrap");
        assert_eq!(m.unwrap_key(b"v1", &w).map(|s| *s.expose()), Some([5; 32]));
        assert!(m.unwrap_key(b"v2", &w).is_none());
        assert!(MasterKey::from_bytes([2; 32])
            .unwrap_key(b"v1", &w)
            .is_none());
        assert!(m.unwrap_key(b"v1", "garbage").is_none());
    }
}
