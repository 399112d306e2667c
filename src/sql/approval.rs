//! Recognises the statements that set or reset `pgveil.approval`, which
//! pgveil answers itself instead of forwarding: a one-off export's
//! approval token must never reach the server, and a form pgveil does not
//! answer (`SET LOCAL`, a second statement after it) is refused rather
//! than half-understood.

use super::bulk::{mentions_approval, APPROVAL_SETTING};

/// The approval statements pgveil answers itself.
#[derive(Debug, PartialEq, Eq)]
pub enum ApprovalStmt {
    /// `SET [SESSION] pgveil.approval {= | TO} '<token>'`.
    Set(String),
    /// `RESET pgveil.approval` (`true`) or `SET … TO DEFAULT` / `= ''`.
    Reset(bool),
    /// Names the setting in a form pgveil does not answer.
    Invalid,
}

/// Splits off the first word (up to whitespace, `=`, `;` or a quote).
fn word(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| c.is_whitespace() || matches!(c, '=' | ';' | '\''))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Nothing but whitespace and semicolons left.
fn at_end(s: &str) -> bool {
    s.chars().all(|c| c.is_whitespace() || c == ';')
}

/// Recognises the approval statements pgveil answers itself. `None` for
/// every text that does not start with SET/RESET naming the setting.
pub fn approval_statement(sql: &str) -> Option<ApprovalStmt> {
    let (first, rest) = word(sql.trim_start());
    let reset = first.eq_ignore_ascii_case("reset");
    if !reset && !first.eq_ignore_ascii_case("set") {
        return None;
    }
    if !mentions_approval(rest) {
        return None;
    }
    let mut rest = rest.trim_start();
    if !reset {
        let (w, r) = word(rest);
        if w.eq_ignore_ascii_case("session") {
            rest = r.trim_start();
        } else if w.eq_ignore_ascii_case("local") {
            return Some(ApprovalStmt::Invalid);
        }
    }
    let (name, r) = word(rest);
    if !name.eq_ignore_ascii_case(APPROVAL_SETTING) {
        return Some(ApprovalStmt::Invalid);
    }
    let mut r = r.trim_start();
    if reset {
        return Some(if at_end(r) {
            ApprovalStmt::Reset(true)
        } else {
            ApprovalStmt::Invalid
        });
    }
    if let Some(x) = r.strip_prefix('=') {
        r = x;
    } else {
        let (w, x) = word(r);
        if !w.eq_ignore_ascii_case("to") {
            return Some(ApprovalStmt::Invalid);
        }
        r = x;
    }
    let r = r.trim_start();
    if let Some(x) = r.strip_prefix('\'') {
        let Some(close) = x.find('\'') else {
            return Some(ApprovalStmt::Invalid);
        };
        let (token, tail) = x.split_at(close);
        return Some(match (at_end(&tail[1..]), token.trim().is_empty()) {
            (false, _) => ApprovalStmt::Invalid,
            (true, true) => ApprovalStmt::Reset(false),
            (true, false) => ApprovalStmt::Set(token.trim().to_owned()),
        });
    }
    let (w, x) = word(r);
    Some(if w.eq_ignore_ascii_case("default") && at_end(x) {
        ApprovalStmt::Reset(false)
    } else {
        ApprovalStmt::Invalid
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_approval_statements() {
        use ApprovalStmt::*;
        assert_eq!(approval_statement("SELECT 1"), None);
        assert_eq!(approval_statement("SET search_path = public"), None);
        assert_eq!(
            approval_statement("SET pgveil.approval = 'tok.en'"),
            Some(Set("tok.en".into()))
        );
        assert_eq!(
            approval_statement("  set session PGVEIL.APPROVAL to 'x' ;\n"),
            Some(Set("x".into()))
        );
        assert_eq!(
            approval_statement("SET pgveil.approval TO DEFAULT"),
            Some(Reset(false))
        );
        assert_eq!(
            approval_statement("SET pgveil.approval=''"),
            Some(Reset(false))
        );
        assert_eq!(
            approval_statement("RESET pgveil.approval;"),
            Some(Reset(true))
        );
        assert_eq!(
            approval_statement("SET LOCAL pgveil.approval = 'x'"),
            Some(Invalid)
        );
        assert_eq!(
            approval_statement("SET pgveil.approval = 'x'; SELECT 1"),
            Some(Invalid)
        );
        assert_eq!(
            approval_statement("SET pgveil.approval_other = 'x'"),
            Some(Invalid)
        );
    }
}
