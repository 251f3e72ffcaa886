//! Sign-in state shared by the nodes: a colleague signs in through whichever node the load
//! balancer picks, and stays signed in on every node.
//!
//! - **Sign-ins in progress** (`/auth/login` → `/auth/callback`, ten minutes at most): each is
//!   put in the KV bucket `<prefix>_logins` (keys live ten minutes) before the browser is sent
//!   to the identity provider; the node taking the callback takes it from there, once (a
//!   revision-checked delete: a replayed callback finds nothing).
//! - **Sessions**: each session (its cookie's SHA-256, never the cookie) is put in the bucket
//!   `<prefix>_sessions` when created and refreshed when used (at most every five minutes);
//!   deleted when it ends. Every node follows the bucket into its own session table and store,
//!   so a revocation or sign-out on one node ends the session on all.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use tracing::warn;

use presence_actors::provider::Shutdown;

use super::{Cluster, ClusterError};
use crate::signin::sessions::{Replica, Sessions};
use crate::signin::{Pending, PENDING_TTL};
use crate::store::sessions::StoredSession;

/// This node's end of the shared sign-in state.
pub struct SharedSignIn {
    logins: kv::Store,
    sessions: kv::Store,
    tx: tokio::sync::mpsc::UnboundedSender<Op>,
}

enum Op {
    Put(Box<StoredSession>),
    Delete(String),
}

impl Replica for SharedSignIn {
    fn created(&self, s: &StoredSession) {
        let _ = self.tx.send(Op::Put(Box::new(s.clone())));
    }
    fn touched(&self, s: &StoredSession) {
        let _ = self.tx.send(Op::Put(Box::new(s.clone())));
    }
    fn ended(&self, id: &str) {
        let _ = self.tx.send(Op::Delete(id.to_string()));
    }
}

impl SharedSignIn {
    /// Opens the buckets, follows the sessions into `sessions` and starts the writer.
    pub async fn start(cluster: &Cluster, sessions: Arc<Sessions>, stop: Shutdown) -> Result<Arc<SharedSignIn>, ClusterError> {
        let js = jetstream::new(cluster.inner.client.clone());
        let prefix = &cluster.config().prefix;
        let logins = super::open_bucket(&js, &format!("{prefix}_logins"), PENDING_TTL, cluster.config().replicas).await?;
        let store = super::open_bucket(&js, &format!("{prefix}_sessions"), Duration::ZERO, cluster.config().replicas).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(SharedSignIn { logins, sessions: store.clone(), tx });
        sessions.set_replica(shared.clone());
        actix_web::rt::spawn(writer(store.clone(), rx, stop.clone()));
        actix_web::rt::spawn(follower(store, sessions, stop));
        Ok(shared)
    }

    /// Puts a sign-in in progress where every node finds it.
    pub async fn put_login(&self, state: &str, p: &Pending) -> Result<(), String> {
        let body = serde_json::to_vec(&p.to_wire()).map_err(|e| e.to_string())?;
        tokio::time::timeout(Duration::from_secs(5), self.logins.put(state, body.into())).await.map_err(|_| "NATS did not answer in time".to_string())?.map(drop).map_err(|e| e.to_string())
    }

    /// Takes a sign-in in progress another node started (once).
    pub async fn take_login(&self, state: &str) -> Option<Pending> {
        if state.is_empty() || !state.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return None;
        }
        let e = tokio::time::timeout(Duration::from_secs(5), self.logins.entry(state)).await.ok()?.ok()??;
        if !matches!(e.operation, kv::Operation::Put) {
            return None;
        }
        // Only the one delete that finds this revision takes it.
        tokio::time::timeout(Duration::from_secs(5), self.logins.delete_expect_revision(state, Some(e.revision))).await.ok()?.ok()?;
        Pending::from_wire(serde_json::from_slice(&e.value).ok()?)
    }

    /// The number of sessions in the shared bucket (for tests and the admin view).
    pub fn bucket(&self) -> &kv::Store {
        &self.sessions
    }
}

/// Writes session changes to the bucket, in order.
async fn writer(store: kv::Store, mut rx: tokio::sync::mpsc::UnboundedReceiver<Op>, mut stop: Shutdown) {
    loop {
        let op = tokio::select! {
            _ = stop.recv() => return,
            op = rx.recv() => match op { Some(op) => op, None => return },
        };
        let r = match op {
            Op::Put(s) => match serde_json::to_vec(&s) {
                Ok(body) => store.put(&s.id, body.into()).await.map(drop).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Op::Delete(id) => store.delete(&id).await.map_err(|e| e.to_string()),
        };
        if let Err(e) = r {
            warn!(error = %e, "Could not share a sign-in session with the cluster.");
        }
    }
}

/// Follows the bucket into this node's sessions.
async fn follower(store: kv::Store, sessions: Arc<Sessions>, mut stop: Shutdown) {
    loop {
        let Some(mut watch) = super::open_watch(&store, "sessions", &mut stop).await else { return };
        loop {
            let e = tokio::select! {
                _ = stop.recv() => return,
                e = watch.next() => e,
            };
            let e = match e {
                Some(Ok(e)) => e,
                _ => break,
            };
            match e.operation {
                kv::Operation::Put => {
                    if let Ok(s) = serde_json::from_slice::<StoredSession>(&e.value) {
                        let sessions = sessions.clone();
                        let _ = actix_web::web::block(move || sessions.adopt(s)).await;
                    }
                }
                _ => {
                    let (sessions, id) = (sessions.clone(), e.key.clone());
                    let _ = actix_web::web::block(move || sessions.drop_shared(&id)).await;
                }
            }
        }
        tokio::select! {
            _ = stop.recv() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
