//! Names shared by the whole crypto core: the logical type of a protected
//! column, the wire format of a value, and the encryption mode.
//!
//! The database stores every protected column as `bytea`; the *logical* type
//! is what clients see (principle 2, "transparent to drivers"), so the proxy
//! needs its PostgreSQL OID for RowDescription and ParameterDescription.

use std::fmt;
use std::str::FromStr;

use super::error::CryptoError;

/// The type a protected column has for clients.
///
/// It decides how a value is validated and canonicalized before encryption
/// and how it is printed after decryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogicalType {
    /// `text`.
    Text,
    /// `varchar` / `character varying` (length modifier not enforced).
    Varchar,
    /// `char` / `bpchar` / `character` (trailing spaces are not significant).
    Char,
    /// `int2` / `smallint`.
    Int2,
    /// `int4` / `integer`.
    Int4,
    /// `int8` / `bigint`.
    Int8,
    /// `numeric` / `decimal`.
    Numeric,
    /// `float4` / `real`.
    Float4,
    /// `float8` / `double precision`.
    Float8,
    /// `bool` / `boolean`.
    Bool,
    /// `date`.
    Date,
    /// `time` (without time zone).
    Time,
    /// `timestamp` (without time zone).
    Timestamp,
    /// `timestamptz` (with time zone; printed in UTC).
    Timestamptz,
    /// `uuid`.
    Uuid,
    /// `json` (kept verbatim).
    Json,
    /// `jsonb` (kept as given; validated).
    Jsonb,
    /// `bytea`.
    Bytea,
}

impl LogicalType {
    /// Every logical type, so tests and tools can iterate over them.
    pub const ALL: [LogicalType; 18] = [
        LogicalType::Text,
        LogicalType::Varchar,
        LogicalType::Char,
        LogicalType::Int2,
        LogicalType::Int4,
        LogicalType::Int8,
        LogicalType::Numeric,
        LogicalType::Float4,
        LogicalType::Float8,
        LogicalType::Bool,
        LogicalType::Date,
        LogicalType::Time,
        LogicalType::Timestamp,
        LogicalType::Timestamptz,
        LogicalType::Uuid,
        LogicalType::Json,
        LogicalType::Jsonb,
        LogicalType::Bytea,
    ];

    /// The PostgreSQL type OID clients must see for this column, so their
    /// drivers decode it as the logical type and not as `bytea`.
    pub fn oid(&self) -> u32 {
        match self {
            LogicalType::Text => 25,
            LogicalType::Varchar => 1043,
            LogicalType::Char => 1042,
            LogicalType::Int2 => 21,
            LogicalType::Int4 => 23,
            LogicalType::Int8 => 20,
            LogicalType::Numeric => 1700,
            LogicalType::Float4 => 700,
            LogicalType::Float8 => 701,
            LogicalType::Bool => 16,
            LogicalType::Date => 1082,
            LogicalType::Time => 1083,
            LogicalType::Timestamp => 1114,
            LogicalType::Timestamptz => 1184,
            LogicalType::Uuid => 2950,
            LogicalType::Json => 114,
            LogicalType::Jsonb => 3802,
            LogicalType::Bytea => 17,
        }
    }

    /// The `typlen` PostgreSQL reports in RowDescription (-1 = variable).
    pub fn typlen(&self) -> i16 {
        match self {
            LogicalType::Int2 => 2,
            LogicalType::Int4 | LogicalType::Float4 | LogicalType::Date => 4,
            LogicalType::Int8
            | LogicalType::Float8
            | LogicalType::Time
            | LogicalType::Timestamp
            | LogicalType::Timestamptz => 8,
            LogicalType::Bool => 1,
            LogicalType::Uuid => 16,
            _ => -1,
        }
    }

    /// The canonical PostgreSQL name, used in messages and the keyring docs.
    pub fn name(&self) -> &'static str {
        match self {
            LogicalType::Text => "text",
            LogicalType::Varchar => "varchar",
            LogicalType::Char => "char",
            LogicalType::Int2 => "int2",
            LogicalType::Int4 => "int4",
            LogicalType::Int8 => "int8",
            LogicalType::Numeric => "numeric",
            LogicalType::Float4 => "float4",
            LogicalType::Float8 => "float8",
            LogicalType::Bool => "bool",
            LogicalType::Date => "date",
            LogicalType::Time => "time",
            LogicalType::Timestamp => "timestamp",
            LogicalType::Timestamptz => "timestamptz",
            LogicalType::Uuid => "uuid",
            LogicalType::Json => "json",
            LogicalType::Jsonb => "jsonb",
            LogicalType::Bytea => "bytea",
        }
    }
}

impl fmt::Display for LogicalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LogicalType {
    type Err = CryptoError;

    /// Accepts the names PostgreSQL accepts (`int4`, `integer`, `character
    /// varying`, …), case-insensitively, so a config can copy the column
    /// type from `\d`. A type modifier such as `(64)` or `(10,2)` is
    /// accepted and ignored: the stored column is `bytea`, so there is
    /// nothing that could enforce it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let base = match s.find('(') {
            Some(i) if s.trim_end().ends_with(')') => &s[..i],
            Some(_) => s,
            None => s,
        };
        let mut words = base.split_ascii_whitespace();
        let mut norm = String::with_capacity(base.len());
        if let Some(w) = words.next() {
            norm.push_str(&w.to_ascii_lowercase());
        }
        for w in words {
            norm.push(' ');
            norm.push_str(&w.to_ascii_lowercase());
        }
        let ty = match norm.as_str() {
            "text" => LogicalType::Text,
            "varchar" | "character varying" => LogicalType::Varchar,
            "char" | "bpchar" | "character" => LogicalType::Char,
            "int2" | "smallint" => LogicalType::Int2,
            "int4" | "int" | "integer" => LogicalType::Int4,
            "int8" | "bigint" => LogicalType::Int8,
            "numeric" | "decimal" => LogicalType::Numeric,
            "float4" | "real" => LogicalType::Float4,
            "float8" | "double precision" | "float" => LogicalType::Float8,
            "bool" | "boolean" => LogicalType::Bool,
            "date" => LogicalType::Date,
            "time" | "time without time zone" => LogicalType::Time,
            "timestamp" | "timestamp without time zone" => LogicalType::Timestamp,
            "timestamptz" | "timestamp with time zone" => LogicalType::Timestamptz,
            "uuid" => LogicalType::Uuid,
            "json" => LogicalType::Json,
            "jsonb" => LogicalType::Jsonb,
            "bytea" => LogicalType::Bytea,
            _ => {
                return Err(CryptoError::UnknownType {
                    name: s.to_string(),
                })
            }
        };
        Ok(ty)
    }
}

/// The PostgreSQL wire format of one value (format code 0 or 1).
///
/// Clients choose per parameter and per result column; the crypto core
/// accepts and produces both so the proxy never has to convert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Format code 0: the type's text representation.
    Text,
    /// Format code 1: the type's binary send/recv representation.
    Binary,
}

impl Format {
    /// Maps a protocol format code; `None` for codes other than 0 and 1,
    /// which the proxy must reject as a protocol error.
    pub fn from_code(code: i16) -> Option<Format> {
        match code {
            0 => Some(Format::Text),
            1 => Some(Format::Binary),
            _ => None,
        }
    }

    /// The protocol format code.
    pub fn code(&self) -> i16 {
        match self {
            Format::Text => 0,
            Format::Binary => 1,
        }
    }
}

/// How a column's values are encrypted: the trade-off between hiding
/// equality and allowing `=` / `IN` / `GROUP BY` on ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Random nonce: equal values give different envelopes. The default,
    /// because it reveals nothing but the length.
    #[default]
    Randomized,
    /// Deterministic AES-256-GCM-SIV: equal values in the same column under
    /// the same key version give the same envelope.
    Searchable,
}

impl Mode {
    /// The mode byte written in the envelope header.
    ///
    /// Byte 2 is retired: it marked the pre-release searchable format (an
    /// AES-CMAC nonce with AES-GCM). It is never written again and such
    /// envelopes are refused (see `docs/FORMAT.md`).
    pub fn byte(&self) -> u8 {
        match self {
            Mode::Randomized => 1,
            Mode::Searchable => 3,
        }
    }

    /// Reads a mode byte from an envelope header; `None` for an unknown or
    /// retired one.
    pub fn from_byte(b: u8) -> Option<Mode> {
        match b {
            1 => Some(Mode::Randomized),
            3 => Some(Mode::Searchable),
            _ => None,
        }
    }
}

impl FromStr for Mode {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "randomized" => Ok(Mode::Randomized),
            "searchable" => Ok(Mode::Searchable),
            _ => Err(CryptoError::UnknownMode {
                name: s.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_parse_like_postgres() {
        assert_eq!(
            "integer".parse::<LogicalType>().ok(),
            Some(LogicalType::Int4)
        );
        assert_eq!(
            "Character  Varying(64)".parse::<LogicalType>().ok(),
            Some(LogicalType::Varchar)
        );
        assert_eq!(
            "numeric(10,2)".parse::<LogicalType>().ok(),
            Some(LogicalType::Numeric)
        );
        assert_eq!(
            "timestamp with time zone".parse::<LogicalType>().ok(),
            Some(LogicalType::Timestamptz)
        );
        assert!("money".parse::<LogicalType>().is_err());
        for t in LogicalType::ALL {
            assert_eq!(t.name().parse::<LogicalType>().ok(), Some(t));
        }
    }

    #[test]
    fn oids_match_pg_type() {
        assert_eq!(LogicalType::Text.oid(), 25);
        assert_eq!(LogicalType::Char.oid(), 1042);
        assert_eq!(LogicalType::Timestamptz.oid(), 1184);
        assert_eq!(LogicalType::Jsonb.oid(), 3802);
    }

    #[test]
    fn mode_parses() {
        assert_eq!("Searchable".parse::<Mode>().ok(), Some(Mode::Searchable));
        assert!("deterministic".parse::<Mode>().is_err());
        assert_eq!(
            Mode::from_byte(Mode::Searchable.byte()),
            Some(Mode::Searchable)
        );
        assert_eq!(Mode::from_byte(0), None);
        // The retired pre-release searchable mode is not read.
        assert_eq!(Mode::from_byte(2), None);
    }
}
