//! End-to-end tests of the hub as a SIP presence server, over real UDP and TCP sockets on
//! loopback: SUBSCRIBE to `presence` and `dialog` with digest authentication, NOTIFYs of the
//! merged state when it changes, PUBLISH (RFC 3903) as a source, and the refusals (401, 403,
//! 404, 412, 415, 423, 489, 400). sipp drives the same server in `tests/sipp.rs`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crate::common::*;
use presence_hub::sip_server::{SipAccount, SipSection};
use presence_sip::auth::answer_challenge;
use presence_sip::body::{dialog_info, pidf};
use presence_sip::endpoint::{Endpoint, EndpointConfig, Peer, Transport};
use presence_sip::message::{sip_etag, Builder, Message};
use presence_sip::subscription::{SubEvent, SubscribeSpec, Subscription};
use serde_json::{json, Value};
use tokio::sync::mpsc;

fn sip_config(tag: &str) -> presence_hub::config::Config {
    let mut cfg = test_config(temp_dir(tag));
    cfg.sip = SipSection {
        enabled: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        accounts: vec![
            SipAccount { user: "console".into(), password: Some("console-pw".into()), ha1_md5: None, ha1_sha256: None, publish: false, certificate_subject: None },
            SipAccount { user: "phone".into(), password: Some("phone-pw".into()), ha1_md5: None, ha1_sha256: None, publish: true, certificate_subject: None },
        ],
        ..SipSection::default()
    };
    cfg.validate().unwrap();
    cfg
}

async fn sip_addr(s: &Server) -> SocketAddr {
    let t0 = Instant::now();
    loop {
        let v: Value = client().get(s.url("/api/providers")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
        let listen = v.as_array().unwrap().iter().find(|p| p["name"] == "sip").and_then(|p| p["details"]["listen"].as_str().map(str::to_string));
        if let Some(l) = listen {
            return l.parse().unwrap();
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "the SIP server did not report its address");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn signal(s: &Server, who: &str, availability: &str, activity: Option<&str>) {
    let mut sig = json!({"who": who, "source": "pbx", "availability": availability});
    if let Some(a) = activity {
        sig["activity"] = json!(a);
    }
    let r = client().post(s.url("/api/signals")).bearer_auth(ADMIN).json(&json!({"signals": [sig]})).send().await.unwrap();
    assert_eq!(r.status(), 202);
}

async fn next_notify(rx: &mut mpsc::Receiver<((), SubEvent)>) -> (String, Bytes) {
    loop {
        let (_, ev) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a NOTIFY in time").unwrap();
        match ev {
            SubEvent::Notify { content_type, body, .. } => return (content_type.unwrap_or_default(), body),
            SubEvent::Down { reason, .. } => panic!("subscription down: {reason}"),
            SubEvent::Active { .. } => {}
        }
    }
}

fn spec(server: SocketAddr, transport: Transport, uri: &str, event: &str, accept: &str, user: &str, pw: &str) -> SubscribeSpec {
    SubscribeSpec {
        peer: Peer { transport, addr: server },
        uri: uri.into(),
        from: "sip:console@127.0.0.1".into(),
        contact_user: "console".into(),
        event: event.into(),
        accept: accept.into(),
        expires: 600,
        headers: vec![],
        body: None,
        credentials: Some((user.into(), pw.into())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_dialog_subscriptions_follow_the_merged_state() {
    let s = start(sip_config("sip-sub"));
    let server = sip_addr(&s).await;
    let mut keep = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        let (ep, _rx) = Endpoint::bind(EndpointConfig::default()).await.unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let _sub = Subscription::spawn(
            ep.clone(),
            spec(server, transport, "sip:asa.ostberg@nordvik.se", "presence", "application/pidf+xml", "console", "console-pw"),
            (),
            tx,
        );
        // First NOTIFY: the current state, right after the 200.
        let (ct, body) = next_notify(&mut rx).await;
        assert_eq!(ct, "application/pidf+xml");
        let doc = pidf::parse_pidf(&body).unwrap();
        assert_eq!(doc.entity, "sip:asa.ostberg@nordvik.se");

        // A call on her desk phone reaches the watcher as on-the-phone.
        let t0 = Instant::now();
        signal(&s, "asa.ostberg", "Busy", Some("InACall")).await;
        let (_, body) = next_notify(&mut rx).await;
        let took = t0.elapsed();
        let doc = pidf::parse_pidf(&body).unwrap();
        assert_eq!(doc.open(), Some(true));
        assert!(doc.all_activities().any(|a| *a == pidf::Activity::OnThePhone), "{}", String::from_utf8_lossy(&body));
        println!("{transport}: signal → NOTIFY in {took:?}");
        signal(&s, "asa.ostberg", "Available", None).await;
        let (_, body) = next_notify(&mut rx).await;
        assert_eq!(pidf::parse_pidf(&body).unwrap().all_activities().count(), 0);
        keep.push(_sub);
    }

    // BLF: the dialog package for extension 2624 (Åsa).
    let (ep, _rx) = Endpoint::bind(EndpointConfig::default()).await.unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let _sub = Subscription::spawn(
        ep.clone(),
        spec(server, Transport::Udp, "sip:2624@127.0.0.1", "dialog", "application/dialog-info+xml", "console", "console-pw"),
        (),
        tx,
    );
    let (ct, body) = next_notify(&mut rx).await;
    assert_eq!(ct, "application/dialog-info+xml");
    let first = dialog_info::parse_dialog_info(&body).unwrap();
    assert!(first.dialogs.is_empty(), "lamp off while available");
    signal(&s, "2624", "Busy", Some("Ringing")).await;
    let ringing = dialog_info::parse_dialog_info(&next_notify(&mut rx).await.1).unwrap();
    assert_eq!(ringing.dialogs[0].state, dialog_info::DialogState::Early);
    assert!(ringing.version > first.version);
    signal(&s, "2624", "Busy", Some("InACall")).await;
    let up = dialog_info::parse_dialog_info(&next_notify(&mut rx).await.1).unwrap();
    assert_eq!(up.dialogs[0].state, dialog_info::DialogState::Confirmed);
    assert!(up.version > ringing.version);
    signal(&s, "2624", "Available", None).await;
    let idle = dialog_info::parse_dialog_info(&next_notify(&mut rx).await.1).unwrap();
    assert!(idle.dialogs.is_empty());

    // Health (refreshed four times a second).
    let t0 = Instant::now();
    loop {
        let v: Value = client().get(s.url("/api/providers")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
        let sip = v.as_array().unwrap().iter().find(|p| p["name"] == "sip").unwrap().clone();
        if sip["details"]["subscriptions"] == 3 && sip["details"]["notifies_sent"].as_u64().unwrap() >= 10 {
            assert_eq!(sip["up"], true);
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "{sip}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A raw request to the hub's SIP server, answered through digest authentication when
/// `credentials` are given.
struct Client {
    ep: Endpoint,
    server: Peer,
    call_id: String,
    cseq: u32,
    /// Requests the hub sends this client (NOTIFYs).
    incoming: mpsc::Receiver<presence_sip::endpoint::Incoming>,
}

impl Client {
    async fn new(server: SocketAddr) -> Client {
        let (ep, rx) = Endpoint::bind(EndpointConfig::default()).await.unwrap();
        Client::on(ep, rx, Peer { transport: Transport::Udp, addr: server })
    }

    fn on(ep: Endpoint, incoming: mpsc::Receiver<presence_sip::endpoint::Incoming>, server: Peer) -> Client {
        let call_id = format!("{}@test", ep.token());
        Client { ep, server, call_id, cseq: 0, incoming }
    }

    async fn send(&mut self, method: &str, uri: &str, headers: &[(&str, &str)], body: Option<(&str, &str)>, credentials: Option<(&str, &str)>) -> Message {
        let mut auth: Option<(String, String)> = None;
        loop {
            self.cseq += 1;
            let transport = self.server.transport;
            let (via, branch) = self.ep.via(transport);
            let mut b = Builder::request(method, uri)
                .header("Via", &via)
                .header("Max-Forwards", "70")
                .header("From", "<sip:phone@127.0.0.1>;tag=t1")
                .header("To", &format!("<{uri}>"))
                .header("Call-ID", &self.call_id)
                .header("CSeq", &format!("{} {method}", self.cseq))
                .header("Contact", &self.ep.contact("phone", transport));
            for (n, v) in headers {
                b = b.header(n, v);
            }
            if let Some((n, v)) = &auth {
                b = b.header(n, v);
            }
            if let Some((ct, body)) = body {
                b = b.body(ct, body.to_string());
            }
            let r = self.ep.request(self.server, &branch, b.build()).await.unwrap();
            match (r.code(), credentials, &auth) {
                (Some(401), Some((u, p)), None) => {
                    let (n, v) = answer_challenge(&r, method, uri, u, p, 1).unwrap();
                    auth = Some((n.as_print_str().to_string(), v));
                }
                _ => return r,
            }
        }
    }
}

const PIDF_PHONE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:marta.lind@nordvik.se">
<tuple id="p1"><status><basic>open</basic></status></tuple>
<dm:person id="x"><rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person></presence>"#;

const PIDF_AWAY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:marta.lind@nordvik.se">
<tuple id="p1"><status><basic>open</basic></status></tuple>
<dm:person id="x"><rpid:activities><rpid:away/></rpid:activities><dm:note>Walking the dog</dm:note></dm:person></presence>"#;

async fn sip_source(s: &Server, id: &str) -> Option<Value> {
    let v: Value = client().get(s.url(&format!("/api/users/{id}"))).bearer_auth(VIEWER).send().await.unwrap().json().await.unwrap();
    v["sources"].as_array().unwrap().iter().find(|x| x["source"] == "sip").cloned()
}

async fn wait_sip_source(s: &Server, id: &str, want: impl Fn(&Option<Value>) -> bool) -> Option<Value> {
    let t0 = Instant::now();
    loop {
        let v = sip_source(s, id).await;
        if want(&v) {
            return v;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "sip source of {id} never matched: {v:?}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_is_an_event_state_compositor() {
    let s = start(sip_config("sip-pub"));
    let server = sip_addr(&s).await;
    let mut c = Client::new(server).await;
    let aor = "sip:marta.lind@nordvik.se";
    let pidf_ct = "application/pidf+xml";
    let ev = [("Event", "presence"), ("Expires", "120")];

    // Refusals first.
    let r = c.send("PUBLISH", aor, &ev, Some((pidf_ct, PIDF_PHONE)), None).await;
    assert_eq!(r.code(), Some(401), "no credentials");
    assert!(r.header(&ezk_sip_types::Name::WWW_AUTHENTICATE).unwrap().contains("Digest"));
    let r = c.send("PUBLISH", aor, &ev, Some((pidf_ct, PIDF_PHONE)), Some(("console", "console-pw"))).await;
    assert_eq!(r.code(), Some(403), "an account without publish");
    let r = c.send("PUBLISH", aor, &ev, Some((pidf_ct, PIDF_PHONE)), Some(("phone", "wrong"))).await;
    assert_eq!(r.code(), Some(401), "a wrong password");
    let r = c.send("PUBLISH", aor, &[("Event", "dialog")], Some((pidf_ct, PIDF_PHONE)), Some(("phone", "phone-pw"))).await;
    assert_eq!(r.code(), Some(489));
    let r = c.send("PUBLISH", aor, &ev, Some(("text/plain", "busy")), Some(("phone", "phone-pw"))).await;
    assert_eq!(r.code(), Some(415));
    let r = c.send("PUBLISH", aor, &[("Event", "presence"), ("Expires", "5")], Some((pidf_ct, PIDF_PHONE)), Some(("phone", "phone-pw"))).await;
    assert_eq!(r.code(), Some(423));
    assert_eq!(r.header(&ezk_sip_types::Name::MIN_EXPIRES), Some("60"));
    let r = c.send("PUBLISH", "sip:nobody@nordvik.se", &ev, Some((pidf_ct, PIDF_PHONE)), Some(("phone", "phone-pw"))).await;
    assert_eq!(r.code(), Some(404));
    let r = c.send("PUBLISH", aor, &ev, Some((pidf_ct, "<presence")), Some(("phone", "phone-pw"))).await;
    assert_eq!(r.code(), Some(400));
    let r = c.send("PUBLISH", aor, &[("Event", "presence"), ("SIP-If-Match", "no-such-tag")], None, Some(("phone", "phone-pw"))).await;
    assert_eq!(r.code(), Some(412));

    // Initial: 200 with an entity-tag and the granted expiry; the source shows up.
    let r = c.send("PUBLISH", aor, &ev, Some((pidf_ct, PIDF_PHONE)), Some(("phone", "phone-pw"))).await;
    assert_eq!(r.code(), Some(200));
    assert_eq!(r.expires().unwrap(), Some(120));
    let etag1 = r.header(&sip_etag()).unwrap().to_string();
    let src = wait_sip_source(&s, "marta.lind", |v| v.is_some()).await.unwrap();
    assert_eq!(src["availability"], "Busy", "{src}");
    assert_eq!(src["activity"], "InACall", "{src}");

    // Refresh: no body, a new tag; the old tag is spent.
    let r = c.send("PUBLISH", aor, &[("Event", "presence"), ("Expires", "300"), ("SIP-If-Match", &etag1)], None, Some(("phone", "phone-pw"))).await;
    assert_eq!(r.code(), Some(200));
    let etag2 = r.header(&sip_etag()).unwrap().to_string();
    assert_ne!(etag1, etag2);
    let r = c.send("PUBLISH", aor, &[("Event", "presence"), ("SIP-If-Match", &etag1)], None, Some(("phone", "phone-pw"))).await;
    assert_eq!(r.code(), Some(412), "a spent entity-tag");

    // Modify.
    let r = c.send("PUBLISH", aor, &[("Event", "presence"), ("SIP-If-Match", &etag2)], Some((pidf_ct, PIDF_AWAY)), Some(("phone", "phone-pw"))).await;
    assert_eq!(r.code(), Some(200));
    let etag3 = r.header(&sip_etag()).unwrap().to_string();
    let src = wait_sip_source(&s, "marta.lind", |v| v.as_ref().is_some_and(|v| v["availability"] == "Away")).await.unwrap();
    assert_eq!(src["note"], "Walking the dog", "{src}");

    // Remove: the source has nothing more to say.
    let r = c.send("PUBLISH", aor, &[("Event", "presence"), ("Expires", "0"), ("SIP-If-Match", &etag3)], None, Some(("phone", "phone-pw"))).await;
    assert_eq!(r.code(), Some(200));
    wait_sip_source(&s, "marta.lind", |v| v.as_ref().is_none_or(|v| v["availability"].is_null() || v["availability"] == "Unknown")).await;
}

/// A PIDF with `basic` open and a meal whose RPID `until` is `until`.
fn pidf_lunch_until(until: jiff::Timestamp) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:marta.lind@nordvik.se">
<tuple id="p1"><status><basic>open</basic></status></tuple>
<dm:person id="x"><rpid:activities until="{until}"><rpid:meal/></rpid:activities></dm:person></presence>"#
    )
}

/// Issue 12: an RPID element does not hold after its `until` (RFC 4480 §3.2). Publishers send
/// their document as it is, so "lunch until 13:00" arrives again after 13:00: the person is
/// Available (`basic` open), not at Lunch, and the check is made again at every refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_ignores_an_rpid_element_whose_until_has_passed() {
    let s = start(sip_config("sip-until"));
    let server = sip_addr(&s).await;
    let mut c = Client::new(server).await;
    let aor = "sip:marta.lind@nordvik.se";
    let pidf_ct = "application/pidf+xml";
    let cred = Some(("phone", "phone-pw"));
    let ev = [("Event", "presence"), ("Expires", "120")];
    let available = |v: &Option<Value>| v.as_ref().is_some_and(|v| v["availability"] == "Available" && v["activity"].is_null());

    // Lunch that ended an hour ago.
    let past = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let r = c.send("PUBLISH", aor, &ev, Some((pidf_ct, &pidf_lunch_until(past))), cred).await;
    assert_eq!(r.code(), Some(200));
    let etag = r.header(&sip_etag()).unwrap().to_string();
    let src = wait_sip_source(&s, "marta.lind", |v| v.is_some()).await.unwrap();
    assert_eq!(src["availability"], "Available", "the past lunch still counts: {src}");
    assert!(src["activity"].is_null(), "{src}");
    let v: Value = client().get(s.url("/api/users/marta.lind")).bearer_auth(VIEWER).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["presence"]["availability"], "Available", "{v}");
    assert_ne!(v["presence"]["activity"], "Lunch", "{v}");

    // A lunch that is on now shows, and ends when its `until` passes.
    let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(1500);
    let r = c.send("PUBLISH", aor, &[("Event", "presence"), ("SIP-If-Match", &etag)], Some((pidf_ct, &pidf_lunch_until(soon))), cred).await;
    assert_eq!(r.code(), Some(200));
    let etag = r.header(&sip_etag()).unwrap().to_string();
    let src = wait_sip_source(&s, "marta.lind", |v| v.as_ref().is_some_and(|v| v["activity"] == "Lunch")).await.unwrap();
    assert_eq!(src["availability"], "BeRightBack", "{src}");
    let wait = soon.duration_since(jiff::Timestamp::now()).unsigned_abs() + Duration::from_millis(300);
    tokio::time::sleep(wait).await;
    // A refresh (no body) after the lunch: the document is judged at the refresh's time.
    let r = c.send("PUBLISH", aor, &[("Event", "presence"), ("SIP-If-Match", &etag)], None, cred).await;
    assert_eq!(r.code(), Some(200));
    wait_sip_source(&s, "marta.lind", available).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_refusals() {
    let s = start(sip_config("sip-refuse"));
    let server = sip_addr(&s).await;
    let mut c = Client::new(server).await;
    let cred = Some(("console", "console-pw"));
    let r = c.send("SUBSCRIBE", "sip:asa.ostberg@nordvik.se", &[("Event", "presence")], None, None).await;
    assert_eq!(r.code(), Some(401));
    let r = c.send("SUBSCRIBE", "sip:asa.ostberg@nordvik.se", &[("Event", "message-summary")], None, cred).await;
    assert_eq!(r.code(), Some(489));
    assert!(r.header(&ezk_sip_types::Name::ALLOW_EVENTS).unwrap().contains("dialog"));
    let r = c.send("SUBSCRIBE", "sip:asa.ostberg@nordvik.se", &[("Event", "presence"), ("Accept", "text/plain")], None, cred).await;
    assert_eq!(r.code(), Some(406));
    let r = c.send("SUBSCRIBE", "sip:asa.ostberg@nordvik.se", &[("Event", "presence"), ("Expires", "10")], None, cred).await;
    assert_eq!(r.code(), Some(423));
    let r = c.send("SUBSCRIBE", "sip:nobody.at.all@nordvik.se", &[("Event", "presence")], None, cred).await;
    assert_eq!(r.code(), Some(404));
    // A refresh of a subscription the server does not know.
    let mut b = Client::new(server).await;
    b.call_id = "unknown-dialog@test".into();
    let r = b.send("SUBSCRIBE", "sip:asa.ostberg@nordvik.se", &[("Event", "presence")], None, cred).await;
    assert_ne!(r.code(), Some(481), "a new dialog is fine");
    // A malformed request gets a 400 with the reason.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let bad = "SUBSCRIBE sip:asa.ostberg@nordvik.se SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbad\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: bad1\r\nCSeq: 1 PUBLISH\r\nContent-Length: 0\r\n\r\n";
    sock.send_to(bad.as_bytes(), server).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await.unwrap().unwrap();
    assert!(std::str::from_utf8(&buf[..n]).unwrap().starts_with("SIP/2.0 400 Bad Request (CSeq method"));
}

// ---- SIP over TLS ----------------------------------------------------------------------------

fn tls_fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls/sip").join(name)
}

/// The hub's SIP server with a TLS port (the pool's test certificate: 127.0.0.1); with
/// `client_ca`, client certificates are required and `CN=hub.example.test` is the account `app`.
fn tls_config(tag: &str, client_ca: bool) -> presence_hub::config::Config {
    let mut cfg = sip_config(tag);
    cfg.sip.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.sip.tls_cert_file = Some(tls_fixture("pool-cert.pem"));
    cfg.sip.tls_key_file = Some(tls_fixture("pool-key.pem"));
    if client_ca {
        cfg.sip.tls_client_ca_file = Some(tls_fixture("ca-cert.pem"));
        cfg.sip.accounts.push(SipAccount {
            user: "app".into(),
            password: None,
            ha1_md5: None,
            ha1_sha256: None,
            publish: true,
            certificate_subject: Some("CN=hub.example.test".into()),
        });
    }
    cfg.validate().unwrap();
    cfg
}

async fn sip_tls_addr(s: &Server) -> SocketAddr {
    let _ = sip_addr(s).await;
    let v: Value = client().get(s.url("/api/providers")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    let sip = v.as_array().unwrap().iter().find(|p| p["name"] == "sip").unwrap();
    sip["details"]["tls_listen"].as_str().expect("the SIP server reports its TLS port").parse().unwrap()
}

/// An endpoint of the project's SIP stack that opens TLS connections checked against the test
/// CA for the name 127.0.0.1, presenting `identity` (`app`, `pool`) when given.
async fn tls_endpoint(identity: Option<&str>) -> (Endpoint, mpsc::Receiver<presence_sip::endpoint::Incoming>) {
    let id = identity.map(|i| (tls_fixture(&format!("{i}-cert.pem")), tls_fixture(&format!("{i}-key.pem"))));
    let cfg = presence_sip::tls::client_config(&tls_fixture("ca-cert.pem"), id.as_ref().map(|(c, k)| (c.as_path(), k.as_path()))).unwrap();
    Endpoint::bind(EndpointConfig {
        udp: false,
        tls: presence_sip::endpoint::TlsSettings { listen: None, connect: Some((std::sync::Arc::new(cfg), presence_sip::tls::server_name("127.0.0.1").unwrap())) },
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The next request the hub sends a raw client, answered 200.
async fn next_request(c: &mut Client) -> presence_sip::endpoint::Incoming {
    let req = tokio::time::timeout(Duration::from_secs(5), c.incoming.recv()).await.expect("a request from the hub in time").unwrap();
    c.ep.respond(&req, Builder::response_to(&req.msg, 200, "OK", None)).await;
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_notify_and_publish_over_tls() {
    let s = start(tls_config("sip-tls", false));
    let tls = sip_tls_addr(&s).await;
    assert_ne!(tls, sip_addr(&s).await, "TLS has a port of its own");

    // The project's subscription client over TLS, with digest.
    let (ep, _rx) = tls_endpoint(None).await;
    let (tx, mut rx) = mpsc::channel(64);
    let _sub = Subscription::spawn(ep.clone(), spec(tls, Transport::Tls, "sip:asa.ostberg@nordvik.se", "presence", "application/pidf+xml", "console", "console-pw"), (), tx);
    let (ct, body) = next_notify(&mut rx).await;
    assert_eq!(ct, "application/pidf+xml");
    assert_eq!(pidf::parse_pidf(&body).unwrap().entity, "sip:asa.ostberg@nordvik.se");
    signal(&s, "asa.ostberg", "Busy", Some("InACall")).await;
    let (_, body) = next_notify(&mut rx).await;
    assert!(pidf::parse_pidf(&body).unwrap().all_activities().any(|a| *a == pidf::Activity::OnThePhone), "{}", String::from_utf8_lossy(&body));

    // A raw SUBSCRIBE: the 200's Contact and the NOTIFY's Via and Contact name the TLS port
    // with transport=tls, and the NOTIFY comes back on the TLS connection.
    let (ep, incoming) = tls_endpoint(None).await;
    let mut c = Client::on(ep, incoming, Peer { transport: Transport::Tls, addr: tls });
    let r = c.send("SUBSCRIBE", "sip:2624@127.0.0.1", &[("Event", "dialog"), ("Expires", "600")], None, Some(("console", "console-pw"))).await;
    assert_eq!(r.code(), Some(200), "{r}");
    let contact = r.header(&ezk_sip_types::Name::CONTACT).unwrap();
    assert!(contact.contains(&format!("@{tls};transport=tls")), "{contact}");
    let notify = next_request(&mut c).await;
    assert_eq!(notify.peer.transport, Transport::Tls);
    assert_eq!(notify.peer.addr, tls, "on the connection of the SUBSCRIBE");
    let via = notify.msg.header(&ezk_sip_types::Name::VIA).unwrap();
    assert!(via.starts_with(&format!("SIP/2.0/TLS {tls};")), "{via}");
    assert!(notify.msg.header(&ezk_sip_types::Name::CONTACT).unwrap().contains(";transport=tls"));
    assert_eq!(notify.msg.content_type().as_deref(), Some("application/dialog-info+xml"));

    // PUBLISH over TLS, with digest.
    let (ep, incoming) = tls_endpoint(None).await;
    let mut p = Client::on(ep, incoming, Peer { transport: Transport::Tls, addr: tls });
    let r = p.send("PUBLISH", "sip:marta.lind@nordvik.se", &[("Event", "presence"), ("Expires", "120")], Some(("application/pidf+xml", PIDF_PHONE)), Some(("phone", "phone-pw"))).await;
    assert_eq!(r.code(), Some(200), "{r}");
    let src = wait_sip_source(&s, "marta.lind", |v| v.is_some()).await.unwrap();
    assert_eq!(src["activity"], "InACall", "{src}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_stands_in_for_digest() {
    let s = start(tls_config("sip-tls-cert", true));
    let tls = sip_tls_addr(&s).await;
    let server = Peer { transport: Transport::Tls, addr: tls };

    // The certificate of the account `app` (CN=hub.example.test): no challenge at all.
    let (ep, incoming) = tls_endpoint(Some("app")).await;
    let mut app = Client::on(ep, incoming, server);
    let r = app.send("SUBSCRIBE", "sip:asa.ostberg@nordvik.se", &[("Event", "presence"), ("Expires", "600")], None, None).await;
    assert_eq!(r.code(), Some(200), "{r}");
    let notify = next_request(&mut app).await;
    assert_eq!(notify.msg.content_type().as_deref(), Some("application/pidf+xml"));
    assert_eq!(notify.peer.transport, Transport::Tls);
    let r = app.send("PUBLISH", "sip:marta.lind@nordvik.se", &[("Event", "presence"), ("Expires", "120")], Some(("application/pidf+xml", PIDF_AWAY)), None).await;
    assert_eq!(r.code(), Some(200), "the account may publish: {r}");
    let src = wait_sip_source(&s, "marta.lind", |v| v.is_some()).await.unwrap();
    assert_eq!(src["availability"], "Away", "{src}");

    // A certificate the CA signed, of a subject no account names: digest as usual.
    let (ep, incoming) = tls_endpoint(Some("pool")).await;
    let mut other = Client::on(ep, incoming, server);
    let r = other.send("SUBSCRIBE", "sip:asa.ostberg@nordvik.se", &[("Event", "presence"), ("Expires", "600")], None, None).await;
    assert_eq!(r.code(), Some(401), "{r}");
    assert!(r.header(&ezk_sip_types::Name::WWW_AUTHENTICATE).unwrap().contains("Digest"));
    let r = other.send("SUBSCRIBE", "sip:asa.ostberg@nordvik.se", &[("Event", "presence"), ("Expires", "600")], None, Some(("console", "console-pw"))).await;
    assert_eq!(r.code(), Some(200), "{r}");

    // No certificate: the handshake is refused, and the client is told why.
    let refused = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let cfg = presence_sip::tls::client_config(&tls_fixture("ca-cert.pem"), None).unwrap();
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), presence_sip::tls::server_name("127.0.0.1").unwrap()).unwrap();
        let sock = std::net::TcpStream::connect(tls).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, sock);
        // TLS 1.3: the client's side of the handshake ends before the server checks it.
        let _ = stream.write_all(b"\r\n\r\n");
        let mut buf = [0u8; 256];
        stream.read(&mut buf).map(|n| n.to_string()).unwrap_err().to_string()
    })
    .await
    .unwrap();
    assert!(refused.contains("CertificateRequired"), "{refused}");
    let (ep, _rx) = tls_endpoint(None).await;
    let (options, branch) = {
        let (via, branch) = ep.via(Transport::Tls);
        let b = Builder::request("OPTIONS", "sip:hub@127.0.0.1")
            .header("Via", &via)
            .header("From", "<sip:anon@127.0.0.1>;tag=1")
            .header("To", "<sip:hub@127.0.0.1>")
            .header("Call-ID", "no-cert@test")
            .header("CSeq", "1 OPTIONS")
            .header("Max-Forwards", "70");
        (b.build(), branch)
    };
    assert!(ep.request_timeout(server, &branch, options, Duration::from_secs(3)).await.is_err(), "a client without a certificate got an answer");
}

#[test]
fn tls_settings_are_checked_at_start() {
    let mut cfg = sip_config("sip-tls-bad");
    cfg.sip.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("tls_listen") && e.contains("needs tls_cert_file and tls_key_file"), "{e}");
    cfg.sip.tls_cert_file = Some(tls_fixture("pool-cert.pem"));
    cfg.sip.tls_key_file = Some(tls_fixture("app-key.pem"));
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("TLS settings"), "a key that is not the certificate's: {e}");
    cfg.sip.tls_key_file = Some(tls_fixture("missing-key.pem"));
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("missing-key.pem"), "{e}");
    cfg.sip.tls_key_file = Some(tls_fixture("pool-key.pem"));
    cfg.validate().unwrap();
    cfg.sip.accounts.push(SipAccount { user: "app".into(), password: None, ha1_md5: None, ha1_sha256: None, publish: false, certificate_subject: Some("CN=hub.example.test".into()) });
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("certificate_subject needs") && e.contains("tls_client_ca_file"), "{e}");
    cfg.sip.tls_client_ca_file = Some(tls_fixture("ca-cert.pem"));
    cfg.validate().unwrap();
    cfg.sip.accounts.last_mut().unwrap().certificate_subject = Some("CN=x,FOO=y".into());
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("unknown attribute type \"FOO\""), "{e}");
    let mut cfg = sip_config("sip-tls-bad2");
    cfg.sip.tls_cert_file = Some(tls_fixture("pool-cert.pem"));
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("need tls_listen"), "{e}");
}
