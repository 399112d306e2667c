//! AES-256-GCM-SIV (RFC 8452) for searchable mode, with the per-nonce
//! keys derived once.
//!
//! RFC 8452 §4 derives two keys from the key-generating key and the nonce:
//! a 128-bit message-authentication key (for POLYVAL) and a 256-bit
//! message-encryption key (for AES). A general-purpose implementation does
//! this for every message, because the nonce normally changes per message:
//! six AES blocks plus an AES-256 key expansion, which alone costs three
//! times a whole AES-GCM seal of a phone number. pgveil's searchable mode
//! uses one fixed nonce per column and key version (so that a value always
//! gives the same envelope), so both derived keys are constants. [`SivKey`]
//! computes them once, expands the AES key schedule once, and also
//! absorbs the AAD into POLYVAL once, since pgveil's AAD is constant per
//! column, mode and key version too. A value then costs POLYVAL over its
//! blocks and one length block, one AES block for the tag, and AES-CTR
//! over its blocks. The output is byte for byte what RFC 8452 specifies;
//! the tests check it against RFC 8452 appendix C.2 and C.3 and against the
//! `aes-gcm-siv` crate on random keys, nonces, AAD and lengths.
//!
//! The building blocks are the RustCrypto `aes` (AES-NI / VAES detected at
//! run time), `polyval` and `ctr` crates; this module only wires them as
//! the RFC describes.

use aes::cipher::{
    array::Array, consts::U16, BlockCipherEncrypt, InnerIvInit, KeyInit, StreamCipherCore,
};
use aes::Aes256Enc;
use polyval::{universal_hash::UniversalHash, Polyval};
use subtle::ConstantTimeEq;

use super::secret::wipe;

/// Length of the authentication tag.
pub(crate) const TAG_LEN: usize = 16;
/// Length of an AES-GCM-SIV nonce.
pub(crate) const NONCE_LEN: usize = 12;
/// RFC 8452 §6: plaintexts and AAD are at most 2^36 bytes.
const MAX_LEN: u64 = 1 << 36;

type Block = Array<u8, U16>;
/// AES-CTR with a 32-bit little-endian counter in the first four bytes
/// that wraps around without touching the other twelve (RFC 8452 §4).
type Ctr32Le<'a> = ctr::CtrCore<&'a Aes256Enc, ctr::flavors::Ctr32LE>;

/// AES-256-GCM-SIV bound to one key-generating key, one nonce and one AAD.
pub(crate) struct SivKey {
    /// AES-256 schedule of the message-encryption key.
    enc: Aes256Enc,
    /// POLYVAL under the message-authentication key, with the padded AAD
    /// already absorbed; cloned (a few hundred bytes, no key derivation)
    /// for each value.
    after_aad: Polyval,
    /// Bit length of the AAD, for the length block.
    aad_bits: u64,
    nonce: [u8; NONCE_LEN],
}

impl std::fmt::Debug for SivKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SivKey(..)")
    }
}

impl SivKey {
    /// Derives the message-authentication and message-encryption keys of
    /// `nonce` under `key_generating_key` (RFC 8452 §4, AES-256) and
    /// absorbs `aad`. `None` when the AAD is longer than RFC 8452 allows.
    pub(crate) fn new(
        key_generating_key: &[u8; 32],
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
    ) -> Option<SivKey> {
        if aad.len() as u64 > MAX_LEN {
            return None;
        }
        let kgk = Aes256Enc::new(&Array::from(*key_generating_key));
        // Six blocks LE32(i) ‖ nonce, i = 0..5; the first 8 bytes of each
        // encrypted block are key material: 2 blocks for the
        // authentication key, 4 for the encryption key.
        let mut auth = [0u8; 16];
        let mut enc = [0u8; 32];
        let mut block = Block::default();
        let mut counter = 0u32;
        for key in [&mut auth[..], &mut enc[..]] {
            for half in key.chunks_mut(8) {
                block[..4].copy_from_slice(&counter.to_le_bytes());
                block[4..].copy_from_slice(nonce);
                kgk.encrypt_block(&mut block);
                half.copy_from_slice(&block[..8]);
                counter += 1;
            }
        }
        let mut after_aad = Polyval::new(&Array::from(auth));
        after_aad.update_padded(aad);
        let key = SivKey {
            enc: Aes256Enc::new(&Array::from(enc)),
            after_aad,
            aad_bits: aad.len() as u64 * 8,
            nonce: *nonce,
        };
        wipe(&mut auth);
        wipe(&mut enc);
        wipe(&mut block);
        Some(key)
    }

    /// The tag of `plaintext` (RFC 8452 §4): POLYVAL over the padded AAD,
    /// the padded plaintext and the length block, XOR the nonce, most
    /// significant bit of the last byte cleared, encrypted with AES.
    fn tag(&self, plaintext: &[u8]) -> Block {
        let mut polyval = self.after_aad.clone();
        polyval.update_padded(plaintext);
        let mut lengths = Block::default();
        lengths[..8].copy_from_slice(&self.aad_bits.to_le_bytes());
        lengths[8..].copy_from_slice(&(plaintext.len() as u64 * 8).to_le_bytes());
        polyval.update(&[lengths]);
        let mut s = polyval.finalize();
        for (a, n) in s.iter_mut().zip(self.nonce) {
            *a ^= n;
        }
        s[15] &= 0x7f;
        self.enc.encrypt_block(&mut s);
        s
    }

    /// XORs the AES-CTR keystream whose initial counter block is `tag`
    /// with the most significant bit of its last byte set into `buf`.
    fn ctr(&self, tag: &Block, buf: &mut [u8]) {
        let mut counter = *tag;
        counter[15] |= 0x80;
        Ctr32Le::inner_iv_init(&self.enc, &counter).apply_keystream_partial(buf.into());
    }

    /// Encrypts `buf` in place and returns the tag that follows the
    /// ciphertext. `None` (buffer untouched) when `buf` is longer than
    /// RFC 8452 allows (2^36 bytes).
    pub(crate) fn seal_in_place(&self, buf: &mut [u8]) -> Option<[u8; TAG_LEN]> {
        if buf.len() as u64 > MAX_LEN {
            return None;
        }
        let tag = self.tag(buf);
        self.ctr(&tag, buf);
        Some(tag.0)
    }

    /// Decrypts `buf` in place if `tag` authenticates it; returns whether
    /// it did. On failure `buf` is zeroed, so no unauthenticated plaintext
    /// is left in the caller's buffer.
    pub(crate) fn open_in_place(&self, buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        if buf.len() as u64 > MAX_LEN {
            buf.fill(0);
            return false;
        }
        let tag = Block::from(*tag);
        self.ctr(&tag, buf);
        let ok: bool = self.tag(buf).0[..].ct_eq(&tag.0[..]).into();
        if !ok {
            buf.fill(0);
        }
        ok
    }
}

#[cfg(test)]
mod tests;
