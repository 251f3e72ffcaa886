//! End-to-end tests of the Skype for Business source through the hub, against the in-repo SfB
//! pool simulator over real SIP on loopback (batched category SUBSCRIBE, piggy-backed first
//! notification, BENOTIFY/NOTIFY with RLMI multipart bodies): a change reaches a WebSocket
//! subscriber; BENOTIFY and NOTIFY both work; a `resubscribe` instance moves a person to a
//! second pool; a pool restart makes SfB stale (never Offline) until the provider has
//! re-subscribed; a malformed categories part is counted and disturbs nobody else; the
//! availability range boundaries map exactly.

use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use presence_actors::model::DetailPolicy;
use presence_hub::config::Config;
use presence_simulators::sfb::{NotifyMethod, SfbPresence, SfbSim, SfbSimConfig};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const ASA: &str = "sip:asa.ostberg@nordvik.se";
const MARTA: &str = "sip:marta.lind@nordvik.se";
const ANNIKA: &str = "sip:annika.nilsson@nordvik.se";
/// Not in the pool: answered `noresource`.
const EIRIK: &str = "sip:eirik.nygard@nordvik.no";

/// Every demo person's SIP URI, from the fixture directory.
fn sip_uris() -> Vec<String> {
    demo_column("sip_uri").into_iter().filter(|s| s.starts_with("sip:")).collect()
}

/// A pool that knows everyone in the directory but Eirik, all Available.
fn pool(cfg: SfbSimConfig) -> SfbSim {
    let sim = SfbSim::start(cfg).unwrap();
    let uris: Vec<String> = sip_uris().into_iter().filter(|u| u != EIRIK).collect();
    assert!(uris.len() >= 300);
    sim.seed(&uris, SfbPresence::available());
    sim
}

fn config(sim: &SfbSim, tag: &str, extra: &str) -> Config {
    let mut cfg = test_config(temp_dir(tag));
    let text = format!(
        r#"
type = "sfb"
name = "sfb"
server = "{}"
from = "sip:hub-svc@nordvik.se"
keepalive_secs = 1
keep_details = true
{extra}
"#,
        sim.addr()
    );
    cfg.providers = vec![toml::from_str(&text).unwrap()];
    cfg.policy.calendar_details = DetailPolicy::Operators;
    cfg.validate().unwrap();
    cfg
}

async fn providers(s: &Server) -> Value {
    provider_named(s, "sfb").await
}

/// The person's `sfb` source in `/api/users/{id}` (Null when there is none).
async fn sfb_source(s: &Server, id: &str) -> Value {
    let d = user_detail(s, id, OPERATOR).await;
    d["sources"].as_array().unwrap().iter().find(|x| x["source"] == "sfb").cloned().unwrap_or(Value::Null)
}

/// Waits until the feed is up and everyone's first state has arrived.
async fn subscribed(s: &Server) {
    wait_for("the sfb feed up", Duration::from_secs(20), async || {
        let p = providers(s).await;
        p["up"] == true && p["details"]["subscriptions_active"] == 2
    })
    .await;
    wait_for("Åsa's first SfB state", Duration::from_secs(10), async || {
        sfb_source(s, "asa.ostberg").await["availability"] == "Available"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sfb_change_reaches_a_websocket_subscriber() {
    let sim = pool(SfbSimConfig::default());
    let s = start(config(&sim, "sfb-ws", ""));
    subscribed(&s).await;
    let p = providers(&s).await;
    assert_eq!(p["state"], "up");
    assert_eq!(p["details"]["people"], 320);
    assert_eq!(p["details"]["batches"].as_array().unwrap().len(), 2, "320 people in batches of 200");
    assert_eq!(sim.stats().batched_subscribes, 2);
    assert_eq!(sim.stats().piggybacked, 2);
    assert_eq!(presence_of(&s, "asa.ostberg").await["availability"], "Available");
    // Eirik is not in the pool: noresource makes his SfB source Unknown.
    wait_for("Eirik's noresource", Duration::from_secs(5), async || {
        sfb_source(&s, "eirik.nygard").await["availability"] == "Unknown"
    })
    .await;
    assert_eq!(providers(&s).await["details"]["noresource"], 1);

    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{}?access_token={VIEWER}", s.ws_url("/api/stream"))).await.unwrap();
    ws.send(Message::text(json!({ "op": "subscribe", "users": ["asa.ostberg"] }).to_string())).await.unwrap();
    loop {
        let msg = ws.next().await.unwrap().unwrap();
        let Ok(f) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else { continue };
        if f["type"] == "snapshot" && f["last"] == true {
            break;
        }
    }
    let t0 = Instant::now();
    sim.set(ASA, SfbPresence::new(6500).activity("on-the-phone").note("Kundsamtal"));
    let delta = loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a delta within 5 s")
            .unwrap()
            .unwrap();
        let Ok(f) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else { continue };
        if f["type"] == "delta" {
            break f;
        }
    };
    let took = t0.elapsed();
    eprintln!("SfB change to WebSocket delta: {} ms", took.as_millis());
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(delta["presence"]["id"], "asa.ostberg");
    assert_eq!(delta["presence"]["availability"], "Busy");
    assert_eq!(delta["presence"]["activity"], "InACall");
    assert_eq!(delta["presence"]["note"], "Kundsamtal");
    assert_eq!(delta["presence"]["reasons"], json!(["sfb"]));

    // The per-source view.
    let src = sfb_source(&s, "asa.ostberg").await;
    assert_eq!(src["availability"], "Busy", "{src}");
    assert_eq!(src["activity"], "InACall");
    assert_eq!(src["freshness"], "live");
    assert_eq!(src["instance"], "sfb");

    // A meeting: subject and location only in the private detail, shown to operators.
    sim.set(MARTA, SfbPresence::new(6500).activity("in-a-meeting").meeting("Styrgrupp", "Rum Fyren"));
    wait_for("Märta in a meeting", Duration::from_secs(5), async || {
        sfb_source(&s, "marta.lind").await["activity"] == "InAMeeting"
    })
    .await;
    let src = sfb_source(&s, "marta.lind").await;
    assert_eq!((src["subject"].as_str(), src["location"].as_str()), (Some("Styrgrupp"), Some("Rum Fyren")));
    let viewer = user_detail(&s, "marta.lind", VIEWER).await;
    let v = viewer["sources"].as_array().unwrap().iter().find(|x| x["source"] == "sfb").unwrap().clone();
    assert!(v.get("subject").is_none(), "viewers do not see meeting subjects: {v}");
    assert!(viewer["presence"]["note"].is_null(), "the subject is no note");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benotify_and_notify_both_work() {
    let sim = pool(SfbSimConfig::default());
    let s = start(config(&sim, "sfb-methods", ""));
    subscribed(&s).await;
    sim.set(ASA, SfbPresence::new(15500));
    wait_for("Away by BENOTIFY", Duration::from_secs(5), async || {
        presence_of(&s, "asa.ostberg").await["availability"] == "Away"
    })
    .await;
    sim.set_notify_method(NotifyMethod::Notify);
    sim.set(ASA, SfbPresence::new(9500).activity("in-presentation"));
    wait_for("DND by NOTIFY", Duration::from_secs(5), async || {
        let p = presence_of(&s, "asa.ostberg").await;
        p["availability"] == "DoNotDisturb" && p["activity"] == "Presenting"
    })
    .await;
    let st = sim.stats();
    assert_eq!((st.benotifies >= 1, st.notifies), (true, 1), "{st:?}");
    wait_for("both counted in health", Duration::from_secs(3), async || {
        let d = &providers(&s).await["details"];
        d["benotifies"].as_u64() >= Some(1) && d["notifies"] == 1
    })
    .await;
    // The NOTIFY was answered: the subscription lives on.
    assert_eq!(sim.subscriptions().len(), 2);
    sim.set(ASA, SfbPresence::available());
    wait_for("Available again", Duration::from_secs(5), async || {
        presence_of(&s, "asa.ostberg").await["availability"] == "Available"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubscribe_moves_a_person_to_the_second_pool() {
    let pool2 = SfbSim::start(SfbSimConfig::default()).unwrap();
    pool2.set(MARTA, SfbPresence::new(9500).note("Hemma"));
    pool2.set(ANNIKA, SfbPresence::new(12500));
    let pool1 =
        pool(SfbSimConfig { homed_elsewhere: vec![(MARTA.into(), pool2.pool_fqdn())], ..SfbSimConfig::default() });
    let s = start(config(&pool1, "sfb-pools", ""));
    subscribed(&s).await;
    // Märta's state comes from pool 2 through a single subscription there.
    wait_for("Märta from pool 2", Duration::from_secs(5), async || {
        let p = presence_of(&s, "marta.lind").await;
        p["availability"] == "DoNotDisturb" && p["note"] == "Hemma"
    })
    .await;
    let subs = pool2.subscriptions();
    assert_eq!(subs.len(), 1);
    assert!(!subs[0].batched);
    assert_eq!(subs[0].resources, vec![MARTA.to_string()]);
    pool2.set(MARTA, SfbPresence::new(15500).activity("off-work"));
    wait_for("Märta's change from pool 2", Duration::from_secs(5), async || {
        let p = presence_of(&s, "marta.lind").await;
        p["availability"] == "Away" && p["activity"] == "OffWork"
    })
    .await;
    // Pool 1 no longer speaks for her.
    pool1.set(MARTA, SfbPresence::available());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(presence_of(&s, "marta.lind").await["availability"], "Away");

    // A person moved while subscribed: the batch says resubscribe, the provider follows.
    pool1.home_elsewhere(ANNIKA, &pool2.pool_fqdn());
    wait_for("Annika from pool 2", Duration::from_secs(5), async || {
        presence_of(&s, "annika.nilsson").await["availability"] == "BeRightBack"
    })
    .await;
    pool2.set(ANNIKA, SfbPresence::new(6500).activity("in-a-conference"));
    wait_for("Annika's change from pool 2", Duration::from_secs(5), async || {
        presence_of(&s, "annika.nilsson").await["activity"] == "InAConferenceCall"
    })
    .await;
    // Health details are refreshed twice a second.
    wait_for("both in health", Duration::from_secs(3), async || {
        let d = providers(&s).await["details"].clone();
        d["singles"] == 2 && d["singles_active"] == 2 && d["pools"][pool2.pool_fqdn()] == 2
    })
    .await;
    assert_eq!(pool2.stats().single_subscribes, 2);
    assert_eq!(providers(&s).await["up"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_restart_makes_sfb_stale_never_offline_then_live_again() {
    let sim = pool(SfbSimConfig::default());
    let s = start(config(&sim, "sfb-restart", ""));
    subscribed(&s).await;
    sim.set(ASA, SfbPresence::new(6500).activity("on-the-phone"));
    wait_for("Åsa busy", Duration::from_secs(5), async || {
        presence_of(&s, "asa.ostberg").await["availability"] == "Busy"
    })
    .await;

    // The front end restarts: subscriptions forgotten, nothing answered for 6 s.
    let t0 = Instant::now();
    sim.restart(Duration::from_secs(6));
    wait_for("the feed down", Duration::from_secs(10), async || providers(&s).await["up"] == false).await;
    eprintln!("pool silent → feed down in {} ms", t0.elapsed().as_millis());
    let p = presence_of(&s, "asa.ostberg").await;
    assert_eq!(p["freshness"], "stale", "{p}");
    assert_ne!(p["availability"], "Offline", "{p}");
    assert_eq!(p["availability"], "Unknown", "{p}");
    let src = sfb_source(&s, "asa.ostberg").await;
    assert_eq!(src["freshness"], "stale", "{src}");
    assert_eq!(src["availability"], "Busy", "the last value, marked stale");

    // It answers again: the provider re-subscribes and the feed is live again.
    wait_for("live again", Duration::from_secs(15), async || {
        let p = providers(&s).await;
        p["up"] == true && presence_of(&s, "asa.ostberg").await["freshness"] == "live"
    })
    .await;
    eprintln!("restart → live again in {} ms", t0.elapsed().as_millis());
    assert!(sim.stats().batched_subscribes >= 4, "{:?}", sim.stats());
    assert_eq!(sim.subscriptions().len(), 2);
    assert_eq!(presence_of(&s, "asa.ostberg").await["availability"], "Busy");
    sim.set(ASA, SfbPresence::new(15500));
    wait_for("a change through the new subscription", Duration::from_secs(5), async || {
        presence_of(&s, "asa.ostberg").await["availability"] == "Away"
    })
    .await;

    // terminated;reason=deactivated: re-subscribed at once, nobody goes stale for long.
    sim.deactivate();
    wait_for("re-subscribed after deactivation", Duration::from_secs(5), async || sim.subscriptions().len() == 2).await;
    wait_for("up after deactivation", Duration::from_secs(5), async || providers(&s).await["up"] == true).await;
    sim.set(ASA, SfbPresence::available());
    wait_for("a change after deactivation", Duration::from_secs(5), async || {
        presence_of(&s, "asa.ostberg").await["availability"] == "Available"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_categories_part_is_counted_and_disturbs_nobody_else() {
    let sim = pool(SfbSimConfig::default());
    let s = start(config(&sim, "sfb-garbled", ""));
    subscribed(&s).await;
    let errors = providers(&s).await["errors"].as_u64().unwrap();
    // Åsa's and Märta's changes in one BENOTIFY (both are in the first batch); Åsa's part is
    // malformed.
    sim.garble(ASA, true);
    sim.set_many(vec![(ASA.into(), SfbPresence::new(6500)), (MARTA.into(), SfbPresence::new(15500))]);
    wait_for("Märta's change", Duration::from_secs(5), async || {
        presence_of(&s, "marta.lind").await["availability"] == "Away"
    })
    .await;
    assert_eq!(presence_of(&s, "asa.ostberg").await["availability"], "Available", "the bad part changed nothing");
    wait_for("the bad part in health", Duration::from_secs(3), async || {
        let p = providers(&s).await;
        p["details"]["bad_bodies"] == 1 && p["errors"].as_u64() > Some(errors)
    })
    .await;
    let p = providers(&s).await;
    assert!(p["last_error"].as_str().unwrap().contains("asa.ostberg"), "{p}");
    assert_eq!(p["up"], true, "one bad part does not take the feed down");
    sim.garble(ASA, false);
    sim.set(ASA, SfbPresence::new(9500));
    wait_for("Åsa's next change", Duration::from_secs(5), async || {
        presence_of(&s, "asa.ostberg").await["availability"] == "DoNotDisturb"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_range_boundaries_map_exactly() {
    let sim = pool(SfbSimConfig::default());
    let s = start(config(&sim, "sfb-ranges", ""));
    subscribed(&s).await;
    let cases: [(u32, &str, Option<&str>); 17] = [
        (3000, "Available", None),
        (4499, "Available", None),
        (4500, "AvailableIdle", None),
        (5999, "AvailableIdle", None),
        (6000, "Busy", None),
        (6900, "Busy", Some("UrgentInterruptionsOnly")),
        (7499, "Busy", None),
        (7500, "BusyIdle", None),
        (8999, "BusyIdle", None),
        (9000, "DoNotDisturb", None),
        (11999, "DoNotDisturb", None),
        (12000, "BeRightBack", None),
        (14999, "BeRightBack", None),
        (15000, "Away", None),
        (17999, "Away", None),
        (18000, "Offline", None),
        (2999, "Unknown", None),
    ];
    for (n, want, activity) in cases {
        // The number in the note tells this step's state from the previous one.
        sim.set(ASA, SfbPresence::new(n).note(&format!("n={n}")));
        let mut src = Value::Null;
        wait_for(&format!("{n}"), Duration::from_secs(5), async || {
            src = sfb_source(&s, "asa.ostberg").await;
            src["note"] == format!("n={n}")
        })
        .await;
        // 2999 is below every documented range: no opinion.
        let got = if src["availability"].is_null() { "Unknown" } else { src["availability"].as_str().unwrap() };
        assert_eq!(got, want, "{n}: {src}");
        assert_eq!(src["activity"].as_str(), activity, "{n}: {src}");
    }
}
