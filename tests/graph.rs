//! End-to-end tests of the Teams (Microsoft Graph presence) provider through the hub, against
//! the in-repo Graph simulator on loopback: a Teams change reaches a WebSocket subscriber; a
//! lapsed subscription is replaced and presence resynced by polling; throttling is honoured;
//! a notification with a wrong `clientState` is refused and counted.

use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use presence_hub::config::Config;
use presence_simulators::graph::{GraphSim, GraphSimConfig, Misbehave};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Åsa Östberg's Entra object id in fixtures/directory/demo.csv.
const ASA: &str = "10a7755d-ff8d-5b50-bd78-633734ff90bf";

/// Every demo person's Entra id, from the fixture directory.
fn entra_ids() -> Vec<String> {
    demo_column("entra_id").into_iter().filter(|s| s.len() == 36).collect()
}

fn sim() -> GraphSim {
    let sim = GraphSim::start(GraphSimConfig::default()).unwrap();
    let ids = entra_ids();
    assert!(ids.len() >= 300);
    let seed: Vec<(&str, &str, &str)> = ids.iter().map(|i| (i.as_str(), "Available", "Available")).collect();
    sim.seed(&seed);
    sim
}

/// The `graph_presence` provider block against `sim` (one service account); `extra` goes in
/// before the service account.
fn provider_block(sim: &GraphSim, extra: &str) -> String {
    format!(
        r#"type = "graph_presence"
name = "teams"
tenant_id = "sim-tenant"
client_id = "sim-client"
client_secret = "sim-secret"
token_url = "{}"
graph_url = "{}"
client_state = "the-hubs-secret-client-state"
batch_ms = 20
{extra}
[[service_accounts]]
name = "svc1@sim.example"
refresh_token = "rt-svc1-0"
"#,
        sim.token_url(),
        sim.graph_url()
    )
}

fn config(sim: &GraphSim, tag: &str, extra: &str) -> Config {
    let mut cfg = test_config(temp_dir(tag));
    cfg.providers = vec![toml::from_str(&provider_block(sim, extra)).unwrap()];
    cfg.validate().unwrap();
    cfg
}

async fn providers(s: &Server) -> Value {
    provider_named(s, "teams").await
}

async fn subscribed(s: &Server) {
    wait_for("an active Graph subscription", Duration::from_secs(15), async || {
        providers(s).await["details"]["subscriptions"][0]["state"] == "active"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_change_reaches_a_websocket_subscriber() {
    let sim = sim();
    let s = start(config(&sim, "graph-ws", ""));
    subscribed(&s).await;
    let p = providers(&s).await;
    assert_eq!(p["state"], "up");
    assert_eq!(p["details"]["people"], 320);
    assert_eq!(p["details"]["subscriptions"][0]["people"], 320);
    assert_eq!(p["details"]["polled_people"], 0);
    assert_eq!(sim.stats().validations_ok, 1, "the validation handshake passed");
    // The start-up snapshot came by polling: everyone Available.
    assert_eq!(presence_of(&s, "asa.ostberg").await["availability"], "Available");

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}?access_token={VIEWER}", s.ws_url("/api/stream"))).await.unwrap();
    ws.send(Message::text(json!({ "op": "subscribe", "users": ["asa.ostberg"] }).to_string())).await.unwrap();
    // Snapshot first.
    loop {
        let msg = ws.next().await.unwrap().unwrap();
        let Ok(f) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else { continue };
        if f["type"] == "snapshot" && f["last"] == true {
            break;
        }
    }
    let t0 = Instant::now();
    sim.set_presence(ASA, "Busy", "InACall", Some("Kundsamtal"), false).await;
    let delta = loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a delta within 5 s").unwrap().unwrap();
        let Ok(f) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else { continue };
        if f["type"] == "delta" {
            break f;
        }
    };
    eprintln!("Teams change to WebSocket delta: {} ms", t0.elapsed().as_millis());
    assert_eq!(delta["presence"]["id"], "asa.ostberg");
    assert_eq!(delta["presence"]["availability"], "Busy");
    assert_eq!(delta["presence"]["activity"], "InACall");
    assert_eq!(delta["presence"]["note"], "Kundsamtal");
    assert_eq!(delta["presence"]["reasons"], json!(["teams"]));
    let stats = sim.stats();
    assert_eq!(stats.notifications_delivered, 1);
    assert!(stats.slowest_notification_ms < 3000, "acknowledged within 3 s");
    // Health is refreshed twice a second.
    wait_for("the notification in health", Duration::from_secs(3), async || {
        let p = providers(&s).await;
        p["details"]["notifications"] == 1 && p["details"]["subscriptions"][0]["notifications"] == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_subscription_is_replaced_and_presence_resynced() {
    let sim = sim();
    // Renew 2 s after creation (5-minute subscriptions, renewed 298 s before expiry).
    let s = start(config(&sim, "graph-lapse", "subscription_minutes = 5\nrenew_before_secs = 298"));
    subscribed(&s).await;
    let first = sim.subscriptions();
    assert_eq!(first.len(), 1);
    // Graph forgets the subscription, and a change happens while nobody is told.
    sim.expire_subscriptions();
    sim.set_presence(ASA, "DoNotDisturb", "Presenting", None, false).await;
    assert_eq!(sim.stats().notifications_delivered, 0);
    // The renewal gets 404, the hub creates a new subscription and resyncs by polling.
    wait_for("a new subscription", Duration::from_secs(15), async || sim.subscriptions().first().is_some_and(|n| n.0 != first[0].0)).await;
    wait_for("the missed change, by polling", Duration::from_secs(10), async || presence_of(&s, "asa.ostberg").await["activity"] == "Presenting").await;
    assert!(sim.stats().subscriptions_created >= 2);
    // Notifications flow again on the new one.
    sim.set_presence(ASA, "Away", "Away", None, false).await;
    wait_for("the change by notification", Duration::from_secs(5), async || presence_of(&s, "asa.ostberg").await["availability"] == "Away").await;
    assert!(sim.stats().notifications_delivered >= 1);

    // A lifecycle reauthorizationRequired is answered by reauthorizing, then a resync.
    let polls = providers(&s).await["details"]["polls"].as_u64().unwrap();
    sim.lifecycle("reauthorizationRequired").await;
    wait_for("reauthorization", Duration::from_secs(5), async || sim.stats().reauthorizations == 1).await;
    wait_for("a resync poll", Duration::from_secs(5), async || providers(&s).await["details"]["polls"].as_u64().unwrap() > polls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_honoured() {
    let sim = sim();
    let s = start(config(&sim, "graph-429", ""));
    subscribed(&s).await;
    sim.misbehave(Misbehave { throttle_next: 2, retry_after_secs: 2, ..Misbehave::default() });
    let t0 = Instant::now();
    sim.set_presence(ASA, "Busy", "InAMeeting", None, false).await;
    wait_for("the change despite throttling", Duration::from_secs(15), async || presence_of(&s, "asa.ostberg").await["activity"] == "InAMeeting").await;
    let took = t0.elapsed();
    let stats = sim.stats();
    assert_eq!(stats.throttled, 2);
    assert_eq!(stats.early_after_retry_after, 0, "no request went out before Retry-After had passed");
    assert!(took >= Duration::from_secs(4), "two Retry-After: 2 waits, took {took:?}");
    wait_for("throttling in health", Duration::from_secs(3), async || {
        let p = providers(&s).await;
        p["details"]["throttled_responses"] == 2 && p["state"] == "up"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_state_is_refused_and_counted() {
    let sim = sim();
    let s = start(config(&sim, "graph-forged", ""));
    subscribed(&s).await;
    let id = sim.subscriptions()[0].0.clone();
    let forged = json!({ "value": [{
        "subscriptionId": id, "clientState": "guessed", "changeType": "updated",
        "resource": format!("communications/presences/{ASA}"),
        "resourceData": { "@odata.type": "#Microsoft.Graph.presence", "id": ASA },
    }]});
    assert_eq!(sim.post_raw(&forged).await, vec![Some(403)]);
    let missing = json!({ "value": [{ "subscriptionId": id, "changeType": "updated", "resourceData": { "id": ASA } }]});
    assert_eq!(sim.post_raw(&missing).await, vec![Some(403)]);
    wait_for("the refusals in health", Duration::from_secs(3), async || providers(&s).await["details"]["rejected_client_state"] == 2).await;
    let p = providers(&s).await;
    assert_eq!(p["details"]["notifications"], 0);
    assert!(p["errors"].as_u64().unwrap() >= 2);

    // Malformed bodies: 400 with a reason, counted.
    let r = client().post(s.url("/hooks/teams/notify")).body("{\"value\": [").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "bad_request");
    wait_for("the malformed body in health", Duration::from_secs(3), async || providers(&s).await["details"]["malformed_notifications"] == 1).await;

    // The validation handshake: the decoded token back as text/plain.
    let r = client().post(s.url("/hooks/teams/notify?validationToken=Validation%3a+Testing+client+application+reachability")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(r.text().await.unwrap(), "Validation: Testing client application reachability");
    // Unknown providers and paths.
    assert_eq!(client().post(s.url("/hooks/nobody/notify")).send().await.unwrap().status(), 404);
    assert_eq!(client().post(s.url("/hooks/teams/other")).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_resource_data_is_decrypted_and_tampering_is_refused() {
    let sim = sim();
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/graph");
    let extra = format!(
        "include_resource_data = true\nencryption_certificate_file = \"{fx}/test-notification-cert.pem\"\nencryption_key_file = \"{fx}/test-notification-key.pem\"\nencryption_certificate_id = \"hub-test-cert\""
    );
    let s = start(config(&sim, "graph-rich", &extra));
    subscribed(&s).await;
    // Wait for the resync after the subscription, then count presence reads.
    wait_for("the resync", Duration::from_secs(5), async || providers(&s).await["details"]["polls"].as_u64().unwrap() >= 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reads = sim.stats().presence_requests;

    sim.set_presence(ASA, "DoNotDisturb", "Presenting", None, false).await;
    wait_for("the change from the notification itself", Duration::from_secs(5), async || presence_of(&s, "asa.ostberg").await["activity"] == "Presenting").await;
    assert_eq!(sim.stats().presence_requests, reads, "no fetch: the presence came inside the notification");
    let p = providers(&s).await;
    assert_eq!(p["details"]["resource_data"], true);

    // Tampered data fails the HMAC: counted, and the person is fetched instead.
    sim.misbehave(Misbehave { tamper_encrypted: true, ..Misbehave::default() });
    sim.set_presence(ASA, "Away", "Away", None, false).await;
    wait_for("the change by fetching", Duration::from_secs(5), async || presence_of(&s, "asa.ostberg").await["availability"] == "Away").await;
    assert!(sim.stats().presence_requests > reads);
    wait_for("the refusal in health", Duration::from_secs(3), async || providers(&s).await["details"]["decryption_failures"] == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_failures_make_teams_stale_not_offline_and_recovery_makes_it_live() {
    let sim = sim();
    let s = start(config(&sim, "graph-5xx", ""));
    subscribed(&s).await;
    assert_eq!(presence_of(&s, "asa.ostberg").await["freshness"], "live");
    sim.misbehave(Misbehave { fail_next: 1000, ..Misbehave::default() });
    for (a, act) in [("Busy", "Busy"), ("Away", "Away"), ("Busy", "Busy")] {
        sim.set_presence(ASA, a, act, None, false).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    wait_for("the feed down", Duration::from_secs(10), async || providers(&s).await["up"] == false).await;
    // Policy rule 1: a source whose feed is down contributes Unknown (stale), never Offline;
    // the detail view still shows its last value, marked stale.
    let p = presence_of(&s, "asa.ostberg").await;
    assert_eq!(p["freshness"], "stale", "{p}");
    assert_eq!(p["availability"], "Unknown", "{p}");
    let d: Value = client().get(s.url("/api/users/asa.ostberg")).bearer_auth(VIEWER).send().await.unwrap().json().await.unwrap();
    let teams = d["sources"].as_array().unwrap().iter().find(|x| x["source"] == "teams").cloned().unwrap();
    assert_eq!(teams["freshness"], "stale");
    assert_eq!(teams["availability"], "Available");
    // Malformed answers are errors too, not panics.
    sim.misbehave(Misbehave { malformed_next: 1, ..Misbehave::default() });
    sim.set_presence(ASA, "Busy", "InACall", None, false).await;
    wait_for("recovery", Duration::from_secs(10), async || {
        let p = presence_of(&s, "asa.ostberg").await;
        p["freshness"] == "live" && p["activity"] == "InACall"
    })
    .await;
    assert!(providers(&s).await["errors"].as_u64().unwrap() >= 3);
}

/// How Graph fails in [`an_outage_is_seen_on_the_stream`].
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Every presence read answered `503`.
    Unavailable,
    /// Every presence read hangs (no answer for an hour).
    Hanging,
}

/// A console watching a person on the WebSocket sees Teams go stale soon after a read fails,
/// never sees Offline, and sees the change Graph notified during the outage as soon as Graph
/// answers again — not the state from before the outage shown as live.
async fn an_outage_is_seen_on_the_stream(fault: Fault, tag: &str) {
    let sim = sim();
    let s = start(config(&sim, tag, "read_timeout_secs = 2\nwatchdog_secs = 6"));
    subscribed(&s).await;
    // Before the stream opens: its snapshot can arrive before `watch` returns.
    let t_start = Instant::now();
    let log = StreamLog::watch(&s, &["asa.ostberg"]).await;
    log.first_after(t_start, "asa.ostberg", "the snapshot, live", Duration::from_secs(20), |p| p["freshness"] == "live" && p["availability"] == "Available").await;

    sim.misbehave(match fault {
        Fault::Unavailable => Misbehave { fail_next: 1_000_000, ..Misbehave::default() },
        Fault::Hanging => Misbehave { slow: Duration::from_secs(3600), ..Misbehave::default() },
    });
    // Graph notifies a change but cannot be read: from here the fault is detectable.
    sim.set_presence(ASA, "Busy", "InACall", None, false).await;
    let t_fault = Instant::now();
    let (t_stale, p) = log.first_after(t_fault, "asa.ostberg", "Teams stale", Duration::from_secs(15), |p| p["freshness"] == "stale").await;
    let detection = t_stale - t_fault;
    assert_eq!(p["availability"], "Unknown", "a stale Teams is no opinion: {p}");
    assert_eq!(providers(&s).await["up"], false);

    // A change notified during the outage.
    sim.set_presence(ASA, "DoNotDisturb", "Presenting", None, false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(log.all("asa.ostberg").last().is_some_and(|p| p["freshness"] == "stale"), "still stale while Graph fails");

    sim.misbehave(Misbehave::default());
    let t_clear = Instant::now();
    let (t_live, p) = log.first_after(t_clear, "asa.ostberg", "Teams live again", Duration::from_secs(15), |p| p["freshness"] == "live").await;
    let recovery = t_live - t_clear;
    assert_eq!((p["availability"].as_str(), p["activity"].as_str()), (Some("DoNotDisturb"), Some("Presenting")), "the first live view is the change notified during the outage: {p}");
    assert!(log.all("asa.ostberg").iter().all(|p| p["availability"] != "Offline"), "never Offline: {:?}", log.all("asa.ostberg"));
    eprintln!("Graph {fault:?}: stale on the stream {} ms after the fault was detectable; live with the missed change {} ms after Graph answered again", detection.as_millis(), recovery.as_millis());
    // Read deadline 2 s, two failed reads to go down, retries back off to at most 5 s: well
    // within these bounds (the code before the fix took ~90 s); they are loose for a loaded CI
    // machine, the times themselves are what the line above prints.
    let limit = match fault {
        Fault::Unavailable => Duration::from_secs(6),
        Fault::Hanging => Duration::from_secs(12),
    };
    assert!(detection < limit, "{fault:?}: stale after {detection:?}");
    assert!(recovery < Duration::from_secs(12), "{fault:?}: live after {recovery:?}");
    // Health is refreshed four times a second.
    wait_for("health: up, nothing notified left unread", Duration::from_secs(3), async || {
        let p = providers(&s).await;
        p["up"] == true && p["details"]["pending_notified"] == 0 && p["details"]["read_failures"].as_u64() >= Some(2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_answering_503_is_seen_on_the_stream_and_nothing_notified_is_lost() {
    an_outage_is_seen_on_the_stream(Fault::Unavailable, "graph-out-503").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_hanging_is_seen_on_the_stream_and_nothing_notified_is_lost() {
    an_outage_is_seen_on_the_stream(Fault::Hanging, "graph-out-hang").await;
}

/// The real binary, stopped with SIGTERM as systemd or `kill` stops it, deletes its Graph
/// subscription before it exits (Graph would otherwise keep calling a hub that is gone for up
/// to an hour), and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_deletes_the_graph_subscription() {
    let sim = sim();
    let dir = temp_dir("graph-sigterm");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let demo_csv = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/directory/demo.csv");
    let config = format!(
        r#"listen = "127.0.0.1:{port}"
data_dir = "{}"
[directory]
import = "{demo_csv}"
[[tokens]]
name = "admin"
role = "admin"
sha256 = "{}"
[[providers]]
{}"#,
        dir.join("data").display(),
        presence_hub::tokens::hash_token(ADMIN),
        provider_block(&sim, "").replace("[[service_accounts]]", "[[providers.service_accounts]]")
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_presence-hub"))
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start presence-hub");
    wait_for("a Graph subscription", Duration::from_secs(30), async || {
        assert!(child.try_wait().unwrap().is_none(), "presence-hub exited");
        sim.subscriptions().len() == 1
    })
    .await;
    assert_eq!(sim.stats().deletions, 0);
    // SAFETY: kill(2) on our own child's pid; no memory is touched.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "presence-hub did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
    assert_eq!(sim.stats().deletions, 1, "the subscription was deleted at SIGTERM");
    assert!(sim.subscriptions().is_empty());
    eprintln!("SIGTERM to exit: {} ms, the subscription deleted", t0.elapsed().as_millis());
}

/// Issue 14: an admin restarts the Teams provider over the API; its Graph subscription is
/// deleted (the graceful stop), a new one is created, notifications flow on it, and the restart
/// is in the audit log. A weaker token may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_restarts_the_provider_which_resubscribes() {
    let sim = sim();
    let s = start(config(&sim, "graph-restart", ""));
    subscribed(&s).await;
    let first = sim.subscriptions();
    let c = client();
    let r = c.post(s.url("/api/providers/teams/restart")).bearer_auth(OPERATOR).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = c.post(s.url("/api/providers/nope/restart")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = c.post(s.url("/api/providers/teams/restart")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 202);
    wait_for("the old subscription deleted and a new one", Duration::from_secs(15), async || {
        sim.stats().deletions == 1 && sim.subscriptions().len() == 1 && sim.subscriptions()[0].0 != first[0].0
    })
    .await;
    subscribed(&s).await;
    sim.set_presence(ASA, "Busy", "InACall", None, false).await;
    wait_for("the change on the new subscription", Duration::from_secs(10), async || presence_of(&s, "asa.ostberg").await["activity"] == "InACall").await;
    let v: Value = c.get(s.url("/api/audit?action=provider.restarted")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    let e = &v["entries"][0];
    assert_eq!((e["actor"].as_str(), e["target"].as_str()), (Some("admin"), Some("teams")), "{v}");
}
