//! Views and builders for the extended-protocol messages pgveil rewrites:
//! Parse, Bind, Describe, Close and ParameterDescription.
//!
//! Only statements that touch protected columns are decoded; everything
//! else is relayed as its original bytes, so these may allocate.

use super::cursor::Cursor;
use bytes::{BufMut, BytesMut};

/// A Parse message: statement name, SQL text and declared parameter types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Prepared statement name; empty for the unnamed statement.
    pub name: &'a [u8],
    /// The SQL text.
    pub query: &'a [u8],
    /// Parameter type OIDs the client declared (0 = let the server infer).
    pub param_types: Vec<u32>,
}

impl<'a> Parse<'a> {
    /// Reads a Parse body; `None` if malformed.
    pub fn decode(body: &'a [u8]) -> Option<Self> {
        let mut c = Cursor::new(body);
        let name = c.cstr()?;
        let query = c.cstr()?;
        let n = usize::try_from(i16::from_be_bytes(c.take(2)?.try_into().ok()?)).ok()?;
        let mut param_types = Vec::with_capacity(n);
        for _ in 0..n {
            param_types.push(c.i32()? as u32);
        }
        Some(Parse {
            name,
            query,
            param_types,
        })
    }

    /// Appends this message as a frame.
    pub fn encode(&self, out: &mut BytesMut) {
        let len = 4 + self.name.len() + 1 + self.query.len() + 1 + 2 + 4 * self.param_types.len();
        out.reserve(1 + len);
        out.put_u8(b'P');
        out.put_u32(len as u32);
        out.put_slice(self.name);
        out.put_u8(0);
        out.put_slice(self.query);
        out.put_u8(0);
        out.put_i16(self.param_types.len() as i16);
        for t in &self.param_types {
            out.put_u32(*t);
        }
    }
}

/// A Bind message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    /// Destination portal.
    pub portal: &'a [u8],
    /// Source prepared statement.
    pub statement: &'a [u8],
    /// Parameter format codes as sent (0, 1 or one per parameter).
    pub param_formats: Vec<i16>,
    /// Parameter values; `None` is SQL NULL.
    pub params: Vec<Option<&'a [u8]>>,
    /// Result-column format codes, kept as raw bytes (count included).
    pub result_formats: &'a [u8],
}

impl<'a> Bind<'a> {
    /// Reads a Bind body; `None` if malformed.
    pub fn decode(body: &'a [u8]) -> Option<Self> {
        let mut c = Cursor::new(body);
        let portal = c.cstr()?;
        let statement = c.cstr()?;
        let nf = read_count(&mut c)?;
        let mut param_formats = Vec::with_capacity(nf);
        for _ in 0..nf {
            param_formats.push(i16::from_be_bytes(c.take(2)?.try_into().ok()?));
        }
        let np = read_count(&mut c)?;
        let mut params = Vec::with_capacity(np);
        for _ in 0..np {
            let len = c.i32()?;
            params.push(if len < 0 {
                None
            } else {
                Some(c.take(usize::try_from(len).ok()?)?)
            });
        }
        let result_formats = c.rest();
        let mut check = Cursor::new(result_formats);
        let nr = read_count(&mut check)?;
        if check.rest().len() != 2 * nr {
            return None;
        }
        Some(Bind {
            portal,
            statement,
            param_formats,
            params,
            result_formats,
        })
    }

    /// The format code that applies to parameter `i` (0 text, 1 binary).
    pub fn param_format(&self, i: usize) -> i16 {
        match self.param_formats.len() {
            0 => 0,
            1 => self.param_formats[0],
            _ => self.param_formats.get(i).copied().unwrap_or(0),
        }
    }
}

fn read_count(c: &mut Cursor<'_>) -> Option<usize> {
    usize::try_from(i16::from_be_bytes(c.take(2)?.try_into().ok()?)).ok()
}

/// Appends a Bind frame with one format code per parameter.
pub fn encode_bind(
    out: &mut BytesMut,
    portal: &[u8],
    statement: &[u8],
    formats: &[i16],
    params: &[Option<&[u8]>],
    result_formats: &[u8],
) {
    let values: usize = params.iter().map(|p| 4 + p.map_or(0, <[u8]>::len)).sum();
    let len = 4
        + portal.len()
        + 1
        + statement.len()
        + 1
        + 2
        + 2 * formats.len()
        + 2
        + values
        + result_formats.len();
    out.reserve(1 + len);
    out.put_u8(b'B');
    out.put_u32(len as u32);
    out.put_slice(portal);
    out.put_u8(0);
    out.put_slice(statement);
    out.put_u8(0);
    out.put_i16(formats.len() as i16);
    for f in formats {
        out.put_i16(*f);
    }
    out.put_i16(params.len() as i16);
    for p in params {
        match p {
            None => out.put_i32(-1),
            Some(v) => {
                out.put_i32(v.len() as i32);
                out.put_slice(v);
            }
        }
    }
    out.put_slice(result_formats);
}

/// Describe or Close: which kind of object ('S' statement, 'P' portal) and its name.
pub fn target(body: &[u8]) -> Option<(u8, &[u8])> {
    let mut c = Cursor::new(body);
    let kind = c.u8()?;
    let name = c.cstr()?;
    Some((kind, name))
}

/// Reads a ParameterDescription body into type OIDs.
pub fn parameter_types(body: &[u8]) -> Option<Vec<u32>> {
    let mut c = Cursor::new(body);
    let n = read_count(&mut c)?;
    (0..n).map(|_| c.i32().map(|v| v as u32)).collect()
}

/// Appends a ParameterDescription frame.
pub fn encode_parameter_description(out: &mut BytesMut, types: &[u32]) {
    out.put_u8(b't');
    out.put_u32((4 + 2 + 4 * types.len()) as u32);
    out.put_i16(types.len() as i16);
    for t in types {
        out.put_u32(*t);
    }
}

/// Extracts the SQL of a simple Query body (without the NUL).
pub fn query_text(body: &[u8]) -> Option<&[u8]> {
    Cursor::new(body).cstr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trip() {
        let p = Parse {
            name: b"s1",
            query: b"insert into t values ($1)",
            param_types: vec![25, 0],
        };
        let mut out = BytesMut::new();
        p.encode(&mut out);
        assert_eq!(Parse::decode(&out[5..]), Some(p));
        assert_eq!(Parse::decode(b"s1\0no terminator"), None);
    }

    #[test]
    fn bind_round_trip_and_formats() {
        let mut out = BytesMut::new();
        let rf = [0u8, 1, 0, 1];
        encode_bind(&mut out, b"", b"s1", &[1], &[Some(b"abc"), None], &rf);
        let b = Bind::decode(&out[5..]).unwrap();
        assert_eq!(b.statement, b"s1");
        assert_eq!(b.params, vec![Some(&b"abc"[..]), None]);
        assert_eq!(b.param_format(1), 1);
        assert_eq!(b.result_formats, &rf);
        // Truncated values and lying counts are rejected, not panicked on.
        assert_eq!(Bind::decode(&out[5..out.len() - 3]), None);
        assert_eq!(Bind::decode(b"\0s\0\0\x01"), None);
        assert_eq!(Bind::decode(b"\0s\0\0\0\0\x01\x7f\xff\xff\xff"), None);
    }

    #[test]
    fn parameter_description_round_trip() {
        let mut out = BytesMut::new();
        encode_parameter_description(&mut out, &[17, 1001]);
        assert_eq!(parameter_types(&out[5..]), Some(vec![17, 1001]));
        assert_eq!(parameter_types(&[0, 2, 0, 0, 0, 17]), None);
        assert_eq!(target(b"Sname\0"), Some((b'S', &b"name"[..])));
    }
}
