//! The cancel-key registry shared by all sessions.
//!
//! Each client gets a key minted by pgveil; the registry maps it to the
//! upstream backend's real key. A CancelRequest arrives on a new
//! connection, so this map is the only way to route it, and it is the only
//! state sessions share on the relay path (a lock-free `DashMap`).

use crate::proto::keydata::CancelKey;
use bytes::Bytes;
use dashmap::DashMap;
use ring::rand::{SecureRandom, SystemRandom};

/// Live sessions' cancel keys: pgveil's pid → (pgveil's secret, upstream key).
#[derive(Debug)]
pub struct CancelRegistry {
    keys: DashMap<i32, Entry>,
    rng: SystemRandom,
}

impl Default for CancelRegistry {
    fn default() -> Self {
        CancelRegistry {
            keys: DashMap::new(),
            rng: SystemRandom::new(),
        }
    }
}

/// Compares secrets in time independent of where they differ, so a prober
/// cannot guess a secret byte by byte from response timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the registry keeps per session.
#[derive(Debug)]
struct Entry {
    /// The secret pgveil gave the client.
    secret: Bytes,
    /// The server's key for the session's backend.
    upstream: CancelKey,
    /// The authenticated user, for operators' views of live sessions.
    user: String,
}

/// Removes a session's key from the registry when the session ends.
#[derive(Debug)]
pub struct Registration<'a> {
    registry: &'a CancelRegistry,
    pid: i32,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.keys.remove(&self.pid);
    }
}

impl CancelRegistry {
    /// Mints a key for a client whose upstream backend announced `upstream`.
    ///
    /// Returns the key to show the client and a guard that forgets it.
    /// Fails only if the system random source fails.
    pub fn register(
        &self,
        upstream: CancelKey,
        user: &str,
    ) -> Result<(CancelKey, Registration<'_>), ring::error::Unspecified> {
        let mut secret = [0u8; 4];
        self.rng.fill(&mut secret)?;
        loop {
            let mut pid = [0u8; 4];
            self.rng.fill(&mut pid)?;
            // Positive and non-zero, like a real process id.
            let pid = (i32::from_be_bytes(pid) & 0x7fff_ffff).max(1);
            if let dashmap::Entry::Vacant(slot) = self.keys.entry(pid) {
                let secret = Bytes::copy_from_slice(&secret);
                slot.insert(Entry {
                    secret: secret.clone(),
                    upstream,
                    user: user.to_owned(),
                });
                let key = CancelKey { pid, secret };
                return Ok((
                    key,
                    Registration {
                        registry: self,
                        pid,
                    },
                ));
            }
        }
    }

    /// The upstream key for a client's cancel request, if pid and secret match.
    pub fn lookup(&self, client: &CancelKey) -> Option<CancelKey> {
        let entry = self.keys.get(&client.pid)?;
        let e = entry.value();
        constant_time_eq(&e.secret, &client.secret).then(|| e.upstream.clone())
    }

    /// Authenticated users of the live sessions.
    pub fn users(&self) -> Vec<String> {
        self.keys.iter().map(|e| e.value().user.clone()).collect()
    }

    /// Number of live sessions with a key, for tests and metrics.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no session holds a key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_and_forgets() {
        let reg = CancelRegistry::default();
        let upstream = CancelKey {
            pid: 77,
            secret: Bytes::from_static(b"abcd"),
        };
        let (mine, guard) = reg.register(upstream.clone(), "alice").unwrap();
        assert_ne!(mine.secret, upstream.secret);
        assert_eq!(reg.lookup(&mine), Some(upstream));
        let wrong = CancelKey {
            pid: mine.pid,
            secret: Bytes::from_static(b"zzzz"),
        };
        assert_eq!(reg.lookup(&wrong), None);
        assert_eq!(reg.users(), ["alice"]);
        drop(guard);
        assert_eq!(reg.lookup(&mine), None);
        assert!(reg.is_empty());
    }
}
