//! What analysis decides about one statement text, and how to apply it.
//!
//! A [`Plan`] is pure data: it names byte ranges of the original text and
//! the columns whose keys must be used, but holds no key and no envelope,
//! so it can be cached across connections and applied by the session with
//! the keyring at hand.

use std::ops::Range;

use super::schema::ProtectedColumn;

/// The outcome of analysing a statement text.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Touches no protected column: relay the text unchanged.
    Passthrough,
    /// Relay after applying the edits, encrypting the listed parameters.
    Rewrite(Rewrite),
    /// COPY ... FROM STDIN into a table with protected columns.
    CopyIn(CopyIn),
    /// `COPY table TO STDOUT` with protected columns: relay the statement,
    /// then decrypt and mask the COPY stream by role. `fields` marks every
    /// protected column, encrypted or not.
    CopyOut(CopyIn),
}

/// How to rewrite a statement text before relaying it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rewrite {
    /// Non-overlapping, sorted by start; byte ranges into the ORIGINAL sql.
    ///
    /// A range may be empty: that edit inserts text at its position (used to
    /// close the `ANY(` opened by an earlier edit). For two edits `a`, `b` in
    /// order, `a.range.end <= b.range.start`.
    pub edits: Vec<Edit>,
    /// Bound parameters (`$n`) that target protected columns, sorted by index.
    pub params: Vec<ParamTarget>,
    /// Full names of protected columns the statement touches (for audit),
    /// in first-seen order, without duplicates.
    pub touched: Vec<String>,
    /// For a single query: the protected column each result column is, in
    /// order (`None` for the others), or empty when unknown. PostgreSQL
    /// reports no origin for a set operation's columns (or a subquery over
    /// one); analysis can still tell that `SELECT phone … UNION ALL SELECT
    /// phone …` returns `phone`, and the session decrypts it by this.
    pub results: std::sync::Arc<[Option<ProtectedColumn>]>,
}

/// One replacement in the statement text.
#[derive(Debug, Clone, PartialEq)]
pub struct Edit {
    /// Byte range of the original text to replace (may be empty: insertion).
    pub range: Range<usize>,
    /// What replaces it.
    pub kind: EditKind,
}

/// What replaces an [`Edit`]'s range.
#[derive(Debug, Clone, PartialEq)]
pub enum EditKind {
    /// Replace the range with this text.
    Text(String),
    /// Replace with the envelope (active key version) of `value` for
    /// `column`, rendered by the caller as a bytea literal like
    /// `'\x0102..'::bytea`.
    Encrypt {
        /// The column whose key and logical type apply.
        column: ProtectedColumn,
        /// The literal's value as PostgreSQL would see it (unescaped).
        value: String,
    },
    /// Replace with a `bytea[]` expression holding the envelopes of `value`
    /// under EVERY live key version (caller renders
    /// `ARRAY['\x..'::bytea, ...]::bytea[]`), for equality matching after
    /// key rotation.
    MatchList {
        /// The searchable column whose key and logical type apply.
        column: ProtectedColumn,
        /// The literal's value as PostgreSQL would see it (unescaped).
        value: String,
    },
    /// Replace with the bytea-array form of parameter `$index`, an
    /// equality operand of a searchable column. The caller renders it by
    /// the column's live key versions: `ARRAY[$n::bytea]` for one (the
    /// usual case: PostgreSQL can then cache a generic plan for the
    /// prepared statement, where a `bytea[]` parameter of unknown length
    /// makes it plan every execution again), `$n::bytea[]` for several.
    MatchParam {
        /// 1-based `$n`.
        index: usize,
        /// The searchable column whose keys apply.
        column: ProtectedColumn,
    },
}

/// A bound parameter the session must encrypt in Bind.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamTarget {
    /// 1-based `$n`.
    pub index: usize,
    /// The column whose key and logical type apply.
    pub column: ProtectedColumn,
    /// How the encrypted value is used.
    pub usage: ParamUsage,
}

/// How a protected parameter is used by the rewritten statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamUsage {
    /// Value written into the column: encrypted with the active key; the
    /// parameter is bytea.
    Value,
    /// Equality operand: the caller sends a bytea[] of envelopes under every
    /// live version; the rewritten SQL casts it: `$n::bytea[]` (see
    /// [`EditKind::MatchParam`]).
    MatchArray,
    /// Equality operand of a column with one live key version: the caller
    /// sends that version's envelope as bytea, inside `ARRAY[$n::bytea]`.
    /// Decided when the statement is rendered, never by SQL analysis.
    MatchOne,
}

/// A `COPY ... FROM STDIN` into a table with encrypted columns: how to
/// split the stream into fields and which fields to encrypt.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyIn {
    /// One entry per field in the stream, in stream order; `Some` for
    /// encrypted fields, `None` for fields relayed as they are.
    pub fields: Vec<Option<ProtectedColumn>>,
    /// Text or CSV (binary is refused).
    pub format: CopyFormat,
    /// Field separator: `\t` for text, `,` for CSV unless given.
    pub delimiter: u8,
    /// The string that means NULL: `\N` for text, empty for CSV unless given.
    pub null: String,
    /// CSV quote character (default `"`).
    pub quote: u8,
    /// CSV escape character (defaults to the quote).
    pub escape: u8,
    /// Whether the first line is a header (CSV only in PostgreSQL 15).
    pub header: bool,
    /// For `COPY table TO` of a column being migrated online: the
    /// statement to send instead, `COPY (SELECT …) TO` reading both of its
    /// places, with the same fields in the same order.
    pub sql: Option<String>,
}

/// The COPY stream formats pgveil can rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// PostgreSQL's text format (backslash escapes).
    Text,
    /// Comma-separated values.
    Csv,
}

/// Splices `edits` into `sql`.
///
/// Every edit, [`EditKind::Text`] included, goes through `render`, so a
/// caller that only needs text edits can pass a closure that returns the
/// text and refuses the rest; [`render_text`] does the `Text` case. Edits
/// must be sorted and non-overlapping as [`Rewrite::edits`] promises; an
/// edit that is out of order or out of bounds is skipped rather than
/// panicking (analysis never produces one).
pub fn apply<E>(
    sql: &str,
    edits: &[Edit],
    mut render: impl FnMut(&EditKind) -> Result<String, E>,
) -> Result<String, E> {
    let mut out = String::with_capacity(sql.len() + edits.len() * 64);
    let mut pos = 0;
    for edit in edits {
        let Range { start, end } = edit.range;
        if start < pos || end < start || end > sql.len() {
            continue;
        }
        let (Some(keep), true) = (sql.get(pos..start), sql.is_char_boundary(end)) else {
            continue;
        };
        out.push_str(keep);
        out.push_str(&render(&edit.kind)?);
        pos = end;
    }
    out.push_str(sql.get(pos..).unwrap_or(""));
    Ok(out)
}

/// Renders a [`EditKind::Text`] edit; `None` for the kinds that need a key.
pub fn render_text(kind: &EditKind) -> Option<String> {
    match kind {
        EditKind::Text(t) => Some(t.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_splices_and_inserts() {
        let edits = vec![
            Edit {
                range: 0..1,
                kind: EditKind::Text("X".into()),
            },
            Edit {
                range: 3..3,
                kind: EditKind::Text("+".into()),
            },
            Edit {
                range: 4..5,
                kind: EditKind::Text("Y".into()),
            },
        ];
        let out: Result<String, ()> = apply("abcde", &edits, |k| Ok(render_text(k).unwrap()));
        assert_eq!(out.unwrap(), "Xbc+dY");
    }

    #[test]
    fn apply_skips_bad_ranges() {
        let edits = vec![
            Edit {
                range: 2..9,
                kind: EditKind::Text("X".into()),
            },
            Edit {
                range: 1..2,
                kind: EditKind::Text("Y".into()),
            },
        ];
        let out: Result<String, ()> = apply("abc", &edits, |k| Ok(render_text(k).unwrap()));
        assert_eq!(out.unwrap(), "aYc");
    }
}
