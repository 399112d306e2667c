//! ErrorResponse: the one message pgveil writes on its own behalf.
//!
//! Every refusal a client sees is an ordinary ErrorResponse, so drivers show
//! it the same way as a server error: a SQLSTATE, and a message that starts
//! with `pgveil:` and says what to do.

use super::cursor::Cursor;
use bytes::{BufMut, BytesMut};

/// SQLSTATE codes pgveil itself uses, named for what they mean to a client.
pub mod sqlstate {
    /// Malformed or oversized protocol message.
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// The upstream connection failed or was lost.
    pub const CONNECTION_FAILURE: &str = "08006";
    /// The upstream could not be reached at all.
    pub const CANNOT_CONNECT: &str = "08001";
    /// A feature or request pgveil does not support.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// Internal error.
    pub const INTERNAL: &str = "XX000";
    /// The client must use TLS (`[tls] require`).
    pub const INVALID_AUTHORIZATION: &str = "28000";
    /// `max_client_connections` reached.
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    /// The session was closed because pgveil is shutting down.
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// A new connection arrived while pgveil is shutting down.
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    /// The session was idle for longer than `idle_timeout`.
    pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
}

/// How serious an error is, as PostgreSQL spells it in the `S` and `V` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session is over.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// Appends an ErrorResponse frame to `out`.
///
/// `message` must never contain a protected value or a SQL literal: callers
/// pass fixed text and identifiers only.
pub fn write_error(out: &mut BytesMut, severity: Severity, code: &str, message: &str) {
    let sev = severity.as_str();
    let body_len = 2 * (1 + sev.len() + 1) + (1 + code.len() + 1) + (1 + message.len() + 1) + 1;
    out.reserve(1 + 4 + body_len);
    out.put_u8(b'E');
    out.put_u32((body_len + 4) as u32);
    for (field, value) in [(b'S', sev), (b'V', sev), (b'C', code), (b'M', message)] {
        out.put_u8(field);
        out.put_slice(value.as_bytes());
        out.put_u8(0);
    }
    out.put_u8(0);
}

/// Finds one field of an ErrorResponse or NoticeResponse body.
pub fn field(body: &[u8], wanted: u8) -> Option<&[u8]> {
    let mut c = Cursor::new(body);
    loop {
        let kind = c.u8()?;
        if kind == 0 {
            return None;
        }
        let value = c.cstr()?;
        if kind == wanted {
            return Some(value);
        }
    }
}

/// Whether an ErrorResponse body ends the session (FATAL or PANIC).
pub fn is_fatal(body: &[u8]) -> bool {
    matches!(
        field(body, b'V').or_else(|| field(body, b'S')),
        Some(b"FATAL") | Some(b"PANIC")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_error_reads_back() {
        let mut out = BytesMut::new();
        write_error(&mut out, Severity::Fatal, "08P01", "pgveil: bad frame");
        assert_eq!(out[0], b'E');
        let len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert_eq!(len + 1, out.len());
        let body = &out[5..];
        assert_eq!(field(body, b'C'), Some(&b"08P01"[..]));
        assert_eq!(field(body, b'M'), Some(&b"pgveil: bad frame"[..]));
        assert!(is_fatal(body));
        assert_eq!(field(body, b'D'), None);
    }

    #[test]
    fn truncated_bodies_do_not_panic() {
        assert_eq!(field(b"SERR", b'C'), None);
        assert!(!is_fatal(b""));
    }
}
