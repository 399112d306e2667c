//! The startup phase: which packet the client sent, and its parameters.

use super::cursor::Cursor;

/// SSLRequest code.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// GSSENCRequest code.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// The major protocol version pgveil speaks (3.x; the minor version is
/// negotiated by the server itself).
pub const PROTOCOL_MAJOR: u32 = 3;

/// What a client's first packet asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupKind {
    /// Wants TLS; answered `N` until TLS is configured.
    Ssl,
    /// Wants GSSAPI encryption; always answered `N`.
    GssEnc,
    /// Wants to cancel a query running on another connection.
    Cancel,
    /// A StartupMessage for protocol 3.x.
    Startup,
    /// Anything else: an unsupported protocol version.
    Unknown(u32),
}

impl StartupKind {
    /// Classifies a startup packet by its code.
    pub fn of(code: u32) -> Self {
        match code {
            SSL_REQUEST_CODE => StartupKind::Ssl,
            GSSENC_REQUEST_CODE => StartupKind::GssEnc,
            super::keydata::CANCEL_REQUEST_CODE => StartupKind::Cancel,
            c if c >> 16 == PROTOCOL_MAJOR => StartupKind::Startup,
            c => StartupKind::Unknown(c),
        }
    }
}

/// Finds a parameter (`user`, `database`, ...) in a StartupMessage payload.
///
/// The payload is a list of NUL-terminated name/value pairs ending in an
/// empty name. Returns `None` if absent, not UTF-8, or the list is malformed.
pub fn param<'a>(payload: &'a [u8], name: &str) -> Option<&'a str> {
    let mut c = Cursor::new(payload);
    loop {
        let key = c.cstr()?;
        if key.is_empty() {
            return None;
        }
        let value = c.cstr()?;
        if key == name.as_bytes() {
            return std::str::from_utf8(value).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes() {
        assert_eq!(StartupKind::of(196_608), StartupKind::Startup);
        assert_eq!(StartupKind::of(196_610), StartupKind::Startup);
        assert_eq!(StartupKind::of(SSL_REQUEST_CODE), StartupKind::Ssl);
        assert_eq!(StartupKind::of(131_072), StartupKind::Unknown(131_072));
    }

    #[test]
    fn finds_params() {
        let p = b"user\0alice\0database\0hotel\0\0";
        assert_eq!(param(p, "user"), Some("alice"));
        assert_eq!(param(p, "database"), Some("hotel"));
        assert_eq!(param(p, "options"), None);
        assert_eq!(param(b"user\0al", "user"), None);
    }
}
