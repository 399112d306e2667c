//! Rolling per-user windows: rows of protected data one user received
//! across all its connections within the last `period`.
//!
//! Paging through a table twenty rows at a time never trips a per-statement
//! cap; the window catches it. Counters live in a `DashMap` keyed by user,
//! shared by every session of the proxy. A user's log holds at most
//! [`MAX_ENTRIES`] entries: a new charge joins the newest entry when that
//! entry is recent, and the joined entry takes the newer timestamp, so rows
//! are never forgotten early (the window errs on the strict side).

use dashmap::DashMap;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Entries per user log; bounds memory whatever the query rate.
const MAX_ENTRIES: u32 = 64;

/// Every user's rolling log.
#[derive(Debug, Default)]
pub struct Windows {
    users: DashMap<String, Log>,
}

#[derive(Debug, Default)]
struct Log {
    /// (time of the newest rows in the entry, rows), oldest first.
    entries: VecDeque<(Instant, u64)>,
    total: u64,
}

impl Log {
    fn prune(&mut self, period: Duration, now: Instant) {
        while let Some(&(at, rows)) = self.entries.front() {
            if now.saturating_duration_since(at) < period {
                break;
            }
            self.total = self.total.saturating_sub(rows);
            self.entries.pop_front();
        }
    }

    /// When enough rows leave the window for `needed` more to fit under
    /// `limit`, for a caller that found they do not fit now; `None` if they
    /// never can (`needed` > `limit`).
    fn frees_at(&self, limit: u64, needed: u64, period: Duration) -> Option<Instant> {
        if needed > limit {
            return None;
        }
        let mut used = self.total;
        for &(at, rows) in &self.entries {
            used = used.saturating_sub(rows);
            if used + needed <= limit {
                return Some(at + period);
            }
        }
        None
    }
}

/// Why a charge did not fit the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowFull {
    /// Rows already received within the window.
    pub used: u64,
    /// When enough rows leave the window for the refused amount to fit, if
    /// it ever can.
    pub frees_in: Option<Duration>,
}

impl Windows {
    /// Rows `user` may still receive now under `limit` per `period`.
    pub fn remaining(&self, user: &str, limit: u64, period: Duration, now: Instant) -> u64 {
        match self.users.get_mut(user) {
            Some(mut log) => {
                log.prune(period, now);
                limit.saturating_sub(log.total)
            }
            None => limit,
        }
    }

    /// Adds `rows` to `user`'s window if they fit under `limit`; the check
    /// and the add are one step, so two connections cannot both take the
    /// last rows.
    pub fn charge(
        &self,
        user: &str,
        rows: u64,
        limit: u64,
        period: Duration,
        now: Instant,
    ) -> Result<(), WindowFull> {
        if rows == 0 {
            return Ok(());
        }
        let mut log = self.users.entry(user.to_owned()).or_default();
        log.prune(period, now);
        if log.total.saturating_add(rows) > limit {
            return Err(WindowFull {
                used: log.total,
                frees_in: log
                    .frees_at(limit, rows, period)
                    .map(|at| at.saturating_duration_since(now)),
            });
        }
        let join = period / MAX_ENTRIES;
        let full = log.entries.len() >= MAX_ENTRIES as usize;
        match log.entries.back_mut() {
            Some(last) if now.saturating_duration_since(last.0) < join || full => {
                *last = (now.max(last.0), last.1 + rows);
            }
            _ => log.entries.push_back((now, rows)),
        }
        log.total += rows;
        Ok(())
    }

    /// When `needed` more rows would fit `user`'s window (for messages).
    pub fn frees_in(
        &self,
        user: &str,
        limit: u64,
        needed: u64,
        period: Duration,
        now: Instant,
    ) -> WindowFull {
        match self.users.get_mut(user) {
            Some(mut log) => {
                log.prune(period, now);
                let frees_in = if log.total.saturating_add(needed) <= limit {
                    Some(Duration::ZERO)
                } else {
                    log.frees_at(limit, needed, period)
                        .map(|at| at.saturating_duration_since(now))
                };
                WindowFull {
                    used: log.total,
                    frees_in,
                }
            }
            None => WindowFull {
                used: 0,
                frees_in: (needed <= limit).then_some(Duration::ZERO),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolls_and_says_when_rows_free_up() {
        let w = Windows::default();
        let t0 = Instant::now();
        let p = Duration::from_secs(600);
        w.charge("alice", 30, 50, p, t0).unwrap();
        w.charge("alice", 15, 50, p, t0 + Duration::from_secs(60))
            .unwrap();
        assert_eq!(w.remaining("alice", 50, p, t0), 5);
        assert_eq!(w.remaining("bob", 50, p, t0), 50);
        let full = w
            .charge("alice", 20, 50, p, t0 + Duration::from_secs(120))
            .unwrap_err();
        assert_eq!(full.used, 45);
        // The first 30 rows leave at t0 + 600 s, 480 s after the attempt.
        assert_eq!(full.frees_in, Some(Duration::from_secs(480)));
        assert_eq!(w.charge("alice", 60, 50, p, t0).unwrap_err().frees_in, None);
        // After the period the rows have left.
        w.charge("alice", 50, 50, p, t0 + Duration::from_secs(700))
            .unwrap();
        assert_eq!(
            w.remaining("alice", 50, p, t0 + Duration::from_secs(700)),
            0
        );
    }

    #[test]
    fn entries_stay_bounded_and_never_expire_early() {
        let w = Windows::default();
        let t0 = Instant::now();
        let p = Duration::from_secs(64);
        for i in 0..10_000u64 {
            w.charge("u", 1, u64::MAX, p, t0 + Duration::from_millis(i))
                .unwrap();
        }
        let log = w.users.get("u").unwrap();
        assert!(log.entries.len() <= MAX_ENTRIES as usize);
        drop(log);
        // 10 s later nothing has left a 64 s window.
        assert_eq!(
            w.remaining("u", 20_000, p, t0 + Duration::from_secs(10)),
            10_000
        );
    }
}
