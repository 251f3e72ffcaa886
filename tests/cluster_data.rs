//! Issue 15, the people's side of a cluster, against three real nats-server processes and real
//! hub processes (`tests/common/cluster.rs`): absences written on every node while a hub and a
//! NATS server are killed, a fourth node taking its share of the partitions, and a stream
//! client resuming on another node after its node died.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::common::cluster::{wait_until, HubCluster, HubNode};
use crate::common::nats::NatsCluster;
use crate::common::{client, ADMIN};

const LEASE_MS: u64 = 3000;
const START: Duration = Duration::from_secs(30);

/// No feeds: the people's state comes from the API.
fn no_providers(_: &HubNode) -> String {
    String::new()
}

/// Starts `names` as hub nodes on a fresh three-server NATS cluster and waits until every
/// node is ready and the 64 partitions are all owned.
async fn cluster_of(names: &[&str]) -> HubCluster {
    let mut c = HubCluster::new(NatsCluster::start(3));
    let urls = c.nats.urls();
    for name in names {
        let i = c.add(HubNode::new(name, &urls, LEASE_MS, &no_providers));
        c.nodes[i].start();
    }
    for i in 0..names.len() {
        c.nodes[i].wait_ready(START).await;
    }
    settled(&c, &(0..names.len()).collect::<Vec<_>>()).await;
    c
}

/// Waits until every node in `among` sees all 64 partitions owned, by nodes of `among` only,
/// each owning some.
async fn settled(c: &HubCluster, among: &[usize]) -> HashMap<String, Vec<u64>> {
    let names: Vec<String> = among.iter().map(|&i| c.nodes[i].name.clone()).collect();
    wait_until("the partitions spread over the nodes", START, async || {
        let mut last = HashMap::new();
        for &i in among {
            let r = c.nodes[i].cluster_report().await;
            let mut owned = HashMap::new();
            let mut total = 0;
            for n in r["nodes"].as_array().into_iter().flatten() {
                let parts: Vec<u64> = n["partitions"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
                total += parts.len();
                if !parts.is_empty() {
                    owned.insert(n["node"].as_str().unwrap_or_default().to_string(), parts);
                }
            }
            let ok = total == 64 && owned.len() == names.len() && owned.keys().all(|k| names.contains(k));
            if !ok {
                return Err(format!("{} sees {total} partitions owned: {:?}", c.nodes[i].name, owned.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()));
            }
            last = owned;
        }
        Ok(last)
    })
    .await
}

/// The first `n` people of the demo directory.
async fn people(node: &HubNode, n: usize) -> Vec<String> {
    let (status, v) = node.get(&format!("/api/users?limit={n}")).await;
    assert_eq!(status, 200, "{v}");
    v["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect()
}

/// Pushes one signal per person through `node`'s API.
async fn push(node: &HubNode, who: &[String], availability: &str, activity: Option<&str>) {
    let signals: Vec<Value> = who.iter().map(|w| json!({ "who": w, "source": "teams", "instance": "t1", "availability": availability, "activity": activity })).collect();
    let r = client().post(node.url("/api/signals")).bearer_auth(ADMIN).json(&json!({ "signals": signals })).send().await.unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
}

/// `id → (availability, freshness)` of everyone `node` lists.
async fn states(node: &HubNode) -> HashMap<String, (String, String)> {
    let (_, v) = node.get("/api/users?limit=500").await;
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| (p["id"].as_str().unwrap_or_default().to_string(), (p["presence"]["availability"].as_str().unwrap_or_default().to_string(), p["presence"]["freshness"].as_str().unwrap_or_default().to_string())))
        .collect()
}

/// Waits until `node` shows every one of `who` as `availability`, live.
async fn shows(node: &HubNode, who: &[String], availability: &str, within: Duration) {
    wait_until(&format!("{} to show {} people {availability} and live", node.name, who.len()), within, async || {
        let s = states(node).await;
        let wrong: Vec<String> = who.iter().filter(|w| s.get(*w).is_none_or(|(a, f)| a != availability || f != "live")).map(|w| format!("{w}: {:?}", s.get(w))).collect();
        if wrong.is_empty() { Ok(()) } else { Err(format!("{} wrong, e.g. {:?}", wrong.len(), &wrong[..wrong.len().min(3)])) }
    })
    .await;
}

/// Writers on every node POST absences while a hub node and a NATS server are killed with
/// SIGKILL; every absence acknowledged (201) is afterwards on every node, the restarted one
/// too, each with its audit entry, and the person's view shows it everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_absence_survives_killing_a_hub_and_a_nats_server() {
    let mut c = cluster_of(&["hub-a", "hub-b", "hub-c"]).await;
    let who = people(&c.nodes[0], 200).await;
    let acked: Arc<Mutex<Vec<(String, String)>>> = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..6usize {
        let (base, who, acked, stop) = (c.nodes[w % 3].url(""), who.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let http = client();
            let (mut ok, mut failed) = (0u32, 0u32);
            for i in 0..400usize {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let person = &who[(w * 37 + i * 7) % who.len()];
                let r = http
                    .post(format!("{base}/api/users/{person}/absences"))
                    .bearer_auth(ADMIN)
                    .json(&json!({ "reason": "meeting", "text": format!("writer {w} #{i}") }))
                    .timeout(Duration::from_secs(15))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 201 => {
                        let v: Value = r.json().await.unwrap();
                        acked.lock().unwrap().push((person.clone(), v["absence"]["id"].as_str().unwrap().to_string()));
                        ok += 1;
                    }
                    // Full (409), or the cluster could not store it (503: nothing changed).
                    Ok(_) => failed += 1,
                    // The node is gone.
                    Err(_) => break,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_kill = acked.lock().unwrap().len();
    c.nodes[2].kill9();
    let nats_killed = 1;
    c.nats.kill(nats_killed);
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut results = Vec::new();
    for w in writers {
        results.push(w.await.unwrap());
    }
    let acked = acked.lock().unwrap().clone();
    eprintln!("acknowledged {} absences ({before_kill} before the kills); per writer (ok, refused): {results:?}", acked.len());
    assert!(acked.len() > before_kill, "writes went on after the kills");
    assert!(acked.len() >= 100, "only {} absences acknowledged", acked.len());

    c.nats.restart(nats_killed);
    c.nodes[2].start();
    c.nodes[2].wait_ready(START).await;
    let ids: HashSet<&str> = acked.iter().map(|(_, a)| a.as_str()).collect();
    for i in 0..3 {
        let node = &c.nodes[i];
        wait_until(&format!("{} to hold every acknowledged absence", node.name), Duration::from_secs(30), async || {
            let mut missing = 0;
            let mut example = None;
            let by_person: HashSet<&str> = acked.iter().map(|(p, _)| p.as_str()).collect();
            let mut have = HashSet::new();
            for p in by_person {
                let (status, v) = node.get(&format!("/api/users/{p}/absences")).await;
                if status != 200 {
                    return Err(format!("{p}: {status}"));
                }
                for a in v.as_array().into_iter().flatten() {
                    have.insert(a["id"].as_str().unwrap_or_default().to_string());
                }
            }
            for (p, a) in &acked {
                if !have.contains(a) {
                    missing += 1;
                    example.get_or_insert(format!("{p}/{a}"));
                }
            }
            if missing == 0 { Ok(()) } else { Err(format!("{missing} missing, e.g. {example:?}")) }
        })
        .await;
        // Each with its audit entry, on every node: the newest entries hold the newest writes.
        let (status, v) = node.get("/api/audit?action=absence.created&limit=500").await;
        assert_eq!(status, 200, "{v}");
        let audited: HashSet<String> = v["entries"].as_array().unwrap().iter().filter_map(|e| e["detail"]["absence"].as_str().map(str::to_string)).collect();
        let newest: Vec<&str> = acked.iter().rev().take(100).map(|(_, a)| a.as_str()).collect();
        let unaudited: Vec<&&str> = newest.iter().filter(|a| !audited.contains(**a)).take(3).collect();
        assert!(unaudited.is_empty(), "{}: absences with no audit entry, e.g. {unaudited:?} ({} entries)", node.name, audited.len());
        if acked.len() <= 500 {
            assert!(ids.iter().all(|a| audited.contains(*a)), "{}: every absence has its audit entry", node.name);
        }
    }
    // The view shows the absence on every node (a meeting: Busy).
    let (p, _) = &acked[acked.len() - 1];
    for i in 0..3 {
        let (_, v) = c.nodes[i].get(&format!("/api/users/{p}")).await;
        assert_eq!(v["presence"]["absence_reason"], "meeting", "{}: {v}", c.nodes[i].name);
    }
}

/// A fourth node joins: it takes about a quarter of the partitions, the others hand theirs over
/// with the people's state, and nobody is shown stale, Offline or Unknown on any node; signals
/// after the move reach the new owners. Then it stops (SIGTERM) and hands them back the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_takes_its_share_and_nobody_goes_stale_or_offline() {
    let mut c = cluster_of(&["hub-a", "hub-b", "hub-c"]).await;
    let who = people(&c.nodes[0], 120).await;
    push(&c.nodes[0], &who, "Busy", Some("InACall")).await;
    for i in 0..3 {
        shows(&c.nodes[i], &who, "Busy", Duration::from_secs(10)).await;
    }
    let urls = c.nats.urls();
    let d = c.add(HubNode::new("hub-d", &urls, LEASE_MS, &no_providers));
    let t0 = Instant::now();
    c.nodes[d].start();
    c.nodes[d].wait_ready(START).await;
    // While the partitions move, every node keeps showing everyone Busy and live.
    let owned = loop {
        for i in 0..4 {
            let s = states(&c.nodes[i]).await;
            let wrong: Vec<_> = who.iter().filter(|w| s.get(*w).is_none_or(|(a, f)| a != "Busy" || f != "live")).map(|w| (w, s.get(w))).take(3).collect();
            assert!(wrong.is_empty(), "{} during the move: {wrong:?}", c.nodes[i].name);
        }
        let r = c.nodes[d].cluster_report().await;
        let mine = r["nodes"].as_array().unwrap().iter().find(|n| n["node"] == "hub-d").map_or(0, |n| n["partitions"].as_array().map_or(0, Vec::len));
        if mine >= 8 {
            break mine;
        }
        assert!(t0.elapsed() < START, "hub-d owns only {mine} partitions");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let spread = settled(&c, &[0, 1, 2, 3]).await;
    eprintln!("hub-d owns {owned} partitions {:.1} s after it started; spread {:?}", t0.elapsed().as_secs_f64(), spread.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>());
    for i in 0..4 {
        shows(&c.nodes[i], &who, "Busy", Duration::from_secs(5)).await;
    }
    // A person hub-d owns now carries their Teams slot, live.
    let d_parts: HashSet<u64> = spread["hub-d"].iter().copied().collect();
    let moved: Vec<&String> = who.iter().filter(|w| d_parts.contains(&u64::from(partition_of(w)))).collect();
    assert!(!moved.is_empty(), "nobody of the {} moved to hub-d", who.len());
    let (_, v) = c.nodes[d].get(&format!("/api/users/{}", moved[0])).await;
    let sources = v["sources"].as_array().unwrap();
    assert!(sources.iter().any(|s| s["source"] == "teams" && s["freshness"] == "live"), "{}: {v}", moved[0]);
    // Signals after the move reach the new owners, whichever node takes them.
    let back: Vec<String> = moved.iter().map(|s| s.to_string()).collect();
    push(&c.nodes[1], &back, "Available", None).await;
    for i in 0..4 {
        shows(&c.nodes[i], &back, "Available", Duration::from_secs(10)).await;
    }
    // hub-d stops for maintenance (SIGTERM): it hands its partitions back with the people's
    // state before it lets their leases go, so nobody it owned is shown stale meanwhile or after.
    let status = c.nodes[d].sigterm();
    assert!(status.success(), "hub-d exit status {status}");
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(5) {
        for i in 0..3 {
            let s = states(&c.nodes[i]).await;
            let wrong: Vec<_> = back.iter().filter(|w| s.get(*w).is_none_or(|(a, f)| a != "Available" || f != "live")).map(|w| (w, s.get(w))).take(3).collect();
            assert!(wrong.is_empty(), "{} after hub-d stopped: {wrong:?}", c.nodes[i].name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    settled(&c, &[0, 1, 2]).await;
    let rest: Vec<String> = who.iter().filter(|w| !back.contains(w)).cloned().collect();
    for i in 0..3 {
        shows(&c.nodes[i], &back, "Available", Duration::from_secs(1)).await;
        shows(&c.nodes[i], &rest, "Busy", Duration::from_secs(1)).await;
    }
}

/// FNV-1a, as `presence_actors::cluster::partition_of`.
fn partition_of(id: &str) -> u32 {
    presence_actors::cluster::partition_of(id)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(node: &HubNode, query: &str) -> Ws {
    let mut req = format!("ws://{}/api/stream{query}", node.http_addr()).into_client_request().unwrap();
    req.headers_mut().insert("Authorization", format!("Bearer {ADMIN}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.expect("websocket connect").0
}

/// The next frame that is not a heartbeat.
async fn frame(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a frame within 10 s").expect("open").expect("a message");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] != "heartbeat" {
                return v;
            }
        }
    }
}

/// A client watching everyone on hub-a; hub-a is killed; changes go on through hub-b (among
/// them hub-a's people, restored stale on hub-b, and new signals); the client reconnects to
/// hub-b with the last number it saw and gets `resumed` and then the latest state of exactly
/// the people who changed after that number — compared with a second client that watched
/// hub-b all along. The numbers are the cluster's, the same on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_client_resumes_on_another_node_without_a_gap() {
    let mut c = cluster_of(&["hub-a", "hub-b"]).await;
    let who = people(&c.nodes[0], 10).await;
    // The witness: everything hub-b streams, from the start.
    let mut w = ws(&c.nodes[1], "?all=true").await;
    let seen_by_b: Arc<Mutex<Vec<(u64, String, Value)>>> = Default::default();
    let log = seen_by_b.clone();
    let witness = tokio::spawn(async move {
        loop {
            let f = frame(&mut w).await;
            if f["type"] == "delta" {
                log.lock().unwrap().push((f["seq"].as_u64().unwrap(), f["presence"]["id"].as_str().unwrap().to_string(), f["presence"].clone()));
            }
        }
    });
    let mut a = ws(&c.nodes[0], "?all=true").await;
    let mut last = loop {
        let f = frame(&mut a).await;
        assert_eq!(f["type"], "snapshot", "{f}");
        if f["last"] == true {
            break f["seq"].as_u64().unwrap();
        }
    };
    push(&c.nodes[1], &who[..5], "Busy", None).await;
    let mut seen = HashSet::new();
    while seen.len() < 5 {
        let f = frame(&mut a).await;
        assert_eq!(f["type"], "delta", "{f}");
        let seq = f["seq"].as_u64().unwrap();
        assert!(seq > last, "numbers go up: {seq} after {last}");
        last = seq;
        seen.insert(f["presence"]["id"].as_str().unwrap().to_string());
    }
    // hub-b streamed the same changes with the same numbers.
    wait_until("hub-b's stream to reach hub-a's last number", Duration::from_secs(5), async || {
        let b = seen_by_b.lock().unwrap();
        if b.iter().any(|(s, _, _)| *s == last) { Ok(()) } else { Err(format!("{:?}", b.iter().map(|x| x.0).collect::<Vec<_>>())) }
    })
    .await;
    c.nodes[0].kill9();
    // Those of hub-a's partitions wait (at hub-b's forwarder) until hub-b has taken them over.
    push(&c.nodes[1], &who[5..], "Busy", None).await;
    shows(&c.nodes[1], &who[5..], "Busy", Duration::from_secs(15)).await;
    let mut b = ws(&c.nodes[1], &format!("?all=true&since={last}")).await;
    let f = frame(&mut b).await;
    assert_eq!(f["type"], "resumed", "hub-b resumes the stream hub-a numbered: {f}");
    assert_eq!(f["from"].as_u64(), Some(last), "{f}");
    let upto = f["seq"].as_u64().unwrap();
    let mut missed: HashMap<String, Value> = HashMap::new();
    // The catch-up comes at once; later frames are new changes.
    while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_secs(1), b.next()).await {
        let f: Value = serde_json::from_str(&t).unwrap();
        if f["type"] == "delta" && f["seq"].as_u64().unwrap() <= upto {
            assert!(f["seq"].as_u64().unwrap() > last, "{f}");
            missed.insert(f["presence"]["id"].as_str().unwrap().to_string(), f["presence"].clone());
        }
    }
    witness.abort();
    let mut expect: HashMap<String, Value> = HashMap::new();
    for (seq, id, p) in seen_by_b.lock().unwrap().iter() {
        if *seq > last && *seq <= upto {
            expect.insert(id.clone(), p.clone());
        }
    }
    for w in &who[5..] {
        assert!(expect.contains_key(w), "the witness saw {w} change");
    }
    let mut got: Vec<&String> = missed.keys().collect();
    let mut want: Vec<&String> = expect.keys().collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "exactly the people who changed while the client was away");
    for (id, p) in &expect {
        assert_eq!(&missed[id], p, "{id}: the latest state");
    }
}
