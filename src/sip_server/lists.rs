//! Resource lists (RFC 4662) of the hub's SIP server: which list URIs exist and who is on
//! them, and the RLMI `multipart/related` NOTIFY bodies. Pure but for the directory it reads.
//!
//! A list URI is matched by its user part (the host is not checked, as for people):
//!
//! - `group-<slug>`: a `[[web.groups]]` entry, its `name` slugged;
//! - `dept-<slug>`: a department of the directory, its name slugged;
//! - the user part of a `[[sip.lists]] uri`: that list (checked first).
//!
//! A slug ([`slug`]) is the name in lower case with diacritics folded, every other run of
//! characters outside `[a-z0-9]` one `-`, and no `-` at either end: "Växel" → `vaxel`,
//! "Kundtjänst & Support" → `kundtjanst-support`.
//!
//! Members are resolved against the directory when a subscription starts (a new SUBSCRIBE
//! sees later changes of a group or department; a member who leaves the directory meanwhile
//! gets `state="terminated" reason="noresource"`); a member the directory does not know is
//! left out. The same person named twice is one resource.

use std::collections::HashSet;

use presence_actors::directory::{fold::fold, Directory, UserIdx};
use presence_sip::body::multipart::MultipartError;
use presence_sip::body::rlmi::{build_rlmi_notify, Instance, InstanceState, ResourcePart, Rlmi, RlmiError, RlmiNotify};
use serde::Deserialize;

/// `[[sip.lists]]`: a resource list of the SIP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipList {
    /// The list's URI (`sip:reception-keys@hub.example.com`); matched by its user part.
    pub uri: String,
    /// A display name for the RLMI `<name>` (default: the URI's user part).
    #[serde(default)]
    pub name: Option<String>,
    /// The people: user ids or SIP URIs (any identity the directory resolves), checked when
    /// the server starts.
    pub members: Vec<String>,
}

/// Most `[[sip.lists]]`.
pub const MAX_LISTS: usize = 1000;

/// The slug of a group or department name (see the module docs).
pub fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut dash = false;
    for c in fold(name).chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c);
        } else {
            dash = true;
        }
    }
    out
}

/// The user part of a `sip:`/`sips:` URI (lower case), or `None`.
pub fn uri_user(uri: &str) -> Option<String> {
    presence_sip::message::uri_user(uri).filter(|u| !u.is_empty()).map(str::to_ascii_lowercase)
}

/// Where a list comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `[[sip.lists]]`.
    Configured,
    /// `[[web.groups]]`.
    Group,
    /// A department of the directory.
    Department,
}

/// A list resolved against the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// What it is.
    pub kind: ListKind,
    /// Display name.
    pub name: String,
    /// The people, in list order, each once.
    pub members: Vec<UserIdx>,
    /// Names of members the directory does not know (left out).
    pub unknown: Vec<String>,
}

/// The lists the server offers (configured ones and web groups; departments come from the
/// directory at each lookup).
#[derive(Debug, Clone, Default)]
pub struct Lists {
    /// `[[sip.lists]]`: (user part, name, members).
    configured: Vec<(String, String, Vec<String>)>,
    /// `[[web.groups]]`: (slug, name, members).
    groups: Vec<(String, String, Vec<String>)>,
}

/// Why `[[sip.lists]]` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// A list's URI is not a SIP URI with a user part.
    #[error("sip.lists: uri {0:?} is not a sip: or sips: URI with a user part")]
    BadUri(String),
    /// Two lists with one user part, or one that looks like a group or department list.
    #[error("sip.lists: {0}")]
    Clash(String),
    /// Too many members.
    #[error("sip.lists {uri:?}: {count} members; at most max_list_members = {max}")]
    TooLarge {
        /// The list.
        uri: String,
        /// Its members.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A member the directory does not know.
    #[error("sip.lists {uri:?}: member {member:?} is nobody the directory knows (give a user id or a SIP URI of a person)")]
    UnknownMember {
        /// The list.
        uri: String,
        /// The member as configured.
        member: String,
    },
}

impl Lists {
    /// The lists of the configuration; `max_members` is checked here, members against the
    /// directory with [`Lists::check_members`].
    pub fn new(configured: &[SipList], groups: &[crate::config::WebGroup], max_members: usize) -> Result<Lists, ListError> {
        if configured.len() > MAX_LISTS {
            return Err(ListError::Clash(format!("{} lists; at most {MAX_LISTS}", configured.len())));
        }
        let mut seen = HashSet::new();
        let mut out = Lists::default();
        for l in configured {
            let user = uri_user(&l.uri).ok_or_else(|| ListError::BadUri(l.uri.clone()))?;
            if !seen.insert(user.clone()) {
                return Err(ListError::Clash(format!("two lists have the user part {user:?}")));
            }
            if l.members.len() > max_members {
                return Err(ListError::TooLarge { uri: l.uri.clone(), count: l.members.len(), max: max_members });
            }
            let name = l.name.clone().unwrap_or_else(|| user.clone());
            out.configured.push((user, name, l.members.clone()));
        }
        out.groups = groups.iter().map(|g| (slug(&g.name), g.name.clone(), g.members.clone())).collect();
        Ok(out)
    }

    /// Every configured member must be someone the directory knows (checked at start).
    pub fn check_members(&self, configured: &[SipList], dir: &Directory) -> Result<(), ListError> {
        for l in configured {
            for m in &l.members {
                if resolve_member(dir, m).is_none() {
                    return Err(ListError::UnknownMember { uri: l.uri.clone(), member: m.clone() });
                }
            }
        }
        Ok(())
    }

    /// The list a Request-URI names, resolved, or `None` when it names no list.
    pub fn resolve(&self, uri: &str, dir: &Directory) -> Option<Resolved> {
        let user = uri_user(uri)?;
        if let Some((_, name, members)) = self.configured.iter().find(|(u, _, _)| *u == user) {
            return Some(resolve_names(ListKind::Configured, name, members, dir));
        }
        if let Some(s) = user.strip_prefix("group-") {
            let (_, name, members) = self.groups.iter().find(|(g, _, _)| g == s)?;
            return Some(resolve_names(ListKind::Group, name, members, dir));
        }
        if let Some(s) = user.strip_prefix("dept-") {
            let (name, _) = dir.departments().into_iter().find(|(n, _)| slug(n) == s)?;
            let d = dir.department_idx(name)?;
            let members = dir.people().filter(|(i, _)| dir.department_of(*i) == Some(d)).map(|(i, _)| i).collect();
            return Some(Resolved { kind: ListKind::Department, name: name.to_string(), members, unknown: Vec::new() });
        }
        None
    }
}

fn resolve_member(dir: &Directory, m: &str) -> Option<UserIdx> {
    dir.by_id(m).or_else(|| dir.resolve(m))
}

fn resolve_names(kind: ListKind, name: &str, names: &[String], dir: &Directory) -> Resolved {
    let mut seen = HashSet::new();
    let mut members = Vec::with_capacity(names.len());
    let mut unknown = Vec::new();
    for m in names {
        match resolve_member(dir, m) {
            Some(i) => {
                if seen.insert(i) {
                    members.push(i);
                }
            }
            None => unknown.push(m.clone()),
        }
    }
    Resolved { kind, name: name.to_string(), members, unknown }
}

/// One resource of a list NOTIFY.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// The resource's URI.
    pub uri: &'a str,
    /// Its display name.
    pub name: &'a str,
    /// The instance id (stable for the subscription).
    pub instance: String,
    /// The part: content type and body (`None`: the resource is gone, instance terminated).
    pub part: Option<(&'static str, Vec<u8>)>,
}

/// Builds a list NOTIFY body: RLMI root plus one part per entry with one. Returns the
/// `Content-Type` value and the body.
pub fn notify_body(list_uri: &str, name: &str, version: u64, full_state: bool, entries: &[Entry<'_>], boundary: &str) -> Result<(String, Vec<u8>), RlmiError> {
    let mut n = RlmiNotify {
        list: Rlmi { uri: list_uri.to_string(), version, full_state, cid: None, name: Some(name.to_string()), resources: Vec::with_capacity(entries.len()) },
        resources: Vec::with_capacity(entries.len()),
    };
    for (k, e) in entries.iter().enumerate() {
        let cid = e.part.as_ref().map(|_| format!("r{k}.v{version}.{boundary}@presence-hub"));
        let instance = Instance {
            id: e.instance.clone(),
            state: if e.part.is_some() { InstanceState::Active } else { InstanceState::Terminated },
            reason: e.part.is_none().then(|| "noresource".to_string()),
            cid,
            pool_fqdn: None,
        };
        n.list.resources.push(presence_sip::body::rlmi::Resource { uri: e.uri.to_string(), name: Some(e.name.to_string()), instances: vec![instance.clone()] });
        n.resources.push(ResourcePart {
            uri: e.uri.to_string(),
            instance,
            content_type: e.part.as_ref().map(|(ct, _)| format!("{ct};charset=\"UTF-8\"")),
            body: e.part.as_ref().map(|(_, b)| b.clone()),
        });
    }
    if n.resources.len() >= presence_sip::body::multipart::MAX_PARTS {
        return Err(MultipartError::TooMany { what: "parts", max: presence_sip::body::multipart::MAX_PARTS }.into());
    }
    build_rlmi_notify(&n, boundary)
}

/// What a resource costs in a NOTIFY beyond its body: its RLMI entry and part headers.
pub fn entry_overhead(uri: &str, name: &str, boundary: &str) -> usize {
    // <resource uri=".."><name>..</name><instance id=".." state="active" cid=".."/></resource>
    // and "--boundary", Content-Transfer-Encoding, Content-ID, Content-Type lines.
    2 * uri.len() + name.len() + 3 * boundary.len() + 260
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_sip::body::rlmi::parse_rlmi_notify;

    #[test]
    fn slugs() {
        assert_eq!(slug("Växel"), "vaxel");
        assert_eq!(slug("Kundtjänst & Support"), "kundtjanst-support");
        assert_eq!(slug("  Forskning och utveckling "), "forskning-och-utveckling");
        assert_eq!(slug("Salg Norge (Øst)"), "salg-norge-ost");
        assert_eq!(slug("IT"), "it");
        assert_eq!(slug("--"), "");
        assert_eq!(uri_user("<sip:Dept-Vaxel@hub.example.com;transport=tcp>").as_deref(), Some("dept-vaxel"));
        assert_eq!(uri_user("tel:+4681234"), None);
    }

    fn directory() -> Directory {
        use presence_actors::directory::{NumberPlan, Person};
        let people = [("asa", "Växel", Some("sip:asa@x")), ("bo", "Växel", None), ("cia", "Kundtjänst & Support", None), ("dan", "IT", None)]
            .iter()
            .map(|(id, dept, sip)| {
                let mut p = Person::new(id, &id.to_uppercase());
                p.department = Some((*dept).into());
                p.sip_uri = sip.map(Into::into);
                p
            })
            .collect();
        Directory::build(people, &NumberPlan::sweden()).unwrap()
    }

    #[test]
    fn list_uris_resolve_to_configured_lists_groups_and_departments() {
        let dir = directory();
        let configured = vec![SipList { uri: "sip:Keys@hub.example.com".into(), name: None, members: vec!["asa".into(), "sip:asa@x".into(), "dan".into()] }];
        let groups = vec![crate::config::WebGroup { name: "Reception Desk".into(), members: vec!["bo".into(), "nobody".into()] }];
        let lists = Lists::new(&configured, &groups, 10).unwrap();
        lists.check_members(&configured, &dir).unwrap();
        let keys = lists.resolve("sip:keys@127.0.0.1:5060;transport=tcp", &dir).unwrap();
        assert_eq!((keys.kind, keys.name.as_str(), keys.members.len()), (ListKind::Configured, "keys", 2), "asa named twice is one resource");
        let g = lists.resolve("sip:group-reception-desk@hub", &dir).unwrap();
        assert_eq!((g.kind, g.members.len(), g.unknown.clone()), (ListKind::Group, 1, vec!["nobody".to_string()]));
        let d = lists.resolve("sip:dept-vaxel@hub", &dir).unwrap();
        assert_eq!((d.kind, d.name.as_str(), d.members.len()), (ListKind::Department, "Växel", 2));
        assert_eq!(lists.resolve("sip:dept-kundtjanst-support@hub", &dir).unwrap().members.len(), 1);
        for none in ["sip:dept-nope@hub", "sip:group-nope@hub", "sip:asa@x", "tel:123"] {
            assert!(lists.resolve(none, &dir).is_none(), "{none}");
        }
    }

    #[test]
    fn bad_lists_are_refused_with_the_reason() {
        let dir = directory();
        let l = |uri: &str, members: &[&str]| SipList { uri: uri.into(), name: None, members: members.iter().map(|m| m.to_string()).collect() };
        let e = Lists::new(&[l("keys@hub", &[])], &[], 10).unwrap_err().to_string();
        assert!(e.contains("not a sip: or sips: URI"), "{e}");
        let e = Lists::new(&[l("sip:a@hub", &[]), l("sip:A@other", &[])], &[], 10).unwrap_err().to_string();
        assert!(e.contains("two lists"), "{e}");
        let e = Lists::new(&[l("sip:a@hub", &["asa", "bo", "cia"])], &[], 2).unwrap_err().to_string();
        assert!(e.contains("3 members; at most max_list_members = 2"), "{e}");
        let ok = [l("sip:a@hub", &["asa", "ghost"])];
        let e = Lists::new(&ok, &[], 10).unwrap().check_members(&ok, &dir).unwrap_err().to_string();
        assert!(e.contains("member \"ghost\" is nobody the directory knows"), "{e}");
    }

    #[test]
    fn a_list_notify_round_trips_through_the_parser() {
        let entries = vec![
            Entry { uri: "sip:a@x", name: "Å <a>", instance: "i1".into(), part: Some(("application/pidf+xml", b"<presence/>".to_vec())) },
            Entry { uri: "sip:b@x", name: "B", instance: "i2".into(), part: None },
        ];
        let (ct, body) = notify_body("sip:group-x@hub", "X", 3, true, &entries, "b0undary").unwrap();
        assert!(ct.starts_with("multipart/related;type=\"application/rlmi+xml\";start=\"<"), "{ct}");
        let n = parse_rlmi_notify(&ct, &body).unwrap();
        assert_eq!(n.list.version, 3);
        assert!(n.list.full_state);
        assert_eq!(n.resources.len(), 2);
        assert_eq!(n.resources[0].body.as_deref(), Some(&b"<presence/>"[..]));
        assert_eq!(n.resources[1].instance.state, InstanceState::Terminated);
        let overhead: usize = entries.iter().map(|e| entry_overhead(e.uri, e.name, "b0undary")).sum();
        assert!(body.len() < overhead + 11 + 600, "{} vs {overhead}", body.len());
    }
}
