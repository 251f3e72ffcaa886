//! Leases: which node runs each feed.
//!
//! Each feed (a provider, directory sync) has a key in the KV bucket `<prefix>_leases`. The
//! [`Keeper`] of every node runs one loop, every sixth of the lease:
//! - **Take**: a key that is free (never seen, given back, or not renewed for a lease) is
//!   created (`create` fails if the key exists, so only one node wins). The node that
//!   rendezvous hashing prefers among the live nodes (less the one that let the key lapse)
//!   tries at once; the others wait half a lease more, so feeds spread over the nodes when
//!   they start together. The winner opens the feed's [`Gate`]:
//!   the provider starts.
//! - **Renew**: a held key is updated every third of the lease with the revision this node
//!   last wrote (`update` fails if anyone else wrote since). The renewal time counted is when
//!   the update was *sent*, so the node's idea of its expiry is never later than NATS's.
//!   The loop never waits for NATS: calls run beside it, one per key at a time, and their
//!   answers are taken as they come, so a call NATS does not answer delays nothing else.
//! - **Fence**: if no renewal has succeeded for half the lease, the gate is closed with the
//!   deadline `renewed + lease − margin`: the provider stops gracefully and is aborted at that
//!   deadline. NATS removes the key only at `renewed + lease` at the earliest (the bucket's
//!   `max_age`), so the feed is gone before another node can take it. A renewal refused
//!   because someone else wrote the key stops the feed at once.
//! - **Give back**: at shutdown, after the providers have stopped, the keys are deleted so
//!   that other nodes take over at once instead of after the lease.

use std::time::Duration;

use futures_util::StreamExt;
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
    /// Being handed to the preferred node: the gate is closed, the key is deleted once
    /// whatever ran under it has stopped (a partition: once its state is saved).
    releasing: bool,
    /// A NATS call on this key is under way (at most one at a time, so a renewal never races
    /// another with a stale revision).
    busy: bool,
}

/// A NATS call under way: the lease's index, when the call was sent, what it came to.
type Call = futures_util::future::LocalBoxFuture<'static, (usize, Instant, Outcome)>;

/// The lease loop of one node (see the module docs).
pub struct Keeper {
    cluster: Cluster,
    /// The hub, told when a feed's lease lapses with nobody holding it (the feed is down
    /// everywhere until a node takes it), or `None`.
    hub: Option<presence_actors::hub::Hub>,
    leases: Vec<Lease>,
    timing: Timing,
    /// The NATS calls under way. The loop never waits for them: it used to (one `join_all` per
    /// tick), so a renewal that NATS did not answer held the loop for its whole budget — a third
    /// of the lease — and the feed was told to stop only then, at two thirds of the lease or
    /// later instead of half, leaving its graceful stop less than half the time meant before
    /// the fence (measured: 2.0 s after the last renewal with a 3 s lease, 0.7 s before the
    /// abort). One lease's slow call also delayed every other lease's renewal.
    calls: futures_util::stream::FuturesUnordered<Call>,
    /// The hub is stopping: no lease is taken any more.
    stopping: bool,
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

/// True for the lease of a partition of the people (not a feed).
pub fn is_partition(key: &str) -> bool {
    key.starts_with("partition.")
}

/// Counts a feed's lease event in the `presence_cluster_leases_*` series (partitions have
/// their own).
fn count(key: &str, counter: &std::sync::atomic::AtomicU64) {
    if !is_partition(key) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Deletes `key` if it still holds `revision` (handing it to the preferred node), giving up at
/// `until`.
fn give_back(store: kv::Store, i: usize, key: String, revision: u64, until: Instant) -> Call {
    Box::pin(async move {
        let sent = Instant::now();
        let op = async {
            match store.delete_expect_revision(&key, Some(revision)).await {
                Ok(()) => Outcome::GivenBack,
                Err(e) => Outcome::Failed(e.to_string()),
            }
        };
        let until = until.max(sent + Duration::from_millis(10));
        let outcome = tokio::time::timeout_at(until, op).await.unwrap_or_else(|_| Outcome::Failed("NATS did not answer in time".into()));
        (i, sent, outcome)
    })
}

/// Creates (`renew` None) or renews (with the revision last written) `key`, giving up at
/// `until`.
fn call(store: kv::Store, i: usize, key: String, record: bytes::Bytes, renew: Option<u64>, until: Instant) -> Call {
    Box::pin(async move {
        let sent = Instant::now();
        let op = async {
            match renew {
                Some(revision) => match store.update(&key, record, revision).await {
                    Ok(r) => Outcome::Renewed(r),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Outcome::Refused(e.to_string()),
                    Err(e) => Outcome::Failed(e.to_string()),
                },
                None => match store.create(&key, record).await {
                    Ok(r) => Outcome::Taken(r),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Outcome::NotTaken,
                    Err(e) => Outcome::Failed(e.to_string()),
                },
            }
        };
        let until = until.max(sent + Duration::from_millis(10));
        let outcome = tokio::time::timeout_at(until, op).await.unwrap_or_else(|_| Outcome::Failed("NATS did not answer in time".into()));
        (i, sent, outcome)
    })
}

/// Whether `me` tries a free `key` at once rather than after [`Timing::defer`]: it is the node
/// rendezvous hashing prefers among the `alive` nodes less `lapsed`, the node that let the key
/// lapse or gave it back. That node is no candidate: its membership can outlive its lease by up
/// to a third of the lease, and while it did, every other node deferred to it when it was the
/// preferred one, which added half a lease to the failover of a crashed node's feeds.
fn first_in_line(key: &str, alive: &[String], lapsed: Option<&str>, me: &str) -> bool {
    let candidates: Vec<String> = alive.iter().filter(|n| Some(n.as_str()) != lapsed).cloned().collect();
    preferred(key, &candidates) == Some(me)
}

impl Keeper {
    /// A keeper with no leases yet.
    pub fn new(cluster: Cluster) -> Keeper {
        let timing = Timing { lease: cluster.config().lease() };
        Keeper { cluster, hub: None, leases: Vec::new(), timing, calls: Default::default(), stopping: false }
    }

    /// Adds a lease whose holder opens `gate`.
    pub fn add(&mut self, kind: LeaseKind, name: &str, gate: Gate) {
        let record = LeaseRecord { node: self.cluster.node().to_string(), kind: kind.prefix().to_string(), name: name.to_string() };
        let record = serde_json::to_vec(&record).unwrap_or_default().into();
        self.leases.push(Lease { key: key(kind, name), record, gate, held: None, free_since: None, busy: false, balanced: false, releasing: false });
    }

    /// Marks a feed down in `hub` when its lease lapses with nobody holding it: its slots then
    /// show stale on every node until the feed runs again, never live from a dead node.
    pub fn watch_feeds(&mut self, hub: presence_actors::hub::Hub) {
        self.hub = Some(hub);
    }

    /// Adds a lease that moves to the node rendezvous hashing prefers whenever that node is
    /// alive (partitions of the people).
    pub fn add_balanced(&mut self, kind: LeaseKind, name: &str, gate: Gate) {
        self.add(kind, name, gate);
        if let Some(l) = self.leases.last_mut() {
            l.balanced = true;
        }
    }

    /// Runs the loop until `stop`; then waits for everything run under a lease to stop — the
    /// providers, directory sync, and the partitions, which hand their people's state over
    /// first — and gives the leases back. Returns when done.
    pub async fn run(mut self, mut stop: Shutdown) {
        let gates: Vec<Gate> = self.leases.iter().map(|l| l.gate.clone()).collect();
        let stopped = futures_util::future::join_all(gates.iter().map(Gate::stopped));
        let mut tick = tokio::time::interval(self.timing.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let due = self.next_deadline();
            tokio::select! {
                _ = stop.recv() => break,
                _ = tick.tick() => self.step(),
                _ = tokio::time::sleep_until(due) => self.step(),
                Some((i, sent, outcome)) = self.calls.next() => self.settle(i, sent, outcome),
            }
        }
        // The providers stop at the shutdown; keep renewing until they have, then give back.
        self.stopping = true;
        tokio::pin!(stopped);
        loop {
            let due = self.next_deadline();
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => self.step(),
                _ = tokio::time::sleep_until(due) => self.step(),
                Some((i, sent, outcome)) = self.calls.next() => self.settle(i, sent, outcome),
            }
        }
        // A call still under way may change the revision to give back with: let it finish (each
        // ends by its budget, a third of the lease at most).
        let wait = self.timing.lease;
        let last = async {
            while let Some((i, sent, outcome)) = self.calls.next().await {
                self.settle(i, sent, outcome);
            }
        };
        let _ = tokio::time::timeout(wait, last).await;
        self.release().await;
    }

    /// The next time a held lease's feed must be told to stop, or fenced: the loop looks at its
    /// leases then, not at the tick after (up to a sixth of the lease later).
    fn next_deadline(&self) -> Instant {
        let t = self.timing;
        let far = Instant::now() + t.lease;
        self.leases
            .iter()
            .filter_map(|l| l.held.map(|h| if l.gate.is_open() { h.renewed + t.close_after() } else { h.renewed + t.fence_after() }))
            .fold(far, Instant::min)
    }

    /// One look at every lease: fences what must be, starts the NATS calls that are due (their
    /// answers come to [`Keeper::settle`]).
    fn step(&mut self) {
        let now = Instant::now();
        let t = self.timing;
        let may_take = !self.stopping && self.cluster.connected() && self.cluster.caught_up();
        let alive = self.cluster.alive_nodes();
        let me = self.cluster.node().to_string();
        let store = &self.cluster.inner.leases;
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
                        count(&l.key, &self.cluster.metrics().leases_lost);
                        continue;
                    }
                    if l.balanced && !l.releasing && !self.stopping && since < t.close_after() && self.cluster.caught_up() {
                        if let Some(other) = preferred(&l.key, &alive).filter(|p| *p != me) {
                            info!(lease = %l.key, to = other, "Handing the lease to the node preferred for it.");
                            l.releasing = true;
                            l.gate.close(now + t.lease);
                        }
                    }
                    if l.releasing && !l.gate.is_running() {
                        if !l.busy {
                            l.busy = true;
                            self.calls.push(give_back(store.clone(), i, l.key.clone(), h.revision, (now + t.renew_after()).min(h.renewed + t.fence_after())));
                        }
                        continue;
                    }
                    if since >= t.close_after() && l.gate.is_open() {
                        warn!(lease = %l.key, "Cannot renew the lease (NATS unreachable?): stopping the feed before the lease can expire.");
                        l.gate.close(h.renewed + t.fence_after());
                    }
                    // Due at the tick nearest to a third of the lease (ticks are a sixth apart),
                    // so a healthy lease never comes near the half-lease mark. A renewal that
                    // gets no answer is given up after a third of the lease (or at the fence) and
                    // tried again.
                    if !l.busy && since + t.tick() / 2 >= t.renew_after() {
                        l.busy = true;
                        let until = (now + t.renew_after()).min(h.renewed + t.fence_after());
                        self.calls.push(call(store.clone(), i, l.key.clone(), l.record.clone(), Some(h.revision), until));
                    }
                }
                None => {
                    if !may_take || l.busy || l.gate.is_running() {
                        continue;
                    }
                    let owner = self.cluster.owner(&l.key);
                    let free = match &owner {
                        None => true,
                        Some(o) => o.deleted || o.seen.elapsed() >= t.lease,
                    };
                    if !free {
                        l.free_since = None;
                        continue;
                    }
                    if let (Some(hub), ("provider", name)) = (&self.hub, describe(&l.key)) {
                        hub.set_feed_up(&name, false);
                    }
                    let since = *l.free_since.get_or_insert(now);
                    let mine = first_in_line(&l.key, &alive, owner.as_ref().map(|o| o.node.as_str()), &me);
                    if mine || now.duration_since(since) >= t.defer() {
                        l.busy = true;
                        self.calls.push(call(store.clone(), i, l.key.clone(), l.record.clone(), None, now + t.renew_after()));
                    }
                }
            }
        }
    }

    /// What a NATS call on lease `i`, sent at `sent`, came to.
    fn settle(&mut self, i: usize, sent: Instant, outcome: Outcome) {
        let m = self.cluster.metrics();
        let l = &mut self.leases[i];
        l.busy = false;
        match outcome {
            Outcome::Taken(revision) => {
                self.cluster.wrote(true, revision);
                info!(lease = %l.key, "Took the lease: starting the feed on this node.");
                l.held = Some(Held { revision, renewed: sent });
                l.free_since = None;
                self.cluster.set_held(&l.key, Some(now_ms()));
                count(&l.key, &m.leases_acquired);
                // (Stopping, the feed does not start again; the key is given back.)
                l.gate.open();
            }
            Outcome::NotTaken => debug!(lease = %l.key, "Lease taken by another node."),
            Outcome::GivenBack => {
                info!(lease = %l.key, "Handed the lease to the preferred node.");
                l.held = None;
                l.releasing = false;
                self.cluster.set_held(&l.key, None);
                count(&l.key, &m.leases_released);
            }
            Outcome::Renewed(revision) => {
                self.cluster.wrote(true, revision);
                // A renewal that raced the fence deadline does not count.
                if l.held.is_some() {
                    l.held = Some(Held { revision, renewed: sent });
                    self.cluster.set_held(&l.key, Some(now_ms()));
                    count(&l.key, &m.lease_renewals);
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
                count(&l.key, &m.leases_lost);
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

    /// Gives back every lease still held (the feeds have stopped): deleted with the revision
    /// this node wrote, so the others take over at once.
    async fn release(&mut self) {
        let store = self.cluster.inner.leases.clone();
        let mut gone = Vec::new();
        for l in &mut self.leases {
            let Some(h) = l.held.take() else { continue };
            l.gate.close(Instant::now());
            gone.push((l.key.clone(), h.revision));
        }
        // All at once: each waits up to 2 s when NATS does not answer.
        let deletes = gone.iter().map(|(key, revision)| {
            let store = store.clone();
            async move { (key, tokio::time::timeout(Duration::from_secs(2), store.delete_expect_revision(key, Some(*revision))).await) }
        });
        for (key, result) in futures_util::future::join_all(deletes).await {
            match result {
                Ok(Ok(())) if is_partition(key) => info!(lease = %key, "Gave the partition back."),
                Ok(Ok(())) => {
                    info!(lease = %key, "Gave the lease back.");
                    count(key, &self.cluster.metrics().leases_released);
                }
                Ok(Err(e)) => warn!(lease = %key, error = %e, "Could not give the lease back; it expires by itself."),
                Err(_) => warn!(lease = %key, "NATS did not answer; the lease expires by itself."),
            }
            self.cluster.set_held(key, None);
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
    fn the_node_that_let_a_key_lapse_is_not_first_in_line_for_it() {
        let all: Vec<String> = ["hub-a", "hub-b", "hub-c"].map(String::from).to_vec();
        let key = "provider.pbx";
        let favourite = preferred(key, &all).expect("some").to_string();
        assert!(first_in_line(key, &all, None, &favourite));
        assert!(first_in_line(key, &all, Some("hub-x"), &favourite), "a stranger's lapse changes nothing");
        // The favourite let it lapse but still counts as alive: the preferred one of the others
        // goes at once, the favourite and the third wait.
        let rest: Vec<String> = all.iter().filter(|n| **n != favourite).cloned().collect();
        let next = preferred(key, &rest).expect("some");
        let firsts: Vec<&String> = all.iter().filter(|n| first_in_line(key, &all, Some(favourite.as_str()), n)).collect();
        assert_eq!(firsts, [next], "exactly one node goes at once");
        // Alone, the node that let it lapse waits and takes it after the defer.
        assert!(!first_in_line(key, &["hub-a".to_string()], Some("hub-a"), "hub-a"));
    }

    #[test]
    fn the_fence_falls_before_the_lease_and_after_the_last_renewal_attempt() {
        for ms in [500u64, 3000, 60_000] {
            let t = Timing { lease: Duration::from_millis(ms) };
            assert!(t.renew_after() < t.close_after());
            assert!(t.close_after() < t.fence_after());
            assert!(t.fence_after() < t.lease);
            // A renewal is due at the tick nearest a third of the lease; one that fails at once
            // is tried again before the feed is told to stop, and once more before the fence.
            // (One that gets no answer is given up after a third of the lease, without holding
            // up the loop: the feed is still told to stop at half the lease.)
            assert!(t.renew_after() + t.tick() / 2 < t.close_after(), "{ms}");
            assert!(t.close_after() + t.tick() <= t.fence_after(), "{ms}");
        }
    }
}
