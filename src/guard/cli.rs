//! `pgveil approve`: the approver's command that mints a one-off approval.
//!
//! It needs the configuration (for `[approvals] approvers`, the protected
//! tables and the keyring) and the master key (to unwrap the keyring's
//! signing key), so only whoever holds the master key can approve: the
//! names given are checked against the list, but the command cannot prove
//! who typed them. Keep the master key with the security officers, not
//! with the requesters.

use super::approval::{now_unix_ms, rfc3339, Approval, SINGLE_USE_LIFETIME};
use super::GuardError;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::policy::column::QualifiedName;
use ring::rand::{SecureRandom, SystemRandom};
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `pgveil approve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApproveArgs {
    /// The PostgreSQL user who will run the export.
    #[arg(long)]
    pub requester: String,
    /// Who approves it; must be listed in `[approvals] approvers` and must
    /// not be the requester.
    #[arg(long)]
    pub approver: String,
    /// Protected tables (`schema.table` or `table`), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tables: Vec<String>,
    /// Rows one statement may return under the approval.
    #[arg(long)]
    pub max_rows: u64,
    /// How long the approval may be used (e.g. `2h`); `0` means a single
    /// use, within 24 hours.
    #[arg(long)]
    pub ttl: String,
    /// Why it is granted (kept in the token for the audit trail).
    #[arg(long)]
    pub reason: String,
    /// Configuration file (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
}

/// Checks the request, signs the approval and writes a summary to `out`,
/// with the token alone on the last line.
pub fn run(args: &ApproveArgs, out: &mut dyn Write) -> Result<Approval, GuardError> {
    let cfg = Config::load(&args.config).map_err(|e| GuardError::Argument(e.to_string()))?;
    let approval = request(args, &cfg)?;
    let keyring = Keyring::load(&cfg.keyring)?;
    let token = approval
        .sign(keyring.signing_key())
        .map_err(|e| GuardError::Argument(format!("cannot encode the approval: {e}")))?;
    let write = |out: &mut dyn Write| -> std::io::Result<()> {
        writeln!(
            out,
            "approval {}: {} may read up to {} rows per statement from {}",
            approval.id,
            approval.requester,
            approval.max_rows,
            approval.tables.join(", ")
        )?;
        writeln!(
            out,
            "approved by {}; {} until {}",
            approval.approver,
            if approval.single_use {
                "single use"
            } else {
                "valid"
            },
            rfc3339(approval.expires_unix_ms)
        )?;
        writeln!(out, "reason: {}", approval.reason)?;
        writeln!(
            out,
            "the requester runs: SET pgveil.approval = '<the token below>';"
        )?;
        writeln!(out, "{token}")
    };
    write(out).map_err(|e| GuardError::Argument(format!("cannot write the token: {e}")))?;
    Ok(approval)
}

/// Validates the arguments against the configuration and builds the
/// (unsigned) approval.
pub fn request(args: &ApproveArgs, cfg: &Config) -> Result<Approval, GuardError> {
    let bad = |m: String| Err(GuardError::Argument(m));
    let requester = args.requester.trim();
    let approver = args.approver.trim();
    if requester.is_empty() || approver.is_empty() {
        return bad("--requester and --approver must name users".into());
    }
    if !cfg.approvals.approvers.iter().any(|a| a == approver) {
        return Err(GuardError::NotApprover {
            approver: approver.to_owned(),
        });
    }
    if requester == approver {
        return Err(GuardError::SelfApproval(requester.to_owned()));
    }
    if args.reason.trim().is_empty() {
        return bad("--reason must say why the export is approved".into());
    }
    if args.max_rows == 0 || i64::try_from(args.max_rows).is_err() {
        return bad(format!(
            "--max-rows must be between 1 and {}, got {}",
            i64::MAX,
            args.max_rows
        ));
    }
    let protected: Vec<String> = cfg
        .columns
        .iter()
        .filter_map(|c| QualifiedName::of(c).ok())
        .map(|q| format!("{}.{}", q.schema, q.table))
        .collect();
    let mut tables = Vec::new();
    for t in &args.tables {
        let q = QualifiedName::parse(t.trim(), "x").map_err(GuardError::Argument)?;
        let name = format!("{}.{}", q.schema, q.table);
        if !protected.contains(&name) {
            return bad(format!(
                "table {name} has no protected columns in the configuration; an approval only lifts \
                 the caps of protected tables"
            ));
        }
        if !tables.contains(&name) {
            tables.push(name);
        }
    }
    let ttl = match args.ttl.trim() {
        "0" => None,
        t => Some(humantime::parse_duration(t).map_err(|e| {
            GuardError::Argument(format!(
                "--ttl {t:?}: {e} (e.g. 30m, 2h, or 0 for a single use)"
            ))
        })?),
    };
    let issued = now_unix_ms();
    let lifetime = ttl.unwrap_or(SINGLE_USE_LIFETIME);
    let lifetime_ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
    let mut id = [0u8; 16];
    SystemRandom::new()
        .fill(&mut id)
        .map_err(|_| GuardError::Argument("the system random source failed".into()))?;
    Ok(Approval {
        id: id.iter().map(|b| format!("{b:02x}")).collect(),
        requester: requester.to_owned(),
        approver: approver.to_owned(),
        tables,
        max_rows: args.max_rows,
        issued_unix_ms: issued,
        expires_unix_ms: issued.saturating_add(lifetime_ms),
        single_use: ttl.is_none(),
        reason: args.reason.trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::parse(
            "[approvals]\napprovers = [\"bob\"]\n[[columns]]\ntable = \"guests\"\ncolumn = \"phone\"\n\
             type = \"text\"\nencrypt = \"searchable\"\nlevel = 3\n",
        )
        .unwrap()
    }

    fn args(requester: &str, approver: &str, tables: &[&str], ttl: &str) -> ApproveArgs {
        ApproveArgs {
            requester: requester.into(),
            approver: approver.into(),
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
            max_rows: 50,
            ttl: ttl.into(),
            reason: "audit".into(),
            config: PathBuf::new(),
        }
    }

    #[test]
    fn checks_the_request() {
        let a = request(&args("alice", "bob", &["guests"], "2h"), &cfg()).unwrap();
        assert_eq!(a.tables, ["public.guests"]);
        assert!(!a.single_use);
        assert_eq!(a.expires_unix_ms - a.issued_unix_ms, 2 * 3600 * 1000);
        assert_eq!(a.id.len(), 32);
        assert!(
            request(&args("alice", "bob", &["guests"], "0"), &cfg())
                .unwrap()
                .single_use
        );
        assert!(matches!(
            request(&args("bob", "bob", &["guests"], "2h"), &cfg()),
            Err(GuardError::SelfApproval(_))
        ));
        assert!(matches!(
            request(&args("alice", "carol", &["guests"], "2h"), &cfg()),
            Err(GuardError::NotApprover { .. })
        ));
        assert!(request(&args("alice", "bob", &["stays"], "2h"), &cfg()).is_err());
        assert!(request(&args("alice", "bob", &["guests"], "soon"), &cfg()).is_err());
    }
}
