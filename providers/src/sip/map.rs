//! Pure mapping of SIP presence bodies to the hub's signals (no I/O).
//!
//! PIDF/RPID (RFC 3863/4480) → `sip` signals:
//!
//! | document says | availability | activity |
//! |---|---|---|
//! | `on-the-phone` | Busy | InACall |
//! | `busy` | Busy | — |
//! | `meeting`, `appointment` | Busy | InAMeeting |
//! | `presentation`, `performance` | DoNotDisturb | Presenting |
//! | `vacation`, `holiday` | Away (+ out of office) | Vacation |
//! | `meal`, `breakfast`, `dinner` | BeRightBack | Lunch |
//! | `away`, `in-transit`, `travel`, `steering`, `shopping` | Away | — (travel etc. as text) |
//! | `sleeping`, `permanent-absence` | Away | OffWork |
//! | `other` text | from `basic` | Other(text) |
//! | only `basic` open / closed | Available / Offline | — |
//! | open + `user-input` idle | AvailableIdle (BusyIdle when busy) | Inactive |
//!
//! When several activities are present the least available wins, as in the merge policy. The
//! note is the person's note, else the document's, else a tuple's. An empty body (no
//! publication left at the server) retracts the source: it has no opinion, it does not mean
//! Offline.
//!
//! Timed elements (RFC 4480 §3.2): an `activities` element counts only inside its
//! `from`/`until` period at the time of mapping ([`pidf::Activities::holds_at`]); outside it
//! the element is ignored and the rest of the document (`basic`, other elements) still counts.
//! Sources re-send the same document on every refresh, so "meal until 13:00" read at 14:00 is
//! just `open`. The next time an element's period starts or ends becomes the signal's
//! `valid_until`: a signal has one state for one period, so an element that starts later
//! (future `from`) is not shown in advance; the signal ends when it starts, and the next
//! document (NOTIFY, PUBLISH refresh) read after that shows it.
//!
//! dialog-info (RFC 4235) → `pbx` signals through [`DialogTracker`]: a ringing dialog is
//! Busy/Ringing, a confirmed one Busy/InACall, none Available — the lamp of a desk phone.
//!
//! Skype for Business categories ([MS-PRES] §2.2.2, §3.8.5.1.2) → `sfb` signals
//! ([`sfb_signal`]):
//!
//! * State: the server's `aggregateState` (what a watcher is meant to show); without one, the
//!   `state` instances are aggregated with the server's rules (`msrtc::aggregate`).
//! * Availability by range ([`sfb_availability`], the hub's `Availability::from_sfb`):
//!   3000–4499 Available, 4500–5999 AvailableIdle, 6000–7499 Busy (6900 included), 7500–8999
//!   BusyIdle, 9000–11999 DoNotDisturb, 12000–14999 BeRightBack, 15000–17999 Away, ≥ 18000
//!   Offline. 0 or absent is "no opinion" (`None`), and so is 1–2999: the hub's model reads the
//!   older docs' lower bound of 3000 (the SIP crate's `AvailabilityClass` reads it the same
//!   way).
//! * Activity token ([`sfb_activity`]): `on-the-phone` InACall, `in-a-conference`
//!   InAConferenceCall, `in-a-meeting` InAMeeting, `in-presentation`/`presenting` Presenting,
//!   `urgent-interruptions-only` UrgentInterruptionsOnly (also for a bare 6900),
//!   `out-of-office` OutOfOffice + the out-of-office flag, `off-work` OffWork; other tokens as
//!   the hub reads them (`Activity::parse_source`). Custom text: the activity (`Other`) when no
//!   well-known token names one, else a note of last resort.
//! * Notes: an `OOF` body (inside its start/end window when it has one) sets the out-of-office
//!   flag and is the note; else the `personal` body; whitespace runs collapse to one space and
//!   the text is bounded.
//! * `calendarState` meeting subject and location go only into the signal's private detail,
//!   and only when `keep_details` is set (the hub's detail policy then decides who sees them).
//!
//! [`SfbCategories`] keeps one person's category instances across notifications: a full
//! document replaces them, a delta updates them, an empty category instance deletes one.

use jiff::Timestamp;
use presence_actors::model::activity::truncate;
use presence_actors::model::{Activity, Availability, PrivateDetail, Signal, Source, UnixMs};
use presence_sip::body::dialog_info::{self, ApplyOutcome, DialogTracker, ExtensionState};
use presence_sip::body::msrtc::{self, Categories, Category, CategoryValue, NoteKind, StateKind};
use presence_sip::body::pidf::{self, InputState, PidfDoc};

/// Why a body could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// A content type this source does not read.
    #[error("unsupported content type {0}")]
    ContentType(String),
    /// The body did not parse.
    #[error("{0}")]
    Body(String),
}

/// Compares the media type (parameters such as `charset` ignored).
fn check_type(content_type: Option<&str>, want: &str) -> Result<(), MapError> {
    match content_type {
        Some(ct) if !media_type(ct).eq_ignore_ascii_case(want) => Err(MapError::ContentType(ct.to_string())),
        _ => Ok(()),
    }
}

/// The media type of a `Content-Type` value, without parameters.
pub fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// The signal a PIDF document gives (`None` for an empty body: a retraction is returned as a
/// signal with nothing set).
pub fn presence_signal(content_type: Option<&str>, body: &[u8], instance: &str, now: UnixMs) -> Result<Option<Signal>, MapError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Some(Signal::new(Source::Sip, instance, None, now)));
    }
    check_type(content_type, pidf::CONTENT_TYPE)?;
    let doc = pidf::parse_pidf(body).map_err(|e| MapError::Body(e.to_string()))?;
    Ok(Some(pidf_to_signal(&doc, Source::Sip, instance, now)))
}

/// Maps a parsed PIDF document as it stands at `now` (also used for PUBLISH to the hub):
/// elements outside their `from`/`until` period are ignored (module docs).
pub fn pidf_to_signal(doc: &PidfDoc, source: Source, instance: &str, now: UnixMs) -> Signal {
    let at = Timestamp::from_millisecond(now).unwrap_or_default();
    let mut best: Option<(Availability, Option<Activity>, bool)> = None;
    let mut other: Option<String> = None;
    for a in doc.activities_at(at) {
        use pidf::Activity as R;
        let m: Option<(Availability, Option<Activity>, bool)> = match a {
            R::OnThePhone => Some((Availability::Busy, Some(Activity::InACall), false)),
            R::Busy => Some((Availability::Busy, None, false)),
            R::Meeting | R::Appointment => Some((Availability::Busy, Some(Activity::InAMeeting), false)),
            R::Presentation | R::Performance => Some((Availability::DoNotDisturb, Some(Activity::Presenting), false)),
            R::Vacation | R::Holiday => Some((Availability::Away, Some(Activity::Vacation), true)),
            R::Meal | R::Breakfast | R::Dinner => Some((Availability::BeRightBack, Some(Activity::Lunch), false)),
            R::Away | R::Shopping => Some((Availability::Away, None, false)),
            R::InTransit | R::Travel | R::Steering => Some((Availability::Away, Some(Activity::Other(a.as_str().into())), false)),
            R::Sleeping | R::PermanentAbsence => Some((Availability::Away, Some(Activity::OffWork), false)),
            R::Other(text) => {
                if !text.trim().is_empty() && other.is_none() {
                    other = Some(text.trim().to_string());
                }
                None
            }
            _ => None,
        };
        if let Some(m) = m {
            if best.as_ref().is_none_or(|b| m.0 > b.0 || (m.0 == b.0 && b.1.is_none() && m.1.is_some())) {
                best = Some(m);
            }
        }
    }
    let idle = doc
        .persons
        .iter()
        .filter_map(|p| p.user_input.as_ref())
        .chain(doc.tuples.iter().filter_map(|t| t.user_input.as_ref()))
        .chain(doc.devices.iter().filter_map(|d| d.user_input.as_ref()))
        .any(|u| u.state == InputState::Idle);
    let open = doc.open();
    let (mut availability, mut activity, ooo) = match best {
        Some((a, act, ooo)) => (a, act, ooo),
        None => match open {
            Some(false) => (Availability::Offline, None, false),
            Some(true) | None => (Availability::Available, None, false),
        },
    };
    if idle {
        availability = match availability {
            Availability::Available => Availability::AvailableIdle,
            Availability::Busy => Availability::BusyIdle,
            a => a,
        };
        if activity.is_none() && availability == Availability::AvailableIdle {
            activity = Some(Activity::Inactive);
        }
    }
    if activity.is_none() {
        activity = other.map(|t| Activity::Other(t.into()));
    }
    let until = doc.next_change(at).map(|t| t.as_millisecond()).filter(|t| *t > now);
    let mut s = Signal::new(source, instance, Some(availability), now);
    s.activity = activity;
    s.ooo = ooo;
    s.valid_until = until;
    if let Some(n) = doc.note() {
        s = s.note(n);
    }
    s
}

/// The `pbx` signal after a dialog-info NOTIFY (`None`: nothing new — an empty body, or a
/// version not newer than the last one, which RFC 4235 §4.1 says to discard).
pub fn dialog_signal(
    content_type: Option<&str>,
    body: &[u8],
    tracker: &mut DialogTracker,
    instance: &str,
    now: UnixMs,
) -> Result<Option<Signal>, MapError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    check_type(content_type, dialog_info::CONTENT_TYPE)?;
    let doc = dialog_info::parse_dialog_info(body).map_err(|e| MapError::Body(e.to_string()))?;
    match tracker.apply(&doc) {
        ApplyOutcome::Stale { last, got } => {
            tracing::debug!(entity = %doc.entity, last, got, "dialog-info: version not newer; dropped");
            return Ok(None);
        }
        ApplyOutcome::Gap { expected, got } => {
            tracing::debug!(entity = %doc.entity, expected, got, "dialog-info: versions missed; applied");
        }
        ApplyOutcome::Applied => {}
    }
    Ok(Some(extension_signal(tracker.state(), instance, now)))
}

/// The `pbx` signal of an extension state: the desk phone's lamp.
pub fn extension_signal(state: ExtensionState, instance: &str, now: UnixMs) -> Signal {
    let (availability, activity) = match state {
        ExtensionState::Idle => (Availability::Available, None),
        ExtensionState::Ringing => (Availability::Busy, Some(Activity::Ringing)),
        ExtensionState::Dialing | ExtensionState::InCall => (Availability::Busy, Some(Activity::InACall)),
    };
    let mut s = Signal::new(Source::Pbx, instance, Some(availability), now);
    s.activity = activity;
    s
}

// ---------------------------------------------------------------------------------------------
// Skype for Business.

/// Longest meeting subject or location kept in a signal's detail, in bytes.
pub const MAX_DETAIL_LEN: usize = 255;

/// The hub's availability for an SfB number, by range (module docs); `None` for no opinion.
pub fn sfb_availability(n: Option<u32>) -> Option<Availability> {
    n.map(Availability::from_sfb).filter(|a| a.is_known())
}

/// What an SfB activity says: the hub's activity, the out-of-office flag, and custom text that
/// was not used as the activity (a note of last resort).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SfbActivity {
    /// The activity.
    pub activity: Option<Activity>,
    /// `out-of-office`.
    pub ooo: bool,
    /// Custom text left over.
    pub text: Option<String>,
}

/// Maps an SfB `activity` (token and custom texts) qualifying availability `n` (module docs).
pub fn sfb_activity(a: Option<&msrtc::Activity>, n: Option<u32>) -> SfbActivity {
    let token = a.and_then(|a| a.token.as_deref()).map(str::trim).filter(|t| !t.is_empty());
    // The en-US text when there is one, else the first.
    let custom = a.and_then(|a| {
        a.custom.iter().find(|c| c.lcid == Some(1033)).or_else(|| a.custom.first()).map(|c| c.text.trim())
    });
    let custom = custom.filter(|c| !c.is_empty()).map(collapse);
    let (activity, ooo) = match token.map(str::to_ascii_lowercase).as_deref() {
        Some("on-the-phone") => (Some(Activity::InACall), false),
        Some("in-a-conference") => (Some(Activity::InAConferenceCall), false),
        Some("in-a-meeting") => (Some(Activity::InAMeeting), false),
        Some("in-presentation") | Some("presenting") => (Some(Activity::Presenting), false),
        Some("urgent-interruptions-only") => (Some(Activity::UrgentInterruptionsOnly), false),
        Some("out-of-office") => (Some(Activity::OutOfOffice), true),
        Some("off-work") => (Some(Activity::OffWork), false),
        Some(_) => (token.and_then(Activity::parse_source), false),
        None if n == Some(msrtc::URGENT_INTERRUPTIONS_AVAILABILITY) => (Some(Activity::UrgentInterruptionsOnly), false),
        None => (None, false),
    };
    match (activity, custom) {
        // Custom text names the activity better than an unknown token or none at all.
        (None | Some(Activity::Other(_)), Some(text)) => {
            let other = Activity::Other(truncate(&text, presence_actors::model::activity::MAX_OTHER_LEN).into());
            SfbActivity { activity: Some(other), ooo, text: None }
        }
        (activity, text) => SfbActivity { activity, ooo, text },
    }
}

/// Whitespace runs (line breaks of an OOF message included) as one space, trimmed.
fn collapse(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(presence_actors::model::signal::MAX_NOTE_LEN + 8));
    for w in s.split_whitespace() {
        if out.len() > presence_actors::model::signal::MAX_NOTE_LEN {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// The signal a person's categories give (see the module docs). `now` decides whether an OOF
/// note's window is open and bounds `observed_at`, which is the state's `publishTime`.
pub fn sfb_signal(doc: &Categories, instance: &str, keep_details: bool, now: UnixMs) -> Signal {
    let publish = |c: &Category| c.publish_time.map(|t| t.as_millisecond().min(now));
    // The server's aggregate, else the aggregation of the raw states.
    let aggregate = doc
        .categories
        .iter()
        .filter_map(|c| match &c.value {
            CategoryValue::State(s) if s.kind == StateKind::AggregateState => Some((c.publish_time, s, publish(c))),
            _ => None,
        })
        .max_by_key(|(t, _, _)| *t);
    let (number, activity, observed) = match aggregate {
        Some((_, s, at)) => (s.availability.filter(|n| *n > 0), s.activity.clone(), at),
        None => {
            let states = doc.state_instances();
            let newest =
                doc.categories.iter().filter(|c| matches!(c.value, CategoryValue::State(_))).filter_map(publish).max();
            let agg = msrtc::aggregate(&states);
            (agg.availability, agg.activity, newest)
        }
    };
    let availability = sfb_availability(number);
    let act = sfb_activity(activity.as_ref(), number);

    let mut personal: Option<String> = None;
    let mut oof: Option<String> = None;
    for c in &doc.categories {
        let CategoryValue::Note(bodies) = &c.value else { continue };
        for b in bodies {
            let text = collapse(&b.text);
            if text.is_empty() {
                continue;
            }
            match b.kind {
                NoteKind::Oof => {
                    let started = b.start_time.is_none_or(|t| t.as_millisecond() <= now);
                    let open = b.end_time.is_none_or(|t| t.as_millisecond() > now);
                    if started && open && oof.is_none() {
                        oof = Some(text);
                    }
                }
                NoteKind::Personal if personal.is_none() => personal = Some(text),
                _ => {}
            }
        }
    }

    let mut s = Signal::new(Source::Sfb, instance, availability, observed.unwrap_or(now));
    s.activity = act.activity;
    s.ooo = act.ooo || oof.is_some();
    if let Some(n) = oof.or(personal).or(act.text) {
        s = s.note(&n);
    }
    if keep_details {
        s.detail = meeting_detail(doc);
    }
    s
}

/// Subject and location of the newest `calendarState` that has either.
fn meeting_detail(doc: &Categories) -> Option<Box<PrivateDetail>> {
    let keep = |t: &Option<String>| -> Option<Box<str>> {
        t.as_deref().map(collapse).filter(|t| !t.is_empty()).map(|t| truncate(&t, MAX_DETAIL_LEN).into())
    };
    doc.categories
        .iter()
        .filter_map(|c| match &c.value {
            CategoryValue::State(s) if s.kind == StateKind::CalendarState => Some((c.publish_time, s)),
            _ => None,
        })
        .filter(|(_, s)| s.meeting_subject.is_some() || s.meeting_location.is_some())
        .max_by_key(|(t, _)| *t)
        .map(|(_, s)| {
            Box::new(PrivateDetail {
                subject: keep(&s.meeting_subject),
                location: keep(&s.meeting_location),
                private: false,
            })
        })
}

/// Most category instances kept per person (a watcher sees a handful).
pub const MAX_CACHED_CATEGORIES: usize = 64;

/// One person's category instances, kept across notifications (module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SfbCategories {
    uri: String,
    items: Vec<Category>,
}

impl SfbCategories {
    /// Replaces everything with a full document.
    pub fn replace(&mut self, doc: Categories) {
        self.items.clear();
        self.uri = doc.uri.clone();
        self.update(doc);
    }

    /// Applies a delta: instances are replaced by `(name, instance)`; an empty `state`,
    /// `note` or `calendarData` instance deletes it.
    pub fn update(&mut self, doc: Categories) {
        if !doc.uri.is_empty() {
            self.uri = doc.uri;
        }
        for c in doc.categories {
            let pos = self.items.iter().position(|x| x.name == c.name && x.instance == c.instance);
            let known = matches!(c.name.as_str(), "state" | "note" | "calendarData");
            match (pos, matches!(c.value, CategoryValue::Other) && known) {
                (Some(i), true) => {
                    self.items.remove(i);
                }
                (None, true) => {}
                (Some(i), false) => self.items[i] = c,
                (None, false) if self.items.len() < MAX_CACHED_CATEGORIES => self.items.push(c),
                (None, false) => {}
            }
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The kept instances as a document.
    pub fn doc(&self) -> Categories {
        Categories { uri: self.uri.clone(), categories: self.items.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMs = 1_700_000_000_000;

    fn map(body: &str) -> Signal {
        presence_signal(Some("application/pidf+xml"), body.as_bytes(), "kamailio", NOW).unwrap().unwrap()
    }

    fn doc(person: &str, basic: &str) -> String {
        format!(
            r#"<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@example.com"><tuple id="t1"><status><basic>{basic}</basic></status></tuple><dm:person id="p1">{person}</dm:person></presence>"#
        )
    }

    #[test]
    fn the_table() {
        let cases: &[(&str, &str, Availability, Option<Activity>, bool)] = &[
            ("", "open", Availability::Available, None, false),
            ("", "closed", Availability::Offline, None, false),
            ("<rpid:activities><rpid:on-the-phone/></rpid:activities>", "open", Availability::Busy, Some(Activity::InACall), false),
            ("<rpid:activities><rpid:busy/></rpid:activities>", "open", Availability::Busy, None, false),
            ("<rpid:activities><rpid:meeting/></rpid:activities>", "open", Availability::Busy, Some(Activity::InAMeeting), false),
            ("<rpid:activities><rpid:presentation/></rpid:activities>", "open", Availability::DoNotDisturb, Some(Activity::Presenting), false),
            ("<rpid:activities><rpid:vacation/></rpid:activities>", "closed", Availability::Away, Some(Activity::Vacation), true),
            ("<rpid:activities><rpid:meal/></rpid:activities>", "open", Availability::BeRightBack, Some(Activity::Lunch), false),
            ("<rpid:activities><rpid:away/></rpid:activities>", "open", Availability::Away, None, false),
            ("<rpid:activities><rpid:sleeping/></rpid:activities>", "closed", Availability::Away, Some(Activity::OffWork), false),
            ("<rpid:activities><rpid:other>At the dentist</rpid:other></rpid:activities>", "open", Availability::Available, Some(Activity::Other("At the dentist".into())), false),
            // least available wins among several
            ("<rpid:activities><rpid:on-the-phone/><rpid:away/></rpid:activities>", "open", Availability::Away, None, false),
            ("<rpid:user-input>idle</rpid:user-input>", "open", Availability::AvailableIdle, Some(Activity::Inactive), false),
            ("<rpid:activities><rpid:busy/></rpid:activities><rpid:user-input>idle</rpid:user-input>", "open", Availability::BusyIdle, None, false),
        ];
        for (person, basic, av, act, ooo) in cases {
            let s = map(&doc(person, basic));
            assert_eq!(s.availability, Some(*av), "{person} {basic}");
            assert_eq!(s.activity, *act, "{person} {basic}");
            assert_eq!(s.ooo, *ooo, "{person} {basic}");
            assert_eq!(s.source, Source::Sip);
        }
    }

    #[test]
    fn notes_until_and_plain_pidf() {
        let s = map(&doc(
            r#"<rpid:activities until="2030-01-01T12:00:00Z"><rpid:meal/></rpid:activities><dm:note>Lunch, back 13:00</dm:note>"#,
            "open",
        ));
        assert_eq!(s.note.as_deref(), Some("Lunch, back 13:00"));
        assert_eq!(s.valid_until, Some(1_893_499_200_000));
        // What the sipp scenario in fixtures publishes (no data model, no RPID).
        let plain = r#"<?xml version="1.0" encoding="UTF-8"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:user1@127.0.0.1"><tuple id="t1"><status><basic>open</basic></status></tuple></presence>"#;
        assert_eq!(map(plain).availability, Some(Availability::Available));
    }

    /// RFC 4480 §3.2: an element outside its `from`/`until` period does not hold. It is
    /// ignored; the rest of the document (`basic` open) still counts. NOW is
    /// 2023-11-14T22:13:20Z.
    #[test]
    fn an_element_outside_its_period_is_ignored() {
        const LATER: UnixMs = 1_700_002_800_000; // 2023-11-14T23:00:00Z
        let meal = |attrs: &str| doc(&format!("<rpid:activities {attrs}><rpid:meal/></rpid:activities>"), "open");

        // Lunch that ended at noon, re-sent on every refresh: Available, no Lunch, no bound.
        let s = map(&meal(r#"until="2023-11-14T12:00:00Z""#));
        assert_eq!((s.availability, s.activity.clone()), (Some(Availability::Available), None), "{s:?}");
        assert_eq!(s.valid_until, None);
        // The same over the `pres` shapes: top level and inside a tuple.
        let top = r#"<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:a@b"><tuple id="t1"><status><basic>open</basic><rpid:activities until="2023-11-14T12:00:00Z"><rpid:meal/></rpid:activities></status></tuple><rpid:activities until="2023-11-14T22:13:20Z"><rpid:busy/></rpid:activities></presence>"#;
        let s = map(top);
        assert_eq!((s.availability, s.activity.clone()), (Some(Availability::Available), None), "until = now: {s:?}");

        // A future `until` still bounds the activity.
        let s = map(&meal(r#"until="2023-11-14T23:00:00Z""#));
        assert_eq!((s.availability, s.activity.clone()), (Some(Availability::BeRightBack), Some(Activity::Lunch)));
        assert_eq!(s.valid_until, Some(LATER));
        let s = map(&meal(r#"from="2023-11-14T12:00:00Z" until="2023-11-14T23:00:00Z""#));
        assert_eq!((s.activity.clone(), s.valid_until), (Some(Activity::Lunch), Some(LATER)), "inside its period");

        // A future `from` does not hold yet: what the rest says holds until then.
        let s = map(&meal(r#"from="2023-11-14T23:00:00Z""#));
        assert_eq!((s.availability, s.activity.clone()), (Some(Availability::Available), None), "{s:?}");
        assert_eq!(s.valid_until, Some(LATER));
        let s = map(&meal(r#"from="2023-11-14T23:00:00Z" until="2023-11-15T00:00:00Z""#));
        assert_eq!((s.activity.clone(), s.valid_until), (None, Some(LATER)));

        // Only the element out of its period goes: a current one next to it still counts.
        let s = map(&doc(
            r#"<rpid:activities until="2023-11-14T12:00:00Z"><rpid:meal/></rpid:activities><rpid:activities><rpid:meeting/></rpid:activities>"#,
            "open",
        ));
        assert_eq!((s.availability, s.activity), (Some(Availability::Busy), Some(Activity::InAMeeting)));
    }

    fn di(version: u64, state: &str, dialogs: &str) -> String {
        format!(r#"<?xml version="1.0"?><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" state="{state}" entity="sip:2001@pbx">{dialogs}</dialog-info>"#)
    }

    #[test]
    fn dialog_states_versions_and_partial_documents() {
        let mut t = DialogTracker::default();
        let ct = Some("application/dialog-info+xml");
        let ring = r#"<dialog id="a" direction="recipient"><state>early</state></dialog>"#;
        let up = r#"<dialog id="a" direction="recipient"><state>confirmed</state></dialog>"#;
        let gone = r#"<dialog id="a"><state event="remote-bye">terminated</state></dialog>"#;
        let s = dialog_signal(ct, di(1, "full", "").as_bytes(), &mut t, "pbx", NOW).unwrap().unwrap();
        assert_eq!((s.availability, s.activity), (Some(Availability::Available), None));
        let s = dialog_signal(ct, di(2, "partial", ring).as_bytes(), &mut t, "pbx", NOW).unwrap().unwrap();
        assert_eq!((s.availability, s.activity), (Some(Availability::Busy), Some(Activity::Ringing)));
        assert_eq!(s.source, Source::Pbx);
        let s = dialog_signal(ct, di(3, "partial", up).as_bytes(), &mut t, "pbx", NOW).unwrap().unwrap();
        assert_eq!(s.activity, Some(Activity::InACall));
        // An old version is dropped, whatever it says.
        assert!(dialog_signal(ct, di(2, "full", "").as_bytes(), &mut t, "pbx", NOW).unwrap().is_none());
        assert!(dialog_signal(ct, di(3, "full", "").as_bytes(), &mut t, "pbx", NOW).unwrap().is_none());
        let s = dialog_signal(ct, di(4, "partial", gone).as_bytes(), &mut t, "pbx", NOW).unwrap().unwrap();
        assert_eq!(s.availability, Some(Availability::Available));
        // A rejected call (486) leaves the phone idle.
        let rejected = r#"<dialog id="b" direction="recipient"><state event="rejected" code="486">terminated</state></dialog>"#;
        let s = dialog_signal(ct, di(5, "full", rejected).as_bytes(), &mut t, "pbx", NOW).unwrap().unwrap();
        assert_eq!(s.availability, Some(Availability::Available));
        // A new subscription starts versions again.
        t.reset();
        let s = dialog_signal(ct, di(0, "full", up).as_bytes(), &mut t, "pbx", NOW).unwrap().unwrap();
        assert_eq!(s.activity, Some(Activity::InACall));
        assert!(dialog_signal(ct, b"", &mut t, "pbx", NOW).unwrap().is_none());
        assert!(dialog_signal(Some("application/pidf+xml"), di(9, "full", "").as_bytes(), &mut t, "pbx", NOW).is_err());
    }

    #[test]
    fn empty_body_retracts_and_bad_input_is_an_error() {
        let s = presence_signal(None, b"", "k", NOW).unwrap().unwrap();
        assert!(s.is_retraction());
        assert!(matches!(presence_signal(Some("text/plain"), b"x", "k", NOW), Err(MapError::ContentType(_))));
        assert!(matches!(presence_signal(Some("application/pidf+xml"), b"<presence", "k", NOW), Err(MapError::Body(_))));
    }
    // -----------------------------------------------------------------------------------------
    // Skype for Business.

    macro_rules! msrtc_fixture {
        ($name:literal) => {
            include_bytes!(concat!("../../../fixtures/sip/msrtc/", $name))
        };
    }

    fn aggregate_doc(n: Option<u32>, token: Option<&str>, custom: Option<&str>) -> Categories {
        use presence_sip::body::msrtc::{CustomText, State};
        let activity = (token.is_some() || custom.is_some()).then(|| msrtc::Activity {
            token: token.map(str::to_string),
            custom: custom.map(|t| vec![CustomText { lcid: Some(1033), text: t.into() }]).unwrap_or_default(),
            ..msrtc::Activity::default()
        });
        let state = State { kind: StateKind::AggregateState, availability: n, activity, ..State::default() };
        Categories {
            uri: "sip:a@x".into(),
            categories: vec![Category {
                name: "state".into(),
                instance: 1,
                value: CategoryValue::State(state),
                ..Category::default()
            }],
        }
    }

    fn sfb(n: Option<u32>, token: Option<&str>) -> Signal {
        // Through the wire format, as the provider sees it.
        let xml = msrtc::build_categories(&aggregate_doc(n, token, None));
        sfb_signal(&msrtc::parse_categories(xml.as_bytes()).unwrap(), "sfb", false, NOW)
    }

    #[test]
    fn sfb_availability_range_boundaries() {
        use Availability::*;
        let cases: &[(u32, Option<Availability>)] = &[
            (0, None),
            (1, None),
            (2999, None),
            (3000, Some(Available)),
            (3500, Some(Available)),
            (4499, Some(Available)),
            (4500, Some(AvailableIdle)),
            (5000, Some(AvailableIdle)),
            (5999, Some(AvailableIdle)),
            (6000, Some(Busy)),
            (6500, Some(Busy)),
            (6900, Some(Busy)),
            (7499, Some(Busy)),
            (7500, Some(BusyIdle)),
            (8999, Some(BusyIdle)),
            (9000, Some(DoNotDisturb)),
            (9500, Some(DoNotDisturb)),
            (11999, Some(DoNotDisturb)),
            (12000, Some(BeRightBack)),
            (12500, Some(BeRightBack)),
            (14999, Some(BeRightBack)),
            (15000, Some(Away)),
            (15500, Some(Away)),
            (17999, Some(Away)),
            (18000, Some(Offline)),
            (18500, Some(Offline)),
            (u32::MAX, Some(Offline)),
        ];
        for (n, want) in cases {
            assert_eq!(sfb_availability(Some(*n)), *want, "{n}");
            assert_eq!(sfb(Some(*n), None).availability, *want, "{n} through a document");
        }
        assert_eq!(sfb_availability(None), None);
        // 6900 alone is the workgroup view of Do Not Disturb.
        assert_eq!(sfb(Some(6900), None).activity, Some(Activity::UrgentInterruptionsOnly));
        assert_eq!(sfb(Some(6901), None).activity, None);
        // The boundary fixtures of the SIP crate agree.
        let files: [(&[u8], Availability); 13] = [
            (msrtc_fixture!("aggregate_4499.xml"), Available),
            (msrtc_fixture!("aggregate_4500.xml"), AvailableIdle),
            (msrtc_fixture!("aggregate_5999.xml"), AvailableIdle),
            (msrtc_fixture!("aggregate_6000.xml"), Busy),
            (msrtc_fixture!("aggregate_6900_urgent_interruptions_only.xml"), Busy),
            (msrtc_fixture!("aggregate_8999.xml"), BusyIdle),
            (msrtc_fixture!("aggregate_9000.xml"), DoNotDisturb),
            (msrtc_fixture!("aggregate_11999.xml"), DoNotDisturb),
            (msrtc_fixture!("aggregate_12000.xml"), BeRightBack),
            (msrtc_fixture!("aggregate_14999.xml"), BeRightBack),
            (msrtc_fixture!("aggregate_15000.xml"), Away),
            (msrtc_fixture!("aggregate_17999.xml"), Away),
            (msrtc_fixture!("aggregate_18000.xml"), Offline),
        ];
        for (body, want) in files {
            let s = sfb_signal(&msrtc::parse_categories(body).unwrap(), "sfb", false, NOW);
            assert_eq!(s.availability, Some(want));
            assert_eq!(s.source, Source::Sfb);
        }
    }

    #[test]
    fn sfb_activity_tokens() {
        let cases: &[(u32, &str, Option<Activity>, bool)] = &[
            (6500, "on-the-phone", Some(Activity::InACall), false),
            (6500, "in-a-conference", Some(Activity::InAConferenceCall), false),
            (6500, "in-a-meeting", Some(Activity::InAMeeting), false),
            (9500, "in-presentation", Some(Activity::Presenting), false),
            (9500, "presenting", Some(Activity::Presenting), false),
            (6900, "urgent-interruptions-only", Some(Activity::UrgentInterruptionsOnly), false),
            (15500, "out-of-office", Some(Activity::OutOfOffice), true),
            (15500, "off-work", Some(Activity::OffWork), false),
            (6500, "On-The-Phone", Some(Activity::InACall), false),
            (12500, "out-to-lunch", Some(Activity::Lunch), false),
            // SIPE's status ids restate the availability.
            (6500, "busy", None, false),
            (15500, "away", None, false),
            (3500, "gardening", Some(Activity::Other("gardening".into())), false),
        ];
        for (n, token, want, ooo) in cases {
            let s = sfb(Some(*n), Some(token));
            assert_eq!(s.activity, *want, "{token}");
            assert_eq!(s.ooo, *ooo, "{token}");
        }
        // Custom text: the activity when no well-known token names one, else a note.
        let custom = |token: Option<&str>, text: &str| {
            let xml = msrtc::build_categories(&aggregate_doc(Some(6500), token, Some(text)));
            sfb_signal(&msrtc::parse_categories(xml.as_bytes()).unwrap(), "sfb", false, NOW)
        };
        let s = custom(None, "Working from home");
        assert_eq!(s.activity, Some(Activity::Other("Working from home".into())));
        assert_eq!(s.note, None);
        let s = custom(Some("in-a-meeting"), "Styrelsemöte");
        assert_eq!(s.activity, Some(Activity::InAMeeting));
        assert_eq!(s.note.as_deref(), Some("Styrelsemöte"));
        let long = "x".repeat(300);
        match custom(None, &long).activity {
            Some(Activity::Other(t)) => assert_eq!(t.len(), presence_actors::model::activity::MAX_OTHER_LEN),
            other => panic!("{other:?}"),
        }
        // The fixture's 6900 + urgent-interruptions-only with its custom display text.
        let s = sfb_signal(
            &msrtc::parse_categories(msrtc_fixture!("aggregate_6900_urgent_interruptions_only.xml")).unwrap(),
            "sfb",
            false,
            NOW,
        );
        assert_eq!((s.availability, s.activity), (Some(Availability::Busy), Some(Activity::UrgentInterruptionsOnly)));
    }

    #[test]
    fn sfb_notes_oof_and_the_aggregation_fallback() {
        // §1.5's notification: aggregate 6500 on the phone and a personal note.
        let doc = msrtc::parse_categories(msrtc_fixture!("notify_aggregate_note_freebusy.xml")).unwrap();
        let later = 1_800_000_000_000;
        let s = sfb_signal(&doc, "sfb", false, later);
        assert_eq!((s.availability, s.activity.clone()), (Some(Availability::Busy), Some(Activity::InACall)));
        assert_eq!(s.note.as_deref(), Some("In the lab until 3pm"));
        assert!(!s.ooo);
        // observed_at is the aggregate's publishTime, never in the future.
        assert_eq!(s.observed_at, "2024-05-06T09:14:02.117Z".parse::<jiff::Timestamp>().unwrap().as_millisecond());
        assert_eq!(sfb_signal(&doc, "sfb", false, NOW).observed_at, NOW);

        // No aggregateState: the raw states are aggregated (§1.4 worked examples).
        let s = sfb_signal(
            &msrtc::parse_categories(msrtc_fixture!("user_manual_then_phone.xml")).unwrap(),
            "sfb",
            false,
            NOW,
        );
        assert_eq!((s.availability, s.activity), (Some(Availability::Busy), Some(Activity::InACall)));
        let s = sfb_signal(
            &msrtc::parse_categories(msrtc_fixture!("phone_then_user_manual.xml")).unwrap(),
            "sfb",
            false,
            NOW,
        );
        assert_eq!((s.availability, s.activity), (Some(Availability::Available), None));

        // OOF: calendar OOF without availability, machine away, OOF and personal notes. Inside
        // the OOF window the OOF text is the note and the flag is set; after it, the personal
        // note shows and the flag comes only from the activity.
        let doc = msrtc::parse_categories(msrtc_fixture!("calendar_oof_machine_away.xml")).unwrap();
        let during = "2024-05-07T10:00:00Z".parse::<jiff::Timestamp>().unwrap().as_millisecond();
        let s = sfb_signal(&doc, "sfb", false, during);
        assert_eq!(s.availability, Some(Availability::Away));
        assert_eq!(s.activity, Some(Activity::OutOfOffice));
        assert!(s.ooo);
        assert_eq!(s.note.as_deref(), Some("On leave until Friday. Ask Frank."));
        let after = "2024-05-11T10:00:00Z".parse::<jiff::Timestamp>().unwrap().as_millisecond();
        let s = sfb_signal(&doc, "sfb", false, after);
        assert_eq!(s.note.as_deref(), Some("Back on the 10th"));
        assert!(s.ooo, "the out-of-office activity still says so");

        // Long multi-line notes are collapsed and bounded.
        use presence_sip::body::msrtc::NoteBody;
        let mut doc = aggregate_doc(Some(3500), None, None);
        let text = format!("Line one\r\n\r\n   line two {}", "å".repeat(2000));
        doc.categories.push(Category {
            name: "note".into(),
            value: CategoryValue::Note(vec![NoteBody { kind: NoteKind::Oof, text, ..NoteBody::default() }]),
            ..Category::default()
        });
        let s = sfb_signal(&doc, "sfb", false, NOW);
        let n = s.note.as_deref().unwrap();
        assert!(n.starts_with("Line one line two åå"), "{n}");
        assert!(n.len() <= presence_actors::model::signal::MAX_NOTE_LEN);
        assert!(s.ooo);

        // Nothing at all: a retraction.
        assert!(sfb_signal(&aggregate_doc(None, None, None), "sfb", false, NOW).is_retraction());
        assert!(sfb_signal(&Categories::default(), "sfb", false, NOW).is_retraction());
    }

    #[test]
    fn sfb_meeting_details_only_when_kept() {
        let doc = msrtc::parse_categories(msrtc_fixture!("calendar_meeting.xml")).unwrap();
        let s = sfb_signal(&doc, "sfb", false, NOW);
        assert_eq!((s.availability, s.activity.clone()), (Some(Availability::Busy), Some(Activity::InAMeeting)));
        assert_eq!(s.detail, None, "subject and location stay out unless kept");
        assert_eq!(s.note, None, "and never leak into the note");
        let s = sfb_signal(&doc, "sfb", true, NOW);
        let d = s.detail.expect("detail");
        assert_eq!(d.subject.as_deref(), Some("Budget review & Q3 plan"));
        assert_eq!(d.location.as_deref(), Some("Room 4.12"));
        assert!(!d.private);
    }

    #[test]
    fn sfb_category_cache_applies_deltas() {
        let mut cache = SfbCategories::default();
        let full = msrtc::parse_categories(msrtc_fixture!("notify_aggregate_note_freebusy.xml")).unwrap();
        let n = full.categories.len();
        cache.replace(full);
        assert_eq!(cache.doc().categories.len(), n);
        // A delta with a new aggregate only: the note stays.
        cache.update(aggregate_doc(Some(15500), None, None));
        let s = sfb_signal(&cache.doc(), "sfb", false, NOW);
        assert_eq!(s.availability, Some(Availability::Away));
        assert_eq!(s.note.as_deref(), Some("In the lab until 3pm"));
        // An empty note instance deletes the note.
        let del = r#"<categories xmlns="http://schemas.microsoft.com/2006/09/sip/categories" uri="sip:a@x"><category name="note" instance="0"/></categories>"#;
        cache.update(msrtc::parse_categories(del.as_bytes()).unwrap());
        assert_eq!(sfb_signal(&cache.doc(), "sfb", false, NOW).note, None);
        assert_eq!(cache.doc().uri, "sip:a@x");
        // A full document replaces everything.
        cache.replace(aggregate_doc(Some(3500), None, None));
        assert_eq!(cache.doc().categories.len(), 1);
        cache.clear();
        assert!(cache.is_empty());
        // Bounded.
        for i in 0..(MAX_CACHED_CATEGORIES as u64 + 10) {
            let mut d = aggregate_doc(Some(3500), None, None);
            d.categories[0].name = "contactCard".into();
            d.categories[0].instance = i;
            d.categories[0].value = CategoryValue::Other;
            cache.update(d);
        }
        assert_eq!(cache.doc().categories.len(), MAX_CACHED_CATEGORIES);
    }
}
