//! The session side of column protection: planning each statement,
//! rewriting Query/Parse/Bind, encrypting COPY streams, and keeping track
//! of which reply belongs to which request.
//!
//! Protocol rules relied on:
//! * Replies come in request order. ParseComplete (`1`) answers Parse,
//!   BindComplete (`2`) answers Bind, ParameterDescription (`t`) answers
//!   Describe of a statement, ReadyForQuery (`Z`) answers Sync, Query and
//!   FunctionCall.
//! * After an ErrorResponse in an extended-protocol batch, the server skips
//!   every message up to Sync, so those messages get no reply.
//! * A refused statement is replaced by one that makes the *server* raise
//!   pgveil's error (`rewrite::refusal_sql`): the error reaches the client
//!   in order, and a transaction block is aborted exactly as PostgreSQL
//!   would abort it. In an extended batch the refused message and the rest
//!   of the batch are dropped and the failing statement is injected before
//!   the Sync; its ParseComplete and BindComplete are swallowed.

mod audit;

use super::frontend::Flow;
use super::results::{plan_row_description, rewrite_data_row, ResultPlan, RowPlan};
use super::Session;
use crate::net::Frame;
use crate::policy::role::PolicyRole;
use crate::proto::extended::{self, Bind, Parse};
use crate::rewrite::bind::{client_param_types, encrypt_bind, server_param_types};
use crate::rewrite::copy::{CopyEncryptor, CopyKind, CopySpec};
use crate::rewrite::Protector;
use crate::rewrite::{refusal_sql, Snapshot};
use crate::server::Shared;
use crate::sql::{CopyFormat, CopyIn, ParamTarget, Plan, Refusal};
use bytes::{BufMut, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tracing::debug;

/// What pgveil remembers about a prepared statement or portal.
#[derive(Debug, Default)]
pub(super) struct Prepared {
    /// Parameters that target protected columns.
    targets: Vec<ParamTarget>,
    /// Set when executing it starts a COPY FROM STDIN into encrypted columns.
    copy: Option<CopyIn>,
    /// The snapshot it was planned with, so Bind encrypts with the same keys.
    snapshot: Option<Arc<Snapshot>>,
}

/// A request whose reply the backend handler must recognise.
#[derive(Debug)]
enum Pending {
    /// Parse or Bind; injected ones have their reply swallowed.
    ParseOrBind { injected: bool },
    /// Describe of a statement: ParameterDescription then RowDescription/NoData.
    DescribeStatement {
        name: Vec<u8>,
        prepared: Option<Arc<Prepared>>,
    },
    /// Describe of a portal: RowDescription/NoData with the real formats.
    DescribePortal(Vec<u8>),
    /// Execute: DataRows until CommandComplete/PortalSuspended/EmptyQuery.
    Execute(Option<Arc<ResultPlan>>),
    /// Sync, Query or FunctionCall: answered by ReadyForQuery.
    Ready,
}

/// What pgveil knows about a portal's result.
#[derive(Debug, Default)]
struct PortalRows {
    statement: Vec<u8>,
    formats: Vec<i16>,
    described: Option<Arc<RowPlan>>,
}

/// Per-session protection state.
#[derive(Debug, Default)]
pub(super) struct ProtectState {
    statements: HashMap<Vec<u8>, Arc<Prepared>>,
    portals: HashMap<Vec<u8>, Arc<Prepared>>,
    pending: VecDeque<Pending>,
    /// Set after a refusal inside an extended batch: drop until Sync.
    refused: Option<Refusal>,
    /// An active COPY FROM STDIN being encrypted.
    copy: Option<CopyEncryptor>,
    /// The COPY failed on pgveil's side; drop the client's rest of it.
    copy_failed: bool,
    /// The startup ReadyForQuery has been seen.
    ready_seen: bool,
    /// The session's policy role, once authenticated.
    role: Option<PolicyRole>,
    /// Row shapes of described statements that return protected columns.
    statement_rows: HashMap<Vec<u8>, Arc<RowPlan>>,
    /// Result formats and shapes of bound portals.
    portal_rows: HashMap<Vec<u8>, PortalRows>,
    /// The result being streamed by a simple query (or FETCH).
    current: Option<Arc<ResultPlan>>,
    /// pgveil refused a result mid-stream: swallow the rest until ReadyForQuery.
    suppress: bool,
    /// The snapshot results are planned with.
    snapshot: Option<Arc<Snapshot>>,
}

impl Session<'_> {
    /// Client frames when column protection is configured.
    pub(super) fn on_client_protected(&mut self, frame: &Frame, to_server: &mut BytesMut) -> Flow {
        let Session {
            shared,
            user,
            protect,
            audit,
            ..
        } = self;
        match (
            shared.protector.as_deref(),
            protect.as_mut(),
            audit.as_mut(),
        ) {
            (Some(protector), Some(st), None) => {
                st.on_client(protector, shared, user, frame, to_server)
            }
            (Some(protector), Some(st), Some(a)) => {
                st.on_client_audited(a, protector, shared, user, frame, to_server)
            }
            _ => forward(frame, to_server),
        }
    }

    /// Server frames when column protection is configured. Returns `true`
    /// when the frame was handled (rewritten or swallowed).
    pub(super) fn on_server_protected(&mut self, frame: &Frame, to_client: &mut BytesMut) -> bool {
        let Session {
            shared,
            protect,
            audit,
            ..
        } = self;
        match (
            shared.protector.as_deref(),
            protect.as_mut(),
            audit.as_mut(),
        ) {
            (Some(protector), Some(st), None) => st.on_server(protector, shared, frame, to_client),
            (Some(protector), Some(st), Some(a)) => {
                st.on_server_audited(a, protector, shared, frame, to_client)
            }
            _ => false,
        }
    }

    /// Resolves the policy role once the server accepted the user.
    pub(super) fn on_authenticated_protected(&mut self) {
        if let (Some(protector), Some(st)) =
            (self.shared.protector.as_deref(), self.protect.as_mut())
        {
            let role = protector.snapshot().role_for(&self.user);
            tracing::info!(user = %self.user, role = %role.name, "policy role");
            st.role = Some(role);
        }
    }
}

impl ProtectState {
    fn on_client(
        &mut self,
        protector: &Protector,
        shared: &Shared,
        user: &str,
        frame: &Frame,
        to_server: &mut BytesMut,
    ) -> Flow {
        let tag = frame.tag();
        // COPY sub-protocol first: only CopyData/CopyDone/CopyFail belong to it.
        if self.copy.is_some() || self.copy_failed {
            match tag {
                b'd' | b'c' | b'f' => return self.on_copy_message(frame, to_server),
                // Drivers may send Sync or Flush right after the Execute that
                // starts COPY; the server ignores them during copy-in, so
                // the COPY (and its encryption) goes on.
                b'S' => {
                    self.pending.push_back(Pending::Ready);
                    to_server.extend_from_slice(frame.as_bytes());
                    return Flow::Continue;
                }
                b'H' => return forward(frame, to_server),
                _ => {
                    self.copy = None;
                    self.copy_failed = false;
                }
            }
        }
        if self.refused.is_some() {
            if tag != b'S' {
                return Flow::Continue; // skipped, as the server would
            }
            if let Some(refusal) = self.refused.take() {
                inject_refusal(&refusal, to_server);
                self.pending
                    .push_back(Pending::ParseOrBind { injected: true });
                self.pending
                    .push_back(Pending::ParseOrBind { injected: true });
            }
            self.pending.push_back(Pending::Ready);
            to_server.extend_from_slice(frame.as_bytes());
            return Flow::Continue;
        }
        match tag {
            b'Q' => {
                self.pending.push_back(Pending::Ready);
                let Some(sql) = extended::query_text(frame.body()) else {
                    // Never relay what pgveil cannot read: it could carry
                    // plaintext for a protected column.
                    write_query(to_server, &refusal_sql(&malformed("Query")));
                    return Flow::Continue;
                };
                let utf8 = std::str::from_utf8(sql).is_ok();
                let sql = String::from_utf8_lossy(sql);
                let snapshot = protector.snapshot();
                let planned = plan_and_render(&snapshot, &sql)
                    .and_then(|p| require_utf8(utf8, p))
                    .and_then(|p| match p {
                        Planned::Copy(copy) => copy_encryptor(&snapshot, &copy).map(Ready::Copy),
                        Planned::Same => Ok(Ready::Same),
                        Planned::Text(t) => Ok(Ready::Text(t)),
                    });
                match planned {
                    Ok(Ready::Same) => to_server.extend_from_slice(frame.as_bytes()),
                    Ok(Ready::Text(text)) => write_query(to_server, &text),
                    Ok(Ready::Copy(enc)) => {
                        to_server.extend_from_slice(frame.as_bytes());
                        self.copy = Some(enc);
                    }
                    Err(refusal) => {
                        note_refusal(user, &refusal);
                        write_query(to_server, &refusal_sql(&refusal));
                    }
                }
                maybe_reload_catalog(shared, &sql);
            }
            b'P' => {
                let Some(parse) = Parse::decode(frame.body()) else {
                    self.refused = Some(malformed("Parse"));
                    return Flow::Continue;
                };
                let snapshot = protector.snapshot();
                let utf8 = std::str::from_utf8(parse.query).is_ok();
                let sql = String::from_utf8_lossy(parse.query).into_owned();
                let name = parse.name.to_vec();
                self.statement_rows.remove(&name);
                let planned = plan_and_render_parse(&snapshot, &sql, &parse).and_then(|(p, r)| {
                    if utf8 || (r.is_none() && p.copy.is_none() && p.targets.is_empty()) {
                        Ok((p, r))
                    } else {
                        Err(not_utf8())
                    }
                });
                match planned {
                    Ok((prepared, rewritten)) => {
                        self.pending
                            .push_back(Pending::ParseOrBind { injected: false });
                        match rewritten {
                            Some(bytes) => to_server.extend_from_slice(&bytes),
                            None => to_server.extend_from_slice(frame.as_bytes()),
                        }
                        self.statements.insert(name, Arc::new(prepared));
                    }
                    Err(refusal) => {
                        self.statements.remove(&name);
                        note_refusal(user, &refusal);
                        self.refused = Some(refusal);
                    }
                }
                maybe_reload_catalog(shared, &sql);
            }
            b'B' => {
                let Some(bind) = Bind::decode(frame.body()) else {
                    self.refused = Some(malformed("Bind"));
                    return Flow::Continue;
                };
                let prepared = self.statements.get(bind.statement).cloned();
                let portal = bind.portal.to_vec();
                if let Some(p) = prepared.as_ref().filter(|p| !p.targets.is_empty()) {
                    let snapshot = p.snapshot.clone().unwrap_or_else(|| protector.snapshot());
                    if let Err(refusal) = encrypt_bind(&snapshot, &bind, &p.targets, to_server) {
                        note_refusal(user, &refusal);
                        self.refused = Some(refusal);
                        return Flow::Continue;
                    }
                } else {
                    to_server.extend_from_slice(frame.as_bytes());
                }
                self.pending
                    .push_back(Pending::ParseOrBind { injected: false });
                self.portal_rows.insert(
                    portal.clone(),
                    PortalRows {
                        statement: bind.statement.to_vec(),
                        formats: result_format_codes(bind.result_formats),
                        described: None,
                    },
                );
                match prepared {
                    Some(p) => self.portals.insert(portal, p),
                    None => self.portals.remove(&portal),
                };
            }
            b'D' => {
                match extended::target(frame.body()) {
                    Some((b'S', name)) => {
                        let prepared = self.statements.get(name).cloned();
                        self.pending.push_back(Pending::DescribeStatement {
                            name: name.to_vec(),
                            prepared,
                        });
                    }
                    Some((_, name)) => self
                        .pending
                        .push_back(Pending::DescribePortal(name.to_vec())),
                    None => {}
                }
                to_server.extend_from_slice(frame.as_bytes());
            }
            b'E' => {
                let portal = frame.body().split(|b| *b == 0).next().unwrap_or_default();
                let copy = self
                    .portals
                    .get(portal)
                    .and_then(|p| p.copy.clone().map(|c| (c, p.snapshot.clone())));
                if let Some((copy, snapshot)) = copy {
                    let snapshot = snapshot.unwrap_or_else(|| protector.snapshot());
                    match copy_encryptor(&snapshot, &copy) {
                        Ok(enc) => self.copy = Some(enc),
                        Err(refusal) => {
                            note_refusal(user, &refusal);
                            self.refused = Some(refusal);
                            return Flow::Continue;
                        }
                    }
                }
                let plan = self
                    .portal_rows
                    .get(portal)
                    .and_then(|p| match &p.described {
                        Some(row) => Some(ResultPlan::bound(row.clone(), &p.formats)),
                        None => self
                            .statement_rows
                            .get(&p.statement)
                            .map(|row| ResultPlan::bound(row.clone(), &p.formats)),
                    });
                self.pending.push_back(Pending::Execute(plan.map(Arc::new)));
                to_server.extend_from_slice(frame.as_bytes());
            }
            b'C' => {
                if let Some((kind, name)) = extended::target(frame.body()) {
                    if kind == b'S' {
                        self.statements.remove(name);
                        self.statement_rows.remove(name);
                    } else {
                        self.portals.remove(name);
                        self.portal_rows.remove(name);
                    }
                }
                to_server.extend_from_slice(frame.as_bytes());
            }
            b'S' | b'F' => {
                self.pending.push_back(Pending::Ready);
                to_server.extend_from_slice(frame.as_bytes());
            }
            _ => return forward(frame, to_server),
        }
        Flow::Continue
    }

    /// CopyData/CopyDone/CopyFail during an encrypted COPY.
    fn on_copy_message(&mut self, frame: &Frame, to_server: &mut BytesMut) -> Flow {
        if self.copy_failed {
            // pgveil already sent CopyFail; the rest of the stream is dropped.
            if frame.tag() != b'd' {
                self.copy_failed = false;
            }
            return Flow::Continue;
        }
        let Some(enc) = self.copy.as_mut() else {
            return Flow::Continue;
        };
        let result = match frame.tag() {
            b'd' => enc.feed(frame.body(), to_server),
            b'c' => enc.finish(to_server).map(|()| {
                to_server.extend_from_slice(frame.as_bytes());
            }),
            _ => {
                to_server.extend_from_slice(frame.as_bytes());
                Ok(())
            }
        };
        match result {
            Ok(()) => {
                if frame.tag() != b'd' {
                    self.copy = None;
                }
            }
            Err(e) => {
                debug!(error = %e, "COPY refused");
                let msg = e.to_string();
                to_server.put_u8(b'f');
                to_server.put_u32((4 + msg.len() + 1) as u32);
                to_server.put_slice(msg.as_bytes());
                to_server.put_u8(0);
                self.copy = None;
                self.copy_failed = frame.tag() == b'd';
            }
        }
        Flow::Continue
    }

    /// Recognises replies to tracked requests; returns `true` when the
    /// frame was rewritten into `to_client` or swallowed.
    fn on_server(
        &mut self,
        protector: &Protector,
        shared: &Shared,
        frame: &Frame,
        to_client: &mut BytesMut,
    ) -> bool {
        let tag = frame.tag();
        if self.suppress && !matches!(tag, b'Z' | b'N' | b'A' | b'S') {
            // Replies to requests after a refused result are dropped, as if
            // the server had skipped them after an error.
            if tag == b'E' {
                self.drop_until_sync();
            }
            return true;
        }
        match tag {
            b'1' | b'2' => {
                if let Some(Pending::ParseOrBind { injected }) = self.pending.front() {
                    let injected = *injected;
                    self.pending.pop_front();
                    return injected; // swallowed when injected
                }
                false
            }
            b't' => {
                let Some(Pending::DescribeStatement { prepared, .. }) = self.pending.front() else {
                    return false;
                };
                let Some(p) = prepared.as_ref().filter(|p| !p.targets.is_empty()) else {
                    return false;
                };
                let Some(types) = extended::parameter_types(frame.body()) else {
                    return false;
                };
                extended::encode_parameter_description(
                    to_client,
                    &client_param_types(&types, &p.targets),
                );
                true
            }
            b'T' => {
                let snapshot = self
                    .snapshot
                    .get_or_insert_with(|| protector.snapshot())
                    .clone();
                let role = self
                    .role
                    .get_or_insert_with(|| snapshot.role_for(""))
                    .clone();
                let planned = plan_row_description(&snapshot, &role, frame.body(), |oid| {
                    // A table the catalog does not know: perhaps a protected
                    // table re-created outside pgveil. Reload once per OID.
                    if protector.note_unknown_oid(oid) {
                        if let Some(reload) = &shared.reload_catalog {
                            reload.notify_one();
                        }
                    }
                });
                match self.pending.front() {
                    Some(Pending::DescribeStatement { name, .. }) => {
                        let name = name.clone();
                        self.pending.pop_front();
                        match &planned {
                            Some((row, _)) => self.statement_rows.insert(name, row.clone()),
                            None => self.statement_rows.remove(&name),
                        };
                    }
                    Some(Pending::DescribePortal(name)) => {
                        let name = name.clone();
                        self.pending.pop_front();
                        if let Some(p) = self.portal_rows.get_mut(&name) {
                            p.described = planned.as_ref().map(|(row, _)| row.clone());
                            if let Some((row, _)) = &planned {
                                p.formats = row_formats(row);
                            }
                        }
                    }
                    _ => {
                        // A simple query's (or FETCH's) result starts.
                        self.current = planned
                            .as_ref()
                            .map(|(row, _)| Arc::new(ResultPlan::described(row.clone())));
                        if let Some((row, _)) = &planned {
                            if let Some(col) = &row.denied {
                                self.refuse_result(to_client, "42501", &denied_message(col));
                                return true;
                            }
                        }
                    }
                }
                match planned {
                    Some((_, rewritten)) => {
                        to_client.extend_from_slice(&rewritten);
                        true
                    }
                    None => false,
                }
            }
            b'n' => {
                if matches!(
                    self.pending.front(),
                    Some(Pending::DescribeStatement { .. } | Pending::DescribePortal(_))
                ) {
                    self.pending.pop_front();
                }
                false
            }
            b'D' => {
                let plan = match self.pending.front() {
                    Some(Pending::Execute(plan)) => plan.clone(),
                    _ => self.current.clone(),
                };
                let Some(plan) = plan else {
                    return false;
                };
                if let Some(col) = &plan.row.denied {
                    self.refuse_result(to_client, "42501", &denied_message(col));
                    return true;
                }
                if let Err(e) = rewrite_data_row(&plan, frame.body(), to_client) {
                    self.refuse_result(to_client, e.sqlstate, &e.message);
                }
                true
            }
            b'C' | b'I' | b's' => {
                if matches!(self.pending.front(), Some(Pending::Execute(_))) {
                    self.pending.pop_front();
                } else {
                    self.current = None;
                }
                false
            }
            b'E' => {
                self.current = None;
                self.drop_until_sync();
                false
            }
            b'Z' if !self.ready_seen => {
                // The ReadyForQuery that ends startup answers no request.
                self.ready_seen = true;
                false
            }
            b'Z' => {
                self.current = None;
                self.snapshot = None;
                while let Some(p) = self.pending.pop_front() {
                    if matches!(p, Pending::Ready) {
                        break;
                    }
                }
                if self.suppress {
                    self.suppress = false;
                    // The client was told of an error: inside a transaction
                    // block it must see the block as failed.
                    if frame.body() == b"T" {
                        to_client.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'E']);
                        return true;
                    }
                }
                false
            }
            _ => false,
        }
    }

    /// The server skips the rest of an extended batch after an error: those
    /// requests get no reply.
    fn drop_until_sync(&mut self) {
        while matches!(
            self.pending.front(),
            Some(
                Pending::ParseOrBind { .. }
                    | Pending::DescribeStatement { .. }
                    | Pending::DescribePortal(_)
                    | Pending::Execute(_)
            )
        ) {
            self.pending.pop_front();
        }
    }

    /// Replaces the rest of a result with one ErrorResponse.
    fn refuse_result(&mut self, to_client: &mut BytesMut, code: &str, message: &str) {
        tracing::info!(sqlstate = code, reason = %message, "result refused");
        crate::proto::error::write_error(
            to_client,
            crate::proto::error::Severity::Error,
            code,
            message,
        );
        self.current = None;
        self.suppress = true;
        self.drop_until_sync();
    }
}

fn denied_message(column: &str) -> String {
    format!(
        "pgveil: permission denied for column {column}: your policy role may not read it; \
         leave it out of the query or ask for a role that may"
    )
}

/// Bind's result-format codes (count, then codes).
fn result_format_codes(raw: &[u8]) -> Vec<i16> {
    raw.get(2..)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|c| i16::from_be_bytes([c[0], c[1]]))
        .collect()
}

fn row_formats(row: &RowPlan) -> Vec<i16> {
    row.described_formats.clone()
}

fn forward(frame: &Frame, to_server: &mut BytesMut) -> Flow {
    to_server.extend_from_slice(frame.as_bytes());
    if frame.tag() == crate::proto::tag::TERMINATE {
        Flow::Close
    } else {
        Flow::Continue
    }
}

fn malformed(what: &str) -> Refusal {
    Refusal {
        sqlstate: "08P01",
        message: format!("pgveil: malformed {what} message; it was not relayed"),
    }
}

fn note_refusal(user: &str, refusal: &Refusal) {
    tracing::info!(%user, sqlstate = refusal.sqlstate, reason = %refusal.message, "statement refused");
}

/// After DDL that may concern protected tables, reload the catalog in the
/// background so later statements see the new schema.
fn maybe_reload_catalog(shared: &Shared, sql: &str) {
    let head = sql.trim_start().as_bytes();
    let starts = |kw: &[u8]| head.len() >= kw.len() && head[..kw.len()].eq_ignore_ascii_case(kw);
    if starts(b"CREATE") || starts(b"ALTER") || starts(b"DROP") {
        if let Some(reload) = &shared.reload_catalog {
            reload.notify_one();
        }
    }
}

/// Statements that touch protected columns must be valid UTF-8: pgveil
/// splices envelopes into the text by byte offset and encrypts literal
/// values as UTF-8, so any other client encoding could corrupt them.
fn require_utf8(utf8: bool, planned: Planned) -> Result<Planned, Refusal> {
    match planned {
        Planned::Same => Ok(Planned::Same),
        other if utf8 => Ok(other),
        _ => Err(not_utf8()),
    }
}

fn not_utf8() -> Refusal {
    Refusal {
        sqlstate: "22021",
        message: "pgveil: a statement that touches protected columns must be valid UTF-8; \
                  set client_encoding = 'UTF8'"
            .into(),
    }
}

/// A planned simple query, ready to send.
enum Ready {
    Same,
    Text(String),
    Copy(CopyEncryptor),
}

/// What a statement becomes.
enum Planned {
    /// Relay the original bytes.
    Same,
    /// Relay this text instead.
    Text(String),
    /// Relay as is, then encrypt the COPY stream.
    Copy(CopyIn),
}

fn plan_and_render(snapshot: &Snapshot, sql: &str) -> Result<Planned, Refusal> {
    match &*snapshot.plan(sql)? {
        Plan::Passthrough => Ok(Planned::Same),
        Plan::Rewrite(rw) if rw.edits.is_empty() => Ok(Planned::Same),
        Plan::Rewrite(rw) => snapshot.render(sql, &rw.edits).map(Planned::Text),
        Plan::CopyIn(copy) => Ok(Planned::Copy(copy.clone())),
    }
}

/// Plans a Parse; returns what to remember and the rewritten frame, if any.
fn plan_and_render_parse(
    snapshot: &Arc<Snapshot>,
    sql: &str,
    parse: &Parse<'_>,
) -> Result<(Prepared, Option<BytesMut>), Refusal> {
    let plan = snapshot.plan(sql)?;
    match &*plan {
        Plan::Passthrough => Ok((Prepared::default(), None)),
        Plan::CopyIn(copy) => Ok((
            Prepared {
                targets: Vec::new(),
                copy: Some(copy.clone()),
                snapshot: Some(snapshot.clone()),
            },
            None,
        )),
        Plan::Rewrite(rw) => {
            if rw.edits.is_empty() && rw.params.is_empty() {
                return Ok((Prepared::default(), None));
            }
            let text = if rw.edits.is_empty() {
                sql.to_owned()
            } else {
                snapshot.render(sql, &rw.edits)?
            };
            let rewritten = Parse {
                name: parse.name,
                query: text.as_bytes(),
                param_types: server_param_types(&parse.param_types, &rw.params),
            };
            let mut out = BytesMut::new();
            rewritten.encode(&mut out);
            Ok((
                Prepared {
                    targets: rw.params.clone(),
                    copy: None,
                    snapshot: Some(snapshot.clone()),
                },
                Some(out),
            ))
        }
    }
}

fn copy_encryptor(snapshot: &Snapshot, copy: &CopyIn) -> Result<CopyEncryptor, Refusal> {
    let mut fields = Vec::with_capacity(copy.fields.len());
    for f in &copy.fields {
        fields.push(match f {
            Some(col) if col.protection.encrypts() => Some(snapshot.cipher(col)?.clone()),
            _ => None,
        });
    }
    Ok(CopyEncryptor::new(CopySpec {
        fields,
        kind: match copy.format {
            CopyFormat::Text => CopyKind::Text,
            CopyFormat::Csv => CopyKind::Csv,
        },
        delimiter: copy.delimiter,
        null: copy.null.clone().into_bytes(),
        quote: copy.quote,
        escape: copy.escape,
        header: copy.header,
    }))
}

fn write_query(out: &mut BytesMut, sql: &str) {
    out.reserve(5 + sql.len() + 1);
    out.put_u8(b'Q');
    out.put_u32((4 + sql.len() + 1) as u32);
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
}

/// Parse + Bind + Execute of the refusal statement (unnamed), placed
/// before the batch's Sync.
fn inject_refusal(refusal: &Refusal, out: &mut BytesMut) {
    let sql = refusal_sql(refusal);
    Parse {
        name: b"",
        query: sql.as_bytes(),
        param_types: Vec::new(),
    }
    .encode(out);
    extended::encode_bind(out, b"", b"", &[], &[], &[0, 0]);
    out.put_u8(b'E');
    out.put_u32(4 + 1 + 4);
    out.put_u8(0);
    out.put_i32(0);
}
