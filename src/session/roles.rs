//! Which PostgreSQL role the session is acting as, as the server sees it.
//!
//! The policy role follows PostgreSQL's current user, which `SET ROLE` and
//! `SET SESSION AUTHORIZATION` change and transactions and savepoints
//! undo. PostgreSQL does not report `role` to the client, so this replays
//! the server's rules (the GUC stack) from the statements the client sent
//! and the replies the server gave:
//!
//! * an effect applies when its statement's CommandComplete arrives (a
//!   failed `SET ROLE` changes nothing);
//! * `SET` survives the transaction only if it commits, `SET LOCAL` never;
//! * `ROLLBACK TO` a savepoint restores the state at the savepoint;
//! * an implicit transaction (no BEGIN) commits at ReadyForQuery unless an
//!   error was reported in it.

use crate::sql::role::RoleEffect;

/// The two settings that decide the current user.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    /// `session_authorization`: the login user unless a superuser changed it.
    session_user: String,
    /// `role`: `None` when no `SET ROLE` is in effect.
    role: Option<String>,
}

/// Tracks the session's current PostgreSQL user across transactions.
#[derive(Debug)]
pub(super) struct RoleTracker {
    login: String,
    /// The state as of the last transaction end.
    committed: State,
    /// What a commit would keep: `committed` plus this transaction's `SET`s.
    kept: State,
    /// What is in effect now: `kept` plus this transaction's `SET LOCAL`s.
    current: State,
    /// Savepoints of the open transaction: name, `kept`, `current`.
    savepoints: Vec<(String, State, State)>,
    /// An ErrorResponse arrived since the last transaction boundary.
    failed: bool,
    /// Bumped whenever the current user changes, so plans made for the
    /// previous one are recognised as stale.
    generation: u64,
}

impl RoleTracker {
    /// A session that logged in as `login`, with `role` from the startup
    /// packet, if it set one.
    pub(super) fn new(login: &str, role: Option<String>) -> Self {
        let state = State {
            session_user: login.to_owned(),
            role,
        };
        RoleTracker {
            login: login.to_owned(),
            committed: state.clone(),
            kept: state.clone(),
            current: state,
            savepoints: Vec::new(),
            failed: false,
            generation: 0,
        }
    }

    /// The PostgreSQL role whose policy applies now.
    pub(super) fn current_user(&self) -> &str {
        self.current
            .role
            .as_deref()
            .unwrap_or(&self.current.session_user)
    }

    /// Changes whenever [`current_user`](Self::current_user) may have.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// The server confirmed a statement with this effect.
    pub(super) fn apply(&mut self, effect: &RoleEffect) {
        let before = self.current_user().to_owned();
        match effect {
            RoleEffect::SetRole { role, local } => {
                self.current.role = role.clone();
                if !local {
                    self.kept.role = role.clone();
                }
            }
            RoleEffect::SetSessionAuthorization { user, local } => {
                let state = State {
                    session_user: user.clone().unwrap_or_else(|| self.login.clone()),
                    role: None,
                };
                if !local {
                    self.kept = state.clone();
                }
                self.current = state;
            }
            RoleEffect::DiscardAll => {
                let state = State {
                    session_user: self.login.clone(),
                    role: None,
                };
                self.kept = state.clone();
                self.current = state;
            }
            RoleEffect::Savepoint(name) => {
                self.savepoints
                    .push((name.clone(), self.kept.clone(), self.current.clone()));
            }
            RoleEffect::Release(name) => {
                if let Some(i) = self.savepoint(name) {
                    self.savepoints.truncate(i);
                }
            }
            RoleEffect::RollbackTo(name) => {
                if let Some(i) = self.savepoint(name) {
                    let (_, kept, current) = self.savepoints[i].clone();
                    self.kept = kept;
                    self.current = current;
                    self.savepoints.truncate(i + 1);
                    self.failed = false;
                }
            }
        }
        self.bump_if_changed(&before);
    }

    /// CommandComplete of a statement without a tracked effect: `COMMIT`
    /// and `ROLLBACK` end the transaction (`PREPARE TRANSACTION` keeps its
    /// settings as a commit does).
    pub(super) fn on_command_tag(&mut self, tag: &[u8]) {
        if tag == b"COMMIT" || tag == b"PREPARE TRANSACTION" {
            self.end_transaction(true);
        } else if tag == b"ROLLBACK" {
            self.end_transaction(false);
        }
    }

    /// The server reported an error; an implicit transaction rolls back.
    pub(super) fn on_error(&mut self) {
        self.failed = true;
    }

    /// ReadyForQuery: status `I` means no transaction is open any more.
    pub(super) fn on_ready(&mut self, status: u8) {
        if status == b'I' {
            let commit = !self.failed;
            self.end_transaction(commit);
        }
    }

    fn end_transaction(&mut self, commit: bool) {
        let before = self.current_user().to_owned();
        if commit {
            self.committed = self.kept.clone();
        }
        self.kept = self.committed.clone();
        self.current = self.committed.clone();
        self.savepoints.clear();
        self.failed = false;
        self.bump_if_changed(&before);
    }

    fn savepoint(&self, name: &str) -> Option<usize> {
        self.savepoints.iter().rposition(|(n, _, _)| n == name)
    }

    fn bump_if_changed(&mut self, before: &str) {
        if self.current_user() != before {
            self.generation += 1;
        }
    }
}

/// The role a StartupMessage sets, through a `role` parameter or
/// `-c role=…` / `--role=…` in `options`.
pub(super) fn startup_role(payload: &[u8]) -> Option<String> {
    let mut role = crate::proto::startup::param(payload, "role").map(str::to_owned);
    if let Some(options) = crate::proto::startup::param(payload, "options") {
        let mut words = options.split_whitespace();
        while let Some(w) = words.next() {
            let setting = match w {
                "-c" => words.next(),
                _ => w.strip_prefix("-c").or_else(|| w.strip_prefix("--")),
            };
            if let Some(value) = setting.and_then(|s| s.strip_prefix("role=")) {
                role = Some(value.to_owned());
            }
        }
    }
    role.filter(|r| !r.eq_ignore_ascii_case("none") && !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(role: &str, local: bool) -> RoleEffect {
        RoleEffect::SetRole {
            role: Some(role.into()),
            local,
        }
    }

    #[test]
    fn set_role_outside_a_transaction_sticks() {
        let mut t = RoleTracker::new("alice", None);
        t.apply(&set("frontdesk", false));
        t.on_ready(b'I');
        assert_eq!(t.current_user(), "frontdesk");
        t.apply(&RoleEffect::SetRole {
            role: None,
            local: false,
        });
        t.on_ready(b'I');
        assert_eq!(t.current_user(), "alice");
    }

    #[test]
    fn rollback_undoes_set_and_local_never_survives() {
        let mut t = RoleTracker::new("alice", None);
        t.apply(&set("frontdesk", false));
        t.on_ready(b'T');
        assert_eq!(t.current_user(), "frontdesk");
        t.on_command_tag(b"ROLLBACK");
        assert_eq!(t.current_user(), "alice");

        t.apply(&set("frontdesk", true));
        assert_eq!(t.current_user(), "frontdesk");
        t.on_command_tag(b"COMMIT");
        assert_eq!(t.current_user(), "alice");
    }

    #[test]
    fn failed_implicit_transaction_rolls_back() {
        let mut t = RoleTracker::new("alice", None);
        t.apply(&set("frontdesk", false));
        t.on_error();
        t.on_ready(b'I');
        assert_eq!(t.current_user(), "alice");
    }

    #[test]
    fn rollback_to_savepoint_restores_the_role_then() {
        let mut t = RoleTracker::new("alice", None);
        t.apply(&set("frontdesk", false));
        t.apply(&RoleEffect::Savepoint("a".into()));
        t.apply(&RoleEffect::SetRole {
            role: None,
            local: false,
        });
        assert_eq!(t.current_user(), "alice");
        t.apply(&RoleEffect::RollbackTo("a".into()));
        assert_eq!(t.current_user(), "frontdesk");
        t.on_command_tag(b"COMMIT");
        assert_eq!(t.current_user(), "frontdesk");
    }

    #[test]
    fn session_authorization_cancels_set_role() {
        let mut t = RoleTracker::new("postgres", None);
        t.apply(&set("frontdesk", false));
        t.apply(&RoleEffect::SetSessionAuthorization {
            user: Some("bob".into()),
            local: false,
        });
        t.on_ready(b'I');
        assert_eq!(t.current_user(), "bob");
        let g = t.generation();
        t.apply(&RoleEffect::DiscardAll);
        t.on_ready(b'I');
        assert_eq!(t.current_user(), "postgres");
        assert!(t.generation() > g);
    }

    #[test]
    fn startup_packet_role() {
        let packet = |pairs: &[(&str, &str)]| {
            let mut p = Vec::new();
            for (k, v) in pairs {
                p.extend_from_slice(k.as_bytes());
                p.push(0);
                p.extend_from_slice(v.as_bytes());
                p.push(0);
            }
            p.push(0);
            p
        };
        assert_eq!(startup_role(&packet(&[("user", "alice")])), None);
        assert_eq!(
            startup_role(&packet(&[("user", "a"), ("options", "-c role=frontdesk")])),
            Some("frontdesk".into())
        );
        assert_eq!(
            startup_role(&packet(&[
                ("user", "a"),
                ("options", "--role=x -c work_mem=1MB")
            ])),
            Some("x".into())
        );
        assert_eq!(
            startup_role(&packet(&[("user", "a"), ("role", "y")])),
            Some("y".into())
        );
    }
}
