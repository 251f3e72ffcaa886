//! End-to-end tests of the PBX busy-lamp source (`sip_dialog`) through the hub against the
//! in-repo PBX simulator (a dialog event package notifier over real SIP on loopback): calls
//! reach a WebSocket subscriber; the PBX going silent makes the source stale (never Offline);
//! after a reboot (subscriptions forgotten) the source re-subscribes and is live again.
//! Kamailio as the notifier is in `tests/kamailio.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use presence_simulators::pbx::{Call, PbxSim, PbxSimConfig};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn config(sim: &PbxSim, tag: &str) -> presence_hub::config::Config {
    let mut cfg = test_config(temp_dir(tag));
    let text = format!(
        r#"
type = "sip_dialog"
name = "pbx"
server = "{}"
domain = "pbx.nordvik.se"
subscribe_rate = 2000
keepalive_secs = 1
"#,
        sim.addr()
    );
    cfg.providers = vec![toml::from_str(&text).unwrap()];
    cfg.validate().unwrap();
    cfg
}

async fn provider(s: &Server) -> Value {
    provider_named(s, "pbx").await
}

async fn detail(s: &Server, id: &str) -> Value {
    user_detail(s, id, VIEWER).await
}

async fn next_delta(ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin)) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a delta within 5 s").unwrap().unwrap();
        let Ok(f) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else { continue };
        if f["type"] == "delta" {
            return f;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_light_the_lamp_and_a_pbx_outage_is_stale_never_offline() {
    let sim = Arc::new(PbxSim::start(PbxSimConfig::default()).unwrap());
    let s = start(config(&sim, "pbx"));
    // Everyone with an extension is subscribed (320 in the demo directory).
    wait_for("320 subscriptions", Duration::from_secs(15), async || {
        let p = provider(&s).await;
        p["details"]["subscriptions_active"] == 320 && p["state"] == "up"
    })
    .await;
    assert_eq!(sim.subscriptions(), 320);
    let d = detail(&s, "asa.ostberg").await;
    let pbx = d["sources"].as_array().unwrap().iter().find(|x| x["source"] == "pbx").unwrap().clone();
    assert_eq!(pbx["availability"], "Available", "{pbx}");

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}?access_token={VIEWER}", s.ws_url("/api/stream"))).await.unwrap();
    ws.send(Message::text(json!({ "op": "subscribe", "users": ["asa.ostberg"] }).to_string())).await.unwrap();
    loop {
        let msg = ws.next().await.unwrap().unwrap();
        let Ok(f) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else { continue };
        if f["type"] == "snapshot" && f["last"] == true {
            break;
        }
    }
    // Åsa's extension is 2624.
    let t0 = Instant::now();
    sim.set_call("2624", Call::Ringing { from: "sip:+46855512345@pstn".into() });
    let delta = next_delta(&mut ws).await;
    eprintln!("PBX ringing → WebSocket delta: {:?}", t0.elapsed());
    assert_eq!(delta["presence"]["activity"], "Ringing");
    assert_eq!(delta["presence"]["reasons"], json!(["pbx"]));
    sim.set_call("2624", Call::Talking { with: "sip:+46855512345@pstn".into() });
    let delta = next_delta(&mut ws).await;
    assert_eq!(delta["presence"]["availability"], "Busy");
    assert_eq!(delta["presence"]["activity"], "InACall");
    sim.set_call("2624", Call::Idle);
    let delta = next_delta(&mut ws).await;
    assert_eq!(delta["presence"]["availability"], "Available");

    // The PBX stops answering: two missed health checks make the feed down; the lamp is
    // stale, and the person is never shown Offline.
    sim.set_call("2624", Call::Talking { with: "sip:2000@pbx".into() });
    assert_eq!(next_delta(&mut ws).await["presence"]["activity"], "InACall");
    sim.set_silent(true);
    let stale = next_delta(&mut ws).await;
    assert_eq!(stale["presence"]["freshness"], "stale", "{stale}");
    assert_ne!(stale["presence"]["availability"], "Offline");
    let p = provider(&s).await;
    assert_eq!(p["up"], false, "{p}");

    // It reboots: subscriptions forgotten, answering again. The source re-subscribes everyone
    // and the full state it sends makes the lamp live again.
    sim.restart();
    sim.set_call("2624", Call::Idle);
    sim.set_silent(false);
    let t0 = Instant::now();
    let live = loop {
        let d = next_delta(&mut ws).await;
        assert_ne!(d["presence"]["availability"], "Offline");
        if d["presence"]["freshness"] == "live" {
            break d;
        }
    };
    eprintln!("PBX back → live again in {:?}", t0.elapsed());
    assert_eq!(live["presence"]["availability"], "Available");
    wait_for("everyone re-subscribed", Duration::from_secs(15), async || sim.subscriptions() == 320).await;
    sim.set_call("2624", Call::Ringing { from: "sip:2000@pbx".into() });
    assert_eq!(next_delta(&mut ws).await["presence"]["activity"], "Ringing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_prefixes_keep_the_pbx_to_its_site() {
    // Stockholm's extensions (2xxx) are on this PBX; Oslo's 5xxxx are on another.
    let exts = demo_column("extension");
    let here = exts.iter().filter(|e| e.starts_with('2')).count();
    assert!(here > 0 && here < exts.len(), "{here}");
    let sim = Arc::new(PbxSim::start(PbxSimConfig::default()).unwrap());
    let mut cfg = config(&sim, "pbx-scope");
    if let Some(presence_providers::ProviderConfig::SipDialog(c)) = cfg.providers.first_mut() {
        c.extension_prefixes = vec!["2".into()];
    }
    cfg.validate().unwrap();
    let s = start(cfg);
    wait_for(
        "the site's subscriptions",
        Duration::from_secs(15),
        async || {
            let p = provider(&s).await;
            p["details"]["subscriptions_active"] == here && p["state"] == "up"
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sim.subscriptions(),
        here,
        "nobody outside the prefixes is subscribed"
    );
    assert_eq!(provider(&s).await["details"]["people"], here);
}
