//! Directory search: case- and diacritic-insensitive prefix/substring search
//! over names, titles, departments and numbers, ranked in tiers and paged.
//!
//! # Design (why it is fast and small)
//!
//! * People are renumbered by **name rank** (sorted by folded name, then id).
//!   Every per-person array of the index is indexed by rank, so a scan in
//!   index order already yields matches in name order: ranking needs no sort
//!   at all, only a bucket per tier (see `SearchIndex::collect`).
//! * Names, phone numbers and extensions live in three contiguous byte
//!   arenas (`TextSet`), one line per person (numbers as digits only, so a
//!   query in any notation compares equal). A prefix lookup is a binary search in a sorted array of
//!   word positions; a substring lookup is a single `memchr::memmem` pass over
//!   the arena (about 16 bytes per person for names, so ~1.6 MB at 100 k
//!   people), jumping to the next person after each hit. That one pass costs
//!   about as much as scanning per-person bigram signatures would, so we save
//!   those 32 bytes per person. An arena is skipped outright when the query
//!   word contains a byte the arena never does (letters never match the
//!   numbers arena, digits rarely match names), and people who already
//!   matched at a better tier are skipped when that is most of them.
//! * Titles and departments repeat a lot, so they are stored once each in a
//!   small dictionary `TextSet` with a posting list (ranks, ascending) per
//!   entry. A match on "ekonomi" costs one dictionary lookup plus one pass
//!   over that department's members, and listing a department with an empty
//!   query is a slice of its posting list.
//! * Per query we use one byte per person (its best tier so far; two bytes for
//!   multi-word queries). 100 kB is cheap to clear and scans 8 people at a time.
//!
//! # Matching rules
//!
//! Query text is folded like the index ([`super::fold::fold_search_text`]) and
//! split into words; every word must match somewhere in the person (prefix of
//! a word, or substring), and a person ranks by their *worst* word. Words of
//! one character match word prefixes only: a one-letter substring matches
//! nearly everyone and would just be noise (and slow). A query made only of
//! digits and phone punctuation ("070-123 45", "+46 70") is one number query:
//! its digits are compared against the digits-only forms of the person's
//! numbers. Numbers of the plan's country are indexed in national form
//! ("0701234567"), foreign ones as international digits ("4791234567"), and
//! a query in international form ("+46701", "0046701", "46701") is also
//! tried in national form ("0701"), so "0701" and "+46701" both find
//! +46701…. Indexing the national form rather than the E.164 one matters
//! for speed: with E.164 every number starts with the same "46", so a
//! substring pass for "+46…" hits every person.

use std::collections::HashMap;
use std::ops::Range;

use memchr::arch::all::packedpair::HeuristicFrequencyRank;
use memchr::memmem;

use super::fold::{fold_search_text, search_text};
use super::phone::national_form;
use super::people::People;
use super::{phone_e164, DeptIdx, NumberPlan, PersonRef, UserIdx, NO_DEPT};

/// Rank tiers, best first. A person's tier for a query decides the order of
/// results before name order does.
mod tier {
    /// The whole folded name equals the query.
    pub(super) const NAME_EXACT: u8 = 0;
    /// The name starts with the query.
    pub(super) const NAME_PREFIX: u8 = 1;
    /// A word of the name starts with the query.
    pub(super) const NAME_WORD: u8 = 2;
    /// A word of the department or title starts with the query.
    pub(super) const ORG_WORD: u8 = 3;
    /// A number (digits-only form) starts with the query.
    pub(super) const NUMBER_PREFIX: u8 = 4;
    /// The query is a substring of the name.
    pub(super) const NAME_SUB: u8 = 5;
    /// The query is a substring of the title, department or a number.
    pub(super) const OTHER_SUB: u8 = 6;
    /// Number of real tiers.
    pub(super) const COUNT: usize = 7;
    /// No match.
    pub(super) const NONE: u8 = u8::MAX;
    /// Outside the department filter. Equal to the best tier so nothing can
    /// lower it; [`super::SearchIndex::collect`] never looks at these people.
    pub(super) const EXCLUDED: u8 = 0;
}

/// Longest query (bytes) we look at; the rest is ignored. Nobody types more
/// into a switchboard search box, and it bounds the work per request.
pub const MAX_QUERY_BYTES: usize = 256;

/// At most this many words of a query are used; later words are ignored.
pub const MAX_QUERY_WORDS: usize = 8;

/// Indexed text per person and field is cut at this many bytes (at a char
/// boundary). Real names and titles are far shorter; it keeps word offsets
/// in a `u16`.
const MAX_TEXT_BYTES: usize = 2048;

/// Default page size for [`SearchQuery::new`].
pub const DEFAULT_LIMIT: usize = 20;

/// A search request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SearchQuery<'a> {
    /// Free text: name, department, title, number or extension. Empty lists
    /// everyone (or the department, if one is given) in name order.
    pub q: &'a str,
    /// Only people in this department (folded compare: "ekonomi" matches
    /// "Ekonomi"). An unknown department yields no results.
    pub department: Option<&'a str>,
    /// Page size. Zero returns no items but still counts `total`.
    pub limit: usize,
    /// Number of ranked results to skip.
    pub offset: usize,
}

impl<'a> SearchQuery<'a> {
    /// A query for `q` with no department filter, first page of
    /// [`DEFAULT_LIMIT`] results.
    pub fn new(q: &'a str) -> Self {
        SearchQuery { q, department: None, limit: DEFAULT_LIMIT, offset: 0 }
    }
}

/// One page of search results.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SearchResult {
    /// Number of people matching the query (all pages).
    pub total: usize,
    /// The requested page, best first.
    pub items: Vec<UserIdx>,
}

/// Many short texts (one per owner: a person, a title or a department) in a
/// single arena, with a sorted word index for prefix lookups.
#[derive(Debug, Default)]
struct TextSet {
    /// Owner texts, each followed by `b'\n'`; words are separated by one
    /// `b' '` (search text never contains either inside a word).
    arena: Vec<u8>,
    /// `starts[o]..starts[o + 1] - 1` is owner `o`'s text; one extra entry
    /// at the end so that the next owner's start always exists.
    starts: Vec<u32>,
    /// Word positions sorted by word text: owner and offset within its text.
    /// Two parallel arrays (6 bytes per word) rather than a padded tuple.
    word_owner: Vec<u32>,
    word_rel: Vec<u16>,
    /// Bit set of the byte values that occur in `arena`.
    present: [u64; 4],
    /// Byte frequency rank in this arena (0 = absent … 255 = most common),
    /// for memmem's prefilter: its built-in table is tuned for general text
    /// and badly misjudges all-digit text where most numbers start "07…",
    /// which made number substring scans several times slower.
    rank: ByteRank,
}

/// Frequency ranks of bytes in one arena (see [`TextSet::rank`]).
#[derive(Debug, Clone)]
struct ByteRank([u8; 256]);

impl Default for ByteRank {
    fn default() -> Self {
        ByteRank([0; 256])
    }
}

impl HeuristicFrequencyRank for &ByteRank {
    fn rank(&self, byte: u8) -> u8 {
        self.0[byte as usize]
    }
}

impl TextSet {
    fn new() -> Self {
        TextSet { starts: vec![0], ..Default::default() }
    }

    /// Appends the next owner's text (already search text).
    fn push(&mut self, text: &str) {
        let text = crate::model::activity::truncate(text, MAX_TEXT_BYTES);
        // Offsets are u32. Past 4 GiB of text (far beyond any directory)
        // further owners get an empty range, i.e. are not searchable, rather
        // than corrupting offsets.
        let room = (u32::MAX as usize).saturating_sub(self.arena.len());
        if text.len() < room {
            self.arena.extend_from_slice(text.as_bytes());
            self.arena.push(b'\n');
        }
        self.starts.push(u32::try_from(self.arena.len()).unwrap_or(u32::MAX));
    }

    /// Builds the sorted word index once all texts are in.
    fn finish(&mut self) {
        let mut words: Vec<(u32, u16)> = Vec::new();
        for owner in 0..self.owners() {
            let text = self.text(owner);
            let mut at_word_start = true;
            for (i, &b) in text.iter().enumerate() {
                if b == b' ' {
                    at_word_start = true;
                } else if at_word_start {
                    words.push((owner as u32, i as u16));
                    at_word_start = false;
                }
            }
        }
        words.sort_unstable_by(|a, b| {
            self.word(a.0, a.1).cmp(self.word(b.0, b.1)).then(a.0.cmp(&b.0))
        });
        self.word_owner = words.iter().map(|w| w.0).collect();
        self.word_rel = words.iter().map(|w| w.1).collect();
        let mut counts = [0u64; 256];
        for &b in &self.arena {
            counts[b as usize] += 1;
        }
        let max = counts.iter().copied().max().unwrap_or(0).max(1);
        for (b, &c) in counts.iter().enumerate() {
            if c > 0 {
                self.present[b >> 6] |= 1 << (b & 63);
                // Linear scale; present bytes rank at least 1.
                self.rank.0[b] = ((c * 255 / max) as u8).max(1);
            }
        }
        self.arena.shrink_to_fit();
        self.starts.shrink_to_fit();
    }

    fn owners(&self) -> usize {
        self.starts.len() - 1
    }

    /// Owner `o`'s text without the trailing newline (empty if unknown).
    fn text(&self, o: usize) -> &[u8] {
        let start = self.starts.get(o).map_or(0, |&s| s as usize);
        let end = self.starts.get(o + 1).map_or(start, |&e| (e as usize).saturating_sub(1)).max(start);
        self.arena.get(start..end).unwrap_or_default()
    }

    /// The word starting at offset `rel` of owner `o`'s text.
    fn word(&self, o: u32, rel: u16) -> &[u8] {
        let start = self.starts[o as usize] as usize + rel as usize;
        let rest = &self.arena[start..];
        let len = rest.iter().position(|&b| b == b' ' || b == b'\n').unwrap_or(rest.len());
        &rest[..len]
    }

    /// Can `needle` occur in this set at all? (Cheap pre-check.)
    fn may_contain(&self, needle: &[u8]) -> bool {
        needle.iter().all(|&b| self.present[(b >> 6) as usize] & (1 << (b & 63)) != 0)
    }

    /// Positions in the sorted word index of all words starting with `prefix`.
    /// They are contiguous: every word below `prefix` sorts before them and
    /// every other word above `prefix` after them.
    fn prefix_range(&self, prefix: &[u8]) -> Range<usize> {
        let word_at = |i: usize| self.word(self.word_owner[i], self.word_rel[i]);
        let n = self.word_owner.len();
        let lo = partition_point(n, |i| word_at(i) < prefix);
        let hi = lo + partition_point(n - lo, |i| word_at(lo + i).starts_with(prefix));
        lo..hi
    }

    /// Calls `f(owner, word_offset)` for each word starting with `prefix`.
    fn for_each_prefix(&self, prefix: &[u8], mut f: impl FnMut(usize, u16)) {
        for i in self.prefix_range(prefix) {
            f(self.word_owner[i] as usize, self.word_rel[i]);
        }
    }

    /// Calls `f(owner)` once for every owner whose text contains `needle`,
    /// in owner order, with a single pass over the arena.
    fn for_each_containing(&self, needle: &[u8], mut f: impl FnMut(usize)) {
        if needle.is_empty() || !self.may_contain(needle) {
            return;
        }
        let finder = self.finder(needle);
        let mut pos = 0usize;
        let mut owner = 0usize;
        while pos < self.arena.len() {
            let Some(hit) = finder.find(&self.arena[pos..]) else { break };
            let hit = pos + hit;
            owner = gallop_owner(&self.starts, owner, hit);
            f(owner);
            // One hit per owner is enough: continue at the next owner.
            pos = self.starts[owner + 1] as usize;
        }
    }

    /// A substring finder for `needle` tuned to this arena's byte frequencies.
    fn finder<'n>(&self, needle: &'n [u8]) -> memmem::Finder<'n> {
        memmem::FinderBuilder::new().build_forward_with_ranker(&self.rank, needle)
    }

    fn memory_bytes(&self) -> usize {
        self.arena.capacity()
            + self.starts.capacity() * 4
            + self.word_owner.capacity() * 4
            + self.word_rel.capacity() * 2
            + std::mem::size_of::<Self>()
    }
}

/// `slice::partition_point` over the index range `0..n`.
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The owner whose text contains arena offset `pos`, searching forward from
/// `from` (hits arrive in increasing order). Galloping keeps this O(log gap)
/// for both dense and sparse hits, instead of O(log n) or O(gap).
fn gallop_owner(starts: &[u32], from: usize, pos: usize) -> usize {
    // Invariant: starts[lo] <= pos < starts[last], last = starts.len() - 1.
    let last = starts.len() - 1;
    let mut lo = from;
    let mut step = 1;
    while lo + step < last && starts[lo + step] as usize <= pos {
        lo += step;
        step *= 2;
    }
    let hi = (lo + step).min(last);
    lo + starts[lo..hi].partition_point(|&s| s as usize <= pos) - 1
}

/// "No entry" in the `member_of` argument of [`Dict::build`].
const NO_ENTRY: u32 = u32::MAX;

/// A dictionary of distinct texts (titles or departments) with, per entry,
/// the ranks of the people who have it.
#[derive(Debug, Default)]
struct Dict {
    text: TextSet,
    /// CSR posting lists: entry `e`'s ranks are `post[post_start[e]..post_start[e + 1]]`,
    /// ascending.
    post_start: Vec<u32>,
    post: Vec<u32>,
}

impl Dict {
    /// `entries[e]` is entry e's search text; `member_of[rank]` its entry,
    /// or [`NO_ENTRY`].
    fn build(entries: &[&str], member_of: &[u32]) -> Dict {
        let mut text = TextSet::new();
        for e in entries {
            text.push(e);
        }
        text.finish();
        let mut counts = vec![0u32; entries.len() + 1];
        for &e in member_of.iter().filter(|&&e| e != NO_ENTRY) {
            counts[e as usize + 1] += 1;
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let post_start = counts.clone();
        let mut fill = counts;
        let mut post = vec![0u32; post_start.last().copied().unwrap_or(0) as usize];
        for (rank, &e) in member_of.iter().enumerate() {
            if e != NO_ENTRY {
                post[fill[e as usize] as usize] = rank as u32;
                fill[e as usize] += 1;
            }
        }
        Dict { text, post_start, post }
    }

    fn members(&self, e: usize) -> &[u32] {
        match (self.post_start.get(e), self.post_start.get(e + 1)) {
            (Some(&a), Some(&b)) => &self.post[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Lowers the tier of every member of an entry that matches `word`:
    /// [`tier::ORG_WORD`] for a word prefix, [`tier::OTHER_SUB`] for a substring.
    fn apply(&self, word: &[u8], substring: bool, marks: &mut Marks<'_>) {
        let mut hits: Vec<(usize, u8)> = Vec::new();
        self.text.for_each_prefix(word, |e, _| hits.push((e, tier::ORG_WORD)));
        if substring {
            self.text.for_each_containing(word, |e| hits.push((e, tier::OTHER_SUB)));
        }
        // Best tier per entry first, so each posting list is walked once.
        hits.sort_unstable();
        hits.dedup_by_key(|h| h.0);
        for (e, t) in hits {
            for &r in self.members(e) {
                marks.lower(r as usize, t);
            }
        }
    }

    fn memory_bytes(&self) -> usize {
        self.text.memory_bytes() + self.post_start.capacity() * 4 + self.post.capacity() * 4
    }
}

/// Per-person best tier for one query word (indexed by rank), plus how many
/// people have matched at all so far.
struct Marks<'a> {
    tiers: &'a mut [u8],
    matched: usize,
}

impl Marks<'_> {
    /// Lowers person `r`'s tier to `t` if that is better.
    #[inline]
    fn lower(&mut self, r: usize, t: u8) {
        if let Some(slot) = self.tiers.get_mut(r) {
            if t < *slot {
                if *slot == tier::NONE {
                    self.matched += 1;
                }
                *slot = t;
            }
        }
    }

    /// Gives tier `t` to every person whose text in `set` (a per-rank set:
    /// names or numbers) contains `needle`.
    ///
    /// A substring tier never beats a prefix tier, so people who already
    /// matched better need no scan. When many have (a query like "070"
    /// prefix-matches 85 % of the numbers), only the runs of people still
    /// worse than `t` are searched; otherwise one pass over the whole arena
    /// is cheaper than cutting it into pieces.
    fn lower_containing(&mut self, set: &TextSet, needle: &[u8], t: u8) {
        if needle.is_empty() || !set.may_contain(needle) {
            return;
        }
        let n = set.owners().min(self.tiers.len());
        if self.matched <= n / 4 {
            set.for_each_containing(needle, |r| self.lower(r, t));
            return;
        }
        let finder = set.finder(needle);
        let mut o = 0usize;
        while o < n {
            while o < n && self.tiers[o] <= t {
                o += 1;
            }
            let run_start = o;
            while o < n && self.tiers[o] > t {
                o += 1;
            }
            if run_start == o {
                continue;
            }
            // People run_start..o are contiguous in the arena.
            let end = set.starts[o] as usize;
            let mut pos = set.starts[run_start] as usize;
            let mut owner = run_start;
            while pos < end {
                let Some(hit) = finder.find(&set.arena[pos..end]) else { break };
                owner = gallop_owner(&set.starts, owner, pos + hit);
                self.lower(owner, t);
                pos = set.starts[owner + 1] as usize;
            }
        }
    }
}

/// One word of a parsed query.
#[derive(Debug)]
struct QueryWord {
    /// Search text of the word (folded; digits for a number query).
    text: String,
    /// Extra digit strings tried against phone numbers only: the
    /// international digits of a "00"-prefixed query, and the national form
    /// of an international one ("+4670" → "070").
    number_alts: Vec<String>,
    /// How many of `number_alts` (from the front) are also searched as
    /// substrings. National rewrites are prefix-only: an occurrence of
    /// "46701" inside a number is already found by searching "46701" itself,
    /// and a substring pass for "0701" over all numbers is the most
    /// expensive scan there is (every mobile starts with "07").
    substring_alts: usize,
    /// National prefixes that mean "the query occurs in the E.164 digits,
    /// starting inside the country code": "6701" is in "+46701…", which is
    /// indexed as "0701…". Searched as prefixes, ranked as substrings.
    straddle_alts: Vec<String>,
}

#[derive(Debug)]
struct ParsedQuery {
    words: Vec<QueryWord>,
    /// The whole query as name search text, for the "name equals / starts
    /// with the query" tiers; empty for number queries.
    whole: String,
}

fn parse_query(q: &str, plan: &NumberPlan) -> ParsedQuery {
    let q = crate::model::activity::truncate(q.trim(), MAX_QUERY_BYTES);
    let numeric = q.bytes().any(|b| b.is_ascii_digit())
        && q.chars().all(|c| c.is_ascii_digit() || c == '+' || is_phone_punct(c));
    if numeric {
        let digits: String = q.chars().filter(char::is_ascii_digit).collect();
        let plus = q.starts_with('+');
        let (number_alts, substring_alts) = number_alts(&digits, plus, plan);
        let straddle_alts = if plus { Vec::new() } else { straddle_alts(&digits, plan) };
        let word = QueryWord { text: digits, number_alts, substring_alts, straddle_alts };
        return ParsedQuery { words: vec![word], whole: String::new() };
    }
    let text = search_text(q);
    let words: Vec<QueryWord> = text
        .split(' ')
        .filter(|w| !w.is_empty())
        .take(MAX_QUERY_WORDS)
        .map(|w| {
            let digits = w.bytes().all(|b| b.is_ascii_digit());
            let (number_alts, substring_alts) = if digits { number_alts(w, false, plan) } else { (Vec::new(), 0) };
            let straddle_alts = if digits { straddle_alts(w, plan) } else { Vec::new() };
            QueryWord { text: w.to_string(), number_alts, substring_alts, straddle_alts }
        })
        .collect();
    let whole = words.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" ");
    ParsedQuery { words, whole }
}

fn is_phone_punct(c: char) -> bool {
    matches!(c, '-' | '.' | '/' | '(' | ')') || c.is_whitespace()
}

/// Other forms of a digit query to try against the numbers index, which
/// holds national forms for the plan's country and international digits for
/// the rest. `plus` = the query started with '+'. Returns the forms and how
/// many of them (from the front) are worth a substring pass.
fn number_alts(digits: &str, plus: bool, plan: &NumberPlan) -> (Vec<String>, usize) {
    let ip = plan.international_prefix.as_str();
    let cc = plan.country_code.as_str();
    let mut alts = Vec::new();
    // International digits: after '+', after "00", or typed without either
    // but starting with our country code ("46701…", as PBX logs show them).
    let intl = if plus {
        Some(digits)
    } else if !ip.is_empty() && digits.len() > ip.len() && digits.starts_with(ip) {
        digits.get(ip.len()..)
    } else if !cc.is_empty() && digits.starts_with(cc) {
        Some(digits)
    } else {
        None
    };
    let mut substring_alts = 0;
    if let Some(intl) = intl {
        if intl != digits {
            alts.push(intl.to_string()); // foreign numbers, e.g. "0047912" → "47912"
            substring_alts = 1;
        }
        if let Some(national) = intl.strip_prefix(cc).filter(|_| !cc.is_empty()) {
            let national = format!("{}{}", plan.trunk_prefix, national);
            if !national.is_empty() && national != digits {
                alts.push(national);
            }
        }
    }
    (alts, substring_alts)
}

/// See [`QueryWord::straddle_alts`]: for each proper suffix of the country
/// code that starts the query, the rest of the query in national form.
fn straddle_alts(digits: &str, plan: &NumberPlan) -> Vec<String> {
    let cc = plan.country_code.as_str();
    (1..cc.len())
        .filter_map(|k| cc.get(k..))
        .filter_map(|suffix| digits.strip_prefix(suffix))
        .filter(|rest| !rest.is_empty())
        .map(|rest| format!("{}{}", plan.trunk_prefix, rest))
        .collect()
}

/// The search index of a [`super::Directory`]. Everything per person is
/// indexed by name rank; `by_rank` maps back to [`UserIdx`].
#[derive(Debug, Default)]
pub(super) struct SearchIndex {
    /// rank → person.
    by_rank: Vec<UserIdx>,
    /// Name search text per rank.
    names: TextSet,
    /// Digits-only phone numbers per rank (national form for the plan's
    /// country, else E.164 digits; as given if that differs), space separated.
    numbers: TextSet,
    /// Extension digits per rank. Kept apart from `numbers` because the
    /// national/international rewrites of a query ("+46701" → "0701") apply
    /// to phone numbers only, never to extensions.
    extensions: TextSet,
    titles: Dict,
    /// Entries are [`DeptIdx`] values of the directory.
    depts: Dict,
}

impl SearchIndex {
    /// Builds the index. `dept_of[i]` is person `i`'s department
    /// ([`NO_DEPT`] for none) and `dept_keys[d]` department `d`'s search text.
    ///
    /// The build keeps no small allocation per person alive at once: 100 k
    /// temporary strings (a `Vec<String>` of folded names, say) leave
    /// megabytes of holes behind when freed, which malloc rarely returns to
    /// the OS, so they would stay in the RSS for the life of the process.
    /// Names are folded into one temporary arena instead, and titles once
    /// per distinct spelling. (Scratch strings freed right away, as in
    /// [`number_text`], are simply reused and cost nothing.)
    pub(super) fn build(
        people: &People,
        dept_of: &[DeptIdx],
        dept_keys: &[&str],
        plan: &NumberPlan,
    ) -> SearchIndex {
        let n = people.len();
        // Search text of every name, in index order: `name_arena[name_at[i]..name_at[i + 1]]`.
        let mut name_arena = String::new();
        let mut name_at: Vec<usize> = Vec::with_capacity(n + 1);
        name_at.push(0);
        let person = |i: UserIdx| people.get(i);
        for i in 0..n as UserIdx {
            fold_search_text(person(i).map_or("", |p| p.name()), &mut name_arena);
            name_at.push(name_arena.len());
        }
        let name_of = |i: usize| &name_arena[name_at[i]..name_at[i + 1]];
        // Vacant indexes (people who left) are not in the index at all.
        let mut by_rank: Vec<UserIdx> = (0..n as UserIdx).filter(|&i| person(i).is_some()).collect();
        by_rank.sort_unstable_by(|&a, &b| {
            let (a, b) = (a as usize, b as usize);
            let id = |i: usize| person(i as UserIdx).map_or("", |p| p.id());
            name_of(a).cmp(name_of(b)).then_with(|| id(a).cmp(id(b)))
        });

        let mut names = TextSet::new();
        let mut numbers = TextSet::new();
        let mut extensions = TextSet::new();
        let mut buf = String::new();
        // Title spelling → entry, and search text → entry (distinct
        // spellings can fold to the same text: "Ekonom", "EKONOM").
        let mut title_by_spelling: HashMap<&str, u32> = HashMap::new();
        let mut title_ids: HashMap<String, u32> = HashMap::new();
        let mut title_texts: Vec<String> = Vec::new();
        let mut title_of: Vec<u32> = Vec::with_capacity(n);
        let mut dept_of_rank: Vec<u32> = Vec::with_capacity(n);
        for &i in &by_rank {
            let p = person(i);
            names.push(name_of(i as usize));
            match &p {
                Some(p) => number_text(p, plan, &mut buf),
                None => buf.clear(),
            }
            numbers.push(&buf);
            buf.clear();
            buf.extend(p.and_then(|p| p.extension()).unwrap_or_default().chars().filter(char::is_ascii_digit));
            extensions.push(&buf);
            let title = match p.and_then(|p| p.title()) {
                None => NO_ENTRY,
                Some(raw) => *title_by_spelling.entry(raw).or_insert_with(|| {
                    let t = search_text(raw);
                    if t.is_empty() {
                        return NO_ENTRY;
                    }
                    let next = title_texts.len() as u32;
                    *title_ids.entry(t).or_insert_with_key(|t| {
                        title_texts.push(t.clone());
                        next
                    })
                }),
            };
            title_of.push(title);
            dept_of_rank.push(dept_of.get(i as usize).copied().filter(|&d| d != NO_DEPT).unwrap_or(NO_ENTRY));
        }
        drop((name_arena, name_at));
        names.finish();
        numbers.finish();
        extensions.finish();
        let title_texts: Vec<&str> = title_texts.iter().map(String::as_str).collect();
        SearchIndex {
            by_rank,
            names,
            numbers,
            extensions,
            titles: Dict::build(&title_texts, &title_of),
            depts: Dict::build(dept_keys, &dept_of_rank),
        }
    }

    /// Runs a query. `dept` is the already-resolved department filter:
    /// `None` = no filter, `Some(d)` = only members of `d`.
    pub(super) fn search(&self, q: &SearchQuery, dept: Option<DeptIdx>, plan: &NumberPlan) -> SearchResult {
        let n = self.by_rank.len();
        let parsed = parse_query(q.q, plan);
        if parsed.words.is_empty() {
            // Empty query: everyone, or the department, in name order. Both
            // lists are already rank-sorted, so a page is a slice.
            let page = |len: usize| {
                let start = q.offset.min(len);
                start..start + q.limit.min(len - start)
            };
            return match dept {
                Some(d) => {
                    let members = self.depts.members(d as usize);
                    let items = members[page(members.len())].iter().map(|&r| self.by_rank[r as usize]).collect();
                    SearchResult { total: members.len(), items }
                }
                None => SearchResult { total: n, items: self.by_rank[page(n)].to_vec() },
            };
        }

        // With a department filter, everyone else starts as EXCLUDED: no
        // pass can lower them and substring scans skip them like people who
        // already matched, so a small department costs little to search.
        let members = dept.map(|d| self.depts.members(d as usize));
        let excluded = members.map_or(0, |m| n - m.len());
        let reset = |buf: &mut [u8]| match members {
            None => buf.fill(tier::NONE),
            Some(m) => {
                buf.fill(tier::EXCLUDED);
                for &r in m {
                    buf[r as usize] = tier::NONE;
                }
            }
        };
        // Best tier per person for the first word; for later words, the
        // running "worst word" tier is the max of the per-word tiers.
        let mut tiers = vec![tier::NONE; n];
        reset(&mut tiers);
        self.word_tiers(&parsed.words[0], &mut tiers, excluded);
        if parsed.words.len() > 1 {
            let mut word = vec![tier::NONE; n];
            for w in &parsed.words[1..] {
                reset(&mut word);
                self.word_tiers(w, &mut word, excluded);
                for (t, w) in tiers.iter_mut().zip(&word) {
                    *t = (*t).max(*w);
                }
            }
        }
        self.collect(&tiers, &parsed.whole, dept, q.offset, q.limit)
    }

    /// Lowers `tiers[rank]` to the best tier at which `w` matches each person.
    /// `excluded` people are pre-set to [`tier::EXCLUDED`].
    fn word_tiers(&self, w: &QueryWord, tiers: &mut [u8], excluded: usize) {
        let word = w.text.as_bytes();
        // One-character words: prefix matching only (see module docs).
        let substring = w.text.chars().nth(1).is_some();
        let mut marks = Marks { tiers, matched: excluded };

        // Prefix tiers first: they decide who still needs a substring scan.
        self.names.for_each_prefix(word, |r, rel| {
            marks.lower(r, if rel == 0 { tier::NAME_PREFIX } else { tier::NAME_WORD });
        });
        self.titles.apply(word, substring, &mut marks);
        self.depts.apply(word, substring, &mut marks);
        self.extensions.for_each_prefix(word, |r, _| marks.lower(r, tier::NUMBER_PREFIX));
        for digits in std::iter::once(&w.text).chain(&w.number_alts) {
            self.numbers.for_each_prefix(digits.as_bytes(), |r, _| marks.lower(r, tier::NUMBER_PREFIX));
        }
        if substring {
            for national in &w.straddle_alts {
                self.numbers.for_each_prefix(national.as_bytes(), |r, _| marks.lower(r, tier::OTHER_SUB));
            }
            marks.lower_containing(&self.names, word, tier::NAME_SUB);
            marks.lower_containing(&self.extensions, word, tier::OTHER_SUB);
            for digits in std::iter::once(&w.text).chain(&w.number_alts[..w.substring_alts]) {
                marks.lower_containing(&self.numbers, digits.as_bytes(), tier::OTHER_SUB);
            }
        }
    }

    /// Turns per-rank tiers into a ranked page. Scanning ranks in order fills
    /// one bucket per tier already sorted by name, so only the first
    /// `offset + limit` entries of each bucket need to be kept: no sorting.
    fn collect(&self, tiers: &[u8], whole: &str, dept: Option<DeptIdx>, offset: usize, limit: usize) -> SearchResult {
        let need = offset.saturating_add(limit).min(tiers.len());
        let mut buckets: [Vec<u32>; tier::COUNT] = Default::default();
        let mut counts = [0usize; tier::COUNT];
        let mut visit = |r: usize, t: u8| {
            let t = self.refine(r, t, whole) as usize;
            if let (Some(c), Some(b)) = (counts.get_mut(t), buckets.get_mut(t)) {
                *c += 1;
                if b.len() < need {
                    b.push(r as u32);
                }
            }
        };
        match dept {
            Some(d) => {
                for &r in self.depts.members(d as usize) {
                    let t = tiers[r as usize];
                    if t != tier::NONE {
                        visit(r as usize, t);
                    }
                }
            }
            None => {
                // Skip 8 non-matching people at a time.
                let mut chunks = tiers.chunks_exact(8);
                let mut base = 0usize;
                for chunk in chunks.by_ref() {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(chunk);
                    if u64::from_ne_bytes(word) != u64::MAX {
                        for (k, &t) in chunk.iter().enumerate() {
                            if t != tier::NONE {
                                visit(base + k, t);
                            }
                        }
                    }
                    base += 8;
                }
                for (k, &t) in chunks.remainder().iter().enumerate() {
                    if t != tier::NONE {
                        visit(base + k, t);
                    }
                }
            }
        }
        let total = counts.iter().sum();
        let items = buckets
            .iter()
            .flatten()
            .skip(offset)
            .take(limit)
            .map(|&r| self.by_rank[r as usize])
            .collect();
        SearchResult { total, items }
    }

    /// Applies the whole-query tiers: name equal to the query, or name
    /// starting with the (multi-word) query. Only people whose every word hit
    /// a name word can qualify, so others skip the comparison.
    #[inline]
    fn refine(&self, r: usize, t: u8, whole: &str) -> u8 {
        if t > tier::NAME_WORD || whole.is_empty() {
            return t;
        }
        let name = self.names.text(r);
        if name == whole.as_bytes() {
            tier::NAME_EXACT
        } else if name.starts_with(whole.as_bytes()) {
            tier::NAME_PREFIX
        } else {
            t
        }
    }

    /// Heap bytes held by the index.
    pub(super) fn memory_bytes(&self) -> usize {
        self.by_rank.capacity() * 4
            + self.names.memory_bytes()
            + self.numbers.memory_bytes()
            + self.extensions.memory_bytes()
            + self.titles.memory_bytes()
            + self.depts.memory_bytes()
    }

    /// Name rank of every person (`rank_of[idx]`), for tests.
    #[cfg(test)]
    fn rank_of(&self) -> Vec<u32> {
        let mut out = vec![0; self.by_rank.len()];
        for (r, &i) in self.by_rank.iter().enumerate() {
            out[i as usize] = r as u32;
        }
        out
    }
}

/// Writes `p`'s number words into `out` (cleared first): each phone in
/// national form if it is in the plan's country, else its E.164 digits; its
/// digits as given when those differ (numbers that did not normalise, odd
/// notations). Extensions are indexed separately.
fn number_text(p: &PersonRef<'_>, plan: &NumberPlan, out: &mut String) {
    out.clear();
    let mut words: Vec<String> = Vec::with_capacity(p.phones().len() + 1);
    for ph in p.phones() {
        let given: String = ph.number.chars().filter(char::is_ascii_digit).collect();
        if let Some(e164) = phone_e164(&ph, plan) {
            let indexed = national_form(&e164, plan).unwrap_or_else(|| e164[1..].to_string());
            if given != indexed && given != e164[1..] {
                words.push(given);
            }
            words.push(indexed);
        } else {
            words.push(given);
        }
    }
    words.retain(|w| !w.is_empty());
    words.sort_unstable();
    words.dedup();
    let mut s = String::new();
    for w in &words {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(w);
    }
    // Same normalisation as everything else, so the index invariants hold.
    fold_search_text(&s, out);
}

#[cfg(test)]
mod tests {
    use super::super::{Directory, ExternalId, Person, Phone, PhoneKind};
    use super::*;

    fn person(id: &str, name: &str, title: Option<&str>, dept: Option<&str>, mobile: Option<&str>, ext: Option<&str>) -> Person {
        Person {
            id: id.into(),
            name: name.into(),
            title: title.map(Into::into),
            department: dept.map(Into::into),
            email: None,
            phones: mobile
                .map(|m| vec![Phone { kind: PhoneKind::Mobile, number: m.into(), e164: None }])
                .unwrap_or_default(),
            extension: ext.map(Into::into),
            sip_uri: None,
            external_ids: Vec::<ExternalId>::new(),
        }
    }

    fn dir() -> Directory {
        let people = vec![
            person("asa.ostberg", "Åsa Östberg", Some("Växelansvarig"), Some("Växel"), Some("070-123 45 67"), Some("1001")),
            person("asa.wallin", "Åsa Wallin", Some("Ekonom"), Some("Ekonomi"), Some("070-222 33 44"), Some("1002")),
            person("karin.asander", "Karin Åsander", Some("Säljare"), Some("Försäljning"), Some("073-555 66 77"), Some("2001")),
            person("lars.nilsson", "Lars Nilsson", Some("Lagerchef"), Some("Logistik"), Some("+47 912 34 567"), Some("3001")),
            person("nils.larsson", "Nils Larsson", Some("Controller"), Some("Ekonomi"), None, Some("3002")),
            person("lisa.basa", "Lisa Basåker", Some("Jurist"), Some("Juridik"), None, None),
            person("asa", "Åsa", None, None, None, None),
            person("bo.ek", "Bo Ek", Some("Ekonomichef"), Some("Ledning"), None, Some("0701")),
        ];
        Directory::build(people, &NumberPlan::default()).expect("valid directory")
    }

    fn ids(d: &Directory, q: &SearchQuery) -> Vec<String> {
        d.search(q).items.iter().map(|&i| d.person(i).map(|p| p.id().to_string()).unwrap_or_default()).collect()
    }

    fn q(s: &str) -> SearchQuery<'_> {
        SearchQuery { q: s, department: None, limit: 50, offset: 0 }
    }

    #[test]
    fn tiers_in_order() {
        let d = dir();
        // exact name, name prefix (by name), name word prefix, substring of name
        assert_eq!(ids(&d, &q("asa")), ["asa", "asa.ostberg", "asa.wallin", "karin.asander", "lisa.basa"]);
        assert_eq!(ids(&d, &q("ÖSTB")), ["asa.ostberg"]);
        assert_eq!(ids(&d, &q("ostberg")), ["asa.ostberg"]);
    }

    #[test]
    fn department_and_title_words() {
        let d = dir();
        // "ekonom": department/title word prefixes; Bo Ek is "Ekonomichef".
        assert_eq!(ids(&d, &q("ekonom")), ["asa.wallin", "bo.ek", "nils.larsson"]);
        // Name word beats title word: "ek" → Bo Ek (name word) first.
        assert_eq!(ids(&d, &q("ek"))[0], "bo.ek");
        // Substring elsewhere: "anssvar" no; "ansvar" is inside "växelansvarig".
        assert_eq!(ids(&d, &q("ansvar")), ["asa.ostberg"]);
    }

    #[test]
    fn numbers() {
        let d = dir();
        assert_eq!(ids(&d, &q("0701")), ["asa.ostberg", "bo.ek"]); // national 0701… and extension "0701": same tier, name order
        assert_eq!(ids(&d, &q("+46701")), ["asa.ostberg"]);
        assert_eq!(ids(&d, &q("070-123")), ["asa.ostberg"]);
        assert_eq!(ids(&d, &q("46 70 123 45 67")), ["asa.ostberg"]);
        assert_eq!(ids(&d, &q("1001")), ["asa.ostberg"]);
        // Not a national number under the Swedish plan: only a substring match.
        assert_eq!(ids(&d, &q("912")), ["lars.nilsson"]);
        assert_eq!(ids(&d, &q("+47912")), ["lars.nilsson"]);
        assert_eq!(ids(&d, &q("4567")), ["asa.ostberg", "lars.nilsson"]); // substrings
        assert_eq!(ids(&d, &q("300")), ["lars.nilsson", "nils.larsson"]);
        // In the E.164 digits across the country code: "+46701234567".
        assert_eq!(ids(&d, &q("670123")), ["asa.ostberg"]);
        assert_eq!(d.search(&q("670123")).total, 1);
        // "+46701" must not reach Bo Ek's extension "0701" via "0701".
        assert!(!ids(&d, &q("+46701")).contains(&"bo.ek".to_string()));
    }

    #[test]
    fn multi_word() {
        let d = dir();
        assert_eq!(ids(&d, &q("lars nil")), ["lars.nilsson", "nils.larsson"]);
        // Both are "worst word = name word" and neither name starts with "nil lars".
        assert_eq!(ids(&d, &q("nil lars")), ["lars.nilsson", "nils.larsson"]);
        assert_eq!(ids(&d, &q("asa ekonomi")), ["asa.wallin"]);
        assert_eq!(ids(&d, &q("asa zzz")), Vec::<String>::new());
        assert_eq!(ids(&d, &q("åsa östberg")), ["asa.ostberg"]);
    }

    #[test]
    fn one_char_is_prefix_only() {
        let d = dir();
        // "k" starts Karin; "k" inside "Basåker"/"Ek" does not count.
        assert_eq!(ids(&d, &q("k")), ["karin.asander"]);
        let r = d.search(&q("b"));
        assert_eq!(r.total, 2); // Bo Ek, Lisa Basåker
    }

    #[test]
    fn department_filter_and_listing() {
        let d = dir();
        let mut sq = q("");
        sq.department = Some("EKONOMI");
        assert_eq!(ids(&d, &sq), ["asa.wallin", "nils.larsson"]);
        sq.q = "nils";
        assert_eq!(ids(&d, &sq), ["nils.larsson"]);
        sq.department = Some("okänd");
        assert_eq!(d.search(&sq), SearchResult { total: 0, items: vec![] });
        // Everyone by name.
        let all = ids(&d, &q(""));
        assert_eq!(all, ["asa", "asa.ostberg", "asa.wallin", "bo.ek", "karin.asander", "lars.nilsson", "lisa.basa", "nils.larsson"]);
        // Punctuation only = empty query.
        assert_eq!(ids(&d, &q(" -- ")), all);
    }

    #[test]
    fn paging() {
        let d = dir();
        let full = ids(&d, &q("a"));
        assert!(full.len() >= 4);
        for offset in 0..full.len() + 2 {
            for limit in 0..4 {
                let r = d.search(&SearchQuery { q: "a", department: None, limit, offset });
                assert_eq!(r.total, full.len());
                let want: Vec<String> = full.iter().skip(offset).take(limit).cloned().collect();
                let got: Vec<String> = r.items.iter().map(|&i| d.person(i).map(|p| p.id().to_string()).unwrap_or_default()).collect();
                assert_eq!(got, want, "offset {offset} limit {limit}");
            }
        }
        let r = d.search(&SearchQuery { q: "", department: None, limit: usize::MAX, offset: usize::MAX });
        assert_eq!(r.total, 8);
        assert!(r.items.is_empty());
    }

    #[test]
    fn ranks_follow_name_then_id() {
        let people = vec![
            person("b", "Anna Berg", None, None, None, None),
            person("a", "Anna Berg", None, None, None, None),
            person("c", "Ånna Åberg", None, None, None, None),
        ];
        let d = Directory::build(people, &NumberPlan::default()).expect("valid");
        assert_eq!(ids(&d, &q("anna")), ["c", "a", "b"]);
        assert_eq!(d.index.rank_of(), vec![2, 1, 0]);
    }

    /// Reference implementation: the tier rules applied person by person,
    /// with plain string operations and no index.
    fn naive(d: &Directory, query: &str, dept: Option<&str>) -> Vec<UserIdx> {
        let plan = d.plan();
        let parsed = parse_query(query, plan);
        let dept = match dept {
            None => None,
            Some(name) => match d.department_idx(name) {
                Some(x) => Some(x),
                None => return Vec::new(),
            },
        };
        let mut hits: Vec<(u8, String, String, UserIdx)> = Vec::new();
        for (i, p) in d.people() {
            if dept.is_some() && d.department_of(i) != dept {
                continue;
            }
            let name = search_text(p.name());
            if parsed.words.is_empty() {
                hits.push((0, name, p.id().to_string(), i));
                continue;
            }
            let org: Vec<String> = [p.title(), p.department()].into_iter().flatten().map(search_text).collect();
            let mut numbers = String::new();
            number_text(&p, plan, &mut numbers);
            let ext: String = p.extension().unwrap_or_default().chars().filter(char::is_ascii_digit).collect();
            let mut worst = 0u8;
            for w in &parsed.words {
                let t = w.text.as_str();
                let sub = t.chars().count() >= 2;
                let starts = |text: &str, q: &str| text.split(' ').any(|x| x.starts_with(q));
                let all_num = std::iter::once(t).chain(w.number_alts.iter().map(String::as_str));
                let sub_num = std::iter::once(t).chain(w.number_alts[..w.substring_alts].iter().map(String::as_str));
                let tier = if name.starts_with(t) {
                    tier::NAME_PREFIX
                } else if starts(&name, t) {
                    tier::NAME_WORD
                } else if org.iter().any(|o| starts(o, t)) {
                    tier::ORG_WORD
                } else if ext.starts_with(t) || all_num.clone().any(|q| starts(&numbers, q)) {
                    tier::NUMBER_PREFIX
                } else if sub && name.contains(t) {
                    tier::NAME_SUB
                } else if sub
                    && (org.iter().any(|o| o.contains(t))
                        || ext.contains(t)
                        || sub_num.clone().any(|q| numbers.contains(q))
                        || w.straddle_alts.iter().any(|q| starts(&numbers, q)))
                {
                    tier::OTHER_SUB
                } else {
                    tier::NONE
                };
                worst = worst.max(tier);
            }
            if worst == tier::NONE {
                continue;
            }
            if worst <= tier::NAME_WORD && !parsed.whole.is_empty() {
                if name == parsed.whole {
                    worst = tier::NAME_EXACT;
                } else if name.starts_with(&parsed.whole) {
                    worst = tier::NAME_PREFIX;
                }
            }
            hits.push((worst, name, p.id().to_string(), i));
        }
        hits.sort();
        hits.into_iter().map(|h| h.3).collect()
    }

    #[test]
    fn index_agrees_with_naive_reference() {
        let mut people = super::super::synth::generate(3_000, 11);
        // Odd shapes too: shared numbers, foreign and unparseable numbers,
        // no department, punctuation-heavy names.
        people[0].name = "Anna-Karin O'Brien (extern)".into();
        people[1].phones.push(Phone { kind: PhoneKind::Work, number: "+46 (0)8-123 45 67".into(), e164: None });
        people[2].phones.push(Phone { kind: PhoneKind::Other, number: "ring 0701-ish".into(), e164: None });
        people[3].department = None;
        people[4].title = None;
        people[5].extension = Some("0701".into());
        let d = Directory::build(people, &NumberPlan::default()).expect("builds");
        let mut queries: Vec<String> = [
            "", "a", "an", "and", "asa", "ostb", "ÖSTB", "lars nil", "nil lars", "ekonomi", "eko", "controller",
            "chef", "070", "0701", "+46701", "46701", "0046 70", "6701", "+47 9", "12", "123 45", "1", "08-", "sson",
            "ström", "anna karin", "o brien", "extern", "ish", "x", "zz", "ing", "för",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Pieces of real data: name fragments, number fragments.
        for (i, p) in d.people().step_by(97) {
            let name = search_text(p.name());
            let k = (i as usize) % name.len().max(1);
            queries.push(name.chars().skip(k % 5).take(2 + k % 4).collect());
            if let Some(ph) = p.phones().next() {
                let digits: String = ph.number.chars().filter(char::is_ascii_digit).collect();
                queries.push(digits.chars().skip(k % 6).take(3 + k % 5).collect());
            }
        }
        for q in &queries {
            for dept in [None, Some("Ekonomi"), Some("IT")] {
                let want = naive(&d, q, dept);
                let got = d.search(&SearchQuery { q, department: dept, limit: usize::MAX, offset: 0 });
                assert_eq!(got.total, want.len(), "total for {q:?} in {dept:?}");
                assert_eq!(got.items, want, "ranking for {q:?} in {dept:?}");
                let page = d.search(&SearchQuery { q, department: dept, limit: 7, offset: 3 });
                assert_eq!(page.items, want.iter().skip(3).take(7).copied().collect::<Vec<_>>(), "page for {q:?}");
            }
        }
    }

    #[test]
    fn gallop_finds_owner() {
        let starts = [0u32, 3, 7, 8, 20, 21];
        for pos in 0..21usize {
            let want = starts.partition_point(|&s| s as usize <= pos) - 1;
            for from in 0..=want {
                assert_eq!(gallop_owner(&starts, from, pos), want, "pos {pos} from {from}");
            }
        }
    }

    #[test]
    fn query_parsing() {
        let p = NumberPlan::default();
        let pq = parse_query("070-123 45", &p);
        assert_eq!(pq.words.len(), 1);
        assert_eq!(pq.words[0].text, "07012345");
        assert!(pq.words[0].number_alts.is_empty());
        let pq = parse_query("+46 70", &p);
        assert_eq!(pq.words[0].text, "4670");
        assert_eq!(pq.words[0].number_alts, ["070"]);
        let pq = parse_query("4670", &p);
        assert_eq!(pq.words[0].number_alts, ["070"]);
        let pq = parse_query("0046 70", &p);
        assert_eq!(pq.words[0].number_alts, ["4670", "070"]);
        assert_eq!(pq.words[0].substring_alts, 1);
        let pq = parse_query("0047 912", &p);
        assert_eq!(pq.words[0].number_alts, ["47912"]);
        let pq = parse_query("+4", &p);
        assert!(pq.words[0].number_alts.is_empty());
        assert_eq!(parse_query("6701", &p).words[0].straddle_alts, ["0701"]);
        assert!(parse_query("+6701", &p).words[0].straddle_alts.is_empty());
        let no = NumberPlan::norway();
        assert_eq!(parse_query("7912", &no).words[0].straddle_alts, ["912"]);
        assert_eq!(parse_query("+47 912", &no).words[0].number_alts, ["912"]);
        assert!(parse_query("912", &no).words[0].number_alts.is_empty());
        let pq = parse_query(" Åsa  ÖST-berg ", &p);
        assert_eq!(pq.whole, "asa ost berg");
        let long = "a ".repeat(100);
        assert_eq!(parse_query(&long, &p).words.len(), MAX_QUERY_WORDS);
    }
}
