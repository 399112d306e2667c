//! The bulk-read guard: per-statement row caps, per-user rolling windows,
//! and two-person approvals for a one-off export.
//!
//! How it fits the data flow (the session's hooks are in
//! `session/guarded.rs`; nothing here runs for roles without limits):
//!
//! * **Before execution** ([`precheck`]): SQL analysis records, for every
//!   statement that returns protected columns, which columns, which
//!   protected tables are read with no WHERE clause, and the literal LIMIT
//!   (`sql::BulkRead`, cached with the plan). With the session's policy role
//!   in hand, a read with neither WHERE nor LIMIT, or a LIMIT above the cap,
//!   is refused before the server sees it.
//! * **During execution** ([`held`]): rows of a result that carries a
//!   protected column the role sees are held, not streamed, up to the cap.
//!   Crossing it discards what was held, cancels the query upstream
//!   ([`cancel`]) and replaces the result with one 42501 error.
//! * **Window** ([`window`]): rows released to a user are charged to its
//!   rolling window, shared by all its connections.
//! * **Approval** ([`approval`], [`cli`]): a signed token lifts the caps for
//!   the tables it names, up to its own `max_rows`.

pub mod approval;
pub mod cancel;
pub mod cli;
pub mod held;
pub mod limits;
pub mod precheck;
pub mod window;

pub use approval::{Approval, ApprovalError};
pub use limits::{ApprovalsConfig, LimitKeys, Limits, Precheck, Window};

use dashmap::DashMap;
use std::sync::Arc;

/// Guard state shared by every session of one proxy.
#[derive(Debug)]
pub struct Guard {
    /// The keyring's Ed25519 public key, which approval tokens must verify under.
    verify_key: Vec<u8>,
    /// Rolling windows per user.
    pub windows: window::Windows,
    /// Ids of single-use approvals already used, with their expiry (ms), so
    /// a token cannot be replayed on another connection.
    used: DashMap<String, u64>,
}

/// Used single-use ids kept before expired ones are dropped.
const MAX_USED_IDS: usize = 100_000;

impl Guard {
    /// Guard state verifying approvals under `verify_key`.
    pub fn new(verify_key: &[u8]) -> Self {
        Guard {
            verify_key: verify_key.to_vec(),
            windows: window::Windows::default(),
            used: DashMap::new(),
        }
    }

    /// Checks a token set by `user` now: signature, owner, expiry, and
    /// that a single-use one has not been used.
    pub fn accept(&self, token: &str, user: &str) -> Result<Arc<Approval>, ApprovalError> {
        let a = Approval::verify(token, &self.verify_key)?;
        self.check(&a, user)?;
        Ok(Arc::new(a))
    }

    /// Re-checks an accepted approval at the moment it is used.
    pub fn check(&self, a: &Approval, user: &str) -> Result<(), ApprovalError> {
        a.check_use(user, approval::now_unix_ms())?;
        if a.single_use && self.used.contains_key(&a.id) {
            return Err(ApprovalError::Replayed { id: a.id.clone() });
        }
        Ok(())
    }

    /// Marks a single-use approval used; fails if another connection got
    /// there first.
    pub fn consume(&self, a: &Approval) -> Result<(), ApprovalError> {
        if !a.single_use {
            return Ok(());
        }
        if self.used.len() >= MAX_USED_IDS {
            let now = approval::now_unix_ms();
            // Expired tokens are refused anyway; forget their ids.
            self.used.retain(|_, expires| *expires > now);
        }
        match self.used.entry(a.id.clone()) {
            dashmap::Entry::Occupied(_) => Err(ApprovalError::Replayed { id: a.id.clone() }),
            dashmap::Entry::Vacant(slot) => {
                slot.insert(a.expires_unix_ms);
                Ok(())
            }
        }
    }
}

/// Why the guard refused a statement or result, or why `pgveil approve`
/// failed. Every refusal the client sees is SQLSTATE 42501.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// A read with neither WHERE nor LIMIT over a protected table.
    #[error(
        "pgveil: bulk read refused before execution: {what} reads protected table {table} with no \
         WHERE clause and no LIMIT, and policy role {role} is limited ({limits}); {how}"
    )]
    Unbounded {
        /// "SELECT", "DECLARE CURSOR" or "COPY TO".
        what: &'static str,
        /// `schema.table`.
        table: String,
        /// Policy role name.
        role: String,
        /// The role's limits, as configured.
        limits: String,
        /// How to get an approval.
        how: String,
    },
    /// A LIMIT above what the statement may return.
    #[error("pgveil: bulk read refused before execution: LIMIT {limit} is above {cap}; {how}")]
    LimitAbove {
        /// The statement's LIMIT.
        limit: u64,
        /// The cap it exceeds, described.
        cap: String,
        /// How to get an approval (or narrow the query).
        how: String,
    },
    /// `precheck = "explain"`: the server's row estimate is above the cap.
    #[error(
        "pgveil: bulk read refused before execution: the server estimates {estimate} rows, above the \
         {cap} rows one statement may return for policy role {role} (precheck = \"explain\"); {how}"
    )]
    Estimate {
        /// The root plan node's row estimate.
        estimate: u64,
        /// The cap.
        cap: u64,
        /// Policy role name.
        role: String,
        /// How to get an approval.
        how: String,
    },
    /// The result grew past a cap while pgveil held it.
    #[error(
        "pgveil: bulk read refused: the result exceeded {cap}; none of its rows were sent; {how}"
    )]
    Exceeded {
        /// The cap, described.
        cap: String,
        /// How to get an approval.
        how: String,
    },
    /// The user's rolling window has no room for the result.
    #[error(
        "pgveil: bulk read refused: user {} may receive {} protected rows per {} (window_rows of \
         policy role {}) and has received {} in the current window; none of this result's rows \
         were sent; {}; {}",
        .0.user, .0.limit, .0.period, .0.role, .0.used, .0.frees, .0.how
    )]
    Window(Box<WindowRefusal>),
    /// An approval token was refused.
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    /// `pgveil approve`: the approver is not listed in `[approvals]`.
    #[error(
        "pgveil: {approver} is not an approver: add the name to [approvals] approvers in the \
         configuration to let them approve bulk exports"
    )]
    NotApprover {
        /// The name given with `--approver`.
        approver: String,
    },
    /// `pgveil approve`: the requester named themselves as approver.
    #[error(
        "pgveil: requester and approver are both {0}: a bulk export needs a second person to approve it"
    )]
    SelfApproval(String),
    /// `pgveil approve`: a bad argument.
    #[error("pgveil: {0}")]
    Argument(String),
    /// `pgveil approve`: the keyring could not be opened.
    #[error(transparent)]
    Keyring(#[from] crate::crypto::CryptoError),
}

impl GuardError {
    /// The SQLSTATE a client sees for this refusal.
    pub fn sqlstate(&self) -> &'static str {
        "42501"
    }

    /// The refusal in the form the session injects.
    pub fn refusal(&self) -> crate::sql::Refusal {
        crate::sql::Refusal {
            sqlstate: self.sqlstate(),
            message: self.to_string(),
        }
    }
}

/// What a window refusal says.
#[derive(Debug)]
pub struct WindowRefusal {
    /// Login user.
    pub user: String,
    /// Policy role name.
    pub role: String,
    /// `window_rows`.
    pub limit: u64,
    /// `window`, human-readable.
    pub period: String,
    /// Rows already received within the window.
    pub used: u64,
    /// When the window frees up, in words.
    pub frees: String,
    /// How to get an approval.
    pub how: String,
}

/// The hint every bulk-read refusal ends with: how to get a second
/// person's approval.
pub fn how_to_approve(user: &str, tables: &[String]) -> String {
    let tables = if tables.is_empty() {
        "<schema.table>".to_owned()
    } else {
        tables.join(",")
    };
    format!(
        "narrow the query, or ask an approver to run `pgveil approve --requester {user} --approver \
         <name> --tables {tables} --max-rows <n> --ttl <duration> --reason <why>` and then run \
         SET pgveil.approval = '<token>' on this connection"
    )
}
