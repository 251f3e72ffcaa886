//! `application/rlmi+xml` (RFC 4662 resource lists) and the
//! `multipart/related` NOTIFY bodies it travels in, including Skype for Business batched
//! notifications (BENOTIFY) with `state="resubscribe"` + `poolFqdn` ([MS-PRES] §3.4.5.1.3,
//! [MS-SIP] §3.3.5.1).
//!
//! * [`parse_rlmi`] / [`build_rlmi`]: the `<list uri version fullState [cid]>` document with its
//!   `<resource uri>` and `<instance id state [reason] [cid] [poolFqdn]>` elements (the first
//!   `name` of the list and of each resource is kept).
//! * [`parse_rlmi_notify`]: given the NOTIFY's `Content-Type` value and body, finds the RLMI
//!   root part (the `start` part, else the first `application/rlmi+xml` part, else the first
//!   part), parses it, and resolves each instance's `cid` to its part. A nested list (a
//!   resource that is itself a list) comes back as its `multipart/related` part, to be given
//!   to [`parse_rlmi_notify`] again by the caller. A `cid` without a part (or an instance
//!   without `cid`, e.g. `pending`) leaves the body empty.
//! * [`build_rlmi_notify`]: the inverse, for the hub's presence server and the simulators.
//!
//! Leniency: names matched by local name; `fullState` accepts `true`/`false`/`1`/`0` and
//! reads as `false` when absent (a delta never wipes state by accident); an unknown instance
//! state is kept as [`InstanceState::Other`]. `version` is required.
//!
//! Limits: [`MAX_RESOURCES`] resources per list and [`MAX_INSTANCES`] instances per resource
//! (more is an error); the multipart limits of [`super::multipart`]; the XML limits of
//! [`crate::body`].

use std::fmt::Write as _;

use super::multipart::{self, build_multipart, parse_multipart, ContentType, Multipart, MultipartError, Part};
use super::text::{escape, id, opt_id, parse_bool, truncate};
use super::xml::{self, Element, XmlError};

/// RLMI namespace.
pub const NS_RLMI: &str = "urn:ietf:params:xml:ns:rlmi";
/// MIME type of an RLMI document.
pub const CONTENT_TYPE: &str = "application/rlmi+xml";
/// Most resources in one list.
pub const MAX_RESOURCES: usize = 1000;
/// Most instances per resource.
pub const MAX_INSTANCES: usize = 16;

/// Why an RLMI document or notification body was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RlmiError {
    /// Not a readable XML document with a `list` root.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The multipart body is unreadable.
    #[error(transparent)]
    Multipart(#[from] MultipartError),
    /// `version` is absent or not a non-negative integer.
    #[error("RLMI version is missing or invalid: {0:?}")]
    BadVersion(String),
    /// More resources or instances than the limits allow.
    #[error("more than {max} {what} in one RLMI list")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The limit.
        max: usize,
    },
}

/// An RLMI `list` document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rlmi {
    /// `uri`: the list (or, for SfB, the subscriber).
    pub uri: String,
    /// `version`: increases per notification of the subscription.
    pub version: u64,
    /// `fullState`: `false` means only changed resources are listed.
    pub full_state: bool,
    /// `cid`: set when this list is nested in a parent notification.
    pub cid: Option<String>,
    /// The list's first `name`.
    pub name: Option<String>,
    /// The resources, in document order.
    pub resources: Vec<Resource>,
}

/// One `resource` of a list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resource {
    /// `uri`: the presentity.
    pub uri: String,
    /// Its first `name`.
    pub name: Option<String>,
    /// Its subscription instances (none: no subscription yet).
    pub instances: Vec<Instance>,
}

/// One `instance`: the back-end subscription to a resource.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Instance {
    /// `id`.
    pub id: String,
    /// `state`.
    pub state: InstanceState,
    /// `reason` (with `terminated`: `rejected`, `noresource`, `deactivated`, …).
    pub reason: Option<String>,
    /// `cid`: the Content-ID of the part carrying this resource's state.
    pub cid: Option<String>,
    /// `poolFqdn` (SfB, with `resubscribe`): the pool to subscribe to instead.
    pub pool_fqdn: Option<String>,
}

/// The `state` of an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum InstanceState {
    /// `active`.
    #[default]
    Active,
    /// `pending`: waiting for authorisation.
    Pending,
    /// `terminated`.
    Terminated,
    /// `resubscribe` (SfB): the resource is homed elsewhere; subscribe to it there.
    Resubscribe,
    /// Anything else (kept as sent, cut).
    Other(String),
}

impl InstanceState {
    /// The attribute value.
    pub fn as_str(&self) -> &str {
        match self {
            InstanceState::Active => "active",
            InstanceState::Pending => "pending",
            InstanceState::Terminated => "terminated",
            InstanceState::Resubscribe => "resubscribe",
            InstanceState::Other(s) => s,
        }
    }

    fn parse(s: &str) -> InstanceState {
        let s = s.trim();
        [InstanceState::Active, InstanceState::Pending, InstanceState::Terminated, InstanceState::Resubscribe]
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .unwrap_or_else(|| InstanceState::Other(truncate(s, 64).to_string()))
    }
}

/// Parses an RLMI document (see the module docs).
pub fn parse_rlmi(body: &[u8]) -> Result<Rlmi, RlmiError> {
    let root = xml::parse(body, Some("list"))?;
    let v = root.attr("version").unwrap_or("").trim();
    let version = v.parse::<u64>().map_err(|_| RlmiError::BadVersion(truncate(v, 32).to_string()))?;
    let mut resources = Vec::new();
    for r in root.children_named("resource") {
        if resources.len() >= MAX_RESOURCES {
            return Err(RlmiError::TooMany { what: "resources", max: MAX_RESOURCES });
        }
        resources.push(resource(r)?);
    }
    Ok(Rlmi {
        uri: id(root.attr("uri").unwrap_or("")),
        version,
        full_state: root.attr("fullState").and_then(parse_bool).unwrap_or(false),
        cid: opt_id(root.attr("cid")),
        name: opt_id(root.child_text("name")),
        resources,
    })
}

fn resource(el: &Element) -> Result<Resource, RlmiError> {
    let mut instances = Vec::new();
    for i in el.children_named("instance") {
        if instances.len() >= MAX_INSTANCES {
            return Err(RlmiError::TooMany { what: "instances of one resource", max: MAX_INSTANCES });
        }
        instances.push(Instance {
            id: id(i.attr("id").unwrap_or("")),
            state: InstanceState::parse(i.attr("state").unwrap_or("")),
            reason: opt_id(i.attr("reason")),
            cid: opt_id(i.attr("cid")).map(|c| multipart::strip_cid(&c).to_string()),
            pool_fqdn: opt_id(i.attr("poolFqdn")),
        });
    }
    Ok(Resource { uri: id(el.attr("uri").unwrap_or("")), name: opt_id(el.child_text("name")), instances })
}

/// Builds an RLMI document (UTF-8, with declaration). Everything [`parse_rlmi`] reads is
/// written, so build → parse gives the same value back.
pub fn build_rlmi(list: &Rlmi) -> String {
    let mut x = String::with_capacity(256 + list.resources.len() * 160);
    let _ = write!(
        x,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<list xmlns="{NS_RLMI}" uri="{}" version="{}" fullState="{}""#,
        escape(&list.uri),
        list.version,
        list.full_state
    );
    if let Some(c) = &list.cid {
        let _ = write!(x, r#" cid="{}""#, escape(c));
    }
    x.push('>');
    if let Some(n) = &list.name {
        let _ = write!(x, "<name>{}</name>", escape(n));
    }
    for r in &list.resources {
        let _ = write!(x, r#"<resource uri="{}">"#, escape(&r.uri));
        if let Some(n) = &r.name {
            let _ = write!(x, "<name>{}</name>", escape(n));
        }
        for i in &r.instances {
            let _ = write!(x, r#"<instance id="{}" state="{}""#, escape(&i.id), escape(i.state.as_str()));
            for (attr, v) in [("reason", &i.reason), ("cid", &i.cid), ("poolFqdn", &i.pool_fqdn)] {
                if let Some(v) = v {
                    let _ = write!(x, r#" {attr}="{}""#, escape(v));
                }
            }
            x.push_str("/>");
        }
        x.push_str("</resource>");
    }
    x.push_str("</list>");
    x
}

/// A resource-list notification: the RLMI document and each instance's part.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RlmiNotify {
    /// The RLMI document of the root part.
    pub list: Rlmi,
    /// One entry per (resource, instance) of the list, in list order.
    pub resources: Vec<ResourcePart>,
}

/// One resource instance and, when its `cid` resolved, its part.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourcePart {
    /// The resource's `uri`.
    pub uri: String,
    /// The instance.
    pub instance: Instance,
    /// The part's `Content-Type` value as sent (e.g. `application/pidf+xml;charset="UTF-8"`).
    pub content_type: Option<String>,
    /// The part's body.
    pub body: Option<Vec<u8>>,
}

/// Parses a resource-list NOTIFY body given its `Content-Type` header value (see the module
/// docs). A body that is a bare `application/rlmi+xml` document (no multipart) is accepted
/// too: its resources then have no parts.
pub fn parse_rlmi_notify(content_type: &str, body: &[u8]) -> Result<RlmiNotify, RlmiError> {
    let ct = ContentType::parse(content_type)?;
    if ct.mime == CONTENT_TYPE {
        let list = parse_rlmi(body)?;
        let resources = pair_up(&list, |_| None);
        return Ok(RlmiNotify { list, resources });
    }
    let m = parse_multipart(content_type, body)?;
    let root = m.root().ok_or(MultipartError::NoParts)?;
    let list = parse_rlmi(&root.body)?;
    let resources = pair_up(&list, |cid| m.part_by_cid(cid));
    Ok(RlmiNotify { list, resources })
}

fn pair_up<'a>(list: &Rlmi, find: impl Fn(&str) -> Option<&'a Part>) -> Vec<ResourcePart> {
    let mut out = Vec::new();
    for r in &list.resources {
        for i in &r.instances {
            let part = i.cid.as_deref().and_then(&find);
            out.push(ResourcePart {
                uri: r.uri.clone(),
                instance: i.clone(),
                content_type: part.and_then(|p| p.content_type()).map(str::to_string),
                body: part.map(|p| p.body.clone()),
            });
        }
    }
    out
}

/// Builds a resource-list NOTIFY body: the RLMI document of `n.list` as the root part
/// (Content-ID `<rlmi.{boundary}@presence-hub>`, referenced by `start`), then one part per
/// entry of `n.resources` that has a body and a `cid` (Content-ID `<cid>`, its
/// `Content-Type`, `application/octet-stream` when `None`). Returns the `Content-Type`
/// header value (`multipart/related;type="application/rlmi+xml";start=…;boundary=…`) and
/// the body. `n.list` is the source of truth for the RLMI document; for build → parse to
/// give `n` back, `n.resources` must pair up with it as [`parse_rlmi_notify`] does.
pub fn build_rlmi_notify(n: &RlmiNotify, boundary: &str) -> Result<(String, Vec<u8>), RlmiError> {
    let root_cid = format!("rlmi.{boundary}@presence-hub");
    let mut parts = vec![Part {
        headers: vec![
            ("Content-Transfer-Encoding".into(), "binary".into()),
            ("Content-ID".into(), format!("<{root_cid}>")),
            ("Content-Type".into(), "application/rlmi+xml;charset=\"UTF-8\"".into()),
        ],
        body: build_rlmi(&n.list).into_bytes(),
    }];
    for r in &n.resources {
        let (Some(cid), Some(body)) = (r.instance.cid.as_deref(), r.body.as_ref()) else { continue };
        if parts.len() > multipart::MAX_PARTS {
            return Err(MultipartError::TooMany { what: "parts", max: multipart::MAX_PARTS }.into());
        }
        parts.push(Part {
            headers: vec![
                ("Content-Transfer-Encoding".into(), "binary".into()),
                ("Content-ID".into(), format!("<{cid}>")),
                ("Content-Type".into(), r.content_type.clone().unwrap_or_else(|| "application/octet-stream".into())),
            ],
            body: body.clone(),
        });
    }
    let m = Multipart {
        boundary: boundary.to_string(),
        start: Some(root_cid),
        root_type: Some(CONTENT_TYPE.into()),
        parts,
    };
    Ok(build_multipart(&m)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::fuzz::{mutate, truncations, Xorshift, XML_TOKENS};
    use crate::body::{msrtc, pidf};

    const BENOTIFY: &[u8] = include_bytes!("../../../fixtures/sip/rlmi/benotify_sfb_resubscribe.mime");
    const PIDF_LIST: &[u8] = include_bytes!("../../../fixtures/sip/rlmi/presence_list_lf.mime");
    const DIALOG_LIST: &[u8] = include_bytes!("../../../fixtures/sip/rlmi/dialog_list_crlf.mime");

    /// Splits a fixture (a MIME entity: `Content-Type` header, empty line, body).
    fn entity(raw: &[u8]) -> (String, &[u8]) {
        let at = memchr::memmem::find(raw, b"\n\n")
            .map(|i| (i, i + 2))
            .into_iter()
            .chain(memchr::memmem::find(raw, b"\r\n\r\n").map(|i| (i, i + 4)))
            .min()
            .expect("header/body separator");
        let head = std::str::from_utf8(&raw[..at.0]).expect("utf-8");
        let ct = head.lines().find_map(|l| l.strip_prefix("Content-Type:")).expect("Content-Type").trim().to_string();
        (ct, &raw[at.1..])
    }

    #[test]
    fn sfb_benotify_with_resubscribe_and_pool_fqdn() {
        let (ct, body) = entity(BENOTIFY);
        let n = parse_rlmi_notify(&ct, body).expect("parse");
        assert_eq!(n.list.uri, "sip:hub-svc@contoso.com");
        assert_eq!((n.list.version, n.list.full_state), (0, false));
        assert_eq!(n.resources.len(), 4);

        let alice = &n.resources[0];
        assert_eq!(alice.uri, "sip:alice@contoso.com");
        assert_eq!(alice.instance.state, InstanceState::Active);
        assert_eq!(alice.content_type.as_deref(), Some("application/msrtc-event-categories+xml"));
        let cats = msrtc::parse_categories(alice.body.as_deref().expect("body")).expect("categories");
        assert_eq!(cats.uri, "sip:alice@contoso.com");
        assert_eq!(cats.aggregate_state().and_then(|s| s.availability), Some(6500));

        let bob = &n.resources[1];
        assert_eq!(bob.instance.state, InstanceState::Resubscribe);
        assert_eq!(bob.instance.pool_fqdn.as_deref(), Some("pool2.contoso.com"));
        assert_eq!(bob.body, None);

        let carol = &n.resources[2];
        assert_eq!(carol.instance.state, InstanceState::Resubscribe);
        assert_eq!(carol.instance.pool_fqdn, None, "no pool: re-subscribe singly (SIPE)");

        let dave = &n.resources[3];
        assert_eq!(dave.instance.state, InstanceState::Terminated);
        assert_eq!(dave.instance.reason.as_deref(), Some("noresource"));
        assert_eq!(dave.body, None);
    }

    #[test]
    fn rfc4662_presence_list_with_bare_lf() {
        let (ct, body) = entity(PIDF_LIST);
        let n = parse_rlmi_notify(&ct, body).expect("parse");
        assert_eq!(n.list.uri, "sip:team-a@rls.example.com");
        assert_eq!((n.list.version, n.list.full_state), (7, true));
        assert_eq!(n.list.name.as_deref(), Some("Team A"));
        let uris: Vec<&str> = n.resources.iter().map(|r| r.uri.as_str()).collect();
        assert_eq!(uris, ["sip:bob@example.com", "sip:dave@example.com", "sip:ed@example.net"]);
        let bob = pidf::parse_pidf(n.resources[0].body.as_deref().expect("bob")).expect("pidf");
        assert_eq!(bob.entity, "sip:bob@example.com");
        assert_eq!(bob.all_activities().cloned().collect::<Vec<_>>(), vec![pidf::Activity::OnThePhone]);
        let dave = pidf::parse_pidf(n.resources[1].body.as_deref().expect("dave")).expect("pidf");
        assert_eq!(dave.open(), Some(false));
        assert_eq!(n.resources[2].instance.state, InstanceState::Pending);
        assert_eq!(n.resources[2].body, None);
        assert_eq!(n.list.resources[0].name.as_deref(), Some("Bob Smith"));
        // The list also names a resource without instances: no entry in `resources`.
        assert_eq!(n.list.resources.len(), 4);
        assert!(n.list.resources[3].instances.is_empty());
    }

    #[test]
    fn dialog_list_resolves_unquoted_start() {
        let (ct, body) = entity(DIALOG_LIST);
        let n = parse_rlmi_notify(&ct, body).expect("parse");
        assert_eq!(n.resources.len(), 2);
        for r in &n.resources {
            let d = crate::body::dialog_info::parse_dialog_info(r.body.as_deref().expect("body")).expect("dialog");
            assert_eq!(d.entity, r.uri);
        }
    }

    #[test]
    fn bare_rlmi_and_errors() {
        let n = parse_rlmi_notify(
            "application/rlmi+xml",
            br#"<list uri="sip:l@x" version="3" fullState="1"><resource uri="sip:a@x"><instance id="i" state="pending"/></resource></list>"#,
        )
        .expect("bare");
        assert!(n.list.full_state);
        assert_eq!(n.resources[0].instance.state, InstanceState::Pending);
        assert!(matches!(parse_rlmi(br#"<list uri="u"/>"#), Err(RlmiError::BadVersion(_))));
        assert!(matches!(parse_rlmi(b"<presence/>"), Err(RlmiError::Xml(XmlError::UnexpectedRoot { .. }))));
        assert!(matches!(
            parse_rlmi_notify("text/plain", b"x"),
            Err(RlmiError::Multipart(MultipartError::NotMultipart(_)))
        ));
        let many = r#"<resource uri="u"/>"#.repeat(MAX_RESOURCES + 1);
        assert_eq!(
            parse_rlmi(format!(r#"<list version="1">{many}</list>"#).as_bytes()),
            Err(RlmiError::TooMany { what: "resources", max: MAX_RESOURCES })
        );
        let inst = r#"<instance id="i" state="active"/>"#.repeat(MAX_INSTANCES + 1);
        assert!(matches!(
            parse_rlmi(format!(r#"<list version="1"><resource uri="u">{inst}</resource></list>"#).as_bytes()),
            Err(RlmiError::TooMany { .. })
        ));
        let l = parse_rlmi(br#"<list version="1"><resource uri="u"><instance id="i" state="Weird" cid="&lt;c@x&gt;"/></resource></list>"#)
            .expect("lenient");
        assert_eq!(l.resources[0].instances[0].state, InstanceState::Other("Weird".into()));
        assert_eq!(l.resources[0].instances[0].cid.as_deref(), Some("c@x"));
        assert!(!l.full_state);
    }

    #[test]
    fn rlmi_and_notify_round_trip() {
        for raw in [BENOTIFY, PIDF_LIST, DIALOG_LIST] {
            let (ct, body) = entity(raw);
            let n = parse_rlmi_notify(&ct, body).expect("parse");
            assert_eq!(parse_rlmi(build_rlmi(&n.list).as_bytes()).as_ref(), Ok(&n.list));
            let (ct2, body2) = build_rlmi_notify(&n, "hub-boundary-42").expect("build");
            assert!(ct2.starts_with(
                r#"multipart/related;type="application/rlmi+xml";start="<rlmi.hub-boundary-42@presence-hub>""#
            ));
            assert_eq!(parse_rlmi_notify(&ct2, &body2), Ok(n));
        }
        // A notification built from scratch: SfB categories for one contact, resubscribe for another.
        let cats = msrtc::Categories { uri: "sip:a@contoso.com".into(), categories: vec![] };
        let n = RlmiNotify {
            list: Rlmi {
                uri: "sip:hub-svc@contoso.com".into(),
                version: 12,
                full_state: false,
                cid: None,
                name: Some("B & C".into()),
                resources: vec![
                    Resource {
                        uri: "sip:a@contoso.com".into(),
                        name: None,
                        instances: vec![Instance { id: "1".into(), cid: Some("a1@hub".into()), ..Instance::default() }],
                    },
                    Resource {
                        uri: "sip:b@contoso.com".into(),
                        name: None,
                        instances: vec![Instance {
                            id: "2".into(),
                            state: InstanceState::Resubscribe,
                            pool_fqdn: Some("pool9.contoso.com".into()),
                            ..Instance::default()
                        }],
                    },
                ],
            },
            resources: vec![],
        };
        let mut n = n;
        n.resources = vec![
            ResourcePart {
                uri: "sip:a@contoso.com".into(),
                instance: n.list.resources[0].instances[0].clone(),
                content_type: Some(msrtc::CONTENT_TYPE.into()),
                body: Some(msrtc::build_categories(&cats).into_bytes()),
            },
            ResourcePart {
                uri: "sip:b@contoso.com".into(),
                instance: n.list.resources[1].instances[0].clone(),
                content_type: None,
                body: None,
            },
        ];
        let (ct, body) = build_rlmi_notify(&n, "b0undary").expect("build");
        assert_eq!(parse_rlmi_notify(&ct, &body), Ok(n.clone()));
        assert!(build_rlmi_notify(&n, "bad boundary").is_err());
    }

    /// Deterministic mutations and every truncation of the fixtures: nothing panics, and
    /// enough mutants still parse to reach the deep paths.
    #[test]
    fn no_input_panics_the_parsers() {
        let mut rng = Xorshift::new(0x2127_599B_F432_5C37);
        let seeds = [BENOTIFY, PIDF_LIST, DIALOG_LIST];
        let mut tokens: Vec<&[u8]> = XML_TOKENS.to_vec();
        tokens.extend([&b"\r\n"[..], b"\n\n", b"--", b"Content-ID: <x>\r\n"]);
        let mut ok = 0usize;
        for i in 0..12_000 {
            let (ct, body) = entity(seeds[i % seeds.len()]);
            let v = mutate(body, &mut rng, &tokens);
            if parse_rlmi_notify(&ct, &v).is_ok() {
                ok += 1;
            }
        }
        assert!(ok > 1_000, "only {ok} mutants parsed: the deep paths went untested");
        let (ct, body) = entity(BENOTIFY);
        for t in truncations(body) {
            let _ = parse_rlmi_notify(&ct, t);
        }
        let (_, body) = entity(PIDF_LIST);
        let m = parse_multipart(&entity(PIDF_LIST).0, body).expect("multipart");
        let root = &m.root().expect("root").body;
        for t in truncations(root) {
            let _ = parse_rlmi(t);
        }
    }
}
