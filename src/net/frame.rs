//! Cutting a byte stream into PostgreSQL v3 protocol frames.
//!
//! Every regular message is a one-byte tag, a four-byte big-endian length that
//! counts itself but not the tag, then the body. The startup-phase messages
//! (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) have no tag.
//!
//! Frames are split off the connection's read buffer with
//! `split_to(len).freeze()`: no copy, and once the buffer has been promoted
//! to shared storage no allocation either. The buffer reclaims its storage
//! as soon as the frames handed out have been dropped, so a relay in steady
//! state allocates nothing per message.

use bytes::{Bytes, BytesMut};

/// Bytes in a regular frame header: the tag and the length.
pub const HEADER_LEN: usize = 5;

/// Refused before reading further: PostgreSQL's own cap on a startup packet
/// (`MAX_STARTUP_PACKET_LENGTH`), so a client cannot make us buffer more than
/// this before it has authenticated.
pub const MAX_STARTUP_LEN: usize = 10_000;

/// Why a byte stream is not a valid sequence of frames. Any of these closes
/// the connection: after a bad length the stream cannot be resynchronised.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is smaller than the length field itself.
    #[error("invalid message length {len} for message type '{tag}'")]
    TooShort { tag: char, len: u32 },
    /// The frame (tag included) is larger than `max_message_bytes` allows.
    #[error("message type '{tag}' of {len} bytes exceeds the limit of {max} bytes")]
    TooLong { tag: char, len: u64, max: usize },
    /// A startup-phase packet with an impossible length.
    #[error("invalid startup packet length {0}")]
    BadStartupLength(u32),
}

/// One complete regular frame: the tag, the length and the body, as received.
///
/// Keeping the header lets an untouched frame be forwarded as one slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
}

impl Frame {
    /// Wraps bytes already known to hold exactly one well-formed frame.
    fn new(bytes: Bytes) -> Self {
        Frame { bytes }
    }

    /// Builds a frame from a tag and body; used for messages pgveil writes itself.
    pub fn from_parts(tag: u8, body: &[u8]) -> Self {
        let mut b = BytesMut::with_capacity(HEADER_LEN + body.len());
        b.extend_from_slice(&[tag]);
        b.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        b.extend_from_slice(body);
        Frame::new(b.freeze())
    }

    /// The message type byte.
    #[inline]
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }

    /// The message body, without tag and length.
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// The whole frame as it travels on the wire.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The whole frame as shared bytes, for holding without a copy.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

/// Reads the length a frame header announces, or `None` when fewer than
/// [`HEADER_LEN`] bytes are buffered.
#[inline]
fn announced_len(buf: &[u8]) -> Option<(u8, u32)> {
    let header = buf.get(..HEADER_LEN)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    Some((header[0], len))
}

/// Splits the next complete frame off `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. The length is checked
/// against `max` as soon as the header is in, before any body byte is
/// buffered, so a hostile length field costs nothing.
#[inline]
pub fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    let Some(total) = check_header(buf, max)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(Frame::new(buf.split_to(total).freeze())))
}

/// Validates the buffered header, returning the whole frame's size in bytes.
#[inline]
fn check_header(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some((tag, len)) = announced_len(buf) else {
        return Ok(None);
    };
    if len < 4 {
        return Err(FrameError::TooShort {
            tag: tag as char,
            len,
        });
    }
    let total = len as usize + 1;
    if total > max {
        return Err(FrameError::TooLong {
            tag: tag as char,
            len: u64::from(len) + 1,
            max,
        });
    }
    Ok(Some(total))
}

/// How many more bytes the buffer should make room for before the next read.
///
/// When a large frame is half in, room grows toward that frame's size in
/// steps, so memory follows the bytes that really arrived, not the length
/// field's promise.
pub fn read_hint(buf: &[u8], max: usize) -> usize {
    const MIN_READ: usize = 16 * 1024;
    const STEP: usize = 4 * 1024 * 1024;
    match check_header(buf, max) {
        Ok(Some(total)) if total > buf.len() => (total - buf.len()).clamp(MIN_READ, STEP),
        _ => MIN_READ,
    }
}

/// A startup-phase packet: length-prefixed, no tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupPacket {
    /// The whole packet including its length field, to forward unchanged.
    pub bytes: Bytes,
}

impl StartupPacket {
    /// The request code or protocol version that follows the length.
    pub fn code(&self) -> u32 {
        let b = &self.bytes;
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    /// Everything after the code.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[8..]
    }
}

/// Splits the next startup-phase packet off `buf`, or `Ok(None)` if more bytes
/// are needed.
pub fn next_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, FrameError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if !(8..=MAX_STARTUP_LEN as u32).contains(&len) {
        return Err(FrameError::BadStartupLength(len));
    }
    if buf.len() < len as usize {
        return Ok(None);
    }
    Ok(Some(StartupPacket {
        bytes: buf.split_to(len as usize).freeze(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        Frame::from_parts(tag, body).as_bytes().to_vec()
    }

    #[test]
    fn splits_frames_and_keeps_partial_tail() {
        let mut wire = frame(b'Q', b"select 1\0");
        wire.extend(frame(b'S', b""));
        wire.extend(&frame(b'X', b"")[..3]);
        let mut buf = BytesMut::from(&wire[..]);
        let a = next_frame(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(a.tag(), b'Q');
        assert_eq!(a.body(), b"select 1\0");
        let b = next_frame(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(b.tag(), b'S');
        assert!(b.body().is_empty());
        assert_eq!(next_frame(&mut buf, 1 << 20).unwrap(), None);
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn rejects_short_length() {
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
        assert_eq!(
            next_frame(&mut buf, 100),
            Err(FrameError::TooShort { tag: 'Q', len: 3 })
        );
    }

    #[test]
    fn rejects_huge_length_before_the_body_arrives() {
        // A 2 GB length field: refused from the header alone.
        let mut buf = BytesMut::from(&[b'd', 0x80, 0, 0, 0][..]);
        let err = next_frame(&mut buf, 1 << 30).unwrap_err();
        assert!(matches!(err, FrameError::TooLong { tag: 'd', .. }));
        // And the read hint never asks for more than a step at a time.
        assert!(read_hint(&[b'd', 0x3f, 0xff, 0xff, 0xff], usize::MAX) <= 4 * 1024 * 1024);
    }

    #[test]
    fn startup_packets() {
        let mut buf = BytesMut::from(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f, 1][..]);
        let p = next_startup(&mut buf).unwrap().unwrap();
        assert_eq!(p.code(), 80_877_103);
        assert_eq!(buf.len(), 1);
        let mut bad = BytesMut::from(&[0, 0, 0, 4, 0, 0, 0, 0][..]);
        assert_eq!(next_startup(&mut bad), Err(FrameError::BadStartupLength(4)));
        let mut huge = BytesMut::from(&[0x7f, 0, 0, 0][..]);
        assert!(next_startup(&mut huge).is_err());
    }

    proptest! {
        /// Random bytes never panic the reader; every frame it returns is
        /// well formed and the bytes it consumed add up.
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), max in 5usize..300) {
            let mut buf = BytesMut::from(&data[..]);
            let mut consumed = 0;
            while let Ok(Some(f)) = next_frame(&mut buf, max) {
                prop_assert!(f.as_bytes().len() >= HEADER_LEN);
                prop_assert!(f.as_bytes().len() <= max);
                consumed += f.as_bytes().len();
            }
            prop_assert_eq!(consumed + buf.len(), data.len());
            let _ = read_hint(&buf, max);
            let mut s = BytesMut::from(&data[..]);
            let _ = next_startup(&mut s);
        }

        /// Any sequence of frames survives being cut at arbitrary points.
        #[test]
        fn reassembles_across_arbitrary_chunks(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8),
            cut in 1usize..17,
        ) {
            let mut wire = Vec::new();
            for b in &bodies { wire.extend(frame(b'd', b)); }
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(cut) {
                buf.extend_from_slice(chunk);
                while let Some(f) = next_frame(&mut buf, 1 << 16).unwrap() {
                    got.push(f.body().to_vec());
                }
            }
            prop_assert_eq!(got, bodies);
        }
    }
}
