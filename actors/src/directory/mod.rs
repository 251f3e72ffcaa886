//! The people directory of the presence hub: who works here, how to reach
//! them, and how to find them again from whatever identity a presence feed or
//! PBX event carries (id, e-mail/UPN, SIP URI, Entra object id, phone number,
//! extension).
//!
//! A [`Directory`] is built once from a list of [`Person`]s (usually from
//! [`import::from_csv`] or [`import::from_json`]) and is then immutable, so it
//! can be shared between threads behind an `Arc` and swapped wholesale on
//! re-import. People are addressed by a dense [`UserIdx`], which the rest of
//! the hub uses as a compact key (presence tables, subscriptions).
//!
//! This module is self-contained: it refers to nothing else in the crate.
//!
//! Submodules:
//! * [`fold`](mod@fold): lower-casing and diacritic folding for search and matching,
//! * [`phone`]: E.164 and extension normalisation,
//! * `identity`: the compact hashed table behind [`Directory::resolve`],
//! * `people`: the compact storage of the people and the [`PersonRef`] views,
//! * [`import`]: CSV/JSON import with validation,
//! * [`search`]: the ranked search index,
//! * [`synth`]: deterministic fake directories for tests and benchmarks.

use std::collections::HashMap;

pub mod fold;
mod identity;
pub mod import;
mod people;
pub mod phone;
pub mod search;
pub mod synth;

#[cfg(test)]
mod tests;

pub use fold::{fold, fold_into};
pub use import::{from_csv, from_json, ImportError, Record, RecordError};
pub use people::{ExternalIdRef, ExternalIds, PersonRef, PhoneRef, Phones};
pub use phone::{normalize_extension, normalize_extension_for, normalize_phone};
pub use search::{SearchQuery, SearchResult};

use fold::{fold_search_text, search_text};
use identity::{IdentityTable, Kind};
use people::{People, PeopleBuilder};
use search::SearchIndex;

/// Dense index of a person in a [`Directory`] (0..len).
pub type UserIdx = u32;
/// Dense index of a department in a [`Directory`].
pub type DeptIdx = u32;

/// A person: the interchange type of the directory (import, JSON, the
/// input of [`Directory::build`]). The directory itself does not keep
/// `Person`s but a compact form of them, read through [`PersonRef`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Person {
    /// Stable id used in URLs, e.g. "asa.ostberg".
    pub id: Box<str>,
    /// Display name, e.g. "Åsa Östberg".
    pub name: Box<str>,
    /// Job title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<Box<str>>,
    /// Department name as written in the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<Box<str>>,
    /// E-mail address, which is also the UPN (sign-in name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Box<str>>,
    /// Phone numbers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<Phone>,
    /// Internal extension, e.g. "1234".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<Box<str>>,
    /// SIP address, e.g. "sip:asa.ostberg@example.se".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_uri: Option<Box<str>>,
    /// Ids in other systems, e.g. kind "entra" = Entra object id GUID.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_ids: Vec<ExternalId>,
}

impl Person {
    /// A person with just an id and a name.
    pub fn new(id: &str, name: &str) -> Person {
        Person {
            id: id.into(),
            name: name.into(),
            title: None,
            department: None,
            email: None,
            phones: Vec::new(),
            extension: None,
            sip_uri: None,
            external_ids: Vec::new(),
        }
    }
}

/// A phone number of a person.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Phone {
    /// What kind of number this is.
    pub kind: PhoneKind,
    /// The number as given in the source, e.g. "070-123 45 67".
    pub number: Box<str>,
    /// E.164 form, e.g. "+46701234567", if the number could be normalised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e164: Option<Box<str>>,
}

/// Kind of a phone number; serialised in lowercase ("mobile").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhoneKind {
    /// Mobile phone.
    Mobile,
    /// Work (desk/direct) phone.
    Work,
    /// Home phone.
    Home,
    /// Anything else.
    Other,
}

impl PhoneKind {
    /// Parses a kind label, case-insensitively: "mobile"/"cell", "work"/
    /// "business"/"office", "home", "other".
    pub fn from_label(s: &str) -> Option<PhoneKind> {
        let s = s.trim();
        let is = |label: &str| s.eq_ignore_ascii_case(label);
        if is("mobile") || is("cell") {
            Some(PhoneKind::Mobile)
        } else if is("work") || is("business") || is("office") {
            Some(PhoneKind::Work)
        } else if is("home") {
            Some(PhoneKind::Home)
        } else if is("other") {
            Some(PhoneKind::Other)
        } else {
            None
        }
    }
}

/// An id of the person in another system.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ExternalId {
    /// System, e.g. "entra".
    pub kind: Box<str>,
    /// Id in that system.
    pub value: Box<str>,
}

/// How phone numbers are written in the installation's country.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NumberPlan {
    /// Country calling code without '+', e.g. "46".
    pub country_code: String,
    /// Trunk prefix of national numbers, e.g. "0" ("" for Norway).
    pub trunk_prefix: String,
    /// Prefix for dialling abroad, e.g. "00".
    pub international_prefix: String,
    /// Longest internal extension, in digits (6).
    pub max_extension_len: usize,
}

impl NumberPlan {
    /// The default longest extension.
    pub const DEFAULT_MAX_EXTENSION_LEN: usize = 6;

    /// Sweden: +46, trunk "0", international "00", extensions up to 6 digits.
    pub fn sweden() -> NumberPlan {
        NumberPlan {
            country_code: "46".into(),
            trunk_prefix: "0".into(),
            international_prefix: "00".into(),
            max_extension_len: Self::DEFAULT_MAX_EXTENSION_LEN,
        }
    }

    /// Norway: +47, no trunk prefix, international "00".
    pub fn norway() -> NumberPlan {
        NumberPlan { country_code: "47".into(), trunk_prefix: String::new(), ..NumberPlan::sweden() }
    }
}

impl Default for NumberPlan {
    /// Sweden (see [`NumberPlan::sweden`]).
    fn default() -> Self {
        NumberPlan::sweden()
    }
}

/// Why a [`Directory`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// Two people have the same id.
    #[error("duplicate person id {id:?} (people {first} and {second})")]
    DuplicateId {
        /// The id.
        id: String,
        /// Position of the first person with it.
        first: usize,
        /// Position of the second person with it.
        second: usize,
    },
    /// A person has an empty (or all-whitespace) id.
    #[error("person {index} has an empty id")]
    EmptyId {
        /// Position of the person.
        index: usize,
    },
    /// More people than a [`UserIdx`] can address.
    #[error("too many people: {count}")]
    TooManyPeople {
        /// Number of people given.
        count: usize,
    },
    /// The people's texts do not fit the compact storage's 32-bit offsets.
    #[error("directory too large: {bytes} bytes of text")]
    TooLarge {
        /// Bytes needed.
        bytes: usize,
    },
}

/// Marks "no department" in `dept_of`.
const NO_DEPT: DeptIdx = DeptIdx::MAX;

/// Keys longer than this are not looked up at all (no identity is that long).
const MAX_RESOLVE_KEY_BYTES: usize = 1024;

/// An immutable, indexed set of people.
///
/// Memory matters here (the hub's budget is about 2 KB per user for
/// everything), so the people are kept in compact form (two arenas, no
/// allocation per person; see `people`) and the indexes keep no copy of
/// any person's strings: identities live in one hashed table that is
/// verified against `people`, departments and titles are stored once each,
/// and the search index keeps its text in a few large arenas rather than
/// one allocation per person.
pub struct Directory {
    people: People,
    plan: NumberPlan,
    /// Every identity of every person (id, e-mail, SIP, external ids,
    /// numbers, extension); see [`identity`].
    keys: IdentityTable,
    /// Department per person, [`NO_DEPT`] if none.
    dept_of: Vec<DeptIdx>,
    departments: Vec<Department>,
    /// Department indexes sorted by folded name, for [`Directory::departments`]
    /// and the binary search of [`Directory::department_idx`].
    dept_order: Vec<DeptIdx>,
    index: SearchIndex,
    /// Ids of the people who left while the hub ran, with the index they held: a person who
    /// comes back gets their index again ([`Directory::next`]).
    vacated: HashMap<Box<str>, UserIdx>,
    /// People present (slots minus vacant ones).
    count: usize,
}

/// What [`Directory::next`] changed, by index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryDiff {
    /// New people (at new indexes, or at the index they held before they left).
    pub added: Vec<UserIdx>,
    /// People whose fields changed.
    pub changed: Vec<UserIdx>,
    /// People who left: their indexes are vacant now.
    pub removed: Vec<UserIdx>,
    /// People exactly as before.
    pub unchanged: usize,
}

impl DirectoryDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

#[derive(Debug)]
struct Department {
    /// Display name: the spelling of its first member.
    name: Box<str>,
    /// Search text of the name: what makes two spellings the same department.
    key: Box<str>,
    members: usize,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("people", &self.people.len())
            .field("departments", &self.departments.len())
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// Indexes `people`. Fails on an empty or duplicate id. Phone numbers are
    /// (re-)normalised with `plan` for matching; other identities that are
    /// shared by several people resolve to nobody (see [`Directory::resolve`]).
    pub fn build(people: Vec<Person>, plan: &NumberPlan) -> Result<Directory, DirectoryError> {
        let n = people.len();
        if n >= UserIdx::MAX as usize {
            return Err(DirectoryError::TooManyPeople { count: n });
        }
        let first_empty = people.iter().position(|p| p.id.trim().is_empty());
        // Upper bound of the entry count, so the table is allocated once.
        let capacity: usize = people.iter().map(|p| 4 + p.phones.len() + p.external_ids.len()).sum();
        // Packed first, consuming `people`: everything below reads the
        // compact form, and the many small blocks of the `Person`s are freed
        // before the indexes are allocated (which can then reuse them).
        let people = People::build(people).map_err(|e| DirectoryError::TooLarge { bytes: e.bytes })?;
        Self::from_packed(people, capacity, first_empty, plan, &[])
    }

    /// The next version of this directory with exactly `people` in it, and what changed.
    ///
    /// Everyone who stays keeps their index, so the presence state, subscriptions and streams
    /// keyed by index stay valid; a person who left leaves a vacant index, which only they get
    /// back if they return; newcomers get new indexes at the end. Departments keep their
    /// indexes too (a department left empty stays known, with no members). People are matched
    /// by id. Fails like [`Directory::build`] on an empty or duplicate id. When nothing
    /// changed, no version is built (`None`): comparing costs a fraction of building.
    pub fn next(&self, people: Vec<Person>) -> Result<(Option<Directory>, DirectoryDiff), DirectoryError> {
        // id → (position in `people`, for the duplicate error; the person).
        let mut incoming: HashMap<Box<str>, (usize, Person)> = HashMap::with_capacity(people.len());
        for (i, p) in people.into_iter().enumerate() {
            if p.id.trim().is_empty() {
                return Err(DirectoryError::EmptyId { index: i });
            }
            if let Some(&(first, _)) = incoming.get(&p.id) {
                return Err(DirectoryError::DuplicateId { id: p.id.to_string(), first, second: i });
            }
            incoming.insert(p.id.clone(), (i, p));
        }
        let slots = self.people.len();
        let mut diff = DirectoryDiff::default();
        let mut vacated = self.vacated.clone();
        // Slot contents of the next version: the person, or None for a vacant index.
        let mut next: Vec<Option<Person>> = Vec::with_capacity(slots + incoming.len());
        for i in 0..slots as UserIdx {
            match self.people.get(i) {
                None => next.push(None),
                Some(old) => match incoming.remove(old.id()) {
                    Some((_, p)) => {
                        if old.to_person() == p {
                            diff.unchanged += 1;
                        } else {
                            diff.changed.push(i);
                        }
                        next.push(Some(p));
                    }
                    None => {
                        vacated.insert(old.id().into(), i);
                        diff.removed.push(i);
                        next.push(None);
                    }
                },
            }
        }
        // Newcomers in id order, so the same input gives the same indexes.
        let mut newcomers: Vec<Person> = incoming.into_values().map(|(_, p)| p).collect();
        newcomers.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        for p in newcomers {
            let back = vacated.remove(&p.id).filter(|&i| next.get(i as usize).is_some_and(Option::is_none));
            let i = match back {
                Some(i) => {
                    next[i as usize] = Some(p);
                    i
                }
                None => {
                    next.push(Some(p));
                    (next.len() - 1) as UserIdx
                }
            };
            if next.len() >= UserIdx::MAX as usize {
                return Err(DirectoryError::TooManyPeople { count: next.len() });
            }
            diff.added.push(i);
        }
        diff.added.sort_unstable();
        if diff.is_empty() {
            return Ok((None, diff));
        }
        let text: usize = next.iter().flatten().map(|p| p.name.len() + p.id.len() + 64).sum();
        let mut b = PeopleBuilder::new(next.len(), text);
        for p in next {
            match p {
                Some(p) => b.push(p).map_err(|e| DirectoryError::TooLarge { bytes: e.bytes })?,
                None => b.push_vacant(),
            }
        }
        let (people, capacity, first_empty) = b.finish().map_err(|e| DirectoryError::TooLarge { bytes: e.bytes })?;
        let mut dir = Self::from_packed(people, capacity, first_empty, &self.plan, &self.departments)?;
        dir.vacated = vacated;
        Ok((Some(dir), diff))
    }

    /// Like [`Directory::build`], but packs each person as it comes, so the people never
    /// exist all at once as [`Person`]s (at 100k people that transient list is ~70 MB, and the
    /// allocator keeps much of it after it is freed). `expected` sizes the arenas.
    pub fn build_streaming(
        people: impl IntoIterator<Item = Person>,
        expected: usize,
        plan: &NumberPlan,
    ) -> Result<Directory, DirectoryError> {
        let mut b = PeopleBuilder::new(expected, expected * 96);
        let mut n = 0usize;
        for p in people {
            n += 1;
            if n >= UserIdx::MAX as usize {
                return Err(DirectoryError::TooManyPeople { count: n });
            }
            b.push(p).map_err(|e| DirectoryError::TooLarge { bytes: e.bytes })?;
        }
        let (people, capacity, first_empty) = b.finish().map_err(|e| DirectoryError::TooLarge { bytes: e.bytes })?;
        Self::from_packed(people, capacity, first_empty, plan, &[])
    }

    /// Indexes packed people. `seed`: the departments of the previous version, which keep
    /// their indexes.
    fn from_packed(
        people: People,
        capacity: usize,
        first_empty: Option<usize>,
        plan: &NumberPlan,
        seed: &[Department],
    ) -> Result<Directory, DirectoryError> {
        let n = people.len();
        let mut keys = IdentityTable::with_capacity(capacity);
        for i in 0..n as UserIdx {
            if let Some(p) = people.get(i) {
                keys.insert_person(&p, i, plan);
            }
        }
        keys.finish();
        if let Some(e) = id_error(&keys, &people, first_empty) {
            return Err(e);
        }

        let (dept_of, mut departments) = departments_of(&people, seed);
        let mut dept_order: Vec<DeptIdx> = (0..departments.len() as DeptIdx).collect();
        dept_order.sort_unstable_by(|&a, &b| departments[a as usize].key.cmp(&departments[b as usize].key));
        departments.shrink_to_fit();

        let dept_keys: Vec<&str> = departments.iter().map(|d| &*d.key).collect();
        let index = SearchIndex::build(&people, &dept_of, &dept_keys, plan);
        drop(dept_keys);

        let count = (0..n as UserIdx).filter(|&i| people.get(i).is_some()).count();
        Ok(Directory { people, plan: plan.clone(), keys, dept_of, departments, dept_order, index, vacated: HashMap::new(), count })
    }

    /// Number of indexes: the people and the vacant indexes of people who left while the hub
    /// ran. Every [`UserIdx`] is below it; tables indexed by person are this long.
    pub fn len(&self) -> usize {
        self.people.len()
    }

    /// True if the directory has no index at all.
    pub fn is_empty(&self) -> bool {
        self.people.len() == 0
    }

    /// True if `idx` is a person of this version (not vacant, not past the end).
    pub fn contains(&self, idx: UserIdx) -> bool {
        self.people.contains(idx)
    }

    /// Number of people in the directory (without the vacant indexes).
    pub fn count(&self) -> usize {
        self.count
    }

    /// The person at `idx`, as a view of the directory's compact storage
    /// ([`PersonRef::to_person`] makes an owned copy).
    pub fn person(&self, idx: UserIdx) -> Option<PersonRef<'_>> {
        self.people.get(idx)
    }

    /// All people with their indexes, in index (import) order.
    pub fn people(&self) -> impl Iterator<Item = (UserIdx, PersonRef<'_>)> {
        (0..self.people.len() as UserIdx).filter_map(|i| Some((i, self.people.get(i)?)))
    }

    /// The person with exactly this id.
    pub fn by_id(&self, id: &str) -> Option<UserIdx> {
        self.lookup(Kind::Id, id.as_bytes())
    }

    /// The one person who has identity `key` of `kind`: `None` if nobody
    /// does, and also if several people do (a department's common number, a
    /// shared mailbox), because a presence update applied to the wrong
    /// person is worse than one that is dropped.
    fn lookup(&self, kind: Kind, key: &[u8]) -> Option<UserIdx> {
        let mut found = None;
        for idx in self.keys.candidates(kind, key) {
            let Some(p) = self.people.get(idx) else { continue };
            // The table holds hashes only: check the person really has the key.
            if identity::has_key(&p, kind, key, &self.plan) {
                if found.is_some() {
                    return None;
                }
                found = Some(idx);
            }
        }
        found
    }

    /// Finds the person named by `key`, whatever identity it is:
    ///
    /// 1. the person id (exact, so an id always wins over other readings);
    /// 2. `sip:`/`sips:` URI, also inside a display-name form
    ///    `"Åsa" <sip:asa@example.se>`, with `;parameters` ignored and the
    ///    user@host compared case-insensitively (falling back to the e-mail,
    ///    and to a number in the user part: `sip:+4670…@host;user=phone`);
    /// 3. e-mail/UPN, case-insensitively, with or without `mailto:`;
    /// 4. `tel:` URI, phone number in any format, or extension;
    /// 5. Entra object id GUID (any case, with or without braces/hyphens);
    /// 6. any external id written `kind:value` (e.g. `entra:…`, `hr:1234`).
    ///
    /// An identity shared by several people (say a department's common
    /// number) resolves to `None`.
    pub fn resolve(&self, key: &str) -> Option<UserIdx> {
        let key = key.trim();
        if key.is_empty() || key.len() > MAX_RESOLVE_KEY_BYTES {
            return None;
        }
        if let Some(i) = self.by_id(key) {
            return Some(i);
        }
        let key = strip_display_name(key);
        if let Some(rest) = strip_prefix_ci(key, "sip:").or_else(|| strip_prefix_ci(key, "sips:")) {
            return self.resolve_sip(rest);
        }
        if let Some(rest) = strip_prefix_ci(key, "mailto:") {
            return self.lookup(Kind::Email, email_key(rest).as_bytes());
        }
        if let Some(rest) = strip_prefix_ci(key, "tel:") {
            return self.resolve_number(rest);
        }
        if key.contains('@') {
            let k = email_key(key);
            return self.lookup(Kind::Email, k.as_bytes()).or_else(|| self.lookup(Kind::Sip, k.as_bytes()));
        }
        if let Some(guid) = canonical_guid(key) {
            if let Some(i) = self.lookup(Kind::External, format!("entra:{guid}").as_bytes()) {
                return Some(i);
            }
        }
        if looks_like_number(key) {
            return self.resolve_number(key);
        }
        if let Some((kind, value)) = key.split_once(':') {
            return external_key(kind, value).and_then(|k| self.lookup(Kind::External, k.as_bytes()));
        }
        None
    }

    /// The person with this phone number (any format the plan understands).
    pub fn resolve_phone(&self, raw: &str) -> Option<UserIdx> {
        let key = normalize_phone(raw, &self.plan).as_deref().and_then(phone_key)?;
        self.lookup(Kind::Phone, &key.to_le_bytes())
    }

    /// The person with this extension ("1234" or "tel:1234").
    pub fn resolve_extension(&self, ext: &str) -> Option<UserIdx> {
        let key = normalize_extension_for(ext, &self.plan).as_deref().and_then(digits_key)?;
        self.lookup(Kind::Extension, &key.to_le_bytes())
    }

    fn resolve_number(&self, s: &str) -> Option<UserIdx> {
        self.resolve_extension(s).or_else(|| self.resolve_phone(s))
    }

    /// `rest` is a SIP URI after its scheme.
    fn resolve_sip(&self, rest: &str) -> Option<UserIdx> {
        let addr = sip_addr(rest);
        if addr.is_empty() {
            return None;
        }
        let found = self.lookup(Kind::Sip, addr.as_bytes()).or_else(|| self.lookup(Kind::Email, addr.as_bytes()));
        if found.is_some() {
            return found;
        }
        let user = addr.split('@').next().unwrap_or_default();
        if looks_like_number(user) {
            return self.resolve_number(user);
        }
        None
    }

    /// The department of the person at `idx`.
    pub fn department_of(&self, idx: UserIdx) -> Option<DeptIdx> {
        self.dept_of.get(idx as usize).copied().filter(|&d| d != NO_DEPT)
    }

    /// The department called `name`, compared case- and diacritic-insensitively
    /// and ignoring punctuation ("forsaljning" finds "Försäljning").
    pub fn department_idx(&self, name: &str) -> Option<DeptIdx> {
        let key = search_text(name);
        let key_of = |d: DeptIdx| self.departments.get(d as usize).map_or("", |d| &*d.key);
        self.dept_order
            .binary_search_by(|&d| key_of(d).cmp(key.as_str()))
            .ok()
            .and_then(|pos| self.dept_order.get(pos).copied())
    }

    /// Name of department `d`.
    pub fn department_name(&self, d: DeptIdx) -> Option<&str> {
        self.departments.get(d as usize).map(|d| &*d.name)
    }

    /// All departments with their member counts, sorted by folded name (departments left
    /// empty by people who left are not listed).
    pub fn departments(&self) -> Vec<(&str, usize)> {
        self.dept_order
            .iter()
            .filter_map(|&d| self.departments.get(d as usize))
            .filter(|d| d.members > 0)
            .map(|d| (&*d.name, d.members))
            .collect()
    }

    /// Ranked, paged search (see [`search`] for the rules).
    pub fn search(&self, q: &SearchQuery) -> SearchResult {
        let dept = match q.department {
            None => None,
            Some(name) => match self.department_idx(name) {
                Some(d) => Some(d),
                None => return SearchResult::default(),
            },
        };
        self.index.search(q, dept, &self.plan)
    }

    /// The number plan the directory was built with.
    pub fn plan(&self) -> &NumberPlan {
        &self.plan
    }

    /// Heap bytes of the search index alone (see [`Directory::memory_bytes`]).
    pub fn search_index_bytes(&self) -> usize {
        self.index.memory_bytes()
    }

    /// Estimated heap bytes held by the directory: people, identity table,
    /// departments and search index. Small blocks (interned titles and
    /// department names) are counted as malloc really sizes them (an 8-byte
    /// header, rounded up to 16, at least 32 bytes); the big arrays and
    /// arenas are counted by capacity. Memory freed during the build but not
    /// returned to the OS is not included, so RSS can be a little higher still.
    pub fn memory_bytes(&self) -> usize {
        let people = self.people.memory_bytes();
        let departments: usize = self.departments.capacity() * std::mem::size_of::<Department>()
            + self.departments.iter().map(|d| heap_block(d.name.len()) + heap_block(d.key.len())).sum::<usize>();
        people
            + self.keys.memory_bytes()
            + self.dept_of.capacity() * std::mem::size_of::<DeptIdx>()
            + departments
            + self.dept_order.capacity() * std::mem::size_of::<DeptIdx>()
            + self.index.memory_bytes()
    }
}

/// Bytes a heap block of `len` bytes really takes: glibc's malloc (like the
/// size classes of most allocators) adds an 8-byte header, rounds up to 16
/// and allocates at least 32. Zero-length boxes and vectors allocate nothing.
fn heap_block(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        ((len + 8 + 15) & !15).max(32)
    }
}

/// The error [`Directory::build`] reports for the ids, if any: the first
/// person (in input order) whose id is empty or repeats an earlier one.
///
/// Two people can only share an id inside a run of equal hashes in the
/// identity table, so only those runs are checked; a run can also hold
/// other kinds of key and hash collisions, hence the re-hash and the sort by
/// the id itself.
fn id_error(keys: &IdentityTable, people: &People, first_empty: Option<usize>) -> Option<DirectoryError> {
    // (first, second) of the repeat whose second person comes earliest.
    let mut repeat: Option<(usize, usize)> = None;
    let mut same_id: Vec<(&str, usize)> = Vec::new();
    for (hash, run) in keys.shared_runs() {
        same_id.clear();
        for &(_, idx) in run {
            let id = people.get(idx).map_or("", |p| p.id());
            if keys.hash(Kind::Id, id.as_bytes()) == hash {
                same_id.push((id, idx as usize));
            }
        }
        same_id.sort_unstable();
        for group in same_id.chunk_by(|a, b| a.0 == b.0) {
            if let [(_, first), (_, second), ..] = *group {
                if repeat.is_none_or(|(_, s)| second < s) {
                    repeat = Some((first, second));
                }
            }
        }
    }
    match (repeat, first_empty) {
        (Some((first, second)), empty) if empty.is_none_or(|e| second < e) => Some(DirectoryError::DuplicateId {
            id: people.get(second as UserIdx).map(|p| p.id().to_string()).unwrap_or_default(),
            first,
            second,
        }),
        (_, Some(index)) => Some(DirectoryError::EmptyId { index }),
        _ => None,
    }
}

/// Each person's department, and the departments in order of first
/// appearance with their member counts. People whose department text folds
/// to the same search text ("Ekonomi", "EKONOMI") share a department.
fn departments_of(people: &People, seed: &[Department]) -> (Vec<DeptIdx>, Vec<Department>) {
    let mut dept_of = Vec::with_capacity(people.len());
    let mut departments: Vec<Department> =
        seed.iter().map(|d| Department { name: d.name.clone(), key: d.key.clone(), members: 0 }).collect();
    // Folded key → department, and each spelling seen → department, so that
    // each distinct spelling is folded once rather than once per person.
    let mut by_key: HashMap<Box<str>, DeptIdx> =
        departments.iter().enumerate().map(|(i, d)| (d.key.clone(), i as DeptIdx)).collect();
    let mut by_spelling: HashMap<&str, DeptIdx> = HashMap::new();
    let mut buf = String::new();
    for raw in (0..people.len() as UserIdx).map(|i| people.get(i).and_then(|p| p.department())) {
        let Some(raw) = raw else {
            dept_of.push(NO_DEPT);
            continue;
        };
        let d = match by_spelling.get(raw) {
            Some(&d) => d,
            None => {
                buf.clear();
                fold_search_text(raw, &mut buf);
                let d = if buf.is_empty() {
                    NO_DEPT
                } else {
                    let next = departments.len() as DeptIdx;
                    let d = *by_key.entry(buf.as_str().into()).or_insert(next);
                    if d == next {
                        departments.push(Department { name: raw.trim().into(), key: buf.as_str().into(), members: 0 });
                    }
                    d
                };
                by_spelling.insert(raw, d);
                d
            }
        };
        if let Some(dep) = departments.get_mut(d as usize) {
            dep.members += 1;
        }
        dept_of.push(d);
    }
    (dept_of, departments)
}

/// The E.164 form of a phone for matching: its stored `e164` if that is
/// valid, else its number normalised with `plan`.
fn phone_e164(ph: &PhoneRef<'_>, plan: &NumberPlan) -> Option<String> {
    ph.e164.and_then(|e| normalize_phone(e, plan)).or_else(|| normalize_phone(ph.number, plan))
}

/// "+46701234567" → 46701234567.
fn phone_key(e164: &str) -> Option<u64> {
    let digits = e164.strip_prefix('+')?;
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Packs a digit string into a u64 keeping leading zeros significant:
/// length in the top byte, value below ("0123" ≠ "123").
fn digits_key(digits: &str) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(((digits.len() as u64) << 56) | value)
}

fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// `s` without `prefix`, compared ASCII-case-insensitively.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// `"Åsa Östberg" <sip:asa@example.se>;tag=1` → `sip:asa@example.se`.
fn strip_display_name(s: &str) -> &str {
    match s.find('<') {
        Some(open) => {
            let inner = &s[open + 1..];
            inner.find('>').map_or(inner, |close| &inner[..close]).trim()
        }
        None => s,
    }
}

/// Lower-cased user@host of a SIP URI whose scheme is already removed:
/// parameters (`;transport=tls`), headers (`?subject=…`) and a closing `>`
/// are dropped.
fn sip_addr(rest: &str) -> String {
    let end = rest.find([';', '?', '>']).unwrap_or(rest.len());
    rest[..end].trim().to_lowercase()
}

/// Index key of a stored SIP URI (scheme optional).
fn sip_key(uri: &str) -> Option<String> {
    let s = strip_display_name(uri.trim());
    let rest = strip_prefix_ci(s, "sip:").or_else(|| strip_prefix_ci(s, "sips:")).unwrap_or(s);
    Some(sip_addr(rest)).filter(|a| !a.is_empty())
}

/// "kind:value" key with both parts lower-cased; Entra GUIDs canonicalised.
fn external_key(kind: &str, value: &str) -> Option<String> {
    let kind = kind.trim().to_lowercase();
    let value = value.trim();
    if kind.is_empty() || value.is_empty() {
        return None;
    }
    let value = match canonical_guid(value) {
        Some(g) if kind == "entra" => g,
        _ => value.to_lowercase(),
    };
    Some(format!("{kind}:{value}"))
}

/// Lower-case hyphenated form of a GUID written with or without braces and
/// hyphens, or `None` if `s` is not a GUID.
fn canonical_guid(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')).unwrap_or(s);
    let hex: String = match s.len() {
        36 => {
            let b = s.as_bytes();
            if [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
                return None;
            }
            s.chars().filter(|&c| c != '-').collect()
        }
        32 => s.to_string(),
        _ => return None,
    };
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let h = hex.to_ascii_lowercase();
    Some(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

/// Digits with optional '+' and phone punctuation only (a number or an
/// extension, as opposed to a name or a `kind:value` id).
fn looks_like_number(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | '/' | '(' | ')') || c.is_whitespace())
}
