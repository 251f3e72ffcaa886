//! The O2G provider's task: the state machine that logs in, subscribes, opens the event
//! channels (or takes the webhook's events), resyncs by snapshots, keeps the session alive and
//! recovers with back-off — and the truth about the feed meanwhile.
//!
//! One task owns all state. Each subscription's event channel is read by a [`Reader`] task
//! that hands its lines over in order through a bounded channel; snapshot requests run in a
//! task of their own so events keep flowing while they are answered. In webhook mode the
//! handler ([`O2gHook`]) hands each event over the same way. The session and its requests are
//! [`super::session`]'s.
//!
//! The people follow the live directory ([`Follow`]): a leaver leaves their subscription's
//! filter, a newcomer joins one with room (or a new one); O2G cannot change a subscription's
//! filter, so each one whose people changed is deleted and made anew within the session, and
//! its people resynced — the feed stays up.
//!
//! Health: the feed is down (the people's PBX state shows stale, never Offline) from the moment
//! a channel fails until the provider has re-subscribed and the snapshots it asked for are in
//! (or [`RESYNC_DEADLINE`] has passed). A channel that ends cleanly is re-opened at once and
//! resynced (at most every [`MIN_RESYNC_INTERVAL`]) without taking the feed down. Recovery
//! waits back off with jitter ([`Backoff`], from `backoff_secs`) and start again from the
//! first wait once the feed is up. A graceful stop deletes the subscriptions and ends the
//! session.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::hook::{Counters, O2gHook};
use super::map::{self, UserTelephony};
use super::parse::{self, Delivery, Event, Line, RoutingState, MAX_EVENT_BYTES};
use super::reader::Reader;
use super::session::{Kind, Session, Snapshots};
use super::{Mode, O2gConfig};
use crate::common::backoff::Backoff;
use crate::common::follow::Follow;
use crate::common::http::CallError;
use crate::common::secret;
use presence_actors::directory::{PersonRef, UserIdx};
use presence_actors::model::activity::truncate;
use presence_actors::model::{now_ms, rfc3339, Activity, Availability, Signal};
use presence_actors::provider::ProviderContext;

/// After (re)subscribing, the feed is up once the snapshots are in, or after this long.
pub const RESYNC_DEADLINE: Duration = Duration::from_secs(20);
/// A connected channel that sends nothing (not even `OnChannelInformation`) for this long is
/// taken as established.
const CHANNEL_GRACE: Duration = Duration::from_secs(3);
/// After a channel re-opens (clean end), its people are resynced at most this often: a server
/// that ends every channel at once must not get a snapshot round per reconnection.
pub const MIN_RESYNC_INTERVAL: Duration = Duration::from_secs(10);
/// Snapshot requests in flight at once.
const SNAPSHOT_CONCURRENCY: usize = 8;

/// Work for the task.
#[derive(Debug)]
pub enum Input {
    /// A channel answered 2xx.
    Connected {
        /// Subscription generation.
        gen: u64,
        /// Subscription slot.
        sub: usize,
    },
    /// A line of a channel.
    Line {
        /// Subscription generation.
        gen: u64,
        /// Subscription slot.
        sub: usize,
        /// The line.
        line: Line,
    },
    /// A channel ended cleanly (or went silent); its reader re-opens it at once.
    Ended {
        /// Subscription generation.
        gen: u64,
        /// Subscription slot.
        sub: usize,
        /// It went silent for `stream_idle_secs`.
        idle: bool,
    },
    /// A channel failed: refused (a `401`/`403` means the session is gone), timed out, broke.
    /// Its reader has stopped.
    Lost {
        /// Subscription generation.
        gen: u64,
        /// Subscription slot.
        sub: usize,
        /// What happened.
        error: CallError,
    },
    /// An event from the webhook.
    Event {
        /// Subscription generation.
        gen: u64,
        /// Subscription slot.
        sub: usize,
        /// The event.
        event: Box<Event>,
    },
    /// A snapshot request was answered.
    Snapshot {
        /// Subscription generation.
        gen: u64,
        /// The login name.
        login: String,
        /// Which snapshot.
        kind: Kind,
        /// `Err` when the request failed (the snapshot will not come).
        result: Result<(), CallError>,
    },
}

/// A subscription slot.
struct Sub {
    logins: Vec<String>,
    /// The generation of its subscription (0: none); inputs of another are ignored.
    gen: u64,
    /// The reader of its event channel (chunk mode).
    reader: Option<JoinHandle<()>>,
    /// Its webhook key (webhook mode).
    key: Option<String>,
    id: Option<String>,
    polling_url: Option<String>,
    state: &'static str,
    connected_at: Option<Instant>,
    ready: bool,
    connects: u64,
    events: u64,
    last_event_at: Option<i64>,
    /// The last resync of this subscription's people (this generation).
    last_resync: Option<Instant>,
    /// A resync put off by [`MIN_RESYNC_INTERVAL`].
    resync_due: Option<Instant>,
}

impl Sub {
    fn new(logins: Vec<String>) -> Sub {
        Sub {
            logins,
            gen: 0,
            reader: None,
            key: None,
            id: None,
            polling_url: None,
            state: "pending",
            connected_at: None,
            ready: false,
            connects: 0,
            events: 0,
            last_event_at: None,
            last_resync: None,
            resync_due: None,
        }
    }
}

/// One person's O2G state.
#[derive(Default)]
struct Person {
    tel: UserTelephony,
    routing: Option<RoutingState>,
    sent_tel: Option<SentKey>,
    sent_routing: Option<SentKey>,
}

type SentKey = (Option<Availability>, Option<Activity>, Option<Box<str>>);

fn key_of(s: &Signal) -> SentKey {
    (s.availability, s.activity.clone(), s.note.clone())
}

/// Why the session's channels were lost.
#[derive(Debug)]
struct Lost {
    why: String,
    /// The session is gone (log in again).
    session_gone: bool,
}

impl Lost {
    fn new(why: impl Into<String>, session_gone: bool) -> Lost {
        Lost { why: why.into(), session_gone }
    }
}

enum Outcome {
    Shutdown,
    Lost(Lost),
}

#[derive(Default)]
struct Stats {
    logins: u64,
    session_losses: u64,
    stream_connects: u64,
    stream_ends: u64,
    events: u64,
    heartbeats: u64,
    last_heartbeat_at: Option<i64>,
    last_event_at: Option<i64>,
    resyncs: u64,
    snapshot_requests: u64,
    snapshot_errors: u64,
    unresolved: u64,
    /// The server's product and version (discovery), kept across sessions.
    server: Option<String>,
}

/// The running provider.
pub struct Runtime {
    ctx: ProviderContext,
    cfg: O2gConfig,
    /// The slots' instances (the provider's name, `{name}-routing`).
    instances: map::Instances,
    /// The people subscribed, following the live directory: their login name.
    follow: Follow<String>,
    /// Login name (lowercase) → person.
    people: HashMap<String, UserIdx>,
    persons: HashMap<UserIdx, Person>,
    session: Option<Session>,
    subs: Vec<Sub>,
    gen: u64,
    tx: mpsc::Sender<Input>,
    rx: mpsc::Receiver<Input>,
    hook: Arc<O2gHook>,
    /// The webhook keys of the subscriptions held: key → (generation, slot).
    keys: HashMap<String, (u64, usize)>,
    counters: Arc<Counters>,
    snapshots: Vec<JoinHandle<()>>,
    /// (login lowercase, kind) whose snapshot is still due.
    awaiting: HashSet<(String, Kind)>,
    resync_deadline: Option<Instant>,
    up: bool,
    backoff: Backoff,
    stats: Stats,
}

impl Runtime {
    /// Builds the task's state and registers the webhook (webhook mode).
    pub fn new(ctx: ProviderContext, cfg: O2gConfig) -> Runtime {
        let mut follow = Follow::new(&ctx);
        let mut people = HashMap::new();
        let mut logins = Vec::new();
        for (idx, login) in follow.update(login_names(&cfg)).added {
            people.insert(login.to_lowercase(), idx);
            logins.push(login);
        }
        let per = cfg.max_ids_per_subscription.unwrap_or(usize::MAX).max(1);
        let subs: Vec<Sub> = logins.chunks(per.min(logins.len().max(1))).filter(|c| !c.is_empty()).map(|c| Sub::new(c.to_vec())).collect();
        let (tx, rx) = mpsc::channel(8192);
        let counters = Arc::new(Counters::default());
        let hook = Arc::new(O2gHook::new(tx.clone(), counters.clone(), ctx.feed.clone()));
        if cfg.mode == Mode::Webhook {
            ctx.hooks.register(&ctx.name, hook.clone());
        }
        Runtime {
            instances: map::Instances::of(&ctx.name),
            backoff: cfg.backoff(),
            ctx,
            cfg,
            follow,
            people,
            persons: HashMap::new(),
            session: None,
            subs,
            gen: 0,
            tx,
            rx,
            hook,
            keys: HashMap::new(),
            counters,
            snapshots: Vec::new(),
            awaiting: HashSet::new(),
            resync_deadline: None,
            up: false,
            stats: Stats::default(),
        }
    }

    fn people_count(&self) -> usize {
        self.subs.iter().map(|s| s.logins.len()).sum()
    }

    /// Runs until shutdown.
    pub async fn run(mut self) {
        let mut shutdown = self.ctx.shutdown.clone();
        info!(provider = %self.ctx.name, people = self.people_count(), subscriptions = self.subs.len(), mode = ?self.cfg.mode, "O2G provider starting.");
        if self.subs.is_empty() {
            warn!(provider = %self.ctx.name, template = %self.cfg.login_template, "Nobody in the directory has an O2G login name; nothing to subscribe.");
        }
        self.ctx.feed.set_state("connecting");
        self.report();
        loop {
            let outcome = tokio::select! {
                _ = shutdown.recv() => Outcome::Shutdown,
                r = self.establish() => match r {
                    Ok(()) => self.session_loop(&mut shutdown).await,
                    Err(lost) => Outcome::Lost(lost),
                },
            };
            let lost = match outcome {
                Outcome::Shutdown => break,
                Outcome::Lost(l) => l,
            };
            self.teardown();
            self.stats.session_losses += 1;
            if lost.session_gone {
                self.session = None;
            }
            let delay = self.backoff.next_delay();
            warn!(provider = %self.ctx.name, error = %lost.why, retry_in = ?delay, "O2G events lost; the PBX state shows stale until re-subscribed and resynced.");
            self.ctx.feed.record_error(&lost.why);
            self.ctx.sink.set_up(false);
            self.ctx.feed.set_state("reconnecting");
            self.report();
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.stop().await;
    }

    /// Logs in if needed, (re)subscribes, opens the channels.
    async fn establish(&mut self) -> Result<(), Lost> {
        self.ctx.feed.set_state("connecting");
        if let Some(s) = self.session.as_mut() {
            if let Err(e) = s.keepalive().await {
                debug!(provider = %self.ctx.name, error = %e, "O2G session no longer alive; logging in again.");
                self.session = None;
            }
        }
        // The session stays in `self.session` all along: a stop while this runs still logs out.
        let session = match &self.session {
            Some(s) => s.clone(),
            None => {
                let s = self.login().await?;
                self.session = Some(s.clone());
                s
            }
        };
        self.delete_subscriptions(&session).await;
        // The directory as it is now (changes from here on come in the session loop); slots
        // left empty by leavers go (nothing of theirs is running).
        self.on_directory();
        self.subs.retain(|s| !s.logins.is_empty());
        self.gen += 1;
        self.keys.clear();
        for i in 0..self.subs.len() {
            self.subscribe_slot(&session, i).await?;
        }
        self.resync_deadline = Some(Instant::now() + RESYNC_DEADLINE);
        for i in 0..self.subs.len() {
            self.start_slot(i);
        }
        self.ctx.feed.set_state("resyncing");
        self.report();
        Ok(())
    }

    async fn login(&mut self) -> Result<Session, Lost> {
        let s = Session::open(&self.ctx.http, &self.cfg, &self.ctx.name).await.map_err(|e| Lost::new(format!("login: {e}"), true))?;
        self.stats.logins += 1;
        if s.server.is_some() {
            self.stats.server.clone_from(&s.server);
        }
        info!(provider = %self.ctx.name, ttl_secs = s.info.ttl_secs(), admin = s.info.admin, "O2G session opened.");
        Ok(s)
    }

    /// Subscribes slot `i` in the current generation, with a fresh key (its webhook URL in
    /// webhook mode, kept in `keys`).
    async fn subscribe_slot(&mut self, session: &Session, i: usize) -> Result<(), Lost> {
        let key = secret::random_hex128();
        let delivery = match self.cfg.mode {
            Mode::Chunk => Delivery::Chunk { timeout_min: self.cfg.subscription_timeout_min },
            Mode::Webhook => Delivery::Webhook { url: self.ctx.hook_url(&format!("events/{key}")) },
        };
        let answer = session.subscribe(&self.subs[i].logins, &delivery).await;
        let sub = &mut self.subs[i];
        let accepted = answer.and_then(|r| {
            let polling = r.polling_url(self.cfg.public_access).map(str::to_string);
            if self.cfg.mode == Mode::Chunk && polling.is_none() {
                return Err(parse::ParseError::Missing("publicPollingUrl/privatePollingUrl").into());
            }
            Ok((r.subscription_id, polling))
        });
        let (id, polling) = match accepted {
            Ok(a) => a,
            Err(e) => {
                sub.state = "failed";
                return Err(Lost::new(format!("subscribe: {e}"), e.unauthorized()));
            }
        };
        info!(provider = %self.ctx.name, subscription = %short(&id), people = sub.logins.len(), "O2G subscription accepted.");
        sub.id = Some(id);
        sub.polling_url = polling;
        sub.state = "subscribed";
        sub.ready = false;
        sub.connected_at = None;
        sub.gen = self.gen;
        sub.key = Some(key.clone());
        self.keys.insert(key, (self.gen, i));
        Ok(())
    }

    /// Starts taking slot `i`'s events: its channel (chunk mode; the resync follows once it is
    /// established), or its webhook key and a resync at once (webhook mode).
    fn start_slot(&mut self, i: usize) {
        match self.cfg.mode {
            Mode::Chunk => self.spawn_reader(i),
            Mode::Webhook => {
                self.hook.set_keys(self.keys.clone());
                self.subs[i].ready = true;
                self.subs[i].state = "active";
                self.resync(i);
            }
        }
    }

    /// The directory changed: leavers (and changed login names' old values) leave their slot
    /// and their state is forgotten; newcomers join a slot with room, else a new one. Returns
    /// the slots whose people changed (each is subscribed anew while a session runs).
    fn on_directory(&mut self) -> Vec<usize> {
        let changes = self.follow.update(login_names(&self.cfg));
        if changes.is_empty() {
            return Vec::new();
        }
        info!(provider = %self.ctx.name, added = changes.added.len(), removed = changes.removed.len(), changed = changes.changed.len(), "Directory changed; the O2G subscriptions follow it.");
        let mut touched = Vec::new();
        for (idx, login) in changes.dropped() {
            let key = login.to_lowercase();
            if self.people.get(&key) == Some(&idx) {
                self.people.remove(&key);
            }
            self.persons.remove(&idx);
            self.awaiting.remove(&(key.clone(), Kind::Telephony));
            self.awaiting.remove(&(key.clone(), Kind::Routing));
            for (i, s) in self.subs.iter_mut().enumerate() {
                let before = s.logins.len();
                s.logins.retain(|l| l.to_lowercase() != key);
                if s.logins.len() != before {
                    touched.push(i);
                }
            }
        }
        let per = self.cfg.max_ids_per_subscription.unwrap_or(usize::MAX).max(1);
        for (idx, login) in changes.taken() {
            self.people.insert(login.to_lowercase(), idx);
            let i = match self.subs.iter().position(|s| s.logins.len() < per) {
                Some(i) => i,
                None => {
                    self.subs.push(Sub::new(Vec::new()));
                    self.subs.len() - 1
                }
            };
            self.subs[i].logins.push(login);
            touched.push(i);
        }
        touched.sort_unstable();
        touched.dedup();
        touched
    }

    /// Subscribes slot `i` anew for its people now, within the session: the old subscription's
    /// channel (or key) is dropped and the subscription deleted, then the new one is made and
    /// its people are resynced. The feed stays up.
    async fn resubscribe_slot(&mut self, i: usize) -> Result<(), Lost> {
        let Some(session) = self.session.clone() else { return Ok(()) };
        let s = &mut self.subs[i];
        if let Some(h) = s.reader.take() {
            h.abort();
        }
        if let Some(k) = s.key.take() {
            self.keys.remove(&k);
        }
        s.gen = 0;
        s.polling_url = None;
        s.ready = false;
        s.connected_at = None;
        s.last_resync = None;
        s.resync_due = None;
        if let Some(id) = s.id.take() {
            delete_subscription(&session, &id, &self.ctx.name).await;
        }
        if self.subs[i].logins.is_empty() {
            self.subs[i].state = "unused";
            self.hook.set_keys(self.keys.clone());
            return Ok(());
        }
        self.gen += 1;
        self.subscribe_slot(&session, i).await?;
        self.start_slot(i);
        Ok(())
    }

    fn spawn_reader(&mut self, i: usize) {
        let (Some(url), Some(s)) = (self.subs[i].polling_url.clone(), &self.session) else { return };
        let reader = Reader {
            http: self.ctx.http.clone(),
            url,
            cookie: s.cookie(),
            open_timeout: self.cfg.call_timeout(),
            idle: (self.cfg.stream_idle_secs > 0).then(|| Duration::from_secs(self.cfg.stream_idle_secs)),
            tx: self.tx.clone(),
            gen: self.subs[i].gen,
            sub: i,
        };
        self.subs[i].state = "connecting";
        if let Some(old) = self.subs[i].reader.replace(tokio::spawn(reader.run())) {
            old.abort();
        }
    }

    /// Asks for the telephony and routing snapshots of a subscription's people.
    fn resync(&mut self, i: usize) {
        let Some(s) = &self.session else { return };
        self.stats.resyncs += 1;
        self.subs[i].last_resync = Some(Instant::now());
        self.subs[i].resync_due = None;
        let logins = self.subs[i].logins.clone();
        for l in &logins {
            self.awaiting.insert((l.to_lowercase(), Kind::Telephony));
            self.awaiting.insert((l.to_lowercase(), Kind::Routing));
        }
        self.stats.snapshot_requests += 2 * logins.len() as u64;
        let task = snapshot_task(s.snapshots(), logins, self.tx.clone(), self.subs[i].gen);
        self.snapshots.push(tokio::spawn(task));
        self.snapshots.retain(|h| !h.is_finished());
    }

    async fn session_loop(&mut self, shutdown: &mut presence_actors::provider::Shutdown) -> Outcome {
        let interval = |s: &Option<Session>, f: f64| {
            let ttl = s.as_ref().map_or(parse::DEFAULT_TTL_SECS, |s| s.info.ttl_secs());
            Duration::from_millis(((ttl as f64 * 1000.0 * f) as u64).max(500))
        };
        let mut keepalive_at = Instant::now() + interval(&self.session, self.cfg.keepalive_fraction);
        let mut keepalive_failures = 0u32;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.recv() => return Outcome::Shutdown,
                _ = tokio::time::sleep_until(keepalive_at) => {
                    let Some(session) = self.session.as_mut() else {
                        return Outcome::Lost(Lost::new("keep-alive: no session", true));
                    };
                    match session.keepalive().await {
                        Ok(()) => {
                            keepalive_failures = 0;
                            keepalive_at = Instant::now() + interval(&self.session, self.cfg.keepalive_fraction);
                        }
                        Err(e) if e.unauthorized() || e.status() == Some(404) => {
                            return Outcome::Lost(Lost::new(format!("keep-alive: {e} (session expired)"), true));
                        }
                        Err(e) => {
                            keepalive_failures += 1;
                            self.ctx.feed.record_error(&format!("keep-alive: {e}"));
                            if keepalive_failures >= 2 {
                                return Outcome::Lost(Lost::new(format!("keep-alive: {e}"), false));
                            }
                            keepalive_at = Instant::now() + interval(&self.session, 0.1).min(Duration::from_secs(5));
                        }
                    }
                }
                input = self.rx.recv() => {
                    let Some(input) = input else { return Outcome::Shutdown };
                    if let Some(lost) = self.on_input(input) {
                        return Outcome::Lost(lost);
                    }
                }
                _ = self.follow.changed() => {
                    for i in self.on_directory() {
                        if let Err(lost) = self.resubscribe_slot(i).await {
                            return Outcome::Lost(lost);
                        }
                    }
                }
                _ = tick.tick() => self.housekeeping(),
            }
        }
    }

    fn on_input(&mut self, input: Input) -> Option<Lost> {
        match input {
            Input::Connected { gen, sub } if self.live(gen, sub) => {
                let s = &mut self.subs[sub];
                s.connects += 1;
                s.connected_at = Some(Instant::now());
                s.ready = false;
                s.state = "connected";
                self.stats.stream_connects += 1;
            }
            Input::Line { gen, sub, line } if self.live(gen, sub) => match line {
                Line::Event(bytes) => match parse::parse_event(&bytes) {
                    Ok(ev) => self.on_event(sub, ev),
                    Err(e) => {
                        self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                        self.ctx.feed.record_error(&format!("malformed event: {e}"));
                        debug!(provider = %self.ctx.name, error = %e, "Malformed O2G event; skipped.");
                    }
                },
                Line::TooLong => {
                    self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    self.ctx.feed.record_error(&format!("event line over {MAX_EVENT_BYTES} bytes dropped"));
                }
            },
            Input::Ended { gen, sub, idle } if self.live(gen, sub) => {
                self.stats.stream_ends += 1;
                let s = &mut self.subs[sub];
                s.ready = false;
                s.connected_at = None;
                s.state = "reconnecting";
                debug!(provider = %self.ctx.name, sub, idle, "O2G event channel ended; re-opening it.");
            }
            Input::Lost { gen, sub, error } if self.live(gen, sub) => {
                self.subs[sub].state = "lost";
                return Some(Lost::new(format!("event channel: {error}"), error.unauthorized()));
            }
            Input::Event { gen, sub, event } if self.live(gen, sub) => self.on_event(sub, *event),
            Input::Snapshot { gen, login, kind, result: Err(e) } if gen != 0 && self.subs.iter().any(|s| s.gen == gen) => {
                self.stats.snapshot_errors += 1;
                self.awaiting.remove(&(login.to_lowercase(), kind));
                self.ctx.feed.record_error(&format!("snapshot of {login}: {e}"));
            }
            // From a subscription torn down or replaced since.
            _ => {}
        }
        self.check_up();
        None
    }

    /// True when `gen` is slot `sub`'s current subscription.
    fn live(&self, gen: u64, sub: usize) -> bool {
        gen != 0 && self.subs.get(sub).is_some_and(|s| s.gen == gen)
    }

    fn channel_ready(&mut self, sub: usize) {
        let s = &mut self.subs[sub];
        if !s.ready {
            s.ready = true;
            s.state = "active";
            match s.last_resync {
                Some(t) if t.elapsed() < MIN_RESYNC_INTERVAL => s.resync_due = Some(t + MIN_RESYNC_INTERVAL),
                _ => self.resync(sub),
            }
        }
    }

    fn on_event(&mut self, sub: usize, ev: Event) {
        let now = now_ms();
        if let Event::ChannelInformation { .. } = &ev {
            if ev.is_heartbeat() {
                self.stats.heartbeats += 1;
                self.stats.last_heartbeat_at = Some(now);
            }
            // The first event of a channel: it is established, ask for the snapshots.
            self.channel_ready(sub);
            return;
        }
        self.channel_ready(sub);
        self.stats.events += 1;
        self.stats.last_event_at = Some(now);
        if let Some(s) = self.subs.get_mut(sub) {
            s.events += 1;
            s.last_event_at = Some(now);
        }
        let Some(login) = ev.login_name().map(str::to_string) else { return };
        let key = login.to_lowercase();
        let idx = match self.people.get(&key) {
            Some(i) => *i,
            None => match self.ctx.directory().resolve(&login) {
                Some(i) => i,
                None => {
                    self.stats.unresolved += 1;
                    self.ctx.feed.unresolved.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        };
        let person = self.persons.entry(idx).or_default();
        let signal = match &ev {
            Event::RoutingStateChanged(r) => {
                self.awaiting.remove(&(key, Kind::Routing));
                person.routing = Some(r.routing_state.clone());
                let s = map::routing_signal(&r.routing_state, &self.instances, now);
                let k = key_of(&s);
                if person.sent_routing.as_ref() == Some(&k) {
                    return;
                }
                person.sent_routing = Some(k);
                s
            }
            _ => {
                if matches!(ev, Event::TelephonyState(_)) {
                    self.awaiting.remove(&(key, Kind::Telephony));
                }
                if !person.tel.apply(&ev) {
                    return;
                }
                let Some(s) = person.tel.signal(&self.instances, now) else { return };
                let k = key_of(&s);
                if person.sent_tel.as_ref() == Some(&k) {
                    return;
                }
                person.sent_tel = Some(k);
                s
            }
        };
        if let Err(e) = self.ctx.sink.send_to(idx, signal) {
            debug!(provider = %self.ctx.name, error = %e, "Signal not delivered.");
        }
    }

    fn housekeeping(&mut self) {
        if self.counters.overflowed.swap(false, Ordering::AcqRel) {
            warn!(provider = %self.ctx.name, "O2G webhook queue overflowed; resyncing everyone.");
            for i in 0..self.subs.len() {
                self.resync(i);
            }
        }
        for i in 0..self.subs.len() {
            // A connected channel that says nothing at all: take it as established.
            if !self.subs[i].ready && self.subs[i].connected_at.is_some_and(|t| t.elapsed() >= CHANNEL_GRACE) {
                self.channel_ready(i);
            }
            if self.subs[i].ready && self.subs[i].resync_due.is_some_and(|t| Instant::now() >= t) {
                self.resync(i);
            }
        }
        self.check_up();
        self.report();
    }

    /// Up once every channel is established and the snapshots are in (or the deadline passed).
    fn check_up(&mut self) {
        if self.up || self.subs.iter().any(|s| !s.ready && !s.logins.is_empty()) {
            return;
        }
        let late = self.resync_deadline.is_some_and(|d| Instant::now() >= d);
        if !self.awaiting.is_empty() && !late {
            return;
        }
        if !self.awaiting.is_empty() {
            warn!(provider = %self.ctx.name, missing = self.awaiting.len(), "Not every O2G snapshot came in time; going live without them.");
            self.awaiting.clear();
        }
        self.up = true;
        self.backoff.reset();
        self.ctx.sink.set_up(true);
        self.ctx.feed.set_state("up");
        info!(provider = %self.ctx.name, people = self.people_count(), "O2G events flowing and resynced; the PBX state is live.");
        self.report();
    }

    /// Stops the channels and snapshot tasks of the current generation.
    fn teardown(&mut self) {
        for h in self.snapshots.drain(..) {
            h.abort();
        }
        self.keys.clear();
        self.hook.set_keys(HashMap::new());
        for s in &mut self.subs {
            if let Some(h) = s.reader.take() {
                h.abort();
            }
            s.gen = 0;
            s.key = None;
            s.ready = false;
            s.connected_at = None;
            s.last_resync = None;
            s.resync_due = None;
            if s.state != "failed" {
                s.state = "down";
            }
        }
        self.awaiting.clear();
        self.resync_deadline = None;
        self.up = false;
        self.gen += 1;
    }

    /// Deletes the subscriptions held (best effort, each within the logout deadline). A
    /// subscription's id is kept until its deletion was tried, so a stop meanwhile still tries.
    async fn delete_subscriptions(&mut self, session: &Session) {
        for i in 0..self.subs.len() {
            let Some(id) = self.subs[i].id.clone() else { continue };
            delete_subscription(session, &id, &self.ctx.name).await;
            self.subs[i].id = None;
            self.subs[i].polling_url = None;
        }
    }

    fn report(&self) {
        let subs: Vec<_> = self
            .subs
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id.as_deref().map(short),
                    "people": s.logins.len(),
                    "state": s.state,
                    "stream_connects": s.connects,
                    "events": s.events,
                    "last_event_at": s.last_event_at.map(rfc3339),
                })
            })
            .collect();
        let session = self.session.as_ref().map(|s| {
            serde_json::json!({
                "login": s.info.login,
                "admin": s.info.admin,
                "ttl_secs": s.info.ttl_secs(),
                "created_at": rfc3339(s.created_at),
                "last_keepalive_at": s.last_keepalive_at.map(rfc3339),
                "keepalives": s.keepalives,
            })
        });
        let st = &self.stats;
        self.ctx.feed.set_details(serde_json::json!({
            "mode": match self.cfg.mode { Mode::Chunk => "chunk", Mode::Webhook => "webhook" },
            "server": st.server,
            "people": self.people_count(),
            "session": session,
            "subscriptions": subs,
            "logins": st.logins,
            "session_losses": st.session_losses,
            "stream_connects": st.stream_connects,
            "stream_ends": st.stream_ends,
            "events": st.events,
            "last_event_at": st.last_event_at.map(rfc3339),
            "heartbeats": st.heartbeats,
            "last_heartbeat_at": st.last_heartbeat_at.map(rfc3339),
            "resyncs": st.resyncs,
            "snapshot_requests": st.snapshot_requests,
            "snapshot_errors": st.snapshot_errors,
            "awaiting_snapshots": self.awaiting.len(),
            "unresolved": st.unresolved,
            "malformed_events": self.counters.malformed.load(Ordering::Relaxed),
            "webhook_events": self.counters.webhook_events.load(Ordering::Relaxed),
            "webhook_unknown_subscription": self.counters.unknown_subscription.load(Ordering::Relaxed),
        }));
    }

    /// The graceful stop: deletes the subscriptions, then ends the session, as the SDKs do
    /// (best effort, each call within the logout deadline). The calls run in a task of their
    /// own, awaited here: the hub aborts the provider's task soon after the stop signal, and the
    /// logout must not go with it (it still ends with the hub's runtime).
    async fn stop(&mut self) {
        self.ctx.hooks.unregister(&self.ctx.name);
        self.teardown();
        if let Some(session) = self.session.take() {
            let ids: Vec<String> = self.subs.iter_mut().filter_map(|s| s.id.take()).collect();
            let provider = self.ctx.name.clone();
            let logout = tokio::spawn(async move {
                for id in &ids {
                    delete_subscription(&session, id, &provider).await;
                }
                match session.logout().await {
                    Ok(()) => info!(provider = %provider, subscriptions = ids.len(), "O2G session ended."),
                    Err(e) => debug!(provider = %provider, error = %e, "Ending the O2G session failed; it expires by itself."),
                }
            });
            let _ = logout.await;
        }
        info!(provider = %self.ctx.name, "O2G provider stopped.");
    }
}

/// Each person's O2G login name (in the provider's extension range), the first person's only
/// when several share one.
fn login_names(cfg: &O2gConfig) -> impl FnMut(UserIdx, &PersonRef<'_>) -> Option<String> + '_ {
    let mut seen = HashSet::new();
    move |_, p| {
        if !crate::extension_in_scope(&cfg.extension_prefixes, p) {
            return None;
        }
        let login = super::fill_login(&cfg.login_template, p)?;
        seen.insert(login.to_lowercase()).then_some(login)
    }
}

/// Deletes one subscription (best effort: a failure is logged; it expires by itself).
async fn delete_subscription(session: &Session, id: &str, provider: &str) {
    if let Err(e) = session.delete_subscription(id).await {
        debug!(provider = %provider, subscription = %short(id), error = %e, "Deleting an O2G subscription failed.");
    }
}

/// A subscription id for logs and details (they are long JWT-like strings).
fn short(id: &str) -> String {
    truncate(id, 48).to_string()
}

/// Requests the telephony and routing snapshots of `logins`, a few at a time.
async fn snapshot_task(snapshots: Snapshots, logins: Vec<String>, tx: mpsc::Sender<Input>, gen: u64) {
    let jobs = logins.into_iter().flat_map(|l| [(l.clone(), Kind::Telephony), (l, Kind::Routing)]);
    let snapshots = &snapshots;
    let mut results = futures_util::stream::iter(jobs)
        .map(|(login, kind)| async move {
            let result = snapshots.request(&login, kind).await;
            (login, kind, result)
        })
        .buffer_unordered(SNAPSHOT_CONCURRENCY);
    while let Some((login, kind, result)) = results.next().await {
        if tx.send(Input::Snapshot { gen, login, kind, result }).await.is_err() {
            return;
        }
    }
}
