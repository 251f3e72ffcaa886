//! `application/pidf+xml`: PIDF (RFC 3863) with the presence data model (RFC 4479) and RPID
//! (RFC 4480) — a lenient parser for what SIP presence sources send, and the builder of the
//! documents the hub's own presence server sends in NOTIFY.
//!
//! What is read:
//! * `presence@entity`; presence-level `note`s (with `xml:lang`).
//! * `tuple` (RFC 3863 service): `id`, `status/basic` (`open`/`closed`), `contact` with its
//!   `priority` q-value, `note`s, `timestamp`, `dm:deviceID`.
//! * `dm:person` (RFC 4479): `rpid:activities` (every RFC 4480 token, `other` with its free
//!   text, `unknown`; `from`/`until`; the activities' own notes), `rpid:user-input`
//!   (`active`/`idle`, `last-input`, `idle-threshold`), `dm:note`s, `dm:timestamp`.
//! * `dm:device`: `id`, `dm:deviceID`, `rpid:user-input`, notes, timestamp.
//!
//! Of what is read, only `activities` is timed (`from`/`until`; `user-input` has no period).
//! An element holds only inside its period (RFC 4480 §3.2): [`Activities::holds_at`] decides,
//! and [`PidfDoc::activities_at`] gives what holds at a given time. The parser keeps every
//! element with its period; the time is the reader's.
//!
//! Leniency, because real senders differ (Kamailio, Asterisk, phones):
//! * Elements are matched by local name; no namespace is required. A PIDF without the data
//!   model namespace parses the same.
//! * `activities` and `user-input` are found anywhere under a person or a tuple: Asterisk
//!   (chan_sip and res_pjsip) sends `<pp:person><status><ep:activities>`; some phones put
//!   `<rpid:activities>` into `<tuple><status>` ([`Tuple::activities`]) or directly under
//!   `<presence>` ([`PidfDoc::activities`]).
//! * An activity element this module does not know (e.g. `lunch`, which RFC 4480 does not
//!   define — it has `meal`) becomes [`Activity::Other`] holding the element's local name.
//! * A missing `entity` or tuple `id` reads as the empty string; an unreadable `basic`,
//!   `priority`, `user-input` or timestamp reads as `None` rather than failing the document.
//!
//! Limits: [`MAX_TUPLES`], [`MAX_PERSONS`], [`MAX_DEVICES`] (more is an error);
//! [`MAX_NOTES`] notes per element and [`MAX_ACTIVITIES`] activities per `activities` element
//! (extras are ignored); notes cut to [`MAX_NOTE_BYTES`](super::MAX_NOTE_BYTES); plus the XML
//! limits of [`crate::body`].

use std::fmt::Write as _;

use jiff::Timestamp;

use super::text::{escape, format_time, id, note, opt_id, parse_time, push_escaped};
use super::xml::{self, Element, XmlError};

/// PIDF namespace.
pub const NS_PIDF: &str = "urn:ietf:params:xml:ns:pidf";
/// RFC 4479 data model namespace.
pub const NS_DATA_MODEL: &str = "urn:ietf:params:xml:ns:pidf:data-model";
/// RFC 4480 RPID namespace.
pub const NS_RPID: &str = "urn:ietf:params:xml:ns:pidf:rpid";
/// MIME type of a PIDF document.
pub const CONTENT_TYPE: &str = "application/pidf+xml";

/// Most tuples in one document.
pub const MAX_TUPLES: usize = 64;
/// Most `dm:person` elements in one document.
pub const MAX_PERSONS: usize = 16;
/// Most `dm:device` elements in one document.
pub const MAX_DEVICES: usize = 64;
/// Notes kept per element (presence, tuple, person, device, activities); extras are ignored.
pub const MAX_NOTES: usize = 16;
/// Activities kept per `activities` element, and `activities` elements kept per person or
/// tuple; extras are ignored.
pub const MAX_ACTIVITIES: usize = 16;

/// Why a PIDF body was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PidfError {
    /// Not a readable XML document with a `presence` root.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// More tuples, persons or devices than the limits allow.
    #[error("more than {max} {what} in one PIDF document")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The limit.
        max: usize,
    },
}

/// A PIDF document.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PidfDoc {
    /// `presence@entity` (`sip:` or `pres:` URI); empty when absent.
    pub entity: String,
    /// Services (`tuple`s), in document order.
    pub tuples: Vec<Tuple>,
    /// `dm:person` elements.
    pub persons: Vec<Person>,
    /// `dm:device` elements.
    pub devices: Vec<Device>,
    /// Presence-level notes.
    pub notes: Vec<Note>,
    /// `activities` placed directly under `presence` (non-standard; some clients do it).
    pub activities: Vec<Activities>,
}

/// `open` or `closed`: whether the service accepts communication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basic {
    /// `open`.
    Open,
    /// `closed`.
    Closed,
}

/// A PIDF `tuple` (an RFC 4479 service).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tuple {
    /// `tuple@id`; empty when absent (the builder then writes `t` + index).
    pub id: String,
    /// `status/basic`; `None` when absent or unreadable.
    pub basic: Option<Basic>,
    /// `contact`.
    pub contact: Option<Contact>,
    /// The tuple's notes.
    pub notes: Vec<Note>,
    /// `timestamp`.
    pub timestamp: Option<Timestamp>,
    /// `dm:deviceID`: the device this service runs on.
    pub device_id: Option<String>,
    /// `activities` found inside the tuple (non-standard; lenient).
    pub activities: Vec<Activities>,
    /// `user-input` found inside the tuple (RFC 4480 allows it on services).
    pub user_input: Option<UserInput>,
}

/// A tuple's `contact` address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contact {
    /// The contact URI.
    pub uri: String,
    /// `priority` q-value in thousandths (0–1000); `None` when absent or out of range.
    pub priority: Option<u16>,
}

/// A note with its optional `xml:lang`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Note {
    /// The text, trimmed and cut to [`MAX_NOTE_BYTES`](super::MAX_NOTE_BYTES).
    pub text: String,
    /// `xml:lang`.
    pub lang: Option<String>,
}

impl Note {
    /// A note without language.
    pub fn new(text: impl Into<String>) -> Note {
        Note { text: text.into(), lang: None }
    }
}

/// An RFC 4479 person.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Person {
    /// `id`; the builder writes `p` + index when `None`.
    pub id: Option<String>,
    /// `rpid:activities` elements found under the person (directly or, Asterisk style, under
    /// a `status` child).
    pub activities: Vec<Activities>,
    /// `rpid:user-input`.
    pub user_input: Option<UserInput>,
    /// `dm:note`s.
    pub notes: Vec<Note>,
    /// `dm:timestamp`.
    pub timestamp: Option<Timestamp>,
}

/// An RFC 4479 device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Device {
    /// `id`; the builder writes `d` + index when `None`.
    pub id: Option<String>,
    /// `dm:deviceID` (typically a `urn:uuid:` or MAC URN).
    pub device_id: Option<String>,
    /// `rpid:user-input`.
    pub user_input: Option<UserInput>,
    /// `dm:note`s.
    pub notes: Vec<Note>,
    /// `dm:timestamp`.
    pub timestamp: Option<Timestamp>,
}

/// An `rpid:activities` element: what the person is doing, optionally for a time window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Activities {
    /// The activities, in document order (empty: no activity element was recognised).
    pub list: Vec<Activity>,
    /// `from`: start of validity.
    pub from: Option<Timestamp>,
    /// `until`: end of validity.
    pub until: Option<Timestamp>,
    /// Notes inside the `activities` element.
    pub notes: Vec<Note>,
}

/// An RFC 4480 activity (§3.2, plus `unknown` and `other`).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Activity {
    Appointment,
    Away,
    Breakfast,
    Busy,
    Dinner,
    Holiday,
    InTransit,
    LookingForWork,
    Meal,
    Meeting,
    OnThePhone,
    Performance,
    PermanentAbsence,
    Playing,
    Presentation,
    Shopping,
    Sleeping,
    Spectator,
    Steering,
    Travel,
    Tv,
    Vacation,
    Working,
    Worship,
    /// `unknown`: the activity is not known.
    Unknown,
    /// `other` with its free text, or an element this module does not know (its local name).
    Other(String),
}

/// The RFC 4480 tokens with their element names (`other` and `unknown` aside).
const TOKENS: [(&str, Activity); 24] = [
    ("appointment", Activity::Appointment),
    ("away", Activity::Away),
    ("breakfast", Activity::Breakfast),
    ("busy", Activity::Busy),
    ("dinner", Activity::Dinner),
    ("holiday", Activity::Holiday),
    ("in-transit", Activity::InTransit),
    ("looking-for-work", Activity::LookingForWork),
    ("meal", Activity::Meal),
    ("meeting", Activity::Meeting),
    ("on-the-phone", Activity::OnThePhone),
    ("performance", Activity::Performance),
    ("permanent-absence", Activity::PermanentAbsence),
    ("playing", Activity::Playing),
    ("presentation", Activity::Presentation),
    ("shopping", Activity::Shopping),
    ("sleeping", Activity::Sleeping),
    ("spectator", Activity::Spectator),
    ("steering", Activity::Steering),
    ("travel", Activity::Travel),
    ("tv", Activity::Tv),
    ("vacation", Activity::Vacation),
    ("working", Activity::Working),
    ("worship", Activity::Worship),
];

impl Activities {
    /// Whether the element holds at `now`: from `from` (inclusive) to `until` (exclusive),
    /// either end open when absent. Outside that period the element says nothing (RFC 4480
    /// §3.2) and is ignored, while the rest of the document still counts.
    pub fn holds_at(&self, now: Timestamp) -> bool {
        self.from.is_none_or(|f| f <= now) && self.until.is_none_or(|u| now < u)
    }

    /// The next time after `now` at which [`holds_at`](Activities::holds_at) changes: a
    /// future `from`, else a future `until`; `None` when it never changes again.
    pub fn next_change(&self, now: Timestamp) -> Option<Timestamp> {
        match self.from {
            Some(f) if f > now => Some(f),
            _ => self.until.filter(|u| *u > now),
        }
    }
}

impl Activity {
    /// The RFC 4480 element name (`other` for [`Activity::Other`]).
    pub fn as_str(&self) -> &str {
        match self {
            Activity::Unknown => "unknown",
            Activity::Other(_) => "other",
            a => TOKENS.iter().find(|(_, t)| t == a).map_or("other", |(n, _)| n),
        }
    }

    /// The activity named by an RFC 4480 element name (case-insensitive); `None` for `other`
    /// and names RFC 4480 does not define.
    pub fn from_token(name: &str) -> Option<Activity> {
        if name.eq_ignore_ascii_case("unknown") {
            return Some(Activity::Unknown);
        }
        TOKENS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, a)| a.clone())
    }
}

/// `rpid:user-input`: whether someone is using the device or service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInput {
    /// `active` or `idle`.
    pub state: InputState,
    /// `last-input`: when input was last seen.
    pub last_input: Option<Timestamp>,
    /// `idle-threshold`, in seconds.
    pub idle_threshold: Option<u32>,
}

/// The value of `rpid:user-input`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputState {
    /// `active`.
    Active,
    /// `idle`.
    Idle,
}

impl PidfDoc {
    /// Every `activities` element: persons', tuples' and top-level ones.
    fn activities_elements(&self) -> impl Iterator<Item = &Activities> {
        self.persons
            .iter()
            .flat_map(|p| p.activities.iter())
            .chain(self.tuples.iter().flat_map(|t| t.activities.iter()))
            .chain(self.activities.iter())
    }

    /// Every activity in the document: persons', tuples' and top-level ones, whatever their
    /// period.
    pub fn all_activities(&self) -> impl Iterator<Item = &Activity> {
        self.activities_elements().flat_map(|a| a.list.iter())
    }

    /// The activities that hold at `now` ([`Activities::holds_at`]): what the document says
    /// the person is doing then.
    pub fn activities_at(&self, now: Timestamp) -> impl Iterator<Item = &Activity> {
        self.activities_elements().filter(move |a| a.holds_at(now)).flat_map(|a| a.list.iter())
    }

    /// The next time after `now` at which [`activities_at`](PidfDoc::activities_at) changes
    /// (an element's period starts or ends); `None` when it never does.
    pub fn next_change(&self, now: Timestamp) -> Option<Timestamp> {
        self.activities_elements().filter_map(|a| a.next_change(now)).min()
    }

    /// `Some(true)` when any tuple is `open`, `Some(false)` when tuples say `closed` and none
    /// is open, `None` when no tuple has a readable `basic`.
    pub fn open(&self) -> Option<bool> {
        let mut seen = None;
        for t in &self.tuples {
            match t.basic {
                Some(Basic::Open) => return Some(true),
                Some(Basic::Closed) => seen = Some(false),
                None => {}
            }
        }
        seen
    }

    /// The most relevant note: a person's, else a presence-level one, else a tuple's.
    pub fn note(&self) -> Option<&str> {
        self.persons
            .iter()
            .flat_map(|p| p.notes.iter())
            .chain(self.notes.iter())
            .chain(self.tuples.iter().flat_map(|t| t.notes.iter()))
            .map(|n| n.text.as_str())
            .find(|t| !t.is_empty())
    }
}

/// Parses a PIDF document (see the module docs for what is read and how leniently).
pub fn parse_pidf(body: &[u8]) -> Result<PidfDoc, PidfError> {
    let root = xml::parse(body, Some("presence"))?;
    let mut doc = PidfDoc { entity: id(root.attr("entity").unwrap_or("")), ..PidfDoc::default() };
    for c in &root.children {
        match c.name.as_str() {
            "tuple" => {
                if doc.tuples.len() >= MAX_TUPLES {
                    return Err(PidfError::TooMany { what: "tuples", max: MAX_TUPLES });
                }
                doc.tuples.push(tuple(c));
            }
            "person" => {
                if doc.persons.len() >= MAX_PERSONS {
                    return Err(PidfError::TooMany { what: "persons", max: MAX_PERSONS });
                }
                doc.persons.push(person(c));
            }
            "device" => {
                if doc.devices.len() >= MAX_DEVICES {
                    return Err(PidfError::TooMany { what: "devices", max: MAX_DEVICES });
                }
                doc.devices.push(device(c));
            }
            "note" => push_note(&mut doc.notes, c),
            "activities" if doc.activities.len() < MAX_ACTIVITIES => doc.activities.push(activities(c)),
            _ => {}
        }
    }
    Ok(doc)
}

fn push_note(notes: &mut Vec<Note>, el: &Element) {
    let text = note(&el.text);
    if notes.len() < MAX_NOTES && !text.is_empty() {
        notes.push(Note { text, lang: opt_id(el.attr("lang")) });
    }
}

fn notes_of(el: &Element) -> Vec<Note> {
    let mut out = Vec::new();
    for n in el.children_named("note") {
        push_note(&mut out, n);
    }
    out
}

fn all_activities(el: &Element) -> Vec<Activities> {
    let mut found = Vec::new();
    el.descendants("activities", &mut found);
    found.into_iter().take(MAX_ACTIVITIES).map(activities).collect()
}

fn tuple(el: &Element) -> Tuple {
    let status = el.child("status");
    Tuple {
        id: id(el.attr("id").unwrap_or("")),
        basic: status.and_then(|s| s.child_text("basic")).and_then(|b| {
            if b.eq_ignore_ascii_case("open") {
                Some(Basic::Open)
            } else if b.eq_ignore_ascii_case("closed") {
                Some(Basic::Closed)
            } else {
                None
            }
        }),
        contact: el.child("contact").and_then(|c| {
            let uri = id(&c.text);
            (!uri.is_empty()).then(|| Contact { uri, priority: c.attr("priority").and_then(qvalue) })
        }),
        notes: notes_of(el),
        timestamp: el.child_text("timestamp").and_then(parse_time),
        device_id: opt_id(el.child_text("deviceID")),
        activities: all_activities(el),
        user_input: el.descendant("user-input").and_then(user_input),
    }
}

fn person(el: &Element) -> Person {
    Person {
        id: opt_id(el.attr("id")),
        activities: all_activities(el),
        user_input: el.descendant("user-input").and_then(user_input),
        notes: notes_of(el),
        timestamp: el.child_text("timestamp").and_then(parse_time),
    }
}

fn device(el: &Element) -> Device {
    Device {
        id: opt_id(el.attr("id")),
        device_id: opt_id(el.child_text("deviceID")),
        user_input: el.descendant("user-input").and_then(user_input),
        notes: notes_of(el),
        timestamp: el.child_text("timestamp").and_then(parse_time),
    }
}

fn activities(el: &Element) -> Activities {
    let mut a = Activities {
        from: el.attr("from").and_then(parse_time),
        until: el.attr("until").and_then(parse_time),
        ..Activities::default()
    };
    for c in &el.children {
        match c.name.as_str() {
            "note" => push_note(&mut a.notes, c),
            _ if a.list.len() >= MAX_ACTIVITIES => {}
            "other" => a.list.push(Activity::Other(note(&c.text))),
            name => a.list.push(Activity::from_token(name).unwrap_or_else(|| Activity::Other(id(name)))),
        }
    }
    a
}

fn user_input(el: &Element) -> Option<UserInput> {
    let t = el.text.trim();
    let state = if t.eq_ignore_ascii_case("active") {
        InputState::Active
    } else if t.eq_ignore_ascii_case("idle") {
        InputState::Idle
    } else {
        return None;
    };
    Some(UserInput {
        state,
        last_input: el.attr("last-input").and_then(parse_time),
        idle_threshold: el.attr("idle-threshold").and_then(|s| s.trim().parse().ok()),
    })
}

/// A SIP q-value (`0`–`1`, up to three decimals) in thousandths.
fn qvalue(s: &str) -> Option<u16> {
    let s = s.trim();
    if s.is_empty() || s.len() > 8 {
        return None;
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 3 {
        return None;
    }
    let int: u16 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut milli = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        milli += u16::from(b - b'0') * [100, 10, 1][i];
    }
    let q = int.checked_mul(1000)?.checked_add(milli)?;
    (q <= 1000).then_some(q)
}

fn format_qvalue(q: u16) -> String {
    let q = q.min(1000);
    if q == 1000 {
        return "1".into();
    }
    let frac = format!("{q:03}");
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        "0".into()
    } else {
        format!("0.{frac}")
    }
}

// ---------------------------------------------------------------------------------------------
// Builder.

/// Builds a PIDF + RPID document (UTF-8, with declaration) for a NOTIFY or PUBLISH body:
/// the `presence` root declares the PIDF default namespace and the `dm` and `rpid` prefixes;
/// tuples come first, then presence notes, then top-level activities, persons and devices,
/// each element in the order the schemas require. Text and attributes are escaped. Missing
/// ids are generated (`t0`, `p0`, `d0`: `xs:ID` is required). Everything [`parse_pidf`] reads
/// is written, so build → parse gives the same [`PidfDoc`] back (timestamps to the
/// nanosecond; ids as given).
pub fn build_pidf(doc: &PidfDoc) -> String {
    let mut x = String::with_capacity(512);
    let _ = write!(
        x,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="{NS_PIDF}" xmlns:dm="{NS_DATA_MODEL}" xmlns:rpid="{NS_RPID}" entity="{}">"#,
        escape(&doc.entity)
    );
    for (i, t) in doc.tuples.iter().enumerate() {
        if t.id.is_empty() {
            let _ = write!(x, r#"<tuple id="t{i}">"#);
        } else {
            let _ = write!(x, r#"<tuple id="{}">"#, escape(&t.id));
        }
        x.push_str("<status>");
        match t.basic {
            Some(Basic::Open) => x.push_str("<basic>open</basic>"),
            Some(Basic::Closed) => x.push_str("<basic>closed</basic>"),
            None => {}
        }
        for a in &t.activities {
            write_activities(&mut x, a);
        }
        x.push_str("</status>");
        if let Some(u) = &t.user_input {
            write_user_input(&mut x, u);
        }
        if let Some(d) = &t.device_id {
            text_el(&mut x, "dm:deviceID", d);
        }
        if let Some(c) = &t.contact {
            x.push_str("<contact");
            if let Some(q) = c.priority {
                let _ = write!(x, r#" priority="{}""#, format_qvalue(q));
            }
            x.push('>');
            push_escaped(&mut x, &c.uri);
            x.push_str("</contact>");
        }
        write_notes(&mut x, "note", &t.notes);
        if let Some(ts) = t.timestamp {
            text_el(&mut x, "timestamp", &format_time(ts));
        }
        x.push_str("</tuple>");
    }
    write_notes(&mut x, "note", &doc.notes);
    for a in &doc.activities {
        write_activities(&mut x, a);
    }
    for (i, p) in doc.persons.iter().enumerate() {
        write_id_open(&mut x, "dm:person", p.id.as_deref(), 'p', i);
        for a in &p.activities {
            write_activities(&mut x, a);
        }
        if let Some(u) = &p.user_input {
            write_user_input(&mut x, u);
        }
        write_notes(&mut x, "dm:note", &p.notes);
        if let Some(ts) = p.timestamp {
            text_el(&mut x, "dm:timestamp", &format_time(ts));
        }
        x.push_str("</dm:person>");
    }
    for (i, d) in doc.devices.iter().enumerate() {
        write_id_open(&mut x, "dm:device", d.id.as_deref(), 'd', i);
        if let Some(u) = &d.user_input {
            write_user_input(&mut x, u);
        }
        if let Some(id) = &d.device_id {
            text_el(&mut x, "dm:deviceID", id);
        }
        write_notes(&mut x, "dm:note", &d.notes);
        if let Some(ts) = d.timestamp {
            text_el(&mut x, "dm:timestamp", &format_time(ts));
        }
        x.push_str("</dm:device>");
    }
    x.push_str("</presence>");
    x
}

fn write_id_open(x: &mut String, tag: &str, id: Option<&str>, prefix: char, i: usize) {
    match id {
        Some(id) => {
            let _ = write!(x, r#"<{tag} id="{}">"#, escape(id));
        }
        None => {
            let _ = write!(x, r#"<{tag} id="{prefix}{i}">"#);
        }
    }
}

fn text_el(x: &mut String, tag: &str, text: &str) {
    let _ = write!(x, "<{tag}>");
    push_escaped(x, text);
    let _ = write!(x, "</{tag}>");
}

fn write_notes(x: &mut String, tag: &str, notes: &[Note]) {
    for n in notes {
        let _ = write!(x, "<{tag}");
        if let Some(l) = &n.lang {
            let _ = write!(x, r#" xml:lang="{}""#, escape(l));
        }
        x.push('>');
        push_escaped(x, &n.text);
        let _ = write!(x, "</{tag}>");
    }
}

fn write_activities(x: &mut String, a: &Activities) {
    x.push_str("<rpid:activities");
    if let Some(t) = a.from {
        let _ = write!(x, r#" from="{}""#, format_time(t));
    }
    if let Some(t) = a.until {
        let _ = write!(x, r#" until="{}""#, format_time(t));
    }
    x.push('>');
    write_notes(x, "rpid:note", &a.notes);
    for act in &a.list {
        match act {
            Activity::Other(text) => text_el(x, "rpid:other", text),
            a => {
                let _ = write!(x, "<rpid:{}/>", a.as_str());
            }
        }
    }
    x.push_str("</rpid:activities>");
}

fn write_user_input(x: &mut String, u: &UserInput) {
    x.push_str("<rpid:user-input");
    if let Some(t) = u.idle_threshold {
        let _ = write!(x, r#" idle-threshold="{t}""#);
    }
    if let Some(t) = u.last_input {
        let _ = write!(x, r#" last-input="{}""#, format_time(t));
    }
    x.push('>');
    x.push_str(match u.state {
        InputState::Active => "active",
        InputState::Idle => "idle",
    });
    x.push_str("</rpid:user-input>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::fuzz::{mutate, truncations, Xorshift, XML_TOKENS};

    const ON_THE_PHONE: &[u8] = include_bytes!("../../../fixtures/sip/pidf/rpid_on_the_phone.xml");
    const ASTERISK_PJSIP: &[u8] = include_bytes!("../../../fixtures/sip/pidf/asterisk_pjsip_busy.xml");
    const ASTERISK_CHAN_SIP: &[u8] = include_bytes!("../../../fixtures/sip/pidf/asterisk_chan_sip_ringing.xml");
    const KAMAILIO: &[u8] = include_bytes!("../../../fixtures/sip/pidf/kamailio_sipp_publish.xml");
    const ALL_TOKENS: &[u8] = include_bytes!("../../../fixtures/sip/pidf/rpid_all_activities.xml");
    const LENIENT: &[u8] = include_bytes!("../../../fixtures/sip/pidf/lenient_status_activities.xml");

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn parses_rpid_on_the_phone() {
        let d = parse_pidf(ON_THE_PHONE).expect("parse");
        assert_eq!(d.entity, "pres:alice@example.com");
        assert_eq!(d.tuples.len(), 1);
        let t = &d.tuples[0];
        assert_eq!(t.id, "pbx-2001");
        assert_eq!(t.basic, Some(Basic::Open));
        assert_eq!(t.contact, Some(Contact { uri: "sip:2001@pbx.example.com".into(), priority: Some(800) }));
        assert_eq!(t.timestamp, Some(ts("2024-05-06T09:14:02Z")));
        assert_eq!(d.persons.len(), 1);
        let p = &d.persons[0];
        assert_eq!(p.id.as_deref(), Some("p1"));
        assert_eq!(p.activities.len(), 1);
        assert_eq!(p.activities[0].list, vec![Activity::OnThePhone]);
        assert_eq!(p.activities[0].until, Some(ts("2024-05-06T10:00:00Z")));
        assert_eq!(
            p.user_input,
            Some(UserInput {
                state: InputState::Active,
                last_input: Some(ts("2024-05-06T09:10:00Z")),
                idle_threshold: None
            })
        );
        assert_eq!(p.notes, vec![Note { text: "On the phone".into(), lang: Some("en".into()) }]);
        assert_eq!(d.open(), Some(true));
        assert_eq!(d.note(), Some("On the phone"));
        assert_eq!(d.all_activities().collect::<Vec<_>>(), vec![&Activity::OnThePhone]);
        assert_eq!(d.devices.len(), 1);
        assert_eq!(d.devices[0].device_id.as_deref(), Some("urn:uuid:d27459a2-6b5c-4b1b-9d2b-2f3a0a1e9c11"));
        assert_eq!(d.devices[0].user_input.as_ref().map(|u| u.state), Some(InputState::Idle));
        assert_eq!(d.devices[0].user_input.as_ref().and_then(|u| u.idle_threshold), Some(600));
    }

    #[test]
    fn parses_asterisk_shapes() {
        let d = parse_pidf(ASTERISK_PJSIP).expect("pjsip");
        assert_eq!(d.entity, "sip:2001@pbx.example.com");
        assert_eq!(d.tuples[0].id, "2001");
        assert_eq!(d.tuples[0].contact.as_ref().and_then(|c| c.priority), Some(1000));
        assert_eq!(d.notes, vec![Note::new("On the phone")]);
        // <pp:person><status><ep:activities><ep:busy/>: found under the person's status.
        assert_eq!(d.persons.len(), 1);
        assert_eq!(d.persons[0].id, None);
        assert_eq!(d.persons[0].activities[0].list, vec![Activity::Busy]);
        assert_eq!(d.note(), Some("On the phone"));

        let d = parse_pidf(ASTERISK_CHAN_SIP).expect("chan_sip");
        assert_eq!(d.notes, vec![Note::new("Ringing")]);
        assert_eq!(d.all_activities().cloned().collect::<Vec<_>>(), vec![Activity::OnThePhone]);
        assert_eq!(d.open(), Some(true));
    }

    #[test]
    fn parses_the_kamailio_sipp_publish() {
        let d = parse_pidf(KAMAILIO).expect("parse");
        assert_eq!(
            d,
            PidfDoc {
                entity: "sip:user1@127.0.0.1".into(),
                tuples: vec![Tuple { id: "t1".into(), basic: Some(Basic::Open), ..Tuple::default() }],
                ..PidfDoc::default()
            }
        );
    }

    #[test]
    fn every_rfc4480_activity_and_other_and_unknown() {
        let d = parse_pidf(ALL_TOKENS).expect("parse");
        let list = &d.persons[0].activities[0].list;
        assert_eq!(list.len(), 16, "capped at MAX_ACTIVITIES");
        let second = &d.persons[0].activities[1].list;
        let mut all: Vec<Activity> = list.iter().chain(second.iter()).cloned().collect();
        for (_, a) in TOKENS.iter() {
            assert!(all.contains(a), "{a:?} missing");
        }
        assert!(all.contains(&Activity::Other("Choir rehearsal".into())));
        assert!(all.contains(&Activity::Other("lunch".into())), "unknown element keeps its name");
        all.retain(|a| !TOKENS.iter().any(|(_, t)| t == a));
        assert_eq!(all.len(), 2);
        let third = &d.persons[0].activities[2];
        assert_eq!(third.list, vec![Activity::Unknown]);
        assert_eq!(third.notes, vec![Note { text: "Somewhere".into(), lang: Some("en".into()) }]);
        assert_eq!(third.from, Some(ts("2024-05-06T08:00:00Z")));
        for (name, a) in TOKENS.iter() {
            assert_eq!(a.as_str(), *name);
            assert_eq!(Activity::from_token(&name.to_uppercase()).as_ref(), Some(a));
        }
        assert_eq!(Activity::from_token("other"), None);
        assert_eq!(Activity::from_token("lunch"), None);
    }

    #[test]
    fn lenient_placements() {
        let d = parse_pidf(LENIENT).expect("parse");
        assert!(d.persons.is_empty());
        assert_eq!(d.tuples[0].activities[0].list, vec![Activity::Away]);
        assert_eq!(d.tuples[0].basic, None, "bad basic text reads as None");
        assert_eq!(d.tuples[0].contact.as_ref().and_then(|c| c.priority), None, "priority 2 is out of range");
        assert_eq!(d.tuples[1].basic, Some(Basic::Closed));
        assert_eq!(d.activities[0].list, vec![Activity::Meeting]);
        assert_eq!(d.open(), Some(false));
        assert_eq!(d.all_activities().cloned().collect::<Vec<_>>(), vec![Activity::Away, Activity::Meeting]);
        assert_eq!(d.tuples[0].timestamp, None);
        assert_eq!(d.tuples[0].user_input.as_ref().map(|u| u.state), Some(InputState::Idle));
    }

    #[test]
    fn an_element_holds_only_inside_its_period() {
        let (t9, t10, t11) = (ts("2024-05-06T09:00:00Z"), ts("2024-05-06T10:00:00Z"), ts("2024-05-06T11:00:00Z"));
        let a = |from, until| Activities { list: vec![Activity::Meal], from, until, ..Activities::default() };
        assert!(a(None, None).holds_at(t10));
        assert!(a(Some(t9), Some(t11)).holds_at(t10));
        assert!(a(Some(t10), None).holds_at(t10), "from is inclusive");
        assert!(!a(None, Some(t10)).holds_at(t10), "until is exclusive");
        assert!(!a(None, Some(t9)).holds_at(t10), "over");
        assert!(!a(Some(t11), None).holds_at(t10), "not yet");
        assert_eq!(a(None, None).next_change(t10), None);
        assert_eq!(a(Some(t9), Some(t11)).next_change(t10), Some(t11));
        assert_eq!(a(Some(t11), None).next_change(t10), Some(t11));
        assert_eq!(a(Some(t11), Some(ts("2024-05-06T12:00:00Z"))).next_change(t10), Some(t11));
        assert_eq!(a(None, Some(t9)).next_change(t10), None);

        let doc = PidfDoc {
            persons: vec![Person { activities: vec![a(None, Some(t9)), a(Some(t11), None)], ..Person::default() }],
            tuples: vec![Tuple {
                activities: vec![Activities { list: vec![Activity::Busy], until: Some(t11), ..Activities::default() }],
                ..Tuple::default()
            }],
            activities: vec![Activities { list: vec![Activity::Away], ..Activities::default() }],
            ..PidfDoc::default()
        };
        assert_eq!(doc.activities_at(t10).cloned().collect::<Vec<_>>(), vec![Activity::Busy, Activity::Away]);
        assert_eq!(doc.all_activities().count(), 4);
        assert_eq!(doc.next_change(t10), Some(t11));
        assert_eq!(doc.activities_at(t11).cloned().collect::<Vec<_>>(), vec![Activity::Meal, Activity::Away]);
        assert_eq!(doc.next_change(t11), None);
    }

    #[test]
    fn qvalues() {
        for (s, q) in [("1", Some(1000)), ("0.8", Some(800)), ("0.125", Some(125)), ("0", Some(0)), (".5", Some(500))] {
            assert_eq!(qvalue(s), q, "{s}");
        }
        for s in ["1.5", "2", "-1", "0.1234", "x", "", ".", "99999"] {
            assert_eq!(qvalue(s), None, "{s}");
        }
        for q in [0, 1, 10, 100, 125, 800, 999, 1000] {
            assert_eq!(qvalue(&format_qvalue(q)), Some(q));
        }
    }

    #[test]
    fn limits_and_errors() {
        let many: String = (0..=MAX_TUPLES).map(|i| format!(r#"<tuple id="t{i}"/>"#)).collect();
        let x = format!(r#"<presence entity="sip:a@b">{many}</presence>"#);
        assert_eq!(parse_pidf(x.as_bytes()), Err(PidfError::TooMany { what: "tuples", max: MAX_TUPLES }));
        assert!(matches!(
            parse_pidf(b"<dialog-info/>"),
            Err(PidfError::Xml(XmlError::UnexpectedRoot { expected: "presence", .. }))
        ));
        let long = format!(r#"<presence><note>{}</note></presence>"#, "é".repeat(1000));
        let d = parse_pidf(long.as_bytes()).expect("parse");
        assert_eq!(d.notes[0].text.len(), 1024);
        let notes = "<note>n</note>".repeat(MAX_NOTES + 3);
        let d = parse_pidf(format!("<presence>{notes}</presence>").as_bytes()).expect("parse");
        assert_eq!(d.notes.len(), MAX_NOTES);
    }

    fn rich() -> PidfDoc {
        PidfDoc {
            entity: "sip:alice@example.com".into(),
            tuples: vec![
                Tuple {
                    id: "hub-1".into(),
                    basic: Some(Basic::Open),
                    contact: Some(Contact {
                        uri: "sip:alice@hub.example.com;transport=tcp".into(),
                        priority: Some(800),
                    }),
                    notes: vec![Note { text: "Desk <3> & \"co\"".into(), lang: Some("en".into()) }],
                    timestamp: Some(ts("2024-05-06T09:14:02.5Z")),
                    device_id: Some("urn:uuid:1".into()),
                    activities: vec![Activities { list: vec![Activity::Busy], ..Activities::default() }],
                    user_input: Some(UserInput {
                        state: InputState::Active,
                        last_input: None,
                        idle_threshold: Some(300),
                    }),
                },
                Tuple { id: "t2".into(), basic: Some(Basic::Closed), ..Tuple::default() },
            ],
            persons: vec![Person {
                id: Some("p1".into()),
                activities: vec![Activities {
                    list: vec![Activity::OnThePhone, Activity::Other("Tea & <biscuits>".into()), Activity::Unknown],
                    from: Some(ts("2024-05-06T09:00:00Z")),
                    until: Some(ts("2024-05-06T10:00:00Z")),
                    notes: vec![Note::new("call")],
                }],
                user_input: Some(UserInput {
                    state: InputState::Idle,
                    last_input: Some(ts("2024-05-06T09:10:00Z")),
                    idle_threshold: Some(600),
                }),
                notes: vec![Note::new("On the phone"), Note { text: "Au téléphone".into(), lang: Some("fr".into()) }],
                timestamp: Some(ts("2024-05-06T09:14:02Z")),
            }],
            devices: vec![Device {
                id: Some("d1".into()),
                device_id: Some("urn:uuid:1".into()),
                user_input: None,
                notes: vec![Note::new("desk phone")],
                timestamp: None,
            }],
            notes: vec![Note::new("presence note ' \u{263A}")],
            activities: vec![Activities { list: vec![Activity::Vacation], ..Activities::default() }],
        }
    }

    #[test]
    fn build_then_parse_round_trips() {
        let doc = rich();
        let x = build_pidf(&doc);
        assert!(x.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?>"#));
        assert!(x.contains(r#"<dm:note>On the phone</dm:note>"#));
        assert!(x.contains(r#"<rpid:other>Tea &amp; &lt;biscuits&gt;</rpid:other>"#));
        assert!(x.contains(r#"until="2024-05-06T10:00:00Z""#));
        assert_eq!(parse_pidf(x.as_bytes()).expect("parse"), doc);
        // Every token survives a round trip.
        let all = PidfDoc {
            persons: vec![Person {
                id: Some("p".into()),
                activities: TOKENS
                    .chunks(MAX_ACTIVITIES)
                    .map(|c| Activities { list: c.iter().map(|(_, a)| a.clone()).collect(), ..Activities::default() })
                    .collect(),
                ..Person::default()
            }],
            ..PidfDoc::default()
        };
        assert_eq!(parse_pidf(build_pidf(&all).as_bytes()).expect("parse"), all);
    }

    #[test]
    fn builder_for_the_presence_server() {
        // The shape the hub's presence server sends: one tuple with basic + contact, a person
        // with activities (until), a note and a timestamp.
        let doc = PidfDoc {
            entity: "sip:2001@hub.example.com".into(),
            tuples: vec![Tuple {
                id: "hub".into(),
                basic: Some(Basic::Open),
                contact: Some(Contact { uri: "sip:2001@hub.example.com".into(), priority: None }),
                ..Tuple::default()
            }],
            persons: vec![Person {
                id: Some("hub-p".into()),
                activities: vec![Activities {
                    list: vec![Activity::Meeting],
                    until: Some(ts("2024-05-06T10:00:00Z")),
                    ..Activities::default()
                }],
                notes: vec![Note::new("In a meeting until 12:00 — A&B")],
                timestamp: Some(ts("2024-05-06T09:14:02Z")),
                ..Person::default()
            }],
            ..PidfDoc::default()
        };
        let x = build_pidf(&doc);
        assert_eq!(
            x,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" \
             xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"sip:2001@hub.example.com\">\
             <tuple id=\"hub\"><status><basic>open</basic></status><contact>sip:2001@hub.example.com</contact></tuple>\
             <dm:person id=\"hub-p\"><rpid:activities until=\"2024-05-06T10:00:00Z\"><rpid:meeting/></rpid:activities>\
             <dm:note>In a meeting until 12:00 — A&amp;B</dm:note><dm:timestamp>2024-05-06T09:14:02Z</dm:timestamp>\
             </dm:person></presence>"
        );
        assert_eq!(parse_pidf(x.as_bytes()).expect("parse"), doc);
        // Missing ids are generated; control characters are dropped.
        let x = build_pidf(&PidfDoc {
            entity: "sip:a\u{1}@b".into(),
            tuples: vec![Tuple::default()],
            persons: vec![Person::default()],
            ..PidfDoc::default()
        });
        let d = parse_pidf(x.as_bytes()).expect("parse");
        assert_eq!(d.entity, "sip:a@b");
        assert_eq!(d.tuples[0].id, "t0");
        assert_eq!(d.persons[0].id.as_deref(), Some("p0"));
    }

    /// Deterministic mutations and every truncation of the fixtures: nothing panics, and
    /// enough mutants still parse to reach the deep paths.
    #[test]
    fn no_input_panics_the_parser() {
        let mut rng = Xorshift::new(0x9E37_79B9_7F4A_7C15);
        let seeds = [ON_THE_PHONE, ASTERISK_PJSIP, ASTERISK_CHAN_SIP, KAMAILIO, ALL_TOKENS, LENIENT];
        let mut ok = 0usize;
        for i in 0..12_000 {
            let v = mutate(seeds[i % seeds.len()], &mut rng, &XML_TOKENS);
            if parse_pidf(&v).is_ok() {
                ok += 1;
            }
        }
        assert!(ok > 1_000, "only {ok} mutants parsed: the deep paths went untested");
        for seed in [ON_THE_PHONE, ASTERISK_PJSIP] {
            for t in truncations(seed) {
                let _ = parse_pidf(t);
            }
        }
    }
}
