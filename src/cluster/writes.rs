//! Absences written through JetStream: acknowledged only once the cluster has stored them on
//! its replicas, then taken by every node's store and by the owner's user actor.
//!
//! A write (an absence created, changed or cleared, with its audit entry) is one message on
//! the stream `<PREFIX>_ABSENCES`, subject `<prefix>.absence.<partition>.<absence>`; the stream
//! keeps the latest message of each absence, so it is also the current state of every absence
//! for a node that joins later. JetStream acknowledges the message once a quorum of the
//! replicas has it: from then on the write survives the loss of any hub node and of a minority
//! of the NATS servers.
//!
//! Every node consumes the stream in order and applies each message to its SQLite store with
//! the audit entry and the message's sequence in one transaction (exactly once, whatever
//! crashes), so every node lists, audits and restores the same absences; the node owning the
//! person also hands the change to the person's user actor. The node that took the write
//! answers once it has applied it, with the merged view from the owner.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use presence_actors::cluster::{partition_of, Peers as _};
use presence_actors::hub::Hub;
use presence_actors::model::MergedView;
use presence_actors::provider::Shutdown;
use presence_actors::wire::PresenceIn;

use super::{partitions::Partitions, Cluster, ClusterError};
use crate::store::audit::AuditRecord;
use crate::store::{Store, StoredAbsence};

/// How long a write waits for this node's store and the owner to have applied it.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// One write on the stream.
#[derive(Debug, Serialize, Deserialize)]
struct Write {
    /// The person.
    user_id: String,
    /// The absence.
    id: String,
    /// Its new state; `None`: cleared.
    absence: Option<StoredAbsence>,
    /// The audit entry that goes with it.
    audit: Option<AuditRecord>,
}

/// Why a write was not acknowledged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// JetStream did not store it: nothing changed.
    #[error("the cluster did not store the change (nothing changed): {0}")]
    NotStored(String),
}

/// This node's end of the replicated writes.
pub struct Writes {
    js: jetstream::Context,
    prefix: String,
    applied: tokio::sync::watch::Sender<u64>,
}

fn names(prefix: &str) -> String {
    format!("{}_ABSENCES", prefix.to_ascii_uppercase())
}

impl Writes {
    /// Creates the stream if missing and starts the task applying it to `store` and `hub`.
    pub async fn start(cluster: &Cluster, partitions: Arc<Partitions>, hub: &Hub, store: &Store, stop: Shutdown) -> Result<Arc<Writes>, ClusterError> {
        let c = cluster.config();
        let js = jetstream::new(cluster.inner.client.clone());
        let name = names(&c.prefix);
        let stream = super::open_stream(
            &js,
            jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![format!("{}.absence.>", c.prefix)],
                max_messages_per_subject: 1,
                num_replicas: c.replicas,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        let done = store.replicated_absences_seq().unwrap_or(0);
        let (applied, _) = tokio::sync::watch::channel(done);
        let w = Arc::new(Writes { js, prefix: c.prefix.clone(), applied });
        actix_web::rt::spawn(apply_loop(w.clone(), partitions, hub.clone(), store.clone(), stream, stop));
        Ok(w)
    }

    /// Stores an absence's new state (`None`: cleared) with its audit entry in the cluster;
    /// returns the stream sequence once JetStream has acknowledged it.
    pub async fn write(&self, user_id: &str, id: &str, absence: Option<StoredAbsence>, audit: Option<AuditRecord>) -> Result<u64, WriteError> {
        let subject = format!("{}.absence.{}.{}", self.prefix, partition_of(user_id), super::partitions::token(id));
        let body = serde_json::to_vec(&Write { user_id: user_id.to_string(), id: id.to_string(), absence, audit }).map_err(|e| WriteError::NotStored(e.to_string()))?;
        let ack = self.js.publish(subject, body.into()).await.map_err(|e| WriteError::NotStored(e.to_string()))?;
        let ack = tokio::time::timeout(Duration::from_secs(10), ack).await.map_err(|_| WriteError::NotStored("JetStream did not answer in time".into()))?;
        ack.map(|a| a.sequence).map_err(|e| WriteError::NotStored(e.to_string()))
    }

    /// Waits until this node has applied the write `seq` (at most `wait`); false on time-out.
    pub async fn applied(&self, seq: u64, wait: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        let reached = tokio::time::timeout(wait, rx.wait_for(|s| *s >= seq)).await.is_ok_and(|r| r.is_ok());
        reached
    }
}

/// Applies the stream to the store (exactly once) and to the owner's user actors, in order.
async fn apply_loop(w: Arc<Writes>, partitions: Arc<Partitions>, hub: Hub, store: Store, stream: jetstream::stream::Stream, stop: Shutdown) {
    let after = *w.applied.borrow();
    let mut pause = stop.clone();
    super::follow_stream(&stream, format!("{}.absence.>", w.prefix), "absences", jetstream::consumer::DeliverPolicy::All, after, stop, async |m, seq, _| {
        let write: Write = match serde_json::from_slice(&m.payload) {
            Ok(x) => x,
            Err(e) => {
                warn!(seq, error = %e, "Skipping an unreadable absence write from the cluster.");
                w.applied.send_replace(seq);
                return std::ops::ControlFlow::Continue(());
            }
        };
        // The store first: a crash after it re-reads nothing twice (the sequence is in the
        // same transaction); a crash before it re-reads the message.
        loop {
            let (st, w2) = (store.clone(), Write { user_id: write.user_id.clone(), id: write.id.clone(), absence: write.absence.clone(), audit: write.audit.clone() });
            match actix_web::web::block(move || st.apply_replicated_absence(seq, &w2.user_id, &w2.id, w2.absence.as_ref(), w2.audit.as_ref())).await {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => warn!(seq, error = %e, "Could not store an absence from the cluster; retrying."),
                Err(e) => warn!(seq, error = %e, "Store task failed; retrying."),
            }
            tokio::select! {
                _ = pause.recv() => return std::ops::ControlFlow::Break(()),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        if partitions.owns(partition_of(&write.user_id)) {
            if let Some(idx) = hub.directory().by_id(&write.user_id) {
                let r = match &write.absence {
                    Some(a) => hub.upsert_absence(idx, a.to_absence()).await.map(|_| ()),
                    None => hub.remove_absence(idx, &write.id).await.map(|_| ()),
                };
                if let Err(e) = r {
                    info!(user = %write.user_id, absence = %write.id, error = %e, "An absence from the cluster was not applied.");
                }
            }
        }
        w.applied.send_replace(seq);
        std::ops::ControlFlow::Continue(())
    })
    .await;
}

/// The merged view of `user_id` once the owner has applied the write `seq`: from this node when
/// it owns them, else asked of the owner. `None` when no answer came in time (the write is
/// stored all the same).
pub async fn view_after(cluster: &Cluster, hub: &Hub, user_id: &str, seq: u64) -> Option<MergedView> {
    let w = cluster.writes()?;
    let p = cluster.partitions()?;
    let n = partition_of(user_id);
    if p.owns(n) {
        w.applied(seq, APPLY_WAIT).await;
        let idx = hub.directory().by_id(user_id)?;
        return Some(hub.detail_local(idx).await.view);
    }
    // This node's store first, so the answer's reads (lists, audit) see the write.
    w.applied(seq, APPLY_WAIT).await;
    let subject = format!("{}.view.{n}", cluster.config().prefix);
    let body = serde_json::to_vec(&serde_json::json!({ "id": user_id, "seq": seq })).ok()?;
    let reply = tokio::time::timeout(APPLY_WAIT + Duration::from_secs(1), cluster.inner.client.request(subject, body.into())).await.ok()?.ok()?;
    serde_json::from_slice::<PresenceIn>(&reply.payload).ok().map(PresenceIn::into_exact_view)
}

/// Answers `<prefix>.view.<partition>` for a partition this node owns: the person's merged
/// view once this node has applied the write named.
pub(crate) async fn answer_views(cluster: &Cluster, hub: &Hub, sub: Option<async_nats::Subscriber>) {
    let Some(mut sub) = sub else { return std::future::pending().await };
    while let Some(m) = sub.next().await {
        let Some(reply) = m.reply else { continue };
        let q: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
        let (Some(id), Some(seq)) = (q["id"].as_str().map(str::to_string), q["seq"].as_u64()) else { continue };
        let (cluster, hub) = (cluster.clone(), hub.clone());
        // Each on its own task: one write still on its way holds up no other answer.
        actix_web::rt::spawn(async move {
            if let Some(w) = cluster.writes() {
                w.applied(seq, APPLY_WAIT).await;
            }
            let body = match hub.directory().by_id(&id) {
                Some(u) => presence_actors::wire::presence_json(&id, &hub.detail_local(u).await.view),
                None => String::new(),
            };
            let _ = cluster.inner.client.publish(reply, body.into()).await;
        });
    }
}
