//! The parsers against the fixtures (`fixtures/o2g/`), and mutated fixtures that must never
//! make them panic.

use serde_json::{json, Value};

use super::*;
use crate::common::json;
use crate::mutate::{Mutator, Xorshift};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../fixtures/o2g/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn discovery_picks_version_1_0() {
    let d = parse_discovery(&fixture("discovery.json")).unwrap();
    assert_eq!(d.internal_url.as_deref(), Some("https://server/api/rest/authenticate?version=1.0"));
    assert_eq!(d.public_url.as_deref(), Some("https://public-server/api/rest/authenticate?version=1.0"));
    assert_eq!(d.product.as_deref(), Some("O2G Solution 2.6"));
    // Without id 1.0, the CURRENT one.
    let v = br#"{"versions":[{"id":"0.9","status":"OLD","publicUrl":"a"},{"id":"2.0","status":"CURRENT","internalUrl":"b"}]}"#;
    assert_eq!(parse_discovery(v).unwrap().internal_url.as_deref(), Some("b"));
    assert!(parse_discovery(br#"{"versions":[]}"#).is_err());
    assert!(parse_discovery(b"<html>").is_err());
}

#[test]
fn authenticate_and_cookie() {
    let a = parse_authenticate(&fixture("authenticate.json")).unwrap();
    assert_eq!(a.credential, "5B9F6E2AC1D04E1B");
    assert_eq!(a.internal_url.as_deref(), Some("https://server/api/rest/1.0/sessions"));
    assert_eq!(cookie_header(&a.credential), "AlcUserId=5B9F6E2AC1D04E1B");
    assert_eq!(credential_from_set_cookie("AlcUserId=abc; Path=/; HttpOnly"), Some("abc"));
    assert_eq!(credential_from_set_cookie("Other=abc"), None);
    assert!(parse_authenticate(br#"{"credential":"","publicUrl":"x"}"#).is_err());
    assert!(parse_authenticate(br#"{"credential":"c"}"#).is_err());
}

#[test]
fn session_services_and_ttl() {
    let s = parse_session(&fixture("session.json")).unwrap();
    assert!(s.admin);
    assert_eq!(s.ttl_secs(), 300);
    assert_eq!(s.service_url("subscriptions", false).as_deref(), Some("https://server/api/rest/1.0/subscriptions"));
    assert_eq!(s.service_url("TELEPHONY", false).as_deref(), Some("https://server/api/rest/1.0/telephony"));
    assert_eq!(s.service_url("routing", true).as_deref(), Some("https://public-server/api/rest/1.0/routing"));
    assert_eq!(s.service_url("comlog", false), None);
    let no_ttl = parse_session(br#"{"privateBaseUrl":"http://h/api/rest/1.0","services":[]}"#).unwrap();
    assert_eq!(no_ttl.ttl_secs(), DEFAULT_TTL_SECS);
    assert!(parse_session(br#"{"services":[]}"#).is_err());
    assert_eq!(session_request("presence-hub"), r#"{"applicationName":"presence-hub"}"#);
}

#[test]
fn subscription_request_and_answer() {
    let ids = vec!["oxe1001".to_string(), "oxe1002".to_string()];
    let body =
        subscription_request(&ids, &[PACKAGE_TELEPHONY, PACKAGE_ROUTING], &Delivery::Chunk { timeout_min: 60 });
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        json!({"filter":{"selectors":[{"ids":["oxe1001","oxe1002"],"names":["telephony"]},
                                      {"ids":["oxe1001","oxe1002"],"names":["routingManagement"]}]},
               "version":"1.0","timeout":60})
    );
    let hook = subscription_request(
        &ids,
        &[PACKAGE_TELEPHONY],
        &Delivery::Webhook { url: "https://hub/hooks/o2g/events/k".into() },
    );
    let v: Value = serde_json::from_str(&hook).unwrap();
    assert_eq!(v["webHookUrl"], "https://hub/hooks/o2g/events/k");
    assert!(v.get("timeout").is_none());

    let s = parse_subscription(&fixture("subscription_accepted.json")).unwrap();
    assert!(s.subscription_id.starts_with("eyJhbGciOiJIUzI1NiJ9"));
    assert_eq!(s.polling_url(false), s.private_polling_url.as_deref());
    assert!(s.polling_url(true).unwrap().contains(":8014/OTEvents?subscriptionId="));
    assert_eq!(
        parse_subscription(br#"{"subscriptionId":"x","status":"REFUSED","message":"no licence"}"#),
        Err(ParseError::Refused("no licence".into()))
    );
    assert_eq!(
        snapshot_url("http://h/api/rest/1.0/telephony/", "oxe 1&2"),
        "http://h/api/rest/1.0/telephony/state/snapshot?loginName=oxe%201%262"
    );
}

#[test]
fn documents_past_their_limit_are_refused_before_parsing() {
    let mut big = br#"{"credential":"c","internalUrl":"http://h/api/rest/1.0/sessions","pad":""#.to_vec();
    big.resize(MAX_DOCUMENT, b'x');
    big.extend_from_slice(b"\"}");
    for e in [parse_authenticate(&big).err(), parse_session(&big).err(), parse_subscription(&big).err(), parse_discovery(&big).err()] {
        assert!(matches!(e, Some(ParseError::Json(json::ParseError::TooLarge { max: MAX_DOCUMENT, .. }))), "{e:?}");
    }
    let mut line = br#"{"eventName":"OnChannelInformation","text":""#.to_vec();
    line.resize(MAX_EVENT_BYTES - 2, b'x');
    line.extend_from_slice(b"\"}");
    assert!(parse_event(&line).is_ok(), "an event of exactly the limit is read");
    line.insert(1, b' ');
    assert_eq!(parse_event(&line), Err(ParseError::TooLong));
}

#[test]
fn urls_are_picked_for_the_access_asked_and_encoded() {
    let s = parse_subscription(br#"{"subscriptionId":"x","status":"ACCEPTED","privatePollingUrl":" ","publicPollingUrl":"http://pub/e"}"#).unwrap();
    assert_eq!(s.polling_url(false), Some("http://pub/e"), "an empty private URL falls back to the public one");
    let a = parse_authenticate(br#"{"credential":"c","publicUrl":"https://pub/api/rest/1.0/sessions/"}"#).unwrap();
    assert_eq!((a.sessions_url(false), a.sessions_url(true)), (Some("https://pub/api/rest/1.0/sessions"), Some("https://pub/api/rest/1.0/sessions")));
    let d = parse_discovery(&fixture("discovery.json")).unwrap();
    assert_eq!(d.authenticate_url(true), Some("https://public-server/api/rest/authenticate?version=1.0"));
    assert_eq!(subscription_url("http://h/api/rest/1.0/subscriptions/", "a b+c/d"), "http://h/api/rest/1.0/subscriptions/a%20b%2Bc%2Fd");
}

#[test]
fn every_event_kind_parses_from_its_fixture() {
    match parse_event(&fixture("on_channel_information.json")).unwrap() {
        Event::ChannelInformation { text } => assert_eq!(text.as_deref(), Some("Channel established")),
        e => panic!("{e:?}"),
    }
    let hb = parse_event(&fixture("on_channel_information_keepalive.json")).unwrap();
    assert!(hb.is_heartbeat());

    let Event::CallCreated(c) = parse_event(&fixture("on_call_created.json")).unwrap() else { panic!() };
    assert_eq!((c.login_name.as_str(), c.call.call_ref.as_str()), ("2624", "3b1f0a2c"));
    assert_eq!(c.call.legs[0].state, MediaState::RingingIncoming);
    assert_eq!(c.call.call_data.as_ref().and_then(|d| d.state.clone()), Some(MediaState::RingingIncoming));
    assert_eq!(
        c.call.participants[0].identity.as_ref().and_then(|i| i.id.as_ref()).and_then(|i| i.phone_number.as_deref()),
        Some("+46855512345")
    );
    assert_eq!(c.initiator.as_deref(), Some("p1"));

    let Event::CallModified(m) = parse_event(&fixture("on_call_modified.json")).unwrap() else { panic!() };
    assert_eq!(m.modified_legs[0].state, MediaState::Active);
    assert_eq!(m.removed_legs.len(), 1);
    assert_eq!(m.removed_participant_ids, vec!["p2".to_string()]);
    // The Node spelling of the removed fields.
    let Event::CallModified(n) = parse_event(&fixture("on_call_modified_node_spelling.json")).unwrap() else {
        panic!()
    };
    assert_eq!(n.removed_legs.len(), 1);
    assert_eq!(n.removed_participant_ids, vec!["p9".to_string()]);
    assert_eq!(n.previous_call_ref.as_deref(), Some("1111"));
    assert_eq!(n.modified_legs[0].state, MediaState::Held);

    let Event::CallRemoved(r) = parse_event(&fixture("on_call_removed.json")).unwrap() else { panic!() };
    assert_eq!((r.cause.as_deref(), r.new_destination.as_deref()), (Some("FORWARDED"), Some("91234567")));

    let Event::UserStateModified(u) = parse_event(&fixture("on_user_state_modified.json")).unwrap() else {
        panic!()
    };
    assert_eq!(u.state, UserState::Busy);

    let Event::DeviceStateModified(d) = parse_event(&fixture("on_device_state_modified.json")).unwrap() else {
        panic!()
    };
    assert_eq!(d.device_states[0].state, OperationalState::OutOfService);

    let Event::TelephonyState(t) = parse_event(&fixture("on_telephony_state.json")).unwrap() else { panic!() };
    let st = t.state.unwrap();
    assert_eq!(st.calls.len(), 2);
    assert_eq!(st.calls[1].legs[0].state, MediaState::Held);
    assert_eq!(st.user_state, Some(UserState::Busy));

    let Event::RoutingStateChanged(rs) = parse_event(&fixture("on_routing_state_changed.json")).unwrap() else {
        panic!()
    };
    assert_eq!(rs.routing_state.forward_routes[0].condition.as_deref(), Some("BUSY_NO_ANSWER"));
    assert_eq!(rs.routing_state.overflow_routes[0].destinations[0].kind, "VOICEMAIL");
    // Each kind's condition field is read into the one `condition`; no other key is.
    assert_eq!(rs.routing_state.overflow_routes[0].condition.as_deref(), Some("NO_ANSWER"));
    assert_eq!(rs.routing_state.presentation_routes[0].condition, None);
    let Event::RoutingStateChanged(other) = parse_event(br#"{"eventName":"OnRoutingStateChanged","loginName":"1","routingState":{"forwardRoutes":[{"condition":"BUSY","destinations":[]}]}}"#).unwrap() else {
        panic!()
    };
    assert_eq!(other.routing_state.forward_routes[0].condition, None);
    assert_eq!(rs.routing_state.dnd_state, Some(DndState { activate: false }));
    assert_eq!(rs.routing_state.presentation_routes[0].destinations[0].kind, "MOBILE");

    let Event::EventSummaryUpdated(es) = parse_event(&fixture("on_event_summary_updated.json")).unwrap() else {
        panic!()
    };
    assert_eq!(es.event_summary.missed_calls_nb, Some(3));

    match parse_event(&fixture("on_dynamic_state_changed.json")).unwrap() {
        Event::Other { name, login_name } => {
            assert_eq!((name.as_str(), login_name.as_deref()), ("OnDynamicStateChanged", Some("2624")))
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn unknown_enum_values_are_kept_and_bad_events_refused() {
    let e = parse_event(br#"{"eventName":"OnCallCreated","loginName":"1","callRef":"c","cause":"CAMP_ON","legs":[{"deviceId":"1","state":"WHISPERING"}]}"#).unwrap();
    let Event::CallCreated(c) = e else { panic!() };
    assert_eq!(c.call.legs[0].state, MediaState::Other("WHISPERING".into()));
    assert_eq!(c.cause.as_deref(), Some("CAMP_ON"));
    for bad in [
        &b"not json"[..],
        b"[]",
        b"{}",
        br#"{"eventName":""}"#,
        br#"{"eventName":"OnCallCreated","callRef":"c"}"#,
        br#"{"eventName":"OnCallCreated","loginName":"1"}"#,
        br#"{"eventName":"OnUserStateModified","loginName":"1","state":7}"#,
        br#"{"eventName":"OnCallModified","loginName":"1","callRef":"c","modifiedLegs":"x"}"#,
    ] {
        assert!(parse_event(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
    assert_eq!(parse_event(&vec![b' '; MAX_EVENT_BYTES + 1]), Err(ParseError::TooLong));
}

#[test]
fn splitter_handles_boundaries_crlf_and_overlong_lines() {
    let mut s = LineSplitter::new(16);
    let mut out = Vec::new();
    s.push(b"{\"a\":1}\r\n\n  \n{\"b\"", &mut out);
    s.push(b":2}\n", &mut out);
    s.push(b"0123456789abcdefXYZ", &mut out);
    s.push(b"more\n{\"c\":3}", &mut out);
    s.finish(&mut out);
    assert_eq!(
        out,
        vec![
            Line::Event(b"{\"a\":1}".to_vec()),
            Line::Event(b"{\"b\":2}".to_vec()),
            Line::TooLong,
            Line::Event(b"{\"c\":3}".to_vec())
        ]
    );
    assert_eq!(s.pending(), 0);
}

const FIXTURES: [&str; 17] = [
    "discovery.json",
    "authenticate.json",
    "session.json",
    "subscription_accepted.json",
    "on_channel_information.json",
    "on_channel_information_keepalive.json",
    "on_call_created.json",
    "on_call_modified.json",
    "on_call_modified_node_spelling.json",
    "on_call_removed.json",
    "on_user_state_modified.json",
    "on_device_state_modified.json",
    "on_telephony_state.json",
    "on_routing_state_changed.json",
    "on_event_summary_updated.json",
    "on_dynamic_state_changed.json",
    "stream.ndjson",
];

#[test]
fn mutated_documents_and_streams_never_panic() {
    let seeds: Vec<Vec<u8>> = FIXTURES.iter().map(|f| fixture(f)).collect();
    let tokens: &[&[u8]] = &[
        b"\n",
        b"\r\n",
        b"null",
        b"[",
        b"]}",
        b"{\"eventName\":\"OnCallModified\",",
        b"\"state\":\"HELD\"",
        b"\"legs\":[{}]",
        b"\xff\xfe",
        b"\"removedLeg\":[",
        b"1e999",
        b"\"loginName\":\"",
        b"\\u0000",
    ];
    let m = Mutator::new(tokens, &[]);
    let mut rng = Xorshift::new(0x5eed_0a2f);
    let mut parsed = 0usize;
    for i in 0..6000 {
        let v = m.mutate(&seeds[i % seeds.len()], &mut rng);
        let _ = parse_discovery(&v);
        let _ = parse_authenticate(&v);
        let _ = parse_session(&v).map(|s| (s.ttl_secs(), s.service_url("telephony", false)));
        let _ = parse_subscription(&v).map(|s| s.polling_url(true).map(str::len));
        if let Ok(e) = parse_event(&v) {
            parsed += 1;
            let _ = (e.name().len(), e.login_name(), e.is_heartbeat());
        }
        // The same bytes as a stream, cut at random boundaries: the splitter gives the
        // same lines whatever the cuts.
        let mut whole = LineSplitter::new(1024);
        let mut expect = Vec::new();
        whole.push(&v, &mut expect);
        whole.finish(&mut expect);
        let mut cut = LineSplitter::new(1024);
        let mut got = Vec::new();
        let mut rest = &v[..];
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len().min(97));
            cut.push(&rest[..n], &mut got);
            rest = &rest[n..];
        }
        cut.finish(&mut got);
        assert_eq!(got, expect, "seed {i}");
        for l in got {
            if let Line::Event(b) = l {
                let _ = parse_event(&b);
            }
        }
    }
    assert!(parsed > 300, "only {parsed} mutants parsed: the mutations are too destructive to reach deep paths");
}
