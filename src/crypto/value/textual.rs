//! Character and byte-string types: text, varchar, char, json, jsonb, bytea.
//!
//! Text types are validated as UTF-8 without NUL bytes (pgveil assumes
//! `client_encoding = UTF8`, the driver default); their canonical encoding
//! is the text itself, which is also their binary wire format.

use super::{json, OutBuf, Reason};
use crate::crypto::types::Format;

fn check_text(input: &[u8]) -> Result<(), Reason> {
    if std::str::from_utf8(input).is_err() {
        return Err("not valid UTF-8");
    }
    if memchr::memchr(0, input).is_some() {
        return Err("contains a NUL byte");
    }
    Ok(())
}

/// text / varchar: the bytes as given (both wire formats are the text).
pub(super) fn canon_text<B: OutBuf + ?Sized>(input: &[u8], out: &mut B) -> Result<(), Reason> {
    check_text(input)?;
    out.extend_from_slice(input);
    Ok(())
}

/// char(n): trailing spaces are not significant in PostgreSQL's bpchar
/// comparisons, so they are stripped; the value is returned unpadded.
pub(super) fn canon_char<B: OutBuf + ?Sized>(input: &[u8], out: &mut B) -> Result<(), Reason> {
    check_text(input)?;
    let end = input.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    out.extend_from_slice(&input[..end]);
    Ok(())
}

/// json: validated, kept verbatim (PostgreSQL's json keeps the input text).
pub(super) fn canon_json<B: OutBuf + ?Sized>(input: &[u8], out: &mut B) -> Result<(), Reason> {
    check_text(input)?;
    json::validate(input, false)?;
    out.extend_from_slice(input);
    Ok(())
}

/// jsonb: validated and kept as given; binary input is a version byte (1)
/// followed by the text.
pub(super) fn canon_jsonb<B: OutBuf + ?Sized>(
    format: Format,
    input: &[u8],
    out: &mut B,
) -> Result<(), Reason> {
    let text = match format {
        Format::Text => input,
        Format::Binary => match input.split_first() {
            Some((1, rest)) => rest,
            Some(_) => return Err("unsupported jsonb binary version"),
            None => return Err("empty jsonb binary value"),
        },
    };
    check_text(text)?;
    json::validate(text, true)?;
    out.extend_from_slice(text);
    Ok(())
}

/// bytea: canonical is the raw bytes; text input is hex (`\x…`) or escape
/// format, as `byteain` accepts.
pub(super) fn canon_bytea<B: OutBuf + ?Sized>(
    format: Format,
    input: &[u8],
    out: &mut B,
) -> Result<(), Reason> {
    match format {
        Format::Binary => {
            out.extend_from_slice(input);
            Ok(())
        }
        Format::Text => match input {
            [b'\\', b'x' | b'X', hex @ ..] => decode_hex(hex, out),
            _ => decode_escape(input, out),
        },
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_hex<B: OutBuf + ?Sized>(hex: &[u8], out: &mut B) -> Result<(), Reason> {
    let mut i = 0;
    while i < hex.len() {
        let c = hex[i];
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
            continue;
        }
        let hi = hex_val(c).ok_or("invalid hexadecimal digit")?;
        let lo = hex
            .get(i + 1)
            .and_then(|&b| hex_val(b))
            .ok_or("invalid hexadecimal data: odd number of digits or bad digit")?;
        out.push(hi << 4 | lo);
        i += 2;
    }
    Ok(())
}

fn decode_escape<B: OutBuf + ?Sized>(s: &[u8], out: &mut B) -> Result<(), Reason> {
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        match s.get(i + 1..i + 4) {
            Some(&[a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7']) => {
                out.push((a - b'0') << 6 | (b - b'0') << 3 | (c - b'0'));
                i += 4;
            }
            _ if s.get(i + 1) == Some(&b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            _ => return Err("invalid escape sequence in bytea"),
        }
    }
    Ok(())
}

/// Expands the raw bytes at `out[start..]` into `\x` + lowercase hex, in
/// place, walking backwards so no byte is overwritten before it is read.
pub(super) fn render_bytea_text<B: OutBuf + ?Sized>(out: &mut B, start: usize) -> Result<(), ()> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = out.len().checked_sub(start).ok_or(())?;
    let new_len = start + 2 + 2 * n;
    out.resize(new_len, 0);
    let s = out.as_mut_slice();
    for i in (0..n).rev() {
        let b = s[start + i];
        s[start + 2 + 2 * i] = HEX[(b >> 4) as usize];
        s[start + 3 + 2 * i] = HEX[(b & 15) as usize];
    }
    s[start] = b'\\';
    s[start + 1] = b'x';
    Ok(())
}
