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
mod copy;
use crate::proto::name::{Name, NameMap};
use copy::copy_encryptor;
mod guarded;
mod plan;
use plan::{not_utf8, plan_and_render, plan_and_render_parse, require_utf8, Planned, Ready};

use super::frontend::Flow;
use super::results::{
    denied_message, rewrite_data_row, CellBuffers, DescriptionCache, FieldPlan, ResultPlan, RowPlan,
};
use super::roles::RoleTracker;
use super::Session;
use crate::net::Frame;
use crate::policy::role::PolicyRole;
use crate::proto::extended::{self, Bind, Parse};
use crate::rewrite::bind::{client_param_types, encrypt_bind};
use crate::rewrite::copy::{CopyEncryptor, CopyOutRewriter};
use crate::rewrite::Protector;
use crate::rewrite::{refusal_sql, Snapshot};
use crate::server::Shared;
use crate::sql::role::{role_effects, RoleEffect};
use crate::sql::{CopyIn, ParamTarget, ProtectedColumn, Refusal};
use bytes::{BufMut, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;

/// What pgveil remembers about a prepared statement or portal.
#[derive(Debug, Default)]
pub(super) struct Prepared {
    /// Parameters that target protected columns.
    targets: Vec<ParamTarget>,
    /// Set when executing it starts a COPY FROM STDIN into encrypted columns.
    copy: Option<CopyIn>,
    /// The snapshot it was planned with, so Bind encrypts with the same keys.
    snapshot: Option<Arc<Snapshot>>,
    /// What executing it does to the session's role (SET ROLE, SAVEPOINT…).
    role_effect: Option<RoleEffect>,
    /// Set when executing it starts a COPY TO STDOUT of protected columns.
    copy_out: Option<CopyIn>,
    /// The protected column behind each result column, when analysis
    /// knows more than the RowDescription will say (set operations).
    results: Option<Arc<[Option<ProtectedColumn>]>>,
    /// Its row shape, once a Describe of it has been answered; an Execute
    /// sent before that answer (pipelined) reads it when its rows arrive.
    rows: std::sync::OnceLock<Arc<RowPlan>>,
    /// What the bulk-read guard checks its Executes against (capped roles).
    guard: Option<guarded::PreparedGuard>,
    /// Statements in it that return protected columns: an Execute by a
    /// role denied one of them is refused before the server runs it.
    reads: Option<Arc<crate::rewrite::Analyzed>>,
    /// The client's Parse, kept for statements with protected parameters
    /// so they can be prepared again when a key rotation changes how
    /// their parameters must be sent (see [`Snapshot::match_usage`]).
    source: Option<Arc<Source>>,
}

/// A statement as the client prepared it.
#[derive(Debug)]
struct Source {
    sql: String,
    param_types: Vec<u32>,
}

impl Prepared {
    /// Rendered for one live key version of a searchable column that now
    /// has several: executing it as is would miss rows stored under the
    /// other versions.
    fn stale_under(&self, snapshot: &Snapshot) -> bool {
        self.targets.iter().any(|t| {
            t.usage == crate::sql::ParamUsage::MatchOne
                && snapshot.match_usage(&t.column) != crate::sql::ParamUsage::MatchOne
        })
    }
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
    /// Describe of a portal: RowDescription/NoData with the real formats;
    /// the answer also fills the portal's cell for pipelined Executes.
    DescribePortal(Vec<u8>, Option<Arc<std::sync::OnceLock<Arc<RowPlan>>>>),
    /// Execute: DataRows until CommandComplete/PortalSuspended/EmptyQuery;
    /// the portal's statement says what else its reply means (a role
    /// effect, a COPY TO stream to mask), with the bulk-read guard's
    /// decision for capped roles.
    Execute(
        Option<Arc<ResultPlan>>,
        Option<Arc<Prepared>>,
        Option<Box<guarded::ExecGuard>>,
        Option<Box<Deferred>>,
    ),
    /// Sync, Query or FunctionCall: answered by ReadyForQuery.
    Ready,
    /// A simple Query of a capped role, with the guard's decision for its
    /// results: answered by ReadyForQuery like `Ready`.
    Query(Box<guarded::QueryGuard>),
    /// `EXPLAIN` of a capped read (`precheck = "explain"`): its replies are
    /// swallowed and decide whether the read itself is sent.
    Explain,
    /// A statement pgveil sent on its own to fail the server's transaction
    /// after refusing a result in it; its ErrorResponse and ReadyForQuery
    /// are swallowed.
    Injected,
    /// A Close pgveil sent before preparing a statement again; its
    /// CloseComplete is swallowed.
    InjectedClose,
}

/// What pgveil knows about a portal's result.
#[derive(Debug, Default)]
struct PortalRows {
    statement: Vec<u8>,
    formats: Vec<i16>,
    described: Option<Arc<RowPlan>>,
    /// Filled by the answer to a Describe of this portal (this Bind's,
    /// not a later one's of the same name).
    cell: Arc<std::sync::OnceLock<Arc<RowPlan>>>,
}

/// The row shape of an Execute sent before the Describe that tells it was
/// answered (libpq and JDBC pipeline Bind, Describe, Execute, Sync): found
/// when its first row arrives, from the cells of the very portal and
/// statement it executes.
#[derive(Debug)]
struct Deferred {
    portal: Arc<std::sync::OnceLock<Arc<RowPlan>>>,
    statement: Option<Arc<Prepared>>,
    formats: Vec<i16>,
}

impl Deferred {
    fn resolve(&self) -> Option<ResultPlan> {
        if let Some(row) = self.portal.get() {
            return Some(ResultPlan::bound(row.clone(), &row.described_formats));
        }
        self.statement
            .as_ref()
            .and_then(|p| p.rows.get())
            .map(|row| ResultPlan::bound(row.clone(), &self.formats))
    }
}

/// A COPY TO STDOUT stream on its way to the client.
#[derive(Debug)]
pub(super) struct CopyOutState {
    rewriter: CopyOutRewriter,
    fields: Vec<Option<FieldPlan>>,
}

/// Per-session protection state.
#[derive(Debug, Default)]
pub(super) struct ProtectState {
    statements: NameMap<Arc<Prepared>>,
    portals: NameMap<Arc<Prepared>>,
    pending: VecDeque<Pending>,
    /// Set after a refusal inside an extended batch: drop until Sync.
    refused: Option<Refusal>,
    /// An active COPY FROM STDIN being encrypted.
    copy: Option<CopyEncryptor>,
    /// The COPY failed on pgveil's side; drop the client's rest of it.
    copy_failed: bool,
    /// The startup ReadyForQuery has been seen.
    ready_seen: bool,
    /// The session's policy role, decided for `role_generation`.
    role: Option<Arc<PolicyRole>>,
    /// The [`RoleTracker::generation`] `role` was decided for.
    role_generation: u64,
    /// The protection snapshot's generation `role` was decided with: a
    /// configuration reload or catalog refresh changes it, and the role
    /// is decided again for the next statement.
    role_snapshot: u64,
    /// The PostgreSQL role the session acts as, once authenticated.
    roles: Option<RoleTracker>,
    /// Role effects of the current simple query's statements, in order.
    query_effects: VecDeque<Option<RoleEffect>>,
    /// Role effects of extended-protocol requests whose replies arrive
    /// while pgveil suppresses a refused result.
    orphan_effects: VecDeque<Option<RoleEffect>>,
    /// The current simple query is a COPY TO STDOUT of protected columns.
    query_copy_out: Option<CopyIn>,
    /// Result columns of the current simple query, per SQL analysis.
    query_results: Option<Arc<[Option<ProtectedColumn>]>>,
    /// A COPY TO stream being decrypted and masked.
    copy_out: Option<CopyOutState>,
    /// Reused for every protected cell of every result.
    cells: CellBuffers,
    /// Row shapes planned lately, reused by repeated executions.
    descriptions: DescriptionCache,
    /// Row shapes of described statements that return protected columns.
    statement_rows: NameMap<Arc<RowPlan>>,
    /// Result formats and shapes of bound portals.
    portal_rows: NameMap<PortalRows>,
    /// The result being streamed by a simple query (or FETCH).
    current: Option<Arc<ResultPlan>>,
    /// pgveil refused a result mid-stream: swallow the rest until ReadyForQuery.
    suppress: bool,
    /// The snapshot results are planned with.
    snapshot: Option<Arc<Snapshot>>,
    /// Bulk-read guard state (idle for roles without limits).
    guard: guarded::GuardState,
    /// Bytes pgveil sends the server on its own, queued by the backend
    /// handler (which only writes to the client) for the relay to send.
    inject: BytesMut,
    /// The column a request was just refused for before reaching the
    /// server (see `denied_read`), for the audit record.
    denied_before: Option<String>,
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

    /// Whether client frames must wait: a result was refused and the
    /// server's ReadyForQuery that ends it is still to come, or an
    /// `EXPLAIN` precheck decides whether the statement before them runs. Until then a
    /// late cancel could hit, and the statement that fails the server's
    /// transaction could be overtaken by, the client's next statement. A
    /// batch not yet ended by Sync is not waited on (the Sync must pass).
    #[inline]
    pub(super) fn client_paused(&self) -> bool {
        self.protect.as_ref().is_some_and(|p| {
            (p.suppress
                && p.pending
                    .iter()
                    .any(|x| matches!(x, Pending::Ready | Pending::Query(_))))
                || p.guard_explaining()
        })
    }

    /// Moves what the backend handler queued for the server into `to_server`.
    #[inline]
    pub(super) fn take_injected(&mut self, to_server: &mut BytesMut) {
        if let Some(p) = self.protect.as_mut() {
            if !p.inject.is_empty() {
                to_server.extend_from_slice(&p.inject);
                p.inject.clear();
            }
        }
    }

    /// Resolves the policy role once the server accepted the user.
    pub(super) fn on_authenticated_protected(&mut self) {
        if let (Some(protector), Some(st)) =
            (self.shared.protector.as_deref(), self.protect.as_mut())
        {
            let tracker = RoleTracker::new(&self.user, self.startup_role.take());
            let snapshot = protector.snapshot();
            let role = snapshot.role_for(tracker.current_user());
            tracing::info!(user = %self.user, pg_role = tracker.current_user(), role = %role.name, "policy role");
            st.role = Some(Arc::new(role));
            st.role_snapshot = snapshot.generation();
            st.role_generation = (st.role_snapshot << 32) ^ tracker.generation();
            st.roles = Some(tracker);
            st.guard_authenticated(&self.user);
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
        if matches!(tag, b'Q' | b'E') {
            self.notice_reload(protector);
        }
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
                // Bulk-read guard: the approval SET first (its token must
                // never reach the server), then role changes, then the
                // precheck.
                if let Some(text) = self.intercept_approval(protector.guard(), &sql) {
                    write_query(to_server, &text);
                    return Flow::Continue;
                }
                match role_effects(&sql) {
                    Ok(effects) => {
                        self.query_effects = effects.map(VecDeque::from).unwrap_or_default()
                    }
                    Err(refusal) => {
                        note_refusal(user, &refusal);
                        write_query(to_server, &refusal_sql(&refusal));
                        return Flow::Continue;
                    }
                }
                let snapshot = protector.snapshot();
                let analysis = snapshot.analysis(&sql);
                let denied = self.denied_read(&snapshot, &analysis.reads);
                if let Some(refusal) = denied {
                    note_refusal(user, &refusal);
                    write_query(to_server, &refusal_sql(&refusal));
                    return Flow::Continue;
                }
                if let Err(refusal) = self.guard_query(protector.guard(), &snapshot, &sql) {
                    note_refusal(user, &refusal);
                    write_query(to_server, &refusal_sql(&refusal));
                    return Flow::Continue;
                }
                let planned = plan_and_render(&snapshot, &sql, &analysis, &mut self.query_results)
                    .and_then(|p| require_utf8(utf8, p))
                    .and_then(|p| match p {
                        Planned::Copy(copy) => copy_encryptor(&snapshot, &copy).map(Ready::Copy),
                        Planned::Same => Ok(Ready::Same),
                        Planned::Text(t) => Ok(Ready::Text(t)),
                        Planned::CopyOut(copy) => Ok(Ready::CopyOut(copy)),
                    });
                match planned {
                    Ok(Ready::Same) => {
                        crate::admin::metrics().statements_relayed.inc();
                        if !self.guard_explain(&sql, Some(frame.as_bytes()), to_server) {
                            to_server.extend_from_slice(frame.as_bytes());
                        }
                    }
                    Ok(Ready::Text(text)) => {
                        crate::admin::metrics().statements_rewritten.inc();
                        if !self.guard_explain(&text, None, to_server) {
                            write_query(to_server, &text);
                        }
                    }
                    Ok(Ready::Copy(enc)) => {
                        crate::admin::metrics().statements_rewritten.inc();
                        to_server.extend_from_slice(frame.as_bytes());
                        self.copy = Some(enc);
                    }
                    Ok(Ready::CopyOut(copy)) => {
                        to_server.extend_from_slice(frame.as_bytes());
                        self.query_copy_out = Some(copy);
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
                self.statement_rows.remove(&name[..]);
                let analysis = snapshot.analysis(&sql);
                let planned = role_effects(&sql).and_then(|effects| {
                    let (mut p, r) = plan_and_render_parse(&snapshot, &sql, &analysis, &parse)?;
                    if !(utf8 || (r.is_none() && p.copy.is_none() && p.targets.is_empty())) {
                        return Err(not_utf8());
                    }
                    p.role_effect = effects.and_then(|e| e.into_iter().next().flatten());
                    Ok((p, r))
                });
                match planned {
                    Ok((mut prepared, rewritten)) => {
                        self.guard_prepare(&snapshot, &sql, &mut prepared);
                        if !analysis.reads.is_empty() {
                            prepared.reads = Some(analysis);
                        }
                        if !prepared.targets.is_empty() {
                            prepared.source = Some(Arc::new(Source {
                                sql: sql.clone(),
                                param_types: parse.param_types.clone(),
                            }));
                        }
                        self.pending
                            .push_back(Pending::ParseOrBind { injected: false });
                        match rewritten {
                            Some(bytes) => {
                                crate::admin::metrics().statements_rewritten.inc();
                                to_server.extend_from_slice(&bytes)
                            }
                            None => {
                                crate::admin::metrics().statements_relayed.inc();
                                to_server.extend_from_slice(frame.as_bytes())
                            }
                        }
                        self.statements.insert(Name::new(&name), Arc::new(prepared));
                    }
                    Err(refusal) => {
                        self.statements.remove(&name[..]);
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
                let mut prepared = self.statements.get(bind.statement).cloned();
                // Parameters are encrypted with the keys in force now (a
                // rotation since Parse adds a version equality must match).
                let snapshot = prepared
                    .as_ref()
                    .filter(|p| !p.targets.is_empty())
                    .map(|_| protector.snapshot());
                if let (Some(p), Some(snapshot)) = (prepared.clone(), snapshot.as_ref()) {
                    if p.stale_under(snapshot) {
                        match self.prepare_again(snapshot, bind.statement, &p, to_server) {
                            Ok(again) => prepared = Some(again),
                            Err(refusal) => {
                                note_refusal(user, &refusal);
                                self.refused = Some(refusal);
                                return Flow::Continue;
                            }
                        }
                    }
                }
                if let (Some(p), Some(snapshot)) = (
                    prepared.as_ref().filter(|p| !p.targets.is_empty()),
                    snapshot.as_ref(),
                ) {
                    if let Err(refusal) = encrypt_bind(snapshot, &bind, &p.targets, to_server) {
                        note_refusal(user, &refusal);
                        self.refused = Some(refusal);
                        return Flow::Continue;
                    }
                } else {
                    to_server.extend_from_slice(frame.as_bytes());
                }
                self.pending
                    .push_back(Pending::ParseOrBind { injected: false });
                self.guard_bind(bind.portal);
                // Drivers rebind the same (usually unnamed) portal for every
                // execution: its entries are updated in place.
                match self.portal_rows.get_mut(bind.portal) {
                    Some(rows) => {
                        rows.statement.clear();
                        rows.statement.extend_from_slice(bind.statement);
                        set_result_format_codes(&mut rows.formats, bind.result_formats);
                        rows.described = None;
                        rows.cell = Arc::default();
                    }
                    None => {
                        let mut formats = Vec::new();
                        set_result_format_codes(&mut formats, bind.result_formats);
                        self.portal_rows.insert(
                            Name::new(bind.portal),
                            PortalRows {
                                statement: bind.statement.to_vec(),
                                formats,
                                described: None,
                                cell: Arc::default(),
                            },
                        );
                    }
                }
                match (prepared, self.portals.get_mut(bind.portal)) {
                    (Some(p), Some(slot)) => *slot = p,
                    (Some(p), None) => {
                        self.portals.insert(Name::new(bind.portal), p);
                    }
                    (None, _) => {
                        self.portals.remove(bind.portal);
                    }
                }
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
                    Some((_, name)) => {
                        let cell = self.portal_rows.get(name).map(|p| p.cell.clone());
                        self.pending
                            .push_back(Pending::DescribePortal(name.to_vec(), cell))
                    }
                    None => {}
                }
                to_server.extend_from_slice(frame.as_bytes());
            }
            b'E' => {
                let portal = frame.body().split(|b| *b == 0).next().unwrap_or_default();
                // The portal's statement, looked up once for every use below.
                let statement = self.portals.get(portal).cloned();
                if let Some(p) = &statement {
                    if let Some(copy) = &p.copy {
                        let snapshot = p.snapshot.clone().unwrap_or_else(|| protector.snapshot());
                        match copy_encryptor(&snapshot, copy) {
                            Ok(enc) => self.copy = Some(enc),
                            Err(refusal) => {
                                note_refusal(user, &refusal);
                                self.refused = Some(refusal);
                                return Flow::Continue;
                            }
                        }
                    }
                    if let Some(reads) = &p.reads {
                        let snapshot = protector.snapshot();
                        if let Some(refusal) = self.denied_read(&snapshot, &reads.reads) {
                            note_refusal(user, &refusal);
                            self.refused = Some(refusal);
                            return Flow::Continue;
                        }
                    }
                }
                let guarded = match self.guard_execute(protector, portal) {
                    Ok(g) => g,
                    Err(refusal) => {
                        note_refusal(user, &refusal);
                        self.refused = Some(refusal);
                        return Flow::Continue;
                    }
                };
                let (plan, deferred) = match self.portal_rows.get(portal) {
                    None => (None, None),
                    Some(rows) => {
                        let described = rows
                            .described
                            .as_ref()
                            .or_else(|| self.statement_rows.get(&rows.statement[..]));
                        match described {
                            Some(row) => {
                                (Some(ResultPlan::bound(row.clone(), &rows.formats)), None)
                            }
                            // Not described yet: its Describe may still be on its way.
                            None => (
                                None,
                                Some(Box::new(Deferred {
                                    portal: rows.cell.clone(),
                                    statement: statement.clone(),
                                    formats: rows.formats.clone(),
                                })),
                            ),
                        }
                    }
                };
                let prepared =
                    statement.filter(|p| p.role_effect.is_some() || p.copy_out.is_some());
                self.pending.push_back(Pending::Execute(
                    plan.map(Arc::new),
                    prepared,
                    guarded,
                    deferred,
                ));
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
        if matches!(self.pending.front(), Some(Pending::Explain)) {
            if let Some(handled) = self.on_explain_reply(frame) {
                return handled;
            }
        }
        if matches!(self.pending.front(), Some(Pending::Injected)) {
            match tag {
                b'Z' => {
                    self.pending.pop_front();
                    return true;
                }
                b'E' | b'C' => return true,
                _ => {}
            }
        }
        if self.suppress && !matches!(tag, b'Z' | b'N' | b'A' | b'S') {
            // Replies to requests after a refused result are dropped, as if
            // the server had skipped them after an error. The server did
            // run them, so their role effects still count.
            match tag {
                b'E' => {
                    self.on_server_error();
                    self.drop_until_sync(false);
                }
                b'C' => {
                    let effect = match self.orphan_effects.pop_front() {
                        Some(e) => e,
                        None => self.query_effects.pop_front().flatten(),
                    };
                    self.complete(effect, frame.body());
                }
                _ => {}
            }
            return true;
        }
        match tag {
            b'H' => self.start_copy_out(protector, to_client),
            b'd' if self.copy_out.is_some() => {
                self.copy_out_data(frame.body(), to_client, false);
                true
            }
            b'c' if self.copy_out.is_some() => {
                if self.copy_out_data(&[], to_client, true) {
                    to_client.extend_from_slice(frame.as_bytes());
                }
                self.copy_out = None;
                true
            }
            b'3' if matches!(self.pending.front(), Some(Pending::InjectedClose)) => {
                self.pending.pop_front();
                true
            }
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
                let (role, generation) = self.policy_role(&snapshot);
                let results = match self.pending.front() {
                    Some(Pending::DescribeStatement { prepared, .. }) => {
                        prepared.as_ref().and_then(|p| p.results.clone())
                    }
                    Some(Pending::DescribePortal(name, _)) => {
                        self.portals.get(&name[..]).and_then(|p| p.results.clone())
                    }
                    _ => self.query_results.take(),
                };
                let results = results.as_deref().unwrap_or_default();
                let planned = self.descriptions.plan(
                    &snapshot,
                    &role,
                    generation,
                    frame.body(),
                    results,
                    |oid| {
                        // A table the catalog does not know: perhaps a protected
                        // table re-created outside pgveil. Reload once per OID.
                        if protector.note_unknown_oid(oid) {
                            if let Some(reload) = &shared.reload_catalog {
                                reload.notify_one();
                            }
                        }
                    },
                );
                match self.pending.front() {
                    Some(Pending::DescribeStatement { name, prepared }) => {
                        let name = name.clone();
                        if let (Some(p), Some((row, _))) = (prepared, &planned) {
                            let _ = p.rows.set(row.clone());
                        }
                        self.pending.pop_front();
                        match &planned {
                            Some((row, _)) => {
                                self.statement_rows.insert(Name::new(&name), row.clone())
                            }
                            None => self.statement_rows.remove(&name[..]),
                        };
                    }
                    Some(Pending::DescribePortal(name, cell)) => {
                        let name = name.clone();
                        if let (Some(cell), Some((row, _))) = (cell, &planned) {
                            let _ = cell.set(row.clone());
                        }
                        self.pending.pop_front();
                        if let Some(p) = self.portal_rows.get_mut(&name[..]) {
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
                        if let Some((row, rewritten)) = &planned {
                            if let Some((code, message)) = row.refusal() {
                                self.refuse_result(to_client, code, &message);
                                return true;
                            }
                            if self.guard_hold_description(protector.guard(), row, rewritten) {
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
                    Some(Pending::DescribeStatement { .. } | Pending::DescribePortal(..))
                ) {
                    self.pending.pop_front();
                }
                false
            }
            b'D' => {
                let Some(plan) = self.streaming_plan(protector) else {
                    return false;
                };
                if let Some((code, message)) = plan.row.refusal() {
                    self.refuse_result(to_client, code, &message);
                    return true;
                }
                if let Some(done) =
                    self.guard_row(protector.guard(), shared, &plan, frame.body(), to_client)
                {
                    return done;
                }
                if let Err(e) = rewrite_data_row(&plan, frame.body(), to_client, &mut self.cells) {
                    self.refuse_result(to_client, e.sqlstate, &e.message);
                }
                true
            }
            b'C' | b'I' | b's' => {
                if self.guard_end(protector.guard(), tag, to_client) {
                    return true;
                }
                let effect = if let Some(Pending::Execute(_, prepared, ..)) = self.pending.front() {
                    let effect = prepared.as_ref().and_then(|p| p.role_effect.clone());
                    self.pending.pop_front();
                    effect
                } else {
                    self.current = None;
                    match tag {
                        b'C' => self.query_effects.pop_front().flatten(),
                        _ => None,
                    }
                };
                if tag == b'C' {
                    self.complete(effect, frame.body());
                }
                false
            }
            b'E' => {
                self.current = None;
                self.copy_out = None;
                self.on_server_error();
                self.guard_error();
                self.drop_until_sync(false);
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
                self.query_effects.clear();
                self.orphan_effects.clear();
                self.query_copy_out = None;
                self.copy_out = None;
                if let (Some(t), Some(status)) = (self.roles.as_mut(), frame.body().first()) {
                    t.on_ready(*status);
                }
                while let Some(p) = self.pending.pop_front() {
                    if matches!(p, Pending::Ready | Pending::Query(_)) {
                        break;
                    }
                }
                if self.suppress {
                    self.suppress = false;
                    // The client was told of an error: inside a transaction
                    // block it must see the block as failed.
                    if frame.body() == b"T" {
                        // The statement ended on the server (the cancel, if
                        // any, came too late): fail the server's transaction
                        // too, so it matches what the client was told.
                        write_query(
                            &mut self.inject,
                            &refusal_sql(&Refusal {
                                sqlstate: "25P02",
                                message: "pgveil: a result in this transaction was refused".into(),
                            }),
                        );
                        self.pending.push_back(Pending::Injected);
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
    /// requests get no reply. When pgveil itself refused a result, the
    /// server goes on running them, so `keep_effects` keeps their role
    /// effects for the replies pgveil will swallow.
    fn drop_until_sync(&mut self, keep_effects: bool) {
        while matches!(
            self.pending.front(),
            Some(
                Pending::ParseOrBind { .. }
                    | Pending::InjectedClose
                    | Pending::DescribeStatement { .. }
                    | Pending::DescribePortal(..)
                    | Pending::Execute(..)
            )
        ) {
            if let Some(Pending::Execute(_, prepared, ..)) = self.pending.pop_front() {
                if keep_effects {
                    self.orphan_effects
                        .push_back(prepared.and_then(|p| p.role_effect.clone()));
                }
            }
        }
    }

    /// A statement completed: apply its role effect, or the end of the
    /// transaction its tag announces.
    fn complete(&mut self, effect: Option<RoleEffect>, body: &[u8]) {
        let Some(tracker) = self.roles.as_mut() else {
            return;
        };
        match effect {
            Some(e) => tracker.apply(&e),
            None => {
                let tag = body.strip_suffix(&[0]).unwrap_or(body);
                tracker.on_command_tag(tag);
            }
        }
    }

    /// A statement returning a column the session's role is denied is
    /// refused before the server runs it (so it has no effect there: no
    /// locks, no `nextval`, no cursor), not only when its result arrives,
    /// which stays the check of last resort. Skipped while a role change
    /// is on its way to the server: the role that will run the statement
    /// is not known yet.
    fn denied_read(
        &mut self,
        snapshot: &Snapshot,
        reads: &[crate::sql::BulkRead],
    ) -> Option<Refusal> {
        if reads.is_empty() || self.role_change_in_flight() {
            return None;
        }
        let (role, _) = self.policy_role(snapshot);
        reads
            .iter()
            .flat_map(|r| &r.columns)
            .find(|c| snapshot.action(&role, c) == crate::policy::role::Action::Deny)
            .map(|c| {
                self.denied_before = Some(c.full_name.clone());
                Refusal {
                    sqlstate: "42501",
                    message: denied_message(&c.full_name),
                }
            })
    }

    fn role_change_in_flight(&self) -> bool {
        self.query_effects.iter().any(Option::is_some)
            || self.pending.iter().any(|p| {
                matches!(p, Pending::Execute(_, Some(prepared), ..) if prepared.role_effect.is_some())
            })
    }

    /// Prepares statement `name` again under `snapshot`, ahead of the
    /// Bind that found it stale: a Close and a Parse the client never
    /// sees (their replies are swallowed). The statement keeps its row
    /// shape and role effect; the client's name now means the new text.
    fn prepare_again(
        &mut self,
        snapshot: &Arc<Snapshot>,
        name: &[u8],
        old: &Prepared,
        to_server: &mut BytesMut,
    ) -> Result<Arc<Prepared>, Refusal> {
        let Some(source) = old.source.clone() else {
            return Err(Refusal {
                sqlstate: "0A000",
                message: "pgveil: this statement was prepared before a key rotation; \
                          prepare it again"
                    .into(),
            });
        };
        let parse = Parse {
            name,
            query: source.sql.as_bytes(),
            param_types: source.param_types.clone(),
        };
        let analysis = snapshot.analysis(&source.sql);
        let (mut again, rewritten) =
            plan_and_render_parse(snapshot, &source.sql, &analysis, &parse)?;
        again.role_effect = old.role_effect.clone();
        again.reads = old.reads.clone();
        self.guard_prepare(snapshot, &source.sql, &mut again);
        if let Some(rows) = old.rows.get() {
            let _ = again.rows.set(rows.clone());
        }
        again.source = Some(source.clone());
        // Close: 'C', length, 'S', name, NUL.
        to_server.put_u8(b'C');
        to_server.put_u32((4 + 1 + name.len() + 1) as u32);
        to_server.put_u8(b'S');
        to_server.put_slice(name);
        to_server.put_u8(0);
        self.pending.push_back(Pending::InjectedClose);
        match rewritten {
            Some(bytes) => to_server.extend_from_slice(&bytes),
            None => parse.encode(to_server),
        }
        self.pending
            .push_back(Pending::ParseOrBind { injected: true });
        tracing::debug!("statement prepared again after a key rotation");
        let again = Arc::new(again);
        self.statements.insert(Name::new(name), again.clone());
        Ok(again)
    }

    fn on_server_error(&mut self) {
        self.query_effects.clear();
        if let Some(t) = self.roles.as_mut() {
            t.on_error();
        }
    }

    /// A reload or catalog refresh since the role was decided: decide it
    /// again, and let results planned before (a prepared statement's
    /// Describe) be re-planned. One atomic load per Query or Execute.
    fn notice_reload(&mut self, protector: &Protector) {
        let latest = protector.generation();
        if latest != self.role_snapshot {
            self.role = None;
            self.role_snapshot = latest;
        }
    }

    /// What a result plan's actions were decided for: the role tracker's
    /// generation (SET ROLE) and the protection snapshot's (reload), so a
    /// plan from before either is re-planned.
    fn generation(&self) -> u64 {
        let tracker = self.roles.as_ref().map_or(0, RoleTracker::generation);
        (self.role_snapshot << 32) ^ tracker
    }

    /// The policy role for the PostgreSQL role the session acts as now.
    fn policy_role(&mut self, snapshot: &Snapshot) -> (Arc<PolicyRole>, u64) {
        if self.role_snapshot != snapshot.generation() {
            self.role = None;
            self.role_snapshot = snapshot.generation();
        }
        let generation = self.generation();
        if self.role_generation != generation || self.role.is_none() {
            let user = self.roles.as_ref().map_or("", RoleTracker::current_user);
            let role = snapshot.role_for(user);
            if self.role.as_deref() != Some(&role) {
                tracing::info!(pg_role = user, role = %role.name, "policy role changed");
            }
            self.role = Some(Arc::new(role));
            self.role_generation = generation;
        }
        let role = self
            .role
            .get_or_insert_with(|| Arc::new(snapshot.role_for("")));
        (role.clone(), generation)
    }

    /// The plan of the result now streaming: the front Execute's —
    /// settling one that waited for its portal's Describe, as pipelined
    /// Bind/Describe/Execute leaves it — or a simple query's, decided
    /// again when the role changed since it was planned.
    fn streaming_plan(&mut self, protector: &Protector) -> Option<Arc<ResultPlan>> {
        let plan = self.planned_result()?;
        if plan.row.generation != self.generation() {
            return Some(self.replan(protector, &plan));
        }
        Some(plan)
    }

    /// [`ProtectState::streaming_plan`] as planned.
    fn planned_result(&mut self) -> Option<Arc<ResultPlan>> {
        match self.pending.front_mut() {
            Some(Pending::Execute(plan, _, _, deferred)) => {
                if plan.is_none() {
                    if let Some(d) = deferred.take() {
                        *plan = d.resolve().map(Arc::new);
                    }
                }
                plan.clone()
            }
            _ => self.current.clone(),
        }
    }

    /// A result planned before the role changed, decided again for the
    /// current role; the new plan replaces the old for the rest of the result.
    fn replan(&mut self, protector: &Protector, plan: &ResultPlan) -> Arc<ResultPlan> {
        let snapshot = self
            .snapshot
            .get_or_insert_with(|| protector.snapshot())
            .clone();
        let (role, generation) = self.policy_role(&snapshot);
        let plan = Arc::new(plan.for_role(&snapshot, &role, generation));
        match self.pending.front_mut() {
            Some(Pending::Execute(p, ..)) => *p = Some(plan.clone()),
            _ => self.current = Some(plan.clone()),
        }
        plan
    }

    /// Replaces the rest of a result with one ErrorResponse.
    fn refuse_result(&mut self, to_client: &mut BytesMut, code: &str, message: &str) {
        tracing::info!(sqlstate = code, reason = %message, "result refused");
        crate::admin::metrics().statements_blocked.inc();
        crate::proto::error::write_error(
            to_client,
            crate::proto::error::Severity::Error,
            code,
            message,
        );
        self.current = None;
        self.suppress = true;
        self.drop_until_sync(true);
    }
}

/// Bind's result-format codes (count, then codes).
/// Bind's result-format codes into `codes` (reusing its allocation).
fn set_result_format_codes(codes: &mut Vec<i16>, raw: &[u8]) {
    codes.clear();
    codes.extend(
        raw.get(2..)
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]])),
    );
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
    crate::admin::metrics().statements_refused.inc();
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
