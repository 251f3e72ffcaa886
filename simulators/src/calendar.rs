//! A calendar free/busy simulator for the three protocols the calendar provider speaks, from
//! the documented shapes (sources in docs/ARCHITECTURE.md, § Protocol references), plus the
//! two token endpoints in front of them:
//!
//! - `POST /{tenant}/oauth2/v2.0/token`: Entra `client_credentials` (app tokens, any scope),
//!   valid for Graph and for EWS's `Authorization: Bearer`.
//! - `POST /v1.0/users/{user}/calendar/getSchedule` (Graph, app token): ≤ 100 schedules, ≤ 62
//!   days, `availabilityViewInterval` 5–1440, answered in UTC (`Prefer: outlook.timezone` is
//!   ignored; `{user}` is not checked, as an app token may read any mailbox).
//!   `workingElsewhere` folds into digit `0` of `availabilityView`, as Graph does; private
//!   items carry no `subject` or `location`.
//! - `POST /EWS/Exchange.asmx` (SOAP `GetUserAvailability`, HTTP Basic or app token): ≤ 100
//!   mailboxes, ≤ 42 days, merged interval 5–1440, answers in request order in the request's
//!   `TimeZone` (its `Bias` only; daylight rules are ignored — the client sends UTC); every
//!   `RequestedView` is honoured (`DetailedMerged`, `Detailed`, `FreeBusyMerged`, `FreeBusy`,
//!   `MergedOnly`, `None`). Items get stable ids (mailbox hash + position); `IsMeeting` and
//!   `IsReminderSet` are true for busy and tentative items; private items have empty
//!   `Subject` and `Location`. Request-level errors are SOAP faults with HTTP 500, as Exchange
//!   sends them (`ErrorSchemaValidation` for a body that is not well-formed or lacks a
//!   required element, `ErrorMailboxDataArrayTooBig`, `ErrorTimeIntervalTooBig`, …). The
//!   request is read by a small, bounded, tolerant XML scan (no XML crate): well-formedness,
//!   the five predefined entities and character references, local names only.
//! - `POST /google/token` (Google `refresh_token` grant) and `POST /calendar/v3/freeBusy`
//!   (Google token): ≤ 50 items; busy intervals only (`Busy` and `Oof` events; tentative is
//!   not busy in Google), merged and clipped to the window.
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
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::graph::{graph_error, now_ms, Rng};
use crate::Server;
use presence_sip::body::xml_escape;

/// Mailboxes ending in this (case-insensitive) do not exist.
pub const UNKNOWN_DOMAIN: &str = "@unknown.invalid";
/// Most schedules per Graph getSchedule request.
pub const MAX_GRAPH_SCHEDULES: usize = 100;
/// Longest Graph getSchedule window, in days.
pub const MAX_GRAPH_WINDOW_DAYS: i64 = 62;
/// Most mailboxes per EWS GetUserAvailability request.
pub const MAX_EWS_MAILBOXES: usize = 100;
/// Longest EWS GetUserAvailability window, in days (Exchange's default).
pub const MAX_EWS_WINDOW_DAYS: i64 = 42;
/// Most items per Google freeBusy request (`calendarExpansionMax` ≤ 50).
pub const MAX_GOOGLE_ITEMS: usize = 50;

const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;
/// Deepest element nesting the EWS request scan accepts.
const MAX_XML_DEPTH: usize = 64;

const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const TYPES_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/types";
const MESSAGES_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";
const ERRORS_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/errors";

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

    fn graph(self) -> &'static str {
        match self {
            Status::Free => "free",
            Status::Tentative => "tentative",
            Status::Busy => "busy",
            Status::Oof => "oof",
            Status::WorkingElsewhere => "workingElsewhere",
        }
    }

    fn ews(self) -> &'static str {
        match self {
            Status::Free => "Free",
            Status::Tentative => "Tentative",
            Status::Busy => "Busy",
            Status::Oof => "OOF",
            Status::WorkingElsewhere => "WorkingElsewhere",
        }
    }

    /// Google's freeBusy reports these as busy.
    fn google_busy(self) -> bool {
        matches!(self, Status::Busy | Status::Oof)
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    /// Entra app token (Graph, EWS bearer).
    Entra,
    /// Google access token.
    Google,
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
    fn issue(&mut self, kind: TokenKind) -> (String, u64) {
        let now = Instant::now();
        self.tokens.retain(|_, (_, exp)| *exp > now);
        self.next_token += 1;
        let prefix = if kind == TokenKind::Entra { "eyJ0eXAi.sim" } else { "ya29.sim" };
        let token = format!("{prefix}-{}-{}", self.next_token, now_ms());
        let life = self.cfg.token_lifetime;
        self.tokens.insert(token.clone(), (kind, now + life));
        (token, life.as_secs())
    }

    /// True when `req` carries a live bearer token of `kind`.
    fn bearer_ok(&self, req: &HttpRequest, kind: TokenKind) -> bool {
        bearer_token(req).is_some_and(|t| self.tokens.get(t).is_some_and(|(k, exp)| *k == kind && *exp > Instant::now()))
    }

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

fn bearer_token(req: &HttpRequest) -> Option<&str> {
    req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim)
}

fn is_unknown(mailbox: &str) -> bool {
    mailbox.trim().is_empty() || mailbox.trim().to_lowercase().ends_with(UNKNOWN_DOMAIN)
}

/// `strftime` of a time in UTC; empty when out of range.
fn utc_fmt(ms: i64, pattern: &str) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.strftime(pattern).to_string()).unwrap_or_default()
}

/// Graph's `dateTime`: `2024-05-06T09:00:00.0000000`.
fn graph_time(ms: i64) -> String {
    format!("{}.{:03}0000", utc_fmt(ms, "%Y-%m-%dT%H:%M:%S"), ms.rem_euclid(1000))
}

/// Google's RFC 3339: `2024-05-06T09:00:00Z`.
fn google_time(ms: i64) -> String {
    utc_fmt(ms, "%Y-%m-%dT%H:%M:%SZ")
}

/// Google's echo of the window: `2024-05-06T00:00:00.000Z`.
fn google_time_ms(ms: i64) -> String {
    format!("{}.{:03}Z", utc_fmt(ms, "%Y-%m-%dT%H:%M:%S"), ms.rem_euclid(1000))
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

/// Google's busy list: busy events clipped to `[start, end)`, sorted, overlaps merged.
fn busy_periods(events: &[Event], start: i64, end: i64) -> Vec<(i64, i64)> {
    let mut spans: Vec<(i64, i64)> = events
        .iter()
        .filter(|e| e.status.google_busy() && e.overlaps(start, end))
        .map(|e| (e.start.max(start), e.end.min(end)))
        .collect();
    spans.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Standard base64 with padding (for comparing HTTP Basic credentials).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let byte = |i: usize| chunk.get(i).copied().unwrap_or(0);
        let b = [byte(0), byte(1), byte(2)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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
                .route("/{tenant}/oauth2/v2.0/token", web::post().to(entra_token))
                .route("/google/token", web::post().to(google_token))
                .route("/v1.0/users/{user}/calendar/getSchedule", web::post().to(get_schedule))
                .route("/EWS/Exchange.asmx", web::post().to(ews))
                .route("/calendar/v3/freeBusy", web::post().to(free_busy));
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
// Token endpoints.

type FormResult = Result<web::Form<HashMap<String, String>>, actix_web::Error>;

async fn entra_token(state: web::Data<Shared>, tenant: web::Path<String>, form: FormResult) -> HttpResponse {
    let mut g = lock(&state);
    g.stats.token_requests += 1;
    let oauth = |code: &str, desc: &str| HttpResponse::BadRequest().json(json!({ "error": code, "error_description": desc, "error_codes": [70000] }));
    if tenant.as_str() != g.cfg.tenant {
        return oauth("invalid_request", "AADSTS90002: Tenant not found. Check to make sure you have the correct tenant ID.");
    }
    let Ok(f) = form.map(web::Form::into_inner) else {
        return oauth("invalid_request", "AADSTS900144: The request body must contain the following parameter: 'grant_type'.");
    };
    if f.get("client_id") != Some(&g.cfg.client_id) || f.get("client_secret") != Some(&g.cfg.client_secret) {
        return HttpResponse::Unauthorized().json(json!({ "error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided." }));
    }
    if f.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth("unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type.");
    }
    let (access, life) = g.issue(TokenKind::Entra);
    HttpResponse::Ok().json(json!({ "token_type": "Bearer", "expires_in": life, "ext_expires_in": life, "access_token": access }))
}

async fn google_token(state: web::Data<Shared>, form: FormResult) -> HttpResponse {
    let mut g = lock(&state);
    g.stats.token_requests += 1;
    let Ok(f) = form.map(web::Form::into_inner) else {
        return HttpResponse::BadRequest().json(json!({ "error": "invalid_request", "error_description": "Required parameter is missing: grant_type" }));
    };
    if f.get("client_id") != Some(&g.cfg.google_client_id) || f.get("client_secret") != Some(&g.cfg.google_client_secret) {
        return HttpResponse::Unauthorized().json(json!({ "error": "invalid_client", "error_description": "Unauthorized" }));
    }
    match f.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {}
        Some(other) => {
            return HttpResponse::BadRequest()
                .json(json!({ "error": "unsupported_grant_type", "error_description": format!("Invalid grant_type: {other}") }))
        }
        None => {
            return HttpResponse::BadRequest().json(json!({ "error": "invalid_request", "error_description": "Required parameter is missing: grant_type" }))
        }
    }
    if f.get("refresh_token") != Some(&g.cfg.google_refresh_token) {
        return HttpResponse::BadRequest().json(json!({ "error": "invalid_grant", "error_description": "Bad Request" }));
    }
    let (access, life) = g.issue(TokenKind::Google);
    HttpResponse::Ok().json(json!({
        "access_token": access, "expires_in": life, "token_type": "Bearer",
        "scope": "https://www.googleapis.com/auth/calendar.freebusy",
    }))
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

// ---------------------------------------------------------------------------------------------
// Graph getSchedule.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleBody {
    schedules: Vec<String>,
    start_time: DateTimeZone,
    end_time: DateTimeZone,
    availability_view_interval: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DateTimeZone {
    date_time: String,
    time_zone: Option<String>,
}

fn working_hours_json() -> Value {
    json!({
        "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
        "startTime": "08:00:00.0000000",
        "endTime": "17:00:00.0000000",
        "timeZone": { "name": "UTC" },
    })
}

async fn get_schedule(state: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    {
        let mut g = lock(&state);
        g.stats.graph_requests += 1;
        if !g.bearer_ok(&req, TokenKind::Entra) {
            g.stats.unauthorized += 1;
            let msg = if bearer_token(&req).is_some() { "Access token validation failure." } else { "Access token is empty." };
            return graph_error(401, "InvalidAuthenticationToken", msg);
        }
    }
    match gate(&state, Backend::Graph).await {
        Err(Refusal::Throttle(secs)) => {
            return HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", secs.to_string()))
                .json(json!({ "error": { "code": "ApplicationThrottled", "message": "Application is over its MailboxConcurrency limit." } }))
        }
        Err(Refusal::Fail(503)) => return graph_error(503, "ServiceUnavailable", "The service is temporarily unavailable."),
        Err(Refusal::Fail(status)) => return graph_error(status, "InternalServerError", "An internal server error occurred."),
        Ok(()) => {}
    }
    let Ok(b) = serde_json::from_slice::<ScheduleBody>(&body) else {
        return graph_error(400, "RequestBodyRead", "The request body could not be read as a getSchedule request.");
    };
    let mut g = lock(&state);
    g.note_mailboxes(b.schedules.len());
    if b.schedules.is_empty() {
        return graph_error(400, "ErrorMailboxDataArrayEmpty", "At least one schedule is required.");
    }
    if b.schedules.len() > MAX_GRAPH_SCHEDULES {
        return graph_error(
            400,
            "ErrorMailboxDataArrayTooBig",
            &format!("Mailbox array too big: allowed size = {MAX_GRAPH_SCHEDULES}, actual size = {}.", b.schedules.len()),
        );
    }
    let (Some(start), Some(end)) = (
        parse_time(&b.start_time.date_time, b.start_time.time_zone.as_deref()),
        parse_time(&b.end_time.date_time, b.end_time.time_zone.as_deref()),
    ) else {
        return graph_error(400, "ErrorInvalidTimeZone", "startTime/endTime cannot be read (dateTime and an IANA or UTC timeZone).");
    };
    if end <= start {
        return graph_error(400, "ErrorInvalidTimeInterval", "The start time must be before the end time.");
    }
    if end - start > MAX_GRAPH_WINDOW_DAYS * DAY_MS {
        return graph_error(400, "ErrorTimeIntervalTooBig", &format!("The time window is longer than {MAX_GRAPH_WINDOW_DAYS} days."));
    }
    let interval = b.availability_view_interval.unwrap_or(30);
    if !(5..=1440).contains(&interval) {
        return graph_error(400, "ErrorInvalidMergedFreeBusyInterval", "availabilityViewInterval must be between 5 and 1440 minutes.");
    }
    let mut value = Vec::with_capacity(b.schedules.len());
    for id in &b.schedules {
        if is_unknown(id) {
            g.stats.unknown_mailboxes += 1;
            value.push(json!({
                "scheduleId": id, "availabilityView": "", "scheduleItems": [],
                "error": { "message": "The SMTP address has no mailbox associated with it.", "responseCode": "ErrorMailRecipientNotFound" },
            }));
            continue;
        }
        g.stats.mailboxes_answered += 1;
        let events = g.events_in(id, start, end);
        let items: Vec<Value> = events
            .iter()
            .map(|e| {
                let mut item = json!({
                    "isPrivate": e.private,
                    "status": e.status.graph(),
                    "start": { "dateTime": graph_time(e.start), "timeZone": "UTC" },
                    "end": { "dateTime": graph_time(e.end), "timeZone": "UTC" },
                });
                if !e.private {
                    item["subject"] = json!(e.subject.as_deref().unwrap_or(""));
                    item["location"] = json!(e.location.as_deref().unwrap_or(""));
                }
                item
            })
            .collect();
        value.push(json!({
            "scheduleId": id,
            "availabilityView": merged_view(&events, start, end, interval * MINUTE_MS),
            "scheduleItems": items,
            "workingHours": working_hours_json(),
        }));
    }
    let body = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.scheduleInformation)",
        "value": value,
    })
    .to_string();
    HttpResponse::Ok().content_type("application/json").body(g.finish(body))
}

// ---------------------------------------------------------------------------------------------
// Google freeBusy.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FreeBusyBody {
    time_min: Option<String>,
    time_max: Option<String>,
    #[serde(default)]
    items: Vec<FreeBusyItem>,
    group_expansion_max: Option<i64>,
    calendar_expansion_max: Option<i64>,
}

#[derive(Deserialize)]
struct FreeBusyItem {
    #[serde(default)]
    id: String,
}

fn google_error(status: u16, domain: &str, reason: &str, message: &str) -> HttpResponse {
    let name = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    };
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST)).json(json!({
        "error": { "code": status, "message": message, "errors": [{ "message": message, "domain": domain, "reason": reason }], "status": name }
    }))
}

async fn free_busy(state: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    {
        let mut g = lock(&state);
        g.stats.google_requests += 1;
        if !g.bearer_ok(&req, TokenKind::Google) {
            g.stats.unauthorized += 1;
            return google_error(
                401,
                "global",
                "authError",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            );
        }
    }
    match gate(&state, Backend::Google).await {
        Err(Refusal::Throttle(secs)) => {
            let mut r = google_error(429, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded");
            if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(actix_web::http::header::RETRY_AFTER, v);
            }
            return r;
        }
        Err(Refusal::Fail(status)) => return google_error(status, "global", "backendError", "The service is currently unavailable."),
        Ok(()) => {}
    }
    let Ok(b) = serde_json::from_slice::<FreeBusyBody>(&body) else {
        return google_error(400, "global", "parseError", "Parse Error");
    };
    let mut g = lock(&state);
    g.note_mailboxes(b.items.len());
    let (Some(min_s), Some(max_s)) = (b.time_min.as_deref(), b.time_max.as_deref()) else {
        return google_error(400, "global", "required", "Missing timeMin or timeMax parameter.");
    };
    // Google wants RFC 3339 with an offset here.
    let (Ok(start), Ok(end)) = (min_s.trim().parse::<jiff::Timestamp>(), max_s.trim().parse::<jiff::Timestamp>()) else {
        return google_error(400, "global", "invalid", "Bad Request");
    };
    let (start, end) = (start.as_millisecond(), end.as_millisecond());
    if end <= start {
        return google_error(400, "calendar", "timeRangeEmpty", "The specified time range is empty.");
    }
    if b.items.len() > MAX_GOOGLE_ITEMS || b.calendar_expansion_max.is_some_and(|n| !(1..=50).contains(&n)) {
        return google_error(400, "global", "tooManyCalendarsRequested", "Too many calendars requested.");
    }
    if b.group_expansion_max.is_some_and(|n| !(1..=100).contains(&n)) {
        return google_error(400, "global", "invalid", "Invalid value for groupExpansionMax.");
    }
    let mut calendars = serde_json::Map::new();
    for item in &b.items {
        if is_unknown(&item.id) {
            g.stats.unknown_mailboxes += 1;
            calendars.insert(item.id.clone(), json!({ "errors": [{ "domain": "global", "reason": "notFound" }], "busy": [] }));
            continue;
        }
        g.stats.mailboxes_answered += 1;
        let events = g.events_in(&item.id, start, end);
        let busy: Vec<Value> =
            busy_periods(&events, start, end).into_iter().map(|(s, e)| json!({ "start": google_time(s), "end": google_time(e) })).collect();
        calendars.insert(item.id.clone(), json!({ "busy": busy }));
    }
    let body = json!({
        "kind": "calendar#freeBusy",
        "timeMin": google_time_ms(start),
        "timeMax": google_time_ms(end),
        "calendars": calendars,
    })
    .to_string();
    HttpResponse::Ok().content_type("application/json; charset=UTF-8").body(g.finish(body))
}

// ---------------------------------------------------------------------------------------------
// EWS GetUserAvailability.

/// A SOAP fault as Exchange sends it (`faultcode` `a:{code}`, `detail` with the response code
/// and message, and `MessageXml` when given), with HTTP `status`.
fn soap_fault(status: u16, code: &str, message: &str, message_xml: &str) -> HttpResponse {
    let (code, message) = (xml_escape(code), xml_escape(message));
    let mut x = String::with_capacity(900 + message.len() * 2 + message_xml.len());
    x.push_str(r#"<?xml version="1.0" encoding="utf-8"?>"#);
    let _ = write!(
        x,
        r#"<s:Envelope xmlns:s="{SOAP_NS}"><s:Body><s:Fault><faultcode xmlns:a="{TYPES_NS}">a:{code}</faultcode><faultstring xml:lang="en-US">{message}</faultstring><detail><e:ResponseCode xmlns:e="{ERRORS_NS}">{code}</e:ResponseCode><e:Message xmlns:e="{ERRORS_NS}">{message}</e:Message>"#
    );
    if !message_xml.is_empty() {
        let _ = write!(x, r#"<t:MessageXml xmlns:t="{TYPES_NS}">{message_xml}</t:MessageXml>"#);
    }
    x.push_str("</detail></s:Fault></s:Body></s:Envelope>");
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("text/xml; charset=utf-8")
        .body(x)
}

/// `ErrorSchemaValidation` (HTTP 500) at byte `offset` of `doc`.
fn schema_fault(doc: &[u8], offset: usize, violation: &str) -> HttpResponse {
    let upto = doc.get(..offset.min(doc.len())).unwrap_or_default();
    let line = upto.iter().filter(|b| **b == b'\n').count() + 1;
    let col = upto.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    let violation = format!("{violation} Line {line}, position {col}.");
    let xml = format!(
        "<t:LineNumber>{line}</t:LineNumber><t:LinePosition>{col}</t:LinePosition><t:Violation>{}</t:Violation>",
        xml_escape(&violation)
    );
    soap_fault(500, "ErrorSchemaValidation", &format!("The request failed schema validation: {violation}"), &xml)
}

/// What a GetUserAvailability request asks, as read by [`read_ews_request`].
#[derive(Debug, Default)]
struct EwsQuery {
    saw_request: bool,
    mailboxes: Vec<String>,
    pending_address: Option<String>,
    bias: Option<String>,
    start: Option<String>,
    end: Option<String>,
    interval: Option<String>,
    view: Option<String>,
}

/// Reads the request's fields (see [`EwsQuery`]); `Err((offset, message))` when the body is
/// not well-formed XML.
fn read_ews_request(doc: &str) -> Result<EwsQuery, (usize, String)> {
    let mut q = EwsQuery::default();
    scan_xml(doc, |path, text| {
        let Some((&name, up)) = path.split_last() else { return };
        let parent = up.last().copied();
        let grandparent = up.len().checked_sub(2).and_then(|i| up.get(i)).copied();
        let under = |el: &str| up.contains(&el);
        match name {
            "GetUserAvailabilityRequest" => q.saw_request = true,
            "Address" if under("MailboxData") && under("MailboxDataArray") => q.pending_address = Some(text.trim().to_string()),
            "MailboxData" if parent == Some("MailboxDataArray") => {
                let a = q.pending_address.take().unwrap_or_default();
                q.mailboxes.push(a);
            }
            "Bias" if parent == Some("TimeZone") && grandparent == Some("GetUserAvailabilityRequest") => q.bias = Some(text.trim().to_string()),
            "StartTime" if parent == Some("TimeWindow") => q.start = Some(text.trim().to_string()),
            "EndTime" if parent == Some("TimeWindow") => q.end = Some(text.trim().to_string()),
            "MergedFreeBusyIntervalInMinutes" if under("FreeBusyViewOptions") => q.interval = Some(text.trim().to_string()),
            "RequestedView" if under("FreeBusyViewOptions") => q.view = Some(text.trim().to_string()),
            _ => {}
        }
    })?;
    Ok(q)
}

/// A small well-formedness scan: calls `on_close(path, text)` with the local names from the
/// root down to each element as it closes, and the element's own (entity-decoded) text.
/// Prolog, comments and CDATA are accepted; DTDs are refused (Exchange prohibits them).
/// `Err((byte offset, message))` on the first problem. Never panics; nesting is bounded.
fn scan_xml<'a>(doc: &'a str, mut on_close: impl FnMut(&[&'a str], &str)) -> Result<(), (usize, String)> {
    let mut i = if doc.starts_with('\u{feff}') { '\u{feff}'.len_utf8() } else { 0 };
    let mut names: Vec<&'a str> = Vec::new();
    let mut locals: Vec<&'a str> = Vec::new();
    let mut text = String::new();
    let mut seen_root = false;
    let err = |at: usize, m: &str| -> Result<(), (usize, String)> { Err((at, m.to_string())) };
    while let Some(rest) = doc.get(i..) {
        if rest.is_empty() {
            break;
        }
        if !rest.starts_with('<') {
            let len = rest.find('<').unwrap_or(rest.len());
            let raw = rest.get(..len).unwrap_or_default();
            if names.is_empty() {
                if !raw.trim().is_empty() {
                    return err(i, "Data at the root level is invalid.");
                }
            } else if let Err(m) = decode_text(raw, &mut text) {
                return err(i, m);
            }
            i += len;
            continue;
        }
        let skip = |open: usize, close: &str| rest.get(open..).and_then(|r| r.find(close)).map(|k| open + k + close.len());
        if rest.starts_with("<?") {
            let Some(n) = skip(2, "?>") else { return err(i, "Unexpected end of file in a processing instruction.") };
            i += n;
            continue;
        }
        if rest.starts_with("<!--") {
            let Some(n) = skip(4, "-->") else { return err(i, "Unexpected end of file in a comment.") };
            i += n;
            continue;
        }
        if rest.starts_with("<![CDATA[") {
            if names.is_empty() {
                return err(i, "Data at the root level is invalid.");
            }
            let Some(n) = skip(9, "]]>") else { return err(i, "Unexpected end of file in CDATA.") };
            text.push_str(rest.get(9..n - 3).unwrap_or_default());
            i += n;
            continue;
        }
        if rest.starts_with("<!") {
            return err(i, "For security reasons DTD is prohibited in this XML document.");
        }
        // A tag: find its '>' outside quoted attribute values.
        let mut quote: Option<char> = None;
        let mut close = None;
        for (k, c) in rest.char_indices().skip(1) {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '<') => return err(i + k, "'<' is an unexpected token."),
                (None, '>') => {
                    close = Some(k);
                    break;
                }
                _ => {}
            }
        }
        let Some(close) = close else { return err(i, "Unexpected end of file while parsing a tag.") };
        let inner = rest.get(1..close).unwrap_or_default();
        let tag_at = i;
        i += close + 1;
        if let Some(name) = inner.strip_prefix('/') {
            let name = name.trim_end();
            match names.pop() {
                Some(open) if open == name => {
                    on_close(&locals, &text);
                    locals.pop();
                    text.clear();
                }
                Some(open) => return err(tag_at, &format!("The '{open}' start tag does not match the end tag of '{name}'.")),
                None => return err(tag_at, "Unexpected end tag."),
            }
            continue;
        }
        let (inner, empty) = match inner.strip_suffix('/') {
            Some(x) => (x, true),
            None => (inner, false),
        };
        let name = inner.split(|c: char| c.is_whitespace()).next().unwrap_or_default();
        let valid = name.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if !valid {
            return err(tag_at, "Name cannot begin with this character.");
        }
        if names.is_empty() && seen_root {
            return err(tag_at, "There are multiple root elements.");
        }
        if names.len() >= MAX_XML_DEPTH {
            return err(tag_at, "Elements are nested too deeply.");
        }
        seen_root = true;
        text.clear();
        names.push(name);
        locals.push(name.rsplit(':').next().unwrap_or(name));
        if empty {
            on_close(&locals, "");
            names.pop();
            locals.pop();
        }
    }
    if !names.is_empty() {
        return err(doc.len(), "Unexpected end of file has occurred. The following elements are not closed.");
    }
    if !seen_root {
        return err(0, "Root element is missing.");
    }
    Ok(())
}

/// Appends `raw` to `out`, resolving the predefined entities and character references.
fn decode_text(raw: &str, out: &mut String) -> Result<(), &'static str> {
    let mut rest = raw;
    while let Some(k) = rest.find('&') {
        out.push_str(rest.get(..k).unwrap_or_default());
        let after = rest.get(k + 1..).unwrap_or_default();
        let Some(semi) = after.find(';').filter(|s| *s <= 10) else { return Err("An entity reference is not terminated.") };
        let name = after.get(..semi).unwrap_or_default();
        let c = match name {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(h) = name.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()
                } else {
                    name.strip_prefix('#').and_then(|d| d.parse::<u32>().ok())
                };
                match code.and_then(char::from_u32) {
                    Some(c) if c != '\0' => c,
                    _ => return Err("Reference to an undeclared entity or an invalid character."),
                }
            }
        };
        out.push(c);
        rest = after.get(semi + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(())
}

/// A naive EWS time in the request's zone (`bias` minutes west of UTC) → UTC ms; times with
/// `Z` or an offset are taken as they are.
fn ews_time_in(s: &str, bias_min: i64) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t.as_millisecond());
    }
    parse_time(s, None).map(|local| local.saturating_add(bias_min * MINUTE_MS))
}

/// A UTC time as a naive EWS time in the request's zone.
fn ews_time_out(ms: i64, bias_min: i64) -> String {
    utc_fmt(ms.saturating_sub(bias_min * MINUTE_MS), "%Y-%m-%dT%H:%M:%S")
}

fn ews_timezone(bias: i64) -> String {
    let no_dst = "<t:Bias>0</t:Bias><t:Time>00:00:00</t:Time><t:DayOrder>0</t:DayOrder><t:Month>0</t:Month><t:DayOfWeek>Sunday</t:DayOfWeek>";
    format!("<t:TimeZone><t:Bias>{bias}</t:Bias><t:StandardTime>{no_dst}</t:StandardTime><t:DaylightTime>{no_dst}</t:DaylightTime></t:TimeZone>")
}

/// 64-bit FNV-1a, for stable item ids.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

async fn ews(state: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    {
        let mut g = lock(&state);
        g.stats.ews_requests += 1;
        if g.misbehave.ews_retired {
            g.stats.retired_refusals += 1;
            return HttpResponse::Forbidden().finish();
        }
        let basic = format!("Basic {}", base64(format!("{}:{}", g.cfg.ews_username, g.cfg.ews_password).as_bytes()));
        let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::trim);
        if auth != Some(basic.as_str()) && !g.bearer_ok(&req, TokenKind::Entra) {
            g.stats.unauthorized += 1;
            return HttpResponse::Unauthorized().insert_header(("WWW-Authenticate", "Basic realm=\"sim-ews\"")).finish();
        }
    }
    match gate(&state, Backend::Ews).await {
        Err(Refusal::Throttle(secs)) => {
            let ms = secs.saturating_mul(1000);
            return soap_fault(
                500,
                "ErrorServerBusy",
                "The server cannot service this request right now. Try again later.",
                &format!(r#"<t:Value Name="BackOffMilliseconds">{ms}</t:Value>"#),
            );
        }
        Err(Refusal::Fail(status)) => {
            let code = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::SERVICE_UNAVAILABLE);
            return HttpResponse::build(code).content_type("text/html").body("<html><body>Service Unavailable</body></html>");
        }
        Ok(()) => {}
    }
    let doc = match std::str::from_utf8(&body) {
        Ok(d) => d,
        Err(e) => return schema_fault(&body, e.valid_up_to(), "Invalid character in the given encoding."),
    };
    let q = match read_ews_request(doc) {
        Ok(q) => q,
        Err((at, m)) => return schema_fault(&body, at, &m),
    };
    ews_answer(&state, &body, q)
}

fn ews_answer(state: &Shared, body: &[u8], q: EwsQuery) -> HttpResponse {
    let end_of = body.len();
    if !q.saw_request {
        return soap_fault(500, "ErrorInvalidRequest", "The request is invalid: this server answers GetUserAvailability only.", "");
    }
    let (Some(start_s), Some(end_s)) = (q.start.as_deref(), q.end.as_deref()) else {
        return schema_fault(body, end_of, "The element 'FreeBusyViewOptions' has incomplete content: TimeWindow with StartTime and EndTime expected.");
    };
    let Some(bias) = q.bias.as_deref().map_or(Some(0), |b| b.parse::<i64>().ok()).filter(|b| b.abs() <= 1440) else {
        return schema_fault(body, end_of, "The 'Bias' element is invalid.");
    };
    let (Some(start), Some(end)) = (ews_time_in(start_s, bias), ews_time_in(end_s, bias)) else {
        return schema_fault(body, end_of, "The 'StartTime' or 'EndTime' element is invalid - the value is not a valid dateTime.");
    };
    let Some(interval) = q.interval.as_deref().map_or(Some(30), |i| i.parse::<i64>().ok()) else {
        return schema_fault(body, end_of, "The 'MergedFreeBusyIntervalInMinutes' element is invalid - the value is not a valid int.");
    };
    let view = q.view.as_deref().unwrap_or("DetailedMerged");
    let (merged, events, details) = match view {
        "None" => (false, false, false),
        "MergedOnly" => (true, false, false),
        "FreeBusy" => (false, true, false),
        "FreeBusyMerged" => (true, true, false),
        "Detailed" => (false, true, true),
        "DetailedMerged" => (true, true, true),
        _ => return schema_fault(body, end_of, "The 'RequestedView' element is invalid - the value is not a valid FreeBusyViewType."),
    };
    let mut g = lock(state);
    g.note_mailboxes(q.mailboxes.len());
    if q.mailboxes.is_empty() {
        return soap_fault(500, "ErrorMailboxDataArrayEmpty", "The MailboxDataArray element in the request is empty.", "");
    }
    if q.mailboxes.len() > MAX_EWS_MAILBOXES {
        return soap_fault(
            500,
            "ErrorMailboxDataArrayTooBig",
            &format!("The number of mailboxes in the request ({}) exceeds the maximum of {MAX_EWS_MAILBOXES}.", q.mailboxes.len()),
            "",
        );
    }
    if end <= start {
        return soap_fault(500, "ErrorInvalidTimeInterval", "The specified time interval is invalid: the start time must be before the end time.", "");
    }
    if end - start > MAX_EWS_WINDOW_DAYS * DAY_MS {
        return soap_fault(500, "ErrorTimeIntervalTooBig", &format!("The time window is larger than the allowed limit of {MAX_EWS_WINDOW_DAYS} days."), "");
    }
    if !(5..=1440).contains(&interval) {
        return soap_fault(500, "ErrorInvalidMergedFreeBusyInterval", "The merged free/busy interval must be between 5 and 1440 minutes.", "");
    }
    let mut x = String::with_capacity(2048 + q.mailboxes.len() * 1024);
    x.push_str(r#"<?xml version="1.0" encoding="utf-8"?>"#);
    let _ = write!(
        x,
        r#"<s:Envelope xmlns:s="{SOAP_NS}"><s:Header><h:ServerVersionInfo MajorVersion="15" MinorVersion="20" MajorBuildNumber="7472" MinorBuildNumber="21" Version="V2018_01_08" xmlns:h="{TYPES_NS}" xmlns="{TYPES_NS}"/></s:Header><s:Body><m:GetUserAvailabilityResponse xmlns:m="{MESSAGES_NS}" xmlns:t="{TYPES_NS}"><m:FreeBusyResponseArray>"#
    );
    for mailbox in &q.mailboxes {
        x.push_str("<m:FreeBusyResponse>");
        if is_unknown(mailbox) {
            g.stats.unknown_mailboxes += 1;
            let _ = write!(
                x,
                r#"<m:ResponseMessage ResponseClass="Error"><m:MessageText>Unable to resolve e-mail address &lt;&gt;SMTP:{} to an Active Directory object.</m:MessageText><m:ResponseCode>ErrorMailRecipientNotFound</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey><m:MessageXml><ExceptionType xmlns="{ERRORS_NS}">Microsoft.Exchange.InfoWorker.Common.Availability.MailRecipientNotFoundException</ExceptionType><ExceptionCode xmlns="{ERRORS_NS}">5009</ExceptionCode></m:MessageXml></m:ResponseMessage><m:FreeBusyView><t:FreeBusyViewType>None</t:FreeBusyViewType></m:FreeBusyView></m:FreeBusyResponse>"#,
                xml_escape(mailbox)
            );
            continue;
        }
        g.stats.mailboxes_answered += 1;
        let evs = g.events_in(mailbox, start, end);
        let _ = write!(
            x,
            r#"<m:ResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode></m:ResponseMessage><m:FreeBusyView><t:FreeBusyViewType>{view}</t:FreeBusyViewType>"#
        );
        if merged {
            let _ = write!(x, "<t:MergedFreeBusy>{}</t:MergedFreeBusy>", merged_view(&evs, start, end, interval * MINUTE_MS));
        }
        if events {
            x.push_str("<t:CalendarEventArray>");
            let base = fnv(&mailbox.to_lowercase());
            for (n, e) in evs.iter().enumerate() {
                let _ = write!(
                    x,
                    "<t:CalendarEvent><t:StartTime>{}</t:StartTime><t:EndTime>{}</t:EndTime><t:BusyType>{}</t:BusyType>",
                    ews_time_out(e.start, bias),
                    ews_time_out(e.end, bias),
                    e.status.ews()
                );
                if details {
                    let meeting = matches!(e.status, Status::Busy | Status::Tentative);
                    let _ = write!(x, "<t:CalendarEventDetails><t:ID>{:016X}{:08X}</t:ID>", base, n);
                    if e.private {
                        x.push_str("<t:Subject /><t:Location />");
                    } else {
                        if let Some(s) = &e.subject {
                            let _ = write!(x, "<t:Subject>{}</t:Subject>", xml_escape(s));
                        }
                        if let Some(l) = &e.location {
                            let _ = write!(x, "<t:Location>{}</t:Location>", xml_escape(l));
                        }
                    }
                    let _ = write!(
                        x,
                        "<t:IsMeeting>{meeting}</t:IsMeeting><t:IsRecurring>false</t:IsRecurring><t:IsException>false</t:IsException><t:IsReminderSet>{meeting}</t:IsReminderSet><t:IsPrivate>{}</t:IsPrivate></t:CalendarEventDetails>",
                        e.private
                    );
                }
                x.push_str("</t:CalendarEvent>");
            }
            x.push_str("</t:CalendarEventArray>");
        }
        let _ = write!(
            x,
            "<t:WorkingHours>{}<t:WorkingPeriodArray><t:WorkingPeriod><t:DayOfWeek>Monday Tuesday Wednesday Thursday Friday</t:DayOfWeek><t:StartTimeInMinutes>480</t:StartTimeInMinutes><t:EndTimeInMinutes>1020</t:EndTimeInMinutes></t:WorkingPeriod></t:WorkingPeriodArray></t:WorkingHours></m:FreeBusyView></m:FreeBusyResponse>",
            ews_timezone(bias)
        );
    }
    x.push_str("</m:FreeBusyResponseArray></m:GetUserAvailabilityResponse></s:Body></s:Envelope>");
    HttpResponse::Ok().content_type("text/xml; charset=utf-8").body(g.finish(x))
}

// ---------------------------------------------------------------------------------------------
// The demo company's calendars.

const DEMO_SUBJECTS: [&str; 14] = [
    "Veckomöte",
    "Kundmöte",
    "Lunch med kund",
    "1:1",
    "Styrelsemöte",
    "Projektavstämning",
    "Säljmöte",
    "Planering Q3",
    "Workshop: ny webbplats",
    "Intervju",
    "Budgetgenomgång",
    "Leverantörsmöte",
    "Avstämning med ekonomi",
    "Utvecklingssamtal",
];
const DEMO_LOCATIONS: [Option<&str>; 7] = [
    Some("Konferensrum Stockholm"),
    Some("Rum 3.14"),
    Some("Microsoft Teams-möte"),
    Some("Kontoret Göteborg"),
    Some("Kundens lokaler"),
    None,
    None,
];
const DEMO_OOF: [&str; 4] = ["Semester", "Ledig", "Utbildning", "Konferens i Malmö"];
const DEMO_ELSEWHERE: [&str; 3] = ["Jobbar hemifrån", "På kundplats", "Distansarbete"];

fn pick<T: Copy>(rng: &mut Rng, list: &[T], fallback: T) -> T {
    list.get(rng.below(list.len() as u64) as usize).copied().unwrap_or(fallback)
}

/// A meeting over `[start, start + minutes)`: busy (15 % tentative), 10 % private.
fn demo_meeting(rng: &mut Rng, start: i64, minutes: i64) -> Event {
    let status = if rng.below(100) < 15 { Status::Tentative } else { Status::Busy };
    Event {
        start,
        end: start + minutes * MINUTE_MS,
        status,
        subject: Some(pick(rng, &DEMO_SUBJECTS, "Möte").to_string()),
        location: pick(rng, &DEMO_LOCATIONS, None).map(str::to_string),
        private: rng.below(100) < 10,
    }
}

/// True when `[start, end)` meets none of `events`' busy or tentative items.
fn free_for(events: &[Event], start: i64, end: i64) -> bool {
    !events.iter().any(|e| matches!(e.status, Status::Busy | Status::Tentative | Status::Oof) && e.overlaps(start, end))
}

/// One person's working day around `now` (whole minutes).
fn demo_day(rng: &mut Rng, now: i64) -> Vec<Event> {
    let now = now - now.rem_euclid(MINUTE_MS);
    let mut events = Vec::new();
    if rng.below(100) < 4 {
        let day = now - now.rem_euclid(DAY_MS);
        let subject = pick(rng, &DEMO_OOF, "Ledig").to_string();
        events.push(Event { start: day, end: day + DAY_MS, status: Status::Oof, subject: Some(subject), location: None, private: false });
        return events;
    }
    if rng.below(100) < 10 {
        let start = now - (60 + rng.below(120) as i64) * MINUTE_MS;
        let end = now + (120 + rng.below(240) as i64) * MINUTE_MS;
        let subject = pick(rng, &DEMO_ELSEWHERE, "Distansarbete").to_string();
        events.push(Event { start, end, status: Status::WorkingElsewhere, subject: Some(subject), location: None, private: false });
    }
    if rng.below(100) < 30 {
        let minutes = 15 * (1 + rng.below(6) as i64);
        let start = if rng.below(2) == 0 {
            // Under way: started up to half its length ago.
            now - rng.below((minutes / 2) as u64 + 1) as i64 * MINUTE_MS
        } else {
            now + (1 + rng.below(30) as i64) * MINUTE_MS
        };
        events.push(demo_meeting(rng, start, minutes));
    }
    // Earlier today, already over.
    if rng.below(2) == 0 {
        let minutes = 30 * (1 + rng.below(2) as i64);
        let end = now - (15 + rng.below(120) as i64) * MINUTE_MS;
        let e = demo_meeting(rng, end - minutes * MINUTE_MS, minutes);
        if free_for(&events, e.start, e.end) {
            events.push(e);
        }
    }
    // Later today.
    for _ in 0..rng.below(3) {
        let start = now + (45 + rng.below(300) as i64) * MINUTE_MS;
        let start = start - start.rem_euclid(15 * MINUTE_MS);
        let minutes = 30 * (1 + rng.below(2) as i64);
        let e = demo_meeting(rng, start, minutes);
        if free_for(&events, e.start, e.end) {
            events.push(e);
        }
    }
    events.sort_by_key(|e| (e.start, e.end));
    events
}

impl CalendarSim {
    /// Fills a plausible working day around now for `mailboxes` (replacing their calendars):
    /// about 30 % have a meeting under way or starting within 1–30 minutes (15–90 minutes
    /// long, some tentative, some private), some work elsewhere, a few are out of office all
    /// day, and others have meetings earlier or later in the day. Swedish subjects.
    pub fn seed_demo(&self, mailboxes: &[String], seed: u64) {
        self.seed_demo_at(mailboxes, seed, now_ms());
    }

    fn seed_demo_at(&self, mailboxes: &[String], seed: u64, now: i64) {
        let mut rng = Rng::new(seed);
        let mut g = lock(&self.state);
        for m in mailboxes {
            g.calendars.insert(m.to_lowercase(), demo_day(&mut rng, now));
        }
    }

    /// Keeps the demo moving, on a thread of its own until the simulator is dropped: every
    /// `every` (± half) it drops the meetings that have ended and books a new one for a random
    /// person, starting 1–10 minutes ahead and lasting 15–60 minutes, so meetings keep starting
    /// and ending while the demo runs.
    pub fn drive_demo(self: &Arc<Self>, mailboxes: Vec<String>, every: Duration, seed: u64) -> std::io::Result<()> {
        let sim = Arc::downgrade(self);
        std::thread::Builder::new().name("cal-sim-demo".into()).spawn(move || {
            let mut rng = Rng::new(seed);
            let every_ms = every.as_millis().min(u64::MAX as u128) as u64;
            loop {
                let wait = Duration::from_millis(every_ms / 2 + rng.below(every_ms.saturating_add(1)));
                let until = Instant::now() + wait;
                // Sleep in slices so a dropped simulator ends the thread soon.
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(Duration::from_millis(100)));
                    if sim.strong_count() == 0 {
                        return;
                    }
                }
                let Some(sim) = sim.upgrade() else { return };
                if mailboxes.is_empty() {
                    return;
                }
                sim.demo_step(&mailboxes, &mut rng, now_ms());
            }
        })?;
        Ok(())
    }

    /// One step of [`drive_demo`](Self::drive_demo) at `now`.
    fn demo_step(&self, mailboxes: &[String], rng: &mut Rng, now: i64) {
        let mut g = lock(&self.state);
        for evs in g.calendars.values_mut() {
            evs.retain(|e| e.end > now);
        }
        let now = now - now.rem_euclid(MINUTE_MS);
        for _ in 0..5 {
            let Some(who) = mailboxes.get(rng.below(mailboxes.len() as u64) as usize) else { return };
            let start = now + (1 + rng.below(10) as i64) * MINUTE_MS;
            let minutes = 15 * (1 + rng.below(4) as i64);
            let e = demo_meeting(rng, start, minutes);
            let cal = g.calendars.entry(who.to_lowercase()).or_default();
            if free_for(cal, e.start, e.end) {
                cal.push(e);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_providers::calendar::ews::{self, EwsError};
    use presence_providers::calendar::{google, schedule, BusyStatus, CalendarError, CalendarItem};

    // 2024-05-06T00:00:00Z
    const DAY0: i64 = 1_714_953_600_000;
    const H: i64 = 3_600_000;
    const M: i64 = 60_000;
    const ALICE: &str = "alice@sim.example";
    const GHOST: &str = "ghost@unknown.invalid";

    fn ev(start: i64, end: i64, status: Status, subject: Option<&str>, location: Option<&str>, private: bool) -> Event {
        Event { start, end, status, subject: subject.map(Into::into), location: location.map(Into::into), private }
    }

    /// Alice's day: OOF, busy, tentative, private busy, free, working elsewhere.
    fn alice_day() -> Vec<Event> {
        vec![
            ev(DAY0 + 9 * H, DAY0 + 10 * H, Status::Busy, Some("Veckomöte"), Some("Rum 4.12 <A&B>"), false),
            ev(DAY0 + 7 * H, DAY0 + 8 * H, Status::Oof, Some("Tandläkare"), Some("Stan"), false),
            ev(DAY0 + 10 * H, DAY0 + 11 * H, Status::Tentative, Some("Kundmöte"), None, false),
            ev(DAY0 + 11 * H, DAY0 + 11 * H + 30 * M, Status::Busy, Some("Läkarbesök"), Some("Vårdcentralen"), true),
            ev(DAY0 + 12 * H, DAY0 + 13 * H, Status::Free, Some("Lunch med kund"), None, false),
            ev(DAY0 + 13 * H, DAY0 + 17 * H, Status::WorkingElsewhere, Some("Jobbar hemifrån"), None, false),
            // Outside the day asked for.
            ev(DAY0 + 30 * H, DAY0 + 31 * H, Status::Busy, Some("Styrelsemöte"), None, false),
        ]
    }

    fn busy_status(s: Status) -> BusyStatus {
        match s {
            Status::Free => BusyStatus::Free,
            Status::Tentative => BusyStatus::Tentative,
            Status::Busy => BusyStatus::Busy,
            Status::Oof => BusyStatus::Oof,
            Status::WorkingElsewhere => BusyStatus::WorkingElsewhere,
        }
    }

    /// What a parser should give back for Alice's day (by start), details as Graph and EWS
    /// show them.
    fn alice_items(is_meeting: bool) -> Vec<CalendarItem> {
        let mut evs: Vec<Event> = alice_day().into_iter().filter(|e| e.start < DAY0 + 24 * H).collect();
        evs.sort_by_key(|e| e.start);
        evs.into_iter()
            .map(|e| CalendarItem {
                start: e.start,
                end: e.end,
                status: busy_status(e.status),
                subject: if e.private { None } else { e.subject.clone() },
                location: if e.private { None } else { e.location.clone() },
                private: e.private,
                is_meeting: is_meeting.then_some(matches!(e.status, Status::Busy | Status::Tentative)),
            })
            .collect()
    }

    /// 24 hourly digits of Alice's day: OOF at 7, busy 9, tentative 10, busy 11 (private,
    /// half an hour), the rest free or working elsewhere (0).
    const ALICE_HOURLY: &str = "000000030212000000000000";

    fn sim() -> CalendarSim {
        let sim = CalendarSim::start(CalendarSimConfig::default()).expect("start");
        sim.set_events("Alice@Sim.Example", alice_day());
        sim
    }

    /// An `application/x-www-form-urlencoded` body (reqwest's `form` feature is off).
    fn form<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
                .collect()
        };
        pairs.iter().map(|(k, v)| format!("{}={}", enc(k.as_ref()), enc(v.as_ref()))).collect::<Vec<_>>().join("&")
    }

    fn post_form(url: String, body: String) -> reqwest::RequestBuilder {
        http().post(url).header("content-type", "application/x-www-form-urlencoded").body(body)
    }

    fn http() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("client")
    }

    async fn entra_token(sim: &CalendarSim) -> String {
        let cfg = CalendarSimConfig::default();
        let r = post_form(sim.token_url(), form(&[
                ("grant_type", "client_credentials"),
                ("client_id", cfg.client_id.as_str()),
                ("client_secret", cfg.client_secret.as_str()),
                ("scope", "https://graph.microsoft.com/.default"),
            ]))
            .send()
            .await
            .expect("token");
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(v["expires_in"], 3600);
        v["access_token"].as_str().expect("access_token").to_string()
    }

    async fn google_token(sim: &CalendarSim) -> String {
        let cfg = CalendarSimConfig::default();
        let r = post_form(sim.google_token_url(), form(&[
                ("grant_type", "refresh_token"),
                ("client_id", cfg.google_client_id.as_str()),
                ("client_secret", cfg.google_client_secret.as_str()),
                ("refresh_token", cfg.google_refresh_token.as_str()),
            ]))
            .send()
            .await
            .expect("token");
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["token_type"], "Bearer");
        assert!(v["scope"].as_str().is_some_and(|s| s.contains("calendar")));
        v["access_token"].as_str().expect("access_token").to_string()
    }

    async fn get_schedule(sim: &CalendarSim, token: &str, body: String) -> reqwest::Response {
        http()
            .post(format!("{}/users/svc@sim.example/calendar/getSchedule", sim.graph_url()))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("getSchedule")
    }

    async fn ews_basic(sim: &CalendarSim, body: String) -> reqwest::Response {
        let cfg = CalendarSimConfig::default();
        http()
            .post(sim.ews_url())
            .basic_auth(&cfg.ews_username, Some(&cfg.ews_password))
            .header("content-type", "text/xml; charset=utf-8")
            .body(body)
            .send()
            .await
            .expect("ews")
    }

    async fn free_busy(sim: &CalendarSim, token: &str, body: String) -> reqwest::Response {
        http()
            .post(format!("{}/freeBusy", sim.google_url()))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("freeBusy")
    }

    #[actix_rt::test]
    async fn graph_get_schedule_round_trip() {
        let sim = sim();
        let token = entra_token(&sim).await;
        let asked = ["Alice@sim.example", "bob@sim.example", GHOST];
        let body = schedule::request_body(&asked, DAY0, DAY0 + 24 * H, 60).expect("body");
        let r = get_schedule(&sim, &token, body).await;
        assert_eq!(r.status(), 200);
        let raw = r.bytes().await.expect("body");
        let v: Value = serde_json::from_slice(&raw).expect("json");
        // The wire shape: UTC times with seven fractional digits, working hours, no private subject.
        let first = &v["value"][0]["scheduleItems"][0];
        assert_eq!(first["start"], json!({ "dateTime": "2024-05-06T07:00:00.0000000", "timeZone": "UTC" }));
        assert_eq!(v["value"][0]["workingHours"]["timeZone"]["name"], "UTC");
        assert!(!String::from_utf8_lossy(&raw).contains("Läkarbesök"));
        assert!(!String::from_utf8_lossy(&raw).contains("Vårdcentralen"));

        let got = schedule::parse_response(&raw).expect("parse");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].mailbox, "Alice@sim.example");
        assert_eq!(got[0].error, None);
        assert_eq!(got[0].items, alice_items(false));
        assert_eq!(got[0].merged.as_deref(), Some(ALICE_HOURLY));
        assert_eq!(got[1].mailbox, "bob@sim.example");
        assert!(got[1].items.is_empty() && got[1].error.is_none());
        assert_eq!(got[1].merged.as_deref(), Some("0".repeat(24).as_str()));
        assert_eq!(got[2].mailbox, GHOST);
        assert!(got[2].error.as_deref().is_some_and(|e| e.starts_with("ErrorMailRecipientNotFound")), "{:?}", got[2]);
        let st = sim.stats();
        assert_eq!((st.graph_requests, st.token_requests, st.mailboxes_answered, st.unknown_mailboxes), (1, 1, 2, 1));
        assert_eq!(st.max_mailboxes_in_request, 3);
    }

    #[actix_rt::test]
    async fn ews_round_trip_with_basic_and_bearer() {
        let sim = sim();
        let asked = [ALICE, "bob@sim.example", GHOST];
        let body = ews::request(&asked, DAY0, DAY0 + 24 * H, 60).expect("request");
        let r = ews_basic(&sim, body.clone()).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("text/xml")));
        let raw = r.bytes().await.expect("body");
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("<t:FreeBusyViewType>DetailedMerged</t:FreeBusyViewType>"));
        assert!(text.contains("<t:Location>Rum 4.12 &lt;A&amp;B&gt;</t:Location>"));
        assert!(!text.contains("Läkarbesök") && !text.contains("Vårdcentralen"));

        let got = ews::parse_response(&raw, &asked).expect("parse");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].error, None);
        assert_eq!(got[0].items, alice_items(true));
        assert_eq!(got[0].merged.as_deref(), Some(ALICE_HOURLY));
        assert!(got[1].items.is_empty() && got[1].error.is_none());
        assert!(got[2].error.as_deref().is_some_and(|e| e.starts_with("ErrorMailRecipientNotFound")), "{:?}", got[2]);
        // The per-mailbox error is what classify_error reports for a 200 body with an error.
        assert!(matches!(ews::classify_error(200, &raw), EwsError::Soap { code, .. } if code == "ErrorMailRecipientNotFound"));

        // An Entra app token works as well.
        let token = entra_token(&sim).await;
        let r = http().post(sim.ews_url()).bearer_auth(&token).body(body).send().await.expect("ews");
        assert_eq!(r.status(), 200);
        let got = ews::parse_response(&r.bytes().await.expect("body"), &asked).expect("parse");
        assert_eq!(got[0].items, alice_items(true));
        assert_eq!(sim.stats().ews_requests, 2);
    }

    #[actix_rt::test]
    async fn ews_honours_the_time_zone_bias_and_the_view() {
        let sim = sim();
        // Bias -120 (UTC+2): local 11:00-12:00 is 09:00-10:00 UTC.
        let body = ews::request(&[ALICE], DAY0 + 9 * H, DAY0 + 10 * H, 60)
            .expect("request")
            .replacen("<t:TimeZone><t:Bias>0</t:Bias>", "<t:TimeZone><t:Bias>-120</t:Bias>", 1)
            .replace("2024-05-06T09:00:00", "2024-05-06T11:00:00")
            .replace("2024-05-06T10:00:00", "2024-05-06T12:00:00")
            .replace("DetailedMerged", "FreeBusy");
        let r = ews_basic(&sim, body).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.expect("body");
        assert!(text.contains("<t:StartTime>2024-05-06T11:00:00</t:StartTime><t:EndTime>2024-05-06T12:00:00</t:EndTime><t:BusyType>Busy</t:BusyType></t:CalendarEvent>"), "{text}");
        assert!(!text.contains("MergedFreeBusy") && !text.contains("Veckomöte"), "{text}");
    }

    #[actix_rt::test]
    async fn google_free_busy_round_trip() {
        let sim = sim();
        // Overlapping busy items are merged; tentative, free and working elsewhere are not busy.
        sim.add_event("bob@sim.example", ev(DAY0 + 14 * H, DAY0 + 15 * H, Status::Busy, Some("A"), None, false));
        sim.add_event("bob@sim.example", ev(DAY0 + 14 * H + 30 * M, DAY0 + 16 * H, Status::Oof, Some("B"), None, false));
        sim.add_event("bob@sim.example", ev(DAY0 + 23 * H, DAY0 + 26 * H, Status::Busy, Some("C"), None, false));
        let token = google_token(&sim).await;
        let asked = [ALICE, "bob@sim.example", GHOST];
        let body = google::request_body(&asked, DAY0, DAY0 + 24 * H).expect("body");
        let r = free_busy(&sim, &token, body).await;
        assert_eq!(r.status(), 200);
        let raw = r.bytes().await.expect("body");
        let v: Value = serde_json::from_slice(&raw).expect("json");
        assert_eq!(v["kind"], "calendar#freeBusy");
        assert_eq!(v["timeMin"], "2024-05-06T00:00:00.000Z");
        assert_eq!(v["calendars"][ALICE]["busy"][0], json!({ "start": "2024-05-06T07:00:00Z", "end": "2024-05-06T08:00:00Z" }));

        let got = google::parse_response(&raw).expect("parse");
        let ids: Vec<&str> = got.iter().map(|s| s.mailbox.as_str()).collect();
        assert_eq!(ids, [ALICE, "bob@sim.example", GHOST]);
        let spans = |i: usize| got[i].items.iter().map(|it| (it.start, it.end, it.status)).collect::<Vec<_>>();
        assert_eq!(
            spans(0),
            [
                (DAY0 + 7 * H, DAY0 + 8 * H, BusyStatus::Busy),
                (DAY0 + 9 * H, DAY0 + 10 * H, BusyStatus::Busy),
                (DAY0 + 11 * H, DAY0 + 11 * H + 30 * M, BusyStatus::Busy),
            ]
        );
        assert!(got[0].items.iter().all(|i| i.subject.is_none() && !i.private));
        assert_eq!(spans(1), [(DAY0 + 14 * H, DAY0 + 16 * H, BusyStatus::Busy), (DAY0 + 23 * H, DAY0 + 24 * H, BusyStatus::Busy)]);
        assert_eq!(got[2].error.as_deref(), Some("notFound"));
        assert_eq!(sim.stats().google_requests, 1);
    }

    #[actix_rt::test]
    async fn throttling_on_every_backend() {
        let sim = sim();
        let (entra, goog) = (entra_token(&sim).await, google_token(&sim).await);
        sim.misbehave(Misbehave { throttle_next: 3, retry_after_secs: 7, ..Misbehave::default() });
        let gbody = schedule::request_body(&[ALICE], DAY0, DAY0 + 24 * H, 30).expect("body");
        let r = get_schedule(&sim, &entra, gbody.clone()).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("7"));

        let fbody = google::request_body(&[ALICE], DAY0, DAY0 + 24 * H).expect("body");
        let r = free_busy(&sim, &goog, fbody).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("7"));
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["error"]["errors"][0]["reason"], "rateLimitExceeded");

        let ebody = ews::request(&[ALICE], DAY0, DAY0 + 24 * H, 30).expect("request");
        let r = ews_basic(&sim, ebody).await;
        assert_eq!(r.status(), 500);
        let raw = r.bytes().await.expect("body");
        assert_eq!(ews::classify_error(500, &raw), EwsError::Throttled { back_off_ms: Some(7000) });
        assert!(matches!(ews::parse_response(&raw, &[ALICE]), Err(CalendarError::Ews(EwsError::Throttled { back_off_ms: Some(7000) }))));

        // A client that does not wait is counted.
        assert_eq!(sim.stats().early_after_retry_after, 0);
        let r = get_schedule(&sim, &entra, gbody).await;
        assert_eq!(r.status(), 200);
        let st = sim.stats();
        assert_eq!((st.throttled, st.early_after_retry_after), (3, 1));
    }

    #[actix_rt::test]
    async fn failures_truncation_and_slowness() {
        let sim = sim();
        let entra = entra_token(&sim).await;
        let gbody = schedule::request_body(&[ALICE], DAY0, DAY0 + 24 * H, 30).expect("body");
        let ebody = ews::request(&[ALICE], DAY0, DAY0 + 24 * H, 30).expect("request");

        sim.misbehave(Misbehave { fail_next: 2, ..Misbehave::default() });
        assert_eq!(get_schedule(&sim, &entra, gbody.clone()).await.status(), 503);
        let r = ews_basic(&sim, ebody.clone()).await;
        assert_eq!(r.status(), 503);
        assert_eq!(ews::classify_error(503, &r.bytes().await.expect("body")), EwsError::Throttled { back_off_ms: None });

        sim.misbehave(Misbehave { malformed_next: 2, ..Misbehave::default() });
        let r = get_schedule(&sim, &entra, gbody.clone()).await;
        assert_eq!(r.status(), 200);
        assert!(matches!(schedule::parse_response(&r.bytes().await.expect("body")), Err(CalendarError::Json(_))));
        let r = ews_basic(&sim, ebody).await;
        assert_eq!(r.status(), 200);
        assert!(matches!(ews::parse_response(&r.bytes().await.expect("body"), &[ALICE]), Err(CalendarError::Xml(_))));
        // Used up: the next answer is whole again.
        let r = get_schedule(&sim, &entra, gbody.clone()).await;
        assert!(schedule::parse_response(&r.bytes().await.expect("body")).is_ok());

        sim.misbehave(Misbehave { slow: Duration::from_millis(300), ..Misbehave::default() });
        let t0 = Instant::now();
        assert_eq!(get_schedule(&sim, &entra, gbody).await.status(), 200);
        assert!(t0.elapsed() >= Duration::from_millis(300));
        let st = sim.stats();
        assert_eq!((st.failed, st.malformed), (2, 2));
    }

    #[actix_rt::test]
    async fn retired_ews_is_a_403_with_an_empty_body() {
        let sim = sim();
        sim.misbehave(Misbehave { ews_retired: true, ..Misbehave::default() });
        let r = ews_basic(&sim, ews::request(&[ALICE], DAY0, DAY0 + H, 30).expect("request")).await;
        assert_eq!(r.status(), 403);
        let raw = r.bytes().await.expect("body");
        assert!(raw.is_empty());
        let e = ews::classify_error(403, &raw);
        assert!(matches!(e, EwsError::Retired { .. }), "{e:?}");
        assert_eq!(sim.stats().retired_refusals, 1);
    }

    #[actix_rt::test]
    async fn bad_credentials_are_refused() {
        let sim = sim();
        let cfg = CalendarSimConfig::default();
        // Entra: wrong secret, wrong tenant, wrong grant.
        let r = post_form(sim.token_url(), form(&[("grant_type", "client_credentials"), ("client_id", "sim-client"), ("client_secret", "nope")]))
            .send()
            .await
            .expect("token");
        assert_eq!(r.status(), 401);
        assert_eq!(r.json::<Value>().await.expect("json")["error"], "invalid_client");
        let r = post_form(format!("{}/other-tenant/oauth2/v2.0/token", sim.url()), form(&[("grant_type", "client_credentials"), ("client_id", "sim-client"), ("client_secret", "sim-secret")]))
            .send()
            .await
            .expect("token");
        assert_eq!(r.status(), 400);
        let r = http().post(sim.token_url()).body("not a form").send().await.expect("token");
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.expect("json")["error"], "invalid_request");
        // Google: wrong refresh token, wrong client.
        let google_form = |client: &str, rt: &str| {
            vec![
                ("grant_type".to_string(), "refresh_token".to_string()),
                ("client_id".to_string(), client.to_string()),
                ("client_secret".to_string(), cfg.google_client_secret.clone()),
                ("refresh_token".to_string(), rt.to_string()),
            ]
        };
        let r = post_form(sim.google_token_url(), form(&google_form(&cfg.google_client_id, "stale"))).send().await.expect("t");
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.expect("json"), json!({ "error": "invalid_grant", "error_description": "Bad Request" }));
        let r = post_form(sim.google_token_url(), form(&google_form("other", &cfg.google_refresh_token))).send().await.expect("t");
        assert_eq!(r.status(), 401);

        let (entra, goog) = (entra_token(&sim).await, google_token(&sim).await);
        let gbody = schedule::request_body(&[ALICE], DAY0, DAY0 + H, 30).expect("body");
        // Graph: no token, a garbage token, a Google token.
        let r = http().post(format!("{}/users/x/calendar/getSchedule", sim.graph_url())).body(gbody.clone()).send().await.expect("g");
        assert_eq!(r.status(), 401);
        assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "InvalidAuthenticationToken");
        assert_eq!(get_schedule(&sim, "garbage", gbody.clone()).await.status(), 401);
        assert_eq!(get_schedule(&sim, &goog, gbody.clone()).await.status(), 401);
        // EWS: wrong password, a Google token.
        let ebody = ews::request(&[ALICE], DAY0, DAY0 + H, 30).expect("request");
        let r = http().post(sim.ews_url()).basic_auth(&cfg.ews_username, Some("wrong")).body(ebody.clone()).send().await.expect("e");
        assert_eq!(r.status(), 401);
        assert_eq!(ews::classify_error(401, &r.bytes().await.expect("body")), EwsError::Unauthorized);
        let r = http().post(sim.ews_url()).bearer_auth(&goog).body(ebody).send().await.expect("e");
        assert_eq!(r.status(), 401);
        // Google: an Entra token.
        let fbody = google::request_body(&[ALICE], DAY0, DAY0 + H).expect("body");
        let r = free_busy(&sim, &entra, fbody).await;
        assert_eq!(r.status(), 401);
        assert_eq!(r.json::<Value>().await.expect("json")["error"]["status"], "UNAUTHENTICATED");
        assert_eq!(sim.stats().unauthorized, 6);
    }

    #[actix_rt::test]
    async fn request_limits() {
        let sim = sim();
        let (entra, goog) = (entra_token(&sim).await, google_token(&sim).await);
        let many: Vec<String> = (0..101).map(|i| format!("u{i}@sim.example")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();

        // Graph: 101 schedules, 63 days, a bad interval.
        let body = json!({
            "schedules": many,
            "startTime": { "dateTime": "2024-05-06T00:00:00", "timeZone": "UTC" },
            "endTime": { "dateTime": "2024-05-07T00:00:00", "timeZone": "UTC" },
            "availabilityViewInterval": 30,
        });
        let r = get_schedule(&sim, &entra, body.to_string()).await;
        assert_eq!(r.status(), 400);
        let e = schedule::parse_response(&r.bytes().await.expect("body"));
        assert!(matches!(&e, Err(CalendarError::Service { code, .. }) if code == "ErrorMailboxDataArrayTooBig"), "{e:?}");
        assert_eq!(sim.stats().max_mailboxes_in_request, 101);
        let mut long = body.clone();
        long["schedules"] = json!([ALICE]);
        long["endTime"]["dateTime"] = json!("2024-07-07T00:00:01");
        let r = get_schedule(&sim, &entra, long.to_string()).await;
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "ErrorTimeIntervalTooBig");
        long["endTime"]["dateTime"] = json!("2024-07-07T00:00:00");
        assert_eq!(get_schedule(&sim, &entra, long.to_string()).await.status(), 200, "62 days are allowed");
        let mut bad = long.clone();
        bad["availabilityViewInterval"] = json!(4);
        assert_eq!(get_schedule(&sim, &entra, bad.to_string()).await.status(), 400);
        assert_eq!(get_schedule(&sim, &entra, "{\"schedules\":".into()).await.status(), 400);

        // Google: 51 items.
        let items: Vec<Value> = many[..51].iter().map(|m| json!({ "id": m })).collect();
        let body = json!({ "timeMin": "2024-05-06T00:00:00Z", "timeMax": "2024-05-07T00:00:00Z", "items": items });
        let r = free_busy(&sim, &goog, body.to_string()).await;
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["error"]["code"], 400);
        assert_eq!(v["error"]["errors"][0], json!({ "domain": "global", "reason": "tooManyCalendarsRequested", "message": "Too many calendars requested." }));
        let body = google::request_body(&many[..50], DAY0, DAY0 + H).expect("body");
        assert_eq!(free_busy(&sim, &goog, body).await.status(), 200);

        // EWS: 101 mailboxes (the builder refuses, so one is added by hand), 43 days.
        let body = ews::request(&many[..100], DAY0, DAY0 + H, 30).expect("request").replace(
            "</MailboxDataArray>",
            "<t:MailboxData><t:Email><t:Address>extra@sim.example</t:Address></t:Email><t:AttendeeType>Required</t:AttendeeType></t:MailboxData></MailboxDataArray>",
        );
        let r = ews_basic(&sim, body).await;
        assert_eq!(r.status(), 500);
        let e = ews::classify_error(500, &r.bytes().await.expect("body"));
        assert!(matches!(&e, EwsError::Soap { code, .. } if code == "ErrorMailboxDataArrayTooBig"), "{e:?}");
        let body = ews::request(&[ALICE], DAY0, DAY0 + 42 * 24 * H, 30).expect("request");
        assert_eq!(ews_basic(&sim, body.clone()).await.status(), 200, "42 days are allowed");
        let r = ews_basic(&sim, body.replace("<t:EndTime>2024-06-17T00:00:00</t:EndTime>", "<t:EndTime>2024-06-17T00:00:01</t:EndTime>")).await;
        assert_eq!(r.status(), 500);
        let e = ews::classify_error(500, &r.bytes().await.expect("body"));
        assert!(matches!(&e, EwsError::Soap { code, .. } if code == "ErrorTimeIntervalTooBig"), "{e:?}");
    }

    #[actix_rt::test]
    async fn malformed_ews_requests_are_schema_faults() {
        let sim = sim();
        let good = ews::request(&[ALICE], DAY0, DAY0 + H, 30).expect("request");
        let cases = [
            good[..good.len() - 20].to_string(),
            good.replace("</t:Address>", "</t:Adress>"),
            good.replace("alice", "al&ice"),
            good.replace("2024-05-06T01:00:00", "tomorrow"),
            good.replace("<t:MergedFreeBusyIntervalInMinutes>30", "<t:MergedFreeBusyIntervalInMinutes>x"),
            good.replace("DetailedMerged", "Everything"),
            "<!DOCTYPE x [<!ENTITY a 'b'>]><x/>".to_string(),
            "hello".to_string(),
            String::new(),
        ];
        for body in cases {
            let r = ews_basic(&sim, body.clone()).await;
            assert_eq!(r.status(), 500, "{body}");
            let raw = r.bytes().await.expect("body");
            let e = ews::classify_error(500, &raw);
            assert!(matches!(&e, EwsError::Soap { code, .. } if code == "ErrorSchemaValidation"), "{body} → {e:?}");
            assert!(String::from_utf8_lossy(&raw).contains("<t:LineNumber>1</t:LineNumber>"));
        }
        let r = ews_basic(&sim, good.replace("<MailboxDataArray>", "<MailboxDataArray><!-- none -->").replace(
            "<t:MailboxData><t:Email><t:Address>alice@sim.example</t:Address></t:Email><t:AttendeeType>Required</t:AttendeeType><t:ExcludeConflicts>false</t:ExcludeConflicts></t:MailboxData>",
            "",
        ))
        .await;
        assert_eq!(r.status(), 500);
        let e = ews::classify_error(500, &r.bytes().await.expect("body"));
        assert!(matches!(&e, EwsError::Soap { code, .. } if code == "ErrorMailboxDataArrayEmpty"), "{e:?}");
        // Non-UTF-8 bytes.
        let cfg = CalendarSimConfig::default();
        let r = http().post(sim.ews_url()).basic_auth(&cfg.ews_username, Some(&cfg.ews_password)).body(vec![b'<', 0xff, b'>']).send().await.expect("e");
        assert_eq!(r.status(), 500);
    }

    /// Mutated real requests, over HTTP, to all three data endpoints: every one is answered
    /// (no panic, no dropped connection), and the simulator still works afterwards.
    #[actix_rt::test]
    async fn garbage_never_breaks_the_simulator() {
        let sim = sim();
        let (entra, goog) = (entra_token(&sim).await, google_token(&sim).await);
        let seeds = [
            schedule::request_body(&[ALICE, GHOST], DAY0, DAY0 + 24 * H, 15).expect("body"),
            ews::request(&[ALICE, GHOST], DAY0, DAY0 + 24 * H, 15).expect("request"),
            google::request_body(&[ALICE, GHOST], DAY0, DAY0 + 24 * H).expect("body"),
        ];
        let mut rng = Rng::new(0x5eed);
        for i in 0..600 {
            let which = i % 3;
            let body = mutate(seeds[which].as_bytes(), &mut rng);
            let req = match which {
                0 => http().post(format!("{}/users/x/calendar/getSchedule", sim.graph_url())).bearer_auth(&entra),
                1 => {
                    let cfg = CalendarSimConfig::default();
                    http().post(sim.ews_url()).basic_auth(cfg.ews_username, Some(cfg.ews_password))
                }
                _ => http().post(format!("{}/freeBusy", sim.google_url())).bearer_auth(&goog),
            };
            let r = req.body(body).send().await.expect("answered");
            assert!(matches!(r.status().as_u16(), 200 | 400 | 500), "{}", r.status());
        }
        let body = schedule::request_body(&[ALICE], DAY0, DAY0 + 24 * H, 60).expect("body");
        let got = schedule::parse_response(&get_schedule(&sim, &entra, body).await.bytes().await.expect("b")).expect("parse");
        assert_eq!(got[0].items, alice_items(false));
    }

    /// Random damage to `seed`: byte flips, deletions, insertions of XML/JSON tokens,
    /// truncation.
    fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
        const TOKENS: [&[u8]; 12] =
            [b"<", b">", b"</", b"/>", b"&", b"&#0;", b"&#x110000;", b"<![CDATA[", b"\"", b"{", b"]", b"\xff\xfe"];
        let mut v = seed.to_vec();
        for _ in 0..1 + rng.below(4) {
            if v.is_empty() {
                break;
            }
            let at = rng.below(v.len() as u64) as usize;
            match rng.below(4) {
                0 => v[at] = rng.below(256) as u8,
                1 => {
                    let n = (rng.below(16) as usize).min(v.len() - at);
                    v.drain(at..at + n);
                }
                2 => {
                    let t = TOKENS[rng.below(TOKENS.len() as u64) as usize];
                    v.splice(at..at, t.iter().copied());
                }
                _ => v.truncate(at),
            }
        }
        v
    }

    #[test]
    fn the_xml_scan_never_panics() {
        let seed = ews::request(&[ALICE, "o'brien&co@sim.example"], DAY0, DAY0 + H, 30).expect("request");
        let q = read_ews_request(&seed).expect("well-formed");
        assert_eq!(q.mailboxes, [ALICE, "o'brien&co@sim.example"]);
        assert_eq!(q.start.as_deref(), Some("2024-05-06T00:00:00"));
        assert_eq!(q.end.as_deref(), Some("2024-05-06T01:00:00"));
        assert_eq!((q.interval.as_deref(), q.view.as_deref(), q.bias.as_deref()), (Some("30"), Some("DetailedMerged"), Some("0")));
        let mut rng = Rng::new(42);
        let mut ok = 0;
        for _ in 0..20_000 {
            let v = mutate(seed.as_bytes(), &mut rng);
            if let Ok(s) = std::str::from_utf8(&v) {
                if read_ews_request(s).is_ok() {
                    ok += 1;
                }
            }
        }
        assert!(ok > 500, "only {ok} mutants were well-formed");
        for doc in ["", "<", "<a", "<a>", "</a>", "<a></b>", "<a/><b/>", "<a>&#xD800;</a>", "<a>&bogus;</a>", "<?x", "<!--", "<a><![CDATA[", "\u{feff}<a/>", "<é/>"] {
            let _ = read_ews_request(doc);
        }
        assert!(read_ews_request("\u{feff}<a x='>'><b>&lt;&#233;&#x41;</b></a>").is_ok());
        let deep = format!("{}{}", "<a>".repeat(MAX_XML_DEPTH + 1), "</a>".repeat(MAX_XML_DEPTH + 1));
        assert!(read_ews_request(&deep).is_err());
    }

    #[test]
    fn merged_digits_take_the_highest_state() {
        let evs = [
            ev(DAY0, DAY0 + 45 * M, Status::Tentative, None, None, false),
            ev(DAY0 + 10 * M, DAY0 + 20 * M, Status::Busy, None, None, false),
            ev(DAY0 + 50 * M, DAY0 + 55 * M, Status::Oof, None, None, false),
            ev(DAY0 + 60 * M, DAY0 + 120 * M, Status::WorkingElsewhere, None, None, false),
            ev(DAY0 + 90 * M, DAY0 + 90 * M, Status::Busy, None, None, false),
        ];
        assert_eq!(merged_view(&evs, DAY0, DAY0 + 2 * H, 15 * M), "22130000");
        assert_eq!(merged_view(&evs, DAY0, DAY0 + 2 * H + M, 30 * M), "23000");
        assert_eq!(merged_view(&evs, DAY0, DAY0, 30 * M), "");
        assert_eq!(busy_periods(&evs, DAY0, DAY0 + 2 * H), [(DAY0 + 10 * M, DAY0 + 20 * M), (DAY0 + 50 * M, DAY0 + 55 * M)]);
        assert_eq!(base64(b"svc:pw"), "c3ZjOnB3");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }

    #[test]
    fn demo_days_are_plausible_and_deterministic() {
        let people: Vec<String> = (0..200).map(|i| format!("p{i}@demo.example")).collect();
        let now = DAY0 + 10 * H + 7 * M + 13_000;
        let (a, b) = (sim(), sim());
        a.seed_demo_at(&people, 7, now);
        b.seed_demo_at(&people, 7, now);
        let mut soon = 0;
        let mut oof = 0;
        let mut private = 0;
        for p in &people {
            let evs = a.events(p);
            assert_eq!(evs, b.events(p));
            assert!(evs.iter().all(|e| e.end > e.start && e.subject.is_some()));
            if evs.iter().any(|e| matches!(e.status, Status::Busy | Status::Tentative) && e.start <= now + 30 * M && e.end > now) {
                soon += 1;
            }
            oof += usize::from(evs.iter().any(|e| e.status == Status::Oof && e.end - e.start == DAY_MS));
            private += evs.iter().filter(|e| e.private).count();
        }
        assert!((40..=90).contains(&soon), "{soon} of 200 in or near a meeting");
        assert!((1..=20).contains(&oof), "{oof} out of office");
        assert!(private > 0);

        // Driving: meetings 1-10 minutes ahead are added, ended ones dropped.
        let mut rng = Rng::new(3);
        let later = now + 3 * H;
        let before: usize = people.iter().map(|p| a.events(p).len()).sum();
        for _ in 0..20 {
            a.demo_step(&people, &mut rng, later);
        }
        let all: Vec<Event> = people.iter().flat_map(|p| a.events(p)).collect();
        assert!(all.iter().all(|e| e.end > later), "ended meetings are dropped");
        let fresh = all.iter().filter(|e| e.start >= later + M - 13_000 && e.start <= later + 10 * M).count();
        assert!(fresh >= 15, "{fresh} new meetings");
        assert!(all.len() < before + 20);
    }

    #[test]
    fn drive_demo_runs_until_dropped() {
        let sim = Arc::new(CalendarSim::start(CalendarSimConfig::default()).expect("start"));
        let people: Vec<String> = (0..5).map(|i| format!("p{i}@demo.example")).collect();
        sim.seed_demo(&people, 1);
        sim.drive_demo(people.clone(), Duration::from_millis(20), 9).expect("thread");
        let t0 = Instant::now();
        let count = |s: &CalendarSim| people.iter().map(|p| s.events(p).iter().filter(|e| e.start > now_ms()).count()).sum::<usize>();
        let start_count = count(&sim);
        while count(&sim) < start_count + 3 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(count(&sim) >= start_count + 3, "the demo books meetings");
        drop(sim);
    }
}
