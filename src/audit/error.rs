//! The audit layer's one error type.

use std::path::PathBuf;

/// Why the audit trail cannot be started, written or verified. Messages
/// name files and say what to do; they never contain record contents.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file operation failed.
    #[error("pgveil: audit: cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An existing audit file ends with a line pgveil cannot continue from.
    #[error(
        "pgveil: audit file {} ends with a record pgveil cannot read ({reason}); \
         check it with `pgveil audit verify` and move it away before starting",
        path.display()
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The keyring (signing key, master key) could not be opened.
    #[error("{0}; the audit trail signs checkpoints with the keyring's signing key")]
    Keyring(#[from] crate::crypto::CryptoError),
    /// Another pgveil process writes this audit file.
    #[error(
        "pgveil: audit file {} is in use by another pgveil process; give each process its own [audit] path",
        path.display()
    )]
    Locked {
        /// The audit file.
        path: PathBuf,
    },
    /// The trail is closed or its sealer failed: the event was not recorded.
    #[error("pgveil: the audit trail is not accepting records ({0})")]
    Unavailable(&'static str),
    /// A record could not be serialized.
    #[error("pgveil: audit record could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    /// A public key given to the verifier is not valid.
    #[error("pgveil: {0}")]
    PublicKey(String),
}

/// SQLSTATE of statements refused because the audit trail cannot be
/// written: 58030 `io_error`.
pub const AUDIT_UNAVAILABLE_SQLSTATE: &str = "58030";

/// What clients are told when a statement on protected columns is refused
/// because the audit trail cannot be written.
pub const AUDIT_UNAVAILABLE_MESSAGE: &str =
    "pgveil: the audit trail cannot be written, so statements \
     on protected columns are refused until it can; other statements still work. \
     Ask the operator to check pgveil's log and its [audit] path (disk full, permissions)";
