//! What one audit record says.
//!
//! Records name users, roles, client addresses, tables, columns and what
//! pgveil did with each column; they never carry a protected value, a SQL
//! literal or a bound parameter (design principle 4). A statement is
//! identified by its fingerprint (`fingerprint.rs`): its text with every
//! literal and parameter replaced by `?`.
//!
//! [`Event`] is what the rest of pgveil sends; the writer adds the sequence
//! number, the chain fields and, for the records it writes itself,
//! [`Event::Start`] and [`Event::Checkpoint`].

use serde::Serialize;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// One auditable event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A pgveil process started writing: opens a MAC chain (see docs/AUDIT.md).
    Start {
        /// Random id of this run.
        run: String,
        /// pgveil's version.
        version: String,
        /// The run's first MAC key, wrapped by the master key, so an auditor
        /// holding the master key can check every record's MAC.
        wrapped_key: String,
        /// SHA-256 commitment to the first MAC key.
        key_commit: String,
        /// Hex Ed25519 public key that signs this run's checkpoints.
        public_key: String,
        /// Bytes of a torn last line (a crash mid-write) removed at start.
        torn_bytes: u64,
    },
    /// A client authenticated.
    ConnectionOpened {
        /// Connection id, unique within a run.
        conn: u64,
        /// PostgreSQL user.
        user: String,
        /// Policy role chosen for the session.
        #[serde(skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        /// Client address.
        client: String,
    },
    /// An authenticated client's connection ended.
    ConnectionClosed {
        /// Connection id.
        conn: u64,
        /// PostgreSQL user.
        user: String,
        /// Policy role.
        #[serde(skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        /// Client address.
        client: String,
        /// Statements on protected columns during the connection.
        statements: u64,
        /// How long the connection lasted.
        duration_ms: u64,
    },
    /// A statement that touched a protected column.
    Statement(Box<StatementRecord>),
    /// A second person approved a one-off bulk read (vault rule).
    ApprovalIssued(ApprovalIssued),
    /// An approval was used by a statement.
    ApprovalUsed(ApprovalUsed),
    /// `pgveil keyring rotate`.
    KeyRotated {
        /// The new active version.
        version: u32,
        /// The version demoted to decrypt-only.
        previous: Option<u32>,
        /// Where the event came from (`keyring-cli`).
        source: String,
    },
    /// `pgveil keyring destroy`.
    KeyDestroyed {
        /// The destroyed version.
        version: u32,
        /// Where the event came from (`keyring-cli`).
        source: String,
    },
    /// The configuration was reloaded (or a reload failed).
    ConfigReloaded {
        /// The configuration file.
        path: String,
        /// `ok` or `failed`.
        outcome: String,
        /// Why it failed; never values.
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A signed seal over everything before it (see docs/AUDIT.md).
    Checkpoint {
        /// `count`, `interval`, `rotate` or `shutdown`.
        reason: String,
        /// Records since the previous checkpoint (this one excluded).
        records: u64,
        /// SHA-256 commitment to the MAC key of the next record.
        key_commit: String,
    },
}

/// One statement on protected columns.
///
/// Shared parts are `Arc`s: a prepared statement's fingerprint, tables and
/// columns are computed once at Parse and only referenced per execution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatementRecord {
    /// Connection id (see [`Event::ConnectionOpened`]).
    pub conn: u64,
    /// PostgreSQL user.
    pub user: Arc<str>,
    /// Policy role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Arc<str>>,
    /// The SQL with every literal and parameter replaced by `?`; `None`
    /// when pgveil saw only the result (a prepared statement it did not plan).
    pub fingerprint: Option<Arc<str>>,
    /// `schema.table` of every protected column involved.
    pub tables: Arc<[Arc<str>]>,
    /// What happened to each protected column.
    pub columns: Arc<[ColumnUse]>,
    /// DataRows sent to the client.
    pub rows: u64,
    /// Bytes of those DataRows.
    pub bytes: u64,
    /// Rows the server reported in CommandComplete (INSERT/UPDATE/COPY ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affected: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
    /// SQLSTATE of the error, when it failed (never the message: server
    /// messages can quote values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<Arc<str>>,
    /// From the client's request to the end of the result.
    pub duration_us: u64,
    /// The approval that allowed it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// A protected column and what pgveil did with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnUse {
    /// `schema.table.column`.
    pub column: Arc<str>,
    /// What happened to it.
    pub action: ColumnAction,
}

/// What pgveil did with one protected column in one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnAction {
    /// Written or compared as ciphertext.
    Encrypted,
    /// Shown (or, for a plaintext-stored column, written) in the clear.
    Clear,
    /// Shown through a mask.
    Masked,
    /// Shown as a keyed pseudonym.
    Pseudonym,
    /// Shown as NULL.
    Null,
    /// The role may not receive it: the result was refused.
    Denied,
}

impl ColumnAction {
    /// The action a read-policy decision stands for.
    pub fn of(action: &crate::policy::role::Action) -> Self {
        use crate::policy::mask::MaskSpec;
        use crate::policy::role::Action;
        match action {
            Action::Clear => ColumnAction::Clear,
            Action::Mask(MaskSpec::Pseudonym) => ColumnAction::Pseudonym,
            Action::Mask(_) => ColumnAction::Masked,
            Action::Null => ColumnAction::Null,
            Action::Deny => ColumnAction::Denied,
        }
    }
}

/// How a statement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Completed.
    #[default]
    Ok,
    /// pgveil refused it (policy, unsupported operation, audit unavailable).
    Refused,
    /// A bulk-read guard blocked it.
    Blocked,
    /// The server reported an error.
    Error,
}

/// A bulk-read approval was issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalIssued {
    /// Approval id.
    pub approval: String,
    /// Who asked.
    pub requester: String,
    /// Who approved (never the requester).
    pub approver: String,
    /// What it allows (the tables whose caps it lifts), never values.
    pub scope: String,
    /// Rows per statement it allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    /// Consumed by its first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_use: Option<bool>,
    /// Until when it is valid (RFC 3339), when limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// A bulk-read approval was used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalUsed {
    /// Approval id.
    pub approval: String,
    /// Who used it.
    pub user: String,
    /// The connection it was used on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conn: Option<u64>,
}

/// An event with the time it happened (formatted by the writer, off the
/// session's path).
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    /// When it happened.
    pub ts: SystemTime,
    /// The event.
    pub event: Event,
}

impl Stamped {
    /// Stamps `event` with the current time.
    pub fn now(event: Event) -> Self {
        Stamped {
            ts: SystemTime::now(),
            event,
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339, UTC) without a date library.
pub fn rfc3339(t: SystemTime) -> String {
    let mut out = Vec::with_capacity(24);
    write_rfc3339(t, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends [`rfc3339`] of `t` to `out`, digit by digit (no formatting
/// machinery: the writer does this for every record).
pub fn write_rfc3339(t: SystemTime, out: &mut Vec<u8>) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let rem = secs % 86_400;
    let (year, month, day) = crate::crypto::civil_from_days((secs / 86_400) as i64);
    fn digits(out: &mut Vec<u8>, n: u64, width: usize) {
        let mut buf = [b'0'; 4];
        let mut n = n;
        for slot in buf[..width].iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&buf[..width]);
    }
    digits(out, year.clamp(0, 9999) as u64, 4);
    let parts: [(u8, u64, usize); 6] = [
        (b'-', month as u64, 2),
        (b'-', day as u64, 2),
        (b'T', rem / 3600, 2),
        (b':', rem / 60 % 60, 2),
        (b':', rem % 60, 2),
        (b'.', u64::from(d.subsec_millis()), 3),
    ];
    for (sep, n, width) in parts {
        out.push(sep);
        digits(out, n, width);
    }
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn statement_serializes_flat_with_kind() {
        let e = Event::Statement(Box::new(StatementRecord {
            conn: 3,
            user: "alice".into(),
            role: None,
            fingerprint: Some("SELECT phone FROM guests WHERE id = ?".into()),
            tables: vec!["public.guests".into()].into(),
            columns: vec![ColumnUse {
                column: "public.guests.phone".into(),
                action: ColumnAction::Masked,
            }]
            .into(),
            rows: 1,
            bytes: 0,
            affected: None,
            outcome: Outcome::Ok,
            sqlstate: None,
            duration_us: 0,
            approval: None,
        }));
        let v: serde_json::Value = serde_json::to_value(&e).expect("json");
        assert_eq!(v["kind"], "statement");
        assert_eq!(v["columns"][0]["action"], "masked");
        assert_eq!(v["outcome"], "ok");
        assert!(v.get("approval").is_none());
    }
}
