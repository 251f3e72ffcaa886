//! Tests of the SfB categories parser, builder, aggregation and batchSub.

use super::*;
use crate::body::fuzz::{mutate, truncations, Xorshift, XML_TOKENS};

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("../../../../fixtures/sip/msrtc/", $name))
    };
}

const NOTIFY: &[u8] = fixture!("notify_aggregate_note_freebusy.xml");
const HTTPS: &[u8] = fixture!("https_namespaces.xml");
const URGENT: &[u8] = fixture!("aggregate_6900_urgent_interruptions_only.xml");
const MEETING: &[u8] = fixture!("calendar_meeting.xml");
const OOF: &[u8] = fixture!("calendar_oof_machine_away.xml");
const PHONE: &[u8] = fixture!("phone_on_the_phone.xml");
const USER_THEN_PHONE: &[u8] = fixture!("user_manual_then_phone.xml");
const PHONE_THEN_USER: &[u8] = fixture!("phone_then_user_manual.xml");
const FREEBUSY: &[u8] = fixture!("freebusy_mixed.xml");
const BATCH_SUB: &[u8] = fixture!("batchsub_subscribe.xml");

const BOUNDARIES: [(u32, &[u8], AvailabilityClass); 12] = [
    (4499, fixture!("aggregate_4499.xml"), AvailabilityClass::Available),
    (4500, fixture!("aggregate_4500.xml"), AvailabilityClass::AvailableIdle),
    (5999, fixture!("aggregate_5999.xml"), AvailabilityClass::AvailableIdle),
    (6000, fixture!("aggregate_6000.xml"), AvailabilityClass::Busy),
    (8999, fixture!("aggregate_8999.xml"), AvailabilityClass::BusyIdle),
    (9000, fixture!("aggregate_9000.xml"), AvailabilityClass::DoNotDisturb),
    (11999, fixture!("aggregate_11999.xml"), AvailabilityClass::DoNotDisturb),
    (12000, fixture!("aggregate_12000.xml"), AvailabilityClass::BeRightBack),
    (14999, fixture!("aggregate_14999.xml"), AvailabilityClass::BeRightBack),
    (15000, fixture!("aggregate_15000.xml"), AvailabilityClass::Away),
    (17999, fixture!("aggregate_17999.xml"), AvailabilityClass::Away),
    (18000, fixture!("aggregate_18000.xml"), AvailabilityClass::Offline),
];

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn parse(b: &[u8]) -> Categories {
    parse_categories(b).expect("parse")
}

fn state_of(c: &Category) -> &State {
    match &c.value {
        CategoryValue::State(s) => s,
        other => panic!("not a state: {other:?}"),
    }
}

#[test]
fn parses_the_notify_sample() {
    let d = parse(NOTIFY);
    assert_eq!(d.uri, "sip:alice@contoso.com");
    assert_eq!(d.categories.len(), 4);
    let c = &d.categories[0];
    assert_eq!((c.name.as_str(), c.instance), ("state", 1));
    assert_eq!(c.publish_time, Some(ts("2024-05-06T09:14:02.117Z")));
    assert_eq!((c.container, c.version, c.expire_type.as_deref()), (None, None, None));
    let s = state_of(c);
    assert_eq!(s.kind, StateKind::AggregateState);
    assert_eq!(s.availability, Some(6500));
    assert_eq!(
        s.activity,
        Some(Activity {
            token: Some("on-the-phone".into()),
            min_availability: Some(6500),
            max_availability: Some(8999),
            custom: vec![]
        })
    );
    assert_eq!(s.last_active, Some(ts("2024-05-06T09:13:40Z")));
    assert_eq!(s.device.as_deref(), Some("computer"));
    assert_eq!(d.aggregate_state(), Some(s));
    assert_eq!(
        d.categories[1].value,
        CategoryValue::Note(vec![NoteBody {
            kind: NoteKind::Personal,
            text: "In the lab until 3pm".into(),
            ..NoteBody::default()
        }])
    );
    let CategoryValue::CalendarData(cd) = &d.categories[2].value else { panic!("calendarData") };
    assert_eq!(cd.mailbox_id.as_deref(), Some("alice@contoso.com"));
    let fb = cd.free_busy.as_ref().expect("freeBusy");
    assert_eq!((fb.granularity_minutes, fb.encoding_version), (15, Some(1)));
    // "AAAAAKqq": 4 zero bytes (16 free slots), then 0xAA 0xAA (8 busy slots).
    assert_eq!(fb.slots.len(), 24);
    assert!(fb.slots[..16].iter().all(|s| *s == FreeBusySlot::Free));
    assert!(fb.slots[16..].iter().all(|s| *s == FreeBusySlot::Busy));
    assert_eq!(fb.slot_at(ts("2024-05-06T03:59:59Z")), Some(FreeBusySlot::Free));
    assert_eq!(fb.slot_at(ts("2024-05-06T04:00:00Z")), Some(FreeBusySlot::Busy));
    assert_eq!(fb.slot_at(ts("2024-05-06T06:00:00Z")), None);
    assert_eq!(fb.slot_at(ts("2024-05-05T23:59:59Z")), None);
    assert_eq!(d.categories[3].name, "contactCard");
    assert_eq!(d.categories[3].value, CategoryValue::Other);
}

#[test]
fn https_namespaces_parse_like_http() {
    assert_eq!(parse(HTTPS), parse(NOTIFY));
}

#[test]
fn range_boundaries() {
    for (n, xml, class) in BOUNDARIES {
        let d = parse(xml);
        let s = d.aggregate_state().expect("aggregateState");
        assert_eq!(s.availability, Some(n));
        assert_eq!(AvailabilityClass::from_availability(n), Some(class), "{n}");
    }
    use AvailabilityClass::*;
    for (n, want) in [
        (0, None),
        (1, None),
        (2999, None),
        (3000, Some(Available)),
        (3500, Some(Available)),
        (6900, Some(Busy)),
        (7499, Some(Busy)),
        (7500, Some(BusyIdle)),
        (u32::MAX, Some(Offline)),
    ] {
        assert_eq!(AvailabilityClass::from_availability(n), want, "{n}");
    }
    for c in [Available, AvailableIdle, Busy, BusyIdle, DoNotDisturb, BeRightBack, Away, Offline] {
        assert_eq!(AvailabilityClass::from_availability(c.canonical()), Some(c));
    }
}

#[test]
fn urgent_interruptions_only() {
    let d = parse(URGENT);
    let s = d.aggregate_state().expect("state");
    assert_eq!(s.availability, Some(6900));
    let a = s.activity.as_ref().expect("activity");
    assert_eq!(a.token.as_deref(), Some(URGENT_INTERRUPTIONS_ONLY));
    assert_eq!(a.custom, vec![CustomText { lcid: Some(1033), text: "Urgent interruptions only".into() }]);
    let agg = Aggregate {
        availability: s.availability,
        class: AvailabilityClass::from_availability(6900),
        activity: s.activity.clone(),
    };
    assert!(agg.urgent_interruptions_only());
    assert_eq!(agg.class, Some(AvailabilityClass::Busy));
    let plain = Aggregate { availability: Some(6500), class: Some(AvailabilityClass::Busy), activity: None };
    assert!(!plain.urgent_interruptions_only());
}

#[test]
fn calendar_meeting_and_phone_states() {
    let d = parse(MEETING);
    let c = &d.categories[0];
    assert_eq!(
        (c.instance, c.container, c.version, c.expire_type.as_deref()),
        (1_906_451_226, Some(2), Some(7), Some("time"))
    );
    let s = state_of(c);
    assert_eq!(s.kind, StateKind::CalendarState);
    assert_eq!(s.uri.as_deref(), Some("bob@contoso.com"));
    assert_eq!(s.start_time, Some(ts("2024-05-06T09:00:00Z")));
    assert_eq!(s.meeting_subject.as_deref(), Some("Budget review & Q3 plan"));
    assert_eq!(s.meeting_location.as_deref(), Some("Room 4.12"));
    assert_eq!(s.activity.as_ref().and_then(|a| a.token.as_deref()), Some("in-a-meeting"));

    let d = parse(PHONE);
    let s = state_of(&d.categories[0]);
    assert_eq!(s.kind, StateKind::PhoneState);
    assert_eq!(s.uri.as_deref(), Some("tel:+41441234567"));
    assert_eq!(s.device.as_deref(), Some("deskphone"));
    let a = aggregate(&d.state_instances());
    assert_eq!(a.availability, Some(6500));
    assert_eq!(a.activity.and_then(|a| a.token).as_deref(), Some("on-the-phone"));
}

#[test]
fn calendar_oof_without_availability_and_machine_away() {
    let d = parse(OOF);
    let s = state_of(&d.categories[0]);
    assert_eq!(s.availability, None);
    assert_eq!(s.activity.as_ref().and_then(|a| a.min_availability), Some(12000));
    assert_eq!(d.categories[1].instance, -1_425_683_098i64 as u64);
    assert_eq!(state_of(&d.categories[1]).kind, StateKind::MachineState);
    let CategoryValue::Note(bodies) = &d.categories[2].value else { panic!("note") };
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0].kind, NoteKind::Oof);
    assert_eq!(bodies[0].lcid, Some(1033));
    assert_eq!(bodies[0].start_time, Some(ts("2024-05-06T00:00:00Z")));
    assert_eq!(bodies[0].end_time, Some(ts("2024-05-10T00:00:00Z")));
    assert_eq!(bodies[0].text, "On leave until Friday. Ask Frank.");
    assert_eq!(bodies[0].uri, None);
    assert_eq!(bodies[1].kind, NoteKind::Personal);
    let a = aggregate(&d.state_instances());
    assert_eq!(a.availability, Some(15500));
    assert_eq!(a.class, Some(AvailabilityClass::Away));
    assert_eq!(a.activity.and_then(|a| a.token).as_deref(), Some("out-of-office"));
}

#[test]
fn manual_user_state_before_and_after_a_call() {
    let a = aggregate(&parse(USER_THEN_PHONE).state_instances());
    assert_eq!(a.availability, Some(6500));
    assert_eq!(a.activity.and_then(|a| a.token).as_deref(), Some("on-the-phone"));
    let d = parse(PHONE_THEN_USER);
    assert_eq!(state_of(&d.categories[1]).manual, Some(true));
    let a = aggregate(&d.state_instances());
    assert_eq!((a.availability, a.activity), (Some(3500), None));
}

#[test]
fn free_busy_with_mixed_slots() {
    let d = parse(FREEBUSY);
    let CategoryValue::CalendarData(cd) = &d.categories[0].value else { panic!("calendarData") };
    let fb = cd.free_busy.as_ref().expect("freeBusy");
    assert_eq!(fb.granularity_minutes, 30);
    use FreeBusySlot::*;
    assert_eq!(
        fb.slots,
        vec![
            Free, Tentative, Busy, Oof, Oof, Busy, Tentative, Free, Busy, Busy, Busy, Busy, Free, Free, Free, Free,
            Tentative, Tentative, Tentative, Tentative
        ]
    );
    assert_eq!(fb.slot_at(ts("2024-05-06T09:29:00Z")), Some(Busy));
    assert_eq!(fb.slot_at(ts("2024-05-06T09:30:00Z")), Some(Oof));
    assert_eq!(encode_free_busy(&fb.slots), "5BuqAFU=");
    for (s, m) in [
        ("PT15M", Some(15)),
        ("PT1H", Some(60)),
        ("PT1H30M", Some(90)),
        ("PT0M", None),
        ("P1D", None),
        ("PTM", None),
        ("PT15", None),
        ("PT999999M", None),
    ] {
        assert_eq!(granularity(s), m, "{s}");
    }
    assert!(decode_free_busy("not base64!").is_empty());
    let long = "A".repeat(MAX_FREEBUSY_SLOTS);
    assert_eq!(decode_free_busy(&long).len(), MAX_FREEBUSY_SLOTS);
}

struct Row {
    what: &'static str,
    inputs: Vec<StateInstance>,
    availability: Option<u32>,
    activity: Option<&'static str>,
}

fn inst(
    kind: StateKind,
    availability: Option<u32>,
    activity: Option<(&str, Option<u32>, Option<u32>)>,
    minute: i64,
) -> StateInstance {
    StateInstance {
        publish_time: Timestamp::from_second(1_714_986_000 + minute * 60).expect("time"),
        state: State {
            kind,
            availability,
            activity: activity.map(|(t, min, max)| Activity {
                token: Some(t.into()),
                min_availability: min,
                max_availability: max,
                custom: vec![],
            }),
            ..State::default()
        },
    }
}

/// Worked examples of the server's aggregation rules (the aggregation script; [MS-PRES]
/// §3.8.5.1.2), then edge cases of the rules.
#[test]
fn aggregation_table() {
    use StateKind::*;
    let busy = |t| Some((t, Some(6500), Some(8999)));
    let rows = vec![
        Row {
            what: "machine 3500, calendar 6500 in-a-meeting",
            inputs: vec![
                inst(MachineState, Some(3500), None, 0),
                inst(CalendarState, Some(6500), busy("in-a-meeting"), 1),
            ],
            availability: Some(6500),
            activity: Some("in-a-meeting"),
        },
        Row {
            what: "userState 3500 (manual) then phone 6500 on-the-phone",
            inputs: vec![inst(UserState, Some(3500), None, 0), inst(PhoneState, Some(6500), busy("on-the-phone"), 1)],
            availability: Some(6500),
            activity: Some("on-the-phone"),
        },
        Row {
            what: "phone 6500 then userState 3500",
            inputs: vec![inst(PhoneState, Some(6500), busy("on-the-phone"), 0), inst(UserState, Some(3500), None, 1)],
            availability: Some(3500),
            activity: None,
        },
        Row {
            what: "userState 9500 then phone 6500",
            inputs: vec![inst(UserState, Some(9500), None, 0), inst(PhoneState, Some(6500), busy("on-the-phone"), 1)],
            availability: Some(9500),
            activity: None,
        },
        Row {
            what: "user 6500 busy, machine idle",
            inputs: vec![inst(UserState, Some(6500), None, 1), inst(MachineState, Some(5000), None, 0)],
            availability: Some(7500),
            activity: None,
        },
        Row {
            what: "calendar OOF (min 12000, no availability) + machine 15500",
            inputs: vec![
                inst(CalendarState, None, Some(("out-of-office", Some(12000), None)), 0),
                inst(MachineState, Some(15500), None, 1),
            ],
            availability: Some(15500),
            activity: Some("out-of-office"),
        },
        Row { what: "nothing", inputs: vec![], availability: None, activity: None },
        Row {
            what: "a reset userState (no availability) is no anchor",
            inputs: vec![inst(PhoneState, Some(6500), busy("on-the-phone"), 0), inst(UserState, Some(0), None, 1)],
            availability: Some(6500),
            activity: Some("on-the-phone"),
        },
        Row {
            what: "the most active machine wins",
            inputs: vec![inst(MachineState, Some(15500), None, 0), inst(MachineState, Some(3500), None, 1)],
            availability: Some(3500),
            activity: None,
        },
        Row {
            what: "available + machine idle = available-idle",
            inputs: vec![inst(UserState, Some(3500), None, 1), inst(MachineState, Some(5000), None, 0)],
            availability: Some(5000),
            activity: None,
        },
        Row {
            what: "highest minAvailability wins",
            inputs: vec![
                inst(UserState, Some(6900), Some(("urgent-interruptions-only", Some(6900), Some(8999))), 0),
                inst(PhoneState, Some(6500), busy("on-the-phone"), 1),
            ],
            availability: Some(6900),
            activity: Some("urgent-interruptions-only"),
        },
        Row {
            what: "tie on minAvailability: newest wins",
            inputs: vec![
                inst(CalendarState, Some(6500), busy("in-a-meeting"), 0),
                inst(PhoneState, Some(6500), busy("on-the-phone"), 1),
            ],
            availability: Some(6500),
            activity: Some("on-the-phone"),
        },
        Row {
            what: "server output is ignored",
            inputs: vec![inst(AggregateState, Some(18500), None, 0), inst(AggregateMachineState, Some(3500), None, 0)],
            availability: None,
            activity: None,
        },
        Row {
            what: "an activity without token or text is dropped",
            inputs: vec![inst(PhoneState, Some(6500), Some(("  ", None, None)), 0)],
            availability: Some(6500),
            activity: None,
        },
        Row {
            what: "no availability: bounds are not checked",
            inputs: vec![inst(CalendarState, None, Some(("out-of-office", Some(12000), None)), 0)],
            availability: None,
            activity: Some("out-of-office"),
        },
    ];
    for r in rows {
        let a = aggregate(&r.inputs);
        assert_eq!(a.availability, r.availability, "{}", r.what);
        assert_eq!(a.class, r.availability.and_then(AvailabilityClass::from_availability), "{}", r.what);
        assert_eq!(a.activity.and_then(|a| a.token).as_deref(), r.activity, "{}", r.what);
    }
}

#[test]
fn start_time_breaks_activity_ties() {
    let mut older_pub = inst(StateKind::CalendarState, Some(6500), Some(("in-a-meeting", Some(6500), Some(8999))), 0);
    // Published first but its startTime is the newest.
    older_pub.state.start_time = Some(Timestamp::from_second(1_714_990_000).expect("time"));
    let phone = inst(StateKind::PhoneState, Some(6500), Some(("on-the-phone", Some(6500), Some(8999))), 5);
    let a = aggregate(&[older_pub, phone]);
    assert_eq!(a.activity.and_then(|a| a.token).as_deref(), Some("in-a-meeting"));
}

#[test]
fn state_kinds() {
    for (n, k) in KINDS.iter() {
        assert_eq!(k.as_str(), *n);
        assert_eq!(&StateKind::parse(&format!("tns:{}", n.to_lowercase())), k);
    }
    assert_eq!(StateKind::parse("fancyState"), StateKind::Other("fancyState".into()));
}

#[test]
fn categories_round_trip() {
    for xml in [NOTIFY, HTTPS, URGENT, MEETING, OOF, PHONE, USER_THEN_PHONE, PHONE_THEN_USER, FREEBUSY] {
        let d = parse(xml);
        assert_eq!(parse(build_categories(&d).as_bytes()), d);
    }
    for (_, xml, _) in BOUNDARIES {
        let d = parse(xml);
        assert_eq!(parse(build_categories(&d).as_bytes()), d);
    }
    let d = Categories {
        uri: "sip:o'neil&co@contoso.com".into(),
        categories: vec![
            Category {
                name: "state".into(),
                instance: 0x2000_0000,
                publish_time: Some(ts("2024-05-06T09:14:02.117Z")),
                container: Some(2),
                version: Some(4),
                expire_type: Some("static".into()),
                value: CategoryValue::State(State {
                    kind: StateKind::UserState,
                    availability: Some(9500),
                    activity: Some(Activity {
                        token: Some("in-presentation".into()),
                        min_availability: Some(9000),
                        max_availability: Some(11999),
                        custom: vec![
                            CustomText { lcid: Some(1033), text: "Presenting <slides> & more".into() },
                            CustomText { lcid: None, text: "Präsentiert".into() },
                        ],
                    }),
                    manual: Some(true),
                    start_time: Some(ts("2024-05-06T09:00:00Z")),
                    uri: Some("x@y".into()),
                    last_active: Some(ts("2024-05-06T09:13:40Z")),
                    meeting_subject: Some("S".into()),
                    meeting_location: Some("L".into()),
                    device: Some("mobile".into()),
                }),
            },
            Category {
                name: "note".into(),
                instance: 0,
                publish_time: None,
                value: CategoryValue::Note(vec![NoteBody {
                    kind: NoteKind::Other("custom".into()),
                    text: "n".into(),
                    lcid: Some(1031),
                    start_time: None,
                    end_time: Some(ts("2024-05-06T10:00:00Z")),
                    uri: Some("http://x/?a=1&b=2".into()),
                }]),
                ..Category::default()
            },
            Category {
                name: "calendarData".into(),
                value: CategoryValue::CalendarData(CalendarData {
                    mailbox_id: None,
                    free_busy: Some(FreeBusy {
                        start_time: None,
                        granularity_minutes: 60,
                        encoding_version: None,
                        slots: vec![FreeBusySlot::Oof; 8],
                    }),
                }),
                ..Category::default()
            },
            Category { name: "services".into(), instance: u64::MAX, ..Category::default() },
        ],
    };
    let x = build_categories(&d);
    assert!(x.contains(r#"publishTime="2024-05-06T09:14:02.117""#), "{x}");
    assert!(x.contains(r#"xsi:type="userState" manual="true""#), "{x}");
    assert_eq!(parse(x.as_bytes()), d);
}

#[test]
fn limits_and_errors() {
    let many = r#"<category name="x" instance="0"/>"#.repeat(MAX_CATEGORIES + 1);
    assert_eq!(
        parse_categories(format!("<categories>{many}</categories>").as_bytes()),
        Err(MsrtcError::TooMany { what: "categories", max: MAX_CATEGORIES })
    );
    assert!(matches!(parse_categories(b"<presence/>"), Err(MsrtcError::Xml(XmlError::UnexpectedRoot { .. }))));
    // Unreadable numbers and times read as absent, not as errors.
    let d = parse(br#"<categories uri="u"><category name="state" instance="x" publishTime="later" container="-1">
        <state type="userState"><availability>lots</availability><activity minAvailability="a"/></state></category></categories>"#);
    let c = &d.categories[0];
    assert_eq!((c.instance, c.publish_time, c.container), (0, None, None));
    assert_eq!(state_of(c).availability, None);
    assert_eq!(state_of(c).activity, Some(Activity::default()));
}

#[test]
fn batch_sub() {
    let b = parse_batch_sub(BATCH_SUB).expect("parse");
    assert_eq!(
        b,
        BatchSub {
            uri: "sip:hub-svc@contoso.com".into(),
            action: BatchAction::Subscribe,
            action_id: "63792024".into(),
            resources: vec!["sip:alice@contoso.com".into(), "sip:bob@contoso.com".into()],
            categories: DEFAULT_CATEGORIES.iter().map(|s| s.to_string()).collect(),
        }
    );
    let x = build_batch_sub(&b);
    assert!(x.contains(r#"<batchSub xmlns="http://schemas.microsoft.com/2006/01/sip/batch-subscribe" uri="sip:hub-svc@contoso.com" name="">"#));
    assert!(x.contains(
        r#"<categoryList xmlns="http://schemas.microsoft.com/2006/09/sip/categorylist"><category name="calendarData"/>"#
    ));
    assert_eq!(parse_batch_sub(x.as_bytes()), Ok(b));
    let un = BatchSub {
        uri: "sip:a&b@c".into(),
        action: BatchAction::Unsubscribe,
        action_id: "1".into(),
        resources: vec!["sip:x@c".into()],
        categories: vec![],
    };
    assert_eq!(parse_batch_sub(build_batch_sub(&un).as_bytes()), Ok(un));
    assert_eq!(parse_batch_sub(b"<batchSub/>"), Err(MsrtcError::BadBatchSub("no action")));
    assert!(matches!(
        parse_batch_sub(br#"<batchSub><action name="poll"/></batchSub>"#),
        Err(MsrtcError::BadBatchSub(_))
    ));
    let many = r#"<resource uri="sip:x@y"/>"#.repeat(MAX_BATCH_RESOURCES + 1);
    assert_eq!(
        parse_batch_sub(
            format!(r#"<batchSub><action name="subscribe"><adhocList>{many}</adhocList></action></batchSub>"#)
                .as_bytes()
        ),
        Err(MsrtcError::TooMany { what: "resources", max: MAX_BATCH_RESOURCES })
    );
}

/// Deterministic mutations and every truncation of the fixtures: nothing panics (parsing and
/// aggregating), and enough mutants still parse to reach the deep paths.
#[test]
fn no_input_panics_the_parsers() {
    let mut rng = Xorshift::new(0xA076_1D64_78BD_642F);
    let seeds = [NOTIFY, OOF, FREEBUSY, MEETING, USER_THEN_PHONE, URGENT];
    let mut ok = 0usize;
    for i in 0..12_000 {
        let v = mutate(seeds[i % seeds.len()], &mut rng, &XML_TOKENS);
        if let Ok(d) = parse_categories(&v) {
            ok += 1;
            let a = aggregate(&d.state_instances());
            let _ = a.urgent_interruptions_only();
            let _ = d.aggregate_state();
        }
        let v = mutate(BATCH_SUB, &mut rng, &XML_TOKENS);
        let _ = parse_batch_sub(&v);
    }
    assert!(ok > 1_000, "only {ok} mutants parsed: the deep paths went untested");
    for seed in [NOTIFY, OOF, BATCH_SUB] {
        for t in truncations(seed) {
            let _ = parse_categories(t);
            let _ = parse_batch_sub(t);
        }
    }
}
