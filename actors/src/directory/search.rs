//! Directory search: case- and diacritic-insensitive prefix/substring search
//! over names, titles, departments and numbers, ranked in tiers and paged.
//!
//! # Design (why it is fast and small)
//!
//! * People are renumbered by **name rank** (sorted by folded name, then id).
//!   Every per-person array of the index is indexed by rank, so a scan in
//!   index order already yields matches in name order: ranking needs no sort
//!   at all, only a bucket per tier (see [`SearchIndex::collect`]).
//! * Names and numbers live in two contiguous byte arenas ([`TextSet`]), one
//!   line per person. A prefix lookup is a binary search in a sorted array of
//!   word positions; a substring lookup is a single `memchr::memmem` pass over
//!   the arena (about 16 bytes per person for names, so ~1.6 MB at 100 k
//!   people), jumping to the next person after each hit. That one pass costs
//!   about as much as scanning per-person bigram signatures would, so we save
//!   those 32 bytes per person. An arena is skipped outright when the query
//!   word contains a byte the arena never does (letters never match the
//!   numbers arena, digits rarely match names).
//! * Titles and departments repeat a lot, so they are stored once each in a
//!   small dictionary [`TextSet`] with a posting list (ranks, ascending) per
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
//! numbers, and a national form ("070…") is also tried in international form
//! ("4670…") so that both "0701" and "+46701" find +46701….

use std::collections::HashMap;
use std::ops::Range;

use memchr::memmem;

use super::fold::{fold_search_text, search_text};
use super::phone::national_form;
use super::{phone_e164, DeptIdx, NumberPlan, Person, UserIdx};

/// Rank tiers, best first. A person's tier for a query decides the order of
/// results before name order does.
mod tier {
    /// The whole folded name equals the query.
    pub const NAME_EXACT: u8 = 0;
    /// The name starts with the query.
    pub const NAME_PREFIX: u8 = 1;
    /// A word of the name starts with the query.
    pub const NAME_WORD: u8 = 2;
    /// A word of the department or title starts with the query.
    pub const ORG_WORD: u8 = 3;
    /// A number (digits-only form) starts with the query.
    pub const NUMBER_PREFIX: u8 = 4;
    /// The query is a substring of the name.
    pub const NAME_SUB: u8 = 5;
    /// The query is a substring of the title, department or a number.
    pub const OTHER_SUB: u8 = 6;
    /// Number of real tiers.
    pub const COUNT: usize = 7;
    /// No match.
    pub const NONE: u8 = u8::MAX;
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
}

impl TextSet {
    fn new() -> Self {
        TextSet { starts: vec![0], ..Default::default() }
    }

    /// Appends the next owner's text (already search text).
    fn push(&mut self, text: &str) {
        let text = truncate_at_char(text, MAX_TEXT_BYTES);
        self.arena.extend_from_slice(text.as_bytes());
        self.arena.push(b'\n');
        self.starts.push(self.arena.len() as u32);
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
        for &b in &self.arena {
            self.present[(b >> 6) as usize] |= 1 << (b & 63);
        }
        self.arena.shrink_to_fit();
        self.starts.shrink_to_fit();
    }

    fn owners(&self) -> usize {
        self.starts.len() - 1
    }

    /// Owner `o`'s text without the trailing newline.
    fn text(&self, o: usize) -> &[u8] {
        let start = self.starts[o] as usize;
        let end = self.starts[o + 1] as usize - 1;
        &self.arena[start..end]
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
        let finder = memmem::Finder::new(needle);
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

/// Cuts `s` to at most `max` bytes at a char boundary.
fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

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
    /// `entries[e]` is entry e's search text; `member_of[rank]` its entry.
    fn build(entries: &[String], member_of: &[Option<u32>]) -> Dict {
        let mut text = TextSet::new();
        for e in entries {
            text.push(e);
        }
        text.finish();
        let mut counts = vec![0u32; entries.len() + 1];
        for e in member_of.iter().flatten() {
            counts[*e as usize + 1] += 1;
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let post_start = counts.clone();
        let mut fill = counts;
        let mut post = vec![0u32; member_of.len()];
        for (rank, e) in member_of.iter().enumerate() {
            if let Some(e) = e {
                post[fill[*e as usize] as usize] = rank as u32;
                fill[*e as usize] += 1;
            }
        }
        post.truncate(*post_start.last().unwrap_or(&0) as usize);
        post.shrink_to_fit();
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
    fn apply(&self, word: &[u8], substring: bool, tiers: &mut [u8]) {
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
                lower(&mut tiers[r as usize], t);
            }
        }
    }

    fn memory_bytes(&self) -> usize {
        self.text.memory_bytes() + self.post_start.capacity() * 4 + self.post.capacity() * 4
    }
}

#[inline]
fn lower(slot: &mut u8, t: u8) {
    if t < *slot {
        *slot = t;
    }
}

/// One word of a parsed query.
#[derive(Debug)]
struct QueryWord {
    /// Search text of the word (folded; digits for a number query).
    text: String,
    /// Extra digit strings tried against numbers only: the international
    /// form of a national number ("070" → "4670").
    number_alts: Vec<String>,
}

#[derive(Debug)]
struct ParsedQuery {
    words: Vec<QueryWord>,
    /// The whole query as name search text, for the "name equals / starts
    /// with the query" tiers; empty for number queries.
    whole: String,
}

fn parse_query(q: &str, plan: &NumberPlan) -> ParsedQuery {
    let q = truncate_at_char(q.trim(), MAX_QUERY_BYTES);
    let numeric = q.bytes().any(|b| b.is_ascii_digit())
        && q.chars().all(|c| c.is_ascii_digit() || c == '+' || is_phone_punct(c));
    if numeric {
        let digits: String = q.chars().filter(char::is_ascii_digit).collect();
        let number_alts = if q.starts_with('+') { Vec::new() } else { national_alts(&digits, plan) };
        return ParsedQuery { words: vec![QueryWord { text: digits, number_alts }], whole: String::new() };
    }
    let text = search_text(q);
    let words: Vec<QueryWord> = text
        .split(' ')
        .filter(|w| !w.is_empty())
        .take(MAX_QUERY_WORDS)
        .map(|w| QueryWord {
            text: w.to_string(),
            number_alts: if w.bytes().all(|b| b.is_ascii_digit()) {
                national_alts(w, plan)
            } else {
                Vec::new()
            },
        })
        .collect();
    let whole = words.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" ");
    ParsedQuery { words, whole }
}

fn is_phone_punct(c: char) -> bool {
    matches!(c, '-' | '.' | '/' | '(' | ')') || c.is_whitespace()
}

/// International digit forms of a digit query typed in national or
/// 00-prefixed form, under `plan`.
fn national_alts(digits: &str, plan: &NumberPlan) -> Vec<String> {
    let ip = plan.international_prefix.as_str();
    let tp = plan.trunk_prefix.as_str();
    let cc = plan.country_code.as_str();
    let alt = if !ip.is_empty() && digits.starts_with(ip) {
        digits[ip.len()..].to_string()
    } else if !tp.is_empty() {
        match digits.strip_prefix(tp) {
            Some(rest) => format!("{cc}{rest}"),
            None => String::new(),
        }
    } else {
        format!("{cc}{digits}")
    };
    if alt.is_empty() || alt == digits {
        Vec::new()
    } else {
        vec![alt]
    }
}

/// The search index of a [`super::Directory`]. Everything per person is
/// indexed by name rank; `by_rank` maps back to [`UserIdx`].
#[derive(Debug, Default)]
pub(super) struct SearchIndex {
    /// rank → person.
    by_rank: Vec<UserIdx>,
    /// Name search text per rank.
    names: TextSet,
    /// Digits-only numbers per rank (E.164 without '+', as given if that
    /// differs, extension), space separated.
    numbers: TextSet,
    titles: Dict,
    /// Entries are [`DeptIdx`] values of the directory.
    depts: Dict,
}

impl SearchIndex {
    /// Builds the index. `dept_of[i]` is person `i`'s department and
    /// `dept_names[d]` department `d`'s display name.
    pub(super) fn build(
        people: &[Person],
        dept_of: &[Option<DeptIdx>],
        dept_names: &[Box<str>],
        plan: &NumberPlan,
    ) -> SearchIndex {
        let n = people.len();
        let name_text: Vec<String> = people.iter().map(|p| search_text(&p.name)).collect();
        let mut by_rank: Vec<UserIdx> = (0..n as UserIdx).collect();
        by_rank.sort_unstable_by(|&a, &b| {
            let (a, b) = (a as usize, b as usize);
            name_text[a].cmp(&name_text[b]).then_with(|| people[a].id.cmp(&people[b].id))
        });

        let mut names = TextSet::new();
        let mut numbers = TextSet::new();
        let mut num_buf = String::new();
        let mut title_ids: HashMap<String, u32> = HashMap::new();
        let mut title_texts: Vec<String> = Vec::new();
        let mut title_of: Vec<Option<u32>> = Vec::with_capacity(n);
        let mut dept_of_rank: Vec<Option<u32>> = Vec::with_capacity(n);
        for &i in &by_rank {
            let p = &people[i as usize];
            names.push(&name_text[i as usize]);
            number_text(p, plan, &mut num_buf);
            numbers.push(&num_buf);
            let title = p.title.as_deref().map(search_text).filter(|t| !t.is_empty());
            title_of.push(title.map(|t| {
                let next = title_texts.len() as u32;
                *title_ids.entry(t).or_insert_with_key(|t| {
                    title_texts.push(t.clone());
                    next
                })
            }));
            dept_of_rank.push(dept_of.get(i as usize).copied().flatten());
        }
        drop(name_text);
        names.finish();
        numbers.finish();
        let dept_texts: Vec<String> = dept_names.iter().map(|d| search_text(d)).collect();
        SearchIndex {
            by_rank,
            names,
            numbers,
            titles: Dict::build(&title_texts, &title_of),
            depts: Dict::build(&dept_texts, &dept_of_rank),
        }
    }

    /// Runs a query. `dept` is the already-resolved department filter:
    /// `None` = no filter, `Some(d)` = only members of `d`.
    pub(super) fn search(&self, q: &SearchQuery, dept: Option<DeptIdx>, plan: &NumberPlan) -> SearchResult {
        let n = self.by_rank.len();
        let parsed = parse_query(q.q, plan);
        if parsed.words.is_empty() {
            // Empty query: everyone, or the department, in name order.
            let ranks: Box<dyn Iterator<Item = u32>> = match dept {
                Some(d) => Box::new(self.depts.members(d as usize).iter().copied()),
                None => Box::new(0..n as u32),
            };
            let total = match dept {
                Some(d) => self.depts.members(d as usize).len(),
                None => n,
            };
            let items = ranks.skip(q.offset).take(q.limit).map(|r| self.by_rank[r as usize]).collect();
            return SearchResult { total, items };
        }

        // Best tier per person for the first word; for later words, the
        // running "worst word" tier is the max of the per-word tiers.
        let mut tiers = vec![tier::NONE; n];
        self.word_tiers(&parsed.words[0], &mut tiers);
        if parsed.words.len() > 1 {
            let mut word = vec![tier::NONE; n];
            for w in &parsed.words[1..] {
                word.fill(tier::NONE);
                self.word_tiers(w, &mut word);
                for (t, w) in tiers.iter_mut().zip(&word) {
                    *t = (*t).max(*w);
                }
            }
        }
        let t = std::time::Instant::now();
        let r = self.collect(&tiers, &parsed.whole, dept, q.offset, q.limit);
        if std::env::var_os("PROF").is_some() { eprintln!("collect {:?}", t.elapsed()); }
        r
    }

    /// Lowers `tiers[rank]` to the best tier at which `w` matches each person.
    fn word_tiers(&self, w: &QueryWord, tiers: &mut [u8]) {
        let word = w.text.as_bytes();
        // One-character words: prefix matching only (see module docs).
        let substring = w.text.chars().nth(1).is_some();
        let t0 = std::time::Instant::now();
        self.names.for_each_prefix(word, |r, rel| {
            lower(&mut tiers[r], if rel == 0 { tier::NAME_PREFIX } else { tier::NAME_WORD });
        });
        let t1 = t0.elapsed();
        self.titles.apply(word, substring, tiers);
        self.depts.apply(word, substring, tiers);
        let t2 = t0.elapsed();
        for digits in std::iter::once(&w.text).chain(&w.number_alts) {
            self.numbers.for_each_prefix(digits.as_bytes(), |r, _| lower(&mut tiers[r], tier::NUMBER_PREFIX));
        }
        let t3 = t0.elapsed();
        let (mut t4, mut t5) = (t3, t3);
        if substring {
            self.names.for_each_containing(word, |r| lower(&mut tiers[r], tier::NAME_SUB));
            t4 = t0.elapsed();
            for digits in std::iter::once(&w.text).chain(&w.number_alts) {
                self.numbers.for_each_containing(digits.as_bytes(), |r| lower(&mut tiers[r], tier::OTHER_SUB));
            }
            t5 = t0.elapsed();
        }
        if std::env::var_os("PROF").is_some() { eprintln!("{:?} names-prefix {:?} dicts {:?} num-prefix {:?} names-sub {:?} num-sub {:?}", w.text, t1, t2-t1, t3-t2, t4-t3, t5-t4); }
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

/// Writes `p`'s number words into `out` (cleared first): digits of each
/// phone's E.164 form, its digits as given when those differ from both the
/// E.164 and the national form (numbers that did not normalise), and the
/// extension's digits.
fn number_text(p: &Person, plan: &NumberPlan, out: &mut String) {
    out.clear();
    let mut words: Vec<String> = Vec::with_capacity(p.phones.len() + 1);
    for ph in &p.phones {
        let given: String = ph.number.chars().filter(char::is_ascii_digit).collect();
        if let Some(e164) = phone_e164(ph, plan) {
            let national = national_form(&e164, plan);
            if given != e164[1..] && national.as_deref() != Some(given.as_str()) {
                words.push(given);
            }
            words.push(e164[1..].to_string());
        } else {
            words.push(given);
        }
    }
    if let Some(ext) = &p.extension {
        words.push(ext.chars().filter(char::is_ascii_digit).collect());
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
    use super::super::{Directory, ExternalId, Phone, PhoneKind};
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
        d.search(q).items.iter().map(|&i| d.person(i).map(|p| p.id.to_string()).unwrap_or_default()).collect()
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
                let got: Vec<String> = r.items.iter().map(|&i| d.person(i).map(|p| p.id.to_string()).unwrap_or_default()).collect();
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
        assert_eq!(pq.words[0].number_alts, ["467012345"]);
        let pq = parse_query("+46 70", &p);
        assert_eq!(pq.words[0].text, "4670");
        assert!(pq.words[0].number_alts.is_empty());
        let pq = parse_query("0046 70", &p);
        assert_eq!(pq.words[0].number_alts, ["4670"]);
        let pq = parse_query(" Åsa  ÖST-berg ", &p);
        assert_eq!(pq.whole, "asa ost berg");
        let long = "a ".repeat(100);
        assert_eq!(parse_query(&long, &p).words.len(), MAX_QUERY_WORDS);
    }
}
