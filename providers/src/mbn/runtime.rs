//! The MBN provider's task: log in, start the enterprise monitor, resync, long-poll events,
//! keep the monitor alive, log in again when the token expires or is refused, and start over
//! with a new monitor and a resync after a gap.
//!
//! One tokio task owns all state and goes round one loop ([`Runtime::run`]):
//!
//! 1. **Login** (at start, when the session is near its expiry, after a `401`): the OAuth2
//!    password grant with the partner's client id and secret as HTTP Basic (the toolkit's
//!    [`oauth::request_token`]), `catalog/userInfo`, `status/token`,
//!    `/csta/authentication/token`. The monitor and its cursor survive a re-login, so no event
//!    is lost. A second `401` in a row (a token that works for nothing) is a failure and backs
//!    off.
//! 2. **Monitor**: started once, refreshed every `monitor_refresh_secs` (at the latest at half
//!    its lifetime). A `404`/`410` on a refresh or a poll means the monitor or the cursor is
//!    gone (`gone`): events may have been missed, so the feed is marked down at once (its
//!    signals show stale — never Offline), the old monitor is dropped, a new one started and
//!    everyone resynced.
//! 3. **Resync** (after each new monitor): the status list, page by page, replaces what is
//!    known; events queued meanwhile that are older than a line's snapshot are superseded.
//!    Then the feed is up.
//! 4. **Poll**: one long poll at a time, no longer than the next monitor refresh or session
//!    renewal; each event is applied and the person's signals sent when they change.
//!
//! The directory is live: the enterprise monitor covers the whole company (no per-person
//! subscription), and numbers are resolved through the current version; the cache of resolved
//! numbers is dropped when it changes, with the state of people who left.
//!
//! Every call goes through the toolkit ([`http::send`]): its answer is read in bounded chunks
//! (at most [`parse::MAX_BODY`]) within a deadline — `request_timeout_secs`, and for a long
//! poll its wait on top — and every failure is one [`CallError`]. Other failures than a lost
//! monitor (unreachable, timed out, `5xx`, `429`, unreadable answers) back off with jitter
//! ([`Backoff`], from 0.5 s doubling to `max_backoff_secs`), never less than a `Retry-After`;
//! after `failures_before_down` in a row the feed is marked down until a poll or resync
//! succeeds. Once a second (also while a poll waits) absences that start or end are
//! re-evaluated and the health details refreshed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::map::{self, Line, Outcome, Person, Phone, Reasons};
use super::parse::{self, EventKind, Party, UserInfo};
use super::MbnConfig;
use crate::common::backoff::Backoff;
use crate::common::http::{self, CallError, Limits};
use crate::common::oauth;
use presence_actors::directory::{Directory, UserIdx};
use presence_actors::model::{now_ms, rfc3339, Signal, UnixMs};
use presence_actors::provider::ProviderContext;

/// First wait after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Wait assumed when MBN answers `429` without `Retry-After` (the back-off decides then).
const DEFAULT_RETRY: Duration = Duration::ZERO;
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

/// True when a failed monitor refresh or poll says the monitor or its cursor is gone
/// (`404`/`410`). Elsewhere (login, monitor start, status list) those are plain failures.
fn gone(e: &CallError) -> bool {
    matches!(e.status(), Some(404 | 410))
}

/// True when MBN refused the session's token (`401`, e.g. code 40106: expired).
fn token_refused(e: &CallError) -> bool {
    e.status() == Some(401)
}

/// Why a round ended early. The same `404` means "gone" on a monitor's refresh or poll and a
/// wrong path elsewhere, so the calls that can lose the monitor say so where they fail.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// A call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The monitor or its cursor is gone ([`gone`]).
    #[error("monitor or cursor gone: {0}")]
    MonitorGone(CallError),
}

impl Failure {
    /// A monitor call's failure: [`Failure::MonitorGone`] when [`gone`].
    fn of_monitor(e: CallError) -> Failure {
        if gone(&e) {
            Failure::MonitorGone(e)
        } else {
            Failure::Call(e)
        }
    }
}

impl From<parse::ParseError> for Failure {
    fn from(e: parse::ParseError) -> Self {
        Failure::Call(e.into())
    }
}

/// One call within `limits` (JSON accepted): the body of a 2xx answer, else the failure it
/// stands for. An owned future, so the task can do housekeeping while a long poll waits.
async fn call(req: reqwest::RequestBuilder, limits: Limits) -> Result<Vec<u8>, CallError> {
    http::send(req.header("accept", "application/json"), limits).await?.into_body(DEFAULT_RETRY)
}

/// `req` with a JSON body.
fn with_json(req: reqwest::RequestBuilder, body: String) -> reqwest::RequestBuilder {
    req.header("content-type", "application/json").body(body)
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
    /// A poll of it has succeeded.
    polled: bool,
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
    instances: map::Instances,
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
    /// The live directory's versions: numbers are resolved through the current one, and the
    /// cache of resolved numbers is dropped when it changes.
    directory: tokio::sync::watch::Receiver<Arc<Directory>>,
    logged_unknown: HashSet<String>,
    failures: u32,
    backoff: Backoff,
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
        let instances = map::Instances::of(&ctx.name);
        let directory = ctx.directory_changes();
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
            directory,
            logged_unknown: HashSet::new(),
            failures: 0,
            backoff: Backoff::new(FIRST_BACKOFF, Duration::from_secs(cfg.max_backoff_secs)),
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

    /// One round: whatever is due, then one poll; errors handled (with a back-off when needed).
    async fn step(&mut self) {
        self.housekeeping();
        match self.advance().await {
            Ok(()) => {
                self.failures = 0;
                self.backoff.reset();
            }
            Err(Failure::MonitorGone(e)) => self.monitor_lost(e).await,
            Err(Failure::Call(e)) => self.on_error(e).await,
        }
        self.report();
    }

    async fn advance(&mut self) -> Result<(), Failure> {
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

    /// The monitor or its cursor is gone: events may have been missed, so the feed goes down
    /// now, and the next round starts a new monitor and resyncs. A monitor lost before any poll
    /// of it succeeded (an events path that is always `404`) waits its back-off first, so a
    /// peer that never keeps a monitor gets no tight loop of starts and resyncs.
    async fn monitor_lost(&mut self, e: CallError) {
        self.stats.monitors_lost += 1;
        let status = e.status().unwrap_or_default();
        warn!(provider = %self.ctx.name, status, error = %e, "The MBN monitor or its cursor is gone; starting a new monitor and resyncing (stale meanwhile).");
        self.ctx.feed.record_error(&format!("monitor lost (HTTP {status}); resyncing"));
        let old = self.monitor.take();
        self.cursor = None;
        self.need_resync = true;
        // Health first, so whoever sees the feed go down sees why.
        self.report();
        self.set_down("resyncing");
        // A lost cursor can leave the monitor alive: stop it (best effort).
        if let (410, Some(m)) = (status, &old) {
            let _ = tokio::time::timeout(STOP_TIMEOUT, self.delete_monitor(&m.id)).await;
        }
        if old.is_some_and(|m| !m.polled) {
            let wait = self.backoff.next_delay();
            self.idle(wait).await;
        }
    }

    async fn on_error(&mut self, e: CallError) {
        if token_refused(&e) {
            self.stats.token_rejections += 1;
            self.rejections_in_a_row += 1;
            if self.rejections_in_a_row == 1 {
                // Expired or revoked: log in again now; the monitor and the cursor stay.
                info!(provider = %self.ctx.name, error = %e, "MBN refused the token; logging in again.");
                self.session = None;
                return;
            }
        }
        self.failures += 1;
        if token_refused(&e) || matches!(e, CallError::Token(_)) {
            self.session = None;
        }
        // Never sooner than the peer asked, even past `max_backoff_secs`.
        let delay = self.backoff.next_delay();
        let wait = e.retry_after().map_or(delay, |h| h.max(delay));
        self.ctx.feed.record_error(&e.to_string());
        warn!(provider = %self.ctx.name, error = %e, failures = self.failures, retry_in = ?wait, "MBN call failed.");
        if self.failures >= self.cfg.failures_before_down {
            self.set_down("down");
        } else if self.ctx.feed.is_up() {
            self.ctx.feed.set_state("retrying");
        }
        self.report();
        self.idle(wait).await;
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

    /// The limits of a call that is not a long poll.
    fn limits(&self) -> Limits {
        Limits::new(parse::MAX_BODY, Duration::from_secs(self.cfg.request_timeout_secs))
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
        let limits = self.limits();
        let form = oauth::password_form(&cfg.username, &cfg.password, cfg.scope.as_deref());
        let basic = Some((cfg.client_id.as_str(), cfg.client_secret.as_str()));
        let token_limits = Limits::new(oauth::TOKEN_LIMITS.max_body, limits.timeout);
        let token = oauth::request_token(&http, &cfg.token_url, form, basic, token_limits).await?;
        let access = parse::header_token("access_token", &token.access_token)?;

        let req = http.get(cfg.url(&cfg.paths.user_info)).bearer_auth(&access);
        let info = parse::parse_user_info(&call(req, limits).await?)?;
        let req = with_json(http.post(cfg.url(&cfg.paths.status_token)).bearer_auth(&access), "{}".into());
        let status = parse::parse_status_token(&call(req, limits).await?)?;
        let login = parse::csta_login_body(&status.token);
        let req = with_json(http.post(cfg.url(&cfg.paths.csta_token)).bearer_auth(&access), login);
        let csta = parse::parse_csta_token(&call(req, limits).await?)?;

        let life = [Some(token.expires_in), status.expires_in, csta.expires_in].into_iter().flatten().min();
        let life = Duration::from_secs(life.unwrap_or(oauth::DEFAULT_EXPIRES_IN).clamp(1, 30 * 86_400));
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

    /// A request to the API with the session's tokens: the bearer token and `iface`'s token.
    fn request(
        &self,
        method: reqwest::Method,
        url: String,
        iface: Iface,
    ) -> Result<reqwest::RequestBuilder, CallError> {
        let s = self.session.as_ref().ok_or_else(|| CallError::Token("no session".into()))?;
        let req = self.ctx.http.request(method, url).bearer_auth(&s.access);
        Ok(match iface {
            Iface::Status => req.header(parse::HEADER_STATUS_TOKEN, &s.status),
            Iface::Csta => req.header(parse::HEADER_CSTA_TOKEN, &s.csta),
        })
    }

    /// An API call with the session's tokens, within [`Runtime::limits`].
    async fn api(
        &mut self,
        method: reqwest::Method,
        url: String,
        iface: Iface,
        body: Option<String>,
    ) -> Result<Vec<u8>, CallError> {
        let mut req = self.request(method, url, iface)?;
        if let Some(b) = body {
            req = with_json(req, b);
        }
        let body = call(req, self.limits()).await?;
        self.rejections_in_a_row = 0;
        Ok(body)
    }

    // -----------------------------------------------------------------------------------------
    // The monitor

    fn set_monitor(&mut self, id: String, expires_in: Option<u64>, polled: bool) {
        let life = expires_in.unwrap_or(self.cfg.monitor_expires_secs).clamp(2, 30 * 86_400);
        let refresh = self.cfg.monitor_refresh_secs.min(life / 2).max(1);
        self.monitor = Some(Monitor {
            id,
            refresh_at: Instant::now() + Duration::from_secs(refresh),
            expires_at: now_ms() + life as i64 * 1000,
            polled,
        });
    }

    async fn start_monitor(&mut self) -> Result<(), CallError> {
        if !self.ctx.feed.is_up() {
            self.ctx.feed.set_state("starting_monitor");
        }
        let company = self.session.as_ref().and_then(|s| s.info.company_id.clone());
        let body = parse::monitor_start_body(company.as_deref(), self.cfg.monitor_expires_secs);
        let url = self.cfg.url(&self.cfg.paths.monitor_start);
        let bytes = self.api(reqwest::Method::POST, url, Iface::Csta, Some(body)).await?;
        let m = parse::parse_monitor(&bytes)?;
        info!(provider = %self.ctx.name, monitor = %m.id, expires_in = ?m.expires_in, "MBN enterprise monitor started.");
        self.set_monitor(m.id, m.expires_in, false);
        self.cursor = None;
        self.need_resync = true;
        self.stats.monitors_started += 1;
        Ok(())
    }

    async fn refresh_monitor(&mut self) -> Result<(), Failure> {
        let Some((id, polled)) = self.monitor.as_ref().map(|m| (m.id.clone(), m.polled)) else { return Ok(()) };
        let url = self.cfg.url(&parse::path_with_id(&self.cfg.paths.monitor, &id));
        let body = parse::monitor_refresh_body(self.cfg.monitor_expires_secs);
        let bytes = self.api(reqwest::Method::PUT, url, Iface::Csta, Some(body)).await.map_err(Failure::of_monitor)?;
        let expires_in = parse::parse_monitor(&bytes).ok().and_then(|m| m.expires_in);
        self.set_monitor(id, expires_in, polled);
        self.stats.monitor_refreshes += 1;
        debug!(provider = %self.ctx.name, "MBN monitor refreshed.");
        Ok(())
    }

    async fn delete_monitor(&mut self, id: &str) {
        let url = self.cfg.url(&parse::path_with_id(&self.cfg.paths.monitor, id));
        if let Err(e) = self.api(reqwest::Method::DELETE, url, Iface::Csta, None).await {
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
            let q = parse::status_list_query(page.as_deref());
            let base = self.cfg.url(&self.cfg.paths.status_list);
            let url = if q.is_empty() { base } else { format!("{base}?{q}") };
            let bytes = self.api(reqwest::Method::GET, url, Iface::Status, None).await?;
            let p = parse::parse_status_list(&bytes)?;
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
                    if lines.len() < map::MAX_LINES_PER_PERSON || lines.contains_key(&line) {
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

    /// One long poll: it waits at most `poll_wait_secs` (and no longer than the next monitor
    /// refresh or session renewal), so its deadline is that wait plus `request_timeout_secs`.
    async fn poll(&mut self) -> Result<(), Failure> {
        // What led here (login, monitor, resync) shows in health before the poll waits.
        self.report();
        let (Some(m), Some(s)) = (&self.monitor, &self.session) else { return Ok(()) };
        let now = Instant::now();
        let until = m.refresh_at.min(s.renew_at).saturating_duration_since(now).as_secs();
        let wait = self.cfg.poll_wait_secs.min(until).max(1);
        let path = parse::path_with_id(&self.cfg.paths.events, &m.id);
        let url = format!("{}?{}", self.cfg.url(&path), parse::events_query(wait, self.cursor.as_deref()));
        let req = self.request(reqwest::Method::GET, url, Iface::Csta)?;
        let limits = self.limits();
        // An owned future: the task keeps absences and health current while the poll waits.
        let fut = call(req, Limits::new(limits.max_body, Duration::from_secs(wait) + limits.timeout));
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
        let body = answer.map_err(Failure::of_monitor)?;
        self.rejections_in_a_row = 0;
        if let Some(m) = self.monitor.as_mut() {
            m.polled = true;
        }
        let batch = parse::parse_events(&body)?;
        if batch.events.is_empty() {
            self.stats.empty_polls += 1;
        }
        if let Some(c) = batch.cursor {
            self.cursor = Some(c);
        }
        self.apply_events(batch.events);
        Ok(())
    }

    fn apply_events(&mut self, events: Vec<Result<parse::Event, parse::ParseError>>) {
        self.follow_directory();
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
                EventKind::DeviceStatus(parse::DeviceStatus::Other(s)) => Some(format!("device status {s}")),
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

    /// The directory changed (checked once a second, also while a poll waits): numbers are
    /// resolved afresh — a newcomer's number finds them, a leaver's finds nobody — and the
    /// state of people no longer in the directory is dropped. There is no per-person
    /// subscription: the enterprise monitor covers every user of the company.
    fn follow_directory(&mut self) {
        if !self.directory.has_changed().unwrap_or(false) {
            return;
        }
        let dir = self.directory.borrow_and_update().clone();
        debug!(provider = %self.ctx.name, cached = self.resolved.len(), "Directory changed; MBN numbers are resolved afresh.");
        self.resolved.clear();
        self.unresolved.clear();
        self.people.retain(|idx, _| dir.contains(*idx));
        self.with_absences.retain(|idx| dir.contains(*idx));
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
            out.push(map::absence_signal(absence.as_ref(), &self.reasons, &self.instances, now));
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
        self.follow_directory();
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
    use crate::common::http::Answer;
    use crate::common::test_peer::{Reply, Request, TestPeer};
    use presence_actors::directory::{Directory, NumberPlan};
    use presence_actors::hub::SinkEvent;
    use presence_actors::provider::TestHarness;
    use std::sync::{Arc, Mutex};

    #[test]
    fn numbers_key_lines_by_digits() {
        assert_eq!(line_key("+47 912 34 567"), "+4791234567");
        assert_eq!(line_key("072-128 16 05"), "0721281605");
    }

    #[test]
    fn answers_map_to_errors() {
        let fail = |status: u16, body: &str| Answer::new(status, body).into_body(DEFAULT_RETRY).unwrap_err();
        assert_eq!(Answer::new(204, "").into_body(DEFAULT_RETRY), Ok(Vec::new()));
        let expired = fail(401, r#"{"code":40106,"message":"Access token expired"}"#);
        assert!(token_refused(&expired) && !gone(&expired));
        assert_eq!(expired.to_string(), "HTTP 401: 40106: Access token expired");
        assert!(!token_refused(&fail(403, "")), "only 401 says the token is spent");
        for status in [404, 410] {
            let f = Failure::of_monitor(fail(status, ""));
            assert!(matches!(f, Failure::MonitorGone(e) if e.status() == Some(status)));
        }
        assert!(matches!(Failure::of_monitor(fail(503, "")), Failure::Call(_)));
        assert!(matches!(Failure::of_monitor(CallError::TimedOut(Duration::from_secs(2))), Failure::Call(_)));
        let mut busy = Answer::new(503, "");
        busy.retry_after = Some(Duration::from_secs(2));
        assert_eq!(busy.into_body(DEFAULT_RETRY).unwrap_err().retry_after(), Some(Duration::from_secs(2)));
    }

    /// A scripted MBN: logins and monitor starts succeed; `events` answers every poll. Every
    /// request is also kept in the returned list.
    async fn peer(events: fn() -> Reply) -> (TestPeer, Arc<Mutex<Vec<Request>>>) {
        let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
        let log = seen.clone();
        let peer = TestPeer::start(move |r| {
            log.lock().unwrap().push(r.clone());
            match (r.method.as_str(), r.path.split('?').next().unwrap_or_default()) {
                ("POST", "/oauth/v2/token") => Reply::Status(200, r#"{"access_token":"a1","expires_in":3600}"#.into()),
                ("GET", "/catalog/userInfo") => Reply::Status(200, r#"{"companyId":"NO-1"}"#.into()),
                ("POST", "/status/token") => Reply::Status(200, r#"{"token":"s1"}"#.into()),
                ("POST", "/csta/authentication/token") => Reply::Status(200, r#"{"cstaToken":"c1"}"#.into()),
                ("POST", "/csta/monitor/enterprise") => Reply::Status(201, r#"{"monitorId":"m1"}"#.into()),
                ("GET", "/status/users") => Reply::Status(200, r#"{"users":[]}"#.into()),
                ("GET", "/csta/monitor/m1/events") => events(),
                _ => Reply::Status(204, String::new()),
            }
        })
        .await;
        (peer, seen)
    }

    fn runtime(peer: &TestPeer, edit: impl FnOnce(&mut MbnConfig)) -> (Runtime, TestHarness) {
        let mut cfg = MbnConfig::new("mbn", &peer.url, "client", "secret", "api-user", "pw");
        cfg.token_url = format!("{}/oauth/v2/token", peer.url);
        edit(&mut cfg);
        cfg.validate().expect("a valid config");
        let dir = Directory::build(Vec::new(), &NumberPlan::sweden()).expect("a directory");
        let (ctx, harness) = ProviderContext::for_test("mbn", dir, "http://127.0.0.1:9");
        (Runtime::new(ctx, cfg), harness)
    }

    /// The directory changes while the provider runs: a number cached as nobody's finds the
    /// newcomer who has it now, the leaver's number finds nobody, and the leaver's state is
    /// dropped — without a restart.
    #[tokio::test]
    async fn numbers_follow_the_live_directory() {
        use presence_actors::directory::{Person, Phone as DirPhone, PhoneKind};
        let (peer, _) = peer(|| Reply::Status(200, "{}".into())).await;
        let (mut rt, h) = runtime(&peer, |_| {});
        let with = |id: &str, n: &str| Person { phones: vec![DirPhone { kind: PhoneKind::Mobile, number: n.into(), e164: None }], ..Person::new(id, id) };
        let party = |n: &str| Party { user_id: None, msisdn: Some(n.into()) };
        let (dir, _) = h.directory.current().next(vec![with("ada", "+46701111111")]).expect("v1");
        let dir = dir.expect("the version changes something");
        h.directory.replace(Arc::new(dir));
        rt.housekeeping();
        let ada = h.directory.current().by_id("ada").expect("Ada");
        assert_eq!(rt.resolve(&party("+46701111111")), Some((ada, "+46701111111".into())));
        assert_eq!(rt.resolve(&party("+46702222222")), None, "nobody's yet (and cached)");
        rt.people.insert(ada, super::Person::default());

        let (dir, _) = h.directory.current().next(vec![with("bo", "+46702222222")]).expect("v2");

        let dir = dir.expect("the version changes something");
        h.directory.replace(Arc::new(dir));
        rt.housekeeping();
        let bo = h.directory.current().by_id("bo").expect("Bo");
        assert_eq!(rt.resolve(&party("+46702222222")), Some((bo, "+46702222222".into())), "the newcomer is found");
        assert_eq!(rt.resolve(&party("+46701111111")), None, "the leaver is not");
        assert!(!rt.people.contains_key(&ada), "the leaver's state is dropped");
    }

    fn last_error(h: &TestHarness) -> Option<String> {
        h.feed.report().last_error
    }

    #[tokio::test]
    async fn the_login_chain_sends_basic_client_auth_and_the_session_tokens() {
        let (peer, seen) = peer(|| Reply::Status(200, r#"{"cursor":"1-1","events":[]}"#.into())).await;
        let (rt, harness) = runtime(&peer, |_| {});
        let task = tokio::spawn(rt.run());
        let t0 = std::time::Instant::now();
        while peer.count("GET", "/csta/monitor/m1/events") < 2 {
            assert!(t0.elapsed() < Duration::from_secs(10), "no polls");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        harness.trigger.trigger();
        task.await.unwrap();
        let seen = seen.lock().unwrap().clone();
        let token = seen.iter().find(|r| r.path == "/oauth/v2/token").expect("a token request");
        assert_eq!(TestPeer::header(token, "authorization"), Some("Basic Y2xpZW50OnNlY3JldA=="));
        assert_eq!(String::from_utf8_lossy(&token.body), "grant_type=password&username=api-user&password=pw");
        let csta = seen.iter().find(|r| r.path == "/csta/authentication/token").expect("a CSTA login");
        assert_eq!(TestPeer::header(csta, "authorization"), Some("Bearer a1"));
        assert_eq!(csta.body, br#"{"statusToken":"s1"}"#);
        let poll = seen.iter().find(|r| r.path.starts_with("/csta/monitor/m1/events")).expect("a poll");
        assert_eq!(poll.path, "/csta/monitor/m1/events?timeout=25");
        assert_eq!(TestPeer::header(poll, "authorization"), Some("Bearer a1"));
        assert_eq!(TestPeer::header(poll, parse::HEADER_CSTA_TOKEN), Some("c1"));
        let next = seen.iter().filter(|r| r.path.starts_with("/csta/monitor/m1/events")).nth(1).expect("a second poll");
        assert_eq!(next.path, "/csta/monitor/m1/events?timeout=25&cursor=1-1", "from the cursor");
        assert_eq!(peer.count("DELETE", "/csta/monitor/m1"), 1, "the monitor is deleted at shutdown");
    }

    #[tokio::test]
    async fn a_monitor_that_is_gone_at_once_is_not_restarted_in_a_tight_loop() {
        let (peer, _) = peer(|| Reply::Status(404, r#"{"code":"404","message":"no such monitor"}"#.into())).await;
        let (rt, mut harness) = runtime(&peer, |c| c.max_backoff_secs = 1);
        let task = tokio::spawn(rt.run());
        tokio::time::sleep(Duration::from_secs(2)).await;
        harness.trigger.trigger();
        task.await.unwrap();
        let starts = peer.count("POST", "/csta/monitor/enterprise");
        assert!((2..=8).contains(&starts), "{starts} monitor starts in 2 s");
        assert_eq!(peer.count("POST", "/oauth/v2/token"), 1, "the session is kept");
        let error = last_error(&harness);
        assert!(error.as_deref().is_some_and(|e| e.contains("monitor lost (HTTP 404)")), "{error:?}");
        let ups: Vec<bool> = harness
            .drain()
            .into_iter()
            .filter_map(|e| if let SinkEvent::Feed(up) = e { Some(up) } else { None })
            .collect();
        assert_eq!(&ups[..2], [true, false], "up after the resync, down when the monitor is lost");
    }

    #[tokio::test]
    async fn a_long_poll_that_hangs_fails_at_its_wait_plus_the_request_timeout() {
        let (peer, _) = peer(|| Reply::Hang).await;
        let (rt, harness) = runtime(&peer, |c| {
            c.poll_wait_secs = 1;
            c.request_timeout_secs = 1;
            c.failures_before_down = 1;
        });
        let task = tokio::spawn(rt.run());
        let t0 = std::time::Instant::now();
        while last_error(&harness).is_none() {
            assert!(t0.elapsed() < Duration::from_secs(10), "the poll never timed out");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(t0.elapsed() >= Duration::from_secs(2), "{:?}", t0.elapsed());
        assert_eq!(last_error(&harness).as_deref(), Some("no answer within 2 s"));
        assert!(!harness.feed.is_up());
        harness.trigger.trigger();
        task.await.unwrap();
    }
}
