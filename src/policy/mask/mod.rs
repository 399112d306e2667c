//! Masks: what a role that may not see a protected value sees instead.
//!
//! `pgveil check` parses each `mask = "..."` of the policy into a
//! [`MaskSpec`] and rejects an unknown mask, or one whose output would not
//! be a valid value of the column's type (`phone` on an `int8`), before
//! anything runs. On the read path, [`MaskSpec::apply`] turns a decrypted
//! value (in PostgreSQL text format) into what the role is shown.
//!
//! Each mask is a pure function of the value (and, for `pseudonym`, of the
//! column's [`PseudonymKey`]); the rules, and what they do with empty,
//! short and multi-byte values, are documented on the functions of the
//! private `chars`, `date` and `pseudonym` modules. Across all of them:
//!
//! * an empty value gives an empty value (there is nothing to hide, and
//!   `***` would suggest a value that is not there), except with `fixed`
//!   (its text), `null` (NULL) and `year` (an error: an empty string is not
//!   a date);
//! * the character masks (`partial`, `phone`, `email`, `cn_id`,
//!   `bank_card`, `name`, `address`) never show a value whole: short values
//!   show fewer characters, down to none, and only characters that merely
//!   format a value (a number's separators, a name's whitespace, an email's
//!   domain) may all be kept;
//! * the character masks keep the character
//!   count of the value (with a one-character `partial` fill), so a
//!   `varchar(n)` column still accepts the masked value.

mod chars;
mod date;
mod pseudonym;

pub use pseudonym::PseudonymKey;

use crate::crypto::LogicalType;

/// Why a mask could not be applied. Messages never contain the value: they
/// end up in logs and in errors sent to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// The `pseudonym` mask needs its column's key and the caller had none.
    #[error(
        "the pseudonym mask needs the column's pseudonym key and none was provided; \
         this is a pgveil bug, please report it"
    )]
    MissingPseudonymKey,
    /// The `year` mask met a value that is not date or timestamp text.
    #[error(
        "the year mask applies to date, timestamp and timestamptz values and this value is \
         none of them; check the column's type in the policy (pgveil check)"
    )]
    NotADate,
}

/// A parsed `mask = "..."` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskSpec {
    /// Keep `first` and `last` characters, replace the rest with `fill`
    /// (every character when the value is not longer than `first + last`).
    Partial {
        /// Characters kept at the start.
        first: usize,
        /// Characters kept at the end.
        last: usize,
        /// Replacement character(s) for each hidden character.
        fill: String,
    },
    /// `138****5678`; at least 4 digits hidden, all of a 7-digit value.
    Phone,
    /// `z********@example.com`.
    Email,
    /// 18-character resident ID: first 6 and last 4 kept (at most half of
    /// any other length).
    CnId,
    /// Card number: first 6 and last 4 kept, never more, and at least 6
    /// digits hidden.
    BankCard,
    /// `张**`, `A**** S****`.
    Name,
    /// First 6 characters kept (at most half of a short address).
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

    /// Applies the mask to a decrypted value given in PostgreSQL text
    /// format, appending the masked value, in text format, to `out` (a
    /// per-connection buffer, so masking a row allocates nothing once it has
    /// grown).
    ///
    /// Returns `Ok(false)` when the result is SQL NULL (the `null` mask;
    /// nothing is appended) and `Ok(true)` otherwise. `pseudonym_key` is the
    /// column's key, needed only by `pseudonym`. On error `out` is left as
    /// it was.
    pub fn apply(
        &self,
        value: &str,
        pseudonym_key: Option<&PseudonymKey>,
        out: &mut String,
    ) -> Result<bool, MaskError> {
        match self {
            MaskSpec::Null => return Ok(false),
            MaskSpec::Fixed(text) => out.push_str(text),
            // Checked before the empty shortcut: a missing key is a
            // configuration fault whatever the value.
            MaskSpec::Pseudonym => {
                let key = pseudonym_key.ok_or(MaskError::MissingPseudonymKey)?;
                if !value.is_empty() {
                    key.token(value, out);
                }
            }
            MaskSpec::Year => date::year(value, out)?,
            _ if value.is_empty() => {}
            MaskSpec::Partial { first, last, fill } => {
                chars::partial(value, *first, *last, fill, out)
            }
            MaskSpec::Phone => chars::phone(value, out),
            MaskSpec::Email => chars::email(value, out),
            MaskSpec::CnId => chars::cn_id(value, out),
            MaskSpec::BankCard => chars::bank_card(value, out),
            MaskSpec::Name => chars::name(value, out),
            MaskSpec::Address => chars::address(value, out),
        }
        Ok(true)
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
mod tests;
