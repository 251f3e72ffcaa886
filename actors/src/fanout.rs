//! Fan-out of merged-presence changes to subscribers, with a global sequence and replay ring.
//!
//! Every change gets the next number of one hub-wide sequence, is noted in a bounded ring of
//! `(seq, person)` (for resume after reconnect), becomes the person's [`Latest`] (for snapshots,
//! resume, search results and the persisted snapshot), and is queued — as a shared `Arc`,
//! encoded to JSON once — to the [`Outbox`] of each subscriber whose filter matches. The
//! encoded JSON lives only as long as some outbox holds the change: per person the fan-out
//! keeps just the compact view (~100 bytes), and encodes it on demand for the rarer readers. Sequence assignment and queueing happen
//! under one lock, so every subscriber sees strictly increasing numbers.
//!
//! Outboxes are bounded. A subscriber that falls behind by more than its capacity switches to
//! *coalescing*: its queue becomes the set of people who changed, and when it catches up it gets
//! each one's latest state once. A slow client therefore never slows the others (publishers never
//! wait on it) and its memory is bounded by the number of people it watches.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::directory::{DeptIdx, UserIdx};
use crate::metrics::Metrics;
use crate::model::MergedView;

/// Most people one subscription may name.
pub const MAX_FILTER_USERS: usize = 10_000;
/// Most departments one subscription may name.
pub const MAX_FILTER_DEPARTMENTS: usize = 256;

/// One change of one person's merged presence, as queued to subscribers.
#[derive(Debug)]
pub struct Change {
    /// Hub-wide sequence number.
    pub seq: u64,
    /// The person.
    pub user: UserIdx,
    /// The view as JSON (`wire::presence_json`), encoded once for every subscriber.
    pub json: Box<str>,
    /// When the signal that caused it entered the hub (latency measurement).
    pub ingest: Option<Instant>,
    /// The person left the directory: `json` is `{"id":…}` and the frame is `removed`.
    pub removed: bool,
}

/// A person's latest merged view, as the fan-out keeps it.
#[derive(Debug, Clone)]
pub struct Latest {
    /// Sequence number of the change that set it (0: restored after a restart).
    pub seq: u64,
    /// The person.
    pub user: UserIdx,
    /// The person's department.
    pub dept: Option<DeptIdx>,
    /// The merged view.
    pub view: MergedView,
    /// Set when the person left the directory: their id (the directory no longer has it).
    pub gone: Option<Arc<str>>,
}

/// What a subscriber wants to see.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Everyone.
    pub all: bool,
    /// These people.
    pub users: Vec<UserIdx>,
    /// Everyone in these departments.
    pub departments: Vec<DeptIdx>,
}

impl Filter {
    /// True if the change concerns this filter.
    pub fn matches(&self, user: UserIdx, dept: Option<DeptIdx>) -> bool {
        self.all || self.users.contains(&user) || dept.is_some_and(|d| self.departments.contains(&d))
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// Too many people named.
    #[error("a subscription may name at most {MAX_FILTER_USERS} people")]
    TooManyUsers,
    /// Too many departments named.
    #[error("a subscription may name at most {MAX_FILTER_DEPARTMENTS} departments")]
    TooManyDepartments,
}

/// What a subscriber takes out of its outbox.
#[derive(Debug)]
pub enum Batch {
    /// Changes in sequence order.
    Changes(Vec<Arc<Change>>),
    /// The subscriber lagged: the latest view of each affected person, in sequence order,
    /// plus how many changes were folded away.
    Coalesced(Vec<Latest>, u64),
}

#[derive(Default)]
struct OutboxState {
    queue: VecDeque<Arc<Change>>,
    lagged: Option<HashSet<UserIdx>>,
    folded: u64,
}

/// A subscriber's bounded queue. Publishers push; the subscriber drains when woken.
pub struct Outbox {
    state: Mutex<OutboxState>,
    capacity: usize,
    wake_pending: AtomicBool,
    waker: Box<dyn Fn() + Send + Sync>,
}

impl Outbox {
    /// A new outbox holding at most `capacity` changes before it coalesces; `waker` is called
    /// (at most once until the next drain) when there is something to take.
    pub fn new(capacity: usize, waker: Box<dyn Fn() + Send + Sync>) -> Arc<Outbox> {
        Arc::new(Outbox { state: Mutex::new(OutboxState::default()), capacity: capacity.max(1), wake_pending: AtomicBool::new(false), waker })
    }

    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, c: &Arc<Change>, m: &Metrics) {
        {
            let mut s = self.lock();
            if let Some(set) = &mut s.lagged {
                set.insert(c.user);
                s.folded += 1;
                Metrics::inc(&m.deliveries_coalesced);
            } else if s.queue.len() >= self.capacity {
                let mut set: HashSet<UserIdx> = s.queue.drain(..).map(|c| c.user).collect();
                set.insert(c.user);
                s.folded += self.capacity as u64 + 1;
                s.lagged = Some(set);
                m.subscribers_lagging.fetch_add(1, Ordering::Relaxed);
                Metrics::inc(&m.deliveries_coalesced);
            } else {
                s.queue.push_back(c.clone());
                Metrics::inc(&m.deliveries);
            }
        }
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            (self.waker)();
        }
    }

    /// Number of changes queued (not counting a coalesced set).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        let s = self.lock();
        s.queue.is_empty() && s.lagged.is_none()
    }
}

struct Sub {
    outbox: Arc<Outbox>,
    filter: Filter,
}

struct Inner {
    seq: u64,
    /// `(seq, person)` of recent changes. Resume sends each person's latest change once if it
    /// is newer than the client's `since` — coalesced, like a lagging client — so the ring
    /// needs no copy of old changes (12 bytes an entry).
    ring: VecDeque<(u64, UserIdx)>,
    latest: Vec<Option<Latest>>,
    subs: HashMap<u64, Sub>,
    next_sub: u64,
    all: Vec<u64>,
    by_user: HashMap<UserIdx, Vec<u64>>,
    by_dept: HashMap<DeptIdx, Vec<u64>>,
}

/// Where a new subscription starts.
#[derive(Debug)]
pub enum Start {
    /// Full state of every matching person (people never seen have no entry), as of `seq`.
    Snapshot {
        /// The sequence number the snapshot is consistent with.
        seq: u64,
        /// Latest view of each matching person that has one.
        changes: Vec<Latest>,
        /// Matching people with no change yet (state Unknown).
        unseen: Vec<UserIdx>,
    },
    /// Resumed: for each matching person who changed after the client's sequence number,
    /// their latest change, in sequence order (intermediate states are coalesced away).
    Resume {
        /// Current sequence number.
        seq: u64,
        /// Missed changes that match (each person's latest).
        changes: Vec<Latest>,
    },
}

/// Sequence numbers reserved per millisecond of uptime: a run that averages fewer changes
/// than this (1 M/s) never reaches the first number of a later run. `now_ms × 1024` stays
/// below 2^53, so JavaScript clients hold it exactly, until the year 2242.
pub const SEQ_PER_MS: u64 = 1024;

/// Where a node of a cluster sends its own changes instead of numbering them: the person,
/// the JSON, and whether they left the directory.
pub type Relay = Box<dyn Fn(UserIdx, Box<str>, bool) + Send + Sync>;

/// The hub-wide fan-out.
pub struct FanOut {
    inner: Mutex<Inner>,
    ring_capacity: usize,
    metrics: Arc<Metrics>,
    persisted_seq: AtomicU64,
    /// Set on a node of a cluster (see [`FanOut::set_relay`]).
    relay: std::sync::OnceLock<Relay>,
}

impl FanOut {
    /// A fan-out for `users` people keeping `ring_capacity` changes for resume.
    pub fn new(users: usize, ring_capacity: usize, metrics: Arc<Metrics>) -> FanOut {
        FanOut {
            inner: Mutex::new(Inner {
                seq: 0,
                ring: VecDeque::with_capacity(ring_capacity.min(1 << 16)),
                latest: vec![None; users],
                subs: HashMap::new(),
                next_sub: 1,
                all: Vec::new(),
                by_user: HashMap::new(),
                by_dept: HashMap::new(),
            }),
            ring_capacity: ring_capacity.max(1),
            metrics,
            persisted_seq: AtomicU64::new(0),
            relay: std::sync::OnceLock::new(),
        }
    }

    /// Makes this the fan-out of a node of a cluster: [`FanOut::publish`] and
    /// [`FanOut::publish_removed`] hand each change to `relay` (which sends it to every node)
    /// instead of numbering it, and changes come in numbered by the cluster through
    /// [`FanOut::publish_at`]. Set once, before the first change.
    pub fn set_relay(&self, relay: Relay) {
        // The cluster numbers from its stream's first message, not from this run's start.
        self.lock().seq = 0;
        self.persisted_seq.store(0, Ordering::Release);
        let _ = self.relay.set(relay);
    }

    /// Publishes a change numbered by the cluster (`seq`, the same on every node): remembers
    /// it and queues it to every matching subscriber. A number not above the current one (a
    /// repeat) is ignored; returns whether it was taken.
    pub fn publish_at(&self, c: crate::cluster::Incoming) -> bool {
        let mut g = self.lock();
        if c.seq <= g.seq {
            return false;
        }
        g.seq = c.seq - 1;
        let seq = self.number(&mut g, c.user);
        let removed = c.view.is_none();
        if let Some(slot) = g.latest.get_mut(c.user as usize) {
            *slot = Some(match c.view {
                Some(view) => Latest { seq, user: c.user, dept: c.dept, view, gone: None },
                None => {
                    let id = serde_json::from_str::<serde_json::Value>(&c.json).ok().and_then(|v| v["id"].as_str().map(Arc::<str>::from)).unwrap_or_else(|| "".into());
                    Latest { seq, user: c.user, dept: c.dept, view: MergedView::default(), gone: Some(id) }
                }
            });
        }
        let json = c.json;
        self.deliver(&g, c.user, c.dept, None, removed, move || json.into_string());
        true
    }

    /// Starts numbering after `seq` instead of 0. The hub starts from its start time ×
    /// [`SEQ_PER_MS`], so sequence numbers keep increasing across restarts: a client resuming
    /// with a number from before a restart always gets a fresh snapshot, never a wrong resume.
    pub fn starting_after(self, seq: u64) -> FanOut {
        self.lock().seq = seq;
        self.persisted_seq.store(seq, Ordering::Release);
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current sequence number.
    pub fn seq(&self) -> u64 {
        self.lock().seq
    }

    /// Publishes a change: numbers it, remembers it and queues it to every matching subscriber.
    /// `json` encodes the view; it is called (once) only if some subscriber wants the change.
    pub fn publish(
        &self,
        user: UserIdx,
        dept: Option<DeptIdx>,
        view: &MergedView,
        json: impl FnOnce() -> String,
        ingest: Option<Instant>,
    ) -> u64 {
        if let Some(relay) = self.relay.get() {
            relay(user, json().into_boxed_str(), false);
            return 0;
        }
        let mut g = self.lock();
        let seq = self.number(&mut g, user);
        // Newcomers' slots exist already: `Hub::apply_directory` grows the table first.
        if let Some(slot) = g.latest.get_mut(user as usize) {
            *slot = Some(Latest { seq, user, dept, view: view.clone(), gone: None });
        }
        self.deliver(&g, user, dept, ingest, false, json)
    }

    /// Publishes that a person left the directory: numbered like a change, so streams that
    /// watch the person (or `dept`, their department before they left) get a `removed`
    /// frame, and a client resuming after it gets one too.
    pub fn publish_removed(&self, user: UserIdx, dept: Option<DeptIdx>, id: &str) -> u64 {
        if let Some(relay) = self.relay.get() {
            relay(user, crate::wire::removed_json(id).into_boxed_str(), true);
            return 0;
        }
        let mut g = self.lock();
        let seq = self.number(&mut g, user);
        let gone: Arc<str> = id.into();
        if let Some(slot) = g.latest.get_mut(user as usize) {
            *slot = Some(Latest { seq, user, dept, view: MergedView::default(), gone: Some(gone) });
        }
        self.deliver(&g, user, dept, None, true, || crate::wire::removed_json(id))
    }

    /// Gives the next change of `user` its number and notes it in the replay ring.
    fn number(&self, g: &mut Inner, user: UserIdx) -> u64 {
        g.seq += 1;
        if g.ring.len() >= self.ring_capacity {
            g.ring.pop_front();
        }
        g.ring.push_back((g.seq, user));
        g.seq
    }

    /// Makes room for people up to index `len` (newcomers of a directory version), so a
    /// snapshot taken before their first change lists them as unknown.
    pub fn grow(&self, len: usize) {
        let mut g = self.lock();
        if g.latest.len() < len {
            g.latest.resize(len, None);
        }
    }

    /// Queues change `seq` of `user` to every matching subscriber (under the lock `publish`
    /// took, so numbering and queueing stay in order).
    fn deliver(&self, g: &Inner, user: UserIdx, dept: Option<DeptIdx>, ingest: Option<Instant>, removed: bool, json: impl FnOnce() -> String) -> u64 {
        let seq = g.seq;
        let subscribed = !g.all.is_empty() || g.by_user.contains_key(&user) || dept.is_some_and(|d| g.by_dept.contains_key(&d));
        Metrics::inc(&self.metrics.changes_published);
        if !subscribed {
            return seq;
        }
        let c = Arc::new(Change { seq, user, json: json().into_boxed_str(), ingest, removed });
        let deliver = |id: &u64| {
            if let Some(s) = g.subs.get(id) {
                s.outbox.push(&c, &self.metrics);
            }
        };
        g.all.iter().for_each(deliver);
        if let Some(ids) = g.by_user.get(&user) {
            for id in ids {
                // Someone watching both the person and their department gets it once.
                let also_dept = dept.is_some_and(|d| g.by_dept.get(&d).is_some_and(|v| v.contains(id)));
                if !g.subs.get(id).is_some_and(|s| s.filter.all) && !also_dept {
                    deliver(id);
                }
            }
        }
        if let Some(ids) = dept.and_then(|d| g.by_dept.get(&d)) {
            for id in ids {
                if !g.subs.get(id).is_some_and(|s| s.filter.all) {
                    deliver(id);
                }
            }
        }
        c.seq
    }

    /// Sets a restored (pre-restart) view as a person's latest without numbering it as a
    /// change, so snapshots show it at once.
    pub fn restore(&self, user: UserIdx, dept: Option<DeptIdx>, view: &MergedView) {
        let mut g = self.lock();
        if let Some(slot) = g.latest.get_mut(user as usize) {
            *slot = Some(Latest { seq: 0, user, dept, view: view.clone(), gone: None });
        }
    }

    /// The latest change of each person named in the ring after `after`, once each, in
    /// sequence order (a person's latest is always their newest ring entry).
    fn latest_since(g: &Inner, after: u64, filter: Option<&Filter>) -> Vec<Latest> {
        g.ring
            .iter()
            .filter(|(seq, _)| *seq > after)
            .filter_map(|(seq, u)| g.latest.get(*u as usize)?.as_ref().filter(|c| c.seq == *seq))
            .filter(|c| filter.is_none_or(|f| f.matches(c.user, c.dept)))
            .cloned()
            .collect()
    }

    /// The latest view of a person, if any.
    pub fn latest(&self, user: UserIdx) -> Option<Latest> {
        self.lock().latest.get(user as usize).cloned().flatten()
    }

    /// Registers a subscriber; returns its id.
    pub fn subscribe(&self, outbox: Arc<Outbox>) -> u64 {
        let mut g = self.lock();
        let id = g.next_sub;
        g.next_sub += 1;
        g.subs.insert(id, Sub { outbox, filter: Filter::default() });
        self.metrics.subscribers.fetch_add(1, Ordering::Relaxed);
        id
    }

    /// Removes a subscriber.
    pub fn unsubscribe(&self, id: u64) {
        let mut g = self.lock();
        Self::unindex(&mut g, id);
        if let Some(s) = g.subs.remove(&id) {
            self.metrics.subscribers.fetch_sub(1, Ordering::Relaxed);
            if s.outbox.lock().lagged.is_some() {
                self.metrics.subscribers_lagging.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn unindex(g: &mut Inner, id: u64) {
        let Some(f) = g.subs.get(&id).map(|s| s.filter.clone()) else { return };
        if f.all {
            g.all.retain(|x| *x != id);
        }
        for u in &f.users {
            if let Some(v) = g.by_user.get_mut(u) {
                v.retain(|x| *x != id);
                if v.is_empty() {
                    g.by_user.remove(u);
                }
            }
        }
        for d in &f.departments {
            if let Some(v) = g.by_dept.get_mut(d) {
                v.retain(|x| *x != id);
                if v.is_empty() {
                    g.by_dept.remove(d);
                }
            }
        }
    }

    /// Sets a subscriber's filter and returns where it starts: a resume from `since` if the
    /// ring still holds everything after it, else a snapshot. Consistent with the queue: every
    /// change after the returned `seq` will be queued, none before.
    pub fn set_filter(&self, id: u64, mut filter: Filter, since: Option<u64>) -> Result<Start, FilterError> {
        if filter.users.len() > MAX_FILTER_USERS {
            return Err(FilterError::TooManyUsers);
        }
        if filter.departments.len() > MAX_FILTER_DEPARTMENTS {
            return Err(FilterError::TooManyDepartments);
        }
        filter.users.sort_unstable();
        filter.users.dedup();
        filter.departments.sort_unstable();
        filter.departments.dedup();
        let mut g = self.lock();
        Self::unindex(&mut g, id);
        let Some(sub) = g.subs.get_mut(&id) else { return Ok(Start::Resume { seq: 0, changes: vec![] }) };
        sub.filter = filter.clone();
        // Whatever was queued under the old filter is superseded by the start below.
        {
            let mut s = sub.outbox.lock();
            s.queue.clear();
            if s.lagged.take().is_some() {
                self.metrics.subscribers_lagging.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if filter.all {
            g.all.push(id);
        }
        for u in &filter.users {
            g.by_user.entry(*u).or_default().push(id);
        }
        for d in &filter.departments {
            g.by_dept.entry(*d).or_default().push(id);
        }
        let seq = g.seq;
        let oldest = g.ring.front().map_or(seq + 1, |e| e.0);
        if let Some(n) = since.filter(|n| *n <= seq && *n + 1 >= oldest) {
            let changes = Self::latest_since(&g, n, Some(&filter));
            return Ok(Start::Resume { seq, changes });
        }
        let mut changes = Vec::new();
        let mut unseen = Vec::new();
        let mut visit = |u: UserIdx, g: &Inner| match g.latest.get(u as usize) {
            Some(Some(c)) => changes.push(c.clone()),
            Some(None) => unseen.push(u),
            None => {}
        };
        if filter.all {
            for u in 0..g.latest.len() as UserIdx {
                visit(u, &g);
            }
        } else {
            let mut seen = HashSet::new();
            for u in &filter.users {
                if seen.insert(*u) {
                    visit(*u, &g);
                }
            }
            if !filter.departments.is_empty() {
                for (u, c) in g.latest.iter().enumerate() {
                    let u = u as UserIdx;
                    if let Some(c) = c {
                        if c.dept.is_some_and(|d| filter.departments.contains(&d)) && seen.insert(u) {
                            changes.push(c.clone());
                        }
                    }
                }
            }
        }
        Ok(Start::Snapshot { seq, changes, unseen })
    }

    /// Takes what is queued for a subscriber. Lagged outboxes are resolved to each person's
    /// latest change under the fan-out lock, so the numbering stays consistent.
    pub fn drain(&self, outbox: &Outbox) -> Batch {
        outbox.wake_pending.store(false, Ordering::Release);
        {
            let mut s = outbox.lock();
            if s.lagged.is_none() {
                return Batch::Changes(s.queue.drain(..).collect());
            }
        }
        let g = self.lock();
        let mut s = outbox.lock();
        let Some(set) = s.lagged.take() else { return Batch::Changes(s.queue.drain(..).collect()) };
        self.metrics.subscribers_lagging.fetch_sub(1, Ordering::Relaxed);
        let folded = std::mem::take(&mut s.folded);
        let mut out: Vec<Latest> = set.into_iter().filter_map(|u| g.latest.get(u as usize).cloned().flatten()).collect();
        out.sort_unstable_by_key(|c| c.seq);
        Batch::Coalesced(out, folded)
    }

    /// Changes not yet persisted (the latest per person), and the sequence they go up to.
    /// Reads the ring when it still covers them, else scans every person's latest.
    pub fn unpersisted(&self) -> (Vec<Latest>, u64) {
        let from = self.persisted_seq.load(Ordering::Acquire);
        let g = self.lock();
        let oldest = g.ring.front().map_or(g.seq + 1, |e| e.0);
        let changes = if from + 1 >= oldest {
            Self::latest_since(&g, from, None)
        } else {
            g.latest.iter().flatten().filter(|c| c.seq > from).cloned().collect()
        };
        (changes, g.seq)
    }

    /// Records that everything up to `seq` is persisted.
    pub fn mark_persisted(&self, seq: u64) {
        self.persisted_seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// Number of registered subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.lock().subs.len()
    }

    /// Rough heap bytes held (ring, latest table, indexes), for `/api/stats`.
    pub fn memory_bytes(&self) -> usize {
        let g = self.lock();
        let notes: usize = g.latest.iter().flatten().filter_map(|c| c.view.note.as_ref()).map(|n| n.len() + 8).sum();
        g.latest.len() * std::mem::size_of::<Option<Latest>>() + notes + g.ring.len() * 12 + g.by_user.len() * 48
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn outbox(cap: usize) -> (Arc<Outbox>, Arc<AtomicUsize>) {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        (Outbox::new(cap, Box::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        })), wakes)
    }

    fn publish(f: &FanOut, user: UserIdx, dept: Option<DeptIdx>) -> u64 {
        f.publish(user, dept, &MergedView::default(), || format!("{{\"id\":\"u{user}\"}}"), None)
    }

    #[test]
    fn numbers_from_before_a_restart_never_resume() {
        // A run that started later numbers after the earlier run's numbers.
        let before = FanOut::new(10, 100, Arc::new(Metrics::default())).starting_after(1_000);
        let old_seq = publish(&before, 1, None);
        assert_eq!(old_seq, 1_001);
        let after = FanOut::new(10, 100, Arc::new(Metrics::default())).starting_after(5_000);
        publish(&after, 2, None);
        let (ob, _) = outbox(100);
        let id = after.subscribe(ob);
        let start = after.set_filter(id, Filter { all: true, ..Filter::default() }, Some(old_seq)).unwrap();
        assert!(matches!(start, Start::Snapshot { seq: 5_001, .. }), "a number from the earlier run gets a snapshot");
    }

    #[test]
    fn filtered_delivery_and_increasing_sequence() {
        let f = FanOut::new(10, 100, Arc::new(Metrics::default()));
        let (ob, wakes) = outbox(100);
        let id = f.subscribe(ob.clone());
        f.set_filter(id, Filter { users: vec![1, 2], departments: vec![7], ..Filter::default() }, None).unwrap();
        publish(&f, 1, None);
        publish(&f, 3, None);
        publish(&f, 2, Some(7)); // matches by user and by department: delivered once
        publish(&f, 4, Some(7));
        let Batch::Changes(cs) = f.drain(&ob) else { panic!("lagged") };
        let got: Vec<_> = cs.iter().map(|c| (c.user, c.seq)).collect();
        assert_eq!(got, vec![(1, 1), (2, 3), (4, 4)]);
        assert_eq!(wakes.load(Ordering::Relaxed), 1, "one wake per drain");
    }

    #[test]
    fn slow_subscriber_coalesces_to_latest_per_user() {
        let m = Arc::new(Metrics::default());
        let f = FanOut::new(10, 1000, m.clone());
        let (ob, _) = outbox(4);
        let id = f.subscribe(ob.clone());
        f.set_filter(id, Filter { all: true, ..Filter::default() }, None).unwrap();
        for i in 0..100u32 {
            publish(&f, i % 3, None);
        }
        assert_eq!(ob.len(), 0, "queue folded into a set");
        let Batch::Coalesced(cs, folded) = f.drain(&ob) else { panic!("not coalesced") };
        let got: Vec<_> = cs.iter().map(|c| (c.user, c.seq)).collect();
        assert_eq!(got, vec![(1, 98), (2, 99), (0, 100)]);
        assert!(folded >= 96);
        assert_eq!(Metrics::gauge(&m.subscribers_lagging), 0);
        // Back to normal queueing afterwards.
        publish(&f, 5, None);
        assert!(matches!(f.drain(&ob), Batch::Changes(v) if v.len() == 1 && v[0].seq == 101));
    }

    #[test]
    fn resume_from_ring_or_fall_back_to_snapshot() {
        let f = FanOut::new(10, 5, Arc::new(Metrics::default()));
        for i in 0..8u32 {
            publish(&f, i, None);
        }
        let (ob, _) = outbox(10);
        let id = f.subscribe(ob);
        match f.set_filter(id, Filter { all: true, ..Filter::default() }, Some(6)).unwrap() {
            Start::Resume { seq, changes } => {
                assert_eq!(seq, 8);
                assert_eq!(changes.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![7, 8]);
            }
            s => panic!("{s:?}"),
        }
        // A person who changed twice since: only the latest, once.
        publish(&f, 7, None);
        match f.set_filter(id, Filter { all: true, ..Filter::default() }, Some(6)).unwrap() {
            Start::Resume { seq, changes } => {
                assert_eq!(seq, 9);
                assert_eq!(changes.iter().map(|c| (c.user, c.seq)).collect::<Vec<_>>(), vec![(6, 7), (7, 9)]);
            }
            s => panic!("{s:?}"),
        }
        // Seq 1 fell out of the 5-entry ring: snapshot instead.
        match f.set_filter(id, Filter { all: true, ..Filter::default() }, Some(1)).unwrap() {
            Start::Snapshot { seq, changes, unseen } => {
                assert_eq!(seq, 9);
                assert_eq!(changes.len(), 8);
                assert_eq!(unseen, vec![8, 9]);
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn filter_limits_are_enforced() {
        let f = FanOut::new(10, 5, Arc::new(Metrics::default()));
        let (ob, _) = outbox(10);
        let id = f.subscribe(ob);
        let users = (0..(MAX_FILTER_USERS as u32 + 1)).collect();
        assert_eq!(f.set_filter(id, Filter { users, ..Filter::default() }, None).unwrap_err(), FilterError::TooManyUsers);
    }

    #[test]
    fn unpersisted_returns_latest_per_user_once() {
        let f = FanOut::new(10, 3, Arc::new(Metrics::default()));
        for i in 0..6u32 {
            publish(&f, i % 2, None);
        }
        let (cs, seq) = f.unpersisted();
        assert_eq!(seq, 6);
        let mut got: Vec<_> = cs.iter().map(|c| (c.user, c.seq)).collect();
        got.sort();
        assert_eq!(got, vec![(0, 5), (1, 6)]);
        f.mark_persisted(seq);
        assert!(f.unpersisted().0.is_empty());
    }
}
