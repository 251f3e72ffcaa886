//! Provider cursors shared by the nodes (the KV bucket `<prefix>_cursors`).
//!
//! What a provider keeps between runs — a Graph subscription's id and URL, a rotated refresh
//! token, the generated `clientState`, an operator's sequence — must follow the feed to
//! whichever node runs it next: the new owner then takes over (or deletes) the subscription
//! its predecessor made, instead of holding a second one, and signs in with the token as last
//! rotated. Every node reads the bucket at start and follows it; a provider's `set` changes
//! this node's copy at once and is written to the bucket in order.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use tracing::warn;

use presence_actors::provider::{Cursors, Shutdown};

use super::partitions::{from_token, token};
use super::{Cluster, ClusterError};

type Map = Arc<RwLock<HashMap<(String, String), String>>>;

/// Cursors kept in the cluster.
pub struct ClusterCursors {
    map: Map,
    tx: tokio::sync::mpsc::UnboundedSender<(String, String)>,
}

fn key_of(provider: &str, key: &str) -> String {
    format!("c.{}.{}", token(provider), token(key))
}

impl ClusterCursors {
    /// Opens the bucket, reads it whole (before any provider starts) and follows it.
    pub async fn start(cluster: &Cluster, stop: Shutdown) -> Result<Arc<ClusterCursors>, ClusterError> {
        let js = jetstream::new(cluster.inner.client.clone());
        let bucket = super::open_bucket(&js, &format!("{}_cursors", cluster.config().prefix), Duration::ZERO, cluster.config().replicas).await?;
        let map: Map = Default::default();
        let mut stop2 = stop.clone();
        let mut watch = super::open_watch(&bucket, "cursors", &mut stop2).await.ok_or_else(|| ClusterError::JetStream { what: "cursors".into(), message: "stopped".into() })?;
        // The bucket as it is, read to the end: an empty one sends nothing, so it is asked
        // first how many values it holds; a slow answer is waited for, never taken for "none".
        let values = bucket.status().await.map(|s| s.values()).unwrap_or(1);
        if values > 0 {
            while let Ok(Some(Ok(e))) = tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
                apply(&map, &e);
                if e.delta == 0 {
                    break;
                }
            }
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        actix_web::rt::spawn(writer(bucket.clone(), rx, stop.clone()));
        let m = map.clone();
        actix_web::rt::spawn(async move {
            let mut stop = stop;
            loop {
                let e = tokio::select! {
                    _ = stop.recv() => return,
                    e = watch.next() => e,
                };
                match e {
                    Some(Ok(e)) => apply(&m, &e),
                    _ => match super::open_watch(&bucket, "cursors", &mut stop).await {
                        Some(w) => watch = w,
                        None => return,
                    },
                }
            }
        });
        Ok(Arc::new(ClusterCursors { map, tx }))
    }
}

fn apply(map: &Map, e: &kv::Entry) {
    let Some((p, k)) = e.key.strip_prefix("c.").and_then(|r| r.split_once('.')) else { return };
    let (Some(p), Some(k)) = (from_token(p), from_token(k)) else { return };
    let mut m = map.write().unwrap_or_else(|x| x.into_inner());
    if matches!(e.operation, kv::Operation::Put) {
        m.insert((p, k), String::from_utf8_lossy(&e.value).into_owned());
    } else {
        m.remove(&(p, k));
    }
}

async fn writer(bucket: kv::Store, mut rx: tokio::sync::mpsc::UnboundedReceiver<(String, String)>, mut stop: Shutdown) {
    loop {
        let (key, value) = tokio::select! {
            _ = stop.recv() => {
                // What is queued still goes out, briefly.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Ok((k, v)) = rx.try_recv() {
                        let _ = bucket.put(k, v.into_bytes().into()).await;
                    }
                }).await;
                return;
            }
            kv = rx.recv() => match kv { Some(kv) => kv, None => return },
        };
        if let Err(e) = bucket.put(key, value.into_bytes().into()).await {
            warn!(error = %e, "Could not share a provider cursor with the cluster.");
        }
    }
}

impl Cursors for ClusterCursors {
    fn get(&self, provider: &str, key: &str) -> Option<String> {
        self.map.read().unwrap_or_else(|x| x.into_inner()).get(&(provider.to_string(), key.to_string())).cloned()
    }

    fn set(&self, provider: &str, key: &str, value: &str) {
        self.map.write().unwrap_or_else(|x| x.into_inner()).insert((provider.to_string(), key.to_string()), value.to_string());
        let _ = self.tx.send((key_of(provider, key), value.to_string()));
    }
}
