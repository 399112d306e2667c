//! The `[audit]` section of the configuration file.
//!
//! The audit trail is on only when `path` is set. The other keys bound
//! how much of the trail can be lost or left unsealed: a checkpoint seals
//! what came before it, so `checkpoint_every` and `checkpoint_interval`
//! are how far a tampered tail can reach before a signature covers it.

use serde::{Deserialize, Deserializer};
use std::path::PathBuf;
use std::time::Duration;

/// Where the audit trail goes and how often it is sealed.
///
/// ```toml
/// [audit]
/// path = "/var/log/pgveil/audit.jsonl"
/// max_file_bytes = 67108864
/// checkpoint_every = 1000
/// checkpoint_interval = "60s"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The active audit file (JSON Lines). Rotated files sit next to it
    /// as `<path>.<first sequence number>`. Unset: no audit trail.
    pub path: Option<PathBuf>,
    /// The active file is sealed with a checkpoint and rotated once it
    /// holds this many bytes.
    #[serde(deserialize_with = "de_file_bytes")]
    pub max_file_bytes: u64,
    /// A signed checkpoint after this many records.
    #[serde(deserialize_with = "de_every")]
    pub checkpoint_every: u64,
    /// A signed checkpoint at least this often while records arrive.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: None,
            max_file_bytes: 64 << 20,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
        }
    }
}

impl AuditConfig {
    /// Whether the audit trail is on.
    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }
}

fn de_file_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = i64::deserialize(d)?;
    // Below 4 KiB a single large record could not fit next to its checkpoint.
    if n < 4096 {
        return Err(serde::de::Error::custom(format!(
            "max_file_bytes must be at least 4096, got {n}"
        )));
    }
    Ok(n as u64)
}

fn de_every<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = i64::deserialize(d)?;
    if n < 1 {
        return Err(serde::de::Error::custom(format!(
            "checkpoint_every must be at least 1, got {n}"
        )));
    }
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let c: AuditConfig = toml::from_str("").expect("empty");
        assert!(!c.enabled());
        let c: AuditConfig = toml::from_str(
            "path = \"/a.jsonl\"\nmax_file_bytes = 8192\ncheckpoint_every = 5\ncheckpoint_interval = \"2s\"",
        )
        .expect("full");
        assert!(c.enabled());
        assert_eq!(c.checkpoint_every, 5);
        assert_eq!(c.checkpoint_interval, Duration::from_secs(2));
        assert!(toml::from_str::<AuditConfig>("checkpoint_every = 0").is_err());
        assert!(toml::from_str::<AuditConfig>("max_file_bytes = 10").is_err());
        assert!(toml::from_str::<AuditConfig>("paht = \"x\"").is_err());
    }
}
