//! What can stop a migration, in words an operator can act on.
//!
//! No message here ever contains a stored value: database errors of the
//! data-exception class (SQLSTATE 22…) are reported by code only, because
//! PostgreSQL quotes the offending value in them.

use crate::catalog::CatalogError;
use crate::crypto::CryptoError;

/// Why a migration stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The command line or the policy does not allow the run.
    #[error("pgveil migrate: {0}")]
    Usage(String),
    /// The catalog connection could not be opened.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The keyring could not be loaded or a cipher built.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A statement outside a batch failed (schema lookup, type change).
    #[error("pgveil migrate {column}: {action} failed: {reason}")]
    Db {
        /// `schema.table.column`.
        column: String,
        /// What was being done.
        action: &'static str,
        /// The server's reason, without values.
        reason: String,
    },
    /// One batch failed; every batch before it is committed.
    #[error(
        "pgveil migrate {column}: batch failed at {key}: {reason}\n\
         Every batch before it is committed; fix the cause and run the same command again to continue."
    )]
    Batch {
        /// `schema.table.column`.
        column: String,
        /// The row (primary key or ctid) or the batch position.
        key: String,
        /// Why, without the value.
        reason: String,
    },
    /// Ctrl-C: stopped between batches.
    #[error(
        "pgveil migrate {column}: interrupted after {done} row(s) in this run; every committed \
         batch is kept. Run the same command again to continue."
    )]
    Interrupted {
        /// `schema.table.column`.
        column: String,
        /// Rows processed in this run.
        done: u64,
    },
}

/// A server error as text safe to print: SQLSTATE and message, except for
/// data exceptions (class 22), whose messages quote the value.
pub fn describe_db(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            if code.starts_with("22") {
                format!("a value is not valid for the target type (SQLSTATE {code})")
            } else if code == "55P03" {
                format!(
                    "lock timeout (SQLSTATE {code}): another transaction holds a lock \
                     on these rows or the table; retry when it has finished"
                )
            } else {
                format!("{} (SQLSTATE {code})", db.message())
            }
        }
        None => e.to_string(),
    }
}
