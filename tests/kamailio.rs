//! End-to-end tests of the SIP sources against real Kamailio (Debian's kamailio with its
//! presence modules): the SIP/SIMPLE source subscribes to Kamailio for everyone with a SIP
//! address, a sipp publisher changes a person's presence, and the change reaches a hub
//! WebSocket subscriber; Kamailio going away makes the source stale (never Offline) and after
//! it restarts (having forgotten every subscription) the source re-subscribes by itself. The
//! PBX busy-lamp source does the same with the dialog event package (presence_dialoginfo).
//! Over TLS (Kamailio's `tls` module requiring client certificates) both sources connect with
//! the test CA and a client certificate; a refused certificate each way keeps them down with
//! a health message saying why.
//!
//! Needs `apt-get install kamailio kamailio-presence-modules kamailio-sqlite-modules
//! kamailio-tls-modules sip-tester sqlite3` (`./test.sh` installs them); without them the tests fail and say what to install.

use std::time::{Duration, Instant};

use crate::common::kamailio::{Kamailio, KamailioOptions, KamailioTls, Sipp};
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
        let msg = tokio::time::timeout(left, ws.next()).await.expect("the expected delta in time").expect("the stream open").unwrap();
        let Ok(f) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else {
            if !msg.is_ping() { eprintln!("not a frame: {msg:?}"); }
            continue;
        };
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
    for transport in ["udp", "tcp", "tls"] {
        let tls = (transport == "tls").then(|| KamailioTls::fixture("pool"));
        let mut k = Kamailio::start_with(KamailioOptions { tls: tls.clone(), ..KamailioOptions::default() });
        let s = match &tls {
            None => start(config(&format!("kam-{transport}"), "sip_presence", &k, &format!("transport = \"{transport}\""))),
            Some(_) => {
                let mut cfg = tls_config("kam-tls-restart", &k, &tls_client());
                cfg.providers.truncate(1); // sip_presence only
                start(cfg)
            }
        };
        wait_for("everyone subscribed", Duration::from_secs(15), async || {
            let p = provider(&s).await;
            p["details"]["subscriptions_active"] == 320 && p["up"] == true
        })
        .await;
        // Recorded in the background: a console that keeps its stream open while the test waits.
        let log = StreamLog::watch(&s, &["asa.ostberg"]).await;
        let asa = "asa.ostberg";

        // A phone publishes on-the-phone at Kamailio; Kamailio NOTIFYs the hub.
        let t0 = Instant::now();
        let mut pubsipp = Sipp::publish_pidf("asa.ostberg", "nordvik.se", "open", "on-the-phone", "Kundsamtal", None);
        if transport == "tcp" {
            pubsipp = pubsipp.tcp();
        }
        let run = sipp(pubsipp, k.addr()).await;
        run.assert_success();
        let etag = run.etag().expect("an entity-tag");
        let (_, p) = log.first_after(t0, asa, "in a call", Duration::from_secs(5), |p| p["activity"] == "InACall").await;
        eprintln!("{transport}: sipp PUBLISH at Kamailio → hub WebSocket delta in {:?}", t0.elapsed());
        assert_eq!(p["availability"], "Busy");
        assert_eq!(p["note"], "Kundsamtal");
        assert_eq!(p["reasons"], json!(["sip"]));

        // Modify the publication (SIP-If-Match): away.
        let t = Instant::now();
        let run = sipp(Sipp::publish_pidf("asa.ostberg", "nordvik.se", "open", "away", "Ute", Some(&etag)), k.addr()).await;
        run.assert_success();
        log.first_after(t, asa, "away", Duration::from_secs(5), |p| p["availability"] == "Away").await;

        // Kamailio goes away: after two missed OPTIONS the source is stale, never Offline.
        let t = Instant::now();
        k.stop();
        log.first_after(t, asa, "stale", Duration::from_secs(10), |p| p["freshness"] == "stale").await;
        assert_eq!(provider(&s).await["up"], false);

        // It comes back on the same port, empty. The source re-subscribes; with nothing
        // published, Kamailio's NOTIFY has no body and the source retracts (no opinion).
        let port = k.addr().port();
        let tls = tls.map(|t| KamailioTls { port: k.tls_addr().map(|a| a.port()), ..t });
        let k2 = Kamailio::start_with(KamailioOptions { port: Some(port), tls, ..KamailioOptions::default() });
        let t0 = Instant::now();
        wait_for("the feed up again", Duration::from_secs(20), async || provider(&s).await["up"] == true).await;
        eprintln!("{transport}: Kamailio restarted → feed up again in {:?}", t0.elapsed());
        let t = Instant::now();
        let run = sipp(Sipp::publish_pidf("asa.ostberg", "nordvik.se", "open", "on-the-phone", "Igen", None), k2.addr()).await;
        run.assert_success();
        let (_, p) = log.first_after(t, asa, "in a call again, live", Duration::from_secs(8), |p| p["activity"] == "InACall" && p["freshness"] == "live").await;
        assert_eq!(p["note"], "Igen");
        let offline: Vec<_> = log.all(asa).into_iter().filter(|p| p["availability"] == "Offline").collect();
        assert!(offline.is_empty(), "{transport}: never Offline: {offline:?}");
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

fn sip_fixture(name: &str) -> String {
    format!("{}/fixtures/tls/sip/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The TLS settings of a source: the test CA, the hub's client certificate.
fn tls_client() -> String {
    format!(
        "tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        sip_fixture("ca-cert.pem"),
        sip_fixture("app-cert.pem"),
        sip_fixture("app-key.pem")
    )
}

/// A `sip_presence` and a `sip_dialog` source at Kamailio's TLS port, named `kamailio` and
/// `kamailio-blf`, with `tls` settings added to both.
fn tls_config(tag: &str, k: &Kamailio, tls: &str) -> presence_hub::config::Config {
    let mut cfg = test_config(temp_dir(tag));
    let addr = k.tls_addr().expect("Kamailio with TLS");
    cfg.providers = [("kamailio", "sip_presence", ""), ("kamailio-blf", "sip_dialog", "resource = \"sip:{extension}@{domain}\"\ndomain = \"127.0.0.1\"\n")]
        .iter()
        .map(|(name, kind, extra)| {
            let text = format!("type = \"{kind}\"\nname = \"{name}\"\nserver = \"{addr}\"\ntransport = \"tls\"\nsubscribe_rate = 2000\nkeepalive_secs = 1\n{tls}\n{extra}");
            toml::from_str(&text).unwrap()
        })
        .collect();
    cfg.validate().unwrap();
    cfg
}

/// Kamailio with its `tls` module requires client certificates from the test CA. Both SIP
/// sources connect over TLS with the CA and the hub's client certificate, subscribe everyone,
/// and get Kamailio's NOTIFYs back over their own connections (Via `alias`: the hub has no TLS
/// listener, so nothing else could carry them): a presence PUBLISH and a ringing extension
/// each reach a WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sip_sources_over_tls_with_a_client_certificate() {
    let k = Kamailio::start_with(KamailioOptions { tls: Some(KamailioTls::fixture("pool")), ..KamailioOptions::default() });
    let s = start(tls_config("kam-tls", &k, &tls_client()));
    for name in ["kamailio", "kamailio-blf"] {
        wait_for(&format!("{name}: everyone subscribed over TLS"), Duration::from_secs(20), async || {
            let p = provider_named(&s, name).await;
            p["details"]["subscriptions_active"] == 320 && p["up"] == true
        })
        .await;
    }
    let mut ws = watch(&s, &["asa.ostberg"]).await;
    let t0 = Instant::now();
    sipp(Sipp::publish_pidf("asa.ostberg", "nordvik.se", "open", "away", "Ute", None), k.addr()).await.assert_success();
    let d = delta_where(&mut ws, 5, |p| p["availability"] == "Away").await;
    eprintln!("tls: sipp PUBLISH at Kamailio → hub WebSocket delta in {:?}", t0.elapsed());
    assert_eq!(d["presence"]["note"], "Ute");
    let run = sipp(Sipp::publish_dialog("2624", "127.0.0.1", "early", 1, "call-1", "sip:+46855512345@pstn", None), k.addr()).await;
    run.assert_success();
    let d = delta_where(&mut ws, 5, |p| p["activity"] == "Ringing").await;
    assert!(d["presence"]["reasons"].as_array().unwrap().contains(&json!("pbx")), "{d}");
    for name in ["kamailio", "kamailio-blf"] {
        let p = provider_named(&s, name).await;
        assert_eq!((p["up"].clone(), p["details"]["bad_bodies"].clone()), (json!(true), json!(0)), "{name}: {p}");
    }
    let log = k.log();
    assert!(!log.contains("ERROR"), "Kamailio logged no error: {}", crate::common::kamailio::file_tail(k.log_path(), 3000));
}

/// What keeps a TLS source down says why, and nobody goes Offline: a server certificate from
/// a CA the hub does not trust, one for another host name, an expired one, and no client
/// certificate where Kamailio requires one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_refused_certificate_keeps_the_sources_down_and_says_why() {
    let good = KamailioTls::fixture("pool");
    let k = Kamailio::start_with(KamailioOptions { tls: Some(good.clone()), ..KamailioOptions::default() });
    let expired = Kamailio::start_with(KamailioOptions { tls: Some(KamailioTls::fixture("expired")), ..KamailioOptions::default() });
    let ca = sip_fixture("ca-cert.pem");
    let client = format!("tls_cert_file = \"{}\"\ntls_key_file = \"{}\"", sip_fixture("app-cert.pem"), sip_fixture("app-key.pem"));
    let other_ca = format!("{}/fixtures/tls/ca-cert.pem", env!("CARGO_MANIFEST_DIR"));
    let cases = [
        ("other-ca", &k, format!("tls_ca_file = \"{other_ca}\"\n{client}"), "UnknownIssuer"),
        ("wrong-name", &k, format!("tls_ca_file = \"{ca}\"\n{client}\nserver_name = \"presence.example.test\""), "not valid for name"),
        ("expired", &expired, format!("tls_ca_file = \"{ca}\"\n{client}"), "expired"),
        ("no-client-cert", &k, format!("tls_ca_file = \"{ca}\""), "alert"),
    ];
    for (tag, peer, tls, why) in cases {
        let s = start(tls_config(&format!("kam-tls-{tag}"), peer, &tls));
        for name in ["kamailio", "kamailio-blf"] {
            let deadline = Instant::now() + Duration::from_secs(15);
            let last = loop {
                let p = provider_named(&s, name).await;
                if p["last_error"].as_str().is_some_and(|e| e.contains(why)) {
                    break p;
                }
                assert!(Instant::now() < deadline, "{tag} {name}: no {why:?} in health within 15 s: {p}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            eprintln!("{tag} {name}: {}", last["last_error"]);
            assert_eq!(last["up"], false, "{tag} {name}: {last}");
            assert_eq!(last["details"]["subscriptions_active"], 0, "{tag} {name}: {last}");
        }
        let p = presence_of(&s, "asa.ostberg").await;
        assert_ne!(p["availability"], "Offline", "{tag}: {p}");
        drop(s);
    }
}
