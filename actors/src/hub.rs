//! The hub handle: starts the shard arbiters and routes signals, absences and queries.
//!
//! [`Hub`] is cheap to clone and is what the HTTP layer and the providers hold. Signals go
//! through a [`SignalSink`], which resolves the person, stamps the ingest time and `try_send`s
//! to the person's shard; when a shard mailbox is full the newest signal per
//! (user, source, instance) waits in a bounded overflow map and is retried by a flusher task.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::cluster::{partition_of, Peers, SignalWire};
use crate::directory::{Directory, DirectoryDiff, UserIdx};
use crate::fanout::FanOut;
use crate::feeds::{FeedEntry, Feeds};
use crate::live::LiveDirectory;
use crate::metrics::Metrics;
use crate::model::{Absence, FeedId, MergedView, Policy, Signal, Source};
use crate::shard::{
    AbsenceChange, AbsenceOp, AbsenceRejected, ApplyDirectory, FeedChanged, GetDetail, GetStats, Restore, Shard, ShardConfig,
    ShardStats, SignalBatch, UserDetail, UserSignal,
};

/// Most signals waiting in the overflow map before new ones are dropped (and counted).
pub const MAX_OVERFLOW: usize = 1_000_000;

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Number of shard arbiters (threads).
    pub shards: usize,
    /// Shard and user actor settings.
    pub shard: ShardConfig,
    /// Changes kept for stream resume.
    pub replay_buffer: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            shards: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 64),
            shard: ShardConfig::default(),
            replay_buffer: 32_768,
        }
    }
}

/// Why a signal was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// Nobody in the directory matches the identity.
    #[error("no person matches {0:?}")]
    Unresolved(String),
    /// The overflow buffer is full; the signal was dropped.
    #[error("the hub is overloaded; signal dropped")]
    Overloaded,
}

type OverflowKey = (UserIdx, Source, crate::model::ShortStr);

struct Inner {
    directory: Arc<LiveDirectory>,
    policy: Arc<Policy>,
    fanout: Arc<FanOut>,
    metrics: Arc<Metrics>,
    feeds: Arc<Feeds>,
    shards: Vec<Addr<Shard>>,
    arbiters: Vec<ArbiterHandle>,
    overflow: Mutex<HashMap<OverflowKey, UserSignal>>,
    overflow_notify: tokio::sync::Notify,
    started_at: Instant,
    /// The other nodes, on a node of a cluster ([`Hub::join_cluster`]).
    peers: std::sync::OnceLock<Arc<dyn Peers>>,
}

/// The running hub.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Hub {
    /// Starts the shard arbiters. Must be called inside a running actix `System`.
    pub fn start(config: &HubConfig, directory: Directory, policy: Policy) -> Hub {
        let directory = Arc::new(LiveDirectory::new(directory));
        let policy = Arc::new(policy);
        let metrics = Arc::new(Metrics::default());
        let feeds = Arc::new(Feeds::default());
        let seq0 = (crate::model::now_ms().max(0) as u64).saturating_mul(crate::fanout::SEQ_PER_MS);
        let fanout = Arc::new(FanOut::new(directory.current().len(), config.replay_buffer, metrics.clone()).starting_after(seq0));
        let mut shards = Vec::new();
        let mut arbiters = Vec::new();
        for _ in 0..config.shards.max(1) {
            let arb = Arbiter::new();
            let (d, p, f, m, fe, c) = (directory.current(), policy.clone(), fanout.clone(), metrics.clone(), feeds.clone(), config.shard);
            let addr = Shard::start_in_arbiter(&arb.handle(), move |_| Shard::new(d, p, f, m, fe, c));
            shards.push(addr);
            arbiters.push(arb.handle());
        }
        let hub = Hub {
            inner: Arc::new(Inner {
                directory,
                policy,
                fanout,
                metrics,
                feeds,
                shards,
                arbiters,
                overflow: Mutex::new(HashMap::new()),
                overflow_notify: tokio::sync::Notify::new(),
                started_at: Instant::now(),
                peers: std::sync::OnceLock::new(),
            }),
        };
        let h = hub.clone();
        actix::spawn(async move { h.flush_overflow().await });
        hub
    }

    /// The current directory version (directory sync replaces it while the hub runs: hold it
    /// for one request or one pass, not for ever).
    pub fn directory(&self) -> Arc<Directory> {
        self.inner.directory.current()
    }

    /// The live directory, to watch for new versions.
    pub fn live_directory(&self) -> &Arc<LiveDirectory> {
        &self.inner.directory
    }

    /// The merge policy.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.inner.policy
    }

    /// The fan-out.
    pub fn fanout(&self) -> &Arc<FanOut> {
        &self.inner.fanout
    }

    /// Counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Feed health.
    pub fn feeds(&self) -> &Arc<Feeds> {
        &self.inner.feeds
    }

    /// Time since start.
    pub fn uptime(&self) -> Duration {
        self.inner.started_at.elapsed()
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// The shard of a person: a multiplicative hash of the person's index, so neighbouring
    /// people (one department imported together) spread over the shards.
    pub fn shard_of(&self, user: UserIdx) -> usize {
        let h = (user as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        (h % self.inner.shards.len() as u64) as usize
    }

    /// A sink that stamps signals with `feed`.
    pub fn sink(&self, feed: Arc<FeedEntry>) -> SignalSink {
        SignalSink { target: Target::Hub(self.clone()), feed }
    }

    /// Makes this hub one node of a cluster (see [`crate::cluster`]): from now on it keeps
    /// state only for the partitions `peers` says it owns, forwards other signals to their
    /// owner, and publishes its people's changes through `peers` (the fan-out takes changes
    /// numbered by the cluster, [`FanOut::publish_at`]). Call once, before providers start.
    pub fn join_cluster(&self, peers: Arc<dyn Peers>) {
        let p = peers.clone();
        let directory = self.inner.directory.clone();
        self.inner.fanout.set_relay(Box::new(move |user, json, removed| {
            // A leaver is no longer in the current version: their id is in the JSON.
            let id: Box<str> = match directory.current().person(user) {
                Some(person) if !removed => person.id().into(),
                _ => match serde_json::from_str::<serde_json::Value>(&json).ok().and_then(|v| v["id"].as_str().map(Box::<str>::from)) {
                    Some(id) => id,
                    None => return,
                },
            };
            let partition = partition_of(&id);
            // Shards only hold owned people; a change of anyone else (a newcomer or a
            // department move on a node that does not own them) is the owner's to publish.
            if p.owns(partition) {
                p.publish(crate::cluster::Outgoing { partition, user, id, json: (!removed).then_some(json) });
            }
        }));
        let _ = self.inner.peers.set(peers);
    }

    /// A signal forwarded by another node for a person this node owns. `false` when it is
    /// not taken: the person's partition is not (or no longer) this node's, or the hub is
    /// overloaded; the sender then tries again (the next owner takes it). A person this
    /// node's directory does not know is taken and dropped (counted unresolved).
    pub fn take_forwarded(&self, w: SignalWire) -> bool {
        if !self.inner.peers.get().is_none_or(|p| p.owns(partition_of(&w.id))) {
            return false;
        }
        let dir = self.directory();
        let Some(user) = dir.by_id(&w.id) else {
            Metrics::inc(&self.inner.metrics.signals_unresolved);
            return true;
        };
        let feed = self.inner.feeds.by_name(&w.feed).map_or(0, |f| f.id);
        self.submit_local(user, w.into_signal(feed), Instant::now()).is_ok()
    }

    /// Another node says the feed `name` went up or down (or nobody runs it: down): the
    /// people it covers re-merge here. `up` in `/api/providers` then says how the feed is in
    /// the cluster; `state` stays `standby` (it runs elsewhere).
    pub fn set_feed_up(&self, name: &str, up: bool) {
        if let Some(f) = self.inner.feeds.by_name(name) {
            if f.set_up_elsewhere(up) {
                self.remerge_feed(f.id);
            }
        }
    }

    /// Drops the state of these people from this node (their partition moved to another
    /// node): live actors stop, nothing is published.
    pub async fn forget(&self, users: Vec<UserIdx>) {
        let n = self.inner.shards.len();
        let mut per: Vec<Vec<UserIdx>> = (0..n).map(|_| Vec::new()).collect();
        for u in users {
            per[self.shard_of(u)].push(u);
        }
        for (i, users) in per.into_iter().enumerate() {
            if !users.is_empty() {
                let _ = self.inner.shards[i].send(crate::shard::Forget(users)).await;
            }
        }
    }

    /// Tells every shard that a feed went up or down: each re-merges its people and pushes the
    /// deltas. Delivered even to a full mailbox (`do_send`): it is rare, one message per shard,
    /// and losing it would leave consoles showing a dead feed's state as live. On a node of a
    /// cluster every other node is told too.
    fn feed_changed(&self, feed: FeedId) {
        self.remerge_feed(feed);
        if let (Some(p), Some(f)) = (self.inner.peers.get(), self.inner.feeds.get(feed)) {
            p.feed_changed(&f.name, f.is_up());
        }
    }

    fn remerge_feed(&self, feed: FeedId) {
        for s in &self.inner.shards {
            s.do_send(FeedChanged(feed));
        }
    }

    fn submit(&self, user: UserIdx, signal: Signal, ingest: Instant) -> Result<(), SinkError> {
        if let Some(p) = self.inner.peers.get() {
            let dir = self.inner.directory.current();
            if let Some(person) = dir.person(user) {
                let partition = partition_of(person.id());
                if !p.owns(partition) {
                    Metrics::inc(&self.inner.metrics.signals_received);
                    let feed = self.inner.feeds.get(signal.feed);
                    return p.forward(partition, person.id(), &signal, feed.as_ref().map_or("", |f| f.name.as_str()));
                }
            }
        }
        self.submit_local(user, signal, ingest)
    }

    fn submit_local(&self, user: UserIdx, signal: Signal, ingest: Instant) -> Result<(), SinkError> {
        Metrics::inc(&self.inner.metrics.signals_received);
        let shard = &self.inner.shards[self.shard_of(user)];
        match shard.try_send(UserSignal { user, signal, ingest }) {
            Ok(()) => Ok(()),
            Err(SendError::Full(m) | SendError::Closed(m)) => self.overflow(m),
        }
    }

    fn overflow(&self, m: UserSignal) -> Result<(), SinkError> {
        let mut g = self.inner.overflow.lock().unwrap_or_else(|p| p.into_inner());
        let key = (m.user, m.signal.source, m.signal.instance.clone());
        if g.len() >= MAX_OVERFLOW && !g.contains_key(&key) {
            Metrics::inc(&self.inner.metrics.signals_dropped);
            return Err(SinkError::Overloaded);
        }
        let was_empty = g.is_empty();
        if g.insert(key, m).is_some() {
            Metrics::inc(&self.inner.metrics.signals_coalesced);
        }
        drop(g);
        if was_empty {
            self.inner.overflow_notify.notify_one();
        }
        Ok(())
    }

    /// Retries overflowed signals in per-shard batches until the shards take them.
    async fn flush_overflow(self) {
        loop {
            self.inner.overflow_notify.notified().await;
            loop {
                let pending: Vec<UserSignal> = {
                    let mut g = self.inner.overflow.lock().unwrap_or_else(|p| p.into_inner());
                    // Taking the map (not draining it) returns a burst's high-water allocation.
                    std::mem::take(&mut *g).into_values().collect()
                };
                if pending.is_empty() {
                    break;
                }
                let mut per_shard: Vec<Vec<UserSignal>> = (0..self.inner.shards.len()).map(|_| Vec::new()).collect();
                for m in pending {
                    per_shard[self.shard_of(m.user)].push(m);
                }
                for (i, batch) in per_shard.into_iter().enumerate() {
                    if batch.is_empty() {
                        continue;
                    }
                    // `send` waits for room: the flusher is the one place that may wait.
                    if self.inner.shards[i].send(SignalBatch(batch)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Everything known about a person; on a node of a cluster that does not own them, what
    /// their owner holds.
    pub async fn detail(&self, user: UserIdx) -> UserDetail {
        if let Some(p) = self.inner.peers.get() {
            let dir = self.inner.directory.current();
            if let Some(person) = dir.person(user) {
                let partition = partition_of(person.id());
                if !p.owns(partition) {
                    let feeds = self.inner.feeds.clone();
                    return match p.detail(partition, person.id()).await {
                        Some(d) => d.into_detail(|name| feeds.by_name(name).map_or(0, |f| f.id)),
                        // No answer: at least the view every node has.
                        None => UserDetail { view: self.inner.fanout.latest(user).map(|l| l.view).unwrap_or_default(), ..Default::default() },
                    };
                }
            }
        }
        self.detail_local(user).await
    }

    /// What this node holds about a person (an owner answering another node).
    pub async fn detail_local(&self, user: UserIdx) -> UserDetail {
        let shard = &self.inner.shards[self.shard_of(user)];
        shard.send(GetDetail { user }).await.unwrap_or_default()
    }

    /// The name of one of this node's feeds.
    pub fn feed_name(&self, feed: FeedId) -> String {
        self.inner.feeds.get(feed).map(|f| f.name.clone()).unwrap_or_default()
    }

    /// Adds or replaces an absence in memory (the caller has committed it to the store).
    pub async fn upsert_absence(&self, user: UserIdx, a: Absence) -> Result<MergedView, AbsenceRejected> {
        self.absence_op(user, AbsenceChange::Upsert(a)).await
    }

    /// Removes an absence in memory.
    pub async fn remove_absence(&self, user: UserIdx, id: &str) -> Result<MergedView, AbsenceRejected> {
        self.absence_op(user, AbsenceChange::Remove(id.into())).await
    }

    async fn absence_op(&self, user: UserIdx, op: AbsenceChange) -> Result<MergedView, AbsenceRejected> {
        let shard = &self.inner.shards[self.shard_of(user)];
        shard.send(AbsenceOp { user, op }).await.unwrap_or(Err(AbsenceRejected::Unavailable))
    }

    /// Restores views known before a restart and the stored absences.
    pub async fn restore(&self, views: Vec<(UserIdx, MergedView)>, absences: Vec<(UserIdx, Absence)>) {
        self.restore_with_slots(views, absences, Vec::new()).await;
    }

    /// [`Hub::restore`], with the slots the people's previous owner held (a node of a
    /// cluster taking a partition).
    pub async fn restore_with_slots(&self, views: Vec<(UserIdx, MergedView)>, absences: Vec<(UserIdx, Absence)>, slots: Vec<(UserIdx, crate::model::Slot)>) {
        let n = self.inner.shards.len();
        let mut per: Vec<Restore> = (0..n).map(|_| Restore { views: vec![], absences: vec![], slots: vec![] }).collect();
        for (u, s) in slots {
            per[self.shard_of(u)].slots.push((u, s));
        }
        for (u, v) in views {
            let dept = self.inner.directory.current().department_of(u);
            self.inner.fanout.restore(u, dept, &v);
            per[self.shard_of(u)].views.push((u, v));
        }
        for (u, a) in absences {
            per[self.shard_of(u)].absences.push((u, a));
        }
        for (i, r) in per.into_iter().enumerate() {
            let _ = self.inner.shards[i].send(r).await;
        }
    }

    /// Makes `directory` (built by [`Directory::next`] from the current version, `diff` its
    /// differences) the current version while everything keeps running: every shard takes
    /// it first (leavers dropped with a `removed` change, newcomers published with what
    /// `restore` holds of them, people who moved department published again), then the
    /// live directory is replaced, which wakes providers and other watchers. Searches,
    /// resolution and streams see the new version from then on.
    pub async fn apply_directory(&self, directory: Directory, diff: &DirectoryDiff, restore: Restore) {
        let previous = self.inner.directory.current();
        let next = Arc::new(directory);
        self.inner.fanout.grow(next.len());
        let n = self.inner.shards.len();
        let mut per: Vec<ApplyDirectory> = (0..n)
            .map(|_| ApplyDirectory {
                directory: next.clone(),
                previous: previous.clone(),
                removed: vec![],
                added: vec![],
                moved: vec![],
                restore: Restore { views: vec![], absences: vec![], slots: vec![] },
            })
            .collect();
        for &u in &diff.removed {
            per[self.shard_of(u)].removed.push(u);
        }
        for &u in &diff.added {
            per[self.shard_of(u)].added.push(u);
        }
        for &u in diff.changed.iter().filter(|&&u| previous.department_of(u) != next.department_of(u)) {
            per[self.shard_of(u)].moved.push(u);
        }
        for (u, v) in restore.views {
            per[self.shard_of(u)].restore.views.push((u, v));
        }
        for (u, a) in restore.absences {
            per[self.shard_of(u)].restore.absences.push((u, a));
        }
        for (i, m) in per.into_iter().enumerate() {
            let _ = self.inner.shards[i].send(m).await;
        }
        self.inner.directory.replace(next);
    }

    /// Sums the shards' counts.
    pub async fn stats(&self) -> ShardStats {
        let mut total = ShardStats::default();
        for s in &self.inner.shards {
            if let Ok(st) = s.send(GetStats).await {
                total.users += st.users;
                total.live += st.live;
                total.slots += st.slots;
                total.absences += st.absences;
                total.pending += st.pending;
                total.timers += st.timers;
            }
        }
        total
    }

    /// Stops the shard arbiters.
    pub fn stop(&self) {
        for a in &self.inner.arbiters {
            a.stop();
        }
    }

    /// The number of user actors alive.
    pub fn user_actors(&self) -> i64 {
        self.inner.metrics.user_actors.load(Ordering::Relaxed)
    }
}

/// Where a provider sends signals. Resolves identities, stamps the feed and the ingest time.
///
/// In the hub it routes to the person's shard; built with [`SignalSink::for_test`] it hands
/// every signal and every feed change to a channel instead, so a provider's runtime can be
/// tested without a hub.
#[derive(Clone)]
pub struct SignalSink {
    target: Target,
    feed: Arc<FeedEntry>,
}

#[derive(Clone)]
enum Target {
    Hub(Hub),
    Test(Arc<TestTarget>),
}

struct TestTarget {
    directory: Arc<LiveDirectory>,
    policy: Arc<Policy>,
    metrics: Metrics,
    tx: tokio::sync::mpsc::UnboundedSender<SinkEvent>,
}

/// What a test sink ([`SignalSink::for_test`]) records, in order.
#[derive(Debug, Clone)]
pub enum SinkEvent {
    /// A signal about a resolved person, as the hub would have received it.
    Signal(UserIdx, Signal),
    /// The feed went up (`true`) or down.
    Feed(bool),
}

impl SignalSink {
    /// A sink that records into a channel instead of a hub (tests).
    pub fn for_test(directory: Arc<LiveDirectory>, policy: Arc<Policy>, feed: Arc<FeedEntry>) -> (SignalSink, tokio::sync::mpsc::UnboundedReceiver<SinkEvent>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let target = Target::Test(Arc::new(TestTarget { directory, policy, metrics: Metrics::default(), tx }));
        (SignalSink { target, feed }, rx)
    }

    fn metrics(&self) -> &Metrics {
        match &self.target {
            Target::Hub(h) => &h.inner.metrics,
            Target::Test(t) => &t.metrics,
        }
    }

    /// Sends a signal about the person named by `who` (id, email/UPN, SIP URI, Entra id, phone
    /// number in any format, extension).
    pub fn send(&self, who: &str, signal: Signal) -> Result<(), SinkError> {
        match self.directory().resolve(who) {
            Some(u) => self.send_to(u, signal),
            None => {
                Metrics::inc(&self.metrics().signals_unresolved);
                self.feed.unresolved.fetch_add(1, Ordering::Relaxed);
                Err(SinkError::Unresolved(crate::model::activity::truncate(who, 80).to_string()))
            }
        }
    }

    /// Sends a signal about a resolved person.
    pub fn send_to(&self, user: UserIdx, mut signal: Signal) -> Result<(), SinkError> {
        signal.feed = self.feed.id;
        signal.clamp();
        self.feed.record_event();
        match &self.target {
            Target::Hub(h) => h.submit(user, signal, Instant::now()),
            Target::Test(t) => {
                let _ = t.tx.send(SinkEvent::Signal(user, signal));
                Ok(())
            }
        }
    }

    /// The feed this sink stamps.
    pub fn feed(&self) -> &Arc<FeedEntry> {
        &self.feed
    }

    /// Marks the feed up or down — the one way to do it. On a change every person the feed
    /// covers re-merges and the changed views go out on the streams at once (down → stale,
    /// never Offline; up → live again).
    pub fn set_up(&self, up: bool) {
        if self.feed.set_up(up) {
            match &self.target {
                Target::Hub(h) => h.feed_changed(self.feed.id),
                Target::Test(t) => {
                    let _ = t.tx.send(SinkEvent::Feed(up));
                }
            }
        }
    }

    /// The current directory version, for providers that map identities themselves.
    pub fn directory(&self) -> Arc<Directory> {
        self.live_directory().current()
    }

    /// The live directory, to follow new versions.
    pub fn live_directory(&self) -> &Arc<LiveDirectory> {
        match &self.target {
            Target::Hub(h) => &h.inner.directory,
            Target::Test(t) => &t.directory,
        }
    }

    /// The merge policy, for providers that map onto it (e.g. the absence reason list).
    pub fn policy(&self) -> &Arc<Policy> {
        match &self.target {
            Target::Hub(h) => &h.inner.policy,
            Target::Test(t) => &t.policy,
        }
    }
}
