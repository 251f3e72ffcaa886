//! Unit tests of the Skype for Business source: the configuration (defaults, checks, unknown
//! keys), the reading of notification bodies and RLMI parts ([`super::parse`], with its "no
//! input panics" test over mutated fixtures), the category cache, and the mapping of
//! categories to signals ([`super::map`]) against the SIP crate's msrtc fixtures. The task
//! itself runs against a pool played on loopback in `runtime_tests.rs`, and against the in-repo
//! pool simulator in the hub's `tests/sfb.rs`.

use presence_actors::model::{Activity, Availability, Signal, Source, UnixMs};
use presence_sip::body::msrtc::{self, Categories, Category, CategoryValue, NoteKind, StateKind};
use presence_sip::body::rlmi::{Instance, InstanceState, ResourcePart};
use serde_json::json;

use super::map::{sfb_availability, sfb_signal};
use super::parse::{read_notification, read_part, uri_key, Notification, ParseError, PartEvent, SfbCategories, MAX_CACHED_CATEGORIES};
use super::SfbConfig;
use crate::common::json::with_keys;

const NOW: UnixMs = 1_700_000_000_000;

// ---------------------------------------------------------------------------------------------
// Configuration.

fn cfg(extra: serde_json::Value) -> SfbConfig {
    let base = json!({ "name": "sfb", "server": "127.0.0.1:5061", "from": "sip:hub-svc@contoso.com" });
    serde_json::from_value(with_keys(base, extra)).expect("config")
}

#[test]
fn config_defaults_and_validation() {
    let c = cfg(json!({}));
    let conn = &c.conn;
    assert_eq!((conn.transport.as_str(), c.batch_size, c.resubscribe_rate, conn.expires_secs), ("tcp", 200, 25, 3600));
    assert_eq!((conn.local.as_str(), conn.keepalive_secs, c.resource.as_deref(), c.keep_details), ("127.0.0.1:0", 10, None, false));
    let n = SfbConfig::new("sfb", "127.0.0.1:5061", "sip:hub-svc@contoso.com");
    assert_eq!(format!("{n:?}"), format!("{c:?}"), "new() gives the file's defaults");
    assert!(c.validate().is_ok());
    assert_eq!(c.domain(), "contoso.com");
    for bad in [
        json!({ "transport": "tls" }), // no tls_ca_file
        json!({ "transport": "sctp" }),
        json!({ "batch_size": 0 }),
        json!({ "batch_size": 1001 }),
        json!({ "resubscribe_rate": 0 }),
        json!({ "expires_secs": 10 }),
        json!({ "username": "u" }),
        json!({ "local": "nowhere" }),
        json!({ "from": "hub-svc@contoso.com" }),
    ] {
        assert!(cfg(bad.clone()).validate().is_err(), "{bad}");
    }
    let base = json!({ "name": "sfb", "server": "127.0.0.1:5061", "from": "sip:hub-svc@contoso.com" });
    let e = serde_json::from_value::<SfbConfig>(with_keys(base, json!({ "colour": "blue" }))).unwrap_err().to_string();
    assert!(e.contains("unknown field `colour`"), "unknown keys are refused: {e}");
    assert!(serde_json::from_value::<SfbConfig>(json!({ "name": "sfb", "from": "sip:a@b" })).is_err(), "server is required");
}

fn tls_fixture(name: &str) -> String {
    format!("{}/../fixtures/tls/sip/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A trusted application: TLS with the application's certificate and no password; each thing
/// missing is named. A pool FQDN without a port is 5061 over TLS.
#[test]
fn a_trusted_application_needs_tls_and_its_certificate_and_no_password() {
    let tls = json!({
        "server": "pool01.contoso.com", "transport": "tls", "trusted_application": true, "tls_ca_file": tls_fixture("ca-cert.pem"),
        "tls_cert_file": tls_fixture("app-cert.pem"), "tls_key_file": tls_fixture("app-key.pem"), "from": "sip:presence-hub@apps.contoso.com",
    });
    let c = cfg(tls.clone());
    c.validate().expect("valid");
    assert!(c.trusted_application);
    assert_eq!((c.conn.server_with_port(), c.pool_port()), ("pool01.contoso.com:5061".to_string(), 5061));
    assert_eq!(cfg(json!({})).pool_port(), 5060);
    assert!(c.tls_listener().unwrap().is_none());
    let l = cfg(with_keys(tls.clone(), json!({ "tls_listen": "0.0.0.0:6001", "contact_host": "hub.contoso.com" })));
    l.validate().expect("valid");
    let listener = l.tls_listener().unwrap().expect("a listener");
    assert_eq!((listener.addr.to_string(), listener.advertise.as_str()), ("0.0.0.0:6001".to_string(), "hub.contoso.com"));
    let drop = |key: &str| {
        let mut v = tls.clone();
        v.as_object_mut().unwrap().remove(key);
        v
    };
    let with = |k: &str, val: serde_json::Value| {
        let mut v = tls.clone();
        v[k] = val;
        v
    };
    for (bad, why) in [
        (drop("tls_cert_file"), "go together"),
        (drop("tls_key_file"), "go together"),
        (with("transport", json!("tcp")), "are for transport"),
        (with_keys(tls.clone(), json!({ "username": "hub-svc", "password": "pw" })), "no username or password"),
        (json!({ "trusted_application": true }), "needs transport = \"tls\""),
        (json!({ "transport": "tls", "tls_ca_file": tls_fixture("ca-cert.pem"), "trusted_application": true }), "needs tls_cert_file"),
        (with("tls_listen", json!("0.0.0.0:6001")), "go together"),
        (with_keys(tls.clone(), json!({ "tls_listen": "port 6001", "contact_host": "hub.contoso.com" })), "IP address and port"),
        (with_keys(tls.clone(), json!({ "tls_listen": "0.0.0.0:6001", "contact_host": "not a host" })), "contact_host"),
        (with_keys(tls.clone(), json!({ "tls_listen": "0.0.0.0:6001", "contact_host": "hub.contoso.com", "trusted_application": false })), "needs trusted_application"),
    ] {
        let e = cfg(bad.clone()).validate().unwrap_err().to_string();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

/// Every key of an `sfb` block lands in its setting (the flat key names are a contract; TOML,
/// as the hub reads it, goes the same way in `sip::connect`'s tests).
#[test]
fn every_key_parses() {
    let c = cfg(json!({
        "name": "skype", "server": "pool01.contoso.com:5060", "transport": "udp", "local": "0.0.0.0:5070",
        "from": "sip:hub-svc@contoso.com", "username": "CONTOSO\\hub-svc", "password": "pw", "batch_size": 100,
        "resource": "sip:{email}", "expires_secs": 1800, "keepalive_secs": 5, "resubscribe_rate": 10, "keep_details": true,
    }));
    c.validate().expect("valid");
    let conn = &c.conn;
    assert_eq!((c.name.as_str(), conn.server.as_str(), conn.transport.as_str(), conn.local.as_str()), ("skype", "pool01.contoso.com:5060", "udp", "0.0.0.0:5070"));
    assert_eq!(c.login.credentials(), Some(("CONTOSO\\hub-svc".to_string(), "pw".to_string())));
    assert_eq!((c.from.as_str(), c.batch_size, c.resource.as_deref()), ("sip:hub-svc@contoso.com", 100, Some("sip:{email}")));
    assert_eq!((conn.expires_secs, conn.keepalive_secs, c.resubscribe_rate, c.keep_details), (1800, 5, 10, true));
}

// ---------------------------------------------------------------------------------------------
// Reading notification bodies.

const CATEGORIES: &str = r#"<categories xmlns="http://schemas.microsoft.com/2006/09/sip/categories" uri="sip:a@x"><category name="note" instance="0"/></categories>"#;

#[test]
fn notifications_are_told_apart_by_content_type() {
    let ct = "Application/msrtc-event-categories+xml; charset=utf-8";
    match read_notification(ct, CATEGORIES.as_bytes()) {
        Ok(Notification::Categories(doc)) => assert_eq!(doc.uri, "sip:a@x"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(read_notification(msrtc::CONTENT_TYPE, b"<categories"), Err(ParseError::Categories(_))));
    assert!(matches!(read_notification("application/rlmi+xml", b"<list"), Err(ParseError::Rlmi(_))));
    assert!(matches!(read_notification("multipart/related; boundary=x", b"nothing"), Err(ParseError::Rlmi(_))));
    let e = read_notification("text/plain; charset=utf-8", b"x").unwrap_err();
    assert_eq!(e, ParseError::ContentType("text/plain".into()));
    assert_eq!(e.to_string(), "unsupported content type \"text/plain\"");
}

#[test]
fn rlmi_parts_say_what_to_do() {
    let part = |state: InstanceState, reason: Option<&str>, pool: Option<&str>, body: Option<(&str, &str)>| ResourcePart {
        uri: "sip:a@x".into(),
        instance: Instance { state, reason: reason.map(str::to_string), pool_fqdn: pool.map(str::to_string), ..Instance::default() },
        content_type: body.map(|(ct, _)| ct.to_string()),
        body: body.map(|(_, b)| b.as_bytes().to_vec()),
    };
    let doc = Some((msrtc::CONTENT_TYPE, CATEGORIES));
    assert!(matches!(read_part(part(InstanceState::Active, None, None, doc)), Ok(PartEvent::Categories(d)) if d.uri == "sip:a@x"));
    assert_eq!(read_part(part(InstanceState::Active, None, None, None)), Ok(PartEvent::Nothing));
    assert_eq!(read_part(part(InstanceState::Pending, None, None, None)), Ok(PartEvent::Nothing));
    assert_eq!(read_part(part(InstanceState::Other("x".into()), None, None, None)), Ok(PartEvent::Nothing));
    let e = read_part(part(InstanceState::Active, None, None, Some(("application/pidf+xml", "<presence/>")))).unwrap_err();
    assert_eq!(e, ParseError::PartType("application/pidf+xml".into()));
    assert!(matches!(read_part(part(InstanceState::Active, None, None, Some((msrtc::CONTENT_TYPE, "<x")))), Err(ParseError::Categories(_))));
    let pool = Some("pool2.contoso.com");
    assert_eq!(read_part(part(InstanceState::Resubscribe, None, pool, None)), Ok(PartEvent::Resubscribe(pool.map(str::to_string))));
    for reason in ["deactivated", "timeout", "probation"] {
        assert_eq!(read_part(part(InstanceState::Terminated, Some(reason), None, None)), Ok(PartEvent::Resubscribe(None)), "{reason}");
    }
    for reason in [Some("noresource"), Some("rejected"), None] {
        let want = PartEvent::Gone(reason.map(str::to_string));
        assert_eq!(read_part(part(InstanceState::Terminated, reason, None, None)), Ok(want), "{reason:?}");
    }
    assert_eq!(uri_key("\"Ada\" <SIP:Ada@Contoso.com> "), "sip:ada@contoso.com");
}

/// No input panics: mutants of the SfB fixtures — the SIP crate's categories documents and its
/// BENOTIFY's `multipart/related` RLMI — go through [`read_notification`], and every RLMI part
/// through [`read_part`].
#[test]
fn no_input_panics() {
    use crate::mutate::{fixture, fixture_files, Mutator, Xorshift};
    let mut bases: Vec<(String, Vec<u8>)> =
        fixture_files("sip/msrtc", "xml").into_iter().map(|(_, b)| (msrtc::CONTENT_TYPE.to_string(), b)).collect();
    // The BENOTIFY fixture is a MIME entity: headers, an empty line, the body.
    let raw = String::from_utf8(fixture("sip/rlmi/benotify_sfb_resubscribe.mime")).expect("utf-8");
    let (head, body) = raw.split_once("\r\n\r\n").or_else(|| raw.split_once("\n\n")).expect("headers and body");
    let ct = head.lines().find_map(|l| l.strip_prefix("Content-Type:")).expect("Content-Type").trim();
    bases.push((ct.to_string(), body.as_bytes().to_vec()));
    let tokens: &[&[u8]] = &[b"<", b">", b"/>", b"\"", b"&", b"]]>", b"\r\n\r\n", b"--Boundary_9c3e1f7a", b"state=\"resubscribe\"", b"\xff\xfe"];
    let m = Mutator::new(tokens, &[]);
    let mut rng = Xorshift::new(Xorshift::SEED);
    let (mut bodies, mut parts) = (0usize, 0usize);
    for round in 0..6_000usize {
        let (ct, base) = &bases[round % bases.len()];
        let buf = m.mutate(base, &mut rng);
        match read_notification(ct, &buf) {
            Ok(Notification::Rlmi(n)) => {
                bodies += 1;
                parts += n.resources.into_iter().filter_map(|p| read_part(p).ok()).count();
            }
            Ok(Notification::Categories(_)) => bodies += 1,
            Err(_) => {}
        }
    }
    assert!(bodies > 500 && parts > 50, "the mutants reach the deep code: {bodies} bodies, {parts} parts");
}

// ---------------------------------------------------------------------------------------------
// Mapping.

/// A categories fixture of the SIP crate (`fixtures/sip/msrtc/`), parsed.
fn fixture_doc(name: &str) -> Categories {
    msrtc::parse_categories(&crate::mutate::fixture(&format!("sip/msrtc/{name}"))).expect(name)
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

/// The signal of `doc` sent through the wire format, as the provider sees it.
fn through_wire(doc: &Categories) -> Signal {
    let xml = msrtc::build_categories(doc);
    sfb_signal(&msrtc::parse_categories(xml.as_bytes()).unwrap(), "sfb", false, NOW)
}

fn sfb(n: Option<u32>, token: Option<&str>) -> Signal {
    through_wire(&aggregate_doc(n, token, None))
}

#[test]
fn sfb_availability_range_boundaries() {
    use Availability::*;
    // Each range: its first number, one inside (SfB's canonical value where it has one), its
    // last, and what they map to.
    let ranges: &[(u32, u32, u32, Option<Availability>)] = &[
        (0, 1, 2999, None),
        (3000, 3500, 4499, Some(Available)),
        (4500, 5000, 5999, Some(AvailableIdle)),
        (6000, 6500, 7499, Some(Busy)),
        (7500, 7500, 8999, Some(BusyIdle)),
        (9000, 9500, 11999, Some(DoNotDisturb)),
        (12000, 12500, 14999, Some(BeRightBack)),
        (15000, 15500, 17999, Some(Away)),
        (18000, 18500, u32::MAX, Some(Offline)),
    ];
    for &(first, inside, last, want) in ranges {
        for n in [first, inside, last] {
            assert_eq!(sfb_availability(Some(n)), want, "{n}");
            assert_eq!(sfb(Some(n), None).availability, want, "{n} through a document");
        }
    }
    assert_eq!(sfb_availability(None), None);
    // 6900 alone is the workgroup view of Do Not Disturb.
    let s = sfb(Some(6900), None);
    assert_eq!((s.availability, s.activity), (Some(Busy), Some(Activity::UrgentInterruptionsOnly)));
    assert_eq!(sfb(Some(6901), None).activity, None);
    // Every boundary fixture of the SIP crate (`aggregate_<number>…xml`) agrees with the table.
    let fixtures = crate::mutate::fixture_files("sip/msrtc", "xml");
    let mut seen = 0;
    for (name, body) in fixtures.iter().filter(|(n, _)| n.starts_with("aggregate_")) {
        let n: u32 = name["aggregate_".len()..].split(['_', '.']).next().and_then(|n| n.parse().ok()).expect(name);
        let want = ranges.iter().find(|r| (r.0..=r.2).contains(&n)).map(|r| r.3).expect(name);
        let s = sfb_signal(&msrtc::parse_categories(body).unwrap(), "sfb", false, NOW);
        assert_eq!((s.availability, s.source), (want, Source::Sfb), "{name}");
        seen += 1;
    }
    assert_eq!(seen, 13, "the SIP crate's boundary fixtures");
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
    let custom = |token: Option<&str>, text: &str| through_wire(&aggregate_doc(Some(6500), token, Some(text)));
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
    let s = sfb_signal(&fixture_doc("aggregate_6900_urgent_interruptions_only.xml"), "sfb", false, NOW);
    assert_eq!((s.availability, s.activity), (Some(Availability::Busy), Some(Activity::UrgentInterruptionsOnly)));
}

#[test]
fn sfb_notes_oof_and_the_aggregation_fallback() {
    // §1.5's notification: aggregate 6500 on the phone and a personal note.
    let doc = fixture_doc("notify_aggregate_note_freebusy.xml");
    let later = 1_800_000_000_000;
    let s = sfb_signal(&doc, "sfb", false, later);
    assert_eq!((s.availability, s.activity.clone()), (Some(Availability::Busy), Some(Activity::InACall)));
    assert_eq!(s.note.as_deref(), Some("In the lab until 3pm"));
    assert!(!s.ooo);
    // observed_at is the aggregate's publishTime, never in the future.
    assert_eq!(s.observed_at, "2024-05-06T09:14:02.117Z".parse::<jiff::Timestamp>().unwrap().as_millisecond());
    assert_eq!(sfb_signal(&doc, "sfb", false, NOW).observed_at, NOW);

    // No aggregateState: the raw states are aggregated (§1.4 worked examples).
    let s = sfb_signal(&fixture_doc("user_manual_then_phone.xml"), "sfb", false, NOW);
    assert_eq!((s.availability, s.activity), (Some(Availability::Busy), Some(Activity::InACall)));
    let s = sfb_signal(&fixture_doc("phone_then_user_manual.xml"), "sfb", false, NOW);
    assert_eq!((s.availability, s.activity), (Some(Availability::Available), None));

    // OOF: calendar OOF without availability, machine away, OOF and personal notes. Inside
    // the OOF window the OOF text is the note and the flag is set; after it, the personal
    // note shows and the flag comes only from the activity.
    let doc = fixture_doc("calendar_oof_machine_away.xml");
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
    let doc = fixture_doc("calendar_meeting.xml");
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
    let full = fixture_doc("notify_aggregate_note_freebusy.xml");
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
