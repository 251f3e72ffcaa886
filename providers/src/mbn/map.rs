//! From MBN's events and status list ([`super::parse`]) to the hub's signals: per-person state
//! and the signals it implies — pure: no I/O, no clock (the time is passed in), never panics.
//!
//! A person has one [`Line`] per MBN number (device) that resolves to them. A line holds the
//! device status, the calls in progress (from the CSTA call events) and the absences. Two
//! signals come out per person:
//!
//! - instance `{name}` (the provider's name, [`Instances::first`]), the phone: a call up →
//!   Busy/InACall, ringing → Busy/Ringing, `BUSY` → Busy/InACall (MBN's "busy" is busy on the
//!   phone), `AVAILABLE` → Available, `OFFLINE` → Offline (the device says so: switched off, no
//!   coverage). With several lines the busiest wins, and Offline only when every known line is
//!   offline. Nothing known → a retraction. A lost feed is never Offline: the runtime marks the
//!   feed down (stale).
//! - instance `{name}-absence` ([`Instances::second`]): the current absence (the active one that
//!   started last, else the next scheduled one) through the hub's absence reason list —
//!   availability, activity and out-of-office from the reason, the note from the absence text,
//!   `valid_from`/`valid_until` from its times. No absence → a retraction.
//!
//! Ordering: a status snapshot (resync) stamps each line with its `updated` time, and events
//! stamped earlier than that are superseded (they were queued before the snapshot was taken).

use std::collections::{BTreeMap, HashMap};

use crate::common::slots;
use presence_actors::model::{AbsenceReason, Activity, Availability, Signal, Source, UnixMs};

use super::parse::{self, Absence, CallState, DeviceStatus, Event, EventKind, UserStatus};

/// The instances of a provider's two slots per person: the phone ([`Instances::first`], the
/// provider's name) and the absence ([`Instances::second`], `{name}-absence`).
pub type Instances = slots::Instances<slots::AbsenceSlot>;

/// Most calls tracked per line (more are ignored until some clear).
pub const MAX_CALLS_PER_LINE: usize = 16;
/// Most lines (numbers) kept per person.
pub const MAX_LINES_PER_PERSON: usize = 16;

/// What a person's phone(s) say, least to most telling (the busiest line wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phone {
    /// Nothing known.
    Unknown,
    /// The device reports offline.
    Offline,
    /// Available.
    Available,
    /// Busy on the phone (device status, no call event seen).
    Busy,
    /// A call is ringing.
    Ringing,
    /// A call is up.
    InACall,
}

impl Phone {
    /// The phone signal (instance [`Instances::first`]); [`Phone::Unknown`] gives a retraction.
    pub fn signal(self, instances: &Instances, now: UnixMs) -> Signal {
        let (a, act) = match self {
            Phone::Unknown => (None, None),
            Phone::Offline => (Some(Availability::Offline), None),
            Phone::Available => (Some(Availability::Available), None),
            Phone::Busy | Phone::InACall => (Some(Availability::Busy), Some(Activity::InACall)),
            Phone::Ringing => (Some(Availability::Busy), Some(Activity::Ringing)),
        };
        let s = Signal::new(Source::Mobile, &instances.first, a, now);
        match act {
            Some(act) => s.with_activity(act),
            None => s,
        }
    }

    /// Name for health details.
    pub fn as_str(self) -> &'static str {
        match self {
            Phone::Unknown => "unknown",
            Phone::Offline => "offline",
            Phone::Available => "available",
            Phone::Busy => "busy",
            Phone::Ringing => "ringing",
            Phone::InACall => "in_a_call",
        }
    }
}

/// One MBN number (device) of a person.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Line {
    /// The device status; `None` until known.
    pub status: Option<DeviceStatus>,
    /// Calls in progress: call id → ringing or connected.
    pub calls: HashMap<String, CallState>,
    /// Events stamped before this time are superseded (the snapshot's `updated`).
    pub since: Option<UnixMs>,
    /// Current and scheduled absences.
    pub absences: Vec<Absence>,
}

impl Line {
    /// What this line says.
    pub fn phone(&self) -> Phone {
        if self.calls.values().any(|c| *c == CallState::Connected) {
            return Phone::InACall;
        }
        if !self.calls.is_empty() {
            return Phone::Ringing;
        }
        match self.status {
            Some(DeviceStatus::Available) => Phone::Available,
            Some(DeviceStatus::Busy) => Phone::Busy,
            Some(DeviceStatus::Offline) => Phone::Offline,
            Some(DeviceStatus::Other(_)) | None => Phone::Unknown,
        }
    }

    /// A line as a status snapshot describes it.
    pub fn from_status(u: &UserStatus) -> Line {
        let status = u.status.clone().filter(|s| !matches!(s, DeviceStatus::Other(_)));
        Line { status, calls: HashMap::new(), since: u.updated, absences: u.absences.clone() }
    }
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The state took it.
    Applied,
    /// Older than the last snapshot of the line: dropped.
    Superseded,
    /// Nothing to do with it (unknown event type or status, a removal of an unknown absence,
    /// too many calls).
    Ignored,
}

/// Everything known about one person, and what was last sent for them.
#[derive(Debug, Clone, Default)]
pub struct Person {
    /// Lines by number.
    pub lines: HashMap<String, Line>,
    /// The phone state last sent (`None`: nothing sent yet).
    pub sent_phone: Option<Phone>,
    /// The absence last sent (`None`: none, or retracted).
    pub sent_absence: Option<Absence>,
}

impl Person {
    /// Applies one event to the line `line` (created when new).
    pub fn apply(&mut self, line: &str, ev: &Event) -> Outcome {
        if !self.lines.contains_key(line) && self.lines.len() >= MAX_LINES_PER_PERSON {
            return Outcome::Ignored;
        }
        if let (Some(at), Some(since)) = (ev.at, self.lines.get(line).and_then(|l| l.since)) {
            if at < since {
                return Outcome::Superseded;
            }
        }
        if let EventKind::AbsenceRemoved { absence_id } = &ev.kind {
            // Wherever it is (an absence belongs to the user, not to one device).
            let mut found = false;
            for l in self.lines.values_mut() {
                let before = l.absences.len();
                l.absences.retain(|a| a.id != *absence_id);
                found |= l.absences.len() != before;
            }
            return if found { Outcome::Applied } else { Outcome::Ignored };
        }
        if let EventKind::Absence(a) = &ev.kind {
            for l in self.lines.values_mut() {
                if let Some(x) = l.absences.iter_mut().find(|x| x.id == a.id) {
                    *x = a.clone();
                    return Outcome::Applied;
                }
            }
        }
        let l = self.lines.entry(line.to_string()).or_default();
        match &ev.kind {
            EventKind::DeviceStatus(DeviceStatus::Other(_)) | EventKind::Other(_) => Outcome::Ignored,
            EventKind::DeviceStatus(s) => {
                // A device that says it is free or off has no call up, whatever we missed.
                if matches!(s, DeviceStatus::Available | DeviceStatus::Offline) {
                    l.calls.clear();
                }
                l.status = Some(s.clone());
                Outcome::Applied
            }
            EventKind::Call { call_id, state: CallState::Cleared } => {
                l.calls.remove(call_id);
                Outcome::Applied
            }
            EventKind::Call { call_id, state } => {
                if !l.calls.contains_key(call_id) && l.calls.len() >= MAX_CALLS_PER_LINE {
                    return Outcome::Ignored;
                }
                l.calls.insert(call_id.clone(), *state);
                Outcome::Applied
            }
            EventKind::Absence(a) => {
                if l.absences.len() >= parse::MAX_ABSENCES {
                    // Make room: the one that ends first goes.
                    if let Some(i) = (0..l.absences.len()).min_by_key(|&i| l.absences[i].to.unwrap_or(UnixMs::MAX)) {
                        l.absences.swap_remove(i);
                    }
                }
                l.absences.push(a.clone());
                Outcome::Applied
            }
            EventKind::AbsenceRemoved { .. } => Outcome::Ignored,
        }
    }

    /// What the person's phones say: the busiest line.
    pub fn phone(&self) -> Phone {
        self.lines.values().map(Line::phone).max().unwrap_or(Phone::Unknown)
    }

    /// The absence to show at `now`: the active one that started last (ties: the one that ends
    /// last), else the next scheduled one; ended ones are skipped.
    pub fn current_absence(&self, now: UnixMs) -> Option<&Absence> {
        let all = || self.lines.values().flat_map(|l| l.absences.iter()).filter(|a| a.to.is_none_or(|t| t > now));
        let active = all().filter(|a| a.from.is_none_or(|f| f <= now)).max_by(|a, b| {
            (a.from, a.to.unwrap_or(UnixMs::MAX), &b.id).cmp(&(b.from, b.to.unwrap_or(UnixMs::MAX), &a.id))
        });
        active.or_else(|| all().min_by(|a, b| (a.from, &a.id).cmp(&(b.from, &b.id))))
    }

    /// Forgets absences that ended at or before `now`.
    pub fn prune(&mut self, now: UnixMs) {
        for l in self.lines.values_mut() {
            l.absences.retain(|a| a.to.is_none_or(|t| t > now));
        }
    }

    /// True when any line has an absence.
    pub fn has_absences(&self) -> bool {
        self.lines.values().any(|l| !l.absences.is_empty())
    }
}

/// MBN absence types → the hub's absence reasons.
#[derive(Debug, Clone)]
pub struct Reasons {
    map: HashMap<String, String>,
    list: Vec<AbsenceReason>,
}

impl Reasons {
    /// [`parse::DEFAULT_ABSENCE_REASONS`] with `overrides` (MBN type → reason code) on top,
    /// looked up in the hub's reason list `list` (falling back to the built-in defaults).
    pub fn new(overrides: &BTreeMap<String, String>, list: &[AbsenceReason]) -> Reasons {
        let mut map: HashMap<String, String> =
            parse::DEFAULT_ABSENCE_REASONS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        for (k, v) in overrides {
            if let Some(k) = parse::absence_kind(k) {
                map.insert(k, v.trim().to_string());
            }
        }
        Reasons { map, list: list.to_vec() }
    }

    /// The reason code for an MBN absence type (`other` when the type is not mapped).
    pub fn code_for(&self, kind: &str) -> &str {
        self.map.get(kind).or_else(|| self.map.get("other")).map_or("other", String::as_str)
    }

    /// The reason for an MBN absence type: its code in the hub's list, else in the built-in
    /// defaults, else `other`, else plain Away.
    pub fn reason_for(&self, kind: &str) -> AbsenceReason {
        let code = self.code_for(kind);
        let find = |list: &[AbsenceReason], code: &str| list.iter().find(|r| &*r.code == code).cloned();
        let defaults = AbsenceReason::defaults();
        find(&self.list, code).or_else(|| find(&defaults, code)).or_else(|| find(&self.list, "other")).unwrap_or_else(
            || AbsenceReason {
                code: "other".into(),
                label_sv: "Annat".into(),
                label_en: "Other".into(),
                availability: Some(Availability::Away),
                activity: None,
                ooo: false,
            },
        )
    }

    /// Mapped reason codes the hub's list does not have (worth a warning: the built-in
    /// default of that code is used).
    pub fn missing_codes(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.map.values().filter(|c| !self.list.iter().any(|r| *r.code == ***c)).cloned().collect();
        v.sort();
        v.dedup();
        v
    }
}

/// The absence signal (instance [`Instances::second`]) for `absence` (none: a retraction).
pub fn absence_signal(absence: Option<&Absence>, reasons: &Reasons, instances: &Instances, now: UnixMs) -> Signal {
    let Some(a) = absence else { return Signal::new(Source::Mobile, &instances.second, None, now) };
    let r = reasons.reason_for(&a.kind);
    let mut s = Signal::new(Source::Mobile, &instances.second, r.availability, now).valid(a.from, a.to);
    s.activity = r.activity;
    s.ooo = r.ooo;
    if let Some(t) = &a.text {
        s = s.note(t);
    }
    if s.is_retraction() {
        // A reason that says nothing and no text: still say "absent" rather than nothing.
        s.note = Some(r.label_en.clone());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_actors::model::parse_rfc3339;

    fn ms(s: &str) -> UnixMs {
        parse_rfc3339(s).unwrap()
    }

    fn ev(kind: EventKind, at: Option<&str>) -> Event {
        Event {
            id: None,
            party: parse::Party { user_id: None, msisdn: Some("+46700000001".into()) },
            at: at.map(ms),
            kind,
        }
    }

    fn call(id: &str, state: CallState) -> EventKind {
        EventKind::Call { call_id: id.into(), state }
    }

    fn absence(id: &str, kind: &str, from: Option<&str>, to: Option<&str>) -> Absence {
        Absence {
            id: id.into(),
            kind: kind.into(),
            from: from.map(ms),
            to: to.map(ms),
            text: Some(format!("{kind} text")),
        }
    }

    #[test]
    fn calls_and_device_status_make_the_phone_state() {
        let mut p = Person::default();
        assert_eq!(p.phone(), Phone::Unknown);
        p.apply("n1", &ev(EventKind::DeviceStatus(DeviceStatus::Available), None));
        assert_eq!(p.phone(), Phone::Available);
        p.apply("n1", &ev(call("c1", CallState::Ringing), None));
        assert_eq!(p.phone(), Phone::Ringing);
        p.apply("n1", &ev(call("c1", CallState::Connected), None));
        assert_eq!(p.phone(), Phone::InACall);
        p.apply("n1", &ev(call("c1", CallState::Cleared), None));
        assert_eq!(p.phone(), Phone::Available);
        p.apply("n1", &ev(EventKind::DeviceStatus(DeviceStatus::Busy), None));
        assert_eq!(p.phone(), Phone::Busy);
        // A second line in a call outranks the first; Offline only when every line is off.
        p.apply("n2", &ev(call("c2", CallState::Connected), None));
        assert_eq!(p.phone(), Phone::InACall);
        p.apply("n1", &ev(EventKind::DeviceStatus(DeviceStatus::Offline), None));
        assert_eq!(p.phone(), Phone::InACall);
        p.apply("n2", &ev(EventKind::DeviceStatus(DeviceStatus::Offline), None));
        assert_eq!(p.phone(), Phone::Offline, "OFFLINE clears the calls it contradicts");
        assert_eq!(
            p.apply("n2", &ev(EventKind::DeviceStatus(DeviceStatus::Other("DND".into())), None)),
            Outcome::Ignored
        );
    }

    #[test]
    fn phone_signals_map_onto_the_model() {
        let s = Phone::InACall.signal(&Instances::of("mbn"), 5);
        assert_eq!((s.source, &*s.instance), (Source::Mobile, "mbn"));
        assert_eq!((s.availability, s.activity), (Some(Availability::Busy), Some(Activity::InACall)));
        assert_eq!(Phone::Busy.signal(&Instances::of("mbn"), 5).activity, Some(Activity::InACall));
        assert_eq!(Phone::Ringing.signal(&Instances::of("mbn"), 5).activity, Some(Activity::Ringing));
        assert_eq!(Phone::Available.signal(&Instances::of("mbn"), 5).availability, Some(Availability::Available));
        assert_eq!(Phone::Offline.signal(&Instances::of("mbn"), 5).availability, Some(Availability::Offline));
        assert!(Phone::Unknown.signal(&Instances::of("mbn"), 5).is_retraction());
    }

    #[test]
    fn events_older_than_the_snapshot_are_superseded() {
        let u = UserStatus {
            party: parse::Party::default(),
            status: Some(DeviceStatus::Busy),
            updated: Some(ms("2026-03-02T10:00:00Z")),
            absences: vec![],
            bad_absences: 0,
        };
        let mut p = Person::default();
        p.lines.insert("n1".into(), Line::from_status(&u));
        let old = ev(EventKind::DeviceStatus(DeviceStatus::Available), Some("2026-03-02T09:59:59Z"));
        assert_eq!(p.apply("n1", &old), Outcome::Superseded);
        assert_eq!(p.phone(), Phone::Busy);
        let same = ev(EventKind::DeviceStatus(DeviceStatus::Available), Some("2026-03-02T10:00:00Z"));
        assert_eq!(p.apply("n1", &same), Outcome::Applied);
        assert_eq!(p.phone(), Phone::Available);
    }

    #[test]
    fn the_current_absence_is_the_latest_active_else_the_next() {
        let mut p = Person::default();
        let holiday = absence("a1", "holiday", Some("2026-07-01T00:00:00Z"), Some("2026-07-20T00:00:00Z"));
        let meeting = absence("a2", "meeting", Some("2026-03-02T09:00:00Z"), Some("2026-03-02T10:00:00Z"));
        let lunch = absence("a3", "lunch", Some("2026-03-02T09:30:00Z"), Some("2026-03-02T09:45:00Z"));
        for a in [&holiday, &meeting, &lunch] {
            assert_eq!(p.apply("n1", &ev(EventKind::Absence(a.clone()), None)), Outcome::Applied);
        }
        assert_eq!(p.current_absence(ms("2026-03-02T08:00:00Z")).map(|a| &*a.id), Some("a2"), "next");
        assert_eq!(p.current_absence(ms("2026-03-02T09:10:00Z")).map(|a| &*a.id), Some("a2"));
        assert_eq!(p.current_absence(ms("2026-03-02T09:40:00Z")).map(|a| &*a.id), Some("a3"), "latest start");
        assert_eq!(p.current_absence(ms("2026-03-02T09:50:00Z")).map(|a| &*a.id), Some("a2"));
        assert_eq!(p.current_absence(ms("2026-03-02T10:00:00Z")).map(|a| &*a.id), Some("a1"), "ends on time");
        // An update replaces, a removal removes (on whichever line it is).
        let mut moved = holiday.clone();
        moved.text = Some("Moved".into());
        p.apply("n2", &ev(EventKind::Absence(moved), None));
        assert_eq!(p.lines["n1"].absences.iter().find(|a| a.id == "a1").unwrap().text.as_deref(), Some("Moved"));
        assert_eq!(p.apply("n2", &ev(EventKind::AbsenceRemoved { absence_id: "a1".into() }, None)), Outcome::Applied);
        assert_eq!(p.apply("n2", &ev(EventKind::AbsenceRemoved { absence_id: "a1".into() }, None)), Outcome::Ignored);
        p.prune(ms("2026-03-02T12:00:00Z"));
        assert!(!p.has_absences());
    }

    #[test]
    fn absences_map_through_the_reason_list() {
        let list = AbsenceReason::defaults();
        let mut overrides = BTreeMap::new();
        overrides.insert("COURSE".to_string(), "meeting".to_string());
        let r = Reasons::new(&overrides, &list);
        assert!(r.missing_codes().is_empty());
        let now = ms("2026-03-02T09:00:00Z");
        let cases = [
            ("illness", Some(Availability::Away), Some(Activity::Sick), true),
            ("holiday", Some(Availability::Away), Some(Activity::Vacation), true),
            ("meeting", Some(Availability::Busy), Some(Activity::InAMeeting), false),
            ("lunch", Some(Availability::Away), Some(Activity::Lunch), false),
            ("course", Some(Availability::Busy), Some(Activity::InAMeeting), false),
            ("something_new", Some(Availability::Away), None, false),
        ];
        for (kind, a, act, ooo) in cases {
            let abs = absence("x", kind, Some("2026-03-02T08:00:00Z"), Some("2026-03-02T17:00:00Z"));
            let s = absence_signal(Some(&abs), &r, &Instances::of("mbn"), now);
            assert_eq!((s.source, &*s.instance), (Source::Mobile, "mbn-absence"));
            assert_eq!((s.availability, s.activity.clone(), s.ooo), (a, act, ooo), "{kind}");
            assert_eq!(s.note.as_deref(), Some(format!("{kind} text").as_str()));
            assert_eq!((s.valid_from, s.valid_until), (abs.from, abs.to));
        }
        assert!(absence_signal(None, &r, &Instances::of("mbn"), now).is_retraction());
        // A hub whose list lacks a mapped code: the built-in default stands in.
        let short: Vec<AbsenceReason> = list.iter().filter(|x| &*x.code != "sick").cloned().collect();
        let r = Reasons::new(&BTreeMap::new(), &short);
        assert_eq!(r.missing_codes(), vec!["sick".to_string()]);
        assert_eq!(r.reason_for("illness").activity, Some(Activity::Sick));
    }
}
