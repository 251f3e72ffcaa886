//! The identity table of a [`super::Directory`]: everything a person can be
//! found by (id, e-mail/UPN, SIP address, external ids, phone numbers,
//! extension) in one sorted vector of `(hash, person)` pairs.
//!
//! # Why not a `HashMap` per kind
//!
//! At 100 k people, `HashMap<Box<str>, UserIdx>` maps cost a heap allocation
//! per key (an id, e-mail, SIP address or "entra:GUID" is 32–64 bytes once
//! malloc has rounded it up and added its header) plus about 30 bytes of
//! table per entry: some 350 bytes per person over six kinds of identity.
//! Here an entry is 8 bytes and the keys are not stored at all. A lookup
//! finds the entries with the key's hash and verifies each candidate against
//! that person's own fields (recomputing the person's keys of that kind), so:
//!
//! * a 32-bit hash is enough: a collision costs one extra verification and
//!   can never return the wrong person;
//! * a key shared by several people (a department's common number, a shared
//!   mailbox) simply has several verified candidates, and resolves to nobody
//!   (see [`super::Directory::resolve`]) — entries are sorted by person, so
//!   the search stops at the second verified one however many share the key.
//!
//! Finding them costs two cache misses: a bucket table indexed by the top
//! bits of the hash (under half a byte per entry) gives the handful of
//! entries to compare, instead of a 20-step binary search through megabytes.
//!
//! The hash is a small multiply-fold hash rather than std's SipHash, which
//! cost more than the rest of a lookup put together. It is seeded per
//! directory from [`RandomState`], so collisions cannot be planned in
//! advance; and as said above, a collision is only ever slower, not wrong.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use super::{
    digits_key, email_key, external_key, normalize_extension_for, phone_e164, phone_key, sip_key, NumberPlan,
    PersonRef, UserIdx,
};

/// The kinds of identity in the table. The kind is hashed with the key, so
/// "1234" as an extension and "1234" as an id are different entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// The person id, exactly as given.
    Id,
    /// Lower-cased e-mail/UPN.
    Email,
    /// Lower-cased "user@host" of the SIP URI, without scheme or parameters.
    Sip,
    /// "kind:value", both lower-cased (Entra GUIDs in canonical form).
    External,
    /// E.164 digits as a little-endian `u64` (see [`phone_key`]).
    Phone,
    /// Extension digits packed with their length (see [`digits_key`]).
    Extension,
}

impl Kind {
    /// Every kind, in the order the table is filled.
    pub(super) const ALL: [Kind; 6] = [Kind::Id, Kind::Email, Kind::Sip, Kind::External, Kind::Phone, Kind::Extension];
}

/// Calls `f` with each key of `kind` that `p` has, as bytes, until `f`
/// returns true; returns whether it did. Building the table and verifying a
/// candidate both go through here, which is what keeps them in agreement.
pub(super) fn any_key(p: &PersonRef<'_>, kind: Kind, plan: &NumberPlan, mut f: impl FnMut(&[u8]) -> bool) -> bool {
    match kind {
        Kind::Id => f(p.id().as_bytes()),
        Kind::Email => p.email().map(email_key).is_some_and(|k| !k.is_empty() && f(k.as_bytes())),
        Kind::Sip => p.sip_uri().and_then(sip_key).is_some_and(|k| f(k.as_bytes())),
        Kind::External => p.external_ids().any(|x| external_key(x.kind, x.value).is_some_and(|k| f(k.as_bytes()))),
        Kind::Phone => p
            .phones()
            .any(|ph| phone_e164(&ph, plan).as_deref().and_then(phone_key).is_some_and(|k| f(&k.to_le_bytes()))),
        Kind::Extension => p
            .extension()
            .and_then(|e| normalize_extension_for(e, plan))
            .and_then(|e| digits_key(&e))
            .is_some_and(|k| f(&k.to_le_bytes())),
    }
}

/// Does `p` have identity `key` of `kind`? The same answer as [`any_key`]
/// comparing each key, but an ASCII e-mail (nearly all of them) is compared
/// in place instead of lower-cased into a new string first. E-mail lookups
/// are the common case (SIP addresses fall back to them too).
pub(super) fn has_key(p: &PersonRef<'_>, kind: Kind, key: &[u8], plan: &NumberPlan) -> bool {
    if let (Kind::Email, Some(email)) = (kind, p.email()) {
        let email = email.trim();
        if email.is_ascii() {
            // `email_key` is `trim().to_lowercase()`, which for ASCII is this.
            return !email.is_empty()
                && email.len() == key.len()
                && email.bytes().zip(key).all(|(a, &b)| a.to_ascii_lowercase() == b);
        }
    }
    any_key(p, kind, plan, |k| k == key)
}

/// Sorted `(hash of kind and key, person)` pairs; see the module docs.
#[derive(Debug, Default)]
pub(super) struct IdentityTable {
    /// Per-directory hash seed.
    seed: u64,
    /// Sorted by hash, then person; no duplicate pairs. A tuple of two
    /// `u32`s has no padding, so this is 8 bytes per entry.
    entries: Vec<(u32, UserIdx)>,
    /// Entries whose hash has top bits `b` are `entries[buckets[b]..buckets[b + 1]]`.
    buckets: Vec<u32>,
    /// Number of hash bits that select a bucket (`buckets.len() == 2^bits + 1`).
    bits: u32,
}

/// Target number of entries per bucket: the scan of a bucket stays within a
/// cache line or two, and the table costs about half a byte per entry.
const ENTRIES_PER_BUCKET: usize = 8;

/// The 64×64→128-bit multiply folded to 64 bits: the mixing step of wyhash,
/// cheap and thorough enough for bucket selection and a 32-bit tag.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

impl IdentityTable {
    /// An empty table with room for `capacity` entries (an upper bound is
    /// best: [`IdentityTable::finish`] returns what is left over).
    pub(super) fn with_capacity(capacity: usize) -> Self {
        IdentityTable {
            seed: RandomState::new().hash_one(0x5EED_u64),
            entries: Vec::with_capacity(capacity),
            ..Default::default()
        }
    }

    /// The 32-bit hash of `key` as an identity of `kind`.
    pub(super) fn hash(&self, kind: Kind, key: &[u8]) -> u32 {
        const K0: u64 = 0xA076_1D64_78BD_642F;
        const K1: u64 = 0xE703_7ED1_A0B4_28DB;
        // Kind and length go into the start state, so neither "ab" vs
        // "ab\0" nor the same bytes under two kinds collide systematically.
        let mut h = self.seed ^ ((kind as u64) << 56) ^ (key.len() as u64);
        let mut words = key.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = fold_mul(h ^ u64::from_le_bytes(b), K0);
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            h = fold_mul(h ^ u64::from_le_bytes(b), K0);
        }
        let h = fold_mul(h, K1 ^ self.seed);
        (h >> 32) as u32
    }

    /// Adds all of `p`'s keys (person `idx`). Call [`IdentityTable::finish`]
    /// once everyone is in.
    pub(super) fn insert_person(&mut self, p: &PersonRef<'_>, idx: UserIdx, plan: &NumberPlan) {
        for kind in Kind::ALL {
            any_key(p, kind, plan, |k| {
                let h = self.hash(kind, k);
                self.entries.push((h, idx));
                false
            });
        }
    }

    /// Sorts the entries, drops repeats (the same key twice on one person,
    /// e.g. a number listed as both mobile and work, is still that person's)
    /// and builds the bucket table.
    pub(super) fn finish(&mut self) {
        self.entries.sort_unstable();
        self.entries.dedup();
        self.entries.shrink_to_fit();
        let wanted = (self.entries.len() / ENTRIES_PER_BUCKET).max(1);
        // Largest power of two not above `wanted`, at most 2^24 buckets.
        self.bits = wanted.ilog2().min(24);
        let shift = 32 - self.bits;
        let mut buckets = Vec::with_capacity((1 << self.bits) + 1);
        let mut at = 0usize;
        for b in 0..(1u64 << self.bits) {
            while at < self.entries.len() && u64::from(self.entries[at].0) >> shift < b {
                at += 1;
            }
            buckets.push(at as u32);
        }
        buckets.push(self.entries.len() as u32);
        self.buckets = buckets;
    }

    /// People with an entry of the same hash as `key` (a superset of those
    /// who really have the key), in ascending order.
    pub(super) fn candidates(&self, kind: Kind, key: &[u8]) -> impl Iterator<Item = UserIdx> + '_ {
        let h = self.hash(kind, key);
        let b = (u64::from(h) >> (32 - self.bits)) as usize;
        let bucket = match (self.buckets.get(b), self.buckets.get(b + 1)) {
            (Some(&lo), Some(&hi)) => self.entries.get(lo as usize..hi as usize).unwrap_or_default(),
            _ => &[],
        };
        bucket.iter().skip_while(move |e| e.0 < h).take_while(move |e| e.0 == h).map(|e| e.1)
    }

    /// Runs of two or more entries with the same hash, with that hash:
    /// the only places where two people can share a key.
    pub(super) fn shared_runs(&self) -> impl Iterator<Item = (u32, &[(u32, UserIdx)])> + '_ {
        self.entries.chunk_by(|a, b| a.0 == b.0).filter(|run| run.len() > 1).map(|run| (run[0].0, run))
    }

    /// Heap bytes (two big arrays, so no per-block overhead worth counting).
    pub(super) fn memory_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(u32, UserIdx)>() + self.buckets.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::super::{email_key, synth, Directory, DirectoryError, Person, Phone, PhoneKind};
    use super::*;

    #[test]
    fn collisions_are_verified_away() {
        let mut d = Directory::build(synth::generate(50, 3), &NumberPlan::default()).expect("builds");
        // Give every e-mail hash a second owner, as a hash collision would.
        let fake: Vec<(u32, UserIdx)> = d
            .people()
            .map(|(i, p)| {
                let key = email_key(p.email().unwrap_or_default());
                (d.keys.hash(Kind::Email, key.as_bytes()), (i + 1) % 50)
            })
            .collect();
        d.keys.entries.extend(fake);
        d.keys.finish();
        for (i, p) in d.people() {
            assert_eq!(d.resolve(p.email().unwrap_or_default()), Some(i), "{}", p.id());
            assert_eq!(d.by_id(p.id()), Some(i));
        }
    }

    #[test]
    fn shared_keys_resolve_to_nobody() {
        let phone = |n: &str| Phone { kind: PhoneKind::Work, number: n.into(), e164: None };
        let people: Vec<Person> = (0..40)
            .map(|i| {
                let mut p = Person::new(&format!("p{i}"), "Name");
                p.email = Some(if i < 30 { "Shared@Example.se".into() } else { format!("p{i}@example.se").into() });
                // A personal mobile, listed twice, and the common switchboard number.
                let mobile = format!("070-000 00 {i:02}");
                p.phones = vec![phone(&mobile), phone(&mobile), phone("08-555 100 00")];
                p
            })
            .collect();
        let d = Directory::build(people, &NumberPlan::default()).expect("builds");
        assert_eq!(d.resolve("08-555 100 00"), None);
        assert_eq!(d.resolve("shared@example.se"), None);
        assert_eq!(d.resolve("P35@EXAMPLE.SE"), d.by_id("p35"));
        for i in 0..40 {
            assert_eq!(d.resolve(&format!("+467000000{i:02}")), d.by_id(&format!("p{i}")));
        }
    }

    #[test]
    fn first_bad_id_is_reported() {
        let build = |ids: &[&str]| {
            let people = ids.iter().map(|id| Person::new(id, "N")).collect();
            Directory::build(people, &NumberPlan::default()).map(|_| ())
        };
        let dup = |r: Result<(), DirectoryError>| match r {
            Err(DirectoryError::DuplicateId { id, first, second }) => Some((id, first, second)),
            _ => None,
        };
        assert_eq!(dup(build(&["a", "b", "b", "a"])), Some(("b".into(), 1, 2)));
        assert_eq!(dup(build(&["a", "b", "c", "a", "b", "b"])), Some(("a".into(), 0, 3)));
        assert_eq!(dup(build(&["a", "a", " "])), Some(("a".into(), 0, 1)));
        assert!(matches!(build(&["a", " ", "a"]), Err(DirectoryError::EmptyId { index: 1 })));
        assert!(matches!(build(&["", ""]), Err(DirectoryError::EmptyId { index: 0 })));
        assert!(build(&["a", "A", "a "]).is_ok());
        // Many people under one id: still the first repeat, found without
        // comparing every pair.
        let many = vec!["x"; 5_000];
        assert_eq!(dup(build(&many)), Some(("x".into(), 0, 1)));
    }
}
