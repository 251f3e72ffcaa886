//! What the hub's SIP presence server tells watchers: a person's merged view as PIDF + RPID
//! (`presence` package) and as dialog-info (`dialog` package, for BLF keys). Pure functions.
//!
//! PIDF: one tuple (`basic` open, closed when Offline, left out when Unknown) with the person's
//! SIP address as contact, and a `dm:person` with the RPID activity, the `until` of the
//! available-again time, `user-input idle` for the idle states, and the note.
//!
//! dialog-info: a BLF lamp is lit when the person cannot take a call. A ringing call gives an
//! `early` dialog (the lamp flashes), any other state that is not available (a call, a meeting,
//! Busy, Do not disturb, Away, Offline…) a `confirmed` dialog (the lamp is lit); Available and
//! Unknown give no dialog (the lamp is off). Always `state="full"`; `version` counts the
//! NOTIFYs of the subscription.
//!
//! [`RenderCache`]: a person's document is rendered once per change of their merged view (the
//! fan-out's sequence number) and package, and shared by every subscription that needs it —
//! single ones and every list the person is on. PIDF depends only on the person, so the whole
//! body is shared; dialog-info carries each subscription's `version` and `entity`, so its
//! dialogs are rendered once and each NOTIFY writes only the root element's start tag.

use std::collections::HashMap;
use std::sync::Arc;

use presence_actors::directory::UserIdx;
use presence_actors::model::{Activity, Availability, MergedView};
use presence_sip::body::pidf::{self, Activities, Basic, Contact, InputState, Note, PidfDoc, Person, Tuple, UserInput};

/// PIDF + RPID for a merged view (`None`: nothing known yet).
pub fn pidf(entity: &str, contact: &str, view: Option<&MergedView>) -> String {
    let mut doc = PidfDoc { entity: entity.to_string(), ..PidfDoc::default() };
    let mut tuple = Tuple {
        id: "hub".into(),
        contact: Some(Contact { uri: contact.to_string(), priority: None }),
        ..Tuple::default()
    };
    let Some(v) = view.filter(|v| v.availability != Availability::Unknown) else {
        tuple.notes.push(Note::new("unknown"));
        doc.tuples.push(tuple);
        return pidf::build_pidf(&doc);
    };
    tuple.basic = Some(if v.availability == Availability::Offline { Basic::Closed } else { Basic::Open });
    tuple.timestamp = jiff::Timestamp::from_millisecond(v.since).ok();
    doc.tuples.push(tuple);

    let mut person = Person { id: Some("p".into()), ..Person::default() };
    let activity = rpid_activity(v);
    if let Some(a) = activity {
        person.activities.push(Activities {
            list: vec![a],
            until: v.available_again_at.and_then(|t| jiff::Timestamp::from_millisecond(t).ok()),
            ..Activities::default()
        });
    }
    if matches!(v.availability, Availability::AvailableIdle | Availability::BusyIdle) || v.activity == Some(Activity::Inactive) {
        person.user_input = Some(UserInput { state: InputState::Idle, last_input: None, idle_threshold: None });
    }
    if let Some(n) = &v.note {
        person.notes.push(Note::new(n.to_string()));
    }
    doc.persons.push(person);
    pidf::build_pidf(&doc)
}

fn rpid_activity(v: &MergedView) -> Option<pidf::Activity> {
    use pidf::Activity as R;
    let from_activity = v.activity.as_ref().and_then(|a| match a {
        Activity::InACall | Activity::InAConferenceCall | Activity::Ringing | Activity::OnHold => Some(R::OnThePhone),
        Activity::InAMeeting => Some(R::Meeting),
        Activity::Presenting => Some(R::Presentation),
        Activity::Lunch => Some(R::Meal),
        Activity::Vacation => Some(R::Vacation),
        Activity::OutOfOffice | Activity::OffWork => Some(R::Away),
        Activity::UrgentInterruptionsOnly => Some(R::Busy),
        Activity::Sick => Some(R::Other("Sick".into())),
        Activity::Other(t) => Some(R::Other(t.to_string())),
        Activity::Inactive | Activity::Tentative | Activity::WorkingElsewhere => None,
    });
    from_activity.or(match v.availability {
        Availability::Busy | Availability::BusyIdle | Availability::DoNotDisturb => Some(R::Busy),
        Availability::BeRightBack | Availability::Away => Some(R::Away),
        _ => None,
    })
}

/// The lamp a merged view lights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lamp {
    /// Free: no dialog.
    Off,
    /// A call is ringing: an `early` dialog.
    Ringing,
    /// Cannot take a call: a `confirmed` dialog.
    On,
}

/// The lamp for a view.
pub fn lamp(view: Option<&MergedView>) -> Lamp {
    let Some(v) = view else { return Lamp::Off };
    if v.activity == Some(Activity::Ringing) {
        return Lamp::Ringing;
    }
    if v.activity.as_ref().is_some_and(Activity::is_call) {
        return Lamp::On;
    }
    match v.availability {
        Availability::Unknown | Availability::Available | Availability::AvailableIdle => Lamp::Off,
        _ => Lamp::On,
    }
}

/// dialog-info for a view.
pub fn dialog_info(entity: &str, version: u64, view: Option<&MergedView>) -> String {
    use presence_sip::body::dialog_info::{build_dialog_info, Dialog, DialogInfo, DialogState, DocState, Direction};
    let mut doc = DialogInfo { version, state: DocState::Full, entity: entity.to_string(), dialogs: Vec::new() };
    let state = match lamp(view) {
        Lamp::Off => None,
        Lamp::Ringing => Some(DialogState::Early),
        Lamp::On => Some(DialogState::Confirmed),
    };
    if let Some(state) = state {
        doc.dialogs.push(Dialog {
            id: "hub".into(),
            direction: Some(Direction::Recipient),
            state,
            ..Dialog::default()
        });
    }
    build_dialog_info(&doc)
}

/// An event package the server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Package {
    /// RFC 3856: PIDF.
    Presence,
    /// RFC 4235: dialog-info.
    Dialog,
}

impl Package {
    /// The `Event` header value.
    pub fn event(self) -> &'static str {
        match self {
            Package::Presence => "presence",
            Package::Dialog => "dialog",
        }
    }

    /// The body's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Package::Presence => "application/pidf+xml",
            Package::Dialog => "application/dialog-info+xml",
        }
    }
}

/// A person's document for one package, as of one change.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The fan-out sequence number of the view it was rendered from (0: no view yet).
    pub seq: u64,
    /// PIDF: the whole body. dialog-info: everything after the root element's start tag
    /// (see [`dialog_doc`]).
    pub body: Arc<str>,
    /// What a watcher compares to skip a NOTIFY that says nothing new: a hash of the PIDF, the
    /// lamp of dialog-info.
    pub key: u64,
}

/// Documents rendered once per change and shared by every subscription (see the module docs).
/// Holds one entry per (person, package) someone watches; the server drops a person's entries
/// when the last watcher goes.
#[derive(Debug, Default)]
pub struct RenderCache {
    map: HashMap<(UserIdx, Package), Rendered>,
    /// Off: render for every NOTIFY (to measure what the cache saves).
    disabled: bool,
    /// Documents rendered.
    pub renders: u64,
    /// Documents served from the cache.
    pub hits: u64,
}

impl RenderCache {
    /// A cache; `enabled = false` renders every time (for measurements).
    pub fn new(enabled: bool) -> RenderCache {
        RenderCache { disabled: !enabled, ..RenderCache::default() }
    }

    /// The document of `user` for `package` as of the view `seq`; `render` makes it when the
    /// cache has none for that change.
    pub fn get(&mut self, user: UserIdx, package: Package, seq: u64, render: impl FnOnce() -> Rendered) -> Rendered {
        if !self.disabled {
            if let Some(r) = self.map.get(&(user, package)).filter(|r| r.seq == seq) {
                self.hits += 1;
                return r.clone();
            }
        }
        self.renders += 1;
        let r = render();
        if !self.disabled {
            self.map.insert((user, package), r.clone());
        }
        r
    }

    /// Drops a person's documents (nobody watches them any more).
    pub fn forget(&mut self, user: UserIdx) {
        self.map.remove(&(user, Package::Presence));
        self.map.remove(&(user, Package::Dialog));
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Renders a person's document for `package` (see [`Rendered`]).
pub fn render(package: Package, seq: u64, entity: &str, contact: &str, view: Option<&MergedView>) -> Rendered {
    match package {
        Package::Presence => {
            let body = pidf(entity, contact, view);
            let key = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                body.hash(&mut h);
                h.finish()
            };
            Rendered { seq, body: body.into(), key }
        }
        Package::Dialog => {
            let full = dialog_info("", 0, view);
            // Everything after the root's start tag (`…entity="">`).
            let tail = full.find("entity=\"\">").map(|i| &full[i + "entity=\"\">".len()..]).unwrap_or("</dialog-info>");
            Rendered { seq, body: tail.into(), key: lamp(view) as u64 }
        }
    }
}

/// A dialog-info document from a rendered tail (see [`Rendered::body`]), with this
/// subscription's `version` and `entity`.
pub fn dialog_doc(entity: &str, version: u64, tail: &str) -> String {
    let mut x = String::with_capacity(180 + entity.len() + tail.len());
    x.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version=""#);
    x.push_str(&version.to_string());
    x.push_str(r#"" state="full" entity=""#);
    for c in entity.chars() {
        match c {
            '&' => x.push_str("&amp;"),
            '<' => x.push_str("&lt;"),
            '>' => x.push_str("&gt;"),
            '"' => x.push_str("&quot;"),
            '\'' => x.push_str("&apos;"),
            c => x.push(c),
        }
    }
    x.push_str("\">");
    x.push_str(tail);
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_actors::model::{Freshness, SourceSet};

    fn view(a: Availability, act: Option<Activity>) -> MergedView {
        MergedView {
            availability: a,
            activity: act,
            note: Some("Lunch, back 13:00 <&>".into()),
            ooo: false,
            available_again_at: Some(1_893_499_200_000),
            absence_reason: None,
            freshness: Freshness::Live,
            reasons: SourceSet::default(),
            since: 1_700_000_000_000,
        }
    }

    #[test]
    fn pidf_round_trips_through_the_parser_and_the_source_mapping() {
        let v = view(Availability::BeRightBack, Some(Activity::Lunch));
        let xml = pidf("sip:alice@hub", "sip:alice@example.com", Some(&v));
        let doc = pidf::parse_pidf(xml.as_bytes()).unwrap();
        assert_eq!(doc.open(), Some(true));
        assert_eq!(doc.note(), Some("Lunch, back 13:00 <&>"));
        let s = presence_providers::sip::map::pidf_to_signal(&doc, presence_actors::model::Source::Sip, "x", 1_700_000_000_000);
        assert_eq!(s.availability, Some(Availability::BeRightBack));
        assert_eq!(s.activity, Some(Activity::Lunch));
        assert_eq!(s.valid_until, Some(1_893_499_200_000));
        let off = pidf("sip:a@h", "sip:a@h", Some(&view(Availability::Offline, None)));
        assert_eq!(pidf::parse_pidf(off.as_bytes()).unwrap().open(), Some(false));
        let unknown = pidf("sip:a@h", "sip:a@h", None);
        assert_eq!(pidf::parse_pidf(unknown.as_bytes()).unwrap().open(), None);
    }

    #[test]
    fn a_dialog_doc_from_the_cached_tail_is_the_document_rendered_whole() {
        for v in [None, Some(view(Availability::Busy, Some(Activity::Ringing))), Some(view(Availability::Away, None))] {
            let r = render(Package::Dialog, 7, "ignored", "ignored", v.as_ref());
            assert_eq!(dialog_doc("sip:2624@hub&co", 41, &r.body), dialog_info("sip:2624@hub&co", 41, v.as_ref()));
            assert_eq!(r.key, lamp(v.as_ref()) as u64);
        }
    }

    #[test]
    fn the_cache_renders_once_per_change() {
        let mut c = RenderCache::new(true);
        let v = view(Availability::Busy, None);
        let mut made = 0;
        for _ in 0..3 {
            let r = c.get(1, Package::Presence, 5, || {
                made += 1;
                render(Package::Presence, 5, "sip:a@h", "sip:a@h", Some(&v))
            });
            assert!(r.body.contains("sip:a@h"));
        }
        assert_eq!((made, c.renders, c.hits), (1, 1, 2));
        c.get(1, Package::Presence, 6, || render(Package::Presence, 6, "sip:a@h", "sip:a@h", None));
        assert_eq!(c.renders, 2, "a new change renders again");
        c.forget(1);
        assert!(c.is_empty());
        let mut off = RenderCache::new(false);
        off.get(1, Package::Presence, 5, || render(Package::Presence, 5, "sip:a@h", "sip:a@h", None));
        off.get(1, Package::Presence, 5, || render(Package::Presence, 5, "sip:a@h", "sip:a@h", None));
        assert_eq!((off.renders, off.hits), (2, 0));
    }

    #[test]
    fn lamps() {
        assert_eq!(lamp(None), Lamp::Off);
        assert_eq!(lamp(Some(&view(Availability::Available, None))), Lamp::Off);
        assert_eq!(lamp(Some(&view(Availability::Busy, Some(Activity::Ringing)))), Lamp::Ringing);
        assert_eq!(lamp(Some(&view(Availability::Busy, Some(Activity::InACall)))), Lamp::On);
        assert_eq!(lamp(Some(&view(Availability::Away, None))), Lamp::On);
        assert_eq!(lamp(Some(&view(Availability::Busy, Some(Activity::InAMeeting)))), Lamp::On);
    }
}
