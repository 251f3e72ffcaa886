//! The pure part of the `ldap` source, no network: search result entries from the wire
//! ([`entry_from_tag`], never panicking on a hostile server), the mapping of an entry to an
//! [`Entry`] ([`Mapping::entry`]), binary GUIDs ([`format_guid`]), the high-water values
//! ([`usn`], [`timestamp`]) and the cursor that carries them ([`Cursor`]), and the filters
//! ([`escape`] per RFC 4515, [`changed_since`]).

use ldap3::asn1::{StructureTag, TagClass, PL};
use serde::{Deserialize, Serialize};

use presence_actors::directory::PhoneKind;

use super::super::{Entry, Record};
use super::Attributes;

/// Longest attribute value kept, in bytes; a longer value is ignored (as if absent).
pub const MAX_VALUE_BYTES: usize = 4096;

/// Most values kept per attribute (only the first is used; the rest only count).
const MAX_VALUES: usize = 64;

/// Most attributes kept per entry (the source asks for about fifteen).
const MAX_ATTRIBUTES: usize = 64;

/// One search result entry as it came: the DN and the attributes with their raw values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEntry {
    /// The entry's DN.
    pub dn: String,
    /// Attribute description (as the server spelled it) and values.
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl RawEntry {
    /// The values of `attr` (case-insensitive; `attr;options` count as `attr`).
    pub fn values(&self, attr: &str) -> &[Vec<u8>] {
        let base = |a: &str| a.split(';').next().unwrap_or(a).to_owned();
        self.attrs.iter().find(|(a, _)| base(a).eq_ignore_ascii_case(attr)).map(|(_, v)| v.as_slice()).unwrap_or(&[])
    }

    /// The first value of `attr` that is text of at most [`MAX_VALUE_BYTES`], trimmed, not
    /// empty.
    pub fn text(&self, attr: &str) -> Option<&str> {
        if attr.is_empty() {
            return None;
        }
        self.values(attr).iter().filter(|v| v.len() <= MAX_VALUE_BYTES).filter_map(|v| std::str::from_utf8(v).ok()).map(str::trim).find(|v| !v.is_empty())
    }
}

/// A `SearchResultEntry` (RFC 4511 4.5.2: `[APPLICATION 4] SEQUENCE { objectName,
/// attributes }`) from its BER structure. Values over [`MAX_VALUE_BYTES`] are dropped;
/// anything not shaped as the RFC says is an error, not a panic.
pub fn entry_from_tag(tag: StructureTag) -> Result<RawEntry, String> {
    if tag.class != TagClass::Application || tag.id != 4 {
        return Err(format!("not a search result entry (tag {})", tag.id));
    }
    let mut parts = constructed(tag, "entry")?.into_iter();
    let dn = parts.next().ok_or("an entry without a DN")?.expect_primitive().ok_or("the DN is not an octet string")?;
    let dn = String::from_utf8(dn).map_err(|_| "the DN is not UTF-8")?;
    let mut attrs = Vec::new();
    for attr in constructed(parts.next().ok_or("an entry without attributes")?, "the attribute list")? {
        let mut attr = constructed(attr, "an attribute")?.into_iter();
        let name = attr.next().ok_or("an attribute without a type")?.expect_primitive().ok_or("an attribute type that is not an octet string")?;
        let name = String::from_utf8(name).map_err(|_| "an attribute type that is not UTF-8")?;
        let mut values = Vec::new();
        for v in constructed(attr.next().ok_or("an attribute without a value set")?, "a value set")? {
            let v = v.expect_primitive().ok_or("a value that is not an octet string")?;
            if v.len() <= MAX_VALUE_BYTES && values.len() < MAX_VALUES {
                values.push(v);
            }
        }
        if attrs.len() < MAX_ATTRIBUTES {
            attrs.push((name, values));
        }
    }
    Ok(RawEntry { dn, attrs })
}

fn constructed(tag: StructureTag, what: &str) -> Result<Vec<StructureTag>, String> {
    match tag.payload {
        PL::C(inner) => Ok(inner),
        PL::P(_) => Err(format!("{what} is not a constructed value")),
    }
}

/// A binary GUID (16 bytes, as AD's `objectGUID`) as text: the first three groups are
/// little-endian, the rest in order (`33 22 11 00 55 44 77 66 88 99 …` →
/// `00112233-4455-6677-8899-…`). `None` unless 16 bytes.
pub fn format_guid(b: &[u8]) -> Option<String> {
    let b: &[u8; 16] = b.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// Why an entry was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// No usable key (and no DN fallback).
    NoKey,
    /// Neither a display name nor given name and surname.
    NoName,
}

/// The attribute mapping, ready to apply.
#[derive(Debug, Clone)]
pub struct Mapping {
    attributes: Attributes,
    key_fallback_dn: bool,
}

impl Mapping {
    /// The mapping of `attributes`; `key_fallback_dn`: an entry without the key attribute is
    /// keyed by its DN.
    pub fn new(attributes: &Attributes, key_fallback_dn: bool) -> Mapping {
        Mapping { attributes: attributes.clone(), key_fallback_dn }
    }

    /// The attributes to ask the server for: the mapped ones, each once.
    pub fn requested(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, a) in self.attributes.fields() {
            if !a.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(a)) {
                out.push(a.to_owned());
            }
        }
        out
    }

    /// The key of `e`: a 16-byte value as a GUID, else the text; else the DN when configured.
    pub fn key(&self, e: &RawEntry) -> Option<String> {
        let values = e.values(&self.attributes.key);
        let key = values.iter().find_map(|v| match format_guid(v) {
            // A 16-byte value that is not printable text is a binary GUID (entryUUID and
            // text GUIDs are 36 characters).
            Some(g) if std::str::from_utf8(v).map_or(true, |t| t.chars().any(|c| c.is_control())) => Some(g),
            _ => std::str::from_utf8(v).ok().map(str::trim).filter(|t| !t.is_empty() && !t.chars().any(char::is_control)).map(str::to_ascii_lowercase),
        });
        key.or_else(|| (self.key_fallback_dn && !e.dn.is_empty()).then(|| e.dn.to_lowercase()))
    }

    /// `e` as an [`Entry`]; multi-valued attributes give their first value.
    pub fn entry(&self, e: &RawEntry) -> Result<Entry, Skip> {
        let key = self.key(e).ok_or(Skip::NoKey)?;
        let a = &self.attributes;
        let t = |attr: &str| e.text(attr).map(str::to_owned);
        let record = Record {
            id: t(&a.id),
            name: t(&a.name),
            first_name: t(&a.first_name),
            last_name: t(&a.last_name),
            title: t(&a.title),
            department: t(&a.department),
            email: t(&a.email),
            upn: t(&a.upn),
            extension: t(&a.extension),
            sip_uri: t(&a.sip_uri),
            entra_id: t(&a.entra_id),
            phones: [(PhoneKind::Mobile, &a.mobile), (PhoneKind::Work, &a.phone)].into_iter().filter_map(|(k, attr)| t(attr).map(|n| (k, n))).collect(),
            external_ids: Vec::new(),
        };
        if record.name.is_none() && (record.first_name.is_none() || record.last_name.is_none()) {
            return Err(Skip::NoName);
        }
        Ok(Entry { key: key.into(), record })
    }
}

/// How changes are found, as kept in the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `uSNChanged` (a number per domain controller).
    Usn,
    /// `modifyTimestamp` (GeneralizedTime, whole seconds, UTC).
    ModifyTimestamp,
}

impl Mode {
    /// The attribute holding the value.
    pub fn attribute(self) -> &'static str {
        match self {
            Mode::Usn => "uSNChanged",
            Mode::ModifyTimestamp => "modifyTimestamp",
        }
    }

    /// The high-water value of `e` in this mode.
    pub fn value(self, e: &RawEntry) -> Option<String> {
        let v = e.text(self.attribute())?;
        match self {
            Mode::Usn => usn(v).map(|n| n.to_string()),
            Mode::ModifyTimestamp => timestamp(v),
        }
    }

    /// Whether high-water value `a` is later than `b` (values as [`Mode::value`] gives them).
    pub fn later(self, a: &str, b: &str) -> bool {
        match self {
            Mode::Usn => usn(a) > usn(b),
            // Fourteen digits and `Z`: text order is time order.
            Mode::ModifyTimestamp => a > b,
        }
    }
}

/// An update sequence number (a non-negative decimal integer).
pub fn usn(v: &str) -> Option<u64> {
    let v = v.trim();
    (!v.is_empty() && v.len() <= 20 && v.bytes().all(|c| c.is_ascii_digit())).then(|| v.parse().ok()).flatten()
}

/// A GeneralizedTime in UTC (`20260102030405Z`, `20260102030405.0Z` as AD writes it) cut to
/// whole seconds: `20260102030405Z`. Other forms (local time, offsets) give `None`.
pub fn timestamp(v: &str) -> Option<String> {
    let v = v.trim();
    let body = v.strip_suffix('Z').or_else(|| v.strip_suffix('z'))?;
    let (secs, frac) = body.split_once(['.', ',']).unwrap_or((body, ""));
    if secs.len() != 14 || !secs.bytes().all(|c| c.is_ascii_digit()) || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(format!("{secs}Z"))
}

/// What the next incremental pass starts from: the mode, the high-water value and the server
/// that numbered it. Kept by the hub as text (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// How changes are found.
    pub mode: Mode,
    /// The highest `uSNChanged` or `modifyTimestamp` read (or the server's
    /// `highestCommittedUSN` before the search).
    pub value: String,
    /// Which server: AD's `dsServiceName` (the domain controller), else the URL.
    pub server: String,
}

impl Cursor {
    /// As kept in the store.
    pub fn encode(&self) -> String {
        serde_json::json!({"v": 1, "mode": self.mode, "value": self.value, "server": self.server}).to_string()
    }

    /// From the store; `None` for anything this version did not write (a full pass follows).
    pub fn decode(text: &str) -> Option<Cursor> {
        #[derive(Deserialize)]
        struct V1 {
            v: u32,
            #[serde(flatten)]
            cursor: Cursor,
        }
        let c = serde_json::from_str::<V1>(text).ok().filter(|c| c.v == 1)?.cursor;
        let valid = match c.mode {
            Mode::Usn => usn(&c.value).is_some(),
            Mode::ModifyTimestamp => timestamp(&c.value).as_deref() == Some(c.value.as_str()),
        };
        valid.then_some(c)
    }
}

/// `value` escaped for a filter (RFC 4515 3): `*`, `(`, `)`, `\` and NUL as `\XX`.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// `filter` as one parenthesised filter (a bare `objectClass=user` is wrapped).
pub fn wrap(filter: &str) -> String {
    let f = filter.trim();
    if f.starts_with('(') {
        f.to_owned()
    } else {
        format!("({f})")
    }
}

/// The search filter of an incremental pass: `filter` and changed since `value` —
/// `(uSNChanged>=value+1)` or `(modifyTimestamp>=value)` (the same second again: it may hold
/// changes made after the last pass read it).
pub fn changed_since(filter: &str, mode: Mode, value: &str) -> String {
    let bound = match mode {
        Mode::Usn => usn(value).unwrap_or(0).saturating_add(1).to_string(),
        Mode::ModifyTimestamp => value.to_owned(),
    };
    format!("(&{}({}>={}))", wrap(filter), mode.attribute(), escape(&bound))
}

/// Checks a configured filter: RFC 4515 as the client parses it, at most 4096 bytes.
pub fn check_filter(filter: &str) -> Result<(), String> {
    if filter.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if filter.len() > 4096 {
        return Err("longer than 4096 bytes".into());
    }
    ldap3::parse_filter(wrap(filter)).map(|_| ()).map_err(|()| format!("{filter:?} is not a valid LDAP filter (RFC 4515)"))
}

/// An attribute name (RFC 4512 `descr`, a letter then letters, digits and `-`) or an OID.
pub fn is_attribute_name(a: &str) -> bool {
    let descr = a.len() <= 128 && a.starts_with(|c: char| c.is_ascii_alphabetic()) && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid = !a.is_empty() && a.len() <= 128 && a.split('.').all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    descr || oid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(attrs: &[(&str, &[&[u8]])]) -> RawEntry {
        RawEntry { dn: "CN=Anna,OU=Staff,DC=example,DC=com".into(), attrs: attrs.iter().map(|(a, vs)| (a.to_string(), vs.iter().map(|v| v.to_vec()).collect())).collect() }
    }

    const GUID: [u8; 16] = [0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];

    #[test]
    fn guids_are_formatted_in_active_directory_byte_order() {
        assert_eq!(format_guid(&GUID).as_deref(), Some("00112233-4455-6677-8899-aabbccddeeff"));
        assert_eq!(format_guid(&GUID[..15]), None);
        assert_eq!(format_guid(&[0; 17]), None);
    }

    #[test]
    fn an_active_directory_entry_maps_to_a_record() {
        let e = entry(&[
            ("objectGUID", &[&GUID]),
            ("sAMAccountName", &[b"anna"]),
            ("displayName", &[b" Anna Andersen "]),
            ("mail", &[b"anna@example.com", b"a@example.com"]),
            ("MOBILE", &[b"+47 900 00 001"]),
            ("telephoneNumber", &[b"+47 22 00 00 01"]),
            ("ipPhone", &[b"1001"]),
            ("title", &[b"Engineer"]),
            ("department;lang-en", &[b"Support"]),
            ("msRTCSIP-PrimaryUserAddress", &[b"sip:anna@example.com"]),
            ("msDS-ExternalDirectoryObjectId", &[b"User_0b7c"]),
            ("userPrincipalName", &[b"anna@corp.example.com"]),
        ]);
        let m = Mapping::new(&Attributes::default(), false);
        let got = m.entry(&e).unwrap();
        assert_eq!(&*got.key, "00112233-4455-6677-8899-aabbccddeeff");
        let r = got.record;
        assert_eq!((r.id.as_deref(), r.name.as_deref(), r.email.as_deref()), (Some("anna"), Some("Anna Andersen"), Some("anna@example.com")));
        assert_eq!(r.phones, vec![(PhoneKind::Mobile, "+47 900 00 001".to_string()), (PhoneKind::Work, "+47 22 00 00 01".to_string())]);
        assert_eq!((r.extension.as_deref(), r.title.as_deref(), r.department.as_deref()), (Some("1001"), Some("Engineer"), Some("Support")));
        assert_eq!((r.sip_uri.as_deref(), r.entra_id.as_deref(), r.upn.as_deref()), (Some("sip:anna@example.com"), Some("User_0b7c"), Some("anna@corp.example.com")));
        assert_eq!(r.first_name, None);
    }

    #[test]
    fn keys_names_and_hostile_values() {
        let m = Mapping::new(&Attributes { key: "entryUUID".into(), ..Attributes::default() }, false);
        // entryUUID is text; keys are lower-cased.
        let e = entry(&[("entryUUID", &[b"9C2F0E5A-1B2C-4D3E-8F90-A1B2C3D4E5F6"]), ("givenName", &[b"Bo"]), ("sn", &[b"Berg"])]);
        let got = m.entry(&e).unwrap();
        assert_eq!((&*got.key, got.record.name.as_deref(), got.record.first_name.as_deref()), ("9c2f0e5a-1b2c-4d3e-8f90-a1b2c3d4e5f6", None, Some("Bo")));
        assert_eq!(m.entry(&entry(&[("displayName", &[b"No Key"])])), Err(Skip::NoKey));
        assert_eq!(m.entry(&entry(&[("entryUUID", &[b"k"]), ("displayName", &[b"  "]), ("givenName", &[b"Bo"])])), Err(Skip::NoName));
        // A 16-byte text key stays text; the DN only when asked for.
        assert_eq!(m.key(&entry(&[("entryUUID", &[b"abcdefghijklmnop"])])).as_deref(), Some("abcdefghijklmnop"));
        let fallback = Mapping::new(&Attributes::default(), true);
        assert_eq!(fallback.key(&entry(&[])).as_deref(), Some("cn=anna,ou=staff,dc=example,dc=com"));
        // Oversized and non-UTF-8 values are as absent.
        let big = vec![b'x'; MAX_VALUE_BYTES + 1];
        let e = entry(&[("objectGUID", &[&GUID]), ("displayName", &[&big, b"Short"]), ("mail", &[&[0xff, 0xfe]])]);
        let r = Mapping::new(&Attributes::default(), false).entry(&e).unwrap().record;
        assert_eq!((r.name.as_deref(), r.email), (Some("Short"), None));
        assert_eq!(m.requested().iter().filter(|a| a.eq_ignore_ascii_case("entryuuid")).count(), 1);
        assert!(!Mapping::new(&Attributes { extension: String::new(), ..Attributes::default() }, false).requested().contains(&"ipPhone".to_string()));
    }

    #[test]
    fn entries_come_from_ber_without_panics() {
        let p = |b: &[u8]| StructureTag { class: TagClass::Universal, id: 4, payload: PL::P(b.to_vec()) };
        let c = |id, v: Vec<StructureTag>| StructureTag { class: TagClass::Universal, id, payload: PL::C(v) };
        let attr = |name: &[u8], vals: Vec<StructureTag>| c(16, vec![p(name), c(17, vals)]);
        let big = vec![b'x'; MAX_VALUE_BYTES + 1];
        let tag = StructureTag { class: TagClass::Application, id: 4, payload: PL::C(vec![p(b"cn=a,dc=x"), c(16, vec![attr(b"cn", vec![p(b"a"), p(&big)]), attr(b"objectGUID", vec![p(&GUID)])])]) };
        let e = entry_from_tag(tag).unwrap();
        assert_eq!(e.dn, "cn=a,dc=x");
        assert_eq!(e.values("CN"), &[b"a".to_vec()]);
        assert_eq!(e.values("objectguid"), &[GUID.to_vec()]);
        let app = |v| StructureTag { class: TagClass::Application, id: 4, payload: PL::C(v) };
        for bad in [
            StructureTag { class: TagClass::Application, id: 19, payload: PL::C(vec![]) },
            app(vec![]),
            app(vec![p(&[0xff])]),
            app(vec![p(b"cn=a")]),
            app(vec![p(b"cn=a"), p(b"x")]),
            app(vec![p(b"cn=a"), c(16, vec![p(b"cn")])]),
            app(vec![p(b"cn=a"), c(16, vec![c(16, vec![p(b"cn")])])]),
            app(vec![p(b"cn=a"), c(16, vec![c(16, vec![p(b"cn"), c(17, vec![c(16, vec![])])])])]),
            StructureTag { class: TagClass::Application, id: 4, payload: PL::P(vec![]) },
        ] {
            assert!(entry_from_tag(bad.clone()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn high_water_values_and_the_cursor() {
        assert_eq!((usn("12345"), usn(" 7 "), usn("-1"), usn(""), usn("99999999999999999999999")), (Some(12345), Some(7), None, None, None));
        assert_eq!(timestamp("20261207151000Z").as_deref(), Some("20261207151000Z"));
        assert_eq!(timestamp("20261207151000.0Z").as_deref(), Some("20261207151000Z"));
        assert_eq!((timestamp("20261207151000+0100"), timestamp("2026120715Z"), timestamp("2026120715100aZ")), (None, None, None));
        let e = entry(&[("uSNChanged", &[b"4711"]), ("modifyTimestamp", &[b"20261207151000.0Z"])]);
        assert_eq!((Mode::Usn.value(&e).as_deref(), Mode::ModifyTimestamp.value(&e).as_deref()), (Some("4711"), Some("20261207151000Z")));
        assert!(Mode::Usn.later("10", "9") && !Mode::Usn.later("9", "10"));
        assert!(Mode::ModifyTimestamp.later("20261207151001Z", "20261207151000Z"));
        let c = Cursor { mode: Mode::Usn, value: "4711".into(), server: "CN=NTDS Settings,CN=DC1,…".into() };
        let text = c.encode();
        assert!(text.contains("\"mode\":\"usn\"") && text.contains("\"v\":1"), "{text}");
        assert_eq!(Cursor::decode(&text), Some(c));
        let ts = Cursor { mode: Mode::ModifyTimestamp, value: "20261207151000Z".into(), server: "ldap://a".into() };
        assert_eq!(Cursor::decode(&ts.encode()), Some(ts));
        for bad in ["", "null", "{}", "4711", r#"{"v":2,"mode":"usn","value":"1","server":"a"}"#, r#"{"v":1,"mode":"usn","value":"x","server":"a"}"#, r#"{"v":1,"mode":"modify_timestamp","value":"2026Z","server":"a"}"#, r#"{"v":1,"mode":"dirsync","value":"1","server":"a"}"#] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn filters_are_composed_and_escaped() {
        assert_eq!(escape("a*(b)\\c\0é"), "a\\2a\\28b\\29\\5cc\\00é");
        assert_eq!(changed_since("(objectClass=user)", Mode::Usn, "4711"), "(&(objectClass=user)(uSNChanged>=4712))");
        assert_eq!(changed_since("objectClass=user", Mode::ModifyTimestamp, "20261207151000Z"), "(&(objectClass=user)(modifyTimestamp>=20261207151000Z))");
        assert!(check_filter(&changed_since(super::super::DEFAULT_FILTER, Mode::Usn, "1")).is_ok());
        assert!(check_filter("objectClass=user").is_ok());
        for bad in ["", "(&(a=b)", "(a=b))", "((a=b)"] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
        assert!(is_attribute_name("msRTCSIP-PrimaryUserAddress") && is_attribute_name("1.2.840.113556.1.4.2"));
        assert!(!is_attribute_name("") && !is_attribute_name("mail)(x") && !is_attribute_name("1..2") && !is_attribute_name("-x"));
    }
}
