//! Planning a client's statement against the protection snapshot and
//! rendering what the server will see instead: the rewritten text, or a
//! Parse with the server's parameter types.

use super::Prepared;
use crate::proto::extended::Parse;
use crate::rewrite::bind::server_param_types;
use crate::rewrite::copy::CopyEncryptor;
use crate::rewrite::{Analyzed, Snapshot};
use crate::sql::{CopyIn, Plan, ProtectedColumn, Refusal};
use bytes::BytesMut;
use std::sync::Arc;

/// Statements that touch protected columns must be valid UTF-8: pgveil
/// splices envelopes into the text by byte offset and encrypts literal
/// values as UTF-8, so any other client encoding could corrupt them.
pub(super) fn require_utf8(utf8: bool, planned: Planned) -> Result<Planned, Refusal> {
    match planned {
        Planned::Same => Ok(Planned::Same),
        other if utf8 => Ok(other),
        _ => Err(not_utf8()),
    }
}

pub(super) fn not_utf8() -> Refusal {
    Refusal {
        sqlstate: "22021",
        message: "pgveil: a statement that touches protected columns must be valid UTF-8; \
                  set client_encoding = 'UTF8'"
            .into(),
    }
}

/// A planned simple query, ready to send.
pub(super) enum Ready {
    Same,
    Text(String),
    Copy(CopyEncryptor),
    CopyOut(CopyIn),
}

/// What a statement becomes.
pub(super) enum Planned {
    /// Relay the original bytes.
    Same,
    /// Relay this text instead.
    Text(String),
    /// Relay as is, then encrypt the COPY stream.
    Copy(CopyIn),
    /// Relay as is, then decrypt and mask the COPY TO stream.
    CopyOut(CopyIn),
}

pub(super) fn plan_and_render(
    snapshot: &Snapshot,
    sql: &str,
    analysis: &Analyzed,
    results: &mut Option<Arc<[Option<ProtectedColumn>]>>,
) -> Result<Planned, Refusal> {
    let plan = analysis.plan.clone()?;
    *results = match &*plan {
        Plan::Rewrite(rw) if !rw.results.is_empty() => Some(rw.results.clone()),
        _ => None,
    };
    match &*plan {
        Plan::Passthrough => Ok(Planned::Same),
        Plan::Rewrite(rw) if rw.edits.is_empty() => Ok(Planned::Same),
        Plan::Rewrite(rw) => snapshot.render(sql, &rw.edits).map(Planned::Text),
        Plan::CopyIn(copy) => Ok(Planned::Copy(copy.clone())),
        Plan::CopyOut(copy) => Ok(Planned::CopyOut(copy.clone())),
    }
}

/// Plans a Parse; returns what to remember and the rewritten frame, if any.
pub(super) fn plan_and_render_parse(
    snapshot: &Arc<Snapshot>,
    sql: &str,
    analysis: &Analyzed,
    parse: &Parse<'_>,
) -> Result<(Prepared, Option<BytesMut>), Refusal> {
    let plan = analysis.plan.clone()?;
    match &*plan {
        Plan::Passthrough => Ok((Prepared::default(), None)),
        Plan::CopyIn(copy) => Ok((
            Prepared {
                targets: Vec::new(),
                copy: Some(copy.clone()),
                snapshot: Some(snapshot.clone()),
                role_effect: None,
                copy_out: None,
                results: None,
                guard: None,
                rows: Default::default(),
                source: None,
                reads: None,
                online_epoch: 0,
                checked: Default::default(),
            },
            None,
        )),
        Plan::CopyOut(copy) => {
            // A COPY TO of a column being migrated online is sent as the
            // statement analysis wrote.
            let rewritten = copy.sql.as_ref().map(|text| {
                let mut out = BytesMut::new();
                Parse {
                    name: parse.name,
                    query: text.as_bytes(),
                    param_types: parse.param_types.clone(),
                }
                .encode(&mut out);
                out
            });
            Ok((
                Prepared {
                    copy_out: Some(copy.clone()),
                    ..Prepared::default()
                },
                rewritten,
            ))
        }
        Plan::Rewrite(rw) => {
            let results = (!rw.results.is_empty()).then(|| rw.results.clone());
            if rw.edits.is_empty() && rw.params.is_empty() {
                return Ok((
                    Prepared {
                        results,
                        ..Prepared::default()
                    },
                    None,
                ));
            }
            let text = if rw.edits.is_empty() {
                sql.to_owned()
            } else {
                snapshot.render(sql, &rw.edits)?
            };
            let targets = snapshot.bind_targets(&rw.params);
            let rewritten = Parse {
                name: parse.name,
                query: text.as_bytes(),
                param_types: server_param_types(&parse.param_types, &targets),
            };
            let mut out = BytesMut::new();
            rewritten.encode(&mut out);
            Ok((
                Prepared {
                    targets,
                    copy: None,
                    snapshot: Some(snapshot.clone()),
                    role_effect: None,
                    copy_out: None,
                    results,
                    guard: None,
                    rows: Default::default(),
                    source: None,
                    reads: None,
                    online_epoch: 0,
                    checked: Default::default(),
                },
                Some(out),
            ))
        }
    }
}
