//! Tests of the Graph parsers against the fixtures (`fixtures/graph/`), and the mutation test
//! that no input panics any of them.

use super::*;
use super::notification::{form_decode, user_id_from_path};
use super::presence::clean_text;
use crate::mutate::{Mutator, Xorshift};

/// `fixtures/graph/{name}`.
fn fixture(name: &str) -> Vec<u8> {
    crate::mutate::fixture(&format!("graph/{name}"))
}

fn ms(s: &str) -> UnixMs {
    parse_rfc3339(s).expect("test time")
}

fn all_ok(json: &[u8]) -> Vec<GraphPresence> {
    parse_presences(json).expect("envelope").into_iter().map(|r| r.expect("item")).collect()
}

#[test]
fn teams_table_maps_every_pair() {
    use Activity as Ac;
    use Availability as Av;
    let want: [(Av, Option<Ac>, bool); 15] = [
        (Av::Available, None, false),
        (Av::Available, Some(Ac::OutOfOffice), true),
        (Av::Busy, None, false),
        (Av::Busy, Some(Ac::InACall), false),
        (Av::Busy, Some(Ac::InAMeeting), false),
        (Av::DoNotDisturb, None, false),
        (Av::DoNotDisturb, Some(Ac::Presenting), false),
        (Av::Away, None, false),
        (Av::BeRightBack, None, false),
        (Av::Offline, Some(Ac::OffWork), false),
        (Av::Busy, Some(Ac::InAConferenceCall), false),
        (Av::AvailableIdle, Some(Ac::Inactive), false),
        (Av::BusyIdle, Some(Ac::Inactive), false),
        (Av::DoNotDisturb, Some(Ac::UrgentInterruptionsOnly), false),
        (Av::Unknown, None, false),
    ];
    let got = all_ok(&fixture("presences_teams_table.json"));
    assert_eq!(got.len(), want.len());
    for (i, (p, (av, ac, ooo))) in got.iter().zip(want).enumerate() {
        let n = i + 1;
        assert_eq!(p.id, format!("6e1c0a0b-{n:04}-4c2e-9a0f-1b2c3d4e5f{n:02}"));
        assert_eq!((p.availability, p.activity.clone()), (av, ac.clone()), "row {n}");
        assert_eq!(p.ooo, ooo, "row {n}");
        assert_eq!(p.unknown, None, "row {n}");
        assert_eq!(p.sequence.as_deref(), Some(format!("C1_{:010}", 1000 + n).as_str()));
        assert_eq!(
            (p.status_message.as_deref(), p.ooo_message.as_deref(), p.work_location.as_deref()),
            (None, None, None)
        );

        let s = p.to_signal(1_000);
        assert_eq!(s.source, Source::Teams);
        assert_eq!(&*s.instance, "teams");
        assert_eq!(s.availability, av.is_known().then_some(av));
        assert_eq!(s.activity, ac);
        assert_eq!(s.ooo, ooo);
        assert_eq!(s.note, None);
        assert_eq!(s.version, Some(Version::Text(format!("C1_{:010}", 1000 + n).into())));
        assert_eq!((s.valid_from, s.valid_until, s.observed_at), (None, None, 1_000));
    }
    // PresenceUnknown: no opinion at all.
    assert!(got[14].to_signal(0).is_retraction());
}

#[test]
fn camelcase_values_parse_and_focusing_is_recorded_as_unknown() {
    let got = all_ok(&fixture("presence_camelcase_focusing.json"));
    let view: Vec<_> = got
        .iter()
        .map(|p| (p.availability, p.activity.clone(), p.unknown.as_deref(), p.sequence.as_deref()))
        .collect();
    assert_eq!(
        view,
        vec![
            (Availability::DoNotDisturb, Some(Activity::Presenting), None, Some("C1_0000002001")),
            (Availability::BeRightBack, None, None, Some("C1_0000002002")),
            (Availability::AvailableIdle, Some(Activity::Inactive), None, Some("C1_0000002003")),
            (Availability::Busy, None, Some("focusing"), Some("C1_0000002004")),
            (Availability::Unknown, Some(Activity::InAMeeting), Some("focusing"), Some("C1_0000002005")),
            (Availability::Unknown, None, None, None),
        ]
    );
    // Busy/focusing keeps Busy; an unknown availability is no opinion (activity dropped too).
    let busy = got[3].to_signal(5);
    assert_eq!((busy.availability, busy.activity.clone()), (Some(Availability::Busy), None));
    let focusing = got[4].to_signal(5);
    assert_eq!((focusing.availability, focusing.activity.clone()), (None, None));
    assert!(focusing.is_retraction());
}

#[test]
fn status_message_with_expiry_is_cleaned_and_expires() {
    let p = parse_presence(&fixture("presence_status_message_expiry.json")).expect("presence");
    assert_eq!(p.id, "5b4c7a62-2f1e-4d3a-9c8b-7e6f5d4c3b2a");
    assert_eq!((p.availability, p.activity.clone()), (Availability::Busy, Some(Activity::InAMeeting)));
    assert_eq!(p.status_message.as_deref(), Some("Board review & budget <Q3> \u{2013} call \"Lena\" at 4711"));
    assert_eq!(p.status_expires_at, Some(ms("2024-05-06T17:00:00Z")));
    assert_eq!(p.work_location.as_deref(), Some("office"));
    assert!(!p.ooo);
    assert_eq!(p.ooo_message, None);

    let before = p.to_signal(ms("2024-05-06T16:59:59Z"));
    assert_eq!(before.note.as_deref(), p.status_message.as_deref());
    assert_eq!(before.version, Some(Version::Text("C1_0000003001".into())));
    assert_eq!(before.valid_until, None);
    let after = p.to_signal(ms("2024-05-06T17:00:00Z"));
    assert_eq!(after.note, None);
    assert_eq!(after.availability, Some(Availability::Busy));
}

#[test]
fn status_message_without_expiry_is_trimmed() {
    let p = parse_presence(&fixture("presence_status_message_plain.json")).expect("presence");
    assert_eq!(p.status_message.as_deref(), Some("Working from the Malmö office today"));
    assert_eq!(p.status_expires_at, None);
    assert_eq!(p.work_location, None, "unspecified is no location");
    let s = p.to_signal(ms("2030-01-01T00:00:00Z"));
    assert_eq!(s.note.as_deref(), Some("Working from the Malmö office today"));
    assert_eq!((s.availability, s.activity), (Some(Availability::Available), None));
}

#[test]
fn out_of_office_sets_flag_and_note() {
    let p = parse_presence(&fixture("presence_ooo.json")).expect("presence");
    assert!(p.ooo);
    assert_eq!(p.activity, Some(Activity::OutOfOffice));
    assert_eq!(p.status_message, None);
    assert_eq!(
        p.ooo_message.as_deref(),
        Some("I am away until 13 May. For urgent matters call the switchboard \u{2013} ext. 100.")
    );
    assert_eq!(p.work_location.as_deref(), Some("timeOff"));
    let s = p.to_signal(7);
    assert_eq!(
        (s.availability, s.activity.clone(), s.ooo),
        (Some(Availability::Available), Some(Activity::OutOfOffice), true)
    );
    assert_eq!(s.note.as_deref(), p.ooo_message.as_deref());
    assert_eq!(s.version, Some(Version::Text("C1_0000005001".into())));
}

#[test]
fn ooo_comes_from_settings_or_activity() {
    let by_settings = br#"{"id":"u1","availability":"Busy","activity":"InAMeeting",
        "outOfOfficeSettings":{"isOutOfOffice":true,"message":"Back Monday"},
        "statusMessage":{"message":{"content":"Ask Pia","contentType":"text"}}}"#;
    let p = parse_presence(by_settings).expect("presence");
    assert!(p.ooo);
    assert_eq!(p.activity, Some(Activity::InAMeeting));
    // A status message wins over the OOO message as the note.
    assert_eq!(p.to_signal(0).note.as_deref(), Some("Ask Pia"));

    let by_activity = br#"{"id":"u2","availability":"Away","activity":"OutOfOffice","outOfOfficeSettings":{"isOutOfOffice":false}}"#;
    assert!(parse_presence(by_activity).expect("presence").ooo);

    let not_ooo = br#"{"id":"u3","availability":"Away","activity":"Away","outOfOfficeSettings":{"isOutOfOffice":false,"message":"old text"}}"#;
    let p = parse_presence(not_ooo).expect("presence");
    assert!(!p.ooo);
    assert_eq!(p.ooo_message.as_deref(), Some("old text"));
    assert_eq!(p.to_signal(0).note, None, "the OOO message is a note only while out of office");

    // PresenceUnknown keeps the independent OOO fact.
    let unknown_ooo = br#"{"id":"u4","availability":"PresenceUnknown","activity":"OutOfOffice"}"#;
    let s = parse_presence(unknown_ooo).expect("presence").to_signal(0);
    assert_eq!((s.availability, s.activity, s.ooo), (None, None, true));
}

#[test]
fn one_bad_item_does_not_lose_the_others() {
    let got = parse_presences(&fixture("presences_one_bad_item.json")).expect("envelope");
    assert_eq!(got.len(), 5);
    let first = got[0].as_ref().expect("first");
    assert_eq!(
        (first.id.as_str(), first.activity.clone()),
        ("11111111-2222-4333-8444-555555555501", Some(Activity::InACall))
    );
    assert_eq!(got[1], Err(ParseError::Missing("id")));
    assert!(matches!(got[2], Err(ParseError::Shape(_))), "{:?}", got[2]);
    assert!(matches!(got[3], Err(ParseError::Shape(_))), "{:?}", got[3]);
    let last = got[4].as_ref().expect("wrong-shaped optional fields are ignored");
    assert_eq!(
        (last.availability, last.status_message.clone(), last.ooo, last.work_location.clone()),
        (Availability::Away, None, false, None)
    );
}

#[test]
fn presence_errors_are_clear() {
    assert!(matches!(parse_presence(b"not json"), Err(ParseError::NotJson(_))));
    assert!(matches!(parse_presence(b"{\"id\":"), Err(ParseError::NotJson(_))));
    assert!(matches!(parse_presence(b"[]"), Err(ParseError::Shape(_))));
    assert_eq!(parse_presence(b"{}"), Err(ParseError::Missing("id")));
    assert_eq!(parse_presence(b"{}").map_err(|e| e.to_string()), Err("missing field id".to_string()));
    assert_eq!(parse_presence(br#"{"id":null}"#), Err(ParseError::Missing("id")));
    assert!(matches!(parse_presence(br#"{"id":"  "}"#), Err(ParseError::Invalid { field: "id", .. })));
    let long = format!(r#"{{"id":"{}"}}"#, "a".repeat(101));
    assert!(matches!(parse_presence(long.as_bytes()), Err(ParseError::Invalid { field: "id", .. })));
    let ok = format!(r#"{{"id":"{}"}}"#, "a".repeat(100));
    let p = parse_presence(ok.as_bytes()).expect("100 bytes is fine");
    assert_eq!((p.availability, p.activity, p.unknown), (Availability::Unknown, None, None));
    let big = vec![b' '; MAX_BODY + 1];
    assert_eq!(parse_presence(&big), Err(ParseError::TooLarge { len: MAX_BODY + 1, max: MAX_BODY }));
    assert_eq!(
        parse_presence(&big).map_err(|e| e.to_string()),
        Err(format!("body too large: {} > {MAX_BODY} bytes", MAX_BODY + 1))
    );
    assert_eq!(parse_presences(br#"{"value":null}"#), Err(ParseError::Missing("value")));
    assert!(matches!(parse_presences(br#"{"value":{}}"#), Err(ParseError::Shape(_))));
    let many = format!(r#"{{"value":[{}]}}"#, vec!["{}"; MAX_ITEMS + 1].join(","));
    assert_eq!(
        parse_presences(many.as_bytes()),
        Err(ParseError::TooMany { what: "presences", n: MAX_ITEMS + 1, max: MAX_ITEMS })
    );
}

#[test]
fn expiry_time_zones() {
    let with = |dt: &str, tz: &str| {
        let body = format!(
            r#"{{"id":"u","statusMessage":{{"message":{{"content":"x"}},"expiryDateTime":{{"dateTime":"{dt}","timeZone":"{tz}"}}}}}}"#
        );
        parse_presence(body.as_bytes()).expect("presence").status_expires_at
    };
    assert_eq!(with("2024-05-06T17:00:00.0000000", "UTC"), Some(ms("2024-05-06T17:00:00Z")));
    assert_eq!(with("2024-05-06T17:00:00", "utc"), Some(ms("2024-05-06T17:00:00Z")));
    assert_eq!(with("2024-05-06T17:00:00+02:00", "W. Europe Standard Time"), Some(ms("2024-05-06T15:00:00Z")));
    assert_eq!(with("2024-05-06T17:00:00Z", "Pacific Standard Time"), Some(ms("2024-05-06T17:00:00Z")));
    assert_eq!(with("2024-05-06T17:00:00", "W. Europe Standard Time"), None);
    assert_eq!(with("2024-05-06T17:00:00", ""), None);
    assert_eq!(with("9999-12-31T23:59:59.9999999", "UTC"), None, "year 9999 means never");
    assert_eq!(with("tomorrow", "UTC"), None);
}

#[test]
fn request_body_takes_650_ids_and_refuses_651() {
    let ids: Vec<String> = (0..651).map(|i| format!("00000000-0000-4000-8000-{i:012}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let body = presences_request_body(&refs[..650]).expect("650 ids");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["ids"].as_array().map(Vec::len), Some(650));
    assert_eq!(v["ids"][649], "00000000-0000-4000-8000-000000000649");
    let err = presences_request_body(&refs).expect_err("651 ids");
    assert_eq!(err, ParseError::TooMany { what: "ids", n: 651, max: 650 });
    assert_eq!(err.to_string(), "too many ids: 651 > 650");
    assert_eq!(presences_request_body(&[]), Err(ParseError::Empty("ids")));
    assert_eq!(presences_request_body(&["a", "b"]).as_deref(), Ok(r#"{"ids":["a","b"]}"#));
    assert!(matches!(presences_request_body(&["a", ""]), Err(ParseError::Invalid { field: "ids", .. })));
    assert!(matches!(presences_request_body(&["a b"]), Err(ParseError::Invalid { field: "ids", .. })));

    assert_eq!(
        presence_filter_resource(&["a", "b'c"]).as_deref(),
        Ok("/communications/presences?$filter=id in ('a','b''c')")
    );
    let resource = presence_filter_resource(&refs[..650]).expect("650 ids");
    assert_eq!(resource.matches("','").count(), 649);
    assert_eq!(presence_filter_resource(&refs), Err(ParseError::TooMany { what: "ids", n: 651, max: 650 }));
    assert_eq!(presence_filter_resource(&[]), Err(ParseError::Empty("ids")));
}

#[test]
fn html_is_reduced_to_text() {
    let cases = [
        ("a < b > c", Some("a < b > c")),
        ("I <3 Teams", Some("I <3 Teams")),
        ("<b>bold</b> and <i>it</i>alic", Some("bold and italic")),
        ("line<br/>break<p>para</p>", Some("line break para")),
        ("x<!-- a > b -->y", Some("xy")),
        ("open <a href='x'", Some("open <a href='x'")),
        ("<style>p{}</style><script>alert(1)</script>shown", Some("shown")),
        ("&lt;b&gt; &amp;amp; &#39;q&#x27; &#0;&#x110000;&bogus; & ;", Some("<b> &amp; 'q' &#x110000;&bogus; & ;")),
        ("<p> </p>&nbsp;", None),
        ("tab\there\r\nnext", Some("tab here next")),
    ];
    for (input, want) in cases {
        assert_eq!(clean_text(input).as_deref(), want, "{input:?}");
    }
    let long = format!("<p>{}</p>", "word ".repeat(1000));
    assert_eq!(clean_text(&long).map(|t| t.len()), Some(MAX_NOTE_LEN - 1), "bounded, trailing space trimmed");
    // Pathological input stays linear.
    let many_open = "<a".repeat(200_000);
    assert_eq!(clean_text(&many_open).map(|t| t.len()), Some(MAX_NOTE_LEN));
}

#[test]
fn notification_batch_mixing_two_subscriptions() {
    let b = parse_notifications(&fixture("notifications_two_subscriptions.json")).expect("batch");
    assert_eq!(b.value.len(), 3);
    assert_eq!(b.invalid, vec![(3, ParseError::Missing("subscriptionId"))]);
    assert!(b.validation_tokens.is_empty());
    let view: Vec<_> = b
        .value
        .iter()
        .map(|n| {
            (n.subscription_id.as_str(), n.client_state.as_deref(), n.user_id.as_deref(), n.subscription_expires_at)
        })
        .collect();
    assert_eq!(
        view,
        vec![
            (
                "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
                Some("hub-secret-A"),
                Some("6e1c0a0b-0001-4c2e-9a0f-1b2c3d4e5f01"),
                Some(ms("2024-05-06T10:00:00Z"))
            ),
            (
                "c4a1b9f2-8e3d-4f6a-b0c1-2d3e4f5a6b7c",
                Some("hub-secret-B"),
                Some("0c7d2a51-1111-4b6e-8d3e-5a9f00000004"),
                Some(ms("2024-05-06T10:30:00Z"))
            ),
            (
                "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
                Some("hub-secret-A"),
                Some("6e1c0a0b-0002-4c2e-9a0f-1b2c3d4e5f02"),
                Some(ms("2024-05-06T10:00:00Z"))
            ),
        ]
    );
    for n in &b.value {
        assert_eq!(n.change_type.as_deref(), Some("updated"));
        assert_eq!(
            n.tenant_id.as_deref(),
            Some("bb8775a4-4d8c-42cf-a1d4-4d58c2bb668f"),
            "tenantId or organizationId"
        );
        assert_eq!(
            (n.encrypted.as_ref(), n.lifecycle_event.as_ref(), n.sequence_hint.as_deref()),
            (None, None, None)
        );
    }
    assert_eq!(
        b.value[0].resource.as_deref(),
        Some("communications/presences/6e1c0a0b-0001-4c2e-9a0f-1b2c3d4e5f01")
    );
}

#[test]
fn encrypted_notification_envelope() {
    let b = parse_notifications(&fixture("notification_encrypted.json")).expect("batch");
    assert!(b.invalid.is_empty());
    assert_eq!(
        b.validation_tokens,
        vec!["eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJwbGFjZWhvbGRlciJ9.c2lnbmF0dXJlLXBsYWNlaG9sZGVy"
            .to_string()]
    );
    let n = &b.value[0];
    assert_eq!(n.user_id.as_deref(), Some("5b4c7a62-2f1e-4d3a-9c8b-7e6f5d4c3b2a"));
    assert_eq!(
        n.encrypted,
        Some(EncryptedContent {
            data: "UExBQ0VIT0xERVItQ0lQSEVSVEVYVC1HRU5FUkFURUQtTEFURVI=".into(),
            data_signature: "UExBQ0VIT0xERVItSE1BQy1TSEEyNTY=".into(),
            data_key: "UExBQ0VIT0xERVItUlNBLU9BRVAtV1JBUFBFRC1LRVk=".into(),
            certificate_id: Some("hub-cert-1".into()),
            certificate_thumbprint: Some("3A5F0B8C9D1E2F3A4B5C6D7E8F9A0B1C2D3E4F50".into()),
        })
    );
    // An envelope without the key cannot be decrypted: the item is invalid, not dropped silently.
    let no_key = br#"{"value":[{"subscriptionId":"s","encryptedContent":{"data":"x","dataSignature":"y"}}]}"#;
    let b = parse_notifications(no_key).expect("batch");
    assert_eq!(b.invalid, vec![(0, ParseError::Missing("encryptedContent.dataKey"))]);
}

#[test]
fn decrypted_notification_data_is_a_presence() {
    let data = br##"{"@odata.id":"users/5b4c7a62/presence","@odata.type":"#microsoft.graph.presence",
        "id":"5b4c7a62","availability":"Busy","activity":"InACall"}"##;
    let p = parse_presence(data).expect("presence");
    assert_eq!(
        (p.id.as_str(), p.availability, p.activity.clone()),
        ("5b4c7a62", Availability::Busy, Some(Activity::InACall))
    );
    assert_eq!((p.sequence.as_deref(), p.status_message.as_deref(), p.ooo), (None, None, false));
    let s = p.to_signal(9);
    assert_eq!((s.availability, s.activity, s.version), (Some(Availability::Busy), Some(Activity::InACall), None));

    // The faded state of a setPresence session.
    let faded = br#"{"id":"u","availability":"Available","activity":"AvailableInactive"}"#;
    let p = parse_presence(faded).expect("presence");
    assert_eq!((p.activity, p.unknown), (Some(Activity::Inactive), None));
}

#[test]
fn lifecycle_reauthorization_required() {
    let b = parse_notifications(&fixture("lifecycle_reauthorization_required.json")).expect("batch");
    let n = &b.value[0];
    assert_eq!(n.lifecycle_event, Some(LifecycleEvent::ReauthorizationRequired));
    assert_eq!(n.subscription_id, "7f105c7d-2dc5-4530-97cd-4e7ae6534c07");
    assert_eq!(n.client_state.as_deref(), Some("hub-secret-A"));
    assert_eq!(n.user_id, None, "a $filter resource names no single user");
    assert_eq!(n.subscription_expires_at, Some(ms("2024-05-06T10:00:00Z")));
    let others = br#"{"value":[{"subscriptionId":"s","lifecycleEvent":"subscriptionRemoved"},
        {"subscriptionId":"s","lifecycleEvent":"Missed"},{"subscriptionId":"s","lifecycleEvent":"somethingNew"}]}"#;
    let events: Vec<_> =
        parse_notifications(others).expect("batch").value.into_iter().map(|n| n.lifecycle_event).collect();
    assert_eq!(
        events,
        vec![
            Some(LifecycleEvent::SubscriptionRemoved),
            Some(LifecycleEvent::Missed),
            Some(LifecycleEvent::Other("somethingNew".into()))
        ]
    );
}

#[test]
fn notification_limits_and_user_id_forms() {
    let items = |n: usize| format!(r#"{{"value":[{}]}}"#, vec![r#"{"subscriptionId":"s"}"#; n].join(","));
    assert_eq!(parse_notifications(items(MAX_ITEMS).as_bytes()).map(|b| b.value.len()), Ok(MAX_ITEMS));
    assert_eq!(
        parse_notifications(items(MAX_ITEMS + 1).as_bytes()),
        Err(ParseError::TooMany { what: "notifications", n: MAX_ITEMS + 1, max: MAX_ITEMS })
    );
    assert_eq!(parse_notifications(b"{}"), Err(ParseError::Missing("value")));
    let long_state = format!(r#"{{"value":[{{"subscriptionId":"s","clientState":"{}"}}]}}"#, "c".repeat(256));
    assert!(matches!(
        parse_notifications(long_state.as_bytes()).expect("batch").invalid[..],
        [(0, ParseError::Invalid { field: "clientState", .. })]
    ));

    for (path, want) in [
        ("communications/presences/abc", Some("abc")),
        ("/Communications/Presences('abc')", Some("abc")),
        ("users/abc/presence", Some("abc")),
        ("users('abc')/presence", Some("abc")),
        ("communications/presences?$filter=id in ('a')", None),
        ("communications/presences/", None),
        ("usersabc/presence", None),
        ("é", None),
    ] {
        assert_eq!(user_id_from_path(path).as_deref(), want, "{path}");
    }
    let from_odata = br#"{"value":[{"subscriptionId":"s","resourceData":{"@odata.id":"users/u9/presence","sequenceNumber":"C1_9"}}]}"#;
    let n = &parse_notifications(from_odata).expect("batch").value[0];
    assert_eq!((n.user_id.as_deref(), n.sequence_hint.as_deref()), (Some("u9"), Some("C1_9")));
}

#[test]
fn validation_token_is_url_decoded() {
    let q = "validationToken=Validation%3a+Testing+client+application+reachability+for+subscription+Request-Id%3a+5f4c2b1e-0000-4000-8000-000000000001";
    assert_eq!(
        validation_token(q).as_deref(),
        Some("Validation: Testing client application reachability for subscription Request-Id: 5f4c2b1e-0000-4000-8000-000000000001")
    );
    assert_eq!(validation_token("?a=1&validationToken=x%2By%C3%A5&b=2").as_deref(), Some("x+yå"));
    assert_eq!(validation_token("validationToken=100%25+sure%zz%4").as_deref(), Some("100% sure%zz%4"));
    assert_eq!(validation_token("validationToken=").as_deref(), Some(""));
    assert_eq!(validation_token("a=1&b=2"), None);
    assert_eq!(validation_token(""), None);
    assert_eq!(validation_token("validationTokenX=1"), None);
    let max = format!("validationToken={}", "t".repeat(MAX_VALIDATION_TOKEN));
    assert_eq!(validation_token(&max).map(|t| t.len()), Some(MAX_VALIDATION_TOKEN));
    let over = format!("validationToken={}", "t".repeat(MAX_VALIDATION_TOKEN + 1));
    assert_eq!(validation_token(&over), None);
}

#[test]
fn subscriptions_are_built_and_parsed() {
    let s = parse_subscription(&fixture("subscription_created.json")).expect("subscription");
    assert_eq!(s.id, "7f105c7d-2dc5-4530-97cd-4e7ae6534c07");
    assert_eq!(s.client_state.as_deref(), Some("hub-secret-A"));
    assert_eq!(s.expires_at, Some(ms("2024-05-06T10:00:00Z")));
    assert_eq!(
        s.resource.as_deref(),
        Some("/communications/presences?$filter=id in ('6e1c0a0b-0001-4c2e-9a0f-1b2c3d4e5f01','6e1c0a0b-0002-4c2e-9a0f-1b2c3d4e5f02')")
    );
    assert_eq!(parse_subscription(b"{\"resource\":\"x\"}"), Err(ParseError::Missing("id")));

    let resource = presence_filter_resource(&["u1", "u2"]).expect("resource");
    let exp = ms("2024-05-06T10:00:00.250Z");
    let body = subscription_request_body(
        &resource,
        "https://hub.example.com/graph/notify",
        Some("https://hub.example.com/graph/lifecycle"),
        exp,
        "hub-secret-A",
        true,
        Some(("TUlJQmNlcnQ=", "hub-cert-1")),
    )
    .expect("body");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        v,
        serde_json::json!({
            "changeType": "updated",
            "notificationUrl": "https://hub.example.com/graph/notify",
            "lifecycleNotificationUrl": "https://hub.example.com/graph/lifecycle",
            "resource": "/communications/presences?$filter=id in ('u1','u2')",
            "expirationDateTime": "2024-05-06T10:00:00Z",
            "clientState": "hub-secret-A",
            "includeResourceData": true,
            "encryptionCertificate": "TUlJQmNlcnQ=",
            "encryptionCertificateId": "hub-cert-1"
        })
    );
    let plain =
        subscription_request_body("/communications/presences/u1", "https://h/n", None, exp, "s", false, None)
            .expect("body");
    assert_eq!(
        plain,
        r#"{"changeType":"updated","notificationUrl":"https://h/n","resource":"/communications/presences/u1","expirationDateTime":"2024-05-06T10:00:00Z","clientState":"s","includeResourceData":false}"#
    );
    let build =
        |state: &str, data: bool| subscription_request_body("/r", "https://h/n", None, exp, state, data, None);
    assert!(build(&"c".repeat(MAX_CLIENT_STATE), false).is_ok());
    assert!(matches!(
        build(&"c".repeat(MAX_CLIENT_STATE + 1), false),
        Err(ParseError::Invalid { field: "clientState", .. })
    ));
    assert!(matches!(build("", false), Err(ParseError::Invalid { field: "clientState", .. })));
    assert!(matches!(build("s", true), Err(ParseError::Invalid { field: "encryptionCertificate", .. })));

    assert_eq!(renewal_body(exp), r#"{"expirationDateTime":"2024-05-06T10:00:00Z"}"#);
    assert_eq!(renewal_body(-5), r#"{"expirationDateTime":"1970-01-01T00:00:00Z"}"#);
    assert_eq!(renewal_body(i64::MAX), r#"{"expirationDateTime":"9999-12-30T22:00:00Z"}"#);
}

/// Deterministic mutations of every fixture fed to every parser: nothing panics, and enough
/// mutants still parse to reach the mapping code.
#[test]
fn no_input_panics_any_parser() {
    let mut rng = Xorshift::new(0x2545_F491_4F6C_DD1D);
    let own: [&[u8]; 12] = [
        b"-0",
        b"\"value\":[",
        b"\"id\":\"x\"",
        b"\"availability\":\"Busy\"",
        b"\"activity\":{}",
        b"<p>&#x1F600;&amp",
        b"\"expiryDateTime\":{\"dateTime\":\"9999-12-31T23:59:59\",\"timeZone\":\"UTC\"}",
        b"\"expires_in\":\"18446744073709551616\"",
        b"\"subscriptionId\":\"s\"",
        b"\"encryptedContent\":{}",
        b"\"lifecycleEvent\":7",
        b"%zz%",
    ];
    let fragments = [crate::mutate::JSON_TOKENS, &own].concat();
    let long = "x".repeat(300);
    let words: [&str; 22] = [
        "",
        " ",
        "Busy",
        "doNotDisturb",
        "focusing",
        "OutOfOffice",
        "AvailableInactive",
        "PresenceUnknown",
        "<p>a &amp; b</p><style>x",
        "&#x1F600;&#99999999999;",
        "9999-12-31T23:59:59.9999999",
        "2024-05-06T17:00:00",
        "2024-05-06T17:00:00+02:00",
        "UTC",
        "communications/presences('x')",
        "users/",
        "reauthorizationRequired",
        "\\u00e5\\n",
        "3599",
        "-1",
        "office",
        &long,
    ];
    let m = Mutator::new(&fragments, &words);
    let fixtures = crate::mutate::fixture_files("graph", "json");
    let bases: Vec<&[u8]> = fixtures.iter().map(|(_, b)| &b[..]).collect();
    crate::mutate::no_input_panics(&m, &bases, 20_000, &mut rng, 3_000, |buf, rng| {
        let mut parsed_ok = 0usize;
        let now = (rng.next() % 4_000_000_000_000) as i64;
        if let Ok(p) = parse_presence(buf) {
            parsed_ok += 1;
            let _ = p.to_signal(now);
        }
        if let Ok(items) = parse_presences(buf) {
            parsed_ok += 1;
            for p in items.into_iter().flatten() {
                let _ = p.to_signal(now);
            }
        }
        parsed_ok += usize::from(parse_notifications(buf).is_ok());
        parsed_ok += usize::from(parse_subscription(buf).is_ok());
        parsed_ok += usize::from(crate::common::oauth::parse_token_response(buf).is_ok());
        parsed_ok += usize::from(crate::common::oauth::parse_oauth_error(buf).is_some());
        let _ = crate::common::http::error_text(buf);
        let text = String::from_utf8_lossy(buf);
        let short = truncate(&text, 200);
        let _ = validation_token(&text);
        let _ = validation_token(short);
        let _ = crate::common::http::retry_after(short, now);
        let _ = crate::common::http::retry_after(truncate(short, 40), now);
        let _ = clean_text(&text);
        let ids: Vec<&str> = short.split(',').collect();
        let _ = presences_request_body(&ids);
        let _ = presence_filter_resource(&ids);
        let with_data = rng.below(2) == 0;
        let _ = subscription_request_body(short, short, Some(short), now, truncate(short, 130), with_data, None);
        let _ = renewal_body(now.wrapping_mul(rng.next() as i64));
        parsed_ok
    });
}

#[test]
fn the_validation_token_decoder_undoes_form_encoding() {
    let odd = "a+b c%d&e=f/ü";
    assert_eq!(form_decode(&crate::common::form::encode_value(odd)), odd.as_bytes());
}
