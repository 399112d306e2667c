//! Statements that change whose policy applies: `SET ROLE`, `RESET ROLE`,
//! `SET SESSION AUTHORIZATION`, `DISCARD ALL`, and the savepoint commands
//! that can undo them.
//!
//! The policy role follows PostgreSQL's current user, and PostgreSQL does
//! not report `role` to the client, so pgveil must read these statements
//! itself and replay their effect when the server confirms them. A role
//! change it cannot follow — `set_config('role', …)`, a `SET ROLE` inside a
//! DO block or function body, or one buried in a multi-statement string —
//! is refused: following the login role after the session switched to a
//! narrower one would show that narrower role what it may not see.
//!
//! Most statements never mention the keywords involved; a cheap
//! case-insensitive scan lets them skip parsing, as [`super::Prefilter`]
//! does for protected names.

use super::Refusal;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use sqlparser::ast::{
    ContextModifier, DiscardObject, Expr, Ident, ObjectName, Reset, Set,
    SetSessionAuthorizationParamKind, Statement, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;
use std::sync::OnceLock;

/// What one statement does to the session's role state once the server
/// confirms it with CommandComplete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleEffect {
    /// `SET [LOCAL] ROLE x` (`Some`) or `SET ROLE NONE` / `RESET ROLE` (`None`).
    SetRole {
        /// The PostgreSQL role, folded as PostgreSQL folds identifiers.
        role: Option<String>,
        /// `SET LOCAL`: undone at the end of the transaction.
        local: bool,
    },
    /// `SET [LOCAL] SESSION AUTHORIZATION x` (`Some`) or `… DEFAULT` /
    /// `RESET SESSION AUTHORIZATION` (`None`); it also cancels `SET ROLE`.
    SetSessionAuthorization {
        /// The new session user; `None` returns to the login user.
        user: Option<String>,
        /// `SET LOCAL`: undone at the end of the transaction.
        local: bool,
    },
    /// `DISCARD ALL`: back to the login user with no role set.
    DiscardAll,
    /// `SAVEPOINT name`.
    Savepoint(String),
    /// `RELEASE [SAVEPOINT] name`.
    Release(String),
    /// `ROLLBACK TO [SAVEPOINT] name`.
    RollbackTo(String),
}

/// Words without which a statement cannot change the role state.
const KEYWORDS: &[&str] = &[
    "role",
    "authoriz",
    "discard",
    "savepoint",
    "release",
    "rollback",
    "set_config",
    // A U&"..." identifier can spell `role` without its letters.
    "u&",
];

fn keywords() -> Option<&'static AhoCorasick> {
    static AC: OnceLock<Option<AhoCorasick>> = OnceLock::new();
    AC.get_or_init(|| {
        AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(KEYWORDS)
            .ok()
    })
    .as_ref()
}

/// The role effects of `sql`, one entry per statement, or `None` when the
/// text cannot change the role state (the common case, found without
/// parsing).
///
/// A role change pgveil cannot follow is refused. A multi-statement string
/// that changes the role is refused too: its statements' replies cannot be
/// matched to the change reliably enough to switch policies mid-string.
pub fn role_effects(sql: &str) -> Result<Option<Vec<Option<RoleEffect>>>, Refusal> {
    // If the scanner could not be built, fail towards analysing everything.
    if keywords().is_some_and(|ac| !ac.is_match(sql)) {
        return Ok(None);
    }
    let statements = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(s) => s,
        Err(_) => return unparsed_effect(sql).map(|e| e.map(|e| vec![Some(e)])),
    };
    let unicode_names = sql.to_ascii_lowercase().contains("u&");
    let mut effects = Vec::with_capacity(statements.len());
    let mut changes_role = false;
    for st in &statements {
        // `SET U&"\0072ole"` names `role` without its letters; the parser
        // keeps the escapes, so pgveil cannot tell which setting it is.
        if unicode_names && matches!(st, Statement::Set(_) | Statement::Reset(_)) {
            return Err(unfollowable());
        }
        let effect = statement_effect(st)?;
        changes_role |= matches!(
            effect,
            Some(
                RoleEffect::SetRole { .. }
                    | RoleEffect::SetSessionAuthorization { .. }
                    | RoleEffect::DiscardAll
            )
        );
        effects.push(effect);
    }
    if changes_role && statements.len() > 1 {
        return Err(Refusal::unsupported(
            "a statement that changes the role (SET ROLE, SET SESSION AUTHORIZATION, DISCARD ALL) \
             must be sent on its own, not in a multi-statement string, so pgveil can apply the \
             new role's policy to exactly the statements that follow it",
        ));
    }
    if effects.iter().all(Option::is_none) {
        return Ok(None);
    }
    Ok(Some(effects))
}

/// A statement the parser rejects: the `SET [LOCAL] role TO name` forms it
/// lacks are read by hand; anything else that may change the role is
/// refused.
fn unparsed_effect(sql: &str) -> Result<Option<RoleEffect>, Refusal> {
    let trimmed = sql.trim().trim_end_matches(';');
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    let is = |w: &&str, kw: &str| w.eq_ignore_ascii_case(kw);
    let (local, rest) = match words.as_slice() {
        [set, scope, rest @ ..] if is(set, "set") && is(scope, "local") => (true, rest),
        [set, scope, rest @ ..] if is(set, "set") && is(scope, "session") => (false, rest),
        [set, rest @ ..] if is(set, "set") => (false, rest),
        _ => (false, &[][..]),
    };
    if let [guc, to, name] = rest {
        if is(to, "to") || *to == "=" {
            if let Some(name) = plain_name(name) {
                if is(guc, "role") {
                    return Ok(Some(RoleEffect::SetRole { role: name, local }));
                }
                if is(guc, "session_authorization") {
                    return Ok(Some(RoleEffect::SetSessionAuthorization {
                        user: name,
                        local,
                    }));
                }
            }
        }
    }
    let lower = trimmed.to_ascii_lowercase();
    let set_or_reset = words
        .first()
        .is_some_and(|w| is(w, "set") || is(w, "reset"));
    if looks_like_role_change(sql)
        || lower.contains("set_config")
        || (set_or_reset && (lower.contains("u&") || lower.contains("role")))
    {
        return Err(unfollowable());
    }
    Ok(None)
}

/// A role name written as a bare word, `"quoted"` or `'string'`; `Some(None)`
/// for `DEFAULT`/`NONE`; `None` when it is anything else.
fn plain_name(word: &str) -> Option<Option<String>> {
    let inner = |q: char| {
        word.strip_prefix(q)
            .and_then(|w| w.strip_suffix(q))
            .filter(|w| !w.contains(q))
    };
    let name = if let Some(n) = inner('"') {
        n.to_owned()
    } else if let Some(n) = inner('\'') {
        n.to_owned()
    } else if word
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
    {
        if word.eq_ignore_ascii_case("default") || word.eq_ignore_ascii_case("none") {
            return Some(None);
        }
        word.to_lowercase()
    } else {
        return None;
    };
    Some(Some(name))
}

fn statement_effect(st: &Statement) -> Result<Option<RoleEffect>, Refusal> {
    match st {
        Statement::Set(set) => set_effect(set),
        Statement::Reset(r) => Ok(match &r.reset {
            Reset::SessionAuthorization => Some(RoleEffect::SetSessionAuthorization {
                user: None,
                local: false,
            }),
            Reset::ConfigurationParameter(name) => match guc(name).as_deref() {
                Some("role") => Some(RoleEffect::SetRole {
                    role: None,
                    local: false,
                }),
                Some("session_authorization") => Some(RoleEffect::SetSessionAuthorization {
                    user: None,
                    local: false,
                }),
                _ => None,
            },
            // RESET ALL leaves role and session_authorization alone.
            Reset::ALL => None,
        }),
        Statement::Discard {
            object_type: DiscardObject::ALL,
        } => Ok(Some(RoleEffect::DiscardAll)),
        Statement::Savepoint { name } => Ok(Some(RoleEffect::Savepoint(fold(name)))),
        Statement::ReleaseSavepoint { name } => Ok(Some(RoleEffect::Release(fold(name)))),
        Statement::Rollback {
            savepoint: Some(name),
            ..
        } => Ok(Some(RoleEffect::RollbackTo(fold(name)))),
        other => {
            refuse_hidden_changes(other)?;
            Ok(None)
        }
    }
}

fn set_effect(set: &Set) -> Result<Option<RoleEffect>, Refusal> {
    let local = |scope: &Option<ContextModifier>| matches!(scope, Some(ContextModifier::Local));
    match set {
        Set::SetRole {
            context_modifier,
            role_name,
        } => Ok(Some(RoleEffect::SetRole {
            role: role_name.as_ref().map(fold),
            local: local(context_modifier),
        })),
        Set::SetSessionAuthorization(param) => Ok(Some(RoleEffect::SetSessionAuthorization {
            user: match &param.kind {
                SetSessionAuthorizationParamKind::Default => None,
                SetSessionAuthorizationParamKind::User(name) => Some(fold(name)),
            },
            local: matches!(param.scope, ContextModifier::Local),
        })),
        Set::SingleAssignment {
            scope,
            variable,
            values,
            ..
        } => match guc(variable).as_deref() {
            Some("role") => Ok(Some(RoleEffect::SetRole {
                role: assigned_name(values)?,
                local: local(scope),
            })),
            Some("session_authorization") => Ok(Some(RoleEffect::SetSessionAuthorization {
                user: assigned_name(values)?,
                local: local(scope),
            })),
            _ => Ok(None),
        },
        Set::ParenthesizedAssignments { variables, .. } => {
            if variables.iter().any(is_role_guc) {
                return Err(unfollowable());
            }
            Ok(None)
        }
        Set::MultipleAssignments { assignments } => {
            if assignments.iter().any(|a| is_role_guc(&a.name)) {
                return Err(unfollowable());
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// The role named by `SET role = …` / `TO …`: an identifier or a string;
/// `DEFAULT` and `'none'` mean no role.
fn assigned_name(values: &[Expr]) -> Result<Option<String>, Refusal> {
    let [value] = values else {
        return Err(unfollowable());
    };
    let name = match value {
        Expr::Identifier(id) => fold(id),
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => s.clone(),
            _ => return Err(unfollowable()),
        },
        // `DEFAULT` is a keyword the parser keeps in its own form.
        other if other.to_string().eq_ignore_ascii_case("default") => return Ok(None),
        _ => return Err(unfollowable()),
    };
    if name.eq_ignore_ascii_case("default") || name.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    Ok(Some(name))
}

/// Refuses a statement that could change the role in a way the reply does
/// not reveal: `set_config` on `role`/`session_authorization` (or on a name
/// pgveil cannot read), and a role change inside a body of code.
fn refuse_hidden_changes(st: &Statement) -> Result<(), Refusal> {
    let mut calls = 0usize;
    let flow = sqlparser::ast::visit_expressions(st, |expr| {
        if let Expr::Function(f) = expr {
            let is_set_config = f
                .name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|id| id.value.eq_ignore_ascii_case("set_config"));
            calls += usize::from(is_set_config);
            if is_set_config && set_config_may_touch_role(f) {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    if flow.is_break() {
        return Err(Refusal {
            sqlstate: "42501",
            message: "pgveil: set_config('role', …) or set_config('session_authorization', …) \
                      cannot be followed by pgveil's role policy; use SET ROLE or \
                      SET SESSION AUTHORIZATION as a statement of its own"
                .into(),
        });
    }
    // What is left: the words inside a string, a DO block or a function
    // body, which the parser does not look into.
    let text = st.to_string();
    let mentions = text.to_ascii_lowercase().matches("set_config").count();
    if mentions > calls || looks_like_role_change(&text) {
        return Err(unfollowable());
    }
    Ok(())
}

/// Whether a `set_config(name, …)` call may set the role: its first
/// argument is `role`/`session_authorization`, or not a plain string.
fn set_config_may_touch_role(f: &sqlparser::ast::Function) -> bool {
    use sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments};
    let FunctionArguments::List(list) = &f.args else {
        return true;
    };
    let Some(first) = list.args.first() else {
        return true;
    };
    let expr = match first {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => e,
        FunctionArg::Named {
            arg: FunctionArgExpr::Expr(e),
            ..
        } => e,
        _ => return true,
    };
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => {
                let s = s.trim();
                s.eq_ignore_ascii_case("role") || s.eq_ignore_ascii_case("session_authorization")
            }
            _ => true,
        },
        _ => true,
    }
}

/// A loose text test for role changes the parser cannot see: `set role`,
/// `set local role`, `set session role`, `session authorization`,
/// `set_config` (after folding case and whitespace). False positives refuse
/// a statement that would have been harmless; that is the safe side.
fn looks_like_role_change(sql: &str) -> bool {
    let mut folded = String::with_capacity(sql.len());
    let mut space = false;
    for c in sql.chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !folded.is_empty() {
            folded.push(' ');
        }
        space = false;
        folded.extend(c.to_lowercase());
    }
    [
        "set role",
        "set local role",
        "set session role",
        "session authorization",
    ]
    .iter()
    .any(|p| folded.contains(p))
}

fn unfollowable() -> Refusal {
    Refusal {
        sqlstate: "42501",
        message:
            "pgveil: this statement may change the role in a way pgveil cannot follow \
                  (inside a function body, DO block, dynamic SQL or an unusual form); run \
                  SET ROLE / RESET ROLE / SET SESSION AUTHORIZATION as a plain statement of its own"
                .into(),
    }
}

/// A GUC name as PostgreSQL folds it, when it is a single part.
fn guc(name: &ObjectName) -> Option<String> {
    match name.0.as_slice() {
        [part] => part.as_ident().map(fold),
        _ => None,
    }
}

fn is_role_guc(name: &ObjectName) -> bool {
    matches!(guc(name).as_deref(), Some("role" | "session_authorization"))
}

/// An identifier as PostgreSQL stores it: unquoted ones fold to lower case.
fn fold(id: &Ident) -> String {
    match id.quote_style {
        Some(_) => id.value.clone(),
        None => id.value.to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Option<RoleEffect> {
        role_effects(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .and_then(|mut v| v.pop().flatten())
    }

    fn role(r: Option<&str>, local: bool) -> Option<RoleEffect> {
        Some(RoleEffect::SetRole {
            role: r.map(str::to_owned),
            local,
        })
    }

    #[test]
    fn ordinary_statements_skip_parsing() {
        assert_eq!(role_effects("SELECT * FROM guests WHERE id = 1"), Ok(None));
        assert_eq!(role_effects("SET statement_timeout = 0"), Ok(None));
        assert_eq!(role_effects("RESET ALL"), Ok(None));
    }

    #[test]
    fn set_role_forms() {
        assert_eq!(one("SET ROLE frontdesk"), role(Some("frontdesk"), false));
        assert_eq!(one("set role FrontDesk"), role(Some("frontdesk"), false));
        assert_eq!(
            one("SET ROLE \"FrontDesk\""),
            role(Some("FrontDesk"), false)
        );
        assert_eq!(
            one("SET LOCAL ROLE frontdesk"),
            role(Some("frontdesk"), true)
        );
        assert_eq!(
            one("SET SESSION ROLE frontdesk"),
            role(Some("frontdesk"), false)
        );
        assert_eq!(one("SET ROLE NONE"), role(None, false));
        assert_eq!(one("RESET ROLE"), role(None, false));
        assert_eq!(
            one("SET role = 'frontdesk'"),
            role(Some("frontdesk"), false)
        );
        assert_eq!(one("SET role TO DEFAULT"), role(None, false));
        assert_eq!(
            one("SET LOCAL role TO frontdesk"),
            role(Some("frontdesk"), true)
        );
        assert_eq!(one("SET role TO 'Mixed'"), role(Some("Mixed"), false));
        assert_eq!(
            one("set local role = \"Mixed\";"),
            role(Some("Mixed"), true)
        );
    }

    #[test]
    fn session_authorization_forms() {
        let auth = |u: Option<&str>, local| {
            Some(RoleEffect::SetSessionAuthorization {
                user: u.map(str::to_owned),
                local,
            })
        };
        assert_eq!(
            one("SET SESSION AUTHORIZATION bob"),
            auth(Some("bob"), false)
        );
        assert_eq!(one("SET SESSION AUTHORIZATION DEFAULT"), auth(None, false));
        assert_eq!(one("RESET SESSION AUTHORIZATION"), auth(None, false));
        assert_eq!(one("DISCARD ALL"), Some(RoleEffect::DiscardAll));
    }

    #[test]
    fn savepoints() {
        assert_eq!(one("SAVEPOINT a"), Some(RoleEffect::Savepoint("a".into())));
        assert_eq!(
            one("RELEASE SAVEPOINT A"),
            Some(RoleEffect::Release("a".into()))
        );
        assert_eq!(
            one("ROLLBACK TO a"),
            Some(RoleEffect::RollbackTo("a".into()))
        );
        assert_eq!(role_effects("ROLLBACK"), Ok(None));
    }

    #[test]
    fn hidden_changes_are_refused() {
        for sql in [
            "SELECT set_config('role', 'frontdesk', false)",
            "SELECT set_config('ROLE', 'frontdesk', true)",
            "SELECT set_config('session_authorization', 'bob', false)",
            "SELECT set_config(name, 'x', false) FROM t",
            "DO $$ BEGIN SET ROLE frontdesk; END $$",
            "DO $$ BEGIN EXECUTE 'SET  ROLE frontdesk'; END $$",
            "DO $$ BEGIN PERFORM set_config('ro' || 'le', 'x', false); END $$",
            "SET ROLE frontdesk; SELECT 1",
            "SET U&\"\\0072ole\" = 'frontdesk'",
        ] {
            let got = role_effects(sql);
            assert!(
                matches!(&got, Err(r) if r.sqlstate == "42501" || r.sqlstate == "0A000"),
                "{sql}: {got:?}"
            );
        }
    }

    #[test]
    fn harmless_set_config_passes() {
        assert_eq!(
            role_effects("SELECT set_config('application_name', 'x', false)"),
            Ok(None)
        );
        assert_eq!(role_effects("SELECT rolname FROM pg_roles"), Ok(None));
        assert_eq!(role_effects("CREATE ROLE x NOLOGIN"), Ok(None));
    }
}
