//! What the audit keeps per statement text: the fingerprint and protected
//! columns planning found ([`Planned`], once per Parse or simple Query,
//! shared by every execution), and the record parts written for its first
//! execution so that later ones copy them. [`ResultColumns`] lets a
//! record refer to the session's result plan without copying it.

use std::sync::{Arc, OnceLock};

use super::chain::Head;
use super::fingerprint::fingerprint;
use super::record::{ColumnAction, ColumnUse};
use crate::policy::role::{Action, PolicyRole};
use crate::rewrite::Snapshot;
use crate::sql::{Plan, Refusal};

/// A result's protected columns and what the role is shown of each. An
/// execution keeps a shared reference to it and reads it only when its
/// record is sealed, after the reply has left: nothing is copied while the
/// client waits, and a later execution of the same result shape is
/// recognised by identity.
pub trait ResultColumns: std::fmt::Debug + Send + Sync {
    /// Calls `f` with each protected column's `schema.table.column` and
    /// the role's action on it, in result order.
    fn each(&self, f: &mut dyn FnMut(&str, &Action));
}

/// The record head written for a statement's first execution, with the
/// result it was written for.
#[derive(Debug)]
pub(super) struct Written {
    pub(super) result: Option<Arc<dyn ResultColumns>>,
    pub(super) shown: Vec<ColumnUse>,
    pub(super) head: Head,
}

/// Whether two results are the same object (their data pointers; vtables
/// of the same type may differ between codegen units).
pub(super) fn same_result(a: &Arc<dyn ResultColumns>, b: &Arc<dyn ResultColumns>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// What planning said about one statement text, kept per prepared
/// statement and portal, and shared by every record of its executions.
#[derive(Debug)]
pub struct Planned {
    pub(super) fingerprint: Arc<str>,
    pub(super) columns: Arc<[ColumnUse]>,
    /// SQLSTATE when pgveil refused the statement at planning.
    pub(super) refused: Option<&'static str>,
    /// The text touches nothing protected but its result may carry
    /// protected columns (`FETCH`, `EXECUTE`): a record is opened only if
    /// it does.
    pub(super) result_only: bool,
    /// The record's head (fingerprint, tables and columns) as written for
    /// the first execution, with the result it was written for.
    pub(super) written: OnceLock<Written>,
}

impl Planned {
    /// What the audit needs from a plan; `None` when the statement touches
    /// no protected column (and is not refused). `role` decides what a
    /// `COPY … TO STDOUT` shows of each column.
    pub fn of(
        sql: &str,
        plan: &Result<Arc<Plan>, Refusal>,
        snapshot: &Snapshot,
        role: Option<&PolicyRole>,
    ) -> Option<Self> {
        let encrypts = |name: &str| {
            snapshot
                .catalog()
                .protected_columns()
                .find(|c| c.full_name == name)
                .is_some_and(|c| c.protection.encrypts())
        };
        let columns: Vec<ColumnUse> = match plan {
            Ok(p) => match &**p {
                Plan::Passthrough => return None,
                Plan::Rewrite(rw) if rw.touched.is_empty() => return None,
                Plan::Rewrite(rw) => rw
                    .touched
                    .iter()
                    .map(|c| ColumnUse {
                        column: Arc::from(c.as_str()),
                        action: if encrypts(c) {
                            ColumnAction::Encrypted
                        } else {
                            ColumnAction::Clear
                        },
                    })
                    .collect(),
                Plan::CopyIn(copy) => copy
                    .fields
                    .iter()
                    .flatten()
                    .map(|c| ColumnUse {
                        column: Arc::from(c.full_name.as_str()),
                        action: ColumnAction::Encrypted,
                    })
                    .collect(),
                Plan::CopyOut(copy) => {
                    let nobody = PolicyRole::nobody("");
                    let role = role.unwrap_or(&nobody);
                    copy.fields
                        .iter()
                        .flatten()
                        .map(|c| ColumnUse {
                            column: Arc::from(c.full_name.as_str()),
                            action: ColumnAction::of(&snapshot.action(role, c)),
                        })
                        .collect()
                }
            },
            Err(_) => Vec::new(),
        };
        Some(Planned {
            fingerprint: Arc::from(fingerprint(sql)),
            columns: columns.into(),
            refused: plan.as_ref().err().map(|r| r.sqlstate),
            result_only: false,
            written: OnceLock::new(),
        })
    }

    /// For a prepared statement [`Planned::of`] found untouched: kept when
    /// its result may still carry protected columns (`FETCH` from a
    /// cursor, `EXECUTE` of an SQL-level prepared statement), so that a
    /// record opened by its result has its fingerprint.
    pub fn result_only(sql: &str) -> Option<Self> {
        let word = sql
            .trim_start()
            .split(|c: char| !c.is_ascii_alphabetic())
            .next()
            .unwrap_or_default();
        if !(word.eq_ignore_ascii_case("fetch") || word.eq_ignore_ascii_case("execute")) {
            return None;
        }
        Some(Planned {
            fingerprint: Arc::from(fingerprint(sql)),
            columns: Arc::from([]),
            refused: None,
            result_only: true,
            written: OnceLock::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fetch_and_execute_are_kept_for_their_results() {
        for sql in [
            "FETCH 2 FROM c",
            "  fetch next from c",
            "EXECUTE s(1)",
            "execute\ts",
        ] {
            let p = Planned::result_only(sql).expect(sql);
            assert!(p.result_only && p.columns.is_empty(), "{sql}");
        }
        assert_eq!(
            &*Planned::result_only("FETCH 2 FROM c")
                .expect("fetch")
                .fingerprint,
            "FETCH ? FROM c"
        );
        for sql in ["SELECT 1", "FETCHED", "EXECUTED", "MOVE 1 IN c", ""] {
            assert!(Planned::result_only(sql).is_none(), "{sql}");
        }
    }
}
