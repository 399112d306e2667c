//! From sqlparser's line/column spans to byte ranges of the original text.
//!
//! sqlparser reports positions as 1-based (line, column) pairs where a
//! column counts characters, not bytes, and the end is exclusive. Edits
//! splice bytes, so every span goes through [`Source::range`]. Some AST
//! nodes carry no position (an empty span, line 0) and compound nodes do
//! not cover their operators or casts; for those the significant tokens of
//! the text are kept here so the extent of `-5`, `'x'::text`,
//! `CAST($1 AS text)` or `DATE '2020-01-01'` can be found exactly, and any
//! doubt becomes `None` (the caller refuses rather than mis-edits).

use std::ops::Range;

use sqlparser::ast::{DataType, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Span, Token, Tokenizer};

/// A token that is not whitespace or a comment, with its byte range.
#[derive(Debug, Clone)]
pub(crate) struct Tok {
    pub token: Token,
    pub range: Range<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Line {
    start: usize,
    end: usize,
    ascii: bool,
}

/// The statement text with what is needed to map positions to bytes.
#[derive(Debug)]
pub(crate) struct Source<'a> {
    pub sql: &'a str,
    lines: Vec<Line>,
    toks: Vec<Tok>,
}

/// Tokenizes and parses `sql` with the PostgreSQL dialect, keeping the
/// tokens for position lookups. `None` when the text does not parse.
pub(crate) fn parse(sql: &str) -> Option<(Vec<Statement>, Source<'_>)> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .ok()?;
    let mut source = Source::lines_of(sql);
    for t in &tokens {
        if matches!(t.token, Token::Whitespace(_) | Token::EOF) {
            continue;
        }
        let range = source.range(t.span)?;
        source.toks.push(Tok {
            token: t.token.clone(),
            range,
        });
    }
    let statements = Parser::new(&dialect)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .ok()?;
    Some((statements, source))
}

impl<'a> Source<'a> {
    fn lines_of(sql: &'a str) -> Self {
        let mut lines = Vec::new();
        let mut start = 0;
        for piece in sql.split_inclusive('\n') {
            let end = start + piece.len();
            lines.push(Line {
                start,
                end,
                ascii: piece.is_ascii(),
            });
            start = end;
        }
        if lines.is_empty() || sql.ends_with('\n') {
            lines.push(Line {
                start,
                end: start,
                ascii: true,
            });
        }
        Source {
            sql,
            lines,
            toks: Vec::new(),
        }
    }

    /// Byte offset of a location; `None` for the empty location or one
    /// outside the text.
    pub fn byte(&self, loc: Location) -> Option<usize> {
        if loc.line == 0 || loc.column == 0 {
            return None;
        }
        let line = *self.lines.get(usize::try_from(loc.line - 1).ok()?)?;
        let col = usize::try_from(loc.column - 1).ok()?;
        if line.ascii {
            let b = line.start + col;
            return (b <= line.end).then_some(b);
        }
        let text = self.sql.get(line.start..line.end)?;
        match text.char_indices().nth(col) {
            Some((i, _)) => Some(line.start + i),
            None => (text.chars().count() == col).then_some(line.end),
        }
    }

    /// Byte range of a span; `None` when it is empty or inconsistent.
    pub fn range(&self, span: Span) -> Option<Range<usize>> {
        let start = self.byte(span.start)?;
        let end = self.byte(span.end)?;
        (start <= end).then_some(start..end)
    }

    /// Text of a byte range.
    pub fn text(&self, range: &Range<usize>) -> Option<&'a str> {
        self.sql.get(range.clone())
    }

    /// Index of the significant token starting exactly at `byte`.
    pub fn tok_at(&self, byte: usize) -> Option<usize> {
        let i = self.toks.partition_point(|t| t.range.start < byte);
        (self.toks.get(i)?.range.start == byte).then_some(i)
    }

    /// Index of the significant token ending exactly at `byte`.
    pub fn tok_ending(&self, byte: usize) -> Option<usize> {
        let i = self.toks.partition_point(|t| t.range.end < byte);
        (self.toks.get(i)?.range.end == byte).then_some(i)
    }

    /// The token at index `i`.
    pub fn tok(&self, i: usize) -> Option<&Tok> {
        self.toks.get(i)
    }

    /// Whether `range` is exactly one token (a sanity check on spans).
    pub fn is_one_token(&self, range: &Range<usize>) -> bool {
        matches!(self.tok_at(range.start), Some(i) if self.toks[i].range.end == range.end)
    }

    /// The significant token right after the one ending at `end`.
    pub fn next_after(&self, end: usize) -> Option<usize> {
        let i = self.tok_ending(end)?;
        (i + 1 < self.toks.len()).then_some(i + 1)
    }

    /// The significant token right before the one starting at `start`.
    pub fn prev_before(&self, start: usize) -> Option<usize> {
        self.tok_at(start)?.checked_sub(1)
    }

    /// End of `::type` following an expression that ends at `end`.
    pub fn double_colon_cast_end(&self, end: usize, ty: &DataType) -> Option<usize> {
        let i = self.next_after(end)?;
        if self.toks[i].token != Token::DoubleColon {
            return None;
        }
        self.match_type_forward(i + 1, ty)
            .map(|j| self.toks[j].range.end)
    }

    /// Extent of `CAST(<inner> AS type)` around an inner expression.
    pub fn cast_call_extent(&self, inner: &Range<usize>, ty: &DataType) -> Option<Range<usize>> {
        let open = self.prev_before(inner.start)?;
        let cast = open.checked_sub(1)?;
        if self.toks[open].token != Token::LParen || !is_word(&self.toks[cast].token, "cast") {
            return None;
        }
        let as_kw = self.next_after(inner.end)?;
        if !is_word(&self.toks[as_kw].token, "as") {
            return None;
        }
        let last = self.match_type_forward(as_kw + 1, ty)?;
        let close = self.toks.get(last + 1)?;
        (close.token == Token::RParen).then(|| self.toks[cast].range.start..close.range.end)
    }

    /// Start of `type` written before a typed string like `DATE '...'`.
    pub fn typed_string_start(&self, value_start: usize, ty: &DataType) -> Option<usize> {
        let want = type_tokens(ty)?;
        let first = self.tok_at(value_start)?.checked_sub(want.len())?;
        let got = self.toks.get(first..first + want.len())?;
        got.iter()
            .zip(&want)
            .all(|(t, w)| norm(&t.token) == *w)
            .then(|| got.first().map(|t| t.range.start))
            .flatten()
    }

    /// Start of a sign (`-` or `+`) written just before `start`.
    pub fn sign_start(&self, start: usize) -> Option<(usize, bool)> {
        let i = self.prev_before(start)?;
        match self.toks[i].token {
            Token::Minus => Some((self.toks[i].range.start, true)),
            Token::Plus => Some((self.toks[i].range.start, false)),
            _ => None,
        }
    }

    /// Extent of `( <inner> )`.
    pub fn paren_extent(&self, inner: &Range<usize>) -> Option<Range<usize>> {
        let open = self.prev_before(inner.start)?;
        let close = self.next_after(inner.end)?;
        (self.toks[open].token == Token::LParen && self.toks[close].token == Token::RParen)
            .then(|| self.toks[open].range.start..self.toks[close].range.end)
    }

    /// Index of the last token of `ty` written from token `i` on.
    fn match_type_forward(&self, i: usize, ty: &DataType) -> Option<usize> {
        let want = type_tokens(ty)?;
        let got = self.toks.get(i..i + want.len())?;
        (!want.is_empty() && got.iter().zip(&want).all(|(t, w)| norm(&t.token) == *w))
            .then(|| i + want.len() - 1)
    }
}

fn is_word(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(word) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case(w))
}

fn norm(t: &Token) -> String {
    t.to_string().to_ascii_lowercase()
}

/// The tokens sqlparser prints for a type, normalized for comparison.
fn type_tokens(ty: &DataType) -> Option<Vec<String>> {
    let printed = ty.to_string();
    let dialect = PostgreSqlDialect {};
    let toks = Tokenizer::new(&dialect, &printed).tokenize().ok()?;
    Some(
        toks.iter()
            .filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF))
            .map(norm)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_of_multibyte_and_multiline_text() {
        let sql = "select '宾客'\n, 'x' -- 注释\n, 'y'";
        let (_, src) = parse(sql).unwrap();
        assert_eq!(src.byte(Location::new(1, 8)), Some(7));
        let x = sql.find("'x'").unwrap();
        assert_eq!(src.byte(Location::new(2, 3)), Some(x));
        let y = sql.find("'y'").unwrap();
        assert_eq!(src.byte(Location::new(3, 3)), Some(y));
        assert_eq!(src.byte(Location::empty()), None);
    }

    #[test]
    fn tokens_skip_comments() {
        let (_, src) = parse("select /* c */ 1").unwrap();
        assert_eq!(src.tok(1).unwrap().range, 15..16);
    }
}
