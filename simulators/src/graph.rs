//! A Microsoft Graph presence simulator and the identity provider's token endpoint, from the
//! documented shapes (sources in docs/ARCHITECTURE.md, § Protocol references):
//!
//! - `POST /{tenant}/oauth2/v2.0/token`: `client_credentials` (app tokens) and
//!   `refresh_token` (delegated tokens of service accounts; each refresh rotates the token;
//!   counted per account, [`GraphSim::refresh_grants`]).
//! - `POST /{tenant}/oauth2/v2.0/devicecode` and the token endpoint's device-code grant (a
//!   service account signing in, `presence-hub login graph`) in [`crate::graph_device`].
//! - `POST /v1.0/communications/getPresencesByUserId` (≤ 650 ids), `GET
//!   /v1.0/communications/presences/{id}`, under a 1,500 requests / 30 s budget answered with
//!   `429` + `Retry-After` beyond it.
//! - `POST /v1.0/subscriptions` (delegated tokens only; ≤ 650 ids; ≤ 60 minutes; one presence
//!   subscription per account) with the validation handshake against `notificationUrl` and
//!   `lifecycleNotificationUrl`; `PATCH`, `DELETE` and `POST …/reauthorize`. With
//!   `includeResourceData: true` the subscription must carry `encryptionCertificate` (base64
//!   DER X.509, RSA 2,048–4,096 bits) and `encryptionCertificateId` (≤ 128 characters),
//!   otherwise `400`.
//! - Change notifications (`{"value":[…]}` with `clientState`) to subscribers when presence
//!   changes, and lifecycle notifications on request. Subscriptions with resource data get
//!   rich notifications: the basic fields plus `encryptedContent` = `{data, dataSignature,
//!   dataKey, encryptionCertificateId, encryptionCertificateThumbprint}`, encrypted for their
//!   certificate as Graph does it ([`presence_providers::graph::crypto::encrypt`]: AES-256-CBC
//!   with IV = the key's first 16 bytes, HMAC-SHA256, RSA-OAEP-SHA1 of a fresh key); the
//!   plaintext is the presence as Graph's documented decrypted example shows it (`@odata.id`,
//!   `@odata.type`, `id`, `availability`, `activity`).
//!
//! - The directory for the `entra` source — `GET /v1.0/users/delta` and `GET
//!   /v1.0/groups/{id}/transitiveMembers/microsoft.graph.user` — in [`crate::graph_users`].
//!
//! Tests and the demo drive it through [`GraphSim`]'s methods; [`Misbehave`] makes it throttle,
//! fail, slow down, drop notifications, expire subscriptions, send malformed bodies or tamper
//! with encrypted content.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use presence_providers::graph::crypto;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::Server;

/// Settings of a [`GraphSim`].
#[derive(Debug, Clone)]
pub struct GraphSimConfig {
    /// Tenant id in the token URL.
    pub tenant: String,
    /// The app's client id.
    pub client_id: String,
    /// The app's secret.
    pub client_secret: String,
    /// Service accounts: name → initial refresh token.
    pub accounts: Vec<(String, String)>,
    /// Lifetime of issued access tokens.
    pub token_lifetime: Duration,
    /// Presence read budget per 30 s.
    pub budget: usize,
    /// The device authorization grant's polling `interval`, in seconds.
    pub device_interval_secs: u64,
    /// The device codes' lifetime (`expires_in`), in seconds.
    pub device_expires_in_secs: u64,
}

impl Default for GraphSimConfig {
    fn default() -> Self {
        GraphSimConfig {
            tenant: "sim-tenant".into(),
            client_id: "sim-client".into(),
            client_secret: "sim-secret".into(),
            accounts: vec![("svc1@sim.example".into(), "rt-svc1-0".into()), ("svc2@sim.example".into(), "rt-svc2-0".into())],
            token_lifetime: Duration::from_secs(3600),
            budget: 1500,
            device_interval_secs: 1,
            device_expires_in_secs: 900,
        }
    }
}

/// Ways to misbehave, set with [`GraphSim::misbehave`].
#[derive(Debug, Clone, Default)]
pub struct Misbehave {
    /// Answer this many presence reads with `429` and `Retry-After: retry_after_secs`.
    pub throttle_next: u32,
    /// `Retry-After` seconds for those.
    pub retry_after_secs: u64,
    /// Answer this many presence reads with `503`.
    pub fail_next: u32,
    /// Delay every Graph answer by this long.
    pub slow: Duration,
    /// Do not send change notifications (presence still changes).
    pub drop_notifications: bool,
    /// Answer this many presence reads with a malformed body.
    pub malformed_next: u32,
    /// Refuse subscription creation and renewal (`403`).
    pub refuse_subscriptions: bool,
    /// Flip a byte of `encryptedContent.data` in rich notifications after signing, so the
    /// receiver must reject them by the HMAC (`dataSignature`).
    pub tamper_encrypted: bool,
}

/// Counters, read with [`GraphSim::stats`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SimStats {
    /// Token requests answered.
    pub token_requests: u64,
    /// getPresencesByUserId / presence GETs answered (any status).
    pub presence_requests: u64,
    /// Of those, answered 429.
    pub throttled: u64,
    /// Presence requests that arrived while a Retry-After was still running.
    pub early_after_retry_after: u64,
    /// Subscriptions created.
    pub subscriptions_created: u64,
    /// Renewals (PATCH).
    pub renewals: u64,
    /// Reauthorizations.
    pub reauthorizations: u64,
    /// Subscriptions deleted.
    pub deletions: u64,
    /// Validation handshakes passed / failed.
    pub validations_ok: u64,
    /// Validation handshakes failed.
    pub validations_failed: u64,
    /// Notification POSTs answered 2xx.
    pub notifications_delivered: u64,
    /// Notification POSTs refused or failed.
    pub notifications_failed: u64,
    /// Slowest notification answer, ms.
    pub slowest_notification_ms: u64,
}

#[derive(Clone)]
struct Presence {
    id: String,
    availability: String,
    activity: String,
    message: Option<String>,
    ooo: bool,
    seq: u64,
}

#[derive(Clone)]
struct Sub {
    id: String,
    account: String,
    ids: HashSet<String>,
    notification_url: String,
    lifecycle_url: Option<String>,
    client_state: String,
    expires_at: i64,
    /// Set for `includeResourceData` subscriptions.
    encryption: Option<Encryption>,
}

/// The subscriber's certificate, for rich notifications.
#[derive(Clone)]
struct Encryption {
    /// The certificate's SubjectPublicKeyInfo (DER).
    spki: Vec<u8>,
    /// `encryptionCertificateId`, echoed in each notification.
    certificate_id: String,
    /// SHA-1 of the certificate's DER, uppercase hex.
    thumbprint: String,
}

enum TokenKind {
    App,
    Delegated(String),
}

pub(crate) struct State {
    pub(crate) cfg: GraphSimConfig,
    presences: HashMap<String, Presence>,
    seq: u64,
    subs: HashMap<String, Sub>,
    next_sub: u64,
    tokens: HashMap<String, (TokenKind, Instant)>,
    next_token: u64,
    refresh: HashMap<String, String>,
    /// Refresh grants answered, per account.
    refresh_grants: HashMap<String, u64>,
    /// The device authorization grant's codes.
    pub(crate) device: crate::graph_device::Devices,
    window: VecDeque<Instant>,
    retry_until: Option<Instant>,
    misbehave: Misbehave,
    stats: SimStats,
    /// The directory (users, groups) of `/users/delta` and `transitiveMembers`.
    pub(crate) users: crate::graph_users::Directory,
    /// Subscription activity, oldest first ([`GraphSim::subscription_log`]).
    sub_log: Vec<crate::SubEvent>,
}

impl State {
    /// Logs subscription activity by the subscriber whose notification URL is `url`.
    fn log_sub(&mut self, url: &str, what: &'static str) {
        let by = reqwest::Url::parse(url).ok().and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))).unwrap_or_else(|| url.to_string());
        self.sub_log.push(crate::SubEvent { at: Instant::now(), by, what });
    }
}

pub(crate) type Shared = Arc<Mutex<State>>;

pub(crate) fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

pub(crate) fn graph_error(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST))
        .json(json!({ "error": { "code": code, "message": message, "innerError": { "date": rfc3339(now_ms()) } } }))
}

/// The running simulator.
pub struct GraphSim {
    server: Server,
    pub(crate) state: Shared,
    http: reqwest::Client,
}

impl GraphSim {
    /// Starts on `127.0.0.1` (any free port).
    pub fn start(cfg: GraphSimConfig) -> std::io::Result<GraphSim> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), cfg)
    }

    /// Starts on `addr`.
    pub fn start_on(addr: SocketAddr, cfg: GraphSimConfig) -> std::io::Result<GraphSim> {
        let refresh = cfg.accounts.iter().map(|(a, t)| (t.clone(), a.clone())).collect();
        let state: Shared = Arc::new(Mutex::new(State {
            cfg,
            presences: HashMap::new(),
            seq: 0x1000,
            subs: HashMap::new(),
            next_sub: 1,
            tokens: HashMap::new(),
            next_token: 1,
            refresh,
            refresh_grants: HashMap::new(),
            device: Default::default(),
            window: VecDeque::new(),
            retry_until: None,
            misbehave: Misbehave::default(),
            stats: SimStats::default(),
            users: Default::default(),
            sub_log: Vec::new(),
        }));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy().build().map_err(std::io::Error::other)?;
        let st = state.clone();
        let cl = http.clone();
        let server = Server::start(addr, move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(web::Data::new(st.clone()))
                .app_data(web::Data::new(cl.clone()))
                .app_data(web::PayloadConfig::default().limit(8 * 1024 * 1024))
                .route("/{tenant}/oauth2/v2.0/token", web::post().to(token))
                .route("/{tenant}/oauth2/v2.0/devicecode", web::post().to(crate::graph_device::devicecode))
                .route("/v1.0/communications/getPresencesByUserId", web::post().to(get_presences))
                .route("/v1.0/communications/presences/{id}", web::get().to(get_presence))
                .route("/v1.0/subscriptions", web::post().to(create_subscription))
                .route("/v1.0/subscriptions/{id}", web::patch().to(renew_subscription))
                .route("/v1.0/subscriptions/{id}", web::delete().to(delete_subscription))
                .route("/v1.0/subscriptions/{id}/reauthorize", web::post().to(reauthorize))
                .configure(crate::graph_users::routes);
        })?;
        Ok(GraphSim { server, state, http })
    }

    /// Base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The Graph base URL to configure (`…/v1.0`).
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.url())
    }

    /// The token endpoint to configure.
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.url(), lock(&self.state).cfg.tenant)
    }

    /// Sets presences without notifying anyone (the state before the hub starts).
    pub fn seed(&self, people: &[(&str, &str, &str)]) {
        let mut g = lock(&self.state);
        for (id, a, act) in people {
            g.seq += 1;
            let seq = g.seq;
            g.presences.insert(id.to_ascii_lowercase(), Presence { id: id.to_string(), availability: a.to_string(), activity: act.to_string(), message: None, ooo: false, seq });
        }
    }

    /// Changes one person's presence and notifies the subscriptions that cover them
    /// (unless notifications are being dropped). Returns once the notifications are answered.
    pub async fn set_presence(&self, id: &str, availability: &str, activity: &str, message: Option<&str>, ooo: bool) {
        let deliveries = {
            let mut g = lock(&self.state);
            g.seq += 1;
            let seq = g.seq;
            g.presences.insert(
                id.to_ascii_lowercase(),
                Presence { id: id.to_string(), availability: availability.into(), activity: activity.into(), message: message.map(Into::into), ooo, seq },
            );
            if g.misbehave.drop_notifications {
                Vec::new()
            } else {
                let now = now_ms();
                let tenant = g.cfg.tenant.clone();
                let tamper = g.misbehave.tamper_encrypted;
                let rich = g.presences.get(&id.to_ascii_lowercase()).map(rich_presence_json).unwrap_or_default();
                g.subs
                    .values()
                    .filter(|s| s.expires_at > now && s.ids.contains(&id.to_ascii_lowercase()))
                    .map(|s| {
                        let mut body = json!({ "value": [{
                            "subscriptionId": s.id,
                            "clientState": s.client_state,
                            "changeType": "updated",
                            "resource": format!("communications/presences/{id}"),
                            "subscriptionExpirationDateTime": rfc3339(s.expires_at),
                            "resourceData": {
                                "@odata.id": format!("communications/presences/{id}"),
                                "@odata.type": "#Microsoft.Graph.presence",
                                "id": id,
                            },
                            "tenantId": tenant,
                        }]});
                        if let Some(e) = &s.encryption {
                            body["value"][0]["encryptedContent"] = encrypted_content(e, &rich, tamper);
                        }
                        (s.notification_url.clone(), body)
                    })
                    .collect()
            }
        };
        for (url, body) in deliveries {
            self.post_notification(&url, &body).await;
        }
    }

    async fn post_notification(&self, url: &str, body: &Value) -> Option<u16> {
        let t0 = Instant::now();
        let res = self.http.post(url).json(body).send().await;
        let ms = t0.elapsed().as_millis() as u64;
        let mut g = lock(&self.state);
        g.stats.slowest_notification_ms = g.stats.slowest_notification_ms.max(ms);
        match res {
            Ok(r) if r.status().is_success() => {
                g.stats.notifications_delivered += 1;
                Some(r.status().as_u16())
            }
            Ok(r) => {
                g.stats.notifications_failed += 1;
                Some(r.status().as_u16())
            }
            Err(_) => {
                g.stats.notifications_failed += 1;
                None
            }
        }
    }

    /// Posts a raw body to every subscription's notification URL (for forged or malformed
    /// notifications in tests); returns the statuses.
    pub async fn post_raw(&self, body: &Value) -> Vec<Option<u16>> {
        let urls: Vec<String> = lock(&self.state).subs.values().map(|s| s.notification_url.clone()).collect();
        let mut out = Vec::new();
        for u in urls {
            out.push(self.post_notification(&u, body).await);
        }
        out
    }

    /// Sends a lifecycle notification (e.g. `reauthorizationRequired`) for every subscription.
    pub async fn lifecycle(&self, event: &str) {
        let deliveries: Vec<(String, Value)> = {
            let g = lock(&self.state);
            g.subs
                .values()
                .filter_map(|s| {
                    let url = s.lifecycle_url.clone()?;
                    Some((url, json!({ "value": [{
                        "subscriptionId": s.id,
                        "subscriptionExpirationDateTime": rfc3339(s.expires_at),
                        "tenantId": g.cfg.tenant,
                        "clientState": s.client_state,
                        "lifecycleEvent": event,
                    }]})))
                })
                .collect()
        };
        for (url, body) in deliveries {
            self.post_notification(&url, &body).await;
        }
    }

    /// Expires every subscription now (as if renewals had lapsed): Graph forgets them.
    pub fn expire_subscriptions(&self) {
        lock(&self.state).subs.clear();
    }

    /// Sets the misbehaviour.
    pub fn misbehave(&self, m: Misbehave) {
        lock(&self.state).misbehave = m;
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        lock(&self.state).stats.clone()
    }

    /// Refresh grants answered for `account` so far.
    pub fn refresh_grants(&self, account: &str) -> u64 {
        lock(&self.state).refresh_grants.get(account).copied().unwrap_or(0)
    }

    /// The account a refresh token was issued to, if the simulator issued it.
    pub fn account_of_refresh_token(&self, refresh_token: &str) -> Option<String> {
        lock(&self.state).refresh.get(refresh_token).cloned()
    }

    /// Every subscription created, refused because the account already has one, renewed or
    /// deleted so far, oldest first, each with the `host:port` of its `notificationUrl`.
    pub fn subscription_log(&self) -> Vec<crate::SubEvent> {
        lock(&self.state).sub_log.clone()
    }

    /// Live subscriptions: (id, account, people).
    pub fn subscriptions(&self) -> Vec<(String, String, usize)> {
        let now = now_ms();
        let mut v: Vec<_> = lock(&self.state).subs.values().filter(|s| s.expires_at > now).map(|s| (s.id.clone(), s.account.clone(), s.ids.len())).collect();
        v.sort();
        v
    }
}

#[allow(clippy::result_large_err)] // the error is the answer to send, built once per refusal
pub(crate) fn bearer(req: &HttpRequest, st: &State) -> Result<Option<String>, HttpResponse> {
    let Some(t) = req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) else {
        return Err(graph_error(401, "InvalidAuthenticationToken", "Access token is empty."));
    };
    match st.tokens.get(t) {
        Some((_, exp)) if *exp > Instant::now() => {}
        Some(_) => return Err(graph_error(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")),
        None => return Err(graph_error(401, "InvalidAuthenticationToken", "Access token validation failure.")),
    }
    Ok(match &st.tokens[t].0 {
        TokenKind::App => None,
        TokenKind::Delegated(a) => Some(a.clone()),
    })
}

async fn token(state: web::Data<Shared>, form: web::Form<HashMap<String, String>>) -> HttpResponse {
    let mut g = lock(&state);
    g.stats.token_requests += 1;
    let f = form.into_inner();
    let oauth = |code: &str, desc: &str| HttpResponse::BadRequest().json(json!({ "error": code, "error_description": desc, "error_codes": [70000] }));
    if f.get("client_id") != Some(&g.cfg.client_id) || f.get("client_secret") != Some(&g.cfg.client_secret) {
        return HttpResponse::Unauthorized().json(json!({ "error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided." }));
    }
    let life = g.cfg.token_lifetime;
    g.next_token += 1;
    let access = format!("at-{}-{}", g.next_token, now_ms());
    match f.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            g.tokens.insert(access.clone(), (TokenKind::App, Instant::now() + life));
            HttpResponse::Ok().json(json!({ "token_type": "Bearer", "expires_in": life.as_secs(), "ext_expires_in": life.as_secs(), "access_token": access }))
        }
        Some("refresh_token") => {
            let Some(rt) = f.get("refresh_token") else { return oauth("invalid_request", "AADSTS900144: refresh_token missing") };
            let Some(account) = g.refresh.get(rt).cloned() else { return oauth("invalid_grant", "AADSTS70008: The refresh token has expired or is invalid.") };
            *g.refresh_grants.entry(account.clone()).or_default() += 1;
            // Rotate: a new refresh token; the old one keeps working (as Entra's do for a while).
            delegated(&mut g, account, access, true)
        }
        Some(crate::graph_device::GRANT) => match crate::graph_device::poll(&mut g.device, &f) {
            Ok((account, offline)) => delegated(&mut g, account, access, offline),
            Err((code, desc)) => oauth(code, desc),
        },
        _ => oauth("unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type."),
    }
}

/// The answer with a delegated token `access` of `account` (and a new refresh token, which the
/// refresh grant accepts for that account, when `with_refresh`).
fn delegated(g: &mut State, account: String, access: String, with_refresh: bool) -> HttpResponse {
    let life = g.cfg.token_lifetime;
    let new_rt = with_refresh.then(|| format!("rt-{account}-{}", g.next_token));
    if let Some(rt) = &new_rt {
        g.refresh.insert(rt.clone(), account.clone());
    }
    g.tokens.insert(access.clone(), (TokenKind::Delegated(account), Instant::now() + life));
    HttpResponse::Ok().json(json!({
        "token_type": "Bearer", "scope": "https://graph.microsoft.com/Presence.Read.All",
        "expires_in": life.as_secs(), "access_token": access, "refresh_token": new_rt,
    }))
}

fn presence_json(p: &Presence) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.presence",
        "id": p.id,
        "availability": p.availability,
        "activity": p.activity,
        "sequenceNumber": format!("{:016X}", p.seq),
        "statusMessage": p.message.as_ref().map(|m| json!({ "message": { "content": m, "contentType": "text" }, "publishedDateTime": rfc3339(now_ms()) })),
        "outOfOfficeSettings": { "message": null, "isOutOfOffice": p.ooo },
        "workLocation": null,
    })
}

/// The decrypted `data` of a rich presence notification, as Graph documents it
/// (concepts/changenotifications-for-presence.md, "Decrypted notifications with resource
/// data"): the fields of [`presence_json`] that Graph puts there, and `@odata.id`.
fn rich_presence_json(p: &Presence) -> Value {
    let full = presence_json(p);
    json!({
        "@odata.id": format!("users/{}/presence", p.id),
        "@odata.type": full["@odata.type"],
        "id": full["id"],
        "availability": full["availability"],
        "activity": full["activity"],
    })
}

/// `encryptedContent` of `plaintext` for the subscriber's certificate; with `tamper`, one byte
/// of `data` is flipped after signing.
fn encrypted_content(e: &Encryption, plaintext: &Value, tamper: bool) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    match crypto::encrypt(&e.spki, plaintext.to_string().as_bytes(), &e.certificate_id, &e.thumbprint) {
        Ok(c) => {
            let data = if tamper {
                let mut raw = b64.decode(&c.data).unwrap_or_default();
                let mid = raw.len() / 2;
                if let Some(b) = raw.get_mut(mid) {
                    *b ^= 0x01;
                }
                b64.encode(raw)
            } else {
                c.data
            };
            json!({
                "data": data,
                "dataSignature": c.data_signature,
                "dataKey": c.data_key,
                "encryptionCertificateId": c.certificate_id,
                "encryptionCertificateThumbprint": c.certificate_thumbprint,
            })
        }
        // The certificate was checked at creation; should encryption still fail, send
        // something the receiver must refuse rather than a plaintext.
        Err(err) => {
            tracing::warn!(%err, "graph simulator: encrypting a rich notification failed");
            json!({ "data": "", "dataSignature": "", "dataKey": "" })
        }
    }
}

/// Budget, misbehaviour and slowness shared by the presence reads. `Err` is the answer to send.
async fn presence_gate(state: &Shared) -> Result<(), HttpResponse> {
    let slow = lock(state).misbehave.slow;
    if !slow.is_zero() {
        tokio::time::sleep(slow).await;
    }
    let mut g = lock(state);
    g.stats.presence_requests += 1;
    let now = Instant::now();
    if g.retry_until.is_some_and(|u| u > now) {
        g.stats.early_after_retry_after += 1;
    }
    if g.misbehave.throttle_next > 0 {
        g.misbehave.throttle_next -= 1;
        g.stats.throttled += 1;
        let secs = g.misbehave.retry_after_secs.max(1);
        g.retry_until = Some(now + Duration::from_secs(secs));
        return Err(HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", secs.to_string()))
            .json(json!({ "error": { "code": "TooManyRequests", "message": "Too many requests." } })));
    }
    if g.misbehave.fail_next > 0 {
        g.misbehave.fail_next -= 1;
        return Err(graph_error(503, "ServiceUnavailable", "The service is temporarily unavailable."));
    }
    while g.window.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(30)) {
        g.window.pop_front();
    }
    if g.window.len() >= g.cfg.budget {
        g.stats.throttled += 1;
        let wait = Duration::from_secs(30).saturating_sub(now.duration_since(*g.window.front().expect("non-empty")));
        let secs = wait.as_secs().max(1);
        g.retry_until = Some(now + Duration::from_secs(secs));
        return Err(HttpResponse::TooManyRequests().insert_header(("Retry-After", secs.to_string())).json(json!({ "error": { "code": "TooManyRequests", "message": "Application is over its resource limit." } })));
    }
    g.window.push_back(now);
    Ok(())
}

#[derive(Deserialize)]
struct IdsBody {
    ids: Vec<String>,
}

async fn get_presences(state: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(r) = bearer(&req, &lock(&state)) {
        return r;
    }
    if let Err(r) = presence_gate(&state).await {
        return r;
    }
    let mut g = lock(&state);
    if g.misbehave.malformed_next > 0 {
        g.misbehave.malformed_next -= 1;
        return HttpResponse::Ok().content_type("application/json").body("{\"value\":[{\"id\":");
    }
    let Ok(ids) = serde_json::from_slice::<IdsBody>(&body) else {
        return graph_error(400, "BadRequest", "Invalid request body.");
    };
    if ids.ids.is_empty() || ids.ids.len() > 650 {
        return graph_error(400, "BadRequest", "The number of ids must be between 1 and 650.");
    }
    let value: Vec<Value> = ids
        .ids
        .iter()
        .map(|id| match g.presences.get(&id.to_ascii_lowercase()) {
            Some(p) => presence_json(p),
            None => presence_json(&Presence { id: id.clone(), availability: "Offline".into(), activity: "OffWork".into(), message: None, ooo: false, seq: 1 }),
        })
        .collect();
    HttpResponse::Ok().json(json!({ "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.presence)", "value": value }))
}

async fn get_presence(state: web::Data<Shared>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    if let Err(r) = bearer(&req, &lock(&state)) {
        return r;
    }
    if let Err(r) = presence_gate(&state).await {
        return r;
    }
    let g = lock(&state);
    match g.presences.get(&id.to_ascii_lowercase()) {
        Some(p) => HttpResponse::Ok().json(presence_json(p)),
        None => graph_error(404, "NotFound", "The user was not found."),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubBody {
    change_type: String,
    notification_url: String,
    #[serde(default)]
    lifecycle_notification_url: Option<String>,
    resource: String,
    expiration_date_time: String,
    #[serde(default)]
    client_state: Option<String>,
    #[serde(default)]
    include_resource_data: bool,
    #[serde(default)]
    encryption_certificate: Option<String>,
    #[serde(default)]
    encryption_certificate_id: Option<String>,
}

/// Checks `encryptionCertificate` and `encryptionCertificateId` of a subscription with
/// resource data. `Err` is the message of the `400`.
fn encryption_of(b: &SubBody) -> Result<Encryption, &'static str> {
    let (Some(cert), Some(id)) = (
        b.encryption_certificate.as_deref().filter(|c| !c.trim().is_empty()),
        b.encryption_certificate_id.as_deref().filter(|i| !i.trim().is_empty()),
    ) else {
        return Err("encryptionCertificate and encryptionCertificateId are required when includeResourceData is true.");
    };
    if id.chars().count() > 128 {
        return Err("encryptionCertificateId is longer than 128 characters.");
    }
    let compact: String = cert.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(compact).map_err(|_| "encryptionCertificate is not valid base64.")?;
    let spki = crypto::certificate_spki(&der).ok_or("encryptionCertificate is not a valid X.509 certificate.")?;
    let thumbprint = crypto::thumbprint(&der);
    // A trial encryption checks that the key is RSA of 2,048-4,096 bits.
    crypto::encrypt(spki, b"{}", id, &thumbprint).map_err(|_| "The encryption certificate's key must be RSA of 2048 to 4096 bits.")?;
    Ok(Encryption { spki: spki.to_vec(), certificate_id: id.to_string(), thumbprint })
}

/// The ids of `/communications/presences?$filter=id in ('a','b')`.
fn filter_ids(resource: &str) -> Option<Vec<String>> {
    let rest = resource.trim_start_matches('/').strip_prefix("communications/presences?$filter=id in (")?.strip_suffix(')')?;
    let mut out = Vec::new();
    for part in rest.split(',') {
        let p = part.trim();
        out.push(p.strip_prefix('\'')?.strip_suffix('\'')?.replace("''", "'").to_ascii_lowercase());
    }
    Some(out)
}

/// Graph's validation handshake: POST `url?validationToken=…`, expect the token back as
/// text/plain within 10 s.
async fn validate(http: &reqwest::Client, url: &str) -> bool {
    let token = format!("Validation: Testing client application reachability for subscription Request-Id: {}", now_ms());
    let enc: String = token
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let sep = if url.contains('?') { '&' } else { '?' };
    let res = http.post(format!("{url}{sep}validationToken={enc}")).timeout(Duration::from_secs(10)).send().await;
    match res {
        Ok(r) if r.status() == 200 && r.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("text/plain")) => {
            r.text().await.is_ok_and(|t| t == token)
        }
        _ => false,
    }
}

async fn create_subscription(state: web::Data<Shared>, http: web::Data<reqwest::Client>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let account = match bearer(&req, &lock(&state)) {
        Err(r) => return r,
        Ok(None) => {
            return graph_error(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; Reason: Application permission is not supported for presence subscriptions.]")
        }
        Ok(Some(a)) => a,
    };
    if lock(&state).misbehave.refuse_subscriptions {
        return graph_error(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; Reason: refused by the simulator]");
    }
    let Ok(b) = serde_json::from_slice::<SubBody>(&body) else {
        return graph_error(400, "InvalidRequest", "Invalid subscription body.");
    };
    if b.change_type != "updated" {
        return graph_error(400, "InvalidRequest", "changeType must be 'updated' for presence.");
    }
    let Some(ids) = filter_ids(&b.resource) else {
        return graph_error(400, "InvalidRequest", "Unsupported resource.");
    };
    if ids.is_empty() || ids.len() > 650 {
        return graph_error(400, "InvalidRequest", "A presence subscription can have at most 650 ids.");
    }
    let Some(exp) = b.expiration_date_time.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond()) else {
        return graph_error(400, "InvalidRequest", "expirationDateTime is invalid.");
    };
    let now = now_ms();
    if exp <= now || exp > now + 60 * 60_000 + 60_000 {
        return graph_error(400, "InvalidRequest", "Subscription expiration can only be 60 minutes in the future.");
    }
    let cs = b.client_state.clone().unwrap_or_default();
    if cs.len() > 128 {
        return graph_error(400, "InvalidRequest", "clientState is longer than 128 characters.");
    }
    let encryption = if b.include_resource_data {
        match encryption_of(&b) {
            Ok(e) => Some(e),
            Err(m) => return graph_error(400, "InvalidRequest", m),
        }
    } else {
        None
    };
    let existing = lock(&state).subs.values().any(|s| s.account == account && s.expires_at > now);
    if existing {
        lock(&state).log_sub(&b.notification_url, "create-refused");
        return graph_error(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; Reason: The user already has a presence subscription for this application.]");
    }
    // Validation handshake, outside the lock.
    let mut ok = validate(&http, &b.notification_url).await;
    if ok {
        if let Some(l) = &b.lifecycle_notification_url {
            ok = validate(&http, l).await;
        }
    }
    let mut g = lock(&state);
    if !ok {
        g.stats.validations_failed += 1;
        return graph_error(400, "ValidationError", "Subscription validation request failed. Response must exactly match validationToken query parameter.");
    }
    g.stats.validations_ok += 1;
    g.stats.subscriptions_created += 1;
    let id = format!("{:08x}-sim0-4000-8000-{:012x}", g.next_sub, now);
    g.next_sub += 1;
    let sub = Sub {
        id: id.clone(),
        account,
        ids: ids.into_iter().collect(),
        notification_url: b.notification_url.clone(),
        lifecycle_url: b.lifecycle_notification_url.clone(),
        client_state: cs.clone(),
        expires_at: exp,
        encryption,
    };
    g.subs.insert(id.clone(), sub);
    g.log_sub(&b.notification_url, "create");
    HttpResponse::Created().json(json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
        "id": id, "resource": b.resource, "changeType": "updated", "clientState": cs,
        "notificationUrl": b.notification_url, "lifecycleNotificationUrl": b.lifecycle_notification_url,
        "expirationDateTime": rfc3339(exp), "includeResourceData": b.include_resource_data,
        "encryptionCertificateId": if b.include_resource_data { b.encryption_certificate_id.clone() } else { None },
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RenewBody {
    expiration_date_time: String,
}

async fn renew_subscription(state: web::Data<Shared>, req: HttpRequest, id: web::Path<String>, body: web::Bytes) -> HttpResponse {
    let mut g = lock(&state);
    match bearer(&req, &g) {
        Err(r) => return r,
        Ok(None) => return graph_error(403, "ExtensionError", "Application permission is not supported for presence subscriptions."),
        Ok(Some(_)) => {}
    }
    if g.misbehave.refuse_subscriptions {
        return graph_error(403, "ExtensionError", "refused by the simulator");
    }
    let Some(exp) = serde_json::from_slice::<RenewBody>(&body).ok().and_then(|b| b.expiration_date_time.parse::<jiff::Timestamp>().ok()).map(|t| t.as_millisecond()) else {
        return graph_error(400, "InvalidRequest", "expirationDateTime is invalid.");
    };
    let now = now_ms();
    if exp <= now || exp > now + 61 * 60_000 {
        return graph_error(400, "InvalidRequest", "Subscription expiration can only be 60 minutes in the future.");
    }
    let Some(s) = g.subs.get_mut(id.as_str()).filter(|s| s.expires_at > now) else {
        return graph_error(404, "ResourceNotFound", "The object was not found.");
    };
    s.expires_at = exp;
    let out = json!({ "id": s.id, "expirationDateTime": rfc3339(exp), "clientState": s.client_state, "changeType": "updated" });
    let url = s.notification_url.clone();
    g.stats.renewals += 1;
    g.log_sub(&url, "renew");
    HttpResponse::Ok().json(out)
}

async fn delete_subscription(state: web::Data<Shared>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let mut g = lock(&state);
    if let Err(r) = bearer(&req, &g) {
        return r;
    }
    let Some(gone) = g.subs.remove(id.as_str()) else {
        return graph_error(404, "ResourceNotFound", "The object was not found.");
    };
    g.stats.deletions += 1;
    g.log_sub(&gone.notification_url, "delete");
    HttpResponse::NoContent().finish()
}

async fn reauthorize(state: web::Data<Shared>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let mut g = lock(&state);
    if let Err(r) = bearer(&req, &g) {
        return r;
    }
    if !g.subs.contains_key(id.as_str()) {
        return graph_error(404, "ResourceNotFound", "The object was not found.");
    }
    g.stats.reauthorizations += 1;
    HttpResponse::Ok().finish()
}

/// Teams states the demo moves people between, with weights.
const DEMO_STATES: [(&str, &str, u32); 10] = [
    ("Available", "Available", 34),
    ("Busy", "Busy", 10),
    ("Busy", "InACall", 10),
    ("Busy", "InAMeeting", 8),
    ("Away", "Away", 10),
    ("BeRightBack", "BeRightBack", 6),
    ("DoNotDisturb", "Presenting", 4),
    ("AvailableIdle", "Inactive", 6),
    ("Offline", "OffWork", 8),
    ("Available", "OutOfOffice", 4),
];

/// A small deterministic generator (xorshift64*), so the demo plays the same way each time.
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Next value.
    #[allow(clippy::should_implement_trait)] // an endless generator, not an iterator
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn demo_state(rng: &mut Rng) -> (&'static str, &'static str) {
    let total: u32 = DEMO_STATES.iter().map(|s| s.2).sum();
    let mut r = rng.below(total as u64) as u32;
    for (a, act, w) in DEMO_STATES {
        if r < w {
            return (a, act);
        }
        r -= w;
    }
    ("Available", "Available")
}

impl GraphSim {
    /// Seeds everyone with a plausible working-day state (most Available).
    pub fn seed_demo(&self, ids: &[String], seed: u64) {
        let mut rng = Rng::new(seed);
        let people: Vec<(String, &str, &str)> = ids
            .iter()
            .map(|id| {
                let (a, act) = if rng.below(100) < 60 { ("Available", "Available") } else { demo_state(&mut rng) };
                (id.clone(), a, act)
            })
            .collect();
        let refs: Vec<(&str, &str, &str)> = people.iter().map(|(i, a, b)| (i.as_str(), *a, *b)).collect();
        self.seed(&refs);
    }

    /// Changes a random person's Teams state every `every` (± half), on a thread of its own,
    /// until the simulator is dropped. Changes reach subscribers as change notifications.
    pub fn drive_demo(self: &Arc<Self>, ids: Vec<String>, every: Duration, seed: u64) -> std::io::Result<()> {
        let sim = Arc::downgrade(self);
        std::thread::Builder::new().name("graph-sim-demo".into()).spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            let mut rng = Rng::new(seed);
            rt.block_on(async move {
                loop {
                    let wait = every.as_millis() as u64 / 2 + rng.below(every.as_millis() as u64 + 1);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    let Some(sim) = sim.upgrade() else { return };
                    if ids.is_empty() {
                        return;
                    }
                    let id = &ids[rng.below(ids.len() as u64) as usize];
                    let (a, act) = demo_state(&mut rng);
                    sim.set_presence(id, a, act, None, act == "OutOfOffice").await;
                }
            });
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_ids_reads_the_documented_resource() {
        assert_eq!(filter_ids("/communications/presences?$filter=id in ('A','b''c')"), Some(vec!["a".to_string(), "b'c".to_string()]));
        assert_eq!(filter_ids("/users/x/presence"), None);
    }

    mod rich {
        use super::*;
        use presence_providers::graph::crypto::{CryptoError, NotificationKey};
        use presence_providers::graph::parse::{parse_notifications, parse_presence, validation_token};

        const KEY_PEM: &str = include_str!("../../fixtures/graph/test-notification-key.pem");
        const CERT_PEM: &str = include_str!("../../fixtures/graph/test-notification-cert.pem");

        type Inbox = Arc<Mutex<Vec<Vec<u8>>>>;

        /// A notification endpoint: answers the validation handshake, keeps every other body.
        async fn receive(req: HttpRequest, body: web::Bytes, inbox: web::Data<Inbox>) -> HttpResponse {
            if let Some(t) = validation_token(req.query_string()) {
                return HttpResponse::Ok().content_type("text/plain").body(t);
            }
            inbox.lock().unwrap().push(body.to_vec());
            HttpResponse::Accepted().finish()
        }

        async fn delegated_token(http: &reqwest::Client, sim: &GraphSim, refresh_token: &str) -> String {
            let form = format!("grant_type=refresh_token&client_id=sim-client&client_secret=sim-secret&refresh_token={refresh_token}");
            let r = http.post(sim.token_url()).header("content-type", "application/x-www-form-urlencoded").body(form).send().await.unwrap();
            r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string()
        }

        async fn subscribe(http: &reqwest::Client, sim: &GraphSim, token: &str, body: Value) -> (u16, Value) {
            let r = http.post(format!("{}/subscriptions", sim.graph_url())).bearer_auth(token).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        }

        fn sub_body(url: &str, extra: Value) -> Value {
            let mut b = json!({
                "changeType": "updated",
                "notificationUrl": url,
                "resource": "/communications/presences?$filter=id in ('u1','u2')",
                "expirationDateTime": rfc3339(now_ms() + 30 * 60_000),
                "clientState": "cs-1",
            });
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            b
        }

        #[actix_rt::test]
        async fn rich_notifications_decrypt_with_the_subscribers_key() {
            let key = NotificationKey::from_pem(KEY_PEM, CERT_PEM, "hub-cert-1").unwrap();
            let inbox: Inbox = Arc::default();
            let ib = inbox.clone();
            let receiver = Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), move |cfg: &mut web::ServiceConfig| {
                cfg.app_data(web::Data::new(ib.clone())).route("/notify", web::post().to(receive));
            })
            .unwrap();
            let url = format!("{}/notify", receiver.url());
            let sim = GraphSim::start(GraphSimConfig::default()).unwrap();
            let http = reqwest::Client::builder().no_proxy().build().unwrap();
            let t1 = delegated_token(&http, &sim, "rt-svc1-0").await;

            // Resource data without a certificate (or with a bad one) is refused.
            for extra in [
                json!({ "includeResourceData": true }),
                json!({ "includeResourceData": true, "encryptionCertificate": key.certificate_base64() }),
                json!({ "includeResourceData": true, "encryptionCertificate": "not base64!", "encryptionCertificateId": "c" }),
                json!({ "includeResourceData": true, "encryptionCertificate": "AAAA", "encryptionCertificateId": "c" }),
                json!({ "includeResourceData": true, "encryptionCertificate": key.certificate_base64(), "encryptionCertificateId": "x".repeat(129) }),
            ] {
                let (status, body) = subscribe(&http, &sim, &t1, sub_body(&url, extra.clone())).await;
                assert_eq!(status, 400, "{extra} → {body}");
            }
            assert!(sim.subscriptions().is_empty());

            let extra = json!({ "includeResourceData": true, "encryptionCertificate": key.certificate_base64(), "encryptionCertificateId": key.id() });
            let (status, created) = subscribe(&http, &sim, &t1, sub_body(&url, extra)).await;
            assert_eq!(status, 201, "{created}");
            assert_eq!(created["includeResourceData"], true);
            assert_eq!(created["encryptionCertificateId"], "hub-cert-1");

            sim.set_presence("u1", "Busy", "InACall", Some("on a call"), false).await;
            let body = inbox.lock().unwrap().pop().expect("a notification");
            let batch = parse_notifications(&body).unwrap();
            let n = &batch.value[0];
            assert_eq!((n.client_state.as_deref(), n.user_id.as_deref()), (Some("cs-1"), Some("u1")));
            let c = n.encrypted.as_ref().expect("encryptedContent");
            assert_eq!(c.certificate_id.as_deref(), Some("hub-cert-1"));
            assert_eq!(c.certificate_thumbprint.as_deref(), Some(key.thumbprint()));
            let plain = key.decrypt(c).unwrap();
            let doc: Value = serde_json::from_slice(&plain).unwrap();
            assert_eq!(
                doc,
                json!({ "@odata.id": "users/u1/presence", "@odata.type": "#microsoft.graph.presence", "id": "u1", "availability": "Busy", "activity": "InACall" })
            );
            let p = parse_presence(&plain).unwrap();
            assert_eq!(p.id, "u1");
            assert_eq!(format!("{:?}/{:?}", p.availability, p.activity), "Busy/Some(InACall)");

            // Tampered data: rejected by the HMAC.
            sim.misbehave(Misbehave { tamper_encrypted: true, ..Misbehave::default() });
            sim.set_presence("u2", "Away", "Away", None, false).await;
            let body = inbox.lock().unwrap().pop().expect("a notification");
            let c = parse_notifications(&body).unwrap().value.remove(0).encrypted.expect("encryptedContent");
            assert_eq!(key.decrypt(&c), Err(CryptoError::SignatureMismatch));

            // A basic subscription (another account) still gets basic notifications.
            sim.misbehave(Misbehave::default());
            let t2 = delegated_token(&http, &sim, "rt-svc2-0").await;
            let (status, created) = subscribe(&http, &sim, &t2, sub_body(&url, json!({}))).await;
            assert_eq!(status, 201, "{created}");
            assert_eq!(created["includeResourceData"], false);
            inbox.lock().unwrap().clear();
            sim.set_presence("u1", "Available", "Available", None, false).await;
            let bodies = std::mem::take(&mut *inbox.lock().unwrap());
            assert_eq!(bodies.len(), 2);
            let encrypted: Vec<bool> =
                bodies.iter().map(|b| parse_notifications(b).unwrap().value[0].encrypted.is_some()).collect();
            assert_eq!(encrypted.iter().filter(|e| **e).count(), 1, "one rich, one basic");
        }
    }
}

