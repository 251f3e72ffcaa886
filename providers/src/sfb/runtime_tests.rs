//! Runtime tests of the `sfb` provider without a hub: [`ProviderContext::for_test`] records its
//! signals and feed changes, and a front-end pool played with the project's own SIP stack
//! ([`Pool`], TCP on loopback, through [`crate::sip::played`]) answers the batched SUBSCRIBEs
//! — the first notification piggy-backed on the `200` as SfB does, later ones as `NOTIFY` or
//! `BENOTIFY` when the test asks — and OPTIONS, or falls silent.
//!
//! - One batched SUBSCRIBE names the directory's people with a SIP URI; the categories of the
//!   `200` and of later notifications become each person's `sfb` signal, and the feed is up.
//! - A pool that stops answering OPTIONS takes the feed down (stale: nothing is retracted);
//!   when it answers again the provider re-subscribes and reads everyone's state anew before
//!   the feed is up again, and it stays up.
//! - At shutdown every batch is un-SUBSCRIBEd (`Expires: 0`) and the task returns `Ok`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use presence_actors::directory::{Directory, NumberPlan, Person};
use presence_actors::hub::SinkEvent;
use presence_actors::model::{Activity, Availability, Signal, Source};
use presence_actors::provider::{ProviderContext, TestHarness};
use presence_sip::body::msrtc::{self, BatchAction, BatchSub, Categories, Category, CategoryValue, State, StateKind};
use presence_sip::body::rlmi::{self, Instance, Resource, ResourcePart, Rlmi, RlmiNotify};
use presence_sip::endpoint::{Endpoint, Incoming, Peer};
use presence_sip::message::{Builder, Message};
use tokio::sync::mpsc;

use super::{SfbConfig, ACCEPT};
use crate::sip::played::{ends_ok, lamp, local, next_signal, play, until_feed, Play, Run};

const ADA: &str = "sip:ada@contoso.com";
const BO: &str = "sip:bo@contoso.com";
const FROM: &str = "sip:hub-svc@contoso.com";

/// A person's state at the pool: the availability and activity token of their aggregateState.
type Presence = (u32, Option<&'static str>);

/// A SUBSCRIBE the pool received.
#[derive(Debug, Clone)]
struct Seen {
    /// Request-URI.
    uri: String,
    call_id: String,
    /// Within an existing dialog (it carries the pool's To tag).
    in_dialog: bool,
    expires: Option<u32>,
    event: String,
    accept: String,
    require: Vec<String>,
    supported: Vec<String>,
    content_type: Option<String>,
    /// The batchSub body, read.
    batch: Option<BatchSub>,
}

/// Every value of a header (comma lists split).
fn tokens(msg: &Message, name: &str) -> Vec<String> {
    let values = msg.headers.iter().filter(|(n, _)| n.as_print_str().eq_ignore_ascii_case(name));
    values.flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_string()).collect::<Vec<_>>()).filter(|t| !t.is_empty()).collect()
}

impl Seen {
    fn of(msg: &Message) -> Seen {
        let batch = (msg.content_type().as_deref() == Some(msrtc::BATCH_SUB_CONTENT_TYPE)).then(|| msrtc::parse_batch_sub(&msg.body).expect("a batchSub body"));
        Seen {
            uri: msg.request_uri().unwrap_or_default().to_string(),
            call_id: msg.call_id.to_string(),
            in_dialog: msg.to.tag.is_some(),
            expires: msg.expires().ok().flatten(),
            event: msg.event().unwrap_or_default().to_string(),
            accept: tokens(msg, "Accept").join(", "),
            require: tokens(msg, "Require"),
            supported: tokens(msg, "Supported"),
            content_type: msg.content_type(),
            batch,
        }
    }
}

/// One subscription dialog at the pool.
struct Dialog {
    peer: Peer,
    tag: String,
    /// The subscriber's From (the To of notifications).
    subscriber: String,
    /// Its Contact URI (the Request-URI of notifications).
    target: String,
    cseq: u32,
    version: u64,
    resources: Vec<String>,
}

/// What the pool knows, shared by its side of the wire and the test.
#[derive(Default)]
struct Shared {
    silent: Cell<bool>,
    presence: RefCell<HashMap<String, Presence>>,
    dialogs: RefCell<HashMap<String, Dialog>>,
    options: Cell<u32>,
}

/// A categories document with one aggregateState.
fn categories(uri: &str, (availability, token): Presence) -> Vec<u8> {
    let activity = token.map(|t| msrtc::Activity { token: Some(t.into()), ..msrtc::Activity::default() });
    let state = State { kind: StateKind::AggregateState, availability: Some(availability), activity, ..State::default() };
    let category = Category { name: "state".into(), instance: 1, value: CategoryValue::State(state), ..Category::default() };
    msrtc::build_categories(&Categories { uri: uri.into(), categories: vec![category] }).into_bytes()
}

impl Shared {
    /// The next RLMI notification of `d` with the states of `uris`: content type and body.
    fn rlmi(&self, d: &mut Dialog, uris: &[String], full: bool) -> (String, Vec<u8>) {
        let mut n = RlmiNotify { list: Rlmi { uri: FROM.into(), version: d.version, full_state: full, ..Rlmi::default() }, resources: vec![] };
        d.version += 1;
        for (i, uri) in uris.iter().enumerate() {
            let presence = *self.presence.borrow().get(uri).expect("a person the pool knows");
            let instance = Instance { id: format!("{i}"), cid: Some(format!("{i}.{}@pool", d.version)), ..Instance::default() };
            n.list.resources.push(Resource { uri: uri.clone(), name: None, instances: vec![instance.clone()] });
            let body = categories(uri, presence);
            n.resources.push(ResourcePart { uri: uri.clone(), instance, content_type: Some(msrtc::CONTENT_TYPE.into()), body: Some(body) });
        }
        rlmi::build_rlmi_notify(&n, &format!("b{}", d.version)).expect("an RLMI notification")
    }
}

/// The pool's side of the wire.
struct Played {
    shared: Rc<Shared>,
    seen: mpsc::UnboundedSender<Seen>,
}

impl Play for Played {
    async fn serve(&mut self, ep: &Endpoint, req: Incoming) {
        if self.shared.silent.get() {
            return;
        }
        let method = req.msg.method().map(|m| m.to_string()).unwrap_or_default();
        match method.as_str() {
            "OPTIONS" => {
                self.shared.options.set(self.shared.options.get() + 1);
                ep.reply(&req, 200, "OK").await
            }
            "SUBSCRIBE" => self.subscribe(ep, req).await,
            "ACK" => {}
            _ => ep.reply(&req, 405, "Method Not Allowed").await,
        }
    }
}

impl Played {
    async fn subscribe(&mut self, ep: &Endpoint, req: Incoming) {
        let seen = Seen::of(&req.msg);
        let _ = self.seen.send(seen.clone());
        let granted = seen.expires.unwrap_or(3600).min(3600);
        if seen.in_dialog {
            let known = self.shared.dialogs.borrow().get(&seen.call_id).is_some_and(|d| req.msg.to.tag.as_deref() == Some(d.tag.as_str()));
            if !known {
                return ep.reply(&req, 481, "Subscription Does Not Exist").await;
            }
            if granted == 0 {
                self.shared.dialogs.borrow_mut().remove(&seen.call_id);
            }
            return ep.respond(&req, Builder::response_to(&req.msg, 200, "OK", None).header("Expires", &granted.to_string())).await;
        }
        let resources = seen.batch.clone().map_or_else(|| vec![seen.uri.clone()], |b| b.resources);
        let target = tokens(&req.msg, "Contact").first().map(|c| c.trim_start_matches('<').split('>').next().unwrap_or_default().to_string()).unwrap_or_default();
        let subscriber = tokens(&req.msg, "From").join(",");
        let mut d = Dialog { peer: req.peer, tag: ep.token(), subscriber, target, cseq: 0, version: 0, resources: resources.clone() };
        let mut r = Builder::response_to(&req.msg, 200, "OK", Some(&d.tag)).header("Expires", &granted.to_string()).header("Contact", &ep.contact("pool", req.peer.transport));
        if seen.supported.iter().any(|s| s == "ms-piggyback-first-notify") {
            let (ct, body) = self.shared.rlmi(&mut d, &resources, true);
            r = r.body(&ct, body);
        }
        self.shared.dialogs.borrow_mut().insert(seen.call_id.clone(), d);
        ep.respond(&req, r).await;
    }
}

/// The pool: its address, what it knows, and every SUBSCRIBE it received.
struct Pool {
    ep: Endpoint,
    addr: SocketAddr,
    shared: Rc<Shared>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Pool {
    /// Binds on loopback and serves on the current `LocalSet`; Ada Available, Bo Away.
    async fn start() -> Pool {
        let shared = Rc::new(Shared::default());
        shared.presence.borrow_mut().extend([(ADA.to_string(), (3500, None)), (BO.to_string(), (15500, None))]);
        let (tx, seen) = mpsc::unbounded_channel();
        let ep = play(Played { shared: shared.clone(), seen: tx }).await;
        Pool { addr: ep.local_addr(), ep, shared, seen }
    }

    fn set(&self, uri: &str, presence: Presence) {
        self.shared.presence.borrow_mut().insert(uri.to_string(), presence);
    }

    /// The next SUBSCRIBE received (within 5 s).
    async fn next_subscribe(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(5), self.seen.recv()).await.expect("a SUBSCRIBE within 5 s").expect("the pool runs")
    }

    /// Sends `method` (`NOTIFY` or `BENOTIFY`) in the dialog `call_id` with the current state of
    /// `uri` (a delta: `fullState="false"`); the status a NOTIFY was answered with.
    async fn notify(&self, method: &str, call_id: &str, uri: &str) -> Option<u16> {
        let (peer, bytes, branch) = {
            let mut dialogs = self.shared.dialogs.borrow_mut();
            let d = dialogs.get_mut(call_id).expect("a dialog of the pool");
            assert!(d.resources.iter().any(|r| r == uri), "{uri} is in the dialog");
            let (ct, body) = self.shared.rlmi(d, &[uri.to_string()], false);
            d.cseq += 1;
            let (via, branch) = self.ep.via(d.peer.transport);
            let b = Builder::request(method, &d.target)
                .header("Via", &via)
                .header("Max-Forwards", "70")
                .header("From", &format!("<{FROM}>;tag={}", d.tag))
                .header("To", &d.subscriber)
                .header("Call-ID", call_id)
                .header("CSeq", &format!("{} {method}", d.cseq))
                .header("Contact", &self.ep.contact("pool", d.peer.transport))
                .header("Event", "presence")
                .header("Subscription-State", "active;expires=600")
                .body(&ct, body);
            (d.peer, b.build(), branch)
        };
        if method == "BENOTIFY" {
            self.ep.send_oneway(peer, bytes).await.expect("BENOTIFY sent");
            return None;
        }
        let r = self.ep.request_timeout(peer, &branch, bytes, Duration::from_secs(2)).await.expect("the NOTIFY is answered");
        r.code()
    }
}

/// Ada and Bo have SIP URIs; Cy has none (left out).
fn directory() -> Directory {
    let ada = Person { sip_uri: Some(ADA.into()), ..Person::new("ada", "Ada Andersson") };
    let bo = Person { sip_uri: Some(BO.into()), ..Person::new("bo", "Bo Berg") };
    let cy = Person { extension: Some("2001".into()), ..Person::new("cy", "Cy Carlsson") };
    Directory::build(vec![ada, bo, cy], &NumberPlan::sweden()).expect("directory")
}

/// An `sfb` provider against `pool` (TCP, 600 s subscriptions, plus the `extra` config lines)
/// on the current `LocalSet`: its harness, Ada's and Bo's indexes, and the task.
fn start(pool: &Pool, extra: &str) -> (TestHarness, [u32; 2], Run) {
    let text = format!("name = \"sfb\"\nserver = \"{}\"\nfrom = \"{FROM}\"\nexpires_secs = 600\n{extra}", pool.addr);
    let cfg: SfbConfig = toml::from_str(&text).expect("config");
    let dir = directory();
    let people = [dir.by_id("ada").expect("Ada"), dir.by_id("bo").expect("Bo")];
    let (ctx, h) = ProviderContext::for_test("sfb", dir, "http://127.0.0.1:9");
    let run = tokio::task::spawn_local(super::task(&cfg, ctx).expect("task"));
    (h, people, run)
}

/// Signals by person, one each at most.
fn by_person(signals: Vec<(u32, Signal)>) -> HashMap<u32, Signal> {
    let mut out = HashMap::new();
    for (i, s) in signals {
        assert!(out.insert(i, s).is_none(), "one signal per person: {out:?}");
    }
    out
}

/// Asks the provider to stop; expects the un-SUBSCRIBE of each of `call_ids`, a graceful end,
/// and nothing more at the pool.
async fn stop(h: &TestHarness, pool: &mut Pool, call_ids: &[&str], run: Run) {
    h.trigger.trigger();
    let mut ended = Vec::new();
    for _ in call_ids {
        let bye = pool.next_subscribe().await;
        assert!(bye.in_dialog && bye.expires == Some(0), "an un-SUBSCRIBE: {bye:?}");
        ended.push(bye.call_id);
    }
    ended.sort();
    let mut want: Vec<String> = call_ids.iter().map(|c| c.to_string()).collect();
    want.sort();
    assert_eq!(ended, want, "every batch's dialog is ended");
    ends_ok(run).await;
    let left = pool.shared.dialogs.borrow().keys().filter(|c| call_ids.contains(&c.as_str())).count();
    assert_eq!(left, 0, "the pool has ended them");
    assert!(pool.seen.try_recv().is_err(), "nothing after the un-SUBSCRIBEs");
}

/// One batched SUBSCRIBE for Ada and Bo (Cy has no SIP URI): its piggy-backed first
/// notification gives both their state before the feed is up; a NOTIFY (answered `200`) with
/// Ada on the phone and a BENOTIFY with Bo in Do Not Disturb change just that person's signal.
#[tokio::test]
async fn a_batched_subscription_and_its_notifications_become_sfb_signals() {
    local(async {
        let mut pool = Pool::start().await;
        let (mut h, [ada, bo], run) = start(&pool, "keepalive_secs = 0\n");
        let first = pool.next_subscribe().await;

        // The batched subscription to the service account's own URI ([MS-PRES] §2.2.2.4.1).
        assert_eq!((first.uri.as_str(), first.event.as_str(), first.expires, first.in_dialog), (FROM, "presence", Some(600), false), "{first:?}");
        assert_eq!(first.accept, ACCEPT, "{first:?}");
        assert_eq!(first.require, ["adhoclist", "categoryList"], "{first:?}");
        for s in ["eventlist", "ms-benotify", "ms-piggyback-first-notify"] {
            assert!(first.supported.iter().any(|t| t == s), "Supported: {s}: {first:?}");
        }
        assert_eq!(first.content_type.as_deref(), Some(msrtc::BATCH_SUB_CONTENT_TYPE), "{first:?}");
        let batch = first.batch.clone().expect("a batchSub body");
        assert_eq!((batch.uri.as_str(), batch.action, batch.resources.as_slice()), (FROM, BatchAction::Subscribe, [ADA.to_string(), BO.to_string()].as_slice()), "{batch:?}");
        assert!(batch.categories.iter().any(|c| c == "state"), "{batch:?}");

        // The first notification, in the 200: both states, then the feed is up.
        let signals = by_person(until_feed(&mut h, true, &[ada, bo]).await);
        assert_eq!(signals.len(), 2, "{signals:?}");
        assert_eq!(lamp(&signals[&ada]), (Source::Sfb, Some(Availability::Available), None), "{signals:?}");
        assert_eq!(lamp(&signals[&bo]), (Source::Sfb, Some(Availability::Away), None), "{signals:?}");

        // Ada on the phone, in a NOTIFY: her signal only.
        pool.set(ADA, (6500, Some("on-the-phone")));
        assert_eq!(pool.notify("NOTIFY", &first.call_id, ADA).await, Some(200), "the provider answers a NOTIFY");
        let (who, s) = next_signal(&mut h, &[ada, bo]).await;
        assert_eq!((who, lamp(&s)), (ada, (Source::Sfb, Some(Availability::Busy), Some(Activity::InACall))), "{s:?}");

        // Bo in Do Not Disturb, in a BENOTIFY (not answered): his signal only.
        pool.set(BO, (9500, None));
        assert_eq!(pool.notify("BENOTIFY", &first.call_id, BO).await, None);
        let (who, s) = next_signal(&mut h, &[ada, bo]).await;
        assert_eq!((who, lamp(&s)), (bo, (Source::Sfb, Some(Availability::DoNotDisturb), None)), "{s:?}");

        stop(&h, &mut pool, &[&first.call_id], run).await;
        let rest = h.drain();
        assert!(rest.iter().all(|e| !matches!(e, SinkEvent::Signal(..) | SinkEvent::Feed(false))), "nothing else: {rest:?}");
    })
    .await;
}

/// A pool that stops answering (OPTIONS every second, two misses): the feed goes down without
/// retracting anyone; when it answers again the batch is subscribed anew (a new dialog), the
/// state that changed meanwhile is read before the feed is up again, and the feed stays up
/// (the pings lost while the pool was silent do not count once it has answered).
#[tokio::test]
async fn a_silent_pool_takes_the_feed_down_and_is_resubscribed_when_back() {
    local(async {
        let mut pool = Pool::start().await;
        let (mut h, [ada, bo], run) = start(&pool, "keepalive_secs = 1\n");
        let first = pool.next_subscribe().await;
        let signals = by_person(until_feed(&mut h, true, &[ada, bo]).await);
        assert_eq!(lamp(&signals[&ada]), (Source::Sfb, Some(Availability::Available), None), "{signals:?}");

        pool.shared.silent.set(true);
        let t0 = std::time::Instant::now();
        let during = until_feed(&mut h, false, &[ada, bo]).await;
        assert!(during.is_empty(), "nothing retracted while the pool is silent: {during:?}");
        assert!(t0.elapsed() < Duration::from_secs(7), "down after {:?}", t0.elapsed());
        assert!(pool.shared.options.get() >= 1, "the pool was pinged before it fell silent");

        // Ada went Away meanwhile; the pool answers again.
        pool.set(ADA, (15500, None));
        pool.shared.silent.set(false);
        let again = pool.next_subscribe().await;
        assert!(!again.in_dialog && again.call_id != first.call_id, "a new subscription: {again:?}");
        assert_eq!(again.batch.as_ref().map(|b| b.resources.clone()), Some(vec![ADA.to_string(), BO.to_string()]), "{again:?}");
        let after = by_person(until_feed(&mut h, true, &[ada, bo]).await);
        assert_eq!(lamp(&after[&ada]), (Source::Sfb, Some(Availability::Away), None), "Ada's state is read anew: {after:?}");
        assert_eq!(lamp(&after[&bo]), (Source::Sfb, Some(Availability::Away), None), "{after:?}");

        // The pings sent while the pool was silent time out after it is back (over TCP nothing
        // retransmits them): they do not take the feed down again.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let later = h.drain();
        assert!(later.is_empty(), "the feed stays up, nobody is re-subscribed: {later:?}");
        assert!(pool.seen.try_recv().is_err(), "no second re-subscription");

        stop(&h, &mut pool, &[&again.call_id], run).await;
    })
    .await;
}

/// Two batches of one (`batch_size = 1`): the feed is up only when both are subscribed, and at
/// shutdown both are un-SUBSCRIBEd (`Expires: 0`) before the task returns `Ok`.
#[tokio::test]
async fn every_batch_is_unsubscribed_at_shutdown() {
    local(async {
        let mut pool = Pool::start().await;
        let (mut h, [ada, bo], run) = start(&pool, "keepalive_secs = 0\nbatch_size = 1\n");
        let one = pool.next_subscribe().await;
        let two = pool.next_subscribe().await;
        let mut named: Vec<Vec<String>> = [&one, &two].iter().map(|s| s.batch.as_ref().expect("batchSub").resources.clone()).collect();
        named.sort();
        assert_eq!(named, [vec![ADA.to_string()], vec![BO.to_string()]], "one person per batch");
        assert_ne!(one.call_id, two.call_id);
        let signals = by_person(until_feed(&mut h, true, &[ada, bo]).await);
        assert_eq!(signals.len(), 2, "both batches' states came before the feed is up: {signals:?}");

        stop(&h, &mut pool, &[&one.call_id, &two.call_id], run).await;
    })
    .await;
}

/// The directory changes while the provider runs (no restart): Bo leaves and Cy joins — the
/// batch is subscribed anew with a batchSub naming Ada and Cy, its old dialog is un-SUBSCRIBEd
/// (`Expires: 0`), Cy's state comes with the new dialog's first notification, and the feed
/// never goes down.
#[tokio::test]
async fn the_batch_follows_the_live_directory() {
    const CY: &str = "sip:cy@contoso.com";
    local(async {
        let mut pool = Pool::start().await;
        pool.set(CY, (6500, Some("on-the-phone")));
        let (mut h, [ada, bo], run) = start(&pool, "keepalive_secs = 0\n");
        let first = pool.next_subscribe().await;
        assert_eq!(first.batch.as_ref().map(|b| b.resources.clone()), Some(vec![ADA.to_string(), BO.to_string()]), "{first:?}");
        by_person(until_feed(&mut h, true, &[ada, bo]).await);

        let ada_p = Person { sip_uri: Some(ADA.into()), ..Person::new("ada", "Ada Andersson") };
        let cy_p = Person { sip_uri: Some(CY.into()), ..Person::new("cy", "Cy Carlsson") };
        let (next, _) = h.directory.current().next(vec![ada_p, cy_p]).expect("next version");
        let next = next.expect("the version changes something");
        h.directory.replace(std::sync::Arc::new(next));
        let cy = h.directory.current().by_id("cy").expect("Cy");

        let seen = [pool.next_subscribe().await, pool.next_subscribe().await];
        let bye = seen.iter().find(|s| s.in_dialog).expect("the old dialog un-SUBSCRIBEd");
        assert_eq!((bye.call_id.as_str(), bye.expires), (first.call_id.as_str(), Some(0)), "{seen:?}");
        let again = seen.iter().find(|s| !s.in_dialog).expect("a new batch subscription");
        assert_eq!(again.batch.as_ref().map(|b| b.resources.clone()), Some(vec![ADA.to_string(), CY.to_string()]), "{again:?}");

        let mut got = HashMap::new();
        while got.len() < 2 {
            let (who, s) = next_signal(&mut h, &[ada, cy]).await;
            got.insert(who, s);
        }
        assert_eq!(lamp(&got[&cy]), (Source::Sfb, Some(Availability::Busy), Some(Activity::InACall)), "{got:?}");
        assert_eq!(lamp(&got[&ada]), (Source::Sfb, Some(Availability::Available), None), "{got:?}");

        stop(&h, &mut pool, &[&again.call_id], run).await;
        let rest = h.drain();
        assert!(rest.iter().all(|e| !matches!(e, SinkEvent::Feed(false))), "the feed never went down: {rest:?}");
    })
    .await;
}
