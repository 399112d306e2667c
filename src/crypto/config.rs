//! The `[keyring]` section of pgveil's configuration file.
//!
//! The main config (owned by `crate::config`) embeds this struct, so the
//! keyring's settings are parsed, defaulted and documented in one place
//! next to the code that uses them.

use std::path::PathBuf;

use serde::Deserialize;

/// Where the keyring lives and where the master key comes from.
///
/// ```toml
/// [keyring]
/// dir = "keyring"                       # default
/// master_key_file = "/etc/pgveil/master.key"   # optional, mode 0600
/// ```
///
/// Without `master_key_file`, the master key is read from the environment
/// variable `PGVEIL_MASTER_KEY` (base64 of 32 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringConfig {
    /// Directory holding `keyring.toml`; relative paths are relative to the
    /// working directory of the pgveil process.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// File with the 32-byte master key (raw bytes, or base64 text). It must
    /// not be readable by group or others. Takes precedence over
    /// `PGVEIL_MASTER_KEY` when set.
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
}

fn default_dir() -> PathBuf {
    PathBuf::from("keyring")
}

impl Default for KeyringConfig {
    fn default() -> Self {
        KeyringConfig {
            dir: default_dir(),
            master_key_file: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let c: KeyringConfig = toml::from_str("").expect("empty");
        assert_eq!(c, KeyringConfig::default());
        assert_eq!(c.dir, PathBuf::from("keyring"));
        let c: KeyringConfig =
            toml::from_str("dir = \"/k\"\nmaster_key_file = \"/m.key\"").expect("full");
        assert_eq!(c.master_key_file, Some(PathBuf::from("/m.key")));
        assert!(toml::from_str::<KeyringConfig>("master_key = \"x\"").is_err());
    }
}
