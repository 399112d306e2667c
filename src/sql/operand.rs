//! What an expression is, as far as rewriting cares, and where it is.
//!
//! Only a few shapes can be rewritten: a column reference, a literal
//! (including a signed number, a cast literal and a typed string), a `$n`
//! parameter (possibly cast) and NULL. Each comes with the byte range that
//! an edit must replace; a range that cannot be established is `None`, and
//! the caller refuses instead of guessing.

use std::ops::Range;

use sqlparser::ast::{CastKind, Expr, Ident, UnaryOperator, Value};

use super::span::Source;

/// The shape of an operand.
#[derive(Debug)]
pub(crate) enum Operand<'e> {
    /// A column reference (`c`, `t.c`, `s.t.c`).
    Column {
        idents: &'e [Ident],
        range: Option<Range<usize>>,
    },
    /// A literal, with its value as PostgreSQL sees it.
    Literal {
        value: String,
        range: Option<Range<usize>>,
    },
    /// A `$n` parameter; `cast` when written as `$n::type` or `CAST($n AS type)`.
    Param {
        index: usize,
        range: Option<Range<usize>>,
        cast: bool,
        at: Option<usize>,
    },
    /// A `$n`-style placeholder pgveil cannot number, or `$0`.
    BadParam,
    /// `NULL`, possibly cast.
    Null,
    /// `DEFAULT` in VALUES or SET.
    Default,
    /// Anything else.
    Other,
}

/// The text value of a literal token, as PostgreSQL would see it.
fn literal_value(v: &Value) -> Option<String> {
    match v {
        Value::Number(n, _) => Some(n.to_string()),
        Value::SingleQuotedString(s)
        | Value::EscapedStringLiteral(s)
        | Value::UnicodeStringLiteral(s)
        | Value::NationalStringLiteral(s) => Some(s.clone()),
        Value::DollarQuotedString(d) => Some(d.value.clone()),
        Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `$n` → `n` (1-based); `None` for other forms.
pub(crate) fn param_index(p: &str) -> Option<usize> {
    let n: usize = p.strip_prefix('$')?.parse().ok()?;
    (n >= 1).then_some(n)
}

/// Classifies `e`.
pub(crate) fn classify<'e>(e: &'e Expr, src: &Source<'_>) -> Operand<'e> {
    match e {
        Expr::Identifier(i) => {
            if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default") {
                return Operand::Default;
            }
            Operand::Column {
                idents: std::slice::from_ref(i),
                range: src.range(i.span),
            }
        }
        Expr::CompoundIdentifier(v) => {
            let range = match (v.first(), v.last()) {
                (Some(a), Some(b)) => src.range(a.span.union(&b.span)),
                _ => None,
            };
            Operand::Column { idents: v, range }
        }
        Expr::Value(v) => {
            let range = src.range(v.span).filter(|r| src.is_one_token(r));
            match &v.value {
                Value::Null => Operand::Null,
                Value::Placeholder(p) => match param_index(p) {
                    Some(index) => Operand::Param {
                        index,
                        at: range.as_ref().map(|r| r.start),
                        range,
                        cast: false,
                    },
                    None => Operand::BadParam,
                },
                other => match literal_value(other) {
                    Some(value) => Operand::Literal { value, range },
                    None => Operand::Other,
                },
            }
        }
        Expr::UnaryOp {
            op: op @ (UnaryOperator::Minus | UnaryOperator::Plus),
            expr,
        } => match &**expr {
            Expr::Value(v) if matches!(v.value, Value::Number(..)) => {
                let Some(value) = literal_value(&v.value) else {
                    return Operand::Other;
                };
                let negative = *op == UnaryOperator::Minus;
                let range = src.range(v.span).and_then(|r| {
                    let (start, minus) = src.sign_start(r.start)?;
                    (minus == negative).then_some(start..r.end)
                });
                let value = if negative { format!("-{value}") } else { value };
                Operand::Literal { value, range }
            }
            _ => Operand::Other,
        },
        Expr::Cast {
            kind,
            expr,
            data_type,
            format: None,
        } => {
            let inner = classify(expr, src);
            let extend = |r: Option<Range<usize>>| -> Option<Range<usize>> {
                let r = r?;
                match kind {
                    CastKind::DoubleColon => {
                        Some(r.start..src.double_colon_cast_end(r.end, data_type)?)
                    }
                    CastKind::Cast => src.cast_call_extent(&r, data_type),
                    _ => None,
                }
            };
            match inner {
                Operand::Literal { value, range } => Operand::Literal {
                    value,
                    range: extend(range),
                },
                Operand::Param {
                    index, range, at, ..
                } => Operand::Param {
                    index,
                    range: extend(range),
                    cast: true,
                    at,
                },
                Operand::Null => Operand::Null,
                Operand::BadParam => Operand::BadParam,
                _ => Operand::Other,
            }
        }
        Expr::TypedString(ts) if !ts.uses_odbc_syntax => match literal_value(&ts.value.value) {
            Some(value) if !matches!(ts.value.value, Value::Number(..) | Value::Boolean(_)) => {
                let range = src
                    .range(ts.value.span)
                    .and_then(|r| Some(src.typed_string_start(r.start, &ts.data_type)?..r.end));
                Operand::Literal { value, range }
            }
            _ => Operand::Other,
        },
        Expr::Nested(inner) => {
            let paren = |r: Option<Range<usize>>| r.and_then(|r| src.paren_extent(&r));
            match classify(inner, src) {
                Operand::Column { idents, range } => Operand::Column {
                    idents,
                    range: paren(range),
                },
                Operand::Literal { value, range } => Operand::Literal {
                    value,
                    range: paren(range),
                },
                Operand::Param {
                    index,
                    range,
                    cast,
                    at,
                } => Operand::Param {
                    index,
                    range: paren(range),
                    cast,
                    at,
                },
                other => other,
            }
        }
        _ => Operand::Other,
    }
}

/// The column reference inside `e` (through parentheses), if it is one.
pub(crate) fn column_ref(e: &Expr) -> Option<&[Ident]> {
    match e {
        Expr::Identifier(i) => Some(std::slice::from_ref(i)),
        Expr::CompoundIdentifier(v) => Some(v),
        Expr::Nested(inner) => column_ref(inner),
        _ => None,
    }
}
