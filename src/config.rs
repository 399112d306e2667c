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
    /// TLS for clients (`[tls]`); absent means plaintext only.
    #[serde(default)]
    pub tls: TlsConfig,
    /// TLS to the PostgreSQL server (`[upstream_tls]`).
    #[serde(default)]
    pub upstream_tls: UpstreamTlsConfig,
    /// The metrics and health listener (`[admin]`).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Logging (`[log]`).
    #[serde(default)]
    pub log: LogConfig,
    /// The file this configuration was read from; a reload reads it again.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// The `[tls]` section: pgveil's own certificate for clients.
///
/// Clients' `sslmode` decides whether they ask for TLS; `require` lets the
/// operator insist on it, because pgveil holds the keys that make the data
/// readable and plaintext between application and pgveil would undo that.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, server certificate first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `cert`.
    pub key: Option<PathBuf>,
    /// Refuse clients that do not negotiate TLS (SQLSTATE 28000).
    pub require: bool,
}

impl TlsConfig {
    /// Whether TLS is offered to clients.
    pub fn enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }
}

/// How pgveil protects its connections to the PostgreSQL server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    /// Plaintext (the server on the same host or a trusted network).
    #[default]
    Disable,
    /// Encrypt, without verifying the server's certificate (libpq's
    /// `sslmode=require` without a root certificate).
    Require,
    /// Encrypt and verify the certificate chain against `ca` and the
    /// upstream host name.
    VerifyFull,
}

/// The `[upstream_tls]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTlsConfig {
    /// `disable`, `require` or `verify-full`.
    pub mode: UpstreamTlsMode,
    /// PEM file of the CA certificates that sign the server's certificate;
    /// required by `verify-full`.
    pub ca: Option<PathBuf>,
    /// Name to verify the certificate against; defaults to the host part
    /// of `[proxy] upstream`.
    pub server_name: Option<String>,
}

/// The `[admin]` section: Prometheus metrics, health and reload over HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `host:port` of the admin listener; an empty string turns it off.
    /// Keep it on loopback or a management network: `/reload` is on it.
    #[serde(deserialize_with = "de_optional_listen")]
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9930".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines with `key=value` fields.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The `[log]` section. `RUST_LOG`, when set, overrides `level`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, `pgveil=debug,info`, ...
    #[serde(deserialize_with = "de_log_level")]
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
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
    /// Client connections served at once; more get SQLSTATE 53300
    /// (0: no limit). Keeps a connection storm from exhausting the server's
    /// `max_connections` and pgveil's memory.
    pub max_client_connections: usize,
    /// TCP keepalive idle time on both sockets, e.g. `"60s"`; `"0s"` turns
    /// keepalive off. Notices peers that vanished without a FIN.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// Interval between keepalive probes once they start.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// A session idle (outside a transaction, nothing in flight) for longer
    /// is closed with SQLSTATE 57P05; `"0s"` (default) never closes it.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// After SIGTERM/SIGINT, how long sessions may take to finish their
    /// current transaction before they are closed with SQLSTATE 57P01.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
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
            max_client_connections: 1000,
            keepalive: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(10),
            idle_timeout: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Reads and validates a configuration file; any policy problem is an
    /// error listing all of them.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (mut config, _, problems) = Self::load_for_check(path)?;
        config.path = Some(path.to_owned());
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
        let mut roles = crate::policy::check::check_roles(&config.roles, &config.columns);
        locate_roles(&mut roles, &config.roles, &text);
        problems.extend(roles);
        problems.extend(check_tls(&config, &text));
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

/// 1-based line of the `index`-th line that starts with `header`.
fn header_line(text: &str, header: &str, index: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with(header))
        .nth(index)
        .map(|(i, _)| i + 1)
}

/// 1-based line of `key = ` inside the `[section]` table.
fn key_line(text: &str, section: &str, key: &str) -> Option<usize> {
    let start = header_line(text, &format!("[{section}]"), 0)?;
    text.lines()
        .enumerate()
        .skip(start)
        .take_while(|(_, l)| !l.trim_start().starts_with('['))
        .find(|(_, l)| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|(i, _)| i + 1)
        .or(Some(start))
}

/// Gives role problems the line of their `[[roles]]` entry and the role's
/// section in the subject.
fn locate_roles(
    problems: &mut [crate::policy::Problem],
    roles: &[crate::policy::role::RoleConfig],
    text: &str,
) {
    for p in problems {
        let Some(name) = p.subject.strip_prefix("role ") else {
            continue;
        };
        if let Some(i) = roles.iter().position(|r| r.name == name) {
            p.line = header_line(text, "[[roles]]", i);
        }
        p.subject = format!("[[roles]] {name}");
    }
}

/// `[tls]` and `[upstream_tls]` problems: incomplete settings and files
/// that cannot be loaded, each with the line of the key.
fn check_tls(config: &Config, text: &str) -> Vec<crate::policy::Problem> {
    use crate::tls::TlsError;
    crate::tls::check(config)
        .into_iter()
        .map(|e| {
            let (section, key) = match &e {
                TlsError::Read { what, .. } | TlsError::Pem { what, .. } => match *what {
                    "[tls] cert" => ("tls", "cert"),
                    "[tls] key" => ("tls", "key"),
                    _ => ("upstream_tls", "ca"),
                },
                TlsError::Incomplete(_) | TlsError::Server(_) => ("tls", "cert"),
                TlsError::NoCa => ("upstream_tls", "mode"),
                TlsError::ServerName(_) => ("upstream_tls", "server_name"),
                _ => ("upstream_tls", "ca"),
            };
            let message = e.to_string();
            crate::policy::Problem {
                line: key_line(text, section, key),
                subject: format!("[{section}] {key}"),
                message: message
                    .strip_prefix("pgveil: ")
                    .unwrap_or(&message)
                    .to_owned(),
            }
        })
        .collect()
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

fn de_optional_listen<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if !s.is_empty() {
        check_addr(&s, true).map_err(serde::de::Error::custom)?;
    }
    Ok(s)
}

fn de_log_level<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    tracing_subscriber::EnvFilter::try_new(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid log level {s:?} ({e}); use error, warn, info, debug, trace or a filter like \"pgveil=debug,info\""
        ))
    })?;
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
    fn ops_sections_are_read() {
        let c = Config::parse(
            "[proxy]\nmax_client_connections = 5\nidle_timeout = \"30s\"\nshutdown_timeout = \"2s\"\n\
             keepalive = \"0s\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nrequire = true\n\
             [upstream_tls]\nmode = \"verify-full\"\nca = \"ca.pem\"\n[admin]\nlisten = \"\"\n\
             [log]\nlevel = \"debug\"\nformat = \"json\"\n",
        )
        .unwrap();
        assert_eq!(c.proxy.max_client_connections, 5);
        assert_eq!(c.proxy.idle_timeout, Duration::from_secs(30));
        assert!(c.proxy.keepalive.is_zero());
        assert!(c.tls.require && c.tls.enabled());
        assert_eq!(c.upstream_tls.mode, UpstreamTlsMode::VerifyFull);
        assert!(c.admin.listen.is_empty());
        assert_eq!(c.log.format, LogFormat::Json);
        let err = Config::parse("[upstream_tls]\nmode = \"maybe\"\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn tls_problems_name_key_and_line() {
        let text = "[proxy]\nlisten = \"127.0.0.1:0\"\n\n[tls]\nrequire = true\nkey = \"/nonexistent/k.pem\"\n\n[upstream_tls]\nmode = \"verify-full\"\n";
        let c = Config::parse(text).unwrap();
        let shown: Vec<String> = check_tls(&c, text).iter().map(|p| p.to_string()).collect();
        assert_eq!(shown.len(), 2, "{shown:#?}");
        assert!(
            shown[0].starts_with("line 6: [tls] cert")
                || shown[0].starts_with("line 4: [tls] cert"),
            "{shown:#?}"
        );
        assert!(
            shown[0].contains("key is set but cert is not"),
            "{shown:#?}"
        );
        assert!(
            shown[1].starts_with("line 9: [upstream_tls] mode"),
            "{shown:#?}"
        );
    }

    #[test]
    fn flag_overrides_are_checked() {
        let mut slot = String::from("127.0.0.1:1");
        assert!(Config::override_addr(&mut slot, "--upstream", "bad").is_err());
        Config::override_addr(&mut slot, "--upstream", "localhost:5432").unwrap();
        assert_eq!(slot, "localhost:5432");
    }
}
