//! Runtime tests of the Graph provider without a hub: [`ProviderContext::for_test`] records
//! its signals and feed changes, and a scripted peer ([`TestPeer`]) plays the token endpoint
//! and Graph — answering, failing, hanging or streaming an endless answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use presence_actors::directory::{from_csv, Directory, NumberPlan};
use presence_actors::hub::SinkEvent;
use presence_actors::model::Availability;
use presence_actors::provider::{Cursors, HookRequest, ProviderContext, TestHarness};

use super::GraphPresenceConfig;
use crate::common::config::{provider_error, valid_provider};
use crate::common::test_peer::{local, Reply, Request, TestPeer};

/// Åsa Östberg's Entra object id in fixtures/directory/demo.csv.
const ASA: &str = "10a7755d-ff8d-5b50-bd78-633734ff90bf";
const CLIENT_STATE: &str = "runtime-test-client-state";

fn directory() -> Directory {
    let csv = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/directory/demo.csv")).expect("demo directory");
    let plan = NumberPlan::sweden();
    Directory::build(from_csv(&csv[..], &plan).expect("csv"), &plan).expect("directory")
}

fn config(peer: &TestPeer, extra: &str) -> GraphPresenceConfig {
    let text = format!(
        "name = \"teams\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\ntoken_url = \"{0}/token\"\ngraph_url = \"{0}\"\nclient_state = \"{CLIENT_STATE}\"\nbatch_ms = 10\nread_timeout_secs = 1\n{extra}",
        peer.url
    );
    toml::from_str(&text).expect("config")
}

/// Graph as it answers when well: a token, and every asked-for person Available — except
/// those in `busy`, Busy/InACall.
fn graph(busy: Arc<AtomicBool>) -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    move |r: &Request| {
        if r.path == "/token" {
            return Reply::Status(200, r#"{"access_token":"at","expires_in":3600,"token_type":"Bearer"}"#.into());
        }
        if r.path == "/communications/getPresencesByUserId" {
            if TestPeer::header(r, "authorization") != Some("Bearer at") {
                return Reply::Status(401, r#"{"error":{"code":"InvalidAuthenticationToken","message":"no token"}}"#.into());
            }
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let items: Vec<serde_json::Value> = v["ids"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|id| {
                    let asa_busy = id == ASA && busy.load(Ordering::Relaxed);
                    let (a, act) = if asa_busy { ("Busy", "InACall") } else { ("Available", "Available") };
                    serde_json::json!({ "id": id, "availability": a, "activity": act })
                })
                .collect();
            return Reply::Status(200, serde_json::json!({ "value": items }).to_string());
        }
        if r.method == "POST" && r.path == "/subscriptions" {
            return Reply::Status(201, r#"{"id":"sub-1","expirationDateTime":"2099-01-01T00:00:00Z"}"#.into());
        }
        if r.method == "PATCH" && r.path.starts_with("/subscriptions/") {
            return Reply::Status(200, r#"{"id":"sub-1","expirationDateTime":"2099-01-01T00:00:00Z"}"#.into());
        }
        if r.method == "DELETE" && r.path.starts_with("/subscriptions/") {
            return Reply::Status(204, String::new());
        }
        Reply::Status(404, r#"{"error":{"code":"NotFound","message":"no"}}"#.into())
    }
}

/// The provider with `extra` config against `peer`, running on the current `LocalSet`: its
/// harness, Åsa's index and the task.
fn start(peer: &TestPeer, extra: &str) -> (TestHarness, u32, tokio::task::JoinHandle<Result<(), crate::ProviderError>>) {
    let dir = directory();
    let asa = dir.by_id("asa.ostberg").expect("Åsa");
    let (ctx, h) = ProviderContext::for_test("teams", dir, "http://127.0.0.1:9");
    let run = tokio::task::spawn_local(super::task(&config(peer, extra), ctx).expect("task"));
    (h, asa, run)
}

/// Shuts the provider down and waits for its graceful stop.
async fn stop(h: &TestHarness, run: tokio::task::JoinHandle<Result<(), crate::ProviderError>>) {
    h.trigger.trigger();
    tokio::time::timeout(Duration::from_secs(5), run).await.expect("stops in time").expect("no panic").expect("ok");
}

/// Runs the provider with `extra` config against `peer` on a new `LocalSet`, hands `body` its
/// harness and Åsa's index, then shuts it down and waits for its graceful stop; returns the
/// harness for what is left to check.
async fn run_provider(peer: &TestPeer, extra: &str, body: impl AsyncFnOnce(&mut TestHarness, u32)) -> TestHarness {
    local(async {
        let (mut h, asa, run) = start(peer, extra);
        body(&mut h, asa).await;
        stop(&h, run).await;
        h
    })
    .await
}

/// Graph's notification that Åsa's presence changed.
fn notify(h: &TestHarness) {
    let body = serde_json::json!({ "value": [{
        "subscriptionId": "sub-1", "clientState": CLIENT_STATE, "changeType": "updated",
        "resource": format!("communications/presences/{ASA}"),
        "resourceData": { "@odata.type": "#Microsoft.Graph.presence", "id": ASA },
    }]});
    let hook = h.hooks.get("teams").expect("the webhook is registered");
    let req = HookRequest { method: "POST".into(), tail: "notify".into(), query: String::new(), headers: vec![], body: body.to_string().into_bytes() };
    assert_eq!(hook.handle(req).status, 202);
}

async fn next_event(h: &mut TestHarness) -> SinkEvent {
    tokio::time::timeout(Duration::from_secs(10), h.events.recv()).await.expect("an event within 10 s").expect("the provider is running")
}

/// Events until the feed changes; returns the signals about Åsa seen before it.
async fn until_feed(h: &mut TestHarness, up: bool, asa: u32) -> Vec<presence_actors::model::Signal> {
    let mut seen = Vec::new();
    loop {
        match next_event(h).await {
            SinkEvent::Feed(u) if u == up => return seen,
            SinkEvent::Feed(u) => panic!("feed went {u} while waiting for {up}"),
            SinkEvent::Signal(i, s) if i == asa => seen.push(s),
            SinkEvent::Signal(..) => {}
        }
    }
}

/// An outage while a change is notified: the read fails (here: Graph streams an endless
/// answer, which the bounded read cuts), the feed goes down after two failed reads, the
/// notified person stays pending, and when Graph answers again that person is read — and
/// delivered — before the feed comes back up.
#[tokio::test]
async fn nothing_notified_is_lost_and_the_notified_are_read_before_the_feed_is_up() {
    let busy = Arc::new(AtomicBool::new(false));
    let peer = TestPeer::start(graph(busy.clone())).await;
    run_provider(&peer, "notifications = false", async |h, asa| {
        // Start-up: everyone read, then the feed is up.
        let before = until_feed(h, true, asa).await;
        assert_eq!(before.last().and_then(|s| s.availability), Some(Availability::Available));

        // Graph breaks: every read gets an answer that never ends.
        peer.set(|r: &Request| {
            if r.path == "/token" {
                return Reply::Status(200, r#"{"access_token":"at","expires_in":3600}"#.into());
            }
            Reply::Endless(vec![b' '; 64 * 1024])
        });
        busy.store(true, Ordering::Relaxed);
        notify(h);
        let during = until_feed(h, false, asa).await;
        assert!(during.is_empty(), "nothing read during the outage: {during:?}");
        assert!(h.feed.report().last_error.is_some_and(|e| e.contains("larger than")), "{:?}", h.feed.report().last_error);

        // Graph answers again: Åsa (notified during the outage) first, then up.
        peer.set(graph(busy.clone()));
        let after = until_feed(h, true, asa).await;
        let s = after.first().expect("Åsa was read before the feed came up");
        assert_eq!((s.availability, s.activity.clone()), (Some(Availability::Busy), Some(presence_actors::model::Activity::InACall)));
    })
    .await;
}

/// A hanging Graph: the read's deadline (1 s) fails it; the feed goes down within two
/// deadlines plus a retry, while notifications keep being taken.
#[tokio::test]
async fn a_hanging_read_fails_at_its_deadline_and_the_feed_goes_down() {
    let peer = TestPeer::start(graph(Arc::new(AtomicBool::new(false)))).await;
    run_provider(&peer, "notifications = false", async |h, asa| {
        until_feed(h, true, asa).await;
        peer.set(|r: &Request| if r.path == "/token" { Reply::Status(200, r#"{"access_token":"at"}"#.into()) } else { Reply::Hang });
        let t0 = std::time::Instant::now();
        notify(h);
        until_feed(h, false, asa).await;
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(4), "down after {took:?}");
        // Notifications are still taken while reads hang.
        for _ in 0..3 {
            notify(h);
        }
        // It stops while a read hangs.
    })
    .await;
}

/// At shutdown the provider deletes the subscription it holds, and forgets it.
#[tokio::test]
async fn shutdown_deletes_the_subscription() {
    let peer = TestPeer::start(graph(Arc::new(AtomicBool::new(false)))).await;
    let mut h = run_provider(&peer, "[[service_accounts]]\nname = \"svc1\"\nrefresh_token = \"rt\"\n", async |h, _| {
        let t0 = std::time::Instant::now();
        while peer.count("POST", "/subscriptions") == 0 {
            assert!(t0.elapsed() < Duration::from_secs(10), "no subscription created");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(h.cursors.get("teams", "subscription:svc1").is_some_and(|v| v.starts_with("sub-1\n")));
    })
    .await;
    assert_eq!(peer.count("DELETE", "/subscriptions/sub-1"), 1);
    assert_eq!(h.cursors.get("teams", "subscription:svc1").as_deref(), Some(""));
    assert!(h.hooks.get("teams").is_none(), "the webhook is unregistered");
    let _ = h.drain();
}

/// Every key the config file may hold, through the provider table as the hub reads it: the
/// app's keys land in [`super::MicrosoftApp`], any other key is refused by name, and a missing
/// credential is named by `validate`.
#[test]
fn config_keys_parse_flat_unknown_ones_are_refused_and_missing_credentials_named() {
    let all = "type = \"graph_presence\"\nname = \"teams\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\nauthority = \"https://login.example/\"\ntoken_url = \"https://login.example/tok\"\ngraph_url = \"https://graph.example/v1.0\"\nnotifications = false\nsubscription_minutes = 50\nrenew_before_secs = 300\nconsistency_poll_secs = 600\nfallback_poll_secs = 30\nbatch_ms = 20\nread_timeout_secs = 5\ncall_timeout_secs = 6\ndown_after_failures = 3\nwatchdog_secs = 40\nclient_state = \"cs\"\ninclude_resource_data = false\nencryption_certificate_id = \"id\"\n[[service_accounts]]\nname = \"svc\"\nrefresh_token = \"rt\"\n";
    let crate::ProviderConfig::GraphPresence(c) = valid_provider(all) else { panic!("graph_presence") };
    assert_eq!((c.app.tenant(), c.app.client_id(), c.app.client_secret()), (Some("t"), "c", "s"));
    assert_eq!((c.app.authority.as_str(), c.app.graph_url.as_str()), ("https://login.example/", "https://graph.example/v1.0"));
    assert_eq!(c.app.token_endpoint(), "https://login.example/tok");
    assert_eq!((c.subscription_minutes, c.read_timeout_secs, c.call_timeout_secs, c.watchdog_secs), (50, 5, 6, 40));
    assert_eq!((c.service_accounts.len(), c.client_state.as_deref(), c.notifications), (1, Some("cs"), false));

    let minimal = "type = \"graph_presence\"\nname = \"teams\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\nnotifications = false\n";
    let crate::ProviderConfig::GraphPresence(c) = valid_provider(minimal) else { panic!("graph_presence") };
    assert_eq!(c.app.token_endpoint(), "https://login.microsoftonline.com/t/oauth2/v2.0/token");
    assert_eq!(c.app.graph_url, "https://graph.microsoft.com/v1.0");
    assert_eq!((c.subscription_minutes, c.renew_before_secs, c.batch_ms, c.down_after_failures), (55, 600, 50, 2));

    for (text, want) in [
        (format!("{minimal}tenant = \"t\"\n"), "unknown field `tenant`"),
        (minimal.replace("tenant_id = \"t\"\n", ""), "tenant_id must be set"),
        (minimal.replace("client_secret = \"s\"\n", ""), "client_secret must be set"),
        (format!("{minimal}graph_url = \"graph.example\"\n"), "graph_url must be an http(s) URL"),
    ] {
        let e = provider_error(&text);
        assert!(e.contains(want), "{want}: {e}");
    }
}

/// A service account with neither a configured nor a stored refresh token: the task ends at
/// once with an error that names the account and the login command (the supervisor marks the
/// feed down and retries), and nothing is called. With a stored token (what `presence-hub
/// login graph` leaves) it runs and uses that token for the subscription.
#[tokio::test]
async fn a_service_account_without_a_refresh_token_needs_a_login() {
    let peer = TestPeer::start(graph(Arc::new(AtomicBool::new(false)))).await;
    local(async {
        let (ctx, h) = ProviderContext::for_test("teams", directory(), "http://127.0.0.1:9");
        let cfg = config(&peer, "[[service_accounts]]\nname = \"svc1\"\n");
        let run = super::task(&cfg, ctx.clone()).expect("a config without refresh_token is valid");
        let e = tokio::time::timeout(Duration::from_secs(5), run).await.expect("ends at once").expect_err("fails");
        let text = e.to_string();
        assert!(text.contains("\"svc1\"") && text.contains("presence-hub login graph --account svc1"), "{text}");
        assert_eq!(peer.count("POST", "/token"), 0, "nothing is asked for");
        assert!(h.hooks.get("teams").is_none());
        // `login graph` stored one: the provider starts and redeems it.
        h.cursors.set("teams", "refresh:svc1", "rt-from-login");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let inner = graph(Arc::new(AtomicBool::new(false)));
        peer.set(move |r| {
            if r.path == "/token" {
                s.lock().unwrap().push(String::from_utf8_lossy(&r.body).to_string());
            }
            inner(r)
        });
        let run = tokio::task::spawn_local(super::task(&cfg, ctx).expect("task"));
        let t0 = std::time::Instant::now();
        while peer.count("POST", "/subscriptions") == 0 {
            assert!(t0.elapsed() < Duration::from_secs(10), "no subscription created");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(seen.lock().unwrap().iter().any(|f| f.contains("grant_type=refresh_token") && f.contains("refresh_token=rt-from-login")));
        stop(&h, run).await;
    })
    .await;
}

#[test]
fn service_accounts_and_the_device_code_endpoint_in_the_config() {
    let base = "type = \"graph_presence\"\nname = \"teams\"\ntenant_id = \"t1\"\nclient_id = \"c\"\nclient_secret = \"s\"\n";
    let crate::ProviderConfig::GraphPresence(c) = valid_provider(&format!("{base}[[service_accounts]]\nname = \"svc\"\n")) else { panic!("graph_presence") };
    assert_eq!(c.service_accounts[0].refresh_token, None);
    assert_eq!(c.device_code_endpoint().as_deref(), Some("https://login.microsoftonline.com/t1/oauth2/v2.0/devicecode"));
    let blank = super::ServiceAccount { name: "svc".into(), refresh_token: Some(" ".into()) };
    assert_eq!(blank.configured_refresh_token(), None);
    let crate::ProviderConfig::GraphPresence(c) = valid_provider(&format!("{base}device_code_url = \"https://idp.example/dc\"\ntoken_url = \"https://idp.example/tok\"\nnotifications = false\n")) else { panic!("graph_presence") };
    assert_eq!(c.device_code_endpoint().as_deref(), Some("https://idp.example/dc"));
    let crate::ProviderConfig::GraphPresence(c) = valid_provider(&format!("{base}token_url = \"https://idp.example/tok\"\nnotifications = false\n")) else { panic!("graph_presence") };
    assert_eq!(c.device_code_endpoint(), None, "no /token to pair with");
    for (text, want) in [
        (format!("{base}[[service_accounts]]\nname = \"a\"\n[[service_accounts]]\nname = \"a\"\n"), "service account \"a\" is listed twice"),
        (format!("{base}[[service_accounts]]\nname = \" \"\n"), "name must be 1-256 characters"),
        (format!("{base}device_code_url = \"idp\"\nnotifications = false\n"), "device_code_url must be an http(s) URL"),
    ] {
        let e = provider_error(&text);
        assert!(e.contains(want), "{want}: {e}");
    }
}

/// The directory changes while the provider runs (no restart), with one service account's
/// subscription for Ada and Bo: Bo leaves and Cy joins — the subscription is deleted and made
/// anew for Ada and Cy (Graph cannot change its resource), Cy is read at once, Bo no longer.
#[tokio::test]
async fn reads_and_the_subscription_follow_the_live_directory() {
    use presence_actors::directory::{ExternalId, Person};
    const ADA: &str = "0000000a-0000-4000-8000-00000000000a";
    const BO: &str = "0000000b-0000-4000-8000-00000000000b";
    const CY: &str = "0000000c-0000-4000-8000-00000000000c";
    let person = |id: &str, entra: &str| Person { external_ids: vec![ExternalId { kind: "entra".into(), value: entra.into() }], ..Person::new(id, id) };
    let peer = TestPeer::start(graph(Arc::new(AtomicBool::new(false)))).await;
    let within = async |what: &str, f: &dyn Fn() -> bool| {
        let t0 = std::time::Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(10), "{what} within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let bodies = |path: &str| peer.requests("POST", path).into_iter().map(|r| String::from_utf8_lossy(&r.body).to_string()).collect::<Vec<_>>();
    local(async {
        let dir = Directory::build(vec![person("ada", ADA), person("bo", BO), Person::new("di", "no entra id")], &NumberPlan::sweden()).expect("directory");
        let (ctx, mut h) = ProviderContext::for_test("teams", dir, "http://127.0.0.1:9");
        let cfg = config(&peer, "[[service_accounts]]\nname = \"svc1\"\nrefresh_token = \"rt\"\n");
        let run = tokio::task::spawn_local(super::task(&cfg, ctx).expect("task"));
        within("the subscription", &|| peer.count("POST", "/subscriptions") == 1).await;
        let first = bodies("/subscriptions").remove(0);
        assert!(first.contains(ADA) && first.contains(BO), "{first}");

        let (next, _) = h.directory.current().next(vec![person("ada", ADA), person("cy", CY)]).expect("next version");

        let next = next.expect("the version changes something");
        h.directory.replace(Arc::new(next));
        let cy = h.directory.current().by_id("cy").expect("Cy");
        within("the new subscription", &|| peer.count("POST", "/subscriptions") == 2).await;
        assert_eq!(peer.count("DELETE", "/subscriptions/sub-1"), 1, "the old one is deleted first");
        let second = bodies("/subscriptions").remove(1);
        assert!(second.contains(ADA) && second.contains(CY) && !second.contains(BO), "{second}");
        assert_eq!(h.cursors.get("teams", "subscription:svc1").as_deref().map(|c| c.starts_with("sub-1\n")), Some(true), "the new one is remembered");
        loop {
            match next_event(&mut h).await {
                SinkEvent::Signal(u, s) if u == cy => {
                    assert_eq!(s.availability, Some(Availability::Available));
                    break;
                }
                _ => {}
            }
        }
        let reads = bodies("/communications/getPresencesByUserId");
        let last = reads.last().expect("reads");
        assert!(reads.iter().any(|b| b.contains(CY)), "Cy is read: {reads:?}");
        assert!(!last.contains(BO), "Bo is no longer read: {last}");
        stop(&h, run).await;
        assert_eq!(peer.count("DELETE", "/subscriptions/sub-1"), 2, "the new one is deleted at shutdown");
    })
    .await;
}
