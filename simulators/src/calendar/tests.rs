//! Unit tests of the calendar simulator: each protocol's answers read back by the providers'
//! own request builders and parsers, misbehaviour, credentials, request limits, hostile EWS
//! bodies, and the demo's calendars.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::ews::{read_ews_request, MAX_XML_DEPTH};
use super::google::busy_periods;
use super::*;
use crate::graph::{now_ms, Rng};
use presence_providers::calendar::ews::{self, EwsError};
use presence_providers::calendar::{google, schedule, BusyStatus, CalendarError, CalendarItem};

// 2024-05-06T00:00:00Z
const DAY0: i64 = 1_714_953_600_000;
const H: i64 = 3_600_000;
const M: i64 = 60_000;
const ALICE: &str = "alice@sim.example";
const GHOST: &str = "ghost@unknown.invalid";

fn ev(start: i64, end: i64, status: Status, subject: Option<&str>, location: Option<&str>, private: bool) -> Event {
    Event { start, end, status, subject: subject.map(Into::into), location: location.map(Into::into), private }
}

/// Alice's day: OOF, busy, tentative, private busy, free, working elsewhere.
fn alice_day() -> Vec<Event> {
    vec![
        ev(DAY0 + 9 * H, DAY0 + 10 * H, Status::Busy, Some("Veckomöte"), Some("Rum 4.12 <A&B>"), false),
        ev(DAY0 + 7 * H, DAY0 + 8 * H, Status::Oof, Some("Tandläkare"), Some("Stan"), false),
        ev(DAY0 + 10 * H, DAY0 + 11 * H, Status::Tentative, Some("Kundmöte"), None, false),
        ev(DAY0 + 11 * H, DAY0 + 11 * H + 30 * M, Status::Busy, Some("Läkarbesök"), Some("Vårdcentralen"), true),
        ev(DAY0 + 12 * H, DAY0 + 13 * H, Status::Free, Some("Lunch med kund"), None, false),
        ev(DAY0 + 13 * H, DAY0 + 17 * H, Status::WorkingElsewhere, Some("Jobbar hemifrån"), None, false),
        // Outside the day asked for.
        ev(DAY0 + 30 * H, DAY0 + 31 * H, Status::Busy, Some("Styrelsemöte"), None, false),
    ]
}

fn busy_status(s: Status) -> BusyStatus {
    match s {
        Status::Free => BusyStatus::Free,
        Status::Tentative => BusyStatus::Tentative,
        Status::Busy => BusyStatus::Busy,
        Status::Oof => BusyStatus::Oof,
        Status::WorkingElsewhere => BusyStatus::WorkingElsewhere,
    }
}

/// What a parser should give back for Alice's day (by start), details as Graph and EWS
/// show them.
fn alice_items(is_meeting: bool) -> Vec<CalendarItem> {
    let mut evs: Vec<Event> = alice_day().into_iter().filter(|e| e.start < DAY0 + 24 * H).collect();
    evs.sort_by_key(|e| e.start);
    evs.into_iter()
        .map(|e| CalendarItem {
            start: e.start,
            end: e.end,
            status: busy_status(e.status),
            subject: if e.private { None } else { e.subject.clone() },
            location: if e.private { None } else { e.location.clone() },
            private: e.private,
            is_meeting: is_meeting.then_some(matches!(e.status, Status::Busy | Status::Tentative)),
        })
        .collect()
}

/// 24 hourly digits of Alice's day: OOF at 7, busy 9, tentative 10, busy 11 (private,
/// half an hour), the rest free or working elsewhere (0).
const ALICE_HOURLY: &str = "000000030212000000000000";

fn sim() -> CalendarSim {
    let sim = CalendarSim::start(CalendarSimConfig::default()).expect("start");
    sim.set_events("Alice@Sim.Example", alice_day());
    sim
}

/// An `application/x-www-form-urlencoded` body (reqwest's `form` feature is off).
fn form<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k.as_ref()), enc(v.as_ref()))).collect::<Vec<_>>().join("&")
}

fn post_form(url: String, body: String) -> reqwest::RequestBuilder {
    http().post(url).header("content-type", "application/x-www-form-urlencoded").body(body)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("client")
}

/// The answer of the token endpoint at `url` to the form `pairs`: status 200 and a bearer
/// token, or the test fails.
async fn token_answer(url: String, pairs: &[(&str, &str)]) -> Value {
    let r = post_form(url, form(pairs)).send().await.expect("token");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["token_type"], "Bearer");
    assert!(v["access_token"].is_string(), "{v}");
    v
}

async fn entra_token(sim: &CalendarSim) -> String {
    let cfg = CalendarSimConfig::default();
    let v = token_answer(sim.token_url(), &[
        ("grant_type", "client_credentials"),
        ("client_id", &cfg.client_id),
        ("client_secret", &cfg.client_secret),
        ("scope", "https://graph.microsoft.com/.default"),
    ])
    .await;
    assert_eq!(v["expires_in"], 3600);
    v["access_token"].as_str().unwrap_or_default().to_string()
}

async fn google_token(sim: &CalendarSim) -> String {
    let cfg = CalendarSimConfig::default();
    let v = token_answer(sim.google_token_url(), &[
        ("grant_type", "refresh_token"),
        ("client_id", &cfg.google_client_id),
        ("client_secret", &cfg.google_client_secret),
        ("refresh_token", &cfg.google_refresh_token),
    ])
    .await;
    assert!(v["scope"].as_str().is_some_and(|s| s.contains("calendar")));
    v["access_token"].as_str().unwrap_or_default().to_string()
}

/// POSTs the JSON `body` to `url` with a bearer `token`.
async fn post_json(url: String, token: &str, body: String) -> reqwest::Response {
    http().post(url).bearer_auth(token).header("content-type", "application/json").body(body).send().await.expect("answered")
}

async fn get_schedule(sim: &CalendarSim, token: &str, body: String) -> reqwest::Response {
    post_json(format!("{}/users/svc@sim.example/calendar/getSchedule", sim.graph_url()), token, body).await
}

async fn ews_basic(sim: &CalendarSim, body: String) -> reqwest::Response {
    let cfg = CalendarSimConfig::default();
    http()
        .post(sim.ews_url())
        .basic_auth(&cfg.ews_username, Some(&cfg.ews_password))
        .header("content-type", "text/xml; charset=utf-8")
        .body(body)
        .send()
        .await
        .expect("ews")
}

async fn free_busy(sim: &CalendarSim, token: &str, body: String) -> reqwest::Response {
    post_json(format!("{}/freeBusy", sim.google_url()), token, body).await
}

#[actix_rt::test]
async fn graph_get_schedule_round_trip() {
    let sim = sim();
    let token = entra_token(&sim).await;
    let asked = ["Alice@sim.example", "bob@sim.example", GHOST];
    let body = schedule::request_body(&asked, DAY0, DAY0 + 24 * H, 60).expect("body");
    let r = get_schedule(&sim, &token, body).await;
    assert_eq!(r.status(), 200);
    let raw = r.bytes().await.expect("body");
    let v: Value = serde_json::from_slice(&raw).expect("json");
    // The wire shape: UTC times with seven fractional digits, working hours, no private subject.
    let first = &v["value"][0]["scheduleItems"][0];
    assert_eq!(first["start"], json!({ "dateTime": "2024-05-06T07:00:00.0000000", "timeZone": "UTC" }));
    assert_eq!(v["value"][0]["workingHours"]["timeZone"]["name"], "UTC");
    assert!(!String::from_utf8_lossy(&raw).contains("Läkarbesök"));
    assert!(!String::from_utf8_lossy(&raw).contains("Vårdcentralen"));

    let got = schedule::parse_response(&raw).expect("parse");
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].mailbox, "Alice@sim.example");
    assert_eq!(got[0].error, None);
    assert_eq!(got[0].items, alice_items(false));
    assert_eq!(got[0].merged.as_deref(), Some(ALICE_HOURLY));
    assert_eq!(got[1].mailbox, "bob@sim.example");
    assert!(got[1].items.is_empty() && got[1].error.is_none());
    assert_eq!(got[1].merged.as_deref(), Some("0".repeat(24).as_str()));
    assert_eq!(got[2].mailbox, GHOST);
    assert!(got[2].error.as_deref().is_some_and(|e| e.starts_with("ErrorMailRecipientNotFound")), "{:?}", got[2]);
    let st = sim.stats();
    assert_eq!((st.graph_requests, st.token_requests, st.mailboxes_answered, st.unknown_mailboxes), (1, 1, 2, 1));
    assert_eq!(st.max_mailboxes_in_request, 3);
}

#[actix_rt::test]
async fn ews_round_trip_with_basic_and_bearer() {
    let sim = sim();
    let asked = [ALICE, "bob@sim.example", GHOST];
    let body = ews::request(&asked, DAY0, DAY0 + 24 * H, 60).expect("request");
    let r = ews_basic(&sim, body.clone()).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("text/xml")));
    let raw = r.bytes().await.expect("body");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("<t:FreeBusyViewType>DetailedMerged</t:FreeBusyViewType>"));
    assert!(text.contains("<t:Location>Rum 4.12 &lt;A&amp;B&gt;</t:Location>"));
    assert!(!text.contains("Läkarbesök") && !text.contains("Vårdcentralen"));

    let got = ews::parse_response(&raw, &asked).expect("parse");
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].error, None);
    assert_eq!(got[0].items, alice_items(true));
    assert_eq!(got[0].merged.as_deref(), Some(ALICE_HOURLY));
    assert!(got[1].items.is_empty() && got[1].error.is_none());
    assert!(got[2].error.as_deref().is_some_and(|e| e.starts_with("ErrorMailRecipientNotFound")), "{:?}", got[2]);
    // The per-mailbox error is what classify_error reports for a 200 body with an error.
    assert!(matches!(ews::classify_error(200, &raw), EwsError::Soap { code, .. } if code == "ErrorMailRecipientNotFound"));

    // An Entra app token works as well.
    let token = entra_token(&sim).await;
    let r = http().post(sim.ews_url()).bearer_auth(&token).body(body).send().await.expect("ews");
    assert_eq!(r.status(), 200);
    let got = ews::parse_response(&r.bytes().await.expect("body"), &asked).expect("parse");
    assert_eq!(got[0].items, alice_items(true));
    assert_eq!(sim.stats().ews_requests, 2);
}

#[actix_rt::test]
async fn ews_honours_the_time_zone_bias_and_the_view() {
    let sim = sim();
    // Bias -120 (UTC+2): local 11:00-12:00 is 09:00-10:00 UTC.
    let body = ews::request(&[ALICE], DAY0 + 9 * H, DAY0 + 10 * H, 60)
        .expect("request")
        .replacen("<t:TimeZone><t:Bias>0</t:Bias>", "<t:TimeZone><t:Bias>-120</t:Bias>", 1)
        .replace("2024-05-06T09:00:00", "2024-05-06T11:00:00")
        .replace("2024-05-06T10:00:00", "2024-05-06T12:00:00")
        .replace("DetailedMerged", "FreeBusy");
    let r = ews_basic(&sim, body).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("body");
    assert!(text.contains("<t:StartTime>2024-05-06T11:00:00</t:StartTime><t:EndTime>2024-05-06T12:00:00</t:EndTime><t:BusyType>Busy</t:BusyType></t:CalendarEvent>"), "{text}");
    assert!(!text.contains("MergedFreeBusy") && !text.contains("Veckomöte"), "{text}");
}

#[actix_rt::test]
async fn google_free_busy_round_trip() {
    let sim = sim();
    // Overlapping busy items are merged; tentative, free and working elsewhere are not busy.
    sim.add_event("bob@sim.example", ev(DAY0 + 14 * H, DAY0 + 15 * H, Status::Busy, Some("A"), None, false));
    sim.add_event("bob@sim.example", ev(DAY0 + 14 * H + 30 * M, DAY0 + 16 * H, Status::Oof, Some("B"), None, false));
    sim.add_event("bob@sim.example", ev(DAY0 + 23 * H, DAY0 + 26 * H, Status::Busy, Some("C"), None, false));
    let token = google_token(&sim).await;
    let asked = [ALICE, "bob@sim.example", GHOST];
    let body = google::request_body(&asked, DAY0, DAY0 + 24 * H).expect("body");
    let r = free_busy(&sim, &token, body).await;
    assert_eq!(r.status(), 200);
    let raw = r.bytes().await.expect("body");
    let v: Value = serde_json::from_slice(&raw).expect("json");
    assert_eq!(v["kind"], "calendar#freeBusy");
    assert_eq!(v["timeMin"], "2024-05-06T00:00:00.000Z");
    assert_eq!(v["calendars"][ALICE]["busy"][0], json!({ "start": "2024-05-06T07:00:00Z", "end": "2024-05-06T08:00:00Z" }));

    let got = google::parse_response(&raw).expect("parse");
    let ids: Vec<&str> = got.iter().map(|s| s.mailbox.as_str()).collect();
    assert_eq!(ids, [ALICE, "bob@sim.example", GHOST]);
    let spans = |i: usize| got[i].items.iter().map(|it| (it.start, it.end, it.status)).collect::<Vec<_>>();
    assert_eq!(
        spans(0),
        [
            (DAY0 + 7 * H, DAY0 + 8 * H, BusyStatus::Busy),
            (DAY0 + 9 * H, DAY0 + 10 * H, BusyStatus::Busy),
            (DAY0 + 11 * H, DAY0 + 11 * H + 30 * M, BusyStatus::Busy),
        ]
    );
    assert!(got[0].items.iter().all(|i| i.subject.is_none() && !i.private));
    assert_eq!(spans(1), [(DAY0 + 14 * H, DAY0 + 16 * H, BusyStatus::Busy), (DAY0 + 23 * H, DAY0 + 24 * H, BusyStatus::Busy)]);
    assert_eq!(got[2].error.as_deref(), Some("notFound"));
    assert_eq!(sim.stats().google_requests, 1);
}

#[actix_rt::test]
async fn throttling_on_every_backend() {
    let sim = sim();
    let (entra, goog) = (entra_token(&sim).await, google_token(&sim).await);
    sim.misbehave(Misbehave { throttle_next: 3, retry_after_secs: 7, ..Misbehave::default() });
    let gbody = schedule::request_body(&[ALICE], DAY0, DAY0 + 24 * H, 30).expect("body");
    let r = get_schedule(&sim, &entra, gbody.clone()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("7"));

    let fbody = google::request_body(&[ALICE], DAY0, DAY0 + 24 * H).expect("body");
    let r = free_busy(&sim, &goog, fbody).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("7"));
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["errors"][0]["reason"], "rateLimitExceeded");

    let ebody = ews::request(&[ALICE], DAY0, DAY0 + 24 * H, 30).expect("request");
    let r = ews_basic(&sim, ebody).await;
    assert_eq!(r.status(), 500);
    let raw = r.bytes().await.expect("body");
    assert_eq!(ews::classify_error(500, &raw), EwsError::Throttled { back_off_ms: Some(7000) });
    assert!(matches!(ews::parse_response(&raw, &[ALICE]), Err(CalendarError::Ews(EwsError::Throttled { back_off_ms: Some(7000) }))));

    // A client that does not wait is counted.
    assert_eq!(sim.stats().early_after_retry_after, 0);
    let r = get_schedule(&sim, &entra, gbody).await;
    assert_eq!(r.status(), 200);
    let st = sim.stats();
    assert_eq!((st.throttled, st.early_after_retry_after), (3, 1));
}

#[actix_rt::test]
async fn failures_truncation_and_slowness() {
    let sim = sim();
    let entra = entra_token(&sim).await;
    let gbody = schedule::request_body(&[ALICE], DAY0, DAY0 + 24 * H, 30).expect("body");
    let ebody = ews::request(&[ALICE], DAY0, DAY0 + 24 * H, 30).expect("request");

    sim.misbehave(Misbehave { fail_next: 2, ..Misbehave::default() });
    assert_eq!(get_schedule(&sim, &entra, gbody.clone()).await.status(), 503);
    let r = ews_basic(&sim, ebody.clone()).await;
    assert_eq!(r.status(), 503);
    assert_eq!(ews::classify_error(503, &r.bytes().await.expect("body")), EwsError::Throttled { back_off_ms: None });

    sim.misbehave(Misbehave { malformed_next: 2, ..Misbehave::default() });
    let r = get_schedule(&sim, &entra, gbody.clone()).await;
    assert_eq!(r.status(), 200);
    assert!(matches!(schedule::parse_response(&r.bytes().await.expect("body")), Err(CalendarError::Json(_))));
    let r = ews_basic(&sim, ebody).await;
    assert_eq!(r.status(), 200);
    assert!(matches!(ews::parse_response(&r.bytes().await.expect("body"), &[ALICE]), Err(CalendarError::Xml(_))));
    // Used up: the next answer is whole again.
    let r = get_schedule(&sim, &entra, gbody.clone()).await;
    assert!(schedule::parse_response(&r.bytes().await.expect("body")).is_ok());

    sim.misbehave(Misbehave { slow: Duration::from_millis(300), ..Misbehave::default() });
    let t0 = Instant::now();
    assert_eq!(get_schedule(&sim, &entra, gbody).await.status(), 200);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let st = sim.stats();
    assert_eq!((st.failed, st.malformed), (2, 2));
}

#[actix_rt::test]
async fn retired_ews_is_a_403_with_an_empty_body() {
    let sim = sim();
    sim.misbehave(Misbehave { ews_retired: true, ..Misbehave::default() });
    let r = ews_basic(&sim, ews::request(&[ALICE], DAY0, DAY0 + H, 30).expect("request")).await;
    assert_eq!(r.status(), 403);
    let raw = r.bytes().await.expect("body");
    assert!(raw.is_empty());
    let e = ews::classify_error(403, &raw);
    assert!(matches!(e, EwsError::Retired { .. }), "{e:?}");
    assert_eq!(sim.stats().retired_refusals, 1);
}

#[actix_rt::test]
async fn bad_credentials_are_refused() {
    let sim = sim();
    let cfg = CalendarSimConfig::default();
    // Entra: wrong secret, wrong tenant, wrong grant.
    let r = post_form(sim.token_url(), form(&[("grant_type", "client_credentials"), ("client_id", "sim-client"), ("client_secret", "nope")]))
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "invalid_client");
    let r = post_form(format!("{}/other-tenant/oauth2/v2.0/token", sim.url()), form(&[("grant_type", "client_credentials"), ("client_id", "sim-client"), ("client_secret", "sim-secret")]))
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 400);
    let r = http().post(sim.token_url()).body("not a form").send().await.expect("token");
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "invalid_request");
    // Google: wrong refresh token, wrong client.
    let google_form = |client: &str, rt: &str| {
        vec![
            ("grant_type".to_string(), "refresh_token".to_string()),
            ("client_id".to_string(), client.to_string()),
            ("client_secret".to_string(), cfg.google_client_secret.clone()),
            ("refresh_token".to_string(), rt.to_string()),
        ]
    };
    let r = post_form(sim.google_token_url(), form(&google_form(&cfg.google_client_id, "stale"))).send().await.expect("t");
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.expect("json"), json!({ "error": "invalid_grant", "error_description": "Bad Request" }));
    let r = post_form(sim.google_token_url(), form(&google_form("other", &cfg.google_refresh_token))).send().await.expect("t");
    assert_eq!(r.status(), 401);

    let (entra, goog) = (entra_token(&sim).await, google_token(&sim).await);
    let gbody = schedule::request_body(&[ALICE], DAY0, DAY0 + H, 30).expect("body");
    // Graph: no token, a garbage token, a Google token.
    let r = http().post(format!("{}/users/x/calendar/getSchedule", sim.graph_url())).body(gbody.clone()).send().await.expect("g");
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "InvalidAuthenticationToken");
    assert_eq!(get_schedule(&sim, "garbage", gbody.clone()).await.status(), 401);
    assert_eq!(get_schedule(&sim, &goog, gbody.clone()).await.status(), 401);
    // EWS: wrong password, a Google token.
    let ebody = ews::request(&[ALICE], DAY0, DAY0 + H, 30).expect("request");
    let r = http().post(sim.ews_url()).basic_auth(&cfg.ews_username, Some("wrong")).body(ebody.clone()).send().await.expect("e");
    assert_eq!(r.status(), 401);
    assert_eq!(ews::classify_error(401, &r.bytes().await.expect("body")), EwsError::Unauthorized);
    let r = http().post(sim.ews_url()).bearer_auth(&goog).body(ebody).send().await.expect("e");
    assert_eq!(r.status(), 401);
    // Google: an Entra token.
    let fbody = google::request_body(&[ALICE], DAY0, DAY0 + H).expect("body");
    let r = free_busy(&sim, &entra, fbody).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.expect("json")["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(sim.stats().unauthorized, 6);
}

#[actix_rt::test]
async fn request_limits() {
    let sim = sim();
    let (entra, goog) = (entra_token(&sim).await, google_token(&sim).await);
    let many: Vec<String> = (0..101).map(|i| format!("u{i}@sim.example")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();

    // Graph: 101 schedules, 63 days, a bad interval.
    let body = json!({
        "schedules": many,
        "startTime": { "dateTime": "2024-05-06T00:00:00", "timeZone": "UTC" },
        "endTime": { "dateTime": "2024-05-07T00:00:00", "timeZone": "UTC" },
        "availabilityViewInterval": 30,
    });
    let r = get_schedule(&sim, &entra, body.to_string()).await;
    assert_eq!(r.status(), 400);
    let e = schedule::parse_response(&r.bytes().await.expect("body"));
    assert!(matches!(&e, Err(CalendarError::Service { code, .. }) if code == "ErrorMailboxDataArrayTooBig"), "{e:?}");
    assert_eq!(sim.stats().max_mailboxes_in_request, 101);
    let mut long = body.clone();
    long["schedules"] = json!([ALICE]);
    long["endTime"]["dateTime"] = json!("2024-07-07T00:00:01");
    let r = get_schedule(&sim, &entra, long.to_string()).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "ErrorTimeIntervalTooBig");
    long["endTime"]["dateTime"] = json!("2024-07-07T00:00:00");
    assert_eq!(get_schedule(&sim, &entra, long.to_string()).await.status(), 200, "62 days are allowed");
    let mut bad = long.clone();
    bad["availabilityViewInterval"] = json!(4);
    assert_eq!(get_schedule(&sim, &entra, bad.to_string()).await.status(), 400);
    assert_eq!(get_schedule(&sim, &entra, "{\"schedules\":".into()).await.status(), 400);

    // Google: 51 items.
    let items: Vec<Value> = many[..51].iter().map(|m| json!({ "id": m })).collect();
    let body = json!({ "timeMin": "2024-05-06T00:00:00Z", "timeMax": "2024-05-07T00:00:00Z", "items": items });
    let r = free_busy(&sim, &goog, body.to_string()).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], 400);
    assert_eq!(v["error"]["errors"][0], json!({ "domain": "global", "reason": "tooManyCalendarsRequested", "message": "Too many calendars requested." }));
    let body = google::request_body(&many[..50], DAY0, DAY0 + H).expect("body");
    assert_eq!(free_busy(&sim, &goog, body).await.status(), 200);

    // EWS: 101 mailboxes (the builder refuses, so one is added by hand), 43 days.
    let body = ews::request(&many[..100], DAY0, DAY0 + H, 30).expect("request").replace(
        "</MailboxDataArray>",
        "<t:MailboxData><t:Email><t:Address>extra@sim.example</t:Address></t:Email><t:AttendeeType>Required</t:AttendeeType></t:MailboxData></MailboxDataArray>",
    );
    let r = ews_basic(&sim, body).await;
    assert_eq!(r.status(), 500);
    let e = ews::classify_error(500, &r.bytes().await.expect("body"));
    assert!(matches!(&e, EwsError::Soap { code, .. } if code == "ErrorMailboxDataArrayTooBig"), "{e:?}");
    let body = ews::request(&[ALICE], DAY0, DAY0 + 42 * 24 * H, 30).expect("request");
    assert_eq!(ews_basic(&sim, body.clone()).await.status(), 200, "42 days are allowed");
    let r = ews_basic(&sim, body.replace("<t:EndTime>2024-06-17T00:00:00</t:EndTime>", "<t:EndTime>2024-06-17T00:00:01</t:EndTime>")).await;
    assert_eq!(r.status(), 500);
    let e = ews::classify_error(500, &r.bytes().await.expect("body"));
    assert!(matches!(&e, EwsError::Soap { code, .. } if code == "ErrorTimeIntervalTooBig"), "{e:?}");
}

#[actix_rt::test]
async fn malformed_ews_requests_are_schema_faults() {
    let sim = sim();
    let good = ews::request(&[ALICE], DAY0, DAY0 + H, 30).expect("request");
    let cases = [
        good[..good.len() - 20].to_string(),
        good.replace("</t:Address>", "</t:Adress>"),
        good.replace("alice", "al&ice"),
        good.replace("2024-05-06T01:00:00", "tomorrow"),
        good.replace("<t:MergedFreeBusyIntervalInMinutes>30", "<t:MergedFreeBusyIntervalInMinutes>x"),
        good.replace("DetailedMerged", "Everything"),
        "<!DOCTYPE x [<!ENTITY a 'b'>]><x/>".to_string(),
        "hello".to_string(),
        String::new(),
    ];
    for body in cases {
        let r = ews_basic(&sim, body.clone()).await;
        assert_eq!(r.status(), 500, "{body}");
        let raw = r.bytes().await.expect("body");
        let e = ews::classify_error(500, &raw);
        assert!(matches!(&e, EwsError::Soap { code, .. } if code == "ErrorSchemaValidation"), "{body} → {e:?}");
        assert!(String::from_utf8_lossy(&raw).contains("<t:LineNumber>1</t:LineNumber>"));
    }
    let r = ews_basic(&sim, good.replace("<MailboxDataArray>", "<MailboxDataArray><!-- none -->").replace(
        "<t:MailboxData><t:Email><t:Address>alice@sim.example</t:Address></t:Email><t:AttendeeType>Required</t:AttendeeType><t:ExcludeConflicts>false</t:ExcludeConflicts></t:MailboxData>",
        "",
    ))
    .await;
    assert_eq!(r.status(), 500);
    let e = ews::classify_error(500, &r.bytes().await.expect("body"));
    assert!(matches!(&e, EwsError::Soap { code, .. } if code == "ErrorMailboxDataArrayEmpty"), "{e:?}");
    // Non-UTF-8 bytes.
    let cfg = CalendarSimConfig::default();
    let r = http().post(sim.ews_url()).basic_auth(&cfg.ews_username, Some(&cfg.ews_password)).body(vec![b'<', 0xff, b'>']).send().await.expect("e");
    assert_eq!(r.status(), 500);
}

/// Mutated real requests, over HTTP, to all three data endpoints: every one is answered
/// (no panic, no dropped connection), and the simulator still works afterwards.
#[actix_rt::test]
async fn garbage_never_breaks_the_simulator() {
    let sim = sim();
    let (entra, goog) = (entra_token(&sim).await, google_token(&sim).await);
    let seeds = [
        schedule::request_body(&[ALICE, GHOST], DAY0, DAY0 + 24 * H, 15).expect("body"),
        ews::request(&[ALICE, GHOST], DAY0, DAY0 + 24 * H, 15).expect("request"),
        google::request_body(&[ALICE, GHOST], DAY0, DAY0 + 24 * H).expect("body"),
    ];
    let mut rng = Rng::new(0x5eed);
    for i in 0..600 {
        let which = i % 3;
        let body = mutate(seeds[which].as_bytes(), &mut rng);
        let req = match which {
            0 => http().post(format!("{}/users/x/calendar/getSchedule", sim.graph_url())).bearer_auth(&entra),
            1 => {
                let cfg = CalendarSimConfig::default();
                http().post(sim.ews_url()).basic_auth(cfg.ews_username, Some(cfg.ews_password))
            }
            _ => http().post(format!("{}/freeBusy", sim.google_url())).bearer_auth(&goog),
        };
        let r = req.body(body).send().await.expect("answered");
        assert!(matches!(r.status().as_u16(), 200 | 400 | 500), "{}", r.status());
    }
    let body = schedule::request_body(&[ALICE], DAY0, DAY0 + 24 * H, 60).expect("body");
    let got = schedule::parse_response(&get_schedule(&sim, &entra, body).await.bytes().await.expect("b")).expect("parse");
    assert_eq!(got[0].items, alice_items(false));
}

/// Random damage to `seed`: byte flips, deletions, insertions of XML/JSON tokens,
/// truncation.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    const TOKENS: [&[u8]; 12] =
        [b"<", b">", b"</", b"/>", b"&", b"&#0;", b"&#x110000;", b"<![CDATA[", b"\"", b"{", b"]", b"\xff\xfe"];
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        if v.is_empty() {
            break;
        }
        let at = rng.below(v.len() as u64) as usize;
        match rng.below(4) {
            0 => v[at] = rng.below(256) as u8,
            1 => {
                let n = (rng.below(16) as usize).min(v.len() - at);
                v.drain(at..at + n);
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len() as u64) as usize];
                v.splice(at..at, t.iter().copied());
            }
            _ => v.truncate(at),
        }
    }
    v
}

#[test]
fn the_xml_scan_never_panics() {
    let seed = ews::request(&[ALICE, "o'brien&co@sim.example"], DAY0, DAY0 + H, 30).expect("request");
    let q = read_ews_request(&seed).expect("well-formed");
    assert_eq!(q.mailboxes, [ALICE, "o'brien&co@sim.example"]);
    assert_eq!(q.start.as_deref(), Some("2024-05-06T00:00:00"));
    assert_eq!(q.end.as_deref(), Some("2024-05-06T01:00:00"));
    assert_eq!((q.interval.as_deref(), q.view.as_deref(), q.bias.as_deref()), (Some("30"), Some("DetailedMerged"), Some("0")));
    let mut rng = Rng::new(42);
    let mut ok = 0;
    for _ in 0..20_000 {
        let v = mutate(seed.as_bytes(), &mut rng);
        if let Ok(s) = std::str::from_utf8(&v) {
            if read_ews_request(s).is_ok() {
                ok += 1;
            }
        }
    }
    assert!(ok > 500, "only {ok} mutants were well-formed");
    for doc in ["", "<", "<a", "<a>", "</a>", "<a></b>", "<a/><b/>", "<a>&#xD800;</a>", "<a>&bogus;</a>", "<?x", "<!--", "<a><![CDATA[", "\u{feff}<a/>", "<é/>"] {
        let _ = read_ews_request(doc);
    }
    assert!(read_ews_request("\u{feff}<a x='>'><b>&lt;&#233;&#x41;</b></a>").is_ok());
    let deep = format!("{}{}", "<a>".repeat(MAX_XML_DEPTH + 1), "</a>".repeat(MAX_XML_DEPTH + 1));
    assert!(read_ews_request(&deep).is_err());
}

#[test]
fn merged_digits_take_the_highest_state() {
    let evs = [
        ev(DAY0, DAY0 + 45 * M, Status::Tentative, None, None, false),
        ev(DAY0 + 10 * M, DAY0 + 20 * M, Status::Busy, None, None, false),
        ev(DAY0 + 50 * M, DAY0 + 55 * M, Status::Oof, None, None, false),
        ev(DAY0 + 60 * M, DAY0 + 120 * M, Status::WorkingElsewhere, None, None, false),
        ev(DAY0 + 90 * M, DAY0 + 90 * M, Status::Busy, None, None, false),
    ];
    assert_eq!(merged_view(&evs, DAY0, DAY0 + 2 * H, 15 * M), "22130000");
    assert_eq!(merged_view(&evs, DAY0, DAY0 + 2 * H + M, 30 * M), "23000");
    assert_eq!(merged_view(&evs, DAY0, DAY0, 30 * M), "");
    assert_eq!(busy_periods(&evs, DAY0, DAY0 + 2 * H), [(DAY0 + 10 * M, DAY0 + 20 * M), (DAY0 + 50 * M, DAY0 + 55 * M)]);
}

#[test]
fn demo_days_are_plausible_and_deterministic() {
    let people: Vec<String> = (0..200).map(|i| format!("p{i}@demo.example")).collect();
    let now = DAY0 + 10 * H + 7 * M + 13_000;
    let (a, b) = (sim(), sim());
    a.seed_demo_at(&people, 7, now);
    b.seed_demo_at(&people, 7, now);
    let mut soon = 0;
    let mut oof = 0;
    let mut private = 0;
    for p in &people {
        let evs = a.events(p);
        assert_eq!(evs, b.events(p));
        assert!(evs.iter().all(|e| e.end > e.start && e.subject.is_some()));
        if evs.iter().any(|e| matches!(e.status, Status::Busy | Status::Tentative) && e.start <= now + 30 * M && e.end > now) {
            soon += 1;
        }
        oof += usize::from(evs.iter().any(|e| e.status == Status::Oof && e.end - e.start == DAY_MS));
        private += evs.iter().filter(|e| e.private).count();
    }
    assert!((40..=90).contains(&soon), "{soon} of 200 in or near a meeting");
    assert!((1..=20).contains(&oof), "{oof} out of office");
    assert!(private > 0);

    // Driving: meetings 1-10 minutes ahead are added, ended ones dropped.
    let mut rng = Rng::new(3);
    let later = now + 3 * H;
    let before: usize = people.iter().map(|p| a.events(p).len()).sum();
    for _ in 0..20 {
        a.demo_step(&people, &mut rng, later);
    }
    let all: Vec<Event> = people.iter().flat_map(|p| a.events(p)).collect();
    assert!(all.iter().all(|e| e.end > later), "ended meetings are dropped");
    let fresh = all.iter().filter(|e| e.start >= later + M - 13_000 && e.start <= later + 10 * M).count();
    assert!(fresh >= 15, "{fresh} new meetings");
    assert!(all.len() < before + 20);
}

#[test]
fn drive_demo_runs_until_dropped() {
    let sim = Arc::new(CalendarSim::start(CalendarSimConfig::default()).expect("start"));
    let people: Vec<String> = (0..5).map(|i| format!("p{i}@demo.example")).collect();
    sim.seed_demo(&people, 1);
    sim.drive_demo(people.clone(), Duration::from_millis(20), 9).expect("thread");
    let t0 = Instant::now();
    let count = |s: &CalendarSim| people.iter().map(|p| s.events(p).iter().filter(|e| e.start > now_ms()).count()).sum::<usize>();
    let start_count = count(&sim);
    while count(&sim) < start_count + 3 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(count(&sim) >= start_count + 3, "the demo books meetings");
    drop(sim);
}
