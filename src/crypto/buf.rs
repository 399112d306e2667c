//! The output buffer abstraction of the value path.
//!
//! Encryption and decryption append into a buffer the caller owns — a
//! per-connection scratch `Vec<u8>`, or the `BytesMut` of the message being
//! built — so the only allocation on the value path is that buffer growing.
//! Both work in place: the ciphertext is sealed and opened where it lies.

use bytes::BytesMut;

/// A growable byte buffer the crypto core can append to and edit in place.
///
/// Implemented for `Vec<u8>` and `BytesMut`; every method has the meaning
/// of the method of the same name on `Vec<u8>`.
pub trait OutBuf {
    /// Current length in bytes.
    fn len(&self) -> usize;
    /// Whether the buffer is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends bytes at the end.
    fn extend_from_slice(&mut self, bytes: &[u8]);
    /// Appends one byte.
    fn push(&mut self, byte: u8) {
        self.extend_from_slice(&[byte]);
    }
    /// Grows (with `fill`) or shrinks to `new_len`.
    fn resize(&mut self, new_len: usize, fill: u8);
    /// Shrinks to `len` (no-op when already shorter).
    fn truncate(&mut self, len: usize);
    /// The whole buffer, mutable, for in-place sealing and rendering.
    fn as_mut_slice(&mut self) -> &mut [u8];
    /// The whole buffer.
    fn as_slice(&self) -> &[u8];
}

impl OutBuf for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Vec::extend_from_slice(self, bytes)
    }
    fn push(&mut self, byte: u8) {
        Vec::push(self, byte)
    }
    fn resize(&mut self, new_len: usize, fill: u8) {
        Vec::resize(self, new_len, fill)
    }
    fn truncate(&mut self, len: usize) {
        Vec::truncate(self, len)
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self
    }
    fn as_slice(&self) -> &[u8] {
        self
    }
}

impl OutBuf for BytesMut {
    fn len(&self) -> usize {
        BytesMut::len(self)
    }
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        BytesMut::extend_from_slice(self, bytes)
    }
    fn resize(&mut self, new_len: usize, fill: u8) {
        BytesMut::resize(self, new_len, fill)
    }
    fn truncate(&mut self, len: usize) {
        BytesMut::truncate(self, len)
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self
    }
    fn as_slice(&self) -> &[u8] {
        self
    }
}
