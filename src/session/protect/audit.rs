//! Where the session meets the audit trail (see `crate::audit::track`).
//!
//! Kept apart from the protection handlers: these wrappers run the audit
//! tracker around [`ProtectState::on_client`] and
//! [`ProtectState::on_server`] when `[audit]` is on, and are never reached
//! when it is off, so the relay of untouched traffic costs the same as
//! without an audit trail.

use super::{write_query, Pending, ProtectState};
use crate::audit::planned::Planned;
use crate::audit::SessionAudit;
use crate::net::Frame;
use crate::proto::extended::{self, Parse};
use crate::rewrite::{refusal_sql, Protector};
use crate::server::Shared;
use crate::session::frontend::Flow;
use crate::session::Session;
use crate::sql::approval::{approval_statement, ApprovalStmt};
use bytes::BytesMut;

impl Session<'_> {
    /// Records the connection once the server accepted the user.
    pub(in crate::session) fn audit_opened(&mut self) {
        if let Some(a) = self.audit.as_mut() {
            let role = self
                .protect
                .as_ref()
                .and_then(|p| p.role.as_ref())
                .map(|r| r.name.as_str());
            a.opened(&self.user, role);
        }
    }
}

impl ProtectState {
    /// [`ProtectState::on_client`] with the audit tracker around it: plans
    /// are noted, and a statement on protected columns whose record cannot
    /// be queued is refused here instead of being forwarded.
    pub(super) fn on_client_audited(
        &mut self,
        a: &mut SessionAudit,
        protector: &Protector,
        shared: &Shared,
        user: &str,
        frame: &Frame,
        to_server: &mut BytesMut,
    ) -> Flow {
        let tag = frame.tag();
        let in_copy = (self.copy.is_some() || self.copy_failed)
            && matches!(tag, b'd' | b'c' | b'f' | b'S' | b'H');
        if in_copy || self.refused.is_some() {
            // COPY data, or skipped until Sync as the server would.
            if tag == b'S' {
                a.sync();
            }
            return self.on_client(protector, shared, user, frame, to_server);
        }
        match tag {
            b'Q' => {
                if let Some(sql) = extended::query_text(frame.body()) {
                    let sql = String::from_utf8_lossy(sql);
                    let snapshot = protector.snapshot();
                    // `SET pgveil.approval` is answered by the guard, not
                    // planned; it touches no protected column.
                    let answered = matches!(
                        approval_statement(&sql),
                        Some(ApprovalStmt::Set(_) | ApprovalStmt::Reset(_))
                    );
                    let planned = if answered {
                        None
                    } else {
                        Planned::of(&sql, &snapshot.plan(&sql), &snapshot, self.role.as_deref())
                    };
                    if let Err(refusal) = a.query(planned, frame) {
                        self.pending.push_back(Pending::Ready);
                        write_query(to_server, &refusal_sql(&refusal));
                        return Flow::Continue;
                    }
                } else {
                    a.query(None, frame).ok();
                }
            }
            b'P' => {
                if let Some(parse) = Parse::decode(frame.body()) {
                    let sql = String::from_utf8_lossy(parse.query);
                    let snapshot = protector.snapshot();
                    a.parse(
                        parse.name,
                        Planned::of(&sql, &snapshot.plan(&sql), &snapshot, self.role.as_deref())
                            .or_else(|| Planned::result_only(&sql)),
                    );
                }
            }
            b'B' => {
                if let Some((portal, statement)) = bind_names(frame.body()) {
                    a.bind(portal, statement);
                }
            }
            b'C' => {
                if let Some((kind, name)) = extended::target(frame.body()) {
                    a.close(kind, name);
                }
            }
            b'E' => {
                let portal = frame.body().split(|b| *b == 0).next().unwrap_or_default();
                if let Err(refusal) = a.execute(portal) {
                    // Dropped with the rest of the batch; the refusal is
                    // injected before the Sync.
                    self.refused = Some(refusal);
                    return Flow::Continue;
                }
            }
            b'S' | b'F' => a.sync(),
            _ => {}
        }
        let flow = self.on_client(protector, shared, user, frame, to_server);
        if let Some(column) = self.denied_before.take() {
            a.refused_read(&column);
        }
        if self.refused.is_some() {
            // pgveil refused this Parse or Bind: record it with the
            // statement injected at the Sync.
            match tag {
                b'P' => {
                    if let Some(p) = Parse::decode(frame.body()) {
                        a.refused_request(p.name);
                    }
                }
                b'B' => {
                    if let Some((_, statement)) = bind_names(frame.body()) {
                        a.refused_request(statement);
                    }
                }
                _ => {}
            }
        }
        flow
    }

    /// [`ProtectState::on_server`] with the audit tracker watching what the
    /// client is sent; a protected result that cannot be recorded is
    /// refused.
    pub(super) fn on_server_audited(
        &mut self,
        a: &mut SessionAudit,
        protector: &Protector,
        shared: &Shared,
        frame: &Frame,
        to_client: &mut BytesMut,
    ) -> bool {
        let tag = frame.tag();
        let before = to_client.len();
        if tag == b'D' && !self.suppress && a.wants_row_shape() {
            if let Some(plan) = self.streaming_plan(protector) {
                if let Err(refusal) = a.shape_result(plan.row.clone()) {
                    self.refuse_result(to_client, refusal.sqlstate, &refusal.message);
                    a.server_output(&to_client[before..]);
                    return true;
                }
            }
        }
        let was_suppressed = self.suppress;
        let handled = self.on_server(protector, shared, frame, to_client);
        if tag == b'T' && handled && a.wants_description_shape() {
            let row = match &self.current {
                Some(plan) => Some(plan.row.clone()),
                // Refused as it started (a denied column): plan it again to
                // learn which columns the role was denied.
                None if self.suppress && !was_suppressed => {
                    let snapshot = protector.snapshot();
                    let (role, generation) = self.policy_role(&snapshot);
                    self.descriptions
                        .plan(&snapshot, &role, generation, frame.body(), &[], |_| {})
                        .map(|(row, _)| row)
                }
                None => None,
            };
            if let Some(row) = row {
                if let Err(refusal) = a.shape(row.columns()) {
                    self.refuse_result(to_client, refusal.sqlstate, &refusal.message);
                }
            }
        }
        if matches!(tag, b'C' | b'I' | b's' | b'E' | b'Z') {
            // The policy role may have changed (SET ROLE) since the
            // statement started; records name the one in effect at its end.
            a.note_role(self.role.as_ref().map(|r| r.name.as_str()));
            if let Some(id) = self.approval_id() {
                a.note_approval(id);
            }
        }
        // What the handlers wrote (rewritten frames, released rows), then
        // the frame itself when the backend handler relays it unchanged.
        a.server_output(&to_client[before..]);
        if !handled {
            a.server_output(frame.as_bytes());
        }
        handled
    }
}

/// The portal and statement names at the start of a Bind body, without
/// decoding its parameters.
fn bind_names(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut parts = body.splitn(3, |b| *b == 0);
    let portal = parts.next()?;
    let statement = parts.next()?;
    parts.next()?;
    Some((portal, statement))
}
