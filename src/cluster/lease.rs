//! Leases: which node runs each feed.
//!
//! Each feed (a provider, directory sync) has a key in the KV bucket `<prefix>_leases`. The
//! [`Keeper`] of every node runs one loop, every sixth of the lease:
//! - **Take**: a key that is free (never seen, given back, or not renewed for a lease) is
//!   created (`create` fails if the key exists, so only one node wins). The node that
//!   rendezvous hashing prefers tries at once; the others wait half a lease more, so feeds
//!   spread over the nodes when they start together. The winner opens the feed's [`Gate`]:
//!   the provider starts.
//! - **Renew**: a held key is updated every third of the lease with the revision this node
//!   last wrote (`update` fails if anyone else wrote since). The renewal time counted is when
//!   the update was *sent*, so the node's idea of its expiry is never later than NATS's.
//! - **Fence**: if no renewal has succeeded for half the lease, the gate is closed with the
//!   deadline `renewed + lease − margin`: the provider stops gracefully and is aborted at that
//!   deadline. NATS removes the key only at `renewed + lease` at the earliest (the bucket's
//!   `max_age`), so the feed is gone before another node can take it. A renewal refused
//!   because someone else wrote the key stops the feed at once.
//! - **Give back**: at shutdown, after the providers have stopped, the keys are deleted so
//!   that other nodes take over at once instead of after the lease.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use async_nats::jetstream::kv;
use presence_actors::model::now_ms;
use presence_actors::provider::Shutdown;
use presence_providers::supervisor::Gate;

use super::{preferred, Cluster, LeaseRecord};

/// What a lease is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseKind {
    /// A provider (`[[providers]]`).
    Provider,
    /// Directory sync (all `[[directory.sources]]`, merged on one node).
    Directory,
    /// A partition of the people (`presence_actors::cluster`).
    Partition,
}

impl LeaseKind {
    fn prefix(self) -> &'static str {
        match self {
            LeaseKind::Provider => "provider",
            LeaseKind::Directory => "directory",
            LeaseKind::Partition => "partition",
        }
    }
}

/// The KV key of a lease: `provider.<name>` / `directory.<name>`; a name with characters a
/// key cannot hold is hex-encoded behind `x`.
pub fn key(kind: LeaseKind, name: &str) -> String {
    let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        format!("{}.{name}", kind.prefix())
    } else {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{}.x{hex}", kind.prefix())
    }
}

/// The kind and name of a lease key (the inverse of [`key`]).
pub fn describe(key: &str) -> (&'static str, String) {
    let (kind, name) = key.split_once('.').unwrap_or(("", key));
    let kind = match kind {
        "provider" => "provider",
        "directory" => "directory",
        "partition" => "partition",
        _ => "other",
    };
    let name = match name.strip_prefix('x') {
        Some(hex) if hex.len() % 2 == 0 && !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            let bytes: Option<Vec<u8>> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect();
            bytes.and_then(|b| String::from_utf8(b).ok()).unwrap_or_else(|| name.to_string())
        }
        _ => name.to_string(),
    };
    (kind, name)
}

/// The timing of one lease length.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The lease.
    pub lease: Duration,
}

impl Timing {
    /// How often the keeper looks at its leases.
    pub fn tick(&self) -> Duration {
        (self.lease / 6).max(Duration::from_millis(50))
    }
    /// A held lease is renewed this long after its last renewal.
    pub fn renew_after(&self) -> Duration {
        self.lease / 3
    }
    /// With no renewal for this long, the feed is told to stop.
    pub fn close_after(&self) -> Duration {
        self.lease / 2
    }
    /// The feed is gone this long after its last renewal: the lease less a margin for clock
    /// rate differences and the abort itself.
    pub fn fence_after(&self) -> Duration {
        self.lease - (self.lease / 10).max(Duration::from_millis(100))
    }
    /// How long a non-preferred node waits, after seeing a key free, before it tries.
    pub fn defer(&self) -> Duration {
        self.lease / 2
    }
}

#[derive(Debug, Clone, Copy)]
struct Held {
    revision: u64,
    /// When the last successful renewal (or the create) was sent.
    renewed: Instant,
}

struct Lease {
    key: String,
    record: bytes::Bytes,
    gate: Gate,
    held: Option<Held>,
    /// When this node first saw the key free, for the non-preferred wait.
    free_since: Option<Instant>,
    /// Moves to the preferred node when one joins (partitions); feeds stay where they run.
    balanced: bool,
    /// Being given back to the preferred node: the gate is closed, the key is deleted once
    /// whatever ran under it has stopped.
    releasing: bool,
}

/// The lease loop of one node (see the module docs).
pub struct Keeper {
    cluster: Cluster,
    leases: Vec<Lease>,
    timing: Timing,
}

/// What an operation on a lease came to.
enum Outcome {
    Taken(u64),
    NotTaken,
    Renewed(u64),
    /// Someone else wrote the key: the lease is gone.
    Refused(String),
    /// NATS did not answer, or failed: try again at the next tick.
    Failed(String),
    /// Deleted, for the preferred node to take.
    GivenBack,
}

impl Keeper {
    /// A keeper with no leases yet.
    pub fn new(cluster: Cluster) -> Keeper {
        let timing = Timing { lease: cluster.config().lease() };
        Keeper { cluster, leases: Vec::new(), timing }
    }

    /// Adds a lease whose holder opens `gate`.
    pub fn add(&mut self, kind: LeaseKind, name: &str, gate: Gate) {
        let record = LeaseRecord { node: self.cluster.node().to_string(), kind: kind.prefix().to_string(), name: name.to_string() };
        let record = serde_json::to_vec(&record).unwrap_or_default().into();
        self.leases.push(Lease { key: key(kind, name), record, gate, held: None, free_since: None, balanced: false, releasing: false });
    }

    /// Adds a lease that moves to the node rendezvous hashing prefers whenever that node is
    /// alive (partitions of the people).
    pub fn add_balanced(&mut self, kind: LeaseKind, name: &str, gate: Gate) {
        self.add(kind, name, gate);
        if let Some(l) = self.leases.last_mut() {
            l.balanced = true;
        }
    }

    /// Runs the loop until `stop`; then waits for every gated feed to stop and gives the
    /// leases back. Returns when done.
    pub async fn run(mut self, mut stop: Shutdown, stopped: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.timing.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.recv() => break,
                _ = tick.tick() => self.step().await,
            }
        }
        // The providers stop at the shutdown; keep renewing until they have, then give back.
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => self.step().await,
            }
        }
        self.release().await;
    }

    /// One look at every lease.
    async fn step(&mut self) {
        let now = Instant::now();
        let t = self.timing;
        let may_take = self.cluster.connected() && self.cluster.caught_up();
        let alive = self.cluster.alive_nodes();
        let me = self.cluster.node().to_string();
        let mut ops = Vec::new();
        for (i, l) in self.leases.iter_mut().enumerate() {
            match l.held {
                Some(h) => {
                    let since = now.duration_since(h.renewed);
                    if since >= t.fence_after() {
                        error!(lease = %l.key, "Lease not renewed in time: the feed is stopped and another node may take it.");
                        l.gate.close(now);
                        l.held = None;
                        l.releasing = false;
                        self.cluster.set_held(&l.key, None);
                        self.cluster.metrics().leases_lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    }
                    if l.balanced && !l.releasing && since < t.close_after() && self.cluster.caught_up() {
                        if let Some(other) = preferred(&l.key, &alive).filter(|p| *p != me) {
                            info!(lease = %l.key, to = other, "Giving the lease to the node preferred for it.");
                            l.releasing = true;
                            l.gate.close(now + t.lease);
                        }
                    }
                    if l.releasing && !l.gate.is_running() {
                        ops.push((i, true, h.revision, now + t.renew_after()));
                        continue;
                    }
                    if since >= t.close_after() && l.gate.is_open() {
                        warn!(lease = %l.key, "Cannot renew the lease (NATS unreachable?): stopping the feed before the lease can expire.");
                        l.gate.close(h.renewed + t.fence_after());
                    }
                    // Due at the tick nearest to a third of the lease (ticks are a sixth apart),
                    // so a healthy lease never comes near the half-lease mark.
                    if since + t.tick() / 2 >= t.renew_after() {
                        ops.push((i, true, h.revision, h.renewed + t.fence_after()));
                    }
                }
                None => {
                    if !may_take || l.gate.is_running() {
                        continue;
                    }
                    let free = match self.cluster.owner(&l.key) {
                        None => true,
                        Some(o) => o.deleted || o.seen.elapsed() >= t.lease,
                    };
                    if !free {
                        l.free_since = None;
                        continue;
                    }
                    let since = *l.free_since.get_or_insert(now);
                    let mine = preferred(&l.key, &alive) == Some(me.as_str());
                    if mine || now.duration_since(since) >= t.defer() {
                        ops.push((i, false, 0, now + t.renew_after()));
                    }
                }
            }
        }
        if ops.is_empty() {
            return;
        }
        let store = self.cluster.inner.leases.clone();
        let calls = ops.iter().map(|&(i, renew, revision, until)| {
            let (key, record) = (self.leases[i].key.clone(), self.leases[i].record.clone());
            let give_back = self.leases[i].releasing && !self.leases[i].gate.is_running();
            let store = store.clone();
            let budget = until.saturating_duration_since(Instant::now()).min(t.renew_after()).max(Duration::from_millis(10));
            async move {
                let sent = Instant::now();
                let call = async {
                    if give_back {
                        match store.delete_expect_revision(&key, Some(revision)).await {
                            Ok(()) => Outcome::GivenBack,
                            Err(e) => Outcome::Failed(e.to_string()),
                        }
                    } else if renew {
                        match store.update(&key, record, revision).await {
                            Ok(r) => Outcome::Renewed(r),
                            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Outcome::Refused(e.to_string()),
                            Err(e) => Outcome::Failed(e.to_string()),
                        }
                    } else {
                        match store.create(&key, record).await {
                            Ok(r) => Outcome::Taken(r),
                            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Outcome::NotTaken,
                            Err(e) => Outcome::Failed(e.to_string()),
                        }
                    }
                };
                let outcome = tokio::time::timeout(budget, call).await.unwrap_or_else(|_| Outcome::Failed("NATS did not answer in time".into()));
                (i, sent, outcome)
            }
        });
        let results = futures_util::future::join_all(calls).await;
        let m = self.cluster.metrics();
        for (i, sent, outcome) in results {
            let l = &mut self.leases[i];
            match outcome {
                Outcome::Taken(revision) => {
                    info!(lease = %l.key, "Took the lease: starting the feed on this node.");
                    l.held = Some(Held { revision, renewed: sent });
                    l.free_since = None;
                    self.cluster.set_held(&l.key, Some(now_ms()));
                    m.leases_acquired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    l.gate.open();
                }
                Outcome::NotTaken => debug!(lease = %l.key, "Lease taken by another node."),
                Outcome::GivenBack => {
                    info!(lease = %l.key, "Gave the lease to the preferred node.");
                    l.held = None;
                    l.releasing = false;
                    self.cluster.set_held(&l.key, None);
                    m.leases_released.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Outcome::Renewed(revision) => {
                    // A renewal that raced the fence deadline does not count.
                    if l.held.is_some() {
                        l.held = Some(Held { revision, renewed: sent });
                        self.cluster.set_held(&l.key, Some(now_ms()));
                        m.lease_renewals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if !l.gate.is_open() && !l.releasing {
                            info!(lease = %l.key, "Renewed the lease again: starting the feed again.");
                            l.gate.open();
                        }
                    }
                }
                Outcome::Refused(e) => {
                    error!(lease = %l.key, error = %e, "Another node holds the lease now: the feed is stopped at once.");
                    l.gate.close(Instant::now());
                    l.held = None;
                    l.releasing = false;
                    self.cluster.set_held(&l.key, None);
                    m.leases_lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Outcome::Failed(e) => {
                    if l.held.is_some() {
                        m.lease_renewal_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        self.cluster.note_error(format!("lease {}: {e}", l.key));
                    } else {
                        debug!(lease = %l.key, error = %e, "Could not take the lease.");
                    }
                }
            }
        }
    }

    /// Gives back every lease still held (the feeds have stopped): deleted with the revision
    /// this node wrote, so the others take over at once.
    async fn release(&mut self) {
        let store = self.cluster.inner.leases.clone();
        for l in &mut self.leases {
            let Some(h) = l.held.take() else { continue };
            l.gate.close(Instant::now());
            match tokio::time::timeout(Duration::from_secs(2), store.delete_expect_revision(&l.key, Some(h.revision))).await {
                Ok(Ok(())) => {
                    info!(lease = %l.key, "Gave the lease back.");
                    self.cluster.metrics().leases_released.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(Err(e)) => warn!(lease = %l.key, error = %e, "Could not give the lease back; it expires by itself."),
                Err(_) => warn!(lease = %l.key, "NATS did not answer; the lease expires by itself."),
            }
            self.cluster.set_held(&l.key, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_only_hold_what_a_kv_key_may() {
        assert_eq!(key(LeaseKind::Provider, "graph-1"), "provider.graph-1");
        assert_eq!(describe("provider.graph-1"), ("provider", "graph-1".to_string()));
        let k = key(LeaseKind::Directory, "AD södra");
        assert!(k.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)), "{k}");
        assert_eq!(describe(&k), ("directory", "AD södra".to_string()));
    }

    #[test]
    fn the_fence_falls_before_the_lease_and_after_the_last_renewal_attempt() {
        for ms in [500u64, 3000, 60_000] {
            let t = Timing { lease: Duration::from_millis(ms) };
            assert!(t.renew_after() < t.close_after());
            assert!(t.close_after() < t.fence_after());
            assert!(t.fence_after() < t.lease);
            // A renewal is due at the tick nearest a third of the lease; it fails once and is
            // tried again before the feed is told to stop, and once more before the fence.
            assert!(t.renew_after() + t.tick() / 2 < t.close_after(), "{ms}");
            assert!(t.close_after() + t.tick() <= t.fence_after(), "{ms}");
        }
    }
}
