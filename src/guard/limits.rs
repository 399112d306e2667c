//! Per-role bulk-read limits (`[[roles]]` keys) and the `[approvals]`
//! section, checked when the configuration is loaded.

use serde::Deserialize;
use std::time::Duration;

/// A policy role's limits on protected rows. A role with none of them set
/// has no `Limits` at all and its results stream as before: no holding, no
/// counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rows with a visible protected column per statement (per cursor, per
    /// portal across its row-limited Executes).
    pub max_rows: Option<u64>,
    /// The same rows' size in bytes, as sent to the client.
    pub max_bytes: Option<u64>,
    /// Rows one user may receive across all its connections per `window`.
    pub window: Option<Window>,
    /// Ask the server for the plan's row estimate before running a read.
    pub precheck: Precheck,
}

/// A rolling window: at most `rows` rows within any `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Rows allowed within the period.
    pub rows: u64,
    /// The period, e.g. ten minutes.
    pub period: Duration,
}

/// Whether pgveil asks the server for a row estimate before a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precheck {
    /// Only the SQL text is checked before execution.
    #[default]
    None,
    /// `EXPLAIN` first; refuse when the estimate is above the cap.
    Explain,
}

/// The limit keys of one `[[roles]]` entry, as written.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitKeys<'a> {
    /// `max_rows`.
    pub max_rows: Option<u64>,
    /// `max_bytes`.
    pub max_bytes: Option<u64>,
    /// `window_rows`.
    pub window_rows: Option<u64>,
    /// `window`.
    pub window: Option<Duration>,
    /// `precheck`.
    pub precheck: Option<&'a str>,
}

impl Limits {
    /// Builds a role's limits; `Ok(None)` when it sets none. `Err` says
    /// which key is wrong and why.
    pub fn from_keys(k: LimitKeys<'_>) -> Result<Option<Limits>, String> {
        let positive = |key: &str, v: Option<u64>| match v {
            Some(0) => Err(format!(
                "{key} must be at least 1 (leave it out for no limit)"
            )),
            v => Ok(v),
        };
        let max_rows = positive("max_rows", k.max_rows)?;
        let max_bytes = positive("max_bytes", k.max_bytes)?;
        let window_rows = positive("window_rows", k.window_rows)?;
        let window = match (window_rows, k.window) {
            (None, None) => None,
            (Some(rows), Some(period)) if !period.is_zero() => Some(Window { rows, period }),
            (Some(_), Some(_)) => return Err("window must be longer than 0s".into()),
            (Some(_), None) => {
                return Err("window_rows needs window (the period, e.g. \"10m\")".into())
            }
            (None, Some(_)) => return Err("window needs window_rows (rows per period)".into()),
        };
        let precheck = match k.precheck {
            None | Some("none") => Precheck::None,
            Some("explain") => Precheck::Explain,
            Some(other) => {
                return Err(format!(
                    "precheck must be \"none\" or \"explain\", got {other:?}"
                ))
            }
        };
        if max_rows.is_none() && max_bytes.is_none() && window.is_none() {
            if precheck != Precheck::None {
                return Err("precheck needs max_rows or window_rows to compare with".into());
            }
            return Ok(None);
        }
        Ok(Some(Limits {
            max_rows,
            max_bytes,
            window,
            precheck,
        }))
    }

    /// The most rows one statement may return: the cap, and the window's
    /// size (no statement can fit more than a whole window).
    pub fn statement_rows(&self) -> Option<u64> {
        match (self.max_rows, self.window.map(|w| w.rows)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The `[approvals]` section: who may approve a one-off bulk export.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// User names that may approve (`pgveil approve --approver NAME`).
    pub approvers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert_eq!(Limits::from_keys(LimitKeys::default()), Ok(None));
        let l = Limits::from_keys(LimitKeys {
            max_rows: Some(100),
            window_rows: Some(50),
            window: Some(Duration::from_secs(600)),
            ..LimitKeys::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!(l.statement_rows(), Some(50));
        for bad in [
            LimitKeys {
                max_rows: Some(0),
                ..LimitKeys::default()
            },
            LimitKeys {
                window_rows: Some(5),
                ..LimitKeys::default()
            },
            LimitKeys {
                window: Some(Duration::from_secs(5)),
                ..LimitKeys::default()
            },
            LimitKeys {
                max_rows: Some(5),
                precheck: Some("guess"),
                ..LimitKeys::default()
            },
            LimitKeys {
                precheck: Some("explain"),
                ..LimitKeys::default()
            },
        ] {
            assert!(Limits::from_keys(bad).is_err(), "{bad:?}");
        }
    }
}
