//! The SIP test peers on their own, before any hub code uses them: a real Kamailio presence
//! server (`tests/common/kamailio.rs`, `fixtures/sip/kamailio/presence.cfg.in`) and the sipp
//! scenarios in `fixtures/sip/sipp/`. A sipp watcher SUBSCRIBEs, another sipp PUBLISHes, and the
//! watcher must get a NOTIFY carrying what was published - for PIDF/RPID (Event: presence) and
//! for dialog-info (Event: dialog, a busy lamp), over UDP and over TCP.
//!
//! Needs `apt-get install kamailio kamailio-presence-modules kamailio-sqlite-modules sip-tester
//! sqlite3` (`./test.sh` installs them); without them these tests fail and say what to install.

use std::time::{Duration, Instant};

use crate::common::kamailio::{Kamailio, SipMessage, Sipp, SippRun};

/// The scenario's log line once the subscription is up and its first NOTIFY (no body: nothing
/// published yet) has been answered.
const SUBSCRIBED: &str = "notify cl=0";
const WAIT: Duration = Duration::from_secs(5);

/// The NOTIFYs with a body the watcher received (panics if there is none).
fn notifies_with_body(run: &SippRun) -> Vec<SipMessage> {
    let n: Vec<SipMessage> =
        run.received_requests("NOTIFY").into_iter().filter(|m| !m.body().is_empty()).collect();
    assert!(!n.is_empty(), "no NOTIFY with a body:\n{}", run.report());
    n
}

/// Every NOTIFY but the last is `active`; the last (after the un-SUBSCRIBE) is `terminated`.
fn assert_subscription_states(run: &SippRun) {
    let all = run.received_requests("NOTIFY");
    let states: Vec<&str> = all.iter().map(|m| m.header("Subscription-State").unwrap_or("")).collect();
    let (last, rest) = states.split_last().expect("no NOTIFY at all");
    assert!(last.starts_with("terminated"), "last NOTIFY not terminated: {states:?}");
    assert!(rest.iter().all(|s| s.starts_with("active")), "{states:?}");
}

#[test]
fn pidf_publish_is_notified_to_watcher() {
    let t0 = Instant::now();
    let k = Kamailio::start();
    let dom = k.domain();

    let mut watcher = Sipp::subscribe_presence("alice", &dom, 300, "watcher").spawn(k.addr());
    watcher.wait_for_log(SUBSCRIBED, WAIT);

    let publ = Sipp::publish_pidf("alice", &dom, "open", "on-the-phone", "On the phone", None).run(k.addr());
    publ.assert_success();
    assert!(publ.etag().is_some(), "no SIP-ETag in the 200:\n{}", publ.report());

    let run = watcher.wait();
    run.assert_success();
    let n = &notifies_with_body(&run)[0];
    assert_eq!(n.header("Event"), Some("presence"));
    assert_eq!(n.header("Content-Type"), Some("application/pidf+xml"));
    // Kamailio NOTIFYs the Contact of the SUBSCRIBE.
    let contact = format!("sip:watcher@{}", watcher_contact_host(&run));
    assert!(n.start_line().starts_with(&format!("NOTIFY {contact}")), "{}", n.start_line());
    let body = n.body();
    for want in
        [r#"entity="sip:alice@127.0.0.1""#, "<basic>open</basic>", "<rpid:on-the-phone/>", "On the phone"]
    {
        assert!(body.contains(want), "NOTIFY body lacks {want}:\n{body}");
    }
    assert_subscription_states(&run);
    eprintln!("pidf_publish_is_notified_to_watcher: {:?}", t0.elapsed());
}

/// host:port of the watcher's Contact, from the SUBSCRIBE it sent.
fn watcher_contact_host(run: &SippRun) -> String {
    let sub = run
        .sip_messages()
        .into_iter()
        .find(|m| !m.received && m.is_request("SUBSCRIBE"))
        .expect("no SUBSCRIBE sent");
    let c = sub.header("Contact").unwrap();
    let at = c.find('@').unwrap() + 1;
    c[at..].split([';', '>']).next().unwrap().to_string()
}

#[test]
fn pidf_modify_by_etag_replaces_the_publication() {
    let t0 = Instant::now();
    let k = Kamailio::start();
    let dom = k.domain();

    let first = Sipp::publish_pidf("bob", &dom, "open", "on-the-phone", "On the phone", None).run(k.addr());
    first.assert_success();
    let etag = first.etag().expect("SIP-ETag");
    let second = Sipp::publish_pidf("bob", &dom, "open", "away", "Back soon", Some(&etag)).run(k.addr());
    second.assert_success();
    assert_ne!(second.etag().as_deref(), Some(etag.as_str()), "a modified publication gets a new entity tag");
    // The old entity tag is gone now: 412.
    let stale = Sipp::publish_pidf("bob", &dom, "closed", "away", "x", Some(&etag)).run(k.addr());
    assert!(!stale.success() && stale.messages.contains("SIP/2.0 412"), "{}", stale.report());

    // A new watcher's first NOTIFY has the current state: only the modified tuple.
    let run = Sipp::subscribe_presence("bob", &dom, 60, "w2").run(k.addr());
    run.assert_success();
    let body = notifies_with_body(&run)[0].body().to_string();
    assert!(body.contains("<rpid:away/>") && body.contains("Back soon"), "{body}");
    assert!(!body.contains("on-the-phone"), "old publication still aggregated:\n{body}");
    assert_eq!(body.matches("<tuple").count(), 1, "{body}");
    eprintln!("pidf_modify_by_etag_replaces_the_publication: {:?}", t0.elapsed());
}

#[test]
fn pidf_over_tcp_is_notified_on_tcp() {
    let t0 = Instant::now();
    let k = Kamailio::start();
    let dom = k.domain();

    let mut watcher = Sipp::subscribe_presence("carol", &dom, 300, "watcher").tcp().spawn(k.addr());
    watcher.wait_for_log(SUBSCRIBED, WAIT);
    Sipp::publish_pidf("carol", &dom, "open", "busy", "Busy", None).tcp().run(k.addr()).assert_success();

    let run = watcher.wait();
    run.assert_success();
    let n = &notifies_with_body(&run)[0];
    assert_eq!(n.transport, "TCP");
    assert!(n.start_line().ends_with(";transport=TCP SIP/2.0"), "{}", n.start_line());
    // Kamailio's Contact says TCP too, so in-dialog requests (the un-SUBSCRIBE) stay on TCP.
    assert!(n.header("Contact").unwrap().contains(";transport=tcp"), "{:?}", n.header("Contact"));
    assert!(n.body().contains("<rpid:busy/>"), "{}", n.body());
    assert!(run.sip_messages().iter().all(|m| m.transport == "TCP"));
    assert_subscription_states(&run);
    eprintln!("pidf_over_tcp_is_notified_on_tcp: {:?}", t0.elapsed());
}

#[test]
fn dialog_publish_is_notified_to_busy_lamp_watcher() {
    let t0 = Instant::now();
    let k = Kamailio::start();
    let dom = k.domain();
    let caller = format!("sip:100@{dom}");

    let mut blf = Sipp::subscribe_dialog("201", &dom, 300, "blf").spawn(k.addr());
    blf.wait_for_log(SUBSCRIBED, WAIT);

    let early = Sipp::publish_dialog("201", &dom, "early", 1, "call-1", &caller, None).run(k.addr());
    early.assert_success();
    let run = blf.wait();
    run.assert_success();
    let n = &notifies_with_body(&run)[0];
    assert_eq!(n.header("Event"), Some("dialog"));
    assert_eq!(n.header("Content-Type"), Some("application/dialog-info+xml"));
    let body = n.body();
    for want in [
        r#"entity="sip:201@127.0.0.1""#,
        r#"<dialog id="call-1""#,
        "<state>early</state>",
        "sip:100@127.0.0.1",
    ] {
        assert!(body.contains(want), "NOTIFY body lacks {want}:\n{body}");
    }
    assert_subscription_states(&run);

    // The call is answered: the PBX modifies its publication (SIP-If-Match), and a new watcher
    // sees one dialog, confirmed (not an early and a confirmed one side by side).
    let etag = early.etag().expect("SIP-ETag");
    Sipp::publish_dialog("201", &dom, "confirmed", 2, "call-1", &caller, Some(&etag))
        .run(k.addr())
        .assert_success();
    let run = Sipp::subscribe_dialog("201", &dom, 60, "blf2").run(k.addr());
    run.assert_success();
    let body = notifies_with_body(&run)[0].body().to_string();
    assert!(body.contains("<state>confirmed</state>"), "{body}");
    assert_eq!(body.matches("<dialog ").count(), 1, "{body}");
    eprintln!("dialog_publish_is_notified_to_busy_lamp_watcher: {:?}", t0.elapsed());
}

#[test]
fn kamailio_answers_options_and_stops_on_drop() {
    let k = Kamailio::start();
    assert!(k.ping(Duration::from_secs(1)));
    let addr = k.addr();
    drop(k);
    // Gone with all its children: nothing answers, and the UDP and TCP port are free again.
    assert!(!crate::common::kamailio::options_ok(addr, Duration::from_millis(300)));
    std::net::UdpSocket::bind(addr).expect("UDP port still taken");
    std::net::TcpListener::bind(addr).expect("TCP port still taken");
}

/// What the hub's SIP sources must know about Kamailio over TCP: a NOTIFY goes to the Contact
/// of the SUBSCRIBE with the Contact's transport - without `;transport=tcp` that is UDP, even
/// for a subscription made over TCP (RFC 3263 default), and not over the SUBSCRIBE's connection.
#[test]
fn tcp_subscription_without_transport_param_is_notified_over_udp() {
    use std::io::{Read, Write};
    let k = Kamailio::start();
    let mut tcp = std::net::TcpStream::connect(k.addr()).unwrap();
    let local = tcp.local_addr().unwrap();
    // A UDP socket on the same port as the TCP connection's source port, named in the Contact.
    let udp = std::net::UdpSocket::bind(local).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let sub = format!(
        "SUBSCRIBE sip:dave@{dom} SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bK-raw-1\r\n\
         From: <sip:w@{ip}>;tag=raw1\r\n\
         To: <sip:dave@{dom}>\r\n\
         Call-ID: raw-tcp-1\r\n\
         CSeq: 1 SUBSCRIBE\r\n\
         Max-Forwards: 70\r\n\
         Contact: <sip:w@{local}>\r\n\
         Event: presence\r\n\
         Accept: application/pidf+xml\r\n\
         Expires: 60\r\n\
         Content-Length: 0\r\n\r\n",
        dom = k.domain(),
        ip = local.ip(),
    );
    tcp.write_all(sub.as_bytes()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 4096];
    let n = tcp.read(&mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(reply.starts_with("SIP/2.0 200") || reply.starts_with("SIP/2.0 202"), "{reply}");
    let (n, from) = udp.recv_from(&mut buf).expect("no NOTIFY over UDP");
    let notify = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(notify.starts_with(&format!("NOTIFY sip:w@{local} SIP/2.0")), "{notify}");
    assert_eq!(from, k.addr());
    // Answer it, so Kamailio does not retransmit while the test ends.
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for l in notify.lines().take_while(|l| !l.is_empty()) {
        let name = l.split(':').next().unwrap_or("").to_ascii_lowercase();
        if ["via", "from", "to", "call-id", "cseq"].contains(&name.as_str()) {
            ok.push_str(l);
            ok.push_str("\r\n");
        }
    }
    ok.push_str("Content-Length: 0\r\n\r\n");
    udp.send_to(ok.as_bytes(), from).unwrap();
}
