//! Result rows on their way to the client: decrypt and mask by role.
//!
//! A RowDescription field whose table OID and attribute number map to a
//! protected column gets that column's logical type, and its cells are
//! decrypted and then shown as the caller's role allows: clear, masked,
//! NULL, or the whole result refused. Fields computed from a protected
//! column report OID 0 and pass through as whatever the server computed
//! (over ciphertext, so never plaintext).

use crate::admin::ColumnCounters;
use crate::crypto::{transcode, ColumnCipher, Format};
use crate::policy::mask::PseudonymKey;
use crate::policy::role::{Action, PolicyRole};
use crate::proto::cursor::Cursor;
use crate::rewrite::Snapshot;
use crate::sql::ProtectedColumn;
use bytes::{BufMut, BytesMut};
use std::sync::Arc;

/// What to do with one protected field.
#[derive(Debug)]
pub(super) struct FieldPlan {
    column: ProtectedColumn,
    action: Action,
    cipher: Option<Arc<ColumnCipher>>,
    pseudonym: Option<Arc<PseudonymKey>>,
    /// The column is being migrated: a value that is not one of its
    /// envelopes is legacy plaintext.
    legacy: bool,
    /// The column's metrics, resolved once per plan.
    counters: ColumnCounters,
}

impl FieldPlan {
    /// Everything showing a cell of `col` needs, looked up once.
    fn new(snapshot: &Snapshot, col: &ProtectedColumn, action: Action) -> Self {
        FieldPlan {
            column: col.clone(),
            action,
            cipher: snapshot.cipher_opt(col).cloned(),
            pseudonym: snapshot.pseudonym_key(col).cloned(),
            legacy: snapshot.catalog().is_migrating(&col.full_name),
            counters: crate::admin::metrics().column(&col.full_name),
        }
    }
}

/// The protected fields of one row shape.
#[derive(Debug)]
pub(super) struct RowPlan {
    fields: Vec<Option<FieldPlan>>,
    /// A column the role may not receive: the result is refused.
    pub(super) denied: Option<String>,
    /// A field no role may receive (a view column that may be computed
    /// from a protected column, the hidden column of an online migration,
    /// a column the catalog has not seen yet): SQLSTATE and message; the
    /// result is refused for every role.
    computed: Option<(&'static str, String)>,
    /// Format codes as the RowDescription stated them.
    pub(super) described_formats: Vec<i16>,
    /// The role generation the actions were decided for (see
    /// `RoleTracker::generation`); a plan from before a `SET ROLE` is
    /// re-decided before it shows a row.
    pub(super) generation: u64,
    /// Tables (`schema.table`) of the protected columns the role sees in
    /// some form (clear, mask, pseudonym): its rows count against the
    /// bulk-read limits. Empty when every protected field is NULL to it.
    pub(super) visible: Vec<String>,
}

impl RowPlan {
    /// The same row shape with every action decided again for `role`.
    pub(super) fn for_role(&self, snapshot: &Snapshot, role: &PolicyRole, generation: u64) -> Self {
        let mut denied = None;
        let mut visible: Vec<String> = Vec::new();
        let fields = self
            .fields
            .iter()
            .map(|f| {
                f.as_ref().map(|f| {
                    let action = snapshot.action(role, &f.column);
                    if action == Action::Deny && denied.is_none() {
                        denied = Some(f.column.full_name.clone());
                    }
                    if matches!(action, Action::Clear | Action::Mask(_)) {
                        let table = crate::sql::bulk::table_of(&f.column.full_name);
                        if !visible.iter().any(|t| t == table) {
                            visible.push(table.to_owned());
                        }
                    }
                    FieldPlan {
                        column: f.column.clone(),
                        action,
                        cipher: f.cipher.clone(),
                        pseudonym: f.pseudonym.clone(),
                        legacy: f.legacy,
                        counters: f.counters.clone(),
                    }
                })
            })
            .collect();
        RowPlan {
            fields,
            denied,
            computed: self.computed.clone(),
            described_formats: self.described_formats.clone(),
            generation,
            visible,
        }
    }

    /// Why no row of this result may be shown: SQLSTATE and message.
    pub(super) fn refusal(&self) -> Option<(&'static str, String)> {
        if let Some((code, message)) = &self.computed {
            return Some((code, message.clone()));
        }
        self.denied
            .as_ref()
            .map(|col| ("42501", denied_message(col)))
    }
}

impl RowPlan {
    /// The protected fields' columns and what the role is shown, for the
    /// audit trail.
    pub(super) fn columns(&self) -> impl Iterator<Item = (&str, &Action)> + '_ {
        self.fields
            .iter()
            .flatten()
            .map(|f| (f.column.full_name.as_str(), &f.action))
    }
}

impl crate::audit::planned::ResultColumns for RowPlan {
    fn each(&self, f: &mut dyn FnMut(&str, &Action)) {
        for (name, action) in self.columns() {
            f(name, action);
        }
    }
}

/// Why a result with a column the role is denied is refused.
pub(super) fn denied_message(column: &str) -> String {
    format!(
        "pgveil: permission denied for column {column}: your policy role may not read it; \
         leave it out of the query or ask for a role that may"
    )
}

/// A row shape with the formats the cells actually come in.
#[derive(Debug)]
pub(super) struct ResultPlan {
    pub(super) row: Arc<RowPlan>,
    formats: Vec<i16>,
}

impl ResultPlan {
    /// Uses the formats the RowDescription stated (simple query, Describe portal).
    pub(super) fn described(row: Arc<RowPlan>) -> Self {
        let formats = row.described_formats.clone();
        ResultPlan { row, formats }
    }

    /// The same result with its actions decided again for `role`.
    pub(super) fn for_role(&self, snapshot: &Snapshot, role: &PolicyRole, generation: u64) -> Self {
        ResultPlan {
            row: Arc::new(self.row.for_role(snapshot, role, generation)),
            formats: self.formats.clone(),
        }
    }

    /// Uses Bind's result-format codes (0, 1 or one per column).
    pub(super) fn bound(row: Arc<RowPlan>, codes: &[i16]) -> Self {
        let n = row.fields.len();
        let formats = (0..n)
            .map(|i| match codes.len() {
                0 => 0,
                1 => codes[0],
                _ => codes.get(i).copied().unwrap_or(0),
            })
            .collect();
        ResultPlan { row, formats }
    }
}

/// How many row shapes a session remembers (see [`DescriptionCache`]).
const CACHED_DESCRIPTIONS: usize = 8;

/// The last row shapes a session planned. A prepared statement's every
/// execution brings the same RowDescription (libpq describes the portal
/// each time), so its plan and rewritten frame are reused as long as the
/// frame, the protection snapshot and the policy role are the same.
#[derive(Debug, Default)]
pub(super) struct DescriptionCache {
    entries: Vec<CachedDescription>,
    /// The slot the next new entry replaces once the cache is full.
    next: usize,
}

#[derive(Debug)]
struct CachedDescription {
    body: Box<[u8]>,
    snapshot: u64,
    generation: u64,
    planned: Option<(Arc<RowPlan>, bytes::Bytes)>,
}

impl DescriptionCache {
    /// Plans a RowDescription (see [`plan_description`]), from the cache
    /// when it can be. Only
    /// descriptions whose every field names its table (no set-operation
    /// column mapped by SQL analysis) and whose tables the catalog knows
    /// are cached: their plan depends on nothing but the frame.
    pub(super) fn plan(
        &mut self,
        snapshot: &Snapshot,
        role: &PolicyRole,
        generation: u64,
        body: &[u8],
        results: &[Option<ProtectedColumn>],
        on_unknown_table: impl FnMut(u32),
    ) -> Option<(Arc<RowPlan>, bytes::Bytes)> {
        let snapshot_generation = snapshot.generation();
        if let Some(hit) = self.entries.iter().find(|e| {
            e.snapshot == snapshot_generation && e.generation == generation && *e.body == *body
        }) {
            return hit.planned.clone();
        }
        let mut cacheable = true;
        let planned = plan_description(
            snapshot,
            role,
            generation,
            body,
            results,
            on_unknown_table,
            &mut cacheable,
        )
        .map(|(row, out)| (row, out.freeze()));
        if cacheable {
            let entry = CachedDescription {
                body: body.into(),
                snapshot: snapshot_generation,
                generation,
                planned: planned.clone(),
            };
            if self.entries.len() < CACHED_DESCRIPTIONS {
                self.entries.push(entry);
            } else {
                self.entries[self.next] = entry;
                self.next = (self.next + 1) % CACHED_DESCRIPTIONS;
            }
        }
        planned
    }
}

/// Plans a RowDescription. Returns `None` when no field is protected (the
/// frame is relayed as is); otherwise the plan and the rewritten frame.
/// Clears `cacheable` when the plan depends on more than the frame.
fn plan_description(
    snapshot: &Snapshot,
    role: &PolicyRole,
    generation: u64,
    body: &[u8],
    results: &[Option<ProtectedColumn>],
    mut on_unknown_table: impl FnMut(u32),
    cacheable: &mut bool,
) -> Option<(Arc<RowPlan>, BytesMut)> {
    let mut c = Cursor::new(body);
    let n = usize::try_from(i16::from_be_bytes(c.take(2)?.try_into().ok()?)).ok()?;
    let mut fields = Vec::with_capacity(n);
    let mut described_formats = Vec::with_capacity(n);
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(b'T');
    out.put_u32(0); // length, patched below
    out.put_i16(n as i16);
    let mut denied = None;
    let mut computed = None;
    let mut visible: Vec<String> = Vec::new();
    let mut any = false;
    for i in 0..n {
        let name = c.cstr()?;
        let table_oid = c.i32()? as u32;
        let attnum = i16::from_be_bytes(c.take(2)?.try_into().ok()?);
        let type_oid = c.i32()? as u32;
        let typlen = i16::from_be_bytes(c.take(2)?.try_into().ok()?);
        let typmod = c.i32()?;
        let format = i16::from_be_bytes(c.take(2)?.try_into().ok()?);
        described_formats.push(format);
        out.put_slice(name);
        out.put_u8(0);
        out.put_u32(table_oid);
        out.put_i16(attnum);
        let protected = if table_oid != 0 {
            snapshot.catalog().by_attr(table_oid, attnum)
        } else {
            *cacheable = false;
            // No origin (a set operation's column): SQL analysis may know
            // it; an encrypted column must then arrive as bytea.
            results
                .get(i)
                .and_then(Option::as_ref)
                .filter(|pc| !pc.protection.encrypts() || type_oid == 17)
        };
        if table_oid != 0 && protected.is_none() && !snapshot.catalog().knows_table(table_oid) {
            *cacheable = false;
            on_unknown_table(table_oid);
        }
        match protected {
            Some(col) if table_oid != 0 && col.legacy.is_some() => {
                // Read straight from the table: planned before pgveil knew
                // the column is being migrated online, so rows not
                // encrypted yet would show as NULL.
                any = true;
                *cacheable = false;
                fields.push(None);
                out.put_u32(type_oid);
                out.put_i16(typlen);
                out.put_i32(typmod);
                computed.get_or_insert_with(|| {
                    (
                        "0A000",
                        format!(
                            "pgveil: column {} is being migrated online and this statement was \
                             prepared before pgveil knew; prepare it again",
                            col.full_name
                        ),
                    )
                });
            }
            Some(col) => {
                any = true;
                let action = snapshot.action(role, col);
                if action == Action::Deny && denied.is_none() {
                    denied = Some(col.full_name.clone());
                }
                if matches!(action, Action::Clear | Action::Mask(_)) {
                    let table = crate::sql::bulk::table_of(&col.full_name);
                    if !visible.iter().any(|t| t == table) {
                        visible.push(table.to_owned());
                    }
                }
                out.put_u32(col.logical_type.oid());
                out.put_i16(col.logical_type.typlen());
                out.put_i32(-1);
                fields.push(Some(FieldPlan::new(snapshot, col, action)));
            }
            None => {
                if let Some(name) = (table_oid != 0)
                    .then(|| snapshot.catalog().computed(table_oid, attnum))
                    .flatten()
                {
                    any = true;
                    computed.get_or_insert_with(|| unreadable(name));
                } else if table_oid != 0
                    && attnum > 0
                    && type_oid == 17
                    && snapshot.catalog().knows_table(table_oid)
                    && !snapshot.catalog().knows_attr(table_oid, attnum)
                {
                    // A bytea column added since the catalog was loaded:
                    // it may be the envelope column `pgveil migrate
                    // encrypt` just added, which a stale catalog would
                    // relay as raw envelopes and NULLs. Reload, and
                    // refuse until then.
                    any = true;
                    *cacheable = false;
                    on_unknown_table(table_oid);
                    computed.get_or_insert_with(|| {
                        (
                            "40001",
                            format!(
                                "pgveil: the result has a column of protected table (OID {table_oid}) that \
                                 pgveil's catalog does not know yet: the table changed since it was \
                                 loaded; pgveil is reloading it, retry the statement"
                            ),
                        )
                    });
                }
                out.put_u32(type_oid);
                out.put_i16(typlen);
                out.put_i32(typmod);
                fields.push(None);
            }
        }
        out.put_i16(format);
    }
    if !any {
        return None;
    }
    let len = (out.len() - 1) as u32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    Some((
        Arc::new(RowPlan {
            fields,
            denied,
            computed,
            described_formats,
            generation,
            visible,
        }),
        out,
    ))
}

/// Why a field the catalog marks as computed is refused.
fn unreadable(name: &str) -> (&'static str, String) {
    let message = if name.contains(crate::sql::LEGACY_PREFIX) {
        format!(
            "pgveil: column {name} holds the values pgveil is still migrating to an encrypted \
             column; it cannot be read: select the column being migrated instead"
        )
    } else {
        format!(
            "pgveil: view column {name} may be computed from a protected column, which the \
             database only holds as ciphertext; select the protected column itself \
             through the view or the table"
        )
    };
    ("0A000", message)
}

/// Buffers one session reuses for every protected cell, so decrypting and
/// masking allocates only while they grow to the largest value seen.
#[derive(Debug, Default)]
pub(super) struct CellBuffers {
    /// The cell as the client will see it.
    shown: Vec<u8>,
    /// The decrypted value in text form, before masking.
    text: Vec<u8>,
    /// The mask's output.
    masked: String,
    /// A text-format envelope decoded from hex.
    envelope: Vec<u8>,
}

/// What a role may see of each field of a `COPY table TO STDOUT` stream,
/// in stream order (`None` for unprotected fields), and the first column
/// the role is denied, if any.
pub(super) fn copy_field_plans(
    snapshot: &Snapshot,
    role: &PolicyRole,
    fields: &[Option<ProtectedColumn>],
) -> (Vec<Option<FieldPlan>>, Option<String>) {
    let mut denied = None;
    let plans = fields
        .iter()
        .map(|f| {
            f.as_ref().map(|col| {
                let action = snapshot.action(role, col);
                if action == Action::Deny && denied.is_none() {
                    denied = Some(col.full_name.clone());
                }
                FieldPlan::new(snapshot, col, action)
            })
        })
        .collect();
    (plans, denied)
}

/// What the role sees of one COPY field, given its value in text form (as
/// a text-format DataRow cell would carry it); `false` = NULL.
pub(super) fn show_copy_field(
    field: &FieldPlan,
    value: &[u8],
    out: &mut Vec<u8>,
    bufs: &mut CellBuffers,
) -> Result<bool, RowError> {
    show(field, value, Format::Text, out, bufs)
}

/// Why a row could not be shown; never carries a value.
#[derive(Debug)]
pub(super) struct RowError {
    /// SQLSTATE for the client.
    pub(super) sqlstate: &'static str,
    /// Message naming the column.
    pub(super) message: String,
}

/// Rewrites one DataRow with protected cells decrypted and masked.
pub(super) fn rewrite_data_row(
    plan: &ResultPlan,
    body: &[u8],
    out: &mut BytesMut,
    bufs: &mut CellBuffers,
) -> Result<(), RowError> {
    let start = out.len();
    let result = write_data_row(plan, body, out, bufs);
    if result.is_err() {
        out.truncate(start); // never a half-written row
    }
    result
}

fn write_data_row(
    plan: &ResultPlan,
    body: &[u8],
    out: &mut BytesMut,
    bufs: &mut CellBuffers,
) -> Result<(), RowError> {
    let bad = || RowError {
        sqlstate: "08P01",
        message: "pgveil: the server sent a malformed DataRow".into(),
    };
    let mut c = Cursor::new(body);
    let n = usize::try_from(i16::from_be_bytes(
        c.take(2).ok_or_else(bad)?.try_into().map_err(|_| bad())?,
    ))
    .map_err(|_| bad())?;
    let start = out.len();
    out.put_u8(b'D');
    out.put_u32(0);
    out.put_i16(n as i16);
    let mut shown = std::mem::take(&mut bufs.shown);
    let result = write_cells(plan, &mut c, n, out, &mut shown, bufs);
    bufs.shown = shown;
    result?;
    let len = (out.len() - start - 1) as u32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn write_cells(
    plan: &ResultPlan,
    c: &mut Cursor<'_>,
    n: usize,
    out: &mut BytesMut,
    shown: &mut Vec<u8>,
    bufs: &mut CellBuffers,
) -> Result<(), RowError> {
    let bad = || RowError {
        sqlstate: "08P01",
        message: "pgveil: the server sent a malformed DataRow".into(),
    };
    for i in 0..n {
        let len = c.i32().ok_or_else(bad)?;
        let cell = if len < 0 {
            None
        } else {
            Some(c.take(len as usize).ok_or_else(bad)?)
        };
        let field = plan.row.fields.get(i).and_then(Option::as_ref);
        let (Some(field), Some(cell)) = (field, cell) else {
            put_cell(out, cell);
            continue;
        };
        let format = if plan.formats.get(i) == Some(&1) {
            Format::Binary
        } else {
            Format::Text
        };
        shown.clear();
        match show(field, cell, format, shown, bufs)? {
            true => put_cell(out, Some(shown)),
            false => put_cell(out, None),
        }
    }
    Ok(())
}

fn put_cell(out: &mut BytesMut, cell: Option<&[u8]>) {
    match cell {
        None => out.put_i32(-1),
        Some(v) => {
            out.put_i32(v.len() as i32);
            out.put_slice(v);
        }
    }
}

/// Produces what the role sees for one cell in `format`; `false` = NULL.
fn show(
    field: &FieldPlan,
    cell: &[u8],
    format: Format,
    out: &mut Vec<u8>,
    bufs: &mut CellBuffers,
) -> Result<bool, RowError> {
    let CellBuffers {
        text,
        masked,
        envelope,
        ..
    } = bufs;
    let ty = field.column.logical_type;
    if field.action == Action::Null {
        field.counters.masked();
        return Ok(false);
    }
    // The value in text form: decrypted, or as stored for `none` columns.
    let mut decrypt = |fmt: Format, out: &mut Vec<u8>| -> Result<(), RowError> {
        match &field.cipher {
            Some(cipher) if field.legacy => {
                let raw = envelope_bytes(cell, format, envelope).ok_or_else(|| RowError {
                    sqlstate: "XX001",
                    message: format!(
                        "pgveil: column {} holds a value that is not bytea",
                        field.column.full_name
                    ),
                })?;
                let start = out.len();
                match crate::migrate::classify(cipher, raw, fmt, out) {
                    Ok(crate::migrate::Stored::Envelope { .. }) => Ok(()),
                    Ok(crate::migrate::Stored::Legacy) => {
                        out.truncate(start);
                        legacy_value(ty, raw, fmt, out).map_err(|reason| RowError {
                            sqlstate: "XX000",
                            message: format!(
                                "pgveil: column {} (being migrated): {reason}",
                                field.column.full_name
                            ),
                        })
                    }
                    Err(reason) => Err(RowError {
                        sqlstate: "XX001",
                        message: format!("pgveil: column {}: {reason}", field.column.full_name),
                    }),
                }
            }
            Some(cipher) => {
                let env = envelope_bytes(cell, format, envelope).ok_or_else(|| RowError {
                    sqlstate: "XX001",
                    message: format!(
                        "pgveil: column {} holds a value that is not a pgveil envelope",
                        field.column.full_name
                    ),
                })?;
                field.counters.decrypted();
                cipher.decrypt(env, fmt, out).map_err(|e| RowError {
                    sqlstate: e.sqlstate(),
                    message: e.to_string(),
                })
            }
            None => {
                // Plaintext column: the server already sent it in `format`.
                if fmt == format {
                    out.extend_from_slice(cell);
                    Ok(())
                } else {
                    transcode(ty, format, cell, fmt, out).map_err(|reason| RowError {
                        sqlstate: "XX000",
                        message: format!("pgveil: column {}: {reason}", field.column.full_name),
                    })
                }
            }
        }
    };
    match &field.action {
        Action::Clear => {
            decrypt(format, out)?;
            Ok(true)
        }
        Action::Mask(mask) => {
            field.counters.masked();
            text.clear();
            decrypt(Format::Text, text)?;
            let text = String::from_utf8_lossy(text);
            masked.clear();
            let shown = mask
                .apply(&text, field.pseudonym.as_deref(), masked)
                .map_err(|e| RowError {
                    sqlstate: "XX000",
                    message: format!("pgveil: column {}: {e}", field.column.full_name),
                })?;
            if !shown {
                return Ok(false);
            }
            if format == Format::Text || ty.oid() == 25 || ty.oid() == 1043 || ty.oid() == 1042 {
                out.extend_from_slice(masked.as_bytes());
            } else {
                transcode(ty, Format::Text, masked.as_bytes(), format, out).map_err(|reason| {
                    RowError {
                        sqlstate: "XX000",
                        message: format!(
                            "pgveil: column {}: mask output {reason}",
                            field.column.full_name
                        ),
                    }
                })?;
            }
            Ok(true)
        }
        Action::Null => Ok(false),
        Action::Deny => Err(RowError {
            sqlstate: "42501",
            message: format!(
                "pgveil: permission denied for column {}",
                field.column.full_name
            ),
        }),
    }
}

/// A legacy plaintext value of a column being migrated, in `fmt`: stored
/// as raw bytes for `bytea`, as the UTF-8 text form for other types.
fn legacy_value(
    ty: crate::crypto::LogicalType,
    raw: &[u8],
    fmt: Format,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let stored = crate::migrate::legacy_format(ty);
    if stored == fmt {
        out.extend_from_slice(raw);
        return Ok(());
    }
    transcode(ty, stored, raw, fmt, out).map_err(|e| e.to_string())
}

/// The envelope in a bytea cell: raw in binary, `\x` hex in text.
fn envelope_bytes<'a>(cell: &'a [u8], format: Format, buf: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    match format {
        Format::Binary => Some(cell),
        Format::Text => {
            let hex = cell.strip_prefix(b"\\x")?;
            if hex.len() % 2 != 0 {
                return None;
            }
            buf.clear();
            buf.reserve(hex.len() / 2);
            for pair in hex.chunks(2) {
                let hi = (pair[0] as char).to_digit(16)?;
                let lo = (pair[1] as char).to_digit(16)?;
                buf.push((hi * 16 + lo) as u8);
            }
            Some(buf)
        }
    }
}
