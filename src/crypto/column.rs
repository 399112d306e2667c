//! Per-column ciphers: the hot path of field encryption.
//!
//! A [`ColumnCipher`] is built once per protected column (by
//! [`Keyring::column`](super::Keyring::column)) and holds, for every live
//! key version, the AES-256-GCM key schedule, the AES-256 key schedule and
//! CMAC subkeys of the searchable-mode nonce PRF and the precomputed AAD.
//! Encrypting or decrypting a value then derives nothing, builds no key
//! schedule and allocates nothing beyond the caller's output buffer growing.
//!
//! Keys: HKDF-SHA256 with salt `"pgveil column keys v1"` over the root key
//! of the version; info `"pgveil enc\0" ‖ column` for the AEAD key and
//! `"pgveil prf-cmac\0" ‖ column` for the 32-byte CMAC key of the nonce PRF.

use std::sync::Arc;

use aes::cipher::{
    consts::U16, generic_array::GenericArray, BlockBackend, BlockClosure, BlockEncrypt,
    BlockSizeUser, KeyInit,
};
use aes::Aes256Enc;
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

/// The searchable-mode nonce PRF: AES-256-CMAC (RFC 4493, NIST SP
/// 800-38B) over the `aes` crate's encrypt-only key schedule.
///
/// Written out here rather than taken from the `cmac` crate because that
/// crate recomputes the subkey L = AES_K(0) in every `finalize` and needs
/// its whole state cloned per value; here the key schedule and the subkeys
/// K1, K2 are computed once and a value costs exactly ⌈len/16⌉ (at least
/// one) AES block encryptions with no copy of the key schedule. Unit tests
/// check it against the NIST vectors and against the `cmac` crate on every
/// length from 0 to 80 bytes; `tests/crypto_vectors.rs` recomputes the
/// nonces with the `cmac` crate.
struct NoncePrf {
    cipher: Aes256Enc,
    k1: [u8; 16],
    k2: [u8; 16],
}

/// Doubling in GF(2^128) (RFC 4493 subkey generation), in constant time.
fn dbl(b: &[u8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for i in 0..16 {
        let next = if i < 15 { b[i + 1] >> 7 } else { 0 };
        out[i] = (b[i] << 1) | next;
    }
    out[15] ^= 0u8.wrapping_sub(b[0] >> 7) & 0x87;
    out
}

fn xor_into(acc: &mut [u8; 16], x: &[u8]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a ^= b;
    }
}

impl NoncePrf {
    fn new(key: &[u8; 32]) -> NoncePrf {
        let cipher = Aes256Enc::new(GenericArray::from_slice(key));
        let mut l = GenericArray::<u8, U16>::default();
        cipher.encrypt_block(&mut l);
        let mut l16 = [0u8; 16];
        l16.copy_from_slice(&l);
        let k1 = dbl(&l16);
        let k2 = dbl(&k1);
        super::secret::wipe(&mut l16);
        NoncePrf { cipher, k1, k2 }
    }

    /// AES-256-CMAC of `msg`.
    fn tag(&self, msg: &[u8]) -> [u8; 16] {
        struct Run<'a> {
            msg: &'a [u8],
            k1: &'a [u8; 16],
            k2: &'a [u8; 16],
            out: &'a mut [u8; 16],
        }
        impl BlockSizeUser for Run<'_> {
            type BlockSize = U16;
        }
        impl BlockClosure for Run<'_> {
            #[inline(always)]
            fn call<B: BlockBackend<BlockSize = U16>>(self, backend: &mut B) {
                // Split off the last block: complete (xor K1) or padded
                // with 0x80 0x00… (xor K2); an empty message is one padded
                // block.
                let rem = self.msg.len() % 16;
                let last_len = if rem == 0 && !self.msg.is_empty() {
                    16
                } else {
                    rem
                };
                let (full, last) = self.msg.split_at(self.msg.len() - last_len);
                let mut x = GenericArray::<u8, U16>::default();
                for block in full.chunks_exact(16) {
                    for (a, b) in x.iter_mut().zip(block) {
                        *a ^= b;
                    }
                    backend.proc_block((&mut x).into());
                }
                let mut m = [0u8; 16];
                m[..last_len].copy_from_slice(last);
                if last_len == 16 {
                    xor_into(&mut m, self.k1);
                } else {
                    m[last_len] = 0x80;
                    xor_into(&mut m, self.k2);
                }
                for (a, b) in x.iter_mut().zip(m) {
                    *a ^= b;
                }
                backend.proc_block((&mut x).into());
                self.out.copy_from_slice(&x);
            }
        }
        let mut out = [0u8; 16];
        self.cipher.encrypt_with_backend(Run {
            msg,
            k1: &self.k1,
            k2: &self.k2,
            out: &mut out,
        });
        out
    }
}

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
    /// AES-256-CMAC with the key schedule and subkeys already expanded.
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
        let prf = NoncePrf::new(prf_key.expose());
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
        let tag = self.prf.tag(canonical);
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
    use cmac::{Cmac, Mac};

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// NIST SP 800-38B, appendix D.3 (AES-256 CMAC examples 1 to 4).
    #[test]
    fn nonce_prf_is_aes256_cmac() {
        let key: [u8; 32] =
            unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
                .try_into()
                .expect("32");
        let msg = unhex(concat!(
            "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51",
            "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
        ));
        let prf = NoncePrf::new(&key);
        for (len, want) in [
            (0, "028962f61b7bf89efc6b551f4667d983"),
            (16, "28a7023f452e8f82bd4bf28d8c37c35c"),
            (40, "aaf3d8f1de5640c232f5b169b9c911e6"),
            (64, "e1992190549f6ed5696a2c056c315410"),
        ] {
            assert_eq!(prf.tag(&msg[..len]).to_vec(), unhex(want), "{len}");
        }
    }

    /// The same as the `cmac` crate's AES-256-CMAC on every length around
    /// the block boundaries, under a few keys (including subkeys whose
    /// doubling carries).
    #[test]
    fn nonce_prf_matches_cmac_crate() {
        let msg: Vec<u8> = (0..80u32).map(|i| (i * 37 + 11) as u8).collect();
        for seed in 0u8..16 {
            let key: [u8; 32] =
                std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8));
            let prf = NoncePrf::new(&key);
            for len in 0..=msg.len() {
                let mut mac = <Cmac<aes::Aes256> as Mac>::new_from_slice(&key).expect("key");
                mac.update(&msg[..len]);
                assert_eq!(
                    prf.tag(&msg[..len]).to_vec(),
                    mac.finalize().into_bytes().to_vec(),
                    "seed {seed} len {len}"
                );
            }
        }
    }

    #[test]
    fn dbl_matches_rfc4493_subkeys() {
        // RFC 4493 section 4 (AES-128 key, but dbl is the same): L, K1, K2.
        let l: [u8; 16] = unhex("7df76b0c1ab899b33e42f047b91b546f")
            .try_into()
            .expect("16");
        let k1 = dbl(&l);
        assert_eq!(k1.to_vec(), unhex("fbeed618357133667c85e08f7236a8de"));
        assert_eq!(dbl(&k1).to_vec(), unhex("f7ddac306ae266ccf90bc11ee46d513b"));
    }

    /// The searchable nonce is the first 12 bytes of the CMAC tag, a
    /// function of the value alone.
    #[test]
    fn prf_nonce_is_truncated_cmac() {
        let root = Secret32::new([5; 32]);
        let keys = VersionKeys::derive(&root, 1, "public.guests.phone").expect("derive");
        let a = keys.prf_nonce(b"+86 138 0013 8000");
        let b = keys.prf_nonce(b"other");
        assert_eq!(keys.prf_nonce(b"+86 138 0013 8000"), a);
        assert_ne!(a, b);
        assert_eq!(&keys.prf.tag(b"other")[..NONCE_LEN], &b[..]);
    }
}
