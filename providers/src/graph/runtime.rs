//! The Graph presence provider's task: start-up snapshot by polling, change notifications
//! through subscriptions held by a pool of service accounts, renewal before expiry, lifecycle
//! events, fallback polling while notifications lapse, and a periodic consistency check.
//!
//! One tokio task owns all state. The webhook handler ([`GraphHook`]) runs on HTTP worker
//! threads: it answers the validation handshake, checks `clientState` on every item, hands the
//! valid ones to the task through a bounded channel and answers `202` at once — Graph wants an
//! answer within 3 s, and the presence fetch happens afterwards, in batches.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::client::{CallError, GraphClient};
use super::crypto::NotificationKey;
use super::parse::{self, LifecycleEvent, MAX_IDS_PER_REQUEST, MAX_IDS_PER_SUBSCRIPTION};
use super::GraphPresenceConfig;
use presence_actors::directory::UserIdx;
use presence_actors::feeds::FeedEntry;
use presence_actors::model::{now_ms, rfc3339};
use presence_actors::provider::{HookHandler, HookRequest, HookResponse, ProviderContext};

/// Work the webhook hands to the task.
#[derive(Debug)]
pub enum HookEvent {
    /// These people's presence changed, per the named subscription.
    Changed {
        /// Subscription id.
        subscription: String,
        /// Entra ids.
        users: Vec<String>,
    },
    /// Presence that came inside a notification (decrypted resource data).
    Presence {
        /// Subscription id.
        subscription: String,
        /// The presence.
        presence: Box<parse::GraphPresence>,
    },
    /// A lifecycle event for a subscription.
    Lifecycle {
        /// Subscription id.
        subscription: String,
        /// What happened.
        event: LifecycleEvent,
    },
}

/// Counters shared by the webhook and the task.
#[derive(Default)]
pub struct HookStats {
    /// Notification items accepted.
    pub notifications: AtomicU64,
    /// Items refused for a wrong or missing `clientState`.
    pub rejected_client_state: AtomicU64,
    /// Bodies that did not parse.
    pub malformed: AtomicU64,
    /// Validation handshakes answered.
    pub validations: AtomicU64,
    /// Notifications whose resource data could not be decrypted or verified (fetched instead).
    pub decryption_failures: AtomicU64,
    /// Set when the channel was full: the task resyncs everyone by polling.
    pub overflowed: AtomicBool,
}

/// The webhook: `/hooks/{name}/notify` and `/hooks/{name}/lifecycle`.
pub struct GraphHook {
    client_state: String,
    key: Option<Arc<NotificationKey>>,
    tx: mpsc::Sender<HookEvent>,
    stats: Arc<HookStats>,
    feed: Arc<FeedEntry>,
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl HookHandler for GraphHook {
    fn handle(&self, req: HookRequest) -> HookResponse {
        let lifecycle = match req.tail.as_str() {
            "notify" => false,
            "lifecycle" => true,
            _ => return HookResponse::error(404, "not_found", "Graph webhooks are /notify and /lifecycle"),
        };
        // Validation handshake: echo the decoded token as text/plain (within 10 s).
        if let Some(token) = parse::validation_token(&req.query) {
            self.stats.validations.fetch_add(1, Ordering::Relaxed);
            return HookResponse::text(200, token);
        }
        if req.method != "POST" {
            return HookResponse::error(405, "method_not_allowed", "notifications are POSTed");
        }
        let batch = match parse::parse_notifications(&req.body) {
            Ok(b) => b,
            Err(e) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                self.feed.record_error(&format!("malformed notification: {e}"));
                return HookResponse::error(400, "bad_request", &e.to_string());
            }
        };
        if !batch.invalid.is_empty() {
            self.stats.malformed.fetch_add(batch.invalid.len() as u64, Ordering::Relaxed);
            let (i, e) = &batch.invalid[0];
            self.feed.record_error(&format!("{} malformed notification item(s), e.g. #{i}: {e}", batch.invalid.len()));
        }
        let (mut accepted, mut rejected) = (0usize, 0usize);
        let mut changed: HashMap<String, Vec<String>> = HashMap::new();
        for n in batch.value {
            if !n.client_state.as_deref().is_some_and(|c| same_secret(c, &self.client_state)) {
                rejected += 1;
                continue;
            }
            accepted += 1;
            if lifecycle || n.lifecycle_event.is_some() {
                let event = n.lifecycle_event.unwrap_or(LifecycleEvent::Other("unspecified".into()));
                if self.tx.try_send(HookEvent::Lifecycle { subscription: n.subscription_id, event }).is_err() {
                    self.stats.overflowed.store(true, Ordering::Release);
                }
            } else if let (Some(c), Some(key)) = (&n.encrypted, &self.key) {
                match key.decrypt(c).map_err(|e| e.to_string()).and_then(|d| parse::parse_presence(&d).map_err(|e| e.to_string())) {
                    Ok(p) => {
                        let ev = HookEvent::Presence { subscription: n.subscription_id, presence: Box::new(p) };
                        if self.tx.try_send(ev).is_err() {
                            self.stats.overflowed.store(true, Ordering::Release);
                        }
                    }
                    Err(e) => {
                        // Tampered or undecryptable: trust nothing in it, fetch the person instead.
                        self.stats.decryption_failures.fetch_add(1, Ordering::Relaxed);
                        self.feed.record_error(&format!("encrypted notification refused: {e}"));
                        if let Some(u) = n.user_id {
                            changed.entry(n.subscription_id).or_default().push(u);
                        }
                    }
                }
            } else if let Some(u) = n.user_id {
                changed.entry(n.subscription_id).or_default().push(u);
            }
        }
        self.stats.notifications.fetch_add(accepted as u64, Ordering::Relaxed);
        if rejected > 0 {
            self.stats.rejected_client_state.fetch_add(rejected as u64, Ordering::Relaxed);
            self.feed.record_error(&format!("{rejected} notification(s) with a wrong clientState refused"));
            warn!(provider = %self.feed.name, rejected, "Refused Graph notifications with a wrong clientState.");
        }
        for (subscription, users) in changed {
            if self.tx.try_send(HookEvent::Changed { subscription, users }).is_err() {
                self.stats.overflowed.store(true, Ordering::Release);
            }
        }
        if accepted == 0 && rejected > 0 {
            return HookResponse::error(403, "forbidden", "clientState does not match");
        }
        HookResponse::empty(202)
    }
}

/// A subscription slot: up to 650 people, held by one service account.
struct Sub {
    account: usize,
    users: Vec<String>,
    id: Option<String>,
    expires_at: i64,
    state: String,
    retry_at: Instant,
    backoff: Duration,
    token: Option<(String, Instant)>,
    notifications: u64,
    last_notification_at: Option<i64>,
}

impl Sub {
    fn active(&self) -> bool {
        self.id.is_some() && self.expires_at > now_ms()
    }
}

/// The running provider.
pub struct Runtime {
    ctx: ProviderContext,
    cfg: GraphPresenceConfig,
    client: Arc<GraphClient>,
    /// Entra id (lowercase) → person.
    people: HashMap<String, UserIdx>,
    ids: Vec<String>,
    subs: Vec<Sub>,
    uncovered: Vec<String>,
    client_state: String,
    key: Option<Arc<NotificationKey>>,
    stats: Arc<HookStats>,
    rx: mpsc::Receiver<HookEvent>,
    pending: HashSet<String>,
    unknown_logged: HashSet<String>,
    failures: u32,
    throttled: u64,
    polls: u64,
    last_poll_at: Option<i64>,
    next_consistency: Instant,
    next_fallback: Instant,
}

/// A random secret for `clientState` (128 bits from the OS's hasher seeds and the clock).
pub fn random_secret() -> String {
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

impl Runtime {
    /// Builds the task's state and registers the webhook.
    pub fn new(ctx: ProviderContext, cfg: GraphPresenceConfig, key: Option<NotificationKey>) -> Runtime {
        let key = key.map(Arc::new);
        let client = Arc::new(GraphClient::new(ctx.http.clone(), &cfg.graph_url, &cfg.token_endpoint(), &cfg.client_id, &cfg.client_secret));
        let mut people = HashMap::new();
        let mut ids = Vec::new();
        for (idx, p) in ctx.directory().people() {
            if let Some(e) = p.external_ids().find(|e| e.kind.eq_ignore_ascii_case("entra")) {
                let key = e.value.to_ascii_lowercase();
                if people.insert(key.clone(), idx).is_none() {
                    ids.push(key);
                }
            }
        }
        // The secret survives restarts, so a subscription adopted after a restart still matches.
        let client_state = cfg.client_state.clone().or_else(|| ctx.cursors.get(&ctx.name, "client_state").filter(|c| !c.is_empty())).unwrap_or_else(|| {
            let s = random_secret();
            ctx.cursors.set(&ctx.name, "client_state", &s);
            s
        });
        let (tx, rx) = mpsc::channel(4096);
        let stats = Arc::new(HookStats::default());
        ctx.hooks.register(&ctx.name, Arc::new(GraphHook { client_state: client_state.clone(), key: key.clone(), tx, stats: stats.clone(), feed: ctx.feed.clone() }));
        // Spread people over the service accounts, 650 per subscription; the rest are polled.
        let mut subs = Vec::new();
        let mut uncovered = Vec::new();
        if cfg.notifications {
            for (i, chunk) in ids.chunks(MAX_IDS_PER_SUBSCRIPTION).enumerate() {
                if i < cfg.service_accounts.len() {
                    subs.push(Sub {
                        account: i,
                        users: chunk.to_vec(),
                        id: None,
                        expires_at: 0,
                        state: "pending".into(),
                        retry_at: Instant::now(),
                        backoff: Duration::from_secs(5),
                        token: None,
                        notifications: 0,
                        last_notification_at: None,
                    });
                } else {
                    uncovered.extend_from_slice(chunk);
                }
            }
        } else {
            uncovered = ids.clone();
        }
        if !uncovered.is_empty() && cfg.notifications {
            warn!(
                provider = %ctx.name,
                uncovered = uncovered.len(),
                accounts_needed = ids.len().div_ceil(MAX_IDS_PER_SUBSCRIPTION),
                accounts = cfg.service_accounts.len(),
                "Not enough service accounts for change notifications (650 people each); the rest are polled."
            );
        }
        let now = Instant::now();
        Runtime {
            ctx,
            client,
            people,
            ids,
            subs,
            uncovered,
            client_state,
            key,
            stats,
            rx,
            pending: HashSet::new(),
            unknown_logged: HashSet::new(),
            failures: 0,
            throttled: 0,
            polls: 0,
            last_poll_at: None,
            next_consistency: now + Duration::from_secs(cfg.consistency_poll_secs),
            next_fallback: now + Duration::from_secs(cfg.fallback_poll_secs),
            cfg,
        }
    }

    /// Runs until shutdown.
    pub async fn run(mut self) {
        let mut shutdown = self.ctx.shutdown.clone();
        info!(provider = %self.ctx.name, people = self.ids.len(), subscriptions = self.subs.len(), polled = self.uncovered.len(), "Graph presence provider starting.");
        self.ctx.feed.set_state("connecting");
        // Start-up snapshot.
        let all = self.ids.clone();
        self.poll(&all).await;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush_at: Option<tokio::time::Instant> = None;
        loop {
            let flush = async {
                match flush_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.recv() => break,
                ev = self.rx.recv() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => break,
                },
                _ = flush => {
                    flush_at = None;
                    let ids: Vec<String> = self.pending.drain().collect();
                    self.poll(&ids).await;
                }
                _ = tick.tick() => self.housekeeping().await,
            }
            if !self.pending.is_empty() && flush_at.is_none() {
                // Gather what arrives together into one getPresencesByUserId.
                flush_at = Some(tokio::time::Instant::now() + Duration::from_millis(self.cfg.batch_ms));
            }
        }
        self.stop().await;
    }

    async fn on_event(&mut self, ev: HookEvent) {
        match ev {
            HookEvent::Changed { subscription, users } => {
                let now = now_ms();
                if let Some(s) = self.subs.iter_mut().find(|s| s.id.as_deref() == Some(subscription.as_str())) {
                    s.notifications += users.len() as u64;
                    s.last_notification_at = Some(now);
                }
                for u in users {
                    let key = u.to_ascii_lowercase();
                    if self.people.contains_key(&key) {
                        self.pending.insert(key);
                    }
                }
            }
            HookEvent::Presence { subscription, presence } => {
                if let Some(s) = self.subs.iter_mut().find(|s| s.id.as_deref() == Some(subscription.as_str())) {
                    s.notifications += 1;
                    s.last_notification_at = Some(now_ms());
                }
                self.deliver(&presence, now_ms());
            }
            HookEvent::Lifecycle { subscription, event } => {
                let Some(i) = self.subs.iter().position(|s| s.id.as_deref() == Some(subscription.as_str())) else {
                    debug!(provider = %self.ctx.name, %subscription, "Lifecycle event for a subscription we no longer hold.");
                    return;
                };
                info!(provider = %self.ctx.name, %subscription, ?event, "Graph lifecycle event.");
                match event {
                    LifecycleEvent::ReauthorizationRequired => {
                        if let Err(e) = self.reauthorize(i).await {
                            warn!(provider = %self.ctx.name, %subscription, error = %e, "Reauthorizing failed; renewing instead.");
                            if self.renew(i).await.is_err() {
                                self.recreate_later(i, "reauthorization failed");
                            }
                        }
                    }
                    _ => self.recreate_later(i, "removed or missed"),
                }
                // Anything may have been lost meanwhile: resync these people.
                let users = self.subs[i].users.clone();
                self.pending.extend(users);
            }
        }
    }

    fn recreate_later(&mut self, i: usize, why: &str) {
        let s = &mut self.subs[i];
        s.id = None;
        s.expires_at = 0;
        s.state = format!("lapsed: {why}");
        s.retry_at = Instant::now();
    }

    async fn housekeeping(&mut self) {
        let now = Instant::now();
        if self.stats.overflowed.swap(false, Ordering::AcqRel) {
            warn!(provider = %self.ctx.name, "Notification queue overflowed; resyncing everyone.");
            self.pending.extend(self.ids.iter().cloned());
        }
        // Subscriptions: create, renew before expiry.
        for i in 0..self.subs.len() {
            let s = &self.subs[i];
            let renew_due = s.id.is_some() && s.expires_at - now_ms() < self.cfg.renew_before_secs as i64 * 1000;
            if s.id.is_none() && s.retry_at <= now {
                self.create(i).await;
            } else if renew_due {
                if let Err(e) = self.renew(i).await {
                    warn!(provider = %self.ctx.name, error = %e, "Renewing a Graph subscription failed.");
                    if self.subs[i].expires_at <= now_ms() || e.status() == Some(404) {
                        self.recreate_later(i, &e.to_string());
                    }
                }
            }
        }
        // Fallback polling for people no active subscription covers.
        if now >= self.next_fallback {
            self.next_fallback = now + Duration::from_secs(self.cfg.fallback_poll_secs);
            let mut ids = self.uncovered.clone();
            for s in self.subs.iter().filter(|s| !s.active()) {
                ids.extend(s.users.iter().cloned());
            }
            if !ids.is_empty() {
                self.poll(&ids).await;
            }
        }
        // Consistency check: everyone, now and then (notifications can be dropped).
        if now >= self.next_consistency {
            self.next_consistency = now + Duration::from_secs(self.cfg.consistency_poll_secs);
            let all = self.ids.clone();
            self.poll(&all).await;
        }
        self.report();
    }

    async fn account_token(&mut self, i: usize) -> Result<String, CallError> {
        let s = &self.subs[i];
        if let Some((t, until)) = &s.token {
            if *until > Instant::now() {
                return Ok(t.clone());
            }
        }
        let acc = &self.cfg.service_accounts[s.account];
        let (token, life) = self.client.delegated_token(&acc.name, &acc.refresh_token, self.ctx.cursors.as_ref(), &self.ctx.name).await?;
        let until = Instant::now() + life.saturating_sub(Duration::from_secs(60));
        self.subs[i].token = Some((token.clone(), until));
        Ok(token)
    }

    fn sub_cursor(&self, i: usize) -> String {
        format!("subscription:{}", self.cfg.service_accounts[self.subs[i].account].name)
    }

    /// After a restart: Graph allows one presence subscription per account and app, so take
    /// over the one this hub created before (same notification URL), renewing it. If it is gone
    /// or points elsewhere, delete what can be deleted and start afresh.
    async fn adopt(&mut self, i: usize) -> bool {
        let key = self.sub_cursor(i);
        let Some(stored) = self.ctx.cursors.get(&self.ctx.name, &key).filter(|v| !v.is_empty()) else { return false };
        let (id, url) = stored.split_once('\n').unwrap_or((stored.as_str(), ""));
        let (id, url) = (id.to_string(), url.to_string());
        self.ctx.cursors.set(&self.ctx.name, &key, "");
        if url != self.ctx.hook_url("notify") {
            if let Ok(token) = self.account_token(i).await {
                let path = format!("/subscriptions/{id}");
                let _ = self.client.call(reqwest::Method::DELETE, &path, &token, None, false).await;
            }
            return false;
        }
        self.subs[i].id = Some(id.clone());
        match self.renew(i).await {
            Ok(()) => {
                info!(provider = %self.ctx.name, subscription = %id, "Took over the Graph subscription from before the restart.");
                self.ctx.cursors.set(&self.ctx.name, &key, &stored);
                let users = self.subs[i].users.clone();
                self.pending.extend(users);
                true
            }
            Err(_) => {
                self.subs[i].id = None;
                false
            }
        }
    }

    async fn create(&mut self, i: usize) {
        if self.adopt(i).await {
            return;
        }
        let res = async {
            let token = self.account_token(i).await?;
            let users: Vec<&str> = self.subs[i].users.iter().map(String::as_str).collect();
            let resource = parse::presence_filter_resource(&users)?;
            let expires = now_ms() + self.cfg.subscription_minutes as i64 * 60_000;
            let cert = self.key.as_ref().map(|k| (k.certificate_base64(), k.id().to_string()));
            let body = parse::subscription_request_body(
                &resource,
                &self.ctx.hook_url("notify"),
                Some(&self.ctx.hook_url("lifecycle")),
                expires,
                &self.client_state,
                cert.is_some(),
                cert.as_ref().map(|(c, id)| (c.as_str(), id.as_str())),
            )?;
            let bytes = self.client.call(reqwest::Method::POST, "/subscriptions", &token, Some(body), false).await?;
            Ok::<_, CallError>(parse::parse_subscription(&bytes)?)
        }
        .await;
        let name = self.ctx.name.clone();
        let s = &mut self.subs[i];
        match res {
            Ok(sub) => {
                info!(provider = %name, subscription = %sub.id, people = s.users.len(), account = s.account, "Graph subscription created.");
                s.expires_at = sub.expires_at.unwrap_or_else(|| now_ms() + 55 * 60_000);
                let remember = format!("{}\n{}", sub.id, self.ctx.hook_url("notify"));
                s.id = Some(sub.id);
                s.state = "active".into();
                s.backoff = Duration::from_secs(5);
                // Changes between the last poll and the subscription's start: resync.
                let users = s.users.clone();
                self.pending.extend(users);
                let key = self.sub_cursor(i);
                self.ctx.cursors.set(&self.ctx.name, &key, &remember);
            }
            Err(e) => {
                warn!(provider = %name, account = s.account, error = %e, retry_in = ?s.backoff, "Creating a Graph subscription failed; its people are polled meanwhile.");
                s.state = format!("failed: {e}");
                s.retry_at = Instant::now() + s.backoff;
                s.backoff = (s.backoff * 2).min(Duration::from_secs(600));
                s.token = None;
                self.ctx.feed.record_error(&format!("subscription: {e}"));
            }
        }
    }

    async fn renew(&mut self, i: usize) -> Result<(), CallError> {
        let token = self.account_token(i).await?;
        let id = self.subs[i].id.clone().unwrap_or_default();
        let expires = now_ms() + self.cfg.subscription_minutes as i64 * 60_000;
        let bytes = self.client.call(reqwest::Method::PATCH, &format!("/subscriptions/{id}"), &token, Some(parse::renewal_body(expires)), false).await?;
        let sub = parse::parse_subscription(&bytes)?;
        self.subs[i].expires_at = sub.expires_at.unwrap_or(expires);
        self.subs[i].state = "active".into();
        debug!(provider = %self.ctx.name, subscription = %id, expires = %rfc3339(self.subs[i].expires_at), "Graph subscription renewed.");
        Ok(())
    }

    async fn reauthorize(&mut self, i: usize) -> Result<(), CallError> {
        self.subs[i].token = None;
        let token = self.account_token(i).await?;
        let id = self.subs[i].id.clone().unwrap_or_default();
        self.client.call(reqwest::Method::POST, &format!("/subscriptions/{id}/reauthorize"), &token, Some(String::new()), false).await?;
        Ok(())
    }

    /// Reads presence for `ids` in batches of 650 and delivers it.
    async fn poll(&mut self, ids: &[String]) {
        for chunk in ids.chunks(MAX_IDS_PER_REQUEST) {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.fetch(chunk).await {
                    Ok(()) => {
                        self.failures = 0;
                        if self.ctx.feed.set_up(true) {
                            info!(provider = %self.ctx.name, "Graph presence feed is up.");
                        }
                        self.ctx.feed.set_state("up");
                        break;
                    }
                    Err(CallError::Throttled(after)) => {
                        self.throttled += 1;
                        self.ctx.feed.set_state("throttled");
                        warn!(provider = %self.ctx.name, retry_after = ?after, "Graph throttled presence reads (429).");
                        if attempt >= 3 {
                            self.pending.extend(chunk.iter().cloned());
                            break;
                        }
                    }
                    Err(e) => {
                        if e.status() == Some(401) {
                            self.client.drop_app_token().await;
                        }
                        self.failures += 1;
                        self.ctx.feed.record_error(&e.to_string());
                        warn!(provider = %self.ctx.name, error = %e, failures = self.failures, "Polling Graph presence failed.");
                        if self.failures >= 3 && self.ctx.feed.set_up(false) {
                            warn!(provider = %self.ctx.name, "Graph presence feed is down; its signals show stale.");
                            self.ctx.feed.set_state("down");
                        }
                        if attempt >= 2 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
        self.polls += 1;
        self.last_poll_at = Some(now_ms());
    }

    async fn fetch(&mut self, chunk: &[String]) -> Result<(), CallError> {
        let token = self.client.app_token().await?;
        let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let body = parse::presences_request_body(&ids)?;
        let bytes = self.client.call(reqwest::Method::POST, "/communications/getPresencesByUserId", &token, Some(body), true).await?;
        let items = parse::parse_presences(&bytes)?;
        let now = now_ms();
        for item in items {
            let p = match item {
                Ok(p) => p,
                Err(e) => {
                    self.ctx.feed.record_error(&format!("presence item: {e}"));
                    continue;
                }
            };
            self.deliver(&p, now);
        }
        Ok(())
    }

    fn deliver(&mut self, p: &parse::GraphPresence, now: i64) {
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
        let subs: Vec<_> = self
            .subs
            .iter()
            .map(|s| {
                serde_json::json!({
                    "account": self.cfg.service_accounts.get(s.account).map(|a| a.name.as_str()),
                    "people": s.users.len(),
                    "id": s.id,
                    "expires_at": (s.expires_at > 0).then(|| rfc3339(s.expires_at)),
                    "state": s.state,
                    "notifications": s.notifications,
                    "last_notification_at": s.last_notification_at.map(rfc3339),
                })
            })
            .collect();
        self.ctx.feed.set_details(serde_json::json!({
            "people": self.ids.len(),
            "subscriptions": subs,
            "polled_people": self.uncovered.len() + self.subs.iter().filter(|s| !s.active()).map(|s| s.users.len()).sum::<usize>(),
            "notifications": self.stats.notifications.load(Ordering::Relaxed),
            "rejected_client_state": self.stats.rejected_client_state.load(Ordering::Relaxed),
            "malformed_notifications": self.stats.malformed.load(Ordering::Relaxed),
            "validations": self.stats.validations.load(Ordering::Relaxed),
            "resource_data": self.key.is_some(),
            "decryption_failures": self.stats.decryption_failures.load(Ordering::Relaxed),
            "polls": self.polls,
            "last_poll_at": self.last_poll_at.map(rfc3339),
            "throttled_responses": self.throttled,
            "throttled_until": self.client.budget.throttled_until_ms().map(rfc3339),
            "requests_in_window": self.client.budget.in_window(),
            "request_budget": format!("{} per {} s", super::client::BUDGET_REQUESTS, super::client::BUDGET_WINDOW.as_secs()),
        }));
    }

    async fn stop(&mut self) {
        self.ctx.hooks.unregister(&self.ctx.name);
        // Delete our subscriptions so Graph stops calling (best effort, short).
        for i in 0..self.subs.len() {
            let Some(id) = self.subs[i].id.clone() else { continue };
            if let Ok(token) = self.account_token(i).await {
                let path = format!("/subscriptions/{id}");
                let del = self.client.call(reqwest::Method::DELETE, &path, &token, None, false);
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), del).await {
                    let key = self.sub_cursor(i);
                    self.ctx.cursors.set(&self.ctx.name, &key, "");
                }
            }
        }
        info!(provider = %self.ctx.name, "Graph presence provider stopped.");
    }
}
