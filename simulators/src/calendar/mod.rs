//! A calendar free/busy simulator for the three protocols the calendar provider speaks, from
//! the documented shapes (sources in docs/ARCHITECTURE.md, § Protocol references), plus the
//! two token endpoints in front of them. One file per job:
//!
//! - `tokens.rs`: `POST /{tenant}/oauth2/v2.0/token` (Entra `client_credentials`) and
//!   `POST /google/token` (Google `refresh_token`), and the bearer-token check of the data
//!   endpoints.
//! - `graph.rs`: `POST /v1.0/users/{user}/calendar/getSchedule` (Microsoft Graph).
//! - `ews.rs`: `POST /EWS/Exchange.asmx` (Exchange EWS `GetUserAvailability` over SOAP), its
//!   faults, the small XML scan that reads the request, and the EWS retirement block.
//! - `google.rs`: `POST /calendar/v3/freeBusy` (Google Calendar).
//! - `demo.rs`: the demo company's calendars ([`CalendarSim::seed_demo`],
//!   [`CalendarSim::drive_demo`]).
//! - this file: [`CalendarSim`] (settings, state, start, URLs and the driving API), what the
//!   three data endpoints share (merged free/busy digits, time parsing), and the gate that
//!   slows, throttles and fails them as [`Misbehave`] says.
//!
//! Every mailbox exists with an empty calendar unless [`CalendarSim::set_events`],
//! [`CalendarSim::add_event`] or [`CalendarSim::seed_demo`] gave it events; a mailbox ending in
//! [`UNKNOWN_DOMAIN`] does not exist (Graph and EWS `ErrorMailRecipientNotFound`, Google
//! `notFound`), so tests can exercise both. Mailboxes are case-insensitive.
//!
//! Tests and the demo drive it through [`CalendarSim`]'s methods; [`Misbehave`] makes it
//! throttle (Graph and Google `429` + `Retry-After`, EWS `ErrorServerBusy` with
//! `BackOffMilliseconds`), fail (`503`), slow down, truncate bodies, or refuse EWS as Exchange
//! Online does once EWS is retired (HTTP 403, empty body).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::web;

use crate::Server;

mod demo;
mod ews;
mod google;
mod graph;
mod tokens;
#[cfg(test)]
mod tests;

pub use ews::{MAX_EWS_MAILBOXES, MAX_EWS_WINDOW_DAYS};
pub use google::MAX_GOOGLE_ITEMS;
pub use graph::{MAX_GRAPH_SCHEDULES, MAX_GRAPH_WINDOW_DAYS};

use tokens::TokenKind;

/// Mailboxes ending in this (case-insensitive) do not exist.
pub const UNKNOWN_DOMAIN: &str = "@unknown.invalid";

const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;

/// Settings of a [`CalendarSim`].
#[derive(Debug, Clone)]
pub struct CalendarSimConfig {
    /// Tenant id in the Entra token URL.
    pub tenant: String,
    /// The Entra app's client id (Graph, and EWS with a bearer token).
    pub client_id: String,
    /// The Entra app's secret.
    pub client_secret: String,
    /// EWS Basic-auth user name.
    pub ews_username: String,
    /// EWS Basic-auth password.
    pub ews_password: String,
    /// Google OAuth client id.
    pub google_client_id: String,
    /// Google OAuth client secret.
    pub google_client_secret: String,
    /// The Google refresh token that is accepted.
    pub google_refresh_token: String,
    /// Lifetime of issued access tokens (Entra and Google).
    pub token_lifetime: Duration,
}

impl Default for CalendarSimConfig {
    fn default() -> Self {
        CalendarSimConfig {
            tenant: "sim-tenant".into(),
            client_id: "sim-client".into(),
            client_secret: "sim-secret".into(),
            ews_username: "svc-ews@sim.example".into(),
            ews_password: "sim-ews-password".into(),
            google_client_id: "sim-google-client.apps.googleusercontent.com".into(),
            google_client_secret: "sim-google-secret".into(),
            google_refresh_token: "sim-google-refresh-token".into(),
            token_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Free/busy status of an [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Free time (shown, never blocks).
    Free,
    /// Tentative.
    Tentative,
    /// Busy.
    Busy,
    /// Out of office.
    Oof,
    /// Working elsewhere.
    WorkingElsewhere,
}

impl Status {
    /// Digit in Graph's `availabilityView` and EWS's `MergedFreeBusy` (0 free and working
    /// elsewhere, 1 tentative, 2 busy, 3 OOF).
    fn digit(self) -> u8 {
        match self {
            Status::Free | Status::WorkingElsewhere => b'0',
            Status::Tentative => b'1',
            Status::Busy => b'2',
            Status::Oof => b'3',
        }
    }
}

/// One calendar item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Start, ms since the epoch (inclusive).
    pub start: i64,
    /// End, ms since the epoch (exclusive).
    pub end: i64,
    /// Free/busy status.
    pub status: Status,
    /// Subject (never sent for private events).
    pub subject: Option<String>,
    /// Location (never sent for private events).
    pub location: Option<String>,
    /// Marked private: only times and status are shown.
    pub private: bool,
}

impl Event {
    fn overlaps(&self, start: i64, end: i64) -> bool {
        self.end > self.start && self.start < end && self.end > start
    }
}

/// Ways to misbehave, set with [`CalendarSim::misbehave`]. The counters are shared by the
/// three data endpoints (getSchedule, GetUserAvailability, freeBusy), not the token endpoints.
#[derive(Debug, Clone, Default)]
pub struct Misbehave {
    /// Throttle this many requests: Graph and Google `429` + `Retry-After: retry_after_secs`;
    /// EWS HTTP 500 with an `ErrorServerBusy` fault whose `MessageXml` carries
    /// `BackOffMilliseconds` = `retry_after_secs` × 1000.
    pub throttle_next: u32,
    /// `Retry-After` seconds (EWS: the back-off) for those; at least 1.
    pub retry_after_secs: u64,
    /// Answer this many requests with `503` (or [`Misbehave::fail_status`]).
    pub fail_next: u32,
    /// The status of those failures (e.g. `500`); `0` means `503`.
    pub fail_status: u16,
    /// Delay every data answer by this long.
    pub slow: Duration,
    /// Truncate this many otherwise successful answers (half the body, status 200).
    pub malformed_next: u32,
    /// EWS answers HTTP 403 with an empty body, as Exchange Online does when EWS is blocked
    /// by its retirement (2026–2027).
    pub ews_retired: bool,
}

/// Counters, read with [`CalendarSim::stats`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CalSimStats {
    /// Token requests answered (Entra and Google, any status).
    pub token_requests: u64,
    /// getSchedule requests answered (any status).
    pub graph_requests: u64,
    /// GetUserAvailability requests answered (any status).
    pub ews_requests: u64,
    /// freeBusy requests answered (any status).
    pub google_requests: u64,
    /// Data requests throttled (429, or EWS ErrorServerBusy).
    pub throttled: u64,
    /// Data requests answered 503 by [`Misbehave::fail_next`].
    pub failed: u64,
    /// Answers truncated by [`Misbehave::malformed_next`].
    pub malformed: u64,
    /// Data requests refused for missing or bad credentials (401).
    pub unauthorized: u64,
    /// EWS requests refused with 403 because EWS is retired.
    pub retired_refusals: u64,
    /// Data requests that arrived while a Retry-After / BackOff of the same service was still
    /// running.
    pub early_after_retry_after: u64,
    /// Most mailboxes named in one data request (including refused ones).
    pub max_mailboxes_in_request: u64,
    /// Mailboxes answered with data.
    pub mailboxes_answered: u64,
    /// Mailboxes answered with a per-mailbox "not found" error.
    pub unknown_mailboxes: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Graph = 0,
    Ews = 1,
    Google = 2,
}

struct State {
    cfg: CalendarSimConfig,
    calendars: HashMap<String, Vec<Event>>,
    tokens: HashMap<String, (TokenKind, Instant)>,
    next_token: u64,
    retry_until: [Option<Instant>; 3],
    misbehave: Misbehave,
    stats: CalSimStats,
}

impl State {
    /// The events of `mailbox` overlapping `[start, end)`, by start.
    fn events_in(&self, mailbox: &str, start: i64, end: i64) -> Vec<Event> {
        let mut v: Vec<Event> = self
            .calendars
            .get(&mailbox.to_lowercase())
            .map(|evs| evs.iter().filter(|e| e.overlaps(start, end)).cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|e| (e.start, e.end));
        v
    }

    fn note_mailboxes(&mut self, n: usize) {
        self.stats.max_mailboxes_in_request = self.stats.max_mailboxes_in_request.max(n as u64);
    }

    /// The body to send: `body`, or its first half when [`Misbehave::malformed_next`] asks
    /// for a truncated answer (one is used up).
    fn finish(&mut self, body: String) -> Vec<u8> {
        let mut b = body.into_bytes();
        if self.misbehave.malformed_next > 0 {
            self.misbehave.malformed_next -= 1;
            self.stats.malformed += 1;
            b.truncate(b.len() / 2);
        }
        b
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_unknown(mailbox: &str) -> bool {
    mailbox.trim().is_empty() || mailbox.trim().to_lowercase().ends_with(UNKNOWN_DOMAIN)
}

/// `strftime` of a time in UTC; empty when out of range.
fn utc_fmt(ms: i64, pattern: &str) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.strftime(pattern).to_string()).unwrap_or_default()
}

/// A time with `Z` or an offset, or a naive date-time in `zone` (`None`, empty or `UTC`:
/// UTC; otherwise an IANA name). `None` when unreadable.
fn parse_time(s: &str, zone: Option<&str>) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t.as_millisecond());
    }
    let dt = s.parse::<jiff::civil::DateTime>().ok()?;
    let tz = match zone.map(str::trim) {
        None | Some("") => jiff::tz::TimeZone::UTC,
        Some(z) if z.eq_ignore_ascii_case("utc") || z.eq_ignore_ascii_case("etc/utc") => jiff::tz::TimeZone::UTC,
        Some(z) => jiff::tz::TimeZone::get(z).ok()?,
    };
    dt.to_zoned_datetime(tz).ok().map(|z| z.timestamp().as_millisecond())
}

/// Merged free/busy digits of `events` over `[start, end)` in `interval_ms` slots; the highest
/// digit wins in each slot. The caller bounds the slot count.
fn merged_view(events: &[Event], start: i64, end: i64, interval_ms: i64) -> String {
    if end <= start || interval_ms <= 0 {
        return String::new();
    }
    let slots = ((end - start + interval_ms - 1) / interval_ms) as usize;
    let mut d = vec![b'0'; slots];
    for e in events.iter().filter(|e| e.overlaps(start, end)) {
        let digit = e.status.digit();
        let first = ((e.start.max(start) - start) / interval_ms) as usize;
        let last = ((e.end.min(end) - start - 1) / interval_ms) as usize;
        for slot in d.iter_mut().take(last.saturating_add(1)).skip(first) {
            *slot = (*slot).max(digit);
        }
    }
    String::from_utf8(d).unwrap_or_default()
}

/// The running simulator.
pub struct CalendarSim {
    server: Server,
    state: Shared,
}

impl CalendarSim {
    /// Starts on `127.0.0.1` (any free port).
    pub fn start(cfg: CalendarSimConfig) -> std::io::Result<CalendarSim> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), cfg)
    }

    /// Starts on `addr`.
    pub fn start_on(addr: SocketAddr, cfg: CalendarSimConfig) -> std::io::Result<CalendarSim> {
        let state: Shared = Arc::new(Mutex::new(State {
            cfg,
            calendars: HashMap::new(),
            tokens: HashMap::new(),
            next_token: 0,
            retry_until: [None; 3],
            misbehave: Misbehave::default(),
            stats: CalSimStats::default(),
        }));
        let st = state.clone();
        let server = Server::start(addr, move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(web::Data::new(st.clone()))
                .app_data(web::PayloadConfig::default().limit(8 * 1024 * 1024))
                .route("/{tenant}/oauth2/v2.0/token", web::post().to(tokens::entra_token))
                .route("/google/token", web::post().to(tokens::google_token))
                .route("/v1.0/users/{user}/calendar/getSchedule", web::post().to(graph::get_schedule))
                .route("/EWS/Exchange.asmx", web::post().to(ews::ews))
                .route("/calendar/v3/freeBusy", web::post().to(google::free_busy));
        })?;
        Ok(CalendarSim { server, state })
    }

    /// Base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The Graph base URL to configure (`…/v1.0`).
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.url())
    }

    /// The Entra token endpoint to configure (`…/{tenant}/oauth2/v2.0/token`).
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.url(), lock(&self.state).cfg.tenant)
    }

    /// The EWS endpoint to configure (`…/EWS/Exchange.asmx`).
    pub fn ews_url(&self) -> String {
        format!("{}/EWS/Exchange.asmx", self.url())
    }

    /// The Google Calendar base URL to configure (`…/calendar/v3`; clients POST
    /// `{google_url}/freeBusy`).
    pub fn google_url(&self) -> String {
        format!("{}/calendar/v3", self.url())
    }

    /// The Google token endpoint to configure (`…/google/token`).
    pub fn google_token_url(&self) -> String {
        format!("{}/google/token", self.url())
    }

    /// Replaces `mailbox`'s events (case-insensitive).
    pub fn set_events(&self, mailbox: &str, events: Vec<Event>) {
        lock(&self.state).calendars.insert(mailbox.to_lowercase(), events);
    }

    /// Adds one event to `mailbox`'s calendar.
    pub fn add_event(&self, mailbox: &str, event: Event) {
        lock(&self.state).calendars.entry(mailbox.to_lowercase()).or_default().push(event);
    }

    /// `mailbox`'s events, by start.
    pub fn events(&self, mailbox: &str) -> Vec<Event> {
        let mut v = lock(&self.state).calendars.get(&mailbox.to_lowercase()).cloned().unwrap_or_default();
        v.sort_by_key(|e| (e.start, e.end));
        v
    }

    /// Empties every calendar.
    pub fn clear(&self) {
        lock(&self.state).calendars.clear();
    }

    /// Sets the misbehaviour.
    pub fn misbehave(&self, m: Misbehave) {
        lock(&self.state).misbehave = m;
    }

    /// Counters so far.
    pub fn stats(&self) -> CalSimStats {
        lock(&self.state).stats.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Misbehaviour shared by the data endpoints.

enum Refusal {
    /// Throttled: wait this many seconds.
    Throttle(u64),
    /// A server error (503 unless [`Misbehave::fail_status`] says otherwise).
    Fail(u16),
}

/// Slowness, throttling and failures for one data request of `backend`.
async fn gate(state: &Shared, backend: Backend) -> Result<(), Refusal> {
    let slow = lock(state).misbehave.slow;
    if !slow.is_zero() {
        tokio::time::sleep(slow).await;
    }
    let mut g = lock(state);
    let now = Instant::now();
    let slot = backend as usize;
    if g.retry_until.get(slot).copied().flatten().is_some_and(|u| u > now) {
        g.stats.early_after_retry_after += 1;
    }
    if g.misbehave.throttle_next > 0 {
        g.misbehave.throttle_next -= 1;
        g.stats.throttled += 1;
        let secs = g.misbehave.retry_after_secs.max(1);
        if let Some(r) = g.retry_until.get_mut(slot) {
            *r = Some(now + Duration::from_secs(secs));
        }
        return Err(Refusal::Throttle(secs));
    }
    if g.misbehave.fail_next > 0 {
        g.misbehave.fail_next -= 1;
        g.stats.failed += 1;
        return Err(Refusal::Fail(if g.misbehave.fail_status == 0 { 503 } else { g.misbehave.fail_status }));
    }
    Ok(())
}

