//! Test support: the one mutation harness behind every "no input panics" test of this crate's parsers.
//!
//! Deterministic (no fuzzing crate, nothing random between runs, so a failing round replays exactly): a
//! [`Xorshift`] generator drives a [`Mutator`], which makes one to four edits to a base input (a fixture)
//! from the vocabulary of the parser under test. Half of the edits keep the document's structure, so a good
//! share of the mutants still parse and reach the deep code (field mapping, value maps, timestamps): the text
//! of a JSON string (between an opening quote and the next quote) becomes one of the parser's words, or a
//! letter or digit becomes another. The other half break it: a flipped bit, a random byte, a deleted range,
//! one of the parser's tokens spliced in, a duplicated chunk, truncation.

// Each provider is a feature; with none of these on, parts of the harness have no test to serve.
#![cfg_attr(
    not(any(feature = "graph", feature = "calendar", feature = "mbn", feature = "operator", feature = "o2g")),
    allow(dead_code)
)]

/// A xorshift64 generator (shifts 13, 7, 17): small, fast and the same on every run.
pub(crate) struct Xorshift(u64);

impl Xorshift {
    /// The seed of [`Xorshift::default`].
    pub(crate) const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

    /// A generator from `seed` (zero, which xorshift never leaves, is taken as one).
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

    /// A number below `n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

impl Default for Xorshift {
    /// A generator from [`Xorshift::SEED`].
    fn default() -> Xorshift {
        Xorshift::new(Xorshift::SEED)
    }
}

/// JSON's punctuation, bad escapes, numbers and bytes: the part of the vocabulary every JSON
/// parser's mutation test shares (each adds its own field snippets).
pub(crate) const JSON_TOKENS: &[&[u8]] =
    &[b"{", b"}", b"[", b"]", b",", b":", b"null", b"\"", b"\\u0000", b"\\ud800", b"1e999", b"-1", b"\xff\xfe"];

/// XML's punctuation, entities and character references, and bytes: the part of the vocabulary
/// every XML parser's mutation test shares (each adds its own element snippets).
pub(crate) const XML_TOKENS: &[&[u8]] =
    &[b"<", b">", b"</", b"/>", b"&amp;", b"&#0;", b"&#x110000;", b"<![CDATA[", b"]]>", b"<!--", b"=\"", b"\xff\xfe"];

/// The loop of every "no input panics" test: `rounds` mutants of `bases` (taken in turn) go to
/// `check`, which runs the parsers on them (a panic fails the test) and says how many parses
/// succeeded; fewer than `at_least` in all fails the test too, as the mutations were then so
/// destructive that the deep paths went untested. `check` gets the generator for inputs of its
/// own (a clock, a status code).
pub(crate) fn no_input_panics(
    m: &Mutator<'_>,
    bases: &[&[u8]],
    rounds: usize,
    rng: &mut Xorshift,
    at_least: usize,
    mut check: impl FnMut(&[u8], &mut Xorshift) -> usize,
) {
    let mut parsed = 0usize;
    for round in 0..rounds {
        let v = m.mutate(bases[round % bases.len()], rng);
        parsed += check(&v, rng);
    }
    assert!(parsed >= at_least, "only {parsed} parses of {rounds} mutants succeeded: the deep paths went untested");
}

/// The repository's fixture `path` (below `fixtures/`, e.g. `mbn/token.json`).
pub(crate) fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/../fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The files of the fixture folder `dir` (below `fixtures/`, e.g. `operators/tdc`) whose names
/// end in `.{ext}`, as `(file name, contents)`, sorted by name; a folder without any fails the
/// test.
pub(crate) fn fixture_files(dir: &str, ext: &str) -> Vec<(String, Vec<u8>)> {
    let full = format!("{}/../fixtures/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&full)
        .unwrap_or_else(|e| panic!("{full}: {e}"))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.strip_suffix(ext).is_some_and(|stem| stem.ends_with('.')))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "{full} has no .{ext} fixtures");
    names.into_iter().map(|n| (n.clone(), fixture(&format!("{dir}/{n}")))).collect()
}

/// What a letter or digit may become.
const ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_";

/// The longest range a deletion removes.
const MAX_DELETE: usize = 64;

/// The longest chunk a duplication copies.
const MAX_DUPLICATE: usize = 256;

/// A parser's vocabulary, and the mutants made from it.
#[derive(Clone, Copy)]
pub(crate) struct Mutator<'a> {
    /// Spliced in anywhere: the format's punctuation, field snippets, bad escapes and bytes.
    tokens: &'a [&'a [u8]],
    /// Put in place of the text of a string; with none, a letter or digit is changed instead.
    words: &'a [&'a str],
}

impl<'a> Mutator<'a> {
    /// A mutator that splices in `tokens` and puts `words` (may be empty) into strings.
    pub(crate) fn new(tokens: &'a [&'a [u8]], words: &'a [&'a str]) -> Mutator<'a> {
        Mutator { tokens, words }
    }

    /// A mutant of `base`: one to four edits.
    pub(crate) fn mutate(&self, base: &[u8], rng: &mut Xorshift) -> Vec<u8> {
        let mut v = base.to_vec();
        for _ in 0..1 + rng.below(4) {
            // Below the length, or 0 when empty: always a valid place to insert at.
            let at = rng.below(v.len());
            match rng.below(12) {
                // Structure-preserving, half of the edits: a string's text becomes a word (when the
                // vocabulary has words), a letter or digit becomes another.
                3..=5 if !self.words.is_empty() => self.replace_string(&mut v, rng),
                0..=5 => replace_alnum(&mut v, at, rng),
                // Breaking, the other half.
                6 => {
                    if let Some(b) = v.get_mut(at) {
                        *b ^= 1 << rng.below(8);
                    }
                }
                7 => {
                    let byte = rng.next() as u8;
                    match v.get_mut(at) {
                        Some(b) if rng.below(2) == 0 => *b = byte,
                        _ => v.insert(at, byte),
                    }
                }
                8 => {
                    let end = (at + rng.below(MAX_DELETE)).min(v.len());
                    v.drain(at..end);
                }
                9 => {
                    let token = self.tokens.get(rng.below(self.tokens.len())).copied().unwrap_or_default();
                    v.splice(at..at, token.iter().copied());
                }
                10 => {
                    let end = (at + rng.below(MAX_DUPLICATE)).min(v.len());
                    let chunk = v[at..end].to_vec();
                    v.splice(end..end, chunk);
                }
                _ => v.truncate(at),
            }
        }
        v
    }

    /// Replaces the text of a string (between an opening quote and the next quote) with a word.
    fn replace_string(&self, v: &mut Vec<u8>, rng: &mut Xorshift) {
        let quotes: Vec<usize> = v.iter().enumerate().filter(|(_, b)| **b == b'"').map(|(i, _)| i).collect();
        let pick = rng.below(quotes.len() / 2) * 2;
        if let (Some(&open), Some(&close)) = (quotes.get(pick), quotes.get(pick + 1)) {
            let word = self.words[rng.below(self.words.len())];
            v.splice(open + 1..close, word.bytes());
        }
    }
}

/// Changes the first letter or digit at or after `at` (within 64 bytes, wrapping) into another one.
fn replace_alnum(v: &mut [u8], at: usize, rng: &mut Xorshift) {
    let found = (0..64).map(|k| (at + k) % v.len().max(1)).find(|&i| v.get(i).is_some_and(u8::is_ascii_alphanumeric));
    if let Some(b) = found.and_then(|i| v.get_mut(i)) {
        *b = ALNUM[rng.below(ALNUM.len())];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_xorshift64_and_below_stays_below() {
        let mut a = Xorshift::default();
        let mut b = Xorshift::new(Xorshift::SEED);
        assert_eq!(Xorshift::new(1).next(), 0x4082_2041);
        assert_eq!(Xorshift::new(0).next(), Xorshift::new(1).next());
        for n in [0, 1, 2, 7, 1000] {
            let x = a.below(n);
            assert_eq!(x, b.below(n));
            assert!(x < n.max(1));
        }
    }

    #[test]
    fn fixtures_are_read_by_path_and_by_folder() {
        let token = fixture("mbn/token.json");
        let all = fixture_files("mbn", "json");
        assert!(all.iter().all(|(n, _)| n.ends_with(".json")), "the README is not a fixture");
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "sorted by name");
        assert_eq!(all.iter().find(|(n, _)| n == "token.json").map(|(_, b)| b), Some(&token));
        assert!(JSON_TOKENS.contains(&&b"null"[..]));
    }

    #[test]
    fn mutants_are_reproducible_and_words_land_inside_strings() {
        let base = br#"{"state":"idle","id":"x"}"#;
        let m = Mutator::new(&[b"{", b"\xff"], &["BUSY"]);
        let run = |seed| {
            let mut rng = Xorshift::new(seed);
            (0..2000).map(|_| m.mutate(base, &mut rng)).collect::<Vec<_>>()
        };
        let mutants = run(7);
        assert_eq!(mutants, run(7));
        assert!(mutants.iter().any(|v| v.windows(6).any(|w| w == b"\"BUSY\"")), "a string became a word");
        assert!(mutants.iter().any(|v| v.is_empty() || v.len() < base.len()), "some were cut");
        assert!(mutants.iter().any(|v| v.contains(&0xff)), "tokens were spliced in");
        // Empty inputs and vocabularies are fine.
        let bare = Mutator::new(&[], &[]);
        let mut rng = Xorshift::default();
        for _ in 0..200 {
            let _ = bare.mutate(b"", &mut rng);
            let _ = Mutator::new(&[], &["w"]).mutate(b"\"", &mut rng);
        }
    }
}
