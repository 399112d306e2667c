//! Mask names as written in policies, and which logical types each fits.
//!
//! The masks themselves (pure functions over a decrypted value) belong to
//! the read path; this module only parses the spec so that `pgveil check`
//! can reject an unknown mask, or one whose output would not be a valid
//! value of the column's type (`phone` on an `int8`), before anything runs.

use crate::crypto::LogicalType;

/// A parsed `mask = "..."` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskSpec {
    /// Keep `first` and `last` characters, replace the rest with `fill`.
    Partial {
        /// Characters kept at the start.
        first: usize,
        /// Characters kept at the end.
        last: usize,
        /// Replacement character(s) for each hidden character.
        fill: String,
    },
    /// `138****5678`.
    Phone,
    /// `z********@example.com`.
    Email,
    /// 18-character resident ID: first 6 and last 4 kept.
    CnId,
    /// Card number: first 6 and last 4 kept, never more.
    BankCard,
    /// `张**`, `A**** S****`.
    Name,
    /// First 6 characters kept.
    Address,
    /// Keyed HMAC token, stable per column.
    Pseudonym,
    /// Dates truncated to 1 January of their year.
    Year,
    /// NULL.
    Null,
    /// A fixed replacement text.
    Fixed(String),
}

impl MaskSpec {
    /// Parses a mask spec: a name, `partial(first, last, 'fill')` or
    /// `fixed('text')`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let simple = match s {
            "phone" => Some(MaskSpec::Phone),
            "email" => Some(MaskSpec::Email),
            "cn_id" => Some(MaskSpec::CnId),
            "bank_card" => Some(MaskSpec::BankCard),
            "name" => Some(MaskSpec::Name),
            "address" => Some(MaskSpec::Address),
            "pseudonym" => Some(MaskSpec::Pseudonym),
            "year" => Some(MaskSpec::Year),
            "null" => Some(MaskSpec::Null),
            _ => None,
        };
        if let Some(m) = simple {
            return Ok(m);
        }
        let (name, args) = s
            .strip_suffix(')')
            .and_then(|s| s.split_once('('))
            .ok_or_else(|| unknown(s))?;
        let args: Vec<&str> = split_args(args);
        match (name.trim(), args.as_slice()) {
            ("partial", [first, last, fill]) => Ok(MaskSpec::Partial {
                first: first
                    .trim()
                    .parse()
                    .map_err(|_| format!("partial: {first:?} is not a count"))?,
                last: last
                    .trim()
                    .parse()
                    .map_err(|_| format!("partial: {last:?} is not a count"))?,
                fill: quoted(fill)?,
            }),
            ("partial", _) => Err("partial takes (first, last, 'fill')".into()),
            ("fixed", [text]) => Ok(MaskSpec::Fixed(quoted(text)?)),
            ("fixed", _) => Err("fixed takes one quoted text".into()),
            _ => Err(unknown(s)),
        }
    }

    /// Whether the mask's output is a valid value of `ty`, so drivers that
    /// decode the column by its logical type still can.
    pub fn fits(&self, ty: LogicalType) -> bool {
        let textual = matches!(
            ty,
            LogicalType::Text | LogicalType::Varchar | LogicalType::Char
        );
        match self {
            MaskSpec::Null => true,
            MaskSpec::Year => matches!(
                ty,
                LogicalType::Date | LogicalType::Timestamp | LogicalType::Timestamptz
            ),
            _ => textual,
        }
    }
}

fn unknown(s: &str) -> String {
    format!(
        "unknown mask {s:?}; known: partial(first, last, 'fill'), phone, email, cn_id, \
         bank_card, name, address, pseudonym, year, null, fixed('text')"
    )
}

fn split_args(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quote = false;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => in_quote = !in_quote,
            ',' if !in_quote => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn quoted(s: &str) -> Result<String, String> {
    let s = s.trim();
    s.strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .map(|s| s.replace("''", "'"))
        .ok_or_else(|| format!("{s:?} must be in single quotes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(MaskSpec::parse("phone"), Ok(MaskSpec::Phone));
        assert_eq!(
            MaskSpec::parse("partial(2, 1, '*')"),
            Ok(MaskSpec::Partial {
                first: 2,
                last: 1,
                fill: "*".into()
            })
        );
        assert_eq!(
            MaskSpec::parse("fixed('***')"),
            Ok(MaskSpec::Fixed("***".into()))
        );
        assert_eq!(
            MaskSpec::parse("fixed('a,b')"),
            Ok(MaskSpec::Fixed("a,b".into()))
        );
        assert!(MaskSpec::parse("phon")
            .unwrap_err()
            .contains("unknown mask"));
        assert!(MaskSpec::parse("partial(1, 2)").is_err());
        assert!(MaskSpec::parse("partial(x, 2, '*')").is_err());
        assert!(MaskSpec::parse("fixed(***)").is_err());
    }

    #[test]
    fn type_fit() {
        assert!(MaskSpec::Phone.fits(LogicalType::Text));
        assert!(!MaskSpec::Phone.fits(LogicalType::Int8));
        assert!(MaskSpec::Year.fits(LogicalType::Date));
        assert!(!MaskSpec::Year.fits(LogicalType::Text));
        assert!(MaskSpec::Null.fits(LogicalType::Int4));
    }
}
