//! The one error analysis returns: a refusal the client sees.
//!
//! Messages start with `pgveil: `, name the table or column, and say what
//! to do. They never quote a literal or the statement text (principle 4).

/// Why a statement is refused, as an ErrorResponse the session sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// SQLSTATE, `0A000` for an operation pgveil cannot run on ciphertext.
    pub sqlstate: &'static str,
    /// Human-readable, starts with `pgveil: `.
    pub message: String,
}

/// Feature not supported on an encrypted column.
pub const UNSUPPORTED: &str = "0A000";

impl Refusal {
    /// A 0A000 refusal with `message` prefixed by `pgveil: `.
    pub fn unsupported(message: impl AsRef<str>) -> Self {
        Refusal {
            sqlstate: UNSUPPORTED,
            message: format!("pgveil: {}", message.as_ref()),
        }
    }

    /// `what` (e.g. "LIKE") is not possible over encrypted `column`.
    pub fn on_column(column: &str, what: &str, hint: &str) -> Self {
        Self::unsupported(format!(
            "{what} on encrypted column {column} is not supported: the database only holds ciphertext; {hint}"
        ))
    }

    /// A statement that names a protected table but does not parse.
    /// `table` is `protected table schema.name` or `a protected table`.
    pub fn unparsable(table: &str) -> Self {
        Self::unsupported(format!(
            "statement mentions {table} but could not be parsed; \
             rewrite it in plain SQL (literals or $n parameters) or send it without pgveil's protected tables"
        ))
    }

    /// The text position of something pgveil must rewrite is unknown.
    pub fn unlocated(column: &str) -> Self {
        Self::unsupported(format!(
            "cannot locate a value for encrypted column {column} in the statement text; \
             write it as a plain literal or a $n parameter"
        ))
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.sqlstate)
    }
}

impl std::error::Error for Refusal {}
