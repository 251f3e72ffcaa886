//! Runtime tests of the O2G provider without a hub: [`ProviderContext::for_test`] records its
//! signals and feed changes, and a scripted peer ([`TestPeer`]) plays the O2G server on
//! loopback — discovery, authenticate (HTTP Basic), the session, subscriptions, the chunked
//! event channel ([`Reply::Stream`], fed by the test), snapshots answered on the channel — or
//! fails (`503`), or hangs. Tokio's clock is paused: the waits (back-off, deadlines, idle
//! channels) pass in virtual time, so the tests check them to the second and take none.
//!
//! - Login, subscription and snapshots bring the feed up; a call and a routing change on the
//!   channel become the right person's `pbx` signals (`o2g`, `o2g-routing`).
//! - A snapshot that never comes holds the feed down until [`RESYNC_DEADLINE`], not longer.
//! - A server that fails (`503`) takes the feed down; the provider logs in again with back-off
//!   (1–2, 2–4, 4–8 s…) and the feed comes back up once the server answers.
//! - A silent channel is re-opened after `stream_idle_secs` with the feed up; a channel whose
//!   re-opening hangs is lost at `call_timeout_secs` and the feed goes down.
//! - At shutdown the provider deletes its subscription, then ends the session, before its task
//!   returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::time::Instant;

use presence_actors::directory::{Directory, NumberPlan, Person, UserIdx};
use presence_actors::hub::SinkEvent;
use presence_actors::model::{Activity, Availability, Signal, Source};
use presence_actors::provider::{ProviderContext, TestHarness};

use super::runtime::RESYNC_DEADLINE;
use super::O2gConfig;
use crate::common::test_peer::{local, Reply, Request, TestPeer};

const LOGIN: &str = "admin";
const PASSWORD: &str = "secret";
/// `admin:secret` in HTTP Basic.
const BASIC: &str = "Basic YWRtaW46c2VjcmV0";
const API: &str = "/api/rest/1.0";

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Well,
    /// `503` to everything.
    Unavailable,
    /// No answer at all.
    Hanging,
}

/// A request as the server logged it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    /// `METHOD /path` (query left out).
    call: String,
    query: String,
    cookie: Option<String>,
    body: String,
}

/// The O2G server: its behaviour, the open event channels, each login name's routing state,
/// and every request it got.
struct O2g {
    url: String,
    health: Mutex<Health>,
    /// Routing snapshots are answered on the channel (else only acknowledged).
    answer_routing: AtomicBool,
    credentials: AtomicU32,
    subscriptions: AtomicU32,
    channels: Mutex<Vec<UnboundedSender<Vec<u8>>>>,
    routing: Mutex<HashMap<String, serde_json::Value>>,
    seen: Mutex<Vec<Seen>>,
}

impl O2g {
    /// Starts the server on loopback.
    async fn start() -> (TestPeer, Arc<O2g>) {
        let slot: Arc<Mutex<Option<Arc<O2g>>>> = Arc::default();
        let s = slot.clone();
        let peer = TestPeer::start(move |r: &Request| s.lock().unwrap().as_ref().expect("server state").answer(r)).await;
        let o2g = Arc::new(O2g {
            url: peer.url.clone(),
            health: Mutex::new(Health::Well),
            answer_routing: AtomicBool::new(true),
            credentials: AtomicU32::new(0),
            subscriptions: AtomicU32::new(0),
            channels: Mutex::default(),
            routing: Mutex::default(),
            seen: Mutex::default(),
        });
        *slot.lock().unwrap() = Some(o2g.clone());
        (peer, o2g)
    }

    fn set_health(&self, h: Health) {
        *self.health.lock().unwrap() = h;
    }

    /// The current session's cookie.
    fn cookie(&self) -> String {
        format!("AlcUserId=cred-{}", self.credentials.load(Ordering::SeqCst))
    }

    /// One event on every open channel.
    fn push(&self, event: serde_json::Value) {
        let line = format!("{event}\n").into_bytes();
        self.channels.lock().unwrap().retain(|c| c.send(line.clone()).is_ok());
    }

    /// Ends every open channel cleanly (as at the channel's `timeout`).
    fn end_channels(&self) {
        self.channels.lock().unwrap().clear();
    }

    /// The requests `METHOD /path` seen (query left out).
    fn requests(&self, call: &str) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| s.call == call).cloned().collect()
    }

    fn answer(&self, r: &Request) -> Reply {
        let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
        let call = format!("{} {path}", r.method);
        let cookie = TestPeer::header(r, "cookie").map(str::to_string);
        let body = String::from_utf8_lossy(&r.body).into_owned();
        self.seen.lock().unwrap().push(Seen { at: Instant::now(), call: call.clone(), query: query.into(), cookie: cookie.clone(), body });
        match *self.health.lock().unwrap() {
            Health::Well => {}
            Health::Unavailable => return Reply::Status(503, r#"{"message":"Service Unavailable"}"#.into()),
            Health::Hanging => return Reply::Hang,
        }
        let url = &self.url;
        if call == "GET /api/rest" {
            let doc = serde_json::json!({
                "serverInfo": { "productName": "O2G Solution", "productVersion": { "major": "2.6" } },
                "versions": [{ "id": "1.0", "status": "CURRENT", "internalUrl": format!("{url}/api/rest/authenticate?version=1.0") }],
            });
            return Reply::Status(200, doc.to_string());
        }
        if call == "GET /api/rest/authenticate" {
            if TestPeer::header(r, "authorization") != Some(BASIC) {
                return Reply::Status(401, String::new());
            }
            let n = self.credentials.fetch_add(1, Ordering::SeqCst) + 1;
            return Reply::Status(200, serde_json::json!({ "credential": format!("cred-{n}"), "internalUrl": format!("{url}{API}/sessions") }).to_string());
        }
        // Everything else is the session's.
        if cookie.as_deref() != Some(self.cookie().as_str()) {
            return Reply::Status(401, r#"{"message":"no session"}"#.into());
        }
        let login = query.strip_prefix("loginName=").unwrap_or_default().to_string();
        match call.as_str() {
            "POST /api/rest/1.0/sessions" => {
                let doc = serde_json::json!({
                    "admin": true, "login": LOGIN, "timeToLive": 300, "privateBaseUrl": format!("{url}{API}"),
                    "services": [
                        { "serviceName": "Subscriptions", "relativeUrl": "/subscriptions" },
                        { "serviceName": "Telephony", "relativeUrl": "/telephony/calls" },
                        { "serviceName": "Routing", "relativeUrl": "/routing" },
                    ],
                });
                Reply::Status(200, doc.to_string())
            }
            "POST /api/rest/1.0/sessions/keepalive" | "DELETE /api/rest/1.0/sessions" => Reply::Status(204, String::new()),
            "POST /api/rest/1.0/subscriptions" => {
                let id = format!("sub-{}", self.subscriptions.fetch_add(1, Ordering::SeqCst) + 1);
                let doc = serde_json::json!({ "subscriptionId": id, "status": "ACCEPTED", "mode": "CHUNK", "privatePollingUrl": format!("{url}/OTEvents?subscriptionId={id}") });
                Reply::Status(200, doc.to_string())
            }
            c if c.starts_with("DELETE /api/rest/1.0/subscriptions/") => Reply::Status(204, String::new()),
            "POST /OTEvents" => {
                let (tx, rx) = unbounded_channel();
                let _ = tx.send(b"{\"eventName\":\"OnChannelInformation\",\"text\":\"channel established\"}\n".to_vec());
                self.channels.lock().unwrap().push(tx);
                Reply::Stream(rx)
            }
            "POST /api/rest/1.0/telephony/state/snapshot" => {
                self.push(serde_json::json!({ "eventName": "OnTelephonyState", "loginName": login, "state": { "calls": [], "userState": "FREE" } }));
                Reply::Status(204, String::new())
            }
            "POST /api/rest/1.0/routing/state/snapshot" => {
                if self.answer_routing.load(Ordering::SeqCst) {
                    let state = self.routing.lock().unwrap().get(&login).cloned().unwrap_or_else(|| serde_json::json!({}));
                    self.push(serde_json::json!({ "eventName": "OnRoutingStateChanged", "loginName": login, "routingState": state }));
                }
                Reply::Status(204, String::new())
            }
            _ => Reply::Status(404, r#"{"message":"not found"}"#.into()),
        }
    }
}

/// Åsa (extension 2624) and Märta (2787).
fn directory() -> Directory {
    let people = [("asa.ostberg", "Åsa Östberg", "2624"), ("marta.lind", "Märta Lind", "2787")].map(|(id, name, ext)| {
        let mut p = Person::new(id, name);
        p.extension = Some(ext.into());
        p
    });
    Directory::build(people.to_vec(), &NumberPlan::sweden()).expect("directory")
}

/// The provider (named `o2g`) against its server, running on the current `LocalSet`.
struct Running {
    _peer: TestPeer,
    o2g: Arc<O2g>,
    h: TestHarness,
    /// Åsa's and Märta's indices.
    asa: UserIdx,
    marta: UserIdx,
    run: tokio::task::JoinHandle<Result<(), crate::ProviderError>>,
}

impl Running {
    /// Starts the server and the provider, with `tune` applied to its settings. The provider
    /// runs from the caller's first wait on, so the server can be set up until then.
    async fn launch(tune: impl FnOnce(&mut O2gConfig)) -> Running {
        let (peer, o2g) = O2g::start().await;
        let dir = directory();
        let (asa, marta) = (dir.by_id("asa.ostberg").expect("Åsa"), dir.by_id("marta.lind").expect("Märta"));
        let mut cfg = O2gConfig::new("o2g", &o2g.url, LOGIN, PASSWORD);
        tune(&mut cfg);
        let (mut ctx, h) = ProviderContext::for_test("o2g", dir, "http://127.0.0.1:9");
        // Under the paused clock a chunked answer on a connection taken from the client's pool
        // never delivers its body (a real clock does): every request gets a connection of its own.
        ctx.http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().expect("client");
        let run = tokio::task::spawn_local(super::task(&cfg, ctx).expect("task"));
        Running { _peer: peer, o2g, h, asa, marta, run }
    }

    /// [`Running::launch`] with the defaults, until the feed is up.
    async fn up() -> Running {
        let mut r = Running::launch(|_| {}).await;
        r.until_feed(true, Duration::from_secs(10)).await;
        r
    }

    /// Shuts the provider down and waits for its graceful stop.
    async fn stop(self) -> Arc<O2g> {
        self.h.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.run).await.expect("stops in time").expect("no panic").expect("ok");
        self.o2g
    }

    /// Events until the feed goes `up` (or down) within `within`; the signals seen before.
    async fn until_feed(&mut self, up: bool, within: Duration) -> Vec<(UserIdx, Signal)> {
        let mut seen = Vec::new();
        loop {
            let Ok(ev) = tokio::time::timeout(within, self.h.events.recv()).await else {
                panic!("feed not {up} within {within:?}; saw {seen:?}; feed {:?}", self.h.feed.report());
            };
            match ev.expect("the provider is running") {
                SinkEvent::Feed(u) if u == up => return seen,
                SinkEvent::Feed(u) => panic!("feed went {u} while waiting for {up}"),
                SinkEvent::Signal(i, s) => seen.push((i, s)),
            }
        }
    }

    /// The next event, a signal: who, and what it says.
    async fn next_signal(&mut self) -> (UserIdx, View) {
        match tokio::time::timeout(Duration::from_secs(10), self.h.events.recv()).await.expect("a signal within 10 s").expect("running") {
            SinkEvent::Signal(i, s) => (i, view(&s)),
            other => panic!("expected a signal, got {other:?}"),
        }
    }

    /// True when no feed change (`up`, or any with `None`) is among the events so far.
    fn no_feed_change(&mut self, up: Option<bool>) -> bool {
        self.h.drain().iter().all(|e| !matches!(e, SinkEvent::Feed(u) if up.is_none_or(|up| *u == up)))
    }
}

/// What a `pbx` signal says: instance, availability, activity, note.
type View = (String, Option<Availability>, Option<Activity>, Option<String>);

fn view(s: &Signal) -> View {
    assert_eq!(s.source, Source::Pbx);
    (s.instance.to_string(), s.availability, s.activity.clone(), s.note.as_deref().map(str::to_string))
}

fn telephony(a: Availability, activity: Option<Activity>) -> View {
    ("o2g".into(), Some(a), activity, None)
}

#[tokio::test(start_paused = true)]
async fn a_call_and_a_routing_change_become_the_persons_signals_once_the_feed_is_up() {
    local(async {
        let mut r = Running::launch(|_| {}).await;
        let (o2g, asa, marta) = (r.o2g.clone(), r.asa, r.marta);
        o2g.routing.lock().unwrap().insert("2787".into(), serde_json::json!({ "forwardRoutes": [{ "destinations": [{ "type": "VOICEMAIL" }] }] }));

        // Login, subscription, channel, snapshots: each person's state is in before the feed is up.
        let before = r.until_feed(true, Duration::from_secs(10)).await;
        let last = |who: UserIdx, instance: &str| before.iter().rev().find(|(i, s)| *i == who && &*s.instance == instance).map(|(_, s)| view(s));
        assert_eq!(last(asa, "o2g"), Some(telephony(Availability::Available, None)));
        assert_eq!(last(marta, "o2g"), Some(telephony(Availability::Available, None)));
        assert_eq!(last(marta, "o2g-routing"), Some(("o2g-routing".into(), None, None, Some("Forwarded to voicemail".into()))));
        assert!(last(asa, "o2g-routing").is_some_and(|(_, a, _, n)| a.is_none() && n.is_none()), "nothing set retracts the slot");

        // The session: HTTP Basic (the server refuses anything else), then the cookie.
        assert_eq!(o2g.requests("GET /api/rest/authenticate").len(), 1);
        let subscribe = o2g.requests("POST /api/rest/1.0/subscriptions");
        assert_eq!(subscribe.len(), 1);
        assert_eq!(subscribe[0].cookie.as_deref(), Some("AlcUserId=cred-1"));
        let body: serde_json::Value = serde_json::from_str(&subscribe[0].body).expect("JSON");
        assert_eq!(body["filter"]["selectors"][0], serde_json::json!({ "ids": ["2624", "2787"], "names": ["telephony"] }));
        assert_eq!(body["filter"]["selectors"][1]["names"], serde_json::json!(["routingManagement"]));
        assert_eq!(body["timeout"], 60);
        let snapshots: Vec<String> = o2g.requests("POST /api/rest/1.0/telephony/state/snapshot").into_iter().map(|s| s.query).collect();
        assert_eq!(snapshots.len(), 2, "{snapshots:?}");
        assert!(snapshots.contains(&"loginName=2624".to_string()) && snapshots.contains(&"loginName=2787".to_string()));

        // A call rings at Åsa's desk phone; she answers.
        o2g.push(serde_json::json!({ "eventName": "OnCallCreated", "loginName": "2624", "callRef": "c1", "legs": [{ "deviceId": "2624", "state": "RINGING_INCOMING" }] }));
        assert_eq!(r.next_signal().await, (asa, telephony(Availability::Busy, Some(Activity::Ringing))));
        o2g.push(serde_json::json!({ "eventName": "OnCallModified", "loginName": "2624", "callRef": "c1", "modifiedLegs": [{ "deviceId": "2624", "state": "ACTIVE" }] }));
        assert_eq!(r.next_signal().await, (asa, telephony(Availability::Busy, Some(Activity::InACall))));

        // Märta turns DND on, keeping her forward.
        o2g.push(serde_json::json!({
            "eventName": "OnRoutingStateChanged", "loginName": "2787",
            "routingState": { "dndState": { "activate": true }, "forwardRoutes": [{ "destinations": [{ "type": "VOICEMAIL" }] }] },
        }));
        assert_eq!(r.next_signal().await, (marta, ("o2g-routing".into(), Some(Availability::DoNotDisturb), None, Some("Forwarded to voicemail".into()))));

        // Someone the directory does not know: counted, no signal. Then Åsa's call ends.
        o2g.push(serde_json::json!({ "eventName": "OnUserStateModified", "loginName": "9999", "state": "BUSY" }));
        o2g.push(serde_json::json!({ "eventName": "OnCallRemoved", "loginName": "2624", "callRef": "c1" }));
        assert_eq!(r.next_signal().await, (asa, telephony(Availability::Available, None)));
        assert_eq!(r.h.feed.unresolved.load(Ordering::Relaxed), 1);
        r.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_that_never_comes_holds_the_feed_down_until_the_resync_deadline() {
    local(async {
        let mut r = Running::launch(|_| {}).await;
        r.o2g.answer_routing.store(false, Ordering::SeqCst);
        let t0 = Instant::now();
        let before = r.until_feed(true, Duration::from_secs(60)).await;
        let took = t0.elapsed();
        assert!((RESYNC_DEADLINE..RESYNC_DEADLINE + Duration::from_secs(1)).contains(&took), "up after {took:?}");
        assert!(before.iter().all(|(_, s)| &*s.instance == "o2g"), "no routing signal without its snapshot: {before:?}");
        r.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_server_takes_the_feed_down_and_the_provider_logs_in_again_with_back_off() {
    local(async {
        let mut r = Running::up().await;
        let o2g = r.o2g.clone();

        // The server fails: the channel ends, its re-opening is refused.
        o2g.set_health(Health::Unavailable);
        o2g.end_channels();
        r.until_feed(false, Duration::from_secs(5)).await;
        let down_at = Instant::now();
        let error = r.h.feed.report().last_error.unwrap_or_default();
        assert!(error.contains("503"), "{error}");

        // Back-off between the login attempts: each wait in the upper half of 2, 4, 8, 16 s.
        tokio::time::sleep(Duration::from_secs(40)).await;
        let mut at = vec![down_at];
        at.extend(o2g.requests("GET /api/rest/authenticate").iter().skip(1).map(|s| s.at));
        let waits: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(waits.len() >= 4, "{waits:?}");
        for (wait, nominal) in waits.iter().zip([2, 4, 8, 16]) {
            let nominal = Duration::from_secs(nominal);
            assert!(*wait >= nominal / 2 && *wait <= nominal + Duration::from_millis(100), "waits {waits:?}");
        }
        assert!(r.no_feed_change(Some(true)), "the feed stays down while the server fails");

        // The server is back: a new session, a new subscription, the feed up again.
        o2g.set_health(Health::Well);
        r.until_feed(true, Duration::from_secs(40)).await;
        assert_eq!(o2g.credentials.load(Ordering::SeqCst), 2, "logged in again");
        let subscribed = o2g.requests("POST /api/rest/1.0/subscriptions");
        assert_eq!(subscribed.last().and_then(|s| s.cookie.clone()), Some("AlcUserId=cred-2".into()));
        assert_eq!(o2g.subscriptions.load(Ordering::SeqCst), 2);
        r.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_channel_is_reopened_and_a_hanging_one_is_lost_at_its_deadline() {
    local(async {
        let mut r = Running::launch(|c| {
            c.stream_idle_secs = 30;
            c.call_timeout_secs = 5;
        })
        .await;
        r.until_feed(true, Duration::from_secs(10)).await;
        let o2g = r.o2g.clone();
        assert_eq!(o2g.requests("POST /OTEvents").len(), 1);

        // 30 s of silence: the channel is re-opened; the feed stays up and events flow again.
        tokio::time::sleep(Duration::from_millis(30_500)).await;
        assert_eq!(o2g.requests("POST /OTEvents").len(), 2, "re-opened after stream_idle_secs");
        assert!(r.no_feed_change(None), "the feed stays up");
        o2g.push(serde_json::json!({ "eventName": "OnUserStateModified", "loginName": "2624", "state": "BUSY" }));
        assert_eq!(r.next_signal().await, (r.asa, telephony(Availability::Busy, None)));

        // The server hangs: the channel ends and its re-opening gets no answer. The feed goes
        // down at the opening's deadline (5 s), not before.
        o2g.set_health(Health::Hanging);
        o2g.end_channels();
        let t0 = Instant::now();
        r.until_feed(false, Duration::from_secs(30)).await;
        let took = t0.elapsed();
        assert!((Duration::from_secs(5)..Duration::from_secs(7)).contains(&took), "down after {took:?}");
        assert!(r.h.feed.report().last_error.is_some_and(|e| e.contains("event channel")));

        o2g.set_health(Health::Well);
        r.until_feed(true, Duration::from_secs(60)).await;
        r.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_deletes_the_subscription_then_ends_the_session() {
    local(async {
        let r = Running::up().await;
        assert!(r.o2g.requests("DELETE /api/rest/1.0/sessions").is_empty());
        let o2g = r.stop().await;

        // Both calls were made, with the session's cookie, before the task returned.
        let calls: Vec<String> = o2g.seen.lock().unwrap().iter().map(|s| s.call.clone()).collect();
        let delete_sub = calls.iter().position(|c| c == "DELETE /api/rest/1.0/subscriptions/sub-1").expect("subscription deleted");
        let logout = calls.iter().position(|c| c == "DELETE /api/rest/1.0/sessions").expect("session ended");
        assert!(delete_sub < logout, "{calls:?}");
        assert_eq!(logout, calls.len() - 1, "nothing after the logout: {calls:?}");
        assert_eq!(o2g.requests("DELETE /api/rest/1.0/sessions")[0].cookie.as_deref(), Some("AlcUserId=cred-1"));
    })
    .await;
}

/// The directory changes while the provider runs (no restart): Märta leaves and Cy (2700)
/// joins — the subscription is deleted and made anew for 2624 and 2700 (O2G cannot change a
/// filter), its channel opened, Cy's state read by snapshot, Märta's no longer asked for; the
/// feed never goes down.
#[tokio::test(start_paused = true)]
async fn the_subscription_follows_the_live_directory() {
    local(async {
        let mut r = Running::up().await;
        let o2g = r.o2g.clone();
        let asa = Person { extension: Some("2624".into()), ..Person::new("asa.ostberg", "Åsa Östberg") };
        let cy = Person { extension: Some("2700".into()), ..Person::new("cy", "Cy Carlsson") };
        let (next, _) = r.h.directory.current().next(vec![asa, cy]).expect("next version");
        let next = next.expect("the version changes something");
        r.h.directory.replace(Arc::new(next));
        let cy = r.h.directory.current().by_id("cy").expect("Cy");
        loop {
            let (who, v) = r.next_signal().await;
            assert_ne!(who, r.marta, "nothing more about Märta");
            if who == cy && v == telephony(Availability::Available, None) {
                break;
            }
        }
        assert_eq!(o2g.requests("DELETE /api/rest/1.0/subscriptions/sub-1").len(), 1, "the old subscription is deleted");
        let subscribe = o2g.requests("POST /api/rest/1.0/subscriptions");
        assert_eq!(subscribe.len(), 2);
        let body: serde_json::Value = serde_json::from_str(&subscribe[1].body).expect("JSON");
        assert_eq!(body["filter"]["selectors"][0]["ids"], serde_json::json!(["2624", "2700"]));
        assert_eq!(o2g.requests("POST /OTEvents").len(), 2, "the new subscription's channel");
        let asked: Vec<String> = o2g.requests("POST /api/rest/1.0/telephony/state/snapshot").into_iter().skip(2).map(|s| s.query).collect();
        assert!(asked.contains(&"loginName=2700".to_string()) && !asked.contains(&"loginName=2787".to_string()), "{asked:?}");
        assert_eq!(o2g.requests("GET /api/rest/authenticate").len(), 1, "the same session");
        assert!(r.no_feed_change(Some(false)), "the feed never went down");
        let o2g = r.stop().await;
        assert_eq!(o2g.requests("DELETE /api/rest/1.0/subscriptions/sub-2").len(), 1, "the new one is deleted at shutdown");
    })
    .await;
}
