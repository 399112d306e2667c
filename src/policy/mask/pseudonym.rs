//! The `pseudonym` mask: a keyed token that stands for a value.
//!
//! Analysts need to count distinct guests and join tables on a column
//! without seeing its values. A keyed HMAC gives the same token for the same
//! value of the same column, a different token in another column (its key
//! is derived per column elsewhere), and, unlike a plain hash, cannot be
//! reversed by hashing every phone number or ID: that needs the key.
//!
//! The token is `pn_` followed by the first 64 bits of HMAC-SHA256 in hex.
//! 64 bits keep accidental collisions negligible (about one in 2^32 pairs
//! across four billion distinct values) while staying short enough to read.
//! The input is the value's text as pgveil renders it from the canonical
//! encoding, so equal values always give equal tokens.

use std::fmt;

use ring::hmac;

/// Key material for the pseudonym mask: one HMAC-SHA256 key per column,
/// derived elsewhere (from the keyring) so that tokens are stable across
/// restarts and differ between columns.
pub struct PseudonymKey(hmac::Key);

impl PseudonymKey {
    /// Builds the key from secret bytes (32 bytes from a KDF is the
    /// intended use; HMAC accepts any length).
    pub fn new(secret: &[u8]) -> Self {
        PseudonymKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// Appends the token for `value`.
    pub(super) fn token(&self, value: &str, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let tag = hmac::sign(&self.0, value.as_bytes());
        out.push_str("pn_");
        for &b in &tag.as_ref()[..8] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// Keys derived with `ring::hkdf` (as the column ciphers are) convert
/// directly, without the secret passing through a byte buffer.
impl From<hmac::Key> for PseudonymKey {
    fn from(key: hmac::Key) -> Self {
        PseudonymKey(key)
    }
}

/// Never prints the key.
impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PseudonymKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(key: &PseudonymKey, value: &str) -> String {
        let mut out = String::new();
        key.token(value, &mut out);
        out
    }

    #[test]
    fn stable_per_key_and_value() {
        let a = PseudonymKey::new(b"column a secret");
        let b = PseudonymKey::new(b"column b secret");
        let t = token(&a, "13812345678");
        assert_eq!(t.len(), 3 + 16);
        assert!(t.starts_with("pn_"));
        assert!(t[3..]
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_eq!(
            t,
            token(&PseudonymKey::new(b"column a secret"), "13812345678")
        );
        assert_ne!(t, token(&a, "13812345679"));
        assert_ne!(t, token(&b, "13812345678"));
        assert_ne!(token(&a, "张三"), token(&a, "张三 "));
    }

    #[test]
    fn matches_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let key = PseudonymKey::new(b"Jefe");
        assert_eq!(
            token(&key, "what do ya want for nothing?"),
            "pn_5bdcc146bf60754e"
        );
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(
            format!("{:?}", PseudonymKey::new(b"secret")),
            "PseudonymKey(..)"
        );
    }
}
