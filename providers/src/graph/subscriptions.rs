//! The Graph presence provider's change-notification subscriptions, in a task of their own.
//!
//! Graph allows presence subscriptions only with delegated permission, one per account and
//! app, for at most 650 people and 60 minutes. This task holds one subscription per service
//! account: it creates them (taking over the one from before a restart when it still points at
//! this hub), renews them before they expire, answers lifecycle events (reauthorize; recreate
//! after `subscriptionRemoved` or `missed`) and deletes them when the provider stops.
//!
//! The people per account follow the live directory ([`SubsCommand::Users`]): Graph cannot
//! change the resource of a subscription, so one whose people changed is deleted and created
//! anew (its people are polled in between).
//!
//! It runs beside the reads ([`super::runtime`]) rather than inside them so a slow or hanging
//! subscription call never holds up a presence read or a notification; every call has its own
//! deadline (`call_timeout_secs`) and failures back off with jitter. Whenever people may have
//! changed unseen (a new or recreated subscription, a lifecycle event) it asks the reads task
//! to re-read them ([`SubsEvent::Resync`]), and it publishes what it holds ([`SubView`]) for
//! fallback polling and health.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::client::GraphClient;
use super::crypto::NotificationKey;
use super::parse::{self, LifecycleEvent};
use super::GraphPresenceConfig;
use crate::common::backoff::Backoff;
use crate::common::http::{CallError, Limits};
use presence_actors::model::{now_ms, rfc3339};
use presence_actors::provider::ProviderContext;

/// Subscription answers are small.
const MAX_ANSWER: usize = 256 * 1024;
/// How long stopping may spend deleting one subscription.
const DELETE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the reads task tells this task.
#[derive(Debug)]
pub enum SubsCommand {
    /// A lifecycle notification for one of our subscriptions.
    Lifecycle {
        /// Subscription id.
        subscription: String,
        /// What happened.
        event: LifecycleEvent,
    },
    /// The people per service account now (the directory changed): index `i` is account `i`'s
    /// list, empty when it covers nobody. A subscription whose list changed is deleted and
    /// created anew (Graph cannot change a subscription's resource, and allows one presence
    /// subscription per account and app).
    Users(Vec<Vec<String>>),
}

/// What this task tells the reads task.
#[derive(Debug)]
pub enum SubsEvent {
    /// These people may have changed unseen: read them again.
    Resync(Vec<String>),
}

/// One subscription as published for fallback polling and health.
#[derive(Debug, Clone)]
pub struct SubView {
    /// The service account's name.
    pub account: String,
    /// The people it covers (Entra ids, lowercase).
    pub users: Arc<Vec<String>>,
    /// Graph's id, while held.
    pub id: Option<String>,
    /// Expiry (ms since the epoch), 0 when none.
    pub expires_at: i64,
    /// "active", "pending", "failed: …", "lapsed: …".
    pub state: String,
}

impl SubView {
    /// True while it exists and has not expired.
    pub fn active(&self) -> bool {
        self.id.is_some() && self.expires_at > now_ms()
    }
}

/// The published subscriptions.
pub type SharedSubs = Arc<Mutex<Vec<SubView>>>;

struct Sub {
    account: usize,
    users: Arc<Vec<String>>,
    id: Option<String>,
    expires_at: i64,
    state: String,
    retry_at: Instant,
    backoff: Backoff,
    token: Option<(String, Instant)>,
}

impl Sub {
    fn new(account: usize, users: Vec<String>) -> Sub {
        Sub {
            account,
            state: if users.is_empty() { "unused".into() } else { "pending".into() },
            users: Arc::new(users),
            id: None,
            expires_at: 0,
            retry_at: Instant::now(),
            backoff: Backoff::new(Duration::from_secs(5), Duration::from_secs(600)),
            token: None,
        }
    }
}

/// The subscriptions task.
pub struct Subscriptions {
    ctx: ProviderContext,
    cfg: GraphPresenceConfig,
    client: Arc<GraphClient>,
    subs: Vec<Sub>,
    client_state: String,
    key: Option<Arc<NotificationKey>>,
    shared: SharedSubs,
    commands: mpsc::Receiver<SubsCommand>,
    events: mpsc::Sender<SubsEvent>,
    limits: Limits,
}

impl Subscriptions {
    /// One subscription per chunk of `users` (one chunk per service account).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: ProviderContext,
        cfg: GraphPresenceConfig,
        client: Arc<GraphClient>,
        chunks: Vec<Vec<String>>,
        client_state: String,
        key: Option<Arc<NotificationKey>>,
        commands: mpsc::Receiver<SubsCommand>,
        events: mpsc::Sender<SubsEvent>,
    ) -> (Subscriptions, SharedSubs) {
        let subs: Vec<Sub> = chunks.into_iter().enumerate().map(|(account, users)| Sub::new(account, users)).collect();
        let shared: SharedSubs = Arc::new(Mutex::new(Vec::new()));
        let limits = Limits::new(MAX_ANSWER, Duration::from_secs(cfg.call_timeout_secs));
        let s = Subscriptions { ctx, cfg, client, subs, client_state, key, shared: shared.clone(), commands, events, limits };
        s.publish();
        (s, shared)
    }

    /// Runs until shutdown, then deletes the subscriptions.
    pub async fn run(mut self) {
        let mut shutdown = self.ctx.shutdown.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.recv() => break,
                cmd = self.commands.recv() => match cmd {
                    Some(SubsCommand::Lifecycle { subscription, event }) => self.lifecycle(subscription, event).await,
                    Some(SubsCommand::Users(chunks)) => self.reassign(chunks).await,
                    None => break,
                },
                _ = tick.tick() => self.housekeeping().await,
            }
            self.publish();
        }
        self.stop().await;
        self.publish();
    }

    fn publish(&self) {
        let views = self
            .subs
            .iter()
            .map(|s| SubView {
                account: self.cfg.service_accounts.get(s.account).map(|a| a.name.clone()).unwrap_or_default(),
                users: s.users.clone(),
                id: s.id.clone(),
                expires_at: s.expires_at,
                state: s.state.clone(),
            })
            .collect();
        *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = views;
    }

    fn resync(&self, i: usize) {
        // The reads task drains this channel continuously; when it is full a resync is
        // already queued for everyone (see `Runtime::on_subs_event`).
        let _ = self.events.try_send(SubsEvent::Resync(self.subs[i].users.to_vec()));
    }

    async fn lifecycle(&mut self, subscription: String, event: LifecycleEvent) {
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
        // Anything may have been lost meanwhile: read these people again.
        self.resync(i);
    }

    /// Follows the directory: each account's subscription covers `chunks[account]` from now
    /// on. One whose people changed is deleted (best effort, so the account may hold the new
    /// one) and created anew at the next tick; its people are polled meanwhile (fallback).
    async fn reassign(&mut self, chunks: Vec<Vec<String>>) {
        for (i, users) in chunks.into_iter().enumerate() {
            if i >= self.subs.len() {
                if i < self.cfg.service_accounts.len() {
                    self.subs.push(Sub::new(i, users));
                }
                continue;
            }
            if *self.subs[i].users == users {
                continue;
            }
            info!(provider = %self.ctx.name, account = i, before = self.subs[i].users.len(), after = users.len(), "The directory changed; the account's subscription is made anew.");
            self.delete(i, self.limits.timeout).await;
            // Never taken over again: it names the old people.
            let key = self.sub_cursor(i);
            self.ctx.cursors.set(&self.ctx.name, &key, "");
            let s = &mut self.subs[i];
            s.state = if users.is_empty() { "unused".into() } else { "pending".into() };
            s.users = Arc::new(users);
            s.id = None;
            s.expires_at = 0;
            s.retry_at = Instant::now();
            s.backoff.reset();
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
        for i in 0..self.subs.len() {
            let s = &self.subs[i];
            if s.retry_at > now || s.users.is_empty() {
                continue;
            }
            let renew_due = s.id.is_some() && s.expires_at - now_ms() < self.cfg.renew_before_secs as i64 * 1000;
            if s.id.is_none() {
                self.create(i).await;
            } else if renew_due {
                match self.renew(i).await {
                    Ok(()) => self.subs[i].backoff.reset(),
                    Err(e) => {
                        warn!(provider = %self.ctx.name, error = %e, "Renewing a Graph subscription failed.");
                        self.ctx.feed.record_error(&format!("subscription renewal: {e}"));
                        if self.subs[i].expires_at <= now_ms() || e.status() == Some(404) {
                            self.recreate_later(i, &e.to_string());
                        } else {
                            let s = &mut self.subs[i];
                            s.retry_at = Instant::now() + s.backoff.next_delay();
                        }
                    }
                }
            }
        }
    }

    async fn account_token(&mut self, i: usize) -> Result<String, CallError> {
        let s = &self.subs[i];
        if let Some((t, until)) = &s.token {
            if *until > Instant::now() {
                return Ok(t.clone());
            }
        }
        let acc = &self.cfg.service_accounts[s.account];
        let (token, life) = self.client.delegated_token(&acc.name, acc.configured_refresh_token(), self.ctx.cursors.as_ref(), &self.ctx.name).await?;
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
                let _ = self.client.call(reqwest::Method::DELETE, &path, &token, None, false, self.limits).await;
            }
            return false;
        }
        self.subs[i].id = Some(id.clone());
        match self.renew(i).await {
            Ok(()) => {
                info!(provider = %self.ctx.name, subscription = %id, "Took over the Graph subscription from before the restart.");
                self.ctx.cursors.set(&self.ctx.name, &key, &stored);
                self.resync(i);
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
            let bytes = self.client.call(reqwest::Method::POST, "/subscriptions", &token, Some(body), false, self.limits).await?;
            Ok::<_, CallError>(parse::parse_subscription(&bytes)?)
        }
        .await;
        let name = self.ctx.name.clone();
        match res {
            Ok(sub) => {
                let s = &mut self.subs[i];
                info!(provider = %name, subscription = %sub.id, people = s.users.len(), account = s.account, "Graph subscription created.");
                s.expires_at = sub.expires_at.unwrap_or_else(|| now_ms() + 55 * 60_000);
                let remember = format!("{}\n{}", sub.id, self.ctx.hook_url("notify"));
                s.id = Some(sub.id);
                s.state = "active".into();
                s.backoff.reset();
                // Changes between the last read and the subscription's start: read again.
                self.resync(i);
                let key = self.sub_cursor(i);
                self.ctx.cursors.set(&self.ctx.name, &key, &remember);
            }
            Err(e) => {
                let s = &mut self.subs[i];
                let wait = s.backoff.next_delay();
                warn!(provider = %name, account = s.account, error = %e, retry_in = ?wait, "Creating a Graph subscription failed; its people are polled meanwhile.");
                s.state = format!("failed: {e}");
                s.retry_at = Instant::now() + wait;
                s.token = None;
                self.ctx.feed.record_error(&format!("subscription: {e}"));
            }
        }
    }

    async fn renew(&mut self, i: usize) -> Result<(), CallError> {
        let token = self.account_token(i).await?;
        let id = self.subs[i].id.clone().unwrap_or_default();
        let expires = now_ms() + self.cfg.subscription_minutes as i64 * 60_000;
        let path = format!("/subscriptions/{id}");
        let bytes = self.client.call(reqwest::Method::PATCH, &path, &token, Some(parse::renewal_body(expires)), false, self.limits).await?;
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
        let path = format!("/subscriptions/{id}/reauthorize");
        self.client.call(reqwest::Method::POST, &path, &token, Some(String::new()), false, self.limits).await?;
        Ok(())
    }

    /// Deletes our subscriptions so Graph stops calling (each within [`DELETE_TIMEOUT`]).
    async fn stop(&mut self) {
        for i in 0..self.subs.len() {
            if self.delete(i, DELETE_TIMEOUT).await {
                self.subs[i].state = "deleted".into();
            }
        }
    }

    /// Deletes subscription `i`, if held, within `timeout` (token and call each), and forgets
    /// it; true when it was deleted. A failure is logged: it expires by itself.
    async fn delete(&mut self, i: usize, timeout: Duration) -> bool {
        let Some(id) = self.subs[i].id.clone() else { return false };
        let token = match tokio::time::timeout(timeout, self.account_token(i)).await {
            Ok(Ok(t)) => t,
            _ => return false,
        };
        let path = format!("/subscriptions/{id}");
        match self.client.call(reqwest::Method::DELETE, &path, &token, None, false, Limits::new(MAX_ANSWER, timeout)).await {
            Ok(_) => {
                info!(provider = %self.ctx.name, subscription = %id, "Graph subscription deleted.");
                self.subs[i].id = None;
                let key = self.sub_cursor(i);
                self.ctx.cursors.set(&self.ctx.name, &key, "");
                true
            }
            Err(e) => {
                warn!(provider = %self.ctx.name, subscription = %id, error = %e, "Deleting a Graph subscription failed; it expires by itself.");
                false
            }
        }
    }
}
