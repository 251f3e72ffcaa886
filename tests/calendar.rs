//! End-to-end tests of the calendar provider through the hub, against the in-repo calendar
//! simulator on loopback (Graph getSchedule, Exchange EWS, Google freeBusy): a meeting starts
//! and ends on time; tentative only annotates; private meetings reveal nothing; throttling is
//! honoured; an EWS endpoint blocked by the Exchange Online retirement says to use Graph.

use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use presence_hub::config::Config;
use presence_simulators::calendar::{CalendarSim, CalendarSimConfig, Event, Misbehave, Status};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn config(sim: &CalendarSim, tag: &str, backend: &str) -> Config {
    let mut cfg = test_config(temp_dir(tag));
    let c = CalendarSimConfig::default();
    let auth = match backend {
        "graph" => format!("tenant_id = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\ntoken_url = \"{}\"\ngraph_url = \"{}\"", c.tenant, c.client_id, c.client_secret, sim.token_url(), sim.graph_url()),
        "ews" => format!("ews_url = \"{}\"\nusername = \"{}\"\npassword = \"{}\"", sim.ews_url(), c.ews_username, c.ews_password),
        _ => format!(
            "client_id = \"{}\"\nclient_secret = \"{}\"\nrefresh_token = \"{}\"\ntoken_url = \"{}\"\ngoogle_url = \"{}\"",
            c.google_client_id,
            c.google_client_secret,
            c.google_refresh_token,
            sim.google_token_url(),
            sim.google_url()
        ),
    };
    let text = format!("type = \"calendar\"\nname = \"calendar\"\nbackend = \"{backend}\"\npoll_interval_secs = 30\n{auth}\n");
    cfg.providers = vec![toml::from_str(&text).unwrap()];
    cfg.validate().unwrap();
    cfg
}

async fn provider(s: &Server) -> Value {
    provider_named(s, "calendar").await
}

/// A meeting two seconds from now, two seconds long, shows Busy / InAMeeting exactly while it runs.
async fn meeting_on_time(backend: &str) {
    let sim = CalendarSim::start(CalendarSimConfig::default()).unwrap();
    // Whole seconds: EWS and Google carry times to the second.
    let start = (now_ms() / 1000 + 3) * 1000;
    let end = start + 2000;
    sim.set_events("asa.ostberg@nordvik.se", vec![Event { start, end, status: Status::Busy, subject: Some("Styrelsemöte".into()), location: None, private: false }]);
    let s = start_server(config(&sim, &format!("cal-{backend}"), backend));
    // Teams says Available, so the calendar's effect is visible both ways.
    let r = client()
        .post(s.url("/api/signals"))
        .bearer_auth(ADMIN)
        .json(&json!({ "signals": [{ "who": "asa.ostberg", "source": "teams", "availability": "Available" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}?access_token={VIEWER}", s.ws_url("/api/stream"))).await.unwrap();
    ws.send(Message::text(json!({ "op": "subscribe", "users": ["asa.ostberg"] }).to_string())).await.unwrap();
    let mut busy_at = None;
    let mut free_at = None;
    let deadline = Instant::now() + Duration::from_secs(12);
    while free_at.is_none() && Instant::now() < deadline {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await else { continue };
        let Ok(f) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else { continue };
        let ps: Vec<Value> = match f["type"].as_str() {
            Some("delta") => vec![f["presence"].clone()],
            Some("snapshot") => f["presence"].as_array().cloned().unwrap_or_default(),
            _ => continue,
        };
        for p in ps {
            if p["availability"] == "Busy" && p["activity"] == "InAMeeting" && busy_at.is_none() {
                busy_at = Some(now_ms());
            } else if p["availability"] == "Available" && busy_at.is_some() && free_at.is_none() {
                free_at = Some(now_ms());
            }
        }
    }
    let (busy, free) = (busy_at.expect("the meeting started"), free_at.expect("the meeting ended"));
    eprintln!("{backend}: busy {} ms after the meeting's start, free {} ms after its end", busy - start, free - end);
    assert!(busy >= start - 50 && busy <= start + 700, "busy at {} ms from the start", busy - start);
    assert!(free >= end - 50 && free <= end + 700, "free at {} ms from the end", free - end);
    let p = provider(&s).await;
    assert_eq!(p["state"], "up", "{p}");
    assert_eq!(p["details"]["backend"], backend);
    assert_eq!(p["details"]["mailboxes"], 320);
}

fn start_server(cfg: Config) -> Server {
    start(cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_meeting_starts_and_ends_on_time() {
    meeting_on_time("graph").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ews_meeting_starts_and_ends_on_time() {
    meeting_on_time("ews").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_meeting_starts_and_ends_on_time() {
    meeting_on_time("google").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tentative_annotates_ooo_flags_and_private_meetings_reveal_nothing() {
    let sim = CalendarSim::start(CalendarSimConfig::default()).unwrap();
    let now = now_ms();
    let ev = |status, subject: &str, private| Event { start: now - 60_000, end: now + 3_600_000, status, subject: Some(subject.into()), location: Some("Rum 4".into()), private };
    sim.set_events("asa.ostberg@nordvik.se", vec![ev(Status::Tentative, "Kanske möte", false)]);
    sim.set_events("marta.lind@nordvik.se", vec![ev(Status::Oof, "Semester", false)]);
    sim.set_events("agneta.svensson@nordvik.se", vec![ev(Status::Busy, "Hemligt möte", true)]);
    let mut cfg = config(&sim, "cal-kinds", "graph");
    if let presence_providers::ProviderConfig::Calendar(c) = &mut cfg.providers[0] {
        c.keep_details = true;
    }
    cfg.policy.calendar_details = presence_actors::model::DetailPolicy::Everyone;
    let s = start(cfg);
    wait_for("the first poll", Duration::from_secs(10), async || provider(&s).await["details"]["polls"].as_u64().unwrap_or(0) >= 1).await;

    // Tentative never makes anyone busy: it only annotates.
    let d = user_detail(&s, "asa.ostberg", VIEWER).await;
    let cal = d["sources"].as_array().unwrap().iter().find(|x| x["source"] == "calendar").cloned().unwrap();
    assert_eq!(cal["activity"], "Tentative");
    assert_eq!(cal["availability"], Value::Null);
    assert_ne!(d["presence"]["availability"], "Busy");
    // Details are kept when allowed.
    assert_eq!(cal["subject"], "Kanske möte");

    // Out of office sets the flag.
    let d = user_detail(&s, "marta.lind", VIEWER).await;
    assert_eq!(d["presence"]["ooo"], true);

    // A private meeting is busy, and nothing of it shows, even with details allowed.
    let d = user_detail(&s, "agneta.svensson", VIEWER).await;
    assert_eq!(d["presence"]["availability"], "Busy");
    let cal = d["sources"].as_array().unwrap().iter().find(|x| x["source"] == "calendar").cloned().unwrap();
    assert_eq!(cal["private"], true);
    assert!(cal.get("subject").is_none() && cal.get("location").is_none(), "{cal}");
    let text = d.to_string();
    assert!(!text.contains("Hemligt") && !text.contains("Rum 4"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_throttling_is_honoured() {
    let sim = CalendarSim::start(CalendarSimConfig::default()).unwrap();
    sim.misbehave(Misbehave { throttle_next: 1, retry_after_secs: 2, ..Misbehave::default() });
    let t0 = Instant::now();
    let s = start(config(&sim, "cal-429", "graph"));
    // 320 mailboxes are 4 batches: the first is throttled, then all four go through.
    wait_for("all batches", Duration::from_secs(15), async || provider(&s).await["details"]["polls"].as_u64().unwrap_or(0) >= 4).await;
    assert!(t0.elapsed() >= Duration::from_secs(2), "waited for Retry-After");
    let stats = sim.stats();
    assert_eq!(stats.throttled, 1);
    assert_eq!(stats.early_after_retry_after, 0, "nothing was sent before Retry-After had passed");
    assert_eq!(stats.max_mailboxes_in_request, 100, "batches of 100 for Graph");
    let p = provider(&s).await;
    assert_eq!(p["details"]["throttled_responses"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_ews_says_to_use_graph() {
    let sim = CalendarSim::start(CalendarSimConfig::default()).unwrap();
    sim.misbehave(Misbehave { ews_retired: true, ..Misbehave::default() });
    let s = start(config(&sim, "cal-retired", "ews"));
    wait_for("the retirement in health", Duration::from_secs(10), async || provider(&s).await["state"].as_str().unwrap_or("").starts_with("retired")).await;
    let p = provider(&s).await;
    assert_eq!(p["up"], false);
    let err = p["last_error"].as_str().unwrap();
    assert!(err.contains("Graph calendar provider") || err.contains("graph"), "{err}");
    assert!(p["details"]["retired"].as_str().unwrap().contains("EWS"), "{p}");
    // It stops asking.
    let n = sim.stats().ews_requests;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.stats().ews_requests, n);
}

/// How the calendar backend fails in [`an_outage_is_seen_on_the_stream`].
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Every getSchedule answered `500`.
    ServerError,
    /// Every getSchedule hangs.
    Hanging,
}

/// A console watching a person in a meeting sees the calendar go stale soon after polls start
/// failing, never Offline, and after recovery the calendar as it is now (changed during the
/// outage) — never the meeting read before the outage shown as live.
async fn an_outage_is_seen_on_the_stream(fault: Fault, tag: &str) {
    let sim = CalendarSim::start(CalendarSimConfig::default()).unwrap();
    let now = now_ms();
    let meeting = Event { start: now - 60_000, end: now + 3_600_000, status: Status::Busy, subject: None, location: None, private: false };
    sim.set_events("asa.ostberg@nordvik.se", vec![meeting.clone()]);
    let mut cfg = config(&sim, tag, "graph");
    if let Some(presence_providers::ProviderConfig::Calendar(c)) = cfg.providers.first_mut() {
        c.request_timeout_secs = 2;
    }
    let s = start_server(cfg);
    let log = StreamLog::watch(&s, &["asa.ostberg"]).await;
    log.first_after(Instant::now() - Duration::from_secs(60), "asa.ostberg", "the meeting, live", Duration::from_secs(10), |p| {
        p["freshness"] == "live" && p["activity"] == "InAMeeting"
    })
    .await;

    sim.misbehave(match fault {
        Fault::ServerError => Misbehave { fail_next: 1_000_000, fail_status: 500, ..Misbehave::default() },
        Fault::Hanging => Misbehave { slow: Duration::from_secs(3600), ..Misbehave::default() },
    });
    // The fault is detectable once a poll is due: the first round runs at start, then batch i
    // of 4 at i/4 of each 30 s interval.
    wait_for("a failed poll", Duration::from_secs(45), async || provider(&s).await["details"]["poll_failures"].as_u64().unwrap_or(0) >= 1).await;
    let t_fault = Instant::now() - match fault {
        Fault::ServerError => Duration::ZERO,
        // The poll that failed was sent one deadline earlier.
        Fault::Hanging => Duration::from_secs(2),
    };
    let (t_stale, p) = log.first_after(t_fault, "asa.ostberg", "the calendar stale", Duration::from_secs(15), |p| p["freshness"] == "stale").await;
    let detection = t_stale.saturating_duration_since(t_fault);
    assert_eq!(p["availability"], "Unknown", "{p}");
    assert_eq!(provider(&s).await["up"], false);

    // During the outage the meeting is cancelled and the person goes out of office.
    let ooo = Event { start: now - 60_000, end: now + 3_600_000, status: Status::Oof, subject: None, location: None, private: false };
    sim.set_events("asa.ostberg@nordvik.se", vec![ooo]);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    sim.misbehave(Misbehave::default());
    let t_clear = Instant::now();
    let (t_live, p) = log.first_after(t_clear, "asa.ostberg", "the calendar live again", Duration::from_secs(20), |p| p["freshness"] == "live").await;
    let recovery = t_live - t_clear;
    assert_eq!(p["ooo"], true, "the first live view is the calendar as it is now: {p}");
    assert!(log.all("asa.ostberg").iter().all(|p| p["availability"] != "Offline"), "never Offline");
    eprintln!("calendar {fault:?}: stale on the stream {} ms after the fault was detectable; live with the new state {} ms after the backend answered again", detection.as_millis(), recovery.as_millis());
    assert!(detection < Duration::from_secs(6), "{fault:?}: stale after {detection:?}");
    assert!(recovery < Duration::from_secs(12), "{fault:?}: live after {recovery:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_answering_500_is_seen_on_the_stream() {
    an_outage_is_seen_on_the_stream(Fault::ServerError, "cal-out-500").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_calendar_is_seen_on_the_stream() {
    an_outage_is_seen_on_the_stream(Fault::Hanging, "cal-out-hang").await;
}
