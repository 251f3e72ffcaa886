//! A mobile operator's business platform for the generic operator adapter (TDC, Phonero,
//! A1). None of them documents a call-event format (docs/ARCHITECTURE.md, § Protocol
//! references), so the simulator
//! speaks the three *example* formats shipped in `fixtures/operators/{tdc,phonero,a1}.toml`:
//!
//! - [`Example::Tdc`]: JSON `{"operator":"tdc","events":[{"id","msisdn","event","forward",
//!   "absence","ts"}]}`, call words `call_start` / `call_answered` / `call_end`, RFC 3339
//!   times, the forward object in the TelecomX `callforward` shape; webhooks signed
//!   Stripe-style (`X-TDC-Signature: t=…,v1=<hex HMAC-SHA256 of "t.body">`).
//! - [`Example::Phonero`]: a JSON array of `{"eventId","phoneNumber","lineState","diversion",
//!   "profile","timestamp"}`, words `RINGING` / `BUSY` / `IDLE`, Norwegian absence codes,
//!   epoch milliseconds; webhooks carry `X-Api-Key`.
//! - [`Example::A1`]: XML `<presence><subscriber msisdn ts id><callState/><diversion
//!   active target/><absence type until>text</absence></subscriber></presence>`, words
//!   `ALERTING` / `CONNECTED` / `IDLE`, German absence words, epoch seconds; polled with Basic
//!   auth and `ETag`.
//!
//! Either intake works with any format: every change is POSTed to the webhook URL (when one is
//! set) with the configured authentication ([`SimAuth`]), and `GET /poll` serves the current
//! state of every number as one event each (`ETag` / `If-None-Match` → `304`; [`PollAuth`]).
//!
//! Drive it with [`OperatorSim::call_start`], [`call_answer`](OperatorSim::call_answer),
//! [`call_end`](OperatorSim::call_end), [`divert`](OperatorSim::divert),
//! [`set_absence`](OperatorSim::set_absence), or [`send`](OperatorSim::send) for hand-made
//! events (older timestamps, repeated ids); [`OperatorSim::drive_demo`] keeps calls going.
//! [`Misbehave`] makes polls fail (`503`, optionally with `Retry-After`) or slow, drops or
//! duplicates webhooks, signs them wrongly, or truncates bodies; [`OperatorSim::burst`] sends
//! many requests at once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use aws_lc_rs::hmac;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::graph::{now_ms, Rng};
use crate::Server;
use presence_sip::body::xml_escape;

/// Which example format to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Example {
    /// TDC: JSON webhook, Stripe-style HMAC.
    Tdc,
    /// Phonero: JSON array, token header.
    Phonero,
    /// A1: XML, polled with Basic auth.
    A1,
}

impl Example {
    /// The example's name (`tdc`, `phonero`, `a1`), as in `fixtures/operators/{name}.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Example::Tdc => "tdc",
            Example::Phonero => "phonero",
            Example::A1 => "a1",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Example::A1 => "application/xml; charset=utf-8",
            _ => "application/json",
        }
    }
}

/// HMAC hash of [`SimAuth::Hmac`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA1.
    Sha1,
}

/// How webhooks are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimAuth {
    /// Nothing.
    None,
    /// An HMAC signature of the body in `header`.
    Hmac {
        /// Header name.
        header: String,
        /// Hash.
        algorithm: HmacAlgorithm,
        /// Base64 instead of hex.
        base64: bool,
        /// `t=<unix>,v1=<sig>` over `"t.body"` instead of the bare signature.
        stripe: bool,
        /// Prefix before a bare signature (`sha256=`).
        prefix: String,
        /// The secret.
        secret: String,
    },
    /// A shared token in `header` (sent as `Bearer <token>` when the header is Authorization).
    Token {
        /// Header name.
        header: String,
        /// The token.
        token: String,
    },
}

/// How `GET /poll` is authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollAuth {
    /// Anyone.
    None,
    /// HTTP Basic.
    Basic {
        /// User.
        username: String,
        /// Password.
        password: String,
    },
    /// `Authorization: Bearer`.
    Bearer(String),
}

/// Settings of an [`OperatorSim`].
#[derive(Debug, Clone)]
pub struct OperatorSimConfig {
    /// The format.
    pub example: Example,
    /// Webhook authentication.
    pub auth: SimAuth,
    /// Poll authentication.
    pub poll_auth: PollAuth,
    /// Where to POST changes (`None`: poll only). Can be set later.
    pub webhook_url: Option<String>,
    /// For an `https://` webhook URL: trust only this CA (PEM) rather than the system's.
    pub webhook_ca_pem: Option<Vec<u8>>,
}

impl OperatorSimConfig {
    /// The settings that match `fixtures/operators/{example}.toml` (its placeholder secrets).
    pub fn example(example: Example) -> OperatorSimConfig {
        let (auth, poll_auth) = match example {
            Example::Tdc => (
                SimAuth::Hmac {
                    header: "X-TDC-Signature".into(),
                    algorithm: HmacAlgorithm::Sha256,
                    base64: false,
                    stripe: true,
                    prefix: String::new(),
                    secret: "change-me-tdc-webhook-secret".into(),
                },
                PollAuth::None,
            ),
            Example::Phonero => (
                SimAuth::Token { header: "X-Api-Key".into(), token: "change-me-phonero-api-key".into() },
                PollAuth::None,
            ),
            Example::A1 => {
                (SimAuth::None, PollAuth::Basic { username: "change-me".into(), password: "change-me".into() })
            }
        };
        OperatorSimConfig { example, auth, poll_auth, webhook_url: None, webhook_ca_pem: None }
    }
}

/// A call state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimCall {
    /// Alerting.
    Ringing,
    /// Answered.
    InCall,
    /// No call.
    Idle,
}

/// An absence type, written in each example's words.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AbsenceKind {
    /// Meeting.
    Meeting,
    /// Illness.
    Sick,
    /// Holiday.
    Vacation,
    /// Lunch.
    Lunch,
    /// Course.
    Course,
    /// Travel.
    BusinessTrip,
    /// This word exactly (e.g. one the mapping does not know).
    Raw(String),
}

/// One event as the simulator sends it; `None` fields are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEvent {
    /// Event id.
    pub id: String,
    /// The phone number.
    pub number: String,
    /// Timestamp, ms (written in the example's unit).
    pub at_ms: i64,
    /// Call state.
    pub call: Option<SimCall>,
    /// `Some(Some(to))` diverted, `Some(None)` not.
    pub forward: Option<Option<String>>,
    /// `Some(Some((kind, text)))` absent, `Some(None)` back.
    pub absence: Option<Option<(AbsenceKind, Option<String>)>>,
}

/// Ways to misbehave, set with [`OperatorSim::misbehave`].
#[derive(Debug, Clone, Default)]
pub struct Misbehave {
    /// Answer every poll `503` while set.
    pub fail_polls: bool,
    /// Answer this many polls `503`.
    pub fail_next_polls: u32,
    /// `Retry-After` seconds on those `503`s.
    pub retry_after_secs: Option<u64>,
    /// Delay every poll answer and webhook POST by this long.
    pub slow: Duration,
    /// Do not POST changes (the poll state still changes).
    pub drop_webhooks: bool,
    /// POST every change twice (a retrying sender).
    pub duplicate_webhooks: bool,
    /// Sign this many webhooks with a wrong secret.
    pub wrong_signature_next: u32,
    /// Truncate this many bodies (webhooks and polls alike).
    pub malformed_next: u32,
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpSimStats {
    /// Webhook requests sent.
    pub webhooks_sent: u64,
    /// Answered 2xx.
    pub webhooks_ok: u64,
    /// Answered otherwise, by status.
    pub webhooks_refused: BTreeMap<u16, u64>,
    /// Not answered (connection error, timeout).
    pub webhook_errors: u64,
    /// Polls served (any answer).
    pub polls: u64,
    /// Polls answered `304`.
    pub polls_not_modified: u64,
    /// Polls answered `503`.
    pub polls_failed: u64,
    /// Polls answered `401`.
    pub polls_unauthorized: u64,
}

#[derive(Debug, Clone, Default)]
struct Line {
    call: Option<SimCall>,
    forward: Option<String>,
    absence: Option<(AbsenceKind, Option<String>)>,
    at_ms: i64,
}

struct State {
    cfg: OperatorSimConfig,
    lines: BTreeMap<String, Line>,
    version: u64,
    next_id: u64,
    last_body: Option<Vec<u8>>,
    misbehave: Misbehave,
    stats: OpSimStats,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running simulator.
pub struct OperatorSim {
    server: Server,
    state: Shared,
    http: reqwest::Client,
}

impl OperatorSim {
    /// Starts on `127.0.0.1` (any free port).
    pub fn start(cfg: OperatorSimConfig) -> std::io::Result<OperatorSim> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), cfg)
    }

    /// Starts on `addr`.
    pub fn start_on(addr: SocketAddr, cfg: OperatorSimConfig) -> std::io::Result<OperatorSim> {
        let state: Shared = Arc::new(Mutex::new(State {
            cfg,
            lines: BTreeMap::new(),
            version: 1,
            next_id: 1,
            last_body: None,
            misbehave: Misbehave::default(),
            stats: OpSimStats::default(),
        }));
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy();
        if let Some(pem) = &lock(&state).cfg.webhook_ca_pem {
            let ca = reqwest::Certificate::from_pem(pem).map_err(std::io::Error::other)?;
            http = http.tls_certs_only([ca]);
        }
        let http = http.build().map_err(std::io::Error::other)?;
        let st = state.clone();
        let server = Server::start(addr, move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(web::Data::new(st.clone())).route("/poll", web::get().to(poll));
        })?;
        Ok(OperatorSim { server, state, http })
    }

    /// Base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The URL to configure as `[providers.poll] url`.
    pub fn poll_url(&self) -> String {
        format!("{}/poll", self.url())
    }

    /// The example format.
    pub fn example(&self) -> Example {
        lock(&self.state).cfg.example
    }

    /// Sets (or clears) where changes are POSTed, e.g. `{hub}/hooks/tdc/events`.
    pub fn set_webhook_url(&self, url: Option<String>) {
        lock(&self.state).cfg.webhook_url = url;
    }

    /// Sets the misbehaviour.
    pub fn misbehave(&self, m: Misbehave) {
        lock(&self.state).misbehave = m;
    }

    /// Counters so far.
    pub fn stats(&self) -> OpSimStats {
        lock(&self.state).stats.clone()
    }

    /// A new event for `number`: a fresh id, stamped now, saying nothing yet.
    pub fn event(&self, number: &str) -> SimEvent {
        let mut g = lock(&self.state);
        let n = g.next_id;
        g.next_id += 1;
        SimEvent {
            id: format!("{}-{n:06}", g.cfg.example.name()),
            number: number.to_string(),
            at_ms: now_ms(),
            call: None,
            forward: None,
            absence: None,
        }
    }

    /// An incoming call starts ringing. Returns the webhook's status (None: not sent).
    pub async fn call_start(&self, number: &str) -> Option<u16> {
        self.call(number, SimCall::Ringing).await
    }

    /// The call is answered.
    pub async fn call_answer(&self, number: &str) -> Option<u16> {
        self.call(number, SimCall::InCall).await
    }

    /// The call ends.
    pub async fn call_end(&self, number: &str) -> Option<u16> {
        self.call(number, SimCall::Idle).await
    }

    async fn call(&self, number: &str, c: SimCall) -> Option<u16> {
        let e = SimEvent { call: Some(c), ..self.event(number) };
        self.send(vec![e]).await
    }

    /// Diverts `number` to `to`.
    pub async fn divert(&self, number: &str, to: &str) -> Option<u16> {
        let e = SimEvent { forward: Some(Some(to.to_string())), ..self.event(number) };
        self.send(vec![e]).await
    }

    /// Ends the diversion of `number`.
    pub async fn undivert(&self, number: &str) -> Option<u16> {
        let e = SimEvent { forward: Some(None), ..self.event(number) };
        self.send(vec![e]).await
    }

    /// Sets an absence profile on `number`.
    pub async fn set_absence(&self, number: &str, kind: AbsenceKind, text: Option<&str>) -> Option<u16> {
        let e = SimEvent { absence: Some(Some((kind, text.map(str::to_string)))), ..self.event(number) };
        self.send(vec![e]).await
    }

    /// Clears the absence profile of `number`.
    pub async fn clear_absence(&self, number: &str) -> Option<u16> {
        let e = SimEvent { absence: Some(None), ..self.event(number) };
        self.send(vec![e]).await
    }

    /// Applies `events` to the poll state (each only if not older than the line's state) and
    /// POSTs them as one body (unless webhooks are dropped or no URL is set).
    pub async fn send(&self, events: Vec<SimEvent>) -> Option<u16> {
        let (body, dup) = {
            let mut g = lock(&self.state);
            for e in &events {
                g.apply(e);
            }
            if g.cfg.webhook_url.is_none() || g.misbehave.drop_webhooks {
                return None;
            }
            let body = render(g.cfg.example, &events);
            g.last_body = Some(body.clone());
            (body, g.misbehave.duplicate_webhooks)
        };
        let status = self.post(body.clone(), true).await;
        if dup {
            self.post(body, true).await;
        }
        status
    }

    /// POSTs the last webhook body again (a duplicate delivery, freshly signed).
    pub async fn resend_last(&self) -> Option<u16> {
        let body = lock(&self.state).last_body.clone()?;
        self.post(body, true).await
    }

    /// POSTs `body` as is, signed or not.
    pub async fn send_raw(&self, body: Vec<u8>, signed: bool) -> Option<u16> {
        self.post(body, signed).await
    }

    /// `n` webhook requests at once, call events cycling over `numbers`; their statuses.
    pub async fn burst(&self, numbers: &[String], n: usize) -> Vec<Option<u16>> {
        if numbers.is_empty() {
            return Vec::new();
        }
        let states = [SimCall::Ringing, SimCall::InCall, SimCall::Idle];
        let sends = (0..n).map(|i| {
            let e = SimEvent { call: Some(states[(i / numbers.len()) % 3]), ..self.event(&numbers[i % numbers.len()]) };
            self.send(vec![e])
        });
        futures_join_all(sends).await
    }

    /// The body `GET /poll` serves now: every number's current state.
    pub fn snapshot(&self) -> Vec<u8> {
        lock(&self.state).snapshot()
    }

    /// `events` in the example's format (as a webhook body).
    pub fn render(&self, events: &[SimEvent]) -> Vec<u8> {
        render(self.example(), events)
    }

    async fn post(&self, mut body: Vec<u8>, signed: bool) -> Option<u16> {
        let (url, auth, example, wrong, slow) = {
            let mut g = lock(&self.state);
            let url = g.cfg.webhook_url.clone()?;
            if g.misbehave.malformed_next > 0 {
                g.misbehave.malformed_next -= 1;
                body.truncate(body.len() / 2);
            }
            let wrong = g.misbehave.wrong_signature_next > 0;
            if wrong {
                g.misbehave.wrong_signature_next -= 1;
            }
            g.stats.webhooks_sent += 1;
            (url, g.cfg.auth.clone(), g.cfg.example, wrong, g.misbehave.slow)
        };
        if !slow.is_zero() {
            tokio::time::sleep(slow).await;
        }
        let mut req = self.http.post(&url).header("content-type", example.content_type());
        if signed {
            if let Some((name, value)) = sign(&auth, &body, now_ms() / 1000, wrong) {
                req = req.header(name, value);
            }
        }
        let res = req.body(body).send().await;
        let mut g = lock(&self.state);
        match res {
            Ok(r) if r.status().is_success() => {
                g.stats.webhooks_ok += 1;
                Some(r.status().as_u16())
            }
            Ok(r) => {
                *g.stats.webhooks_refused.entry(r.status().as_u16()).or_default() += 1;
                Some(r.status().as_u16())
            }
            Err(_) => {
                g.stats.webhook_errors += 1;
                None
            }
        }
    }

    /// Keeps calls going, on a thread of its own until the simulator is dropped: every
    /// `every` (± half) a random number moves on (idle → ringing → in a call → idle, some
    /// calls unanswered), and now and then a number is diverted or gets an absence
    /// (meeting, lunch, sick) and later loses it again.
    pub fn drive_demo(self: &Arc<Self>, numbers: Vec<String>, every: Duration, seed: u64) -> std::io::Result<()> {
        let sim = Arc::downgrade(self);
        std::thread::Builder::new().name("operator-sim-demo".into()).spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            let mut rng = Rng::new(seed);
            let every_ms = every.as_millis().min(u64::MAX as u128) as u64;
            rt.block_on(async move {
                loop {
                    let wait = every_ms / 2 + rng.below(every_ms.saturating_add(1));
                    let until = tokio::time::Instant::now() + Duration::from_millis(wait);
                    // Sleep in slices so a dropped simulator ends the thread soon.
                    while tokio::time::Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(100).min(until - tokio::time::Instant::now())).await;
                        if sim.strong_count() == 0 {
                            return;
                        }
                    }
                    let Some(sim) = sim.upgrade() else { return };
                    if numbers.is_empty() {
                        return;
                    }
                    let n = &numbers[rng.below(numbers.len() as u64) as usize];
                    sim.demo_step(n, &mut rng).await;
                }
            });
        })?;
        Ok(())
    }

    async fn demo_step(&self, n: &str, rng: &mut Rng) {
        let line = lock(&self.state).lines.get(n).cloned().unwrap_or_default();
        let r = rng.below(100);
        if r < 8 {
            if line.forward.is_some() {
                self.undivert(n).await;
            } else {
                self.divert(n, "+46 8 410 200 00").await;
            }
            return;
        }
        if r < 16 {
            if line.absence.is_some() {
                self.clear_absence(n).await;
            } else {
                let kinds = [AbsenceKind::Meeting, AbsenceKind::Lunch, AbsenceKind::Sick];
                let k = kinds[rng.below(kinds.len() as u64) as usize].clone();
                self.set_absence(n, k, None).await;
            }
            return;
        }
        match line.call {
            None | Some(SimCall::Idle) => self.call_start(n).await,
            Some(SimCall::Ringing) if rng.below(4) == 0 => self.call_end(n).await,
            Some(SimCall::Ringing) => self.call_answer(n).await,
            Some(SimCall::InCall) => self.call_end(n).await,
        };
    }
}

impl State {
    fn apply(&mut self, e: &SimEvent) {
        let line = self.lines.entry(e.number.clone()).or_default();
        if e.at_ms < line.at_ms {
            return;
        }
        line.at_ms = e.at_ms;
        if let Some(c) = e.call {
            line.call = Some(c);
        }
        if let Some(f) = &e.forward {
            line.forward = f.clone();
        }
        if let Some(a) = &e.absence {
            line.absence = a.clone();
        }
        self.version += 1;
    }

    fn etag(&self) -> String {
        format!("\"v{}\"", self.version)
    }

    fn snapshot(&self) -> Vec<u8> {
        let ex = self.cfg.example;
        let events: Vec<SimEvent> = self
            .lines
            .iter()
            .map(|(n, l)| SimEvent {
                id: format!("{}-{}-{}", ex.name(), n.trim_start_matches('+'), l.at_ms),
                number: n.clone(),
                at_ms: l.at_ms,
                call: l.call,
                forward: Some(l.forward.clone()),
                absence: Some(l.absence.clone()),
            })
            .collect();
        render(ex, &events)
    }
}

/// `futures::future::join_all` without the dependency: polls every future to completion.
async fn futures_join_all<F: std::future::Future<Output = Option<u16>>>(
    futs: impl Iterator<Item = F>,
) -> Vec<Option<u16>> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<Option<u16>>> = vec![None; futs.len()];
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(out.iter().map(|o| o.flatten()).collect())
        }
    })
    .await
}

/// The authentication header for `body`: `(name, value)`.
fn sign(auth: &SimAuth, body: &[u8], t: i64, wrong: bool) -> Option<(String, String)> {
    match auth {
        SimAuth::None => None,
        SimAuth::Token { header, token } => {
            let token = if wrong { format!("{token}-wrong") } else { token.clone() };
            let v = if header.eq_ignore_ascii_case("authorization") { format!("Bearer {token}") } else { token };
            Some((header.clone(), v))
        }
        SimAuth::Hmac { header, algorithm, base64, stripe, prefix, secret } => {
            let alg = match algorithm {
                HmacAlgorithm::Sha256 => hmac::HMAC_SHA256,
                HmacAlgorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            };
            let secret = if wrong { format!("{secret}-wrong") } else { secret.clone() };
            let key = hmac::Key::new(alg, secret.as_bytes());
            let tag = if *stripe {
                let mut signed = format!("{t}.").into_bytes();
                signed.extend_from_slice(body);
                hmac::sign(&key, &signed)
            } else {
                hmac::sign(&key, body)
            };
            let sig = if *base64 {
                base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
            } else {
                tag.as_ref().iter().fold(String::new(), |mut s, b| {
                    let _ = write!(s, "{b:02x}");
                    s
                })
            };
            Some((header.clone(), if *stripe { format!("t={t},v1={sig}") } else { format!("{prefix}{sig}") }))
        }
    }
}

fn absence_word(ex: Example, k: &AbsenceKind) -> String {
    use AbsenceKind::*;
    let w = match (ex, k) {
        (_, Raw(s)) => return s.clone(),
        (Example::Tdc, Meeting) => "MEETING",
        (Example::Tdc, Sick) => "ILLNESS",
        (Example::Tdc, Vacation) => "HOLIDAY",
        (Example::Tdc, Lunch) => "LUNCH",
        (Example::Tdc, Course) => "COURSE",
        (Example::Tdc, BusinessTrip) => "TRAVEL",
        (Example::Phonero, Meeting) => "MOTE",
        (Example::Phonero, Sick) => "SYK",
        (Example::Phonero, Vacation) => "FERIE",
        (Example::Phonero, Lunch) => "LUNSJ",
        (Example::Phonero, Course) => "KURS",
        (Example::Phonero, BusinessTrip) => "REISE",
        (Example::A1, Meeting) => "Besprechung",
        (Example::A1, Sick) => "Krank",
        (Example::A1, Vacation) => "Urlaub",
        (Example::A1, Lunch) => "Mittagspause",
        (Example::A1, Course) => "Schulung",
        (Example::A1, BusinessTrip) => "Dienstreise",
    };
    w.to_string()
}

fn call_word(ex: Example, c: SimCall) -> &'static str {
    match (ex, c) {
        (Example::Tdc, SimCall::Ringing) => "call_start",
        (Example::Tdc, SimCall::InCall) => "call_answered",
        (Example::Tdc, SimCall::Idle) => "call_end",
        (Example::Phonero, SimCall::Ringing) => "RINGING",
        (Example::Phonero, SimCall::InCall) => "BUSY",
        (Example::Phonero, SimCall::Idle) => "IDLE",
        (Example::A1, SimCall::Ringing) => "ALERTING",
        (Example::A1, SimCall::InCall) => "CONNECTED",
        (Example::A1, SimCall::Idle) => "IDLE",
    }
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| format!("{t:.3}")).unwrap_or_default()
}

/// Renders events in the example's format.
pub fn render(ex: Example, events: &[SimEvent]) -> Vec<u8> {
    match ex {
        Example::Tdc => {
            let evs: Vec<Value> = events
                .iter()
                .map(|e| {
                    let mut o = Map::new();
                    o.insert("id".into(), json!(e.id));
                    o.insert("msisdn".into(), json!(e.number));
                    let word = match (e.call, &e.forward) {
                        (Some(c), _) => call_word(ex, c),
                        (None, Some(_)) => "forward_changed",
                        (None, None) => "absence_changed",
                    };
                    o.insert("event".into(), json!(word));
                    if let Some(f) = &e.forward {
                        let (on, to) = (f.is_some(), f.clone().unwrap_or_default());
                        o.insert("forward".into(), json!({ "unconditional": { "enabled": on, "number": to } }));
                    }
                    if let Some(a) = &e.absence {
                        o.insert(
                            "absence".into(),
                            match a {
                                Some((k, text)) => json!({ "type": absence_word(ex, k), "text": text }),
                                None => json!({ "type": "NONE" }),
                            },
                        );
                    }
                    o.insert("ts".into(), json!(rfc3339(e.at_ms)));
                    Value::Object(o)
                })
                .collect();
            json!({ "operator": "tdc", "events": evs }).to_string().into_bytes()
        }
        Example::Phonero => {
            let evs: Vec<Value> = events
                .iter()
                .map(|e| {
                    let mut o = Map::new();
                    o.insert("eventId".into(), json!(e.id));
                    o.insert("phoneNumber".into(), json!(e.number));
                    if let Some(c) = e.call {
                        o.insert("lineState".into(), json!(call_word(ex, c)));
                    }
                    if let Some(f) = &e.forward {
                        o.insert(
                            "diversion".into(),
                            json!({ "active": f.is_some(), "destination": f.clone().unwrap_or_default() }),
                        );
                    }
                    if let Some(a) = &e.absence {
                        o.insert(
                            "profile".into(),
                            match a {
                                Some((k, text)) => {
                                    json!({ "code": absence_word(ex, k), "message": text.clone().unwrap_or_default() })
                                }
                                None => json!({ "code": "TILGJENGELIG", "message": "" }),
                            },
                        );
                    }
                    o.insert("timestamp".into(), json!(e.at_ms));
                    Value::Object(o)
                })
                .collect();
            Value::Array(evs).to_string().into_bytes()
        }
        Example::A1 => {
            let mut x = String::from(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:example:a1:presence:1\">\n",
            );
            for e in events {
                let _ = writeln!(
                    x,
                    "  <subscriber msisdn=\"{}\" ts=\"{}\" id=\"{}\">",
                    xml_escape(&e.number),
                    e.at_ms.div_euclid(1000),
                    xml_escape(&e.id)
                );
                if let Some(c) = e.call {
                    let _ = writeln!(x, "    <callState>{}</callState>", call_word(ex, c));
                }
                match &e.forward {
                    Some(Some(to)) => {
                        let _ = writeln!(x, "    <diversion active=\"true\" target=\"{}\"/>", xml_escape(to));
                    }
                    Some(None) => x.push_str("    <diversion active=\"false\"/>\n"),
                    None => {}
                }
                match &e.absence {
                    Some(Some((k, text))) => {
                        let _ = writeln!(
                            x,
                            "    <absence type=\"{}\">{}</absence>",
                            xml_escape(&absence_word(ex, k)),
                            xml_escape(text.as_deref().unwrap_or(""))
                        );
                    }
                    Some(None) => x.push_str("    <absence type=\"Verfügbar\"/>\n"),
                    None => {}
                }
                x.push_str("  </subscriber>\n");
            }
            x.push_str("</presence>\n");
            x.into_bytes()
        }
    }
}

/// `GET /poll`.
async fn poll(req: HttpRequest, state: web::Data<Shared>) -> HttpResponse {
    let slow = lock(&state).misbehave.slow;
    if !slow.is_zero() {
        tokio::time::sleep(slow).await;
    }
    let mut g = lock(&state);
    g.stats.polls += 1;
    let authorized = match &g.cfg.poll_auth {
        PollAuth::None => true,
        PollAuth::Basic { username, password } => {
            let want =
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")));
            header(&req, "authorization") == Some(want.as_str())
        }
        PollAuth::Bearer(t) => header(&req, "authorization") == Some(format!("Bearer {t}").as_str()),
    };
    if !authorized {
        g.stats.polls_unauthorized += 1;
        return HttpResponse::Unauthorized()
            .insert_header(("www-authenticate", "Basic realm=\"operator\""))
            .json(json!({ "error": "unauthorized" }));
    }
    if g.misbehave.fail_polls || g.misbehave.fail_next_polls > 0 {
        g.misbehave.fail_next_polls = g.misbehave.fail_next_polls.saturating_sub(1);
        g.stats.polls_failed += 1;
        let mut r = HttpResponse::ServiceUnavailable();
        if let Some(s) = g.misbehave.retry_after_secs {
            r.insert_header(("retry-after", s.to_string()));
        }
        return r.json(json!({ "error": "service_unavailable" }));
    }
    let etag = g.etag();
    if header(&req, "if-none-match") == Some(etag.as_str()) {
        g.stats.polls_not_modified += 1;
        return HttpResponse::NotModified().insert_header(("etag", etag)).finish();
    }
    let mut body = g.snapshot();
    let mut r = HttpResponse::Ok();
    r.content_type(g.cfg.example.content_type());
    if g.misbehave.malformed_next > 0 {
        g.misbehave.malformed_next -= 1;
        body.truncate(body.len() / 2);
    } else {
        r.insert_header(("etag", etag));
    }
    r.body(body)
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_providers::operator::{CallState, OperatorConfig};

    #[derive(serde::Deserialize)]
    struct File {
        providers: Vec<presence_providers::ProviderConfig>,
    }

    fn example_config(ex: Example) -> OperatorConfig {
        let path = format!("{}/../fixtures/operators/{}.toml", env!("CARGO_MANIFEST_DIR"), ex.name());
        let text = std::fs::read_to_string(path).unwrap();
        match toml_providers(&text) {
            Some(presence_providers::ProviderConfig::Operator(c)) => *c,
            _ => panic!("not an operator provider"),
        }
    }

    fn toml_providers(text: &str) -> Option<presence_providers::ProviderConfig> {
        let f: File = toml::from_str(text).ok()?;
        f.providers.into_iter().next()
    }

    fn events(ex: Example) -> Vec<SimEvent> {
        let e = |id: &str, at_ms| SimEvent {
            id: id.into(),
            number: "+46721281605".into(),
            at_ms,
            call: None,
            forward: None,
            absence: None,
        };
        vec![
            SimEvent { call: Some(SimCall::Ringing), ..e("1", 1_772_442_904_120) },
            SimEvent {
                call: Some(SimCall::InCall),
                forward: Some(Some("+4670 & co".into())),
                ..e("2", 1_772_442_905_000)
            },
            SimEvent { call: Some(SimCall::Idle), forward: Some(None), ..e("3", 1_772_442_906_000) },
            SimEvent { absence: Some(Some((AbsenceKind::Sick, Some("<hemma>".into())))), ..e("4", 1_772_442_907_000) },
            SimEvent { absence: Some(Some((AbsenceKind::Vacation, None))), ..e("5", 1_772_442_908_000) },
            SimEvent { absence: Some(None), ..e("6", 1_772_442_909_000) },
            SimEvent {
                absence: Some(Some((AbsenceKind::Raw(format!("{}-unknown", ex.name())), None))),
                ..e("7", 1_772_442_910_000)
            },
        ]
    }

    /// What the simulator writes, the real provider's mapping reads back, for every example.
    #[test]
    fn every_example_format_round_trips_through_the_providers_mapping() {
        for ex in [Example::Tdc, Example::Phonero, Example::A1] {
            let m = example_config(ex).compile().unwrap();
            let evs = m.parse(&render(ex, &events(ex))).unwrap_or_else(|e| panic!("{ex:?}: {e}"));
            let evs: Vec<_> = evs.into_iter().map(|e| e.unwrap_or_else(|e| panic!("{ex:?}: {e}"))).collect();
            assert_eq!(evs.len(), 7, "{ex:?}");
            let calls: Vec<_> = evs.iter().map(|e| e.call).collect();
            assert_eq!(
                &calls[..3],
                &[Some(CallState::Ringing), Some(CallState::InCall), Some(CallState::Idle)],
                "{ex:?}"
            );
            assert!(calls[3..].iter().all(Option::is_none), "{ex:?}: absence events say nothing about calls");
            assert_eq!(evs[1].forward, Some(Some("+4670 & co".into())), "{ex:?}");
            assert_eq!(evs[2].forward, Some(None), "{ex:?}");
            let a = evs[3].absence.clone().flatten().unwrap();
            assert_eq!((&*a.code, a.text.as_deref()), ("sick", Some("<hemma>")), "{ex:?}");
            assert_eq!(evs[4].absence.clone().flatten().map(|a| a.code), Some("vacation".into()), "{ex:?}");
            assert_eq!(evs[5].absence, Some(None), "{ex:?}");
            assert_eq!(evs[6].absence.clone().flatten().map(|a| a.code), Some("other".into()), "{ex:?}");
            assert_eq!(evs[6].unknown.len(), 1, "{ex:?}");
            let unit = if ex == Example::A1 { 1000 } else { 1 };
            assert_eq!(evs[0].at, Some(1_772_442_904_120 / unit * unit), "{ex:?}");
            assert_eq!(evs[0].id.as_deref(), Some("1"), "{ex:?}");
            assert!(evs.iter().all(|e| e.number == "+46721281605"));
        }
    }

    #[test]
    fn signatures_verify_with_the_providers_verifier() {
        for ex in [Example::Tdc, Example::Phonero] {
            let c = example_config(ex);
            let v = c.webhook.as_ref().unwrap().verifier();
            let auth = OperatorSimConfig::example(ex).auth;
            let body = render(ex, &events(ex));
            let now = 1_772_442_904_000;
            for (wrong, ok) in [(false, true), (true, false)] {
                let (name, value) = sign(&auth, &body, now / 1000, wrong).unwrap();
                let name = name.to_ascii_lowercase();
                let r = v.verify(|n| (n == name).then_some(value.as_str()), &body, now);
                assert_eq!(r.is_ok(), ok, "{ex:?} wrong={wrong}: {r:?}");
            }
        }
        // Plain hex with a prefix, base64 and SHA-1 too.
        use presence_providers::operator::{Algorithm, Encoding, Scheme, Verifier};
        for (alg, b64, palg, penc) in [
            (HmacAlgorithm::Sha256, false, Algorithm::Sha256, Encoding::Hex),
            (HmacAlgorithm::Sha1, true, Algorithm::Sha1, Encoding::Base64),
        ] {
            let auth = SimAuth::Hmac {
                header: "X-Sig".into(),
                algorithm: alg,
                base64: b64,
                stripe: false,
                prefix: "sha=".into(),
                secret: "s".into(),
            };
            let (_, value) = sign(&auth, b"body", 0, false).unwrap();
            let v = Verifier::hmac("x-sig", palg, b"s", penc, Scheme::Plain, "sha=", 300);
            assert_eq!(v.verify(|_| Some(value.as_str()), b"body", 0), Ok(()));
        }
    }

    #[actix_rt::test]
    async fn poll_serves_state_with_etag_auth_and_failures() {
        let sim = OperatorSim::start(OperatorSimConfig::example(Example::A1)).unwrap();
        sim.call_start("+43664111").await;
        sim.divert("+43664222", "+4315551234").await;
        let http = reqwest::Client::new();
        let get = |etag: Option<String>, auth: bool| {
            let mut r = http.get(sim.poll_url());
            if auth {
                r = r.basic_auth("change-me", Some("change-me"));
            }
            if let Some(e) = etag {
                r = r.header("if-none-match", e);
            }
            r.send()
        };
        assert_eq!(get(None, false).await.unwrap().status(), 401);
        let r = get(None, true).await.unwrap();
        assert_eq!(r.status(), 200);
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        let body = r.bytes().await.unwrap();
        let m = example_config(Example::A1).compile().unwrap();
        let evs: Vec<_> = m.parse(&body).unwrap().into_iter().map(Result::unwrap).collect();
        assert_eq!(evs.len(), 2);
        assert_eq!((evs[0].number.as_str(), evs[0].call), ("+43664111", Some(CallState::Ringing)));
        assert_eq!(evs[1].forward, Some(Some("+4315551234".into())));
        assert_eq!(get(Some(etag.clone()), true).await.unwrap().status(), 304);
        sim.call_end("+43664111").await;
        assert_eq!(get(Some(etag), true).await.unwrap().status(), 200, "a change makes a new ETag");
        sim.misbehave(Misbehave { fail_next_polls: 1, retry_after_secs: Some(3), ..Misbehave::default() });
        let r = get(None, true).await.unwrap();
        assert_eq!(
            (r.status().as_u16(), r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string())),
            (503, Some("3".into()))
        );
        assert_eq!(get(None, true).await.unwrap().status(), 200);
        let s = sim.stats();
        assert_eq!((s.polls, s.polls_not_modified, s.polls_failed, s.polls_unauthorized), (6, 1, 1, 1));
        assert_eq!(s.webhooks_sent, 0, "no webhook URL: poll only");
    }

    #[actix_rt::test]
    async fn webhooks_are_signed_and_can_misbehave() {
        type Inbox = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;
        async fn receive(req: HttpRequest, body: web::Bytes, inbox: web::Data<Inbox>) -> HttpResponse {
            let sig = req.headers().get("x-tdc-signature").and_then(|v| v.to_str().ok()).map(str::to_string);
            inbox.lock().unwrap().push((sig, body.to_vec()));
            HttpResponse::Ok().finish()
        }
        let inbox: Inbox = Arc::default();
        let ib = inbox.clone();
        let hub = Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), move |c: &mut web::ServiceConfig| {
            c.app_data(web::Data::new(ib.clone())).route("/hooks/tdc/events", web::post().to(receive));
        })
        .unwrap();
        let sim = OperatorSim::start(OperatorSimConfig::example(Example::Tdc)).unwrap();
        sim.set_webhook_url(Some(format!("{}/hooks/tdc/events", hub.url())));
        let v = example_config(Example::Tdc).webhook.unwrap().verifier();
        let check = |i: usize| {
            let g = inbox.lock().unwrap();
            let (sig, body) = &g[i];
            v.verify(|_| sig.as_deref(), body, now_ms()).is_ok()
        };
        assert_eq!(sim.call_start("+4520123456").await, Some(200));
        assert!(check(0));
        sim.misbehave(Misbehave { wrong_signature_next: 1, duplicate_webhooks: true, ..Misbehave::default() });
        sim.call_end("+4520123456").await;
        assert!(!check(1), "wrong signature");
        assert!(check(2), "the duplicate is signed right again");
        {
            let g = inbox.lock().unwrap();
            assert_eq!(g[1].1, g[2].1, "the same body twice");
        }
        sim.misbehave(Misbehave { malformed_next: 1, ..Misbehave::default() });
        sim.call_start("+4520123456").await;
        assert!(serde_json::from_slice::<Value>(&inbox.lock().unwrap()[3].1).is_err(), "truncated");
        sim.misbehave(Misbehave::default());
        assert_eq!(sim.resend_last().await, Some(200));
        let statuses = sim.burst(&["+4520000001".to_string(), "+4520000002".to_string()], 10).await;
        assert_eq!(statuses, vec![Some(200); 10]);
        assert_eq!(inbox.lock().unwrap().len(), 15);
        sim.misbehave(Misbehave { drop_webhooks: true, ..Misbehave::default() });
        assert_eq!(sim.call_end("+4520123456").await, None);
        assert_eq!(sim.stats().webhooks_sent, 15);
        assert_eq!(sim.stats().webhooks_ok, 15);
    }

    #[test]
    fn drive_demo_runs_until_dropped() {
        let sim = Arc::new(OperatorSim::start(OperatorSimConfig::example(Example::A1)).unwrap());
        sim.drive_demo(vec!["+46721281605".into(), "+46797867370".into()], Duration::from_millis(20), 3).unwrap();
        let t0 = std::time::Instant::now();
        while sim.snapshot().len() < 200 {
            assert!(t0.elapsed() < Duration::from_secs(5), "the demo moves");
            std::thread::sleep(Duration::from_millis(20));
        }
        let body = sim.snapshot();
        let m = example_config(Example::A1).compile().unwrap();
        assert!(m.parse(&body).unwrap().into_iter().all(|e| e.is_ok()));
        drop(sim);
    }
}
