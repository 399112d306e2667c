//! The `year` mask: a date or timestamp truncated to 1 January of its year.
//!
//! Input is the text pgveil's decryption renders (PostgreSQL's `DateStyle =
//! ISO` output): `YYYY-MM-DD`, then for timestamps ` HH:MM:SS[.ffffff]`,
//! for timestamptz an offset (pgveil prints `+00`), and ` BC` for dates
//! before year 1. The year keeps its digits as written (at least 4, more
//! after year 9999), the date becomes `-01-01`, the time `00:00:00`
//! (fractional seconds dropped), and the offset and the `BC` marker are
//! copied, so the output is a valid value of the same type. `infinity` and
//! `-infinity` pass through: they reveal nothing.
//!
//! A timestamptz is truncated in the offset it is printed in (UTC): a
//! driver that converts to a zone west of UTC shows 31 December of the year
//! before.

use super::MaskError;

/// Writes the year-truncated form of the date/timestamp text `value`.
///
/// Validates the whole value before writing anything; on error `out` is
/// unchanged.
pub(super) fn year(value: &str, out: &mut String) -> Result<(), MaskError> {
    if value == "infinity" || value == "-infinity" {
        out.push_str(value);
        return Ok(());
    }
    let parts = parse(value.as_bytes()).ok_or(MaskError::NotADate)?;
    out.push_str(&value[..parts.year_end]);
    out.push_str("-01-01");
    if let Some(sep) = parts.time_sep {
        out.push(sep);
        out.push_str("00:00:00");
    }
    // Offset and era, both ASCII and copied as written.
    out.push_str(&value[parts.time_end..]);
    Ok(())
}

/// Where the pieces of a date/timestamp text are.
struct Parts {
    /// End of the year digits.
    year_end: usize,
    /// `' '` or `'T'` when a time of day follows the date.
    time_sep: Option<char>,
    /// End of the date and time; the offset and era follow.
    time_end: usize,
}

/// A byte cursor over ASCII date text; any non-ASCII byte fails to match.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.i += usize::from(hit);
        hit
    }

    fn eat_str(&mut self, s: &[u8]) -> bool {
        let hit = self.b[self.i..].starts_with(s);
        if hit {
            self.i += s.len();
        }
        hit
    }

    /// Consumes a run of ASCII digits and returns its length.
    fn digits(&mut self) -> usize {
        let n = self.b[self.i..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        self.i += n;
        n
    }

    /// Consumes exactly two digits whose value lies in `range`.
    fn two(&mut self, range: std::ops::RangeInclusive<u8>) -> Option<()> {
        match self.b.get(self.i..self.i + 2) {
            Some(&[a, b]) if a.is_ascii_digit() && b.is_ascii_digit() => {
                self.i += 2;
                range
                    .contains(&((a - b'0') * 10 + (b - b'0')))
                    .then_some(())
            }
            _ => None,
        }
    }
}

fn parse(b: &[u8]) -> Option<Parts> {
    let mut c = Cursor { b, i: 0 };
    if c.digits() < 4 {
        return None;
    }
    let year_end = c.i;
    c.eat(b'-').then_some(())?;
    c.two(1..=12)?;
    c.eat(b'-').then_some(())?;
    c.two(1..=31)?;
    let mut time_sep = None;
    let sep = c.peek();
    if matches!(sep, Some(b' ' | b'T')) && b.get(c.i + 1).is_some_and(u8::is_ascii_digit) {
        c.i += 1;
        time_sep = sep.map(char::from);
        c.two(0..=24)?;
        c.eat(b':').then_some(())?;
        c.two(0..=59)?;
        c.eat(b':').then_some(())?;
        c.two(0..=60)?;
        if c.eat(b'.') && c.digits() == 0 {
            return None;
        }
    }
    let time_end = c.i;
    if time_sep.is_some() && !c.eat(b'Z') && (c.eat(b'+') || c.eat(b'-')) {
        c.two(0..=99)?;
        for _ in 0..2 {
            if c.eat(b':') {
                c.two(0..=59)?;
            }
        }
    }
    let _era = c.eat_str(b" BC") || c.eat_str(b" AD");
    (c.i == b.len()).then_some(Parts {
        year_end,
        time_sep,
        time_end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(value: &str) -> Result<String, MaskError> {
        let mut out = String::from("x");
        year(value, &mut out).map(|()| out[1..].to_owned())
    }

    #[test]
    fn dates() {
        assert_eq!(masked("1990-05-17").unwrap(), "1990-01-01");
        assert_eq!(masked("2000-01-01").unwrap(), "2000-01-01");
        assert_eq!(masked("0044-03-15 BC").unwrap(), "0044-01-01 BC");
        assert_eq!(masked("12345-12-31").unwrap(), "12345-01-01");
        assert_eq!(masked("infinity").unwrap(), "infinity");
        assert_eq!(masked("-infinity").unwrap(), "-infinity");
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            masked("1990-05-17 10:11:12").unwrap(),
            "1990-01-01 00:00:00"
        );
        assert_eq!(
            masked("1990-05-17 10:11:12.345678").unwrap(),
            "1990-01-01 00:00:00"
        );
        assert_eq!(
            masked("1990-05-17T10:11:12").unwrap(),
            "1990-01-01T00:00:00"
        );
        assert_eq!(
            masked("0044-03-15 10:11:12 BC").unwrap(),
            "0044-01-01 00:00:00 BC"
        );
    }

    #[test]
    fn timestamptz_keeps_offset() {
        assert_eq!(
            masked("1990-05-17 10:11:12+00").unwrap(),
            "1990-01-01 00:00:00+00"
        );
        assert_eq!(
            masked("1990-05-17 10:11:12.5-05:30").unwrap(),
            "1990-01-01 00:00:00-05:30"
        );
        assert_eq!(
            masked("0044-03-15 00:00:00+00:53:28 BC").unwrap(),
            "0044-01-01 00:00:00+00:53:28 BC"
        );
        assert_eq!(
            masked("1990-05-17 10:11:12Z").unwrap(),
            "1990-01-01 00:00:00Z"
        );
    }

    #[test]
    fn refuses_what_is_not_a_date() {
        for bad in [
            "",
            "1",
            "199",
            "90-05-17",
            "1990",
            "1990-05",
            "1990-13-01",
            "1990-05-32",
            "1990-5-17",
            "1990-05-17 ",
            "1990-05-17 10:11",
            "1990-05-17 10:11:12.",
            "1990-05-17 10:11:12 +00",
            "1990-05-17+00",
            "1990-05-17 BCE",
            "17/05/1990",
            "一九九〇-05-17",
            "1990-05-17 10:11:12+0０",
            "13812345678",
            "now",
        ] {
            assert_eq!(masked(bad), Err(MaskError::NotADate), "{bad:?}");
        }
    }

    #[test]
    fn nothing_written_on_error() {
        let mut out = String::from("kept");
        assert!(year("1990-05-17 99:00:00", &mut out).is_err());
        assert_eq!(out, "kept");
    }
}
