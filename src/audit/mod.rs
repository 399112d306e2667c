//! The tamper-evident audit trail: who touched which protected column,
//! when, with what result — never the values.
//!
//! The flow: sessions ([`track::SessionAudit`]) turn connection events and
//! statements on protected columns into records and hand them to the
//! [`handle::Audit`], which seals each into one JSON line on the calling
//! thread (`sealer`, [`chain`]: a hash link to the previous line and a
//! forward-evolving HMAC; a signed checkpoint every N records or T seconds
//! and at shutdown). The `writer` thread writes and fsyncs the sealed
//! lines in batches and rotates files by size ([`files`]). Other processes (the
//! keyring commands) hand their events over through a [`spool`]. The
//! [`verify`] module and `pgveil audit verify` ([`cli`]) check a series of
//! files with only the public key. `docs/AUDIT.md` describes the
//! construction and its limits.
//!
//! If records cannot be written, statements on protected columns are
//! refused (SQLSTATE 58030) until they can; everything else goes on.

pub mod chain;
pub mod cli;
mod config;
mod error;
pub mod files;
pub mod fingerprint;
mod handle;
pub mod planned;
pub mod record;
mod sealer;
pub mod show;
pub mod spool;
pub mod track;
pub mod verify;
mod writer;

pub use config::AuditConfig;
pub use error::{AuditError, AUDIT_UNAVAILABLE_MESSAGE, AUDIT_UNAVAILABLE_SQLSTATE};
pub use handle::{Audit, Health};
pub use record::{ApprovalIssued, ApprovalUsed, ColumnAction, Event, Outcome};
pub use track::SessionAudit;
