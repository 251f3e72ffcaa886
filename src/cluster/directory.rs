//! Directory sync in a cluster: the sources are read by one node, every node gets each version.
//!
//! Directory sync (all `[[directory.sources]]`, merged together) runs on the node holding the
//! lease `directory.sync`. After each version it applied, that node writes the changed people
//! to the KV bucket `<prefix>_people` (key `p.<id>`, the person's JSON; the first version
//! after taking the lease writes whoever differs from the bucket), then the key `version`
//! with the number of people. Every other node follows the bucket and, once it holds exactly
//! that many people (a version is never applied half written), applies it as its own version:
//! the store first, then the running hub, as directory sync does on a single node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use tracing::{info, warn};

use presence_actors::directory::Person;
use presence_actors::hub::Hub;
use presence_actors::model::now_ms;
use presence_actors::provider::Shutdown;
use presence_providers::supervisor::Gate;

use super::lease::{Keeper, LeaseKind};
use super::partitions::token;
use super::{Cluster, ClusterError};
use crate::store::Store;
use crate::sync::{ClusterLink, Published};

/// Puts awaiting JetStream's acknowledgement at once.
const IN_FLIGHT: usize = 256;
/// A version is applied this long after its marker stops changing.
const SETTLE: Duration = Duration::from_millis(300);

/// What this node knows of the bucket.
#[derive(Default)]
struct Mirror {
    people: HashMap<String, String>,
    version: Option<(String, usize, i64)>,
}

/// Creates the bucket, adds directory sync's lease to `keeper` and starts the tasks; returns
/// what [`crate::sync::DirectorySync::start`] needs.
pub async fn start(cluster: &Cluster, hub: &Hub, store: &Store, keeper: &mut Keeper, stop: Shutdown) -> Result<ClusterLink, ClusterError> {
    let js = jetstream::new(cluster.inner.client.clone());
    let bucket = super::open_bucket(&js, &format!("{}_people", cluster.config().prefix), Duration::ZERO, cluster.config().replicas).await?;
    let (gate, mut rx) = Gate::new();
    keeper.add(LeaseKind::Directory, "sync", gate);
    let (active_tx, active) = tokio::sync::watch::channel(false);
    let mut s = stop.clone();
    actix_web::rt::spawn(async move {
        loop {
            tokio::select! {
                _ = s.recv() => return,
                ok = rx.permitted() => if !ok { return },
            }
            active_tx.send_replace(true);
            rx.set_running(true);
            tokio::select! {
                _ = s.recv() => return,
                _ = rx.withdrawn() => {}
            }
            // Sources are read-only and a version applies only while active: nothing to wait for.
            active_tx.send_replace(false);
            rx.set_running(false);
        }
    });
    let mirror = Arc::new(Mutex::new(Mirror::default()));
    let (out, out_rx) = tokio::sync::mpsc::unbounded_channel();
    actix_web::rt::spawn(publisher(cluster.clone(), bucket.clone(), mirror.clone(), out_rx, stop.clone()));
    actix_web::rt::spawn(follower(cluster.clone(), hub.clone(), store.clone(), bucket, mirror, active.clone(), stop));
    Ok(ClusterLink { active, out })
}

/// Writes each version this node applied to the bucket, then its marker.
async fn publisher(cluster: Cluster, bucket: kv::Store, mirror: Arc<Mutex<Mirror>>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Published>, mut stop: Shutdown) {
    loop {
        let p = tokio::select! {
            _ = stop.recv() => return,
            p = rx.recv() => match p { Some(p) => p, None => return },
        };
        let (puts, deletes): (Vec<(String, String)>, Vec<String>) = match p.all {
            Some(all) => {
                let m = mirror.lock().unwrap_or_else(|e| e.into_inner());
                let ids: std::collections::HashSet<&str> = all.iter().map(|(id, _)| id.as_str()).collect();
                let deletes = m.people.keys().filter(|id| !ids.contains(id.as_str())).cloned().collect();
                let puts = all.into_iter().filter(|(id, json)| m.people.get(id) != Some(json)).collect();
                (puts, deletes)
            }
            None => (p.upserts, p.removed),
        };
        let mut pending = futures_util::stream::FuturesUnordered::new();
        let mut failed = 0usize;
        for (id, json) in puts {
            let b = bucket.clone();
            pending.push(Box::pin(async move { b.put(format!("p.{}", token(&id)), json.into_bytes().into()).await.map(|_| ()).map_err(|e| e.to_string()) }) as Op);
            while pending.len() >= IN_FLIGHT {
                if let Some(Err(_)) = pending.next().await {
                    failed += 1;
                }
            }
        }
        for id in deletes {
            let b = bucket.clone();
            pending.push(Box::pin(async move { b.delete(format!("p.{}", token(&id))).await.map_err(|e| e.to_string()) }) as Op);
            while pending.len() >= IN_FLIGHT {
                if let Some(Err(_)) = pending.next().await {
                    failed += 1;
                }
            }
        }
        while let Some(r) = pending.next().await {
            if r.is_err() {
                failed += 1;
            }
        }
        if failed > 0 {
            warn!(failed, "Could not write every person of a directory version to the cluster; the others keep the previous version until the next one.");
            continue;
        }
        let marker = serde_json::json!({ "node": cluster.node(), "count": p.count, "at": now_ms() }).to_string();
        if let Err(e) = bucket.put("version", marker.into_bytes().into()).await {
            warn!(error = %e, "Could not publish a directory version to the cluster.");
        }
    }
}

/// One put or delete in flight.
type Op = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// Follows the bucket; applies each complete version another node published.
async fn follower(cluster: Cluster, hub: Hub, store: Store, bucket: kv::Store, mirror: Arc<Mutex<Mirror>>, active: tokio::sync::watch::Receiver<bool>, mut stop: Shutdown) {
    let me = cluster.node().to_string();
    let mut applied: Option<(String, usize, i64)> = None;
    loop {
        let Some(mut watch) = super::open_watch(&bucket, "directory", &mut stop).await else { return };
        loop {
            let e = tokio::select! {
                _ = stop.recv() => return,
                e = watch.next() => e,
                _ = tokio::time::sleep(SETTLE) => {
                    // Quiet for a moment: apply what is complete.
                    let due = {
                        let m = mirror.lock().unwrap_or_else(|e| e.into_inner());
                        match &m.version {
                            Some(v) if Some(v) != applied.as_ref() && v.0 != me && !*active.borrow() && m.people.len() == v.1 => {
                                Some((v.clone(), m.people.values().cloned().collect::<Vec<String>>()))
                            }
                            _ => None,
                        }
                    };
                    if let Some((v, people)) = due {
                        apply(&hub, &store, people).await;
                        applied = Some(v);
                    }
                    continue;
                }
            };
            let e = match e {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    warn!(error = %e, "Following the cluster's directory failed; re-opening.");
                    break;
                }
                None => break,
            };
            let mut m = mirror.lock().unwrap_or_else(|e| e.into_inner());
            let put = matches!(e.operation, kv::Operation::Put);
            if e.key == "version" {
                if put {
                    let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap_or_default();
                    m.version = Some((v["node"].as_str().unwrap_or_default().to_string(), v["count"].as_u64().unwrap_or(0) as usize, v["at"].as_i64().unwrap_or(0)));
                }
            } else if let Some(t) = e.key.strip_prefix("p.") {
                let Some(id) = super::partitions::from_token(t) else { continue };
                if put {
                    m.people.insert(id, String::from_utf8_lossy(&e.value).into_owned());
                } else {
                    m.people.remove(&id);
                }
            }
        }
        tokio::select! {
            _ = stop.recv() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Applies a whole version another node published.
async fn apply(hub: &Hub, store: &Store, people: Vec<String>) {
    let people: Vec<Person> = people.iter().filter_map(|j| serde_json::from_str(j).ok()).collect();
    let current = hub.directory();
    match current.next(people) {
        Ok((Some(next), diff)) => match crate::sync::apply_version(hub, store, &current, next, &diff).await {
            Ok(()) => info!(added = diff.added.len(), changed = diff.changed.len(), removed = diff.removed.len(), "Applied a directory version from the cluster."),
            Err(e) => warn!(error = %e, "Could not apply a directory version from the cluster."),
        },
        Ok((None, _)) => {}
        Err(e) => warn!(error = %e, "A directory version from the cluster is invalid; kept the current one."),
    }
}
