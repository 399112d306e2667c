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
//!
//! This file holds the session state and what both directions share;
//! `client.rs` handles requests, `server.rs` replies, `plan.rs` and
//! `copy.rs` planning and COPY streams, `guarded.rs` the bulk-read guard
//! and `audit.rs` the audit trail's hooks.

mod audit;
mod client;
use client::forward;
mod copy;
use crate::proto::name::{Name, NameMap};
mod guarded;
mod plan;
mod server;
use plan::plan_and_render_parse;

use super::frontend::Flow;
use super::results::{
    denied_message, CellBuffers, DescriptionCache, FieldPlan, ResultPlan, RowPlan,
};
use super::roles::RoleTracker;
use super::Session;
use crate::net::Frame;
use crate::policy::role::PolicyRole;
use crate::proto::extended::{self, Parse};
use crate::rewrite::copy::{CopyEncryptor, CopyOutRewriter};
use crate::rewrite::Protector;
use crate::rewrite::{refusal_sql, Snapshot};
use crate::sql::role::RoleEffect;
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
    /// The online migrations in progress when it was planned
    /// (`Catalog::online_epoch`): a column that started or finished moving
    /// since is read differently, so it is prepared again.
    online_epoch: u64,
    /// The latest snapshot generation it was checked against.
    checked: std::sync::atomic::AtomicU64,
}

/// A statement as the client prepared it.
#[derive(Debug)]
struct Source {
    sql: String,
    param_types: Vec<u32>,
}

impl Prepared {
    /// Rendered for one live key version of a searchable column that now
    /// has several (executing it as is would miss rows stored under the
    /// other versions), or under another set of online migrations (it
    /// would read a column in only one of its places, or name a hidden
    /// column that is gone).
    fn stale_under(&self, snapshot: &Snapshot) -> bool {
        self.online_epoch != snapshot.catalog().online_epoch()
            || self.targets.iter().any(|t| {
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
                message: "pgveil: this statement was prepared before a key rotation or a \
                          column migration; prepare it again"
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
        again.online_epoch = snapshot.catalog().online_epoch();
        again.checked = snapshot.generation().into();
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
        tracing::debug!("statement prepared again after a key rotation or a column migration");
        let again = Arc::new(again);
        self.statements.insert(Name::new(name), again.clone());
        Ok(again)
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
