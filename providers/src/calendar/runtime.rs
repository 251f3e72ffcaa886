//! The calendar provider's task: polls free/busy for everyone with a mailbox through one
//! backend — Graph `getSchedule`, Exchange EWS `GetUserAvailability` or Google `freeBusy` —
//! and keeps each person's calendar signal right between polls.
//!
//! - Mailboxes go in batches of the backend's limit (100, 100, 50). The first round runs at
//!   start; after that, batch *i* of *n* is due at `i/n` of the way through each interval, so
//!   the load is spread evenly rather than in a burst.
//! - Each mailbox's schedule is kept, and the task wakes at its next start or end
//!   ([`next_change`]) to send the signal that holds from then: a meeting becomes Busy /
//!   InAMeeting exactly while it runs, whatever the poll interval.
//! - Polls run as tasks of their own, one at a time, each within `request_timeout_secs` and a
//!   bounded answer size: a backend that hangs never holds up the meeting starts and ends
//!   already known.
//! - `429` + `Retry-After` (Graph, Google) and EWS `ErrorServerBusy` + `BackOffMilliseconds`
//!   hold every request back for as long as asked.
//! - After `down_after_failures` failed polls in a row the feed goes down through the sink, so
//!   every stream shows the calendar stale at once (never Offline). Failed polls are retried
//!   with back-off and jitter (1 s doubling to 10 s). When the backend answers again, every
//!   batch is polled afresh before the feed comes back up: no meeting read before the outage is
//!   shown as live until it has been read again.
//! - The mailboxes follow the live directory ([`Follow`]): a leaver's mailbox leaves its batch
//!   (and their schedule is forgotten), a newcomer's joins a batch with room, which is polled at
//!   once; a changed address is both.
//! - EWS blocked or retired (Exchange Online, from October 2026) stops polling and says in
//!   provider health that the Graph calendar provider should be used instead.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::ews::{self, EwsError};
use super::model::{next_change, to_signals, CalendarError, MailboxSchedule, SignalPolicy};
use super::{google, schedule, Backend, CalendarConfig};
use crate::common::backoff::Backoff;
use crate::common::follow::Follow;
use crate::common::http::{self, CallError, Limits};
use crate::common::oauth::{self, TokenCache};
use presence_actors::directory::{PersonRef, UserIdx};
use presence_actors::model::{now_ms, rfc3339, UnixMs};
use presence_actors::provider::ProviderContext;

/// Largest free/busy answer read (100 mailboxes over a week with subjects fit well within).
pub const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// Wait assumed when the backend throttles without saying how long.
const DEFAULT_THROTTLE: Duration = Duration::from_secs(30);

/// Why one batch failed.
#[derive(Debug, Clone, thiserror::Error)]
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

impl From<CallError> for PollError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Throttled(d) => PollError::Throttled(d),
            other => PollError::Failed(other.to_string()),
        }
    }
}

/// The answer of one poll.
struct PollDone {
    batch: usize,
    result: Result<Vec<MailboxSchedule>, PollError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Connecting,
    Up,
    Down,
}

/// What a poll task needs (shared, read-only).
struct Fetcher {
    cfg: CalendarConfig,
    http: reqwest::Client,
    token: Option<TokenCache>,
    limits: Limits,
}

/// The running provider.
pub struct Runtime {
    ctx: ProviderContext,
    cfg: CalendarConfig,
    policy: SignalPolicy,
    fetcher: Arc<Fetcher>,
    /// The mailboxes polled, following the live directory.
    follow: Follow<String>,
    /// (mailbox as sent, person), in batches.
    batches: Vec<Vec<(String, UserIdx)>>,
    due: Vec<UnixMs>,
    schedules: HashMap<UserIdx, MailboxSchedule>,
    wakeups: BinaryHeap<Reverse<(UnixMs, UserIdx)>>,
    in_flight: Option<usize>,
    done_tx: mpsc::Sender<PollDone>,
    done_rx: mpsc::Receiver<PollDone>,
    hold_until: UnixMs,
    retry: Backoff,
    health: Health,
    /// Batches to read again before the feed may come back up.
    unconfirmed: BTreeSet<usize>,
    failures: u32,
    throttled: u64,
    polls: u64,
    poll_failures: u64,
    mailbox_errors: u64,
    retired: Option<String>,
    last_poll_at: Option<UnixMs>,
    t0: UnixMs,
}

impl Runtime {
    /// Builds the task's state: everyone in the directory with an e-mail address.
    pub fn new(ctx: ProviderContext, cfg: CalendarConfig) -> Runtime {
        let mut follow = Follow::new(&ctx);
        let mailboxes: Vec<(String, UserIdx)> = follow.update(mailbox).added.into_iter().map(|(idx, m)| (m, idx)).collect();
        let batches: Vec<Vec<(String, UserIdx)>> = mailboxes.chunks(cfg.batch_size()).map(<[_]>::to_vec).collect();
        let policy = SignalPolicy { keep_details: cfg.keep_details, keywords: cfg.keywords.clone(), instance: ctx.name.clone() };
        let (id, secret) = (cfg.app.client_id(), cfg.app.client_secret());
        let basic = cfg.login.pair().is_some();
        let token = match cfg.backend {
            Backend::Google => Some(oauth::refresh_token_form(id, Some(secret), cfg.refresh_token.as_deref().unwrap_or_default(), cfg.scope())),
            Backend::Ews if basic => None,
            _ => Some(oauth::client_credentials_form(id, secret, cfg.scope())),
        }
        .map(|form| TokenCache::new(cfg.token_endpoint(), form));
        let limits = Limits::new(MAX_ANSWER, Duration::from_secs(cfg.request_timeout_secs));
        let fetcher = Arc::new(Fetcher { cfg: cfg.clone(), http: ctx.http.clone(), token, limits });
        let (done_tx, done_rx) = mpsc::channel(2);
        let t0 = now_ms();
        Runtime {
            policy,
            fetcher,
            follow,
            // Round 0 at once.
            due: vec![t0; batches.len()],
            batches,
            schedules: HashMap::new(),
            wakeups: BinaryHeap::new(),
            in_flight: None,
            done_tx,
            done_rx,
            hold_until: 0,
            retry: Backoff::new(Duration::from_secs(1), Duration::from_secs(10)),
            health: Health::Connecting,
            unconfirmed: BTreeSet::new(),
            failures: 0,
            throttled: 0,
            polls: 0,
            poll_failures: 0,
            mailbox_errors: 0,
            retired: None,
            last_poll_at: None,
            t0,
            ctx,
            cfg,
        }
    }

    /// Runs until shutdown.
    pub async fn run(mut self) {
        let mut shutdown = self.ctx.shutdown.clone();
        info!(provider = %self.ctx.name, backend = ?self.cfg.backend, mailboxes = self.batches.iter().map(Vec::len).sum::<usize>(), batches = self.batches.len(), "Calendar provider starting.");
        self.ctx.feed.set_state("connecting");
        loop {
            let now = now_ms();
            // Calendar changes that are due: send what holds from now.
            while let Some(Reverse((t, idx))) = self.wakeups.peek().copied() {
                if t > now {
                    break;
                }
                self.wakeups.pop();
                self.deliver(idx, now);
            }
            self.dispatch(now);
            self.report();
            let next_batch = if self.in_flight.is_some() || self.retired.is_some() {
                UnixMs::MAX
            } else {
                self.due.iter().copied().min().unwrap_or(UnixMs::MAX).max(self.hold_until)
            };
            let next_wake = self.wakeups.peek().map_or(UnixMs::MAX, |r| r.0 .0);
            let sleep_ms = next_batch.min(next_wake).saturating_sub(now_ms()).clamp(10, 60_000) as u64;
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = self.follow.changed() => self.on_directory(),
                Some(done) = self.done_rx.recv() => self.on_poll(done),
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
            }
        }
        info!(provider = %self.ctx.name, "Calendar provider stopped.");
    }

    /// The directory changed: a leaver's mailbox (or a changed address's old one) leaves its
    /// batch and their schedule is forgotten; newcomers (and new addresses) join a batch with
    /// room that is not being polled — or a new one — and that batch is polled at once.
    fn on_directory(&mut self) {
        let changes = self.follow.update(mailbox);
        if changes.is_empty() {
            return;
        }
        info!(provider = %self.ctx.name, added = changes.added.len(), removed = changes.removed.len(), changed = changes.changed.len(), "Directory changed; the polled mailboxes follow.");
        for (idx, _) in changes.dropped() {
            for b in &mut self.batches {
                b.retain(|(_, u)| *u != idx);
            }
            self.schedules.remove(&idx);
        }
        let now = now_ms();
        let size = self.cfg.batch_size();
        for (idx, m) in changes.taken() {
            let room = (0..self.batches.len()).find(|&i| self.in_flight != Some(i) && self.batches[i].len() < size);
            let i = room.unwrap_or_else(|| {
                self.batches.push(Vec::new());
                self.due.push(now);
                self.batches.len() - 1
            });
            self.batches[i].push((m, idx));
            self.due[i] = self.due[i].min(now);
        }
        // A batch left empty is not polled (it is filled again first).
        for (i, b) in self.batches.iter().enumerate() {
            if b.is_empty() {
                self.due[i] = UnixMs::MAX;
                self.unconfirmed.remove(&i);
            }
        }
    }

    /// Starts the most overdue batch's poll, if none is under way and nothing holds back.
    fn dispatch(&mut self, now: UnixMs) {
        if self.in_flight.is_some() || self.retired.is_some() || now < self.hold_until {
            return;
        }
        let Some((i, _)) = self.due.iter().enumerate().filter(|(i, d)| **d <= now && !self.batches[*i].is_empty()).min_by_key(|(_, d)| **d) else { return };
        self.in_flight = Some(i);
        let names: Vec<String> = self.batches[i].iter().map(|(m, _)| m.clone()).collect();
        let (fetcher, tx) = (self.fetcher.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let result = fetcher.fetch(&names).await;
            let _ = tx.send(PollDone { batch: i, result }).await;
        });
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

    fn on_poll(&mut self, done: PollDone) {
        self.in_flight = None;
        let i = done.batch;
        let now = now_ms();
        match done.result {
            Ok(schedules) => {
                self.polls += 1;
                self.failures = 0;
                self.retry.reset();
                self.last_poll_at = Some(now);
                let interval = self.cfg.poll_interval_secs as i64 * 1000;
                let n = self.batches.len() as i64;
                self.due[i] = self.t0 + ((now - self.t0) / interval + 1) * interval + (i as i64 * interval) / n;
                let by_name: HashMap<String, UserIdx> = self.batches[i].iter().map(|(m, u)| (m.to_ascii_lowercase(), *u)).collect();
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
                self.unconfirmed.remove(&i);
                self.maybe_up(now);
            }
            Err(PollError::Throttled(after)) => {
                self.throttled += 1;
                self.hold_until = now + after.as_millis() as i64;
                self.ctx.feed.set_state("throttled");
                warn!(provider = %self.ctx.name, retry_after = ?after, "Calendar backend is throttling; holding back.");
            }
            Err(PollError::Retired(msg)) => {
                warn!(provider = %self.ctx.name, "{msg}");
                self.ctx.feed.record_error(&msg);
                self.ctx.sink.set_up(false);
                self.ctx.feed.set_state("retired: use the graph calendar backend");
                self.retired = Some(msg);
            }
            Err(PollError::Failed(msg)) => {
                self.failures += 1;
                self.poll_failures += 1;
                self.ctx.feed.record_error(&msg);
                let wait = self.retry.next_delay();
                warn!(provider = %self.ctx.name, error = %msg, failures = self.failures, retry_in = ?wait, "Calendar poll failed.");
                self.hold_until = now + wait.as_millis() as i64;
                if self.failures >= self.cfg.down_after_failures && self.health != Health::Down {
                    warn!(provider = %self.ctx.name, "Calendar feed is down; its meetings show stale until every mailbox has been read again.");
                    self.health = Health::Down;
                    self.ctx.sink.set_up(false);
                    self.ctx.feed.set_state("down");
                    // Nothing read before the outage counts as live again until re-read.
                    self.unconfirmed = (0..self.batches.len()).filter(|&b| !self.batches[b].is_empty()).collect();
                }
            }
        }
    }

    fn maybe_up(&mut self, now: UnixMs) {
        match self.health {
            Health::Up => self.ctx.feed.set_state("up"),
            Health::Down if !self.unconfirmed.is_empty() => {
                // Answering again: poll every batch not yet re-read, at once.
                for &b in &self.unconfirmed {
                    self.due[b] = self.due[b].min(now);
                }
                self.ctx.feed.set_state("recovering");
            }
            Health::Connecting | Health::Down => {
                info!(provider = %self.ctx.name, "Calendar feed is up.");
                self.health = Health::Up;
                self.ctx.sink.set_up(true);
                self.ctx.feed.set_state("up");
            }
        }
    }

    fn report(&self) {
        self.ctx.feed.set_details(serde_json::json!({
            "backend": self.cfg.backend_name(),
            "mailboxes": self.batches.iter().map(Vec::len).sum::<usize>(),
            "batches": self.batches.len(),
            "poll_interval_secs": self.cfg.poll_interval_secs,
            "polls": self.polls,
            "poll_failures": self.poll_failures,
            "last_poll_at": self.last_poll_at.map(rfc3339),
            "next_poll_at": self.due.iter().copied().min().map(rfc3339),
            "next_change_at": self.wakeups.peek().map(|r| rfc3339(r.0 .0)),
            "throttled_responses": self.throttled,
            "throttled_until": (self.hold_until > now_ms()).then(|| rfc3339(self.hold_until)),
            "mailbox_errors": self.mailbox_errors,
            "retired": self.retired,
        }));
    }
}

/// The mailbox polled for a person: their e-mail address.
fn mailbox(_: UserIdx, p: &PersonRef<'_>) -> Option<String> {
    p.email().filter(|e| e.contains('@')).map(str::to_string)
}

impl Fetcher {
    async fn token(&self) -> Result<String, PollError> {
        match &self.token {
            Some(t) => t.get(&self.http).await.map_err(|e| PollError::Failed(format!("token: {e}"))),
            None => Err(PollError::Failed("no token configured".into())),
        }
    }

    async fn forget_token(&self) {
        if let Some(t) = &self.token {
            t.forget().await;
        }
    }

    async fn fetch(&self, names: &[String]) -> Result<Vec<MailboxSchedule>, PollError> {
        let mailboxes: Vec<&str> = names.iter().map(String::as_str).collect();
        let start = now_ms();
        let end = start + self.cfg.window_hours as i64 * 3_600_000;
        let http = &self.http;
        let (req, is_ews) = match self.cfg.backend {
            Backend::Graph => {
                let body = schedule::request_body(&mailboxes, start, end, self.cfg.interval_minutes)?;
                let url = format!("{}/users/{}/calendar/getSchedule", self.cfg.app.graph_url.trim_end_matches('/'), mailboxes[0]);
                (http.post(url).bearer_auth(self.token().await?).header("content-type", "application/json").body(body), false)
            }
            Backend::Google => {
                let body = google::request_body(&mailboxes, start, end)?;
                let url = format!("{}/freeBusy", self.cfg.google_url.trim_end_matches('/'));
                (http.post(url).bearer_auth(self.token().await?).header("content-type", "application/json").body(body), false)
            }
            Backend::Ews => {
                let body = ews::request(&mailboxes, start, end, self.cfg.interval_minutes)?;
                let url = self.cfg.ews_url.clone().unwrap_or_default();
                let r = http
                    .post(url)
                    .header("content-type", "text/xml; charset=utf-8")
                    .header("soapaction", "http://schemas.microsoft.com/exchange/services/2006/messages/GetUserAvailability")
                    .body(body);
                let r = match self.cfg.login.pair() {
                    Some((u, p)) => r.basic_auth(u, Some(p)),
                    None => r.bearer_auth(self.token().await?).header("x-anchormailbox", mailboxes[0]),
                };
                (r, true)
            }
        };
        let a = http::send(req, self.limits).await?;
        if is_ews {
            if a.status != 200 {
                return Err(match ews::classify_error(a.status, &a.body) {
                    EwsError::Throttled { back_off_ms } => {
                        let ms = back_off_ms.or(a.retry_after.map(|d| d.as_millis() as u64));
                        PollError::Throttled(ms.map_or(DEFAULT_THROTTLE, Duration::from_millis))
                    }
                    r @ EwsError::Retired { .. } => PollError::Retired(r.to_string()),
                    EwsError::Unauthorized => {
                        self.forget_token().await;
                        PollError::Failed(EwsError::Unauthorized.to_string())
                    }
                    other => PollError::Failed(other.to_string()),
                });
            }
            return Ok(ews::parse_response(&a.body, &mailboxes)?);
        }
        match a.status {
            200 => Ok(match self.cfg.backend {
                Backend::Google => google::parse_response(&a.body)?,
                _ => schedule::parse_response(&a.body)?,
            }),
            // A 503 with Retry-After is the backend asking for time, like a 429.
            503 if a.retry_after.is_some() => Err(PollError::Throttled(a.retry_after.unwrap_or(DEFAULT_THROTTLE))),
            401 => {
                self.forget_token().await;
                Err(PollError::Failed("HTTP 401: token refused".into()))
            }
            _ => Err(a.into_error(DEFAULT_THROTTLE).into()),
        }
    }
}
