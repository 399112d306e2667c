//! Counting a result that pgveil holds instead of streaming.
//!
//! A capped role's protected rows are written to a holding buffer (owned by
//! the session, reused from result to result) and only released to the
//! client when the result ends under every cap, so a result that crosses
//! one reaches the client as an error and none of its rows. Cursors and
//! row-limited portals count cumulatively: each FETCH or Execute chunk
//! starts from what the cursor or portal already returned.

use super::approval::Approval;
use std::sync::Arc;

/// Where a result's rows are counted beyond the result itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A statement's own result.
    Statement,
    /// A FETCH from this cursor.
    Cursor(String),
    /// An Execute of this portal (PortalSuspended continues it).
    Portal(Vec<u8>),
}

/// The counts a result starts from and may not exceed.
#[derive(Debug, Clone, Default)]
pub struct Caps {
    /// Rows the statement (cursor, portal) may return in all.
    pub rows: Option<u64>,
    /// Bytes the same may return in all.
    pub bytes: Option<u64>,
    /// Rows this result may add before the user's window is full; `None`
    /// when no window applies (no window configured, or approved).
    pub window_left: Option<u64>,
}

/// Which cap a result crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossed {
    /// The row cap.
    Rows(u64),
    /// The byte cap.
    Bytes(u64),
    /// The user's rolling window.
    Window,
}

/// One held result.
#[derive(Debug, Clone)]
pub struct Held {
    /// Its caps.
    pub caps: Caps,
    /// Rows and bytes the cursor or portal returned before this result.
    pub base_rows: u64,
    /// See `base_rows`.
    pub base_bytes: u64,
    /// Rows held so far.
    pub rows: u64,
    /// Bytes held so far (DataRow frames as sent to the client).
    pub bytes: u64,
    /// Where the counts go when released.
    pub target: Target,
    /// The approval it runs under, if any.
    pub approval: Option<Arc<Approval>>,
    /// Tables whose protected columns the role sees in it, for messages.
    pub tables: Vec<String>,
}

impl Held {
    /// Counts one more row of `bytes`; `Err` names the cap it crosses.
    pub fn add(&mut self, bytes: usize) -> Result<(), Crossed> {
        self.rows += 1;
        self.bytes += bytes as u64;
        if let Some(cap) = self.caps.rows {
            if self.base_rows + self.rows > cap {
                return Err(Crossed::Rows(cap));
            }
        }
        if let Some(cap) = self.caps.bytes {
            if self.base_bytes + self.bytes > cap {
                return Err(Crossed::Bytes(cap));
            }
        }
        if let Some(left) = self.caps.window_left {
            if self.rows > left {
                return Err(Crossed::Window);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crosses_each_cap() {
        let held = |caps: Caps, base_rows| Held {
            caps,
            base_rows,
            base_bytes: 0,
            rows: 0,
            bytes: 0,
            target: Target::Statement,
            approval: None,
            tables: Vec::new(),
        };
        let mut h = held(
            Caps {
                rows: Some(3),
                ..Caps::default()
            },
            1,
        );
        assert_eq!(h.add(10), Ok(()));
        assert_eq!(h.add(10), Ok(()));
        assert_eq!(h.add(10), Err(Crossed::Rows(3)));
        let mut h = held(
            Caps {
                bytes: Some(25),
                ..Caps::default()
            },
            0,
        );
        assert_eq!(h.add(10), Ok(()));
        assert_eq!(h.add(10), Ok(()));
        assert_eq!(h.add(10), Err(Crossed::Bytes(25)));
        let mut h = held(
            Caps {
                window_left: Some(1),
                ..Caps::default()
            },
            0,
        );
        assert_eq!(h.add(1), Ok(()));
        assert_eq!(h.add(1), Err(Crossed::Window));
    }
}
