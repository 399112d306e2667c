//! One session's audit state: connection events and one record per
//! statement on protected columns.
//!
//! The session calls in as frames pass (see `session/protect/audit.rs`):
//! client requests open *units* in request order — a simple Query, an
//! Execute, a Sync — and the frames pgveil sends back to the client close
//! them: CommandComplete / EmptyQuery / PortalSuspended / ErrorResponse end
//! an Execute, ReadyForQuery ends everything up to its Sync or Query. A
//! unit becomes a record when its plan touched a protected column or its
//! result carried one; rows and bytes are counted from the DataRows the
//! client actually received.
//!
//! Such a statement is forwarded only while the trail is healthy;
//! otherwise it is refused with SQLSTATE 58030, so no access to protected
//! data goes unrecorded. Its record is sealed once its result has ended
//! and the reply has been handed to the client socket (see
//! `seal_finished` and `sealer.rs`), borrowing from this bookkeeping
//! rather than copying it; sealing so stays off the client's round trip.
//!
//! Per execution this costs a boxed entry and a shared reference to the
//! result's columns: what a statement's plan says (fingerprint, columns) is
//! computed once at Parse and shared by `Arc` with every execution, and the
//! JSON of it written for the first execution (with its digest state) is
//! the statement's query: later executions with the same result copy it,
//! or, in the same file, refer to it by id (`chain::Head`).

use crate::proto::name::{Name, NameMap};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::chain::Head;
use super::error::{AUDIT_UNAVAILABLE_MESSAGE, AUDIT_UNAVAILABLE_SQLSTATE};
use super::fingerprint::fingerprint;
use super::handle::Audit;
use super::planned::{same_result, Planned, ResultColumns, Written};
use super::record::{ColumnAction, ColumnUse, Event, Outcome, StatementView};
use crate::net::Frame;
use crate::policy::role::Action;
use crate::sql::Refusal;

/// A statement being recorded.
#[derive(Debug)]
struct Open {
    /// The statement's plan (absent when only its result was protected).
    planned: Option<Arc<Planned>>,
    /// Fingerprint of a statement opened from its result.
    fingerprint: Option<Arc<str>>,
    /// Columns in its result, with what the role was shown.
    shown: Vec<ColumnUse>,
    /// An Execute's result, expanded into `shown` only when sealing.
    result: Option<Arc<dyn ResultColumns>>,
    started: Instant,
    rows: u64,
    bytes: u64,
    affected: Option<u64>,
    outcome: Option<(Outcome, Option<Arc<str>>)>,
    approval: Option<String>,
    /// The result's columns have been merged in (Execute units).
    shaped: bool,
}

impl Open {
    fn new(planned: Option<Arc<Planned>>, fingerprint: Option<Arc<str>>) -> Box<Self> {
        let outcome = planned
            .as_ref()
            .and_then(|p| p.refused)
            .map(|code| (Outcome::Refused, Some(Arc::from(code))));
        Box::new(Open {
            planned,
            fingerprint,
            shown: Vec::new(),
            result: None,
            started: Instant::now(),
            rows: 0,
            bytes: 0,
            affected: None,
            outcome,
            approval: None,
            shaped: false,
        })
    }

    /// Adds a result column to `shown`, once per column and action.
    fn show(&mut self, name: &str, action: &Action) {
        let action = ColumnAction::of(action);
        if self
            .shown
            .iter()
            .any(|c| &*c.column == name && c.action == action)
        {
            return;
        }
        // Reuse the plan's copy of the name when it has one.
        let column = self
            .planned
            .as_ref()
            .and_then(|p| p.columns.iter().find(|c| &*c.column == name))
            .map_or_else(|| Arc::from(name), |c| c.column.clone());
        self.shown.push(ColumnUse { column, action });
    }

    fn fail(&mut self, outcome: Outcome, sqlstate: Option<Arc<str>>) {
        if self.outcome.is_none() {
            self.outcome = Some((outcome, sqlstate));
        }
    }
}

/// A request awaiting its reply.
#[derive(Debug)]
struct Unit {
    /// An Execute (ended by CommandComplete …); otherwise a Query or Sync
    /// (ended by ReadyForQuery).
    execute: bool,
    open: Option<Box<Open>>,
    /// A simple query planned as untouched, kept (a shared reference to
    /// the received frame, no copy) in case its result turns out protected.
    query: Option<Frame>,
    /// The fingerprint of an Execute whose statement looked untouched but
    /// may return protected columns (`FETCH`, `EXECUTE`), for the record
    /// opened if its result does.
    fingerprint: Option<Arc<str>>,
}

/// A statement whose result has ended, waiting to be sealed once its
/// reply is on its way to the client.
#[derive(Debug)]
struct Finished {
    open: Box<Open>,
    role: Option<Arc<str>>,
    outcome: Outcome,
    sqlstate: Option<Arc<str>>,
    duration_us: u64,
}

/// One session's audit state.
#[derive(Debug)]
pub struct SessionAudit {
    audit: Arc<Audit>,
    conn: u64,
    client: String,
    user: Arc<str>,
    role: Option<Arc<str>>,
    opened: Option<Instant>,
    statements: u64,
    units: VecDeque<Unit>,
    prepared: NameMap<Arc<Planned>>,
    portals: NameMap<Arc<Planned>>,
    /// A Parse or Bind pgveil refused: its record is opened at the Sync.
    refused_pending: Option<Arc<Planned>>,
    /// The first error of the current batch, for the requests it skipped.
    batch_error: Option<(Outcome, Option<Arc<str>>)>,
    /// Approvals already recorded as used on this connection.
    approvals_used: Vec<String>,
    /// Ended statements not sealed yet (see [`SessionAudit::seal_finished`]).
    finished: Vec<Finished>,
}

/// The refusal for statements that cannot be recorded.
pub fn unavailable() -> Refusal {
    Refusal {
        sqlstate: AUDIT_UNAVAILABLE_SQLSTATE,
        message: AUDIT_UNAVAILABLE_MESSAGE.to_owned(),
    }
}

impl SessionAudit {
    pub(super) fn new(audit: Arc<Audit>, conn: u64, client: SocketAddr) -> Self {
        SessionAudit {
            audit,
            conn,
            client: client.to_string(),
            user: Arc::from(""),
            role: None,
            opened: None,
            statements: 0,
            units: VecDeque::new(),
            prepared: NameMap::default(),
            portals: NameMap::default(),
            refused_pending: None,
            batch_error: None,
            approvals_used: Vec::new(),
            finished: Vec::new(),
        }
    }

    /// The client authenticated as `user` with policy role `role`.
    pub fn opened(&mut self, user: &str, role: Option<&str>) {
        if self.opened.is_some() {
            return;
        }
        self.user = Arc::from(user);
        self.role = role.map(Arc::from);
        self.opened = Some(Instant::now());
        let _ = self.audit.log(Event::ConnectionOpened {
            conn: self.conn,
            user: user.to_owned(),
            role: role.map(str::to_owned),
            client: self.client.clone(),
        });
    }

    /// Opens a record for `planned`. `Err`: the statement must be refused
    /// (pgveil refuses it anyway, or the trail cannot record it).
    fn open(&self, planned: Arc<Planned>) -> (Box<Open>, Result<(), Refusal>) {
        let refused = planned.refused.is_some();
        let mut open = Open::new(Some(planned), None);
        if refused {
            return (open, Ok(()));
        }
        let gate = self.admit(&mut open);
        (open, gate)
    }

    /// Whether the trail can record the statement; refuses it when not.
    fn admit(&self, open: &mut Open) -> Result<(), Refusal> {
        if self.audit.healthy() {
            return Ok(());
        }
        open.fail(
            Outcome::Refused,
            Some(Arc::from(AUDIT_UNAVAILABLE_SQLSTATE)),
        );
        Err(unavailable())
    }

    /// A simple Query with its plan. `Err` means it must be refused
    /// because it cannot be recorded.
    pub fn query(&mut self, planned: Option<Planned>, frame: &Frame) -> Result<(), Refusal> {
        let (open, gate) = match planned {
            None => (None, Ok(())),
            Some(p) => {
                let (open, gate) = self.open(Arc::new(p));
                (Some(open), gate)
            }
        };
        let query = open.is_none().then(|| frame.clone());
        self.units.push_back(Unit {
            execute: false,
            open,
            query,
            fingerprint: None,
        });
        gate
    }

    /// Parse of a statement (`None`: it touches nothing protected).
    pub fn parse(&mut self, name: &[u8], planned: Option<Planned>) {
        match planned {
            Some(p) => {
                self.prepared.insert(Name::new(name), Arc::new(p));
            }
            None => {
                self.prepared.remove(name);
            }
        }
    }

    /// Bind of `statement` into `portal`.
    pub fn bind(&mut self, portal: &[u8], statement: &[u8]) {
        match self.prepared.get(statement) {
            Some(p) => {
                let p = p.clone();
                match self.portals.get_mut(portal) {
                    Some(slot) => *slot = p,
                    None => {
                        self.portals.insert(Name::new(portal), p);
                    }
                }
            }
            None => {
                self.portals.remove(portal);
            }
        }
    }

    /// Close of a statement (`b'S'`) or portal.
    pub fn close(&mut self, kind: u8, name: &[u8]) {
        if kind == b'S' {
            self.prepared.remove(name);
        } else {
            self.portals.remove(name);
        }
    }

    /// Execute of `portal`. `Err` means it must be refused because it
    /// cannot be recorded.
    pub fn execute(&mut self, portal: &[u8]) -> Result<(), Refusal> {
        let mut fingerprint = None;
        let (open, gate) = match self.portals.get(portal).cloned() {
            None => (None, Ok(())),
            Some(p) if p.result_only => {
                fingerprint = Some(p.fingerprint.clone());
                (None, Ok(()))
            }
            Some(p) => {
                let (open, gate) = self.open(p);
                (Some(open), gate)
            }
        };
        self.units.push_back(Unit {
            execute: true,
            open,
            query: None,
            fingerprint,
        });
        gate
    }

    /// A Sync or FunctionCall: answered by ReadyForQuery.
    pub fn sync(&mut self) {
        if let Some(p) = self.refused_pending.take() {
            // pgveil refused a Parse or Bind of this batch and injects the
            // failing statement before this Sync: record it there.
            self.units.push_back(Unit {
                execute: true,
                open: Some(Open::new(Some(p), None)),
                query: None,
                fingerprint: None,
            });
        }
        self.units.push_back(Unit {
            execute: false,
            open: None,
            query: None,
            fingerprint: None,
        });
    }

    /// pgveil refused the request just followed (a Query or an Execute)
    /// before sending it, because it returns `column`, which the role is
    /// denied.
    pub fn refused_read(&mut self, column: &str) {
        let Some(open) = self.units.back_mut().and_then(|u| u.open.as_mut()) else {
            return;
        };
        open.shown.push(ColumnUse {
            column: Arc::from(column),
            action: ColumnAction::Denied,
        });
        open.fail(Outcome::Refused, Some(Arc::from("42501")));
    }

    /// pgveil refused the Parse of `statement` or a Bind of it.
    pub fn refused_request(&mut self, statement: &[u8]) {
        let p = self.prepared.get(statement).cloned();
        if self.refused_pending.is_none() {
            self.refused_pending = p;
        }
    }

    /// The policy role now in effect (it follows `SET ROLE`).
    pub fn note_role(&mut self, role: Option<&str>) {
        if self.role.as_deref() != role {
            self.role = role.map(Arc::from);
        }
    }

    /// The approval the result being released runs under (vault rule).
    pub fn note_approval(&mut self, approval: &str) {
        if let Some(open) = self.units.front_mut().and_then(|u| u.open.as_mut()) {
            if open.approval.as_deref() != Some(approval) {
                open.approval = Some(approval.to_owned());
            }
        }
    }

    /// A bulk-read guard blocked the latest statement.
    pub fn mark_blocked(&mut self) {
        if let Some(open) = self.units.back_mut().and_then(|u| u.open.as_mut()) {
            open.fail(Outcome::Blocked, None);
        }
    }

    /// Whether the next DataRow's row shape is wanted (an Execute not yet
    /// shaped).
    pub fn wants_row_shape(&self) -> bool {
        self.units
            .front()
            .is_some_and(|u| u.execute && u.open.as_ref().is_none_or(|o| !o.shaped))
    }

    /// Whether a RowDescription's shape is wanted (a simple query's result).
    pub fn wants_description_shape(&self) -> bool {
        self.units.front().is_some_and(|u| !u.execute)
    }

    /// The current result has these protected columns, shown with these
    /// actions. Opens a record for a statement whose text looked untouched
    /// (FETCH from a cursor, EXECUTE of a prepared statement); `Err` means
    /// the result must be refused because it cannot be recorded.
    pub fn shape<'a>(
        &mut self,
        columns: impl Iterator<Item = (&'a str, &'a Action)>,
    ) -> Result<(), Refusal> {
        let mut result = Ok(());
        let needs_open = self.units.front().is_some_and(|u| u.open.is_none());
        if needs_open {
            let unit = self.units.front_mut();
            let (query, fp) = unit.map_or((None, None), |u| (u.query.take(), u.fingerprint.take()));
            let fp = fp.or_else(|| {
                query.and_then(|f| {
                    crate::proto::extended::query_text(f.body())
                        .map(|t| Arc::from(fingerprint(&String::from_utf8_lossy(t))))
                })
            });
            let mut open = Open::new(None, fp);
            result = self.admit(&mut open);
            if let Some(unit) = self.units.front_mut() {
                unit.open = Some(open);
            }
        }
        let Some(open) = self.units.front_mut().and_then(|u| u.open.as_mut()) else {
            return result;
        };
        open.shaped = true;
        for (name, action) in columns {
            open.show(name, action);
        }
        result
    }

    /// [`SessionAudit::shape`] for an Execute's result: when the record is
    /// already open and has no columns yet (the usual case), only a shared
    /// reference is kept, read when the record is sealed.
    pub fn shape_result(&mut self, result: Arc<dyn ResultColumns>) -> Result<(), Refusal> {
        if let Some(open) = self.units.front_mut().and_then(|u| u.open.as_mut()) {
            if open.shown.is_empty() && open.result.is_none() {
                open.shaped = true;
                open.result = Some(result);
                return Ok(());
            }
        }
        let mut columns = Vec::new();
        result.each(&mut |name, action| columns.push((name.to_owned(), action.clone())));
        self.shape(columns.iter().map(|(n, a)| (n.as_str(), a)))
    }

    /// Frames pgveil sent to the client in answer to one server frame.
    pub fn server_output(&mut self, mut out: &[u8]) {
        while out.len() >= 5 {
            let tag = out[0];
            let len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize + 1;
            let Some(frame) = out.get(..len) else {
                return;
            };
            self.server_frame(tag, frame);
            out = &out[len..];
        }
    }

    fn server_frame(&mut self, tag: u8, frame: &[u8]) {
        match tag {
            // DataRows, and CopyData of a COPY … TO STDOUT.
            b'D' | b'd' => {
                if let Some(open) = self.units.front_mut().and_then(|u| u.open.as_mut()) {
                    open.rows += 1;
                    open.bytes += frame.len() as u64;
                }
            }
            b'C' => {
                if let Some(open) = self.units.front_mut().and_then(|u| u.open.as_mut()) {
                    if let Some(n) = command_rows(frame.get(5..).unwrap_or_default()) {
                        open.affected = Some(open.affected.unwrap_or(0) + n);
                    }
                }
                self.end_execute();
            }
            b'I' | b's' => self.end_execute(),
            b'E' => {
                let body = frame.get(5..).unwrap_or_default();
                let code: Option<Arc<str>> = error_field(body, b'C').map(Arc::from);
                let message = error_field(body, b'M').unwrap_or("");
                let outcome = if message.starts_with("pgveil: bulk read refused") {
                    // The bulk-read guard's refusals (caps and windows).
                    Outcome::Blocked
                } else if message.starts_with("pgveil:") {
                    Outcome::Refused
                } else {
                    Outcome::Error
                };
                if self.batch_error.is_none() {
                    self.batch_error = Some((outcome, code.clone()));
                }
                if let Some(unit) = self.units.front_mut() {
                    if let Some(open) = unit.open.as_mut() {
                        open.fail(outcome, code);
                    }
                    if unit.execute {
                        self.end_execute();
                    }
                }
            }
            b'Z' => {
                while let Some(mut unit) = self.units.pop_front() {
                    if let (Some(open), Some((o, code))) = (unit.open.as_mut(), &self.batch_error) {
                        // Skipped after an error, or its completion swallowed.
                        open.fail(*o, code.clone());
                    }
                    let ready = !unit.execute;
                    self.finish(unit);
                    if ready {
                        break;
                    }
                }
                self.batch_error = None;
            }
            _ => {}
        }
    }

    fn end_execute(&mut self) {
        if self.units.front().is_some_and(|u| u.execute) {
            if let Some(unit) = self.units.pop_front() {
                self.finish(unit);
            }
        }
    }

    fn finish(&mut self, unit: Unit) {
        let Some(mut open) = unit.open else {
            return;
        };
        self.statements += 1;
        let (outcome, sqlstate) = open.outcome.take().unwrap_or((Outcome::Ok, None));
        if let Some(id) = open.approval.as_deref() {
            if !self.approvals_used.iter().any(|a| a == id) {
                self.approvals_used.push(id.to_owned());
                let _ = self
                    .audit
                    .log(Event::ApprovalUsed(super::record::ApprovalUsed {
                        approval: id.to_owned(),
                        user: self.user.to_string(),
                        conn: Some(self.conn),
                    }));
            }
        }
        let duration_us = u64::try_from(open.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if self.finished.is_empty() {
            self.audit.sealing_soon.fetch_add(1, Ordering::AcqRel);
        }
        self.finished.push(Finished {
            open,
            role: self.role.clone(),
            outcome,
            sqlstate,
            duration_us,
        });
    }

    /// Seals the records of the statements that have ended. The session
    /// calls this once it has handed their replies to the client socket,
    /// so that sealing (about a microsecond each) is not on the client's
    /// round trip; nothing else happens in between, and the records keep
    /// their order.
    pub fn seal_finished(&mut self) {
        if self.finished.is_empty() {
            return;
        }
        for mut done in self.finished.drain(..) {
            let planned = done.open.planned.clone();
            let planned = planned.as_deref();
            // A later execution of the same result copies the first one's
            // parts without looking at its columns.
            let copied = match (&done.open.result, planned.and_then(|p| p.written.get())) {
                (Some(r), Some(w)) if done.open.shown.is_empty() => w
                    .result
                    .as_ref()
                    .filter(|wr| same_result(wr, r))
                    .map(|_| &w.head),
                _ => None,
            };
            if copied.is_none() {
                if let Some(result) = done.open.result.take() {
                    let open = &mut done.open;
                    result.each(&mut |name, action| open.show(name, action));
                    open.result = Some(result);
                }
            }
            let open = &done.open;
            let mut statement = StatementView {
                conn: self.conn,
                user: &self.user,
                role: done.role.as_deref(),
                fingerprint: planned
                    .map(|p| &*p.fingerprint)
                    .or(open.fingerprint.as_deref()),
                shown: &open.shown,
                planned: planned.map_or(&[][..], |p| &p.columns[..]),
                rows: open.rows,
                bytes: open.bytes,
                affected: open.affected,
                outcome: done.outcome,
                sqlstate: done.sqlstate.as_deref(),
                duration_us: done.duration_us,
                approval: open.approval.as_deref(),
                written: copied,
            };
            if let (Some(p), None) = (planned, copied) {
                // Later executions with the same result columns share the
                // first one's fingerprint, tables and columns as a query.
                let w = p.written.get_or_init(|| Written {
                    result: open.result.clone(),
                    shown: open.shown.clone(),
                    head: Head::of(&statement),
                });
                if w.shown == open.shown {
                    statement.written = Some(&w.head);
                }
            }
            // A failure marks the trail unhealthy (and is logged there), so
            // the next statements on protected columns are refused.
            let _ = self.audit.statement(&statement);
        }
        self.audit.sealing_soon.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for SessionAudit {
    fn drop(&mut self) {
        // Requests still waiting for a reply: the connection ended first.
        while let Some(mut unit) = self.units.pop_front() {
            if let Some(open) = unit.open.as_mut() {
                open.fail(Outcome::Error, Some(Arc::from("08006")));
            }
            self.finish(unit);
        }
        self.seal_finished();
        if let Some(opened) = self.opened {
            let _ = self.audit.log(Event::ConnectionClosed {
                conn: self.conn,
                user: self.user.to_string(),
                role: self.role.as_deref().map(str::to_owned),
                client: std::mem::take(&mut self.client),
                statements: self.statements,
                duration_ms: u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
        }
    }
}

/// The row count at the end of a CommandComplete tag (`INSERT 0 5`,
/// `UPDATE 3`, `COPY 10`, …).
fn command_rows(body: &[u8]) -> Option<u64> {
    let tag = body.strip_suffix(&[0]).unwrap_or(body);
    let last = tag.rsplit(|b| *b == b' ').next()?;
    std::str::from_utf8(last).ok()?.parse().ok()
}

/// One field of an ErrorResponse body.
fn error_field(body: &[u8], field: u8) -> Option<&str> {
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            return None;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if kind == field {
            return std::str::from_utf8(&tail[..end]).ok();
        }
        rest = tail.get(end + 1..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tags() {
        assert_eq!(command_rows(b"INSERT 0 5\0"), Some(5));
        assert_eq!(command_rows(b"UPDATE 3\0"), Some(3));
        assert_eq!(command_rows(b"BEGIN\0"), None);
    }

    #[test]
    fn error_fields() {
        let body = b"SERROR\0C58030\0Mpgveil: no\0\0";
        assert_eq!(error_field(body, b'C'), Some("58030"));
        assert_eq!(error_field(body, b'M'), Some("pgveil: no"));
        assert_eq!(error_field(body, b'D'), None);
    }
}
