//! The session's documents: discovery, authenticate, the session with its services, the
//! subscription request and answer, and the snapshot URLs.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{from_json, ParseError, API_VERSION, COOKIE_NAME, DEFAULT_TTL_SECS};
use crate::common::form;
use presence_actors::model::activity::truncate;

/// O2G announces most URLs twice, for public and for private access: the one asked for,
/// falling back to the other (an empty one counts as absent).
fn pick_url<'a>(public: bool, public_url: &'a Option<String>, private_url: &'a Option<String>) -> Option<&'a str> {
    let (first, second) = if public { (public_url, private_url) } else { (private_url, public_url) };
    let given = |u: &'a Option<String>| u.as_deref().map(str::trim).filter(|u| !u.is_empty());
    given(first).or_else(|| given(second))
}

/// The authenticate URLs from the discovery document `GET /api/rest` (`RoxeRestApiDescriptor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// `versions[].publicUrl` (public access).
    pub public_url: Option<String>,
    /// `versions[].internalUrl` (private access).
    pub internal_url: Option<String>,
    /// `serverInfo.productName` and `productVersion.major`, for health details.
    pub product: Option<String>,
}

/// Reads the discovery document: the `versions[]` entry with `id == "1.0"`, else the one with
/// `status == "CURRENT"` (as the SDKs pick it).
pub fn parse_discovery(body: &[u8]) -> Result<Discovery, ParseError> {
    let v: Value = from_json(body)?;
    let versions = v.get("versions").and_then(Value::as_array).ok_or(ParseError::Missing("versions"))?;
    let pick = versions
        .iter()
        .find(|x| x.get("id").and_then(Value::as_str) == Some(API_VERSION))
        .or_else(|| versions.iter().find(|x| x.get("status").and_then(Value::as_str) == Some("CURRENT")))
        .ok_or(ParseError::Missing("versions[] entry 1.0 or CURRENT"))?;
    let url =
        |k: &str| pick.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let (public_url, internal_url) = (url("publicUrl"), url("internalUrl"));
    if public_url.is_none() && internal_url.is_none() {
        return Err(ParseError::Missing("versions[].publicUrl/internalUrl"));
    }
    let info = v.get("serverInfo");
    let product = info.and_then(|i| i.get("productName")).and_then(Value::as_str).map(|n| {
        let major = info.and_then(|i| i.get("productVersion")).and_then(|p| p.get("major")).and_then(Value::as_str);
        truncate(&major.map_or_else(|| n.to_string(), |m| format!("{n} {m}")), 120).to_string()
    });
    Ok(Discovery { public_url, internal_url, product })
}

impl Discovery {
    /// The authenticate URL: private unless `public`, falling back to the other.
    pub fn authenticate_url(&self, public: bool) -> Option<&str> {
        pick_url(public, &self.public_url, &self.internal_url)
    }
}

/// The answer of `GET …/authenticate?version=1.0` (`O2GAuthenticateResult`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticateResult {
    /// The session credential: the value of the `AlcUserId` cookie.
    pub credential: String,
    /// The sessions URL for public access.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The sessions URL for private access.
    #[serde(default)]
    pub internal_url: Option<String>,
}

/// Reads the authenticate answer.
pub fn parse_authenticate(body: &[u8]) -> Result<AuthenticateResult, ParseError> {
    let a: AuthenticateResult = from_json(body)?;
    if a.credential.trim().is_empty() || a.credential.len() > 4096 {
        return Err(ParseError::Missing("credential"));
    }
    if a.sessions_url(false).is_none() {
        return Err(ParseError::Missing("publicUrl/internalUrl"));
    }
    Ok(a)
}

impl AuthenticateResult {
    /// The sessions URL: private unless `public`, falling back to the other.
    pub fn sessions_url(&self, public: bool) -> Option<&str> {
        pick_url(public, &self.public_url, &self.internal_url).map(|u| u.trim_end_matches('/'))
    }
}

/// The `Cookie` header value for a credential.
pub fn cookie_header(credential: &str) -> String {
    format!("{COOKIE_NAME}={credential}")
}

/// Reads the `AlcUserId` value out of a `Set-Cookie` header (\[A\]: attributes ignored).
pub fn credential_from_set_cookie(set_cookie: &str) -> Option<&str> {
    let first = set_cookie.split(';').next()?.trim();
    let (k, v) = first.split_once('=')?;
    (k.trim() == COOKIE_NAME && !v.trim().is_empty()).then(|| v.trim())
}

/// The `{"applicationName": …}` body of `POST …/sessions`.
pub fn session_request(application_name: &str) -> String {
    json!({ "applicationName": application_name }).to_string()
}

/// One service of a session (`services[]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// `serviceName`, e.g. `Subscriptions`, `Telephony`, `Routing`.
    pub service_name: String,
    /// `serviceVersion`.
    #[serde(default)]
    pub service_version: Option<String>,
    /// `relativeUrl`, e.g. `/subscriptions`.
    pub relative_url: String,
}

/// The session (`SessionInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// An administrator session (may act on any login name).
    #[serde(default)]
    pub admin: bool,
    /// The logged-in login name.
    #[serde(default)]
    pub login: Option<String>,
    /// Seconds without a keep-alive after which the session ends.
    #[serde(default)]
    pub time_to_live: Option<u64>,
    /// Base of the service URLs for public access.
    #[serde(default)]
    pub public_base_url: Option<String>,
    /// Base of the service URLs for private access.
    #[serde(default)]
    pub private_base_url: Option<String>,
    /// The services this session may use.
    #[serde(default)]
    pub services: Vec<Service>,
}

impl SessionInfo {
    /// The TTL in seconds ([`DEFAULT_TTL_SECS`] when the server gives none).
    pub fn ttl_secs(&self) -> u64 {
        self.time_to_live.filter(|t| *t > 0).unwrap_or(DEFAULT_TTL_SECS).min(86_400)
    }

    /// The base URL: private unless `public`, falling back to the other.
    pub fn base_url(&self, public: bool) -> Option<&str> {
        pick_url(public, &self.public_base_url, &self.private_base_url).map(|u| u.trim_end_matches('/'))
    }

    /// The URL of a service, matched case-insensitively by name; `None` if the session lacks it.
    /// As in the SDKs, any telephony `relativeUrl` (`/telephony/calls`…) stands for
    /// `{base}/telephony`.
    pub fn service_url(&self, name: &str, public: bool) -> Option<String> {
        let base = self.base_url(public)?;
        let s = self.services.iter().find(|s| s.service_name.eq_ignore_ascii_case(name))?;
        let rel = s.relative_url.trim();
        if rel.starts_with("/telephony") {
            return Some(format!("{base}/telephony"));
        }
        Some(format!("{base}/{}", rel.trim_start_matches('/')))
    }
}

/// Reads a session answer.
pub fn parse_session(body: &[u8]) -> Result<SessionInfo, ParseError> {
    let s: SessionInfo = from_json(body)?;
    if s.base_url(false).is_none() {
        return Err(ParseError::Missing("publicBaseUrl/privateBaseUrl"));
    }
    Ok(s)
}

/// How events are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The chunked event stream, with the channel's lifetime in minutes (`timeout`).
    Chunk {
        /// `timeout`, minutes.
        timeout_min: u32,
    },
    /// One POST per event to this URL (`webHookUrl`, sent instead of `timeout`).
    Webhook {
        /// `webHookUrl`.
        url: String,
    },
}

/// The body of `POST …/subscriptions`: one selector per package, each with the same `ids`
/// (login names; mandatory in an administrator session).
pub fn subscription_request(ids: &[String], packages: &[&str], delivery: &Delivery) -> String {
    let selectors: Vec<Value> = packages.iter().map(|p| json!({ "ids": ids, "names": [p] })).collect();
    let mut body = json!({ "filter": { "selectors": selectors }, "version": API_VERSION });
    match delivery {
        Delivery::Chunk { timeout_min } => body["timeout"] = json!(timeout_min),
        Delivery::Webhook { url } => body["webHookUrl"] = json!(url),
    }
    body.to_string()
}

/// The answer of `POST …/subscriptions` (`SubscriptionResult`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionResult {
    /// `subscriptionId`.
    pub subscription_id: String,
    /// `message` (why it was refused).
    #[serde(default)]
    pub message: Option<String>,
    /// The event channel for public access.
    #[serde(default)]
    pub public_polling_url: Option<String>,
    /// The event channel for private access.
    #[serde(default)]
    pub private_polling_url: Option<String>,
    /// `ACCEPTED` when it worked.
    #[serde(default)]
    pub status: Option<String>,
    /// `CHUNK` (the tutorial); `WEBHOOK` for webhooks is \[A\].
    #[serde(default)]
    pub mode: Option<String>,
}

impl SubscriptionResult {
    /// The polling URL: private unless `public`, falling back to the other.
    pub fn polling_url(&self, public: bool) -> Option<&str> {
        pick_url(public, &self.public_polling_url, &self.private_polling_url)
    }
}

/// Reads a subscription answer; anything but `status == "ACCEPTED"` is a refusal.
pub fn parse_subscription(body: &[u8]) -> Result<SubscriptionResult, ParseError> {
    let s: SubscriptionResult = from_json(body)?;
    if s.status.as_deref() != Some("ACCEPTED") {
        let why = s.message.clone().or(s.status.clone()).unwrap_or_else(|| "no status".into());
        return Err(ParseError::Refused(truncate(&why, 200).to_string()));
    }
    if s.subscription_id.trim().is_empty() || s.subscription_id.len() > 4096 {
        return Err(ParseError::Missing("subscriptionId"));
    }
    Ok(s)
}

/// `{subscriptions}/{id}`: the subscription to delete.
pub fn subscription_url(subscriptions_url: &str, id: &str) -> String {
    format!("{}/{}", subscriptions_url.trim_end_matches('/'), form::encode_component(id))
}

/// `{base}/state/snapshot?loginName=…` of the telephony or routing service: the server then
/// pushes `OnTelephonyState` / `OnRoutingStateChanged` for that user on the event channel.
pub fn snapshot_url(service_url: &str, login: &str) -> String {
    format!("{}/state/snapshot?loginName={}", service_url.trim_end_matches('/'), form::encode_component(login))
}
