//! BackendKeyData and CancelRequest: the two halves of query cancellation.
//!
//! A cancel arrives on a fresh connection carrying the key the client was
//! given at startup. pgveil hands every client its own key, so it can tell
//! which upstream backend the cancel is for and never shows a client the
//! server's real process id.

use super::cursor::Cursor;
use bytes::{BufMut, Bytes, BytesMut};

/// The startup code of a CancelRequest packet.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// A cancellation key: a process id and a secret (4 bytes in protocol 3.0,
/// up to 256 in 3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelKey {
    /// The process id the server (or pgveil) announced.
    pub pid: i32,
    /// The secret that proves the canceller holds the key.
    pub secret: Bytes,
}

impl CancelKey {
    /// Reads the body of a BackendKeyData message.
    pub fn from_key_data(body: &[u8]) -> Option<Self> {
        let mut c = Cursor::new(body);
        let pid = c.i32()?;
        let secret = c.rest();
        if secret.is_empty() || secret.len() > 256 {
            return None;
        }
        Some(CancelKey {
            pid,
            secret: Bytes::copy_from_slice(secret),
        })
    }

    /// Reads the payload of a CancelRequest (after the length and code).
    pub fn from_cancel_request(payload: &[u8]) -> Option<Self> {
        Self::from_key_data(payload)
    }

    /// Appends a BackendKeyData frame announcing this key.
    pub fn write_key_data(&self, out: &mut BytesMut) {
        out.put_u8(b'K');
        out.put_u32((4 + 4 + self.secret.len()) as u32);
        out.put_i32(self.pid);
        out.put_slice(&self.secret);
    }

    /// A CancelRequest packet for this key, to send on a new connection.
    pub fn cancel_request(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(12 + self.secret.len());
        out.put_u32((8 + 4 + self.secret.len()) as u32);
        out.put_u32(CANCEL_REQUEST_CODE);
        out.put_i32(self.pid);
        out.put_slice(&self.secret);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let key = CancelKey {
            pid: 4242,
            secret: Bytes::from_static(&[1, 2, 3, 4]),
        };
        let mut out = BytesMut::new();
        key.write_key_data(&mut out);
        assert_eq!(CancelKey::from_key_data(&out[5..]), Some(key.clone()));
        let req = key.cancel_request();
        assert_eq!(&req[4..8], &CANCEL_REQUEST_CODE.to_be_bytes());
        assert_eq!(CancelKey::from_cancel_request(&req[8..]), Some(key));
        assert_eq!(CancelKey::from_key_data(&[0, 0, 1]), None);
        assert_eq!(CancelKey::from_key_data(&[0, 0, 0, 1]), None);
    }
}
