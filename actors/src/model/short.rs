//! `ShortStr`: an immutable string stored inline when short (≤ 22 bytes), on the heap otherwise.
//!
//! Source instance names ("t", "ext", "2624", "mobile", "+46701234567") are short and there are
//! several per person; a `Box<str>` costs a 16-byte pointer plus a 32-byte heap chunk each.
//! Inline storage keeps them in the 24 bytes of the slot itself.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

const INLINE: usize = 22;

/// A short immutable string (see the module docs).
#[derive(Clone)]
pub struct ShortStr(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<str>),
}

impl ShortStr {
    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // The bytes were copied from a `&str` of exactly `len` bytes, so they are UTF-8.
            Repr::Inline { len, buf } => std::str::from_utf8(&buf[..*len as usize]).unwrap_or(""),
            Repr::Heap(b) => b,
        }
    }
}

impl From<&str> for ShortStr {
    fn from(s: &str) -> Self {
        if s.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            ShortStr(Repr::Inline { len: s.len() as u8, buf })
        } else {
            ShortStr(Repr::Heap(s.into()))
        }
    }
}

impl From<String> for ShortStr {
    fn from(s: String) -> Self {
        ShortStr::from(s.as_str())
    }
}

impl Deref for ShortStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for ShortStr {
    fn eq(&self, o: &Self) -> bool {
        self.as_str() == o.as_str()
    }
}

impl Eq for ShortStr {}

impl Hash for ShortStr {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_heap_round_trip() {
        for s in ["", "t", "+46701234567", "exactly-22-bytes-long!", "a much longer instance name than fits inline", "åäö-ø"] {
            let x = ShortStr::from(s);
            assert_eq!(&*x, s);
            assert_eq!(x, ShortStr::from(s.to_string()));
        }
        assert_eq!(std::mem::size_of::<ShortStr>(), 24);
    }
}
