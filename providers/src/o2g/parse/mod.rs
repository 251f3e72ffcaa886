//! Pure O2G wire handling: the login documents (discovery, authenticate, session), the
//! subscription request and answer, the events, and the line splitter of the chunked event
//! stream. No I/O, no actix types; every function takes bytes or values and returns data or a
//! [`ParseError`], and no input panics (see the mutation tests below).
//!
//! Field names are the ones the ALE O2G SDKs (de)serialise (`o2g-node-sdk`'s internal JSON
//! types, the Java SDK's event classes, the C# SDK): `eventName`, `loginName`, `callRef`,
//! `legs[].state`, `routingState.forwardRoutes`… Where the research notes mark a name or value as
//! synthesized \[S\] or assumed \[A\], it is used in this module only, named in a constant or a
//! comment here:
//!
//! - \[A\] the `credential` of `authenticate` is also accepted as the `AlcUserId` cookie value
//!   the server sets (the name is documented; the cookie's attributes are not, and are ignored);
//! - \[A\] the session's `timeToLive` defaults to [`DEFAULT_TTL_SECS`] when absent or zero;
//! - \[A\] a webhook subscription answer's `mode` (`"WEBHOOK"`) is read but never required: only
//!   `status == "ACCEPTED"` decides, as in the SDKs;
//! - \[S\] the values of every fixture in `fixtures/o2g/` (no verbatim event text is public).
//!
//! Every event is a flat object with `eventName` at top level. Unknown event names parse as
//! [`Event::Other`]; unknown enum values (new call causes, media states) are kept as text so
//! newer servers do not break the parser. Both spellings the SDKs disagree on are read:
//! `removedLegs` (Java/C#) and `removedLeg` (Node), `removedParticipantIds` (Java/C#) and
//! `removedParticipants` (Node).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Longest event line kept from the chunked stream (longer lines are dropped and counted).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Session lifetime assumed when the server does not say (\[A\]).
pub const DEFAULT_TTL_SECS: u64 = 300;
/// The cookie that carries the session credential (\[D\]: O2G tutorial, python sample).
pub const COOKIE_NAME: &str = "AlcUserId";
/// The `text` of a heartbeat `OnChannelInformation` (\[D\]: C# SDK `ChunkEventing`).
pub const HEARTBEAT_TEXT: &str = "keepalive";
/// The API version asked for in discovery, authenticate and subscriptions.
pub const API_VERSION: &str = "1.0";
/// The event package of telephony events (calls, user and device state).
pub const PACKAGE_TELEPHONY: &str = "telephony";
/// The event package of routing events (forward, overflow, DND) — not `routing`.
pub const PACKAGE_ROUTING: &str = "routingManagement";
/// The event package of event summary counters (missed calls, voicemail).
pub const PACKAGE_EVENT_SUMMARY: &str = "eventSummary";
/// Longest text kept from a peer's identifiers (call references, logins, numbers).
pub const MAX_ID_LEN: usize = 256;

/// Why a document or event could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or not the expected shape.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A required field is missing or empty.
    #[error("missing {0}")]
    Missing(&'static str),
    /// The server refused (a subscription whose `status` is not `ACCEPTED`).
    #[error("refused: {0}")]
    Refused(String),
    /// A stream line longer than [`MAX_EVENT_BYTES`].
    #[error("event line longer than {MAX_EVENT_BYTES} bytes")]
    TooLong,
}

fn json_err(e: serde_json::Error) -> ParseError {
    ParseError::Json(crate_truncate(&e.to_string(), 200).to_string())
}

fn crate_truncate(s: &str, max: usize) -> &str {
    presence_actors::model::activity::truncate(s, max)
}

fn bounded(s: &str) -> String {
    crate_truncate(s.trim(), MAX_ID_LEN).to_string()
}

// ---------------------------------------------------------------------------------------------
// Login: discovery, authenticate, session.

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
    let v: Value = serde_json::from_slice(body).map_err(json_err)?;
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
        crate_truncate(&major.map_or_else(|| n.to_string(), |m| format!("{n} {m}")), 120).to_string()
    });
    Ok(Discovery { public_url, internal_url, product })
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
    let a: AuthenticateResult = serde_json::from_slice(body).map_err(json_err)?;
    if a.credential.trim().is_empty() || a.credential.len() > 4096 {
        return Err(ParseError::Missing("credential"));
    }
    if a.public_url.as_deref().is_none_or(str::is_empty) && a.internal_url.as_deref().is_none_or(str::is_empty) {
        return Err(ParseError::Missing("publicUrl/internalUrl"));
    }
    Ok(a)
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
        let (first, second) = if public {
            (&self.public_base_url, &self.private_base_url)
        } else {
            (&self.private_base_url, &self.public_base_url)
        };
        first
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(second.as_deref().filter(|s| !s.is_empty()))
            .map(|s| s.trim_end_matches('/'))
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
    let s: SessionInfo = serde_json::from_slice(body).map_err(json_err)?;
    if s.base_url(false).is_none() {
        return Err(ParseError::Missing("publicBaseUrl/privateBaseUrl"));
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// Subscriptions.

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
        let (a, b) = if public {
            (&self.public_polling_url, &self.private_polling_url)
        } else {
            (&self.private_polling_url, &self.public_polling_url)
        };
        a.as_deref().filter(|s| !s.is_empty()).or(b.as_deref().filter(|s| !s.is_empty()))
    }
}

/// Reads a subscription answer; anything but `status == "ACCEPTED"` is a refusal.
pub fn parse_subscription(body: &[u8]) -> Result<SubscriptionResult, ParseError> {
    let s: SubscriptionResult = serde_json::from_slice(body).map_err(json_err)?;
    if s.status.as_deref() != Some("ACCEPTED") {
        let why = s.message.clone().or(s.status.clone()).unwrap_or_else(|| "no status".into());
        return Err(ParseError::Refused(crate_truncate(&why, 200).to_string()));
    }
    if s.subscription_id.trim().is_empty() || s.subscription_id.len() > 4096 {
        return Err(ParseError::Missing("subscriptionId"));
    }
    Ok(s)
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters kept).
pub fn query_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `{base}/state/snapshot?loginName=…` of the telephony or routing service: the server then
/// pushes `OnTelephonyState` / `OnRoutingStateChanged` for that user on the event channel.
pub fn snapshot_url(service_url: &str, login: &str) -> String {
    format!("{}/state/snapshot?loginName={}", service_url.trim_end_matches('/'), query_encode(login))
}

// ---------------------------------------------------------------------------------------------
// Enums, tolerant of values added by newer servers.

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($(#[$vm])* $v,)+
            /// A value this parser does not know (kept, bounded).
            Other(String),
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $($s => $name::$v,)+
                    _ => $name::Other(crate_truncate(&s, 64).to_string()),
                }
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.as_str().to_string()
            }
        }
        impl $name {
            /// The wire value.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$v => $s,)+
                    $name::Other(s) => s,
                }
            }
        }
    };
}

wire_enum!(
    /// `MediaState` of a leg, participant or call.
    MediaState {
        /// `UNKNOWN`.
        Unknown = "UNKNOWN",
        /// `OFF_HOOK`: busy but not in a call (service activation…).
        OffHook = "OFF_HOOK",
        /// `IDLE`.
        Idle = "IDLE",
        /// `RELEASING`.
        Releasing = "RELEASING",
        /// `DIALING`: outgoing call being set up.
        Dialing = "DIALING",
        /// `HELD`.
        Held = "HELD",
        /// `RINGING_INCOMING`.
        RingingIncoming = "RINGING_INCOMING",
        /// `RINGING_OUTGOING`.
        RingingOutgoing = "RINGING_OUTGOING",
        /// `ACTIVE`.
        Active = "ACTIVE",
    }
);

wire_enum!(
    /// `UserState`.
    UserState {
        /// `FREE`.
        Free = "FREE",
        /// `BUSY`.
        Busy = "BUSY",
        /// `UNKNOWN`.
        Unknown = "UNKNOWN",
    }
);

wire_enum!(
    /// `OperationalState` of a device.
    OperationalState {
        /// `IN_SERVICE`.
        InService = "IN_SERVICE",
        /// `OUT_OF_SERVICE`.
        OutOfService = "OUT_OF_SERVICE",
        /// `UNKNOWN`.
        Unknown = "UNKNOWN",
    }
);

// ---------------------------------------------------------------------------------------------
// Event payloads.

/// `PartyInfo.id`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartyId {
    /// `loginName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_name: Option<String>,
    /// `phoneNumber`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
}

/// `PartyInfo` (initial called, participants' identity).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartyInfo {
    /// `id`.
    #[serde(default)]
    pub id: Option<PartyId>,
    /// `firstName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// `lastName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// `displayName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// `CallData` (the fields presence uses).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallData {
    /// `initialCalled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_called: Option<PartyInfo>,
    /// `deviceCall`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_call: Option<bool>,
    /// `anonymous`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<bool>,
    /// `state`: the call's media state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MediaState>,
}

/// `Leg`: one of the user's devices in a call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Leg {
    /// `deviceId`: the device's number.
    pub device_id: String,
    /// `state`.
    pub state: MediaState,
    /// `ringingRemote`.
    #[serde(default)]
    pub ringing_remote: bool,
}

/// `Participant`: another party of a call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    /// `participantId`.
    pub participant_id: String,
    /// `identity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<PartyInfo>,
    /// `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MediaState>,
}

/// `Call` (in `OnTelephonyState.state.calls`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    /// `callRef`.
    pub call_ref: String,
    /// `callData`.
    #[serde(default)]
    pub call_data: Option<CallData>,
    /// `legs`.
    #[serde(default)]
    pub legs: Vec<Leg>,
    /// `participants`.
    #[serde(default)]
    pub participants: Vec<Participant>,
}

/// `OnCallCreated`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallCreated {
    /// `loginName`.
    pub login_name: String,
    /// `callRef`.
    pub call_ref: String,
    /// `cause` (`CallCause`).
    #[serde(default)]
    pub cause: Option<String>,
    /// `callData`.
    #[serde(default)]
    pub call_data: Option<CallData>,
    /// `initiator` (a participant id).
    #[serde(default)]
    pub initiator: Option<String>,
    /// `legs`.
    #[serde(default)]
    pub legs: Vec<Leg>,
    /// `participants`.
    #[serde(default)]
    pub participants: Vec<Participant>,
}

/// `OnCallModified`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallModified {
    /// `loginName`.
    pub login_name: String,
    /// `callRef`.
    pub call_ref: String,
    /// `cause`.
    #[serde(default)]
    pub cause: Option<String>,
    /// `previousCallRef`: `callRef` replaces it (no `OnCallRemoved` comes for it).
    #[serde(default)]
    pub previous_call_ref: Option<String>,
    /// `replacedByCallRef`: this call goes on under that reference.
    #[serde(default)]
    pub replaced_by_call_ref: Option<String>,
    /// `callData`.
    #[serde(default)]
    pub call_data: Option<CallData>,
    /// `modifiedLegs`.
    #[serde(default)]
    pub modified_legs: Vec<Leg>,
    /// `addedLegs`.
    #[serde(default)]
    pub added_legs: Vec<Leg>,
    /// `removedLegs` (Java/C#) or `removedLeg` (Node).
    #[serde(default, alias = "removedLeg")]
    pub removed_legs: Vec<Leg>,
    /// `modifiedParticipants`.
    #[serde(default)]
    pub modified_participants: Vec<Participant>,
    /// `addedParticipants`.
    #[serde(default)]
    pub added_participants: Vec<Participant>,
    /// `removedParticipantIds` (Java/C#) or `removedParticipants` (Node).
    #[serde(default, alias = "removedParticipants")]
    pub removed_participant_ids: Vec<String>,
}

/// `OnCallRemoved`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRemoved {
    /// `loginName`.
    pub login_name: String,
    /// `callRef`.
    pub call_ref: String,
    /// `cause`.
    #[serde(default)]
    pub cause: Option<String>,
    /// `newDestination`: where a forwarded or redirected call went.
    #[serde(default)]
    pub new_destination: Option<String>,
}

/// `OnUserStateModified`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserStateModified {
    /// `loginName`.
    pub login_name: String,
    /// `state`.
    pub state: UserState,
}

/// `DeviceState`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceState {
    /// `deviceId`.
    pub device_id: String,
    /// `state`.
    pub state: OperationalState,
}

/// `OnDeviceStateModified`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStateModified {
    /// `loginName`.
    pub login_name: String,
    /// `deviceStates`.
    #[serde(default)]
    pub device_states: Vec<DeviceState>,
}

/// `TelephonicState`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TelephonicState {
    /// `calls`: the user's calls now.
    #[serde(default)]
    pub calls: Vec<Call>,
    /// `userState`.
    #[serde(default)]
    pub user_state: Option<UserState>,
}

/// `OnTelephonyState`: the answer to a snapshot request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TelephonyState {
    /// `loginName`.
    pub login_name: String,
    /// `state`.
    #[serde(default)]
    pub state: Option<TelephonicState>,
}

/// `Destination` of a route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// `type`: `VOICEMAIL`, `NUMBER`, `ASSOCIATE`, `MOBILE`; anything else means none.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// `deviceId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// `number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// `selected` (presentation routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<bool>,
}

/// A presentation route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresentationRoute {
    /// `destinations`.
    #[serde(default)]
    pub destinations: Vec<Destination>,
}

/// A forward route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardRoute {
    /// `forwardType`: absent = immediate; `BUSY`, `NO_ANSWER`, `BUSY_NO_ANSWER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_type: Option<String>,
    /// `destinations`: exactly one means a forward.
    #[serde(default)]
    pub destinations: Vec<Destination>,
}

/// An overflow route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OverflowRoute {
    /// `overflowType`: `BUSY`, `NO_ANSWER`, `BUSY_NO_ANSWER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow_type: Option<String>,
    /// `destinations`.
    #[serde(default)]
    pub destinations: Vec<Destination>,
}

/// `dndState`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct DndState {
    /// `activate`.
    #[serde(default)]
    pub activate: bool,
}

/// `RoutingState`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingState {
    /// `presentationRoutes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub presentation_routes: Vec<PresentationRoute>,
    /// `forwardRoutes` (only `[0]` counts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_routes: Vec<ForwardRoute>,
    /// `overflowRoutes` (only `[0]` counts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overflow_routes: Vec<OverflowRoute>,
    /// `dndState` (absent = off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dnd_state: Option<DndState>,
}

/// `OnRoutingStateChanged` (also the answer to a routing snapshot request).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingStateChanged {
    /// `loginName`.
    pub login_name: String,
    /// `routingState`.
    pub routing_state: RoutingState,
}

/// `eventSummary` counters (absent = unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSummary {
    /// `missedCallsNb`.
    #[serde(default)]
    pub missed_calls_nb: Option<u32>,
    /// `voiceMessagesNb`.
    #[serde(default)]
    pub voice_messages_nb: Option<u32>,
    /// `callBackRequestsNb`.
    #[serde(default)]
    pub call_back_requests_nb: Option<u32>,
}

/// `OnEventSummaryUpdated`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSummaryUpdated {
    /// `loginName`.
    pub login_name: String,
    /// `eventSummary`.
    #[serde(default)]
    pub event_summary: EventSummary,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `OnChannelInformation`: the channel is established (first event), or a heartbeat
    /// (`text == "keepalive"`).
    ChannelInformation {
        /// `text`.
        text: Option<String>,
    },
    /// `OnCallCreated`.
    CallCreated(CallCreated),
    /// `OnCallModified`.
    CallModified(CallModified),
    /// `OnCallRemoved`.
    CallRemoved(CallRemoved),
    /// `OnUserStateModified`.
    UserStateModified(UserStateModified),
    /// `OnDeviceStateModified`.
    DeviceStateModified(DeviceStateModified),
    /// `OnTelephonyState`.
    TelephonyState(TelephonyState),
    /// `OnRoutingStateChanged`.
    RoutingStateChanged(RoutingStateChanged),
    /// `OnEventSummaryUpdated`.
    EventSummaryUpdated(EventSummaryUpdated),
    /// Any other event (hunting groups, maintenance, comlog…): named, otherwise ignored.
    Other {
        /// `eventName` (bounded).
        name: String,
        /// `loginName`, if any (bounded).
        login_name: Option<String>,
    },
}

impl Event {
    /// True for a heartbeat.
    pub fn is_heartbeat(&self) -> bool {
        matches!(self, Event::ChannelInformation { text: Some(t) } if t.trim() == HEARTBEAT_TEXT)
    }

    /// The user the event is about.
    pub fn login_name(&self) -> Option<&str> {
        Some(match self {
            Event::ChannelInformation { .. } => return None,
            Event::CallCreated(e) => &e.login_name,
            Event::CallModified(e) => &e.login_name,
            Event::CallRemoved(e) => &e.login_name,
            Event::UserStateModified(e) => &e.login_name,
            Event::DeviceStateModified(e) => &e.login_name,
            Event::TelephonyState(e) => &e.login_name,
            Event::RoutingStateChanged(e) => &e.login_name,
            Event::EventSummaryUpdated(e) => &e.login_name,
            Event::Other { login_name, .. } => return login_name.as_deref(),
        })
    }

    /// The `eventName`.
    pub fn name(&self) -> &str {
        match self {
            Event::ChannelInformation { .. } => "OnChannelInformation",
            Event::CallCreated(_) => "OnCallCreated",
            Event::CallModified(_) => "OnCallModified",
            Event::CallRemoved(_) => "OnCallRemoved",
            Event::UserStateModified(_) => "OnUserStateModified",
            Event::DeviceStateModified(_) => "OnDeviceStateModified",
            Event::TelephonyState(_) => "OnTelephonyState",
            Event::RoutingStateChanged(_) => "OnRoutingStateChanged",
            Event::EventSummaryUpdated(_) => "OnEventSummaryUpdated",
            Event::Other { name, .. } => name,
        }
    }
}

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ParseError> {
    serde_json::from_value(v).map_err(json_err)
}

/// Parses one event (one line of the stream, or one webhook body).
pub fn parse_event(bytes: &[u8]) -> Result<Event, ParseError> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(ParseError::TooLong);
    }
    let v: Value = serde_json::from_slice(trim_ascii(bytes)).map_err(json_err)?;
    if !v.is_object() {
        return Err(ParseError::Json("an event is a JSON object".into()));
    }
    let name = v
        .get("eventName")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(ParseError::Missing("eventName"))?;
    let login_present = v.get("loginName").and_then(Value::as_str).is_some_and(|s| !s.trim().is_empty());
    let needs_login = name != "OnChannelInformation" && KNOWN.contains(&name);
    if needs_login && !login_present {
        return Err(ParseError::Missing("loginName"));
    }
    let ev = match name {
        "OnChannelInformation" => Event::ChannelInformation {
            text: v.get("text").and_then(Value::as_str).map(|t| crate_truncate(t, 256).to_string()),
        },
        "OnCallCreated" => Event::CallCreated(typed(v)?),
        "OnCallModified" => Event::CallModified(typed(v)?),
        "OnCallRemoved" => Event::CallRemoved(typed(v)?),
        "OnUserStateModified" => Event::UserStateModified(typed(v)?),
        "OnDeviceStateModified" => Event::DeviceStateModified(typed(v)?),
        "OnTelephonyState" => Event::TelephonyState(typed(v)?),
        "OnRoutingStateChanged" => Event::RoutingStateChanged(typed(v)?),
        "OnEventSummaryUpdated" => Event::EventSummaryUpdated(typed(v)?),
        other => Event::Other {
            name: crate_truncate(other, 64).to_string(),
            login_name: v.get("loginName").and_then(Value::as_str).map(bounded),
        },
    };
    Ok(ev)
}

const KNOWN: [&str; 9] = [
    "OnChannelInformation",
    "OnCallCreated",
    "OnCallModified",
    "OnCallRemoved",
    "OnUserStateModified",
    "OnDeviceStateModified",
    "OnTelephonyState",
    "OnRoutingStateChanged",
    "OnEventSummaryUpdated",
];

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

// ---------------------------------------------------------------------------------------------
// The chunked stream.

/// What the splitter found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// One non-empty line (trimmed, without its newline).
    Event(Vec<u8>),
    /// A line longer than the bound: dropped (up to its newline).
    TooLong,
}

/// Splits the chunked event stream into lines: one JSON event per line. HTTP chunk
/// boundaries may fall anywhere (inside an event, inside a UTF-8 sequence, between `\r` and
/// `\n`); empty lines are skipped; a line longer than `max` is dropped and reported once.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    skipping: bool,
}

impl LineSplitter {
    /// A splitter that keeps lines up to `max` bytes.
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter { buf: Vec::new(), max: max.max(1), skipping: false }
    }

    /// Feeds a chunk; complete lines go to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<Line>) {
        while !chunk.is_empty() {
            let nl = chunk.iter().position(|b| *b == b'\n');
            let (part, rest) = match nl {
                Some(i) => (&chunk[..i], Some(&chunk[i + 1..])),
                None => (chunk, None),
            };
            if !self.skipping {
                if self.buf.len() + part.len() > self.max {
                    self.buf.clear();
                    self.skipping = true;
                    out.push(Line::TooLong);
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            match rest {
                Some(r) => {
                    if !self.skipping {
                        self.emit(out);
                    }
                    self.skipping = false;
                    chunk = r;
                }
                None => break,
            }
        }
    }

    /// The end of the stream: a last line without a newline is still an event (as the Node
    /// SDK parses its trailing buffer).
    pub fn finish(&mut self, out: &mut Vec<Line>) {
        if !self.skipping {
            self.emit(out);
        }
        self.buf.clear();
        self.skipping = false;
    }

    /// Bytes held for an unfinished line.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    fn emit(&mut self, out: &mut Vec<Line>) {
        let line = trim_ascii(&self.buf);
        if !line.is_empty() {
            out.push(Line::Event(line.to_vec()));
        }
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::{Mutator, Xorshift};

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../fixtures/o2g/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn discovery_picks_version_1_0() {
        let d = parse_discovery(&fixture("discovery.json")).unwrap();
        assert_eq!(d.internal_url.as_deref(), Some("https://server/api/rest/authenticate?version=1.0"));
        assert_eq!(d.public_url.as_deref(), Some("https://public-server/api/rest/authenticate?version=1.0"));
        assert_eq!(d.product.as_deref(), Some("O2G Solution 2.6"));
        // Without id 1.0, the CURRENT one.
        let v = br#"{"versions":[{"id":"0.9","status":"OLD","publicUrl":"a"},{"id":"2.0","status":"CURRENT","internalUrl":"b"}]}"#;
        assert_eq!(parse_discovery(v).unwrap().internal_url.as_deref(), Some("b"));
        assert!(parse_discovery(br#"{"versions":[]}"#).is_err());
        assert!(parse_discovery(b"<html>").is_err());
    }

    #[test]
    fn authenticate_and_cookie() {
        let a = parse_authenticate(&fixture("authenticate.json")).unwrap();
        assert_eq!(a.credential, "5B9F6E2AC1D04E1B");
        assert_eq!(a.internal_url.as_deref(), Some("https://server/api/rest/1.0/sessions"));
        assert_eq!(cookie_header(&a.credential), "AlcUserId=5B9F6E2AC1D04E1B");
        assert_eq!(credential_from_set_cookie("AlcUserId=abc; Path=/; HttpOnly"), Some("abc"));
        assert_eq!(credential_from_set_cookie("Other=abc"), None);
        assert!(parse_authenticate(br#"{"credential":"","publicUrl":"x"}"#).is_err());
        assert!(parse_authenticate(br#"{"credential":"c"}"#).is_err());
    }

    #[test]
    fn session_services_and_ttl() {
        let s = parse_session(&fixture("session.json")).unwrap();
        assert!(s.admin);
        assert_eq!(s.ttl_secs(), 300);
        assert_eq!(s.service_url("subscriptions", false).as_deref(), Some("https://server/api/rest/1.0/subscriptions"));
        assert_eq!(s.service_url("TELEPHONY", false).as_deref(), Some("https://server/api/rest/1.0/telephony"));
        assert_eq!(s.service_url("routing", true).as_deref(), Some("https://public-server/api/rest/1.0/routing"));
        assert_eq!(s.service_url("comlog", false), None);
        let no_ttl = parse_session(br#"{"privateBaseUrl":"http://h/api/rest/1.0","services":[]}"#).unwrap();
        assert_eq!(no_ttl.ttl_secs(), DEFAULT_TTL_SECS);
        assert!(parse_session(br#"{"services":[]}"#).is_err());
        assert_eq!(session_request("presence-hub"), r#"{"applicationName":"presence-hub"}"#);
    }

    #[test]
    fn subscription_request_and_answer() {
        let ids = vec!["oxe1001".to_string(), "oxe1002".to_string()];
        let body =
            subscription_request(&ids, &[PACKAGE_TELEPHONY, PACKAGE_ROUTING], &Delivery::Chunk { timeout_min: 60 });
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            json!({"filter":{"selectors":[{"ids":["oxe1001","oxe1002"],"names":["telephony"]},
                                          {"ids":["oxe1001","oxe1002"],"names":["routingManagement"]}]},
                   "version":"1.0","timeout":60})
        );
        let hook = subscription_request(
            &ids,
            &[PACKAGE_TELEPHONY],
            &Delivery::Webhook { url: "https://hub/hooks/o2g/events/k".into() },
        );
        let v: Value = serde_json::from_str(&hook).unwrap();
        assert_eq!(v["webHookUrl"], "https://hub/hooks/o2g/events/k");
        assert!(v.get("timeout").is_none());

        let s = parse_subscription(&fixture("subscription_accepted.json")).unwrap();
        assert!(s.subscription_id.starts_with("eyJhbGciOiJIUzI1NiJ9"));
        assert_eq!(s.polling_url(false), s.private_polling_url.as_deref());
        assert!(s.polling_url(true).unwrap().contains(":8014/OTEvents?subscriptionId="));
        assert_eq!(
            parse_subscription(br#"{"subscriptionId":"x","status":"REFUSED","message":"no licence"}"#),
            Err(ParseError::Refused("no licence".into()))
        );
        assert_eq!(
            snapshot_url("http://h/api/rest/1.0/telephony/", "oxe 1&2"),
            "http://h/api/rest/1.0/telephony/state/snapshot?loginName=oxe%201%262"
        );
    }

    #[test]
    fn every_event_kind_parses_from_its_fixture() {
        match parse_event(&fixture("on_channel_information.json")).unwrap() {
            Event::ChannelInformation { text } => assert_eq!(text.as_deref(), Some("Channel established")),
            e => panic!("{e:?}"),
        }
        let hb = parse_event(&fixture("on_channel_information_keepalive.json")).unwrap();
        assert!(hb.is_heartbeat());

        let Event::CallCreated(c) = parse_event(&fixture("on_call_created.json")).unwrap() else { panic!() };
        assert_eq!((c.login_name.as_str(), c.call_ref.as_str()), ("2624", "3b1f0a2c"));
        assert_eq!(c.legs[0].state, MediaState::RingingIncoming);
        assert_eq!(c.call_data.as_ref().and_then(|d| d.state.clone()), Some(MediaState::RingingIncoming));
        assert_eq!(
            c.participants[0].identity.as_ref().and_then(|i| i.id.as_ref()).and_then(|i| i.phone_number.as_deref()),
            Some("+46855512345")
        );
        assert_eq!(c.initiator.as_deref(), Some("p1"));

        let Event::CallModified(m) = parse_event(&fixture("on_call_modified.json")).unwrap() else { panic!() };
        assert_eq!(m.modified_legs[0].state, MediaState::Active);
        assert_eq!(m.removed_legs.len(), 1);
        assert_eq!(m.removed_participant_ids, vec!["p2".to_string()]);
        // The Node spelling of the removed fields.
        let Event::CallModified(n) = parse_event(&fixture("on_call_modified_node_spelling.json")).unwrap() else {
            panic!()
        };
        assert_eq!(n.removed_legs.len(), 1);
        assert_eq!(n.removed_participant_ids, vec!["p9".to_string()]);
        assert_eq!(n.previous_call_ref.as_deref(), Some("1111"));
        assert_eq!(n.modified_legs[0].state, MediaState::Held);

        let Event::CallRemoved(r) = parse_event(&fixture("on_call_removed.json")).unwrap() else { panic!() };
        assert_eq!((r.cause.as_deref(), r.new_destination.as_deref()), (Some("FORWARDED"), Some("91234567")));

        let Event::UserStateModified(u) = parse_event(&fixture("on_user_state_modified.json")).unwrap() else {
            panic!()
        };
        assert_eq!(u.state, UserState::Busy);

        let Event::DeviceStateModified(d) = parse_event(&fixture("on_device_state_modified.json")).unwrap() else {
            panic!()
        };
        assert_eq!(d.device_states[0].state, OperationalState::OutOfService);

        let Event::TelephonyState(t) = parse_event(&fixture("on_telephony_state.json")).unwrap() else { panic!() };
        let st = t.state.unwrap();
        assert_eq!(st.calls.len(), 2);
        assert_eq!(st.calls[1].legs[0].state, MediaState::Held);
        assert_eq!(st.user_state, Some(UserState::Busy));

        let Event::RoutingStateChanged(rs) = parse_event(&fixture("on_routing_state_changed.json")).unwrap() else {
            panic!()
        };
        assert_eq!(rs.routing_state.forward_routes[0].forward_type.as_deref(), Some("BUSY_NO_ANSWER"));
        assert_eq!(rs.routing_state.overflow_routes[0].destinations[0].kind, "VOICEMAIL");
        assert_eq!(rs.routing_state.dnd_state, Some(DndState { activate: false }));
        assert_eq!(rs.routing_state.presentation_routes[0].destinations[0].kind, "MOBILE");

        let Event::EventSummaryUpdated(es) = parse_event(&fixture("on_event_summary_updated.json")).unwrap() else {
            panic!()
        };
        assert_eq!(es.event_summary.missed_calls_nb, Some(3));

        match parse_event(&fixture("on_dynamic_state_changed.json")).unwrap() {
            Event::Other { name, login_name } => {
                assert_eq!((name.as_str(), login_name.as_deref()), ("OnDynamicStateChanged", Some("2624")))
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn unknown_enum_values_are_kept_and_bad_events_refused() {
        let e = parse_event(br#"{"eventName":"OnCallCreated","loginName":"1","callRef":"c","cause":"CAMP_ON","legs":[{"deviceId":"1","state":"WHISPERING"}]}"#).unwrap();
        let Event::CallCreated(c) = e else { panic!() };
        assert_eq!(c.legs[0].state, MediaState::Other("WHISPERING".into()));
        assert_eq!(c.cause.as_deref(), Some("CAMP_ON"));
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"eventName":""}"#,
            br#"{"eventName":"OnCallCreated","callRef":"c"}"#,
            br#"{"eventName":"OnCallCreated","loginName":"1"}"#,
            br#"{"eventName":"OnUserStateModified","loginName":"1","state":7}"#,
            br#"{"eventName":"OnCallModified","loginName":"1","callRef":"c","modifiedLegs":"x"}"#,
        ] {
            assert!(parse_event(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_event(&vec![b' '; MAX_EVENT_BYTES + 1]), Err(ParseError::TooLong));
    }

    #[test]
    fn splitter_handles_boundaries_crlf_and_overlong_lines() {
        let mut s = LineSplitter::new(16);
        let mut out = Vec::new();
        s.push(b"{\"a\":1}\r\n\n  \n{\"b\"", &mut out);
        s.push(b":2}\n", &mut out);
        s.push(b"0123456789abcdefXYZ", &mut out);
        s.push(b"more\n{\"c\":3}", &mut out);
        s.finish(&mut out);
        assert_eq!(
            out,
            vec![
                Line::Event(b"{\"a\":1}".to_vec()),
                Line::Event(b"{\"b\":2}".to_vec()),
                Line::TooLong,
                Line::Event(b"{\"c\":3}".to_vec())
            ]
        );
        assert_eq!(s.pending(), 0);
    }

    const FIXTURES: [&str; 17] = [
        "discovery.json",
        "authenticate.json",
        "session.json",
        "subscription_accepted.json",
        "on_channel_information.json",
        "on_channel_information_keepalive.json",
        "on_call_created.json",
        "on_call_modified.json",
        "on_call_modified_node_spelling.json",
        "on_call_removed.json",
        "on_user_state_modified.json",
        "on_device_state_modified.json",
        "on_telephony_state.json",
        "on_routing_state_changed.json",
        "on_event_summary_updated.json",
        "on_dynamic_state_changed.json",
        "stream.ndjson",
    ];

    #[test]
    fn mutated_documents_and_streams_never_panic() {
        let seeds: Vec<Vec<u8>> = FIXTURES.iter().map(|f| fixture(f)).collect();
        let tokens: &[&[u8]] = &[
            b"\n",
            b"\r\n",
            b"null",
            b"[",
            b"]}",
            b"{\"eventName\":\"OnCallModified\",",
            b"\"state\":\"HELD\"",
            b"\"legs\":[{}]",
            b"\xff\xfe",
            b"\"removedLeg\":[",
            b"1e999",
            b"\"loginName\":\"",
            b"\\u0000",
        ];
        let m = Mutator::new(tokens, &[]);
        let mut rng = Xorshift::new(0x5eed_0a2f);
        let mut parsed = 0usize;
        for i in 0..6000 {
            let v = m.mutate(&seeds[i % seeds.len()], &mut rng);
            let _ = parse_discovery(&v);
            let _ = parse_authenticate(&v);
            let _ = parse_session(&v).map(|s| (s.ttl_secs(), s.service_url("telephony", false)));
            let _ = parse_subscription(&v).map(|s| s.polling_url(true).map(str::len));
            if let Ok(e) = parse_event(&v) {
                parsed += 1;
                let _ = (e.name().len(), e.login_name(), e.is_heartbeat());
            }
            // The same bytes as a stream, cut at random boundaries: the splitter gives the
            // same lines whatever the cuts.
            let mut whole = LineSplitter::new(1024);
            let mut expect = Vec::new();
            whole.push(&v, &mut expect);
            whole.finish(&mut expect);
            let mut cut = LineSplitter::new(1024);
            let mut got = Vec::new();
            let mut rest = &v[..];
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len().min(97));
                cut.push(&rest[..n], &mut got);
                rest = &rest[n..];
            }
            cut.finish(&mut got);
            assert_eq!(got, expect, "seed {i}");
            for l in got {
                if let Line::Event(b) = l {
                    let _ = parse_event(&b);
                }
            }
        }
        assert!(parsed > 300, "only {parsed} mutants parsed: the mutations are too destructive to reach deep paths");
    }
}
