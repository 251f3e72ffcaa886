//! End-to-end tests of the Telenor Mobilt Bedriftsnett provider (`telenor_mbn`) through the hub,
//! against the in-repo MBN simulator on loopback (which speaks the shapes we assumed, see
//! `providers/src/mbn/parse.rs`): a mobile call lights a BLF lamp on the hub's SIP server and
//! reaches a WebSocket subscriber; a lost monitor shows the source stale (never Offline) until a
//! new monitor and a resync bring it back; an expired token is replaced without losing events;
//! an illness absence shows as Sick and out of office with its text and ends on time; malformed
//! events are counted and skipped; a stalled peer makes the source stale after repeated
//! timeouts, and live again (without a resync) when it answers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crate::common::*;
use presence_hub::config::Config;
use presence_hub::sip_server::{SipAccount, SipSection};
use presence_simulators::mbn::{MbnSim, MbnSimConfig, Misbehave, Status};
use presence_sip::body::dialog_info;
use presence_sip::endpoint::{Endpoint, EndpointConfig, Peer, Transport};
use presence_sip::subscription::{SubEvent, SubscribeSpec, Subscription};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Åsa Östberg's mobile in fixtures/directory/demo.csv ("072-128 16 05"), as MBN writes it.
const ASA: &str = "+46721281605";
/// Her extension (the BLF key).
const ASA_EXT: &str = "2624";

/// Every demo person's mobile number, from the fixture directory.
fn mobiles() -> Vec<String> {
    demo_column("mobile")
}

fn sim(cfg: MbnSimConfig) -> MbnSim {
    let sim = MbnSim::start(cfg).unwrap();
    let numbers = mobiles();
    assert!(numbers.len() >= 300, "{}", numbers.len());
    sim.seed(&numbers);
    assert_eq!(sim.e164("072-128 16 05").as_deref(), Some(ASA));
    sim
}

fn config(sim: &MbnSim, tag: &str, extra: &str) -> Config {
    let mut cfg = test_config(temp_dir(tag));
    let c = sim.config();
    let text = format!(
        r#"
type = "telenor_mbn"
name = "telenor"
base_url = "{}"
token_url = "{}"
client_id = "{}"
client_secret = "{}"
username = "{}"
password = "{}"
poll_wait_secs = 5
request_timeout_secs = 3
{extra}
"#,
        sim.base_url(),
        sim.token_url(),
        c.client_id,
        c.client_secret,
        c.username,
        c.password
    );
    cfg.providers = vec![toml::from_str(&text).unwrap()];
    cfg.validate().unwrap();
    cfg
}

async fn provider(s: &Server) -> Value {
    provider_named(s, "telenor").await
}

/// Waits until the feed is up after its first resync, with everyone Available.
async fn live(s: &Server) {
    wait_for("the MBN feed up after a resync", Duration::from_secs(15), async || {
        let p = provider(s).await;
        p["up"] == true && p["details"]["resyncs"] == 1
    })
    .await;
    let p = provider(s).await;
    assert_eq!(p["type"], "telenor_mbn");
    assert_eq!(p["details"]["people"], 320, "{p}");
    assert_eq!(p["details"]["unresolved"], 0, "{p}");
    assert_eq!(p["details"]["company_id"], "NO-987654321");
    assert!(p["details"]["monitor_id"].is_string());
    let me = presence_of(s, "asa.ostberg").await;
    assert_eq!(me["availability"], "Available", "{me}");
    assert_eq!(me["reasons"], json!(["mobile"]));
}

async fn next_delta(ws: &mut Ws) -> Value {
    delta_frame(ws, 10).await
}

async fn sip_addr(s: &Server) -> SocketAddr {
    let t0 = Instant::now();
    loop {
        let v: Value =
            client().get(s.url("/api/providers")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
        let listen = v
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "sip")
            .and_then(|p| p["details"]["listen"].as_str().map(str::to_string));
        if let Some(l) = listen {
            return l.parse().unwrap();
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "the SIP server did not report its address");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next_notify(rx: &mut mpsc::Receiver<((), SubEvent)>) -> Bytes {
    loop {
        let (_, ev) =
            tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a NOTIFY in time").unwrap();
        match ev {
            SubEvent::Notify { body, .. } => return body,
            SubEvent::Down { reason, .. } => panic!("subscription down: {reason}"),
            SubEvent::Active { .. } => {}
        }
    }
}

/// The dialog states of the next NOTIFY.
async fn lamp(rx: &mut mpsc::Receiver<((), SubEvent)>) -> Vec<dialog_info::DialogState> {
    let body = next_notify(rx).await;
    dialog_info::parse_dialog_info(&body).unwrap().dialogs.iter().map(|d| d.state).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mobile_call_lights_the_blf_lamp_and_reaches_the_stream() {
    let sim = sim(MbnSimConfig::default());
    let mut cfg = config(&sim, "mbn-blf", "");
    cfg.sip = SipSection {
        enabled: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        accounts: vec![SipAccount {
            user: "console".into(),
            password: Some("console-pw".into()),
            ha1_md5: None,
            ha1_sha256: None,
            publish: false,
            certificate_subject: None,
        }],
        ..SipSection::default()
    };
    cfg.validate().unwrap();
    let s = start(cfg);
    live(&s).await;

    // A switchboard console's BLF key on Åsa's extension.
    let server = sip_addr(&s).await;
    let (ep, _rx) = Endpoint::bind(EndpointConfig::default()).await.unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let _sub = Subscription::spawn(
        ep.clone(),
        SubscribeSpec {
            peer: Peer { transport: Transport::Udp, addr: server },
            uri: format!("sip:{ASA_EXT}@127.0.0.1"),
            from: "sip:console@127.0.0.1".into(),
            contact_user: "console".into(),
            event: "dialog".into(),
            accept: "application/dialog-info+xml".into(),
            expires: 600,
            headers: vec![],
            body: None,
            credentials: Some(("console".into(), "console-pw".into())),
        },
        (),
        tx,
    );
    assert!(lamp(&mut rx).await.is_empty(), "lamp off while available");
    let mut ws = watch(&s, &["asa.ostberg"]).await;

    // The mobile rings, is answered, hangs up.
    let t0 = Instant::now();
    sim.ring(ASA);
    assert_eq!(lamp(&mut rx).await, vec![dialog_info::DialogState::Early]);
    eprintln!("MBN ringing → BLF NOTIFY: {:?}", t0.elapsed());
    let d = next_delta(&mut ws).await;
    assert_eq!(
        (d["presence"]["availability"].as_str(), d["presence"]["activity"].as_str()),
        (Some("Busy"), Some("Ringing"))
    );
    let t0 = Instant::now();
    sim.call_start(ASA);
    assert_eq!(lamp(&mut rx).await, vec![dialog_info::DialogState::Confirmed]);
    eprintln!("MBN call up → BLF NOTIFY: {:?}", t0.elapsed());
    let d = next_delta(&mut ws).await;
    assert_eq!(d["presence"]["id"], "asa.ostberg");
    assert_eq!(d["presence"]["availability"], "Busy");
    assert_eq!(d["presence"]["activity"], "InACall");
    assert_eq!(d["presence"]["freshness"], "live");
    assert_eq!(d["presence"]["reasons"], json!(["mobile"]));
    sim.call_end(ASA);
    assert!(lamp(&mut rx).await.is_empty(), "lamp off after the call");
    let d = next_delta(&mut ws).await;
    assert_eq!(d["presence"]["availability"], "Available");
    assert!(d["presence"]["activity"].is_null(), "{d}");

    // The phone switched off is Offline: the device said so.
    sim.set_status(ASA, Status::Offline);
    assert_eq!(next_delta(&mut ws).await["presence"]["availability"], "Offline");
    let p = provider(&s).await;
    assert_eq!(p["details"]["events"], 6, "delivered, established, BUSY, connectionCleared, AVAILABLE, OFFLINE: {p}");
    assert_eq!(p["details"]["monitors_started"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_monitor_is_stale_never_offline_then_a_new_monitor_resyncs() {
    let sim = sim(MbnSimConfig::default());
    let s = start(config(&sim, "mbn-lost", ""));
    live(&s).await;
    let mut ws = watch(&s, &["asa.ostberg"]).await;
    sim.call_start(ASA);
    let d = next_delta(&mut ws).await;
    assert_eq!(d["presence"]["activity"], "InACall");
    let first = sim.monitor_id().unwrap();

    // MBN forgets the monitor (the waiting poll gets 404), and refuses new monitors for a while
    // (two 503s with Retry-After: 2 — the feed stays down for about 4 s).
    sim.misbehave(Misbehave { fail_monitor_starts: 2, retry_after_secs: 2, ..Misbehave::default() });
    sim.lose_monitor();
    let stale = next_delta(&mut ws).await;
    assert_eq!(stale["presence"]["freshness"], "stale", "{stale}");
    assert_eq!(stale["presence"]["availability"], "Unknown", "no opinion while stale — never Offline");
    // The source keeps its last known state, marked stale.
    let v = user_detail(&s, "asa.ostberg", VIEWER).await;
    let slot = v["sources"].as_array().unwrap().iter().find(|x| x["instance"] == "telenor").cloned().unwrap();
    assert_eq!((slot["availability"].as_str(), slot["freshness"].as_str()), (Some("Busy"), Some("stale")), "{slot}");
    let p = provider(&s).await;
    assert_eq!(p["up"], false, "{p}");
    assert_eq!(p["details"]["monitors_lost"], 1);
    // Meanwhile the call ends; only the resync can tell.
    sim.call_end(ASA);
    let t0 = Instant::now();
    let back = loop {
        let d = next_delta(&mut ws).await;
        assert_ne!(d["presence"]["availability"], "Offline", "{d}");
        if d["presence"]["freshness"] == "live" && d["presence"]["availability"] == "Available" {
            break d;
        }
    };
    eprintln!("MBN monitor lost → live again after {:?}", t0.elapsed());
    assert!(back["presence"]["activity"].is_null());
    let p = provider(&s).await;
    assert_eq!(p["up"], true);
    assert_eq!(p["details"]["monitors_started"], 2);
    assert_eq!(p["details"]["resyncs"], 2);
    assert!(p["details"]["monitor_id"].as_str().is_some_and(|m| m != first));
    let st = sim.stats();
    assert_eq!(st.failed_503, 2);
    assert!(st.gone >= 1);
    // Events flow on the new monitor.
    sim.call_start(ASA);
    assert_eq!(next_delta(&mut ws).await["presence"]["activity"], "InACall");

    // A lost cursor (410) is the same kind of gap.
    sim.forget_cursors();
    sim.call_end(ASA);
    wait_for("a third monitor and resync", Duration::from_secs(10), async || {
        let p = provider(&s).await;
        p["details"]["resyncs"] == 3 && p["up"] == true
    })
    .await;
    assert_eq!(presence_of(&s, "asa.ostberg").await["availability"], "Available");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_replaced_without_losing_events() {
    // Tokens live 2 s: the provider renews them before they expire. Monitors live 4 s: it
    // keeps its monitor alive (refreshes at half the lifetime).
    let sim = sim(MbnSimConfig {
        token_lifetime: Duration::from_secs(2),
        monitor_lifetime: Duration::from_secs(4),
        ..MbnSimConfig::default()
    });
    let s = start(config(&sim, "mbn-token", ""));
    live(&s).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let st = sim.stats();
    assert!(st.logins >= 2, "renewed before expiry: {st:?}");
    assert_eq!(st.unauthorized, 0, "{st:?}");
    assert!(st.monitor_refreshes >= 1, "{st:?}");
    let p = provider(&s).await;
    let polls = p["details"]["polls"].as_u64().unwrap();
    assert!(polls < 20, "no busy polling around renewals: {polls} polls");
    assert!(p["details"]["monitor_refreshes"].as_u64().unwrap() >= 1, "{p}");

    // Every token expires at once: the waiting poll gets 401 (40106); events queued while the
    // provider logs in again come through the same monitor and cursor.
    let logins = sim.stats().logins;
    sim.expire_tokens();
    sim.call_start(ASA);
    sim.set_absence(ASA, "MEETING", now_ms(), Some(now_ms() + 3_600_000), Some("Kundmöte"));
    wait_for("the call and the meeting", Duration::from_secs(10), async || {
        let me = presence_of(&s, "asa.ostberg").await;
        me["activity"] == "InACall"
    })
    .await;
    let st = sim.stats();
    assert!(st.unauthorized >= 1, "{st:?}");
    assert!(st.logins > logins);
    let p = provider(&s).await;
    assert!(p["details"]["token_rejections"].as_u64().unwrap() >= 1, "{p}");
    assert!(p["details"]["relogins"].as_u64().unwrap() >= 2, "{p}");
    assert_eq!(p["details"]["monitors_started"], 1, "the same monitor");
    assert_eq!(p["details"]["resyncs"], 1, "no resync: nothing was lost");
    assert_eq!(p["up"], true);
    let v = user_detail(&s, "asa.ostberg", VIEWER).await;
    let absence = v["sources"].as_array().unwrap().iter().find(|x| x["instance"] == "telenor-absence").cloned();
    assert_eq!(absence.as_ref().map(|a| a["activity"].clone()), Some(json!("InAMeeting")), "{v}");
    // Logins that keep failing are failures: back off, never hammer.
    sim.misbehave(Misbehave { refuse_logins: true, ..Misbehave::default() });
    sim.expire_tokens();
    wait_for("refused logins counted", Duration::from_secs(10), async || {
        provider(&s).await["details"]["consecutive_failures"].as_u64().unwrap() >= 2
    })
    .await;
    let refused = sim.stats().logins_refused;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(sim.stats().logins_refused <= refused + 2, "backoff between attempts");
    sim.misbehave(Misbehave::default());
    wait_for("up again", Duration::from_secs(15), async || {
        let p = provider(&s).await;
        p["up"] == true && p["details"]["consecutive_failures"] == 0
    })
    .await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_illness_shows_sick_and_out_of_office_and_ends_on_time() {
    let sim = sim(MbnSimConfig::default());
    let s = start(config(&sim, "mbn-absence", "[absence_reasons]\nCOURSE = \"busy\""));
    live(&s).await;
    let t0 = Instant::now();
    let now = now_ms();
    sim.set_absence(ASA, "ILLNESS", now - 60_000, Some(now + 4_000), Some("Sjuk, åter i morgon"));
    wait_for("Sick", Duration::from_secs(5), async || presence_of(&s, "asa.ostberg").await["activity"] == "Sick").await;
    let me = presence_of(&s, "asa.ostberg").await;
    assert_eq!(me["availability"], "Away", "{me}");
    assert_eq!(me["ooo"], true);
    assert_eq!(me["note"], "Sjuk, åter i morgon");
    assert_eq!(me["reasons"], json!(["mobile"]));
    assert!(me["available_again_at"].is_string(), "{me}");
    // It ends on time (the hub's own timer; nothing is sent).
    wait_for("the end of the illness", Duration::from_secs(8), async || {
        presence_of(&s, "asa.ostberg").await["availability"] == "Available"
    })
    .await;
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(3500), "ended early: {took:?}");
    let me = presence_of(&s, "asa.ostberg").await;
    assert_eq!(me["ooo"], false, "{me}");
    assert!(me["activity"].is_null() && me["note"].is_null(), "{me}");

    // A meeting, then removed (a retraction); a course through the configured mapping.
    sim.set_absence(ASA, "MEETING", now_ms(), Some(now_ms() + 3_600_000), Some("Styremøte"));
    wait_for("InAMeeting", Duration::from_secs(5), async || {
        presence_of(&s, "asa.ostberg").await["activity"] == "InAMeeting"
    })
    .await;
    assert_eq!(presence_of(&s, "asa.ostberg").await["note"], "Styremøte");
    sim.clear_absence(ASA);
    wait_for("the meeting removed", Duration::from_secs(5), async || {
        presence_of(&s, "asa.ostberg").await["availability"] == "Available"
    })
    .await;
    sim.set_absence(ASA, "COURSE", now_ms(), None, None);
    wait_for("course → busy", Duration::from_secs(5), async || {
        presence_of(&s, "asa.ostberg").await["availability"] == "Busy"
    })
    .await;
    // A holiday that starts in two seconds is scheduled, then shows.
    sim.clear_absence(ASA);
    let start_at = now_ms() + 2_000;
    sim.set_absence(ASA, "HOLIDAY", start_at, Some(start_at + 86_400_000), Some("Ferie"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(presence_of(&s, "asa.ostberg").await["availability"], "Available", "not yet");
    wait_for("Vacation", Duration::from_secs(6), async || {
        presence_of(&s, "asa.ostberg").await["activity"] == "Vacation"
    })
    .await;
    assert!(now_ms() >= start_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_counted_and_skipped() {
    let sim = sim(MbnSimConfig { max_batch: 100, ..MbnSimConfig::default() });
    let s = start(config(&sim, "mbn-malformed", ""));
    live(&s).await;
    let events0 = provider(&s).await["details"]["events"].as_u64().unwrap();
    sim.inject_malformed(6);
    sim.call_start(ASA);
    wait_for("the good event after the bad ones", Duration::from_secs(5), async || {
        presence_of(&s, "asa.ostberg").await["activity"] == "InACall"
    })
    .await;
    wait_for("the malformed events counted", Duration::from_secs(3), async || {
        provider(&s).await["details"]["malformed_events"] == 6
    })
    .await;
    let p = provider(&s).await;
    assert_eq!(p["up"], true, "{p}");
    assert!(p["errors"].as_u64().unwrap() >= 1);
    assert!(p["last_error"].as_str().unwrap().contains("malformed"), "{p}");

    // A burst of 1,000 changes over everyone, in batches of 100; then Åsa's call ends.
    sim.burst(1000, 7);
    sim.call_end(ASA);
    wait_for("the burst, in order", Duration::from_secs(15), async || {
        let p = provider(&s).await;
        p["details"]["events"].as_u64().unwrap() >= events0 + 1002
            && presence_of(&s, "asa.ostberg").await["availability"] == "Available"
    })
    .await;
    // A number nobody has is counted, not guessed.
    sim.set_status("+4790000001", Status::Busy);
    sim.inject_raw(json!({ "eventType": "presenceChanged", "msisdn": ASA }));
    wait_for("the unresolved number and the unknown event type", Duration::from_secs(5), async || {
        let p = provider(&s).await;
        p["details"]["unresolved"] == 1 && p["unresolved"].as_u64().unwrap() >= 1 && p["details"]["ignored_events"] == 1
    })
    .await;
    assert_eq!(provider(&s).await["details"]["malformed_events"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_peer_is_stale_after_repeated_timeouts_and_live_when_it_answers() {
    let sim = sim(MbnSimConfig::default());
    // A poll waits 1 s and times out 1 s later; two failures in a row mark the feed down.
    let extra = "failures_before_down = 2\nmax_backoff_secs = 1";
    let mut cfg = config(&sim, "mbn-stall", extra);
    let Some(presence_providers::ProviderConfig::TelenorMbn(c)) = cfg.providers.first_mut() else {
        panic!("the MBN provider config")
    };
    c.poll_wait_secs = 1;
    c.request_timeout_secs = 1;
    let s = start(cfg);
    live(&s).await;
    let mut ws = watch(&s, &["asa.ostberg"]).await;
    sim.misbehave(Misbehave { stall_polls: Duration::from_secs(4), ..Misbehave::default() });
    let t0 = Instant::now();
    let stale = next_delta(&mut ws).await;
    assert_eq!(stale["presence"]["freshness"], "stale", "{stale}");
    assert_ne!(stale["presence"]["availability"], "Offline");
    eprintln!("MBN stalled → stale after {:?}", t0.elapsed());
    let p = provider(&s).await;
    assert_eq!((p["up"].as_bool(), p["state"].as_str()), (Some(false), Some("down")), "{p}");
    assert!(p["last_error"].as_str().unwrap().contains("no answer within"), "{p}");
    // Events queued meanwhile are not lost: the cursor holds them.
    sim.call_start(ASA);
    sim.misbehave(Misbehave::default());
    let back = loop {
        let d = next_delta(&mut ws).await;
        assert_ne!(d["presence"]["availability"], "Offline", "{d}");
        if d["presence"]["freshness"] == "live" && d["presence"]["activity"] == "InACall" {
            break d;
        }
    };
    assert_eq!(back["presence"]["availability"], "Busy");
    let p = provider(&s).await;
    assert_eq!(p["up"], true);
    assert_eq!(p["details"]["resyncs"], 1, "no gap, no resync");
    assert_eq!(p["details"]["monitors_started"], 1);
}
