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
    /// Its records by key.
    pub entries: &'a HashMap<Box<str>, Record>,
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

/// Merges the sources' records into people. `precedence` maps a field (see [`FIELDS`]) to
/// source names, first wins; sources not named (and fields without an entry) follow in
/// configuration order. Each source's key becomes an external id of kind = the source's
/// name, so every person can be found by it. `current` decides who keeps an id when two
/// people would get the same one: whoever holds it now.
pub fn merge(sources: &[SourcePeople<'_>], keys: &[MatchKey], precedence: &BTreeMap<String, Vec<String>>, plan: &NumberPlan, current: &Directory) -> Merged {
    // Group the records: entity → (source index, key, record).
    let mut groups: Vec<Vec<(usize, &str, &Record)>> = Vec::new();
    let mut by_value: HashMap<(MatchKey, String), usize> = HashMap::new();
    for (si, s) in sources.iter().enumerate() {
        // Sorted by key: the same input always groups and orders the same way.
        let mut entries: Vec<(&Box<str>, &Record)> = s.entries.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, r) in entries {
            let values: Vec<(MatchKey, String)> = keys.iter().filter_map(|&k| Some((k, match_value(k, r)?))).collect();
            let found = values.iter().find_map(|v| by_value.get(v).copied()).filter(|&g| groups[g].iter().all(|(gs, _, _)| *gs != si));
            let g = found.unwrap_or_else(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[g].push((si, key, r));
            for v in values {
                by_value.entry(v).or_insert(g);
            }
        }
    }

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
    // A merged person, whether its id was given explicitly, and its match keys.
    type Candidate = (Person, bool, Vec<(String, String)>);
    let mut candidates: Vec<Candidate> = Vec::new();
    for group in &groups {
        let pick = |field: &str, get: &dyn Fn(&Record) -> Option<String>| -> Option<String> {
            orders[field].iter().find_map(|si| group.iter().find(|(s, _, _)| s == si).and_then(|(_, _, r)| get(r)).filter(|v| !v.trim().is_empty()))
        };
        let phones = |kind: PhoneKind, field: &str| -> Vec<(PhoneKind, String)> {
            orders[field]
                .iter()
                .find_map(|si| {
                    let (_, _, r) = group.iter().find(|(s, _, _)| s == si)?;
                    let v: Vec<(PhoneKind, String)> = r.phones.iter().filter(|(k, _)| *k == kind).cloned().collect();
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
        let mut ext: Vec<(String, String)> = Vec::new();
        for (si, key, r) in group {
            let own = sources[*si].key_is_external_id.then(|| (sources[*si].name.to_string(), key.to_string()));
            for x in r.external_ids.iter().chain(own.as_ref()) {
                if !ext.contains(x) {
                    ext.push(x.clone());
                }
            }
            for (k, n) in &r.phones {
                if !matches!(k, PhoneKind::Mobile | PhoneKind::Work) && !rec.phones.iter().any(|(_, m)| m == n) {
                    rec.phones.push((*k, n.clone()));
                }
            }
        }
        ext.truncate(presence_actors::directory::import::MAX_LIST_ITEMS);
        rec.phones.truncate(presence_actors::directory::import::MAX_LIST_ITEMS);
        rec.external_ids = ext.clone();
        match rec.to_person(plan) {
            Ok(p) => candidates.push((p, rec.id.is_some(), ext)),
            Err(e) => {
                let (si, key, _) = group[0];
                out.rejected.push(Rejected { source: sources[si].name.to_string(), key: key.to_string(), reason: e.to_string() });
            }
        }
    }

    // Unique ids: an explicit id (from a source's id attribute) wins over a derived one; among
    // equals, whoever holds the id now keeps it; the rest get "-2", "-3"… in key order.
    let holds_now = |p: &Person, ext: &[(String, String)]| -> bool {
        current.by_id(&p.id).and_then(|i| current.person(i)).is_some_and(|cur| cur.external_ids().any(|x| ext.iter().any(|(k, v)| x.kind == k && x.value == v)))
    };
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by_key(|&i| {
        let (p, explicit, ext) = &candidates[i];
        (!*explicit, !holds_now(p, ext), i)
    });
    let mut taken: HashSet<String> = HashSet::new();
    let mut people: Vec<Option<Person>> = candidates.iter().map(|_| None).collect();
    for i in order {
        let (p, explicit, _) = &candidates[i];
        let mut p = p.clone();
        if taken.contains(&*p.id) {
            if *explicit {
                out.rejected.push(Rejected { source: String::new(), key: p.id.to_string(), reason: format!("duplicate id {:?}", p.id) });
                continue;
            }
            let base = p.id.to_string();
            let mut n = 2;
            while taken.contains(&format!("{base}-{n}")) {
                n += 1;
            }
            p.id = format!("{base}-{n}").into();
        }
        taken.insert(p.id.to_string());
        people[i] = Some(p);
    }
    out.people = people.into_iter().flatten().collect();
    out.people.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, email: &str) -> Record {
        Record { name: Some(name.into()), email: Some(email.into()), ..Record::default() }
    }

    fn map(items: Vec<(&str, Record)>) -> HashMap<Box<str>, Record> {
        items.into_iter().map(|(k, r)| (k.into(), r)).collect()
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
