//! sipp (Debian's sip-tester) as a client of the hub's SIP presence server: a watcher
//! SUBSCRIBEs with digest authentication and gets the NOTIFY of a change; a publisher PUBLISHes
//! PIDF with digest authentication and the hub shows it as the person's `sip` source and tells
//! the watcher. Over UDP and TCP.
//!
//! Needs `apt-get install sip-tester` (`./test.sh` installs it with the Kamailio packages).

use std::time::{Duration, Instant};

use crate::common::kamailio::Sipp;
use crate::common::*;
use presence_hub::sip_server::{SipAccount, SipSection};
use serde_json::Value;

fn hub(tag: &str) -> Server {
    let mut cfg = test_config(temp_dir(tag));
    cfg.sip = SipSection {
        enabled: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        accounts: vec![SipAccount { user: "console".into(), password: Some("s3cret".into()), ha1_md5: None, ha1_sha256: None, publish: true, certificate_subject: None }],
        ..SipSection::default()
    };
    cfg.validate().unwrap();
    start(cfg)
}

async fn sip_addr(s: &Server) -> std::net::SocketAddr {
    let t0 = Instant::now();
    loop {
        let v: Value = client().get(s.url("/api/providers")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
        if let Some(l) = v.as_array().unwrap().iter().find(|p| p["name"] == "sip").and_then(|p| p["details"]["listen"].as_str().map(str::to_string)) {
            return l.parse().unwrap();
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_watches_and_publishes_at_the_hub() {
    let s = hub("sipp");
    let sip = sip_addr(&s).await;
    for (transport, who) in [("udp", "marta.lind"), ("tcp", "asa.ostberg")] {
        // A watcher (presence), waiting for on-the-phone.
        let mut w = Sipp::new("hub_watch.xml")
            .row(&[who, "nordvik.se", "presence", "application/pidf+xml", "on-the-phone"])
            .args(["-au", "console", "-ap", "s3cret", "-recv_timeout", "10000"])
            .timeout(Duration::from_secs(20));
        if transport == "tcp" {
            w = w.tcp();
        }
        let mut watcher = tokio::task::spawn_blocking(move || {
            let mut c = w.spawn(sip);
            c.wait_for_log("notify cl=", Duration::from_secs(5));
            c
        })
        .await
        .unwrap();

        // A phone publishes that she is on the phone.
        let t0 = Instant::now();
        let mut p = Sipp::new("hub_publish.xml")
            .row(&[who, "nordvik.se", "open", "on-the-phone", "Kundsamtal"])
            .args(["-au", "console", "-ap", "s3cret"]);
        if transport == "tcp" {
            p = p.tcp();
        }
        let run = tokio::task::spawn_blocking(move || p.run(sip)).await.unwrap();
        run.assert_success();
        assert!(run.etag().is_some(), "{}", run.report());

        let run = tokio::task::spawn_blocking(move || {
            watcher.wait_for_log("wanted", Duration::from_secs(10));
            watcher.wait()
        })
        .await
        .unwrap();
        eprintln!("{transport}: sipp PUBLISH → hub → sipp NOTIFY in {:?}", t0.elapsed());
        run.assert_success();
        let bodies = run.notify_bodies();
        assert!(bodies.iter().any(|b| b.contains("on-the-phone") && b.contains("Kundsamtal")), "{bodies:?}");

        let v: Value = client().get(s.url(&format!("/api/users/{who}"))).bearer_auth(VIEWER).send().await.unwrap().json().await.unwrap();
        let src = v["sources"].as_array().unwrap().iter().find(|x| x["source"] == "sip").cloned().unwrap();
        assert_eq!(src["activity"], "InACall", "{src}");
    }
}
