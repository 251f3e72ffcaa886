//! An Alcatel-Lucent O2G (OmniPCX OpenTouch Gateway) REST API on loopback, as the ALE SDKs and
//! the O2G tutorial describe it (docs/ARCHITECTURE.md, § Protocol references):
//!
//! - `GET /api/rest`: discovery (`RoxeRestApiDescriptor`, only GET; others `405`).
//! - `GET /api/rest/authenticate?version=1.0` with HTTP Basic → `{credential, publicUrl,
//!   internalUrl}` and `Set-Cookie: AlcUserId=<credential>; Path=/` (attributes \[A\]).
//! - `POST|GET|DELETE /api/rest/1.0/sessions`, `POST …/sessions/keepalive`: an administrator
//!   session per credential, forgotten when no keep-alive comes for `timeToLive` seconds (its
//!   subscriptions with it; their channels end).
//! - `POST /api/rest/1.0/subscriptions` (`filter.selectors[{ids, names}]`, `version "1.0"`,
//!   `timeout` or `webHookUrl`; `ids` are mandatory in an administrator session) →
//!   `{subscriptionId, publicPollingUrl, privatePollingUrl, status: "ACCEPTED", mode, format}`;
//!   `DELETE …/subscriptions/{id}`.
//! - `GET|POST /OTEvents?subscriptionId=…`: the chunked event channel — one JSON event per line,
//!   `OnChannelInformation` first, `{"eventName":"OnChannelInformation","text":"keepalive"}`
//!   every `heartbeat`. On the same port as the API (a real O2G uses 8014/8016). Events that
//!   happen while a subscription has no open channel are lost (\[A\]: the notes do not say).
//! - Webhook subscriptions: one event per `POST` to `webHookUrl`, in order.
//! - `POST /api/rest/1.0/telephony/state/snapshot?loginName=` → `OnTelephonyState` on the
//!   channel; `GET …/telephony/state?loginName=`; the same for `…/routing/state` with
//!   `OnRoutingStateChanged`.
//!
//! Tests and the demo drive it through [`O2gSim`]: calls ([`O2gSim::call_ring`],
//! [`O2gSim::call_answer`], [`O2gSim::call_hold`], [`O2gSim::call_end`], [`O2gSim::call_dial`]),
//! routing ([`O2gSim::set_dnd`], [`O2gSim::set_forward`], [`O2gSim::set_overflow`]), devices
//! ([`O2gSim::set_in_service`]), [`O2gSim::seed`] and [`O2gSim::drive_demo`]. Misbehaviours:
//! [`O2gSim::drop_streams`] (I/O error mid-stream), [`O2gSim::end_streams`] (clean end, as at the
//! channel's `timeout`), [`O2gSim::refuse_streams`] (`503` on polling), [`O2gSim::expire_sessions`],
//! [`O2gSim::fail_subscribe`] (`503`), [`O2gSim::send_malformed`], [`O2gSim::inject_raw`] and
//! [`O2gSim::burst`].
//!
//! The event and document field names are the SDKs'; every value is made up (\[S\]).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::graph::Rng;
use crate::{basic_credentials, Server};

/// Settings of an [`O2gSim`].
#[derive(Debug, Clone)]
pub struct O2gSimConfig {
    /// The administrator login.
    pub login: String,
    /// Its password.
    pub password: String,
    /// The sessions' `timeToLive`.
    pub session_ttl: Duration,
    /// Heartbeat (`text: "keepalive"`) period on open channels.
    pub heartbeat: Duration,
}

impl Default for O2gSimConfig {
    fn default() -> Self {
        O2gSimConfig {
            login: "presence-hub".into(),
            password: "o2g-secret".into(),
            session_ttl: Duration::from_secs(300),
            heartbeat: Duration::from_secs(10),
        }
    }
}

/// Counters, read with [`O2gSim::stats`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct O2gSimStats {
    /// Discovery documents served.
    pub discoveries: u64,
    /// Successful authentications.
    pub logins: u64,
    /// Refused authentications.
    pub auth_failures: u64,
    /// Sessions opened.
    pub sessions_created: u64,
    /// Keep-alives answered 200.
    pub keepalives: u64,
    /// Sessions ended for lack of keep-alive (or by [`O2gSim::expire_sessions`]).
    pub sessions_expired: u64,
    /// Sessions deleted by the client.
    pub sessions_deleted: u64,
    /// Subscriptions accepted.
    pub subscriptions_created: u64,
    /// Subscriptions deleted by the client.
    pub subscriptions_deleted: u64,
    /// Subscription requests answered 503 ([`O2gSim::fail_subscribe`]).
    pub subscribe_refused: u64,
    /// Event channels opened.
    pub streams_opened: u64,
    /// Polling requests answered 503 ([`O2gSim::refuse_streams`]).
    pub streams_refused: u64,
    /// Events written to a channel or queued for a webhook.
    pub events_sent: u64,
    /// Events lost: their subscription had no open channel.
    pub events_dropped: u64,
    /// Snapshot requests answered.
    pub snapshots: u64,
    /// Webhook POSTs answered 2xx.
    pub webhook_posts: u64,
    /// Webhook POSTs answered 404 (the receiver has no such subscription).
    pub webhook_404: u64,
    /// Webhook POSTs answered otherwise, or failed.
    pub webhook_failed: u64,
}

/// What a channel's writer is told.
enum Msg {
    Data(bytes::Bytes),
    /// End the chunked answer cleanly.
    End,
    /// Break the connection (the client sees an I/O error).
    Abort,
}

#[derive(Clone)]
enum Delivery {
    Chunk,
    Webhook(String),
}

struct Sub {
    session: String,
    ids: HashSet<String>,
    packages: HashSet<String>,
    delivery: Delivery,
    channel: Option<mpsc::Sender<Msg>>,
}

struct Session {
    last_alive: Instant,
}

#[derive(Clone)]
struct SimCall {
    call_ref: String,
    state: &'static str,
    remote: String,
}

#[derive(Clone)]
struct Line {
    calls: Vec<SimCall>,
    user_state: &'static str,
    dnd: bool,
    forward: Option<String>,
    overflow: Option<String>,
    in_service: bool,
}

impl Default for Line {
    fn default() -> Self {
        Line { calls: Vec::new(), user_state: "FREE", dnd: false, forward: None, overflow: None, in_service: true }
    }
}

struct State {
    cfg: O2gSimConfig,
    base: String,
    issued: HashSet<String>,
    sessions: HashMap<String, Session>,
    subs: HashMap<String, Sub>,
    lines: HashMap<String, Line>,
    next: u64,
    rng: Rng,
    refuse_streams: bool,
    fail_subscribe: u32,
    webhooks: mpsc::UnboundedSender<(String, String)>,
    stats: O2gSimStats,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Known event packages (`event-packages.ts`).
const PACKAGES: [&str; 13] = [
    "telephony",
    "eventSummary",
    "unifiedComLog",
    "user",
    "userManagement",
    "routingManagement",
    "agent",
    "pilot",
    "rsi",
    "system",
    "pbxManagement",
    "rti",
    "acdstats",
];

fn error(status: u16, message: &str) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .json(json!({ "status": status, "message": message }))
}

impl State {
    fn api(&self) -> String {
        format!("{}/api/rest/1.0", self.base)
    }

    fn new_id(&mut self) -> String {
        self.next += 1;
        format!("{:08X}{:04X}", self.rng.next() as u32, self.next)
    }

    /// Forgets sessions without a keep-alive for their TTL, and their subscriptions.
    fn reap(&mut self) {
        let ttl = self.cfg.session_ttl;
        let dead: Vec<String> =
            self.sessions.iter().filter(|(_, s)| s.last_alive.elapsed() > ttl).map(|(k, _)| k.clone()).collect();
        for k in dead {
            self.sessions.remove(&k);
            self.stats.sessions_expired += 1;
            self.drop_subs_of(&k);
        }
    }

    fn drop_subs_of(&mut self, session: &str) {
        let ids: Vec<String> = self.subs.iter().filter(|(_, s)| s.session == session).map(|(k, _)| k.clone()).collect();
        for id in ids {
            if let Some(s) = self.subs.remove(&id) {
                if let Some(c) = s.channel {
                    let _ = c.try_send(Msg::End);
                }
            }
        }
    }

    /// The session named by the request's `AlcUserId` cookie.
    fn session_of(&mut self, req: &HttpRequest) -> Option<String> {
        self.reap();
        let cred = cookie(req)?;
        self.sessions.contains_key(&cred).then_some(cred)
    }

    /// Sends an event about `login` of `package` to every subscription that covers it.
    fn emit(&mut self, login: &str, package: &str, event: &Value) {
        let line = format!("{event}\n");
        self.push_raw(Some((login, package)), &line);
    }

    /// Writes a raw line to the subscriptions that cover `target` (all when `None`).
    fn push_raw(&mut self, target: Option<(&str, &str)>, line: &str) {
        let mut sent = 0;
        let mut dropped = 0;
        for s in self.subs.values_mut() {
            if let Some((login, package)) = target {
                if !s.ids.contains(login) || !s.packages.contains(package) {
                    continue;
                }
            }
            match &s.delivery {
                Delivery::Chunk => match &s.channel {
                    Some(c) if c.try_send(Msg::Data(bytes::Bytes::from(line.to_string()))).is_ok() => sent += 1,
                    _ => {
                        s.channel = None;
                        dropped += 1;
                    }
                },
                Delivery::Webhook(url) => {
                    let _ = self.webhooks.send((url.clone(), line.trim_end().to_string()));
                    sent += 1;
                }
            }
        }
        self.stats.events_sent += sent;
        self.stats.events_dropped += dropped;
    }

    fn line(&mut self, ext: &str) -> &mut Line {
        self.lines.entry(ext.to_string()).or_default()
    }
}

fn cookie(req: &HttpRequest) -> Option<String> {
    let header = req.headers().get("cookie")?.to_str().ok()?;
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == "AlcUserId" && !v.is_empty()).then(|| v.to_string())
    })
}

fn leg(ext: &str, state: &str) -> Value {
    let caps = match state {
        "RINGING_INCOMING" => json!({ "answer": true, "drop": true }),
        "ACTIVE" => json!({ "hold": true, "drop": true, "sendDtmf": true }),
        "HELD" => json!({ "retrieve": true, "drop": true }),
        _ => json!({ "drop": true }),
    };
    json!({ "deviceId": ext, "state": state, "ringingRemote": state == "RINGING_OUTGOING", "capabilities": caps })
}

fn participant(remote: &str) -> Value {
    json!({ "participantId": "p1", "identity": { "id": { "loginName": "", "phoneNumber": remote }, "displayName": remote, "type": { "main": "EXTERNAL" } }, "anonymous": false, "undroppable": false, "state": "ACTIVE" })
}

fn call_json(ext: &str, c: &SimCall) -> Value {
    json!({
        "callRef": c.call_ref,
        "callData": { "deviceCall": false, "anonymous": false, "state": c.state },
        "legs": [leg(ext, c.state)],
        "participants": [participant(&c.remote)],
    })
}

fn telephonic_state(ext: &str, l: &Line) -> Value {
    json!({
        "calls": l.calls.iter().map(|c| call_json(ext, c)).collect::<Vec<_>>(),
        "deviceCapabilities": [{ "deviceId": ext, "makeCall": true, "makeBusinessCall": true, "makePrivateCall": true, "unParkCall": false }],
        "userState": l.user_state,
    })
}

fn routing_state(l: &Line) -> Value {
    let dest = |d: &Option<String>| match d.as_deref() {
        None => json!([]),
        Some(v) if v.eq_ignore_ascii_case("voicemail") => json!([{ "type": "VOICEMAIL" }]),
        Some(n) => json!([{ "type": "NUMBER", "number": n }]),
    };
    json!({
        "presentationRoutes": [{ "destinations": [{ "type": "MOBILE", "selected": false }] }],
        "forwardRoutes": [{ "destinations": dest(&l.forward) }],
        "overflowRoutes": [{ "overflowType": "NO_ANSWER", "destinations": dest(&l.overflow) }],
        "dndState": { "activate": l.dnd },
    })
}

/// The running simulator.
pub struct O2gSim {
    server: Server,
    state: Shared,
    stop: Arc<AtomicBool>,
}

impl Drop for O2gSim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // End the open channels so the server's shutdown does not wait for them.
        let mut g = lock(&self.state);
        for s in g.subs.values_mut() {
            if let Some(c) = s.channel.take() {
                let _ = c.try_send(Msg::End);
            }
        }
    }
}

impl O2gSim {
    /// Starts on `127.0.0.1` (any free port).
    pub fn start(cfg: O2gSimConfig) -> std::io::Result<O2gSim> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), cfg)
    }

    /// Starts on `addr`.
    pub fn start_on(addr: SocketAddr, cfg: O2gSimConfig) -> std::io::Result<O2gSim> {
        let (wtx, wrx) = mpsc::unbounded_channel();
        let state: Shared = Arc::new(Mutex::new(State {
            cfg,
            base: String::new(),
            issued: HashSet::new(),
            sessions: HashMap::new(),
            subs: HashMap::new(),
            lines: HashMap::new(),
            next: 0,
            rng: Rng::new(0x02c0_ffee),
            refuse_streams: false,
            fail_subscribe: 0,
            webhooks: wtx,
            stats: O2gSimStats::default(),
        }));
        let st = state.clone();
        let server = Server::start(addr, move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(web::Data::new(st.clone()))
                .route("/api/rest", web::get().to(discovery))
                .route("/api/rest", web::route().to(|| async { error(405, "only GET is allowed") }))
                .route("/api/rest/authenticate", web::get().to(authenticate))
                .route("/api/rest/1.0/sessions", web::post().to(create_session))
                .route("/api/rest/1.0/sessions", web::get().to(get_session))
                .route("/api/rest/1.0/sessions", web::delete().to(delete_session))
                .route("/api/rest/1.0/sessions/keepalive", web::post().to(keepalive))
                .route("/api/rest/1.0/subscriptions", web::post().to(subscribe))
                .route("/api/rest/1.0/subscriptions/{id}", web::delete().to(unsubscribe))
                .route("/api/rest/1.0/telephony/state/snapshot", web::post().to(telephony_snapshot))
                .route("/api/rest/1.0/telephony/state", web::get().to(telephony_state))
                .route("/api/rest/1.0/routing/state/snapshot", web::post().to(routing_snapshot))
                .route("/api/rest/1.0/routing/state", web::get().to(get_routing_state))
                .route("/OTEvents", web::post().to(events))
                .route("/OTEvents", web::get().to(events));
        })?;
        lock(&state).base = server.url();
        let stop = Arc::new(AtomicBool::new(false));
        spawn_reaper(Arc::downgrade(&state), stop.clone())?;
        spawn_webhook_sender(Arc::downgrade(&state), wrx)?;
        Ok(O2gSim { server, state, stop })
    }

    /// Base URL (`http://127.0.0.1:PORT`): the provider's `base_url`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The administrator login and password.
    pub fn credentials(&self) -> (String, String) {
        let g = lock(&self.state);
        (g.cfg.login.clone(), g.cfg.password.clone())
    }

    /// Creates these extensions' lines (free, no calls, nothing set) without any event.
    pub fn seed(&self, exts: &[String]) {
        let mut g = lock(&self.state);
        for e in exts {
            g.line(e);
        }
    }

    /// A call from `from` rings on `ext`: `OnCallCreated` (leg `RINGING_INCOMING`), and
    /// `OnUserStateModified BUSY` when the line was free.
    pub fn call_ring(&self, ext: &str, from: &str) {
        let mut g = lock(&self.state);
        let call_ref = g.new_id();
        let c = SimCall { call_ref, state: "RINGING_INCOMING", remote: from.to_string() };
        g.line(ext).calls.push(c.clone());
        let ev = json!({
            "eventName": "OnCallCreated", "loginName": ext, "callRef": c.call_ref, "cause": "UNKNOWN", "initiator": "p1",
            "callData": { "initialCalled": { "id": { "loginName": ext, "phoneNumber": ext } }, "deviceCall": false, "anonymous": false, "state": c.state },
            "legs": [leg(ext, c.state)],
            "participants": [participant(from)],
        });
        g.emit(ext, "telephony", &ev);
        Self::set_user_state(&mut g, ext);
    }

    /// `ext` calls `to`: `OnCallCreated` (leg `DIALING`), then `OnCallModified`
    /// (`RINGING_OUTGOING`).
    pub fn call_dial(&self, ext: &str, to: &str) {
        let mut g = lock(&self.state);
        let call_ref = g.new_id();
        let mut c = SimCall { call_ref, state: "DIALING", remote: to.to_string() };
        g.line(ext).calls.push(c.clone());
        let ev = json!({
            "eventName": "OnCallCreated", "loginName": ext, "callRef": c.call_ref, "cause": "UNKNOWN",
            "callData": { "deviceCall": false, "anonymous": false, "state": c.state },
            "legs": [leg(ext, c.state)], "participants": [participant(to)],
        });
        g.emit(ext, "telephony", &ev);
        Self::set_user_state(&mut g, ext);
        c.state = "RINGING_OUTGOING";
        Self::modify(&mut g, ext, &c);
    }

    fn modify(g: &mut State, ext: &str, c: &SimCall) {
        if let Some(x) = g.line(ext).calls.iter_mut().find(|x| x.call_ref == c.call_ref) {
            x.state = c.state;
        }
        let ev = json!({
            "eventName": "OnCallModified", "loginName": ext, "callRef": c.call_ref, "cause": "UNKNOWN",
            "callData": { "deviceCall": false, "anonymous": false, "state": c.state },
            "modifiedLegs": [leg(ext, c.state)],
            "modifiedParticipants": [participant(&c.remote)],
        });
        g.emit(ext, "telephony", &ev);
    }

    fn set_user_state(g: &mut State, ext: &str) {
        let want = if g.line(ext).calls.is_empty() { "FREE" } else { "BUSY" };
        if g.line(ext).user_state != want {
            g.line(ext).user_state = want;
            g.emit(ext, "telephony", &json!({ "eventName": "OnUserStateModified", "loginName": ext, "state": want }));
        }
    }

    fn newest(g: &mut State, ext: &str, states: &[&str]) -> Option<SimCall> {
        g.line(ext).calls.iter().rev().find(|c| states.contains(&c.state)).cloned()
    }

    /// Answers (or retrieves) `ext`'s newest ringing or held call: `OnCallModified` to
    /// `ACTIVE`. False when there is none.
    pub fn call_answer(&self, ext: &str) -> bool {
        let mut g = lock(&self.state);
        let Some(mut c) = Self::newest(&mut g, ext, &["RINGING_INCOMING", "RINGING_OUTGOING", "DIALING", "HELD"])
        else {
            return false;
        };
        c.state = "ACTIVE";
        Self::modify(&mut g, ext, &c);
        true
    }

    /// Holds `ext`'s newest active call: `OnCallModified` to `HELD`. False when there is none.
    pub fn call_hold(&self, ext: &str) -> bool {
        let mut g = lock(&self.state);
        let Some(mut c) = Self::newest(&mut g, ext, &["ACTIVE"]) else { return false };
        c.state = "HELD";
        Self::modify(&mut g, ext, &c);
        true
    }

    /// Ends `ext`'s newest call: `OnCallRemoved` (`CLEARED`), and `OnUserStateModified FREE`
    /// when it was the last. False when there is none.
    pub fn call_end(&self, ext: &str) -> bool {
        let mut g = lock(&self.state);
        let Some(c) = g.line(ext).calls.pop() else { return false };
        g.emit(
            ext,
            "telephony",
            &json!({ "eventName": "OnCallRemoved", "loginName": ext, "callRef": c.call_ref, "cause": "CLEARED" }),
        );
        Self::set_user_state(&mut g, ext);
        true
    }

    fn routing_changed(g: &mut State, ext: &str) {
        let rs = routing_state(g.line(ext));
        g.emit(
            ext,
            "routingManagement",
            &json!({ "eventName": "OnRoutingStateChanged", "loginName": ext, "routingState": rs }),
        );
    }

    /// Turns DND on or off: `OnRoutingStateChanged`.
    pub fn set_dnd(&self, ext: &str, on: bool) {
        let mut g = lock(&self.state);
        g.line(ext).dnd = on;
        Self::routing_changed(&mut g, ext);
    }

    /// Sets an immediate forward to a number (or `"voicemail"`), or clears it:
    /// `OnRoutingStateChanged`.
    pub fn set_forward(&self, ext: &str, dest: Option<&str>) {
        let mut g = lock(&self.state);
        g.line(ext).forward = dest.map(str::to_string);
        Self::routing_changed(&mut g, ext);
    }

    /// Sets an overflow on no answer to a number (or `"voicemail"`), or clears it.
    pub fn set_overflow(&self, ext: &str, dest: Option<&str>) {
        let mut g = lock(&self.state);
        g.line(ext).overflow = dest.map(str::to_string);
        Self::routing_changed(&mut g, ext);
    }

    /// Puts `ext`'s desk phone in or out of service: `OnDeviceStateModified`.
    pub fn set_in_service(&self, ext: &str, in_service: bool) {
        let mut g = lock(&self.state);
        g.line(ext).in_service = in_service;
        let state = if in_service { "IN_SERVICE" } else { "OUT_OF_SERVICE" };
        g.emit(ext, "telephony", &json!({ "eventName": "OnDeviceStateModified", "loginName": ext, "deviceStates": [{ "deviceId": ext, "state": state }] }));
    }

    /// The states of `ext`'s calls, oldest first (e.g. `["ACTIVE", "HELD"]`).
    pub fn calls(&self, ext: &str) -> Vec<String> {
        lock(&self.state)
            .lines
            .get(ext)
            .map(|l| l.calls.iter().map(|c| c.state.to_string()).collect())
            .unwrap_or_default()
    }

    // --- Misbehaviour --------------------------------------------------------------------

    /// Breaks every open event channel mid-stream (the client reads an I/O error). The
    /// subscriptions stay.
    pub fn drop_streams(&self) {
        let mut g = lock(&self.state);
        for s in g.subs.values_mut() {
            if let Some(c) = s.channel.take() {
                let _ = c.try_send(Msg::Abort);
            }
        }
    }

    /// Ends every open event channel cleanly (as when its `timeout` runs out). The
    /// subscriptions stay; a client re-opens the channel.
    pub fn end_streams(&self) {
        let mut g = lock(&self.state);
        for s in g.subs.values_mut() {
            if let Some(c) = s.channel.take() {
                let _ = c.try_send(Msg::End);
            }
        }
    }

    /// While on, polling requests are answered `503`.
    pub fn refuse_streams(&self, on: bool) {
        lock(&self.state).refuse_streams = on;
    }

    /// Forgets every session now (as if keep-alives had lapsed), their subscriptions with
    /// them; open channels end.
    pub fn expire_sessions(&self) {
        let mut g = lock(&self.state);
        let keys: Vec<String> = g.sessions.keys().cloned().collect();
        for k in keys {
            g.sessions.remove(&k);
            g.stats.sessions_expired += 1;
            g.drop_subs_of(&k);
        }
    }

    /// Answers the next `n` subscription requests `503`.
    pub fn fail_subscribe(&self, n: u32) {
        lock(&self.state).fail_subscribe = n;
    }

    /// Writes a raw line to every subscription (channel or webhook), as is.
    pub fn inject_raw(&self, line: &str) {
        let mut g = lock(&self.state);
        g.push_raw(None, &format!("{}\n", line.trim_end()));
    }

    /// Sends malformed events to every subscription: broken JSON, an event without
    /// `loginName`, wrong types, a non-object. Returns how many.
    pub fn send_malformed(&self) -> usize {
        let bad = [
            r#"{"eventName":"OnCallCreated","loginName":"#,
            "this is not JSON",
            r#"{"eventName":"OnUserStateModified","state":"BUSY"}"#,
            r#"{"eventName":"OnCallModified","loginName":"2624","callRef":"x","modifiedLegs":"oops"}"#,
            r#"["OnCallRemoved"]"#,
        ];
        for b in bad {
            self.inject_raw(b);
        }
        bad.len()
    }

    /// A burst: `n` ring-answer-end cycles on `ext` as fast as they go (5 events each, plus
    /// the user state changes).
    pub fn burst(&self, ext: &str, n: usize) {
        for i in 0..n {
            self.call_ring(ext, &format!("+4685551{i:04}"));
            self.call_answer(ext);
            self.call_end(ext);
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> O2gSimStats {
        lock(&self.state).stats.clone()
    }

    /// Live sessions.
    pub fn sessions(&self) -> usize {
        let mut g = lock(&self.state);
        g.reap();
        g.sessions.len()
    }

    /// Live subscriptions: (id, login names, webhook, channel open).
    pub fn subscriptions(&self) -> Vec<(String, usize, bool, bool)> {
        let g = lock(&self.state);
        let mut v: Vec<_> = g
            .subs
            .iter()
            .map(|(id, s)| {
                (
                    id.clone(),
                    s.ids.len(),
                    matches!(s.delivery, Delivery::Webhook(_)),
                    s.channel.as_ref().is_some_and(|c| !c.is_closed()),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Plays a working day on `exts` on a thread of its own, one change every `every` (±
    /// half), until the simulator is dropped: calls ring and are answered, held, ended; now
    /// and then someone dials out, turns DND on or off, or forwards to voicemail.
    pub fn drive_demo(self: &Arc<Self>, exts: Vec<String>, every: Duration, seed: u64) -> std::io::Result<()> {
        let sim = Arc::downgrade(self);
        std::thread::Builder::new().name("o2g-sim-demo".into()).spawn(move || {
            let mut rng = Rng::new(seed);
            loop {
                let wait = every.as_millis() as u64 / 2 + rng.below(every.as_millis() as u64 + 1);
                std::thread::sleep(Duration::from_millis(wait));
                let Some(sim) = sim.upgrade() else { return };
                if exts.is_empty() {
                    return;
                }
                let ext = &exts[rng.below(exts.len() as u64) as usize];
                let calls = sim.calls(ext);
                let r = rng.below(100);
                match calls.last().map(String::as_str) {
                    None if r < 70 => sim.call_ring(ext, &format!("+468555{:05}", rng.below(100_000))),
                    None if r < 82 => sim.call_dial(ext, &format!("{}", 2000 + rng.below(1000))),
                    None if r < 92 => {
                        let on = !lock(&sim.state).lines.get(ext).is_some_and(|l| l.dnd);
                        sim.set_dnd(ext, on);
                    }
                    None => {
                        let fwd = lock(&sim.state).lines.get(ext).and_then(|l| l.forward.clone());
                        sim.set_forward(ext, if fwd.is_some() { None } else { Some("voicemail") });
                    }
                    Some("RINGING_INCOMING" | "RINGING_OUTGOING" | "DIALING") if r < 75 => {
                        sim.call_answer(ext);
                    }
                    Some("ACTIVE") if r < 25 => {
                        sim.call_hold(ext);
                    }
                    Some("HELD") if r < 60 => {
                        sim.call_answer(ext);
                    }
                    Some(_) => {
                        sim.call_end(ext);
                    }
                }
            }
        })?;
        Ok(())
    }
}

fn spawn_reaper(state: Weak<Mutex<State>>, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    std::thread::Builder::new().name("o2g-sim-reaper".into()).spawn(move || {
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(200));
            let Some(s) = state.upgrade() else { return };
            lock(&s).reap();
        }
    })?;
    Ok(())
}

/// Delivers webhook events one at a time, in order.
fn spawn_webhook_sender(
    state: Weak<Mutex<State>>,
    mut rx: mpsc::UnboundedReceiver<(String, String)>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("o2g-sim-webhooks".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        let Ok(http) = reqwest::Client::builder().timeout(Duration::from_secs(5)).no_proxy().build() else { return };
        rt.block_on(async move {
            while let Some((url, body)) = rx.recv().await {
                let res = http.post(&url).header("content-type", "application/json").body(body).send().await;
                let Some(s) = state.upgrade() else { return };
                let mut g = lock(&s);
                match res.map(|r| r.status().as_u16()) {
                    Ok(200..=299) => g.stats.webhook_posts += 1,
                    Ok(404) => g.stats.webhook_404 += 1,
                    _ => g.stats.webhook_failed += 1,
                }
            }
        });
    })?;
    Ok(())
}

async fn discovery(state: web::Data<Shared>) -> HttpResponse {
    let mut g = lock(&state);
    g.stats.discoveries += 1;
    let auth = format!("{}/api/rest/authenticate?version=1.0", g.base);
    HttpResponse::Ok().json(json!({
        "serverInfo": { "productName": "O2G Simulator", "productType": "O2G", "productVersion": { "major": "2.7", "minor": "000.000" }, "haMode": false },
        "versions": [{ "id": "1.0", "status": "CURRENT", "publicUrl": auth, "internalUrl": auth }],
        "custoFeatures": [],
    }))
}

async fn authenticate(
    state: web::Data<Shared>,
    req: HttpRequest,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let mut g = lock(&state);
    if q.get("version").map(String::as_str) != Some("1.0") {
        return error(400, "unsupported version");
    }
    let ok = basic_credentials(&req).is_some_and(|(u, p)| u == g.cfg.login && p == g.cfg.password);
    if !ok {
        g.stats.auth_failures += 1;
        return HttpResponse::Unauthorized()
            .insert_header(("www-authenticate", "Basic realm=\"O2G\""))
            .json(json!({ "status": 401, "message": "authentication failed" }));
    }
    g.stats.logins += 1;
    let credential = g.new_id();
    g.issued.insert(credential.clone());
    let sessions = format!("{}/sessions", g.api());
    HttpResponse::Ok()
        .insert_header(("set-cookie", format!("AlcUserId={credential}; Path=/")))
        .json(json!({ "credential": credential, "publicUrl": sessions, "internalUrl": sessions }))
}

fn session_info(g: &State) -> Value {
    let api = g.api();
    let now = jiff::Timestamp::now();
    let ttl = g.cfg.session_ttl.as_secs().max(1);
    json!({
        "admin": true,
        "login": g.cfg.login,
        "timeToLive": ttl,
        "publicBaseUrl": api,
        "privateBaseUrl": api,
        "services": [
            { "serviceName": "Subscriptions", "serviceVersion": "1.0", "relativeUrl": "/subscriptions" },
            { "serviceName": "Telephony", "serviceVersion": "1.0", "relativeUrl": "/telephony/calls" },
            { "serviceName": "Routing", "serviceVersion": "1.0", "relativeUrl": "/routing" },
            { "serviceName": "EventSummary", "serviceVersion": "1.0", "relativeUrl": "/eventsummary" },
        ],
        "creationDate": now.to_string(),
        "expirationDate": (now + jiff::SignedDuration::from_secs(ttl as i64)).to_string(),
        "otherSessions": [],
    })
}

async fn create_session(state: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let mut g = lock(&state);
    let Some(cred) = cookie(&req).filter(|c| g.issued.contains(c)) else { return error(401, "not authenticated") };
    let app = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("applicationName").and_then(Value::as_str).map(str::to_string));
    if app.as_deref().is_none_or(|a| a.trim().is_empty()) {
        return error(400, "applicationName is mandatory");
    }
    // A new session on the same credential replaces the old one (and its subscriptions).
    if g.sessions.remove(&cred).is_some() {
        g.drop_subs_of(&cred);
    }
    g.sessions.insert(cred, Session { last_alive: Instant::now() });
    g.stats.sessions_created += 1;
    HttpResponse::Ok().json(session_info(&g))
}

async fn get_session(state: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    let mut g = lock(&state);
    if g.session_of(&req).is_none() {
        return error(401, "no session");
    }
    HttpResponse::Ok().json(session_info(&g))
}

async fn delete_session(state: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    let mut g = lock(&state);
    let Some(cred) = g.session_of(&req) else { return error(401, "no session") };
    g.sessions.remove(&cred);
    g.issued.remove(&cred);
    g.drop_subs_of(&cred);
    g.stats.sessions_deleted += 1;
    HttpResponse::NoContent().finish()
}

async fn keepalive(state: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    let mut g = lock(&state);
    let Some(cred) = g.session_of(&req) else { return error(401, "session expired") };
    if let Some(s) = g.sessions.get_mut(&cred) {
        s.last_alive = Instant::now();
    }
    g.stats.keepalives += 1;
    HttpResponse::Ok().finish()
}

async fn subscribe(state: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let mut g = lock(&state);
    let Some(cred) = g.session_of(&req) else { return error(401, "no session") };
    if g.fail_subscribe > 0 {
        g.fail_subscribe -= 1;
        g.stats.subscribe_refused += 1;
        return error(503, "service unavailable");
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else { return error(400, "invalid JSON") };
    if v.get("version").and_then(Value::as_str) != Some("1.0") {
        return error(400, "version must be 1.0");
    }
    let Some(selectors) = v.pointer("/filter/selectors").and_then(Value::as_array).filter(|s| !s.is_empty()) else {
        return error(400, "filter.selectors is mandatory");
    };
    let mut ids = HashSet::new();
    let mut packages = HashSet::new();
    for s in selectors {
        let sel_ids: Vec<&str> = s
            .get("ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        // An administrator session must say whom it subscribes for.
        if sel_ids.is_empty() {
            return error(400, "ids are mandatory in an administrator session");
        }
        let names: Vec<&str> = s
            .get("names")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if names.is_empty() || names.iter().any(|n| !PACKAGES.contains(n)) {
            return error(400, "unknown event package");
        }
        ids.extend(sel_ids.iter().map(|s| s.to_string()));
        packages.extend(names.iter().map(|s| s.to_string()));
    }
    let delivery = match v.get("webHookUrl").and_then(Value::as_str) {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => Delivery::Webhook(u.to_string()),
        Some(_) => return error(400, "invalid webHookUrl"),
        None => Delivery::Chunk,
    };
    let n = g.new_id();
    let claims =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({ "sub": n, "ids": ids.len() }).to_string());
    let id = format!("eyJhbGciOiJIUzI1NiJ9.{claims}.c2lt");
    let (mode, polling) = match &delivery {
        Delivery::Chunk => ("CHUNK", Value::String(format!("{}/OTEvents?subscriptionId={id}", g.base))),
        Delivery::Webhook(_) => ("WEBHOOK", Value::Null),
    };
    for l in &ids {
        g.line(l);
    }
    g.subs.insert(id.clone(), Sub { session: cred, ids, packages, delivery, channel: None });
    g.stats.subscriptions_created += 1;
    HttpResponse::Ok().json(json!({
        "subscriptionId": id, "message": null, "publicPollingUrl": polling, "privatePollingUrl": polling,
        "status": "ACCEPTED", "mode": mode, "format": "JSON",
    }))
}

async fn unsubscribe(state: web::Data<Shared>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let mut g = lock(&state);
    if g.session_of(&req).is_none() {
        return error(401, "no session");
    }
    match g.subs.remove(id.as_str()) {
        Some(s) => {
            if let Some(c) = s.channel {
                let _ = c.try_send(Msg::End);
            }
            g.stats.subscriptions_deleted += 1;
            HttpResponse::NoContent().finish()
        }
        None => error(404, "no such subscription"),
    }
}

/// The `loginName` parameter, mandatory in an administrator session.
fn login_param(q: &HashMap<String, String>) -> Option<String> {
    q.get("loginName").map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

const NO_LOGIN: &str = "loginName is mandatory in an administrator session";

async fn telephony_snapshot(
    state: web::Data<Shared>,
    req: HttpRequest,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let mut g = lock(&state);
    if g.session_of(&req).is_none() {
        return error(401, "no session");
    }
    let Some(login) = login_param(&q) else { return error(400, NO_LOGIN) };
    let st = telephonic_state(&login, g.line(&login));
    g.stats.snapshots += 1;
    g.emit(&login, "telephony", &json!({ "eventName": "OnTelephonyState", "loginName": login, "state": st }));
    HttpResponse::Ok().finish()
}

async fn telephony_state(
    state: web::Data<Shared>,
    req: HttpRequest,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let mut g = lock(&state);
    if g.session_of(&req).is_none() {
        return error(401, "no session");
    }
    let Some(login) = login_param(&q) else { return error(400, NO_LOGIN) };
    let st = telephonic_state(&login, g.line(&login));
    HttpResponse::Ok().json(st)
}

async fn routing_snapshot(
    state: web::Data<Shared>,
    req: HttpRequest,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let mut g = lock(&state);
    if g.session_of(&req).is_none() {
        return error(401, "no session");
    }
    let Some(login) = login_param(&q) else { return error(400, NO_LOGIN) };
    g.stats.snapshots += 1;
    let rs = routing_state(g.line(&login));
    g.emit(
        &login,
        "routingManagement",
        &json!({ "eventName": "OnRoutingStateChanged", "loginName": login, "routingState": rs }),
    );
    HttpResponse::Ok().finish()
}

async fn get_routing_state(
    state: web::Data<Shared>,
    req: HttpRequest,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let mut g = lock(&state);
    if g.session_of(&req).is_none() {
        return error(401, "no session");
    }
    let Some(login) = login_param(&q) else { return error(400, NO_LOGIN) };
    let rs = routing_state(g.line(&login));
    HttpResponse::Ok().json(rs)
}

/// The state of one open channel's writer.
struct Channel {
    first: Option<bytes::Bytes>,
    rx: mpsc::Receiver<Msg>,
    heartbeat: tokio::time::Interval,
    done: bool,
}

async fn events(state: web::Data<Shared>, q: web::Query<HashMap<String, String>>) -> HttpResponse {
    let mut g = lock(&state);
    g.reap();
    if g.refuse_streams {
        g.stats.streams_refused += 1;
        return error(503, "service unavailable");
    }
    let Some(id) = q.get("subscriptionId") else { return error(400, "subscriptionId is mandatory") };
    let heartbeat = g.cfg.heartbeat.max(Duration::from_millis(50));
    let Some(sub) = g.subs.get_mut(id) else { return error(404, "no such subscription") };
    if !matches!(sub.delivery, Delivery::Chunk) {
        return error(400, "a webhook subscription has no event channel");
    }
    let (tx, rx) = mpsc::channel(16_384);
    // A new channel replaces an open one.
    if let Some(old) = sub.channel.replace(tx) {
        let _ = old.try_send(Msg::End);
    }
    g.stats.streams_opened += 1;
    let first = bytes::Bytes::from(format!(
        "{}\n",
        json!({ "eventName": "OnChannelInformation", "text": "Channel established" })
    ));
    let ch = Channel {
        first: Some(first),
        rx,
        heartbeat: tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat),
        done: false,
    };
    let stream = futures_util::stream::unfold(ch, |mut ch| async move {
        if ch.done {
            return None;
        }
        if let Some(f) = ch.first.take() {
            return Some((Ok(f), ch));
        }
        tokio::select! {
            m = ch.rx.recv() => match m {
                Some(Msg::Data(b)) => Some((Ok(b), ch)),
                Some(Msg::End) | None => None,
                Some(Msg::Abort) => {
                    ch.done = true;
                    Some((Err(std::io::Error::other("channel dropped by the simulator")), ch))
                }
            },
            _ = ch.heartbeat.tick() => {
                let hb = format!("{}\n", json!({ "eventName": "OnChannelInformation", "text": "keepalive" }));
                Some((Ok(bytes::Bytes::from(hb)), ch))
            }
        }
    });
    HttpResponse::Ok().content_type("application/json").insert_header(("cache-control", "no-cache")).streaming(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_providers::o2g::parse::{self, Event, Line, LineSplitter};

    struct Client {
        http: reqwest::Client,
        cookie: String,
        session: parse::SessionInfo,
    }

    async fn login(sim: &O2gSim) -> Client {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let d = http.get(format!("{}/api/rest", sim.url())).send().await.unwrap().bytes().await.unwrap();
        let d = parse::parse_discovery(&d).unwrap();
        assert_eq!(http.post(format!("{}/api/rest", sim.url())).send().await.unwrap().status(), 405);
        let auth_url = d.internal_url.unwrap();
        let bad = http.get(&auth_url).basic_auth("presence-hub", Some("wrong")).send().await.unwrap();
        assert_eq!(bad.status(), 401);
        let r = http.get(&auth_url).basic_auth("presence-hub", Some("o2g-secret")).send().await.unwrap();
        let set_cookie = r.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
        let a = parse::parse_authenticate(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(parse::credential_from_set_cookie(&set_cookie), Some(a.credential.as_str()));
        let cookie = parse::cookie_header(&a.credential);
        let url = a.internal_url.unwrap();
        let r = http.post(&url).body(parse::session_request("test")).send().await.unwrap();
        assert_eq!(r.status(), 401, "no cookie, no session");
        let r = http.post(&url).header("cookie", &cookie).body(parse::session_request("test")).send().await.unwrap();
        let session = parse::parse_session(&r.bytes().await.unwrap()).unwrap();
        Client { http, cookie, session }
    }

    /// The next `n` events (heartbeats left out unless `heartbeats`).
    async fn read_lines(
        res: &mut reqwest::Response,
        split: &mut LineSplitter,
        n: usize,
        heartbeats: bool,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        let mut lines = Vec::new();
        while out.len() < n {
            let chunk = tokio::time::timeout(Duration::from_secs(5), res.chunk())
                .await
                .expect("a chunk within 5 s")
                .unwrap()
                .expect("more");
            split.push(&chunk, &mut lines);
            for l in lines.drain(..) {
                if let Line::Event(b) = l {
                    let e = parse::parse_event(&b).unwrap();
                    if heartbeats || !e.is_heartbeat() {
                        out.push(e);
                    }
                }
            }
        }
        out
    }

    #[actix_rt::test]
    async fn a_chunked_channel_carries_calls_snapshots_and_heartbeats() {
        let sim =
            O2gSim::start(O2gSimConfig { heartbeat: Duration::from_millis(300), ..O2gSimConfig::default() }).unwrap();
        let c = login(&sim).await;
        assert!(c.session.admin);
        let subs_url = c.session.service_url("subscriptions", false).unwrap();
        let ids = vec!["2624".to_string()];
        // ids are mandatory for an administrator; 503 when told to.
        let empty = parse::subscription_request(&[], &["telephony"], &parse::Delivery::Chunk { timeout_min: 10 });
        assert_eq!(c.http.post(&subs_url).header("cookie", &c.cookie).body(empty).send().await.unwrap().status(), 400);
        let body = parse::subscription_request(
            &ids,
            &["telephony", "routingManagement"],
            &parse::Delivery::Chunk { timeout_min: 10 },
        );
        sim.fail_subscribe(1);
        assert_eq!(
            c.http.post(&subs_url).header("cookie", &c.cookie).body(body.clone()).send().await.unwrap().status(),
            503
        );
        let r = c.http.post(&subs_url).header("cookie", &c.cookie).body(body).send().await.unwrap();
        let sub = parse::parse_subscription(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(sub.mode.as_deref(), Some("CHUNK"));
        let mut res = c.http.post(sub.polling_url(false).unwrap()).send().await.unwrap();
        assert!(res.status().is_success());
        let mut split = LineSplitter::new(parse::MAX_EVENT_BYTES);
        let first = read_lines(&mut res, &mut split, 1, true).await;
        assert!(matches!(&first[0], Event::ChannelInformation { text: Some(t) } if t != "keepalive"));

        sim.call_ring("2624", "+46855512345");
        sim.call_answer("2624");
        sim.call_hold("2624");
        sim.call_end("2624");
        sim.set_forward("2624", Some("voicemail"));
        let evs = read_lines(&mut res, &mut split, 7, false).await;
        let names: Vec<&str> = evs.iter().map(Event::name).collect();
        assert_eq!(
            names,
            [
                "OnCallCreated",
                "OnUserStateModified",
                "OnCallModified",
                "OnCallModified",
                "OnCallRemoved",
                "OnUserStateModified",
                "OnRoutingStateChanged"
            ]
        );
        // A snapshot request answers on the channel.
        let tel = c.session.service_url("telephony", false).unwrap();
        sim.call_ring("2624", "2100");
        let r = c.http.post(parse::snapshot_url(&tel, "2624")).header("cookie", &c.cookie).send().await.unwrap();
        assert!(r.status().is_success());
        let evs = read_lines(&mut res, &mut split, 3, false).await;
        let snap = evs.iter().find_map(|e| match e {
            Event::TelephonyState(t) => Some(t.clone()),
            _ => None,
        });
        let snap = snap.expect("OnTelephonyState");
        assert_eq!(snap.state.unwrap().calls[0].legs[0].state, parse::MediaState::RingingIncoming);
        // Heartbeats come when nothing else does.
        let evs = read_lines(&mut res, &mut split, 1, true).await;
        assert!(evs[0].is_heartbeat(), "{evs:?}");

        // A dropped channel is an I/O error at the client.
        sim.drop_streams();
        let mut err = false;
        for _ in 0..20 {
            match tokio::time::timeout(Duration::from_secs(5), res.chunk()).await.unwrap() {
                Err(_) => {
                    err = true;
                    break;
                }
                Ok(None) => break,
                Ok(Some(_)) => {}
            }
        }
        assert!(err, "a dropped channel must not look like a clean end");
        // Refused, then back; expired sessions lose their subscriptions (404).
        sim.refuse_streams(true);
        assert_eq!(c.http.post(sub.polling_url(false).unwrap()).send().await.unwrap().status(), 503);
        sim.refuse_streams(false);
        let mut res = c.http.post(sub.polling_url(false).unwrap()).send().await.unwrap();
        assert!(res.status().is_success());
        sim.expire_sessions();
        assert!(tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match res.chunk().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return true,
                    Err(_) => return false,
                }
            }
        })
        .await
        .unwrap());
        assert_eq!(c.http.post(sub.polling_url(false).unwrap()).send().await.unwrap().status(), 404);
        let ka = format!("{}/keepalive", c.session.base_url(false).map(|b| format!("{b}/sessions")).unwrap());
        assert_eq!(c.http.post(&ka).header("cookie", &c.cookie).send().await.unwrap().status(), 401);
        let s = sim.stats();
        assert_eq!(
            (s.logins, s.auth_failures, s.subscriptions_created, s.subscribe_refused, s.streams_refused),
            (1, 1, 1, 1, 1)
        );
    }

    #[actix_rt::test]
    async fn sessions_expire_without_keepalive() {
        let sim =
            O2gSim::start(O2gSimConfig { session_ttl: Duration::from_secs(1), ..O2gSimConfig::default() }).unwrap();
        let c = login(&sim).await;
        assert_eq!(c.session.ttl_secs(), 1);
        let ka = format!("{}/sessions/keepalive", c.session.base_url(false).unwrap());
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert_eq!(c.http.post(&ka).header("cookie", &c.cookie).send().await.unwrap().status(), 200);
        }
        assert_eq!(sim.sessions(), 1);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(sim.sessions(), 0);
        assert_eq!(c.http.post(&ka).header("cookie", &c.cookie).send().await.unwrap().status(), 401);
        assert_eq!(sim.stats().sessions_expired, 1);
    }
}
