//! The Graph presence provider's reads and feed health: the start-up snapshot, the people
//! change notifications name, fallback polling while notifications lapse, a periodic
//! consistency read — and the truth about the feed when Graph fails.
//!
//! How it stays true under faults:
//! - **Nothing notified is lost.** A notified person stays pending until a read of them
//!   succeeds; a failed or timed-out read puts its people back. Two queues: people named by a
//!   notification (read first) and people to resync (start-up, subscription changes, fallback
//!   and consistency polls).
//! - **A hanging Graph does not stall the feed.** Reads run as tasks of their own, one at a
//!   time, each with a deadline (`read_timeout_secs`); notifications keep arriving and queue
//!   meanwhile. A watchdog marks the feed down when reads have been due for `watchdog_secs`
//!   without one succeeding, whatever the reason (throttling, a token endpoint that hangs).
//! - **Down and up are seen on every stream.** After `down_after_failures` failed reads in a
//!   row the feed goes down through the sink (every view re-merges: Teams shows stale, never
//!   Offline). Failed reads are retried with back-off and jitter (0.5 s doubling to 5 s). On
//!   the first success the people notified during the outage are read first; only when none is
//!   left does the feed come back up, and then everyone else is re-read.
//!
//! The people read follow the live directory ([`Follow`]): newcomers with an Entra id are read
//! at once and join a subscription, leavers are no longer read and leave theirs.
//!
//! The subscriptions run in a task of their own ([`super::subscriptions`]); the webhook is
//! [`super::hook`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::client::GraphClient;
use super::crypto::NotificationKey;
use super::hook::{GraphHook, HookEvent, HookStats};
use super::parse::{self, GraphPresence, MAX_IDS_PER_REQUEST, MAX_IDS_PER_SUBSCRIPTION};
use super::subscriptions::{SharedSubs, SubsCommand, SubsEvent, Subscriptions};
use super::GraphPresenceConfig;
use crate::common::backoff::Backoff;
use crate::common::follow::Follow;
use crate::common::http::{CallError, Limits};
use crate::common::secret;
use presence_actors::directory::{PersonRef, UserIdx};
use presence_actors::model::{now_ms, rfc3339};
use presence_actors::provider::ProviderContext;

/// Largest getPresencesByUserId answer read (650 presences with status messages fit in a
/// fraction of this).
pub const MAX_READ_ANSWER: usize = 4 * 1024 * 1024;
/// First wait before a failed read is retried.
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// Longest wait between retries of failed reads.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The answer of one read.
struct ReadDone {
    ids: Vec<String>,
    notified: bool,
    result: Result<Vec<Result<GraphPresence, parse::ParseError>>, CallError>,
}

/// Feed health as the reads see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// No read has succeeded yet.
    Connecting,
    Up,
    /// Reads failed; people notified meanwhile are read first when Graph answers again.
    Down,
}

/// The running provider (the reads).
pub struct Runtime {
    ctx: ProviderContext,
    cfg: GraphPresenceConfig,
    client: Arc<GraphClient>,
    /// The people read, following the live directory: Entra id (lowercase) per person.
    follow: Follow<String>,
    /// The people per service account's subscription (index: account).
    chunks: Vec<Vec<String>>,
    /// `chunks` changed and the subscriptions task has not been told yet (its queue was full).
    chunks_unsent: bool,
    /// Entra id (lowercase) → person.
    people: HashMap<String, UserIdx>,
    ids: Vec<String>,
    uncovered: Vec<String>,
    key: Option<Arc<NotificationKey>>,
    stats: Arc<HookStats>,
    hook_rx: mpsc::Receiver<HookEvent>,
    subs: Option<Subscriptions>,
    subs_view: SharedSubs,
    subs_tx: mpsc::Sender<SubsCommand>,
    subs_rx: mpsc::Receiver<SubsEvent>,
    /// People named by notifications, not read since (read first).
    notified: HashSet<String>,
    /// People to re-read.
    resync: HashSet<String>,
    /// The read under way.
    in_flight: bool,
    done_tx: mpsc::Sender<ReadDone>,
    done_rx: mpsc::Receiver<ReadDone>,
    /// Gather notifications until then before reading.
    flush_at: Option<Instant>,
    /// No read before then (throttling, retry back-off).
    hold_until: Option<Instant>,
    retry: Backoff,
    health: Health,
    failures: u32,
    /// Since when reads have been due without one succeeding.
    due_since: Option<Instant>,
    /// Notifications per subscription id: (count, last at).
    per_sub: HashMap<String, (u64, i64)>,
    unknown_logged: HashSet<String>,
    throttled: u64,
    reads: u64,
    read_failures: u64,
    last_read_at: Option<i64>,
    next_consistency: Instant,
    next_fallback: Instant,
}

impl Runtime {
    /// Builds the task's state and registers the webhook.
    pub fn new(ctx: ProviderContext, cfg: GraphPresenceConfig, key: Option<NotificationKey>) -> Runtime {
        let key = key.map(Arc::new);
        let client = Arc::new(GraphClient::new(ctx.http.clone(), &cfg.app.graph_url, &cfg.app.token_endpoint(), cfg.app.client_id(), cfg.app.client_secret()));
        let mut follow = Follow::new(&ctx);
        let mut people = HashMap::new();
        let mut ids = Vec::new();
        for (idx, key) in follow.update(entra_ids()).added {
            people.insert(key.clone(), idx);
            ids.push(key);
        }
        // The secret survives restarts, so a subscription adopted after a restart still matches.
        let client_state = cfg.client_state.clone().or_else(|| ctx.cursors.get(&ctx.name, "client_state").filter(|c| !c.is_empty())).unwrap_or_else(|| {
            let s = secret::random_hex128();
            ctx.cursors.set(&ctx.name, "client_state", &s);
            s
        });
        let (hook_tx, hook_rx) = mpsc::channel(4096);
        let stats = Arc::new(HookStats::default());
        let hook = GraphHook { client_state: client_state.clone(), key: key.clone(), tx: hook_tx, stats: stats.clone(), feed: ctx.feed.clone() };
        ctx.hooks.register(&ctx.name, Arc::new(hook));
        // Spread people over the service accounts, 650 per subscription; the rest are polled.
        let mut chunks = Vec::new();
        let uncovered = assign(&mut chunks, &ids, accounts(&cfg));
        if !uncovered.is_empty() && cfg.notifications {
            warn!(
                provider = %ctx.name,
                uncovered = uncovered.len(),
                accounts_needed = ids.len().div_ceil(MAX_IDS_PER_SUBSCRIPTION),
                accounts = cfg.service_accounts.len(),
                "Not enough service accounts for change notifications (650 people each); the rest are polled."
            );
        }
        let (subs_tx, subs_cmd_rx) = mpsc::channel(256);
        let (subs_ev_tx, subs_rx) = mpsc::channel(256);
        let (subs, subs_view) = Subscriptions::new(ctx.clone(), cfg.clone(), client.clone(), chunks.clone(), client_state, key.clone(), subs_cmd_rx, subs_ev_tx);
        let (done_tx, done_rx) = mpsc::channel(4);
        let now = Instant::now();
        Runtime {
            client,
            follow,
            chunks,
            chunks_unsent: false,
            people,
            uncovered,
            key,
            stats,
            hook_rx,
            subs: Some(subs),
            subs_view,
            subs_tx,
            subs_rx,
            // The start-up snapshot.
            resync: ids.iter().cloned().collect(),
            ids,
            notified: HashSet::new(),
            in_flight: false,
            done_tx,
            done_rx,
            flush_at: None,
            hold_until: None,
            retry: Backoff::new(RETRY_FIRST, RETRY_MAX),
            health: Health::Connecting,
            failures: 0,
            due_since: None,
            per_sub: HashMap::new(),
            unknown_logged: HashSet::new(),
            throttled: 0,
            reads: 0,
            read_failures: 0,
            last_read_at: None,
            next_consistency: now + Duration::from_secs(cfg.consistency_poll_secs),
            next_fallback: now + Duration::from_secs(cfg.fallback_poll_secs),
            ctx,
            cfg,
        }
    }

    /// Runs until shutdown; then stops the subscriptions task (which deletes them) and waits
    /// for it.
    pub async fn run(mut self) {
        let mut shutdown = self.ctx.shutdown.clone();
        info!(provider = %self.ctx.name, people = self.ids.len(), polled = self.uncovered.len(), "Graph presence provider starting.");
        self.ctx.feed.set_state("connecting");
        let subs = self.subs.take().map(|s| tokio::spawn(s.run()));
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.dispatch();
            let wake = self.next_wake();
            tokio::select! {
                _ = shutdown.recv() => break,
                ev = self.hook_rx.recv() => match ev {
                    Some(ev) => self.on_hook(ev),
                    None => break,
                },
                Some(ev) = self.subs_rx.recv() => self.on_subs_event(ev),
                _ = self.follow.changed() => self.on_directory(),
                Some(done) = self.done_rx.recv() => self.on_read(done),
                _ = sleep_until(wake) => {}
                _ = tick.tick() => self.housekeeping(),
            }
        }
        self.ctx.hooks.unregister(&self.ctx.name);
        if let Some(h) = subs {
            let _ = h.await;
        }
        info!(provider = %self.ctx.name, "Graph presence provider stopped.");
    }

    fn next_wake(&self) -> Option<Instant> {
        match (self.flush_at, self.hold_until) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_hook(&mut self, ev: HookEvent) {
        match ev {
            HookEvent::Changed { subscription, users } => {
                self.count_notifications(&subscription, users.len() as u64);
                for u in users {
                    let key = u.to_ascii_lowercase();
                    if self.people.contains_key(&key) {
                        self.notified.insert(key);
                    }
                }
                if !self.notified.is_empty() && self.flush_at.is_none() {
                    // Gather what arrives together into one getPresencesByUserId.
                    self.flush_at = Some(Instant::now() + Duration::from_millis(self.cfg.batch_ms));
                }
            }
            HookEvent::Presence { subscription, presence } => {
                self.count_notifications(&subscription, 1);
                self.deliver(&presence, now_ms());
            }
            HookEvent::Lifecycle { subscription, event } => {
                if self.subs_tx.try_send(SubsCommand::Lifecycle { subscription, event }).is_err() {
                    warn!(provider = %self.ctx.name, "Lifecycle event dropped (subscriptions task busy); the consistency read covers it.");
                }
            }
        }
    }

    fn count_notifications(&mut self, subscription: &str, n: u64) {
        if self.per_sub.len() < 1000 || self.per_sub.contains_key(subscription) {
            let e = self.per_sub.entry(subscription.to_string()).or_insert((0, 0));
            e.0 += n;
            e.1 = now_ms();
        }
    }

    fn on_subs_event(&mut self, ev: SubsEvent) {
        match ev {
            // Only people still followed (a subscription's list may be older than the directory).
            SubsEvent::Resync(users) => self.resync.extend(users.into_iter().filter(|u| self.people.contains_key(u))),
        }
    }

    /// The directory changed: leavers (and changed ids' old values) are no longer read and
    /// leave their subscription; newcomers are read at once and join a subscription with room
    /// (else one of an unused service account, else the polled ones). Subscriptions whose
    /// people changed are made anew by the subscriptions task.
    fn on_directory(&mut self) {
        let changes = self.follow.update(entra_ids());
        if changes.is_empty() {
            return;
        }
        info!(provider = %self.ctx.name, added = changes.added.len(), removed = changes.removed.len(), changed = changes.changed.len(), "Directory changed; Graph presence follows it.");
        for (_, id) in changes.dropped() {
            self.people.remove(id);
            self.notified.remove(id);
            self.resync.remove(id);
        }
        for (idx, id) in changes.taken() {
            self.people.insert(id.clone(), idx);
            self.resync.insert(id);
        }
        self.ids = self.follow.held().values().cloned().collect();
        let before = self.chunks.clone();
        self.uncovered = assign(&mut self.chunks, &self.ids, accounts(&self.cfg));
        if self.chunks != before {
            self.chunks_unsent = true;
        }
        self.send_chunks();
    }

    /// Tells the subscriptions task the people per account, if it has not been told yet.
    fn send_chunks(&mut self) {
        if self.chunks_unsent && self.subs_tx.try_send(SubsCommand::Users(self.chunks.clone())).is_ok() {
            self.chunks_unsent = false;
        }
    }

    /// Starts a read when none is under way, nothing holds reads back and people are due:
    /// notified people first (once their batching window has passed), then the resync queue.
    fn dispatch(&mut self) {
        let now = Instant::now();
        let due = !self.notified.is_empty() || !self.resync.is_empty();
        if due && self.due_since.is_none() {
            self.due_since = Some(now);
        }
        if self.in_flight || self.hold_until.is_some_and(|t| t > now) {
            return;
        }
        self.hold_until = None;
        // While down, notified people are read at once: they are what the recovery waits for.
        let gathered = self.flush_at.is_none_or(|t| t <= now) || self.health == Health::Down;
        let (ids, notified) = if !self.notified.is_empty() && gathered {
            self.flush_at = None;
            (take(&mut self.notified, MAX_IDS_PER_REQUEST), true)
        } else if !self.resync.is_empty() {
            (take(&mut self.resync, MAX_IDS_PER_REQUEST), false)
        } else {
            return;
        };
        self.in_flight = true;
        let (client, tx) = (self.client.clone(), self.done_tx.clone());
        let limits = Limits::new(MAX_READ_ANSWER, Duration::from_secs(self.cfg.read_timeout_secs));
        tokio::spawn(async move {
            let result = read(&client, &ids, limits).await;
            let _ = tx.send(ReadDone { ids, notified, result }).await;
        });
    }

    fn on_read(&mut self, done: ReadDone) {
        self.in_flight = false;
        match done.result {
            Ok(items) => {
                self.reads += 1;
                self.last_read_at = Some(now_ms());
                self.failures = 0;
                self.retry.reset();
                let now = now_ms();
                for item in items {
                    match item {
                        Ok(p) => self.deliver(&p, now),
                        Err(e) => self.ctx.feed.record_error(&format!("presence item: {e}")),
                    }
                }
                if self.notified.is_empty() && self.resync.is_empty() {
                    self.due_since = None;
                } else {
                    self.due_since = Some(Instant::now());
                }
                self.maybe_up();
            }
            Err(e) => {
                let back = if done.notified { &mut self.notified } else { &mut self.resync };
                // Back in the queue, but only people still followed.
                back.extend(done.ids.into_iter().filter(|id| self.people.contains_key(id)));
                match e {
                    CallError::Throttled(after) => {
                        self.throttled += 1;
                        self.ctx.feed.set_state("throttled");
                        warn!(provider = %self.ctx.name, retry_after = ?after, "Graph throttled presence reads (429).");
                        self.hold_until = Some(Instant::now() + after);
                    }
                    e => {
                        if e.status() == Some(401) {
                            let c = self.client.clone();
                            tokio::spawn(async move { c.drop_app_token().await });
                        }
                        self.failures += 1;
                        self.read_failures += 1;
                        self.ctx.feed.record_error(&e.to_string());
                        let wait = e.retry_after().unwrap_or_else(|| self.retry.next_delay());
                        warn!(provider = %self.ctx.name, error = %e, failures = self.failures, retry_in = ?wait, "Reading Graph presence failed.");
                        self.hold_until = Some(Instant::now() + wait);
                        if self.failures >= self.cfg.down_after_failures {
                            self.down(&e.to_string());
                        }
                    }
                }
            }
        }
    }

    /// Up once the people notified during an outage have been read; then everyone else is
    /// re-read, since their changes may have gone unnotified too.
    fn maybe_up(&mut self) {
        match self.health {
            Health::Up => {
                self.ctx.feed.set_state("up");
            }
            Health::Connecting | Health::Down if self.notified.is_empty() => {
                if self.health == Health::Down {
                    info!(provider = %self.ctx.name, "Graph answers again; the people notified meanwhile are read, everyone else is being re-read.");
                    self.resync.extend(self.ids.iter().cloned());
                } else {
                    info!(provider = %self.ctx.name, "Graph presence feed is up.");
                }
                self.health = Health::Up;
                self.ctx.sink.set_up(true);
                self.ctx.feed.set_state("up");
            }
            _ => {}
        }
    }

    fn down(&mut self, why: &str) {
        if self.health == Health::Down {
            return;
        }
        warn!(provider = %self.ctx.name, reason = %why, "Graph presence feed is down; Teams shows stale until Graph answers again.");
        self.health = Health::Down;
        self.ctx.sink.set_up(false);
        self.ctx.feed.set_state("down");
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        self.send_chunks();
        if self.stats.overflowed.swap(false, Ordering::AcqRel) {
            warn!(provider = %self.ctx.name, "Notification queue overflowed; re-reading everyone.");
            self.resync.extend(self.ids.iter().cloned());
        }
        // The watchdog: reads due for too long without one succeeding.
        if let Some(since) = self.due_since {
            let stuck = now.saturating_duration_since(since) >= Duration::from_secs(self.cfg.watchdog_secs);
            if stuck && self.health != Health::Down {
                self.ctx.feed.record_error("no presence read succeeded within watchdog_secs");
                self.down(&format!("no read succeeded for {} s", self.cfg.watchdog_secs));
            }
        }
        // Fallback polling for people no active subscription covers.
        if now >= self.next_fallback {
            self.next_fallback = now + Duration::from_secs(self.cfg.fallback_poll_secs);
            self.resync.extend(self.uncovered.iter().cloned());
            let views = self.subs_view.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for v in views.iter().filter(|v| !v.active()) {
                self.resync.extend(v.users.iter().cloned());
            }
        }
        // Consistency check: everyone, now and then (notifications can be dropped).
        if now >= self.next_consistency {
            self.next_consistency = now + Duration::from_secs(self.cfg.consistency_poll_secs);
            self.resync.extend(self.ids.iter().cloned());
        }
        self.report();
    }

    fn deliver(&mut self, p: &GraphPresence, now: i64) {
        if let Some(u) = &p.unknown {
            if self.unknown_logged.len() < 1000 && self.unknown_logged.insert(u.clone()) {
                warn!(provider = %self.ctx.name, value = %u, "Unknown Graph presence value; shown as Unknown (logged once).");
            }
        }
        let Some(idx) = self.people.get(&p.id.to_ascii_lowercase()).copied() else {
            self.ctx.feed.unresolved.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if let Err(e) = self.ctx.sink.send_to(idx, p.to_signal(now)) {
            debug!(provider = %self.ctx.name, error = %e, "Signal not delivered.");
        }
    }

    fn report(&self) {
        let views = self.subs_view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let subs: Vec<_> = views
            .iter()
            .map(|s| {
                let counted = s.id.as_ref().and_then(|id| self.per_sub.get(id)).copied();
                serde_json::json!({
                    "account": s.account,
                    "people": s.users.len(),
                    "id": s.id,
                    "expires_at": (s.expires_at > 0).then(|| rfc3339(s.expires_at)),
                    "state": s.state,
                    "notifications": counted.map_or(0, |c| c.0),
                    "last_notification_at": counted.map(|c| rfc3339(c.1)),
                })
            })
            .collect();
        self.ctx.feed.set_details(serde_json::json!({
            "people": self.ids.len(),
            "subscriptions": subs,
            "polled_people": self.uncovered.len() + views.iter().filter(|s| !s.active()).map(|s| s.users.len()).sum::<usize>(),
            "notifications": self.stats.notifications.load(Ordering::Relaxed),
            "rejected_client_state": self.stats.rejected_client_state.load(Ordering::Relaxed),
            "malformed_notifications": self.stats.malformed.load(Ordering::Relaxed),
            "validations": self.stats.validations.load(Ordering::Relaxed),
            "resource_data": self.key.is_some(),
            "decryption_failures": self.stats.decryption_failures.load(Ordering::Relaxed),
            "polls": self.reads,
            "read_failures": self.read_failures,
            "last_poll_at": self.last_read_at.map(rfc3339),
            "pending_notified": self.notified.len(),
            "pending_resync": self.resync.len(),
            "throttled_responses": self.throttled,
            "throttled_until": self.client.budget.throttled_until_ms().map(rfc3339),
            "requests_in_window": self.client.budget.in_window(),
            "request_budget": format!("{} per {} s", super::client::BUDGET_REQUESTS, super::client::BUDGET_WINDOW.as_secs()),
        }));
    }
}

/// Each person's Entra object id (lowercase), the first person's only when several share one.
fn entra_ids() -> impl FnMut(UserIdx, &PersonRef<'_>) -> Option<String> {
    let mut seen = HashSet::new();
    move |_, p| {
        let key = p.external_ids().find(|e| e.kind.eq_ignore_ascii_case("entra"))?.value.to_ascii_lowercase();
        seen.insert(key.clone()).then_some(key)
    }
}

/// Service accounts that may hold a subscription (none without notifications).
fn accounts(cfg: &GraphPresenceConfig) -> usize {
    if cfg.notifications {
        cfg.service_accounts.len()
    } else {
        0
    }
}

/// Spreads `ids` over the subscriptions of up to `accounts` service accounts, 650 each, and
/// returns the people left over (polled). Stable: people already in a subscription stay in it
/// (and those no longer in `ids` leave it), so a change to the directory touches only the
/// subscriptions it concerns; the others fill the room left, then new subscriptions.
fn assign(chunks: &mut Vec<Vec<String>>, ids: &[String], accounts: usize) -> Vec<String> {
    let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    for c in chunks.iter_mut() {
        c.retain(|id| wanted.contains(id.as_str()));
    }
    let placed: HashSet<String> = chunks.iter().flatten().cloned().collect();
    let mut rest = ids.iter().filter(|id| !placed.contains(*id)).cloned().peekable();
    for c in chunks.iter_mut() {
        while c.len() < MAX_IDS_PER_SUBSCRIPTION {
            let Some(id) = rest.next() else { break };
            c.push(id);
        }
    }
    while chunks.len() < accounts && rest.peek().is_some() {
        chunks.push(rest.by_ref().take(MAX_IDS_PER_SUBSCRIPTION).collect());
    }
    rest.collect()
}

/// Up to `n` ids out of `set`.
fn take(set: &mut HashSet<String>, n: usize) -> Vec<String> {
    if set.len() <= n {
        return set.drain().collect();
    }
    let ids: Vec<String> = set.iter().take(n).cloned().collect();
    for id in &ids {
        set.remove(id);
    }
    ids
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// One getPresencesByUserId: the app token, a slot in the budget, then the call within
/// `limits`.
async fn read(client: &GraphClient, ids: &[String], limits: Limits) -> Result<Vec<Result<GraphPresence, parse::ParseError>>, CallError> {
    let token = client.app_token().await?;
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let body = parse::presences_request_body(&ids)?;
    let bytes = client.call(reqwest::Method::POST, "/communications/getPresencesByUserId", &token, Some(body), true, limits).await?;
    Ok(parse::parse_presences(&bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(r: std::ops::Range<usize>) -> Vec<String> {
        r.map(|i| format!("id{i}")).collect()
    }

    /// People stay in their subscription; leavers leave it; newcomers fill the room left, then
    /// an unused account's, then are polled.
    #[test]
    fn assign_is_stable_and_fills_the_room_left_first() {
        let mut chunks = Vec::new();
        let all = ids(0..1400);
        let polled = assign(&mut chunks, &all, 2);
        assert_eq!((chunks.len(), chunks[0].len(), chunks[1].len(), polled.len()), (2, 650, 650, 100));
        let before = chunks.clone();
        // id0 and id700 leave, two newcomers come: the room left is filled, in order.
        let mut next: Vec<String> = all.iter().filter(|i| *i != "id0" && *i != "id700").cloned().collect();
        next.extend(["new1".to_string(), "new2".to_string()]);
        let polled = assign(&mut chunks, &next, 2);
        assert_eq!(chunks[0][..649], before[0][1..], "the others stay where they were");
        assert_eq!(chunks[0][649], "id1300", "the first one polled takes the room");
        assert_eq!(chunks[1][649], "id1301");
        assert_eq!(polled.len(), 100, "{polled:?}");
        assert!(polled.ends_with(&["new1".to_string(), "new2".to_string()]));
        // Without accounts everyone is polled.
        let mut none = Vec::new();
        assert_eq!(assign(&mut none, &all, 0).len(), 1400);
        assert!(none.is_empty());
    }
}
