//! float4 and float8.
//!
//! Canonical form = IEEE 754 big-endian (PostgreSQL's binary format), with
//! values PostgreSQL considers equal (`-0` and `0`, every NaN) given one
//! encoding. Text output reproduces PostgreSQL 12+'s shortest-exact format
//! (`extra_float_digits = 1`), including its Ryu variant's refusal of
//! rounding-bound digits.

use std::fmt::Write as _;

use super::{take_fixed, trim_ws, OutBuf, Reason, StackBuf};
use crate::crypto::types::Format;

/// Classifies float text that Rust's parser would read but PostgreSQL
/// rejects, and the reverse: PostgreSQL errors on overflow and underflow
/// instead of returning infinity or zero.
fn float_text(input: &[u8]) -> Result<(&str, bool), Reason> {
    let s = std::str::from_utf8(trim_ws(input)).map_err(|_| "not a number")?;
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower_is = |w: &str| body.eq_ignore_ascii_case(w);
    let special = lower_is("nan") || lower_is("inf") || lower_is("infinity");
    if !special
        && !body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return Err("not a number");
    }
    if s.starts_with(['+', '-']) && lower_is("nan") {
        return Err("not a number");
    }
    Ok((s, special))
}

/// Whether the mantissa of a decimal float literal has a non-zero digit,
/// to tell a true zero from an underflow.
fn mantissa_nonzero(s: &str) -> bool {
    s.bytes()
        .take_while(|&b| b != b'e' && b != b'E')
        .any(|b| matches!(b, b'1'..=b'9'))
}

pub(super) fn canon_float8<B: OutBuf + ?Sized>(
    format: Format,
    input: &[u8],
    out: &mut B,
) -> Result<(), Reason> {
    canon_float::<f64, B>(format, input, out)
}

pub(super) fn canon_float4<B: OutBuf + ?Sized>(
    format: Format,
    input: &[u8],
    out: &mut B,
) -> Result<(), Reason> {
    canon_float::<f32, B>(format, input, out)
}

/// Validates a float in either wire format and appends its canonical
/// big-endian bytes: one NaN, and no negative zero.
fn canon_float<T: PgFloat, B: OutBuf + ?Sized>(
    format: Format,
    input: &[u8],
    out: &mut B,
) -> Result<(), Reason> {
    let v = match format {
        Format::Binary => T::from_be(input).ok_or(T::WRONG_LENGTH)?,
        Format::Text => {
            let (s, special) = float_text(input)?;
            let v: T = s.parse().map_err(|_| "not a number")?;
            if !special && (v.is_infinite() || (v == T::ZERO && mantissa_nonzero(s))) {
                return Err(T::OUT_OF_RANGE);
            }
            v
        }
    };
    let v = if v.is_nan() {
        T::NAN
    } else if v == T::ZERO {
        T::ZERO // folds -0 into 0
    } else {
        v
    };
    v.put_be(out);
    Ok(())
}

/// The two float widths: PostgreSQL's shortest-digits rule and the
/// canonical encoding.
trait PgFloat: Copy + PartialEq + std::fmt::LowerExp + std::str::FromStr {
    /// Significant digits that always round-trip.
    const MAX_DIGITS: usize;
    /// Positive zero.
    const ZERO: Self;
    /// The one NaN stored.
    const NAN: Self;
    /// Error for a binary value of the wrong size.
    const WRONG_LENGTH: Reason;
    /// Error for a literal outside the type's range.
    const OUT_OF_RANGE: Reason;
    /// Reads the binary wire format.
    fn from_be(b: &[u8]) -> Option<Self>;
    /// Appends the big-endian bytes.
    fn put_be<B: OutBuf + ?Sized>(self, out: &mut B);
    /// Whether the value is NaN.
    fn is_nan(self) -> bool;
    /// Whether the value is ±infinity.
    fn is_infinite(self) -> bool;
}
impl PgFloat for f32 {
    const MAX_DIGITS: usize = 9;
    const ZERO: Self = 0.0;
    const NAN: Self = f32::NAN;
    const WRONG_LENGTH: Reason = "binary float4 must be 4 bytes";
    const OUT_OF_RANGE: Reason = "out of range for type real";
    fn from_be(b: &[u8]) -> Option<Self> {
        Some(f32::from_be_bytes(b.try_into().ok()?))
    }
    fn put_be<B: OutBuf + ?Sized>(self, out: &mut B) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn is_infinite(self) -> bool {
        f32::is_infinite(self)
    }
}
impl PgFloat for f64 {
    const MAX_DIGITS: usize = 17;
    const ZERO: Self = 0.0;
    const NAN: Self = f64::NAN;
    const WRONG_LENGTH: Reason = "binary float8 must be 8 bytes";
    const OUT_OF_RANGE: Reason = "out of range for type double precision";
    fn from_be(b: &[u8]) -> Option<Self> {
        Some(f64::from_be_bytes(b.try_into().ok()?))
    }
    fn put_be<B: OutBuf + ?Sized>(self, out: &mut B) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn is_infinite(self) -> bool {
        f64::is_infinite(self)
    }
}

/// Splits Rust's `{:e}` output (`d.ddde-X`, no sign) into the digits as
/// an integer, their count and the decimal exponent of the first digit.
fn split_sci(sci: &[u8]) -> Option<(u64, usize, i32)> {
    let epos = sci.iter().position(|&b| b == b'e')?;
    let mut d: u64 = 0;
    let mut n = 0;
    for &b in &sci[..epos] {
        if b.is_ascii_digit() {
            d = d.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            n += 1;
        }
    }
    let exp = std::str::from_utf8(&sci[epos + 1..]).ok()?.parse().ok()?;
    Some((d, n, exp))
}

/// Whether the decimal `sci` sits exactly halfway between `v` and a
/// neighbour. Rust's shortest formatting accepts such a tie (it reads back
/// as `v` under ties-to-even), PostgreSQL's Ryu port does not
/// (`acceptBounds = false`). Tested by nudging the decimal 40 digits
/// further down and up: strictly inside the interval both still read as
/// `v`, on a bound one side does not. (A decimal of ≤ 17 digits and a
/// binary midpoint that differ at all differ by far more than 1e-40
/// relative.)
fn on_bound<T: PgFloat>(v: T, sci: &[u8]) -> bool {
    let Some((d, n, exp)) = split_sci(sci) else {
        return false;
    };
    let e = exp - (n as i32 - 1) - 40;
    let reads_as_v = |s: &StackBuf<96>| {
        std::str::from_utf8(s.as_bytes())
            .ok()
            .and_then(|s| s.parse::<T>().ok())
            .is_some_and(|x| x == v)
    };
    let mut up = StackBuf::<96>::new();
    let mut down = StackBuf::<96>::new();
    let ok = write!(up, "{d}{:0>40}e{e}", 1).is_ok()
        && write!(down, "{}{:9>40}e{e}", d.saturating_sub(1), 9).is_ok();
    ok && !(reads_as_v(&up) && reads_as_v(&down))
}

/// Writes PostgreSQL's choice of digits for `v` (finite, positive) in
/// Rust's `{:e}` shape: the shortest decimal strictly inside the rounding
/// interval, closest to `v`.
fn pg_sci<T: PgFloat>(v: T, sb: &mut StackBuf<40>) -> Result<(), ()> {
    write!(sb, "{v:e}").map_err(|_| ())?;
    if !on_bound(v, sb.as_bytes()) {
        return Ok(());
    }
    let n = split_sci(sb.as_bytes()).map_or(1, |(_, n, _)| n);
    for p in n + 1..=T::MAX_DIGITS {
        let mut c = StackBuf::<40>::new();
        write!(c, "{v:.*e}", p - 1).map_err(|_| ())?;
        let reads = std::str::from_utf8(c.as_bytes())
            .ok()
            .and_then(|s| s.parse::<T>().ok())
            .is_some_and(|x| x == v);
        if reads && !on_bound(v, c.as_bytes()) {
            *sb = c;
            break;
        }
    }
    Ok(())
}

/// Writes a float the way PostgreSQL 12+ does with the default
/// `extra_float_digits = 1`: the shortest digits that read back exactly
/// (Ryu), in fixed notation when the decimal exponent is in
/// `[-4, fixed_max)` and as `d.ddde+XX` otherwise.
fn push_pg_float<B: OutBuf + ?Sized>(out: &mut B, sci: &[u8], fixed_max: i32) {
    // `sci` is Rust's shortest `{:e}` form: `-?d(.d+)?e-?\d+`.
    let (neg, sci) = match sci.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, sci),
    };
    let epos = sci.iter().position(|&b| b == b'e').unwrap_or(sci.len());
    let mant = &sci[..epos];
    let exp: i32 = std::str::from_utf8(sci.get(epos + 1..).unwrap_or(b"0"))
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    let mut digits = [0u8; 24];
    let mut nd = 0;
    for &b in mant {
        if b.is_ascii_digit() && nd < digits.len() {
            digits[nd] = b;
            nd += 1;
        }
    }
    let digits = &digits[..nd];
    if neg {
        out.push(b'-');
    }
    if digits == b"0" {
        out.push(b'0');
        return;
    }
    if (-4..fixed_max).contains(&exp) {
        if exp < 0 {
            out.extend_from_slice(b"0.");
            for _ in 0..(-exp - 1) {
                out.push(b'0');
            }
            out.extend_from_slice(digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.extend_from_slice(digits);
                for _ in digits.len()..int_len {
                    out.push(b'0');
                }
            } else {
                out.extend_from_slice(&digits[..int_len]);
                out.push(b'.');
                out.extend_from_slice(&digits[int_len..]);
            }
        }
    } else {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push(b'0');
        }
        super::push_padded(out, u64::from(e), 1);
    }
}

fn push_special<B: OutBuf + ?Sized>(out: &mut B, nan: bool, inf: bool, neg: bool) -> bool {
    if nan {
        out.extend_from_slice(b"NaN");
    } else if inf {
        out.extend_from_slice(if neg { b"-Infinity" } else { b"Infinity" });
    } else {
        return false;
    }
    true
}

pub(super) fn render_float8<B: OutBuf + ?Sized>(
    format: Format,
    out: &mut B,
    start: usize,
) -> Result<(), ()> {
    let raw: [u8; 8] = take_fixed(out, start)?;
    match format {
        Format::Binary => out.extend_from_slice(&raw),
        Format::Text => {
            let v = f64::from_be_bytes(raw);
            if !push_special(out, v.is_nan(), v.is_infinite(), v < 0.0) {
                if v.is_sign_negative() {
                    out.push(b'-');
                }
                let mut sb = StackBuf::<40>::new();
                pg_sci(v.abs(), &mut sb)?;
                push_pg_float(out, sb.as_bytes(), 15);
            }
        }
    }
    Ok(())
}

pub(super) fn render_float4<B: OutBuf + ?Sized>(
    format: Format,
    out: &mut B,
    start: usize,
) -> Result<(), ()> {
    let raw: [u8; 4] = take_fixed(out, start)?;
    match format {
        Format::Binary => out.extend_from_slice(&raw),
        Format::Text => {
            let v = f32::from_be_bytes(raw);
            if !push_special(out, v.is_nan(), v.is_infinite(), v < 0.0) {
                if v.is_sign_negative() {
                    out.push(b'-');
                }
                let mut sb = StackBuf::<40>::new();
                pg_sci(v.abs(), &mut sb)?;
                push_pg_float(out, sb.as_bytes(), 6);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f8(s: &str) -> String {
        let mut v = Vec::new();
        canon_float8(Format::Text, s.as_bytes(), &mut v).unwrap();
        render_float8(Format::Text, &mut v, 0).unwrap();
        String::from_utf8(v).unwrap()
    }

    fn f4(s: &str) -> String {
        let mut v = Vec::new();
        canon_float4(Format::Text, s.as_bytes(), &mut v).unwrap();
        render_float4(Format::Text, &mut v, 0).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn floats_print_like_postgres() {
        let cases = [
            ("1", "1"),
            ("-0", "0"),
            ("0.1", "0.1"),
            ("100", "100"),
            ("123.456", "123.456"),
            ("1e14", "100000000000000"),
            ("1e15", "1e+15"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("1.5e-300", "1.5e-300"),
            ("1e100", "1e+100"),
            ("12345678901234567890", "1.2345678901234567e+19"),
            ("nan", "NaN"),
            ("-Infinity", "-Infinity"),
            ("inf", "Infinity"),
            (" 3.25 ", "3.25"),
        ];
        for (i, o) in cases {
            assert_eq!(f8(i), o, "{i}");
        }
        assert_eq!(f4("100000"), "100000");
        assert_eq!(f4("1e6"), "1e+06");
        assert_eq!(f4("0.1"), "0.1");
        assert_eq!(f4("3.14159274"), "3.1415927");
        // Shortest digits on a rounding bound: PostgreSQL takes one more.
        assert_eq!(f4("84126896"), "8.4126896e+07");
        assert_eq!(f4("4.292447e+07"), "4.2924472e+07");
    }

    #[test]
    fn floats_refuse_out_of_range_and_junk() {
        let mut v = Vec::new();
        for bad in ["1e400", "1e-400", "abc", "", "1.2.3x", "0x10", "+nan"] {
            assert!(
                canon_float8(Format::Text, bad.as_bytes(), &mut v).is_err(),
                "{bad}"
            );
        }
        assert!(canon_float4(Format::Text, b"1e39", &mut v).is_err());
        assert!(canon_float8(Format::Text, b"0e10", &mut v).is_ok());
    }
}
