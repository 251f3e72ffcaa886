//! Skype for Business / Lync enhanced presence: the categories document
//! (`application/msrtc-event-categories+xml`), the server's aggregation rules, and the batched
//! subscription body (`application/msrtc-adrl-categorylist+xml`) — [MS-PRES] §2.2.2
//! (schemas), §3.8.5.1.2 (aggregation), §2.2.2.4.1 (batchSub); the availability ranges of the
//! Lync schema's `availability` element (sources in docs/ARCHITECTURE.md, § Protocol references).
//!
//! ## Categories document
//! [`parse_categories`] reads `<categories uri>` and each `<category name instance
//! publishTime>` (plus `container`, `version`, `expireType`, which only self-subscriptions
//! see). Values:
//! * `state` ([`State`]): the `xsi:type` ([`StateKind`]), `availability`, `activity` (token,
//!   `minAvailability`/`maxAvailability`, `custom` texts with `LCID`), `manual`, `startTime`,
//!   `uri`, `lastActive`, `meetingSubject`/`meetingLocation`, `device`.
//! * `note` ([`NoteBody`]s): `body` with `type` `personal`/`OOF`, `LCID`, `startTime`/`endTime`.
//! * `calendarData` ([`CalendarData`]): `mailboxID` and `freeBusy` decoded into 2-bit slots
//!   (00 free, 01 tentative, 10 busy, 11 OOF), **least-significant bit pair first** within each
//!   byte, as pidgin-SIPE decodes them (`sipe-cal.c`; Microsoft's docs only describe a "bit
//!   stream").
//! * Any other category (`contactCard`, `services`, …) or an empty one: [`CategoryValue::Other`].
//!
//! Elements and attributes are matched by local name, so the `http://` namespaces SfB sends and
//! the `https://` spelling of some Microsoft docs parse alike. A `publishTime` without offset is
//! UTC (the server stamps it).
//!
//! ## Availability classes
//! [`AvailabilityClass::from_availability`] maps a number to its range. `0` (or absent) means
//! "no opinion" and gives `None`. Below 3000 the sources disagree (OCS 2007 starts Available at
//! 3000; SIPE maps anything lower to Offline; the Lync 2010/2013 schema docs start it at 0).
//! With the sources in conflict, **1–2999 is no opinion too** (`None`), as the hub's own
//! `Availability::from_sfb` treats it: neither Available nor Offline is claimed on a value
//! whose meaning the documents dispute. 6900 is Busy; with the
//! `urgent-interruptions-only` activity it is the workgroup view of Do Not Disturb
//! ([`Aggregate::urgent_interruptions_only`]).
//!
//! ## Aggregation ([MS-PRES] §3.8.5.1.2)
//! [`aggregate`] computes availability and activity from raw state publications the way the
//! server does, for self-subscriptions and the SfB simulator (a watcher reads the server's
//! `aggregateState` instead: [`Categories::aggregate_state`]):
//! 1. Machine states are aggregated apart: the most active (lowest number) wins.
//! 2. The most recently published `userState` with an availability is the anchor; every other
//!    non-machine state published before it is discarded. A `userState` without availability
//!    (a "reset") is no anchor and has no effect.
//! 3. The availability is the least available (highest) of the surviving states and the
//!    machine aggregate. Machine states are never discarded by step 2: endpoints republish
//!    them continuously and idleness is a modifier, not a choice.
//! 4. Idle modifier: a machine in the Available-Idle range (inactive, e.g. 5000) turns a Busy
//!    result into Busy-Idle (7500); an Available result becomes Available-Idle by step 3.
//! 5. Activity: of the surviving states' and machines' activities, keep those with a token or
//!    custom text whose `[minAvailability, maxAvailability]` (open ends when absent) contains
//!    the result; the highest `minAvailability` wins, ties go to the newest (`startTime` when
//!    present, else publish time). With no availability at all, bounds are not checked.
//!
//! `aggregateState` and `aggregateMachineState` inputs are server output and are ignored.
//!
//! ## batchSub ([MS-PRES] §2.2.2.4.1)
//! [`build_batch_sub`] writes the body of the batched category SUBSCRIBE; [`parse_batch_sub`]
//! reads it back (the SfB simulator does).
//!
//! Limits: [`MAX_CATEGORIES`] per document and [`MAX_BATCH_RESOURCES`] per batchSub (more is
//! an error); [`MAX_CUSTOM_TEXTS`], [`MAX_NOTE_BODIES`], [`MAX_BATCH_CATEGORIES`] and
//! [`MAX_FREEBUSY_SLOTS`] (extras are ignored); texts cut to
//! [`MAX_NOTE_BYTES`](super::MAX_NOTE_BYTES); plus the XML limits of [`crate::body`].

use std::fmt::Write as _;

use jiff::Timestamp;

use super::text::{
    base64_decode, base64_encode, escape, format_time, format_time_ms_naive, id, note, opt_id, parse_bool, parse_time,
    push_escaped, truncate,
};
use super::xml::{self, Element, XmlError};

/// MIME type of a categories document.
pub const CONTENT_TYPE: &str = "application/msrtc-event-categories+xml";
/// MIME type of the batched-subscription body.
pub const BATCH_SUB_CONTENT_TYPE: &str = "application/msrtc-adrl-categorylist+xml";
/// Namespace of `categories`.
pub const NS_CATEGORIES: &str = "http://schemas.microsoft.com/2006/09/sip/categories";
/// Namespace of `state`.
pub const NS_STATE: &str = "http://schemas.microsoft.com/2006/09/sip/state";
/// Namespace of `note`.
pub const NS_NOTE: &str = "http://schemas.microsoft.com/2006/09/sip/note";
/// Namespace of `calendarData`.
pub const NS_CALENDAR_DATA: &str = "http://schemas.microsoft.com/2006/09/sip/calendarData";
/// Namespace of `delimiter` / `end`.
pub const NS_COMMON_TYPES: &str = "http://schemas.microsoft.com/2006/09/sip/commontypes";
/// Namespace of `batchSub`.
pub const NS_BATCH_SUBSCRIBE: &str = "http://schemas.microsoft.com/2006/01/sip/batch-subscribe";
/// Namespace of `categoryList`.
pub const NS_CATEGORY_LIST: &str = "http://schemas.microsoft.com/2006/09/sip/categorylist";
const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Most categories in one document.
pub const MAX_CATEGORIES: usize = 256;
/// `custom` texts kept per activity; extras are ignored.
pub const MAX_CUSTOM_TEXTS: usize = 8;
/// `body` elements kept per note; extras are ignored.
pub const MAX_NOTE_BODIES: usize = 8;
/// Most resources in one batchSub (SfB's largest contact list is 1000).
pub const MAX_BATCH_RESOURCES: usize = 1000;
/// Category names kept in one batchSub's category list; extras are ignored.
pub const MAX_BATCH_CATEGORIES: usize = 32;
/// Free/busy slots kept (more than 16 weeks of 15-minute slots); extras are ignored.
pub const MAX_FREEBUSY_SLOTS: usize = 16 * 1024;

/// Why a categories or batchSub body was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MsrtcError {
    /// Not a readable XML document with the expected root.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// More categories or resources than the limits allow.
    #[error("more than {max} {what} in one document")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A batchSub without a usable `action`.
    #[error("batchSub: {0}")]
    BadBatchSub(&'static str),
}

/// A categories document: the category instances of one presentity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Categories {
    /// `categories@uri`: the presentity.
    pub uri: String,
    /// Category instances, in document order.
    pub categories: Vec<Category>,
}

/// One category instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Category {
    /// `name` (`state`, `note`, `calendarData`, `contactCard`, …).
    pub name: String,
    /// `instance` (0 when absent or unreadable; negative values keep their two's-complement
    /// bits).
    pub instance: u64,
    /// `publishTime` (server-stamped, UTC).
    pub publish_time: Option<Timestamp>,
    /// `container` (self-subscriptions only).
    pub container: Option<u32>,
    /// `version` (self-subscriptions only).
    pub version: Option<u32>,
    /// `expireType` (`endpoint`, `user`, `static`, `time`, `custom`).
    pub expire_type: Option<String>,
    /// The parsed value.
    pub value: CategoryValue,
}

/// The value of a category instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum CategoryValue {
    /// A `state`.
    State(State),
    /// A `note`: its bodies.
    Note(Vec<NoteBody>),
    /// A `calendarData`.
    CalendarData(CalendarData),
    /// A category this module does not read, or an empty one.
    #[default]
    Other,
}

/// A `state` category value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// `xsi:type`.
    pub kind: StateKind,
    /// `availability`.
    pub availability: Option<u32>,
    /// `activity`.
    pub activity: Option<Activity>,
    /// `manual`: set by the user rather than computed.
    pub manual: Option<bool>,
    /// `startTime`.
    pub start_time: Option<Timestamp>,
    /// `uri` (phoneState: tel URI; calendarState: mailbox).
    pub uri: Option<String>,
    /// `lastActive` (aggregateState).
    pub last_active: Option<Timestamp>,
    /// `meetingSubject` (calendarState).
    pub meeting_subject: Option<String>,
    /// `meetingLocation` (calendarState).
    pub meeting_location: Option<String>,
    /// `device` (`computer`, `deskphone`, `mobile`, `web`).
    pub device: Option<String>,
}

/// The `xsi:type` of a `state`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StateKind {
    /// `userState`: published by the user (manual).
    #[default]
    UserState,
    /// `machineState`: one per signed-in endpoint.
    MachineState,
    /// `calendarState`: meetings and OOF from Exchange.
    CalendarState,
    /// `phoneState`: calls.
    PhoneState,
    /// `presentingState`.
    PresentingState,
    /// `aggregateState`: the server's result.
    AggregateState,
    /// `aggregateMachineState`: the server's machine result.
    AggregateMachineState,
    /// Anything else (kept as sent, cut).
    Other(String),
}

const KINDS: [(&str, StateKind); 7] = [
    ("userState", StateKind::UserState),
    ("machineState", StateKind::MachineState),
    ("calendarState", StateKind::CalendarState),
    ("phoneState", StateKind::PhoneState),
    ("presentingState", StateKind::PresentingState),
    ("aggregateState", StateKind::AggregateState),
    ("aggregateMachineState", StateKind::AggregateMachineState),
];

impl StateKind {
    /// The `xsi:type` value.
    pub fn as_str(&self) -> &str {
        match self {
            StateKind::Other(s) => s,
            k => KINDS.iter().find(|(_, x)| x == k).map_or("", |(n, _)| n),
        }
    }

    /// From an `xsi:type` value: a prefix (`tns:userState`) is ignored, case is not.
    pub fn parse(s: &str) -> StateKind {
        let s = s.trim();
        let local = s.rsplit(':').next().unwrap_or(s);
        KINDS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(local))
            .map_or_else(|| StateKind::Other(truncate(local, 64).to_string()), |(_, k)| k.clone())
    }
}

/// An `activity`: what the availability means, within availability bounds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// `token` (`on-the-phone`, `in-a-meeting`, `out-of-office`, `urgent-interruptions-only`…).
    pub token: Option<String>,
    /// `minAvailability`.
    pub min_availability: Option<u32>,
    /// `maxAvailability`.
    pub max_availability: Option<u32>,
    /// Localised free texts.
    pub custom: Vec<CustomText>,
}

/// A `custom` activity text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CustomText {
    /// `LCID` (1033 = en-US).
    pub lcid: Option<u32>,
    /// The text.
    pub text: String,
}

/// A note `body`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NoteBody {
    /// `type`.
    pub kind: NoteKind,
    /// The text.
    pub text: String,
    /// `LCID`.
    pub lcid: Option<u32>,
    /// `startTime` (OOF notes).
    pub start_time: Option<Timestamp>,
    /// `endTime` (OOF notes).
    pub end_time: Option<Timestamp>,
    /// `uri`; `None` when empty.
    pub uri: Option<String>,
}

/// The `type` of a note body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NoteKind {
    /// `personal`.
    #[default]
    Personal,
    /// `OOF`: the out-of-office message.
    Oof,
    /// Anything else (kept as sent, cut).
    Other(String),
}

/// A `calendarData` category value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CalendarData {
    /// `mailboxID`.
    pub mailbox_id: Option<String>,
    /// `freeBusy`.
    pub free_busy: Option<FreeBusy>,
}

/// A decoded `freeBusy` stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FreeBusy {
    /// `startTime`: the start of slot 0.
    pub start_time: Option<Timestamp>,
    /// `granularity` in minutes (`PT15M` → 15; 15 when absent or unreadable).
    pub granularity_minutes: u32,
    /// `encodingVersion`.
    pub encoding_version: Option<u32>,
    /// The slots (empty when the stream is not base64).
    pub slots: Vec<FreeBusySlot>,
}

/// One free/busy slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeBusySlot {
    /// `00`.
    Free,
    /// `01`.
    Tentative,
    /// `10`.
    Busy,
    /// `11`: out of office.
    Oof,
}

impl FreeBusy {
    /// The slot covering `t`, if the stream covers it.
    pub fn slot_at(&self, t: Timestamp) -> Option<FreeBusySlot> {
        let start = self.start_time?;
        let slot_ms = i64::from(self.granularity_minutes.max(1)) * 60_000;
        let offset = t.as_millisecond().checked_sub(start.as_millisecond())?;
        if offset < 0 {
            return None;
        }
        self.slots.get(usize::try_from(offset / slot_ms).ok()?).copied()
    }
}

// ---------------------------------------------------------------------------------------------
// Availability classes.

/// The class an availability number falls into (see "Availability classes" in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AvailabilityClass {
    /// 3000–4499.
    Available,
    /// 4500–5999.
    AvailableIdle,
    /// 6000–7499 (6900: urgent interruptions only).
    Busy,
    /// 7500–8999.
    BusyIdle,
    /// 9000–11999.
    DoNotDisturb,
    /// 12000–14999.
    BeRightBack,
    /// 15000–17999.
    Away,
    /// 18000 and above.
    Offline,
}

impl AvailabilityClass {
    /// The class of `n`; `None` for 0–2999 ("no opinion"; see the module docs).
    pub fn from_availability(n: u32) -> Option<AvailabilityClass> {
        use AvailabilityClass::*;
        Some(match n {
            0..=2999 => return None,
            3000..=4499 => Available,
            4500..=5999 => AvailableIdle,
            6000..=7499 => Busy,
            7500..=8999 => BusyIdle,
            9000..=11999 => DoNotDisturb,
            12000..=14999 => BeRightBack,
            15000..=17999 => Away,
            _ => Offline,
        })
    }

    /// The value clients publish for this class (3500, 5000, 6500, 7500, 9500, 12500, 15500,
    /// 18500).
    pub fn canonical(self) -> u32 {
        use AvailabilityClass::*;
        match self {
            Available => 3500,
            AvailableIdle => 5000,
            Busy => 6500,
            BusyIdle => 7500,
            DoNotDisturb => 9500,
            BeRightBack => 12500,
            Away => 15500,
            Offline => 18500,
        }
    }
}

/// The activity token of the workgroup view of Do Not Disturb.
pub const URGENT_INTERRUPTIONS_ONLY: &str = "urgent-interruptions-only";
/// The availability of the workgroup view of Do Not Disturb.
pub const URGENT_INTERRUPTIONS_AVAILABILITY: u32 = 6900;

// ---------------------------------------------------------------------------------------------
// Aggregation.

/// A state publication as input to [`aggregate`].
#[derive(Clone, Debug, PartialEq)]
pub struct StateInstance {
    /// When the server stamped it (`publishTime`); orders publications.
    pub publish_time: Timestamp,
    /// The state.
    pub state: State,
}

/// The result of [`aggregate`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Aggregate {
    /// The aggregate availability; `None` when no state has an opinion.
    pub availability: Option<u32>,
    /// Its class.
    pub class: Option<AvailabilityClass>,
    /// The aggregate activity.
    pub activity: Option<Activity>,
}

impl Aggregate {
    /// "Busy – urgent interruptions only": availability 6900, or a Busy-range availability with
    /// the `urgent-interruptions-only` activity.
    pub fn urgent_interruptions_only(&self) -> bool {
        self.availability == Some(URGENT_INTERRUPTIONS_AVAILABILITY)
            || (self.class == Some(AvailabilityClass::Busy)
                && self.activity.as_ref().and_then(|a| a.token.as_deref()) == Some(URGENT_INTERRUPTIONS_ONLY))
    }
}

fn opinion(s: &State) -> Option<u32> {
    s.availability.filter(|&a| a > 0)
}

/// Aggregates raw state publications into availability and activity (the rules are in the
/// module docs, "Aggregation").
pub fn aggregate(states: &[StateInstance]) -> Aggregate {
    let is_machine = |s: &StateInstance| s.state.kind == StateKind::MachineState;
    let is_output =
        |s: &StateInstance| matches!(s.state.kind, StateKind::AggregateState | StateKind::AggregateMachineState);
    // Step 2: the anchor is the newest userState with an opinion (last one on ties).
    let anchor = states
        .iter()
        .filter(|s| s.state.kind == StateKind::UserState && opinion(&s.state).is_some())
        .max_by_key(|s| s.publish_time)
        .map(|s| s.publish_time);
    let survivors: Vec<&StateInstance> = states
        .iter()
        .filter(|s| !is_output(s) && !is_machine(s))
        .filter(|s| anchor.is_none_or(|a| s.publish_time >= a))
        .collect();
    let machines: Vec<&StateInstance> = states.iter().filter(|s| is_machine(s)).collect();
    // Step 1: the most active machine.
    let machine = machines.iter().filter_map(|s| opinion(&s.state)).min();
    // Step 3: least available wins.
    let mut availability = survivors.iter().filter_map(|s| opinion(&s.state)).chain(machine).max();
    // Step 4: idle modifier.
    if let (Some(a), Some(m)) = (availability, machine) {
        let idle = AvailabilityClass::from_availability(m) == Some(AvailabilityClass::AvailableIdle);
        if idle && AvailabilityClass::from_availability(a) == Some(AvailabilityClass::Busy) {
            availability = Some(AvailabilityClass::BusyIdle.canonical());
        }
    }
    // Step 5: activity.
    let activity = survivors
        .iter()
        .chain(machines.iter())
        .filter_map(|s| s.state.activity.as_ref().map(|a| (a, s.state.start_time.unwrap_or(s.publish_time))))
        .filter(|(a, _)| {
            a.token.as_deref().is_some_and(|t| !t.trim().is_empty()) || a.custom.iter().any(|c| !c.text.is_empty())
        })
        .filter(|(a, _)| {
            availability
                .is_none_or(|av| a.min_availability.unwrap_or(0) <= av && av <= a.max_availability.unwrap_or(u32::MAX))
        })
        .max_by_key(|(a, t)| (a.min_availability.unwrap_or(0), *t))
        .map(|(a, _)| a.clone());
    Aggregate { availability, class: availability.and_then(AvailabilityClass::from_availability), activity }
}

impl Categories {
    /// Every `state` category as an [`aggregate`] input (a missing `publishTime` counts as the
    /// Unix epoch: oldest).
    pub fn state_instances(&self) -> Vec<StateInstance> {
        self.categories
            .iter()
            .filter_map(|c| match &c.value {
                CategoryValue::State(s) => Some(StateInstance {
                    publish_time: c.publish_time.unwrap_or(Timestamp::UNIX_EPOCH),
                    state: s.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The server's `aggregateState` (what a watcher shows), the newest if several.
    pub fn aggregate_state(&self) -> Option<&State> {
        self.categories
            .iter()
            .filter_map(|c| match &c.value {
                CategoryValue::State(s) if s.kind == StateKind::AggregateState => Some((c.publish_time, s)),
                _ => None,
            })
            .max_by_key(|(t, _)| *t)
            .map(|(_, s)| s)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing.

fn num<T: std::str::FromStr>(s: Option<&str>) -> Option<T> {
    s.and_then(|s| s.trim().parse().ok())
}

/// Parses a categories document (see the module docs).
pub fn parse_categories(body: &[u8]) -> Result<Categories, MsrtcError> {
    let root = xml::parse(body, Some("categories"))?;
    let mut doc = Categories { uri: id(root.attr("uri").unwrap_or("")), categories: Vec::new() };
    for c in root.children_named("category") {
        if doc.categories.len() >= MAX_CATEGORIES {
            return Err(MsrtcError::TooMany { what: "categories", max: MAX_CATEGORIES });
        }
        doc.categories.push(category(c));
    }
    Ok(doc)
}

fn category(el: &Element) -> Category {
    let instance = el
        .attr("instance")
        .map(str::trim)
        .and_then(|s| s.parse::<u64>().ok().or_else(|| s.parse::<i64>().ok().map(|i| i as u64)));
    let value = match el.children.first() {
        Some(v) if v.name == "state" => CategoryValue::State(state(v)),
        Some(v) if v.name == "note" => {
            CategoryValue::Note(v.children_named("body").take(MAX_NOTE_BODIES).map(note_body).collect())
        }
        Some(v) if v.name == "calendarData" => CategoryValue::CalendarData(calendar_data(v)),
        _ => CategoryValue::Other,
    };
    Category {
        name: id(el.attr("name").unwrap_or("")),
        instance: instance.unwrap_or(0),
        publish_time: el.attr("publishTime").and_then(parse_time),
        container: num(el.attr("container")),
        version: num(el.attr("version")),
        expire_type: opt_id(el.attr("expireType")),
        value,
    }
}

fn opt_note(s: Option<&str>) -> Option<String> {
    s.map(note).filter(|s| !s.is_empty())
}

fn state(el: &Element) -> State {
    State {
        kind: StateKind::parse(el.attr("type").unwrap_or("")),
        availability: num(el.child_text("availability")),
        activity: el.child("activity").map(|a| Activity {
            token: opt_id(a.attr("token")),
            min_availability: num(a.attr("minAvailability")),
            max_availability: num(a.attr("maxAvailability")),
            custom: a
                .children_named("custom")
                .filter_map(|c| {
                    let text = note(&c.text);
                    (!text.is_empty()).then(|| CustomText { lcid: num(c.attr("LCID")), text })
                })
                .take(MAX_CUSTOM_TEXTS)
                .collect(),
        }),
        manual: el.attr("manual").and_then(parse_bool),
        start_time: el.attr("startTime").and_then(parse_time),
        uri: opt_id(el.attr("uri")),
        last_active: el.attr("lastActive").and_then(parse_time),
        meeting_subject: opt_note(el.child_text("meetingSubject")),
        meeting_location: opt_note(el.child_text("meetingLocation")),
        device: opt_id(el.child_text("device")),
    }
}

fn note_body(el: &Element) -> NoteBody {
    let kind = match el.attr("type").map(str::trim) {
        None => NoteKind::Personal,
        Some(t) if t.eq_ignore_ascii_case("personal") => NoteKind::Personal,
        Some(t) if t.eq_ignore_ascii_case("OOF") => NoteKind::Oof,
        Some(t) => NoteKind::Other(truncate(t, 64).to_string()),
    };
    NoteBody {
        kind,
        text: note(&el.text),
        lcid: num(el.attr("LCID")),
        start_time: el.attr("startTime").and_then(parse_time),
        end_time: el.attr("endTime").and_then(parse_time),
        uri: opt_id(el.attr("uri")),
    }
}

fn calendar_data(el: &Element) -> CalendarData {
    CalendarData {
        mailbox_id: opt_id(el.attr("mailboxID")),
        free_busy: el.child("freeBusy").map(|f| FreeBusy {
            start_time: f.attr("startTime").and_then(parse_time),
            granularity_minutes: f.attr("granularity").and_then(granularity).unwrap_or(15),
            encoding_version: num(f.attr("encodingVersion")),
            slots: decode_free_busy(&f.text),
        }),
    }
}

/// `PT15M` / `PT1H` / `PT1H30M` → minutes (1 minute to 1 day).
fn granularity(s: &str) -> Option<u32> {
    let rest = s.trim().strip_prefix("PT")?;
    let (mut minutes, mut num) = (0u32, String::new());
    for c in rest.chars() {
        match c {
            '0'..='9' if num.len() < 5 => num.push(c),
            'H' => minutes += num.parse::<u32>().ok()? * 60,
            'M' => minutes += num.parse::<u32>().ok()?,
            _ => return None,
        }
        if !c.is_ascii_digit() {
            num.clear();
        }
    }
    (num.is_empty() && (1..=1440).contains(&minutes)).then_some(minutes)
}

/// Base64 → 2-bit slots, least-significant pair first in each byte (SIPE's order).
fn decode_free_busy(text: &str) -> Vec<FreeBusySlot> {
    let Some(bytes) = base64_decode(text) else { return Vec::new() };
    let mut out = Vec::with_capacity((bytes.len() * 4).min(MAX_FREEBUSY_SLOTS));
    for b in bytes {
        for shift in [0, 2, 4, 6] {
            if out.len() >= MAX_FREEBUSY_SLOTS {
                return out;
            }
            out.push(match (b >> shift) & 3 {
                0 => FreeBusySlot::Free,
                1 => FreeBusySlot::Tentative,
                2 => FreeBusySlot::Busy,
                _ => FreeBusySlot::Oof,
            });
        }
    }
    out
}

/// Slots → base64, least-significant pair first; the last byte is padded with free slots.
fn encode_free_busy(slots: &[FreeBusySlot]) -> String {
    let bytes: Vec<u8> = slots
        .chunks(4)
        .map(|c| {
            c.iter().enumerate().fold(0u8, |b, (i, s)| {
                let v = match s {
                    FreeBusySlot::Free => 0,
                    FreeBusySlot::Tentative => 1,
                    FreeBusySlot::Busy => 2,
                    FreeBusySlot::Oof => 3,
                };
                b | (v << (2 * i))
            })
        })
        .collect();
    base64_encode(&bytes)
}

// ---------------------------------------------------------------------------------------------
// Building.

/// Builds a categories document as an SfB front end sends it to a watcher: `http://`
/// namespaces, `publishTime` in UTC with milliseconds and no offset, `container`, `version`
/// and `expireType` only when set. Everything [`parse_categories`] reads is written, so
/// build → parse gives the same value back (publish times to the millisecond; free/busy
/// streams padded to whole bytes with free slots). [`CategoryValue::Other`] is written as an
/// empty category.
pub fn build_categories(doc: &Categories) -> String {
    let mut x = String::with_capacity(512 + doc.categories.len() * 512);
    let _ = write!(
        x,
        r#"<?xml version="1.0" encoding="utf-8"?>
<categories xmlns="{NS_CATEGORIES}" uri="{}">"#,
        escape(&doc.uri)
    );
    for c in &doc.categories {
        let _ = write!(x, r#"<category name="{}" instance="{}""#, escape(&c.name), c.instance);
        if let Some(t) = c.publish_time {
            let _ = write!(x, r#" publishTime="{}""#, format_time_ms_naive(t));
        }
        if let Some(v) = c.container {
            let _ = write!(x, r#" container="{v}""#);
        }
        if let Some(v) = c.version {
            let _ = write!(x, r#" version="{v}""#);
        }
        if let Some(v) = &c.expire_type {
            let _ = write!(x, r#" expireType="{}""#, escape(v));
        }
        x.push('>');
        match &c.value {
            CategoryValue::State(s) => write_state(&mut x, s),
            CategoryValue::Note(bodies) => {
                let _ = write!(x, r#"<note xmlns="{NS_NOTE}">"#);
                for b in bodies {
                    write_note_body(&mut x, b);
                }
                x.push_str("</note>");
            }
            CategoryValue::CalendarData(cd) => write_calendar_data(&mut x, cd),
            CategoryValue::Other => {}
        }
        x.push_str("</category>");
    }
    x.push_str("</categories>");
    x
}

fn write_state(x: &mut String, s: &State) {
    let _ = write!(x, r#"<state xmlns="{NS_STATE}" xmlns:xsi="{NS_XSI}" xsi:type="{}""#, escape(s.kind.as_str()));
    if let Some(m) = s.manual {
        let _ = write!(x, r#" manual="{m}""#);
    }
    if let Some(t) = s.start_time {
        let _ = write!(x, r#" startTime="{}""#, format_time(t));
    }
    if let Some(u) = &s.uri {
        let _ = write!(x, r#" uri="{}""#, escape(u));
    }
    if let Some(t) = s.last_active {
        let _ = write!(x, r#" lastActive="{}""#, format_time(t));
    }
    x.push('>');
    if let Some(a) = s.availability {
        let _ = write!(x, "<availability>{a}</availability>");
    }
    if let Some(a) = &s.activity {
        x.push_str("<activity");
        if let Some(t) = &a.token {
            let _ = write!(x, r#" token="{}""#, escape(t));
        }
        if let Some(v) = a.min_availability {
            let _ = write!(x, r#" minAvailability="{v}""#);
        }
        if let Some(v) = a.max_availability {
            let _ = write!(x, r#" maxAvailability="{v}""#);
        }
        if a.custom.is_empty() {
            x.push_str("/>");
        } else {
            x.push('>');
            for c in &a.custom {
                x.push_str("<custom");
                if let Some(l) = c.lcid {
                    let _ = write!(x, r#" LCID="{l}""#);
                }
                x.push('>');
                push_escaped(x, &c.text);
                x.push_str("</custom>");
            }
            x.push_str("</activity>");
        }
    }
    for (tag, v) in [("meetingSubject", &s.meeting_subject), ("meetingLocation", &s.meeting_location)] {
        if let Some(v) = v {
            let _ = write!(x, "<{tag}>{}</{tag}>", escape(v));
        }
    }
    let _ = write!(x, r#"<delimiter xmlns="{NS_COMMON_TYPES}"/>"#);
    if let Some(d) = &s.device {
        let _ = write!(x, "<device>{}</device>", escape(d));
    }
    let _ = write!(x, r#"<end xmlns="{NS_COMMON_TYPES}"/></state>"#);
}

fn write_note_body(x: &mut String, b: &NoteBody) {
    let kind = match &b.kind {
        NoteKind::Personal => "personal",
        NoteKind::Oof => "OOF",
        NoteKind::Other(s) => s,
    };
    let _ = write!(x, r#"<body type="{}""#, escape(kind));
    if let Some(u) = &b.uri {
        let _ = write!(x, r#" uri="{}""#, escape(u));
    }
    if let Some(l) = b.lcid {
        let _ = write!(x, r#" LCID="{l}""#);
    }
    if let Some(t) = b.start_time {
        let _ = write!(x, r#" startTime="{}""#, format_time(t));
    }
    if let Some(t) = b.end_time {
        let _ = write!(x, r#" endTime="{}""#, format_time(t));
    }
    x.push('>');
    push_escaped(x, &b.text);
    x.push_str("</body>");
}

fn write_calendar_data(x: &mut String, cd: &CalendarData) {
    let _ = write!(x, r#"<calendarData xmlns="{NS_CALENDAR_DATA}""#);
    if let Some(m) = &cd.mailbox_id {
        let _ = write!(x, r#" mailboxID="{}""#, escape(m));
    }
    x.push('>');
    if let Some(f) = &cd.free_busy {
        x.push_str("<freeBusy");
        if let Some(t) = f.start_time {
            let _ = write!(x, r#" startTime="{}""#, format_time(t));
        }
        let _ = write!(x, r#" granularity="PT{}M""#, f.granularity_minutes);
        if let Some(v) = f.encoding_version {
            let _ = write!(x, r#" encodingVersion="{v}""#);
        }
        let _ = write!(x, ">{}</freeBusy>", encode_free_busy(&f.slots));
    }
    x.push_str("</calendarData>");
}

// ---------------------------------------------------------------------------------------------
// batchSub.

/// The body of a batched category subscription ([MS-PRES] §2.2.2.4.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchSub {
    /// `batchSub@uri`: the subscriber (the SUBSCRIBE goes to self).
    pub uri: String,
    /// `action@name`.
    pub action: BatchAction,
    /// `action@id`.
    pub action_id: String,
    /// `adhocList/resource@uri`: the presentities.
    pub resources: Vec<String>,
    /// `categoryList/category@name`: the categories wanted.
    pub categories: Vec<String>,
}

/// `subscribe` or `unsubscribe`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BatchAction {
    /// `subscribe`.
    #[default]
    Subscribe,
    /// `unsubscribe`.
    Unsubscribe,
}

/// The categories SIPE and the Lync client subscribe to.
pub const DEFAULT_CATEGORIES: [&str; 5] = ["calendarData", "contactCard", "note", "services", "state"];

/// Builds a batchSub body (`Content-Type:` [`BATCH_SUB_CONTENT_TYPE`]).
pub fn build_batch_sub(b: &BatchSub) -> String {
    let mut x = String::with_capacity(400 + b.resources.len() * 48);
    let action = match b.action {
        BatchAction::Subscribe => "subscribe",
        BatchAction::Unsubscribe => "unsubscribe",
    };
    let _ = write!(
        x,
        r#"<?xml version="1.0" encoding="utf-8"?>
<batchSub xmlns="{NS_BATCH_SUBSCRIBE}" uri="{}" name=""><action name="{action}" id="{}"><adhocList>"#,
        escape(&b.uri),
        escape(&b.action_id)
    );
    for r in &b.resources {
        let _ = write!(x, r#"<resource uri="{}"/>"#, escape(r));
    }
    x.push_str("</adhocList>");
    if !b.categories.is_empty() {
        let _ = write!(x, r#"<categoryList xmlns="{NS_CATEGORY_LIST}">"#);
        for c in &b.categories {
            let _ = write!(x, r#"<category name="{}"/>"#, escape(c));
        }
        x.push_str("</categoryList>");
    }
    x.push_str("</action></batchSub>");
    x
}

/// Parses a batchSub body (the first `action`).
pub fn parse_batch_sub(body: &[u8]) -> Result<BatchSub, MsrtcError> {
    let root = xml::parse(body, Some("batchSub"))?;
    let action = root.child("action").ok_or(MsrtcError::BadBatchSub("no action"))?;
    let name = action.attr("name").unwrap_or("").trim();
    let kind = if name.eq_ignore_ascii_case("subscribe") {
        BatchAction::Subscribe
    } else if name.eq_ignore_ascii_case("unsubscribe") {
        BatchAction::Unsubscribe
    } else {
        return Err(MsrtcError::BadBatchSub("action is neither subscribe nor unsubscribe"));
    };
    let mut resources = Vec::new();
    if let Some(list) = action.child("adhocList") {
        for r in list.children_named("resource") {
            if resources.len() >= MAX_BATCH_RESOURCES {
                return Err(MsrtcError::TooMany { what: "resources", max: MAX_BATCH_RESOURCES });
            }
            if let Some(uri) = opt_id(r.attr("uri")) {
                resources.push(uri);
            }
        }
    }
    let categories = action
        .child("categoryList")
        .map(|l| {
            l.children_named("category").filter_map(|c| opt_id(c.attr("name"))).take(MAX_BATCH_CATEGORIES).collect()
        })
        .unwrap_or_default();
    Ok(BatchSub {
        uri: id(root.attr("uri").unwrap_or("")),
        action: kind,
        action_id: id(action.attr("id").unwrap_or("")),
        resources,
        categories,
    })
}

#[cfg(test)]
mod tests;
