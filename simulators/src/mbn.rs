//! A Telenor Mobilt Bedriftsnett (MBN) partner status API simulator, "as publicly described".
//!
//! Telenor documents the flow (OAuth2 password grant at `/oauth/v2/token` with the client id
//! and secret as HTTP Basic; `catalog/userInfo`; `status/token`; `/csta/authentication/token`;
//! an enterprise monitor of all users and devices) and the data (device status available /
//! busy / offline; absences such as meeting, illness, holiday). **The payloads and the event
//! transport are not public**: this simulator speaks the shapes the provider assumes
//! (`presence_providers::mbn::parse` documents them), with the same invented names:
//!
//! - `POST /oauth/v2/token` (Basic client auth, form `grant_type=password&username&password`)
//!   → `{access_token, token_type, expires_in}`; `invalid_client` / `invalid_grant` otherwise.
//! - `GET {base}/catalog/userInfo` → `{userId, companyId, name, msisdn, roles}`.
//! - `POST {base}/status/token` → `{token, expiresIn}`.
//! - `POST {base}/csta/authentication/token` (`{statusToken}`) → `{cstaToken, expiresIn}`.
//! - `POST {base}/csta/monitor/enterprise` → `201 {monitorId, type, expiresIn}` (one monitor
//!   per company; a new one replaces the old); `PUT`/`DELETE {base}/csta/monitor/{id}`.
//! - `GET {base}/csta/monitor/{id}/events?timeout=S&cursor=C`: a long poll answered as soon as
//!   events are queued (`{cursor, events}`, at most `max_batch`), or `204` when the wait runs
//!   out; `404` for an unknown or expired monitor, `410` for an unknown cursor.
//! - `GET {base}/status/users?page=P` → `{users: [{userId, msisdn, name, status, updated,
//!   absences}], nextPage}`.
//! - Every API call needs the bearer token; CSTA calls the `X-MBN-CSTA-Token`, status calls the
//!   `X-MBN-Status-Token` header. Errors are `{code, message}` with Telenor's gateway codes
//!   (`40102` missing, `40105` invalid, `40106` expired).
//!
//! Tests and the demo drive it through [`MbnSim`]'s methods ([`MbnSim::call_start`],
//! [`MbnSim::set_absence`]…); [`Misbehave`], [`MbnSim::lose_monitor`],
//! [`MbnSim::forget_cursors`], [`MbnSim::expire_tokens`], [`MbnSim::burst`] and
//! [`MbnSim::inject_malformed`] make it fail.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::graph::Rng;
use crate::{basic_credentials, Server};

/// Settings of an [`MbnSim`].
#[derive(Debug, Clone)]
pub struct MbnSimConfig {
    /// The partner application's client id.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// The company's system user.
    pub username: String,
    /// Its password.
    pub password: String,
    /// The company.
    pub company_id: String,
    /// Country calling code used to write national numbers in E.164 (`46`: 072-128 16 05 →
    /// +46721281605).
    pub country_code: String,
    /// Path prefix of the API (the provider's `base_url` is the server URL plus this).
    pub base_path: String,
    /// Lifetime of issued tokens (access, status, CSTA).
    pub token_lifetime: Duration,
    /// Longest monitor lifetime granted.
    pub monitor_lifetime: Duration,
    /// Most events in one poll answer.
    pub max_batch: usize,
    /// Users per status list page.
    pub page_size: usize,
    /// Events kept for polling; older cursors get `410`.
    pub event_buffer: usize,
}

impl Default for MbnSimConfig {
    fn default() -> Self {
        MbnSimConfig {
            client_id: "sim-mbn-client".into(),
            client_secret: "sim-mbn-secret".into(),
            username: "api-user@nordvik.no".into(),
            password: "sim-mbn-password".into(),
            company_id: "NO-987654321".into(),
            country_code: "46".into(),
            base_path: "/mbn/v1".into(),
            token_lifetime: Duration::from_secs(3600),
            monitor_lifetime: Duration::from_secs(600),
            max_batch: 200,
            page_size: 200,
            event_buffer: 10_000,
        }
    }
}

/// A device status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `AVAILABLE`.
    Available,
    /// `BUSY`.
    Busy,
    /// `OFFLINE`.
    Offline,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Available => "AVAILABLE",
            Status::Busy => "BUSY",
            Status::Offline => "OFFLINE",
        }
    }
}

/// Ways to misbehave, set with [`MbnSim::misbehave`].
#[derive(Debug, Clone, Default)]
pub struct Misbehave {
    /// Answer this many API requests (not the token endpoint) with `503`.
    pub fail_next: u32,
    /// `Retry-After` seconds on those (0: 1).
    pub retry_after_secs: u64,
    /// Answer this many monitor starts with `503` (with `retry_after_secs`): MBN unavailable
    /// right after it lost a monitor, whatever the polls are doing.
    pub fail_monitor_starts: u32,
    /// Hold every event poll this long before looking at it (longer than the client's timeout:
    /// a stalled peer).
    pub stall_polls: Duration,
    /// Refuse logins (`invalid_grant`).
    pub refuse_logins: bool,
}

/// Counters, read with [`MbnSim::stats`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SimStats {
    /// Token requests answered (any status).
    pub token_requests: u64,
    /// Tokens issued.
    pub logins: u64,
    /// Token requests refused.
    pub logins_refused: u64,
    /// `catalog/userInfo` answered 200.
    pub user_info: u64,
    /// Status tokens issued.
    pub status_tokens: u64,
    /// CSTA logins.
    pub csta_logins: u64,
    /// Monitors started.
    pub monitors_started: u64,
    /// Monitor refreshes.
    pub monitor_refreshes: u64,
    /// Monitors deleted.
    pub monitor_deletes: u64,
    /// Event polls received.
    pub polls: u64,
    /// Polls answered `204` (the wait ran out).
    pub polls_timed_out: u64,
    /// Events delivered in poll answers.
    pub events_delivered: u64,
    /// Status list pages answered.
    pub status_pages: u64,
    /// Requests answered `401`.
    pub unauthorized: u64,
    /// Requests answered `503` on purpose.
    pub failed_503: u64,
    /// Polls and refreshes answered `404`/`410`.
    pub gone: u64,
}

#[derive(Clone)]
struct Abs {
    id: String,
    kind: String,
    from: i64,
    to: Option<i64>,
    text: Option<String>,
}

struct User {
    id: String,
    number: String,
    status: Status,
    updated: i64,
    absences: BTreeMap<String, Abs>,
    /// The call in progress and whether it was answered.
    call: Option<(String, bool)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Access,
    Status,
    Csta,
}

struct MonitorRec {
    id: String,
    start_seq: u64,
    expires_at: Instant,
}

struct State {
    cfg: MbnSimConfig,
    /// Users by E.164 number.
    users: BTreeMap<String, User>,
    log: VecDeque<(u64, Value)>,
    /// Sequence number of the last event.
    seq: u64,
    /// Cursors of another epoch are unknown (`410`).
    epoch: u64,
    monitor: Option<MonitorRec>,
    tokens: HashMap<String, (TokenKind, Instant)>,
    counter: u64,
    misbehave: Misbehave,
    stats: SimStats,
}

struct Inner {
    state: Mutex<State>,
    wake: tokio::sync::watch::Sender<u64>,
}

type Shared = Arc<Inner>;

fn lock(s: &Inner) -> std::sync::MutexGuard<'_, State> {
    s.state.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

fn error(status: u16, code: u32, message: &str) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .json(json!({ "code": code, "message": message }))
}

fn oauth_error(status: u16, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .json(json!({ "error": error, "error_description": description }))
}

/// Writes a number in E.164 with `country_code`: `+46…` stays, `0046…` and a national `0…`
/// are rewritten; separators go. `None` when there are no digits.
pub fn e164(number: &str, country_code: &str) -> Option<String> {
    let t = number.trim();
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 3 || digits.len() > 17 {
        return None;
    }
    Some(if t.starts_with('+') {
        format!("+{digits}")
    } else if let Some(rest) = digits.strip_prefix("00") {
        format!("+{rest}")
    } else if let Some(rest) = digits.strip_prefix('0') {
        format!("+{country_code}{rest}")
    } else {
        format!("+{country_code}{digits}")
    })
}

impl State {
    fn next_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}-{}", self.counter)
    }

    fn issue(&mut self, kind: TokenKind, prefix: &str) -> String {
        let t = format!("{}-{:x}", self.next_id(prefix), now_ms());
        let life = self.cfg.token_lifetime;
        if self.tokens.len() > 10_000 {
            let now = Instant::now();
            self.tokens.retain(|_, (_, exp)| *exp + Duration::from_secs(3600) > now);
        }
        self.tokens.insert(t.clone(), (kind, Instant::now() + life));
        t
    }

    /// `None` when `token` is a live token of `kind`, else the 401 to answer.
    fn check_token(&mut self, token: Option<&str>, kind: TokenKind) -> Option<HttpResponse> {
        let (code, msg) = match token.map(|t| self.tokens.get(t).copied()) {
            None => (40102, "Missing authorization"),
            Some(Some((k, exp))) if k == kind && exp > Instant::now() => return None,
            Some(Some((k, _))) if k == kind => (40106, "Access token expired"),
            Some(_) => (40105, "Invalid access token"),
        };
        self.stats.unauthorized += 1;
        Some(error(401, code, msg))
    }

    /// The API's checks: a purposeful 503, the bearer token, and the interface's token.
    fn guard(&mut self, req: &HttpRequest, iface: Option<TokenKind>) -> Option<HttpResponse> {
        if self.misbehave.fail_next > 0 {
            self.misbehave.fail_next -= 1;
            self.stats.failed_503 += 1;
            let after = self.misbehave.retry_after_secs.max(1);
            return Some(
                HttpResponse::ServiceUnavailable()
                    .insert_header(("Retry-After", after.to_string()))
                    .json(json!({ "code": 50301, "message": "Service temporarily unavailable" })),
            );
        }
        self.check_auth(req, iface)
    }

    fn check_auth(&mut self, req: &HttpRequest, iface: Option<TokenKind>) -> Option<HttpResponse> {
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        if let Some(r) = self.check_token(bearer, TokenKind::Access) {
            return Some(r);
        }
        let header = match iface {
            Some(TokenKind::Status) => "x-mbn-status-token",
            Some(TokenKind::Csta) => "x-mbn-csta-token",
            _ => return None,
        };
        let t = req.headers().get(header).and_then(|v| v.to_str().ok()).map(str::trim);
        self.check_token(t, iface.unwrap_or(TokenKind::Access))
    }

    fn user(&mut self, number: &str) -> Option<&mut User> {
        let n = e164(number, &self.cfg.country_code)?;
        if !self.users.contains_key(&n) {
            let id = self.next_id("u");
            self.users.insert(
                n.clone(),
                User {
                    id,
                    number: n.clone(),
                    status: Status::Available,
                    updated: now_ms(),
                    absences: BTreeMap::new(),
                    call: None,
                },
            );
        }
        self.users.get_mut(&n)
    }

    /// Queues an event (`eventId` and `timestamp` added when missing).
    fn push(&mut self, mut ev: Value) {
        self.seq += 1;
        if let Some(o) = ev.as_object_mut() {
            o.entry("eventId").or_insert_with(|| format!("e{}", self.seq).into());
            o.entry("timestamp").or_insert_with(|| rfc3339(now_ms()).into());
        }
        self.log.push_back((self.seq, ev));
        while self.log.len() > self.cfg.event_buffer.max(1) {
            self.log.pop_front();
        }
    }

    fn party_event(&mut self, number: &str, kind: &str, extra: Value) -> Option<()> {
        let u = self.user(number)?;
        let mut ev = json!({ "eventType": kind, "userId": u.id, "msisdn": u.number });
        if let (Some(o), Some(x)) = (ev.as_object_mut(), extra.as_object()) {
            o.extend(x.clone());
        }
        self.push(ev);
        Some(())
    }

    fn set_status(&mut self, number: &str, s: Status) {
        let Some(u) = self.user(number) else { return };
        u.status = s;
        u.updated = now_ms();
        if s != Status::Busy {
            u.call = None;
        }
        self.party_event(number, "deviceStatus", json!({ "status": s.as_str() }));
    }

    fn monitor_alive(&mut self, id: &str) -> bool {
        let now = Instant::now();
        if self.monitor.as_ref().is_some_and(|m| m.expires_at <= now) {
            self.monitor = None;
        }
        self.monitor.as_ref().is_some_and(|m| m.id == id)
    }
}

fn absence_json(a: &Abs) -> Value {
    json!({ "id": a.id, "type": a.kind, "from": rfc3339(a.from), "to": a.to.map(rfc3339), "message": a.text })
}

/// The running simulator.
pub struct MbnSim {
    server: Server,
    inner: Shared,
}

impl MbnSim {
    /// Starts on `127.0.0.1` (any free port).
    pub fn start(cfg: MbnSimConfig) -> std::io::Result<MbnSim> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), cfg)
    }

    /// Starts on `addr`.
    pub fn start_on(addr: SocketAddr, cfg: MbnSimConfig) -> std::io::Result<MbnSim> {
        let base = cfg.base_path.trim_end_matches('/').to_string();
        let inner: Shared = Arc::new(Inner {
            state: Mutex::new(State {
                cfg,
                users: BTreeMap::new(),
                log: VecDeque::new(),
                seq: 0,
                epoch: 1,
                monitor: None,
                tokens: HashMap::new(),
                counter: 0,
                misbehave: Misbehave::default(),
                stats: SimStats::default(),
            }),
            wake: tokio::sync::watch::channel(0).0,
        });
        let st = inner.clone();
        let server = Server::start(addr, move |c: &mut web::ServiceConfig| {
            c.app_data(web::Data::new(st.clone()))
                .route("/oauth/v2/token", web::post().to(token))
                .route(&format!("{base}/catalog/userInfo"), web::get().to(user_info))
                .route(&format!("{base}/status/token"), web::post().to(status_token))
                .route(&format!("{base}/status/users"), web::get().to(status_list))
                .route(&format!("{base}/csta/authentication/token"), web::post().to(csta_login))
                .route(&format!("{base}/csta/monitor/enterprise"), web::post().to(monitor_start))
                .route(&format!("{base}/csta/monitor/{{id}}"), web::put().to(monitor_refresh))
                .route(&format!("{base}/csta/monitor/{{id}}"), web::delete().to(monitor_delete))
                .route(&format!("{base}/csta/monitor/{{id}}/events"), web::get().to(events));
        })?;
        Ok(MbnSim { server, inner })
    }

    /// The server's URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The API's base URL to configure (`base_url`).
    pub fn base_url(&self) -> String {
        format!("{}{}", self.url(), lock(&self.inner).cfg.base_path.trim_end_matches('/'))
    }

    /// The token endpoint to configure (`token_url`).
    pub fn token_url(&self) -> String {
        format!("{}/oauth/v2/token", self.url())
    }

    /// The simulator's settings.
    pub fn config(&self) -> MbnSimConfig {
        lock(&self.inner).cfg.clone()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let (out, seq) = {
            let mut g = lock(&self.inner);
            let out = f(&mut g);
            (out, g.seq)
        };
        // Wake waiting polls (also for lost monitors and expired tokens).
        self.inner.wake.send_replace(seq);
        out
    }

    /// Adds users (Available, no absences) without events: the state before the hub starts.
    /// Numbers in any form; national ones get the configured country code.
    pub fn seed<S: AsRef<str>>(&self, numbers: &[S]) {
        self.with(|g| {
            for n in numbers {
                let _ = g.user(n.as_ref());
            }
        });
    }

    /// A number as the simulator writes it (E.164).
    pub fn e164(&self, number: &str) -> Option<String> {
        e164(number, &lock(&self.inner).cfg.country_code)
    }

    /// A call rings on `number` (`delivered`).
    pub fn ring(&self, number: &str) {
        self.with(|g| {
            let id = g.next_id("call");
            let Some(u) = g.user(number) else { return };
            u.call = Some((id.clone(), false));
            g.party_event(number, "delivered", json!({ "callId": id, "direction": "INCOMING" }));
        });
    }

    /// A call is up on `number` (`established`, then the device is `BUSY`); a ringing call is
    /// answered.
    pub fn call_start(&self, number: &str) {
        self.with(|g| {
            let fresh = g.next_id("call");
            let Some(u) = g.user(number) else { return };
            let id = u.call.as_ref().map_or(fresh, |c| c.0.clone());
            u.call = Some((id.clone(), true));
            u.status = Status::Busy;
            u.updated = now_ms();
            g.party_event(number, "established", json!({ "callId": id, "direction": "INCOMING" }));
            g.party_event(number, "deviceStatus", json!({ "status": "BUSY" }));
        });
    }

    /// The call on `number` ends (`connectionCleared`, then the device is `AVAILABLE`).
    pub fn call_end(&self, number: &str) {
        self.with(|g| {
            let Some(u) = g.user(number) else { return };
            let call = u.call.take();
            u.status = Status::Available;
            u.updated = now_ms();
            if let Some((id, _)) = call {
                g.party_event(number, "connectionCleared", json!({ "callId": id }));
            }
            g.party_event(number, "deviceStatus", json!({ "status": "AVAILABLE" }));
        });
    }

    /// Sets the device status of `number` (`deviceStatus`).
    pub fn set_status(&self, number: &str, status: Status) {
        self.with(|g| g.set_status(number, status));
    }

    /// Sets an absence of the user of `number` (`absence`): `kind` as MBN spells it (`MEETING`,
    /// `ILLNESS`, `HOLIDAY`, `LUNCH`, `COURSE`, `OTHER`…), from/to in Unix milliseconds (no
    /// `to`: until further notice), a free text. Returns its id.
    pub fn set_absence(&self, number: &str, kind: &str, from: i64, to: Option<i64>, text: Option<&str>) -> String {
        self.with(|g| {
            let id = g.next_id("a");
            let a = Abs { id: id.clone(), kind: kind.into(), from, to, text: text.map(Into::into) };
            let Some(u) = g.user(number) else { return id };
            u.absences.insert(id.clone(), a.clone());
            u.updated = now_ms();
            g.party_event(number, "absence", json!({ "absence": absence_json(&a) }));
            id
        })
    }

    /// Removes every absence of the user of `number` (`absenceRemoved` each).
    pub fn clear_absence(&self, number: &str) {
        self.with(|g| {
            let Some(u) = g.user(number) else { return };
            let ids: Vec<String> = std::mem::take(&mut u.absences).into_keys().collect();
            u.updated = now_ms();
            for id in ids {
                g.party_event(number, "absenceRemoved", json!({ "absenceId": id }));
            }
        });
    }

    /// `n` device status changes at once (Busy/Available flips over the known users, in a
    /// deterministic order): a burst.
    pub fn burst(&self, n: usize, seed: u64) {
        self.with(|g| {
            let numbers: Vec<String> = g.users.keys().cloned().collect();
            if numbers.is_empty() {
                return;
            }
            let mut rng = Rng::new(seed);
            for _ in 0..n {
                let num = &numbers[rng.below(numbers.len() as u64) as usize];
                let s = if rng.below(2) == 0 { Status::Busy } else { Status::Available };
                g.set_status(num, s);
            }
        });
    }

    /// Queues `n` malformed events (missing fields, wrong types, impossible times, not an
    /// object, a number that is no number) between good ones.
    pub fn inject_malformed(&self, n: usize) {
        self.with(|g| {
            let number = g.users.keys().next().cloned().unwrap_or_else(|| "+4790000000".into());
            for i in 0..n {
                let ev = match i % 6 {
                    0 => json!({ "eventType": "deviceStatus", "msisdn": number }),
                    1 => json!({ "status": "BUSY", "msisdn": number }),
                    2 => json!("garbage"),
                    3 => json!({ "eventType": "established", "msisdn": number }),
                    4 => json!({ "eventType": "absence", "msisdn": number,
                        "absence": { "id": "bad", "type": "LUNCH", "from": "2026-03-02T12:00:00Z", "to": "yesterday" } }),
                    _ => json!({ "eventType": "deviceStatus", "msisdn": "not-a-number", "status": "BUSY" }),
                };
                g.push(ev);
            }
        });
    }

    /// Queues a raw event as is.
    pub fn inject_raw(&self, event: Value) {
        self.with(|g| g.push(event));
    }

    /// Forgets the monitor: its next poll or refresh gets `404` (a waiting poll at once).
    pub fn lose_monitor(&self) {
        self.with(|g| g.monitor = None);
    }

    /// Forgets every cursor: the next poll gets `410` (a waiting poll at once).
    pub fn forget_cursors(&self) {
        self.with(|g| {
            g.epoch += 1;
            g.log.clear();
        });
    }

    /// Expires every issued token now: the next call gets `401` with code 40106 (a waiting poll
    /// at once).
    pub fn expire_tokens(&self) {
        self.with(|g| {
            let now = Instant::now();
            for (_, exp) in g.tokens.values_mut() {
                *exp = now;
            }
        });
    }

    /// Sets the misbehaviour.
    pub fn misbehave(&self, m: Misbehave) {
        self.with(|g| g.misbehave = m);
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        lock(&self.inner).stats.clone()
    }

    /// The current monitor's id.
    pub fn monitor_id(&self) -> Option<String> {
        lock(&self.inner).monitor.as_ref().map(|m| m.id.clone())
    }

    /// The device status of `number`, if known.
    pub fn status_of(&self, number: &str) -> Option<Status> {
        let g = lock(&self.inner);
        let n = e164(number, &g.cfg.country_code)?;
        g.users.get(&n).map(|u| u.status)
    }

    /// Plays a working day on `numbers` on a thread of its own until the simulator is
    /// dropped: about every `every` (± half) someone's phone rings and is answered, a call ends,
    /// a meeting, lunch or sick day is set or cleared, or a phone goes off and on again.
    pub fn drive_demo(self: &Arc<Self>, numbers: Vec<String>, every: Duration, seed: u64) -> std::io::Result<()> {
        let sim = Arc::downgrade(self);
        std::thread::Builder::new().name("mbn-sim-demo".into()).spawn(move || {
            let mut rng = Rng::new(seed);
            let mut calls: Vec<(String, Instant)> = Vec::new();
            let mut answer: Vec<(String, Instant)> = Vec::new();
            let every_ms = every.as_millis().max(1) as u64;
            loop {
                std::thread::sleep(Duration::from_millis(every_ms / 2 + rng.below(every_ms + 1)));
                let Some(sim) = sim.upgrade() else { return };
                if numbers.is_empty() {
                    return;
                }
                let now = Instant::now();
                for (n, _) in answer.iter().filter(|(_, t)| *t <= now) {
                    sim.call_start(n);
                    calls.push((n.clone(), now + Duration::from_secs(5 + rng.below(40))));
                }
                answer.retain(|(_, t)| *t > now);
                for (n, _) in calls.iter().filter(|(_, t)| *t <= now) {
                    sim.call_end(n);
                }
                calls.retain(|(_, t)| *t > now);
                let n = numbers[rng.below(numbers.len() as u64) as usize].clone();
                if calls.iter().chain(answer.iter()).any(|(x, _)| *x == n) {
                    continue;
                }
                let t = now_ms();
                match rng.below(100) {
                    0..=24 => {
                        sim.ring(&n);
                        answer.push((n, now + Duration::from_millis(1500 + rng.below(3000))));
                    }
                    25..=49 => {
                        sim.call_start(&n);
                        calls.push((n, now + Duration::from_secs(5 + rng.below(60))));
                    }
                    50..=61 => {
                        let mins = 30 + rng.below(60) as i64;
                        sim.set_absence(&n, "MEETING", t, Some(t + mins * 60_000), Some("Kundmöte"));
                    }
                    62..=68 => {
                        sim.set_absence(&n, "LUNCH", t, Some(t + 30 * 60_000), Some("Lunch, tillbaka om en halvtimme"));
                    }
                    69..=71 => {
                        sim.set_absence(&n, "ILLNESS", t, Some(t + 8 * 3_600_000), Some("Sjuk, åter i morgon"));
                    }
                    72..=82 => sim.clear_absence(&n),
                    83..=88 => sim.set_status(&n, Status::Offline),
                    _ => sim.set_status(&n, Status::Available),
                }
            }
        })?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn token(state: web::Data<Shared>, req: HttpRequest, form: web::Form<HashMap<String, String>>) -> HttpResponse {
    let mut g = lock(&state);
    g.stats.token_requests += 1;
    let client_ok =
        basic_credentials(&req).is_some_and(|(id, secret)| id == g.cfg.client_id && secret == g.cfg.client_secret);
    if !client_ok {
        g.stats.logins_refused += 1;
        return oauth_error(401, "invalid_client", "Client authentication failed (Basic client_id:client_secret).");
    }
    if form.get("grant_type").map(String::as_str) != Some("password") {
        g.stats.logins_refused += 1;
        return oauth_error(400, "unsupported_grant_type", "Only the password grant is supported.");
    }
    let user_ok = form.get("username") == Some(&g.cfg.username) && form.get("password") == Some(&g.cfg.password);
    if !user_ok || g.misbehave.refuse_logins {
        g.stats.logins_refused += 1;
        return oauth_error(400, "invalid_grant", "Invalid username or password.");
    }
    g.stats.logins += 1;
    let t = g.issue(TokenKind::Access, "at");
    let life = g.cfg.token_lifetime.as_secs().max(1);
    HttpResponse::Ok().json(json!({ "access_token": t, "token_type": "Bearer", "expires_in": life }))
}

async fn user_info(state: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    let mut g = lock(&state);
    if let Some(r) = g.guard(&req, None) {
        return r;
    }
    g.stats.user_info += 1;
    HttpResponse::Ok().json(json!({
        "userId": "api-user-1", "companyId": g.cfg.company_id, "name": "Presence Hub API user",
        "msisdn": null, "roles": ["API_USER"],
    }))
}

async fn status_token(state: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    let mut g = lock(&state);
    if let Some(r) = g.guard(&req, None) {
        return r;
    }
    g.stats.status_tokens += 1;
    let t = g.issue(TokenKind::Status, "st");
    HttpResponse::Ok().json(json!({ "token": t, "expiresIn": g.cfg.token_lifetime.as_secs().max(1) }))
}

async fn csta_login(state: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let mut g = lock(&state);
    if let Some(r) = g.guard(&req, None) {
        return r;
    }
    let st = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["statusToken"].as_str().map(str::to_string));
    if st.is_none() {
        return error(400, 40001, "statusToken is required");
    }
    if let Some(r) = g.check_token(st.as_deref(), TokenKind::Status) {
        return r;
    }
    g.stats.csta_logins += 1;
    let t = g.issue(TokenKind::Csta, "csta");
    HttpResponse::Ok().json(json!({ "cstaToken": t, "expiresIn": g.cfg.token_lifetime.as_secs().max(1) }))
}

fn granted(g: &State, body: &[u8]) -> Duration {
    let asked = serde_json::from_slice::<Value>(body).ok().and_then(|v| v["expiresIn"].as_u64());
    let max = g.cfg.monitor_lifetime;
    asked.map_or(max, |s| Duration::from_secs(s.max(1)).min(max))
}

async fn monitor_start(state: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let mut g = lock(&state);
    if g.misbehave.fail_monitor_starts > 0 {
        g.misbehave.fail_monitor_starts -= 1;
        g.misbehave.fail_next += 1;
    }
    if let Some(r) = g.guard(&req, Some(TokenKind::Csta)) {
        return r;
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if v["type"] != "ENTERPRISE" {
        return error(400, 40001, "type must be ENTERPRISE");
    }
    if let Some(c) = v["companyId"].as_str() {
        if c != g.cfg.company_id {
            return error(403, 40301, "Not your company");
        }
    }
    let life = granted(&g, &body);
    let id = g.next_id("monitor");
    let start_seq = g.seq;
    g.monitor = Some(MonitorRec { id: id.clone(), start_seq, expires_at: Instant::now() + life });
    g.stats.monitors_started += 1;
    HttpResponse::Created().json(json!({ "monitorId": id, "type": "ENTERPRISE", "expiresIn": life.as_secs() }))
}

async fn monitor_refresh(
    state: web::Data<Shared>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let mut g = lock(&state);
    if let Some(r) = g.guard(&req, Some(TokenKind::Csta)) {
        return r;
    }
    if !g.monitor_alive(&id) {
        g.stats.gone += 1;
        return error(404, 40401, "Unknown monitor");
    }
    let life = granted(&g, &body);
    if let Some(m) = g.monitor.as_mut() {
        m.expires_at = Instant::now() + life;
    }
    g.stats.monitor_refreshes += 1;
    HttpResponse::Ok().json(json!({ "monitorId": id.as_str(), "type": "ENTERPRISE", "expiresIn": life.as_secs() }))
}

async fn monitor_delete(state: web::Data<Shared>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let mut g = lock(&state);
    if let Some(r) = g.guard(&req, Some(TokenKind::Csta)) {
        return r;
    }
    if !g.monitor_alive(&id) {
        return error(404, 40401, "Unknown monitor");
    }
    g.monitor = None;
    g.stats.monitor_deletes += 1;
    HttpResponse::NoContent().finish()
}

/// What a poll finds when it looks.
enum Look {
    Answer(HttpResponse),
    Wait,
}

fn look(g: &mut State, req: &HttpRequest, id: &str, cursor: Option<&str>) -> Look {
    if let Some(r) = g.check_auth(req, Some(TokenKind::Csta)) {
        return Look::Answer(r);
    }
    if !g.monitor_alive(id) {
        g.stats.gone += 1;
        return Look::Answer(error(404, 40401, "Unknown monitor"));
    }
    let start = g.monitor.as_ref().map_or(0, |m| m.start_seq);
    let from = match cursor {
        None => start,
        Some(c) => {
            let parsed = c.split_once('-').and_then(|(e, s)| Some((e.parse::<u64>().ok()?, s.parse::<u64>().ok()?)));
            let oldest = g.log.front().map_or(g.seq, |(s, _)| s.saturating_sub(1));
            match parsed {
                Some((e, s)) if e == g.epoch && s >= start && s >= oldest && s <= g.seq => s,
                _ => {
                    g.stats.gone += 1;
                    return Look::Answer(error(410, 41001, "Unknown or expired cursor"));
                }
            }
        }
    };
    let batch: Vec<(u64, Value)> =
        g.log.iter().filter(|(s, _)| *s > from).take(g.cfg.max_batch.max(1)).cloned().collect();
    let Some(last) = batch.last().map(|(s, _)| *s) else { return Look::Wait };
    g.stats.events_delivered += batch.len() as u64;
    let events: Vec<Value> = batch.into_iter().map(|(_, v)| v).collect();
    Look::Answer(HttpResponse::Ok().json(json!({ "cursor": format!("{}-{last}", g.epoch), "events": events })))
}

async fn events(
    state: web::Data<Shared>,
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let stall = {
        let mut g = lock(&state);
        g.stats.polls += 1;
        if let Some(r) = g.guard(&req, Some(TokenKind::Csta)) {
            return r;
        }
        g.misbehave.stall_polls
    };
    if !stall.is_zero() {
        tokio::time::sleep(stall).await;
    }
    let wait = q.get("timeout").and_then(|t| t.parse::<u64>().ok()).unwrap_or(30).min(120);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let cursor = q.get("cursor").cloned();
    let mut rx = state.wake.subscribe();
    loop {
        rx.borrow_and_update();
        {
            let mut g = lock(&state);
            if let Look::Answer(r) = look(&mut g, &req, &id, cursor.as_deref()) {
                return r;
            }
            if tokio::time::Instant::now() >= deadline {
                g.stats.polls_timed_out += 1;
                return HttpResponse::NoContent().finish();
            }
        }
        let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
    }
}

async fn status_list(
    state: web::Data<Shared>,
    req: HttpRequest,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let mut g = lock(&state);
    if let Some(r) = g.guard(&req, Some(TokenKind::Status)) {
        return r;
    }
    g.stats.status_pages += 1;
    let page = q.get("page").and_then(|p| p.parse::<usize>().ok()).unwrap_or(0);
    let size = g.cfg.page_size.max(1);
    let users: Vec<Value> = g
        .users
        .values()
        .skip(page.saturating_mul(size))
        .take(size)
        .map(|u| {
            json!({
                "userId": u.id, "msisdn": u.number, "status": u.status.as_str(), "updated": rfc3339(u.updated),
                "absences": u.absences.values().map(absence_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    let more = g.users.len() > (page + 1).saturating_mul(size);
    HttpResponse::Ok().json(json!({ "users": users, "nextPage": more.then(|| (page + 1).to_string()) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_providers::common::{http, oauth};
    use presence_providers::mbn::parse;

    struct Client {
        http: reqwest::Client,
        base: String,
        access: String,
        status: String,
        csta: String,
    }

    async fn login(sim: &MbnSim) -> Client {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let cfg = sim.config();
        let r = http
            .post(sim.token_url())
            .basic_auth(&cfg.client_id, Some(&cfg.client_secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(oauth::password_form(&cfg.username, &cfg.password, None))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let access = oauth::parse_token_response(&r.bytes().await.unwrap()).unwrap().access_token;
        let base = sim.base_url();
        let r = http.get(format!("{base}/catalog/userInfo")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(
            parse::parse_user_info(&r.bytes().await.unwrap()).unwrap().company_id.as_deref(),
            Some("NO-987654321")
        );
        let r = http.post(format!("{base}/status/token")).bearer_auth(&access).send().await.unwrap();
        let status = parse::parse_status_token(&r.bytes().await.unwrap()).unwrap().token;
        let r = http
            .post(format!("{base}/csta/authentication/token"))
            .bearer_auth(&access)
            .body(parse::csta_login_body(&status))
            .send()
            .await
            .unwrap();
        let csta = parse::parse_csta_token(&r.bytes().await.unwrap()).unwrap().token;
        Client { http, base, access, status, csta }
    }

    impl Client {
        async fn start_monitor(&self) -> String {
            let r = self
                .http
                .post(format!("{}/csta/monitor/enterprise", self.base))
                .bearer_auth(&self.access)
                .header(parse::HEADER_CSTA_TOKEN, &self.csta)
                .body(parse::monitor_start_body(Some("NO-987654321"), 60))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            parse::parse_monitor(&r.bytes().await.unwrap()).unwrap().id
        }

        async fn poll(&self, monitor: &str, wait: u64, cursor: Option<&str>) -> (u16, Vec<u8>) {
            let url = format!(
                "{}{}?{}",
                self.base,
                parse::path_with_id(parse::PATH_EVENTS, monitor),
                parse::events_query(wait, cursor)
            );
            let r = self
                .http
                .get(url)
                .bearer_auth(&self.access)
                .header(parse::HEADER_CSTA_TOKEN, &self.csta)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        }
    }

    #[test]
    fn mbn_numbers_are_written_in_e164() {
        assert_eq!(e164("072-128 16 05", "46").as_deref(), Some("+46721281605"));
        assert_eq!(e164("+47 912 34 567", "46").as_deref(), Some("+4791234567"));
        assert_eq!(e164("0047 912 34 567", "46").as_deref(), Some("+4791234567"));
        assert_eq!(e164("91234567", "47").as_deref(), Some("+4791234567"));
        assert_eq!(e164("x", "46"), None);
    }

    #[actix_rt::test]
    async fn mbn_sim_speaks_the_assumed_flow() {
        let sim = MbnSim::start(MbnSimConfig::default()).unwrap();
        sim.seed(&["072-128 16 05", "079-786 73 70"]);
        // Wrong client credentials and wrong user are refused.
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let cfg = sim.config();
        let r = http
            .post(sim.token_url())
            .basic_auth(&cfg.client_id, Some("wrong"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(oauth::password_form(&cfg.username, &cfg.password, None))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = http
            .post(sim.token_url())
            .basic_auth(&cfg.client_id, Some(&cfg.client_secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(oauth::password_form(&cfg.username, "wrong", None))
            .send()
            .await
            .unwrap();
        assert_eq!(oauth::parse_oauth_error(&r.bytes().await.unwrap()).unwrap().error, "invalid_grant");

        let c = login(&sim).await;
        // The status list.
        let r = c
            .http
            .get(format!("{}/status/users", c.base))
            .bearer_auth(&c.access)
            .header(parse::HEADER_STATUS_TOKEN, &c.status)
            .send()
            .await
            .unwrap();
        let page = parse::parse_status_list(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(page.users.len(), 2);
        assert_eq!(page.users[0].as_ref().unwrap().party.msisdn.as_deref(), Some("+46721281605"));
        assert_eq!(page.next_page, None);

        let m = c.start_monitor().await;
        // Nothing happens: 204 after the wait.
        let t0 = Instant::now();
        assert_eq!(c.poll(&m, 1, None).await.0, 204);
        assert!(t0.elapsed() >= Duration::from_millis(900));
        // A call: the waiting poll is answered at once.
        let sim = Arc::new(sim);
        let s2 = sim.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            s2.call_start("+46721281605");
        });
        let t0 = Instant::now();
        let (status, body) = c.poll(&m, 10, None).await;
        t.join().unwrap();
        assert_eq!(status, 200);
        assert!(t0.elapsed() < Duration::from_secs(5));
        let batch = parse::parse_events(&body).unwrap();
        let kinds: Vec<_> = batch.events.into_iter().map(|e| e.unwrap().kind).collect();
        assert!(matches!(&kinds[0], parse::EventKind::Call { state: parse::CallState::Connected, .. }));
        assert_eq!(kinds[1], parse::EventKind::DeviceStatus(parse::DeviceStatus::Busy));
        let cursor = batch.cursor.unwrap();
        // Absence, malformed events, removal — in order, from the cursor.
        sim.set_absence("0721281605", "ILLNESS", 1_000, Some(2_000), Some("Sjuk"));
        sim.inject_malformed(6);
        sim.clear_absence("+46721281605");
        let (_, body) = c.poll(&m, 1, Some(&cursor)).await;
        let batch = parse::parse_events(&body).unwrap();
        assert_eq!(batch.events.len(), 8);
        assert_eq!(batch.events.iter().filter(|e| e.is_err()).count(), 6);
        assert!(
            matches!(&batch.events[0], Ok(e) if matches!(&e.kind, parse::EventKind::Absence(a) if a.kind == "illness"))
        );
        assert!(matches!(&batch.events[7], Ok(e) if matches!(e.kind, parse::EventKind::AbsenceRemoved { .. })));
        let cursor = batch.cursor.unwrap();
        // A lost cursor: 410; a lost monitor: 404; expired tokens: 401 40106.
        sim.forget_cursors();
        assert_eq!(c.poll(&m, 0, Some(&cursor)).await.0, 410);
        assert_eq!(c.poll(&m, 0, None).await.0, 204);
        sim.lose_monitor();
        assert_eq!(c.poll(&m, 0, None).await.0, 404);
        let m = c.start_monitor().await;
        sim.expire_tokens();
        let (status, body) = c.poll(&m, 0, None).await;
        assert_eq!(status, 401);
        assert!(http::error_text(&body).starts_with("40106:"), "access token expired");
        // 503s with Retry-After.
        let c = login(&sim).await;
        sim.misbehave(Misbehave { fail_next: 1, ..Misbehave::default() });
        assert_eq!(c.poll(&m, 0, None).await.0, 503);
        assert_eq!(c.poll(&m, 0, None).await.0, 204);
        let st = sim.stats();
        assert_eq!((st.monitors_started, st.failed_503, st.logins), (2, 1, 2));
    }
}
