//! Pure mapping of a person's Skype for Business categories to the hub's `sfb` signals (no I/O).
//!
//! Categories ([MS-PRES] §2.2.2, §3.8.5.1.2; read by [`super::parse`]) → `sfb` signals
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

use presence_actors::model::activity::truncate;
use presence_actors::model::{Activity, Availability, PrivateDetail, Signal, Source, UnixMs};
use presence_sip::body::msrtc::{self, Categories, Category, CategoryValue, NoteKind, StateKind};

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
