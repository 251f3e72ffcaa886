//! Shards and user actors: where signals become merged presence.
//!
//! The hub runs a fixed pool of shard arbiters (one OS thread each). A person belongs to the
//! shard `hash(user) % shards`; the [`Shard`] actor on that arbiter owns the person's
//! [`UserActor`], creating it on first use (never from HTTP handlers), and runs one timer for
//! all of its users (one `run_interval` per user would cost memory and keep actors alive).
//!
//! A user actor holds one person's [`UserPresence`]: it applies signals and absences, merges,
//! and when the merged view changes (rule 7) encodes it once and hands it to the [`FanOut`].
//!
//! Only recently active people have a live actor (an idle actix actor costs ~0.85 KB): the
//! shard keeps at most `max_live` of them in an LRU order and parks the least recently used
//! one when it has no message in flight. A parked person's state stays in the shard as a
//! compact cell (the same `Rc` the actor used, so nothing is copied or lost); timers and feed
//! changes settle parked people in place, and the next write wakes a new actor on the cell.
//!
//! Messages are sent with `try_send`. When a user actor's mailbox is full the shard keeps the
//! newest pending signal per (user, source, instance) and retries shortly — presence is
//! last-writer-wins, so nothing but superseded intermediate states is ever dropped.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::directory::{Directory, UserIdx};
use crate::fanout::FanOut;
use crate::feeds::Feeds;
use crate::metrics::Metrics;
use crate::model::merge::Applied;
use crate::model::{now_ms, Absence, FeedId, MergedView, Policy, Signal, Slot, Source, UnixMs, UserPresence};
use crate::wire::presence_json;

// ---- Message catalogue ------------------------------------------------------------------

/// A signal for one person (provider → shard → user actor).
#[derive(Message)]
#[rtype(result = "()")]
pub struct UserSignal {
    /// The person.
    pub user: UserIdx,
    /// The signal.
    pub signal: Signal,
    /// When it entered the hub.
    pub ingest: Instant,
}

/// Several signals for people of one shard.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SignalBatch(pub Vec<UserSignal>);

/// A change to a person's absences (HTTP → shard → user actor).
#[derive(Message)]
#[rtype(result = "Result<MergedView, AbsenceRejected>")]
pub struct AbsenceOp {
    /// The person.
    pub user: UserIdx,
    /// Upsert or remove.
    pub op: AbsenceChange,
}

/// The change.
#[derive(Debug, Clone)]
pub enum AbsenceChange {
    /// Add or replace (by id).
    Upsert(Absence),
    /// Remove by id.
    Remove(Box<str>),
}

/// Why an absence change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AbsenceRejected {
    /// The person already has the maximum number of absences.
    #[error("the person already has the maximum number of absences")]
    TooMany,
    /// The actor is gone (shutting down).
    #[error("the hub is shutting down")]
    Unavailable,
}

/// Everything known about one person, for the detail view.
#[derive(Message)]
#[rtype(result = "UserDetail")]
pub struct GetDetail {
    /// The person.
    pub user: UserIdx,
}

/// The answer to [`GetDetail`].
#[derive(Debug, Clone, Default)]
pub struct UserDetail {
    /// Merged view.
    pub view: MergedView,
    /// Per-source slots.
    pub slots: Vec<Slot>,
    /// Absences.
    pub absences: Vec<Absence>,
}

/// A feed went up or down: re-merge everyone who has its slots.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct FeedChanged(pub FeedId);

/// Drop the state of these people: their partition now belongs to another node of the
/// cluster. Nothing is published.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget(pub Vec<UserIdx>);

/// Put back views known before a restart (marked stale) and absences from the store.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restore {
    /// Views per person.
    pub views: Vec<(UserIdx, MergedView)>,
    /// Absences per person.
    pub absences: Vec<(UserIdx, Absence)>,
    /// Slots per person, as their previous owner held them (a node of a cluster taking a
    /// partition): they replace the stand-in slot a view would get. A slot's `restored` flag
    /// is kept as given: a partition handed over in good order carries live slots.
    pub slots: Vec<(UserIdx, crate::model::Slot)>,
}

/// A new directory version: the shard's people who left lose their state (and a `removed`
/// change goes out), newcomers start with what the store kept of them (a re-hire's absences
/// and last view) and are published, and people who moved department are published again
/// so streams watching the new department see them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyDirectory {
    /// The new version.
    pub directory: Arc<Directory>,
    /// The version before it (ids and departments of the leavers).
    pub previous: Arc<Directory>,
    /// This shard's leavers.
    pub removed: Vec<UserIdx>,
    /// This shard's newcomers.
    pub added: Vec<UserIdx>,
    /// This shard's people whose department changed.
    pub moved: Vec<UserIdx>,
    /// What the store kept of the newcomers.
    pub restore: Restore,
}

/// Counts for `/api/stats`.
#[derive(Message)]
#[rtype(result = "ShardStats")]
pub struct GetStats;

/// A shard's counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardStats {
    /// People with state in this shard (live or parked).
    pub users: usize,
    /// Live user actors.
    pub live: usize,
    /// Slots held across them.
    pub slots: usize,
    /// Absences held across them.
    pub absences: usize,
    /// Pending (coalesced) signals waiting for a full mailbox.
    pub pending: usize,
    /// Timers queued.
    pub timers: usize,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

#[derive(Message)]
#[rtype(result = "()")]
struct Remerge;


// ---- Shared per-shard context ----------------------------------------------------------

/// What a shard shares with its user actors (same thread, so `Rc`).
pub struct ShardShared {
    /// The directory version this shard works with (replaced by [`ApplyDirectory`]).
    pub directory: RefCell<Arc<Directory>>,
    /// The merge policy.
    pub policy: Arc<Policy>,
    /// The fan-out.
    pub fanout: Arc<FanOut>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Feed health.
    pub feeds: Arc<Feeds>,
    timers: RefCell<BinaryHeap<Reverse<(UnixMs, UserIdx)>>>,
}

/// Settings of a shard.
#[derive(Debug, Clone, Copy)]
pub struct ShardConfig {
    /// Mailbox capacity of the shard actor.
    pub mailbox: usize,
    /// Mailbox capacity of each user actor.
    pub user_mailbox: usize,
    /// How often the shard checks its timers.
    pub tick: Duration,
    /// Most live user actors in this shard; the least recently used idle ones are parked.
    pub max_live: usize,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig { mailbox: 8192, user_mailbox: 256, tick: Duration::from_millis(100), max_live: 2_048 }
    }
}

/// One person's state, shared by the shard and (while live) the person's actor. Same thread
/// only, hence `Rc`/`RefCell`; borrows never cross an await.
pub struct UserCell {
    state: RefCell<UserPresence>,
    scheduled: Cell<Option<UnixMs>>,
    /// Messages sent to the live actor and not yet handled: a cell is parked only at zero, so
    /// no message is ever handled out of order by a successor actor.
    inflight: Cell<u32>,
}

impl UserCell {
    fn new(state: UserPresence) -> Rc<UserCell> {
        Rc::new(UserCell { state: RefCell::new(state), scheduled: Cell::new(None), inflight: Cell::new(0) })
    }

    fn handled(&self) {
        self.inflight.set(self.inflight.get().saturating_sub(1));
    }
}

/// Expires, re-merges and publishes if the view changed; re-arms the timer.
fn settle(sh: &ShardShared, user: UserIdx, cell: &UserCell, ingest: Option<Instant>) {
    settle_and_publish(sh, user, cell, ingest, false);
}

/// [`settle`], publishing the view even when it did not change (`always`): a newcomer, a
/// person who moved department — streams filtering by department learn of them.
fn settle_and_publish(sh: &ShardShared, user: UserIdx, cell: &UserCell, ingest: Option<Instant>, always: bool) {
    let now = now_ms();
    let mut state = cell.state.borrow_mut();
    state.expire(now, &sh.policy);
    let feeds = &sh.feeds;
    if state.recompute(now, &sh.policy, &|f| feeds.is_up(f)) || always {
        let dir = sh.directory.borrow();
        if let Some(p) = dir.person(user) {
            let dept = dir.department_of(user);
            let view = state.view();
            sh.fanout.publish(user, dept, view, || presence_json(p.id(), view), ingest);
        }
    }
    // Arm a timer only when the next deadline is earlier than the one already armed: a later
    // one is re-armed when the earlier fires (one heap entry per person, not one per change).
    let next = state.next_deadline(now, &sh.policy);
    if let Some(t) = next {
        if cell.scheduled.get().is_none_or(|s| t < s || s <= now) {
            sh.timers.borrow_mut().push(Reverse((t, user)));
            cell.scheduled.set(Some(t));
        }
    }
}

// ---- User actor -------------------------------------------------------------------------

/// One person's presence (a live actor over the person's [`UserCell`]).
pub struct UserActor {
    user: UserIdx,
    cell: Rc<UserCell>,
    shared: Rc<ShardShared>,
}

impl Actor for UserActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        self.shared.metrics.user_actors.fetch_add(1, Ordering::Relaxed);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.shared.metrics.user_actors.fetch_sub(1, Ordering::Relaxed);
    }
}

impl UserActor {
    fn settle(&mut self, ingest: Option<Instant>) {
        settle(&self.shared, self.user, &self.cell, ingest);
    }

    fn apply(&mut self, s: Signal) {
        let m = &self.shared.metrics;
        match self.cell.state.borrow_mut().apply(s, now_ms(), &self.shared.policy) {
            Applied::OutOfOrder => Metrics::inc(&m.signals_out_of_order),
            Applied::Expired | Applied::Ignored => Metrics::inc(&m.signals_ignored),
            Applied::Stored | Applied::Retracted => {}
        }
    }
}

impl Handler<UserSignal> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: UserSignal, _ctx: &mut Self::Context) {
        self.cell.handled();
        self.apply(msg.signal);
        self.settle(Some(msg.ingest));
    }
}

impl Handler<Tick> for UserActor {
    type Result = ();
    fn handle(&mut self, _: Tick, _ctx: &mut Self::Context) {
        self.cell.handled();
        self.cell.scheduled.set(None);
        self.settle(None);
    }
}

impl Handler<Remerge> for UserActor {
    type Result = ();
    fn handle(&mut self, _: Remerge, _ctx: &mut Self::Context) {
        self.cell.handled();
        self.settle(None);
    }
}

impl Handler<AbsenceOp> for UserActor {
    type Result = Result<MergedView, AbsenceRejected>;
    fn handle(&mut self, msg: AbsenceOp, _ctx: &mut Self::Context) -> Self::Result {
        self.cell.handled();
        {
            let mut st = self.cell.state.borrow_mut();
            match msg.op {
                AbsenceChange::Upsert(a) => st.upsert_absence(a).map_err(|_| AbsenceRejected::TooMany)?,
                AbsenceChange::Remove(id) => {
                    st.remove_absence(&id);
                }
            }
        }
        self.settle(None);
        Ok(self.cell.state.borrow().view().clone())
    }
}

impl Handler<GetDetail> for UserActor {
    type Result = MessageResult<GetDetail>;
    fn handle(&mut self, _: GetDetail, _ctx: &mut Self::Context) -> Self::Result {
        self.cell.handled();
        self.settle(None);
        MessageResult(detail_of(&self.cell))
    }
}

fn detail_of(cell: &UserCell) -> UserDetail {
    let st = cell.state.borrow();
    UserDetail { view: st.view().clone(), slots: st.slots().to_vec(), absences: st.absences().to_vec() }
}

// ---- Shard actor ------------------------------------------------------------------------

type PendingKey = (UserIdx, Source, crate::model::ShortStr);

/// Owns the people of one shard: their cells, and live actors for the recently active ones.
pub struct Shard {
    shared: Rc<ShardShared>,
    config: ShardConfig,
    users: HashMap<UserIdx, Rc<UserCell>>,
    live: lru::LruCache<UserIdx, Addr<UserActor>>,
    pending: HashMap<PendingKey, UserSignal>,
    flush_scheduled: bool,
}

impl Shard {
    /// A shard over the given shared state. Start it with `Shard::start_in_arbiter`.
    pub fn new(
        directory: Arc<Directory>,
        policy: Arc<Policy>,
        fanout: Arc<FanOut>,
        metrics: Arc<Metrics>,
        feeds: Arc<Feeds>,
        config: ShardConfig,
    ) -> Shard {
        Shard {
            shared: Rc::new(ShardShared { directory: RefCell::new(directory), policy, fanout, metrics, feeds, timers: RefCell::new(BinaryHeap::new()) }),
            config,
            users: HashMap::new(),
            live: lru::LruCache::unbounded(),
            pending: HashMap::new(),
            flush_scheduled: false,
        }
    }

    fn cell(&mut self, user: UserIdx) -> Rc<UserCell> {
        self.users.entry(user).or_insert_with(|| UserCell::new(UserPresence::new())).clone()
    }

    /// The person's live actor, waking one on the person's cell if needed.
    fn actor(&mut self, user: UserIdx) -> (Addr<UserActor>, Rc<UserCell>) {
        let cell = self.cell(user);
        if let Some(a) = self.live.get(&user) {
            if a.connected() {
                return (a.clone(), cell);
            }
        }
        let shared = self.shared.clone();
        let cap = self.config.user_mailbox;
        let c = cell.clone();
        let addr = UserActor::create(move |ctx| {
            ctx.set_mailbox_capacity(cap);
            UserActor { user, cell: c, shared }
        });
        self.live.put(user, addr.clone());
        self.park_idle();
        (addr, cell)
    }

    /// Parks least recently used actors beyond `max_live` that have nothing in flight.
    fn park_idle(&mut self) {
        let mut tries = 0;
        while self.live.len() > self.config.max_live.max(1) && tries < 8 {
            tries += 1;
            let Some((u, addr)) = self.live.pop_lru() else { break };
            let busy = self.users.get(&u).is_some_and(|c| c.inflight.get() > 0);
            if busy {
                // Still has messages queued: keep it (most recent again) and stop for now.
                self.live.put(u, addr);
                break;
            }
            // Dropping the last address stops the actor; its state stays in the cell.
            drop(addr);
        }
    }

    fn route(&mut self, msg: UserSignal, ctx: &mut Context<Self>) {
        if !self.shared.directory.borrow().contains(msg.user) {
            // Resolved just before the person left: nobody to apply it to.
            return;
        }
        let (addr, cell) = self.actor(msg.user);
        cell.inflight.set(cell.inflight.get() + 1);
        if let Err(SendError::Full(msg) | SendError::Closed(msg)) = addr.try_send(msg) {
            cell.handled();
            let key = (msg.user, msg.signal.source, msg.signal.instance.clone());
            if self.pending.insert(key, msg).is_some() {
                Metrics::inc(&self.shared.metrics.signals_coalesced);
            }
            self.schedule_flush(ctx);
        }
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(Duration::from_millis(1), |act, ctx| {
                act.flush_scheduled = false;
                let pending: Vec<_> = std::mem::take(&mut act.pending).into_values().collect();
                for msg in pending {
                    act.route(msg, ctx);
                }
            });
        }
    }

    /// Settles a person: through the live actor if there is one, else in place.
    fn poke(&mut self, user: UserIdx, tick: bool) {
        let Some(cell) = self.users.get(&user).cloned() else { return };
        if let Some(a) = self.live.peek(&user).filter(|a| a.connected()) {
            cell.inflight.set(cell.inflight.get() + 1);
            let sent = if tick { a.try_send(Tick).is_ok() } else { a.try_send(Remerge).is_ok() };
            if !sent {
                // Full: the actor settles (expires, re-merges) on the message it has queued.
                cell.handled();
            }
            return;
        }
        if tick {
            cell.scheduled.set(None);
        }
        settle(&self.shared, user, &cell, None);
    }

    fn tick(&mut self) {
        let now = now_ms();
        loop {
            let due = {
                let mut t = self.shared.timers.borrow_mut();
                match t.peek() {
                    Some(Reverse((at, _))) if *at <= now => t.pop().map(|Reverse((_, u))| u),
                    _ => None,
                }
            };
            let Some(u) = due else { break };
            self.poke(u, true);
        }
        self.park_idle();
    }
}

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.config.mailbox);
        ctx.run_interval(self.config.tick, |act, _| act.tick());
    }
}

impl Handler<UserSignal> for Shard {
    type Result = ();
    fn handle(&mut self, msg: UserSignal, ctx: &mut Self::Context) {
        self.route(msg, ctx);
    }
}

impl Handler<SignalBatch> for Shard {
    type Result = ();
    fn handle(&mut self, msg: SignalBatch, ctx: &mut Self::Context) {
        for m in msg.0 {
            self.route(m, ctx);
        }
    }
}

impl Handler<AbsenceOp> for Shard {
    type Result = ResponseFuture<Result<MergedView, AbsenceRejected>>;
    fn handle(&mut self, msg: AbsenceOp, _ctx: &mut Self::Context) -> Self::Result {
        let (addr, cell) = self.actor(msg.user);
        cell.inflight.set(cell.inflight.get() + 1);
        Box::pin(async move {
            let r = addr.send(msg).await;
            if r.is_err() {
                cell.handled();
            }
            r.unwrap_or(Err(AbsenceRejected::Unavailable))
        })
    }
}

impl Handler<GetDetail> for Shard {
    type Result = ResponseFuture<UserDetail>;
    fn handle(&mut self, msg: GetDetail, _ctx: &mut Self::Context) -> Self::Result {
        let Some(cell) = self.users.get(&msg.user).cloned() else {
            // Never heard of: nothing known.
            return Box::pin(async move { UserDetail::default() });
        };
        match self.live.peek(&msg.user).filter(|a| a.connected()).cloned() {
            Some(addr) => {
                cell.inflight.set(cell.inflight.get() + 1);
                Box::pin(async move {
                    match addr.send(msg).await {
                        Ok(d) => d,
                        Err(_) => {
                            cell.handled();
                            detail_of(&cell)
                        }
                    }
                })
            }
            None => {
                // Parked: read in place (settling first so expiries are applied).
                settle(&self.shared, msg.user, &cell, None);
                let d = detail_of(&cell);
                Box::pin(async move { d })
            }
        }
    }
}

impl Handler<FeedChanged> for Shard {
    type Result = ();
    fn handle(&mut self, _msg: FeedChanged, _ctx: &mut Self::Context) {
        let users: Vec<UserIdx> = self.users.keys().copied().collect();
        for u in users {
            self.poke(u, false);
        }
    }
}

impl Handler<Forget> for Shard {
    type Result = ();
    fn handle(&mut self, msg: Forget, _ctx: &mut Self::Context) {
        for user in msg.0 {
            // Dropping the address stops a live actor; its timers find no cell and lapse.
            self.live.pop(&user);
            self.users.remove(&user);
            self.pending.retain(|k, _| k.0 != user);
        }
    }
}

impl Handler<Restore> for Shard {
    type Result = ();
    fn handle(&mut self, msg: Restore, _ctx: &mut Self::Context) {
        for (user, state) in restored_states(msg) {
            if let Some(cell) = self.users.get(&user).cloned() {
                // Known already (a signal came first, e.g. while a node of a cluster took the
                // partition over): what is put back joins what the person has, newer first.
                {
                    let mut st = cell.state.borrow_mut();
                    // A stand-in for a restored view gives way to what the person has now.
                    for s in state.slots().iter().filter(|s| s.instance.as_str() != RESTORED_INSTANCE) {
                        st.carry_slot(s.clone());
                    }
                    for a in state.absences() {
                        let _ = st.upsert_absence(a.clone());
                    }
                }
                self.poke(user, false);
                continue;
            }
            // Restored people start parked; settling arms their timers (absence ends,
            // restored-state expiry) and publishes what the absences change.
            let cell = UserCell::new(state);
            settle(&self.shared, user, &cell, None);
            self.users.insert(user, cell);
        }
    }
}

impl Handler<ApplyDirectory> for Shard {
    type Result = ();
    fn handle(&mut self, msg: ApplyDirectory, _ctx: &mut Self::Context) {
        *self.shared.directory.borrow_mut() = msg.directory.clone();
        let sh = self.shared.clone();
        for user in msg.removed {
            self.users.remove(&user);
            // Dropping the address stops a live actor; what it still settles publishes
            // nothing, since the person is no longer in the directory.
            self.live.pop(&user);
            self.pending.retain(|k, _| k.0 != user);
            if let Some(p) = msg.previous.person(user) {
                sh.fanout.publish_removed(user, msg.previous.department_of(user), p.id());
            }
        }
        let mut restored = restored_states(msg.restore);
        for user in msg.added {
            let state = restored.remove(&user).unwrap_or_default();
            let cell = UserCell::new(state);
            self.users.insert(user, cell.clone());
            settle_and_publish(&sh, user, &cell, None, true);
        }
        for user in msg.moved {
            let cell = self.cell(user);
            settle_and_publish(&sh, user, &cell, None, true);
        }
    }
}

/// The states of the people a [`Restore`] names: the view known before (as a stale slot)
/// and the absences.
fn restored_states(msg: Restore) -> HashMap<UserIdx, UserPresence> {
    let now = now_ms();
    /// What is put back of one person: view, absences, slots.
    type Parts = (Option<MergedView>, Vec<Absence>, Vec<crate::model::Slot>);
    let mut by_user: HashMap<UserIdx, Parts> = HashMap::new();
    for (u, v) in msg.views {
        by_user.entry(u).or_default().0 = Some(v);
    }
    for (u, a) in msg.absences {
        by_user.entry(u).or_default().1.push(a);
    }
    for (u, s) in msg.slots {
        by_user.entry(u).or_default().2.push(s);
    }
    by_user
        .into_iter()
        .map(|(user, (view, absences, slots))| {
            let mut state = UserPresence::new();
            let carried = !slots.is_empty();
            for s in slots {
                state.carry_slot(s);
            }
            if let Some(v) = view {
                if !carried {
                    if let Some(slot) = restored_slot(&v, now) {
                        state.restore_slot(slot);
                    }
                }
                state.restore_view(v);
            }
            for a in absences {
                let _ = state.upsert_absence(a);
            }
            (user, state)
        })
        .collect()
}

/// The instance of the stand-in slot of a restored view.
const RESTORED_INSTANCE: &str = "restored";

/// A stale slot standing for a view known before a restart, until live signals replace it.
fn restored_slot(v: &MergedView, now: UnixMs) -> Option<Slot> {
    if !v.availability.is_known() {
        return None;
    }
    // Manual state comes back exactly, from the stored absences: a restored slot standing
    // for it would compete with them (and hide their reason).
    let source = v.reasons.iter().find(|s| *s != Source::Manual)?;
    Some(Slot {
        source,
        instance: RESTORED_INSTANCE.into(),
        feed: 0,
        availability: Some(v.availability),
        activity: v.activity.clone(),
        note: v.note.clone(),
        ooo: v.ooo,
        valid_from: None,
        valid_until: v.available_again_at.filter(|t| *t > now),
        version: None,
        since: v.since,
        updated_at: now,
        restored: true,
        detail: None,
    })
}

impl Handler<GetStats> for Shard {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _ctx: &mut Self::Context) -> Self::Result {
        let mut st = ShardStats {
            users: self.users.len(),
            live: self.live.len(),
            pending: self.pending.len(),
            timers: self.shared.timers.borrow().len(),
            ..ShardStats::default()
        };
        for c in self.users.values() {
            let s = c.state.borrow();
            st.slots += s.slots().len();
            st.absences += s.absences().len();
        }
        MessageResult(st)
    }
}
