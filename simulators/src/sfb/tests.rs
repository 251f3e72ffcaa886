//! The simulator's SIP exchanges, checked with the hub's real SIP client parts
//! (`presence_sip` endpoint, subscription, body parsers).

use super::*;
use presence_sip::body::msrtc::{parse_categories, BatchSub};
use presence_sip::body::rlmi::parse_rlmi_notify;
use presence_sip::endpoint::{Transport, TxError};
use presence_sip::message::Message;
use presence_sip::subscription::{SubEvent, SubState, SubscribeSpec, Subscription};

const SVC: &str = "sip:hub-svc@nordvik.se";
const ALICE: &str = "sip:alice@nordvik.se";
const BOB: &str = "sip:bob@nordvik.se";
const CAROL: &str = "sip:carol@nordvik.se";
const NOBODY: &str = "sip:nobody@nordvik.se";

type Events = mpsc::Receiver<((), SubEvent)>;

fn batch_body(resources: &[&str]) -> Bytes {
    Bytes::from(msrtc::build_batch_sub(&BatchSub {
        uri: SVC.into(),
        action: BatchAction::Subscribe,
        action_id: "63792024".into(),
        resources: resources.iter().map(|r| r.to_string()).collect(),
        categories: msrtc::DEFAULT_CATEGORIES.iter().map(|c| c.to_string()).collect(),
    }))
}

/// A batched subscription as the SfB provider sends it.
fn batch_spec(addr: SocketAddr, transport: Transport, resources: &[&str]) -> SubscribeSpec {
    SubscribeSpec {
        peer: Peer { transport, addr },
        uri: SVC.into(),
        from: SVC.into(),
        contact_user: "hub-svc".into(),
        event: "presence".into(),
        accept: "application/msrtc-event-categories+xml, application/rlmi+xml, multipart/related".into(),
        expires: 600,
        headers: [
            ("Require", "adhoclist, categoryList"),
            ("Supported", "eventlist"),
            ("Supported", "ms-benotify"),
            ("Proxy-Require", "ms-benotify"),
            ("Supported", "ms-piggyback-first-notify"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect(),
        body: Some((msrtc::BATCH_SUB_CONTENT_TYPE.into(), batch_body(resources))),
        credentials: None,
    }
}

/// A single category subscription to a contact (after `resubscribe`).
fn single_spec(addr: SocketAddr, contact: &str) -> SubscribeSpec {
    let mut s = batch_spec(addr, Transport::Tcp, &[contact]);
    s.uri = contact.into();
    s.headers.retain(|(n, _)| n != "Require");
    s
}

async fn client() -> Endpoint {
    Endpoint::bind(EndpointConfig::default()).await.unwrap().0
}

async fn next(rx: &mut Events) -> SubEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("an event in time").expect("open").1
}

/// The next Active or Notify with a body: (method or "200", full Content-Type, body).
async fn next_body(rx: &mut Events) -> (String, String, Bytes) {
    loop {
        match next(rx).await {
            SubEvent::Active { body: Some((ct, b)), .. } => return ("200".into(), ct, b),
            SubEvent::Notify { body, msg, .. } if !body.is_empty() => {
                let ct = msg.content_type_value().unwrap_or("").to_string();
                return (msg.method().map(|m| m.to_string()).unwrap_or_default(), ct, body);
            }
            SubEvent::Down { reason, .. } => panic!("down: {reason}"),
            _ => {}
        }
    }
}

fn aggregate(body: &[u8]) -> (Option<u32>, Option<String>) {
    let doc = parse_categories(body).expect("categories");
    let s = doc.aggregate_state().expect("aggregateState");
    (s.availability, s.activity.as_ref().and_then(|a| a.token.clone()))
}

fn sim(cfg: SfbSimConfig) -> SfbSim {
    let sim = SfbSim::start(cfg).unwrap();
    sim.set(ALICE, SfbPresence::available().note("I labbet"));
    sim.set(BOB, SfbPresence::new(6500).activity("in-a-meeting").meeting("Budget", "Rum Fyren"));
    sim.set(CAROL, SfbPresence::new(15500));
    sim
}

#[tokio::test]
async fn batched_subscribe_piggybacks_the_full_state_then_notifies_changes() {
    for transport in [Transport::Tcp, Transport::Udp] {
        let pool2 = "127.0.0.1:5999";
        let sim = sim(SfbSimConfig { homed_elsewhere: vec![(CAROL.into(), pool2.into())], ..SfbSimConfig::default() });
        let (tx, mut rx) = mpsc::channel(64);
        let _sub = Subscription::spawn(
            client().await,
            batch_spec(sim.addr(), transport, &[ALICE, BOB, CAROL, NOBODY]),
            (),
            tx,
        );

        // The first notification rides on the 200: RLMI version 0, full state.
        let (method, ct, body) = next_body(&mut rx).await;
        assert_eq!(method, "200");
        assert!(ct.starts_with("multipart/related"), "{ct}");
        let n = parse_rlmi_notify(&ct, &body).unwrap();
        assert_eq!((n.list.uri.as_str(), n.list.version, n.list.full_state), (SVC, 0, true));
        assert_eq!(n.resources.len(), 4);
        let by = |u: &str| n.resources.iter().find(|r| r.uri == u).unwrap();
        assert_eq!(aggregate(by(ALICE).body.as_deref().unwrap()), (Some(3500), None));
        let bob = parse_categories(by(BOB).body.as_deref().unwrap()).unwrap();
        let cal = bob
            .categories
            .iter()
            .find_map(|c| match &c.value {
                CategoryValue::State(s) if s.kind == StateKind::CalendarState => Some(s.clone()),
                _ => None,
            })
            .expect("calendarState");
        assert_eq!(
            (cal.meeting_subject.as_deref(), cal.meeting_location.as_deref()),
            (Some("Budget"), Some("Rum Fyren"))
        );
        assert_eq!(by(CAROL).instance.state, InstanceState::Resubscribe);
        assert_eq!(by(CAROL).instance.pool_fqdn.as_deref(), Some(pool2));
        assert_eq!(by(NOBODY).instance.state, InstanceState::Terminated);
        assert_eq!(by(NOBODY).instance.reason.as_deref(), Some("noresource"));

        // A change: a BENOTIFY (no answer expected) with only the state category.
        sim.set(ALICE, SfbPresence::new(6500).activity("on-the-phone").note("I labbet"));
        let (method, ct, body) = next_body(&mut rx).await;
        assert_eq!(method, "BENOTIFY");
        let n = parse_rlmi_notify(&ct, &body).unwrap();
        assert_eq!((n.list.version, n.list.full_state, n.resources.len()), (1, false, 1));
        let part = n.resources[0].body.as_deref().unwrap();
        assert_eq!(aggregate(part), (Some(6500), Some("on-the-phone".into())));
        assert_eq!(parse_categories(part).unwrap().categories.len(), 1, "only what changed");

        // A note removed: an empty note instance.
        sim.set(ALICE, SfbPresence::new(6500).activity("on-the-phone"));
        let (_, ct, body) = next_body(&mut rx).await;
        let n = parse_rlmi_notify(&ct, &body).unwrap();
        assert_eq!(n.list.version, 2);
        let doc = parse_categories(n.resources[0].body.as_deref().unwrap()).unwrap();
        assert_eq!(doc.categories.len(), 1);
        assert_eq!((doc.categories[0].name.as_str(), &doc.categories[0].value), ("note", &CategoryValue::Other));

        // NOTIFY instead: answered by the subscriber.
        sim.set_notify_method(NotifyMethod::Notify);
        sim.set_many(vec![(ALICE.into(), SfbPresence::new(9500)), (BOB.into(), SfbPresence::new(12500))]);
        let (method, ct, body) = next_body(&mut rx).await;
        assert_eq!(method, "NOTIFY");
        let n = parse_rlmi_notify(&ct, &body).unwrap();
        assert_eq!((n.list.version, n.resources.len()), (3, 2), "one notification for both changes");
        // Carol is homed elsewhere: nothing about her from here, and she stays there.
        sim.set(CAROL, SfbPresence::new(3500));
        assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv()).await.is_err());
        let st = sim.stats();
        assert_eq!((st.batched_subscribes, st.piggybacked, st.benotifies, st.notifies), (1, 1, 2, 1));
        assert_eq!((st.noresource, st.resubscribe), (1, 1));
        assert_eq!(sim.subscriptions().len(), 1);
    }
}

#[tokio::test]
async fn a_single_subscription_at_a_second_pool_gets_the_categories_document_itself() {
    let pool2 = sim(SfbSimConfig::default());
    let pool1 = SfbSim::start(SfbSimConfig {
        homed_elsewhere: vec![(BOB.into(), pool2.pool_fqdn())],
        ..SfbSimConfig::default()
    })
    .unwrap();
    pool1.set(ALICE, SfbPresence::available());
    let ep = client().await;
    let (tx, mut rx) = mpsc::channel(64);
    let _batch = Subscription::spawn(ep.clone(), batch_spec(pool1.addr(), Transport::Tcp, &[ALICE, BOB]), (), tx);
    let (_, ct, body) = next_body(&mut rx).await;
    let n = parse_rlmi_notify(&ct, &body).unwrap();
    let bob = n.resources.iter().find(|r| r.uri == BOB).unwrap();
    assert_eq!(bob.instance.state, InstanceState::Resubscribe);
    let pool: SocketAddr = bob.instance.pool_fqdn.as_deref().unwrap().parse().unwrap();
    assert_eq!(pool, pool2.addr());

    // What the provider does next: a single category SUBSCRIBE to Bob at that pool.
    let (tx2, mut rx2) = mpsc::channel(64);
    let _single = Subscription::spawn(ep.clone(), single_spec(pool, BOB), (), tx2);
    let (method, ct, body) = next_body(&mut rx2).await;
    assert_eq!((method.as_str(), ct.as_str()), ("200", msrtc::CONTENT_TYPE));
    assert_eq!(aggregate(&body), (Some(6500), Some("in-a-meeting".into())));
    pool2.set(BOB, SfbPresence::new(3500));
    let (method, ct, body) = next_body(&mut rx2).await;
    assert_eq!((method.as_str(), ct.as_str()), ("BENOTIFY", msrtc::CONTENT_TYPE));
    assert_eq!(aggregate(&body), (Some(3500), None));
    assert_eq!(pool2.stats().single_subscribes, 1);

    // A person moved away later: the batch learns it by a resubscribe instance.
    pool1.home_elsewhere(ALICE, &pool2.pool_fqdn());
    let (_, ct, body) = next_body(&mut rx).await;
    let n = parse_rlmi_notify(&ct, &body).unwrap();
    assert_eq!(n.resources[0].instance.state, InstanceState::Resubscribe);
    assert_eq!(n.resources[0].instance.pool_fqdn.as_deref(), Some(pool2.pool_fqdn().as_str()));
    // A single SUBSCRIBE for someone the pool does not home: 404.
    let (tx3, mut rx3) = mpsc::channel(64);
    let _gone = Subscription::spawn(ep, single_spec(pool1.addr(), BOB), (), tx3);
    match next(&mut rx3).await {
        SubEvent::Down { reason, .. } => assert!(reason.contains("404"), "{reason}"),
        ev => panic!("{ev:?}"),
    }
}

/// Sends one raw SUBSCRIBE and returns the response.
async fn raw_subscribe(
    ep: &Endpoint,
    sim: &SfbSim,
    edit: impl FnOnce(Builder) -> Builder,
    body: Option<Bytes>,
) -> Message {
    let (via, branch) = ep.via(Transport::Tcp);
    let mut b = Builder::request("SUBSCRIBE", SVC)
        .header("Via", &via)
        .header("Max-Forwards", "70")
        .header("From", &format!("<{SVC}>;tag={}", ep.token()))
        .header("Call-ID", &ep.token())
        .header("CSeq", "1 SUBSCRIBE")
        .header("Contact", &ep.contact("hub-svc", Transport::Tcp));
    b = edit(b);
    if let Some(body) = body {
        b = b.body(msrtc::BATCH_SUB_CONTENT_TYPE, body);
    }
    ep.request(Peer { transport: Transport::Tcp, addr: sim.addr() }, &branch, b.build()).await.unwrap()
}

#[tokio::test]
async fn refusals_and_digest() {
    let sim = sim(SfbSimConfig::default());
    let ep = client().await;
    let good = |b: Builder| {
        b.header("To", &format!("<{SVC}>"))
            .header("Event", "presence")
            .header("Accept", "application/rlmi+xml, multipart/related")
            .header("Require", "adhoclist, categoryList")
    };
    let r = raw_subscribe(&ep, &sim, good, Some(batch_body(&[ALICE]))).await;
    assert_eq!(r.code(), Some(200));
    type Edit = Box<dyn FnOnce(Builder) -> Builder>;
    let cases: Vec<(u16, Edit, Option<Bytes>)> = vec![
        (489, Box::new(|b: Builder| b.header("To", &format!("<{SVC}>")).header("Event", "dialog")), None),
        (
            400,
            Box::new(|b: Builder| {
                b.header("To", &format!("<{SVC}>"))
                    .header("Event", "presence")
                    .header("Accept", "application/rlmi+xml, multipart/related")
            }),
            Some(batch_body(&[ALICE])),
        ),
        (
            420,
            Box::new(|b: Builder| {
                b.header("To", &format!("<{SVC}>"))
                    .header("Event", "presence")
                    .header("Require", "adhoclist, categoryList, 100rel")
            }),
            Some(batch_body(&[ALICE])),
        ),
        (
            406,
            Box::new(|b: Builder| {
                b.header("To", &format!("<{SVC}>"))
                    .header("Event", "presence")
                    .header("Accept", "application/pidf+xml")
                    .header("Require", "adhoclist, categoryList")
            }),
            Some(batch_body(&[ALICE])),
        ),
        (
            400,
            Box::new(|b: Builder| {
                b.header("To", &format!("<{SVC}>"))
                    .header("Event", "presence")
                    .header("Accept", "application/rlmi+xml, multipart/related")
                    .header("Require", "adhoclist, categoryList")
            }),
            Some(Bytes::from_static(b"<batchSub")),
        ),
        (
            423,
            Box::new(|b: Builder| {
                b.header("To", &format!("<{SVC}>")).header("Event", "presence").header("Expires", "5")
            }),
            None,
        ),
        // A refresh of a dialog the pool does not know.
        (481, Box::new(|b: Builder| b.header("To", &format!("<{SVC}>;tag=gone")).header("Event", "presence")), None),
    ];
    for (want, edit, body) in cases {
        let r = raw_subscribe(&ep, &sim, edit, body).await;
        assert_eq!(r.code(), Some(want), "{r}");
    }
    assert_eq!(sim.stats().unknown_dialogs, 1);

    // With an account: challenged, then accepted with the right password.
    let sim = SfbSim::start(SfbSimConfig { account: Some(("hub-svc".into(), "pw".into())), ..SfbSimConfig::default() })
        .unwrap();
    sim.set(ALICE, SfbPresence::available());
    let mut spec = batch_spec(sim.addr(), Transport::Tcp, &[ALICE]);
    spec.credentials = Some(("hub-svc".into(), "pw".into()));
    let (tx, mut rx) = mpsc::channel(64);
    let _ok = Subscription::spawn(ep.clone(), spec.clone(), (), tx);
    let (method, _, _) = next_body(&mut rx).await;
    assert_eq!(method, "200");
    spec.credentials = Some(("hub-svc".into(), "wrong".into()));
    let (tx, mut rx) = mpsc::channel(64);
    let _bad = Subscription::spawn(ep, spec, (), tx);
    match next(&mut rx).await {
        SubEvent::Down { reason, .. } => assert!(reason.contains("401"), "{reason}"),
        ev => panic!("{ev:?}"),
    }
    assert!(sim.stats().challenges >= 3);
}

#[tokio::test]
async fn garbled_parts_restarts_deactivation_and_large_batches() {
    let sim = sim(SfbSimConfig::default());
    let ep = client().await;
    let (tx, mut rx) = mpsc::channel(64);
    let sub = Subscription::spawn(ep.clone(), batch_spec(sim.addr(), Transport::Tcp, &[ALICE, BOB]), (), tx);
    let _ = next_body(&mut rx).await;

    // A malformed part for Alice; Bob's part in the same notification is fine.
    sim.garble(ALICE, true);
    sim.set_many(vec![(ALICE.into(), SfbPresence::new(6500)), (BOB.into(), SfbPresence::new(15500))]);
    let (_, ct, body) = next_body(&mut rx).await;
    let n = parse_rlmi_notify(&ct, &body).unwrap();
    let part = |u: &str| n.resources.iter().find(|r| r.uri == u).unwrap().body.clone().unwrap();
    assert!(parse_categories(&part(ALICE)).is_err());
    assert_eq!(aggregate(&part(BOB)), (Some(15500), None));
    sim.garble(ALICE, false);
    assert_eq!(sim.stats().garbled, 1);

    // Deactivated: the subscriber re-subscribes at once and gets the full state again.
    sim.deactivate();
    let mut down = false;
    loop {
        match next(&mut rx).await {
            SubEvent::Notify { state: SubState::Terminated { reason }, .. } => {
                assert_eq!(reason.as_deref(), Some("deactivated"))
            }
            SubEvent::Down { .. } => down = true,
            SubEvent::Active { body, .. } => {
                assert!(down);
                let (ct, body) = body.expect("piggy-backed state");
                let n = parse_rlmi_notify(&ct, &body).unwrap();
                assert_eq!((n.list.version, n.list.full_state), (0, true));
                break;
            }
            _ => {}
        }
    }
    assert_eq!(sim.stats().batched_subscribes, 2);

    // A restart: nothing answers for a while (not even OPTIONS), then refreshes get 481.
    sim.restart(Duration::from_millis(1500));
    assert!(sim.is_silent());
    assert!(sim.subscriptions().is_empty());
    let (via, branch) = ep.via(Transport::Tcp);
    let options = Builder::request("OPTIONS", &format!("sip:{}", sim.addr()))
        .header("Via", &via)
        .header("From", &format!("<{SVC}>;tag=1"))
        .header("To", &format!("<sip:{}>", sim.addr()))
        .header("Call-ID", &ep.token())
        .header("CSeq", "1 OPTIONS")
        .build();
    let peer = Peer { transport: Transport::Tcp, addr: sim.addr() };
    assert_eq!(
        ep.request_timeout(peer, &branch, options, Duration::from_millis(500)).await.unwrap_err(),
        TxError::Timeout
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!sim.is_silent());
    let stats = sim.stats();
    assert!(stats.ignored >= 1);
    drop(sub);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.stats().unknown_dialogs, 1, "the un-SUBSCRIBE of a forgotten dialog gets 481");

    // 300 people do not fit one SIP message: the 200 carries the first part of the state,
    // notifications right after it the rest; every message stays under the 64 KiB limit.
    let uris: Vec<String> = (0..300).map(|i| format!("sip:person{i:03}@nordvik.se")).collect();
    sim.seed(&uris, SfbPresence::new(6500).activity("on-the-phone").note("Kundsamtal om avtalet, åter snart"));
    let refs: Vec<&str> = uris.iter().map(String::as_str).collect();
    let (tx, mut rx) = mpsc::channel(64);
    let _big = Subscription::spawn(ep.clone(), batch_spec(sim.addr(), Transport::Tcp, &refs), (), tx);
    let mut seen = HashSet::new();
    let mut versions = Vec::new();
    while seen.len() < 300 {
        let (_, ct, body) = next_body(&mut rx).await;
        assert!(body.len() < presence_sip::message::MAX_MESSAGE_LEN - 2048);
        let n = parse_rlmi_notify(&ct, &body).unwrap();
        assert!(!n.list.full_state, "a split state is not full in any one message");
        versions.push(n.list.version);
        for r in n.resources {
            assert_eq!(aggregate(r.body.as_deref().unwrap()).0, Some(6500));
            seen.insert(r.uri);
        }
    }
    // (A notification may overtake the 200 it follows inside the subscriber: order by version.)
    versions.sort();
    assert_eq!(versions, (0..versions.len() as u64).collect::<Vec<_>>());
    assert!(versions.len() >= 3, "{versions:?}");
}

#[tokio::test]
async fn the_demo_driver_changes_people_and_notifies_subscribers() {
    let sim = Arc::new(SfbSim::start(SfbSimConfig::default()).unwrap());
    let uris: Vec<String> = (0..20).map(|i| format!("sip:demo{i}@nordvik.se")).collect();
    sim.seed_demo(&uris, 7);
    assert!(uris.iter().all(|u| sim.presence(u).is_some()));
    let refs: Vec<&str> = uris.iter().map(String::as_str).collect();
    let (tx, mut rx) = mpsc::channel(64);
    let _sub = Subscription::spawn(client().await, batch_spec(sim.addr(), Transport::Tcp, &refs), (), tx);
    let (method, _, _) = next_body(&mut rx).await;
    assert_eq!(method, "200");
    sim.drive_demo(uris, Duration::from_millis(20), 8).unwrap();
    for _ in 0..3 {
        let (method, ct, body) = next_body(&mut rx).await;
        assert_eq!(method, "BENOTIFY");
        let n = parse_rlmi_notify(&ct, &body).unwrap();
        assert!(parse_categories(n.resources[0].body.as_deref().unwrap()).is_ok());
    }
}
