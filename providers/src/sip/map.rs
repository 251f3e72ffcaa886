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

use jiff::Timestamp;
use presence_actors::model::{Activity, Availability, Signal, Source, UnixMs};
use presence_sip::body::dialog_info::{self, ApplyOutcome, DialogTracker, ExtensionState};
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
}
