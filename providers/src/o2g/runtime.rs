//! The O2G provider's task: login, keep-alive, subscriptions, the chunked event stream (or the
//! webhook), resync by snapshots, and recovery with back-off.
//!
//! One task owns all state. Each subscription's event channel is read by a reader task that
//! splits the chunked body into lines ([`LineSplitter`]) and hands them over in order through a
//! bounded channel; snapshot requests run in a task of their own so events keep flowing while
//! they are answered. In webhook mode the handler ([`O2gHook`]) checks the per-subscription key
//! in the URL, parses the one event of each POST and hands it over the same way.
//!
//! Health: the feed is down (the people's PBX state shows stale, never Offline) from the moment
//! a channel fails until the provider has re-subscribed and the snapshots it asked for are in
//! (or [`RESYNC_DEADLINE`] has passed). A channel that ends cleanly is re-opened at once and
//! resynced (at most every [`MIN_RESYNC_INTERVAL`]) without taking the feed down.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::map::{self, UserTelephony};
use super::parse::{self, Delivery, Event, Line, LineSplitter, RoutingState, SessionInfo, MAX_EVENT_BYTES};
use super::{Mode, O2gConfig};
use presence_actors::directory::UserIdx;
use presence_actors::feeds::FeedEntry;
use presence_actors::model::{now_ms, rfc3339, Activity, Availability, Signal};
use presence_actors::provider::{HookHandler, HookRequest, HookResponse, ProviderContext};

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
/// The chunked stream's request has no overall deadline (the hub's client has 30 s).
const STREAM_DEADLINE: Duration = Duration::from_secs(366 * 86_400);
/// Time limit of logout calls at shutdown.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(2);

/// Which snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `OnTelephonyState`.
    Telephony,
    /// `OnRoutingStateChanged`.
    Routing,
}

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
    /// A channel failed: non-2xx, I/O error. Its reader has stopped.
    Lost {
        /// Subscription generation.
        gen: u64,
        /// Subscription slot.
        sub: usize,
        /// What happened.
        why: String,
        /// The answer was 401/403 (the session is gone).
        unauthorized: bool,
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
        result: Result<(), String>,
    },
}

/// Counters shared by the webhook handler and the task.
#[derive(Default)]
pub struct Counters {
    /// Events that did not parse.
    pub malformed: AtomicU64,
    /// Webhook POSTs for a key no current subscription has (answered 404).
    pub unknown_subscription: AtomicU64,
    /// Webhook events accepted.
    pub webhook_events: AtomicU64,
    /// Set when the task's queue was full: everyone is resynced.
    pub overflowed: AtomicBool,
}

/// The webhook: `POST /hooks/{name}/events/{key}`, one event per request.
pub struct O2gHook {
    keys: RwLock<HashMap<String, (u64, usize)>>,
    tx: mpsc::Sender<Input>,
    counters: Arc<Counters>,
    feed: Arc<FeedEntry>,
}

impl O2gHook {
    fn set_keys(&self, keys: HashMap<String, (u64, usize)>) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }
}

impl HookHandler for O2gHook {
    fn handle(&self, req: HookRequest) -> HookResponse {
        let Some(key) = req.tail.strip_prefix("events/").filter(|k| !k.is_empty() && !k.contains('/')) else {
            return HookResponse::error(404, "not_found", "O2G events are POSTed to /events/{key}");
        };
        let Some((gen, sub)) = self.keys.read().unwrap_or_else(|p| p.into_inner()).get(key).copied() else {
            // The notes: a receiver without an active subscription answers 404.
            self.counters.unknown_subscription.fetch_add(1, Ordering::Relaxed);
            return HookResponse::error(404, "not_found", "no active subscription");
        };
        if req.method != "POST" {
            return HookResponse::error(405, "method_not_allowed", "events are POSTed");
        }
        let event = match parse::parse_event(&req.body) {
            Ok(e) => e,
            Err(e) => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                self.feed.record_error(&format!("malformed webhook event: {e}"));
                return HookResponse::error(400, "bad_request", &e.to_string());
            }
        };
        self.counters.webhook_events.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(Input::Event { gen, sub, event: Box::new(event) }).is_err() {
            self.counters.overflowed.store(true, Ordering::Release);
        }
        HookResponse::empty(200)
    }
}

/// The session.
struct Session {
    credential: String,
    sessions_url: String,
    info: SessionInfo,
    subscriptions_url: String,
    telephony_url: String,
    routing_url: String,
    created_at: i64,
    last_keepalive_at: Option<i64>,
    keepalives: u64,
}

impl Session {
    fn cookie(&self) -> String {
        parse::cookie_header(&self.credential)
    }
}

/// A subscription slot.
struct Sub {
    logins: Vec<String>,
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
    server: Option<String>,
}

/// The running provider.
pub struct Runtime {
    ctx: ProviderContext,
    cfg: O2gConfig,
    /// The slots' instances (the provider's name, `{name}-routing`).
    instances: map::Instances,
    /// Login name (lowercase) → person.
    people: HashMap<String, UserIdx>,
    persons: HashMap<UserIdx, Person>,
    session: Option<Session>,
    subs: Vec<Sub>,
    gen: u64,
    tx: mpsc::Sender<Input>,
    rx: mpsc::Receiver<Input>,
    hook: Arc<O2gHook>,
    counters: Arc<Counters>,
    readers: Vec<JoinHandle<()>>,
    snapshots: Vec<JoinHandle<()>>,
    /// (login lowercase, kind) whose snapshot is still due.
    awaiting: HashSet<(String, Kind)>,
    resync_deadline: Option<Instant>,
    up: bool,
    attempt: usize,
    stats: Stats,
}

/// A random key (128 bits from the OS's hasher seeds and the clock).
fn random_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_i64(now_ms());
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// A failed HTTP call.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{0}")]
    Transport(String),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("{0}")]
    Parse(#[from] parse::ParseError),
}

impl CallError {
    fn unauthorized(&self) -> bool {
        matches!(self, CallError::Status { status: 401 | 403, .. })
    }
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    cookie: Option<&str>,
    body: Option<String>,
) -> Result<Vec<u8>, CallError> {
    let mut rb = http.request(method, url).header("accept", "application/json");
    if let Some(c) = cookie {
        rb = rb.header("cookie", c);
    }
    if let Some(b) = body {
        rb = rb.header("content-type", "application/json").body(b);
    }
    let res = rb.send().await.map_err(|e| CallError::Transport(e.to_string()))?;
    let status = res.status().as_u16();
    let bytes = res.bytes().await.map_err(|e| CallError::Transport(e.to_string()))?;
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).trim().to_string();
        return Err(CallError::Status { status, body: text });
    }
    Ok(bytes.to_vec())
}

impl Runtime {
    /// Builds the task's state and registers the webhook (webhook mode).
    pub fn new(ctx: ProviderContext, cfg: O2gConfig) -> Runtime {
        let mut people = HashMap::new();
        let mut logins = Vec::new();
        for (idx, p) in ctx.directory().people() {
            if !crate::extension_in_scope(&cfg.extension_prefixes, &p) {
                continue;
            }
            if let Some(login) = super::fill_login(&cfg.login_template, &p) {
                if people.insert(login.to_lowercase(), idx).is_none() {
                    logins.push(login);
                }
            }
        }
        let per = cfg.max_ids_per_subscription.unwrap_or(usize::MAX).max(1);
        let subs: Vec<Sub> = logins
            .chunks(per.min(logins.len().max(1)))
            .filter(|c| !c.is_empty())
            .map(|c| Sub {
                logins: c.to_vec(),
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
            })
            .collect();
        let (tx, rx) = mpsc::channel(8192);
        let counters = Arc::new(Counters::default());
        let hook = Arc::new(O2gHook {
            keys: RwLock::new(HashMap::new()),
            tx: tx.clone(),
            counters: counters.clone(),
            feed: ctx.feed.clone(),
        });
        if cfg.mode == Mode::Webhook {
            ctx.hooks.register(&ctx.name, hook.clone());
        }
        Runtime {
            instances: map::Instances::of(&ctx.name),
            ctx,
            cfg,
            people,
            persons: HashMap::new(),
            session: None,
            subs,
            gen: 0,
            tx,
            rx,
            hook,
            counters,
            readers: Vec::new(),
            snapshots: Vec::new(),
            awaiting: HashSet::new(),
            resync_deadline: None,
            up: false,
            attempt: 0,
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
            let delay = self.cfg.backoff(self.attempt);
            self.attempt += 1;
            warn!(provider = %self.ctx.name, why = %lost.why, retry_in = ?delay, "O2G events lost; the PBX state shows stale until re-subscribed and resynced.");
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
        if self.session.is_some() {
            if let Err(e) = self.keepalive().await {
                debug!(provider = %self.ctx.name, error = %e, "O2G session no longer alive; logging in again.");
                self.session = None;
            }
        }
        if self.session.is_none() {
            let s = self.login().await.map_err(|e| Lost::new(format!("login: {e}"), true))?;
            self.stats.logins += 1;
            info!(provider = %self.ctx.name, ttl_secs = s.info.ttl_secs(), admin = s.info.admin, "O2G session opened.");
            self.session = Some(s);
        }
        self.delete_subscriptions().await;
        self.gen += 1;
        let mut keys = HashMap::new();
        for i in 0..self.subs.len() {
            let key = random_key();
            let delivery = match self.cfg.mode {
                Mode::Chunk => Delivery::Chunk { timeout_min: self.cfg.subscription_timeout_min },
                Mode::Webhook => Delivery::Webhook { url: self.ctx.hook_url(&format!("events/{key}")) },
            };
            self.subscribe(i, &delivery).await.map_err(|e| Lost::new(format!("subscribe: {e}"), e.unauthorized()))?;
            keys.insert(key, (self.gen, i));
        }
        self.resync_deadline = Some(Instant::now() + RESYNC_DEADLINE);
        match self.cfg.mode {
            Mode::Chunk => {
                for i in 0..self.subs.len() {
                    self.spawn_reader(i);
                }
            }
            Mode::Webhook => {
                self.hook.set_keys(keys);
                for i in 0..self.subs.len() {
                    self.subs[i].ready = true;
                    self.subs[i].state = "active";
                    self.resync(i);
                }
            }
        }
        self.ctx.feed.set_state("resyncing");
        self.report();
        Ok(())
    }

    async fn login(&mut self) -> Result<Session, CallError> {
        let http = self.ctx.http.clone();
        let base = self.cfg.base_url.trim_end_matches('/');
        let public = self.cfg.public_access;
        // Discovery; without it, the documented default authenticate URL.
        let default_auth = format!("{base}/api/rest/authenticate?version={}", parse::API_VERSION);
        let auth_url = match call(&http, reqwest::Method::GET, &format!("{base}/api/rest"), None, None)
            .await
            .and_then(|b| Ok(parse::parse_discovery(&b)?))
        {
            Ok(d) => {
                self.stats.server = d.product.clone();
                let (a, b) = if public { (d.public_url, d.internal_url) } else { (d.internal_url, d.public_url) };
                a.or(b).unwrap_or(default_auth)
            }
            Err(e) => {
                debug!(provider = %self.ctx.name, error = %e, "O2G discovery failed; using the default authenticate URL.");
                default_auth
            }
        };
        let res = http
            .get(&auth_url)
            .basic_auth(&self.cfg.login, Some(&self.cfg.password))
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let status = res.status().as_u16();
        let set_cookie = res.headers().get("set-cookie").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = res.bytes().await.map_err(|e| CallError::Transport(e.to_string()))?;
        if !(200..300).contains(&status) {
            return Err(CallError::Status {
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string(),
            });
        }
        let auth = parse::parse_authenticate(&body)?;
        // The credential is the cookie's value; a differing Set-Cookie wins (the server's word).
        let credential = set_cookie
            .as_deref()
            .and_then(parse::credential_from_set_cookie)
            .map_or(auth.credential.clone(), str::to_string);
        let (a, b) = if public { (auth.public_url, auth.internal_url) } else { (auth.internal_url, auth.public_url) };
        let sessions_url = a.filter(|u| !u.is_empty()).or(b).unwrap_or_default().trim_end_matches('/').to_string();
        let cookie = parse::cookie_header(&credential);
        let body = call(
            &http,
            reqwest::Method::POST,
            &sessions_url,
            Some(&cookie),
            Some(parse::session_request(&self.cfg.application_name)),
        )
        .await?;
        let info = parse::parse_session(&body)?;
        let base_url = info.base_url(public).unwrap_or_default().to_string();
        let service = |name: &str, default: &str| {
            info.service_url(name, public).unwrap_or_else(|| format!("{base_url}/{default}"))
        };
        Ok(Session {
            subscriptions_url: service("subscriptions", "subscriptions"),
            telephony_url: service("telephony", "telephony"),
            routing_url: service("routing", "routing"),
            credential,
            sessions_url,
            info,
            created_at: now_ms(),
            last_keepalive_at: None,
            keepalives: 0,
        })
    }

    async fn keepalive(&mut self) -> Result<(), CallError> {
        let Some(s) = &self.session else { return Err(CallError::Transport("no session".into())) };
        let url = format!("{}/keepalive", s.sessions_url);
        call(&self.ctx.http, reqwest::Method::POST, &url, Some(&s.cookie()), Some(String::new())).await?;
        if let Some(s) = &mut self.session {
            s.last_keepalive_at = Some(now_ms());
            s.keepalives += 1;
        }
        Ok(())
    }

    async fn subscribe(&mut self, i: usize, delivery: &Delivery) -> Result<(), CallError> {
        let Some(s) = &self.session else { return Err(CallError::Transport("no session".into())) };
        let body = parse::subscription_request(
            &self.subs[i].logins,
            &[parse::PACKAGE_TELEPHONY, parse::PACKAGE_ROUTING],
            delivery,
        );
        let res =
            call(&self.ctx.http, reqwest::Method::POST, &s.subscriptions_url, Some(&s.cookie()), Some(body)).await;
        let sub = &mut self.subs[i];
        match res.and_then(|b| Ok(parse::parse_subscription(&b)?)) {
            Ok(r) => {
                let polling = r.polling_url(self.cfg.public_access).map(str::to_string);
                if self.cfg.mode == Mode::Chunk && polling.is_none() {
                    sub.state = "failed";
                    return Err(CallError::Parse(parse::ParseError::Missing("publicPollingUrl/privatePollingUrl")));
                }
                info!(provider = %self.ctx.name, subscription = %parse_short(&r.subscription_id), people = sub.logins.len(), "O2G subscription accepted.");
                sub.id = Some(r.subscription_id);
                sub.polling_url = polling;
                sub.state = "subscribed";
                sub.ready = false;
                sub.connected_at = None;
                Ok(())
            }
            Err(e) => {
                sub.state = "failed";
                Err(e)
            }
        }
    }

    fn spawn_reader(&mut self, i: usize) {
        let (Some(url), Some(s)) = (self.subs[i].polling_url.clone(), &self.session) else { return };
        let reader = Reader {
            http: self.ctx.http.clone(),
            url,
            cookie: s.cookie(),
            idle: (self.cfg.stream_idle_secs > 0).then(|| Duration::from_secs(self.cfg.stream_idle_secs)),
            tx: self.tx.clone(),
            gen: self.gen,
            sub: i,
        };
        self.subs[i].state = "connecting";
        self.readers.push(tokio::spawn(reader.run()));
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
        let task = snapshot_task(
            self.ctx.http.clone(),
            s.telephony_url.clone(),
            s.routing_url.clone(),
            s.cookie(),
            logins,
            self.tx.clone(),
            self.gen,
        );
        self.snapshots.push(tokio::spawn(task));
        self.snapshots.retain(|h| !h.is_finished());
    }

    async fn session_loop(&mut self, shutdown: &mut presence_actors::provider::Shutdown) -> Outcome {
        let interval = |s: &Option<Session>, f: f64| {
            let ttl = s.as_ref().map_or(parse::DEFAULT_TTL_SECS, |s| s.info.ttl_secs());
            Duration::from_millis(((ttl as f64 * 1000.0 * f) as u64).max(500))
        };
        let mut keepalive_at = tokio::time::Instant::now() + interval(&self.session, self.cfg.keepalive_fraction);
        let mut keepalive_failures = 0u32;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.recv() => return Outcome::Shutdown,
                _ = tokio::time::sleep_until(keepalive_at) => {
                    match self.keepalive().await {
                        Ok(()) => {
                            keepalive_failures = 0;
                            keepalive_at = tokio::time::Instant::now() + interval(&self.session, self.cfg.keepalive_fraction);
                        }
                        Err(e) if e.unauthorized() || matches!(e, CallError::Status { status: 404, .. }) => {
                            return Outcome::Lost(Lost::new(format!("keep-alive: {e} (session expired)"), true));
                        }
                        Err(e) => {
                            keepalive_failures += 1;
                            self.ctx.feed.record_error(&format!("keep-alive: {e}"));
                            if keepalive_failures >= 2 {
                                return Outcome::Lost(Lost::new(format!("keep-alive: {e}"), false));
                            }
                            keepalive_at = tokio::time::Instant::now() + interval(&self.session, 0.1).min(Duration::from_secs(5));
                        }
                    }
                }
                input = self.rx.recv() => {
                    let Some(input) = input else { return Outcome::Shutdown };
                    if let Some(lost) = self.on_input(input) {
                        return Outcome::Lost(lost);
                    }
                }
                _ = tick.tick() => self.housekeeping(),
            }
        }
    }

    fn on_input(&mut self, input: Input) -> Option<Lost> {
        match input {
            Input::Connected { gen, sub } if gen == self.gen => {
                let s = &mut self.subs[sub];
                s.connects += 1;
                s.connected_at = Some(Instant::now());
                s.ready = false;
                s.state = "connected";
                self.stats.stream_connects += 1;
            }
            Input::Line { gen, sub, line } if gen == self.gen => match line {
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
            Input::Ended { gen, sub, idle } if gen == self.gen => {
                self.stats.stream_ends += 1;
                let s = &mut self.subs[sub];
                s.ready = false;
                s.connected_at = None;
                s.state = "reconnecting";
                debug!(provider = %self.ctx.name, sub, idle, "O2G event channel ended; re-opening it.");
            }
            Input::Lost { gen, sub, why, unauthorized } if gen == self.gen => {
                self.subs[sub].state = "lost";
                return Some(Lost::new(format!("event channel: {why}"), unauthorized));
            }
            Input::Event { gen, sub, event } if gen == self.gen => self.on_event(sub, *event),
            Input::Snapshot { gen, login, kind, result: Err(e) } if gen == self.gen => {
                self.stats.snapshot_errors += 1;
                self.awaiting.remove(&(login.to_lowercase(), kind));
                self.ctx.feed.record_error(&format!("snapshot of {login}: {e}"));
            }
            // From a generation torn down since.
            _ => {}
        }
        self.check_up();
        None
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
        if self.up || self.subs.iter().any(|s| !s.ready) {
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
        self.attempt = 0;
        self.ctx.sink.set_up(true);
        self.ctx.feed.set_state("up");
        info!(provider = %self.ctx.name, people = self.people_count(), "O2G events flowing and resynced; the PBX state is live.");
        self.report();
    }

    /// Stops the channels and snapshot tasks of the current generation.
    fn teardown(&mut self) {
        for h in self.readers.drain(..).chain(self.snapshots.drain(..)) {
            h.abort();
        }
        self.hook.set_keys(HashMap::new());
        for s in &mut self.subs {
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

    /// Deletes the subscriptions held (best effort).
    async fn delete_subscriptions(&mut self) {
        let Some(s) = &self.session else { return };
        for sub in &mut self.subs {
            let Some(id) = sub.id.take() else { continue };
            let url = format!("{}/{}", s.subscriptions_url.trim_end_matches('/'), parse::query_encode(&id));
            let cookie = s.cookie();
            let del = call(&self.ctx.http, reqwest::Method::DELETE, &url, Some(&cookie), None);
            if let Ok(Err(e)) = tokio::time::timeout(LOGOUT_TIMEOUT, del).await {
                debug!(provider = %self.ctx.name, error = %e, "Deleting an O2G subscription failed.");
            }
            sub.polling_url = None;
        }
    }

    fn report(&self) {
        let subs: Vec<_> = self
            .subs
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id.as_deref().map(parse_short),
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

    async fn stop(&mut self) {
        self.ctx.hooks.unregister(&self.ctx.name);
        self.teardown();
        // Delete the subscriptions, then the session, as the SDKs do (best effort, short).
        self.delete_subscriptions().await;
        if let Some(s) = self.session.take() {
            let cookie = s.cookie();
            let del = call(&self.ctx.http, reqwest::Method::DELETE, &s.sessions_url, Some(&cookie), None);
            let _ = tokio::time::timeout(LOGOUT_TIMEOUT, del).await;
        }
        info!(provider = %self.ctx.name, "O2G provider stopped.");
    }
}

/// A subscription id for logs and details (they are long JWT-like strings).
fn parse_short(id: &str) -> String {
    presence_actors::model::activity::truncate(id, 48).to_string()
}

/// Reads one subscription's event channel: `POST` the polling URL, split the chunked answer
/// into lines; on a clean end (or silence) re-open it at once; on a failure report and stop.
struct Reader {
    http: reqwest::Client,
    url: String,
    cookie: String,
    idle: Option<Duration>,
    tx: mpsc::Sender<Input>,
    gen: u64,
    sub: usize,
}

impl Reader {
    async fn run(self) {
        let (gen, sub) = (self.gen, self.sub);
        loop {
            let started = Instant::now();
            let res = self
                .http
                .post(&self.url)
                .header("accept", "*/*")
                .header("cookie", &self.cookie)
                .timeout(STREAM_DEADLINE)
                .send()
                .await;
            let mut res = match res {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => {
                    let status = r.status().as_u16();
                    let why = format!("polling answered HTTP {status}");
                    let _ =
                        self.tx.send(Input::Lost { gen, sub, why, unauthorized: matches!(status, 401 | 403) }).await;
                    return;
                }
                Err(e) => {
                    let _ =
                        self.tx.send(Input::Lost { gen, sub, why: format!("polling: {e}"), unauthorized: false }).await;
                    return;
                }
            };
            if self.tx.send(Input::Connected { gen, sub }).await.is_err() {
                return;
            }
            let mut splitter = LineSplitter::new(MAX_EVENT_BYTES);
            let mut lines = Vec::new();
            let idle = loop {
                let next = match self.idle {
                    Some(d) => match tokio::time::timeout(d, res.chunk()).await {
                        Ok(r) => r,
                        Err(_) => break true,
                    },
                    None => res.chunk().await,
                };
                match next {
                    Ok(Some(bytes)) => splitter.push(&bytes, &mut lines),
                    Ok(None) => {
                        splitter.finish(&mut lines);
                        for line in lines.drain(..) {
                            let _ = self.tx.send(Input::Line { gen, sub, line }).await;
                        }
                        break false;
                    }
                    Err(e) => {
                        for line in lines.drain(..) {
                            let _ = self.tx.send(Input::Line { gen, sub, line }).await;
                        }
                        let _ = self
                            .tx
                            .send(Input::Lost {
                                gen,
                                sub,
                                why: format!("reading the event stream: {e}"),
                                unauthorized: false,
                            })
                            .await;
                        return;
                    }
                }
                for line in lines.drain(..) {
                    if self.tx.send(Input::Line { gen, sub, line }).await.is_err() {
                        return;
                    }
                }
            };
            if self.tx.send(Input::Ended { gen, sub, idle }).await.is_err() {
                return;
            }
            // Re-open at once, but not in a tight loop against a server that ends every channel.
            if started.elapsed() < Duration::from_secs(1) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Requests the telephony and routing snapshots of `logins`, a few at a time.
async fn snapshot_task(
    http: reqwest::Client,
    telephony_url: String,
    routing_url: String,
    cookie: String,
    logins: Vec<String>,
    tx: mpsc::Sender<Input>,
    gen: u64,
) {
    let jobs = logins.into_iter().flat_map(|l| [(l.clone(), Kind::Telephony), (l, Kind::Routing)]);
    let mut results = futures_util::stream::iter(jobs)
        .map(|(login, kind)| {
            let url = parse::snapshot_url(if kind == Kind::Telephony { &telephony_url } else { &routing_url }, &login);
            let (http, cookie) = (&http, &cookie);
            async move {
                let r = call(http, reqwest::Method::POST, &url, Some(cookie), Some(String::new())).await;
                (login, kind, r.map(|_| ()).map_err(|e| e.to_string()))
            }
        })
        .buffer_unordered(SNAPSHOT_CONCURRENCY);
    while let Some((login, kind, result)) = results.next().await {
        if tx.send(Input::Snapshot { gen, login, kind, result }).await.is_err() {
            return;
        }
    }
}
