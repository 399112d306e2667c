//! Requests from the client: each Query, Parse, Bind, Describe, Execute
//! and COPY stream planned, rewritten (literals and parameters encrypted)
//! or refused, and remembered for the replies (`server.rs`).

use super::copy::copy_encryptor;
use super::plan::{not_utf8, plan_and_render, plan_and_render_parse, require_utf8, Planned, Ready};
use super::{inject_refusal, write_query, Deferred, Pending, PortalRows, ProtectState, Source};
use crate::net::Frame;
use crate::proto::extended::{self, Bind, Parse};
use crate::proto::name::Name;
use crate::rewrite::bind::encrypt_bind;
use crate::rewrite::{refusal_sql, Protector};
use crate::server::Shared;
use crate::session::frontend::Flow;
use crate::session::results::ResultPlan;
use crate::sql::role::role_effects;
use crate::sql::Refusal;
use bytes::BytesMut;
use std::collections::VecDeque;
use std::sync::Arc;

impl ProtectState {
    pub(super) fn on_client(
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
                        match &copy.sql {
                            Some(text) => write_query(to_server, text),
                            None => to_server.extend_from_slice(frame.as_bytes()),
                        }
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
                        let touches = matches!(
                            analysis.plan.as_deref(),
                            Ok(crate::sql::Plan::Rewrite(rw)) if !rw.touched.is_empty()
                        );
                        prepared.online_epoch = snapshot.catalog().online_epoch();
                        prepared.checked = snapshot.generation().into();
                        if !analysis.reads.is_empty() {
                            prepared.reads = Some(analysis);
                        }
                        if !prepared.targets.is_empty() || touches {
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
                // A statement reading protected columns is checked again
                // once per new snapshot: an online migration that started
                // or ended since changes how it must be written.
                let snapshot = prepared
                    .as_ref()
                    .filter(|p| {
                        !p.targets.is_empty()
                            || (p.source.is_some()
                                && p.checked.load(std::sync::atomic::Ordering::Relaxed)
                                    != protector.generation())
                    })
                    .map(|_| protector.snapshot());
                if let (Some(p), Some(snapshot)) = (prepared.clone(), snapshot.as_ref()) {
                    p.checked
                        .store(snapshot.generation(), std::sync::atomic::Ordering::Relaxed);
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
}

pub(super) fn forward(frame: &Frame, to_server: &mut BytesMut) -> Flow {
    to_server.extend_from_slice(frame.as_bytes());
    if frame.tag() == crate::proto::tag::TERMINATE {
        Flow::Close
    } else {
        Flow::Continue
    }
}

pub(super) fn malformed(what: &str) -> Refusal {
    Refusal {
        sqlstate: "08P01",
        message: format!("pgveil: malformed {what} message; it was not relayed"),
    }
}

pub(super) fn note_refusal(user: &str, refusal: &Refusal) {
    crate::admin::metrics().statements_refused.inc();
    tracing::info!(%user, sqlstate = refusal.sqlstate, reason = %refusal.message, "statement refused");
}

/// After DDL that may concern protected tables, reload the catalog in the
/// background so later statements see the new schema.
pub(super) fn maybe_reload_catalog(shared: &Shared, sql: &str) {
    let head = sql.trim_start().as_bytes();
    let starts = |kw: &[u8]| head.len() >= kw.len() && head[..kw.len()].eq_ignore_ascii_case(kw);
    if starts(b"CREATE") || starts(b"ALTER") || starts(b"DROP") {
        if let Some(reload) = &shared.reload_catalog {
            reload.notify_one();
        }
    }
}

/// Bind's result-format codes (count, then codes) into `codes` (reusing its allocation).
pub(super) fn set_result_format_codes(codes: &mut Vec<i16>, raw: &[u8]) {
    codes.clear();
    codes.extend(
        raw.get(2..)
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]])),
    );
}
