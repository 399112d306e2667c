//! Replies from the server: which request each answers, RowDescriptions
//! planned for the role, DataRows decrypted or masked, results refused
//! with one ErrorResponse, and the role effects of completed statements.
//! The request side is `client.rs`.

use super::{write_query, Pending, ProtectState};
use crate::net::Frame;
use crate::proto::extended;
use crate::proto::name::Name;
use crate::rewrite::bind::client_param_types;
use crate::rewrite::{refusal_sql, Protector};
use crate::server::Shared;
use crate::session::results::{rewrite_data_row, ResultPlan, RowPlan};
use crate::sql::role::RoleEffect;
use crate::sql::Refusal;
use bytes::BytesMut;
use std::sync::Arc;

impl ProtectState {
    /// Recognises replies to tracked requests; returns `true` when the
    /// frame was rewritten into `to_client` or swallowed.
    pub(super) fn on_server(
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
    pub(super) fn drop_until_sync(&mut self, keep_effects: bool) {
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
    pub(super) fn complete(&mut self, effect: Option<RoleEffect>, body: &[u8]) {
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

    pub(super) fn on_server_error(&mut self) {
        self.query_effects.clear();
        if let Some(t) = self.roles.as_mut() {
            t.on_error();
        }
    }

    /// The plan of the result now streaming: the front Execute's —
    /// settling one that waited for its portal's Describe, as pipelined
    /// Bind/Describe/Execute leaves it — or a simple query's, decided
    /// again when the role changed since it was planned.
    pub(super) fn streaming_plan(&mut self, protector: &Protector) -> Option<Arc<ResultPlan>> {
        let plan = self.planned_result()?;
        if plan.row.generation != self.generation() {
            return Some(self.replan(protector, &plan));
        }
        Some(plan)
    }

    /// [`ProtectState::streaming_plan`] as planned.
    pub(super) fn planned_result(&mut self) -> Option<Arc<ResultPlan>> {
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
    pub(super) fn replan(&mut self, protector: &Protector, plan: &ResultPlan) -> Arc<ResultPlan> {
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
    pub(super) fn refuse_result(&mut self, to_client: &mut BytesMut, code: &str, message: &str) {
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

pub(super) fn row_formats(row: &RowPlan) -> Vec<i16> {
    row.described_formats.clone()
}
