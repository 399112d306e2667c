//! A 32-byte secret that is wiped when dropped and never printed.
//!
//! Root keys, the master key and the signing seed live in this wrapper so
//! they do not linger in freed memory and cannot leak through `Debug`
//! output into a log line.

use std::fmt;

/// 32 bytes of key material.
#[derive(Clone)]
pub(crate) struct Secret32([u8; 32]);

impl Secret32 {
    /// Wraps key bytes (the caller's copy should be wiped by the caller).
    pub(crate) fn new(bytes: [u8; 32]) -> Self {
        Secret32(bytes)
    }

    /// Fresh random key material from the operating system.
    pub(crate) fn random(rng: &dyn ring::rand::SecureRandom) -> Option<Self> {
        let mut s = Secret32([0; 32]);
        rng.fill(&mut s.0).ok()?;
        Some(s)
    }

    /// The key bytes.
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key bytes, for filling in place (e.g. from HKDF).
    pub(crate) fn expose_mut(&mut self) -> &mut [u8; 32] {
        &mut self.0
    }
}

/// Overwrites `buf` with zeros in a way the optimizer may not remove.
pub(crate) fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to a u8.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

impl Drop for Secret32 {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret32(..)")
    }
}
