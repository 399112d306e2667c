//! Fixed-width scalars: int2/int4/int8, bool, uuid.
//!
//! Canonical form = PostgreSQL's binary send format (big-endian).

use super::{push_i64, take_fixed, trim_ws, OutBuf, Reason};
use crate::crypto::types::Format;

// ---- integers -------------------------------------------------------------

/// Parses a decimal integer the way `int4in` does: optional surrounding
/// whitespace, optional sign, at least one digit, and range-checked.
fn parse_int(input: &[u8], min: i64, max: i64) -> Result<i64, Reason> {
    let s = trim_ws(input);
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err("not an integer");
    }
    // Accumulate negatively so i64::MIN parses.
    let mut v: i64 = 0;
    for &d in digits {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_sub(i64::from(d - b'0')))
            .ok_or("integer out of range")?;
    }
    let v = if neg {
        v
    } else {
        v.checked_neg().ok_or("integer out of range")?
    };
    if v < min || v > max {
        return Err("integer out of range");
    }
    Ok(v)
}

pub(super) fn canon_int<B: OutBuf + ?Sized, const N: usize>(
    format: Format,
    input: &[u8],
    out: &mut B,
) -> Result<(), Reason> {
    match format {
        Format::Binary => {
            if input.len() != N {
                return Err("binary integer has the wrong length");
            }
            out.extend_from_slice(input);
        }
        Format::Text => {
            let bits = 8 * N as u32;
            let max = i64::MAX >> (64 - bits);
            let min = -max - 1;
            let v = parse_int(input, min, max)?;
            out.extend_from_slice(&v.to_be_bytes()[8 - N..]);
        }
    }
    Ok(())
}

pub(super) fn render_int<B: OutBuf + ?Sized, const N: usize>(
    format: Format,
    out: &mut B,
    start: usize,
) -> Result<(), ()> {
    let raw: [u8; N] = take_fixed(out, start)?;
    match format {
        Format::Binary => out.extend_from_slice(&raw),
        Format::Text => {
            // Sign-extend the big-endian bytes to i64.
            let fill = if raw[0] & 0x80 != 0 { 0xff } else { 0 };
            let mut wide = [fill; 8];
            wide[8 - N..].copy_from_slice(&raw);
            push_i64(out, i64::from_be_bytes(wide));
        }
    }
    Ok(())
}

// ---- bool -----------------------------------------------------------------

/// `boolin`: case-insensitive `t`/`true`/`y`/`yes`/`on`/`1` and
/// `f`/`false`/`n`/`no`/`off`/`0`, any unambiguous prefix of the words,
/// surrounding whitespace allowed.
fn parse_bool(input: &[u8]) -> Option<bool> {
    let s = trim_ws(input);
    let prefix_of = |word: &[u8], min: usize| {
        s.len() >= min && s.len() <= word.len() && s.eq_ignore_ascii_case(&word[..s.len()])
    };
    let first = s.first()?.to_ascii_lowercase();
    match first {
        b't' if prefix_of(b"true", 1) => Some(true),
        b'y' if prefix_of(b"yes", 1) => Some(true),
        b'f' if prefix_of(b"false", 1) => Some(false),
        b'n' if prefix_of(b"no", 1) => Some(false),
        b'o' if prefix_of(b"on", 2) => Some(true),
        b'o' if prefix_of(b"off", 2) => Some(false),
        b'1' if s.len() == 1 => Some(true),
        b'0' if s.len() == 1 => Some(false),
        _ => None,
    }
}

pub(super) fn canon_bool<B: OutBuf + ?Sized>(
    format: Format,
    input: &[u8],
    out: &mut B,
) -> Result<(), Reason> {
    let v = match format {
        Format::Binary => match input {
            [b] => *b != 0,
            _ => return Err("binary bool must be 1 byte"),
        },
        Format::Text => parse_bool(input).ok_or("not a boolean")?,
    };
    out.push(u8::from(v));
    Ok(())
}

pub(super) fn render_bool<B: OutBuf + ?Sized>(
    format: Format,
    out: &mut B,
    start: usize,
) -> Result<(), ()> {
    let [b]: [u8; 1] = take_fixed(out, start)?;
    if b > 1 {
        return Err(());
    }
    match format {
        Format::Binary => out.push(b),
        Format::Text => out.push(if b == 1 { b't' } else { b'f' }),
    }
    Ok(())
}

// ---- uuid -----------------------------------------------------------------

/// `uuid_in`: 32 hex digits, optionally in braces, with an optional `-`
/// after any group of four digits (except the last).
fn parse_uuid(input: &[u8]) -> Option<[u8; 16]> {
    let s = trim_ws(input);
    let s = match s {
        [b'{', inner @ .., b'}'] => inner,
        _ => s,
    };
    let mut out = [0u8; 16];
    let mut i = 0;
    for (k, byte) in out.iter_mut().enumerate() {
        let hi = hex(*s.get(i)?)?;
        let lo = hex(*s.get(i + 1)?)?;
        *byte = hi << 4 | lo;
        i += 2;
        if k % 2 == 1 && k < 15 && s.get(i) == Some(&b'-') {
            i += 1;
        }
    }
    (i == s.len()).then_some(out)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

pub(super) fn canon_uuid<B: OutBuf + ?Sized>(
    format: Format,
    input: &[u8],
    out: &mut B,
) -> Result<(), Reason> {
    match format {
        Format::Binary if input.len() == 16 => out.extend_from_slice(input),
        Format::Binary => return Err("binary uuid must be 16 bytes"),
        Format::Text => out.extend_from_slice(&parse_uuid(input).ok_or("not a uuid")?),
    }
    Ok(())
}

pub(super) fn render_uuid<B: OutBuf + ?Sized>(
    format: Format,
    out: &mut B,
    start: usize,
) -> Result<(), ()> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let raw: [u8; 16] = take_fixed(out, start)?;
    match format {
        Format::Binary => out.extend_from_slice(&raw),
        Format::Text => {
            let mut t = [0u8; 36];
            let mut j = 0;
            for (k, b) in raw.iter().enumerate() {
                if matches!(k, 4 | 6 | 8 | 10) {
                    t[j] = b'-';
                    j += 1;
                }
                t[j] = HEX[(b >> 4) as usize];
                t[j + 1] = HEX[(b & 15) as usize];
                j += 2;
            }
            out.extend_from_slice(&t);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bool_words() {
        for t in ["t", "TRUE", " yes ", "on", "1", "tr", "Y"] {
            assert_eq!(parse_bool(t.as_bytes()), Some(true), "{t}");
        }
        for f in ["f", "false", "no", "off", "0", "of", "N", "fal"] {
            assert_eq!(parse_bool(f.as_bytes()), Some(false), "{f}");
        }
        for bad in ["", "o", "2", "truee", "yess", "nope", "10"] {
            assert_eq!(parse_bool(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn ints_parse_like_int4in() {
        assert_eq!(
            parse_int(b" -042 ", i32::MIN.into(), i32::MAX.into()),
            Ok(-42)
        );
        assert_eq!(parse_int(b"+7", -10, 10), Ok(7));
        assert!(parse_int(b"2147483648", i32::MIN.into(), i32::MAX.into()).is_err());
        assert_eq!(
            parse_int(b"-2147483648", i32::MIN.into(), i32::MAX.into()),
            Ok(i64::from(i32::MIN))
        );
        assert_eq!(
            parse_int(b"-9223372036854775808", i64::MIN, i64::MAX),
            Ok(i64::MIN)
        );
        assert!(parse_int(b"9223372036854775808", i64::MIN, i64::MAX).is_err());
        for bad in ["", "-", "1.0", "1e3", "0x10", "1 2", "++1"] {
            assert!(
                parse_int(bad.as_bytes(), i64::MIN, i64::MAX).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn uuid_forms() {
        let want = parse_uuid(b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        assert!(want.is_some());
        for s in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        ] {
            assert_eq!(parse_uuid(s.as_bytes()), want, "{s}");
        }
        for bad in [
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
            "{a0eebc999c0b4ef8bb6d6bb9bd380a11",
        ] {
            assert_eq!(parse_uuid(bad.as_bytes()), None, "{bad}");
        }
    }
}
