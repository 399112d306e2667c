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

use super::chain::Head;
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

/// One statement on protected columns, as the session knows it at the
/// end of the statement: borrowed from its bookkeeping and written by hand
/// into the sealed line (`kind` = `statement`), so recording a statement
/// builds no owned record and runs no serializer.
#[derive(Debug, Clone, Copy)]
pub struct StatementView<'a> {
    /// Connection id (see [`Event::ConnectionOpened`]).
    pub conn: u64,
    /// PostgreSQL user.
    pub user: &'a str,
    /// Policy role.
    pub role: Option<&'a str>,
    /// The SQL with every literal and parameter replaced by `?`; `None`
    /// when pgveil saw only the result (a prepared statement it did not plan).
    pub fingerprint: Option<&'a str>,
    /// Columns in the result, with what the role was shown.
    pub shown: &'a [ColumnUse],
    /// Columns the plan touched; those not in `shown` are listed after it
    /// with how they reached the server.
    pub planned: &'a [ColumnUse],
    /// DataRows sent to the client.
    pub rows: u64,
    /// Bytes of those DataRows.
    pub bytes: u64,
    /// Rows the server reported in CommandComplete (INSERT/UPDATE/COPY ...).
    pub affected: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
    /// SQLSTATE of the error, when it failed (never the message: server
    /// messages can quote values).
    pub sqlstate: Option<&'a str>,
    /// From the client's request to the end of the result.
    pub duration_us: u64,
    /// The approval that allowed it, if any.
    pub approval: Option<&'a str>,
    /// The query of a prepared statement's records (its fingerprint,
    /// tables and columns as [`StatementView::write_head`] wrote them for
    /// the first execution), when they are the same: its records then copy
    /// it or refer to it instead of escaping and hashing the same strings
    /// again.
    pub written: Option<&'a Head>,
}

impl StatementView<'_> {
    /// Every protected column involved, each once: the result's first.
    pub fn columns(&self) -> impl Iterator<Item = &ColumnUse> {
        let shown = self.shown;
        shown.iter().chain(
            self.planned
                .iter()
                .filter(move |c| !shown.iter().any(|s| s.column == c.column)),
        )
    }

    /// Appends `{"kind":"statement","query":…,"fingerprint":…,"tables":[…],
    /// "columns":[…]`: what repeats from one execution of a prepared
    /// statement to the next. `query` names it for later records (see
    /// `chain::Head`); a record without a query (its result shown
    /// differently from the query's, or no plan kept) has none.
    pub fn write_head(&self, query: Option<u64>, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"kind\":\"statement\"");
        if let Some(id) = query {
            number(out, b",\"query\":", id);
        }
        out.extend_from_slice(b",\"fingerprint\":");
        match self.fingerprint {
            Some(f) => write_json_str(out, f),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"tables\":[");
        let mut first = true;
        for (i, c) in self.columns().enumerate() {
            let table = table_of(&c.column);
            // Listed once, where it first appears.
            if self.columns().take(i).any(|p| table_of(&p.column) == table) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_json_str(out, table);
        }
        out.extend_from_slice(b"],\"columns\":[");
        for (i, c) in self.columns().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"column\":");
            write_json_str(out, &c.column);
            out.extend_from_slice(b",\"action\":\"");
            out.extend_from_slice(c.action.as_str().as_bytes());
            out.extend_from_slice(b"\"}");
        }
        out.push(b']');
    }

    /// Appends `{"kind":"statement","query":<id>`: the start of a record
    /// whose query was written in full earlier in the same file.
    pub fn write_reference(query: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"kind\":\"statement\"");
        number(out, b",\"query\":", query);
    }

    /// Appends the fields after the head, `,"conn":…`: who ran it and how
    /// this execution went.
    pub fn write_rest(&self, out: &mut Vec<u8>) {
        number(out, b",\"conn\":", self.conn);
        string(out, b",\"user\":", self.user);
        if let Some(role) = self.role {
            string(out, b",\"role\":", role);
        }
        number(out, b",\"rows\":", self.rows);
        number(out, b",\"bytes\":", self.bytes);
        if let Some(n) = self.affected {
            number(out, b",\"affected\":", n);
        }
        string(out, b",\"outcome\":", self.outcome.as_str());
        if let Some(code) = self.sqlstate {
            string(out, b",\"sqlstate\":", code);
        }
        number(out, b",\"duration_us\":", self.duration_us);
        if let Some(id) = self.approval {
            string(out, b",\"approval\":", id);
        }
    }
}

/// `schema.table` of `schema.table.column`.
fn table_of(column: &str) -> &str {
    column.rsplit_once('.').map_or("", |(t, _)| t)
}

/// Appends `,"key":` (as given) and `n`.
fn number(out: &mut Vec<u8>, key: &[u8], n: u64) {
    out.extend_from_slice(key);
    write_u64(out, n);
}

/// Appends `,"key":` (as given) and `s` as a JSON string.
fn string(out: &mut Vec<u8>, key: &[u8], s: &str) {
    out.extend_from_slice(key);
    write_json_str(out, s);
}

/// Appends `n` in decimal.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 15)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
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
    /// The name written in records.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnAction::Encrypted => "encrypted",
            ColumnAction::Clear => "clear",
            ColumnAction::Masked => "masked",
            ColumnAction::Pseudonym => "pseudonym",
            ColumnAction::Null => "null",
            ColumnAction::Denied => "denied",
        }
    }

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

impl Outcome {
    /// The name written in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Blocked => "blocked",
            Outcome::Error => "error",
        }
    }
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

    fn statement_json(view: &StatementView<'_>) -> serde_json::Value {
        let mut out = Vec::new();
        view.write_head(None, &mut out);
        view.write_rest(&mut out);
        out.push(b'}');
        serde_json::from_slice(&out).expect("the hand-written fields are JSON")
    }

    #[test]
    fn statement_fields_are_flat_with_kind() {
        let shown = [ColumnUse {
            column: "public.guests.phone".into(),
            action: ColumnAction::Masked,
        }];
        let planned = [
            ColumnUse {
                column: "public.guests.phone".into(),
                action: ColumnAction::Encrypted,
            },
            ColumnUse {
                column: "public.rooms.code".into(),
                action: ColumnAction::Encrypted,
            },
            ColumnUse {
                column: "public.guests.name".into(),
                action: ColumnAction::Encrypted,
            },
        ];
        let view = StatementView {
            conn: 3,
            user: "al\"ice",
            role: None,
            fingerprint: Some("SELECT phone FROM guests WHERE id = ?"),
            shown: &shown,
            planned: &planned,
            rows: 1,
            bytes: 0,
            affected: None,
            outcome: Outcome::Ok,
            sqlstate: None,
            duration_us: 12,
            approval: None,
            written: None,
        };
        assert_eq!(
            statement_json(&view),
            serde_json::json!({
                "kind": "statement", "conn": 3, "user": "al\"ice",
                "fingerprint": "SELECT phone FROM guests WHERE id = ?",
                "tables": ["public.guests", "public.rooms"],
                "columns": [
                    {"column": "public.guests.phone", "action": "masked"},
                    {"column": "public.rooms.code", "action": "encrypted"},
                    {"column": "public.guests.name", "action": "encrypted"},
                ],
                "rows": 1, "bytes": 0, "outcome": "ok", "duration_us": 12,
            })
        );
        // A query's head is the same start under its id.
        let head = Head::of(&view);
        let mut direct = Vec::new();
        view.write_head(Some(head.query()), &mut direct);
        assert_eq!(direct, head.bytes());
        let v: serde_json::Value = serde_json::from_slice(&[&direct[..], b"}"].concat())
            .expect("a head is the start of an object");
        assert_eq!(v["query"], head.query());
        assert_eq!(v["tables"], statement_json(&view)["tables"]);
        let mut reference = Vec::new();
        StatementView::write_reference(head.query(), &mut reference);
        assert_eq!(
            String::from_utf8_lossy(&reference),
            format!("{{\"kind\":\"statement\",\"query\":{}", head.query())
        );
        let failed = StatementView {
            role: Some("desk"),
            fingerprint: None,
            shown: &[],
            affected: Some(u64::MAX),
            outcome: Outcome::Refused,
            sqlstate: Some("42501"),
            approval: Some("ap-1"),
            ..view
        };
        let v = statement_json(&failed);
        assert_eq!(v["role"], "desk");
        assert!(v["fingerprint"].is_null());
        assert_eq!(v["columns"][0]["action"], "encrypted");
        assert_eq!(
            v["tables"],
            serde_json::json!(["public.guests", "public.rooms"])
        );
        assert_eq!(v["affected"], u64::MAX);
        assert_eq!(v["outcome"], "refused");
        assert_eq!(v["sqlstate"], "42501");
        assert_eq!(v["approval"], "ap-1");
    }

    #[test]
    fn names_match_serde() {
        for a in [
            ColumnAction::Encrypted,
            ColumnAction::Clear,
            ColumnAction::Masked,
            ColumnAction::Pseudonym,
            ColumnAction::Null,
            ColumnAction::Denied,
        ] {
            assert_eq!(serde_json::to_value(a).expect("json"), a.as_str());
        }
        for o in [
            Outcome::Ok,
            Outcome::Refused,
            Outcome::Blocked,
            Outcome::Error,
        ] {
            assert_eq!(serde_json::to_value(o).expect("json"), o.as_str());
        }
    }

    proptest::proptest! {
        #[test]
        fn strings_and_numbers_are_written_as_serde_writes_them(s in "\\PC*|[\\x00-\\x20\"\\\\a-z\u{7f}\u{e9}]*", n in proptest::num::u64::ANY) {
            let mut out = Vec::new();
            write_json_str(&mut out, &s);
            proptest::prop_assert_eq!(out, serde_json::to_vec(&s).expect("json"));
            let mut num = Vec::new();
            write_u64(&mut num, n);
            proptest::prop_assert_eq!(num, n.to_string().into_bytes());
        }
    }
}
