//! End-to-end tests of the cluster (issue 15): real hub processes (`presence-hub --config`) as
//! one cluster on a real three-server NATS JetStream cluster (`tests/common/nats.rs`), each
//! configured with the same two feeds — Teams (`graph_presence` against the in-test Graph
//! simulator) and the PBX's busy lamps (`sip_dialog` against the in-test PBX simulator) — which
//! must run on exactly one node at a time.
//!
//! - kill -9 of the node running both feeds: a survivor runs each within the lease plus 5 s,
//!   and the simulators' logs of subscription activity switch owner once (nothing from the dead
//!   node after the first thing from the new one). Then SIGTERM to a survivor: it gives its
//!   leases back and the last node runs its feeds at once, not a lease later.
//! - A node cut from NATS (through a TCP proxy, `tests/common/cluster.rs`) stops its feeds
//!   within the lease — its graceful unsubscribe reaches the peers before the new owner's first
//!   subscription — and says so on `/readyz`; another node runs them within 5 s of the lease
//!   expiring; healed, the node is ready again and does not take its feeds back.
//! - The NATS server leading the hub's buckets dies: no feed runs twice, and every node's view
//!   of the leases is right again within 15 s.
//! - A node that cannot reach NATS at start exits non-zero at once, naming NATS.
//!
//! Needs Debian's `nats-server` (`./test.sh` installs it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use presence_simulators::graph::{GraphSim, GraphSimConfig};
use presence_simulators::pbx::{PbxSim, PbxSimConfig};
use presence_simulators::SubEvent;
use serde_json::Value;

use crate::common::cluster::{lease_owner, wait_until, HubCluster, HubNode, TcpProxy};
use crate::common::demo_column;
use crate::common::nats::{NatsCluster, NatsConn};

/// `cluster.lease_ms` of every node.
const LEASE_MS: u64 = 3000;
const LEASE: Duration = Duration::from_millis(LEASE_MS);
/// The two feeds, by provider name.
const FEEDS: [&str; 2] = ["teams", "pbx"];
/// People with an extension in the demo directory (each gets a SUBSCRIBE).
const EXTENSIONS: usize = 320;
const START: Duration = Duration::from_secs(30);

fn graph_sim() -> GraphSim {
    let sim = GraphSim::start(GraphSimConfig::default()).unwrap();
    let ids: Vec<String> = demo_column("entra_id").into_iter().filter(|s| s.len() == 36).collect();
    let seed: Vec<(&str, &str, &str)> = ids.iter().map(|i| (i.as_str(), "Available", "Available")).collect();
    sim.seed(&seed);
    sim
}

/// The two `[[providers]]` blocks of a node (its own SIP port for the PBX provider).
fn providers(graph: &GraphSim, pbx: &PbxSim) -> impl Fn(&HubNode) -> String {
    let (token_url, graph_url, pbx) = (graph.token_url(), graph.graph_url(), pbx.addr());
    move |node: &HubNode| {
        format!(
            r#"[[providers]]
type = "graph_presence"
name = "teams"
tenant_id = "sim-tenant"
client_id = "sim-client"
client_secret = "sim-secret"
token_url = "{token_url}"
graph_url = "{graph_url}"
client_state = "the-hubs-secret-client-state"
batch_ms = 20
[[providers.service_accounts]]
name = "svc1@sim.example"
refresh_token = "rt-svc1-0"
[[providers]]
type = "sip_dialog"
name = "pbx"
server = "{pbx}"
domain = "pbx.nordvik.se"
subscribe_rate = 2000
keepalive_secs = 1
local = "{}"
"#,
            node.sip_addr()
        )
    }
}

/// Ok when `node` holds the lease of `feed` (its own `/api/cluster`) and runs it (its
/// `/api/providers` says up).
async fn runs(node: &HubNode, feed: &str) -> Result<(), String> {
    let owner = lease_owner(&node.cluster_report().await, feed);
    let p = node.provider(feed).await;
    if owner.as_deref() == Some(node.name.as_str()) && p["state"] == "up" && p["up"] == true {
        Ok(())
    } else {
        Err(format!("{}: lease of {feed} owned by {owner:?}, provider {}/{}", node.name, p["state"], p["up"]))
    }
}

/// Ok with the owner's index when every node in `among` names the same owner of `feed`'s lease,
/// that owner is one of them, and it runs the feed.
async fn run_by_one_of(c: &HubCluster, among: &[usize], feed: &str) -> Result<usize, String> {
    let mut owners = Vec::new();
    for &i in among {
        owners.push(lease_owner(&c.nodes[i].cluster_report().await, feed));
    }
    let first = owners[0].clone().ok_or_else(|| format!("{feed}: no owner in the views {owners:?}"))?;
    if owners.iter().any(|o| o.as_deref() != Some(first.as_str())) {
        return Err(format!("{feed}: the nodes disagree on the owner: {owners:?}"));
    }
    let Some(&i) = among.iter().find(|&&i| c.nodes[i].name == first) else {
        return Err(format!("{feed}: owned by {first}, not one of the nodes asked"));
    };
    runs(&c.nodes[i], feed).await.map(|()| i)
}

/// Ok when every node in `among` sees `owner` holding both feeds' leases.
async fn all_see_owner(c: &HubCluster, among: &[usize], owner: &str) -> Result<(), String> {
    for &i in among {
        let r = c.nodes[i].cluster_report().await;
        for feed in FEEDS {
            let o = lease_owner(&r, feed);
            if o.as_deref() != Some(owner) {
                return Err(format!("{} sees {feed} owned by {o:?}", c.nodes[i].name));
            }
        }
    }
    Ok(())
}

/// A log of subscription activity in runs: `by what ×n (first..last ms after t0)`.
fn runs_of(log: &[SubEvent], t0: Instant) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < log.len() {
        let j = (i..log.len()).find(|&j| log[j].by != log[i].by || log[j].what != log[i].what).unwrap_or(log.len());
        let ms = |e: &SubEvent| e.at.checked_duration_since(t0).map_or_else(|| format!("-{}", t0.duration_since(e.at).as_millis()), |d| d.as_millis().to_string());
        out.push(format!("{} {} ×{} ({}..{} ms)", log[i].by, log[i].what, j - i, ms(&log[i]), ms(&log[j - 1])));
        i = j;
    }
    out.join("; ")
}

/// Checks that the activity in `log` went from one owner to the next in the order of `owners`
/// and never back: every event is by one of them, each did something, and each one's last event
/// came before the next one's first. Returns each one's (first, last) event.
fn in_turn(sim: &str, log: &[SubEvent], owners: &[&str], t0: Instant) -> Vec<(SubEvent, SubEvent)> {
    let shown = runs_of(log, t0);
    let strangers: Vec<&SubEvent> = log.iter().filter(|e| !owners.contains(&e.by.as_str())).collect();
    assert!(strangers.is_empty(), "{sim}: activity by none of {owners:?}: {strangers:?}; log: {shown}");
    let spans: Vec<(SubEvent, SubEvent)> = owners
        .iter()
        .map(|o| {
            let first = log.iter().find(|e| e.by == *o).unwrap_or_else(|| panic!("{sim}: nothing by {o}; log: {shown}"));
            let last = log.iter().rev().find(|e| e.by == *o).unwrap_or_else(|| panic!("{sim}: nothing by {o}; log: {shown}"));
            (first.clone(), last.clone())
        })
        .collect();
    for (w, pair) in spans.windows(2).enumerate() {
        let (old, new) = (&pair[0].1, &pair[1].0);
        assert!(
            old.at < new.at,
            "{sim}: two owners at once: {} {} at {} ms after {} {} at {} ms (after the fault); log: {shown}",
            owners[w],
            old.what,
            old.at.saturating_duration_since(t0).as_millis(),
            owners[w + 1],
            new.what,
            new.at.saturating_duration_since(t0).as_millis()
        );
    }
    spans
}

/// [`in_turn`] of two owners: returns `old`'s last event and `new`'s first.
fn switches_once(sim: &str, log: &[SubEvent], old: &str, new: &str, t0: Instant) -> (SubEvent, SubEvent) {
    let spans = in_turn(sim, log, &[old, new], t0);
    (spans[0].1.clone(), spans[1].0.clone())
}

/// The time `/api/cluster`'s `expires_at` (RFC 3339) stands for, as an `Instant`.
fn instant_of(rfc3339: &str) -> Instant {
    let at: jiff::Timestamp = rfc3339.parse().unwrap_or_else(|e| panic!("expires_at {rfc3339:?}: {e}"));
    let ahead = at.as_millisecond() - jiff::Timestamp::now().as_millisecond();
    let now = Instant::now();
    if ahead >= 0 {
        now + Duration::from_millis(ahead as u64)
    } else {
        now - Duration::from_millis((-ahead) as u64)
    }
}

/// Starts node `i` and waits until it is ready.
async fn start(c: &mut HubCluster, i: usize) {
    c.nodes[i].start();
    c.nodes[i].wait_ready(START).await;
}

/// Starts node `i` alone and waits until it runs both feeds with every subscription in place at
/// both simulators (320 SUBSCRIBEs, one Graph subscription made by it).
async fn start_owner(c: &mut HubCluster, i: usize, graph: &GraphSim, pbx: &PbxSim) {
    start(c, i).await;
    let node = &c.nodes[i];
    for feed in FEEDS {
        wait_until(&format!("{} to run {feed}", node.name), START, async || runs(node, feed).await).await;
    }
    wait_until("the owner's subscriptions at both simulators", START, async || {
        let p = node.provider("pbx").await;
        let created = graph.subscription_log().iter().any(|e| e.by == node.http_addr() && e.what == "create");
        if pbx.subscriptions() == EXTENSIONS && p["details"]["subscriptions_active"] == EXTENSIONS && created {
            Ok(())
        } else {
            Err(format!("PBX {} subscriptions, {} active at the node; Graph subscription created: {created}", pbx.subscriptions(), p["details"]["subscriptions_active"]))
        }
    })
    .await;
}

/// kill -9 of the node running both feeds: each moves to one survivor within the lease + 5 s
/// of the kill, and the simulators never see two owners at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_feeds_fail_over_to_a_survivor_after_kill_9_and_never_run_twice() {
    let graph = graph_sim();
    let pbx = PbxSim::start(PbxSimConfig::default()).unwrap();
    let mut c = HubCluster::new(NatsCluster::start(3));
    let urls = c.nats.urls();
    let blocks = providers(&graph, &pbx);
    for name in ["hub-a", "hub-b", "hub-c"] {
        c.add(HubNode::new(name, &urls, LEASE_MS, &blocks));
    }
    // A alone first, so both leases land on it.
    start_owner(&mut c, 0, &graph, &pbx).await;
    start(&mut c, 1).await;
    start(&mut c, 2).await;
    wait_until("every node to see hub-a holding both leases", START, async || all_see_owner(&c, &[0, 1, 2], "hub-a").await).await;
    for i in [1, 2] {
        for feed in FEEDS {
            // Standby here; `up` is how the feed is in the cluster (it runs on hub-a), as its
            // owner put it in the health bucket.
            wait_until(&format!("{} to show {feed} standby and up", c.nodes[i].name), Duration::from_secs(3), async || {
                let p = c.nodes[i].provider(feed).await;
                if (p["state"].as_str(), p["up"].as_bool()) == (Some("standby"), Some(true)) { Ok(()) } else { Err(p.to_string()) }
            })
            .await;
        }
    }

    let t_kill = Instant::now();
    c.nodes[0].kill9();
    let limit = LEASE + Duration::from_secs(5);
    let mut moved: HashMap<&str, (Duration, usize)> = HashMap::new();
    loop {
        let mut seen = Vec::new();
        for feed in FEEDS {
            if moved.contains_key(feed) {
                continue;
            }
            match run_by_one_of(&c, &[1, 2], feed).await {
                Ok(i) => {
                    moved.insert(feed, (t_kill.elapsed(), i));
                }
                Err(e) => seen.push(e),
            }
        }
        if moved.len() == FEEDS.len() {
            break;
        }
        assert!(t_kill.elapsed() < limit, "not every feed ran on a survivor within {limit:?} of the kill -9: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for feed in FEEDS {
        let (took, i) = moved[feed];
        eprintln!("failover after kill -9: {feed} up on {} {} ms after the kill (lease {LEASE_MS} ms)", c.nodes[i].name, took.as_millis());
    }

    // The simulators' logs: A's activity, then the new owner's, never interleaved.
    let new_teams = &c.nodes[moved["teams"].1];
    let (_, first) = switches_once("Graph", &graph.subscription_log(), &c.nodes[0].http_addr(), &new_teams.http_addr(), t_kill);
    assert!(first.at > t_kill);
    // Graph allows one presence subscription per account: the new owner found the dead node's
    // in the shared cursors, deleted it, and made its own (not refused, not polling).
    wait_until("the new owner's own Graph subscription", Duration::from_secs(10), async || {
        let log = graph.subscription_log();
        let after: Vec<_> = log.iter().filter(|e| e.at > t_kill).map(|e| format!("{} {}", e.by, e.what)).collect();
        let deleted = log.iter().any(|e| e.at > t_kill && e.by == c.nodes[0].http_addr() && e.what == "delete");
        let created = log.iter().any(|e| e.at > t_kill && e.by == new_teams.http_addr() && e.what == "create");
        if deleted && created { Ok(()) } else { Err(format!("{after:?}")) }
    })
    .await;
    let new_pbx = &c.nodes[moved["pbx"].1];
    let (_, first) = switches_once("PBX", &pbx.subscription_log(), &c.nodes[0].sip_addr(), &new_pbx.sip_addr(), t_kill);
    assert!(first.at > t_kill);
    wait_until("the new owner to subscribe every extension", Duration::from_secs(10), async || {
        let n = pbx.subscription_log().iter().filter(|e| e.by == new_pbx.sip_addr() && e.what == "subscribe").count();
        if n == EXTENSIONS { Ok(()) } else { Err(format!("{n} SUBSCRIBEs")) }
    })
    .await;
    // The survivors see the dead node gone.
    for i in [1, 2] {
        wait_until("the survivors to see hub-a dead", Duration::from_secs(10), async || {
            let r = c.nodes[i].cluster_report().await;
            let a = r["nodes"].as_array().and_then(|n| n.iter().find(|n| n["node"] == "hub-a").cloned());
            match a {
                Some(a) if a["alive"] == true => Err(format!("{}: hub-a {a}", c.nodes[i].name)),
                _ => Ok(()),
            }
        })
        .await;
    }

    // SIGTERM to the PBX's owner: it un-SUBSCRIBEs, gives its leases back and exits 0; the
    // last node takes its feeds over at once, not a lease later.
    let x = moved["pbx"].1;
    let y = if x == 1 { 2 } else { 1 };
    let handed: Vec<&str> = FEEDS.iter().copied().filter(|f| moved[f].1 == x).collect();
    // Every lease it holds is given back: its feeds, and directory sync if it runs it.
    let x_leases = c.nodes[y].cluster_report().await["leases"].as_array().unwrap().iter().filter(|l| l["owner"] == c.nodes[x].name.as_str()).count();
    let t_term = Instant::now();
    let status = c.nodes[x].sigterm();
    let t_exit = Instant::now();
    assert!(status.success(), "{} exit status {status}", c.nodes[x].name);
    let gave_back = c.nodes[x].log().lines().filter(|l| l.contains("Gave the lease back.")).count();
    assert_eq!(gave_back, x_leases, "{} gave back {handed:?} and maybe directory sync", c.nodes[x].name);
    for feed in &handed {
        wait_until(&format!("{} to run {feed} after the hand-over", c.nodes[y].name), LEASE / 2, async || run_by_one_of(&c, &[y], feed).await.map(|_| ())).await;
    }
    eprintln!(
        "hand-over at SIGTERM: {} stopped in {} ms; {handed:?} up on {} {} ms after its exit",
        c.nodes[x].name,
        t_exit.duration_since(t_term).as_millis(),
        c.nodes[y].name,
        t_exit.elapsed().as_millis()
    );
    let owners = [c.nodes[0].sip_addr(), c.nodes[x].sip_addr(), c.nodes[y].sip_addr()];
    let spans = in_turn("PBX", &pbx.subscription_log(), &owners.each_ref().map(String::as_str), t_kill);
    assert_eq!(spans[1].1.what, "unsubscribe", "{} un-SUBSCRIBEd as it stopped", c.nodes[x].name);
    if handed.contains(&"teams") {
        let owners = [c.nodes[0].http_addr(), c.nodes[x].http_addr(), c.nodes[y].http_addr()];
        in_turn("Graph", &graph.subscription_log(), &owners.each_ref().map(String::as_str), t_kill);
    }
    let who: Vec<String> = c.nodes.iter().map(|n| format!("{} = {} / {}", n.name, n.http_addr(), n.sip_addr())).collect();
    eprintln!("activity (ms after the kill; {}):\n  Graph: {}\n  PBX: {}", who.join(", "), runs_of(&graph.subscription_log(), t_kill), runs_of(&pbx.subscription_log(), t_kill));
}

/// A node cut from NATS stops its feeds before its leases can expire, says so on `/readyz`,
/// and another node runs them within 5 s of the leases expiring; healed, it is ready again and
/// does not take them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_nats_stops_its_feeds_in_time_and_does_not_take_them_back() {
    let graph = graph_sim();
    let pbx = PbxSim::start(PbxSimConfig::default()).unwrap();
    let mut c = HubCluster::new(NatsCluster::start(3));
    let urls = c.nats.urls();
    // The servers name no other server to clients, or C's client would reconnect around the
    // proxy.
    for u in &urls {
        let info = NatsConn::connect(u, Duration::from_secs(5)).unwrap().info;
        assert!(info["connect_urls"].as_array().is_none_or(|a| a.is_empty()), "{u} advertises other servers: {info}");
    }
    let proxy = TcpProxy::start(&urls).await;
    let blocks = providers(&graph, &pbx);
    let ci = c.add(HubNode::new("hub-c", &[proxy.url()], LEASE_MS, &blocks));
    let ai = c.add(HubNode::new("hub-a", &urls, LEASE_MS, &blocks));
    let bi = c.add(HubNode::new("hub-b", &urls, LEASE_MS, &blocks));
    start_owner(&mut c, ci, &graph, &pbx).await;
    start(&mut c, ai).await;
    start(&mut c, bi).await;
    wait_until("every node to see hub-c holding both leases", START, async || all_see_owner(&c, &[ci, ai, bi], "hub-c").await).await;
    assert!(proxy.accepted() >= 1);

    // Every lease C holds (both feeds, and directory sync: it started first).
    let c_leases = c.nodes[ai].cluster_report().await["leases"].as_array().unwrap().iter().filter(|l| l["owner"] == "hub-c").count();
    assert!(c_leases >= FEEDS.len(), "hub-c holds {c_leases} leases");
    let t_cut = Instant::now();
    proxy.cut();
    // C: not ready (JSON), and both feeds stopped, within the lease.
    let c_node = &c.nodes[ci];
    let (t_unready, body) = wait_until("hub-c /readyz 503", LEASE, async || match c_node.readyz().await {
        (503, body) => Ok((t_cut.elapsed(), body)),
        other => Err(format!("{other:?}")),
    })
    .await;
    // When C's leases expire, as A saw their last renewal; never later than a lease after the
    // cut, since C renewed nothing after it.
    let report = c.nodes[ai].cluster_report().await;
    let expiry: HashMap<&str, Instant> = FEEDS
        .iter()
        .map(|&f| {
            let l = report["leases"].as_array().and_then(|l| l.iter().find(|l| l["name"] == f).cloned()).unwrap_or_else(|| panic!("no lease of {f}: {report}"));
            assert_eq!(l["owner"], "hub-c");
            (f, instant_of(l["expires_at"].as_str().unwrap()).min(t_cut + LEASE))
        })
        .collect();
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("/readyz body is not JSON ({e}): {body}"));
    assert_eq!(v["error"], "cluster", "{v}");
    assert!(v["detail"].as_str().is_some_and(|d| d.contains("NATS")), "{v}");
    let t_stopped = wait_until("hub-c to stop both feeds", Duration::from_millis(3500), async || {
        let mut seen = Vec::new();
        for feed in FEEDS {
            let p = c_node.provider(feed).await;
            if p["state"] != "standby" || p["up"] != false {
                seen.push(format!("{feed} {}/{}", p["state"], p["up"]));
            }
        }
        if seen.is_empty() { Ok(t_cut.elapsed()) } else { Err(seen.join(", ")) }
    })
    .await;
    let r = c_node.cluster_report().await;
    assert_eq!(r["nats"]["connected"], false, "{r}");
    assert_eq!(r["ready"], false, "{r}");
    // Stopped at half the lease; the leases count as held (a renewal would restart the feeds)
    // until the fence, a tenth of the lease before they expire.
    wait_until("hub-c to give up its leases", (t_cut + LEASE).saturating_duration_since(Instant::now()), async || {
        match (c_node.metric("presence_cluster_leases_held").await, c_node.metric("presence_cluster_leases_lost_total").await) {
            (Some(0.0), Some(lost)) if lost == c_leases as f64 => Ok(()),
            other => Err(format!("held, lost: {other:?}")),
        }
    })
    .await;

    // A or B runs each feed within 5 s of its lease expiring.
    let mut moved: HashMap<&str, (Instant, usize)> = HashMap::new();
    loop {
        let mut seen = Vec::new();
        for feed in FEEDS {
            if moved.contains_key(feed) {
                continue;
            }
            match run_by_one_of(&c, &[ai, bi], feed).await {
                Ok(i) => {
                    moved.insert(feed, (Instant::now(), i));
                }
                Err(e) => seen.push(e),
            }
        }
        if moved.len() == FEEDS.len() {
            break;
        }
        let late: Vec<&&str> = FEEDS.iter().filter(|f| !moved.contains_key(**f) && Instant::now() > expiry[**f] + Duration::from_secs(5)).collect();
        assert!(late.is_empty(), "{late:?} not running on hub-a or hub-b 5 s after the lease expired: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("cut from NATS: hub-c /readyz 503 after {} ms, both feeds stopped {} ms after the cut", t_unready.as_millis(), t_stopped.as_millis());
    for feed in FEEDS {
        let (at, i) = moved[feed];
        let exp = expiry[feed];
        eprintln!(
            "cut from NATS: {feed} lease expired {} ms after the cut, up on {} {} ms after the cut ({} ms after the expiry)",
            exp.saturating_duration_since(t_cut).as_millis(),
            c.nodes[i].name,
            at.duration_since(t_cut).as_millis(),
            at.saturating_duration_since(exp).as_millis()
        );
    }

    // The peers saw C's graceful unsubscribe before the new owner's first subscription.
    let new_teams = &c.nodes[moved["teams"].1];
    let (last, first) = switches_once("Graph", &graph.subscription_log(), &c_node.http_addr(), &new_teams.http_addr(), t_cut);
    assert_eq!(last.what, "delete", "hub-c's last Graph call is its subscription's deletion");
    assert!(last.at > t_cut);
    eprintln!("cut from NATS: Graph: hub-c deleted its subscription {} ms after the cut, {} created one {} ms after", last.at.duration_since(t_cut).as_millis(), new_teams.name, first.at.duration_since(t_cut).as_millis());
    // C told its feeds to stop at half the lease after its last renewal, leaving them the time
    // until the fence for their graceful stop.
    let renewed = expiry["teams"] - LEASE;
    let since = last.at.saturating_duration_since(renewed);
    eprintln!("cut from NATS: hub-c's graceful stop began {} ms after its last renewal", since.as_millis());
    assert!(since <= LEASE / 2 + Duration::from_millis(250), "hub-c began stopping {since:?} after its last renewal, not at half the lease");
    let new_pbx = &c.nodes[moved["pbx"].1];
    let log = pbx.subscription_log();
    let (last, first) = switches_once("PBX", &log, &c_node.sip_addr(), &new_pbx.sip_addr(), t_cut);
    assert_eq!(last.what, "unsubscribe", "hub-c's last SUBSCRIBE is an un-SUBSCRIBE");
    let unsubscribed = log.iter().filter(|e| e.by == c_node.sip_addr() && e.what == "unsubscribe").count();
    assert_eq!(unsubscribed, EXTENSIONS, "hub-c un-SUBSCRIBEd every extension");
    eprintln!(
        "cut from NATS: PBX: hub-c un-SUBSCRIBEd {unsubscribed} extensions, the last {} ms after the cut; {} subscribed from {} ms after",
        last.at.duration_since(t_cut).as_millis(),
        new_pbx.name,
        first.at.duration_since(t_cut).as_millis()
    );

    // Healed: C is ready again, sees the new owners, and takes nothing back.
    let t_heal = Instant::now();
    proxy.heal();
    let c_node = &c.nodes[ci];
    wait_until("hub-c ready again", Duration::from_secs(20), async || match c_node.readyz().await {
        (200, _) => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;
    eprintln!("healed: hub-c ready {} ms after the heal", t_heal.elapsed().as_millis());
    let owners: HashMap<&str, String> = FEEDS.iter().map(|&f| (f, c.nodes[moved[f].1].name.clone())).collect();
    wait_until("hub-c to see the new owners", Duration::from_secs(10), async || {
        let r = c_node.cluster_report().await;
        let seen: Vec<Option<String>> = FEEDS.iter().map(|f| lease_owner(&r, f)).collect();
        if FEEDS.iter().zip(&seen).all(|(f, o)| o.as_deref() == Some(owners[f].as_str())) && r["nats"]["connected"] == true {
            Ok(())
        } else {
            Err(format!("owners {seen:?}, nats {}", r["nats"]))
        }
    })
    .await;
    // Two leases' time: the owners keep the feeds, C keeps them on standby.
    let t_watch = Instant::now();
    while t_watch.elapsed() < 2 * LEASE {
        for feed in FEEDS {
            let p = c_node.provider(feed).await;
            assert_eq!(p["state"], "standby", "hub-c took {feed} back: {p}");
            let owner = &c.nodes[moved[feed].1];
            runs(owner, feed).await.unwrap_or_else(|e| panic!("{} lost {feed} after the heal: {e}", owner.name));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c_after: Vec<SubEvent> = graph.subscription_log().into_iter().chain(pbx.subscription_log()).filter(|e| e.at > t_heal && (e.by == c_node.http_addr() || e.by == c_node.sip_addr())).collect();
    assert!(c_after.is_empty(), "hub-c subscribed again after the heal: {c_after:?}");
}

/// A node that cannot reach NATS at start (nothing listening; a server that never answers)
/// exits non-zero within seconds and says it is NATS it cannot reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_reach_nats_at_start_exits_naming_nats() {
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_url = format!("nats://{}", refused.local_addr().unwrap());
    drop(refused);
    // Accepts connections (the kernel completes the handshake) and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("nats://{}", silent.local_addr().unwrap());
    for (tag, url) in [("hub-refused", refused_url), ("hub-silent", silent_url)] {
        let mut node = HubNode::new(tag, std::slice::from_ref(&url), LEASE_MS, &|_| String::new());
        let t0 = Instant::now();
        node.start();
        let status = wait_until(&format!("{tag} to exit"), Duration::from_secs(20), async || node.exited().ok_or_else(|| format!("still running; log: {}", node.log()))).await;
        let took = t0.elapsed();
        let log = node.log();
        eprintln!("{tag}: exited ({status}) {} ms after the start", took.as_millis());
        assert!(!status.success(), "{tag}: exit status {status}; log: {log}");
        let line = log.lines().find(|l| l.contains("cannot connect to NATS")).unwrap_or_else(|| panic!("{tag}: no message naming NATS; log: {log}"));
        assert!(line.contains(&url), "{tag}: the message names the server: {line}");
        assert!(took < Duration::from_secs(10), "{tag}: took {took:?}");
        assert!(node.get("/readyz").await.0 == 0, "{tag}: something answers HTTP");
    }
}

/// The NATS server leading the hub's buckets dies. While JetStream elects another leader (a
/// few seconds, longer than half the 3 s lease) no lease can be renewed: the owner stops its
/// feeds in time and one node runs them again after the election; the simulators never see two
/// owners, and every node's view of the leases is right again soon after (it stayed blind for
/// 6 to 30 s before the watchers checked themselves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loss_of_the_nats_leader_never_runs_a_feed_twice_and_every_view_recovers() {
    let graph = graph_sim();
    let pbx = PbxSim::start(PbxSimConfig::default()).unwrap();
    let mut c = HubCluster::new(NatsCluster::start(3));
    let urls = c.nats.urls();
    let blocks = providers(&graph, &pbx);
    for name in ["hub-a", "hub-b"] {
        c.add(HubNode::new(name, &urls, LEASE_MS, &blocks));
    }
    start_owner(&mut c, 0, &graph, &pbx).await;
    start(&mut c, 1).await;
    wait_until("hub-b to see hub-a holding both leases", START, async || all_see_owner(&c, &[0, 1], "hub-a").await).await;
    let r = c.nodes[0].cluster_report().await;
    let leader = r["replication"].as_array().and_then(|s| s.iter().find(|s| s["stream"] == "KV_ph_leases").cloned()).unwrap_or_else(|| panic!("no KV_ph_leases in {r}"));
    let leader = leader["leader"].as_str().unwrap_or_else(|| panic!("no leader: {leader}")).to_string();
    let li = c.nats.index_of(&leader).unwrap_or_else(|| panic!("leader {leader} is not a test server"));

    let t_kill = Instant::now();
    c.nats.kill(li);
    // Each feed runs on one node again, and both nodes' views agree on where.
    let mut back: HashMap<&str, (Duration, usize)> = HashMap::new();
    let limit = Duration::from_secs(15);
    loop {
        let mut seen = Vec::new();
        for feed in FEEDS {
            match run_by_one_of(&c, &[0, 1], feed).await {
                Ok(i) => {
                    back.entry(feed).or_insert((t_kill.elapsed(), i));
                }
                Err(e) => {
                    back.remove(feed);
                    seen.push(e);
                }
            }
        }
        if back.len() == FEEDS.len() {
            break;
        }
        assert!(t_kill.elapsed() < limit, "{limit:?} after the NATS leader {leader} was killed: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for feed in FEEDS {
        let (took, i) = back[feed];
        eprintln!("NATS leader {leader} killed: {feed} on {} and every view right {} ms after", c.nodes[i].name, took.as_millis());
    }
    let addr = |i: usize, sip: bool| if sip { c.nodes[i].sip_addr() } else { c.nodes[i].http_addr() };
    for (sim, feed, log) in [("Graph", "teams", graph.subscription_log()), ("PBX", "pbx", pbx.subscription_log())] {
        let sip = feed == "pbx";
        let owner = back[feed].1;
        let owners: Vec<String> = if owner == 0 { vec![addr(0, sip)] } else { vec![addr(0, sip), addr(owner, sip)] };
        in_turn(sim, &log, &owners.iter().map(String::as_str).collect::<Vec<_>>(), t_kill);
        eprintln!("NATS leader {leader} killed: {sim}: {}", runs_of(&log, t_kill));
    }
}
