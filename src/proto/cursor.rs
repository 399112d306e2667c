//! A bounds-checked reader over a message body.
//!
//! `bytes::Buf::get_*` panics on a short buffer; a proxy reading frames from
//! the network must not, so every read here returns `None` instead.

/// Reads big-endian integers and C strings from a byte slice without panicking.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// Starts reading at the beginning of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { rest: bytes }
    }

    /// Bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// Reads a big-endian 32-bit signed integer.
    pub fn i32(&mut self) -> Option<i32> {
        let b = self.take(4)?;
        Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a NUL-terminated string, without the NUL.
    pub fn cstr(&mut self) -> Option<&'a [u8]> {
        let end = memchr::memchr(0, self.rest)?;
        let s = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reads_are_none() {
        let mut c = Cursor::new(&[0, 0, 1]);
        assert_eq!(c.i32(), None);
        assert_eq!(c.take(3), Some(&[0u8, 0, 1][..]));
        assert_eq!(c.u8(), None);
        let mut s = Cursor::new(b"abc");
        assert_eq!(s.cstr(), None);
        let mut s = Cursor::new(b"abc\0d");
        assert_eq!(s.cstr(), Some(&b"abc"[..]));
        assert_eq!(s.rest(), b"d");
    }
}
