//! Random nonces for randomized mode, fast enough for the hot path.
//!
//! Asking the kernel for 12 bytes per value (one `getrandom` syscall) costs
//! more than the AES-GCM seal of a short value. Each thread therefore keeps
//! a buffer of 4 KiB from the operating system's CSPRNG (`ring`'s
//! `SystemRandom`) and hands out 12 bytes at a time, each byte used once;
//! this is as random as asking per call.
//!
//! Caveat: the buffer is per thread and is not wiped on `fork()`. pgveil
//! never forks a process that goes on encrypting; code that does must not
//! encrypt in the child before refilling (see [`discard_buffered`]).

use std::cell::RefCell;

use ring::aead::NONCE_LEN;
use ring::rand::{SecureRandom, SystemRandom};

const BUF_LEN: usize = 4096 - 4096 % NONCE_LEN;

struct Pool {
    buf: [u8; BUF_LEN],
    pos: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool { buf: [0; BUF_LEN], pos: BUF_LEN })
    };
}

/// Returns a fresh random 96-bit nonce, or `None` if the operating
/// system's random source failed (the caller refuses to encrypt).
pub(crate) fn random_nonce() -> Option<[u8; NONCE_LEN]> {
    POOL.with(|p| {
        let mut p = p.try_borrow_mut().ok()?;
        if p.pos + NONCE_LEN > BUF_LEN {
            SystemRandom::new().fill(&mut p.buf).ok()?;
            p.pos = 0;
        }
        let mut n = [0u8; NONCE_LEN];
        let pos = p.pos;
        n.copy_from_slice(&p.buf[pos..pos + NONCE_LEN]);
        // Erase what was handed out so it can never be handed out twice.
        p.buf[pos..pos + NONCE_LEN].fill(0);
        p.pos += NONCE_LEN;
        Some(n)
    })
}

/// Throws away this thread's buffered random bytes, e.g. in a child
/// process after `fork()`, so the next nonce comes fresh from the kernel.
pub fn discard_buffered() {
    POOL.with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            p.buf.fill(0);
            p.pos = BUF_LEN;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn nonces_do_not_repeat_across_refills() {
        let mut seen = HashSet::new();
        for _ in 0..3 * (BUF_LEN / NONCE_LEN) {
            assert!(seen.insert(random_nonce().expect("rng")));
        }
        discard_buffered();
        assert!(seen.insert(random_nonce().expect("rng")));
    }
}
