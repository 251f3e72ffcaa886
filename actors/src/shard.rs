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
//! Messages are sent with `try_send`. When a user actor's mailbox is full the shard keeps the
//! newest pending signal per (user, source, instance) and retries shortly — presence is
//! last-writer-wins, so nothing but superseded intermediate states is ever dropped.

use std::cell::RefCell;
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

/// Put back views known before a restart (marked stale) and absences from the store.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restore {
    /// Views per person.
    pub views: Vec<(UserIdx, MergedView)>,
    /// Absences per person.
    pub absences: Vec<(UserIdx, Absence)>,
}

/// Counts for `/api/stats`.
#[derive(Message)]
#[rtype(result = "ShardStats")]
pub struct GetStats;

/// A shard's counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardStats {
    /// Live user actors.
    pub users: usize,
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

#[derive(Message)]
#[rtype(result = "StateCount")]
struct CountState;

#[derive(MessageResponse)]
struct StateCount(usize, usize);

// ---- Shared per-shard context ----------------------------------------------------------

/// What a shard shares with its user actors (same thread, so `Rc`).
pub struct ShardShared {
    /// The directory.
    pub directory: Arc<Directory>,
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
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig { mailbox: 8192, user_mailbox: 256, tick: Duration::from_millis(100) }
    }
}

// ---- User actor -------------------------------------------------------------------------

/// One person's presence.
pub struct UserActor {
    user: UserIdx,
    state: UserPresence,
    shared: Rc<ShardShared>,
    scheduled: Option<UnixMs>,
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
    /// Expires, re-merges and publishes if the view changed; re-arms the timer.
    fn settle(&mut self, ingest: Option<Instant>) {
        let now = now_ms();
        let sh = &*self.shared;
        self.state.expire(now, &sh.policy);
        let feeds = &sh.feeds;
        let changed = self.state.recompute(now, &sh.policy, &|f| feeds.is_up(f));
        if changed {
            if let Some(p) = sh.directory.person(self.user) {
                let json = presence_json(&p.id, self.state.view());
                let dept = sh.directory.department_of(self.user);
                sh.fanout.publish(self.user, dept, self.state.view().clone(), json, ingest);
            }
        }
        let next = self.state.next_deadline(now, &sh.policy);
        if next.is_some() && next != self.scheduled {
            if let Some(t) = next {
                sh.timers.borrow_mut().push(Reverse((t, self.user)));
            }
        }
        self.scheduled = next;
    }

    fn apply(&mut self, s: Signal) {
        let m = &self.shared.metrics;
        match self.state.apply(s, now_ms(), &self.shared.policy) {
            Applied::OutOfOrder => Metrics::inc(&m.signals_out_of_order),
            Applied::Expired | Applied::Ignored => Metrics::inc(&m.signals_ignored),
            Applied::Stored | Applied::Retracted => {}
        }
    }
}

impl Handler<UserSignal> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: UserSignal, _ctx: &mut Self::Context) {
        self.apply(msg.signal);
        self.settle(Some(msg.ingest));
    }
}

impl Handler<Tick> for UserActor {
    type Result = ();
    fn handle(&mut self, _: Tick, _ctx: &mut Self::Context) {
        self.scheduled = None;
        self.settle(None);
    }
}

impl Handler<Remerge> for UserActor {
    type Result = ();
    fn handle(&mut self, _: Remerge, _ctx: &mut Self::Context) {
        self.settle(None);
    }
}

impl Handler<AbsenceOp> for UserActor {
    type Result = Result<MergedView, AbsenceRejected>;
    fn handle(&mut self, msg: AbsenceOp, _ctx: &mut Self::Context) -> Self::Result {
        match msg.op {
            AbsenceChange::Upsert(a) => self.state.upsert_absence(a).map_err(|_| AbsenceRejected::TooMany)?,
            AbsenceChange::Remove(id) => {
                self.state.remove_absence(&id);
            }
        }
        self.settle(None);
        Ok(self.state.view().clone())
    }
}

impl Handler<GetDetail> for UserActor {
    type Result = MessageResult<GetDetail>;
    fn handle(&mut self, _: GetDetail, _ctx: &mut Self::Context) -> Self::Result {
        self.settle(None);
        MessageResult(UserDetail {
            view: self.state.view().clone(),
            slots: self.state.slots().to_vec(),
            absences: self.state.absences().to_vec(),
        })
    }
}

impl Handler<CountState> for UserActor {
    type Result = StateCount;
    fn handle(&mut self, _: CountState, _ctx: &mut Self::Context) -> Self::Result {
        StateCount(self.state.slots().len(), self.state.absences().len())
    }
}

// ---- Shard actor ------------------------------------------------------------------------

type PendingKey = (UserIdx, Source, Box<str>);

/// Owns the user actors of one shard.
pub struct Shard {
    shared: Rc<ShardShared>,
    config: ShardConfig,
    users: HashMap<UserIdx, Addr<UserActor>>,
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
            shared: Rc::new(ShardShared { directory, policy, fanout, metrics, feeds, timers: RefCell::new(BinaryHeap::new()) }),
            config,
            users: HashMap::new(),
            pending: HashMap::new(),
            flush_scheduled: false,
        }
    }

    fn user(&mut self, user: UserIdx) -> Addr<UserActor> {
        if let Some(a) = self.users.get(&user) {
            return a.clone();
        }
        let shared = self.shared.clone();
        let cap = self.config.user_mailbox;
        let addr = UserActor::create(move |ctx| {
            ctx.set_mailbox_capacity(cap);
            UserActor { user, state: UserPresence::new(), shared, scheduled: None }
        });
        self.users.insert(user, addr.clone());
        addr
    }

    fn route(&mut self, msg: UserSignal, ctx: &mut Context<Self>) {
        let addr = self.user(msg.user);
        if let Err(SendError::Full(msg) | SendError::Closed(msg)) = addr.try_send(msg) {
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
                let pending: Vec<_> = act.pending.drain().map(|(_, v)| v).collect();
                for msg in pending {
                    act.route(msg, ctx);
                }
            });
        }
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
            if let Some(a) = self.users.get(&u) {
                // A full mailbox means the actor will settle (and expire) on its next message.
                let _ = a.try_send(Tick);
            }
        }
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
        let addr = self.user(msg.user);
        Box::pin(async move { addr.send(msg).await.unwrap_or(Err(AbsenceRejected::Unavailable)) })
    }
}

impl Handler<GetDetail> for Shard {
    type Result = ResponseFuture<UserDetail>;
    fn handle(&mut self, msg: GetDetail, _ctx: &mut Self::Context) -> Self::Result {
        match self.users.get(&msg.user).cloned() {
            Some(addr) => Box::pin(async move { addr.send(msg).await.unwrap_or_default() }),
            None => {
                // Never heard of: nothing known, or the view restored before a restart.
                let view = self.shared.fanout.latest(msg.user).map(|c| c.view.clone()).unwrap_or_default();
                Box::pin(async move { UserDetail { view, ..UserDetail::default() } })
            }
        }
    }
}

impl Handler<FeedChanged> for Shard {
    type Result = ();
    fn handle(&mut self, _msg: FeedChanged, _ctx: &mut Self::Context) {
        for a in self.users.values() {
            // Full: the actor settles with the new feed state on its next message anyway.
            let _ = a.try_send(Remerge);
        }
    }
}

impl Handler<Restore> for Shard {
    type Result = ();
    fn handle(&mut self, msg: Restore, _ctx: &mut Self::Context) {
        let now = now_ms();
        let mut by_user: HashMap<UserIdx, (Option<MergedView>, Vec<Absence>)> = HashMap::new();
        for (u, v) in msg.views {
            by_user.entry(u).or_default().0 = Some(v);
        }
        for (u, a) in msg.absences {
            by_user.entry(u).or_default().1.push(a);
        }
        for (user, (view, absences)) in by_user {
            if self.users.contains_key(&user) {
                continue;
            }
            let mut state = UserPresence::new();
            if let Some(v) = view {
                if let Some(slot) = restored_slot(&v, now) {
                    state.restore_slot(slot);
                }
                state.restore_view(v);
            }
            for a in absences {
                let _ = state.upsert_absence(a);
            }
            let shared = self.shared.clone();
            let cap = self.config.user_mailbox;
            let addr = UserActor::create(move |ctx| {
                ctx.set_mailbox_capacity(cap);
                let mut ua = UserActor { user, state, shared, scheduled: None };
                ua.settle(None);
                ua
            });
            self.users.insert(user, addr);
        }
    }
}

/// A stale slot standing for a view known before a restart, until live signals replace it.
fn restored_slot(v: &MergedView, now: UnixMs) -> Option<Slot> {
    if !v.availability.is_known() {
        return None;
    }
    let source = v.reasons.iter().next().unwrap_or(Source::Manual);
    Some(Slot {
        source,
        instance: "restored".into(),
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
    type Result = ResponseFuture<ShardStats>;
    fn handle(&mut self, _: GetStats, _ctx: &mut Self::Context) -> Self::Result {
        let addrs: Vec<_> = self.users.values().cloned().collect();
        let mut base = ShardStats {
            users: self.users.len(),
            pending: self.pending.len(),
            timers: self.shared.timers.borrow().len(),
            ..ShardStats::default()
        };
        Box::pin(async move {
            for a in addrs {
                if let Ok(StateCount(s, ab)) = a.send(CountState).await {
                    base.slots += s;
                    base.absences += ab;
                }
            }
            base
        })
    }
}
