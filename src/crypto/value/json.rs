//! A JSON validator (RFC 8259 grammar) that allocates nothing.
//!
//! pgveil keeps json and jsonb values as text, but must refuse text that
//! PostgreSQL would refuse, or a client would store a value that can never
//! be cast back. Nesting is tracked in a fixed bit stack, so depth is
//! limited to [`MAX_DEPTH`] levels instead of recursing on attacker input.

use super::Reason;

/// Deepest nesting accepted. PostgreSQL's own limit is its stack depth;
/// 1024 levels is far beyond any real document.
pub(super) const MAX_DEPTH: usize = 1024;

struct Stack {
    bits: [u64; MAX_DEPTH / 64],
    depth: usize,
}

impl Stack {
    fn push(&mut self, is_object: bool) -> Result<(), Reason> {
        if self.depth >= MAX_DEPTH {
            return Err("JSON nested too deeply");
        }
        let (w, b) = (self.depth / 64, self.depth % 64);
        if is_object {
            self.bits[w] |= 1 << b;
        } else {
            self.bits[w] &= !(1 << b);
        }
        self.depth += 1;
        Ok(())
    }
    fn top_is_object(&self) -> bool {
        let d = self.depth - 1;
        self.bits[d / 64] & (1 << (d % 64)) != 0
    }
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    jsonb: bool,
}

const BAD: Reason = "not valid JSON";

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }
    fn eat(&mut self, b: u8) -> Result<(), Reason> {
        if self.peek() == Some(b) {
            self.i += 1;
            Ok(())
        } else {
            Err(BAD)
        }
    }
    fn literal(&mut self, word: &[u8]) -> Result<(), Reason> {
        if self.s.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(BAD)
        }
    }
    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }
    fn number(&mut self) -> Result<(), Reason> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(BAD),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(BAD);
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(BAD);
            }
        }
        Ok(())
    }
    fn string(&mut self) -> Result<(), Reason> {
        self.eat(b'"')?;
        loop {
            match self.peek() {
                None => return Err(BAD),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            let hex = self.s.get(self.i + 1..self.i + 5).ok_or(BAD)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(BAD);
                            }
                            if self.jsonb && hex == b"0000" {
                                return Err("unsupported Unicode escape \\u0000 in jsonb");
                            }
                            self.i += 5;
                        }
                        _ => return Err(BAD),
                    }
                }
                Some(c) if c < 0x20 => return Err(BAD),
                Some(_) => self.i += 1,
            }
        }
    }
}

/// Checks that `s` (already known to be UTF-8) is one JSON value with
/// optional surrounding whitespace. `jsonb` adds jsonb's extra rule
/// (no `\u0000`).
pub(super) fn validate(s: &[u8], jsonb: bool) -> Result<(), Reason> {
    let mut lx = Lexer { s, i: 0, jsonb };
    let mut st = Stack {
        bits: [0; MAX_DEPTH / 64],
        depth: 0,
    };
    'value: loop {
        lx.ws();
        match lx.peek() {
            Some(b'{') => {
                lx.i += 1;
                st.push(true)?;
                lx.ws();
                if lx.peek() == Some(b'}') {
                    lx.i += 1;
                    st.depth -= 1;
                } else {
                    lx.string()?;
                    lx.ws();
                    lx.eat(b':')?;
                    continue 'value;
                }
            }
            Some(b'[') => {
                lx.i += 1;
                st.push(false)?;
                lx.ws();
                if lx.peek() == Some(b']') {
                    lx.i += 1;
                    st.depth -= 1;
                } else {
                    continue 'value;
                }
            }
            Some(b'"') => lx.string()?,
            Some(b't') => lx.literal(b"true")?,
            Some(b'f') => lx.literal(b"false")?,
            Some(b'n') => lx.literal(b"null")?,
            Some(b'-' | b'0'..=b'9') => lx.number()?,
            _ => return Err(BAD),
        }
        // After a complete value: close containers or move to the next item.
        loop {
            lx.ws();
            if st.depth == 0 {
                break 'value;
            }
            let obj = st.top_is_object();
            match lx.peek() {
                Some(b',') => {
                    lx.i += 1;
                    if obj {
                        lx.ws();
                        lx.string()?;
                        lx.ws();
                        lx.eat(b':')?;
                    }
                    continue 'value;
                }
                Some(b'}') if obj => {
                    lx.i += 1;
                    st.depth -= 1;
                }
                Some(b']') if !obj => {
                    lx.i += 1;
                    st.depth -= 1;
                }
                _ => return Err(BAD),
            }
        }
    }
    if lx.i == s.len() {
        Ok(())
    } else {
        Err(BAD)
    }
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_json() {
        for ok in [
            "1",
            " -0.5e+10 ",
            "\"a\\u00e9\\n\"",
            "[]",
            "{}",
            "[1, [2, {\"a\": [true, false, null]}], \"x\"]",
            "{\"a\":{\"b\":{}}, \"c\": []}",
        ] {
            assert_eq!(validate(ok.as_bytes(), false), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_non_json() {
        for bad in [
            "",
            " ",
            "01",
            "1.",
            "-",
            "[1,]",
            "{\"a\"}",
            "{\"a\":1,}",
            "[1 2]",
            "{1:2}",
            "tru",
            "\"abc",
            "[",
            "]",
            "{}}",
            "\"\t\"",
            "'a'",
            "\"\\x\"",
            "1 2",
        ] {
            assert!(validate(bad.as_bytes(), false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "[".repeat(2000) + &"]".repeat(2000);
        assert!(validate(deep.as_bytes(), false).is_err());
        let ok = "[".repeat(1000) + &"]".repeat(1000);
        assert!(validate(ok.as_bytes(), false).is_ok());
    }

    #[test]
    fn jsonb_refuses_nul_escape() {
        assert!(validate(b"\"\\u0000\"", false).is_ok());
        assert!(validate(b"\"\\u0000\"", true).is_err());
    }
}
