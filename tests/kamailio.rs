//! End-to-end tests of the SIP sources against real Kamailio (Debian's kamailio with its
//! presence modules): the SIP/SIMPLE source subscribes to Kamailio for everyone with a SIP
//! address, a sipp publisher changes a person's presence, and the change reaches a hub
//! WebSocket subscriber; Kamailio going away makes the source stale (never Offline) and after
//! it restarts (having forgotten every subscription) the source re-subscribes by itself. The
//! PBX busy-lamp source does the same with the dialog event package (presence_dialoginfo).
//!
//! Needs `apt-get install kamailio kamailio-presence-modules kamailio-sqlite-modules sip-tester
//! sqlite3` (`./test.sh` installs them); without them the tests fail and say what to install.

use std::time::{Duration, Instant};

use crate::common::kamailio::{Kamailio, KamailioOptions, Sipp};
use crate::common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

fn config(tag: &str, kind: &str, k: &Kamailio, extra: &str) -> presence_hub::config::Config {
    let mut cfg = test_config(temp_dir(tag));
    let text = format!(
        r#"
type = "{kind}"
name = "kamailio"
server = "{}"
subscribe_rate = 2000
keepalive_secs = 1
{extra}
"#,
        k.addr()
    );
    cfg.providers = vec![toml::from_str(&text).unwrap()];
    cfg.validate().unwrap();
    cfg
}

async fn provider(s: &Server) -> Value {
    let v: Value = client().get(s.url("/api/providers")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    v.as_array().unwrap().iter().find(|p| p["name"] == "kamailio").cloned().unwrap()
}

/// The next delta that satisfies `want` (others are skipped), within `secs`.
async fn delta_where(ws: &mut Ws, secs: u64, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next()).await.expect("the expected delta in time").unwrap().unwrap();
        let Ok(f) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else { continue };
        if f["type"] == "delta" {
            assert_ne!(f["presence"]["availability"], "Offline", "never Offline: {f}");
            if want(&f["presence"]) {
                return f;
            }
        }
    }
}

/// Runs a sipp client to completion on a blocking thread.
async fn sipp(s: Sipp, to: std::net::SocketAddr) -> crate::common::kamailio::SippRun {
    tokio::task::spawn_blocking(move || s.run(to)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_presence_from_kamailio_reaches_a_websocket_and_survives_a_restart() {
    for transport in ["udp", "tcp"] {
        let mut k = Kamailio::start();
        let s = start(config(&format!("kam-{transport}"), "sip_presence", &k, &format!("transport = \"{transport}\"")));
        wait_for("everyone subscribed", Duration::from_secs(15), async || {
            let p = provider(&s).await;
            p["details"]["subscriptions_active"] == 320 && p["up"] == true
        })
        .await;
        let mut ws = watch(&s, &["asa.ostberg"]).await;

        // A phone publishes on-the-phone at Kamailio; Kamailio NOTIFYs the hub.
        let t0 = Instant::now();
        let mut pubsipp = Sipp::publish_pidf("asa.ostberg", "nordvik.se", "open", "on-the-phone", "Kundsamtal", None);
        if transport == "tcp" {
            pubsipp = pubsipp.tcp();
        }
        let run = sipp(pubsipp, k.addr()).await;
        run.assert_success();
        let etag = run.etag().expect("an entity-tag");
        let d = delta_where(&mut ws, 5, |p| p["activity"] == "InACall").await;
        eprintln!("{transport}: sipp PUBLISH at Kamailio → hub WebSocket delta in {:?}", t0.elapsed());
        assert_eq!(d["presence"]["availability"], "Busy");
        assert_eq!(d["presence"]["note"], "Kundsamtal");
        assert_eq!(d["presence"]["reasons"], json!(["sip"]));

        // Modify the publication (SIP-If-Match): away.
        let run = sipp(Sipp::publish_pidf("asa.ostberg", "nordvik.se", "open", "away", "Ute", Some(&etag)), k.addr()).await;
        run.assert_success();
        delta_where(&mut ws, 5, |p| p["availability"] == "Away").await;

        // Kamailio goes away: after two missed OPTIONS the source is stale, never Offline.
        k.stop();
        delta_where(&mut ws, 10, |p| p["freshness"] == "stale").await;
        assert_eq!(provider(&s).await["up"], false);

        // It comes back on the same port, empty. The source re-subscribes; with nothing
        // published, Kamailio's NOTIFY has no body and the source retracts (no opinion).
        let port = k.addr().port();
        let k2 = Kamailio::start_with(KamailioOptions { port: Some(port), ..KamailioOptions::default() });
        let t0 = Instant::now();
        wait_for("the feed up again", Duration::from_secs(20), async || provider(&s).await["up"] == true).await;
        eprintln!("{transport}: Kamailio restarted → feed up again in {:?}", t0.elapsed());
        let run = sipp(Sipp::publish_pidf("asa.ostberg", "nordvik.se", "open", "on-the-phone", "Igen", None), k2.addr()).await;
        run.assert_success();
        let d = delta_where(&mut ws, 8, |p| p["activity"] == "InACall" && p["freshness"] == "live").await;
        assert_eq!(d["presence"]["note"], "Igen");
        let p = provider(&s).await;
        assert_eq!(p["details"]["bad_bodies"], 0, "{p}");
        drop(s);
        drop(k2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_lamps_from_kamailio_dialoginfo() {
    let k = Kamailio::start();
    let s = start(config("kam-dialog", "sip_dialog", &k, "resource = \"sip:{extension}@{domain}\"\ndomain = \"127.0.0.1\""));
    wait_for("everyone subscribed", Duration::from_secs(15), async || provider(&s).await["details"]["subscriptions_active"] == 320).await;
    let mut ws = watch(&s, &["asa.ostberg"]).await;
    let dom = "127.0.0.1";
    // Åsa's extension 2624 rings, is answered, hangs up; each step PUBLISHed at Kamailio, which
    // NOTIFYs the hub with its own version counter.
    let t0 = Instant::now();
    let run = sipp(Sipp::publish_dialog("2624", dom, "early", 1, "call-1", "sip:+46855512345@pstn", None), k.addr()).await;
    run.assert_success();
    let etag = run.etag().unwrap();
    let d = delta_where(&mut ws, 5, |p| p["activity"] == "Ringing").await;
    eprintln!("dialog PUBLISH at Kamailio → hub WebSocket delta in {:?}", t0.elapsed());
    assert_eq!(d["presence"]["reasons"], json!(["pbx"]));
    let run = sipp(Sipp::publish_dialog("2624", dom, "confirmed", 2, "call-1", "sip:+46855512345@pstn", Some(&etag)), k.addr()).await;
    run.assert_success();
    let etag = run.etag().unwrap();
    delta_where(&mut ws, 5, |p| p["activity"] == "InACall").await;
    let run = sipp(Sipp::publish_dialog("2624", dom, "terminated", 3, "call-1", "sip:+46855512345@pstn", Some(&etag)), k.addr()).await;
    run.assert_success();
    delta_where(&mut ws, 5, |p| p["availability"] == "Available").await;
    assert_eq!(provider(&s).await["details"]["bad_bodies"], 0);
}
