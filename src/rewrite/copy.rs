//! COPY FROM STDIN into a table with encrypted columns: protected fields
//! are encrypted in the stream, row by row.
//!
//! CopyData messages do not align with rows, so the encryptor keeps the
//! unfinished tail of the last message and emits one CopyData per batch of
//! complete rows. Memory is bounded by the longest row, never by the whole
//! COPY. Encrypted fields are written as bytea hex (`\x...`), which needs
//! no quoting in CSV and one escaped backslash in text format.

use crate::crypto::{ColumnCipher, CryptoError, Format};
use bytes::{BufMut, BytesMut};
use std::sync::Arc;

/// Text or CSV; binary COPY of protected columns is refused earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// PostgreSQL's text format (backslash escapes, `\N` for NULL).
    Text,
    /// CSV (quotes, `NULL` as the unquoted null string).
    Csv,
}

/// How a COPY stream is laid out, in either direction.
#[derive(Debug, Clone)]
pub struct CopyLayout {
    /// Text or CSV.
    pub kind: CopyKind,
    /// Field separator.
    pub delimiter: u8,
    /// The string that means NULL.
    pub null: Vec<u8>,
    /// CSV quote character.
    pub quote: u8,
    /// CSV escape character inside quotes.
    pub escape: u8,
    /// Whether the first line is a header to pass through.
    pub header: bool,
}

/// A COPY FROM stream's layout and which fields to encrypt.
#[derive(Debug, Clone)]
pub struct CopySpec {
    /// One entry per field in stream order; `Some` fields are encrypted.
    pub fields: Vec<Option<Arc<ColumnCipher>>>,
    /// How the stream is laid out.
    pub layout: CopyLayout,
}

/// Why a COPY stream could not be rewritten. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A row has a different number of fields than the column list.
    #[error("pgveil: COPY row {row} has {got} fields, expected {expected}")]
    FieldCount {
        /// 1-based data row number.
        row: u64,
        /// Fields found.
        got: usize,
        /// Fields expected.
        expected: usize,
    },
    /// A field could not be encrypted (e.g. not valid for its type).
    #[error("{source} (COPY row {row})")]
    Crypto {
        /// 1-based data row number.
        row: u64,
        /// The encryption error, which names the column.
        source: CryptoError,
    },
    /// A quoted CSV field never ends.
    #[error("pgveil: COPY row {0}: unterminated CSV quoted field")]
    Unterminated(u64),
    /// A field could not be decrypted or shown (COPY TO); the message
    /// names the column.
    #[error("{message} (COPY row {row})")]
    Field {
        /// 1-based data row number.
        row: u64,
        /// SQLSTATE for the client.
        sqlstate: &'static str,
        /// What went wrong, naming the column, never the value.
        message: String,
    },
}

impl CopyError {
    /// SQLSTATE for the client.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            CopyError::Crypto { source, .. } => source.sqlstate(),
            CopyError::Field { sqlstate, .. } => sqlstate,
            _ => "22P04", // bad_copy_file_format
        }
    }
}

/// Splits a COPY stream into rows whatever the CopyData boundaries: keeps
/// the unfinished tail of the last message, passes the header and the
/// end-of-data marker through, and hands each data row's body to a
/// rewriter. Memory is bounded by the longest row.
#[derive(Debug)]
struct RowStream {
    pending: Vec<u8>,
    header_done: bool,
    rows: u64,
}

/// Rewrites one data row body (without its line end) into `out`.
type RowFn<'a> = dyn FnMut(&[u8], u64, &mut Vec<u8>) -> Result<(), CopyError> + 'a;

impl RowStream {
    fn new(layout: &CopyLayout) -> Self {
        RowStream {
            pending: Vec::new(),
            header_done: !layout.header,
            rows: 0,
        }
    }

    fn feed(
        &mut self,
        layout: &CopyLayout,
        data: &[u8],
        out: &mut BytesMut,
        rewrite: &mut RowFn<'_>,
    ) -> Result<(), CopyError> {
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(data);
        let mut rewritten = Vec::with_capacity(pending.len() * 2);
        let mut start = 0;
        let result = loop {
            match row_end(&pending[start..], layout) {
                Some(len) => {
                    let row = &pending[start..start + len];
                    if let Err(e) = self.row(layout, row, &mut rewritten, rewrite) {
                        break Err(e);
                    }
                    start += len;
                }
                None => break Ok(()),
            }
        };
        pending.drain(..start);
        self.pending = pending;
        result?;
        emit(out, &rewritten);
        Ok(())
    }

    fn finish(
        &mut self,
        layout: &CopyLayout,
        out: &mut BytesMut,
        rewrite: &mut RowFn<'_>,
    ) -> Result<(), CopyError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if layout.kind == CopyKind::Csv && open_quote(&self.pending, layout) {
            return Err(CopyError::Unterminated(self.rows + 1));
        }
        let mut row = std::mem::take(&mut self.pending);
        row.push(b'\n');
        let mut rewritten = Vec::with_capacity(row.len() * 2);
        self.row(layout, &row, &mut rewritten, rewrite)?;
        emit(out, &rewritten);
        Ok(())
    }

    /// One row (with its newline) into `out`.
    fn row(
        &mut self,
        layout: &CopyLayout,
        row: &[u8],
        out: &mut Vec<u8>,
        rewrite: &mut RowFn<'_>,
    ) -> Result<(), CopyError> {
        let body = row.strip_suffix(b"\n").unwrap_or(row);
        let (body, eol) = match body.strip_suffix(b"\r") {
            Some(b) => (b, &b"\r\n"[..]),
            None => (body, &b"\n"[..]),
        };
        if !self.header_done {
            self.header_done = true;
            out.extend_from_slice(row);
            return Ok(());
        }
        if layout.kind == CopyKind::Text && body == b"\\." {
            out.extend_from_slice(row); // end-of-data marker
            return Ok(());
        }
        self.rows += 1;
        rewrite(body, self.rows, out)?;
        out.extend_from_slice(eol);
        Ok(())
    }
}

/// Rewrites a COPY FROM STDIN stream, encrypting protected fields.
#[derive(Debug)]
pub struct CopyEncryptor {
    spec: CopySpec,
    stream: RowStream,
    field_buf: Vec<u8>,
    envelope: Vec<u8>,
}

impl CopyEncryptor {
    /// Starts a stream.
    pub fn new(spec: CopySpec) -> Self {
        CopyEncryptor {
            stream: RowStream::new(&spec.layout),
            spec,
            field_buf: Vec::new(),
            envelope: Vec::new(),
        }
    }

    /// Takes one CopyData payload; appends a CopyData frame with every row
    /// completed so far (rewritten) to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), CopyError> {
        let CopyEncryptor {
            spec,
            stream,
            field_buf,
            envelope,
        } = self;
        stream.feed(&spec.layout, data, out, &mut |body, row, out| {
            encrypt_row(spec, body, row, field_buf, envelope, out)
        })
    }

    /// Ends the stream at CopyDone: a last row without a newline is
    /// rewritten too.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), CopyError> {
        let CopyEncryptor {
            spec,
            stream,
            field_buf,
            envelope,
        } = self;
        stream.finish(&spec.layout, out, &mut |body, row, out| {
            encrypt_row(spec, body, row, field_buf, envelope, out)
        })
    }
}

fn encrypt_row(
    spec: &CopySpec,
    body: &[u8],
    row_no: u64,
    field_buf: &mut Vec<u8>,
    envelope: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), CopyError> {
    let layout = &spec.layout;
    let fields = split_fields(body, layout);
    if fields.len() != spec.fields.len() {
        return Err(CopyError::FieldCount {
            row: row_no,
            got: fields.len(),
            expected: spec.fields.len(),
        });
    }
    for (i, raw) in fields.iter().enumerate() {
        if i > 0 {
            out.push(layout.delimiter);
        }
        let Some(cipher) = &spec.fields[i] else {
            out.extend_from_slice(raw);
            continue;
        };
        if is_null(raw, layout) {
            out.extend_from_slice(raw);
            continue;
        }
        field_buf.clear();
        decode_field(raw, layout, field_buf);
        envelope.clear();
        cipher
            .encrypt(field_buf, Format::Text, envelope)
            .map_err(|source| CopyError::Crypto {
                row: row_no,
                source,
            })?;
        if layout.kind == CopyKind::Text {
            out.push(b'\\');
        }
        out.extend_from_slice(b"\\x");
        push_hex(out, envelope);
    }
    Ok(())
}

/// Rewrites a COPY TO STDOUT stream: each selected field is decoded,
/// passed to a function that says what the client may see (`false` for
/// NULL), and encoded again; the rest is relayed as it came.
#[derive(Debug)]
pub struct CopyOutRewriter {
    layout: CopyLayout,
    selected: Vec<bool>,
    stream: RowStream,
    value: Vec<u8>,
    shown: Vec<u8>,
}

/// Produces what the client sees of field `i`'s decoded `value` into the
/// buffer; `Ok(false)` means NULL.
pub type ShowFn<'a> = dyn FnMut(usize, &[u8], &mut Vec<u8>) -> Result<bool, CopyError> + 'a;

impl CopyOutRewriter {
    /// Starts a stream; `selected[i]` marks the fields to rewrite.
    pub fn new(layout: CopyLayout, selected: Vec<bool>) -> Self {
        CopyOutRewriter {
            stream: RowStream::new(&layout),
            layout,
            selected,
            value: Vec::new(),
            shown: Vec::new(),
        }
    }

    /// Takes one CopyData payload from the server; appends a CopyData
    /// frame with every row completed so far to `out`.
    pub fn feed(
        &mut self,
        data: &[u8],
        out: &mut BytesMut,
        show: &mut ShowFn<'_>,
    ) -> Result<(), CopyError> {
        let CopyOutRewriter {
            layout,
            selected,
            stream,
            value,
            shown,
        } = self;
        stream.feed(layout, data, out, &mut |body, row, out| {
            show_row(layout, selected, body, row, value, shown, out, show)
        })
    }

    /// At CopyDone: a last row without a newline is rewritten too.
    pub fn finish(&mut self, out: &mut BytesMut, show: &mut ShowFn<'_>) -> Result<(), CopyError> {
        let CopyOutRewriter {
            layout,
            selected,
            stream,
            value,
            shown,
        } = self;
        stream.finish(layout, out, &mut |body, row, out| {
            show_row(layout, selected, body, row, value, shown, out, show)
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn show_row(
    layout: &CopyLayout,
    selected: &[bool],
    body: &[u8],
    row: u64,
    value: &mut Vec<u8>,
    shown: &mut Vec<u8>,
    out: &mut Vec<u8>,
    show: &mut ShowFn<'_>,
) -> Result<(), CopyError> {
    let fields = split_fields(body, layout);
    if fields.len() != selected.len() {
        return Err(CopyError::FieldCount {
            row,
            got: fields.len(),
            expected: selected.len(),
        });
    }
    for (i, raw) in fields.iter().enumerate() {
        if i > 0 {
            out.push(layout.delimiter);
        }
        if !selected[i] || is_null(raw, layout) {
            out.extend_from_slice(raw);
            continue;
        }
        value.clear();
        decode_field(raw, layout, value);
        shown.clear();
        match show(i, value, shown) {
            Ok(true) => encode_field(shown, layout, out),
            Ok(false) => out.extend_from_slice(&layout.null),
            Err(CopyError::Field {
                sqlstate, message, ..
            }) => {
                return Err(CopyError::Field {
                    row,
                    sqlstate,
                    message,
                })
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a raw field is the NULL string (a quoted CSV field never is).
fn is_null(raw: &[u8], layout: &CopyLayout) -> bool {
    match layout.kind {
        CopyKind::Text => raw == layout.null.as_slice(),
        CopyKind::Csv => raw == layout.null.as_slice() && !raw.starts_with(&[layout.quote]),
    }
}

/// A raw field's value: text escapes or CSV quoting removed.
fn decode_field(raw: &[u8], layout: &CopyLayout, out: &mut Vec<u8>) {
    match layout.kind {
        CopyKind::Text => unescape_text(raw, out),
        CopyKind::Csv => unquote_csv(raw, layout.quote, layout.escape, out),
    }
}

/// Writes a value as a field PostgreSQL's COPY FROM would read back as the
/// same value (and never as NULL).
fn encode_field(value: &[u8], layout: &CopyLayout, out: &mut Vec<u8>) {
    match layout.kind {
        CopyKind::Text => {
            for &b in value {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' if layout.delimiter == b'\t' => out.extend_from_slice(b"\\t"),
                    d if d == layout.delimiter => {
                        out.push(b'\\');
                        out.push(d);
                    }
                    other => out.push(other),
                }
            }
        }
        CopyKind::Csv => {
            let needs_quotes = value.is_empty()
                || value == layout.null.as_slice()
                || value.starts_with(b"\\.")
                || value.iter().any(|&b| {
                    b == layout.delimiter || b == layout.quote || b == b'\n' || b == b'\r'
                });
            if !needs_quotes {
                out.extend_from_slice(value);
                return;
            }
            out.push(layout.quote);
            for &b in value {
                if b == layout.quote || b == layout.escape {
                    out.push(layout.escape);
                }
                out.push(b);
            }
            out.push(layout.quote);
        }
    }
}

/// Length (newline included) of the first complete row of `buf`, if any.
/// A text-format newline always ends a row (data newlines are escaped); in
/// CSV a newline inside quotes does not.
fn row_end(buf: &[u8], spec: &CopyLayout) -> Option<usize> {
    match spec.kind {
        CopyKind::Text => memchr::memchr(b'\n', buf).map(|i| i + 1),
        CopyKind::Csv => {
            let mut quoted = false;
            let mut i = 0;
            while i < buf.len() {
                let b = buf[i];
                if quoted {
                    if b == spec.escape && spec.escape != spec.quote {
                        i += 2;
                        continue;
                    }
                    if b == spec.quote {
                        if buf.get(i + 1) == Some(&spec.quote) && spec.escape == spec.quote {
                            i += 2;
                            continue;
                        }
                        quoted = false;
                    }
                } else if b == spec.quote {
                    quoted = true;
                } else if b == b'\n' {
                    return Some(i + 1);
                }
                i += 1;
            }
            None
        }
    }
}

/// Whether CSV text ends inside a quoted field.
fn open_quote(buf: &[u8], spec: &CopyLayout) -> bool {
    let mut quoted = false;
    let mut i = 0;
    while i < buf.len() {
        let b = buf[i];
        if quoted && b == spec.escape && spec.escape != spec.quote {
            i += 2;
            continue;
        }
        if b == spec.quote {
            quoted = !quoted;
        }
        i += 1;
    }
    quoted
}

/// Appends a CopyData frame unless `data` is empty.
fn emit(out: &mut BytesMut, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.reserve(5 + data.len());
    out.put_u8(b'd');
    out.put_u32((4 + data.len()) as u32);
    out.put_slice(data);
}

/// Splits a row into raw (still escaped or quoted) fields.
fn split_fields<'a>(body: &'a [u8], spec: &CopyLayout) -> Vec<&'a [u8]> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut quoted = false;
    while i < body.len() {
        let b = body[i];
        match spec.kind {
            CopyKind::Text => {
                if b == b'\\' {
                    i += 2;
                    continue;
                }
            }
            CopyKind::Csv => {
                if quoted {
                    if b == spec.escape && spec.escape != spec.quote {
                        i += 2;
                        continue;
                    }
                    if b == spec.quote {
                        if body.get(i + 1) == Some(&spec.quote) && spec.escape == spec.quote {
                            i += 2;
                            continue;
                        }
                        quoted = false;
                    }
                    i += 1;
                    continue;
                } else if b == spec.quote {
                    quoted = true;
                    i += 1;
                    continue;
                }
            }
        }
        if b == spec.delimiter {
            fields.push(&body[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    fields.push(&body[start.min(body.len())..]);
    fields
}

/// Decodes PostgreSQL COPY text escapes.
fn unescape_text(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' || i + 1 >= raw.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                    v = v * 8 + u32::from(raw[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if i < raw.len() && raw[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                    v = v * 16 + (raw[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
}

/// Removes CSV quoting from a field.
fn unquote_csv(raw: &[u8], quote: u8, escape: u8, out: &mut Vec<u8>) {
    let mut quoted = false;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if quoted {
            if b == escape
                && raw
                    .get(i + 1)
                    .is_some_and(|&n| n == quote || (escape != quote && n == escape))
            {
                out.push(raw[i + 1]);
                i += 2;
                continue;
            }
            if b == quote {
                quoted = false;
                i += 1;
                continue;
            }
            out.push(b);
        } else if b == quote {
            quoted = true;
        } else {
            out.push(b);
        }
        i += 1;
    }
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_unescape() {
        let mut out = Vec::new();
        unescape_text(br"a\tb\\c\101\x41\N", &mut out);
        assert_eq!(out, b"a\tb\\cAAN");
    }

    fn cipher() -> Arc<ColumnCipher> {
        use crate::crypto::{Keyring, LogicalType, MasterKey, Mode};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("keyring");
        let ring = Keyring::open(&dir, &MasterKey::demo()).unwrap();
        Arc::new(
            ring.column("public.t.secret", LogicalType::Text, Mode::Searchable)
                .unwrap(),
        )
    }

    /// Decrypts every hex field of the output rows back to text.
    fn decrypt_rows(out: &BytesMut, c: &ColumnCipher, csv: bool) -> Vec<Vec<String>> {
        let mut data = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            data.extend_from_slice(&rest[5..1 + len]);
            rest = &rest[1 + len..];
        }
        let text = String::from_utf8(data).unwrap();
        text.lines()
            .map(|line| {
                line.split(if csv { ',' } else { '\t' })
                    .map(|f| {
                        let hex = f.strip_prefix(if csv { "\\x" } else { "\\\\x" });
                        match hex {
                            Some(h) => {
                                let bytes: Vec<u8> = (0..h.len())
                                    .step_by(2)
                                    .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                                    .collect();
                                let mut v = Vec::new();
                                c.decrypt(&bytes, Format::Text, &mut v).unwrap();
                                format!("dec:{}", String::from_utf8(v).unwrap())
                            }
                            None => f.to_owned(),
                        }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn encrypts_text_rows_split_across_messages() {
        let c = cipher();
        let mut enc = CopyEncryptor::new(CopySpec {
            fields: vec![None, Some(c.clone())],
            layout: CopyLayout {
                kind: CopyKind::Text,
                delimiter: b'\t',
                null: b"\\N".to_vec(),
                quote: b'"',
                escape: b'"',
                header: false,
            },
        });
        let mut out = BytesMut::new();
        enc.feed(b"1\t138001", &mut out).unwrap();
        assert!(out.is_empty(), "no complete row yet");
        enc.feed(b"38000\n2\t\\N\n3\ttab\\there\n4\t", &mut out)
            .unwrap();
        enc.feed(b"last", &mut out).unwrap();
        enc.finish(&mut out).unwrap();
        let rows = decrypt_rows(&out, &c, false);
        assert_eq!(
            rows,
            vec![
                vec!["1", "dec:13800138000"],
                vec!["2", "\\N"],
                vec!["3", "dec:tab\there"],
                vec!["4", "dec:last"],
            ]
        );
        assert!(
            !out.windows(11).any(|w| w == b"13800138000"),
            "plaintext leaked"
        );
    }

    #[test]
    fn encrypts_csv_with_quotes_newlines_and_header() {
        let c = cipher();
        let mut enc = CopyEncryptor::new(CopySpec {
            fields: vec![Some(c.clone()), None],
            layout: CopyLayout {
                kind: CopyKind::Csv,
                delimiter: b',',
                null: Vec::new(),
                quote: b'"',
                escape: b'"',
                header: true,
            },
        });
        let mut out = BytesMut::new();
        enc.feed(
            b"secret,id\n\"multi\nline, \"\"q\"\"\",1\n,2\n\"\",3\n",
            &mut out,
        )
        .unwrap();
        enc.finish(&mut out).unwrap();
        let rows = decrypt_rows(&out, &c, true);
        assert_eq!(rows[0], vec!["secret", "id"]);
        assert_eq!(rows[1], vec!["dec:multi\nline, \"q\"", "1"]);
        assert_eq!(rows[2], vec!["", "2"], "unquoted empty is NULL and stays");
        assert_eq!(
            rows[3],
            vec!["dec:", "3"],
            "quoted empty is an empty string"
        );
    }

    #[test]
    fn wrong_field_count_and_unterminated_quote_are_errors() {
        let c = cipher();
        let spec = CopySpec {
            fields: vec![None, Some(c)],
            layout: CopyLayout {
                kind: CopyKind::Csv,
                delimiter: b',',
                null: Vec::new(),
                quote: b'"',
                escape: b'"',
                header: false,
            },
        };
        let mut out = BytesMut::new();
        let err = CopyEncryptor::new(spec.clone())
            .feed(b"1,2,3\n", &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("3 fields, expected 2"), "{err}");
        let mut enc = CopyEncryptor::new(spec);
        enc.feed(b"1,\"open", &mut out).unwrap();
        assert!(matches!(
            enc.finish(&mut out),
            Err(CopyError::Unterminated(1))
        ));
    }

    #[test]
    fn csv_split_and_unquote() {
        let spec = CopySpec {
            fields: vec![None, None, None],
            layout: CopyLayout {
                kind: CopyKind::Csv,
                delimiter: b',',
                null: Vec::new(),
                quote: b'"',
                escape: b'"',
                header: false,
            },
        };
        let f = split_fields(br#"1,"a, ""b""",x"#, &spec.layout);
        assert_eq!(f, vec![&b"1"[..], &br#""a, ""b""""#[..], &b"x"[..]]);
        let mut out = Vec::new();
        unquote_csv(f[1], b'"', b'"', &mut out);
        assert_eq!(out, br#"a, "b""#);
    }

    fn layout(kind: CopyKind) -> CopyLayout {
        let csv = kind == CopyKind::Csv;
        CopyLayout {
            kind,
            delimiter: if csv { b',' } else { b'\t' },
            null: if csv { Vec::new() } else { b"\\N".to_vec() },
            quote: b'"',
            escape: b'"',
            header: csv,
        }
    }

    /// Rewrites field 1 of each row to `f(value)`; `None` means NULL.
    fn copy_out(kind: CopyKind, chunks: &[&[u8]], f: fn(&[u8]) -> Option<Vec<u8>>) -> String {
        let mut rw = CopyOutRewriter::new(layout(kind), vec![false, true]);
        let mut out = BytesMut::new();
        let mut show = |_i: usize, v: &[u8], o: &mut Vec<u8>| match f(v) {
            Some(x) => {
                o.extend_from_slice(&x);
                Ok(true)
            }
            None => Ok(false),
        };
        for c in chunks {
            rw.feed(c, &mut out, &mut show).unwrap();
        }
        rw.finish(&mut out, &mut show).unwrap();
        let mut text = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            text.extend_from_slice(&rest[5..1 + len]);
            rest = &rest[1 + len..];
        }
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn copy_out_text_escapes_what_it_shows() {
        let out = copy_out(
            CopyKind::Text,
            &[b"1\tab\\\\c\n2\t\\N\n3\tx", b"y\n"],
            |v| Some([b"<", v, b">\t\n"].concat()),
        );
        assert_eq!(out, "1\t<ab\\\\c>\\t\\n\n2\t\\N\n3\t<xy>\\t\\n\n");
        let out = copy_out(CopyKind::Text, &[b"1\tsecret\n"], |_| None);
        assert_eq!(out, "1\t\\N\n", "a masked-out value becomes NULL");
    }

    #[test]
    fn copy_out_csv_quotes_when_needed_and_keeps_the_header() {
        let out = copy_out(CopyKind::Csv, &[b"id,v\n1,\"a,b\"\n2,\n3,plain\n"], |v| {
            Some(if v == b"plain" {
                b"".to_vec()
            } else {
                [v, b"\"q\"\n"].concat()
            })
        });
        assert_eq!(
            out, "id,v\n1,\"a,b\"\"q\"\"\n\"\n2,\n3,\"\"\n",
            "NULL stays unquoted-empty, an empty string is quoted"
        );
    }
}
