//! The check before execution: the statement's recorded facts
//! (`sql::BulkRead`) judged against one session's role, limits and
//! approval.
//!
//! A statement is refused when it reads a protected column the role sees
//! (clear, mask or pseudonym) from a protected table with neither a WHERE
//! clause nor a LIMIT, or when its LIMIT is above what one statement may
//! return. An approval that names every such table replaces both rules
//! with its own `max_rows`. Anything that passes is still counted during
//! execution (`WHERE true` passes here and is caught there).

use super::approval::Approval;
use super::{how_to_approve, GuardError, Limits};
use crate::sql::bulk::table_of;
use crate::sql::{BulkRead, ProtectedColumn, ReadKind};

/// Who is asking, and under which limits.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// Login user.
    pub user: &'a str,
    /// Policy role name.
    pub role: &'a str,
    /// The role's limits.
    pub limits: &'a Limits,
    /// The approval set on the session, if any.
    pub approval: Option<&'a Approval>,
}

/// What the check decided for a statement text that may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No statement reads protected data the role sees.
    Unguarded,
    /// Counted during execution under the role's limits.
    Limits,
    /// Counted under the session's approval (it must still be valid and,
    /// if single-use, not used: the caller checks and consumes it).
    Approved,
}

/// Judges every statement of one text; one refusal refuses the text.
pub fn check(
    reads: &[BulkRead],
    caller: Caller<'_>,
    visible: impl Fn(&ProtectedColumn) -> bool,
) -> Result<Verdict, GuardError> {
    let mut verdict = Verdict::Unguarded;
    for r in reads {
        let mut tables: Vec<String> = Vec::new();
        for c in r.columns.iter().filter(|c| visible(c)) {
            let t = table_of(&c.full_name);
            if !tables.iter().any(|x| x == t) {
                tables.push(t.to_owned());
            }
        }
        if tables.is_empty() && !r.opaque {
            continue;
        }
        let approved = caller
            .approval
            .filter(|a| !r.opaque && tables.iter().all(|t| a.covers(t)));
        if let Some(a) = approved {
            if r.kind == ReadKind::CopyTo {
                return Err(GuardError::CopyUnderApproval { id: a.id.clone() });
            }
            if let Some(limit) = r.limit.filter(|l| *l > a.max_rows) {
                return Err(GuardError::LimitAbove {
                    limit,
                    cap: format!("the {} rows allowed by approval {}", a.max_rows, a.id),
                    how: how_to_approve(caller.user, &tables),
                });
            }
            verdict = Verdict::Approved;
            continue;
        }
        if verdict == Verdict::Unguarded {
            verdict = Verdict::Limits;
        }
        let unbounded = r
            .unfiltered
            .iter()
            .find(|t| r.limit.is_none() && (r.opaque || tables.contains(t)));
        if let Some(table) = unbounded {
            // An approval that does not name the table: say so.
            if let Some(a) = caller.approval {
                return Err(a.wrong_table(table).into());
            }
            return Err(GuardError::Unbounded {
                what: match r.kind {
                    ReadKind::Select => "the SELECT",
                    ReadKind::Cursor(_) => "the cursor's query",
                    ReadKind::CopyTo => "the COPY",
                    ReadKind::Returning => "the RETURNING clause",
                },
                table: table.clone(),
                role: caller.role.to_owned(),
                limits: describe(caller.limits),
                how: how_to_approve(caller.user, &tables),
            });
        }
        if let (Some(limit), Some(cap)) = (r.limit, caller.limits.statement_rows()) {
            if limit > cap {
                if let Some((a, t)) = caller
                    .approval
                    .and_then(|a| tables.iter().find(|t| !a.covers(t)).map(|t| (a, t)))
                {
                    return Err(a.wrong_table(t).into());
                }
                return Err(GuardError::LimitAbove {
                    limit,
                    cap: format!(
                        "the {cap} rows one statement may return for policy role {} ({})",
                        caller.role,
                        describe(caller.limits)
                    ),
                    how: how_to_approve(caller.user, &tables),
                });
            }
        }
    }
    Ok(verdict)
}

/// A role's limits as configured, for messages.
pub fn describe(l: &Limits) -> String {
    let mut parts = Vec::new();
    if let Some(n) = l.max_rows {
        parts.push(format!("max_rows = {n}"));
    }
    if let Some(n) = l.max_bytes {
        parts.push(format!("max_bytes = {n}"));
    }
    if let Some(w) = l.window {
        parts.push(format!(
            "window_rows = {} per {}",
            w.rows,
            humantime::format_duration(w.period)
        ));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::LogicalType;
    use crate::policy::Protection;

    fn col(name: &str) -> ProtectedColumn {
        ProtectedColumn {
            full_name: format!("public.guests.{name}"),
            logical_type: LogicalType::Text,
            protection: Protection::Randomized,
            level: 3,
            legacy: None,
        }
    }

    fn read(unfiltered: bool, limit: Option<u64>) -> BulkRead {
        BulkRead {
            kind: ReadKind::Select,
            columns: vec![col("phone")],
            opaque: false,
            unfiltered: if unfiltered {
                vec!["public.guests".into()]
            } else {
                Vec::new()
            },
            limit,
        }
    }

    fn approval(tables: &[&str]) -> Approval {
        Approval {
            id: "id1".into(),
            requester: "alice".into(),
            approver: "bob".into(),
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
            max_rows: 500,
            issued_unix_ms: 0,
            expires_unix_ms: u64::MAX,
            single_use: false,
            reason: "r".into(),
        }
    }

    #[test]
    fn decides_per_role_and_approval() {
        let limits = Limits {
            max_rows: Some(100),
            max_bytes: None,
            window: None,
            precheck: super::super::Precheck::None,
        };
        let caller = Caller {
            user: "alice",
            role: "frontdesk",
            limits: &limits,
            approval: None,
        };
        let all = |_: &ProtectedColumn| true;
        let none = |_: &ProtectedColumn| false;
        assert!(matches!(
            check(&[read(true, None)], caller, all),
            Err(GuardError::Unbounded { .. })
        ));
        // A column the role does not see at all is no bulk read.
        assert_eq!(
            check(&[read(true, None)], caller, none).unwrap(),
            Verdict::Unguarded
        );
        assert_eq!(
            check(&[read(true, Some(20))], caller, all).unwrap(),
            Verdict::Limits
        );
        assert_eq!(
            check(&[read(false, None)], caller, all).unwrap(),
            Verdict::Limits
        );
        assert!(matches!(
            check(&[read(false, Some(101))], caller, all),
            Err(GuardError::LimitAbove { limit: 101, .. })
        ));
        let a = approval(&["public.guests"]);
        let approved = Caller {
            approval: Some(&a),
            ..caller
        };
        assert_eq!(
            check(&[read(true, None)], approved, all).unwrap(),
            Verdict::Approved
        );
        assert!(matches!(
            check(&[read(true, Some(501))], approved, all),
            Err(GuardError::LimitAbove { limit: 501, .. })
        ));
        let b = approval(&["public.stays"]);
        let wrong = Caller {
            approval: Some(&b),
            ..caller
        };
        assert!(matches!(
            check(&[read(true, None)], wrong, all),
            Err(GuardError::Approval(
                super::super::ApprovalError::WrongTable { .. }
            ))
        ));
    }
}
