//! date, time, timestamp, timestamptz.
//!
//! Canonical form = PostgreSQL's binary format: date is int32 days since
//! 2000-01-01, time is int64 microseconds since midnight, timestamps are
//! int64 microseconds since 2000-01-01 00:00:00 (UTC for timestamptz);
//! `±infinity` are the extreme integers as in PostgreSQL.
//!
//! Text input accepts the ISO forms PostgreSQL prints with the default
//! `DateStyle = ISO` and the common ISO 8601 variants: `YYYY-MM-DD`,
//! `YYYYMMDD`, a `T` or space before the time, fractional seconds (rounded
//! to microseconds), a zone offset (`Z`, `UTC`, `±HH`, `±HH:MM`, `±HHMM`,
//! `±HH:MM:SS`), a trailing `BC`/`AD`, and the words `infinity`,
//! `-infinity` and `epoch`. Locale-dependent forms (`Jan 8 1999`,
//! `1/8/1999`) and relative words (`now`, `today`) are refused rather than
//! guessed. timestamptz without an offset is taken as UTC (the proxy does
//! not know the session's TimeZone) and is printed in UTC (`+00`).

use super::{push_padded, take_fixed, trim_ws, OutBuf, Reason};
use crate::crypto::types::Format;

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;
/// Days from 1970-01-01 to 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_DAYS: i64 = 10_957;

/// Days since 1970-01-01 of a proleptic Gregorian date (year 0 = 1 BC).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day) of a day count since
/// 1970-01-01. Shared with the timestamps of the audit trail and the
/// keyring CLI, which format dates without a date library.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// First valid day (4714-11-24 BC, Julian day 0), in PostgreSQL days.
fn min_pg_day() -> i64 {
    days_from_civil(-4713, 11, 24) - PG_EPOCH_DAYS
}
/// Last valid date (5874897-12-31), in PostgreSQL days.
fn max_date_day() -> i64 {
    days_from_civil(5_874_897, 12, 31) - PG_EPOCH_DAYS
}
/// First timestamp past the range (294277-01-01 00:00), in microseconds.
fn end_timestamp() -> i64 {
    (days_from_civil(294_277, 1, 1) - PG_EPOCH_DAYS) * USECS_PER_DAY
}

/// A small cursor over ASCII input.
struct Cur<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cur<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    /// Reads 1..=max digits; returns (value, count).
    fn num(&mut self, max: usize) -> Option<(i64, usize)> {
        let start = self.i;
        let mut v: i64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            if self.i - start == max {
                return None;
            }
            v = v * 10 + i64::from(d - b'0');
            self.i += 1;
        }
        (self.i > start).then_some((v, self.i - start))
    }
    fn skip_spaces(&mut self) -> bool {
        let start = self.i;
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
        self.i > start
    }
    fn rest_is_ci(&self, w: &[u8]) -> bool {
        self.s[self.i..].eq_ignore_ascii_case(w)
    }
}

const BAD_DATE: Reason = "not a date in ISO format (YYYY-MM-DD)";
const BAD_TIME: Reason = "not a time in ISO format (HH:MM:SS)";
const BAD_TS: Reason = "not a timestamp in ISO format (YYYY-MM-DD HH:MM:SS)";
const RANGE: Reason = "date/time value out of range";

/// Parses `Y+-MM-DD` or `YYYYMMDD` (year as written, BC applied later).
fn parse_ymd(c: &mut Cur) -> Result<(i64, u32, u32), Reason> {
    let start = c.i;
    let (y, ylen) = c.num(9).ok_or(BAD_DATE)?;
    let (y, m, d) = if c.eat(b'-') {
        let (m, _) = c.num(2).ok_or(BAD_DATE)?;
        if !c.eat(b'-') {
            return Err(BAD_DATE);
        }
        let (d, _) = c.num(2).ok_or(BAD_DATE)?;
        (y, m, d)
    } else if ylen == 8 {
        let s = &c.s[start..start + 8];
        let n = |a: usize, b: usize| {
            s[a..b]
                .iter()
                .fold(0i64, |v, d| v * 10 + i64::from(d - b'0'))
        };
        (n(0, 4), n(4, 6), n(6, 8))
    } else {
        return Err(BAD_DATE);
    };
    if !(1..=12).contains(&m) || y == 0 {
        return Err(RANGE);
    }
    let (m, d) = (m as u32, d as u32);
    if d == 0 || i64::from(d) > 31 {
        return Err(RANGE);
    }
    Ok((y, m, d))
}

/// Parses `HH:MM[:SS[.frac]]` into microseconds since midnight (may be
/// exactly 24:00:00, and `:60` seconds carry like PostgreSQL).
fn parse_hms(c: &mut Cur) -> Result<i64, Reason> {
    let (h, _) = c.num(2).ok_or(BAD_TIME)?;
    if !c.eat(b':') {
        return Err(BAD_TIME);
    }
    let (mi, mlen) = c.num(2).ok_or(BAD_TIME)?;
    if mlen != 2 {
        return Err(BAD_TIME);
    }
    let (mut s, mut us) = (0, 0);
    if c.eat(b':') {
        let (sv, slen) = c.num(2).ok_or(BAD_TIME)?;
        if slen != 2 {
            return Err(BAD_TIME);
        }
        s = sv;
        if c.eat(b'.') {
            let start = c.i;
            while matches!(c.peek(), Some(b'0'..=b'9')) {
                c.i += 1;
            }
            if c.i == start {
                return Err(BAD_TIME);
            }
            us = fraction_to_micros(&c.s[start..c.i]);
        }
    }
    if h > 24 || mi > 59 || s > 60 {
        return Err(RANGE);
    }
    let total = ((h * 60 + mi) * 60 + s) * USECS_PER_SEC + us;
    if total > USECS_PER_DAY || (h == 24 && total != USECS_PER_DAY) {
        return Err(RANGE);
    }
    Ok(total)
}

/// Rounds fractional-second digits to microseconds exactly as PostgreSQL's
/// `ParseFractionalSecond` does: `rint(strtod("0.ddd") * 1e6)`, so a value
/// like `.1688905` rounds the same way on both sides (ties to even on the
/// double, not on the decimal digits).
fn fraction_to_micros(digits: &[u8]) -> i64 {
    let mut buf = [b'0'; 64];
    buf[1] = b'.';
    let n = digits.len().min(buf.len() - 2);
    buf[2..2 + n].copy_from_slice(&digits[..n]);
    let frac: f64 = std::str::from_utf8(&buf[..2 + n])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    (frac * 1_000_000.0).round_ties_even() as i64
}

/// Parses an optional zone offset; returns seconds east of UTC.
fn parse_offset(c: &mut Cur) -> Result<Option<i64>, Reason> {
    let save = c.i;
    c.skip_spaces();
    match c.peek() {
        Some(b'Z' | b'z') => {
            c.i += 1;
            Ok(Some(0))
        }
        Some(b'U' | b'u')
            if c.s[c.i..].len() >= 3 && c.s[c.i..c.i + 3].eq_ignore_ascii_case(b"utc") =>
        {
            c.i += 3;
            Ok(Some(0))
        }
        Some(sign @ (b'+' | b'-')) => {
            c.i += 1;
            let (h, hlen) = c.num(4).ok_or(BAD_TS)?;
            let (h, mut m, mut s) = if hlen == 4 {
                (h / 100, h % 100, 0)
            } else if hlen <= 2 {
                (h, 0, 0)
            } else {
                return Err(BAD_TS);
            };
            if c.eat(b':') {
                m = c.num(2).ok_or(BAD_TS)?.0;
                if c.eat(b':') {
                    s = c.num(2).ok_or(BAD_TS)?.0;
                }
            }
            if h > 15 || m > 59 || s > 59 {
                return Err("time zone offset out of range");
            }
            let secs = h * 3600 + m * 60 + s;
            Ok(Some(if sign == b'-' { -secs } else { secs }))
        }
        _ => {
            c.i = save;
            Ok(None)
        }
    }
}

/// Parses an optional trailing ` BC` / ` AD`; returns whether it was BC.
fn parse_era(c: &mut Cur) -> bool {
    let save = c.i;
    c.skip_spaces();
    if c.rest_is_ci(b"bc") {
        c.i += 2;
        return true;
    }
    if c.rest_is_ci(b"ad") {
        c.i += 2;
        return false;
    }
    c.i = save;
    false
}

/// Converts an as-written year (with era) to a proleptic day number,
/// checking the day of month.
fn pg_day(y: i64, m: u32, d: u32, bc: bool) -> Result<i64, Reason> {
    let y = if bc { 1 - y } else { y };
    if d > days_in_month(y, m) {
        return Err(RANGE);
    }
    Ok(days_from_civil(y, m, d) - PG_EPOCH_DAYS)
}

enum Special {
    PosInf,
    NegInf,
    Epoch,
}

fn special_word(s: &[u8]) -> Option<Special> {
    let w = |x: &[u8]| s.eq_ignore_ascii_case(x);
    if w(b"infinity") || w(b"+infinity") {
        Some(Special::PosInf)
    } else if w(b"-infinity") {
        Some(Special::NegInf)
    } else if w(b"epoch") {
        Some(Special::Epoch)
    } else {
        None
    }
}

fn date_from_text(input: &[u8]) -> Result<i32, Reason> {
    let s = trim_ws(input);
    match special_word(s) {
        Some(Special::PosInf) => return Ok(i32::MAX),
        Some(Special::NegInf) => return Ok(i32::MIN),
        Some(Special::Epoch) => return Ok(-(PG_EPOCH_DAYS as i32)),
        None => {}
    }
    let mut c = Cur { s, i: 0 };
    let (y, m, d) = parse_ymd(&mut c)?;
    let bc = parse_era(&mut c);
    if !c.at_end() {
        return Err(BAD_DATE);
    }
    let day = pg_day(y, m, d, bc)?;
    if day < min_pg_day() || day > max_date_day() {
        return Err(RANGE);
    }
    i32::try_from(day).map_err(|_| RANGE)
}

pub(super) fn canon_date<B: OutBuf + ?Sized>(
    format: Format,
    input: &[u8],
    out: &mut B,
) -> Result<(), Reason> {
    let day = match format {
        Format::Text => date_from_text(input)?,
        Format::Binary => {
            let raw: [u8; 4] = input
                .try_into()
                .map_err(|_| "binary date must be 4 bytes")?;
            let d = i32::from_be_bytes(raw);
            if d != i32::MAX
                && d != i32::MIN
                && !(min_pg_day()..=max_date_day()).contains(&d.into())
            {
                return Err(RANGE);
            }
            d
        }
    };
    out.extend_from_slice(&day.to_be_bytes());
    Ok(())
}

fn time_from_text(input: &[u8]) -> Result<i64, Reason> {
    let s = trim_ws(input);
    let mut c = Cur { s, i: 0 };
    c.eat(b'T');
    let t = parse_hms(&mut c)?;
    if !c.at_end() {
        return Err(BAD_TIME);
    }
    Ok(t)
}

pub(super) fn canon_time<B: OutBuf + ?Sized>(
    format: Format,
    input: &[u8],
    out: &mut B,
) -> Result<(), Reason> {
    let t = match format {
        Format::Text => time_from_text(input)?,
        Format::Binary => {
            let raw: [u8; 8] = input
                .try_into()
                .map_err(|_| "binary time must be 8 bytes")?;
            let t = i64::from_be_bytes(raw);
            if !(0..=USECS_PER_DAY).contains(&t) {
                return Err(RANGE);
            }
            t
        }
    };
    out.extend_from_slice(&t.to_be_bytes());
    Ok(())
}

fn timestamp_from_text(input: &[u8], with_tz: bool) -> Result<i64, Reason> {
    let s = trim_ws(input);
    match special_word(s) {
        Some(Special::PosInf) => return Ok(i64::MAX),
        Some(Special::NegInf) => return Ok(i64::MIN),
        Some(Special::Epoch) => return Ok(-PG_EPOCH_DAYS * USECS_PER_DAY),
        None => {}
    }
    let mut c = Cur { s, i: 0 };
    let (y, m, d) = parse_ymd(&mut c).map_err(|e| if e == BAD_DATE { BAD_TS } else { e })?;
    let mut time = 0;
    let mut offset = None;
    let save = c.i;
    let sep = c.eat(b'T') || c.eat(b't') || c.skip_spaces();
    if sep && matches!(c.peek(), Some(b'0'..=b'9')) {
        time = parse_hms(&mut c).map_err(|e| if e == BAD_TIME { BAD_TS } else { e })?;
        offset = parse_offset(&mut c)?;
    } else {
        c.i = save;
    }
    let bc = parse_era(&mut c);
    if !c.at_end() {
        return Err(BAD_TS);
    }
    let day = pg_day(y, m, d, bc)?;
    let mut ts = day
        .checked_mul(USECS_PER_DAY)
        .and_then(|v| v.checked_add(time))
        .ok_or(RANGE)?;
    // timestamp (without time zone) ignores a given offset, as PostgreSQL does.
    if with_tz {
        if let Some(off) = offset {
            ts = ts.checked_sub(off * USECS_PER_SEC).ok_or(RANGE)?;
        }
    }
    if ts < min_pg_day() * USECS_PER_DAY || ts >= end_timestamp() {
        return Err(RANGE);
    }
    Ok(ts)
}

pub(super) fn canon_timestamp<B: OutBuf + ?Sized>(
    format: Format,
    input: &[u8],
    out: &mut B,
    with_tz: bool,
) -> Result<(), Reason> {
    let ts = match format {
        Format::Text => timestamp_from_text(input, with_tz)?,
        Format::Binary => {
            let raw: [u8; 8] = input
                .try_into()
                .map_err(|_| "binary timestamp must be 8 bytes")?;
            let t = i64::from_be_bytes(raw);
            if t != i64::MAX
                && t != i64::MIN
                && (t < min_pg_day() * USECS_PER_DAY || t >= end_timestamp())
            {
                return Err(RANGE);
            }
            t
        }
    };
    out.extend_from_slice(&ts.to_be_bytes());
    Ok(())
}

// ---- rendering ------------------------------------------------------------

/// Writes `YYYY-MM-DD` (year at least 4 digits, BC years as PostgreSQL
/// numbers them); returns whether the date is BC.
fn push_ymd<B: OutBuf + ?Sized>(out: &mut B, day: i64) -> bool {
    let (y, m, d) = civil_from_days(day + PG_EPOCH_DAYS);
    let (year, bc) = if y <= 0 { (1 - y, true) } else { (y, false) };
    push_padded(out, year as u64, 4);
    out.push(b'-');
    push_padded(out, m.into(), 2);
    out.push(b'-');
    push_padded(out, d.into(), 2);
    bc
}

/// Writes `HH:MM:SS[.ffffff]` with trailing fractional zeros removed.
fn push_hms<B: OutBuf + ?Sized>(out: &mut B, t: i64) {
    let secs = t / USECS_PER_SEC;
    let mut us = t % USECS_PER_SEC;
    push_padded(out, (secs / 3600) as u64, 2);
    out.push(b':');
    push_padded(out, (secs / 60 % 60) as u64, 2);
    out.push(b':');
    push_padded(out, (secs % 60) as u64, 2);
    if us != 0 {
        let mut width = 6;
        while us % 10 == 0 {
            us /= 10;
            width -= 1;
        }
        out.push(b'.');
        push_padded(out, us as u64, width);
    }
}

pub(super) fn render_date<B: OutBuf + ?Sized>(
    format: Format,
    out: &mut B,
    start: usize,
) -> Result<(), ()> {
    let raw: [u8; 4] = take_fixed(out, start)?;
    let d = i32::from_be_bytes(raw);
    match format {
        Format::Binary => out.extend_from_slice(&raw),
        Format::Text if d == i32::MAX => out.extend_from_slice(b"infinity"),
        Format::Text if d == i32::MIN => out.extend_from_slice(b"-infinity"),
        Format::Text => {
            if push_ymd(out, d.into()) {
                out.extend_from_slice(b" BC");
            }
        }
    }
    Ok(())
}

pub(super) fn render_time<B: OutBuf + ?Sized>(
    format: Format,
    out: &mut B,
    start: usize,
) -> Result<(), ()> {
    let raw: [u8; 8] = take_fixed(out, start)?;
    let t = i64::from_be_bytes(raw);
    if !(0..=USECS_PER_DAY).contains(&t) {
        return Err(());
    }
    match format {
        Format::Binary => out.extend_from_slice(&raw),
        Format::Text => push_hms(out, t),
    }
    Ok(())
}

pub(super) fn render_timestamp<B: OutBuf + ?Sized>(
    format: Format,
    out: &mut B,
    start: usize,
    with_tz: bool,
) -> Result<(), ()> {
    let raw: [u8; 8] = take_fixed(out, start)?;
    let ts = i64::from_be_bytes(raw);
    match format {
        Format::Binary => out.extend_from_slice(&raw),
        Format::Text if ts == i64::MAX => out.extend_from_slice(b"infinity"),
        Format::Text if ts == i64::MIN => out.extend_from_slice(b"-infinity"),
        Format::Text => {
            let day = ts.div_euclid(USECS_PER_DAY);
            let time = ts.rem_euclid(USECS_PER_DAY);
            let bc = push_ymd(out, day);
            out.push(b' ');
            push_hms(out, time);
            if with_tz {
                out.extend_from_slice(b"+00");
            }
            if bc {
                out.extend_from_slice(b" BC");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
