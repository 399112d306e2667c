//! Views (and materialized views) over protected columns.
//!
//! PostgreSQL reports a view's own OID and attribute number in a
//! RowDescription, not the base table's, so without this a view that
//! exposes `phone` unchanged would show its ciphertext, and a view column
//! computed from `phone` would look unrelated to it. The view's stored
//! rewrite rule says, for each output column, whether it is a plain column
//! reference and which base column it comes from (`resorigtbl`,
//! `resorigcol`: the same origin PostgreSQL puts in a RowDescription for a
//! query on the table itself). From that:
//!
//! * a view column that is a plain reference to a protected column *is*
//!   that column: decrypted and masked like it, and literals compared with
//!   it are encrypted with its key;
//! * any other column of a view that reads a protected column (per
//!   `pg_depend`) may be computed from it — over ciphertext, or leaking a
//!   value through a transformation — and is refused when it appears in a
//!   result. That is coarser than necessary (a `count(*)` in such a view is
//!   refused too) but never shows what the role may not see.

/// One output column of a view's `_RETURN` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetEntry {
    /// The view's attribute number.
    pub resno: i16,
    /// The expression is a bare column reference.
    pub plain_var: bool,
    /// Base table OID and attribute number, when PostgreSQL knows one.
    pub origin: Option<(u32, i16)>,
    /// A junk column (not part of the view's output).
    pub junk: bool,
}

/// A view as loaded from the server.
#[derive(Debug, Clone)]
pub struct ViewDef {
    /// The view's OID.
    pub oid: u32,
    /// Schema name.
    pub schema: String,
    /// View name.
    pub name: String,
    /// `(attnum, name)` in attribute order.
    pub columns: Vec<(i16, String)>,
    /// Output columns of its rule.
    pub targets: Vec<TargetEntry>,
    /// Columns `(relation OID, attnum)` its rule depends on.
    pub depends: Vec<(u32, i16)>,
}

/// Reads the top-level target list of a rule's `ev_action` (the node tree
/// text of `pg_rewrite`). `None` when the text is not what PostgreSQL 12–17
/// writes; the caller then treats every column of the view as computed.
pub fn target_list(ev_action: &str) -> Option<Vec<TargetEntry>> {
    let tokens = tokenize(ev_action);
    // `({QUERY … :targetList ( {TARGETENTRY …} … ) …})`: the list is a
    // field of the outermost QUERY, at depth 2.
    let mut depth = 0usize;
    let mut i = 0;
    let mut start = None;
    while i < tokens.len() {
        match tokens[i] {
            "(" | "{" => depth += 1,
            ")" | "}" => depth = depth.saturating_sub(1),
            ":targetList" if depth == 2 => {
                start = Some(i + 1);
                break;
            }
            _ => {}
        }
        i += 1;
    }
    let mut i = start?;
    if tokens.get(i) == Some(&"<>") {
        return Some(Vec::new());
    }
    if tokens.get(i) != Some(&"(") {
        return None;
    }
    i += 1;
    let mut entries = Vec::new();
    loop {
        match *tokens.get(i)? {
            ")" => return Some(entries),
            "{" => {
                let (entry, next) = target_entry(&tokens, i)?;
                entries.push(entry);
                i = next;
            }
            _ => return None,
        }
    }
}

/// Parses `{TARGETENTRY :expr … :resno N …}` starting at its `{`; returns
/// the entry and the index after its `}`.
fn target_entry(tokens: &[&str], open: usize) -> Option<(TargetEntry, usize)> {
    if tokens.get(open + 1) != Some(&"TARGETENTRY") {
        return None;
    }
    let mut entry = TargetEntry {
        resno: 0,
        plain_var: false,
        origin: None,
        junk: false,
    };
    let (mut tbl, mut col) = (0u32, 0i16);
    let mut depth = 1usize;
    let mut i = open + 2;
    while depth > 0 {
        let t = *tokens.get(i)?;
        match t {
            "(" | "{" => depth += 1,
            ")" | "}" => depth -= 1,
            _ if depth == 1 => {
                let value = tokens.get(i + 1).copied();
                match t {
                    ":expr" => {
                        entry.plain_var =
                            value == Some("{") && tokens.get(i + 2).copied() == Some("VAR");
                    }
                    ":resno" => entry.resno = value?.parse().ok()?,
                    ":resorigtbl" => tbl = value?.parse().ok()?,
                    ":resorigcol" => col = value?.parse().ok()?,
                    ":resjunk" => entry.junk = value == Some("true"),
                    _ => {}
                }
            }
            _ => {}
        }
        i += 1;
    }
    if tbl != 0 && col > 0 {
        entry.origin = Some((tbl, col));
    }
    Some((entry, i))
}

/// Splits node text into brackets and words; a backslash escapes the next
/// character inside a word (how PostgreSQL writes names with spaces or
/// brackets).
fn tokenize(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\n' | b'\t' | b'\r' => i += 1,
            b'(' | b')' | b'{' | b'}' => {
                out.push(&text[i..i + 1]);
                i += 1;
            }
            _ => {
                let start = i;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b' ' | b'\n' | b'\t' | b'\r' | b'(' | b')' | b'{' | b'}' => break,
                        _ => i += 1,
                    }
                }
                let end = i.min(bytes.len());
                // Word boundaries are ASCII, so slicing stays on char
                // boundaries unless an escape swallowed half a character.
                if let Some(word) = text.get(start..end) {
                    out.push(word);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CREATE VIEW v AS SELECT id, phone AS p, upper(note) AS n FROM t
    /// WHERE phone IS NOT NULL` on PostgreSQL 15 (rtable trimmed).
    const RULE: &str = "({QUERY :commandType 1 :querySource 0 :canSetTag true :utilityStmt <> \
        :rtable ({RANGETBLENTRY :alias <> :eref {ALIAS :aliasname t :colnames (\"id\" \"phone\" \"note\")} :relid 16384}) \
        :jointree {FROMEXPR :fromlist ({RANGETBLREF :rtindex 3}) :quals {NULLTEST :arg {VAR :varno 3 :varattno 2} :nulltesttype 1}} \
        :targetList ({TARGETENTRY :expr {VAR :varno 3 :varattno 1 :vartype 23} :resno 1 :resname id :ressortgroupref 0 :resorigtbl 16384 :resorigcol 1 :resjunk false} \
        {TARGETENTRY :expr {VAR :varno 3 :varattno 2 :vartype 17} :resno 2 :resname p :ressortgroupref 0 :resorigtbl 16384 :resorigcol 2 :resjunk false} \
        {TARGETENTRY :expr {FUNCEXPR :funcid 871 :args ({VAR :varno 3 :varattno 3}) :location 89} :resno 3 :resname n\\ x :ressortgroupref 0 :resorigtbl 0 :resorigcol 0 :resjunk false}) \
        :override 0 :setOperations <> :stmt_len 88})";

    #[test]
    fn reads_plain_and_computed_columns() {
        let t = target_list(RULE).expect("parses");
        assert_eq!(
            t,
            vec![
                TargetEntry {
                    resno: 1,
                    plain_var: true,
                    origin: Some((16384, 1)),
                    junk: false
                },
                TargetEntry {
                    resno: 2,
                    plain_var: true,
                    origin: Some((16384, 2)),
                    junk: false
                },
                TargetEntry {
                    resno: 3,
                    plain_var: false,
                    origin: None,
                    junk: false
                },
            ]
        );
    }

    #[test]
    fn nested_target_lists_are_not_the_views() {
        // A subquery in the rtable has its own :targetList at a deeper level.
        let rule = "({QUERY :rtable ({RANGETBLENTRY :subquery {QUERY :targetList ({TARGETENTRY :expr {VAR} :resno 9 :resorigtbl 1 :resorigcol 1 :resjunk false})}}) \
                    :targetList ({TARGETENTRY :expr {FUNCEXPR} :resno 1 :resorigtbl 0 :resorigcol 0 :resjunk false})})";
        let t = target_list(rule).expect("parses");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].resno, 1);
        assert!(!t[0].plain_var);
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        for text in [
            "",
            "(",
            "({QUERY :targetList (",
            "({QUERY :targetList ({X})})",
            "\\",
        ] {
            let _ = target_list(text);
        }
        assert_eq!(
            target_list("({QUERY :targetList ({TARGETENTRY :resno x})})"),
            None
        );
    }
}
