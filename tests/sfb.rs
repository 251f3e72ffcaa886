//! End-to-end tests of the Skype for Business source through the hub, against the in-repo SfB
//! pool simulator over real SIP on loopback (batched category SUBSCRIBE, piggy-backed first
//! notification, BENOTIFY/NOTIFY with RLMI multipart bodies): a change reaches a WebSocket
//! subscriber; BENOTIFY and NOTIFY both work; a `resubscribe` instance moves a person to a
//! second pool; a pool restart makes SfB stale (never Offline) until the provider has
//! re-subscribed; a malformed categories part is counted and disturbs nobody else; the
//! availability range boundaries map exactly.
//!
//! Every test runs twice: over TCP, and over TLS as a **trusted application** (mutual TLS, the
//! pool's TLS listener demanding a certificate from the test CA and trusting the application
//! by its certificate's name, no digest). TLS-only tests: a certificate the pool does not trust
//! as an application, no client certificate, and a pool certificate from another CA each keep
//! the feed down (stale, never Offline) with a health message saying why.

use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use presence_actors::model::DetailPolicy;
use presence_hub::config::Config;
use presence_simulators::sfb::{NotifyMethod, SfbPresence, SfbSim, SfbSimConfig, SfbSimTls};
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

/// How the hub reaches the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Tcp,
    /// TLS as a trusted application.
    Tls,
}

/// The trusted application's FQDN: the subject of `fixtures/tls/sip/app-cert.pem`.
const APP_FQDN: &str = "hub.example.test";

fn sip_fixture(name: &str) -> String {
    format!("{}/fixtures/tls/sip/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The simulator's settings: with a TLS listener demanding the test CA's client
/// certificates and trusting `hub.example.test` as an application, over TLS.
fn sim_config(over: Over) -> SfbSimConfig {
    let tls = (over == Over::Tls).then(|| SfbSimTls {
        cert_file: sip_fixture("pool-cert.pem").into(),
        key_file: sip_fixture("pool-key.pem").into(),
        client_ca_file: sip_fixture("ca-cert.pem").into(),
        trusted_applications: vec![APP_FQDN.into()],
    });
    SfbSimConfig { tls, ..SfbSimConfig::default() }
}

/// A pool that knows everyone in the directory but Eirik, all Available.
fn pool(cfg: SfbSimConfig) -> SfbSim {
    let sim = SfbSim::start(cfg).unwrap();
    let uris: Vec<String> = sip_uris().into_iter().filter(|u| u != EIRIK).collect();
    assert!(uris.len() >= 300);
    sim.seed(&uris, SfbPresence::available());
    sim
}

fn config(sim: &SfbSim, tag: &str, extra: &str, over: Over) -> Config {
    let mut cfg = test_config(temp_dir(tag));
    let (server, tls) = match over {
        Over::Tcp => (sim.addr(), String::new()),
        Over::Tls => (
            sim.tls_addr().expect("the pool speaks TLS"),
            format!(
                "transport = \"tls\"\ntrusted_application = true\ntls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                sip_fixture("ca-cert.pem"),
                sip_fixture("app-cert.pem"),
                sip_fixture("app-key.pem")
            ),
        ),
    };
    let text = format!(
        r#"
type = "sfb"
name = "sfb"
server = "{server}"
from = "sip:hub-svc@nordvik.se"
keepalive_secs = 1
keep_details = true
{tls}
{extra}
"#
    );
    cfg.providers = vec![toml::from_str(&text).unwrap()];
    cfg.policy.calendar_details = DetailPolicy::Operators;
    cfg.validate().unwrap();
    cfg
}

/// Two tests of one body: over TCP and over TLS.
macro_rules! both {
    ($tcp:ident, $tls:ident, $body:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $tcp() {
            $body(Over::Tcp).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $tls() {
            $body(Over::Tls).await
        }
    };
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

both!(an_sfb_change_reaches_a_websocket_subscriber_over_tcp, an_sfb_change_reaches_a_websocket_subscriber_over_tls, an_sfb_change_reaches_a_websocket_subscriber);
async fn an_sfb_change_reaches_a_websocket_subscriber(over: Over) {
    let sim = pool(sim_config(over));
    let s = start(config(&sim, "sfb-ws", "", over));
    subscribed(&s).await;
    let p = providers(&s).await;
    assert_eq!(p["state"], "up");
    assert_eq!(p["details"]["people"], 320);
    assert_eq!(p["details"]["batches"].as_array().unwrap().len(), 2, "320 people in batches of 200");
    if over == Over::Tls {
        // Both certificates, with the days they have left, for the operator.
        let tls = &p["details"]["tls"];
        assert_eq!((tls["certificate"]["subject"].as_str(), tls["server_certificate"]["subject"].as_str()), (Some("CN=hub.example.test"), Some("CN=pool.example.test")), "{tls}");
        assert!(tls["server_certificate"]["days_left"].as_i64() > Some(30_000), "{tls}");
    } else {
        assert!(p["details"]["tls"].is_null());
    }
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

both!(benotify_and_notify_both_work_over_tcp, benotify_and_notify_both_work_over_tls, benotify_and_notify_both_work);
async fn benotify_and_notify_both_work(over: Over) {
    let sim = pool(sim_config(over));
    let s = start(config(&sim, "sfb-methods", "", over));
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

both!(a_resubscribe_moves_a_person_to_the_second_pool_over_tcp, a_resubscribe_moves_a_person_to_the_second_pool_over_tls, a_resubscribe_moves_a_person_to_the_second_pool);
async fn a_resubscribe_moves_a_person_to_the_second_pool(over: Over) {
    let pool2 = SfbSim::start(sim_config(over)).unwrap();
    pool2.set(MARTA, SfbPresence::new(9500).note("Hemma"));
    pool2.set(ANNIKA, SfbPresence::new(12500));
    let pool1 =
        pool(SfbSimConfig { homed_elsewhere: vec![(MARTA.into(), pool2.pool_fqdn())], ..sim_config(over) });
    let s = start(config(&pool1, "sfb-pools", "", over));
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

both!(a_pool_restart_makes_sfb_stale_never_offline_then_live_again_over_tcp, a_pool_restart_makes_sfb_stale_never_offline_then_live_again_over_tls, a_pool_restart_makes_sfb_stale_never_offline_then_live_again);
async fn a_pool_restart_makes_sfb_stale_never_offline_then_live_again(over: Over) {
    let sim = pool(sim_config(over));
    let s = start(config(&sim, "sfb-restart", "", over));
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

both!(a_malformed_categories_part_is_counted_and_disturbs_nobody_else_over_tcp, a_malformed_categories_part_is_counted_and_disturbs_nobody_else_over_tls, a_malformed_categories_part_is_counted_and_disturbs_nobody_else);
async fn a_malformed_categories_part_is_counted_and_disturbs_nobody_else(over: Over) {
    let sim = pool(sim_config(over));
    let s = start(config(&sim, "sfb-garbled", "", over));
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

both!(availability_range_boundaries_map_exactly_over_tcp, availability_range_boundaries_map_exactly_over_tls, availability_range_boundaries_map_exactly);
async fn availability_range_boundaries_map_exactly(over: Over) {
    let sim = pool(sim_config(over));
    let s = start(config(&sim, "sfb-ranges", "", over));
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

/// Over TLS, what keeps the feed down says why: a certificate the pool does not trust as an
/// application (challenged: the hint names the SfB cmdlets), no client certificate (the pool
/// ends the handshake), and a pool certificate from a CA the hub does not trust. Everyone's SfB
/// state stays stale, never Offline, and nothing is subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_refused_certificate_keeps_the_feed_down_and_says_why() {
    let sim = pool(sim_config(Over::Tls));
    let addr = sim.tls_addr().unwrap();
    let ca = sip_fixture("ca-cert.pem");
    let other_ca = format!("{}/fixtures/tls/ca-cert.pem", env!("CARGO_MANIFEST_DIR"));
    let cases = [
        (
            "not-trusted",
            // The pool's own certificate: from the right CA, but not a trusted application.
            format!("tls_ca_file = \"{ca}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\ntrusted_application = true", sip_fixture("pool-cert.pem"), sip_fixture("pool-key.pem")),
            "New-CsTrustedApplicationPool",
        ),
        ("no-client-cert", format!("tls_ca_file = \"{ca}\""), "CertificateRequired"),
        ("other-ca", format!("tls_ca_file = \"{other_ca}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"", sip_fixture("app-cert.pem"), sip_fixture("app-key.pem")), "UnknownIssuer"),
    ];
    for (tag, tls, why) in cases {
        let mut cfg = test_config(temp_dir(&format!("sfb-tls-{tag}")));
        let text = format!("type = \"sfb\"\nname = \"sfb\"\nserver = \"{addr}\"\nfrom = \"sip:hub-svc@nordvik.se\"\nkeepalive_secs = 1\ntransport = \"tls\"\n{tls}\n");
        cfg.providers = vec![toml::from_str(&text).unwrap()];
        cfg.validate().unwrap();
        let before = sim.stats();
        let s = start(cfg);
        let mut last = Value::Null;
        wait_for(&format!("{tag}: the reason in health"), Duration::from_secs(15), async || {
            last = providers(&s).await;
            last["last_error"].as_str().is_some_and(|e| e.contains(why))
        })
        .await;
        eprintln!("{tag}: {}", last["last_error"]);
        assert_eq!(last["up"], false, "{tag}: {last}");
        let p = presence_of(&s, "asa.ostberg").await;
        assert_ne!(p["availability"], "Offline", "{tag}: {p}");
        assert_eq!(sim.subscriptions().len(), 0, "{tag}: nothing subscribed");
        let after = sim.stats();
        assert_eq!(after.batched_subscribes, before.batched_subscribes, "{tag}");
        assert_eq!(after.trusted, before.trusted, "{tag}");
        drop(s);
    }
}

/// A trusted application with its own port (`tls_listen`, the port of
/// `New-CsTrustedApplication -Port`) and its computer's FQDN as `contact_host`: the pool sends
/// its notifications over a connection of its own to that port — mutual TLS, the pool
/// checking the application's certificate against `hub.example.test` and the hub checking the
/// pool's against the CA — and they reach a WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_pool_connects_back_to_the_trusted_application_port() {
    let sim = pool(SfbSimConfig {
        notify_to_contact: true,
        hosts: vec![(APP_FQDN.into(), "127.0.0.1".parse().unwrap())],
        ..sim_config(Over::Tls)
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("tls_listen = \"127.0.0.1:{port}\"\ncontact_host = \"{APP_FQDN}\"");
    let s = start(config(&sim, "sfb-tls-listen", &listen, Over::Tls));
    subscribed(&s).await;
    let subs = sim.subscriptions();
    assert_eq!(subs.len(), 2);
    assert!(subs.iter().all(|x| x.notify_to.port() == port), "notifications go to the application's port: {subs:?}");
    let mut ws = watch(&s, &["asa.ostberg"]).await;
    sim.set(ASA, SfbPresence::new(6500).activity("on-the-phone"));
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a delta within 5 s").unwrap().unwrap();
        let Ok(f) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else { continue };
        if f["type"] == "delta" && f["presence"]["availability"] == "Busy" {
            break;
        }
    }
    assert!(sim.stats().benotifies >= 1);
}
