//! The envelope: the bytes stored in a protected `bytea` column.
//!
//! ```text
//! offset  size  field
//! 0       1     format version (1)
//! 1       1     mode (1 = randomized, 3 = searchable; 2 is retired)
//! 2       4     key version, u32 big-endian
//!
//! randomized (AES-256-GCM):
//! 6       12    random nonce
//! 18      n     ciphertext of the canonical value
//! 18+n    16    GCM tag
//!
//! searchable (AES-256-GCM-SIV, fixed nonce, so nothing stored for it):
//! 6       n     ciphertext of the canonical value
//! 6+n     16    GCM-SIV tag
//! ```
//!
//! AAD = bytes 0..6 of the header ‖ the column's full name, so editing the
//! header or moving the envelope to another column breaks the tag. The
//! nonce needs no AAD: it is an input of the AEAD already. The full
//! description is in `docs/FORMAT.md`.

use ring::aead::{MAX_TAG_LEN, NONCE_LEN};

use super::types::Mode;

/// The envelope format this code writes.
pub const FORMAT_V1: u8 = 1;
/// Bytes every envelope starts with: format, mode, key version. They are
/// also the start of the AAD.
pub const PREFIX_LEN: usize = 1 + 1 + 4;
/// Length of the tag at the end (GCM and GCM-SIV alike).
pub const TAG_LEN: usize = MAX_TAG_LEN;
/// The shortest possible envelope: a searchable empty value.
pub const MIN_LEN: usize = PREFIX_LEN + TAG_LEN;
/// Part of the header that goes into the AAD (format, mode, key version).
pub(crate) const AAD_HEADER_LEN: usize = PREFIX_LEN;

/// Bytes before the ciphertext in an envelope of `mode`.
pub const fn header_len(mode: Mode) -> usize {
    match mode {
        Mode::Randomized => PREFIX_LEN + NONCE_LEN,
        Mode::Searchable => PREFIX_LEN,
    }
}

/// Bytes an envelope of `mode` adds to the canonical value.
pub const fn overhead(mode: Mode) -> usize {
    header_len(mode) + TAG_LEN
}

/// The header fields of an envelope, as read (not yet authenticated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version byte.
    pub format: u8,
    /// Mode byte.
    pub mode: u8,
    /// Key version.
    pub version: u32,
}

impl Header {
    /// Reads the header of `envelope`; `None` when it is shorter than the
    /// shortest envelope ([`MIN_LEN`]). Nothing here is trusted until the
    /// tag verifies, and the length a mode needs is checked by the reader.
    pub fn parse(envelope: &[u8]) -> Option<Header> {
        if envelope.len() < MIN_LEN {
            return None;
        }
        Some(Header {
            format: envelope[0],
            mode: envelope[1],
            version: u32::from_be_bytes([envelope[2], envelope[3], envelope[4], envelope[5]]),
        })
    }
}

/// The six header bytes that start an envelope and its AAD.
pub(crate) fn aad_header(mode: Mode, version: u32) -> [u8; AAD_HEADER_LEN] {
    let v = version.to_be_bytes();
    [FORMAT_V1, mode.byte(), v[0], v[1], v[2], v[3]]
}

/// The AAD of an envelope: header bytes 0..6 ‖ column full name.
pub(crate) fn aad(mode: Mode, version: u32, column: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_HEADER_LEN + column.len());
    a.extend_from_slice(&aad_header(mode, version));
    a.extend_from_slice(column.as_bytes());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_constants() {
        assert_eq!(header_len(Mode::Randomized), 18);
        assert_eq!(overhead(Mode::Randomized), 34);
        assert_eq!(header_len(Mode::Searchable), 6);
        assert_eq!(overhead(Mode::Searchable), 22);
        assert_eq!(MIN_LEN, 22);
        assert_eq!(aad_header(Mode::Searchable, 0x01020304), [1, 3, 1, 2, 3, 4]);
        assert_eq!(
            aad(Mode::Randomized, 7, "s.t.c"),
            b"\x01\x01\0\0\0\x07s.t.c".to_vec()
        );
    }

    #[test]
    fn short_input_has_no_header() {
        assert_eq!(Header::parse(&[1; 21]), None);
        assert_eq!(
            Header::parse(&[1; 22]),
            Some(Header {
                format: 1,
                mode: 1,
                version: 0x01010101
            })
        );
    }
}
