//! Merging the people of several directory sources into one list: records are matched by
//! the configured match keys (the Entra object id, the e-mail…), each field is taken from the
//! first source in its precedence list that has it, the result is validated as an import
//! row is, and ids are made unique without moving an id away from whoever holds it now.
//!
//! Pure: no store, no hub, no I/O.

use std::collections::{BTreeMap, HashMap, HashSet};

use presence_actors::directory::{Directory, NumberPlan, Person, PhoneKind, Record};
use serde::Deserialize;

/// A field of a person that can be matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchKey {
    /// The Entra object id (`msDS-ExternalDirectoryObjectId` in AD, `id` in Graph).
    EntraId,
    /// The e-mail address (or the UPN where there is no e-mail), case-insensitively.
    Email,
    /// The hub id.
    Id,
    /// The SIP address, case-insensitively.
    SipUri,
}

/// The fields precedence can be set for (`[directory.precedence]`).
pub const FIELDS: &[&str] = &["id", "name", "title", "department", "email", "mobile", "phone", "extension", "sip_uri", "entra_id"];

/// One source's people, in the order the sources are configured.
pub struct SourcePeople<'a> {
    /// The source's name.
    pub name: &'a str,
    /// Its records by key, packed ([`pack`]).
    pub entries: &'a HashMap<Box<str>, Box<str>>,
    /// Keep the source's key as an external id (kind = the source's name), so the person can
    /// be found by it (an LDAP `objectGUID`); not for files, whose key is the id itself.
    pub key_is_external_id: bool,
}

/// A record a source holds that could not become a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The source.
    pub source: String,
    /// The record's key in it.
    pub key: String,
    /// Why.
    pub reason: String,
}

/// The merged people and the records that were left out.
#[derive(Debug, Default)]
pub struct Merged {
    /// The people, in a stable order (by id).
    pub people: Vec<Person>,
    /// Records left out, with the reason.
    pub rejected: Vec<Rejected>,
}

// ---- Packed records ----------------------------------------------------------------------
//
// The engine keeps every source's current people between passes (a pass is merged with the
// others' people). As `Record`s that is ~850 bytes a person (13 optional strings, two lists,
// each string its own allocation); packed into one string it is the text plus a few
// separators. Control characters never survive validation (they become spaces), so the
// separators below cannot be confused with data.

const FIELD: char = '\u{1f}';
const ITEM: char = '\u{1e}';
const PART: char = '\u{1d}';

fn clean(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains([FIELD, ITEM, PART]) {
        v.replace([FIELD, ITEM, PART], " ").into()
    } else {
        v.into()
    }
}

/// A record as one string (see [`unpack`]). An empty field and a missing one are the same.
pub fn pack(r: &Record) -> Box<str> {
    let mut out = String::with_capacity(128);
    for (i, f) in [&r.id, &r.name, &r.first_name, &r.last_name, &r.title, &r.department, &r.email, &r.upn, &r.extension, &r.sip_uri, &r.entra_id].into_iter().enumerate() {
        if i > 0 {
            out.push(FIELD);
        }
        out.push_str(&clean(f.as_deref().unwrap_or_default()));
    }
    out.push(FIELD);
    for (i, (k, n)) in r.phones.iter().enumerate() {
        if i > 0 {
            out.push(ITEM);
        }
        out.push(match k {
            PhoneKind::Mobile => 'm',
            PhoneKind::Work => 'w',
            PhoneKind::Home => 'h',
            _ => 'o',
        });
        out.push_str(&clean(n));
    }
    out.push(FIELD);
    for (i, (k, v)) in r.external_ids.iter().enumerate() {
        if i > 0 {
            out.push(ITEM);
        }
        out.push_str(&clean(k));
        out.push(PART);
        out.push_str(&clean(v));
    }
    out.into_boxed_str()
}

/// The record [`pack`] packed.
pub fn unpack(s: &str) -> Record {
    let mut f = s.split(FIELD);
    let mut next = || f.next().filter(|v| !v.is_empty()).map(str::to_owned);
    let mut r = Record {
        id: next(),
        name: next(),
        first_name: next(),
        last_name: next(),
        title: next(),
        department: next(),
        email: next(),
        upn: next(),
        extension: next(),
        sip_uri: next(),
        entra_id: next(),
        phones: Vec::new(),
        external_ids: Vec::new(),
    };
    if let Some(phones) = next() {
        for item in phones.split(ITEM) {
            let mut c = item.chars();
            let kind = match c.next() {
                Some('m') => PhoneKind::Mobile,
                Some('w') => PhoneKind::Work,
                Some('h') => PhoneKind::Home,
                _ => PhoneKind::Other,
            };
            r.phones.push((kind, c.as_str().to_owned()));
        }
    }
    if let Some(ext) = next() {
        for item in ext.split(ITEM) {
            let (k, v) = item.split_once(PART).unwrap_or((item, ""));
            r.external_ids.push((k.to_owned(), v.to_owned()));
        }
    }
    r
}

/// The value of `key` in `r`, normalised for matching.
fn match_value(key: MatchKey, r: &Record) -> Option<String> {
    let v = match key {
        MatchKey::EntraId => r.entra_id.as_deref().map(entra_id),
        MatchKey::Email => r.email.as_deref().or(r.upn.as_deref()).map(|e| e.trim().trim_start_matches("mailto:").to_lowercase()),
        MatchKey::Id => r.id.as_deref().map(|s| s.trim().to_string()),
        MatchKey::SipUri => r.sip_uri.as_deref().map(|s| {
            let s = s.trim().to_lowercase();
            s.strip_prefix("sip:").map(str::to_string).unwrap_or(s)
        }),
    }?;
    (!v.is_empty()).then_some(v)
}

/// An Entra object id as the hub keeps it: lower case, without the `User_` prefix Active
/// Directory's `msDS-ExternalDirectoryObjectId` carries.
pub fn entra_id(v: &str) -> String {
    let v = v.trim();
    let v = match v.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("user_") => &v[5..],
        _ => v,
    };
    v.to_lowercase()
}

/// One member of a group of records that stand for one person: (source index, key, packed).
type Member<'a> = (usize, &'a str, &'a str);

/// Merges the sources' records into people. `precedence` maps a field (see [`FIELDS`]) to
/// source names, first wins; sources not named (and fields without an entry) follow in
/// configuration order. A source's key becomes an external id of kind = the source's name
/// where [`SourcePeople::key_is_external_id`] says so. `current` decides who keeps an id when
/// two people would get the same one: whoever holds it now.
///
/// Memory: records are unpacked one group at a time, and with one source no grouping map is
/// built at all.
pub fn merge(sources: &[SourcePeople<'_>], keys: &[MatchKey], precedence: &BTreeMap<String, Vec<String>>, plan: &NumberPlan, current: &Directory) -> Merged {
    // Group the records: one group per person. Sorted by key, so the same input always groups
    // and orders the same way.
    let mut groups: Vec<Vec<Member<'_>>> = Vec::new();
    let mut by_value: HashMap<(MatchKey, String), usize> = HashMap::new();
    for (si, s) in sources.iter().enumerate() {
        let mut entries: Vec<(&Box<str>, &Box<str>)> = s.entries.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, packed) in entries {
            if sources.len() == 1 {
                groups.push(vec![(si, key, packed)]);
                continue;
            }
            let r = unpack(packed);
            let values: Vec<(MatchKey, String)> = keys.iter().filter_map(|&k| Some((k, match_value(k, &r)?))).collect();
            let found = values.iter().find_map(|v| by_value.get(v).copied()).filter(|&g| groups[g].iter().all(|(gs, _, _)| *gs != si));
            let g = found.unwrap_or_else(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[g].push((si, key, packed));
            for v in values {
                by_value.entry(v).or_insert(g);
            }
        }
    }
    drop(by_value);

    let order_for = |field: &str| -> Vec<usize> {
        let mut order: Vec<usize> = precedence
            .get(field)
            .or_else(|| precedence.get("default"))
            .map(|names| names.iter().filter_map(|n| sources.iter().position(|s| s.name == n)).collect())
            .unwrap_or_default();
        for i in 0..sources.len() {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        order
    };
    let orders: HashMap<&str, Vec<usize>> = FIELDS.iter().map(|f| (*f, order_for(f))).collect();

    let mut out = Merged::default();
    // A merged person and whether its id was given explicitly.
    let mut candidates: Vec<(Person, bool)> = Vec::with_capacity(groups.len());
    for group in groups {
        let records: Vec<(usize, &str, Record)> = group.iter().map(|&(si, key, packed)| (si, key, unpack(packed))).collect();
        let of = |si: usize| records.iter().find(|(s, _, _)| *s == si).map(|(_, _, r)| r);
        let pick = |field: &str, get: &dyn Fn(&Record) -> Option<String>| -> Option<String> {
            orders[field].iter().find_map(|&si| of(si).and_then(get).filter(|v| !v.trim().is_empty()))
        };
        let phones = |kind: PhoneKind, field: &str| -> Vec<(PhoneKind, String)> {
            orders[field]
                .iter()
                .find_map(|&si| {
                    let v: Vec<(PhoneKind, String)> = of(si)?.phones.iter().filter(|(k, _)| *k == kind).cloned().collect();
                    (!v.is_empty()).then_some(v)
                })
                .unwrap_or_default()
        };
        let mut rec = Record {
            id: pick("id", &|r| r.id.clone()),
            name: pick("name", &|r| r.name.clone()),
            first_name: pick("name", &|r| r.first_name.clone()),
            last_name: pick("name", &|r| r.last_name.clone()),
            title: pick("title", &|r| r.title.clone()),
            department: pick("department", &|r| r.department.clone()),
            email: pick("email", &|r| r.email.clone()),
            upn: pick("email", &|r| r.upn.clone()),
            extension: pick("extension", &|r| r.extension.clone()),
            sip_uri: pick("sip_uri", &|r| r.sip_uri.clone()),
            entra_id: pick("entra_id", &|r| r.entra_id.as_deref().map(entra_id)),
            phones: Vec::new(),
            external_ids: Vec::new(),
        };
        rec.phones.extend(phones(PhoneKind::Mobile, "mobile"));
        rec.phones.extend(phones(PhoneKind::Work, "phone"));
        for (si, key, r) in &records {
            let own = sources[*si].key_is_external_id.then(|| (sources[*si].name.to_string(), key.to_string()));
            for x in r.external_ids.iter().chain(own.as_ref()) {
                if !rec.external_ids.contains(x) {
                    rec.external_ids.push(x.clone());
                }
            }
            for (k, n) in &r.phones {
                if !matches!(k, PhoneKind::Mobile | PhoneKind::Work) && !rec.phones.iter().any(|(_, m)| m == n) {
                    rec.phones.push((*k, n.clone()));
                }
            }
        }
        rec.external_ids.truncate(presence_actors::directory::import::MAX_LIST_ITEMS);
        rec.phones.truncate(presence_actors::directory::import::MAX_LIST_ITEMS);
        match rec.to_person(plan) {
            Ok(p) => candidates.push((p, rec.id.is_some())),
            Err(e) => {
                let (si, key, _) = group[0];
                out.rejected.push(Rejected { source: sources[si].name.to_string(), key: key.to_string(), reason: e.to_string() });
            }
        }
    }

    // Unique ids: an explicit id (from a source's id attribute) wins over a derived one; among
    // equals, whoever holds the id now keeps it; the rest get "-2", "-3"… in key order.
    let holds_now = |p: &Person| -> bool {
        current.by_id(&p.id).and_then(|i| current.person(i)).is_some_and(|cur| cur.external_ids().any(|x| p.external_ids.iter().any(|y| x.kind == &*y.kind && x.value == &*y.value)))
    };
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by_cached_key(|&i| {
        let (p, explicit) = &candidates[i];
        (!*explicit, !holds_now(p), i)
    });
    let mut taken: HashSet<Box<str>> = HashSet::with_capacity(candidates.len());
    let mut people: Vec<Option<(Person, bool)>> = candidates.into_iter().map(Some).collect();
    let mut out_people = Vec::with_capacity(people.len());
    for i in order {
        let Some((mut p, explicit)) = people[i].take() else { continue };
        if taken.contains(&p.id) {
            if explicit {
                out.rejected.push(Rejected { source: String::new(), key: p.id.to_string(), reason: format!("duplicate id {:?}", p.id) });
                continue;
            }
            let base = p.id.to_string();
            let mut n = 2;
            while taken.contains(format!("{base}-{n}").as_str()) {
                n += 1;
            }
            p.id = format!("{base}-{n}").into();
        }
        taken.insert(p.id.clone());
        out_people.push(p);
    }
    out.people = out_people;
    out.people.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, email: &str) -> Record {
        Record { name: Some(name.into()), email: Some(email.into()), ..Record::default() }
    }

    fn map(items: Vec<(&str, Record)>) -> HashMap<Box<str>, Box<str>> {
        items.into_iter().map(|(k, r)| (k.into(), pack(&r))).collect()
    }

    #[test]
    fn records_pack_and_unpack() {
        let r = Record {
            id: Some("anna".into()),
            name: Some("Anna \u{1f}Andersson".into()),
            email: Some("anna@example.se".into()),
            phones: vec![(PhoneKind::Mobile, "070-111".into()), (PhoneKind::Home, "08-2".into())],
            external_ids: vec![("ad".into(), "g1".into()), ("hr".into(), "".into())],
            ..Record::default()
        };
        let back = unpack(&pack(&r));
        assert_eq!(back.name.as_deref(), Some("Anna  Andersson"), "separators in data become spaces");
        assert_eq!((back.id, back.email, back.title), (r.id.clone(), r.email.clone(), None));
        assert_eq!(back.phones, r.phones);
        assert_eq!(back.external_ids, r.external_ids);
        assert_eq!(unpack(&pack(&Record::default())), Record::default());
    }

    fn empty() -> Directory {
        Directory::build(vec![], &NumberPlan::sweden()).unwrap()
    }

    #[test]
    fn sources_match_by_key_and_fields_follow_precedence() {
        let mut ad_anna = rec("Anna Andersson", "anna@example.se");
        ad_anna.id = Some("aand".into());
        ad_anna.entra_id = Some("User_0B4E0000-0000-0000-0000-000000000001".into());
        ad_anna.phones = vec![(PhoneKind::Mobile, "070-111 11 11".into()), (PhoneKind::Work, "08-123 456".into())];
        ad_anna.extension = Some("1001".into());
        let mut entra_anna = rec("Anna A. (Entra)", "Anna@Example.se");
        entra_anna.entra_id = Some("0b4e0000-0000-0000-0000-000000000001".into());
        entra_anna.phones = vec![(PhoneKind::Mobile, "070-222 22 22".into())];
        entra_anna.title = Some("Telefonist".into());
        let ad = map(vec![("g1", ad_anna), ("g2", rec("Bo Berg", "bo@example.se"))]);
        let entra = map(vec![("0b4e0000-0000-0000-0000-000000000001", entra_anna), ("e2", rec("Cia C", "cia@example.se"))]);
        let sources = [SourcePeople { name: "ad", entries: &ad, key_is_external_id: true }, SourcePeople { name: "entra", entries: &entra, key_is_external_id: true }];
        let mut prec = BTreeMap::new();
        prec.insert("mobile".to_string(), vec!["entra".to_string(), "ad".to_string()]);
        let m = merge(&sources, &[MatchKey::EntraId, MatchKey::Email], &prec, &NumberPlan::sweden(), &empty());
        assert!(m.rejected.is_empty(), "{:?}", m.rejected);
        let ids: Vec<&str> = m.people.iter().map(|p| &*p.id).collect();
        assert_eq!(ids, vec!["aand", "bo", "cia"]);
        let anna = &m.people[0];
        assert_eq!(&*anna.name, "Anna Andersson", "ad first by default");
        assert_eq!(anna.title.as_deref(), Some("Telefonist"), "from entra where ad has none");
        let mobile: Vec<&str> = anna.phones.iter().filter(|p| p.kind == PhoneKind::Mobile).map(|p| &*p.number).collect();
        assert_eq!(mobile, vec!["070-222 22 22"], "mobile: entra first");
        assert!(anna.phones.iter().any(|p| p.kind == PhoneKind::Work && &*p.number == "08-123 456"));
        let ext: Vec<(String, String)> = anna.external_ids.iter().map(|x| (x.kind.to_string(), x.value.to_string())).collect();
        assert!(ext.contains(&("entra".into(), "0b4e0000-0000-0000-0000-000000000001".into())), "{ext:?}");
        assert!(ext.contains(&("ad".into(), "g1".into())), "{ext:?}");
    }

    #[test]
    fn invalid_records_are_rejected_and_ids_stay_with_their_holder() {
        let plan = NumberPlan::sweden();
        let mut held = Person::new("anna", "Anna Berg");
        held.external_ids.push(presence_actors::directory::ExternalId { kind: "ad".into(), value: "k2".into() });
        let current = Directory::build(vec![held], &plan).unwrap();
        let src = map(vec![("k1", rec("Anna Andersson", "anna@one.example")), ("k2", rec("Anna Berg", "anna@two.example")), ("k3", rec("", "x@example.se"))]);
        let m = merge(&[SourcePeople { name: "ad", entries: &src, key_is_external_id: true }], &[MatchKey::Email], &BTreeMap::new(), &plan, &current);
        assert_eq!(m.rejected.len(), 1);
        assert_eq!(m.rejected[0].key, "k3");
        let by_id: HashMap<&str, &str> = m.people.iter().map(|p| (&*p.id, &*p.name)).collect();
        assert_eq!(by_id.get("anna"), Some(&"Anna Berg"), "the holder keeps the id");
        assert_eq!(by_id.get("anna-2"), Some(&"Anna Andersson"));
    }
}
