//! Live reload of the configuration file (SIGHUP, `POST /reload`,
//! `pgveil reload`).
//!
//! Everything the new file implies is built first (TLS acceptor, keyring,
//! read policy, catalog, ciphers); only when all of it succeeded is it swapped
//! in, so an invalid file changes nothing and the proxy keeps running on
//! the old configuration. Open connections are not touched: each statement
//! takes the current snapshot when it starts, so statements that start
//! after the reload use the new policy, and a session's policy role is
//! resolved again from the new roles.
//!
//! Settings that shape sockets and threads (`[proxy] listen`, `upstream`,
//! `workers`, limits and timeouts, `[admin]`, `[upstream_tls]`, `[log]`)
//! are read once at start; a
//! change to them is reported as needing a restart and otherwise ignored.

use super::{ClientTls, Shared};
use crate::admin::metrics;
use crate::catalog::{Catalog, CatalogError};
use crate::config::{Config, ConfigError};
use crate::rewrite::ReadPolicy;
use crate::tls::TlsError;
use tracing::{info, warn};

/// Why a reload was rejected. The running configuration stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The proxy was started without a configuration file.
    #[error("pgveil: reload rejected: the proxy was started without --config, so there is no file to reload")]
    NoFile,
    /// The file cannot be read, parsed or has policy problems.
    #[error("reload rejected, keeping the running configuration: {0}")]
    Config(#[from] ConfigError),
    /// The TLS files cannot be loaded.
    #[error("reload rejected, keeping the running configuration: {0}")]
    Tls(#[from] TlsError),
    /// A role or mask cannot be built.
    #[error("pgveil: reload rejected, keeping the running configuration: {0}")]
    Policy(String),
    /// The catalog for the new policies cannot be loaded.
    #[error("reload rejected, keeping the running configuration: {0}")]
    Catalog(#[from] CatalogError),
    /// The keyring cannot be opened, or keys for the columns derived.
    #[error("pgveil: reload rejected, keeping the running configuration: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    /// The change cannot be applied to a running proxy.
    #[error("pgveil: reload rejected, keeping the running configuration: {0}")]
    NeedsRestart(&'static str),
}

/// Reloads the configuration file the proxy was started with. Returns a
/// one-line summary; the outcome is also logged and counted.
pub async fn reload(shared: &Shared) -> Result<String, ReloadError> {
    let _one_at_a_time = shared.reloading.lock().await;
    let result = apply(shared).await;
    if let Some(audit) = &shared.audit {
        let path = shared
            .config
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let outcome = result.as_ref().map(drop).map_err(without_quoted_source);
        // An audit that cannot be written refuses protected statements on
        // its own; a reload is not held back for it.
        let _ = audit.config_reloaded(&path, outcome.as_ref().map(|_| ()).map_err(String::as_str));
    }
    match &result {
        Ok(summary) => {
            metrics().reloads_ok.inc();
            info!(%summary, "configuration reloaded");
        }
        Err(e) => {
            metrics().reloads_rejected.inc();
            let error = without_quoted_source(e);
            warn!(%error, "configuration reload rejected");
        }
    }
    result
}

/// A rejected reload's reason for the log and the audit trail: the
/// parser's report without the lines it quotes from the file (`2 | key =
/// "…"`), which may hold whatever an operator mistyped. Line and column
/// stay; the full report goes back to whoever asked for the reload.
fn without_quoted_source(e: &ReloadError) -> String {
    let quoted = |line: &str| {
        let rest = line
            .trim_start()
            .trim_start_matches(|c: char| c.is_ascii_digit());
        rest.trim_start().starts_with('|')
    };
    e.to_string()
        .lines()
        .filter(|l| !l.trim().is_empty() && !quoted(l))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

async fn apply(shared: &Shared) -> Result<String, ReloadError> {
    let path = shared.config.path.as_ref().ok_or(ReloadError::NoFile)?;
    let mut new = Config::load(path)?;
    let acceptor = crate::tls::acceptor(&new.tls)?;
    let restart = needs_restart(&shared.config, &new);
    // Startup-only settings stay as running (including command-line
    // overrides), so the catalog is reloaded from the upstream the
    // sessions really use.
    new.proxy = shared.config.proxy.clone();
    new.upstream_tls = shared.config.upstream_tls.clone();
    new.admin = shared.config.admin.clone();
    new.log = shared.config.log.clone();
    match (&shared.protector, new.columns.is_empty()) {
        (None, true) => {}
        (Some(protector), false) => {
            let keyring = crate::crypto::Keyring::load(&new.keyring)?;
            let policy = ReadPolicy::from_config(&new).map_err(ReloadError::Policy)?;
            let catalog = Catalog::load(&new).await?;
            for missing in catalog.missing() {
                warn!(%missing, "policy names a table or column the database does not have; statements mentioning it are refused");
            }
            protector.replace(catalog, policy, keyring)?;
        }
        (None, false) => {
            return Err(ReloadError::NeedsRestart(
                "[[columns]] were added to a proxy started without any; restart pgveil to turn column protection on",
            ))
        }
        (Some(_), true) => {
            return Err(ReloadError::NeedsRestart(
                "every [[columns]] entry was removed; restart pgveil to turn column protection off",
            ))
        }
    }
    shared.set_client_tls(ClientTls {
        acceptor,
        require: new.tls.require,
    });
    let mut summary = format!(
        "{}: {} protected column(s), {} role(s)",
        path.display(),
        new.columns.len(),
        new.roles.len()
    );
    if !restart.is_empty() {
        summary.push_str(&format!(
            "; changes to {} take effect after a restart",
            restart.join(", ")
        ));
    }
    shared.set_current_config(new);
    Ok(summary)
}

/// Settings that differ but are only read at start.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let (a, b) = (&old.proxy, &new.proxy);
    if a.listen != b.listen {
        out.push("[proxy] listen");
    }
    if a.upstream != b.upstream {
        out.push("[proxy] upstream");
    }
    if a.workers != b.workers {
        out.push("[proxy] workers");
    }
    if a.max_client_connections != b.max_client_connections
        || a.keepalive != b.keepalive
        || a.keepalive_interval != b.keepalive_interval
        || a.idle_timeout != b.idle_timeout
        || a.shutdown_timeout != b.shutdown_timeout
        || a.max_message_bytes != b.max_message_bytes
        || a.connect_timeout != b.connect_timeout
        || a.startup_timeout != b.startup_timeout
    {
        out.push("[proxy] limits and timeouts");
    }
    if old.admin.listen != new.admin.listen {
        out.push("[admin] listen");
    }
    if old.upstream_tls.mode != new.upstream_tls.mode
        || old.upstream_tls.ca != new.upstream_tls.ca
        || old.upstream_tls.server_name != new.upstream_tls.server_name
    {
        out.push("[upstream_tls]");
    }
    if old.log.level != new.log.level || old.log.format != new.log.format {
        out.push("[log]");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    #[test]
    fn the_logged_reason_keeps_the_position_but_not_the_file_s_text() {
        let source = Config::parse("[proxy]\nupstream = \"db:5432?password=hunter2")
            .expect_err("an unterminated string");
        let e = ReloadError::Config(ConfigError::Parse {
            path: "/etc/pgveil.toml".into(),
            source,
        });
        assert!(
            e.to_string().contains("hunter2"),
            "the full report quotes it: {e}"
        );
        let reason = without_quoted_source(&e);
        assert!(!reason.contains("hunter2"), "{reason}");
        assert!(!reason.contains('\n'), "{reason}");
        assert!(
            reason.contains("/etc/pgveil.toml") && reason.contains("line 2"),
            "{reason}"
        );
        // Reasons without quoted lines are unchanged.
        let plain = ReloadError::NeedsRestart("restart pgveil");
        assert_eq!(without_quoted_source(&plain), plain.to_string());
    }
}
