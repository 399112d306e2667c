//! COPY through a protected session: a COPY FROM STDIN into encrypted
//! columns is encrypted row by row as its CopyData arrives; a COPY TO
//! STDOUT of protected columns is decrypted and masked by role.

use super::super::results::{copy_field_plans, show_copy_field};
use super::{CopyOutState, Flow, Pending, ProtectState};
use crate::net::Frame;
use crate::rewrite::copy::{
    CopyEncryptor, CopyError, CopyKind, CopyLayout, CopyOutRewriter, CopySpec,
};
use crate::rewrite::{Protector, Snapshot};
use crate::sql::{CopyFormat, CopyIn, Refusal};
use bytes::{BufMut, BytesMut};
use tracing::debug;

impl ProtectState {
    /// CopyData/CopyDone/CopyFail during an encrypted COPY.
    pub(super) fn on_copy_message(&mut self, frame: &Frame, to_server: &mut BytesMut) -> Flow {
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

    /// CopyOutResponse: when the COPY is one of protected columns, start
    /// masking its stream by role (or refuse it for a denied column).
    /// Returns `true` when the frame was swallowed.
    pub(super) fn start_copy_out(
        &mut self,
        protector: &Protector,
        to_client: &mut BytesMut,
    ) -> bool {
        let copy = match self.pending.front() {
            Some(Pending::Execute(_, Some(p), ..)) => p.copy_out.clone(),
            Some(Pending::Execute(..)) => None,
            _ => self.query_copy_out.take(),
        };
        let Some(copy) = copy else {
            return false;
        };
        let snapshot = self
            .snapshot
            .get_or_insert_with(|| protector.snapshot())
            .clone();
        let (role, _) = self.policy_role(&snapshot);
        let (fields, denied) = copy_field_plans(&snapshot, &role, &copy.fields);
        if let Some(col) = denied {
            let message = format!(
                "pgveil: permission denied for column {col}: your policy role may not read it; \
                 leave it out of the COPY column list or ask for a role that may"
            );
            self.refuse_result(to_client, "42501", &message);
            return true;
        }
        let selected = fields.iter().map(Option::is_some).collect();
        self.copy_out = Some(CopyOutState {
            rewriter: CopyOutRewriter::new(copy_layout(&copy), selected),
            fields,
        });
        false
    }

    /// Masks CopyData (or, at `done`, the last unterminated row) into
    /// `to_client`. On failure the rest of the COPY is replaced by one
    /// error; returns whether the stream is still good.
    pub(super) fn copy_out_data(
        &mut self,
        data: &[u8],
        to_client: &mut BytesMut,
        done: bool,
    ) -> bool {
        let Some(state) = self.copy_out.as_mut() else {
            return false;
        };
        let CopyOutState { rewriter, fields } = state;
        let cells = &mut self.cells;
        let mut show = |i: usize, value: &[u8], out: &mut Vec<u8>| match fields
            .get(i)
            .and_then(Option::as_ref)
        {
            Some(field) => {
                show_copy_field(field, value, out, cells).map_err(|e| CopyError::Field {
                    row: 0,
                    sqlstate: e.sqlstate,
                    message: e.message,
                })
            }
            None => {
                out.extend_from_slice(value);
                Ok(true)
            }
        };
        let result = if done {
            rewriter.finish(to_client, &mut show)
        } else {
            rewriter.feed(data, to_client, &mut show)
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                self.copy_out = None;
                self.refuse_result(to_client, e.sqlstate(), &e.to_string());
                false
            }
        }
    }
}

pub(super) fn copy_encryptor(snapshot: &Snapshot, copy: &CopyIn) -> Result<CopyEncryptor, Refusal> {
    let mut fields = Vec::with_capacity(copy.fields.len());
    for f in &copy.fields {
        fields.push(match f {
            Some(col) if col.protection.encrypts() => Some(snapshot.cipher(col)?.clone()),
            _ => None,
        });
    }
    Ok(CopyEncryptor::new(CopySpec {
        fields,
        layout: copy_layout(copy),
    }))
}

/// The stream layout a COPY statement asked for.
pub(super) fn copy_layout(copy: &CopyIn) -> CopyLayout {
    CopyLayout {
        kind: match copy.format {
            CopyFormat::Text => CopyKind::Text,
            CopyFormat::Csv => CopyKind::Csv,
        },
        delimiter: copy.delimiter,
        null: copy.null.clone().into_bytes(),
        quote: copy.quote,
        escape: copy.escape,
        header: copy.header,
    }
}
