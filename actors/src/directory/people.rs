//! Compact storage of the people of a [`super::Directory`], and the borrowed
//! views ([`PersonRef`], [`PhoneRef`], [`ExternalIdRef`]) that read them.
//!
//! # Why not a `Vec<Person>`
//!
//! A [`Person`] is a 160-byte struct plus 13–14 small heap blocks (every
//! string, the phone and external-id lists), about 720 bytes per person once
//! malloc has added its headers and rounded up — most of the directory's
//! memory at 100 k people. Here the whole directory has no per-person heap
//! allocation at all:
//!
//! * every text of every person is appended to one arena `String`, in a
//!   fixed order (id, name, e-mail, extension, SIP URI, then each phone's
//!   number and E.164, then each external id's kind and value);
//! * the lengths, which optional fields are present, the phone kinds and
//!   the counts go into one byte arena as LEB128 varints (nearly every
//!   length fits one byte, and no field has a length limit to overflow);
//! * titles and department spellings repeat a lot, so they are interned:
//!   stored once each and referenced by index from the byte arena;
//! * per person, only the two arena offsets (8 bytes) are kept.
//!
//! Reading a person decodes a handful of varints into a [`PersonRef`], which
//! borrows its strings from the arenas. [`Person`] remains the interchange
//! type (import, JSON, [`super::Directory::build`]); [`PersonRef`] serialises
//! to exactly the same JSON.

use std::collections::HashMap;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::{ExternalId, Person, Phone, PhoneKind, UserIdx};

/// Bits of a person's first byte in the byte arena: which optional fields
/// are present (a present but empty field is not the same as a missing one).
const HAS_TITLE: u8 = 1;
const HAS_DEPT: u8 = 1 << 1;
const HAS_EMAIL: u8 = 1 << 2;
const HAS_EXTENSION: u8 = 1 << 3;
const HAS_SIP: u8 = 1 << 4;

/// Bit of a phone's kind byte: the phone has an E.164 form.
const PHONE_HAS_E164: u8 = 1 << 2;

/// The `at` entry of a vacant slot: a person who left, whose index stays reserved so that
/// everyone else keeps theirs (see [`super::Directory::next`]).
const VACANT: (u32, u32) = (u32::MAX, u32::MAX);

/// The arenas would need offsets wider than `u32`.
#[derive(Debug)]
pub(super) struct TooLarge {
    /// Bytes the arenas would have needed.
    pub(super) bytes: usize,
}

/// Packs people one at a time, so a directory can be built while its people are read (from
/// the store or a file) without ever holding them all as [`Person`]s.
pub(super) struct PeopleBuilder {
    out: People,
    title_ids: HashMap<Box<str>, usize>,
    dept_ids: HashMap<Box<str>, usize>,
    /// Upper bound of identity-table entries (id, name-free keys, phones, external ids).
    key_capacity: usize,
    /// Index of the first person with an empty id, if any.
    first_empty: Option<usize>,
}

impl PeopleBuilder {
    /// A builder expecting about `people` people and `text` bytes of text.
    pub(super) fn new(people: usize, text: usize) -> PeopleBuilder {
        PeopleBuilder {
            out: People {
                text: String::with_capacity(text),
                meta: Vec::with_capacity(people * 12),
                at: Vec::with_capacity(people),
                ..Default::default()
            },
            title_ids: HashMap::new(),
            dept_ids: HashMap::new(),
            key_capacity: 0,
            first_empty: None,
        }
    }

    /// Packs one person (consumed: its strings are freed right away).
    pub(super) fn push(&mut self, p: Person) -> Result<(), TooLarge> {
        if p.id.trim().is_empty() && self.first_empty.is_none() {
            self.first_empty = Some(self.out.at.len());
        }
        self.key_capacity += 4 + p.phones.len() + p.external_ids.len();
        let out = &mut self.out;
        if out.text.len() + 4096 > u32::MAX as usize {
            return Err(TooLarge { bytes: out.text.len() });
        }
        let meta_at = u32::try_from(out.meta.len()).map_err(|_| TooLarge { bytes: out.meta.len() })?;
        out.at.push((out.text.len() as u32, meta_at));
        let flag = |present: bool, bit: u8| if present { bit } else { 0 };
        out.meta.push(
            flag(p.title.is_some(), HAS_TITLE)
                | flag(p.department.is_some(), HAS_DEPT)
                | flag(p.email.is_some(), HAS_EMAIL)
                | flag(p.extension.is_some(), HAS_EXTENSION)
                | flag(p.sip_uri.is_some(), HAS_SIP),
        );
        if let Some(t) = p.title {
            let i = intern(&mut out.titles, &mut self.title_ids, t);
            put(&mut out.meta, i);
        }
        if let Some(d) = p.department {
            let i = intern(&mut out.depts, &mut self.dept_ids, d);
            put(&mut out.meta, i);
        }
        for s in [Some(&p.id), Some(&p.name), p.email.as_ref(), p.extension.as_ref(), p.sip_uri.as_ref()]
            .into_iter()
            .flatten()
        {
            out.push_text(s);
        }
        put(&mut out.meta, p.phones.len());
        for ph in &p.phones {
            let kind = ph.kind as u8 | if ph.e164.is_some() { PHONE_HAS_E164 } else { 0 };
            out.meta.push(kind);
            out.push_text(&ph.number);
            if let Some(e) = &ph.e164 {
                out.push_text(e);
            }
        }
        put(&mut out.meta, p.external_ids.len());
        for x in &p.external_ids {
            out.push_text(&x.kind);
            out.push_text(&x.value);
        }
        Ok(())
    }

    /// Reserves the next index for nobody (a person who left).
    pub(super) fn push_vacant(&mut self) {
        self.out.at.push(VACANT);
    }

    /// The packed people, the identity-table capacity and the first empty id.
    pub(super) fn finish(mut self) -> Result<(People, usize, Option<usize>), TooLarge> {
        let out = &mut self.out;
        if out.meta.len() > u32::MAX as usize || out.text.len() > u32::MAX as usize {
            return Err(TooLarge { bytes: out.meta.len().max(out.text.len()) });
        }
        out.text.shrink_to_fit();
        out.meta.shrink_to_fit();
        out.at.shrink_to_fit();
        out.titles.shrink_to_fit();
        out.depts.shrink_to_fit();
        Ok((self.out, self.key_capacity, self.first_empty))
    }
}

/// The people of a directory in compact form; see the module docs.
#[derive(Debug, Default)]
pub(super) struct People {
    /// All texts of all people, concatenated.
    text: String,
    /// Per person: flags, interned indexes, lengths and counts (varints).
    meta: Vec<u8>,
    /// Per person: where its texts and its bytes start in `text` and `meta`.
    at: Vec<(u32, u32)>,
    /// Distinct titles, exactly as written in the source.
    titles: Vec<Box<str>>,
    /// Distinct department spellings, exactly as written in the source.
    depts: Vec<Box<str>>,
}

/// Appends `v` as an LEB128 varint.
fn put(meta: &mut Vec<u8>, mut v: usize) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            meta.push(b);
            return;
        }
        meta.push(b | 0x80);
    }
}

/// Index of `s` in `list`, adding it if it is new (one copy per distinct
/// text for the lookup map, which is dropped after the build).
fn intern(list: &mut Vec<Box<str>>, seen: &mut HashMap<Box<str>, usize>, s: Box<str>) -> usize {
    if let Some(&i) = seen.get(&s) {
        return i;
    }
    list.push(s.clone());
    seen.insert(s, list.len() - 1);
    list.len() - 1
}

impl People {
    /// Packs `people`, consuming them one at a time so that each person's
    /// small blocks are freed (and reusable) as soon as they are copied.
    pub(super) fn build(people: Vec<Person>) -> Result<People, TooLarge> {
        // Exact arena size up front: one allocation, no doubling and copying.
        let text_len: usize = people
            .iter()
            .map(|p| {
                let opt = |s: &Option<Box<str>>| s.as_deref().map_or(0, str::len);
                p.id.len()
                    + p.name.len()
                    + opt(&p.email)
                    + opt(&p.extension)
                    + opt(&p.sip_uri)
                    + p.phones.iter().map(|ph| ph.number.len() + ph.e164.as_deref().map_or(0, str::len)).sum::<usize>()
                    + p.external_ids.iter().map(|x| x.kind.len() + x.value.len()).sum::<usize>()
            })
            .sum();
        if text_len > u32::MAX as usize {
            return Err(TooLarge { bytes: text_len });
        }
        let mut b = PeopleBuilder::new(people.len(), text_len);
        for p in people {
            b.push(p)?;
        }
        b.finish().map(|(people, _, _)| people)
    }

    fn push_text(&mut self, s: &str) {
        put(&mut self.meta, s.len());
        self.text.push_str(s);
    }

    /// Number of slots: people and vacant indexes.
    pub(super) fn len(&self) -> usize {
        self.at.len()
    }

    /// True if `idx` holds a person (not vacant, not past the end), without decoding them.
    pub(super) fn contains(&self, idx: UserIdx) -> bool {
        self.at.get(idx as usize).is_some_and(|&a| a != VACANT)
    }

    /// The person at `idx`; `None` past the end and for a vacant index.
    pub(super) fn get(&self, idx: UserIdx) -> Option<PersonRef<'_>> {
        let &(text_at, meta_at) = self.at.get(idx as usize).filter(|&&a| a != VACANT)?;
        let mut r = Reader { people: self, meta: meta_at as usize, text: text_at as usize };
        let flags = r.byte();
        let has = |bit: u8| flags & bit != 0;
        let title = if has(HAS_TITLE) { self.titles.get(r.varint()).map(|s| &**s) } else { None };
        let department = if has(HAS_DEPT) { self.depts.get(r.varint()).map(|s| &**s) } else { None };
        let id = r.text();
        let name = r.text();
        let email = has(HAS_EMAIL).then(|| r.text());
        let extension = has(HAS_EXTENSION).then(|| r.text());
        let sip_uri = has(HAS_SIP).then(|| r.text());
        Some(PersonRef { id, name, title, department, email, extension, sip_uri, rest: r })
    }

    /// Heap bytes: the arenas by capacity, the interned strings as malloc
    /// sizes them (see [`super::heap_block`]).
    pub(super) fn memory_bytes(&self) -> usize {
        let interned = |list: &Vec<Box<str>>| {
            list.capacity() * std::mem::size_of::<Box<str>>()
                + list.iter().map(|s| super::heap_block(s.len())).sum::<usize>()
        };
        self.text.capacity()
            + self.meta.capacity()
            + self.at.capacity() * std::mem::size_of::<(u32, u32)>()
            + interned(&self.titles)
            + interned(&self.depts)
    }
}

/// A position in both arenas, reading one person's fields in order.
#[derive(Clone, Copy)]
struct Reader<'a> {
    people: &'a People,
    meta: usize,
    text: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> u8 {
        let b = self.people.meta.get(self.meta).copied().unwrap_or(0);
        self.meta += 1;
        b
    }

    fn varint(&mut self) -> usize {
        let mut v = 0usize;
        let mut shift = 0;
        loop {
            let b = self.byte();
            v |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 || shift >= usize::BITS {
                return v;
            }
        }
    }

    /// The next text (its length is the next varint).
    fn text(&mut self) -> &'a str {
        let len = self.varint();
        let s = self.people.text.get(self.text..self.text + len).unwrap_or_default();
        self.text += len;
        s
    }
}

/// A person of a [`super::Directory`], borrowed from its compact storage.
/// The fields are decoded when the view is made; phones and external ids
/// are decoded as they are iterated.
#[derive(Clone, Copy)]
pub struct PersonRef<'a> {
    id: &'a str,
    name: &'a str,
    title: Option<&'a str>,
    department: Option<&'a str>,
    email: Option<&'a str>,
    extension: Option<&'a str>,
    sip_uri: Option<&'a str>,
    /// Positioned at the phone count.
    rest: Reader<'a>,
}

impl<'a> PersonRef<'a> {
    /// Stable id used in URLs, e.g. "asa.ostberg".
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// Display name, e.g. "Åsa Östberg".
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// Job title.
    pub fn title(&self) -> Option<&'a str> {
        self.title
    }

    /// Department name as written in the source.
    pub fn department(&self) -> Option<&'a str> {
        self.department
    }

    /// E-mail address (also the UPN).
    pub fn email(&self) -> Option<&'a str> {
        self.email
    }

    /// Internal extension, e.g. "1234".
    pub fn extension(&self) -> Option<&'a str> {
        self.extension
    }

    /// SIP address, e.g. "sip:asa.ostberg@example.se".
    pub fn sip_uri(&self) -> Option<&'a str> {
        self.sip_uri
    }

    /// Phone numbers, in source order.
    pub fn phones(&self) -> Phones<'a> {
        let mut r = self.rest;
        let left = r.varint();
        Phones { r, left }
    }

    /// Ids in other systems, in source order.
    pub fn external_ids(&self) -> ExternalIds<'a> {
        // They follow the phones: read past those first.
        let mut phones = self.phones();
        for _ in phones.by_ref() {}
        let mut r = phones.r;
        let left = r.varint();
        ExternalIds { r, left }
    }

    /// An owned copy, equal to the [`Person`] the directory was built from.
    pub fn to_person(&self) -> Person {
        Person {
            id: self.id.into(),
            name: self.name.into(),
            title: self.title.map(Into::into),
            department: self.department.map(Into::into),
            email: self.email.map(Into::into),
            phones: self.phones().map(|p| p.to_phone()).collect(),
            extension: self.extension.map(Into::into),
            sip_uri: self.sip_uri.map(Into::into),
            external_ids: self.external_ids().map(|x| x.to_external_id()).collect(),
        }
    }
}

impl std::fmt::Debug for PersonRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonRef")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("title", &self.title)
            .field("department", &self.department)
            .field("email", &self.email)
            .field("phones", &self.phones().collect::<Vec<_>>())
            .field("extension", &self.extension)
            .field("sip_uri", &self.sip_uri)
            .field("external_ids", &self.external_ids().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for PersonRef<'_> {
    /// Same contents (wherever they are stored).
    fn eq(&self, other: &Self) -> bool {
        (self.id, self.name, self.title, self.department, self.email, self.extension, self.sip_uri)
            == (other.id, other.name, other.title, other.department, other.email, other.extension, other.sip_uri)
            && self.phones().eq(other.phones())
            && self.external_ids().eq(other.external_ids())
    }
}

impl Eq for PersonRef<'_> {}

impl PartialEq<Person> for PersonRef<'_> {
    fn eq(&self, other: &Person) -> bool {
        self.to_person() == *other
    }
}

/// Serialises exactly as [`Person`] does (same field names, order and
/// omitted empties): the HTTP API and the SQLite store depend on that shape.
impl Serialize for PersonRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct PhoneList<'a>(Phones<'a>);
        impl Serialize for PhoneList<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.clone())
            }
        }
        struct IdList<'a>(ExternalIds<'a>);
        impl Serialize for IdList<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.clone())
            }
        }
        let phones = self.phones();
        let ids = self.external_ids();
        let (has_phones, has_ids) = (phones.left > 0, ids.left > 0);
        let opts = [self.title, self.department, self.email, self.extension, self.sip_uri];
        let len = 2 + opts.iter().flatten().count() + usize::from(has_phones) + usize::from(has_ids);
        let mut st = s.serialize_struct("Person", len)?;
        st.serialize_field("id", self.id)?;
        st.serialize_field("name", self.name)?;
        let opt = |st: &mut S::SerializeStruct, key: &'static str, v: Option<&str>| match v {
            Some(v) => st.serialize_field(key, v),
            None => st.skip_field(key),
        };
        opt(&mut st, "title", self.title)?;
        opt(&mut st, "department", self.department)?;
        opt(&mut st, "email", self.email)?;
        if has_phones {
            st.serialize_field("phones", &PhoneList(phones))?;
        } else {
            st.skip_field("phones")?;
        }
        opt(&mut st, "extension", self.extension)?;
        opt(&mut st, "sip_uri", self.sip_uri)?;
        if has_ids {
            st.serialize_field("external_ids", &IdList(ids))?;
        } else {
            st.skip_field("external_ids")?;
        }
        st.end()
    }
}

/// A phone number of a [`PersonRef`]; serialises as [`Phone`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PhoneRef<'a> {
    /// What kind of number this is.
    pub kind: PhoneKind,
    /// The number as given in the source.
    pub number: &'a str,
    /// E.164 form, if the number could be normalised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e164: Option<&'a str>,
}

impl PhoneRef<'_> {
    /// An owned copy.
    pub fn to_phone(&self) -> Phone {
        Phone { kind: self.kind, number: self.number.into(), e164: self.e164.map(Into::into) }
    }
}

/// An id of a [`PersonRef`] in another system; serialises as [`ExternalId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ExternalIdRef<'a> {
    /// System, e.g. "entra".
    pub kind: &'a str,
    /// Id in that system.
    pub value: &'a str,
}

impl ExternalIdRef<'_> {
    /// An owned copy.
    pub fn to_external_id(&self) -> ExternalId {
        ExternalId { kind: self.kind.into(), value: self.value.into() }
    }
}

/// The phones of a [`PersonRef`] (see [`PersonRef::phones`]).
#[derive(Clone)]
pub struct Phones<'a> {
    r: Reader<'a>,
    left: usize,
}

impl<'a> Iterator for Phones<'a> {
    type Item = PhoneRef<'a>;

    fn next(&mut self) -> Option<PhoneRef<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let b = self.r.byte();
        let kind = match b & 3 {
            0 => PhoneKind::Mobile,
            1 => PhoneKind::Work,
            2 => PhoneKind::Home,
            _ => PhoneKind::Other,
        };
        let number = self.r.text();
        let e164 = (b & PHONE_HAS_E164 != 0).then(|| self.r.text());
        Some(PhoneRef { kind, number, e164 })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Phones<'_> {}

/// The external ids of a [`PersonRef`] (see [`PersonRef::external_ids`]).
#[derive(Clone)]
pub struct ExternalIds<'a> {
    r: Reader<'a>,
    left: usize,
}

impl<'a> Iterator for ExternalIds<'a> {
    type Item = ExternalIdRef<'a>;

    fn next(&mut self) -> Option<ExternalIdRef<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let kind = self.r.text();
        let value = self.r.text();
        Some(ExternalIdRef { kind, value })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for ExternalIds<'_> {}
