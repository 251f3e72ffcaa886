//! People sharded across the nodes: partition ownership, signals to the owner, changes to
//! every node, feed health everywhere.
//!
//! - **Ownership.** Each of the [`PARTITIONS`] partitions is a lease (`partition.<n>`) in the
//!   same bucket as the feeds, balanced by rendezvous hashing: when a node joins, the nodes
//!   that held the partitions it is preferred for give them back (their state goes with the
//!   next owner's restore) and it takes them; when a node dies, its partitions lapse and the
//!   survivors take them. The owner keeps the people's state (user actors); nobody else does.
//! - **Signals** about someone this node does not own go to `<prefix>.signal.<partition>`
//!   (core NATS), to which only the owner subscribes ([`Peers::forward`]).
//! - **Changes.** The owner publishes each merged change to the JetStream stream
//!   `<PREFIX>_PRESENCE`, subject `<prefix>.presence.<partition>.<person>` (one message kept
//!   per person: the stream is also the last state of everyone). Every node consumes the
//!   stream in order — the latest state of each person first, then every change — and puts
//!   each change into its fan-out numbered with the stream's sequence, so every node numbers
//!   every change the same: a client may resume on any node.
//! - **Feeds.** A feed's health (up/down) is a key of the bucket `<prefix>_feeds`, put by the
//!   node running it and watched by every node, whose merge needs it.
//! - **Restore.** A node taking a partition starts its people from the last published views,
//!   marked stale (as after a restart), and the stored absences; their feeds confirm them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use base64::Engine as _;
use futures_util::StreamExt;
use tracing::{info, warn};

use presence_actors::cluster::{partition_of, DetailWire, Incoming, Outgoing, Peers, SignalWire, PARTITIONS};
use presence_actors::directory::UserIdx;
use presence_actors::hub::{Hub, SinkError};
use presence_actors::model::{now_ms, Freshness, Signal};
use presence_actors::provider::Shutdown;
use presence_actors::wire::PresenceIn;
use presence_providers::supervisor::{Gate, GateRx};

use super::{Cluster, ClusterError};
use crate::store::Store;

/// Signals waiting to be forwarded before new ones are refused (`Overloaded`).
const FORWARD_QUEUE: usize = 65_536;
/// Change publications awaiting JetStream's acknowledgement at once.
const MAX_IN_FLIGHT: usize = 4_096;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct PartitionMetrics {
    /// Signals forwarded to another node.
    pub forwarded: AtomicU64,
    /// Signals received from another node.
    pub received: AtomicU64,
    /// Forwarded signals dropped: too many waiting for an owner.
    pub forward_dropped: AtomicU64,
    /// Changes published to the cluster.
    pub published: AtomicU64,
    /// Publications JetStream did not acknowledge.
    pub publish_failures: AtomicU64,
    /// Changes taken from the cluster into the fan-out.
    pub consumed: AtomicU64,
    /// Changes replaced by a newer one of the same person before they were published (the
    /// publisher was behind): the newest state goes out, not each one in between.
    pub coalesced: AtomicU64,
    /// Changes this node's consumer never saw, once caught up: the stream keeps one message
    /// per person, so a change replaced before the consumer read it is skipped (the newer
    /// one is read).
    pub skipped: AtomicU64,
}

/// Changes of this node's people waiting to be published: the newest per person, in the
/// order people first changed.
#[derive(Default)]
struct Pending {
    order: VecDeque<UserIdx>,
    latest: HashMap<UserIdx, Outgoing>,
}

/// This node's side of the partitions; the hub's [`Peers`].
pub struct Partitions {
    cluster: Cluster,
    owned: Vec<AtomicBool>,
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
    forward_tx: tokio::sync::mpsc::Sender<Forward>,
    feeds_tx: tokio::sync::mpsc::UnboundedSender<(String, bool)>,
    metrics: PartitionMetrics,
    /// Set once the consumer has read the stream up to where it stood at start: only then do
    /// the fan-out's views (what a taken partition starts from) hold everyone's last state.
    caught_up: tokio::sync::watch::Sender<bool>,
    /// The bucket `<prefix>_state`: each owned person's state (slots), for the next owner.
    state: kv::Store,
    /// Owned people whose view changed since their state was last saved.
    dirty: Mutex<std::collections::HashSet<UserIdx>>,
    /// Held while state is being saved: a hand-over's final save waits for a periodic save
    /// under way, so a periodic record (read back stale) never lands after the final one.
    saving: tokio::sync::Mutex<()>,
}

/// What the state bucket holds of a person: everything the owner held, and whether it was
/// written when the partition was handed over in good order (its slots then carry over live)
/// or by the periodic save (they come back stale, as after a restart).
#[derive(serde::Serialize, serde::Deserialize)]
struct StateRecord {
    #[serde(rename = "final")]
    handed_over: bool,
    at: i64,
    detail: DetailWire,
}

/// How often owned people's changed state is saved to the state bucket.
const SAVE_EVERY: Duration = Duration::from_secs(2);
/// How many people's state one periodic save writes at most (about 500 writes a second).
const SAVE_AT_MOST: usize = 1_024;

/// The stream and bucket names.
fn names(prefix: &str) -> (String, String) {
    (format!("{}_PRESENCE", prefix.to_ascii_uppercase()), format!("{prefix}_feeds"))
}

/// A person's id as one subject token.
pub(crate) fn token(id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub(crate) fn from_token(t: &str) -> Option<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t).ok().and_then(|b| String::from_utf8(b).ok())
}

impl Partitions {
    /// Creates the stream and bucket if missing and starts the tasks: publisher, forwarder,
    /// consumer of changes, watcher of feed health, and one keeper of each partition (their
    /// gates go to `keeper`).
    pub async fn start(cluster: &Cluster, hub: &Hub, store: &Store, keeper: &mut super::lease::Keeper, stop: Shutdown) -> Result<Arc<Partitions>, ClusterError> {
        let c = cluster.config();
        let js = jetstream::new(cluster.inner.client.clone());
        let (stream_name, feeds_bucket) = names(&c.prefix);
        let stream = super::open_stream(
            &js,
            jetstream::stream::Config {
                name: stream_name.clone(),
                subjects: vec![format!("{}.presence.>", c.prefix)],
                max_messages_per_subject: 1,
                num_replicas: c.replicas,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        let feeds = super::open_bucket(&js, &feeds_bucket, Duration::ZERO, c.replicas).await?;
        let state = super::open_bucket(&js, &format!("{}_state", c.prefix), Duration::ZERO, c.replicas).await?;
        let (forward_tx, forward_rx) = tokio::sync::mpsc::channel(FORWARD_QUEUE);
        let (feeds_tx, feeds_rx) = tokio::sync::mpsc::unbounded_channel();
        let p = Arc::new(Partitions {
            cluster: cluster.clone(),
            owned: (0..PARTITIONS).map(|_| AtomicBool::new(false)).collect(),
            pending: Mutex::new(Pending::default()),
            wake: tokio::sync::Notify::new(),
            forward_tx,
            feeds_tx,
            metrics: PartitionMetrics::default(),
            caught_up: tokio::sync::watch::channel(false).0,
            state,
            dirty: Mutex::new(Default::default()),
            saving: tokio::sync::Mutex::new(()),
        });
        hub.join_cluster(p.clone());
        let client = cluster.inner.client.clone();
        actix_web::rt::spawn(forwarder(p.clone(), client.clone(), forward_rx));
        actix_web::rt::spawn(publisher(p.clone(), js.clone(), c.prefix.clone(), stop.clone()));
        actix_web::rt::spawn(consumer(p.clone(), hub.clone(), stream, c.prefix.clone(), stop.clone()));
        actix_web::rt::spawn(feed_health(cluster.clone(), hub.clone(), feeds, feeds_rx, stop.clone()));
        actix_web::rt::spawn(state_saver(p.clone(), hub.clone(), stop.clone()));
        for n in 0..PARTITIONS {
            let (gate, rx) = Gate::new();
            keeper.add_balanced(super::lease::LeaseKind::Partition, &n.to_string(), gate);
            actix_web::rt::spawn(keep_partition(p.clone(), hub.clone(), store.clone(), client.clone(), c.prefix.clone(), n, rx, stop.clone()));
        }
        Ok(p)
    }

    /// The partitions this node owns now.
    pub fn owned(&self) -> Vec<u32> {
        (0..PARTITIONS).filter(|&n| self.owns(n)).collect()
    }

    /// The counters.
    pub fn metrics(&self) -> &PartitionMetrics {
        &self.metrics
    }

    /// Puts back a change JetStream did not take, unless a newer one of the person waits or
    /// the person's partition has moved on (its next owner publishes from its own state).
    fn requeue(&self, o: Outgoing) {
        if !self.owns(o.partition) {
            return;
        }
        let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let std::collections::hash_map::Entry::Vacant(e) = g.latest.entry(o.user) {
            let user = o.user;
            e.insert(o);
            g.order.push_back(user);
            drop(g);
            self.wake.notify_one();
        }
    }

    fn take_pending(&self, max: usize) -> Vec<Outgoing> {
        let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(max.min(g.order.len()));
        while out.len() < max {
            let Some(u) = g.order.pop_front() else { break };
            if let Some(o) = g.latest.remove(&u) {
                out.push(o);
            }
        }
        if g.order.is_empty() && g.latest.capacity() > 4096 {
            g.latest = HashMap::new();
        }
        out
    }
}

impl Peers for Partitions {
    fn owns(&self, partition: u32) -> bool {
        self.owned.get(partition as usize).is_some_and(|o| o.load(Ordering::Acquire))
    }

    fn forward(&self, partition: u32, id: &str, signal: &Signal, feed: &str) -> Result<(), SinkError> {
        let body = serde_json::to_vec(&SignalWire::new(id, feed, signal)).unwrap_or_default();
        let subject = format!("{}.signal.{partition}", self.cluster.config().prefix);
        let key = format!("{id}\u{0}{}\u{0}{}", signal.source.as_str(), signal.instance.as_str());
        match self.forward_tx.try_send(Forward { subject, key, body: body.into(), tries: 0 }) {
            Ok(()) => Ok(()),
            Err(_) => Err(SinkError::Overloaded),
        }
    }

    fn publish(&self, change: Outgoing) {
        let user = change.user;
        {
            let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let user = change.user;
            if g.latest.insert(user, change).is_none() {
                g.order.push_back(user);
            } else {
                self.metrics.coalesced.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.dirty.lock().unwrap_or_else(|p| p.into_inner()).insert(user);
        self.wake.notify_one();
    }

    fn feed_changed(&self, name: &str, up: bool) {
        // Only the node holding the feed's lease speaks for it: a node that lost the lease
        // (cut off, its "down" queued until it is back) must not overwrite the new owner's word.
        if self.cluster.holds(&super::lease::key(super::lease::LeaseKind::Provider, name)) {
            let _ = self.feeds_tx.send((name.to_string(), up));
        }
    }

    fn detail(&self, partition: u32, id: &str) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<DetailWire>> + Send>> {
        let client = self.cluster.inner.client.clone();
        let subject = format!("{}.detail.{partition}", self.cluster.config().prefix);
        let body = bytes::Bytes::from(id.to_string());
        Box::pin(async move {
            let reply = tokio::time::timeout(DETAIL_TIMEOUT, client.request(subject, body)).await.ok()?.ok()?;
            serde_json::from_slice(&reply.payload).ok()
        })
    }
}

/// How long a node waits for an owner's answer about a person.
const DETAIL_TIMEOUT: Duration = Duration::from_secs(2);

/// A signal on its way to its person's owner.
struct Forward {
    subject: String,
    /// Person, source and instance: a newer signal for the same key replaces a waiting one.
    key: String,
    body: bytes::Bytes,
    tries: u32,
}

/// Signals waiting for an owner (none answered: the partition is moving) before new ones are
/// dropped; each key keeps only its newest signal.
const MAX_WAITING: usize = 100_000;
/// Forwarded signals awaiting their owner's answer at once.
const MAX_FORWARDS_IN_FLIGHT: usize = 1_024;

/// Sends forwarded signals and waits for the owner's answer. A signal nobody takes (no owner
/// yet: the partition is moving, its node just died) waits, newest per person, source and
/// instance, and is tried again every 200 ms until an owner takes it: a failover loses no
/// call or meeting that began meanwhile.
async fn forwarder(p: Arc<Partitions>, client: async_nats::Client, mut rx: tokio::sync::mpsc::Receiver<Forward>) {
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    let mut waiting: HashMap<String, Forward> = HashMap::new();
    let mut retry = tokio::time::interval(Duration::from_millis(200));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let send = |f: Forward| {
        let client = client.clone();
        async move {
            let r = tokio::time::timeout(Duration::from_secs(2), client.request(f.subject.clone(), f.body.clone())).await;
            let taken = matches!(r, Ok(Ok(ref m)) if &m.payload[..] == b"ok");
            (f, taken)
        }
    };
    loop {
        tokio::select! {
            f = rx.recv(), if in_flight.len() < MAX_FORWARDS_IN_FLIGHT => match f {
                Some(f) => in_flight.push(send(f)),
                None => return,
            },
            Some((mut f, taken)) = in_flight.next(), if !in_flight.is_empty() => {
                if taken {
                    p.metrics.forwarded.fetch_add(1, Ordering::Relaxed);
                } else {
                    f.tries += 1;
                    if f.tries == 1 || f.tries % 50 == 0 {
                        tracing::debug!(subject = %f.subject, tries = f.tries, "No owner took a forwarded signal yet; it waits.");
                    }
                    if waiting.len() < MAX_WAITING || waiting.contains_key(&f.key) {
                        waiting.insert(f.key.clone(), f);
                    } else {
                        p.metrics.forward_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ = retry.tick(), if !waiting.is_empty() => {
                let room = MAX_FORWARDS_IN_FLIGHT.saturating_sub(in_flight.len());
                let keys: Vec<String> = waiting.keys().take(room).cloned().collect();
                for k in keys {
                    if let Some(f) = waiting.remove(&k) {
                        in_flight.push(send(f));
                    }
                }
            }
        }
    }
}

/// Publishes this node's changes to the stream, newest per person, with many acknowledgements
/// awaited at once. A change JetStream did not take (no acknowledgement: the servers are
/// overloaded or electing a leader) is sent again — unless a newer one of the same person was
/// sent after it or waits — so a person's last state is never lost while this node owns them.
async fn publisher(p: Arc<Partitions>, js: jetstream::Context, prefix: String, mut stop: Shutdown) {
    let mut acks = futures_util::stream::FuturesUnordered::new();
    // The newest change of each person awaiting its acknowledgement.
    let mut newest: HashMap<UserIdx, u64> = HashMap::new();
    let mut sent = 0u64;
    let mut warned = Warned::default();
    loop {
        let batch = p.take_pending(MAX_IN_FLIGHT.saturating_sub(acks.len()).max(1));
        if batch.is_empty() {
            tokio::select! {
                _ = p.wake.notified() => continue,
                Some((o, n, r)) = acks.next(), if !acks.is_empty() => { settle(&p, &mut newest, &mut warned, o, n, r); continue; }
                _ = stop.recv() => {
                    // Whatever is acknowledged in the next second counts.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async { while let Some((o, n, r)) = acks.next().await { settle(&p, &mut newest, &mut warned, o, n, r); } }).await;
                    return;
                }
            }
        }
        for o in batch {
            let subject = format!("{prefix}.presence.{}.{}", o.partition, token(&o.id));
            let mut headers = async_nats::HeaderMap::new();
            let body: bytes::Bytes = match &o.json {
                Some(j) => bytes::Bytes::copy_from_slice(j.as_bytes()),
                None => {
                    headers.insert("Ph-Removed", "1");
                    presence_actors::wire::removed_json(&o.id).into()
                }
            };
            sent += 1;
            match js.publish_with_headers(subject, headers, body).await {
                Ok(ack) => {
                    newest.insert(o.user, sent);
                    let n = sent;
                    acks.push(async move { (o, n, std::future::IntoFuture::into_future(ack).await) });
                }
                Err(e) => {
                    p.metrics.publish_failures.fetch_add(1, Ordering::Relaxed);
                    warned.warn(|| warn!(error = %e, "Could not publish a change to the cluster; it is sent again."));
                    p.requeue(o);
                    // Not connected: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            while acks.len() >= MAX_IN_FLIGHT {
                if let Some((o, n, r)) = acks.next().await {
                    settle(&p, &mut newest, &mut warned, o, n, r);
                }
            }
        }
    }
}

/// At most one warning a second about the same trouble (under overload there are thousands);
/// the counters in `/metrics` have every one.
#[derive(Default)]
struct Warned(Option<tokio::time::Instant>);

impl Warned {
    fn warn(&mut self, log: impl FnOnce()) {
        let now = tokio::time::Instant::now();
        if self.0.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            self.0 = Some(now);
            log();
        }
    }
}

/// What JetStream answered to change number `n`.
fn settle<E: std::fmt::Display>(p: &Partitions, newest: &mut HashMap<UserIdx, u64>, warned: &mut Warned, o: Outgoing, n: u64, r: Result<jetstream::publish::PublishAck, E>) {
    let is_newest = newest.get(&o.user) == Some(&n);
    if is_newest {
        newest.remove(&o.user);
    }
    match r {
        Ok(_) => {
            p.metrics.published.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            p.metrics.publish_failures.fetch_add(1, Ordering::Relaxed);
            warned.warn(|| warn!(error = %e, "JetStream did not acknowledge a change; it is sent again."));
            if is_newest {
                p.requeue(o);
            }
        }
    }
}

/// Takes every change from the stream into the fan-out, in stream order: first the latest
/// state of everyone, then each change as it comes. Re-opens after an error.
async fn consumer(p: Arc<Partitions>, hub: Hub, mut stream: jetstream::stream::Stream, prefix: String, mut stop: Shutdown) {
    // Where the stream stood at start: caught up once read that far.
    let target = loop {
        match stream.info().await {
            Ok(i) => break i.state.last_sequence,
            Err(e) => {
                warn!(error = %e, "Cannot read the cluster's change stream; retrying.");
                tokio::select! {
                    _ = stop.recv() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    };
    if target == 0 {
        p.caught_up.send_replace(true);
    }
    let policy = jetstream::consumer::DeliverPolicy::LastPerSubject;
    let mut last = 0;
    super::follow_stream(&stream, format!("{prefix}.presence.>"), "changes", policy, 0, stop, async |m, seq, pending| {
        // The last-per-person replay ends with the newest message at start, or below it when
        // that one was replaced since: caught up when nothing is pending.
        if *p.caught_up.borrow() && last > 0 && seq > last + 1 {
            p.metrics.skipped.fetch_add(seq - last - 1, Ordering::Relaxed);
        }
        last = seq;
        if seq >= target || pending == 0 {
            p.caught_up.send_replace(true);
        }
        take_change(&p, &hub, &m, seq);
        std::ops::ControlFlow::Continue(())
    })
    .await;
}

/// Puts one change from the stream into the fan-out.
fn take_change(p: &Partitions, hub: &Hub, m: &jetstream::Message, seq: u64) {
    let Some(id) = m.subject.rsplit('.').next().and_then(from_token) else { return };
    let dir = hub.directory();
    let Some(user) = dir.by_id(&id) else { return };
    let removed = m.headers.as_ref().and_then(|h| h.get("Ph-Removed")).is_some();
    let Ok(json) = std::str::from_utf8(&m.payload) else { return };
    let view = if removed {
        None
    } else {
        match serde_json::from_str::<PresenceIn>(json) {
            Ok(v) => Some(v.into_exact_view()),
            Err(e) => {
                warn!(error = %e, "Skipping an unreadable change from the cluster.");
                return;
            }
        }
    };
    if hub.fanout().publish_at(Incoming { seq, user, dept: dir.department_of(user), view, json: json.into() }) {
        p.metrics.consumed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Puts this node's feed changes in the feeds bucket and applies everyone's.
async fn feed_health(cluster: Cluster, hub: Hub, feeds: kv::Store, mut rx: tokio::sync::mpsc::UnboundedReceiver<(String, bool)>, mut stop: Shutdown) {
    let me = cluster.node().to_string();
    let mut watch = None;
    // The latest word about each feed (key → node, up): applied when it comes from the feed's
    // current owner, and looked at again every half second, since the lease view and the
    // health bucket arrive in either order.
    let mut latest: HashMap<String, (String, bool)> = HashMap::new();
    let mut again = tokio::time::interval(Duration::from_millis(500));
    let apply = |latest: &HashMap<String, (String, bool)>| {
        for (key, (from, up)) in latest {
            // The word of the feed's current owner only, and never about a feed this node
            // runs itself.
            let owner = cluster.owner(key).filter(|o| !o.deleted).map(|o| o.node);
            if *from != me && owner.as_deref() == Some(from.as_str()) && !cluster.holds(key) {
                hub.set_feed_up(&super::lease::describe(key).1, *up);
            }
        }
    };
    loop {
        if watch.is_none() {
            watch = feeds.watch_with_history(">").await.ok();
        }
        tokio::select! {
            _ = stop.recv() => return,
            Some((name, up)) = rx.recv() => {
                let key = super::lease::key(super::lease::LeaseKind::Provider, &name);
                let body = serde_json::json!({ "node": me, "up": up, "at": now_ms() }).to_string();
                if let Err(e) = feeds.put(key, body.into()).await {
                    warn!(feed = %name, error = %e, "Could not tell the cluster about a feed's health.");
                }
            }
            _ = again.tick() => apply(&latest),
            e = async { match watch.as_mut() { Some(w) => w.next().await, None => { tokio::time::sleep(Duration::from_millis(500)).await; None } } } => {
                match e {
                    Some(Ok(e)) if matches!(e.operation, kv::Operation::Put) => {
                        let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap_or_default();
                        latest.insert(e.key.clone(), (v["node"].as_str().unwrap_or_default().to_string(), v["up"].as_bool().unwrap_or(false)));
                        apply(&latest);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => watch = None,
                }
            }
        }
    }
}

/// Owns partition `n` while its gate is open: takes its people in, listens for their signals;
/// when the gate closes, lets them go.
#[allow(clippy::too_many_arguments)]
async fn keep_partition(p: Arc<Partitions>, hub: Hub, store: Store, client: async_nats::Client, prefix: String, n: u32, mut gate: GateRx, mut stop: Shutdown) {
    loop {
        tokio::select! {
            _ = stop.recv() => return,
            ok = gate.permitted() => if !ok { return },
        }
        // Start from everyone's last published state, not from whatever arrived so far.
        let mut ready = p.caught_up.subscribe();
        tokio::select! {
            _ = stop.recv() => return,
            _ = ready.wait_for(|r| *r) => {}
        }
        let users = people_of(&hub, n);
        p.owned[n as usize].store(true, Ordering::Release);
        let sub = client.subscribe(format!("{prefix}.signal.{n}")).await;
        let details = client.subscribe(format!("{prefix}.detail.{n}")).await.ok();
        let views = client.subscribe(format!("{prefix}.view.{n}")).await.ok();
        adopt(&p, &hub, &store, n, &users).await;
        gate.set_running(true);
        // The records handed over are spent: saved again at once as this node's (read back
        // stale), so that if this node dies, the next owner does not take a hand-over from
        // before the changes since for live.
        let (p2, hub2, users2) = (p.clone(), hub.clone(), users.clone());
        actix_web::rt::spawn(async move { save_states(&p2, &hub2, &users2, false).await });
        info!(partition = n, people = users.len(), "Owning a partition.");
        let mut sub = match sub {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(partition = n, error = %e, "Cannot listen for the partition's signals.");
                None
            }
        };
        let by = tokio::select! {
            _ = stop.recv() => tokio::time::Instant::now() + Duration::from_secs(2),
            by = gate.withdrawn() => by,
            _ = async {
                while let Some(m) = match sub.as_mut() { Some(s) => s.next().await, None => std::future::pending().await } {
                    // "ok" once taken; anything else (the partition moved on meanwhile) makes
                    // the sender try again, and the next owner takes it.
                    let taken = serde_json::from_slice::<SignalWire>(&m.payload).ok().is_some_and(|w| hub.take_forwarded(w));
                    if taken {
                        p.metrics.received.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(reply) = m.reply {
                        let _ = client.publish(reply, bytes::Bytes::from_static(if taken { b"ok" } else { b"no" })).await;
                    }
                }
            } => tokio::time::Instant::now(),
            _ = answer_details(&hub, &client, details) => tokio::time::Instant::now(),
            _ = super::writes::answer_views(&p.cluster, &hub, views) => tokio::time::Instant::now(),
        };
        p.owned[n as usize].store(false, Ordering::Release);
        // Hand the people over in good order: their whole state, for the next owner (within
        // the lease's deadline; a node cut off from NATS just lets go).
        let people = people_of(&hub, n);
        if tokio::time::timeout_at(by, save_states(&p, &hub, &people, true)).await.is_err() {
            warn!(partition = n, "Could not hand the partition's state over in time; the next owner starts from the last save.");
        }
        if let Some(mut s) = sub {
            let _ = s.unsubscribe().await;
        }
        hub.forget(people_of(&hub, n)).await;
        gate.set_running(false);
        info!(partition = n, "Let a partition go.");
        if stop.is_shutdown() {
            return;
        }
    }
}

/// Answers other nodes' questions about this partition's people (the detail view).
async fn answer_details(hub: &Hub, client: &async_nats::Client, sub: Option<async_nats::Subscriber>) {
    let Some(mut sub) = sub else { return std::future::pending().await };
    while let Some(m) = sub.next().await {
        let Some(reply) = m.reply else { continue };
        let id = String::from_utf8_lossy(&m.payload).into_owned();
        let dir = hub.directory();
        let body = match dir.by_id(&id) {
            Some(u) => {
                let d = hub.detail_local(u).await;
                serde_json::to_vec(&DetailWire::new(&id, &d, |f| hub.feed_name(f))).unwrap_or_default()
            }
            None => Vec::new(),
        };
        let _ = client.publish(reply, body.into()).await;
    }
}

/// Saves the state of owned people whose view changed, every [`SAVE_EVERY`].
async fn state_saver(p: Arc<Partitions>, hub: Hub, mut stop: Shutdown) {
    let mut tick = tokio::time::interval(SAVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.recv() => return,
            _ = tick.tick() => {}
        }
        // At most SAVE_AT_MOST people a round: under load the changes go out first; the
        // others stay dirty for the next round.
        let users: Vec<UserIdx> = {
            let mut dirty = p.dirty.lock().unwrap_or_else(|e| e.into_inner());
            let users: Vec<UserIdx> = dirty.iter().take(SAVE_AT_MOST).copied().collect();
            for u in &users {
                dirty.remove(u);
            }
            users
        };
        // A hand-over waits for one such round at most.
        if !users.is_empty() {
            save_states(&p, &hub, &users, false).await;
        }
    }
}

fn state_key(id: &str) -> String {
    format!("s.{}.{}", partition_of(id), token(id))
}

/// Writes these people's state to the state bucket (those this node still holds). One save
/// at a time: the owner is checked under the lock, and a hand-over clears it before its save.
async fn save_states(p: &Partitions, hub: &Hub, users: &[UserIdx], handed_over: bool) {
    let _one_at_a_time = p.saving.lock().await;
    let dir = hub.directory();
    let mut pending = futures_util::stream::FuturesUnordered::new();
    for &u in users {
        let Some(person) = dir.person(u) else { continue };
        let id = person.id().to_string();
        if !handed_over && !p.owns(partition_of(&id)) {
            continue;
        }
        let d = hub.detail_local(u).await;
        if d.slots.is_empty() && d.absences.is_empty() && !d.view.availability.is_known() {
            continue;
        }
        let record = StateRecord { handed_over, at: now_ms(), detail: DetailWire::new(&id, &d, |f| hub.feed_name(f)) };
        let body = serde_json::to_vec(&record).unwrap_or_default();
        let store = p.state.clone();
        pending.push(async move { store.put(state_key(&id), body.into()).await.is_ok() });
        while pending.len() >= 256 {
            pending.next().await;
        }
    }
    let mut failed = 0;
    while let Some(ok) = pending.next().await {
        if !ok {
            failed += 1;
        }
    }
    if failed > 0 {
        warn!(failed, "Could not save every person's state to the cluster.");
    }
}

/// The slots the previous owner saved of partition `n`'s people: live when it handed them
/// over in good order, stale otherwise (it died: as after a restart).
async fn load_slots(p: &Partitions, hub: &Hub, n: u32) -> Vec<(UserIdx, presence_actors::model::Slot)> {
    let mut out = Vec::new();
    // The latest record of each of the partition's people, read to the end: the consumer says
    // how many there are when it is made, so an empty partition ends at once and a slow answer
    // is waited for, never taken for "nothing saved".
    let prefix = p.state.prefix.clone();
    let config = jetstream::consumer::pull::OrderedConfig { filter_subject: format!("{prefix}s.{n}.>"), deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject, ..Default::default() };
    let consumer = match p.state.stream.create_consumer(config).await {
        Ok(c) => c,
        Err(e) => {
            warn!(partition = n, error = %e, "Cannot read the partition's saved state; its people start from their last views.");
            return out;
        }
    };
    if consumer.cached_info().num_pending == 0 {
        return out;
    }
    let Ok(mut messages) = consumer.messages().await else { return out };
    let dir = hub.directory();
    let feeds = hub.feeds().clone();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
        let pending = m.info().map_or(0, |i| i.pending);
        let deleted = m.headers.as_ref().and_then(|h| h.get("KV-Operation")).is_some();
        if !deleted {
            if let Ok(r) = serde_json::from_slice::<StateRecord>(&m.payload) {
                let id = m.subject.rsplit('.').next().and_then(from_token);
                if let Some(u) = id.as_deref().and_then(|id| dir.by_id(id)) {
                    let d = r.detail.into_detail(|name| feeds.by_name(name).map_or(0, |f| f.id));
                    for mut s in d.slots {
                        s.restored |= !r.handed_over;
                        out.push((u, s));
                    }
                }
            }
        }
        if pending == 0 {
            break;
        }
    }
    out
}

fn people_of(hub: &Hub, n: u32) -> Vec<UserIdx> {
    let dir = hub.directory();
    (0..dir.len() as UserIdx).filter(|&u| dir.person(u).is_some_and(|p| partition_of(p.id()) == n)).collect()
}

/// Starts a partition's people from the last views the cluster published (stale, as after a
/// restart) and their stored absences, and publishes those views so every node shows them
/// stale until their feeds confirm them.
async fn adopt(p: &Partitions, hub: &Hub, store: &Store, n: u32, users: &[UserIdx]) {
    let slots = load_slots(p, hub, n).await;
    let carried: std::collections::HashSet<UserIdx> = slots.iter().filter(|(_, s)| !s.restored).map(|(u, _)| *u).collect();
    let dir = hub.directory();
    let mut views = Vec::new();
    for &u in users {
        if let Some(latest) = hub.fanout().latest(u).filter(|l| l.gone.is_none()) {
            let mut v = latest.view;
            // Handed over in good order: the view stays as it was; else stale until confirmed.
            if v.availability.is_known() && !carried.contains(&u) {
                v.freshness = Freshness::Stale;
            }
            views.push((u, v));
        }
    }
    let wanted: std::collections::HashSet<UserIdx> = users.iter().copied().collect();
    let st = store.clone();
    let stored = actix_web::web::block(move || st.load_absences(now_ms())).await.ok().and_then(Result::ok).unwrap_or_default();
    let absences: Vec<_> = stored.iter().filter_map(|a| dir.by_id(&a.user_id).filter(|u| wanted.contains(u)).map(|u| (u, a.to_absence()))).collect();
    for (u, v) in views.iter().filter(|(u, _)| !carried.contains(u)) {
        if let Some(person) = dir.person(*u) {
            p.publish(Outgoing { partition: partition_of(person.id()), user: *u, id: person.id().into(), json: Some(presence_actors::wire::presence_json(person.id(), v).into()) });
        }
    }
    hub.restore_with_slots(views, absences, slots).await;
}
