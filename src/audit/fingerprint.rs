//! Statement fingerprints: SQL text with every value taken out.
//!
//! A fingerprint identifies *what kind* of statement ran without saying
//! *on which values*: string literals (plain, `E''`, `B''`, `X''`, `N''`,
//! `U&''`, dollar-quoted), numbers (with a unary minus), `TRUE`/`FALSE`,
//! and `$n` parameters all become `?`; comments (which may hold anything)
//! are dropped; runs of whitespace become one space. Identifiers, quoted
//! identifiers, keywords and operators are kept.
//!
//! A scanner rather than sqlparser, because it must work on every input,
//! including text that does not parse (those statements are refused and
//! still audited), and costs one pass with no AST. It follows PostgreSQL's
//! lexer with `standard_conforming_strings = on` (the default since 9.1):
//! a backslash escapes only inside `E''`. Whenever the scanner is unsure
//! (an unterminated string or comment) it replaces the rest of the text,
//! so it errs on the side of leaving values out.

/// Longest fingerprint kept, in bytes; longer ones are cut (on a character
/// boundary) and end with `…`.
pub const MAX_FINGERPRINT: usize = 4096;

/// The fingerprint of `sql`.
pub fn fingerprint(sql: &str) -> String {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len().min(MAX_FINGERPRINT) + 8);
    let mut i = 0;
    // Whether the last thing emitted can end an operand (so a following
    // `-` is binary, not the sign of a number).
    let mut after_operand = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                space(&mut out);
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                // Line comment: dropped.
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                space(&mut out);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(b, i);
                space(&mut out);
            }
            b'\'' => {
                i = skip_string(b, i + 1, false);
                value(&mut out);
                after_operand = true;
            }
            b'"' => {
                // Quoted identifier: kept as is.
                let end = skip_quoted_ident(b, i + 1);
                out.push_str(&sql[i..end]);
                i = end;
                after_operand = true;
            }
            b'$' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                value(&mut out);
                after_operand = true;
            }
            b'$' => match dollar_tag(b, i) {
                Some(tag_end) => {
                    i = skip_dollar_body(b, &b[i..tag_end], tag_end);
                    value(&mut out);
                    after_operand = true;
                }
                None => {
                    out.push('$');
                    i += 1;
                    after_operand = false;
                }
            },
            b'0'..=b'9' => {
                i = skip_number(b, i);
                value(&mut out);
                after_operand = true;
            }
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = skip_number(b, i);
                value(&mut out);
                after_operand = true;
            }
            b'-' | b'+'
                if !after_operand
                    && (b.get(i + 1).is_some_and(u8::is_ascii_digit)
                        || (b.get(i + 1) == Some(&b'.')
                            && b.get(i + 2).is_some_and(u8::is_ascii_digit))) =>
            {
                // A signed number where an operand is expected.
                i = skip_number(b, i + 1);
                value(&mut out);
                after_operand = true;
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < b.len() && is_ident_char(b[i]) {
                    i += 1;
                }
                let word = &sql[start..i];
                // String-literal prefixes: E'', B'', X'', N'', U&''.
                if b.get(i) == Some(&b'\'') && word.len() == 1 {
                    let escapes = word.eq_ignore_ascii_case("e");
                    if matches!(word.to_ascii_lowercase().as_str(), "e" | "b" | "x" | "n") {
                        i = skip_string(b, i + 1, escapes);
                        value(&mut out);
                        after_operand = true;
                        continue;
                    }
                }
                if word.eq_ignore_ascii_case("u")
                    && b.get(i) == Some(&b'&')
                    && b.get(i + 1) == Some(&b'\'')
                {
                    i = skip_string(b, i + 2, false);
                    value(&mut out);
                    after_operand = true;
                    continue;
                }
                if word.eq_ignore_ascii_case("true") || word.eq_ignore_ascii_case("false") {
                    value(&mut out);
                    after_operand = true;
                    continue;
                }
                out.push_str(word);
                // A keyword like SELECT or WHERE is not an operand, but
                // treating every word as one only makes `- 5` after it keep
                // its sign as an operator; the number still becomes `?`.
                after_operand = !is_operator_keyword(word);
            }
            _ => {
                // Operators and punctuation (ASCII), or the rest of a
                // multi-byte character that is not an identifier start.
                let len = utf8_len(c);
                let end = (i + len).min(b.len());
                out.push_str(sql.get(i..end).unwrap_or("?"));
                i = end;
                after_operand = matches!(c, b')' | b']');
            }
        }
        if out.len() > MAX_FINGERPRINT {
            truncate(&mut out);
            return out;
        }
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out
}

fn space(out: &mut String) {
    if !out.is_empty() && !out.ends_with(' ') {
        out.push(' ');
    }
}

fn value(out: &mut String) {
    out.push('?');
}

fn truncate(out: &mut String) {
    let mut cut = MAX_FINGERPRINT;
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    out.truncate(cut);
    out.push('…');
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// Keywords after which a `-` or `+` is a sign, not subtraction.
fn is_operator_keyword(word: &str) -> bool {
    const WORDS: &[&str] = &[
        "select",
        "where",
        "and",
        "or",
        "not",
        "values",
        "set",
        "then",
        "else",
        "when",
        "in",
        "between",
        "like",
        "ilike",
        "is",
        "limit",
        "offset",
        "by",
        "as",
        "return",
        "returning",
        "case",
        "on",
        "having",
        "array",
        "distinct",
        "any",
        "all",
        "some",
        "using",
        "with",
    ];
    WORDS.iter().any(|w| w.eq_ignore_ascii_case(word))
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// After the opening quote at `i`: the index after the closing quote, or
/// the end of the text when there is none. `''` is an escaped quote; with
/// `escapes` (E'') so is `\'`.
fn skip_string(b: &[u8], mut i: usize, escapes: bool) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' if escapes => i += 2,
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

fn skip_quoted_ident(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        if b[i] == b'"' {
            if b.get(i + 1) == Some(&b'"') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// `/* ... */`, nested as PostgreSQL nests them; to the end when unclosed.
fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// At a `$` that may open a dollar quote (`$$` or `$tag$`): the index after
/// the opening tag.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j) == Some(&b'$') {
        return Some(j + 1);
    }
    if !b
        .get(j)
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_' || *c >= 0x80)
    {
        return None;
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1)
}

/// After the opening tag: the index after the matching closing tag, or the
/// end of the text.
fn skip_dollar_body(b: &[u8], tag: &[u8], from: usize) -> usize {
    if tag.is_empty() {
        return b.len();
    }
    memchr::memmem::find(&b[from..], tag).map_or(b.len(), |p| from + p + tag.len())
}

/// A numeric literal starting at `i` (digits, `.`, exponent, `0x`/`0o`/`0b`
/// prefixes, `_` separators); also eats trailing identifier characters so
/// `123abc` cannot leave a digit-bearing tail behind.
fn skip_number(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        let c = b[i];
        let sign =
            (c == b'+' || c == b'-') && matches!(b.get(i.wrapping_sub(1)), Some(b'e' | b'E'));
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || sign {
            i += 1;
        } else {
            break;
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::fingerprint as fp;

    #[test]
    fn strings_of_every_kind() {
        assert_eq!(
            fp("SELECT * FROM guests WHERE phone = '13812345678'"),
            "SELECT * FROM guests WHERE phone = ?"
        );
        assert_eq!(fp("SELECT 'it''s', 'x'"), "SELECT ?, ?");
        assert_eq!(fp(r"SELECT E'it\'s \\ secret', e'a'"), "SELECT ?, ?");
        // Standard strings: a backslash is an ordinary character, so the
        // string ends at the second quote and 'b' is a value too.
        assert_eq!(fp(r"SELECT 'a\', 'b'"), "SELECT ?, ?");
        assert_eq!(fp("SELECT B'1010', X'ff', N'名字'"), "SELECT ?, ?, ?");
        assert_eq!(fp("SELECT U&'d\\0061t' UESCAPE '!'"), "SELECT ? UESCAPE ?");
        assert_eq!(fp("SELECT 'a' 'b'"), "SELECT ? ?");
        assert_eq!(fp("SELECT DATE '1990-05-17'"), "SELECT DATE ?");
    }

    #[test]
    fn dollar_quotes_and_params() {
        assert_eq!(fp("SELECT $$secret's$$, 1"), "SELECT ?, ?");
        assert_eq!(fp("SELECT $tag$ a $$ b $tag$"), "SELECT ?");
        assert_eq!(
            fp("UPDATE guests SET phone = $1 WHERE id = $12"),
            "UPDATE guests SET phone = ? WHERE id = ?"
        );
        // `$` inside an identifier is part of it.
        assert_eq!(fp("SELECT a$b$ FROM t"), "SELECT a$b$ FROM t");
    }

    #[test]
    fn numbers_signed_and_not() {
        assert_eq!(
            fp("SELECT 42, 3.14, .5, 1e10, 2.5E-3, 0x1F, 1_000"),
            "SELECT ?, ?, ?, ?, ?, ?, ?"
        );
        assert_eq!(
            fp("SELECT * FROM t WHERE x = -5"),
            "SELECT * FROM t WHERE x = ?"
        );
        assert_eq!(fp("SELECT -5, (-7), x-3"), "SELECT ?, (?), x-?");
        assert_eq!(fp("VALUES (-1.5)"), "VALUES (?)");
        assert_eq!(
            fp("SELECT col1, t2.c3 FROM t2"),
            "SELECT col1, t2.c3 FROM t2"
        );
    }

    #[test]
    fn arrays_booleans_casts() {
        assert_eq!(
            fp("SELECT ARRAY[1, -2, 3], '{4,5}'::int[], TRUE, false"),
            "SELECT ARRAY[?, ?, ?], ?::int[], ?, ?"
        );
        assert_eq!(fp("SELECT x::bytea FROM t"), "SELECT x::bytea FROM t");
        assert_eq!(
            fp("SELECT * FROM t WHERE a IS NULL"),
            "SELECT * FROM t WHERE a IS NULL"
        );
    }

    #[test]
    fn comments_are_dropped_and_space_collapsed() {
        assert_eq!(
            fp("SELECT /* 138 */ name -- id 310101\n FROM\t\tguests  "),
            "SELECT name FROM guests"
        );
        assert_eq!(
            fp("SELECT 1 /* a /* nested */ still */ + 2"),
            "SELECT ? + ?"
        );
    }

    #[test]
    fn identifiers_are_kept() {
        assert_eq!(
            fp(r#"INSERT INTO "Guests" ("phone number", 名字) VALUES ('x', '张三')"#),
            r#"INSERT INTO "Guests" ("phone number", 名字) VALUES (?, ?)"#
        );
    }

    #[test]
    fn unterminated_input_hides_the_rest() {
        assert_eq!(fp("SELECT 'abc"), "SELECT ?");
        assert_eq!(fp("SELECT $x$ secret"), "SELECT ?");
        assert_eq!(fp("SELECT 1 /* secret"), "SELECT ?");
        assert_eq!(fp("SELECT E'abc\\"), "SELECT ?");
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary() {
        let sql = format!("SELECT {}", "名".repeat(3000));
        let f = fp(&sql);
        assert!(f.len() <= super::MAX_FINGERPRINT + 4, "{}", f.len());
        assert!(f.ends_with('…'));
    }

    /// No digit, and no letter of a literal, survives: a property check
    /// over generated statements with random values.
    #[test]
    fn no_value_survives() {
        use proptest::prelude::*;
        let values = prop_oneof![
            "[0-9]{1,12}".prop_map(|s| s),
            "-[0-9]{1,6}(\\.[0-9]{1,3})?".prop_map(|s| s),
            "[a-z0-9 ']{0,12}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
            "[a-z0-9 '\\\\]{0,12}"
                .prop_map(|s| format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))),
            // The body alphabet has no `_`, so it cannot contain the closing tag.
            "[a-z0-9 $]{0,12}".prop_map(|s| format!("$t_t${s}$t_t$")),
            "[0-9]{1,3}".prop_map(|s| format!("ARRAY[{s}, -{s}]")),
        ];
        proptest!(|(v in values, w in "[a-z0-9]{0,6}")| {
            let sql = format!("SELECT * FROM guests WHERE phone = {v} AND note = 'zz{w}qq' LIMIT $1");
            let f = fp(&sql);
            prop_assert_eq!(f.matches('?').count() >= 3, true, "{}", f);
            prop_assert!(!f.chars().any(|c| c.is_ascii_digit()), "{} -> {}", sql, f);
            prop_assert!(!f.contains("zz"), "{} -> {}", sql, f);
        });
    }
}
