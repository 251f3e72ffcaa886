//! Test support: deterministic xorshift mutations of fixture bytes (no fuzzing crate), the same
//! scheme as the calendar parsers' (providers/src/calendar/fuzz.rs).
//!
//! Half of the mutations keep the document's structure (a letter or digit becomes another
//! letter or digit), so a good share of mutants still parse and reach the deep code paths;
//! the other half break it (random bytes, deletions, inserted tokens, duplicated chunks,
//! truncation). [`truncations`] cuts a seed at every position.

/// A xorshift64 generator.
pub(crate) struct Xorshift(u64);

impl Xorshift {
    /// A generator from a non-zero seed.
    pub(crate) fn new(seed: u64) -> Xorshift {
        Xorshift(seed.max(1))
    }

    /// The next pseudo-random number.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// A mutant of `seed`: one to four edits.
pub(crate) fn mutate(seed: &[u8], rng: &mut Xorshift, tokens: &[&[u8]]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len());
        match rng.below(10) {
            0..=4 => {
                // Structure-preserving: an alphanumeric byte becomes another one.
                let at = (0..64)
                    .map(|k| (at + k) % v.len().max(1))
                    .find(|&i| v.get(i).is_some_and(u8::is_ascii_alphanumeric));
                if let Some(b) = at.and_then(|i| v.get_mut(i)) {
                    *b = ALNUM[(rng.next() % ALNUM.len() as u64) as usize];
                }
            }
            5 => {
                if let Some(b) = v.get_mut(at) {
                    *b = rng.next() as u8;
                }
            }
            6 => {
                let end = (at + rng.below(64)).min(v.len());
                v.drain(at.min(end)..end);
            }
            7 => {
                let t = tokens.get(rng.below(tokens.len())).copied().unwrap_or(b"");
                let at = at.min(v.len());
                v.splice(at..at, t.iter().copied());
            }
            8 => {
                let end = (at + rng.below(256)).min(v.len());
                let chunk = v[at.min(end)..end].to_vec();
                v.splice(end..end, chunk);
            }
            _ => v.truncate(at),
        }
    }
    v
}

/// Every prefix of `seed` (cut at each position, 0..len).
pub(crate) fn truncations(seed: &[u8]) -> impl Iterator<Item = &[u8]> {
    (0..seed.len()).map(move |i| &seed[..i])
}

/// Tokens that break or bend XML, for [`mutate`].
pub(crate) const XML_TOKENS: [&[u8]; 12] = [
    b"<",
    b">",
    b"</",
    b"/>",
    b"&amp;",
    b"&#x0;",
    b"&#99999999;",
    b"<![CDATA[",
    b"]]>",
    b"\"",
    b"\xff\xfe",
    b"<x:y a=\"1\">",
];
