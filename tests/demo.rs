//! The built-in demo, as `presence-hub` with no arguments runs it: every source is up and
//! brings changes in through its real provider — Teams (Graph), calendars, the Stockholm PBX
//! (SIP dialog), Skype for Business, the Oslo OmniPCX (O2G), Norwegian mobiles (Telenor MBN),
//! Swedish mobiles (the operator adapter in the TDC example format, signed webhooks) and the
//! lunch scenario — and each desk phone is watched by exactly one PBX source.
//!
//! Runs the real binary on a free loopback port with its own data directory.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(c: &reqwest::Client, url: String) -> Value {
    c.get(url)
        .bearer_auth("demo-admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn sources(detail: &Value) -> Vec<String> {
    detail["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["instance"].as_str())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_demo_source_is_up_and_brings_changes_through_its_provider() {
    let dir = crate::common::temp_dir("demo");
    let port = free_port();
    let log = std::fs::File::create(dir.join("hub.log")).unwrap();
    let mut demo = Demo(
        Command::new(env!("CARGO_BIN_EXE_presence-hub"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(&dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start presence-hub"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    let t0 = Instant::now();
    let expected = [
        "teams",
        "calendar",
        "pbx",
        "sfb",
        "omnipcx",
        "telenor",
        "tdc",
        "demo-replay",
    ];
    let mut providers = Value::Null;
    loop {
        if let Some(st) = demo.0.try_wait().unwrap() {
            panic!(
                "the demo exited ({st}):\n{}",
                std::fs::read_to_string(dir.join("hub.log")).unwrap_or_default()
            );
        }
        if let Ok(r) = c
            .get(format!("{base}/api/providers"))
            .bearer_auth("demo-admin")
            .send()
            .await
        {
            providers = r.json().await.unwrap_or(Value::Null);
            let by = |n: &str| {
                providers
                    .as_array()
                    .and_then(|a| a.iter().find(|p| p["name"] == n))
                    .cloned()
            };
            let all_up = expected
                .iter()
                .all(|n| by(n).is_some_and(|p| p["up"] == true));
            let flowing = ["omnipcx", "telenor", "tdc"]
                .iter()
                .all(|n| by(n).is_some_and(|p| p["events"].as_u64() > Some(0)));
            let webhooks =
                by("tdc").is_some_and(|p| p["details"]["webhook"]["accepted"].as_u64() > Some(0));
            if all_up && flowing && webhooks {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "not every demo source came up with events in 60 s: {providers:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let by = |n: &str| {
        providers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .cloned()
            .unwrap()
    };
    for n in ["omnipcx", "telenor", "tdc"] {
        let p = by(n);
        assert_eq!(
            (p["errors"].as_u64(), p["unresolved"].as_u64()),
            (Some(0), Some(0)),
            "{n}: {p:#}"
        );
    }
    assert_eq!(
        by("tdc")["details"]["webhook"]["rejected_auth"],
        0,
        "the simulator signs as the TDC example expects"
    );
    // Each desk phone has one PBX source: 260 in Stockholm (SIP), 60 in Oslo (O2G).
    assert_eq!(by("pbx")["details"]["people"], 260);
    assert_eq!(by("omnipcx")["details"]["people"], 60);
    assert_eq!(
        by("telenor")["details"]["people"],
        60,
        "the Norwegian mobiles"
    );

    // Oslo: desk phone from the OmniPCX, mobile from Telenor; never the SIP PBX.
    let kare = sources(&get(&c, format!("{base}/api/users/kare.larsen")).await);
    assert!(
        kare.iter().any(|s| s == "omnipcx") && kare.iter().any(|s| s == "telenor"),
        "{kare:?}"
    );
    assert!(!kare.iter().any(|s| s == "pbx"), "{kare:?}");
    // Stockholm: the SIP PBX, not the OmniPCX, not Telenor.
    let asa = sources(&get(&c, format!("{base}/api/users/asa.ostberg")).await);
    assert!(asa.iter().any(|s| s == "pbx"), "{asa:?}");
    assert!(
        !asa.iter().any(|s| s == "omnipcx" || s == "telenor"),
        "{asa:?}"
    );

    // The SIP server's TLS port answers OPTIONS, with the self-signed certificate the demo
    // made at start (trusted by its file, for the name 127.0.0.1).
    let tls: std::net::SocketAddr = by("sip")["details"]["tls_listen"]
        .as_str()
        .expect("the demo's SIP server has a TLS port")
        .parse()
        .unwrap();
    let cert = dir.join(presence_hub::cli::demo::TLS_CERT_FILE);
    let client = presence_sip::tls::client_config(&cert, None).unwrap();
    let (ep, _rx) = presence_sip::endpoint::Endpoint::bind(presence_sip::endpoint::EndpointConfig {
        udp: false,
        tls: presence_sip::endpoint::TlsSettings {
            listen: None,
            connect: Some((std::sync::Arc::new(client), presence_sip::tls::server_name("127.0.0.1").unwrap())),
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let transport = presence_sip::endpoint::Transport::Tls;
    let (via, branch) = ep.via(transport);
    let options = presence_sip::message::Builder::request("OPTIONS", &format!("sip:{tls};transport=tls"))
        .header("Via", &via)
        .header("From", &format!("<sip:demo-test@127.0.0.1>;tag={}", ep.token()))
        .header("To", &format!("<sip:{tls}>"))
        .header("Call-ID", &ep.token())
        .header("CSeq", "1 OPTIONS")
        .header("Max-Forwards", "70")
        .build();
    let r = ep
        .request_timeout(presence_sip::endpoint::Peer { transport, addr: tls }, &branch, options, Duration::from_secs(5))
        .await
        .expect("an answer over TLS");
    assert_eq!(r.code(), Some(200), "{r}");
    assert!(
        r.header(&ezk_sip_types::Name::ALLOW_EVENTS).unwrap_or("").contains("presence"),
        "{r}"
    );
}
