//! The wire side of the `entra` source, pure: the `/users/delta` and `transitiveMembers` pages
//! (`value`, `@odata.nextLink`, `@odata.deltaLink`, `@removed`), a user as a set of changed
//! properties ([`UserPatch`]: absent, `null` or a value, told apart), the user the source knows
//! ([`User`]) with partial updates applied onto it and its mapping to a [`Record`], the Graph
//! error codes that ask for a new round, and the cursor kept in the store.
//!
//! No I/O and no clock (the cursor's age is computed from a `now` given by the caller).

use serde::Deserialize;
use serde_json::{Map, Value};

use presence_actors::directory::PhoneKind;

use crate::directory::Record;
use crate::common::json::{from_json_max, Capped, ParseError};

/// The user properties asked for (`$select`): only the ones the mapping uses.
pub const SELECT: &str = "id,displayName,givenName,surname,mail,userPrincipalName,businessPhones,mobilePhone,jobTitle,department,proxyAddresses,accountEnabled";
/// Most items accepted in one page (Graph sends at most 999 for `$top`, about 100-200 per
/// delta page).
pub const MAX_PAGE_ITEMS: usize = 5000;
/// Most values kept of a multi-valued property (`businessPhones`, `proxyAddresses`).
pub const MAX_VALUES: usize = 64;
/// Longest text kept of one property, in bytes (longer values are an error: Graph's own
/// limits are far below it).
pub const MAX_TEXT: usize = 1024;

/// Why Graph removed a user from the collection (`@removed.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// `changed`: deleted but restorable (soft delete), or otherwise out of the collection.
    Changed,
    /// `deleted`: deleted for good.
    Deleted,
}

/// One item of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A user created or changed, with the properties the page carries.
    Patch(Box<UserPatch>),
    /// A user gone (`@removed`).
    Removed {
        /// The object id.
        id: String,
        /// Why.
        reason: Removal,
    },
}

impl Item {
    /// The object id.
    pub fn id(&self) -> &str {
        match self {
            Item::Patch(p) => &p.id,
            Item::Removed { id, .. } => id,
        }
    }
}

/// One page of `/users/delta` or of a member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The users on the page.
    pub items: Vec<Item>,
    /// More pages of this round follow here.
    pub next_link: Option<String>,
    /// The round is complete; the next round starts here (delta only).
    pub delta_link: Option<String>,
}

/// A user's properties as one page carries them: `None` — not in this answer (unchanged, in an
/// incremental round); `Some(None)` — `null` (cleared); `Some(Some(v))` — the value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPatch {
    /// Object id (always present).
    pub id: String,
    /// `displayName`.
    pub display_name: Option<Option<String>>,
    /// `givenName`.
    pub given_name: Option<Option<String>>,
    /// `surname`.
    pub surname: Option<Option<String>>,
    /// `mail`.
    pub mail: Option<Option<String>>,
    /// `userPrincipalName`.
    pub upn: Option<Option<String>>,
    /// `businessPhones`.
    pub business_phones: Option<Option<Vec<String>>>,
    /// `mobilePhone`.
    pub mobile_phone: Option<Option<String>>,
    /// `jobTitle`.
    pub job_title: Option<Option<String>>,
    /// `department`.
    pub department: Option<Option<String>>,
    /// The SIP address from `proxyAddresses` (the entry with the `SIP:` prefix, any case):
    /// `Some(None)` when the list came without one.
    pub sip: Option<Option<String>>,
    /// `accountEnabled`.
    pub account_enabled: Option<Option<bool>>,
}

/// A user as the source knows them: every property last seen, partial updates applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// `displayName`.
    pub display_name: Option<String>,
    /// `givenName`.
    pub given_name: Option<String>,
    /// `surname`.
    pub surname: Option<String>,
    /// `mail`.
    pub mail: Option<String>,
    /// `userPrincipalName`.
    pub upn: Option<String>,
    /// `businessPhones`.
    pub business_phones: Vec<String>,
    /// `mobilePhone`.
    pub mobile_phone: Option<String>,
    /// `jobTitle`.
    pub job_title: Option<String>,
    /// `department`.
    pub department: Option<String>,
    /// SIP address from `proxyAddresses`, without the prefix.
    pub sip: Option<String>,
    /// `accountEnabled` (`None`: never sent).
    pub account_enabled: Option<bool>,
}

impl User {
    /// Applies what `p` carries; a property the patch leaves out keeps its value.
    pub fn apply(&mut self, p: &UserPatch) {
        fn set<T: Clone>(to: &mut Option<T>, from: &Option<Option<T>>) {
            if let Some(v) = from {
                *to = v.clone();
            }
        }
        set(&mut self.display_name, &p.display_name);
        set(&mut self.given_name, &p.given_name);
        set(&mut self.surname, &p.surname);
        set(&mut self.mail, &p.mail);
        set(&mut self.upn, &p.upn);
        if let Some(v) = &p.business_phones {
            self.business_phones = v.clone().unwrap_or_default();
        }
        set(&mut self.mobile_phone, &p.mobile_phone);
        set(&mut self.job_title, &p.job_title);
        set(&mut self.department, &p.department);
        set(&mut self.sip, &p.sip);
        set(&mut self.account_enabled, &p.account_enabled);
    }

    /// The record of the user with object id `id`. `Record::id` stays `None`: the hub derives
    /// the person's id from the e-mail (or the UPN) local part, as for any import; the object id
    /// is kept as `entra_id`.
    pub fn record(&self, id: &str) -> Record {
        let mut phones: Vec<(PhoneKind, String)> = Vec::new();
        if let Some(m) = &self.mobile_phone {
            phones.push((PhoneKind::Mobile, m.clone()));
        }
        phones.extend(self.business_phones.iter().map(|b| (PhoneKind::Work, b.clone())));
        Record {
            id: None,
            name: self.display_name.clone(),
            first_name: self.given_name.clone(),
            last_name: self.surname.clone(),
            title: self.job_title.clone(),
            department: self.department.clone(),
            email: self.mail.clone(),
            upn: self.upn.clone(),
            sip_uri: self.sip.as_ref().map(|s| format!("sip:{s}")),
            entra_id: Some(id.to_string()),
            phones,
            ..Record::default()
        }
    }
}

/// The SIP address in `proxyAddresses`: the first entry whose prefix is `SIP:` in any case
/// (`SIP:anna@example.com` → `anna@example.com`).
pub fn sip_address(proxy_addresses: &[String]) -> Option<String> {
    proxy_addresses.iter().find_map(|a| {
        let (prefix, rest) = a.split_at_checked(4)?;
        (prefix.eq_ignore_ascii_case("sip:") && !rest.trim().is_empty()).then(|| rest.trim().to_string())
    })
}

/// Parses one page (at most `max_bytes`).
pub fn page(body: &[u8], max_bytes: usize) -> Result<Page, ParseError> {
    #[derive(Deserialize)]
    struct Raw {
        value: Option<Capped<Value, MAX_PAGE_ITEMS>>,
        #[serde(rename = "@odata.nextLink")]
        next_link: Option<String>,
        #[serde(rename = "@odata.deltaLink")]
        delta_link: Option<String>,
    }
    let raw: Raw = from_json_max(body, max_bytes)?;
    let values = raw.value.ok_or(ParseError::Missing("value"))?.check("users on a page")?;
    if raw.next_link.is_some() && raw.delta_link.is_some() {
        return Err(ParseError::Invalid { field: "@odata.deltaLink", reason: "a page with both @odata.nextLink and @odata.deltaLink".into() });
    }
    let items = values.into_iter().map(item).collect::<Result<_, _>>()?;
    Ok(Page { items, next_link: raw.next_link, delta_link: raw.delta_link })
}

fn item(v: Value) -> Result<Item, ParseError> {
    let Value::Object(o) = v else { return Err(ParseError::Shape("a user is not an object".into())) };
    let id = match o.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 128 => s.trim().to_string(),
        Some(Value::String(_)) => return Err(ParseError::Invalid { field: "id", reason: "empty or longer than 128 bytes".into() }),
        _ => return Err(ParseError::Missing("id")),
    };
    if let Some(r) = o.get("@removed") {
        let reason = match r.get("reason").and_then(Value::as_str) {
            Some(x) if x.eq_ignore_ascii_case("deleted") => Removal::Deleted,
            _ => Removal::Changed,
        };
        return Ok(Item::Removed { id, reason });
    }
    let proxy = list(&o, "proxyAddresses")?;
    Ok(Item::Patch(Box::new(UserPatch {
        display_name: text(&o, "displayName")?,
        given_name: text(&o, "givenName")?,
        surname: text(&o, "surname")?,
        mail: text(&o, "mail")?,
        upn: text(&o, "userPrincipalName")?,
        business_phones: list(&o, "businessPhones")?,
        mobile_phone: text(&o, "mobilePhone")?,
        job_title: text(&o, "jobTitle")?,
        department: text(&o, "department")?,
        sip: proxy.map(|p| p.and_then(|p| sip_address(&p))),
        account_enabled: match o.get("accountEnabled") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::Bool(b)) => Some(Some(*b)),
            Some(_) => return Err(ParseError::Invalid { field: "accountEnabled", reason: "not a boolean".into() }),
        },
        id,
    })))
}

/// A text property: absent, `null` (or blank) or its trimmed value.
fn text(o: &Map<String, Value>, field: &'static str) -> Result<Option<Option<String>>, ParseError> {
    match o.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if s.len() > MAX_TEXT => Err(ParseError::Invalid { field, reason: format!("longer than {MAX_TEXT} bytes") }),
        Some(Value::String(s)) => Ok(Some(Some(s.trim().to_string()).filter(|s| !s.is_empty()))),
        Some(_) => Err(ParseError::Invalid { field, reason: "not a string".into() }),
    }
}

/// A list of strings: absent, `null` or its non-blank values (at most [`MAX_VALUES`]).
fn list(o: &Map<String, Value>, field: &'static str) -> Result<Option<Option<Vec<String>>>, ParseError> {
    match o.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Array(a)) if a.len() > MAX_VALUES => Err(ParseError::TooMany { what: field, n: a.len(), max: MAX_VALUES }),
        Some(Value::Array(a)) => {
            let mut out = Vec::with_capacity(a.len());
            for v in a {
                match v {
                    Value::String(s) if s.len() > MAX_TEXT => return Err(ParseError::Invalid { field, reason: format!("a value longer than {MAX_TEXT} bytes") }),
                    Value::String(s) if !s.trim().is_empty() => out.push(s.trim().to_string()),
                    Value::String(_) => {}
                    _ => return Err(ParseError::Invalid { field, reason: "not a list of strings".into() }),
                }
            }
            Ok(Some(Some(out)))
        }
        Some(_) => Err(ParseError::Invalid { field, reason: "not a list".into() }),
    }
}

/// Whether a Graph error answer asks for a new round from scratch: `410 Gone` (any body), or
/// an error code `syncStateNotFound` (an expired delta token; Graph answers it with `400`),
/// `resyncRequired` or `syncStateInvalid`.
pub fn asks_for_resync(status: u16, body: &[u8]) -> bool {
    if status == 410 {
        return true;
    }
    if !(400..500).contains(&status) {
        return false;
    }
    let code = serde_json::from_slice::<Value>(&body[..body.len().min(64 * 1024)]).ok().and_then(|v| v.pointer("/error/code").and_then(Value::as_str).map(str::to_owned));
    code.is_some_and(|c| ["syncStateNotFound", "resyncRequired", "syncStateInvalid"].iter().any(|k| c.eq_ignore_ascii_case(k)))
}

/// How long a delta link is good for: Microsoft documents seven days for directory resources
/// (users, groups); older links are not tried.
pub const DELTA_LINK_LIFETIME_MS: i64 = 7 * 24 * 3_600_000;

/// What the source keeps in the store between passes: the delta link of the last complete
/// round and when it was issued.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Cursor {
    /// The `@odata.deltaLink`.
    pub delta_link: String,
    /// When it was issued (ms since the epoch).
    pub issued_at: i64,
}

impl Cursor {
    /// The cursor as stored (JSON).
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A stored cursor; `None` when it is not one (an older format, garbage).
    pub fn parse(text: &str) -> Option<Cursor> {
        let c: Cursor = from_json_max(text.as_bytes(), 64 * 1024).ok()?;
        (!c.delta_link.is_empty()).then_some(c)
    }

    /// Whether the link is still within [`DELTA_LINK_LIFETIME_MS`] at `now` (and not from the
    /// future: a clock that went back is not trusted either).
    pub fn fresh(&self, now: i64) -> bool {
        let age = now - self.issued_at;
        (0..DELTA_LINK_LIFETIME_MS).contains(&age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024 * 1024;

    #[test]
    fn a_page_with_a_next_link_and_full_users() {
        let body = br#"{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users","@odata.nextLink":"https://graph.microsoft.com/v1.0/users/delta?$skiptoken=abc",
            "value":[{"id":"11111111-aaaa","displayName":"Anna Andersson","givenName":"Anna","surname":"Andersson","mail":"anna@example.com",
              "userPrincipalName":"anna@example.onmicrosoft.com","businessPhones":["+46 8 123 456"],"mobilePhone":"+46 70 111 22 33","jobTitle":"CFO",
              "department":"Finance","proxyAddresses":["SMTP:anna@example.com","sip:Anna@example.com","SIP:second@example.com"],"accountEnabled":true}]}"#;
        let p = page(body, MAX).unwrap();
        assert_eq!(p.next_link.as_deref(), Some("https://graph.microsoft.com/v1.0/users/delta?$skiptoken=abc"));
        assert_eq!(p.delta_link, None);
        let Item::Patch(u) = &p.items[0] else { panic!("a user") };
        let mut known = User::default();
        known.apply(u);
        let r = known.record(&u.id);
        assert_eq!(r.id, None, "the hub derives the id");
        assert_eq!((r.entra_id.as_deref(), r.name.as_deref(), r.email.as_deref()), (Some("11111111-aaaa"), Some("Anna Andersson"), Some("anna@example.com")));
        assert_eq!((r.upn.as_deref(), r.title.as_deref(), r.department.as_deref()), (Some("anna@example.onmicrosoft.com"), Some("CFO"), Some("Finance")));
        assert_eq!(r.sip_uri.as_deref(), Some("sip:Anna@example.com"), "the first SIP: entry, any case");
        assert_eq!(r.phones, vec![(PhoneKind::Mobile, "+46 70 111 22 33".to_string()), (PhoneKind::Work, "+46 8 123 456".to_string())]);
        assert_eq!(known.account_enabled, Some(true));
    }

    #[test]
    fn a_last_page_with_a_delta_link_and_removals() {
        let body = br#"{"@odata.deltaLink":"https://graph.microsoft.com/v1.0/users/delta?$deltatoken=xyz","value":[
            {"id":"a","@removed":{"reason":"changed"}},{"id":"b","@removed":{"reason":"deleted"}},{"id":"c","@removed":{}}]}"#;
        let p = page(body, MAX).unwrap();
        assert_eq!((p.next_link, p.delta_link.as_deref()), (None, Some("https://graph.microsoft.com/v1.0/users/delta?$deltatoken=xyz")));
        assert_eq!(
            p.items,
            vec![
                Item::Removed { id: "a".into(), reason: Removal::Changed },
                Item::Removed { id: "b".into(), reason: Removal::Deleted },
                Item::Removed { id: "c".into(), reason: Removal::Changed },
            ]
        );
    }

    #[test]
    fn partial_properties_change_only_what_they_carry() {
        let full = br#"{"value":[{"id":"u1","displayName":"Bo B","mail":"bo@example.com","jobTitle":"Clerk","department":"Sales","mobilePhone":"+4670","businessPhones":["+468"],"proxyAddresses":["SIP:bo@example.com"],"accountEnabled":true}]}"#;
        let Item::Patch(first) = page(full, MAX).unwrap().items.remove(0) else { panic!() };
        let mut u = User::default();
        u.apply(&first);
        let partial = br#"{"value":[{"id":"u1","jobTitle":"Manager","mobilePhone":null}]}"#;
        let Item::Patch(change) = page(partial, MAX).unwrap().items.remove(0) else { panic!() };
        assert_eq!((change.job_title.clone(), change.mobile_phone.clone(), change.mail.clone()), (Some(Some("Manager".into())), Some(None), None));
        u.apply(&change);
        let r = u.record("u1");
        assert_eq!((r.title.as_deref(), r.email.as_deref(), r.department.as_deref(), r.name.as_deref()), (Some("Manager"), Some("bo@example.com"), Some("Sales"), Some("Bo B")));
        assert_eq!(r.phones, vec![(PhoneKind::Work, "+468".to_string())], "the mobile was cleared, the work phone kept");
        assert_eq!(r.sip_uri.as_deref(), Some("sip:bo@example.com"));
        let no_sip = br#"{"value":[{"id":"u1","proxyAddresses":["smtp:bo@example.com"]}]}"#;
        let Item::Patch(change) = page(no_sip, MAX).unwrap().items.remove(0) else { panic!() };
        u.apply(&change);
        assert_eq!(u.sip, None, "a new proxyAddresses list without SIP: clears it");
    }

    #[test]
    fn sip_addresses_come_from_the_sip_prefix_in_any_case() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(sip_address(&v(&["SMTP:a@x", "Sip:b@x"])), Some("b@x".into()));
        assert_eq!(sip_address(&v(&["smtp:a@x", "x500:/o=x", "SIP:"])), None);
        assert_eq!(sip_address(&v(&["é", "si"])), None, "short or multi-byte entries do not panic");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"value\":5}",
            b"{}",
            b"{\"value\":[42]}",
            b"{\"value\":[{\"displayName\":\"no id\"}]}",
            b"{\"value\":[{\"id\":\"a\",\"displayName\":7}]}",
            b"{\"value\":[{\"id\":\"a\",\"accountEnabled\":\"yes\"}]}",
            b"{\"value\":[{\"id\":\"a\",\"businessPhones\":[1]}]}",
            b"{\"value\":[],\"@odata.nextLink\":\"n\",\"@odata.deltaLink\":\"d\"}",
            b"{\"value\":[{\"id\":\"a\"",
            b"\xff\xfe",
        ] {
            assert!(page(bad, MAX).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(matches!(page(&[b' '; 100], 10), Err(ParseError::TooLarge { .. })));
        let many = format!("{{\"value\":[{}]}}", vec!["{\"id\":\"x\"}"; MAX_PAGE_ITEMS + 1].join(","));
        assert!(matches!(page(many.as_bytes(), 10 * MAX), Err(ParseError::TooMany { .. })));
    }

    #[test]
    fn resync_answers_and_cursors() {
        assert!(asks_for_resync(410, b""));
        assert!(asks_for_resync(400, br#"{"error":{"code":"syncStateNotFound","message":"The sync state generation is not found."}}"#));
        assert!(asks_for_resync(400, br#"{"error":{"code":"resyncRequired","message":"x"}}"#));
        assert!(!asks_for_resync(400, br#"{"error":{"code":"Request_UnsupportedQuery","message":"x"}}"#));
        assert!(!asks_for_resync(500, br#"{"error":{"code":"resyncRequired"}}"#));
        let c = Cursor { delta_link: "https://g/v1.0/users/delta?$deltatoken=1".into(), issued_at: 1_000 };
        assert_eq!(Cursor::parse(&c.to_text()), Some(c.clone()));
        assert_eq!(Cursor::parse("not json"), None);
        assert_eq!(Cursor::parse(r#"{"delta_link":"","issued_at":1}"#), None);
        assert!(c.fresh(1_000 + DELTA_LINK_LIFETIME_MS - 1));
        assert!(!c.fresh(1_000 + DELTA_LINK_LIFETIME_MS));
        assert!(!c.fresh(999), "issued in the future");
    }
}
