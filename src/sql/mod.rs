//! SQL analysis: what a statement does to protected columns.
//!
//! Given statement text and the protected schema, [`analyze`] decides
//! whether the statement can be relayed as is, how it must be rewritten
//! (literals replaced by envelopes, equality predicates widened to every
//! live key version), which bound parameters must be encrypted, or why it
//! must be refused. Nothing here touches the network or a key: the session
//! applies the plan with the keyring.

pub mod schema;

pub use schema::{ColumnInfo, ProtectedColumn, Schema, TableInfo};
