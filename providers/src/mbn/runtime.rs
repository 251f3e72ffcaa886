//! The MBN provider's task: log in, start the enterprise monitor, resync, long-poll events,
//! keep the monitor alive, log in again when the token expires or is refused, and start over
//! with a new monitor and a resync after a gap.
//!
//! One tokio task owns all state and goes round one loop ([`Runtime::run`]):
//!
//! 1. **Login** (at start, when the session is near its expiry, after a `401`): the OAuth2
//!    password grant, `catalog/userInfo`, `status/token`, `/csta/authentication/token`. The
//!    monitor and its cursor survive a re-login, so no event is lost. A second `401` in a row
//!    (a token that works for nothing) is a failure and backs off.
//! 2. **Monitor**: started once, refreshed every `monitor_refresh_secs` (at the latest at half
//!    its lifetime). A `404`/`410` on a refresh or a poll means the monitor or the cursor is
//!    gone: events may have been missed, so the feed is marked down at once (its signals show
//!    stale — never Offline), the old monitor is dropped, a new one started and everyone resynced.
//! 3. **Resync** (after each new monitor): the status list, page by page, replaces what is
//!    known; events queued meanwhile that are older than a line's snapshot are superseded.
//!    Then the feed is up.
//! 4. **Poll**: one long poll at a time, no longer than the next monitor refresh or session
//!    renewal; each event is applied and the person's signals sent when they change.
//!
//! Other failures (unreachable, `5xx`, `429`, unreadable answers) back off exponentially from
//! 0.5 s to `max_backoff_secs`, honouring `Retry-After`; after `failures_before_down` in a row
//! the feed is marked down until a poll or resync succeeds. Once a second (also while a poll
//! waits) absences that start or end are re-evaluated and the health details refreshed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::state::{self, Line, Outcome, Person, Phone, Reasons};
use super::wire::{self, EventKind, Party, UserInfo};
use super::MbnConfig;
use presence_actors::directory::UserIdx;
use presence_actors::model::{now_ms, rfc3339, Signal, UnixMs};
use presence_actors::provider::ProviderContext;

/// First wait after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How often absences and health are re-evaluated.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Most status list pages read in one resync.
const MAX_STATUS_PAGES: usize = 1000;
/// Most numbers remembered as not in the directory.
const MAX_UNRESOLVED_KEPT: usize = 10_000;
/// Most number → person lookups cached.
const MAX_RESOLVE_CACHE: usize = 200_000;
/// Most `userId` → number pairs remembered.
const MAX_USER_NUMBERS: usize = 200_000;
/// Unknown event types and statuses logged (once each).
const MAX_LOGGED_UNKNOWN: usize = 100;
/// How long stopping waits for the monitor's deletion.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// A renewal or refresh due within this long is done now (a poll waits whole seconds).
const DUE_SLACK: Duration = Duration::from_secs(1);

/// Why a call to MBN failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The token endpoint refused the credentials (`400`/`401`/`403`).
    #[error("login refused: {0}")]
    Login(String),
    /// The API refused the token (`401`, e.g. code 40106: expired).
    #[error("token refused (401): {0}")]
    Unauthorized(String),
    /// The monitor or the cursor is gone (`404`/`410` on a poll or a refresh).
    #[error("monitor or cursor gone (HTTP {0})")]
    Gone(u16),
    /// Another error status.
    #[error("HTTP {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Code and message of the error body, if any.
        message: String,
        /// `Retry-After`, if given.
        retry_after: Option<Duration>,
    },
    /// The answer could not be read.
    #[error("bad answer: {0}")]
    Parse(#[from] wire::ParseError),
    /// The peer could not be reached, or did not answer in time.
    #[error("unreachable: {0}")]
    Http(String),
}

/// An HTTP answer, read (bounded).
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl Answer {
    fn error_text(&self) -> String {
        match wire::parse_error(&self.body) {
            Some(e) => match (e.code, e.message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(x), None) | (None, Some(x)) => x,
                (None, None) => String::new(),
            },
            None => String::new(),
        }
    }
}

/// Sends a request and reads its answer, at most [`wire::MAX_BODY`] bytes. An owned future, so
/// the task can do housekeeping while a long poll waits.
async fn send(req: reqwest::RequestBuilder) -> Result<Answer, CallError> {
    let describe = |e: reqwest::Error| CallError::Http(if e.is_timeout() { "timed out".into() } else { e.to_string() });
    let mut res = req.send().await.map_err(describe)?;
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(wire::retry_after_secs)
        .map(Duration::from_secs);
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > wire::MAX_BODY {
            return Err(wire::ParseError::TooLarge { len: body.len() + chunk.len(), max: wire::MAX_BODY }.into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { status, retry_after, body })
}

/// The body of a 2xx answer, else the error it stands for. `gone` lets `404`/`410` mean "the
/// monitor or cursor is gone".
fn check(a: Answer, gone: bool) -> Result<Vec<u8>, CallError> {
    match a.status {
        200..=299 => Ok(a.body),
        401 => Err(CallError::Unauthorized(a.error_text())),
        404 | 410 if gone => Err(CallError::Gone(a.status)),
        status => Err(CallError::Status { status, message: a.error_text(), retry_after: a.retry_after }),
    }
}

/// Which interface's token a call carries besides the bearer token.
#[derive(Clone, Copy)]
enum Iface {
    Status,
    Csta,
}

/// The tokens of one login.
struct Session {
    access: String,
    status: String,
    csta: String,
    info: UserInfo,
    renew_at: Instant,
    expires_at: UnixMs,
}

/// The enterprise monitor.
struct Monitor {
    id: String,
    refresh_at: Instant,
    expires_at: UnixMs,
}

/// Counters for the health details.
#[derive(Default)]
struct Stats {
    logins: u64,
    token_rejections: u64,
    monitors_started: u64,
    monitor_refreshes: u64,
    monitors_lost: u64,
    polls: u64,
    empty_polls: u64,
    events: u64,
    malformed: u64,
    ignored: u64,
    superseded: u64,
    resyncs: u64,
    signals: u64,
    last_poll_at: Option<UnixMs>,
    last_event_at: Option<UnixMs>,
    last_resync_at: Option<UnixMs>,
}

/// The running provider.
pub struct Runtime {
    ctx: ProviderContext,
    cfg: MbnConfig,
    reasons: Reasons,
    /// The slots' instances (the provider's name, `{name}-absence`).
    instances: state::Instances,
    session: Option<Session>,
    /// `401`s since the last successful call: the first logs in again at once, more in a row
    /// are failures (backoff) — a token that works for nothing must not make a login loop.
    rejections_in_a_row: u32,
    monitor: Option<Monitor>,
    cursor: Option<String>,
    need_resync: bool,
    people: HashMap<UserIdx, Person>,
    with_absences: HashSet<UserIdx>,
    user_numbers: HashMap<String, String>,
    resolved: HashMap<String, Option<UserIdx>>,
    unresolved: HashSet<String>,
    logged_unknown: HashSet<String>,
    failures: u32,
    backoff: Duration,
    last_housekeeping: Instant,
    stats: Stats,
}

/// A number as a line key: digits and a leading `+` only.
fn line_key(number: &str) -> String {
    let t = number.trim();
    let mut k: String = t.chars().filter(char::is_ascii_digit).collect();
    if t.starts_with('+') {
        k.insert(0, '+');
    }
    k
}

impl Runtime {
    /// Builds the task's state.
    pub fn new(ctx: ProviderContext, cfg: MbnConfig) -> Runtime {
        let reasons = Reasons::new(&cfg.absence_reasons, &ctx.sink.policy().absence_reasons);
        let instances = state::Instances::of(&ctx.name);
        Runtime {
            instances,
            ctx,
            reasons,
            session: None,
            rejections_in_a_row: 0,
            monitor: None,
            cursor: None,
            need_resync: true,
            people: HashMap::new(),
            with_absences: HashSet::new(),
            user_numbers: HashMap::new(),
            resolved: HashMap::new(),
            unresolved: HashSet::new(),
            logged_unknown: HashSet::new(),
            failures: 0,
            backoff: FIRST_BACKOFF,
            last_housekeeping: Instant::now(),
            stats: Stats::default(),
            cfg,
        }
    }

    /// Runs until shutdown.
    pub async fn run(mut self) {
        let mut shutdown = self.ctx.shutdown.clone();
        info!(provider = %self.ctx.name, base_url = %self.cfg.base_url, "Telenor MBN provider starting.");
        let missing = self.reasons.missing_codes();
        if !missing.is_empty() {
            warn!(provider = %self.ctx.name, codes = ?missing, "Absence reason codes missing from [policy] absence_reasons; their built-in defaults are used.");
        }
        self.ctx.feed.set_state("connecting");
        while !shutdown.is_shutdown() {
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = self.step() => {}
            }
        }
        self.stop().await;
    }

    /// One round: whatever is due, then one poll; errors handled (with a backoff when needed).
    async fn step(&mut self) {
        self.housekeeping();
        match self.advance().await {
            Ok(()) => {
                self.failures = 0;
                self.backoff = FIRST_BACKOFF;
            }
            Err(e) => self.on_error(e).await,
        }
        self.report();
    }

    async fn advance(&mut self) -> Result<(), CallError> {
        let due = Instant::now() + DUE_SLACK;
        if self.session.as_ref().is_none_or(|s| s.renew_at <= due) {
            self.login().await?;
        }
        if self.monitor.is_none() {
            self.start_monitor().await?;
        }
        if self.need_resync {
            self.resync().await?;
        }
        if self.monitor.as_ref().is_some_and(|m| m.refresh_at <= Instant::now() + DUE_SLACK) {
            self.refresh_monitor().await?;
        }
        self.poll().await?;
        self.set_live();
        Ok(())
    }

    async fn on_error(&mut self, e: CallError) {
        match e {
            CallError::Unauthorized(why) if self.rejections_in_a_row == 0 => {
                // Expired or revoked: log in again now; the monitor and the cursor stay.
                self.stats.token_rejections += 1;
                self.rejections_in_a_row += 1;
                info!(provider = %self.ctx.name, reason = %why, "MBN refused the token; logging in again.");
                self.session = None;
            }
            CallError::Gone(status) => {
                self.stats.monitors_lost += 1;
                warn!(provider = %self.ctx.name, status, "The MBN monitor or its cursor is gone; starting a new monitor and resyncing (stale meanwhile).");
                self.ctx.feed.record_error(&format!("monitor lost (HTTP {status}); resyncing"));
                let old = self.monitor.take();
                self.cursor = None;
                self.need_resync = true;
                // Health first, so whoever sees the feed go down sees why.
                self.report();
                self.set_down("resyncing");
                // A lost cursor can leave the monitor alive: stop it (best effort).
                if let (410, Some(m)) = (status, old) {
                    let _ = tokio::time::timeout(STOP_TIMEOUT, self.delete_monitor(&m.id)).await;
                }
            }
            e => {
                self.failures += 1;
                if let CallError::Unauthorized(_) = e {
                    self.stats.token_rejections += 1;
                    self.rejections_in_a_row += 1;
                }
                if matches!(e, CallError::Unauthorized(_) | CallError::Login(_)) {
                    self.session = None;
                }
                self.ctx.feed.record_error(&e.to_string());
                warn!(provider = %self.ctx.name, error = %e, failures = self.failures, retry_in = ?self.backoff, "MBN call failed.");
                if self.failures >= self.cfg.failures_before_down {
                    self.set_down("down");
                } else if self.ctx.feed.is_up() {
                    self.ctx.feed.set_state("retrying");
                }
                let hint = match &e {
                    CallError::Status { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let max = Duration::from_secs(self.cfg.max_backoff_secs);
                let wait = hint.map_or(self.backoff, |h| h.max(self.backoff)).min(max.max(hint.unwrap_or_default()));
                self.backoff = (self.backoff * 2).min(max);
                self.report();
                self.idle(wait).await;
            }
        }
    }

    fn set_live(&mut self) {
        if self.need_resync {
            return;
        }
        if self.ctx.feed.is_up() {
            self.ctx.feed.set_state("up");
        } else {
            self.ctx.sink.set_up(true);
            info!(provider = %self.ctx.name, "Telenor MBN feed is up.");
        }
    }

    fn set_down(&mut self, state: &str) {
        if self.ctx.feed.is_up() {
            self.ctx.sink.set_up(false);
            warn!(provider = %self.ctx.name, "Telenor MBN feed is down; its signals show stale.");
        }
        self.ctx.feed.set_state(state);
    }

    /// Waits, keeping absences and health current.
    async fn idle(&mut self, d: Duration) {
        let end = tokio::time::Instant::now() + d;
        loop {
            let now = tokio::time::Instant::now();
            if now >= end {
                return;
            }
            tokio::time::sleep((end - now).min(HOUSEKEEPING)).await;
            self.housekeeping();
            self.report();
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.request_timeout_secs)
    }

    // -----------------------------------------------------------------------------------------
    // Login

    async fn login(&mut self) -> Result<(), CallError> {
        if !self.ctx.feed.is_up() {
            self.ctx.feed.set_state("logging_in");
        }
        self.session = None;
        let http = self.ctx.http.clone();
        let cfg = &self.cfg;
        let form = wire::password_grant_form(&cfg.username, &cfg.password, cfg.scope.as_deref());
        let req = http
            .post(&cfg.token_url)
            .basic_auth(&cfg.client_id, Some(&cfg.client_secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(form)
            .timeout(self.timeout());
        let a = send(req).await?;
        if matches!(a.status, 400 | 401 | 403) {
            let why = a.error_text();
            return Err(CallError::Login(if why.is_empty() { format!("HTTP {}", a.status) } else { why }));
        }
        let token = wire::parse_token(&check(a, false)?)?;
        let access = token.access_token;

        let req = http.get(cfg.url(&cfg.paths.user_info)).bearer_auth(&access).timeout(self.timeout());
        let info = wire::parse_user_info(&check(send(req).await?, false)?)?;
        let req = http
            .post(cfg.url(&cfg.paths.status_token))
            .bearer_auth(&access)
            .header("content-type", "application/json")
            .body("{}")
            .timeout(self.timeout());
        let status = wire::parse_status_token(&check(send(req).await?, false)?)?;
        let req = http
            .post(cfg.url(&cfg.paths.csta_token))
            .bearer_auth(&access)
            .header("content-type", "application/json")
            .body(wire::csta_login_body(&status.token))
            .timeout(self.timeout());
        let csta = wire::parse_csta_token(&check(send(req).await?, false)?)?;

        let life = [Some(token.expires_in), status.expires_in, csta.expires_in].into_iter().flatten().min();
        let life = Duration::from_secs(life.unwrap_or(wire::DEFAULT_EXPIRES_IN).clamp(1, 30 * 86_400));
        // Renew at 90 % of the shortest lifetime.
        let renew = (life * 9 / 10).max(Duration::from_millis(900));
        self.stats.logins += 1;
        if self.stats.logins == 1 {
            info!(provider = %self.ctx.name, company = ?info.company_id, api_user = ?info.user_id, expires_in = ?life, "Logged in to Telenor MBN.");
        } else {
            debug!(provider = %self.ctx.name, expires_in = ?life, "Logged in to Telenor MBN again.");
        }
        self.session = Some(Session {
            access,
            status: status.token,
            csta: csta.token,
            info,
            renew_at: Instant::now() + renew,
            expires_at: now_ms() + life.as_millis() as i64,
        });
        Ok(())
    }

    /// An API call with the session's tokens.
    async fn api(
        &mut self,
        method: reqwest::Method,
        url: String,
        iface: Iface,
        body: Option<String>,
        gone: bool,
    ) -> Result<Vec<u8>, CallError> {
        let s = self.session.as_ref().ok_or_else(|| CallError::Unauthorized("no session".into()))?;
        let mut req = self.ctx.http.request(method, url).bearer_auth(&s.access).timeout(self.timeout());
        req = match iface {
            Iface::Status => req.header(wire::HEADER_STATUS_TOKEN, &s.status),
            Iface::Csta => req.header(wire::HEADER_CSTA_TOKEN, &s.csta),
        };
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let body = check(send(req).await?, gone)?;
        self.rejections_in_a_row = 0;
        Ok(body)
    }

    // -----------------------------------------------------------------------------------------
    // The monitor

    fn set_monitor(&mut self, id: String, expires_in: Option<u64>) {
        let life = expires_in.unwrap_or(self.cfg.monitor_expires_secs).clamp(2, 30 * 86_400);
        let refresh = self.cfg.monitor_refresh_secs.min(life / 2).max(1);
        self.monitor = Some(Monitor {
            id,
            refresh_at: Instant::now() + Duration::from_secs(refresh),
            expires_at: now_ms() + life as i64 * 1000,
        });
    }

    async fn start_monitor(&mut self) -> Result<(), CallError> {
        if !self.ctx.feed.is_up() {
            self.ctx.feed.set_state("starting_monitor");
        }
        let company = self.session.as_ref().and_then(|s| s.info.company_id.clone());
        let body = wire::monitor_start_body(company.as_deref(), self.cfg.monitor_expires_secs);
        let url = self.cfg.url(&self.cfg.paths.monitor_start);
        let bytes = self.api(reqwest::Method::POST, url, Iface::Csta, Some(body), false).await?;
        let m = wire::parse_monitor(&bytes)?;
        info!(provider = %self.ctx.name, monitor = %m.id, expires_in = ?m.expires_in, "MBN enterprise monitor started.");
        self.set_monitor(m.id, m.expires_in);
        self.cursor = None;
        self.need_resync = true;
        self.stats.monitors_started += 1;
        Ok(())
    }

    async fn refresh_monitor(&mut self) -> Result<(), CallError> {
        let Some(id) = self.monitor.as_ref().map(|m| m.id.clone()) else { return Ok(()) };
        let url = self.cfg.url(&wire::path_with_id(&self.cfg.paths.monitor, &id));
        let body = wire::monitor_refresh_body(self.cfg.monitor_expires_secs);
        let bytes = self.api(reqwest::Method::PUT, url, Iface::Csta, Some(body), true).await?;
        let expires_in = wire::parse_monitor(&bytes).ok().and_then(|m| m.expires_in);
        self.set_monitor(id, expires_in);
        self.stats.monitor_refreshes += 1;
        debug!(provider = %self.ctx.name, "MBN monitor refreshed.");
        Ok(())
    }

    async fn delete_monitor(&mut self, id: &str) {
        let url = self.cfg.url(&wire::path_with_id(&self.cfg.paths.monitor, id));
        if let Err(e) = self.api(reqwest::Method::DELETE, url, Iface::Csta, None, true).await {
            debug!(provider = %self.ctx.name, error = %e, "Deleting the MBN monitor failed.");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Resync and polling

    async fn resync(&mut self) -> Result<(), CallError> {
        self.set_down("resyncing");
        let mut snapshot: HashMap<UserIdx, HashMap<String, Line>> = HashMap::new();
        let mut page: Option<String> = None;
        let mut users = 0usize;
        for _ in 0..MAX_STATUS_PAGES {
            let q = wire::status_list_query(page.as_deref());
            let base = self.cfg.url(&self.cfg.paths.status_list);
            let url = if q.is_empty() { base } else { format!("{base}?{q}") };
            let bytes = self.api(reqwest::Method::GET, url, Iface::Status, None, false).await?;
            let p = wire::parse_status_list(&bytes)?;
            for u in p.users {
                let u = match u {
                    Ok(u) => u,
                    Err(e) => {
                        self.stats.malformed += 1;
                        self.ctx.feed.record_error(&format!("malformed status entry: {e}"));
                        continue;
                    }
                };
                users += 1;
                if u.bad_absences > 0 {
                    self.stats.malformed += u.bad_absences as u64;
                    self.ctx.feed.record_error(&format!("{} malformed absence(s) in the status list", u.bad_absences));
                }
                self.remember_number(&u.party);
                if let Some((idx, line)) = self.resolve(&u.party) {
                    let lines = snapshot.entry(idx).or_default();
                    if lines.len() < state::MAX_LINES_PER_PERSON || lines.contains_key(&line) {
                        lines.insert(line, Line::from_status(&u));
                    }
                }
            }
            match p.next_page {
                Some(n) if page.as_deref() != Some(n.as_str()) => page = Some(n),
                _ => break,
            }
        }
        // The snapshot replaces everything: people it does not mention have nothing to say.
        let now = now_ms();
        for (idx, p) in self.people.iter_mut() {
            p.lines = snapshot.remove(idx).unwrap_or_default();
        }
        for (idx, lines) in snapshot {
            self.people.insert(idx, Person { lines, ..Person::default() });
        }
        let all: Vec<UserIdx> = self.people.keys().copied().collect();
        for idx in all {
            self.flush(idx, now);
        }
        self.people.retain(|_, p| !p.lines.is_empty() || p.sent_phone.is_some_and(|x| x != Phone::Unknown));
        self.need_resync = false;
        self.stats.resyncs += 1;
        self.stats.last_resync_at = Some(now);
        info!(provider = %self.ctx.name, users, people = self.people.len(), unresolved = self.unresolved.len(), "MBN status resynced.");
        self.set_live();
        Ok(())
    }

    async fn poll(&mut self) -> Result<(), CallError> {
        // What led here (login, monitor, resync) shows in health before the poll waits.
        self.report();
        let (Some(m), Some(s)) = (&self.monitor, &self.session) else { return Ok(()) };
        let now = Instant::now();
        let until = m.refresh_at.min(s.renew_at).saturating_duration_since(now).as_secs();
        let wait = self.cfg.poll_wait_secs.min(until).max(1);
        let path = wire::path_with_id(&self.cfg.paths.events, &m.id);
        let url = format!("{}?{}", self.cfg.url(&path), wire::events_query(wait, self.cursor.as_deref()));
        let req = self
            .ctx
            .http
            .get(url)
            .bearer_auth(&s.access)
            .header(wire::HEADER_CSTA_TOKEN, &s.csta)
            .header("accept", "application/json")
            .timeout(Duration::from_secs(wait) + self.timeout());
        let fut = send(req);
        tokio::pin!(fut);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + HOUSEKEEPING, HOUSEKEEPING);
        let answer = loop {
            tokio::select! {
                a = &mut fut => break a,
                _ = tick.tick() => {
                    self.housekeeping();
                    self.report();
                }
            }
        };
        self.stats.polls += 1;
        self.stats.last_poll_at = Some(now_ms());
        let body = check(answer?, true)?;
        self.rejections_in_a_row = 0;
        let batch = wire::parse_events(&body)?;
        if batch.events.is_empty() {
            self.stats.empty_polls += 1;
        }
        if let Some(c) = batch.cursor {
            self.cursor = Some(c);
        }
        self.apply_events(batch.events);
        Ok(())
    }

    fn apply_events(&mut self, events: Vec<Result<wire::Event, wire::ParseError>>) {
        let mut malformed = 0u64;
        let mut first_error = None;
        for e in events {
            let ev = match e {
                Ok(ev) => ev,
                Err(e) => {
                    malformed += 1;
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            self.stats.events += 1;
            let now = now_ms();
            self.stats.last_event_at = Some(now);
            let unknown = match &ev.kind {
                EventKind::Other(t) => Some(format!("event type {t}")),
                EventKind::DeviceStatus(wire::DeviceStatus::Other(s)) => Some(format!("device status {s}")),
                _ => None,
            };
            if let Some(u) = unknown {
                self.stats.ignored += 1;
                if self.logged_unknown.len() < MAX_LOGGED_UNKNOWN && self.logged_unknown.insert(u.clone()) {
                    warn!(provider = %self.ctx.name, what = %u, "Unknown MBN {u}; ignored (logged once).");
                }
                continue;
            }
            self.remember_number(&ev.party);
            let Some((idx, line)) = self.resolve(&ev.party) else { continue };
            match self.people.entry(idx).or_default().apply(&line, &ev) {
                Outcome::Applied => self.flush(idx, now),
                Outcome::Superseded => self.stats.superseded += 1,
                Outcome::Ignored => self.stats.ignored += 1,
            }
        }
        if let Some(e) = first_error {
            self.stats.malformed += malformed;
            self.ctx.feed.record_error(&format!("{malformed} malformed event(s) skipped, e.g.: {e}"));
            warn!(provider = %self.ctx.name, malformed, error = %e, "Skipped malformed MBN events.");
        }
    }

    // -----------------------------------------------------------------------------------------
    // People

    fn remember_number(&mut self, p: &Party) {
        if let (Some(u), Some(n)) = (&p.user_id, &p.msisdn) {
            if self.user_numbers.len() < MAX_USER_NUMBERS || self.user_numbers.contains_key(u) {
                self.user_numbers.insert(u.clone(), n.clone());
            }
        }
    }

    /// The person and line a party names: by number (E.164 or national, through the
    /// directory), else by the external id `mbn:{userId}`. Unresolved ones are counted.
    fn resolve(&mut self, p: &Party) -> Option<(UserIdx, String)> {
        let number = p.msisdn.clone().or_else(|| p.user_id.as_ref().and_then(|u| self.user_numbers.get(u).cloned()));
        let key = match (&number, &p.user_id) {
            (Some(n), _) => line_key(n),
            (None, Some(u)) => format!("user:{u}"),
            (None, None) => return None,
        };
        let idx = match self.resolved.get(&key) {
            Some(x) => *x,
            None => {
                let dir = self.ctx.directory();
                let found = number
                    .as_deref()
                    .and_then(|n| dir.resolve(n))
                    .or_else(|| p.user_id.as_ref().and_then(|u| dir.resolve(&format!("mbn:{u}"))));
                if self.resolved.len() < MAX_RESOLVE_CACHE {
                    self.resolved.insert(key.clone(), found);
                }
                found
            }
        };
        match idx {
            Some(i) => Some((i, key)),
            None => {
                self.ctx.feed.unresolved.fetch_add(1, Ordering::Relaxed);
                if self.unresolved.len() < MAX_UNRESOLVED_KEPT && self.unresolved.insert(key.clone()) {
                    debug!(provider = %self.ctx.name, number = %key, "MBN number not in the directory.");
                }
                None
            }
        }
    }

    /// Sends the person's signals that changed since last sent.
    fn flush(&mut self, idx: UserIdx, now: UnixMs) {
        let Some(p) = self.people.get_mut(&idx) else { return };
        let mut out: Vec<Signal> = Vec::new();
        let phone = p.phone();
        if p.sent_phone != Some(phone) && !(phone == Phone::Unknown && p.sent_phone.is_none()) {
            out.push(phone.signal(&self.instances, now));
            p.sent_phone = Some(phone);
        }
        let absence = p.current_absence(now).cloned();
        if absence != p.sent_absence {
            out.push(state::absence_signal(absence.as_ref(), &self.reasons, &self.instances, now));
            p.sent_absence = absence;
        }
        if p.has_absences() {
            self.with_absences.insert(idx);
        } else {
            self.with_absences.remove(&idx);
        }
        for s in out {
            self.stats.signals += 1;
            if let Err(e) = self.ctx.sink.send_to(idx, s) {
                debug!(provider = %self.ctx.name, error = %e, "Signal not delivered.");
            }
        }
    }

    /// Absences that start or end: prune the ended ones, send what changed.
    fn housekeeping(&mut self) {
        if self.last_housekeeping.elapsed() < HOUSEKEEPING / 2 {
            return;
        }
        self.last_housekeeping = Instant::now();
        let now = now_ms();
        let ids: Vec<UserIdx> = self.with_absences.iter().copied().collect();
        for idx in ids {
            if let Some(p) = self.people.get_mut(&idx) {
                p.prune(now);
            }
            self.flush(idx, now);
        }
    }

    fn report(&self) {
        let s = &self.stats;
        let now = now_ms();
        let mut phones: HashMap<&str, usize> = HashMap::new();
        let mut absent = 0usize;
        for p in self.people.values() {
            *phones.entry(p.phone().as_str()).or_default() += 1;
            absent += usize::from(p.sent_absence.as_ref().is_some_and(|a| a.from.is_none_or(|f| f <= now)));
        }
        self.ctx.feed.set_details(serde_json::json!({
            "api_user": self.session.as_ref().and_then(|x| x.info.user_id.as_deref()),
            "company_id": self.session.as_ref().and_then(|x| x.info.company_id.as_deref()),
            "session_expires_at": self.session.as_ref().map(|x| rfc3339(x.expires_at)),
            "monitor_id": self.monitor.as_ref().map(|m| m.id.as_str()),
            "monitor_expires_at": self.monitor.as_ref().map(|m| rfc3339(m.expires_at)),
            "resync_pending": self.need_resync,
            "logins": s.logins,
            "relogins": s.logins.saturating_sub(1),
            "token_rejections": s.token_rejections,
            "monitors_started": s.monitors_started,
            "monitor_refreshes": s.monitor_refreshes,
            "monitors_lost": s.monitors_lost,
            "resyncs": s.resyncs,
            "last_resync_at": s.last_resync_at.map(rfc3339),
            "polls": s.polls,
            "empty_polls": s.empty_polls,
            "last_poll_at": s.last_poll_at.map(rfc3339),
            "events": s.events,
            "last_event_at": s.last_event_at.map(rfc3339),
            "malformed_events": s.malformed,
            "ignored_events": s.ignored,
            "superseded_events": s.superseded,
            "signals": s.signals,
            "people": self.people.len(),
            "phones": phones,
            "absent": absent,
            "unresolved": self.unresolved.len(),
            "consecutive_failures": self.failures,
        }));
    }

    async fn stop(&mut self) {
        if let Some(m) = self.monitor.take() {
            let _ = tokio::time::timeout(STOP_TIMEOUT, self.delete_monitor(&m.id)).await;
        }
        self.report();
        info!(provider = %self.ctx.name, "Telenor MBN provider stopped.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_key_lines_by_digits() {
        assert_eq!(line_key("+47 912 34 567"), "+4791234567");
        assert_eq!(line_key("072-128 16 05"), "0721281605");
    }

    #[test]
    fn answers_map_to_errors() {
        let a = |status: u16, body: &str| Answer { status, retry_after: None, body: body.as_bytes().to_vec() };
        assert!(matches!(check(a(204, ""), true), Ok(b) if b.is_empty()));
        assert!(
            matches!(check(a(401, r#"{"code":40106,"message":"Access token expired"}"#), true), Err(CallError::Unauthorized(m)) if m == "40106: Access token expired")
        );
        assert!(matches!(check(a(410, ""), true), Err(CallError::Gone(410))));
        assert!(matches!(check(a(404, ""), false), Err(CallError::Status { status: 404, .. })));
        let mut busy = a(503, "");
        busy.retry_after = Some(Duration::from_secs(2));
        assert!(matches!(check(busy, true), Err(CallError::Status { status: 503, retry_after: Some(_), .. })));
    }
}
