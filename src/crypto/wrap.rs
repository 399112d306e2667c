//! Wrapping other modules' 32-byte secrets under the master key, the same
//! way the keyring wraps root keys (AES-256-GCM, `aad` naming the role).
//!
//! The audit trail uses it for each run's first MAC key, so an auditor who
//! holds the master key can check every record's MAC.

use ring::rand::SystemRandom;

use super::error::Result;
use super::master::MasterKey;
use super::secret::Secret32;

/// Wraps `secret`; the result is base64 text.
pub fn wrap_secret(master: &MasterKey, aad: &[u8], secret: &[u8; 32]) -> Result<String> {
    master.wrap(aad, &Secret32::new(*secret), &SystemRandom::new())
}

/// Opens a secret wrapped by [`wrap_secret`]; `None` when it does not
/// authenticate (wrong master key, wrong `aad`, altered text).
pub fn unwrap_secret(master: &MasterKey, aad: &[u8], wrapped: &str) -> Option<[u8; 32]> {
    master.unwrap_key(aad, wrapped).map(|s| *s.expose())
}
