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
//! Before such a statement is forwarded, a slot in the writer's queue is
//! reserved for its record. When none can be had (the trail is unhealthy
//! or its queue full) the statement is refused with SQLSTATE 58030, so no
//! access to protected data goes unrecorded.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::OwnedPermit;

use super::error::{AUDIT_UNAVAILABLE_MESSAGE, AUDIT_UNAVAILABLE_SQLSTATE};
use super::fingerprint::fingerprint;
use super::handle::Audit;
use super::record::{ColumnAction, ColumnUse, Event, Outcome, Stamped, StatementRecord};
use super::writer::Msg;
use crate::net::Frame;
use crate::policy::role::Action;
use crate::rewrite::Snapshot;
use crate::sql::{Plan, Refusal};

/// What planning said about one statement text, kept per prepared
/// statement and portal.
#[derive(Debug)]
pub struct Planned {
    fingerprint: String,
    columns: Vec<ColumnUse>,
    /// SQLSTATE when pgveil refused the statement at planning.
    refused: Option<&'static str>,
}

impl Planned {
    /// What the audit needs from a plan; `None` when the statement touches
    /// no protected column (and is not refused).
    pub fn of(sql: &str, plan: &Result<Arc<Plan>, Refusal>, snapshot: &Snapshot) -> Option<Self> {
        let encrypts = |name: &str| {
            snapshot
                .catalog()
                .protected_columns()
                .find(|c| c.full_name == name)
                .is_some_and(|c| c.protection.encrypts())
        };
        let columns = match plan {
            Ok(p) => match &**p {
                Plan::Passthrough => return None,
                Plan::Rewrite(rw) if rw.touched.is_empty() => return None,
                Plan::Rewrite(rw) => rw
                    .touched
                    .iter()
                    .map(|c| ColumnUse {
                        column: c.clone(),
                        action: if encrypts(c) {
                            ColumnAction::Encrypted
                        } else {
                            ColumnAction::Clear
                        },
                    })
                    .collect(),
                Plan::CopyIn(copy) => copy
                    .fields
                    .iter()
                    .flatten()
                    .map(|c| ColumnUse {
                        column: c.full_name.clone(),
                        action: ColumnAction::Encrypted,
                    })
                    .collect(),
            },
            Err(_) => Vec::new(),
        };
        Some(Planned {
            fingerprint: fingerprint(sql),
            columns,
            refused: plan.as_ref().err().map(|r| r.sqlstate),
        })
    }
}

/// A statement being recorded.
#[derive(Debug)]
struct Open {
    fingerprint: Option<String>,
    /// Columns the statement text touches (written, compared, read).
    columns: Vec<ColumnUse>,
    /// Columns in its result, with what the role was shown.
    shown: Vec<ColumnUse>,
    started: Instant,
    rows: u64,
    bytes: u64,
    affected: Option<u64>,
    outcome: Option<(Outcome, Option<String>)>,
    approval: Option<String>,
    /// The queue slot reserved for the record.
    permit: Option<OwnedPermit<Msg>>,
    /// The result's columns have been merged in (Execute units).
    shaped: bool,
}

impl Open {
    fn new(fingerprint: Option<String>, columns: Vec<ColumnUse>) -> Box<Self> {
        Box::new(Open {
            fingerprint,
            columns,
            shown: Vec::new(),
            started: Instant::now(),
            rows: 0,
            bytes: 0,
            affected: None,
            outcome: None,
            approval: None,
            permit: None,
            shaped: false,
        })
    }

    fn of(planned: &Planned) -> Box<Self> {
        let mut open = Open::new(Some(planned.fingerprint.clone()), planned.columns.clone());
        if planned.refused.is_some() {
            open.outcome = Some((Outcome::Refused, planned.refused.map(str::to_owned)));
        }
        open
    }

    fn fail(&mut self, outcome: Outcome, sqlstate: Option<String>) {
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
}

/// One session's audit state.
#[derive(Debug)]
pub struct SessionAudit {
    audit: Arc<Audit>,
    conn: u64,
    client: String,
    user: String,
    role: Option<String>,
    opened: Option<Instant>,
    statements: u64,
    units: VecDeque<Unit>,
    prepared: HashMap<Vec<u8>, Arc<Planned>>,
    portals: HashMap<Vec<u8>, Arc<Planned>>,
    /// A Parse or Bind pgveil refused: its record is opened at the Sync.
    refused_pending: Option<Arc<Planned>>,
    /// The first error of the current batch, for the requests it skipped.
    batch_error: Option<(Outcome, Option<String>)>,
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
            user: String::new(),
            role: None,
            opened: None,
            statements: 0,
            units: VecDeque::new(),
            prepared: HashMap::new(),
            portals: HashMap::new(),
            refused_pending: None,
            batch_error: None,
        }
    }

    /// The client authenticated as `user` with policy role `role`.
    pub fn opened(&mut self, user: &str, role: Option<&str>) {
        if self.opened.is_some() {
            return;
        }
        self.user = user.to_owned();
        self.role = role.map(str::to_owned);
        self.opened = Some(Instant::now());
        let _ = self.audit.log(Event::ConnectionOpened {
            conn: self.conn,
            user: self.user.clone(),
            role: self.role.clone(),
            client: self.client.clone(),
        });
    }

    /// Reserves the record's queue slot, or refuses.
    fn reserve(&self, open: &mut Open) -> Result<(), Refusal> {
        match self.audit.reserve() {
            Some(p) => {
                open.permit = Some(p);
                Ok(())
            }
            None => {
                open.fail(
                    Outcome::Refused,
                    Some(AUDIT_UNAVAILABLE_SQLSTATE.to_owned()),
                );
                Err(unavailable())
            }
        }
    }

    /// A simple Query with its plan. `Err` means it must be refused
    /// because it cannot be recorded.
    pub fn query(&mut self, planned: Option<Planned>, frame: &Frame) -> Result<(), Refusal> {
        let (open, gate) = match planned {
            None => (None, Ok(())),
            Some(p) => {
                let mut open = Open::of(&p);
                let gate = if p.refused.is_some() {
                    Ok(())
                } else {
                    self.reserve(&mut open)
                };
                (Some(open), gate)
            }
        };
        let query = open.is_none().then(|| frame.clone());
        self.units.push_back(Unit {
            execute: false,
            open,
            query,
        });
        gate
    }

    /// Parse of a statement (`None`: it touches nothing protected).
    pub fn parse(&mut self, name: &[u8], planned: Option<Planned>) {
        match planned {
            Some(p) => {
                self.prepared.insert(name.to_vec(), Arc::new(p));
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
                self.portals.insert(portal.to_vec(), p.clone());
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
        let (open, gate) = match self.portals.get(portal) {
            None => (None, Ok(())),
            Some(p) => {
                let mut open = Open::of(p);
                let gate = if p.refused.is_some() {
                    Ok(())
                } else {
                    self.reserve(&mut open)
                };
                (Some(open), gate)
            }
        };
        self.units.push_back(Unit {
            execute: true,
            open,
            query: None,
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
                open: Some(Open::of(&p)),
                query: None,
            });
        }
        self.units.push_back(Unit {
            execute: false,
            open: None,
            query: None,
        });
    }

    /// pgveil refused the Parse of `statement` or a Bind of it.
    pub fn refused_request(&mut self, statement: &[u8]) {
        let p = self.prepared.get(statement).cloned();
        if self.refused_pending.is_none() {
            self.refused_pending = p;
        }
    }

    /// The approval that allowed the latest statement (vault rule).
    pub fn note_approval(&mut self, approval: &str) {
        if let Some(open) = self.units.back_mut().and_then(|u| u.open.as_mut()) {
            open.approval = Some(approval.to_owned());
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
            .is_some_and(|u| u.execute && u.open.as_ref().map_or(true, |o| !o.shaped))
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
        let Some(unit) = self.units.front_mut() else {
            return Ok(());
        };
        let mut result = Ok(());
        if unit.open.is_none() {
            let fp = unit.query.take().and_then(|f| {
                crate::proto::extended::query_text(f.body())
                    .map(|t| fingerprint(&String::from_utf8_lossy(t)))
            });
            let mut open = Open::new(fp, Vec::new());
            match self.audit.reserve() {
                Some(p) => open.permit = Some(p),
                None => {
                    open.fail(
                        Outcome::Refused,
                        Some(AUDIT_UNAVAILABLE_SQLSTATE.to_owned()),
                    );
                    result = Err(unavailable());
                }
            }
            unit.open = Some(open);
        }
        if let Some(open) = unit.open.as_mut() {
            open.shaped = true;
            for (name, action) in columns {
                let use_ = ColumnUse {
                    column: name.to_owned(),
                    action: ColumnAction::of(action),
                };
                if !open.shown.contains(&use_) {
                    open.shown.push(use_);
                }
            }
        }
        result
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
            b'D' => {
                if let Some(open) = self.units.front_mut().and_then(|u| u.open.as_mut()) {
                    open.rows += 1;
                    open.bytes += frame.len() as u64;
                }
            }
            b'C' => {
                let affected = command_rows(frame.get(5..).unwrap_or_default());
                if let Some(open) = self.units.front_mut().and_then(|u| u.open.as_mut()) {
                    if let Some(n) = affected {
                        open.affected = Some(open.affected.unwrap_or(0) + n);
                    }
                }
                self.end_execute();
            }
            b'I' | b's' => self.end_execute(),
            b'E' => {
                let body = frame.get(5..).unwrap_or_default();
                let code = error_field(body, b'C').map(str::to_owned);
                let ours = error_field(body, b'M').is_some_and(|m| m.starts_with("pgveil:"));
                let outcome = if ours {
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
        // Columns in the result are reported by what the role was shown;
        // the others by how they reached the server.
        let mut columns = std::mem::take(&mut open.shown);
        for c in open.columns.drain(..) {
            if !columns.iter().any(|s| s.column == c.column) {
                columns.push(c);
            }
        }
        let mut tables: Vec<String> = Vec::new();
        for c in &columns {
            if let Some((table, _)) = c.column.rsplit_once('.') {
                if !tables.iter().any(|t| t == table) {
                    tables.push(table.to_owned());
                }
            }
        }
        let (outcome, sqlstate) = open.outcome.take().unwrap_or((Outcome::Ok, None));
        let record = Stamped::now(Event::Statement(Box::new(StatementRecord {
            conn: self.conn,
            user: self.user.clone(),
            role: self.role.clone(),
            fingerprint: open.fingerprint.take(),
            tables,
            columns,
            rows: open.rows,
            bytes: open.bytes,
            affected: open.affected,
            outcome,
            sqlstate,
            duration_us: u64::try_from(open.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            approval: open.approval.take(),
        })));
        match open.permit.take() {
            Some(permit) => {
                permit.send(Msg::Record(record));
            }
            None => {
                let _ = self.audit.send(record);
            }
        }
    }
}

impl Drop for SessionAudit {
    fn drop(&mut self) {
        // Requests still waiting for a reply: the connection ended first.
        while let Some(mut unit) = self.units.pop_front() {
            if let Some(open) = unit.open.as_mut() {
                open.fail(Outcome::Error, Some("08006".to_owned()));
            }
            self.finish(unit);
        }
        if let Some(opened) = self.opened {
            let _ = self.audit.log(Event::ConnectionClosed {
                conn: self.conn,
                user: std::mem::take(&mut self.user),
                role: self.role.take(),
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
