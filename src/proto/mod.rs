//! Views over protocol messages, and the few messages pgveil writes itself.
//!
//! Decoding is lazy: a frame is only looked into when a handler needs a
//! field, and a message that is not changed is forwarded as its original
//! bytes. Every reader here returns `Option`/`Result` rather than indexing,
//! so a short or lying frame can never panic the proxy.
//!
//! The `pgwire` crate has complete message definitions, but it decodes each
//! message into owned structs; the relay path must not allocate per message,
//! so pgveil keeps these small borrowed views instead (see ARCHITECTURE.md).

pub mod auth;
pub mod cursor;
pub mod error;
pub mod extended;
pub mod keydata;
pub mod name;
pub mod startup;

/// Message type bytes used by the handlers, named as in the PostgreSQL docs.
pub mod tag {
    /// Authentication request (backend).
    pub const AUTHENTICATION: u8 = b'R';
    /// Cancellation key (backend).
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// Error (backend).
    pub const ERROR_RESPONSE: u8 = b'E';
    /// End of a query cycle (backend).
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// Client closes the session (frontend).
    pub const TERMINATE: u8 = b'X';
}
