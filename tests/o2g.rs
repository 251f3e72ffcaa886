//! End-to-end tests of the ALE OmniPCX Enterprise source (`type = "o2g"`) through the hub,
//! against the in-repo O2G simulator on loopback: a desk call rings, is answered, held and
//! ended and a WebSocket subscriber sees each step; a dropped event stream is recovered while
//! the source shows stale (never Offline) and the change missed meanwhile is resynced; an
//! expired session is logged into again and re-subscribed; DND and forwards show; webhook mode
//! works and refuses unknown subscriptions; malformed events are counted without harm.

use std::time::{Duration, Instant};

use crate::common::*;
use presence_hub::config::Config;
use presence_simulators::o2g::{O2gSim, O2gSimConfig};
use serde_json::{json, Value};

/// Åsa Östberg's extension (fixtures/directory/demo.csv), which is her O2G login here.
const ASA: &str = "2624";
/// Märta Lind's.
const MARTA: &str = "2787";

fn config(sim: &O2gSim, tag: &str, extra: &str) -> Config {
    let mut cfg = test_config(temp_dir(tag));
    let (login, password) = sim.credentials();
    let text = format!(
        r#"
type = "o2g"
name = "omnipcx"
base_url = "{}"
login = "{login}"
password = "{password}"
backoff_secs = [1]
{extra}
"#,
        sim.url()
    );
    cfg.providers = vec![toml::from_str(&text).unwrap()];
    cfg.validate().unwrap();
    cfg
}

async fn provider(s: &Server) -> Value {
    provider_named(s, "omnipcx").await
}

/// Waits until the source is up and resynced (everyone's snapshot in).
async fn live(s: &Server) -> Value {
    let mut last = Value::Null;
    wait_for("the O2G source up and resynced", Duration::from_secs(20), async || {
        last = provider(s).await;
        last["up"] == true && last["details"]["awaiting_snapshots"] == 0
    })
    .await;
    last
}

async fn next_delta(ws: &mut Ws) -> Value {
    let f = delta_frame(ws, 10).await;
    assert_ne!(f["presence"]["availability"], "Offline", "the PBX source must never make anyone Offline: {f}");
    f["presence"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_call_rings_is_answered_held_and_ended() {
    let sim = O2gSim::start(O2gSimConfig::default()).unwrap();
    let s = start(config(&sim, "o2g-call", ""));
    let p = live(&s).await;
    // Everyone with an extension is in one subscription; one login, one session.
    let subs = sim.subscriptions();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].1, 320, "{subs:?}");
    assert_eq!(p["details"]["people"], 320);
    assert_eq!(p["details"]["logins"], 1);
    assert_eq!(sim.stats().snapshots, 640, "a telephony and a routing snapshot per person");
    assert_eq!(presence_of(&s, "asa.ostberg").await["availability"], "Available");

    let mut ws = watch(&s, &["asa.ostberg"]).await;
    let t0 = Instant::now();
    sim.call_ring(ASA, "+46855512345");
    let d = next_delta(&mut ws).await;
    eprintln!("O2G OnCallCreated → WebSocket delta: {:?}", t0.elapsed());
    assert_eq!((d["availability"].as_str(), d["activity"].as_str()), (Some("Busy"), Some("Ringing")), "{d}");
    assert_eq!(d["reasons"], json!(["pbx"]));
    assert_eq!(d["freshness"], "live");
    assert!(sim.call_answer(ASA));
    let d = next_delta(&mut ws).await;
    assert_eq!((d["availability"].as_str(), d["activity"].as_str()), (Some("Busy"), Some("InACall")), "{d}");
    assert_eq!(d["reasons"], json!(["pbx"]));
    assert!(sim.call_hold(ASA));
    let d = next_delta(&mut ws).await;
    assert_eq!((d["availability"].as_str(), d["activity"].as_str()), (Some("Busy"), Some("OnHold")), "{d}");
    assert_eq!(d["reasons"], json!(["pbx"]));
    assert!(sim.call_end(ASA));
    let d = next_delta(&mut ws).await;
    assert_eq!(d["availability"], "Available", "{d}");
    assert_eq!(d["activity"], Value::Null);
    // An outgoing call: dialing and ringing out are "in a call".
    sim.call_dial(ASA, "2100");
    let d = next_delta(&mut ws).await;
    assert_eq!(d["activity"], "InACall", "{d}");
    sim.call_end(ASA);
    assert_eq!(next_delta(&mut ws).await["availability"], "Available");
    let p = provider(&s).await;
    assert!(p["details"]["events"].as_u64().unwrap() >= 8, "{p}");
    assert_eq!(p["details"]["malformed_events"], 0);
    assert!(p["details"]["session"]["keepalives"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_is_stale_never_offline_and_the_missed_change_is_resynced() {
    let sim = O2gSim::start(O2gSimConfig::default()).unwrap();
    let s = start(config(&sim, "o2g-drop", ""));
    live(&s).await;
    let mut ws = watch(&s, &["asa.ostberg"]).await;
    sim.call_ring(ASA, "+46855512345");
    assert_eq!(next_delta(&mut ws).await["activity"], "Ringing");
    sim.call_answer(ASA);
    assert_eq!(next_delta(&mut ws).await["activity"], "InACall");

    // A clean end (the channel's timeout) is re-opened at once; the feed stays up.
    let opened = sim.stats().streams_opened;
    sim.end_streams();
    wait_for("the channel re-opened", Duration::from_secs(10), async || sim.stats().streams_opened > opened).await;
    assert_eq!(provider(&s).await["up"], true);

    // The channel breaks and O2G refuses new ones for a while: the source is stale, never
    // Offline, while the provider retries with back-off.
    sim.refuse_streams(true);
    sim.drop_streams();
    let t0 = Instant::now();
    let stale = next_delta(&mut ws).await;
    eprintln!("O2G stream dropped → stale delta: {:?}", t0.elapsed());
    assert_eq!(stale["freshness"], "stale", "{stale}");
    let p = provider(&s).await;
    assert_eq!(p["up"], false, "{p}");
    // During the gap the call ends: the event is lost (no channel).
    let dropped = sim.stats().events_dropped;
    sim.call_end(ASA);
    assert!(sim.stats().events_dropped > dropped);
    wait_for("a refused re-connection", Duration::from_secs(10), async || sim.stats().streams_refused >= 1).await;
    assert_eq!(provider(&s).await["up"], false);

    // O2G takes channels again: re-subscribed, resynced by the snapshot, live and Available.
    sim.refuse_streams(false);
    let t0 = Instant::now();
    let back = loop {
        let d = next_delta(&mut ws).await;
        if d["freshness"] == "live" {
            break d;
        }
    };
    eprintln!("O2G channels back → live and resynced in {:?}", t0.elapsed());
    assert_eq!(back["availability"], "Available", "the call that ended during the gap is resynced: {back}");
    assert_eq!(back["activity"], Value::Null);
    let p = live(&s).await;
    // The session survived: no new login, a new subscription (the old one deleted).
    assert_eq!(sim.stats().logins, 1);
    assert_eq!(p["details"]["logins"], 1);
    assert!(p["details"]["session_losses"].as_u64().unwrap() >= 1, "{p}");
    assert!(p["details"]["resyncs"].as_u64().unwrap() >= 2, "{p}");
    assert_eq!(sim.subscriptions().len(), 1);
    sim.call_ring(ASA, "2100");
    assert_eq!(next_delta(&mut ws).await["activity"], "Ringing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_logged_into_again_and_re_subscribed() {
    // A 2 s session: the keep-alive (every 1 s) must hold it.
    let sim = O2gSim::start(O2gSimConfig { session_ttl: Duration::from_secs(2), ..O2gSimConfig::default() }).unwrap();
    let s = start(config(&sim, "o2g-expire", ""));
    live(&s).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!((sim.sessions(), sim.stats().logins, sim.stats().sessions_expired), (1, 1, 0), "kept alive");
    assert!(sim.stats().keepalives >= 2);
    let mut ws = watch(&s, &["asa.ostberg"]).await;

    // The session is gone (and its subscription); the first re-subscription is refused.
    sim.fail_subscribe(1);
    sim.expire_sessions();
    let t0 = Instant::now();
    wait_for("a new login and subscription", Duration::from_secs(20), async || {
        let st = sim.stats();
        st.logins == 2 && st.subscriptions_created == 2
    })
    .await;
    let p = live(&s).await;
    eprintln!("O2G session expired → logged in, re-subscribed and resynced in {:?}", t0.elapsed());
    assert_eq!(sim.stats().subscribe_refused, 1);
    assert_eq!(p["details"]["logins"], 2);
    assert!(p["details"]["session_losses"].as_u64().unwrap() >= 2, "the refused subscription counts too: {p}");
    sim.call_ring(ASA, "+46855512345");
    loop {
        let d = next_delta(&mut ws).await;
        if d["activity"] == "Ringing" {
            assert_eq!(d["freshness"], "live");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnd_and_forward_show() {
    let sim = O2gSim::start(O2gSimConfig::default()).unwrap();
    let s = start(config(&sim, "o2g-routing", ""));
    live(&s).await;
    let mut ws = watch(&s, &["asa.ostberg"]).await;
    sim.set_dnd(ASA, true);
    let d = next_delta(&mut ws).await;
    assert_eq!(d["availability"], "DoNotDisturb", "{d}");
    assert_eq!(d["reasons"], json!(["pbx"]));
    sim.set_forward(ASA, Some("+4791234567"));
    let d = next_delta(&mut ws).await;
    assert_eq!(
        (d["availability"].as_str(), d["note"].as_str()),
        (Some("DoNotDisturb"), Some("Forwarded to +4791234567")),
        "{d}"
    );
    // The slots carry the provider's configured name.
    let v = user_detail(&s, "asa.ostberg", ADMIN).await;
    let mut instances: Vec<&str> = v["sources"].as_array().unwrap().iter().filter_map(|x| x["instance"].as_str()).collect();
    instances.sort();
    assert_eq!(instances, ["omnipcx", "omnipcx-routing"], "{v}");
    // A call still shows through DND.
    sim.call_ring(ASA, "+46855512345");
    let d = next_delta(&mut ws).await;
    assert_eq!((d["availability"].as_str(), d["activity"].as_str()), (Some("DoNotDisturb"), Some("Ringing")), "{d}");
    sim.call_end(ASA);
    assert_eq!(next_delta(&mut ws).await["activity"], Value::Null);
    sim.set_dnd(ASA, false);
    let d = next_delta(&mut ws).await;
    assert_eq!(
        (d["availability"].as_str(), d["note"].as_str()),
        (Some("Available"), Some("Forwarded to +4791234567")),
        "{d}"
    );
    sim.set_forward(ASA, Some("voicemail"));
    assert_eq!(next_delta(&mut ws).await["note"], "Forwarded to voicemail");
    sim.set_overflow(ASA, Some("2100"));
    assert_eq!(next_delta(&mut ws).await["note"], "Forwarded to voicemail; Overflow to 2100 on no answer");
    sim.set_forward(ASA, None);
    sim.set_overflow(ASA, None);
    let d = loop {
        let d = next_delta(&mut ws).await;
        if d["note"].is_null() {
            break d;
        }
    };
    assert_eq!(d["availability"], "Available");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mode_works_and_refuses_unknown_subscriptions() {
    let sim = O2gSim::start(O2gSimConfig::default()).unwrap();
    let s = start(config(&sim, "o2g-webhook", "mode = \"webhook\""));
    let p = live(&s).await;
    assert_eq!(p["details"]["mode"], "webhook");
    let subs = sim.subscriptions();
    assert_eq!((subs.len(), subs[0].2), (1, true), "{subs:?}");
    wait_for("every snapshot by webhook", Duration::from_secs(10), async || sim.stats().webhook_posts >= 640).await;
    // The hub answers each webhook at once and applies it in the provider's task: wait until
    // every snapshot is applied too, so the next delta is the call's.
    wait_for("every snapshot applied", Duration::from_secs(10), async || {
        provider(&s).await["details"]["events"].as_u64() >= Some(640)
    })
    .await;
    let mut ws = watch(&s, &["asa.ostberg"]).await;
    sim.call_ring(ASA, "+46855512345");
    assert_eq!(next_delta(&mut ws).await["activity"], "Ringing");
    sim.call_answer(ASA);
    assert_eq!(next_delta(&mut ws).await["activity"], "InACall");
    sim.call_end(ASA);
    assert_eq!(next_delta(&mut ws).await["availability"], "Available");

    // A POST for a subscription the hub does not hold: 404, counted, nothing changes.
    let forged = json!({ "eventName": "OnCallCreated", "loginName": ASA, "callRef": "f1", "legs": [{ "deviceId": ASA, "state": "RINGING_INCOMING" }] });
    for path in ["/hooks/omnipcx/events/not-a-key", "/hooks/omnipcx/events"] {
        let r = client().post(s.url(path)).json(&forged).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    // A malformed event on the real webhook: 400 and counted.
    sim.send_malformed();
    wait_for("the webhook counters", Duration::from_secs(10), async || {
        let p = provider(&s).await;
        p["details"]["webhook_unknown_subscription"] == 1 && p["details"]["malformed_events"] == 5
    })
    .await;
    assert_eq!(presence_of(&s, "asa.ostberg").await["availability"], "Available");
    assert_eq!(provider(&s).await["up"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_counted_and_others_unaffected() {
    let sim = O2gSim::start(O2gSimConfig::default()).unwrap();
    let s = start(config(&sim, "o2g-malformed", ""));
    live(&s).await;
    let mut ws = watch(&s, &["asa.ostberg", "marta.lind"]).await;
    assert_eq!(sim.send_malformed(), 5);
    // An event line far over the bound, then a burst on Märta's line.
    sim.inject_raw(&format!(r#"{{"eventName":"OnCallCreated","loginName":"{ASA}","pad":"{}"}}"#, "x".repeat(300_000)));
    sim.inject_raw(r#"{"eventName":"OnCallCreated","loginName":"9999999","callRef":"u1"}"#);
    sim.burst(MARTA, 20);
    sim.call_ring(ASA, "+46855512345");
    // Whatever Märta's burst shows on the way, Åsa's ring arrives and Märta ends Available.
    let t0 = Instant::now();
    let mut asa_ringing = false;
    while !asa_ringing {
        let d = next_delta(&mut ws).await;
        asa_ringing = d["id"] == "asa.ostberg" && d["activity"] == "Ringing";
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    wait_for("Märta Available after the burst", Duration::from_secs(10), async || {
        presence_of(&s, "marta.lind").await["availability"] == "Available"
    })
    .await;
    // The details are refreshed four times a second.
    let mut p = Value::Null;
    wait_for("the counters", Duration::from_secs(5), async || {
        p = provider(&s).await;
        p["details"]["malformed_events"] == 6 && p["details"]["unresolved"] == 1
    })
    .await;
    assert_eq!(p["up"], true, "{p}");
    assert!(p["errors"].as_u64().unwrap() >= 6, "{p}");
    assert!(p["details"]["events"].as_u64().unwrap() >= 20 * 5, "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_prefixes_keep_the_source_to_its_site() {
    // The Oslo office (extensions 5xxxx) is on this OmniPCX; Stockholm (4 digits) is not.
    let oslo = demo_column("extension").iter().filter(|e| e.starts_with('5')).count();
    assert!(oslo > 0 && oslo < 320, "{oslo}");
    let sim = O2gSim::start(O2gSimConfig::default()).unwrap();
    let s = start(config(&sim, "o2g-scope", "extension_prefixes = [\"5\"]"));
    let p = live(&s).await;
    assert_eq!(p["details"]["people"], oslo, "{p}");
    let subs = sim.subscriptions();
    assert_eq!(subs.iter().map(|s| s.1).sum::<usize>(), oslo, "{subs:?}");
    assert_eq!(sim.stats().snapshots as usize, 2 * oslo);
    // Someone in Stockholm gets no slot from this source.
    let v = user_detail(&s, "asa.ostberg", ADMIN).await;
    assert!(
        v["sources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["source"] != "pbx"),
        "{v}"
    );

    // A prefix that is not digits is refused at start with a reason.
    let mut bad = test_config(temp_dir("o2g-scope-bad"));
    bad.providers = vec![toml::from_str(&format!(
        "type = \"o2g\"\nname = \"omnipcx\"\nbase_url = \"{}\"\nlogin = \"a\"\npassword = \"b\"\nextension_prefixes = [\"5x\"]",
        sim.url()
    ))
    .unwrap()];
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("extension_prefixes"), "{err}");
}
