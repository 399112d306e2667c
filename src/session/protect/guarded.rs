//! The bulk-read guard's hooks on the session (the rules are in `guard`).
//!
//! Nothing here runs for a policy role without limits beyond one `Option`
//! check per statement and per protected row: such results stream as
//! before. For a capped role:
//!
//! * `SET pgveil.approval = '<token>'` is answered here for every protected
//!   session: the token is checked and kept, and the server gets
//!   `SET pgveil.approval TO DEFAULT` instead, so the client receives a
//!   genuine SET reply, in order, with the right transaction status, and
//!   the token never reaches the server.
//! * A Query, or an Execute of a prepared statement, is judged before it
//!   is relayed (`guard::precheck`); a refusal is injected like any other.
//!   The decision (which approval applies, which cursor each FETCH reads)
//!   travels with the request in the pending FIFO, so pipelined requests
//!   keep their own.
//! * A result whose RowDescription shows the role a protected column is
//!   held in a buffer (a simple query's RowDescription included) and
//!   released at CommandComplete/PortalSuspended once the user's window
//!   has room; crossing a cap discards it, replaces the rest of the result
//!   with one 42501 error and cancels the query upstream. Until the cancel
//!   has been delivered the relay reads no more server replies
//!   ([`Session::server_paused`]), so the client's next statement cannot be
//!   the one a late cancel hits.

use super::super::results::{rewrite_data_row, ResultPlan, RowPlan};
use super::super::Session;
use super::{Pending, Prepared, ProtectState};
use crate::guard::held::{Caps, Crossed, Held, Target};
use crate::guard::precheck::{self, Caller, Verdict};
use crate::guard::{cancel, how_to_approve, Approval, Guard, GuardError, Limits, Precheck};
use crate::policy::role::Action;
use crate::proto::keydata::CancelKey;
use crate::proto::name::{Name, NameMap};
use crate::rewrite::{refusal_sql, Snapshot};
use crate::server::Shared;
use crate::sql::approval::{approval_statement, ApprovalStmt};
use crate::sql::{bulk, BulkRead, ReadKind, Refusal};
use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A holding buffer above this capacity is freed after use rather than kept.
const KEEP_BUFFER: usize = 1 << 20;

/// Per-session guard state.
#[derive(Debug, Default)]
pub(in crate::session) struct GuardState {
    /// Login user: the window's key and the approval's owner.
    user: String,
    /// The upstream backend's own cancel key.
    backend_key: Option<CancelKey>,
    /// The approval set with `SET pgveil.approval`.
    approval: Option<Arc<Approval>>,
    /// The result being held, if any.
    held: Option<Held>,
    /// Its rows (and a simple query's RowDescription), reused.
    buf: BytesMut,
    /// Rows returned so far per open cursor declared over protected data.
    cursors: HashMap<String, Counted>,
    /// Rows returned so far per suspended portal.
    portals: NameMap<Counted>,
    /// A refused result's cancel, until the server has taken it.
    cancel_wait: Option<oneshot::Receiver<()>>,
    /// `precheck = "explain"`: the cap the next rendered Query's estimate
    /// is compared with, decided by `guard_query`.
    explain_cap: Option<(u64, Vec<String>)>,
    /// The Query waiting for its EXPLAIN's verdict.
    explain: Option<Explaining>,
}

/// A read held back until the server's row estimate is known.
#[derive(Debug)]
struct Explaining {
    /// The Query frame to send if the estimate is within the cap.
    query: BytesMut,
    cap: u64,
    /// Tables of the protected columns it reads, for the message.
    tables: Vec<String>,
    /// The root plan node's `Plan Rows`, once seen.
    estimate: Option<u64>,
}

/// Cumulative counts of a cursor or portal.
#[derive(Debug, Default, Clone)]
struct Counted {
    rows: u64,
    bytes: u64,
    /// The approval its statement ran under.
    approval: Option<Arc<Approval>>,
}

/// What the guard decided for a simple Query (kept in its pending entry).
#[derive(Debug, Default)]
pub(in crate::session) struct QueryGuard {
    /// The approval its results may run under.
    approval: Option<Arc<Approval>>,
    /// The cursor each statement FETCHes from, when it names one.
    fetches: Option<Vec<Option<String>>>,
    /// Statements of the text completed so far.
    done: usize,
}

/// What the guard decided for an Execute (kept in its pending entry).
#[derive(Debug, Clone)]
pub(in crate::session) struct ExecGuard {
    portal: Vec<u8>,
    /// The cursor a prepared FETCH reads.
    cursor: Option<String>,
    approval: Option<Arc<Approval>>,
}

/// What a prepared statement's analysis says, for checking its Executes.
#[derive(Debug, Clone)]
pub(in crate::session) struct PreparedGuard {
    reads: Arc<crate::rewrite::Analyzed>,
    /// The cursor it FETCHes from, if it is a FETCH.
    fetch: Option<String>,
}

impl Session<'_> {
    /// Whether server replies must wait: a refused result's cancel is on
    /// its way. One branch for sessions without protection.
    #[inline]
    pub(in crate::session) fn server_paused(&self) -> bool {
        self.protect
            .as_ref()
            .is_some_and(|p| p.guard.cancel_wait.is_some())
    }

    /// Ready once the pending cancel has been delivered (or failed); the
    /// caller then resumes reading the server.
    pub(in crate::session) fn poll_resume(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(wait) = self
            .protect
            .as_mut()
            .and_then(|p| p.guard.cancel_wait.as_mut())
        else {
            return Poll::Ready(());
        };
        match std::pin::Pin::new(wait).poll(cx) {
            Poll::Ready(_) => {
                if let Some(p) = self.protect.as_mut() {
                    p.guard.cancel_wait = None;
                }
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

use std::future::Future;

impl ProtectState {
    /// Remembers who the session belongs to, once authenticated.
    pub(in crate::session) fn guard_authenticated(&mut self, user: &str) {
        self.guard.user = user.to_owned();
    }

    /// Remembers the upstream backend's cancel key.
    pub(in crate::session) fn note_backend_key(&mut self, key: &CancelKey) {
        self.guard.backend_key = Some(key.clone());
    }

    fn limits(&self) -> Option<Limits> {
        self.role.as_ref().and_then(|r| r.limits)
    }

    /// Answers `SET pgveil.approval …` / `RESET pgveil.approval`: returns
    /// the text to send the server instead, or `None` for any other query.
    pub(super) fn intercept_approval(&mut self, guard: &Guard, sql: &str) -> Option<String> {
        let stmt = approval_statement(sql)?;
        let user = self.guard.user.clone();
        Some(match stmt {
            ApprovalStmt::Set(token) => match guard.accept(&token, &user) {
                Ok(a) => {
                    tracing::info!(%user, approval = %a.id, tables = %a.tables.join(","), "approval set");
                    self.guard.approval = Some(a);
                    "SET pgveil.approval TO DEFAULT".to_owned()
                }
                Err(e) => {
                    tracing::info!(%user, reason = %e, "approval refused");
                    refusal_sql(&GuardError::from(e).refusal())
                }
            },
            ApprovalStmt::Reset(keyword) => {
                self.guard.approval = None;
                if keyword {
                    "RESET pgveil.approval".to_owned()
                } else {
                    "SET pgveil.approval TO DEFAULT".to_owned()
                }
            }
            ApprovalStmt::Invalid => refusal_sql(&bulk::approval_elsewhere()),
        })
    }

    /// Judges a simple Query before it is relayed; keeps the decision in
    /// its pending entry (the last one pushed).
    pub(super) fn guard_query(
        &mut self,
        guard: &Guard,
        snapshot: &Snapshot,
        sql: &str,
    ) -> Result<(), Refusal> {
        self.guard.explain_cap = None;
        let Some(limits) = self.limits() else {
            return Ok(());
        };
        let analysis = snapshot.analysis(sql);
        let approval = self.decide(guard, snapshot, &limits, &analysis.reads)?;
        self.register_cursors(&analysis.reads, &approval);
        let fetches = (!self.guard.cursors.is_empty() && contains_ci(sql, b"fetch"))
            .then(|| bulk::fetch_cursors(sql))
            .flatten();
        if limits.precheck == Precheck::Explain && approval.is_none() {
            self.guard.explain_cap = explain_cap(&analysis.reads, &limits, sql);
        }
        if let Some(back) = self.pending.back_mut() {
            if matches!(back, Pending::Ready) {
                *back = Pending::Query(Box::new(QueryGuard {
                    approval,
                    fetches,
                    done: 0,
                }));
            }
        }
        Ok(())
    }

    /// The id of the approval the result being released runs under, or
    /// else of the approval set on the session: what the audit trail
    /// records next to a statement (never the token itself).
    pub(in crate::session) fn approval_id(&self) -> Option<&str> {
        self.guard
            .held
            .as_ref()
            .and_then(|h| h.approval.as_deref())
            .or(self.guard.approval.as_deref())
            .map(|a| a.id.as_str())
    }

    /// Whether a Query waits for its EXPLAIN (client frames wait too).
    pub(super) fn guard_explaining(&self) -> bool {
        self.guard.explain.is_some()
    }

    /// `precheck = "explain"`: sends `EXPLAIN (FORMAT JSON) sql` instead of
    /// the Query and keeps the Query (`original`, or `sql` rendered) until
    /// the estimate is known. `false` when no EXPLAIN applies.
    pub(super) fn guard_explain(
        &mut self,
        sql: &str,
        original: Option<&[u8]>,
        to_server: &mut BytesMut,
    ) -> bool {
        let Some((cap, tables)) = self.guard.explain_cap.take() else {
            return false;
        };
        let mut query = BytesMut::new();
        match original {
            Some(bytes) => query.extend_from_slice(bytes),
            None => super::write_query(&mut query, sql),
        }
        super::write_query(to_server, &format!("EXPLAIN (FORMAT JSON) {sql}"));
        // Its replies come before those of the Query (the last entry).
        let at = self.pending.len().saturating_sub(1);
        self.pending.insert(at, Pending::Explain);
        self.guard.explain = Some(Explaining {
            query,
            cap,
            tables,
            estimate: None,
        });
        true
    }

    /// A reply to the EXPLAIN: swallowed; at its ReadyForQuery the held
    /// Query, or its refusal, is queued for the server. `None` for frames
    /// that are not the EXPLAIN's (notices, parameter status).
    pub(super) fn on_explain_reply(&mut self, frame: &crate::net::Frame) -> Option<bool> {
        match frame.tag() {
            b'D' => {
                if let Some(e) = self.guard.explain.as_mut() {
                    if e.estimate.is_none() {
                        e.estimate = plan_rows(frame.body());
                    }
                }
                Some(true)
            }
            b'T' | b'C' | b'E' | b'I' => Some(true),
            b'Z' => {
                self.pending.pop_front();
                let Some(e) = self.guard.explain.take() else {
                    return Some(true);
                };
                match e.estimate.filter(|n| *n > e.cap) {
                    Some(estimate) => {
                        let err = GuardError::Estimate {
                            estimate,
                            cap: e.cap,
                            role: self.role.as_ref().map_or(String::new(), |r| r.name.clone()),
                            how: how_to_approve(&self.guard.user, &e.tables),
                        };
                        tracing::info!(user = %self.guard.user, reason = %err, "bulk read refused by the row estimate");
                        super::write_query(&mut self.inject, &refusal_sql(&err.refusal()));
                    }
                    None => self.inject.extend_from_slice(&e.query),
                }
                Some(true)
            }
            _ => None,
        }
    }

    /// Records what a Parse's Executes must be checked against.
    pub(super) fn guard_prepare(&self, snapshot: &Snapshot, sql: &str, prepared: &mut Prepared) {
        if self.limits().is_none() {
            return;
        }
        let fetch = (!self.guard.cursors.is_empty() && contains_ci(sql, b"fetch"))
            .then(|| bulk::fetch_cursors(sql))
            .flatten()
            .and_then(|f| f.into_iter().next().flatten());
        prepared.guard = Some(PreparedGuard {
            reads: snapshot.analysis(sql),
            fetch,
        });
    }

    /// A Bind (re)creates a portal: its count starts again.
    pub(super) fn guard_bind(&mut self, portal: &[u8]) {
        if !self.guard.portals.is_empty() {
            self.guard.portals.remove(portal);
        }
    }

    /// Judges an Execute before it is relayed.
    pub(super) fn guard_execute(
        &mut self,
        protector: &crate::rewrite::Protector,
        portal: &[u8],
    ) -> Result<Option<Box<ExecGuard>>, Refusal> {
        let Some(limits) = self.limits() else {
            return Ok(None);
        };
        let prepared = self.portals.get(portal).and_then(|p| p.guard.clone());
        let mut approval = None;
        let mut cursor = None;
        if let Some(p) = prepared {
            let snapshot = protector.snapshot();
            approval = self.decide(protector.guard(), &snapshot, &limits, &p.reads.reads)?;
            self.register_cursors(&p.reads.reads, &approval);
            cursor = p.fetch.filter(|c| self.guard.cursors.contains_key(c));
        }
        Ok(Some(Box::new(ExecGuard {
            portal: portal.to_vec(),
            cursor,
            approval,
        })))
    }

    /// The precheck with the session's approval; on success, the approval
    /// the statement's results may run under (consumed if single-use).
    fn decide(
        &mut self,
        guard: &Guard,
        snapshot: &Snapshot,
        limits: &Limits,
        reads: &[BulkRead],
    ) -> Result<Option<Arc<Approval>>, Refusal> {
        if reads.is_empty() {
            return Ok(None);
        }
        let Some(role) = self.role.clone() else {
            return Ok(None);
        };
        let user = self.guard.user.clone();
        let visible = |c: &crate::sql::ProtectedColumn| {
            matches!(snapshot.action(&role, c), Action::Clear | Action::Mask(_))
        };
        let approval = self.guard.approval.clone();
        let caller = Caller {
            user: &user,
            role: &role.name,
            limits,
            approval: approval.as_deref(),
        };
        let verdict = precheck::check(reads, caller, visible).map_err(|e| e.refusal())?;
        let Some(a) = approval.clone().filter(|_| verdict == Verdict::Approved) else {
            return Ok(None);
        };
        match guard.check(&a, &user).and_then(|()| guard.consume(&a)) {
            Ok(()) => {
                if a.single_use {
                    self.guard.approval = None;
                }
                tracing::info!(%user, approval = %a.id, "approval used");
                Ok(Some(a))
            }
            Err(e) => {
                // Expired or used elsewhere: the statement is judged
                // without it, and when that refuses, the client is told
                // what is wrong with the approval.
                self.guard.approval = None;
                let without = Caller {
                    approval: None,
                    ..caller
                };
                match precheck::check(reads, without, visible) {
                    Ok(_) => Ok(None),
                    Err(_) => Err(GuardError::from(e).refusal()),
                }
            }
        }
    }

    fn register_cursors(&mut self, reads: &[BulkRead], approval: &Option<Arc<Approval>>) {
        for r in reads {
            if let ReadKind::Cursor(name) = &r.kind {
                self.guard.cursors.insert(
                    name.clone(),
                    Counted {
                        approval: approval.clone(),
                        ..Counted::default()
                    },
                );
            }
        }
    }

    /// A simple query's (or FETCH's) RowDescription: held with its rows
    /// when the role sees a protected column in it. `true` when held.
    pub(super) fn guard_hold_description(
        &mut self,
        guard: &Guard,
        row: &RowPlan,
        rewritten: &[u8],
    ) -> bool {
        let Some(limits) = self.limits() else {
            return false;
        };
        if row.visible.is_empty() {
            return false;
        }
        let (approval, target) = match self.pending.front() {
            Some(Pending::Query(q)) => {
                let cursor = q
                    .fetches
                    .as_ref()
                    .and_then(|f| f.get(q.done).cloned().flatten())
                    .filter(|c| self.guard.cursors.contains_key(c));
                (
                    q.approval.clone(),
                    cursor.map_or(Target::Statement, Target::Cursor),
                )
            }
            _ => (None, Target::Statement),
        };
        self.start_held(guard, &limits, row, approval, target);
        self.guard.buf.extend_from_slice(rewritten);
        true
    }

    fn start_held(
        &mut self,
        guard: &Guard,
        limits: &Limits,
        row: &RowPlan,
        approval: Option<Arc<Approval>>,
        target: Target,
    ) {
        let before = match &target {
            Target::Cursor(c) => self.guard.cursors.get(c).cloned(),
            Target::Portal(p) => self.guard.portals.get(&p[..]).cloned(),
            Target::Statement => None,
        };
        let (base_rows, base_bytes, approval) = match before {
            Some(c) => (c.rows, c.bytes, c.approval.or(approval)),
            None => (0, 0, approval),
        };
        let approval = approval.filter(|a| row.visible.iter().all(|t| a.covers(t)));
        let caps = match &approval {
            Some(a) => Caps {
                rows: Some(a.max_rows),
                bytes: None,
                window_left: None,
            },
            None => Caps {
                rows: limits.max_rows,
                bytes: limits.max_bytes,
                window_left: limits.window.map(|w| {
                    guard
                        .windows
                        .remaining(&self.guard.user, w.rows, w.period, Instant::now())
                }),
            },
        };
        self.guard.buf.clear();
        self.guard.held = Some(Held {
            caps,
            base_rows,
            base_bytes,
            rows: 0,
            bytes: 0,
            target,
            approval,
            tables: row.visible.clone(),
        });
    }

    /// A DataRow of a result with protected columns. `None` when the guard
    /// leaves it to the normal path (no limits, or nothing the role sees).
    pub(super) fn guard_row(
        &mut self,
        guard: &Guard,
        shared: &Shared,
        plan: &ResultPlan,
        body: &[u8],
        to_client: &mut BytesMut,
    ) -> Option<bool> {
        if self.guard.held.is_none() {
            let limits = self.limits()?;
            if plan.row.visible.is_empty() {
                return None;
            }
            // An Execute's first row (its RowDescription came earlier).
            let tag = match self.pending.front() {
                Some(Pending::Execute(_, _, Some(tag), _)) => (**tag).clone(),
                _ => return None,
            };
            let target = match tag.cursor {
                Some(c) => Target::Cursor(c),
                None => Target::Portal(tag.portal),
            };
            self.start_held(guard, &limits, &plan.row, tag.approval, target);
        }
        let start = self.guard.buf.len();
        if let Err(e) = rewrite_data_row(plan, body, &mut self.guard.buf, &mut self.cells) {
            self.discard_held();
            self.refuse_result(to_client, e.sqlstate, &e.message);
            return Some(true);
        }
        let size = self.guard.buf.len() - start;
        let crossed = self.guard.held.as_mut().map(|h| h.add(size));
        if let Some(Err(crossed)) = crossed {
            let err = self.crossed_error(guard, crossed);
            tracing::info!(user = %self.guard.user, reason = %err, "bulk read refused during execution");
            self.discard_held();
            self.refuse_result(to_client, err.sqlstate(), &err.to_string());
            self.cancel_upstream(shared);
        }
        Some(true)
    }

    /// CommandComplete, PortalSuspended or EmptyQueryResponse: releases a
    /// held result if the user's window takes it. `true` when the frame
    /// was swallowed (the result was refused instead).
    pub(super) fn guard_end(&mut self, guard: &Guard, tag: u8, to_client: &mut BytesMut) -> bool {
        if tag == b'C' {
            if let Some(Pending::Query(q)) = self.pending.front_mut() {
                q.done += 1;
            }
        }
        let Some(held) = self.guard.held.take() else {
            if tag == b'C' && !self.guard.portals.is_empty() {
                if let Some(Pending::Execute(_, _, Some(e), _)) = self.pending.front() {
                    let portal = e.portal.clone();
                    self.guard.portals.remove(&portal[..]);
                }
            }
            return false;
        };
        let window = self.limits().and_then(|l| l.window);
        if let (None, Some(w)) = (&held.approval, window) {
            let now = Instant::now();
            if let Err(full) =
                guard
                    .windows
                    .charge(&self.guard.user, held.rows, w.rows, w.period, now)
            {
                let err = self.window_error(&held, full);
                tracing::info!(user = %self.guard.user, reason = %err, "bulk read refused by the window");
                self.discard_held();
                self.refuse_result(to_client, err.sqlstate(), &err.to_string());
                return true;
            }
        }
        to_client.extend_from_slice(&self.guard.buf);
        self.discard_held();
        let counted = Counted {
            rows: held.base_rows + held.rows,
            bytes: held.base_bytes + held.bytes,
            approval: held.approval,
        };
        match held.target {
            Target::Cursor(c) => {
                if let Some(entry) = self.guard.cursors.get_mut(&c) {
                    entry.rows = counted.rows;
                    entry.bytes = counted.bytes;
                }
            }
            Target::Portal(p) if tag == b's' => {
                self.guard.portals.insert(Name::new(&p), counted);
            }
            Target::Portal(p) => {
                self.guard.portals.remove(&p[..]);
            }
            Target::Statement => {}
        }
        false
    }

    /// The server ended the statement with an error: what was held goes.
    pub(super) fn guard_error(&mut self) {
        if self.guard.held.is_some() {
            self.discard_held();
        }
    }

    fn discard_held(&mut self) {
        self.guard.held = None;
        if self.guard.buf.capacity() > KEEP_BUFFER {
            self.guard.buf = BytesMut::new();
        } else {
            self.guard.buf.clear();
        }
    }

    fn cancel_upstream(&mut self, shared: &Shared) {
        if let Some(key) = &self.guard.backend_key {
            self.guard.cancel_wait = cancel::spawn(
                shared.config.proxy.upstream.clone(),
                shared.upstream_tls.clone(),
                shared.config.proxy.connect_timeout,
                key.clone(),
            );
        }
    }

    /// The hint of a refusal, naming the session's approval when it does
    /// not cover what the result reads.
    fn how(&self, tables: &[String]) -> String {
        let how = how_to_approve(&self.guard.user, tables);
        match &self.guard.approval {
            Some(a) => match tables.iter().find(|t| !a.covers(t)) {
                Some(t) => format!("{}; {how}", a.wrong_table(t)),
                None => how,
            },
            None => how,
        }
    }

    fn crossed_error(&self, guard: &Guard, crossed: Crossed) -> GuardError {
        let Some(held) = &self.guard.held else {
            return GuardError::Exceeded {
                cap: "a bulk-read limit".into(),
                how: self.how(&[]),
            };
        };
        let role = self.role.as_ref().map_or("", |r| r.name.as_str());
        let over = match &held.target {
            Target::Cursor(c) => format!(", counted over every FETCH from cursor {c}"),
            Target::Portal(_) => ", counted over every Execute of the portal".to_owned(),
            Target::Statement => String::new(),
        };
        let cap = match (crossed, &held.approval) {
            (Crossed::Rows(n), Some(a)) => {
                format!("the {n} rows allowed by approval {}{over}", a.id)
            }
            (Crossed::Rows(n), None) => format!("max_rows = {n} of policy role {role}{over}"),
            (Crossed::Bytes(n), _) => format!("max_bytes = {n} of policy role {role}{over}"),
            (Crossed::Window, _) => {
                let Some(w) = self.limits().and_then(|l| l.window) else {
                    return GuardError::Exceeded {
                        cap: "the rolling window".into(),
                        how: self.how(&held.tables),
                    };
                };
                let full = guard.windows.frees_in(
                    &self.guard.user,
                    w.rows,
                    held.rows,
                    w.period,
                    Instant::now(),
                );
                return self.window_error(held, full);
            }
        };
        GuardError::Exceeded {
            cap,
            how: self.how(&held.tables),
        }
    }

    fn window_error(&self, held: &Held, full: crate::guard::window::WindowFull) -> GuardError {
        let role = self.role.as_ref().map_or("", |r| r.name.as_str());
        let w = self.limits().and_then(|l| l.window);
        let frees = match full.frees_in {
            Some(d) => {
                let d = Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0));
                format!(
                    "the window frees up enough rows in {} (at {})",
                    humantime::format_duration(d),
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now() + d)
                )
            }
            None => "this result alone is larger than the whole window".to_owned(),
        };
        GuardError::Window(Box::new(crate::guard::WindowRefusal {
            user: self.guard.user.clone(),
            role: role.to_owned(),
            limit: w.map_or(0, |w| w.rows),
            period: w.map_or_else(String::new, |w| {
                humantime::format_duration(w.period).to_string()
            }),
            used: full.used,
            frees,
            how: self.how(&held.tables),
        }))
    }
}

/// The cap an EXPLAIN estimate is compared with, when the text is one
/// plain SELECT that reads protected data under the role's limits.
fn explain_cap(reads: &[BulkRead], limits: &Limits, sql: &str) -> Option<(u64, Vec<String>)> {
    let [read] = reads else { return None };
    if read.kind != ReadKind::Select {
        return None;
    }
    // One statement only: EXPLAIN takes one (a `;` inside a literal just
    // skips the EXPLAIN; counting still applies).
    if sql.trim().trim_end_matches(';').contains(';') {
        return None;
    }
    let mut tables: Vec<String> = Vec::new();
    for t in read.tables() {
        if !tables.iter().any(|x| x == t) {
            tables.push(t.to_owned());
        }
    }
    Some((limits.statement_rows()?, tables))
}

/// The root plan node's `"Plan Rows"` in an `EXPLAIN (FORMAT JSON)` row.
fn plan_rows(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"Plan Rows\":";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits: String = body[at..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .map(|b| char::from(*b))
        .collect();
    digits.parse().ok()
}

/// Whether `hay` contains `needle` (ASCII case-insensitive).
fn contains_ci(hay: &str, needle: &[u8]) -> bool {
    hay.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}
