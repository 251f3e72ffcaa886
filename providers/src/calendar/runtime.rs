//! The calendar provider's task (`type = "calendar"`): polls free/busy for everyone with a
//! mailbox through one backend — Graph `getSchedule`, Exchange EWS `GetUserAvailability` or
//! Google `freeBusy` — and keeps each person's calendar signal right between polls.
//!
//! - Mailboxes go in batches of the backend's limit (100, 100, 50). The first round runs at
//!   start; after that, batch *i* of *n* is due at `i/n` of the way through each interval, so
//!   the load is spread evenly rather than in a burst.
//! - Each mailbox's schedule is kept, and the task wakes at its next start or end
//!   ([`next_change`]) to send the signal that holds from then: a meeting becomes Busy /
//!   InAMeeting exactly while it runs, whatever the poll interval.
//! - `429` + `Retry-After` (Graph, Google) and EWS `ErrorServerBusy` + `BackOffMilliseconds`
//!   hold every request back for as long as asked. Repeated failures mark the feed down, so
//!   its signals show stale, never Offline.
//! - EWS blocked or retired (Exchange Online, from October 2026) stops polling and says in
//!   provider health that the Graph calendar provider should be used instead.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use serde::Deserialize;
use tracing::{info, warn};

use super::ews::{self, EwsError};
use super::model::{next_change, to_signals, CalendarError, KeywordRule, MailboxSchedule, SignalPolicy};
use super::{google, schedule};
use crate::graph::parse as oauth;
use crate::BuildError;
use presence_actors::directory::UserIdx;
use presence_actors::model::{now_ms, rfc3339, UnixMs};
use presence_actors::provider::ProviderContext;

/// Which protocol the provider speaks.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Microsoft Graph `calendar/getSchedule` (app permission Calendars.Read).
    Graph,
    /// Exchange Web Services `GetUserAvailability` (on-premises Exchange; retired in Exchange Online).
    Ews,
    /// Google Calendar `freeBusy`.
    Google,
}

/// `type = "calendar"` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarConfig {
    /// Provider name.
    pub name: String,
    /// `graph`, `ews` or `google`.
    pub backend: Backend,
    /// Entra tenant (Graph, and EWS with OAuth).
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// OAuth client id (Graph, EWS with OAuth, Google).
    #[serde(default)]
    pub client_id: Option<String>,
    /// OAuth client secret.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Identity provider base URL (Entra): token at `{authority}/{tenant_id}/oauth2/v2.0/token`.
    #[serde(default = "default_authority")]
    pub authority: String,
    /// Full token URL, overriding the default of the backend.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Graph base URL.
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// EWS endpoint, e.g. `https://mail.example.com/EWS/Exchange.asmx`.
    #[serde(default)]
    pub ews_url: Option<String>,
    /// EWS Basic user (on-premises); without it, EWS uses an OAuth app token.
    #[serde(default)]
    pub username: Option<String>,
    /// EWS Basic password.
    #[serde(default)]
    pub password: Option<String>,
    /// Google Calendar API base URL.
    #[serde(default = "default_google_url")]
    pub google_url: String,
    /// Google OAuth refresh token (an account with calendar.freebusy for the mailboxes).
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Poll every mailbox this often (seconds).
    #[serde(default = "default_poll")]
    pub poll_interval_secs: u64,
    /// How far ahead to read (hours).
    #[serde(default = "default_window")]
    pub window_hours: u64,
    /// Merged free/busy slot length (EWS, Graph), minutes.
    #[serde(default = "default_interval")]
    pub interval_minutes: u32,
    /// Keep meeting subjects and locations (shown only where `[policy] calendar_details`
    /// allows; never for private items).
    #[serde(default)]
    pub keep_details: bool,
    /// Subject-prefix rules, e.g. `{ prefix = "Lunch", availability = "Away", activity = "Lunch" }`.
    #[serde(default)]
    pub keywords: Vec<KeywordRule>,
}

fn default_authority() -> String {
    "https://login.microsoftonline.com".into()
}
fn default_graph_url() -> String {
    "https://graph.microsoft.com/v1.0".into()
}
fn default_google_url() -> String {
    "https://www.googleapis.com/calendar/v3".into()
}
fn default_poll() -> u64 {
    300
}
fn default_window() -> u64 {
    24
}
fn default_interval() -> u32 {
    15
}

impl CalendarConfig {
    /// Checks the settings for the chosen backend.
    pub fn validate(&self) -> Result<(), BuildError> {
        let bad = |m: String| Err(BuildError::Invalid(format!("provider {}: {m}", self.name)));
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        match self.backend {
            Backend::Graph => {
                if !(set(&self.tenant_id) || set(&self.token_url)) || !set(&self.client_id) || !set(&self.client_secret) {
                    return bad("the graph backend needs tenant_id (or token_url), client_id and client_secret".into());
                }
            }
            Backend::Ews => {
                if !set(&self.ews_url) {
                    return bad("the ews backend needs ews_url".into());
                }
                let basic = set(&self.username) && set(&self.password);
                let oauth = (set(&self.tenant_id) || set(&self.token_url)) && set(&self.client_id) && set(&self.client_secret);
                if !basic && !oauth {
                    return bad("the ews backend needs username and password, or tenant_id, client_id and client_secret".into());
                }
            }
            Backend::Google => {
                if !set(&self.client_id) || !set(&self.client_secret) || !set(&self.refresh_token) {
                    return bad("the google backend needs client_id, client_secret and refresh_token".into());
                }
            }
        }
        if !(30..=86_400).contains(&self.poll_interval_secs) {
            return bad("poll_interval_secs must be 30-86400".into());
        }
        let max_hours = match self.backend {
            Backend::Ews => ews::MAX_WINDOW_DAYS * 24,
            Backend::Graph => schedule::MAX_WINDOW_DAYS * 24,
            Backend::Google => 62 * 24,
        };
        if self.window_hours == 0 || self.window_hours as i64 > max_hours {
            return bad(format!("window_hours must be 1-{max_hours} for this backend"));
        }
        if !(5..=1440).contains(&self.interval_minutes) {
            return bad("interval_minutes must be 5-1440".into());
        }
        if self.keywords.len() > 100 {
            return bad("at most 100 keywords".into());
        }
        Ok(())
    }

    fn batch_size(&self) -> usize {
        match self.backend {
            Backend::Graph => schedule::MAX_SCHEDULES,
            Backend::Ews => ews::MAX_MAILBOXES,
            Backend::Google => google::MAX_ITEMS,
        }
    }

    fn token_endpoint(&self) -> String {
        if let Some(u) = &self.token_url {
            return u.clone();
        }
        match self.backend {
            Backend::Google => "https://oauth2.googleapis.com/token".into(),
            _ => format!("{}/{}/oauth2/v2.0/token", self.authority.trim_end_matches('/'), self.tenant_id.as_deref().unwrap_or_default()),
        }
    }

    fn scope(&self) -> &'static str {
        match self.backend {
            Backend::Graph => "https://graph.microsoft.com/.default",
            Backend::Ews => "https://outlook.office365.com/.default",
            Backend::Google => "https://www.googleapis.com/auth/calendar.freebusy",
        }
    }
}

/// Why one batch failed.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("throttled; retry after {0:?}")]
    Throttled(Duration),
    #[error("{0}")]
    Retired(String),
    #[error("{0}")]
    Failed(String),
}

impl From<CalendarError> for PollError {
    fn from(e: CalendarError) -> Self {
        match e {
            CalendarError::Ews(EwsError::Throttled { back_off_ms }) => PollError::Throttled(Duration::from_millis(back_off_ms.unwrap_or(30_000))),
            CalendarError::Ews(r @ EwsError::Retired { .. }) => PollError::Retired(r.to_string()),
            other => PollError::Failed(other.to_string()),
        }
    }
}

/// The running provider.
pub struct Runtime {
    ctx: ProviderContext,
    cfg: CalendarConfig,
    policy: SignalPolicy,
    /// (mailbox as sent, person), in batches.
    batches: Vec<Vec<(String, UserIdx)>>,
    schedules: HashMap<UserIdx, MailboxSchedule>,
    wakeups: BinaryHeap<Reverse<(UnixMs, UserIdx)>>,
    token: Option<(String, UnixMs)>,
    hold_until: UnixMs,
    failures: u32,
    throttled: u64,
    polls: u64,
    mailbox_errors: u64,
    retired: Option<String>,
    last_poll_at: Option<UnixMs>,
}

impl Runtime {
    /// Builds the task's state: everyone in the directory with an e-mail address.
    pub fn new(ctx: ProviderContext, cfg: CalendarConfig) -> Runtime {
        let mut mailboxes = Vec::new();
        for (idx, p) in ctx.directory().people() {
            if let Some(e) = p.email().filter(|e| e.contains('@')) {
                mailboxes.push((e.to_string(), idx));
            }
        }
        let batches = mailboxes.chunks(cfg.batch_size()).map(<[_]>::to_vec).collect();
        let policy = SignalPolicy { keep_details: cfg.keep_details, keywords: cfg.keywords.clone() };
        Runtime {
            ctx,
            policy,
            batches,
            schedules: HashMap::new(),
            wakeups: BinaryHeap::new(),
            token: None,
            hold_until: 0,
            failures: 0,
            throttled: 0,
            polls: 0,
            mailbox_errors: 0,
            retired: None,
            last_poll_at: None,
            cfg,
        }
    }

    /// Runs until shutdown.
    pub async fn run(mut self) {
        let mut shutdown = self.ctx.shutdown.clone();
        let n = self.batches.len();
        info!(provider = %self.ctx.name, backend = ?self.cfg.backend, mailboxes = self.batches.iter().map(Vec::len).sum::<usize>(), batches = n, "Calendar provider starting.");
        self.ctx.feed.set_state("connecting");
        let interval = self.cfg.poll_interval_secs as i64 * 1000;
        let t0 = now_ms();
        // Round 0 at once; then batch i at t0 + k·interval + i·interval/n.
        let mut due: Vec<UnixMs> = (0..n).map(|_| t0).collect();
        loop {
            if self.retired.is_some() {
                // Nothing more to ask; keep the state (and health) until shutdown.
                self.report(&due);
                shutdown.recv().await;
                break;
            }
            let now = now_ms();
            // Calendar changes that are due: send what holds from now.
            while let Some(Reverse((t, idx))) = self.wakeups.peek().copied() {
                if t > now {
                    break;
                }
                self.wakeups.pop();
                self.deliver(idx, now);
            }
            // Batches that are due (and not held back by throttling).
            if now >= self.hold_until {
                for (i, d) in due.iter_mut().enumerate() {
                    if *d <= now && now >= self.hold_until {
                        *d = match self.poll(i).await {
                            Ok(()) => t0 + ((now - t0) / interval + 1) * interval + (i as i64 * interval) / n as i64,
                            Err(_) => now_ms().max(self.hold_until) + 1000,
                        };
                        if self.retired.is_some() {
                            break;
                        }
                    }
                }
            }
            self.report(&due);
            let next_batch = due.iter().copied().min().unwrap_or(now + interval).max(self.hold_until);
            let next_wake = self.wakeups.peek().map_or(UnixMs::MAX, |r| r.0 .0);
            let sleep_ms = next_batch.min(next_wake).saturating_sub(now_ms()).clamp(10, 60_000) as u64;
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
            }
        }
        info!(provider = %self.ctx.name, "Calendar provider stopped.");
    }

    fn deliver(&mut self, idx: UserIdx, now: UnixMs) {
        let Some(s) = self.schedules.get(&idx) else { return };
        for sig in to_signals(s, now, &self.policy) {
            let _ = self.ctx.sink.send_to(idx, sig);
        }
        if let Some(t) = next_change(s, now) {
            self.wakeups.push(Reverse((t, idx)));
        }
    }

    async fn poll(&mut self, i: usize) -> Result<(), ()> {
        let batch = self.batches[i].clone();
        let names: Vec<&str> = batch.iter().map(|(m, _)| m.as_str()).collect();
        let res = self.fetch(&names).await;
        let now = now_ms();
        match res {
            Ok(schedules) => {
                self.polls += 1;
                self.failures = 0;
                self.last_poll_at = Some(now);
                if self.ctx.feed.set_up(true) {
                    info!(provider = %self.ctx.name, "Calendar feed is up.");
                }
                self.ctx.feed.set_state("up");
                let by_name: HashMap<String, UserIdx> = batch.iter().map(|(m, i)| (m.to_ascii_lowercase(), *i)).collect();
                for s in schedules {
                    let Some(idx) = by_name.get(&s.mailbox.to_ascii_lowercase()).copied() else {
                        self.ctx.feed.unresolved.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    };
                    if let Some(e) = &s.error {
                        // One mailbox failing (not found, no permission) keeps its last state.
                        self.mailbox_errors += 1;
                        self.ctx.feed.record_error(&format!("{}: {e}", s.mailbox));
                        continue;
                    }
                    self.schedules.insert(idx, s);
                    self.deliver(idx, now);
                }
                Ok(())
            }
            Err(PollError::Throttled(after)) => {
                self.throttled += 1;
                self.hold_until = now + after.as_millis() as i64;
                self.ctx.feed.set_state("throttled");
                warn!(provider = %self.ctx.name, retry_after = ?after, "Calendar backend is throttling; holding back.");
                Err(())
            }
            Err(PollError::Retired(msg)) => {
                warn!(provider = %self.ctx.name, "{msg}");
                self.ctx.feed.record_error(&msg);
                self.ctx.feed.set_up(false);
                self.ctx.feed.set_state("retired: use the graph calendar backend");
                self.retired = Some(msg);
                Err(())
            }
            Err(PollError::Failed(msg)) => {
                self.failures += 1;
                self.ctx.feed.record_error(&msg);
                warn!(provider = %self.ctx.name, error = %msg, failures = self.failures, "Calendar poll failed.");
                if self.failures >= 3 && self.ctx.feed.set_up(false) {
                    warn!(provider = %self.ctx.name, "Calendar feed is down; its signals show stale.");
                    self.ctx.feed.set_state("down");
                }
                self.hold_until = now + (1000 * 2i64.pow(self.failures.min(6))).min(60_000);
                Err(())
            }
        }
    }

    async fn token(&mut self) -> Result<String, PollError> {
        if let Some((t, until)) = &self.token {
            if *until > now_ms() {
                return Ok(t.clone());
            }
        }
        let id = self.cfg.client_id.clone().unwrap_or_default();
        let secret = self.cfg.client_secret.clone().unwrap_or_default();
        let form = match self.cfg.backend {
            Backend::Google => oauth::refresh_token_form(&id, Some(&secret), self.cfg.refresh_token.as_deref().unwrap_or_default(), self.cfg.scope()),
            _ => oauth::client_credentials_form(&id, &secret, self.cfg.scope()),
        };
        let res = self
            .ctx
            .http
            .post(self.cfg.token_endpoint())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| PollError::Failed(format!("token endpoint unreachable: {e}")))?;
        let status = res.status().as_u16();
        let body = res.bytes().await.map_err(|e| PollError::Failed(e.to_string()))?;
        if status != 200 {
            let why = oauth::parse_oauth_error(&body).map(|e| e.error).unwrap_or_else(|| format!("HTTP {status}"));
            return Err(PollError::Failed(format!("token refused: {why}")));
        }
        let t = oauth::parse_token_response(&body).map_err(|e| PollError::Failed(e.to_string()))?;
        let until = now_ms() + (t.expires_in.max(120) as i64 - 60) * 1000;
        self.token = Some((t.access_token.clone(), until));
        Ok(t.access_token)
    }

    async fn fetch(&mut self, mailboxes: &[&str]) -> Result<Vec<MailboxSchedule>, PollError> {
        let start = now_ms();
        let end = start + self.cfg.window_hours as i64 * 3_600_000;
        let http = self.ctx.http.clone();
        let (req, ews_names) = match self.cfg.backend {
            Backend::Graph => {
                let token = self.token().await?;
                let body = schedule::request_body(mailboxes, start, end, self.cfg.interval_minutes)?;
                let url = format!("{}/users/{}/calendar/getSchedule", self.cfg.graph_url.trim_end_matches('/'), mailboxes[0]);
                (http.post(url).bearer_auth(token).header("content-type", "application/json").body(body), false)
            }
            Backend::Google => {
                let token = self.token().await?;
                let body = google::request_body(mailboxes, start, end)?;
                let url = format!("{}/freeBusy", self.cfg.google_url.trim_end_matches('/'));
                (http.post(url).bearer_auth(token).header("content-type", "application/json").body(body), false)
            }
            Backend::Ews => {
                let body = ews::request(mailboxes, start, end, self.cfg.interval_minutes)?;
                let url = self.cfg.ews_url.clone().unwrap_or_default();
                let mut r = http
                    .post(url)
                    .header("content-type", "text/xml; charset=utf-8")
                    .header("soapaction", "http://schemas.microsoft.com/exchange/services/2006/messages/GetUserAvailability")
                    .body(body);
                r = match (&self.cfg.username, &self.cfg.password) {
                    (Some(u), Some(p)) if !u.is_empty() => r.basic_auth(u, Some(p)),
                    _ => r.bearer_auth(self.token().await?).header("x-anchormailbox", mailboxes[0]),
                };
                (r, true)
            }
        };
        let res = req.send().await.map_err(|e| PollError::Failed(format!("unreachable: {e}")))?;
        let status = res.status().as_u16();
        let retry = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| oauth::retry_after(v, now_ms()));
        let body = res.bytes().await.map_err(|e| PollError::Failed(e.to_string()))?;
        if ews_names {
            if status != 200 {
                return Err(match ews::classify_error(status, &body) {
                    EwsError::Throttled { back_off_ms } => PollError::Throttled(Duration::from_millis(back_off_ms.or(retry).unwrap_or(30_000))),
                    r @ EwsError::Retired { .. } => PollError::Retired(r.to_string()),
                    EwsError::Unauthorized => {
                        self.token = None;
                        PollError::Failed(EwsError::Unauthorized.to_string())
                    }
                    other => PollError::Failed(other.to_string()),
                });
            }
            return Ok(ews::parse_response(&body, mailboxes)?);
        }
        match status {
            200 => Ok(match self.cfg.backend {
                Backend::Google => google::parse_response(&body)?,
                _ => schedule::parse_response(&body)?,
            }),
            429 | 503 => Err(PollError::Throttled(Duration::from_millis(retry.unwrap_or(30_000)))),
            401 => {
                self.token = None;
                Err(PollError::Failed("HTTP 401: token refused".into()))
            }
            s => {
                let why = oauth::parse_graph_error(&body).map(|e| format!("{}: {}", e.code, e.message)).unwrap_or_default();
                Err(PollError::Failed(format!("HTTP {s} {why}")))
            }
        }
    }

    fn report(&self, due: &[UnixMs]) {
        self.ctx.feed.set_details(serde_json::json!({
            "backend": self.cfg.backend_name(),
            "mailboxes": self.batches.iter().map(Vec::len).sum::<usize>(),
            "batches": self.batches.len(),
            "poll_interval_secs": self.cfg.poll_interval_secs,
            "polls": self.polls,
            "last_poll_at": self.last_poll_at.map(rfc3339),
            "next_poll_at": due.iter().copied().min().map(rfc3339),
            "next_change_at": self.wakeups.peek().map(|r| rfc3339(r.0 .0)),
            "throttled_responses": self.throttled,
            "throttled_until": (self.hold_until > now_ms()).then(|| rfc3339(self.hold_until)),
            "mailbox_errors": self.mailbox_errors,
            "retired": self.retired,
        }));
    }
}

impl CalendarConfig {
    fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Graph => "graph",
            Backend::Ews => "ews",
            Backend::Google => "google",
        }
    }
}

/// Starts the provider task on the current runtime.
pub fn start(config: &CalendarConfig, ctx: ProviderContext) -> Result<crate::ProviderHandle, BuildError> {
    config.validate()?;
    let task = actix::spawn(Runtime::new(ctx, config.clone()).run());
    Ok(crate::ProviderHandle::new(move || task.abort()))
}
