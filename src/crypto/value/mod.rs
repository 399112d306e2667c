//! Typed values: validation, canonicalization and rendering.
//!
//! A value arrives in PostgreSQL text or binary wire format. Before it is
//! encrypted it is checked against the column's logical type and turned into
//! one *canonical* byte string, so that two spellings of one value (`'042'`
//! and `'42'` as int4, `'TRUE'` and `'t'` as bool) encrypt to the same
//! searchable envelope. After decryption the canonical bytes are rendered
//! back in whichever wire format the client asked for, exactly as
//! PostgreSQL would send them.
//!
//! The canonical encoding is, for almost every type, PostgreSQL's own binary
//! send format (documented per type in `docs/FORMAT.md`); numeric is kept as
//! the text PostgreSQL would print, which preserves its display scale.
//!
//! Errors are static reasons: the caller adds the column and type, and no
//! message ever quotes the value.

mod datetime;
pub(crate) use datetime::civil_from_days;
mod float;
mod json;
mod numeric;
mod scalar;
mod textual;

use super::buf::OutBuf;
use super::types::{Format, LogicalType};

/// Why a value is not valid for its type; a static string so it can never
/// carry the value itself.
pub(crate) type Reason = &'static str;

/// Validates `input` (in wire format `format`) as a value of `ty` and
/// appends its canonical encoding to `out`.
///
/// On error `out` may hold a partial encoding past its original length;
/// the caller truncates it.
pub(crate) fn canonicalize<B: OutBuf + ?Sized>(
    ty: LogicalType,
    format: Format,
    input: &[u8],
    out: &mut B,
) -> Result<(), Reason> {
    use LogicalType as T;
    match ty {
        T::Text | T::Varchar => textual::canon_text(input, out),
        T::Char => textual::canon_char(input, out),
        T::Json => textual::canon_json(input, out),
        T::Jsonb => textual::canon_jsonb(format, input, out),
        T::Bytea => textual::canon_bytea(format, input, out),
        T::Int2 => scalar::canon_int::<B, 2>(format, input, out),
        T::Int4 => scalar::canon_int::<B, 4>(format, input, out),
        T::Int8 => scalar::canon_int::<B, 8>(format, input, out),
        T::Float4 => float::canon_float4(format, input, out),
        T::Float8 => float::canon_float8(format, input, out),
        T::Bool => scalar::canon_bool(format, input, out),
        T::Uuid => scalar::canon_uuid(format, input, out),
        T::Numeric => numeric::canon(format, input, out),
        T::Date => datetime::canon_date(format, input, out),
        T::Time => datetime::canon_time(format, input, out),
        T::Timestamp => datetime::canon_timestamp(format, input, out, false),
        T::Timestamptz => datetime::canon_timestamp(format, input, out, true),
    }
}

/// How many bytes the rendered value needs *before* the canonical bytes;
/// decryption opens the ciphertext that far into the buffer so rendering
/// needs no move (jsonb binary is a version byte followed by the text).
pub(crate) fn render_prefix(ty: LogicalType, format: Format) -> usize {
    match (ty, format) {
        (LogicalType::Jsonb, Format::Binary) => 1,
        _ => 0,
    }
}

/// Rewrites, in place, the canonical value at `out[start + prefix..]`
/// (where `prefix` is [`render_prefix`]) into its wire format starting at
/// `out[start]`.
///
/// Fails (without a reason: the caller reports a type mismatch) when the
/// bytes are not a canonical value of `ty`, which can only happen when a
/// column's configured type was changed after values were written.
pub(crate) fn render_in_place<B: OutBuf + ?Sized>(
    ty: LogicalType,
    format: Format,
    out: &mut B,
    start: usize,
) -> Result<(), ()> {
    use LogicalType as T;
    match (ty, format) {
        (T::Text | T::Varchar | T::Char | T::Json | T::Bytea, Format::Binary) => Ok(()),
        (T::Text | T::Varchar | T::Char | T::Json | T::Jsonb, Format::Text) => Ok(()),
        (T::Jsonb, Format::Binary) => {
            let s = out.as_mut_slice();
            match s.get_mut(start) {
                Some(b) => {
                    *b = 1;
                    Ok(())
                }
                None => Err(()),
            }
        }
        (T::Bytea, Format::Text) => textual::render_bytea_text(out, start),
        (T::Int2, _) => scalar::render_int::<B, 2>(format, out, start),
        (T::Int4, _) => scalar::render_int::<B, 4>(format, out, start),
        (T::Int8, _) => scalar::render_int::<B, 8>(format, out, start),
        (T::Float4, _) => float::render_float4(format, out, start),
        (T::Float8, _) => float::render_float8(format, out, start),
        (T::Bool, _) => scalar::render_bool(format, out, start),
        (T::Uuid, _) => scalar::render_uuid(format, out, start),
        (T::Numeric, _) => numeric::render(format, out, start),
        (T::Date, _) => datetime::render_date(format, out, start),
        (T::Time, _) => datetime::render_time(format, out, start),
        (T::Timestamp, _) => datetime::render_timestamp(format, out, start, false),
        (T::Timestamptz, _) => datetime::render_timestamp(format, out, start, true),
    }
}

/// Copies the `N` canonical bytes at `out[start..]` to the stack and cuts
/// the buffer back to `start`, so a fixed-width value can be re-rendered in
/// place. Fails when the canonical value does not have exactly `N` bytes.
fn take_fixed<B: OutBuf + ?Sized, const N: usize>(
    out: &mut B,
    start: usize,
) -> Result<[u8; N], ()> {
    let s = out.as_slice();
    let v = s.get(start..).ok_or(())?;
    let arr: [u8; N] = v.try_into().map_err(|_| ())?;
    out.truncate(start);
    Ok(arr)
}

/// A fixed-size stack buffer that implements `fmt::Write`, for formatting
/// numbers without allocating.
struct StackBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackBuf<N> {
    fn new() -> Self {
        StackBuf {
            buf: [0; N],
            len: 0,
        }
    }
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl<const N: usize> std::fmt::Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(std::fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Strips the ASCII whitespace PostgreSQL's input functions skip around a
/// value.
fn trim_ws(s: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c');
    let start = s.iter().position(|b| !is_ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ws(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// Appends the decimal digits of `v`.
fn push_i64<B: OutBuf + ?Sized>(out: &mut B, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends `v` zero-padded to at least `width` digits (`v` non-negative).
fn push_padded<B: OutBuf + ?Sized>(out: &mut B, v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    let mut u = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    let digits = buf.len() - i;
    for _ in digits..width {
        out.push(b'0');
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests;

/// Re-encodes a valid value of `ty` from one wire format to another
/// (e.g. a mask's text output to the binary format a client asked for).
pub(crate) fn transcode(
    ty: LogicalType,
    from: Format,
    input: &[u8],
    to: Format,
    out: &mut Vec<u8>,
) -> Result<(), Reason> {
    let start = out.len();
    out.resize(start + render_prefix(ty, to), 0);
    if let Err(reason) = canonicalize(ty, from, input, out) {
        out.truncate(start);
        return Err(reason);
    }
    render_in_place(ty, to, out, start).map_err(|()| {
        out.truncate(start);
        "value cannot be rendered in the requested format"
    })
}
