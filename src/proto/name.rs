//! Prepared-statement and portal names as map keys, stored inline.
//!
//! A session looks names up several times per statement (Bind, Describe,
//! Execute, and the replies to each). With `Vec<u8>` keys every comparison
//! chased a pointer into a separate allocation, and that one load showed
//! up as 2–4 % of the proxy's CPU (`perf`: `memcmp` under hashbrown's key
//! comparison, on the read mix). Names up to [`INLINE`] bytes — the unnamed
//! statement and every driver's generated names — live in the key itself.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// A map keyed by statement or portal names. The hasher is foldhash's
/// seeded one: these maps are looked up several times per statement, and
/// SipHash cost more than the lookup's other work. The seed is random per
/// process, and the maps are per session, so a client choosing colliding
/// names could only slow its own session.
pub type NameMap<V> = std::collections::HashMap<Name, V, foldhash::fast::RandomState>;

/// Longest name stored without an allocation.
pub const INLINE: usize = 22;

/// A statement or portal name (a key of the session's maps). Looked up by
/// `&[u8]`: it hashes and compares exactly as its bytes do.
#[derive(Clone)]
pub struct Name(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Name {
    /// A key for `name`.
    pub fn new(name: &[u8]) -> Self {
        if name.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..name.len()].copy_from_slice(name);
            Name(Repr::Inline {
                len: name.len() as u8,
                bytes,
            })
        } else {
            Name(Repr::Heap(name.into()))
        }
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(b) => b,
        }
    }
}

impl Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash as `[u8]` does, for lookups by `&[u8]`.
        self.as_bytes().hash(state);
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_names_are_found_by_their_bytes() {
        let long = [b'x'; INLINE + 1];
        let mut m = NameMap::default();
        for n in [&b""[..], b"P_0", &long[..INLINE], &long[..]] {
            m.insert(Name::new(n), n.len());
        }
        assert_eq!(m.len(), 4);
        assert_eq!(m.get(&b""[..]), Some(&0));
        assert_eq!(m.get(&b"P_0"[..]), Some(&3));
        assert_eq!(m.get(&long[..INLINE]), Some(&INLINE));
        assert_eq!(m.get(&long[..]), Some(&(INLINE + 1)));
        assert_eq!(m.get(&b"P_1"[..]), None);
        // A name that is a prefix of another, with trailing zero bytes in
        // the inline storage, is still a different key.
        assert_eq!(m.get(&b"P_0\0"[..]), None);
        assert_eq!(Name::new(b"ab").as_bytes(), b"ab");
        assert_eq!(Name::new(&long).as_bytes(), &long[..]);
    }
}
