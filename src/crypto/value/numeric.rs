//! numeric: canonical form is the text PostgreSQL prints for the value.
//!
//! PostgreSQL keeps a numeric's *display scale* (`1.50` stays `1.50`), so
//! the canonical form keeps it too: leading zeros and exponents are
//! normalized away (`0042.50`, `4.250e1` → `42.50`), `-0` becomes `0`, but
//! `1.5` and `1.50` remain different values for searchable equality (use a
//! fixed scale for searchable numeric columns). `NaN`, `Infinity` and
//! `-Infinity` are kept as those words.
//!
//! The binary wire format is PostgreSQL's `NumericVar` send format: int16
//! ndigits, int16 weight, uint16 sign, uint16 dscale, then ndigits base-10000
//! int16 digits.

use super::{trim_ws, OutBuf, Reason};
use crate::crypto::types::Format;

const SIGN_POS: u16 = 0x0000;
const SIGN_NEG: u16 = 0x4000;
const SIGN_NAN: u16 = 0xC000;
const SIGN_PINF: u16 = 0xD000;
const SIGN_NINF: u16 = 0xF000;
/// Largest display scale PostgreSQL can store.
const MAX_DSCALE: usize = 0x3FFF;
/// Most digits before the decimal point (weight 32767 in base 10000).
const MAX_INT_DIGITS: usize = 131_072;
/// Largest exponent magnitude `numeric_in` accepts.
const MAX_EXPONENT: i64 = 1000;

pub(super) fn canon<B: OutBuf + ?Sized>(
    format: Format,
    input: &[u8],
    out: &mut B,
) -> Result<(), Reason> {
    match format {
        Format::Text => canon_text(input, out),
        Format::Binary => canon_binary(input, out),
    }
}

fn canon_text<B: OutBuf + ?Sized>(input: &[u8], out: &mut B) -> Result<(), Reason> {
    let s = trim_ws(input);
    let word = |w: &[u8]| s.eq_ignore_ascii_case(w);
    if word(b"nan") {
        out.extend_from_slice(b"NaN");
        return Ok(());
    }
    if word(b"infinity") || word(b"+infinity") || word(b"inf") || word(b"+inf") {
        out.extend_from_slice(b"Infinity");
        return Ok(());
    }
    if word(b"-infinity") || word(b"-inf") {
        out.extend_from_slice(b"-Infinity");
        return Ok(());
    }
    const BAD: Reason = "not a numeric value";
    let (neg, rest) = match s.split_first() {
        Some((b'-', r)) => (true, r),
        Some((b'+', r)) => (false, r),
        _ => (false, s),
    };
    let int_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let int = &rest[..int_len];
    let mut rest = &rest[int_len..];
    let mut frac: &[u8] = &[];
    if let Some((b'.', r)) = rest.split_first() {
        let n = r.iter().take_while(|b| b.is_ascii_digit()).count();
        frac = &r[..n];
        rest = &r[n..];
    }
    if int.is_empty() && frac.is_empty() {
        return Err(BAD);
    }
    let mut exp: i64 = 0;
    if let Some((b'e' | b'E', r)) = rest.split_first() {
        let (eneg, r) = match r.split_first() {
            Some((b'-', r)) => (true, r),
            Some((b'+', r)) => (false, r),
            _ => (false, r),
        };
        if r.is_empty() || !r.iter().all(u8::is_ascii_digit) {
            return Err(BAD);
        }
        for &d in r {
            exp = exp * 10 + i64::from(d - b'0');
            if exp > MAX_EXPONENT {
                return Err("numeric exponent out of range");
            }
        }
        if eneg {
            exp = -exp;
        }
        rest = &[];
    }
    if !rest.is_empty() {
        return Err(BAD);
    }
    // All digits D = int ++ frac; the decimal point sits after `point`
    // digits of D (may be outside D: virtual zeros on either side).
    let total = (int.len() + frac.len()) as i64;
    let digit = |i: i64| -> u8 {
        if i < 0 || i >= total {
            b'0'
        } else if (i as usize) < int.len() {
            int[i as usize]
        } else {
            frac[i as usize - int.len()]
        }
    };
    let point = int.len() as i64 + exp;
    let dscale = (frac.len() as i64 - exp).max(0);
    if dscale as usize > MAX_DSCALE {
        return Err("numeric scale out of range");
    }
    // First significant integer digit.
    let mut first = 0i64.min(point);
    while first < point && digit(first) == b'0' {
        first += 1;
    }
    if point - first > MAX_INT_DIGITS as i64 {
        return Err("numeric value out of range");
    }
    let nonzero = int.iter().chain(frac).any(|&d| d != b'0');
    if neg && nonzero {
        out.push(b'-');
    }
    if first >= point {
        out.push(b'0');
    } else {
        for i in first..point {
            out.push(digit(i));
        }
    }
    if dscale > 0 {
        out.push(b'.');
        for i in point..point + dscale {
            out.push(digit(i));
        }
    }
    Ok(())
}

/// Reads the header and digits of a binary numeric, checking them as
/// `numeric_recv` does.
struct BinNumeric<'a> {
    weight: i64,
    sign: u16,
    dscale: usize,
    digits: &'a [u8],
}

impl BinNumeric<'_> {
    fn parse(input: &[u8]) -> Result<BinNumeric<'_>, Reason> {
        const BAD: Reason = "invalid binary numeric";
        let head = input.get(..8).ok_or(BAD)?;
        let ndigits = i16::from_be_bytes([head[0], head[1]]);
        let weight = i16::from_be_bytes([head[2], head[3]]);
        let sign = u16::from_be_bytes([head[4], head[5]]);
        let dscale = u16::from_be_bytes([head[6], head[7]]);
        if ndigits < 0 || input.len() != 8 + 2 * ndigits as usize {
            return Err(BAD);
        }
        if !matches!(sign, SIGN_POS | SIGN_NEG | SIGN_NAN | SIGN_PINF | SIGN_NINF) {
            return Err("invalid sign in binary numeric");
        }
        if dscale as usize > MAX_DSCALE {
            return Err("invalid scale in binary numeric");
        }
        let digits = &input[8..];
        if digits
            .chunks_exact(2)
            .any(|c| u16::from_be_bytes([c[0], c[1]]) > 9999)
        {
            return Err("invalid digit in binary numeric");
        }
        Ok(BinNumeric {
            weight: i64::from(weight),
            sign,
            dscale: dscale as usize,
            digits,
        })
    }

    /// Base-10000 digit at `weight` w (0 outside the stored digits).
    fn group(&self, w: i64) -> u16 {
        let idx = self.weight - w;
        if idx < 0 || (idx as usize) * 2 + 2 > self.digits.len() {
            return 0;
        }
        let i = idx as usize * 2;
        u16::from_be_bytes([self.digits[i], self.digits[i + 1]])
    }

    /// Calls `f` with each decimal digit PostgreSQL would print: the
    /// integer part (with leading zeros) then `dscale` fraction digits —
    /// digits past the display scale are truncated, as `numeric_recv` does.
    fn for_each_digit(&self, mut f: impl FnMut(bool, u8)) {
        let mut w = self.weight.max(0);
        while w >= 0 {
            let g = self.group(w);
            for p in [1000, 100, 10, 1] {
                f(true, (g / p % 10) as u8);
            }
            w -= 1;
        }
        let mut left = self.dscale;
        let mut w = -1;
        while left > 0 {
            let g = self.group(w);
            for p in [1000, 100, 10, 1] {
                if left > 0 {
                    f(false, (g / p % 10) as u8);
                    left -= 1;
                }
            }
            w -= 1;
        }
    }
}

fn canon_binary<B: OutBuf + ?Sized>(input: &[u8], out: &mut B) -> Result<(), Reason> {
    let n = BinNumeric::parse(input)?;
    match n.sign {
        SIGN_NAN => out.extend_from_slice(b"NaN"),
        SIGN_PINF => out.extend_from_slice(b"Infinity"),
        SIGN_NINF => out.extend_from_slice(b"-Infinity"),
        _ => {
            let mut nonzero = false;
            n.for_each_digit(|_, d| nonzero |= d != 0);
            if n.sign == SIGN_NEG && nonzero {
                out.push(b'-');
            }
            let mut leading = true;
            let mut dot = false;
            n.for_each_digit(|is_int, d| {
                if is_int {
                    if leading && d == 0 {
                        return;
                    }
                    leading = false;
                } else {
                    if leading {
                        out.push(b'0');
                        leading = false;
                    }
                    if !dot {
                        out.push(b'.');
                        dot = true;
                    }
                }
                out.push(b'0' + d);
            });
            if leading {
                out.push(b'0');
            }
        }
    }
    Ok(())
}

/// Renders the canonical text at `out[start..]` in the requested format.
pub(super) fn render<B: OutBuf + ?Sized>(
    format: Format,
    out: &mut B,
    start: usize,
) -> Result<(), ()> {
    if format == Format::Text {
        return Ok(());
    }
    let end = out.len();
    let text = out.as_slice().get(start..).ok_or(())?;
    let special = match text {
        b"NaN" => Some(SIGN_NAN),
        b"Infinity" => Some(SIGN_PINF),
        b"-Infinity" => Some(SIGN_NINF),
        _ => None,
    };
    if let Some(sign) = special {
        out.truncate(start);
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&sign.to_be_bytes());
        // PostgreSQL 14+ sends dscale 0x0020 for ±Infinity (the header
        // bits of its special-value representation) and 0 for NaN; copy it
        // so the bytes match the server's exactly.
        let dscale: u16 = if sign == SIGN_NAN { 0 } else { 0x20 };
        out.extend_from_slice(&dscale.to_be_bytes());
        return Ok(());
    }
    let (sign, body_at) = match text.first() {
        Some(b'-') => (SIGN_NEG, start + 1),
        _ => (SIGN_POS, start),
    };
    let body = &text[body_at - start..];
    let dot = body.iter().position(|&b| b == b'.');
    let (int_len, frac_len) = match dot {
        Some(i) => (i, body.len() - i - 1),
        None => (body.len(), 0),
    };
    if int_len == 0
        || !body
            .iter()
            .enumerate()
            .all(|(i, b)| b.is_ascii_digit() || Some(i) == dot)
        || frac_len > MAX_DSCALE
        || (dot.is_some() && frac_len == 0)
    {
        return Err(());
    }
    let gi = int_len.div_ceil(4);
    let gf = frac_len.div_ceil(4);
    // Upper bound of the binary size; the text stays in place meanwhile.
    out.resize(end + 8 + 2 * (gi + gf), 0);
    let (src, dst) = out.as_mut_slice().split_at_mut(end);
    let int = &src[body_at..body_at + int_len];
    let frac = &src[end - frac_len..end];
    let pad = gi * 4 - int_len;
    // Base-10000 group k of the value, k in 0..gi+gf, most significant first.
    let group = |k: usize| -> u16 {
        let mut g = 0u16;
        for j in 0..4 {
            let pos = k * 4 + j; // position in the padded digit string
            let d = if k < gi {
                pos.checked_sub(pad).map_or(0, |p| int[p] - b'0')
            } else {
                frac.get(pos - gi * 4).map_or(0, |b| b - b'0')
            };
            g = g * 10 + u16::from(d);
        }
        g
    };
    let first = (0..gi + gf).find(|&k| group(k) != 0);
    let last = (0..gi + gf).rev().find(|&k| group(k) != 0);
    let (ndigits, weight, k0) = match (first, last) {
        (Some(a), Some(b)) => (b - a + 1, gi as i64 - 1 - a as i64, a),
        _ => (0, 0, 0),
    };
    let (Ok(weight), Ok(nd)) = (i16::try_from(weight), i16::try_from(ndigits)) else {
        out.truncate(end);
        return Err(());
    };
    let sign = if ndigits == 0 { SIGN_POS } else { sign };
    dst[0..2].copy_from_slice(&nd.to_be_bytes());
    dst[2..4].copy_from_slice(&weight.to_be_bytes());
    dst[4..6].copy_from_slice(&sign.to_be_bytes());
    dst[6..8].copy_from_slice(&(frac_len as u16).to_be_bytes());
    for i in 0..ndigits {
        dst[8 + 2 * i..10 + 2 * i].copy_from_slice(&group(k0 + i).to_be_bytes());
    }
    let bin_len = 8 + 2 * ndigits;
    out.as_mut_slice().copy_within(end..end + bin_len, start);
    out.truncate(start + bin_len);
    Ok(())
}
