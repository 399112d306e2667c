//! Authentication requests relayed from the server.
//!
//! pgveil does not authenticate clients itself: the server does, end to end.
//! The one thing it must change is the SASL mechanism list. Channel binding
//! (`SCRAM-SHA-256-PLUS`) ties the exchange to the TLS connection the
//! *server* sees, which is pgveil's, not the client's, so it cannot succeed
//! through a proxy and is withdrawn from the list.

use super::cursor::Cursor;
use bytes::{BufMut, BytesMut};

/// Authentication request codes the handler cares about.
pub mod code {
    /// Authentication succeeded.
    pub const OK: i32 = 0;
    /// SASL: the body lists the mechanisms the server offers.
    pub const SASL: i32 = 10;
}

/// The mechanism that cannot cross a proxy.
const CHANNEL_BINDING_MECHANISM: &[u8] = b"SCRAM-SHA-256-PLUS";

/// The request code of an Authentication message body.
pub fn request_code(body: &[u8]) -> Option<i32> {
    Cursor::new(body).i32()
}

/// Rewrites an AuthenticationSASL body without channel-binding mechanisms.
///
/// Appends the new frame to `out` and returns `true` if anything was removed;
/// returns `false` (and writes nothing) when the message can be forwarded
/// as is.
pub fn write_without_channel_binding(body: &[u8], out: &mut BytesMut) -> bool {
    let mut c = Cursor::new(body);
    if c.i32() != Some(code::SASL) {
        return false;
    }
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut removed = false;
    while let Some(mech) = c.cstr() {
        if mech.is_empty() {
            break;
        }
        if mech == CHANNEL_BINDING_MECHANISM {
            removed = true;
        } else {
            kept.push(mech);
        }
    }
    if !removed {
        return false;
    }
    let len = 4 + 4 + kept.iter().map(|m| m.len() + 1).sum::<usize>() + 1;
    out.put_u8(b'R');
    out.put_u32(len as u32);
    out.put_i32(code::SASL);
    for m in kept {
        out.put_slice(m);
        out.put_u8(0);
    }
    out.put_u8(0);
    true
}

/// Whether a SASLInitialResponse says "I support channel binding but the
/// server did not offer it" (GS2 flag `y`). PostgreSQL on TLS refuses that
/// as a downgrade attack, which is what it looks like through a proxy.
pub fn sasl_initial_claims_binding(body: &[u8]) -> bool {
    let mut c = Cursor::new(body);
    let (Some(_mechanism), Some(len)) = (c.cstr(), c.i32()) else {
        return false;
    };
    len > 0 && c.take(1) == Some(b"y")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withdraws_plus() {
        let mut body = 10i32.to_be_bytes().to_vec();
        body.extend(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        let mut out = BytesMut::new();
        assert!(write_without_channel_binding(&body, &mut out));
        let mut expect = vec![b'R', 0, 0, 0, 23];
        expect.extend(10i32.to_be_bytes());
        expect.extend(b"SCRAM-SHA-256\0\0");
        assert_eq!(&out[..], &expect[..]);
    }

    #[test]
    fn spots_the_y_flag() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend(20i32.to_be_bytes());
        body.extend(b"y,,n=,r=abcdefghijkl");
        assert!(sasl_initial_claims_binding(&body));
        let n = body.len() - 20;
        body[n] = b'n';
        assert!(!sasl_initial_claims_binding(&body));
        assert!(!sasl_initial_claims_binding(b"SCRAM"));
    }

    #[test]
    fn leaves_plain_list_alone() {
        let mut body = 10i32.to_be_bytes().to_vec();
        body.extend(b"SCRAM-SHA-256\0\0");
        let mut out = BytesMut::new();
        assert!(!write_without_channel_binding(&body, &mut out));
        assert!(out.is_empty());
        assert!(!write_without_channel_binding(&[0, 0], &mut out));
    }
}
