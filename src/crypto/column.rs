//! Per-column ciphers: the hot path of field encryption.
//!
//! A [`ColumnCipher`] is built once per protected column (by
//! [`Keyring::column`](super::Keyring::column)) and holds, for every live
//! key version, the AES-256-GCM key schedule and AAD of randomized mode and
//! the AES-256-GCM-SIV keys of searchable mode (message keys derived and
//! AAD absorbed, [`SivKey`]). Encrypting or decrypting a value then derives
//! nothing, builds no key schedule and allocates nothing beyond the
//! caller's output buffer growing.
//!
//! Keys: HKDF-SHA256 with salt `"pgveil column keys v1"` over the root key
//! of the version; info `"pgveil enc\0" ‖ column` for the AES-256-GCM key
//! and `"pgveil siv\0" ‖ column` for the AES-256-GCM-SIV key-generating
//! key, used with the fixed all-zero nonce [`SIV_NONCE`].

use std::sync::Arc;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;

use super::buf::OutBuf;
use super::envelope::{self, Header, FORMAT_V1, PREFIX_LEN, TAG_LEN};
use super::error::{CryptoError, Result};
use super::nonce;
use super::secret::Secret32;
use super::siv::{self, SivKey};
use super::types::{Format, LogicalType, Mode};
use super::value;

const HKDF_SALT: &[u8] = b"pgveil column keys v1";
const INFO_ENC: &[u8] = b"pgveil enc\0";
/// Purpose label of the searchable-mode key. It names the construction:
/// the keys of the retired pre-release rules (`"pgveil prf\0"`, HMAC nonce;
/// `"pgveil prf-cmac\0"`, CMAC nonce) are never derived again.
const INFO_SIV: &[u8] = b"pgveil siv\0";

/// The AES-GCM-SIV nonce of searchable mode, the same for every value.
///
/// Determinism is the point of searchable mode, and the key-generating key
/// is already unique per column and key version (HKDF over both), so a
/// per-column nonce would add nothing; all zeros is simplest to recompute
/// independently (`tests/crypto_vectors.rs`). With a fixed nonce the RFC
/// 8452 message keys are constants, which is what lets [`SivKey`] derive
/// them once.
pub(crate) const SIV_NONCE: [u8; siv::NONCE_LEN] = [0; siv::NONCE_LEN];

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
    /// AES-256-GCM, randomized mode.
    gcm: LessSafeKey,
    /// AAD of randomized envelopes.
    gcm_aad: Vec<u8>,
    /// AES-256-GCM-SIV under [`SIV_NONCE`] with the searchable AAD
    /// absorbed, searchable mode.
    siv: SivKey,
}

impl VersionKeys {
    fn derive(root: &Secret32, version: u32, column: &str) -> Result<VersionKeys> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(root.expose());
        let enc_info = [INFO_ENC, column.as_bytes()];
        let siv_info = [INFO_SIV, column.as_bytes()];
        let enc = prk
            .expand(&enc_info, &AES_256_GCM)
            .map_err(|_| CryptoError::Random)?;
        let mut siv_key = Secret32::new([0u8; 32]);
        prk.expand(&siv_info, Len32)
            .and_then(|okm| okm.fill(siv_key.expose_mut()))
            .map_err(|_| CryptoError::Random)?;
        // The AAD is at most 6 + 1024 bytes (column names are checked), far
        // below RFC 8452's limit, so `None` cannot happen; mapped anyway.
        let siv = SivKey::new(
            siv_key.expose(),
            &SIV_NONCE,
            &envelope::aad(Mode::Searchable, version, column),
        )
        .ok_or(CryptoError::Random)?;
        Ok(VersionKeys {
            version,
            gcm: LessSafeKey::new(UnboundKey::from(enc)),
            gcm_aad: envelope::aad(Mode::Randomized, version, column),
            siv,
        })
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
        if self.mode == Mode::Randomized {
            out.extend_from_slice(&[0u8; NONCE_LEN]);
        }
        if let Err(reason) = value::canonicalize(self.ty, format, value, out) {
            out.truncate(start);
            return Err(self.invalid(reason));
        }
        self.seal_at(keys, self.mode, out, start)
    }

    /// Seals the canonical value that follows the header of `mode` at
    /// `out[start..]` (the header is already written; a randomized nonce is
    /// filled in here) and appends the tag. On error `out` is truncated to
    /// `start`.
    fn seal_at<B: OutBuf + ?Sized>(
        &self,
        keys: &VersionKeys,
        mode: Mode,
        out: &mut B,
        start: usize,
    ) -> Result<()> {
        let body = start + envelope::header_len(mode);
        let buf = out.as_mut_slice();
        let tag = match mode {
            Mode::Randomized => {
                let Some(nonce) = nonce::random_nonce() else {
                    out.truncate(start);
                    return Err(CryptoError::Random);
                };
                buf[start + PREFIX_LEN..body].copy_from_slice(&nonce);
                let sealed = keys.gcm.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&keys.gcm_aad),
                    &mut buf[body..],
                );
                match sealed {
                    Ok(tag) => {
                        let mut t = [0u8; TAG_LEN];
                        t.copy_from_slice(tag.as_ref());
                        t
                    }
                    // ring refuses only inputs longer than GCM allows.
                    Err(_) => {
                        out.truncate(start);
                        return Err(self.invalid("it is too long to encrypt"));
                    }
                }
            }
            Mode::Searchable => match keys.siv.seal_in_place(&mut buf[body..]) {
                Some(tag) => tag,
                None => {
                    out.truncate(start);
                    return Err(self.invalid("it is too long to encrypt"));
                }
            },
        };
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Key versions that can still decrypt (and so must still be searched):
    /// one in steady state, more between a rotation and `destroy`.
    pub fn live_versions(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Live(_)))
            .count()
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
            let mut env =
                Vec::with_capacity(canonical.len() + envelope::overhead(Mode::Searchable));
            env.extend_from_slice(&envelope::aad_header(Mode::Searchable, keys.version));
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
        let body = envelope::header_len(mode);
        let Some(ct_len) = envelope.len().checked_sub(body + TAG_LEN) else {
            return Err(CryptoError::Truncated {
                column: self.column.clone(),
            });
        };
        let start = out.len();
        let prefix = value::render_prefix(self.ty, format);
        out.resize(start + prefix, 0);
        let opened = match mode {
            Mode::Randomized => {
                out.extend_from_slice(&envelope[body..]);
                Nonce::try_assume_unique_for_key(&envelope[PREFIX_LEN..body])
                    .ok()
                    .and_then(|nonce| {
                        keys.gcm
                            .open_in_place(
                                nonce,
                                Aad::from(&keys.gcm_aad),
                                &mut out.as_mut_slice()[start + prefix..],
                            )
                            .ok()
                            .map(|pt| pt.len())
                    })
            }
            Mode::Searchable => {
                let (ct, tag) = envelope[body..].split_at(ct_len);
                out.extend_from_slice(ct);
                <&[u8; TAG_LEN]>::try_from(tag).ok().and_then(|tag| {
                    keys.siv
                        .open_in_place(&mut out.as_mut_slice()[start + prefix..], tag)
                        .then_some(ct_len)
                })
            }
        };
        let Some(pt_len) = opened else {
            // Leave no unauthenticated bytes behind in the caller's buffer.
            out.as_mut_slice()[start..].fill(0);
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

    /// The searchable envelope is RFC 8452 AES-256-GCM-SIV under the HKDF
    /// key with the all-zero nonce and the documented AAD, recomputed here
    /// with the `aes-gcm-siv` crate (which derives the message keys itself).
    #[test]
    fn searchable_is_aes_256_gcm_siv() {
        use aes_gcm_siv::aead::{AeadInOut, KeyInit};
        let root = Secret32::new([5; 32]);
        let column = "public.guests.phone";
        let c = ColumnCipher::new(
            column,
            LogicalType::Text,
            Mode::Searchable,
            1,
            &[RootSlot::Live(&root)],
        )
        .expect("cipher");
        let mut env = Vec::new();
        c.encrypt(b"+86 138 0013 8000", Format::Text, &mut env)
            .expect("encrypt");

        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(root.expose());
        let mut kgk = [0u8; 32];
        prk.expand(&[&b"pgveil siv\0"[..], column.as_bytes()], Len32)
            .and_then(|okm| okm.fill(&mut kgk))
            .expect("hkdf");
        let reference = aes_gcm_siv::Aes256GcmSiv::new(&kgk.into());
        let aad = [&[1u8, 3, 0, 0, 0, 1][..], column.as_bytes()].concat();
        let mut want = b"+86 138 0013 8000".to_vec();
        let tag = reference
            .encrypt_inout_detached(
                &aes_gcm_siv::Nonce::default(),
                &aad,
                want.as_mut_slice().into(),
            )
            .expect("seal");
        let want = [&aad[..6], &want[..], &tag[..]].concat();
        assert_eq!(env, want);
    }
}
