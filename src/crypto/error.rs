//! The one error type of the crypto core.
//!
//! Every failure — a bad master key at startup, a keyring command refused, a
//! value that is not valid for its column, an envelope that does not
//! authenticate — is a [`CryptoError`]. The proxy turns it into an
//! ErrorResponse with [`CryptoError::sqlstate`] and the `Display` text, so the
//! messages are written for the person who reads them: they start with
//! `pgveil:`, name the column, key version or file involved, say what to do,
//! and never contain a protected value or key material.

use std::path::PathBuf;
use std::sync::Arc;

use super::types::LogicalType;

/// Everything that can go wrong in the keyring and field encryption.
///
/// Variants carry only names (columns, files), numbers (key versions, file
/// modes) and static reasons, never a value: errors end up in logs and in
/// client error messages, and principle 4 of the design forbids plaintext
/// there.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Neither `master_key_file` nor `PGVEIL_MASTER_KEY` gave a master key.
    #[error(
        "pgveil: no master key: set [keyring] master_key_file in the config \
         or the PGVEIL_MASTER_KEY environment variable (32 bytes, base64)"
    )]
    MasterKeyMissing,

    /// The master key was found but is not 32 bytes (raw or base64).
    #[error("pgveil: master key from {source_name} is malformed: {reason}")]
    MasterKeyMalformed {
        /// Where the key came from (a file path or the variable name).
        source_name: String,
        /// What is wrong, e.g. "not valid base64".
        reason: &'static str,
    },

    /// The master key file can be read by group or others.
    #[error(
        "pgveil: master key file {} is readable by group or others (mode {mode:o}); \
         run `chmod 600 {}` and start again",
        path.display(), path.display()
    )]
    MasterKeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A file operation on the keyring or key file failed.
    #[error("pgveil: cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "read keyring file".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// There is no keyring file in the configured directory.
    #[error(
        "pgveil: no keyring in {}; create one with `pgveil keyring init`",
        dir.display()
    )]
    KeyringMissing {
        /// The configured keyring directory.
        dir: PathBuf,
    },

    /// `keyring init` found a keyring already there.
    #[error(
        "pgveil: a keyring already exists in {}; refusing to overwrite it \
         (use `pgveil keyring rotate` for a new key version)",
        dir.display()
    )]
    KeyringExists {
        /// The configured keyring directory.
        dir: PathBuf,
    },

    /// The keyring file does not parse or breaks an invariant.
    #[error("pgveil: keyring file {} is corrupt: {reason}", path.display())]
    KeyringCorrupt {
        /// The keyring file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A wrapped key did not open under the master key.
    #[error(
        "pgveil: the master key does not open {what} of the keyring: \
         wrong master key, or the keyring file was altered"
    )]
    MasterKeyMismatch {
        /// Which wrapped key failed, e.g. "key version 3".
        what: String,
    },

    /// A keyring command named a version the keyring does not have.
    #[error("pgveil: the keyring has no key version {version}; see `pgveil keyring list`")]
    NoSuchVersion {
        /// The version asked for.
        version: u32,
    },

    /// `keyring destroy` on the active version.
    #[error(
        "pgveil: key version {version} is the active version and cannot be destroyed; \
         run `pgveil keyring rotate` first, re-encrypt its data, then destroy it"
    )]
    DestroyActive {
        /// The active version.
        version: u32,
    },

    /// `keyring destroy` on a version already destroyed.
    #[error("pgveil: key version {version} is already destroyed")]
    AlreadyDestroyed {
        /// The version asked for.
        version: u32,
    },

    /// `keyring destroy` without `--yes`.
    #[error(
        "pgveil: destroying key version {version} makes every value encrypted under it \
         unreadable forever (crypto-shredding); re-run with --yes to confirm"
    )]
    ConfirmationRequired {
        /// The version asked for.
        version: u32,
    },

    /// The keyring ran out of version numbers (u32::MAX rotations).
    #[error("pgveil: the keyring has no key version numbers left")]
    VersionsExhausted,

    /// The operating system's random generator failed.
    #[error("pgveil: the system random number generator failed")]
    Random,

    /// A column name that cannot be used to derive a key.
    #[error("pgveil: invalid protected column name {column:?}: {reason}")]
    InvalidColumnName {
        /// The name given.
        column: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A type name in the configuration that pgveil does not know.
    #[error(
        "pgveil: unsupported logical type {name:?} for a protected column \
         (supported: text, varchar, char, int2, int4, int8, numeric, float4, float8, \
         bool, date, time, timestamp, timestamptz, uuid, json, jsonb, bytea)"
    )]
    UnknownType {
        /// The type name given.
        name: String,
    },

    /// A mode name in the configuration that pgveil does not know.
    #[error("pgveil: unknown encryption mode {name:?} (use \"randomized\" or \"searchable\")")]
    UnknownMode {
        /// The mode name given.
        name: String,
    },

    /// A value bound for a protected column is not valid for its type.
    #[error("pgveil: invalid input for column {column} of type {ty}: {reason}")]
    InvalidValue {
        /// The column's full name.
        column: Arc<str>,
        /// The column's logical type.
        ty: LogicalType,
        /// Why, without quoting the value.
        reason: &'static str,
    },

    /// An envelope shorter than header + tag, i.e. not a pgveil value.
    #[error(
        "pgveil: the stored value in column {column} is truncated or is not a pgveil \
         envelope; it cannot be decrypted"
    )]
    Truncated {
        /// The column's full name.
        column: Arc<str>,
    },

    /// An envelope whose format version byte is not one pgveil writes.
    #[error(
        "pgveil: the stored value in column {column} has unknown envelope format {format}; \
         it was altered or written by a newer pgveil"
    )]
    UnknownFormat {
        /// The column's full name.
        column: Arc<str>,
        /// The format byte found.
        format: u8,
    },

    /// An envelope whose mode byte is neither randomized (1) nor searchable
    /// (3): altered, or the retired pre-release searchable format (2).
    #[error(
        "pgveil: the stored value in column {column} has unknown mode byte {mode}; it was \
         altered, or written in the retired pre-release searchable format (mode 2), which \
         this pgveil does not read"
    )]
    UnknownEnvelopeMode {
        /// The column's full name.
        column: Arc<str>,
        /// The mode byte found.
        mode: u8,
    },

    /// An envelope under a key version the keyring never had.
    #[error(
        "pgveil: the stored value in column {column} uses key version {version}, \
         which this keyring does not have (wrong keyring, or the value was altered)"
    )]
    UnknownKeyVersion {
        /// The column's full name.
        column: Arc<str>,
        /// The version found in the envelope.
        version: u32,
    },

    /// An envelope under a destroyed key version: crypto-shredded data.
    #[error(
        "pgveil: the stored value in column {column} uses key version {version}, \
         which was destroyed; the value cannot be recovered"
    )]
    DestroyedKeyVersion {
        /// The column's full name.
        column: Arc<str>,
        /// The destroyed version.
        version: u32,
    },

    /// The GCM tag did not verify.
    #[error(
        "pgveil: the stored value in column {column} (key version {version}) does not \
         authenticate: it was altered, or copied from another column"
    )]
    NotAuthentic {
        /// The column's full name.
        column: Arc<str>,
        /// The version found in the envelope.
        version: u32,
    },

    /// The envelope authenticated but its plaintext is not a value of the
    /// column's type (the column's configured type was changed).
    #[error(
        "pgveil: the stored value in column {column} (key version {version}) is not a \
         valid {ty} value; was the column's type changed in the configuration?"
    )]
    TypeMismatch {
        /// The column's full name.
        column: Arc<str>,
        /// The version found in the envelope.
        version: u32,
        /// The column's configured type.
        ty: LogicalType,
    },

    /// Equality search asked of a column that is not in searchable mode.
    #[error(
        "pgveil: column {column} is encrypted in randomized mode, so it cannot be \
         compared; declare it with mode = \"searchable\" to allow equality search"
    )]
    NotSearchable {
        /// The column's full name.
        column: Arc<str>,
    },
}

impl CryptoError {
    /// The SQLSTATE the proxy sends with this error.
    ///
    /// Clients and drivers branch on the code, not the text: XX001
    /// (data_corrupted) for every envelope that cannot be trusted, 22P02
    /// for an invalid value, 0A000 for comparing a randomized column, and
    /// configuration / I/O classes for startup and keyring commands.
    pub fn sqlstate(&self) -> &'static str {
        use CryptoError::*;
        match self {
            InvalidValue { .. } => "22P02",
            Truncated { .. }
            | UnknownFormat { .. }
            | UnknownEnvelopeMode { .. }
            | UnknownKeyVersion { .. }
            | DestroyedKeyVersion { .. }
            | NotAuthentic { .. }
            | TypeMismatch { .. } => "XX001",
            NotSearchable { .. } => "0A000",
            Io { .. } => "58030",
            Random => "58000",
            MasterKeyMissing
            | MasterKeyMalformed { .. }
            | MasterKeyFilePermissions { .. }
            | MasterKeyMismatch { .. }
            | KeyringMissing { .. }
            | KeyringCorrupt { .. }
            | InvalidColumnName { .. }
            | UnknownType { .. }
            | UnknownMode { .. } => "F0000",
            KeyringExists { .. } | VersionsExhausted => "55000",
            NoSuchVersion { .. }
            | DestroyActive { .. }
            | AlreadyDestroyed { .. }
            | ConfirmationRequired { .. } => "22023",
        }
    }
}

/// Shorthand used throughout the crypto module.
pub type Result<T, E = CryptoError> = std::result::Result<T, E>;
