//! End-to-end tests of the generic mobile-operator adapter (`type = "operator"`) through the
//! hub, against the operator simulator on loopback, using the shipped example mappings in
//! `fixtures/operators/` (only URLs adjusted): a mobile call starts and ends and a WebSocket
//! subscriber sees it; a wrong signature is refused (401) and counted, and a right one works
//! after it; polling the XML example goes stale — never Offline — when the endpoint fails, and
//! recovers; out-of-order and duplicate events are ignored; an absence maps to the hub's
//! reason.

use std::time::{Duration, Instant};

use crate::common::*;
use presence_hub::config::Config;
use presence_providers::operator::OperatorConfig;
use presence_providers::ProviderConfig;
use presence_simulators::operator::{AbsenceKind, Example, Misbehave, OperatorSim, OperatorSimConfig, SimCall};
use serde_json::{json, Value};

/// Åsa Östberg's mobile in fixtures/directory/demo.csv (072-128 16 05).
const ASA: &str = "+46721281605";
/// Märta Lind's mobile (079-786 73 70), in the national form the directory also resolves.
const MARTA: &str = "079-786 73 70";

/// The shipped example entry for `ex`.
fn example(ex: Example) -> OperatorConfig {
    operator_example(ex.name())
}

fn config(tag: &str, op: OperatorConfig) -> Config {
    let mut cfg = test_config(temp_dir(tag));
    cfg.providers = vec![ProviderConfig::Operator(Box::new(op))];
    cfg.validate().unwrap();
    cfg
}

/// The hub with the example's webhook, and the simulator posting to it.
fn webhook_setup(tag: &str, ex: Example) -> (Server, OperatorSim) {
    let s = start(config(tag, example(ex)));
    let sim = OperatorSim::start(OperatorSimConfig::example(ex)).unwrap();
    sim.set_webhook_url(Some(s.url(&format!("/hooks/{}/events", ex.name()))));
    (s, sim)
}

async fn provider(s: &Server, name: &str) -> Value {
    provider_named(s, name).await
}

async fn detail(s: &Server, id: &str) -> Value {
    user_detail(s, id, VIEWER).await
}

async fn next_delta(ws: &mut Ws) -> Value {
    delta_frame(ws, 5).await["presence"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mobile_call_starts_and_ends_as_websocket_deltas() {
    let (s, sim) = webhook_setup("op-call", Example::Tdc);
    let mut ws = watch(&s, &["asa.ostberg"]).await;
    let t0 = Instant::now();
    assert_eq!(sim.call_start(ASA).await, Some(200));
    let d = next_delta(&mut ws).await;
    eprintln!("operator webhook to WebSocket delta: {} ms", t0.elapsed().as_millis());
    assert_eq!(
        (d["id"].as_str(), d["availability"].as_str(), d["activity"].as_str()),
        (Some("asa.ostberg"), Some("Busy"), Some("Ringing")),
        "{d}"
    );
    assert_eq!(d["reasons"], json!(["mobile"]));
    sim.call_answer(ASA).await;
    let d = next_delta(&mut ws).await;
    assert_eq!((d["availability"].as_str(), d["activity"].as_str()), (Some("Busy"), Some("InACall")), "{d}");
    assert_eq!(d["reasons"], json!(["mobile"]));
    sim.call_end(ASA).await;
    let d = next_delta(&mut ws).await;
    assert_eq!(d["availability"], "Available", "{d}");
    assert!(d["activity"].is_null(), "{d}");
    assert_eq!(d["reasons"], json!(["mobile"]));
    // The detail view names the instance; health counts the events.
    let det = detail(&s, "asa.ostberg").await;
    let src = det["sources"].as_array().unwrap().iter().find(|x| x["source"] == "mobile").cloned().unwrap();
    assert_eq!(src["instance"], "tdc");
    wait_for("the events in health", Duration::from_secs(3), async || {
        provider(&s, "tdc").await["details"]["events"]["applied"] == 3
    })
    .await;
    let p = provider(&s, "tdc").await;
    assert_eq!(
        (p["type"].as_str(), p["state"].as_str(), p["up"].as_bool()),
        (Some("operator"), Some("up"), Some(true)),
        "{p}"
    );
    assert_eq!(p["details"]["webhook"]["accepted"], 3);
    assert_eq!(p["errors"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_signature_is_refused_and_counted_and_a_right_one_works_after_it() {
    let (s, sim) = webhook_setup("op-sig", Example::Tdc);
    sim.misbehave(Misbehave { wrong_signature_next: 1, ..Misbehave::default() });
    assert_eq!(sim.call_start(ASA).await, Some(401));
    // Forged and missing signatures, by hand: 401 with a JSON error body.
    let hook = s.url("/hooks/tdc/events");
    let body = sim.render(&[sim.event(ASA)]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let r = client()
        .post(&hook)
        .header("X-TDC-Signature", format!("t={now},v1={}", "ab".repeat(32)))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "unauthorized");
    assert!(v["detail"].as_str().unwrap().contains("does not match"), "{v}");
    let r = client().post(&hook).body(body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.json::<Value>().await.unwrap()["detail"].as_str().unwrap().contains("missing"));
    assert_eq!(presence_of(&s, "asa.ostberg").await["availability"], "Unknown", "nothing got through");

    wait_for("the refusals in health", Duration::from_secs(3), async || {
        provider(&s, "tdc").await["details"]["webhook"]["rejected_auth"] == 3
    })
    .await;
    let p = provider(&s, "tdc").await;
    assert!(p["errors"].as_u64().unwrap() >= 3, "{p}");
    assert!(p["last_error"].as_str().unwrap().contains("webhook refused"), "{p}");
    let metrics = client().get(s.url("/metrics")).bearer_auth(ADMIN).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("presence_provider_errors_total{provider=\"tdc\",type=\"operator\"} ")
            && !l.ends_with(" 0")),
        "{metrics}"
    );

    // The right signature works after it.
    assert_eq!(sim.call_start(ASA).await, Some(200));
    wait_for("the call", Duration::from_secs(3), async || {
        presence_of(&s, "asa.ostberg").await["activity"] == "Ringing"
    })
    .await;

    // A malformed body is 400 with the reason, counted.
    sim.misbehave(Misbehave { malformed_next: 1, ..Misbehave::default() });
    assert_eq!(sim.call_end(ASA).await, Some(400));
    let r = client().post(&hook).body("{").send().await.unwrap();
    assert_eq!(r.status(), 401, "authentication comes before parsing");
    wait_for("the malformed body in health", Duration::from_secs(3), async || {
        provider(&s, "tdc").await["details"]["webhook"]["malformed"] == 1
    })
    .await;
    // Wrong paths and methods.
    assert_eq!(client().post(s.url("/hooks/tdc/other")).send().await.unwrap().status(), 404);
    assert_eq!(client().get(&hook).send().await.unwrap().status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_the_xml_example_goes_stale_never_offline_and_recovers() {
    let sim = OperatorSim::start(OperatorSimConfig::example(Example::A1)).unwrap();
    sim.call_start(ASA).await;
    let mut op = example(Example::A1);
    let p = op.poll.as_mut().unwrap();
    p.url = sim.poll_url();
    p.interval_secs = 1;
    p.max_backoff_secs = 2;
    p.stale_after_failures = 2;
    let s = start(config("op-poll", op));
    wait_for("the ringing call by polling", Duration::from_secs(10), async || {
        presence_of(&s, "asa.ostberg").await["activity"] == "Ringing"
    })
    .await;
    let pr = presence_of(&s, "asa.ostberg").await;
    assert_eq!((pr["availability"].as_str(), pr["freshness"].as_str()), (Some("Busy"), Some("live")));
    assert_eq!(pr["reasons"], json!(["mobile"]));
    sim.call_answer(ASA).await;
    wait_for("the answered call", Duration::from_secs(5), async || {
        presence_of(&s, "asa.ostberg").await["activity"] == "InACall"
    })
    .await;
    // Unchanged state between polls: 304 by ETag.
    wait_for("a 304", Duration::from_secs(5), async || sim.stats().polls_not_modified >= 1).await;
    assert_eq!(provider(&s, "a1").await["details"]["poll"]["etag"], true);

    // The poll endpoint fails: after two failures the feed is down and the mobile signal is
    // stale — the merged view says Unknown/stale, never Offline.
    sim.misbehave(Misbehave { fail_polls: true, ..Misbehave::default() });
    wait_for("the feed down", Duration::from_secs(10), async || provider(&s, "a1").await["up"] == false).await;
    let p = provider(&s, "a1").await;
    assert_eq!(p["state"], "down");
    assert!(p["last_error"].as_str().unwrap().contains("503"), "{p}");
    let pr = presence_of(&s, "asa.ostberg").await;
    assert_eq!((pr["availability"].as_str(), pr["freshness"].as_str()), (Some("Unknown"), Some("stale")), "{pr}");
    let det = detail(&s, "asa.ostberg").await;
    let src = det["sources"].as_array().unwrap().iter().find(|x| x["source"] == "mobile").cloned().unwrap();
    assert_eq!((src["freshness"].as_str(), src["availability"].as_str()), (Some("stale"), Some("Busy")), "{src}");
    // The call ends while the hub cannot see it; recovery brings the current state, live.
    sim.call_end(ASA).await;
    sim.misbehave(Misbehave::default());
    wait_for("recovery", Duration::from_secs(10), async || {
        let pr = presence_of(&s, "asa.ostberg").await;
        pr["freshness"] == "live" && pr["availability"] == "Available"
    })
    .await;
    let p = provider(&s, "a1").await;
    assert_eq!((p["up"].as_bool(), p["state"].as_str()), (Some(true), Some("up")));
    assert!(sim.stats().polls_failed >= 2);
    assert_eq!(sim.stats().polls_unauthorized, 0, "the example's Basic credentials were sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_and_duplicate_events_are_ignored() {
    let (s, sim) = webhook_setup("op-order", Example::Phonero);
    let now = sim.event(ASA).at_ms;
    let answered = presence_simulators::operator::SimEvent { call: Some(SimCall::InCall), ..sim.event(ASA) };
    assert_eq!(sim.send(vec![answered]).await, Some(200));
    // The same delivery again (same eventId): a duplicate.
    assert_eq!(sim.resend_last().await, Some(200));
    // An older event arriving late: out of order.
    let stale =
        presence_simulators::operator::SimEvent { call: Some(SimCall::Idle), at_ms: now - 5_000, ..sim.event(ASA) };
    assert_eq!(sim.send(vec![stale]).await, Some(200));
    // A number nobody has.
    assert_eq!(sim.call_start("+4799999999").await, Some(200));
    wait_for("the counters", Duration::from_secs(3), async || {
        let e = provider(&s, "phonero").await["details"]["events"].clone();
        e["applied"] == 1 && e["duplicates"] == 1 && e["out_of_order"] == 1 && e["unresolved"] == 1
    })
    .await;
    let pr = presence_of(&s, "asa.ostberg").await;
    assert_eq!(
        (pr["availability"].as_str(), pr["activity"].as_str()),
        (Some("Busy"), Some("InACall")),
        "the late idle was ignored: {pr}"
    );
    assert_eq!(provider(&s, "phonero").await["unresolved"], 1);

    // A retrying sender delivers everything twice; a burst arrives in any order.
    sim.misbehave(Misbehave { duplicate_webhooks: true, ..Misbehave::default() });
    sim.call_end(ASA).await;
    wait_for("the end of the call", Duration::from_secs(3), async || {
        presence_of(&s, "asa.ostberg").await["availability"] == "Available"
    })
    .await;
    sim.misbehave(Misbehave::default());
    let statuses = sim.burst(&[ASA.to_string(), MARTA.to_string()], 30).await;
    assert_eq!(statuses, vec![Some(200); 30]);
    wait_for("every event counted", Duration::from_secs(3), async || {
        let e = provider(&s, "phonero").await["details"]["events"].clone();
        let n = |k: &str| e[k].as_u64().unwrap_or(0);
        n("applied") + n("duplicates") + n("out_of_order") == 3 + 2 + 30 && n("duplicates") >= 2
    })
    .await;
    // The last word is the newest event, whatever order the burst came in.
    sim.call_end(ASA).await;
    sim.call_end(MARTA).await;
    wait_for("both idle", Duration::from_secs(3), async || {
        presence_of(&s, "asa.ostberg").await["availability"] == "Available"
            && presence_of(&s, "marta.lind").await["availability"] == "Available"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absence_maps_to_the_hubs_reason() {
    let (s, sim) = webhook_setup("op-absence", Example::Tdc);
    sim.call_end(ASA).await;
    sim.set_absence(ASA, AbsenceKind::Sick, Some("Hemma i dag")).await;
    wait_for("the absence", Duration::from_secs(3), async || {
        presence_of(&s, "asa.ostberg").await["activity"] == "Sick"
    })
    .await;
    let pr = presence_of(&s, "asa.ostberg").await;
    assert_eq!(
        (pr["availability"].as_str(), pr["ooo"].as_bool(), pr["note"].as_str()),
        (Some("Away"), Some(true), Some("Hemma i dag")),
        "{pr}"
    );
    let det = detail(&s, "asa.ostberg").await;
    assert!(
        det["sources"].as_array().unwrap().iter().any(|x| x["source"] == "mobile" && x["instance"] == "tdc-absence"),
        "{det}"
    );
    // A call still shows while absent (the person is demonstrably there).
    sim.call_start(ASA).await;
    wait_for("the call over the absence", Duration::from_secs(3), async || {
        presence_of(&s, "asa.ostberg").await["activity"] == "Ringing"
    })
    .await;
    assert_eq!(presence_of(&s, "asa.ostberg").await["availability"], "Busy");
    sim.call_end(ASA).await;
    // A meeting is Busy / InAMeeting, not out of office.
    sim.set_absence(ASA, AbsenceKind::Meeting, None).await;
    wait_for("the meeting", Duration::from_secs(3), async || {
        presence_of(&s, "asa.ostberg").await["activity"] == "InAMeeting"
    })
    .await;
    let pr = presence_of(&s, "asa.ostberg").await;
    assert_eq!((pr["availability"].as_str(), pr["ooo"].as_bool()), (Some("Busy"), Some(false)), "{pr}");
    // Back: the absence slot goes; a diversion only annotates.
    sim.clear_absence(ASA).await;
    wait_for("back", Duration::from_secs(3), async || {
        presence_of(&s, "asa.ostberg").await["availability"] == "Available"
    })
    .await;
    sim.divert(ASA, "+46 8 410 200 00").await;
    wait_for("the diversion note", Duration::from_secs(3), async || {
        presence_of(&s, "asa.ostberg").await["note"] == "Forwarded to +46 8 410 200 00"
    })
    .await;
    assert_ne!(presence_of(&s, "asa.ostberg").await["availability"], "Offline");
}
