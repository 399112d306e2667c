//! Per-column ciphers: the hot path of field encryption.
//!
//! A [`ColumnCipher`] is built once per protected column (by
//! [`Keyring::column`](super::Keyring::column)) and holds, for every live
//! key version, the AES-256-GCM key schedule, the initialized AES-256-CMAC
//! state of the searchable-mode nonce PRF and the precomputed AAD.
//! Encrypting or decrypting a value then derives nothing, builds no key
//! schedule and allocates nothing beyond the caller's output buffer growing.
//!
//! Keys: HKDF-SHA256 with salt `"pgveil column keys v1"` over the root key
//! of the version; info `"pgveil enc\0" ‖ column` for the AEAD key and
//! `"pgveil prf-cmac\0" ‖ column` for the 32-byte CMAC key of the nonce PRF.

use std::sync::Arc;

use aes::Aes256Enc;
use cmac::{Cmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;

use super::buf::OutBuf;
use super::envelope::{self, Header, FORMAT_V1, HEADER_LEN, OVERHEAD};
use super::error::{CryptoError, Result};
use super::nonce;
use super::secret::Secret32;
use super::types::{Format, LogicalType, Mode};
use super::value;

const HKDF_SALT: &[u8] = b"pgveil column keys v1";
const INFO_ENC: &[u8] = b"pgveil enc\0";
/// Purpose label of the nonce-PRF key. It names the algorithm: the key of
/// the earlier HMAC-SHA256 rule (`"pgveil prf\0"`) is never reused for CMAC.
const INFO_PRF: &[u8] = b"pgveil prf-cmac\0";

/// The searchable-mode nonce PRF: AES-256-CMAC (RFC 4493). CMAC only ever
/// runs the block cipher forwards, so the encrypt-only key schedule
/// suffices (same output as `Cmac<Aes256>`, half the state to clone).
type NoncePrf = Cmac<Aes256Enc>;

/// HKDF output length for keys that are not a ring algorithm's.
struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// Keys of one column under one root-key version.
struct VersionKeys {
    version: u32,
    aead: LessSafeKey,
    /// CMAC state with the key schedule already expanded; cloned (never
    /// rebuilt) for each value.
    prf: NoncePrf,
    /// AAD for randomized and searchable envelopes, in that order.
    aad: [Vec<u8>; 2],
}

impl VersionKeys {
    fn derive(root: &Secret32, version: u32, column: &str) -> Result<VersionKeys> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(root.expose());
        let enc_info = [INFO_ENC, column.as_bytes()];
        let prf_info = [INFO_PRF, column.as_bytes()];
        let enc = prk
            .expand(&enc_info, &AES_256_GCM)
            .map_err(|_| CryptoError::Random)?;
        let mut prf_key = Secret32::new([0u8; 32]);
        prk.expand(&prf_info, Len32)
            .and_then(|okm| okm.fill(prf_key.expose_mut()))
            .map_err(|_| CryptoError::Random)?;
        let prf = NoncePrf::new_from_slice(prf_key.expose()).map_err(|_| CryptoError::Random)?;
        Ok(VersionKeys {
            version,
            aead: LessSafeKey::new(UnboundKey::from(enc)),
            prf,
            aad: [
                envelope::aad(Mode::Randomized, version, column),
                envelope::aad(Mode::Searchable, version, column),
            ],
        })
    }

    fn aad(&self, mode: Mode) -> &[u8] {
        match mode {
            Mode::Randomized => &self.aad[0],
            Mode::Searchable => &self.aad[1],
        }
    }

    /// The searchable-mode nonce: AES-256-CMAC(prf key, canonical value)
    /// truncated to 96 bits.
    fn prf_nonce(&self, canonical: &[u8]) -> [u8; NONCE_LEN] {
        let mut mac = self.prf.clone();
        mac.update(canonical);
        let tag = mac.finalize().into_bytes();
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&tag[..NONCE_LEN]);
        n
    }
}

/// What the cipher knows about one key version.
enum Slot {
    Live(Box<VersionKeys>),
    Destroyed,
}

/// Encrypts and decrypts the values of one protected column.
///
/// Obtain it once per column from
/// [`Keyring::column`](super::Keyring::column) and share it (it is
/// `Send + Sync`; wrap it in an `Arc`). Rebuild it after the keyring
/// changes (rotation, destruction).
pub struct ColumnCipher {
    column: Arc<str>,
    ty: LogicalType,
    mode: Mode,
    active: u32,
    /// Index `v - 1` holds version `v`.
    slots: Vec<Slot>,
}

impl std::fmt::Debug for ColumnCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnCipher")
            .field("column", &self.column)
            .field("ty", &self.ty)
            .field("mode", &self.mode)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// A root key version as the keyring hands it to [`ColumnCipher::new`].
pub(crate) enum RootSlot<'a> {
    Live(&'a Secret32),
    Destroyed,
}

impl ColumnCipher {
    /// Derives the keys of `column` for every version in `roots` (index
    /// `v - 1` is version `v`).
    pub(crate) fn new(
        column: &str,
        ty: LogicalType,
        mode: Mode,
        active: u32,
        roots: &[RootSlot<'_>],
    ) -> Result<ColumnCipher> {
        check_column_name(column)?;
        let mut slots = Vec::with_capacity(roots.len());
        for (i, r) in roots.iter().enumerate() {
            let version = u32::try_from(i + 1).map_err(|_| CryptoError::VersionsExhausted)?;
            slots.push(match r {
                RootSlot::Live(root) => {
                    Slot::Live(Box::new(VersionKeys::derive(root, version, column)?))
                }
                RootSlot::Destroyed => Slot::Destroyed,
            });
        }
        Ok(ColumnCipher {
            column: Arc::from(column),
            ty,
            mode,
            active,
            slots,
        })
    }

    /// The column's full name (`schema.table.column`), as bound in the AAD.
    pub fn column(&self) -> &str {
        &self.column
    }

    /// The column's logical type.
    pub fn logical_type(&self) -> LogicalType {
        self.ty
    }

    /// The mode new values are written in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The key version new values are written under.
    pub fn active_version(&self) -> u32 {
        self.active
    }

    fn slot(&self, version: u32) -> Result<&VersionKeys> {
        let idx = (version as usize).wrapping_sub(1);
        match self.slots.get(idx) {
            Some(Slot::Live(k)) => Ok(k),
            Some(Slot::Destroyed) => Err(CryptoError::DestroyedKeyVersion {
                column: self.column.clone(),
                version,
            }),
            None => Err(CryptoError::UnknownKeyVersion {
                column: self.column.clone(),
                version,
            }),
        }
    }

    fn invalid(&self, reason: &'static str) -> CryptoError {
        CryptoError::InvalidValue {
            column: self.column.clone(),
            ty: self.ty,
            reason,
        }
    }

    /// Encrypts one value (PostgreSQL `format` wire bytes of the column's
    /// logical type) under the active key version in the column's mode, and
    /// appends the envelope to `out`.
    ///
    /// On error `out` is left as it was. An invalid value is
    /// [`CryptoError::InvalidValue`] (22P02), naming the column, never the
    /// value.
    pub fn encrypt<B: OutBuf + ?Sized>(
        &self,
        value: &[u8],
        format: Format,
        out: &mut B,
    ) -> Result<()> {
        let keys = self.slot(self.active)?;
        let start = out.len();
        out.extend_from_slice(&envelope::aad_header(self.mode, self.active));
        out.extend_from_slice(&[0u8; NONCE_LEN]);
        if let Err(reason) = value::canonicalize(self.ty, format, value, out) {
            out.truncate(start);
            return Err(self.invalid(reason));
        }
        self.seal_at(keys, self.mode, out, start)
    }

    /// Seals the canonical value at `out[start + HEADER_LEN..]`, whose
    /// header is already written (nonce bytes are filled in here).
    fn seal_at<B: OutBuf + ?Sized>(
        &self,
        keys: &VersionKeys,
        mode: Mode,
        out: &mut B,
        start: usize,
    ) -> Result<()> {
        let buf = out.as_mut_slice();
        let nonce = match mode {
            Mode::Randomized => nonce::random_nonce(),
            Mode::Searchable => Some(keys.prf_nonce(&buf[start + HEADER_LEN..])),
        };
        let Some(nonce) = nonce else {
            out.truncate(start);
            return Err(CryptoError::Random);
        };
        buf[start + 6..start + HEADER_LEN].copy_from_slice(&nonce);
        let sealed = keys.aead.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(keys.aad(mode)),
            &mut buf[start + HEADER_LEN..],
        );
        match sealed {
            Ok(tag) => {
                out.extend_from_slice(tag.as_ref());
                Ok(())
            }
            Err(_) => {
                out.truncate(start);
                Err(CryptoError::Random)
            }
        }
    }

    /// The searchable envelopes of one value under *every* live key
    /// version, newest first, for `WHERE col IN (…)` after a rotation:
    /// rows written under older versions still match.
    ///
    /// Refused with [`CryptoError::NotSearchable`] (0A000) on a randomized
    /// column, whose envelopes cannot be compared.
    pub fn search_envelopes(&self, value: &[u8], format: Format) -> Result<Vec<(u32, Vec<u8>)>> {
        if self.mode != Mode::Searchable {
            return Err(CryptoError::NotSearchable {
                column: self.column.clone(),
            });
        }
        let mut canonical = Vec::with_capacity(value.len() + 8);
        value::canonicalize(self.ty, format, value, &mut canonical).map_err(|r| self.invalid(r))?;
        let mut all = Vec::new();
        for slot in self.slots.iter().rev() {
            let Slot::Live(keys) = slot else { continue };
            let mut env = Vec::with_capacity(canonical.len() + OVERHEAD);
            env.extend_from_slice(&envelope::aad_header(Mode::Searchable, keys.version));
            env.extend_from_slice(&[0u8; NONCE_LEN]);
            env.extend_from_slice(&canonical);
            self.seal_at(keys, Mode::Searchable, &mut env, 0)?;
            all.push((keys.version, env));
        }
        Ok(all)
    }

    /// Decrypts one envelope read from the column and appends the value to
    /// `out` in wire format `format`, exactly as PostgreSQL would send it
    /// for the logical type.
    ///
    /// Envelopes of either mode are accepted (a column may have changed
    /// mode). Any envelope that is truncated, altered, from another column
    /// or under a destroyed or unknown key version is an error with SQLSTATE
    /// XX001; `out` is then left as it was. Never panics, whatever the input.
    pub fn decrypt<B: OutBuf + ?Sized>(
        &self,
        envelope: &[u8],
        format: Format,
        out: &mut B,
    ) -> Result<()> {
        let Some(h) = Header::parse(envelope) else {
            return Err(CryptoError::Truncated {
                column: self.column.clone(),
            });
        };
        if h.format != FORMAT_V1 {
            return Err(CryptoError::UnknownFormat {
                column: self.column.clone(),
                format: h.format,
            });
        }
        let Some(mode) = Mode::from_byte(h.mode) else {
            return Err(CryptoError::UnknownEnvelopeMode {
                column: self.column.clone(),
                mode: h.mode,
            });
        };
        let keys = self.slot(h.version)?;
        let nonce = Nonce::try_assume_unique_for_key(&envelope[6..HEADER_LEN]).map_err(|_| {
            CryptoError::Truncated {
                column: self.column.clone(),
            }
        })?;
        let start = out.len();
        let prefix = value::render_prefix(self.ty, format);
        out.resize(start + prefix, 0);
        out.extend_from_slice(&envelope[HEADER_LEN..]);
        let opened = keys
            .aead
            .open_in_place(
                nonce,
                Aad::from(keys.aad(mode)),
                &mut out.as_mut_slice()[start + prefix..],
            )
            .map(|pt| pt.len());
        let Ok(pt_len) = opened else {
            out.truncate(start);
            return Err(CryptoError::NotAuthentic {
                column: self.column.clone(),
                version: h.version,
            });
        };
        out.truncate(start + prefix + pt_len);
        if value::render_in_place(self.ty, format, out, start).is_err() {
            out.truncate(start);
            return Err(CryptoError::TypeMismatch {
                column: self.column.clone(),
                version: h.version,
                ty: self.ty,
            });
        }
        Ok(())
    }
}

/// A column name must be usable as HKDF info and in messages: non-empty,
/// printable, without NUL (the separator of the info string).
fn check_column_name(column: &str) -> Result<()> {
    let bad = |reason| {
        Err(CryptoError::InvalidColumnName {
            column: column.to_string(),
            reason,
        })
    };
    if column.is_empty() {
        return bad("it is empty");
    }
    if column.len() > 1024 {
        return bad("it is longer than 1024 bytes");
    }
    if column.chars().any(char::is_control) {
        return bad("it contains control characters");
    }
    if column.split('.').count() < 3 {
        return bad("it must be the full name schema.table.column");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// NIST SP 800-38B, appendix D.3 (AES-256 CMAC examples 1 to 4): the
    /// encrypt-only key schedule gives standard AES-256-CMAC.
    #[test]
    fn nonce_prf_is_aes256_cmac() {
        let key = unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
        let msg = unhex(concat!(
            "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51",
            "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
        ));
        let prf = NoncePrf::new_from_slice(&key).expect("key");
        for (len, want) in [
            (0, "028962f61b7bf89efc6b551f4667d983"),
            (16, "28a7023f452e8f82bd4bf28d8c37c35c"),
            (40, "aaf3d8f1de5640c232f5b169b9c911e6"),
            (64, "e1992190549f6ed5696a2c056c315410"),
        ] {
            // The shared state is cloned per value, so order does not matter.
            for _ in 0..2 {
                let mut mac = prf.clone();
                mac.update(&msg[..len]);
                assert_eq!(mac.finalize().into_bytes().to_vec(), unhex(want), "{len}");
            }
        }
    }

    /// The searchable nonce is the first 12 bytes of the CMAC tag, a
    /// function of the value alone (calls do not share state).
    #[test]
    fn prf_nonce_is_truncated_cmac_and_stateless() {
        let root = Secret32::new([5; 32]);
        let keys = VersionKeys::derive(&root, 1, "public.guests.phone").expect("derive");
        let a = keys.prf_nonce(b"+86 138 0013 8000");
        let b = keys.prf_nonce(b"other");
        assert_eq!(keys.prf_nonce(b"+86 138 0013 8000"), a);
        assert_ne!(a, b);
        let mut mac = keys.prf.clone();
        mac.update(b"other");
        assert_eq!(&mac.finalize().into_bytes()[..NONCE_LEN], &b[..]);
    }
}
