//! The configuration file: TOML, read once at startup.
//!
//! Every section denies unknown keys, so a typo is an error that names the
//! key and its line instead of a setting silently ignored. Values are
//! checked while they are deserialised, so a bad value is reported with the
//! line of that value too.

use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the configuration could not be used. Messages name the file and,
/// through the TOML parser, the key and line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("pgveil: cannot read config file {path}: {source}")]
    Read {
        /// The file named on the command line.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a bad value.
    #[error("pgveil: config file {path}: {source}")]
    Parse {
        /// The file named on the command line.
        path: PathBuf,
        /// The parser's report, with line, column and key.
        source: toml::de::Error,
    },
    /// The `[[columns]]` policies have problems; all of them are listed.
    #[error("pgveil: config file {path}: policy problems:\n{}", list(.problems))]
    Policy {
        /// The file named on the command line.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<crate::policy::Problem>,
    },
    /// A command-line override is not valid.
    #[error("pgveil: {flag}: {reason}")]
    Flag {
        /// The flag as typed.
        flag: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where pgveil listens and where it forwards to.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// Where the keyring lives and where the master key comes from.
    #[serde(default)]
    pub keyring: crate::crypto::KeyringConfig,
    /// How pgveil reads the upstream catalog.
    #[serde(default)]
    pub catalog: CatalogConfig,
    /// Protected columns (`[[columns]]`).
    #[serde(default)]
    pub columns: Vec<crate::policy::ColumnPolicy>,
    /// Policy roles (`[[roles]]`).
    #[serde(default)]
    pub roles: Vec<crate::policy::role::RoleConfig>,
    /// Defaults (`[defaults]`).
    #[serde(default)]
    pub defaults: crate::policy::role::Defaults,
    /// Who may approve one-off bulk exports (`[approvals]`).
    #[serde(default)]
    pub approvals: crate::guard::ApprovalsConfig,
    /// The audit trail (`[audit]`); off unless `path` is set.
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
}

/// The `[catalog]` section: the account pgveil uses for its own catalog
/// queries (and `pgveil check`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// PostgreSQL user for catalog queries.
    pub user: String,
    /// Database holding the protected tables.
    pub database: String,
    /// Environment variable holding that user's password, if any.
    pub password_env: Option<String>,
    /// How often the catalog is reloaded even without DDL through pgveil
    /// (e.g. `"60s"`); a result from a table OID the catalog does not know
    /// also triggers a reload.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            user: "postgres".into(),
            database: "postgres".into(),
            password_env: None,
            refresh: Duration::from_secs(60),
        }
    }
}

/// The `[proxy]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address clients connect to, `host:port` (port 0: any free port).
    #[serde(deserialize_with = "de_listen")]
    pub listen: String,
    /// The PostgreSQL server, `host:port`.
    #[serde(deserialize_with = "de_host_port")]
    pub upstream: String,
    /// Largest protocol message accepted in either direction, in bytes.
    /// PostgreSQL itself caps a field at 1 GiB; a frame larger than this
    /// closes that one connection with SQLSTATE 08P01.
    #[serde(deserialize_with = "de_max_message")]
    pub max_message_bytes: usize,
    /// How long to wait for the upstream TCP connection, e.g. `"5s"`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a client may take to send its startup packet, e.g. `"60s"`
    /// (PostgreSQL's `authentication_timeout` plays the same role).
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// Runtime worker threads; 0 means one per CPU.
    pub workers: usize,
}

/// Default cap: PostgreSQL's own `MaxAllocSize` (1 GiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 30;

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: "127.0.0.1:6432".into(),
            upstream: "127.0.0.1:5432".into(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            connect_timeout: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(60),
            workers: 0,
        }
    }
}

impl Config {
    /// Reads and validates a configuration file; any policy problem is an
    /// error listing all of them.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (config, _, problems) = Self::load_for_check(path)?;
        if !problems.is_empty() {
            return Err(ConfigError::Policy {
                path: path.to_owned(),
                problems,
            });
        }
        Ok(config)
    }

    /// Reads a file for `pgveil check`: the parsed config (if it parses), its
    /// text, and every static policy problem, instead of stopping at one.
    pub fn load_for_check(
        path: &Path,
    ) -> Result<(Self, String, Vec<crate::policy::Problem>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let mut problems = crate::policy::check_static(&config.columns, &text);
        problems.extend(crate::policy::check::check_roles(
            &config.roles,
            &config.columns,
        ));
        Ok((config, text, problems))
    }

    /// Parses configuration text; the error carries line and key.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Applies `--listen` / `--upstream` style overrides after checking them
    /// the same way the file's values are checked.
    pub fn override_addr(
        slot: &mut String,
        flag: &'static str,
        value: &str,
    ) -> Result<(), ConfigError> {
        check_host_port(value).map_err(|reason| ConfigError::Flag { flag, reason })?;
        *slot = value.to_owned();
        Ok(())
    }
}

fn list(problems: &[crate::policy::Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks `host:port` (or `[v6]:port`) without resolving the host.
fn check_host_port(s: &str) -> Result<(), String> {
    check_addr(s, false)
}

fn check_addr(s: &str, allow_port_zero: bool) -> Result<(), String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("expected host:port, got {s:?}"));
    };
    if host.is_empty() {
        return Err(format!("missing host in {s:?}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 || allow_port_zero => Ok(()),
        _ => Err(format!("invalid port in {s:?}")),
    }
}

fn de_host_port<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_host_port(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn de_listen<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_addr(&s, true).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn de_max_message<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = i64::deserialize(d)?;
    // Below 8 KiB ordinary catalog queries would fail; above 1 GiB is more
    // than PostgreSQL itself can send in one field.
    if !(8192..=(1 << 30)).contains(&n) {
        return Err(serde::de::Error::custom(format!(
            "max_message_bytes must be between 8192 and 1073741824, got {n}"
        )));
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_empty() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.proxy.listen, "127.0.0.1:6432");
        assert_eq!(c.proxy.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
    }

    #[test]
    fn reads_all_keys() {
        let c = Config::parse(
            "[proxy]\nlisten = \"0.0.0.0:7000\"\nupstream = \"db.internal:5433\"\n\
             max_message_bytes = 65536\nconnect_timeout = \"250ms\"\nworkers = 2\n",
        )
        .unwrap();
        assert_eq!(c.proxy.upstream, "db.internal:5433");
        assert_eq!(c.proxy.max_message_bytes, 65536);
        assert_eq!(c.proxy.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.proxy.workers, 2);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = Config::parse("[proxy]\nlisten = \"127.0.0.1:1\"\nlissen = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lissen"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_values_name_line() {
        for (text, line, needle) in [
            ("[proxy]\nupstream = \"nohost\"\n", 2, "host:port"),
            ("[proxy]\n\nlisten = \"x:99999\"\n", 3, "invalid port"),
            ("[proxy]\nmax_message_bytes = 10\n", 2, "max_message_bytes"),
            (
                "[proxy]\nconnect_timeout = \"soon\"\n",
                2,
                "connect_timeout",
            ),
            ("[proxy\n", 1, "invalid table header"),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(&format!("line {line}")), "{text}: {err}");
            assert!(
                err.contains(needle) || err.contains("invalid"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn keyring_section_is_read_and_checked() {
        let c = Config::parse("[keyring]\ndir = \"/etc/pgveil/keys\"\n").unwrap();
        assert_eq!(c.keyring.dir, std::path::PathBuf::from("/etc/pgveil/keys"));
        let err = Config::parse("[keyring]\nmaster_key = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("master_key"), "{err}");
    }

    #[test]
    fn flag_overrides_are_checked() {
        let mut slot = String::from("127.0.0.1:1");
        assert!(Config::override_addr(&mut slot, "--upstream", "bad").is_err());
        Config::override_addr(&mut slot, "--upstream", "localhost:5432").unwrap();
        assert_eq!(slot, "localhost:5432");
    }
}
