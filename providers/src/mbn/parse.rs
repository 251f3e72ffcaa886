//! Telenor MBN wire shapes: pure parsers and request builders. No I/O, no clock, never panics.
//!
//! # OUR ASSUMPTION — not Telenor's published format
//!
//! Telenor publishes only the *flow* of the "MBN Partner Status Push API" (developer.telenor.no):
//! authenticate as a company machine user ("API User") with the OAuth2 password grant at
//! `https://api.telenor.no/oauth/v2/token` (client id and secret as HTTP Basic), then fetch
//! `catalog/userInfo`, obtain a token at `status/token`, log in to the CSTA interface at
//! `/csta/authentication/token` and start an *enterprise monitor* of all users and devices. The
//! data is "absence (meetings, illness, holiday, …)" and "device status (available, busy,
//! offline)". The detailed specification is given to partners on request.
//!
//! Everything else in this module is **invented by us "as publicly described"** and is kept
//! here, in one place, so that the real specification can replace it without touching the
//! runtime: every JSON field name and enum spelling, the header names that carry the status and
//! CSTA tokens, the paths below the three documented step names (monitor start, refresh,
//! delete, events, status list), the event transport (HTTP long polling with a cursor — chosen
//! because a "Telenor long polling interface" is the one public hint at Telenor's event
//! delivery), the error body, and the MBN absence type spellings. The paths are configurable
//! (`[providers.paths]`), the rest is code in this file. The shapes in short:
//!
//! - token: the standard password grant (RFC 6749 §4.3/§5.1), built and read by the providers'
//!   toolkit ([`crate::common::oauth::password_form`], [`crate::common::oauth::request_token`]);
//!   here only the check that a token can travel in a header ([`header_token`]);
//! - userInfo: `{userId, companyId, name, msisdn}`; status token: `{token, expiresIn}`;
//!   CSTA login: body `{statusToken}` → `{cstaToken, expiresIn}`;
//! - monitor: `POST {type: "ENTERPRISE", companyId, expiresIn}` → `{monitorId, expiresIn}`;
//!   refresh `PUT {expiresIn}`; `DELETE`;
//! - events: `GET …/events?timeout=S&cursor=C` → `200 {cursor, events: [...]}` or `204` when
//!   the wait ran out; `404`/`410` when the monitor or the cursor is gone;
//! - event: `{eventId, eventType, userId, msisdn, timestamp, …}` with `eventType` one of
//!   `deviceStatus` (`status`: `AVAILABLE|BUSY|OFFLINE`), the CSTA-named call events
//!   `delivered` (ringing), `established`, `held`, `retrieved`, `connectionCleared` (with
//!   `callId`), `absence` (`absence: {id, type, from, to, message}`) and `absenceRemoved`
//!   (`absenceId`);
//! - status list: `GET …/status/users?page=P` → `{users: [{userId, msisdn, name, status,
//!   updated, absences: [...]}], nextPage}`;
//! - errors: `{code, message}` with Telenor's documented gateway codes (`40106` = access token
//!   expired), read by the toolkit ([`crate::common::http::error_text`]);
//! - status calls carry `X-MBN-Status-Token`, CSTA calls `X-MBN-CSTA-Token`, all calls the
//!   bearer token.
//!
//! Bodies are decoded through the toolkit ([`crate::common::json`]: a body over [`MAX_BODY`] is
//! refused before it is parsed, and its [`ParseError`]); queries and path segments are encoded
//! by [`crate::common::form`].

use serde_json::{Map, Value};

use crate::common::{form, json};
use presence_actors::model::activity::truncate;
use presence_actors::model::{parse_rfc3339, UnixMs};

pub use crate::common::json::ParseError;

/// The documented token endpoint (developer.telenor.no/oauth).
pub const DEFAULT_TOKEN_URL: &str = "https://api.telenor.no/oauth/v2/token";
/// `catalog/userInfo` (documented step name).
pub const PATH_USER_INFO: &str = "/catalog/userInfo";
/// `status/token` (documented step name).
pub const PATH_STATUS_TOKEN: &str = "/status/token";
/// `/csta/authentication/token` (documented step name).
pub const PATH_CSTA_TOKEN: &str = "/csta/authentication/token";
/// Enterprise monitor start (assumed).
pub const PATH_MONITOR_START: &str = "/csta/monitor/enterprise";
/// One monitor: refresh (`PUT`) and stop (`DELETE`) (assumed). `{id}` is the monitor id.
pub const PATH_MONITOR: &str = "/csta/monitor/{id}";
/// The monitor's long-poll event queue (assumed). `{id}` is the monitor id.
pub const PATH_EVENTS: &str = "/csta/monitor/{id}/events";
/// Current status of every user, paged (assumed).
pub const PATH_STATUS_LIST: &str = "/status/users";

/// Header carrying the status token on Status interface calls (assumed).
pub const HEADER_STATUS_TOKEN: &str = "x-mbn-status-token";
/// Header carrying the CSTA token on CSTA interface calls (assumed).
pub const HEADER_CSTA_TOKEN: &str = "x-mbn-csta-token";

/// MBN absence types (our spellings, lowercased) → the hub's default absence reason codes.
/// `illness` → `sick`, `holiday` → `vacation`… A config's `absence_reasons` entries override
/// these; a type not listed maps to `other`.
pub const DEFAULT_ABSENCE_REASONS: &[(&str, &str)] = &[
    ("meeting", "meeting"),
    ("illness", "sick"),
    ("sick", "sick"),
    ("holiday", "vacation"),
    ("vacation", "vacation"),
    ("lunch", "lunch"),
    ("course", "course"),
    ("training", "course"),
    ("travel", "business_trip"),
    ("business_trip", "business_trip"),
    ("parental_leave", "parental_leave"),
    ("off_work", "gone_for_the_day"),
    ("gone_for_the_day", "gone_for_the_day"),
    ("busy", "busy"),
    ("back_soon", "back_soon"),
    ("working_elsewhere", "working_elsewhere"),
    ("other", "other"),
];

/// Largest body any call reads and any parser here accepts, in bytes.
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Most events in one long-poll answer.
pub const MAX_EVENTS: usize = 10_000;
/// Most users in one status list page.
pub const MAX_USERS: usize = 20_000;
/// Most absences kept per user.
pub const MAX_ABSENCES: usize = 64;
/// Longest id (user, company, monitor, call, absence, cursor) accepted, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 8192;
/// Longest phone number accepted, in bytes.
pub const MAX_NUMBER_LEN: usize = 40;
/// Longest absence text kept, in bytes (a note is bounded to 500 anyway).
pub const MAX_TEXT: usize = 500;
/// Longest absence type kept, in bytes.
pub const MAX_KIND_LEN: usize = 32;

/// Stands in for a missing list.
static EMPTY: Vec<Value> = Vec::new();

// ---------------------------------------------------------------------------------------------
// The login steps after the token

/// A token as it will be sent in a header: trimmed, non-empty, at most [`MAX_TOKEN_LEN`] bytes
/// of printable ASCII; `field` names it in the error.
pub fn header_token(field: &'static str, token: &str) -> Result<String, ParseError> {
    let t = token.trim();
    if t.is_empty() {
        return Err(ParseError::Missing(field));
    }
    if t.len() > MAX_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(field, "too long or not printable ASCII"));
    }
    Ok(t.to_string())
}

/// The answer of `catalog/userInfo`: who the API user is, and its company.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// `userId`.
    pub user_id: Option<String>,
    /// `companyId`: the enterprise the monitor covers.
    pub company_id: Option<String>,
    /// `name`.
    pub name: Option<String>,
}

/// Parses `catalog/userInfo`.
pub fn parse_user_info(body: &[u8]) -> Result<UserInfo, ParseError> {
    let v = from_json(body)?;
    let o = object(&v)?;
    Ok(UserInfo { user_id: id(o, "userId"), company_id: id(o, "companyId"), name: short(o, "name", MAX_TEXT) })
}

/// A session token (status or CSTA) and its lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionToken {
    /// The token.
    pub token: String,
    /// Lifetime in seconds, if given.
    pub expires_in: Option<u64>,
}

/// Parses the answer of `status/token` (`{token, expiresIn}`).
pub fn parse_status_token(body: &[u8]) -> Result<SessionToken, ParseError> {
    session_token(body, "token")
}

/// The body of the CSTA login (`/csta/authentication/token`): the status token.
pub fn csta_login_body(status_token: &str) -> String {
    serde_json::json!({ "statusToken": status_token }).to_string()
}

/// Parses the answer of the CSTA login (`{cstaToken, expiresIn}`).
pub fn parse_csta_token(body: &[u8]) -> Result<SessionToken, ParseError> {
    session_token(body, "cstaToken")
}

/// `{<field>, expiresIn}`: the token in `field` and its lifetime.
fn session_token(body: &[u8], field: &'static str) -> Result<SessionToken, ParseError> {
    let v = from_json(body)?;
    let o = object(&v)?;
    let token = header_token(field, o.get(field).and_then(Value::as_str).unwrap_or_default())?;
    Ok(SessionToken { token, expires_in: seconds(o, "expiresIn")? })
}

// ---------------------------------------------------------------------------------------------
// The enterprise monitor

/// The body that starts an enterprise monitor of every user and device of the company.
pub fn monitor_start_body(company_id: Option<&str>, expires_secs: u64) -> String {
    let mut o = Map::new();
    o.insert("type".into(), "ENTERPRISE".into());
    if let Some(c) = company_id {
        o.insert("companyId".into(), c.into());
    }
    o.insert("expiresIn".into(), expires_secs.into());
    Value::Object(o).to_string()
}

/// The body that keeps a monitor alive for another `expires_secs`.
pub fn monitor_refresh_body(expires_secs: u64) -> String {
    serde_json::json!({ "expiresIn": expires_secs }).to_string()
}

/// A started or refreshed monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    /// `monitorId`.
    pub id: String,
    /// `expiresIn`, seconds.
    pub expires_in: Option<u64>,
}

/// Parses a monitor start or refresh answer.
pub fn parse_monitor(body: &[u8]) -> Result<Monitor, ParseError> {
    let v = from_json(body)?;
    let o = object(&v)?;
    let id = id(o, "monitorId").ok_or(ParseError::Missing("monitorId"))?;
    Ok(Monitor { id, expires_in: seconds(o, "expiresIn")? })
}

/// A path template with `{id}` replaced by the percent-encoded `id`.
pub fn path_with_id(template: &str, id: &str) -> String {
    template.replace("{id}", &form::encode_component(id))
}

/// The query string of an event poll: wait up to `wait_secs`, from `cursor` (none: from the
/// monitor's start).
pub fn events_query(wait_secs: u64, cursor: Option<&str>) -> String {
    let wait = wait_secs.to_string();
    let mut pairs = vec![("timeout", wait.as_str())];
    if let Some(c) = cursor {
        pairs.push(("cursor", c));
    }
    form::encode(&pairs)
}

/// The query string of a status list page (none: the first page).
pub fn status_list_query(page: Option<&str>) -> String {
    page.map(|p| form::encode(&[("page", p)])).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Events

/// A device's status, as MBN reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceStatus {
    /// `AVAILABLE`.
    Available,
    /// `BUSY` (busy on the phone).
    Busy,
    /// `OFFLINE` (switched off, out of coverage).
    Offline,
    /// A value we do not know (kept, bounded, for the log); no opinion.
    Other(String),
}

impl DeviceStatus {
    /// Parses a status word, case-insensitively.
    pub fn parse(s: &str) -> DeviceStatus {
        let t = s.trim();
        if t.eq_ignore_ascii_case("available") || t.eq_ignore_ascii_case("free") {
            DeviceStatus::Available
        } else if t.eq_ignore_ascii_case("busy") {
            DeviceStatus::Busy
        } else if t.eq_ignore_ascii_case("offline") {
            DeviceStatus::Offline
        } else {
            DeviceStatus::Other(truncate(t, 32).to_string())
        }
    }
}

/// What a call event says about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// `delivered`: ringing on the device.
    Ringing,
    /// `established`, `held`, `retrieved`: the call is up.
    Connected,
    /// `connectionCleared`: the call is over.
    Cleared,
}

/// An absence of a user (meeting, illness, holiday…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Absence {
    /// `id`: unique within the enterprise.
    pub id: String,
    /// `type`, lowercased, `-` and spaces as `_` (`illness`, `holiday`…); see [`absence_kind`].
    pub kind: String,
    /// `from`; `None`: already started.
    pub from: Option<UnixMs>,
    /// `to`; `None`: until further notice.
    pub to: Option<UnixMs>,
    /// `message`: the free text.
    pub text: Option<String>,
}

/// Who an event or status is about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Party {
    /// `userId`.
    pub user_id: Option<String>,
    /// `msisdn`: the device's number (E.164 expected, any form accepted).
    pub msisdn: Option<String>,
}

/// What an event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// `deviceStatus`.
    DeviceStatus(DeviceStatus),
    /// A CSTA call event.
    Call {
        /// `callId`.
        call_id: String,
        /// What happened to it.
        state: CallState,
    },
    /// `absence`: an absence was set or changed.
    Absence(Absence),
    /// `absenceRemoved`.
    AbsenceRemoved {
        /// `absenceId`.
        absence_id: String,
    },
    /// An `eventType` we do not know (bounded): ignored.
    Other(String),
}

/// One event of the monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `eventId`, if any.
    pub id: Option<String>,
    /// Who.
    pub party: Party,
    /// `timestamp`, if given and readable.
    pub at: Option<UnixMs>,
    /// What.
    pub kind: EventKind,
}

/// One long-poll answer: the cursor to continue from and the events, each parsed on its own so
/// one malformed event does not lose the others.
#[derive(Debug, Clone, PartialEq)]
pub struct EventBatch {
    /// `cursor`; `None`: keep the previous one.
    pub cursor: Option<String>,
    /// The events in order.
    pub events: Vec<Result<Event, ParseError>>,
}

/// Parses a long-poll answer: `{cursor, events: [...]}`, a bare array of events, or an empty
/// body (nothing happened).
pub fn parse_events(body: &[u8]) -> Result<EventBatch, ParseError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(EventBatch { cursor: None, events: Vec::new() });
    }
    let v = from_json(body)?;
    let (cursor, list) = match &v {
        Value::Array(a) => (None, a),
        Value::Object(o) => {
            let cursor = match o.get("cursor") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(bounded_id(s, "cursor")?),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(_) => return Err(invalid("cursor", "not a string")),
            };
            match o.get("events") {
                None | Some(Value::Null) => (cursor, &EMPTY),
                Some(Value::Array(a)) => (cursor, a),
                Some(_) => return Err(ParseError::Shape("events is not an array".into())),
            }
        }
        _ => return Err(ParseError::Shape("expected an object or an array".into())),
    };
    if list.len() > MAX_EVENTS {
        return Err(ParseError::TooMany { what: "events", n: list.len(), max: MAX_EVENTS });
    }
    Ok(EventBatch { cursor, events: list.iter().map(event).collect() })
}

/// Parses one event object.
pub fn event(v: &Value) -> Result<Event, ParseError> {
    let o = object(v)?;
    let kind_word = o.get("eventType").and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let kind_word = kind_word.ok_or(ParseError::Missing("eventType"))?;
    let party = party(o)?;
    let at = time_field(o, "timestamp").ok().flatten();
    let kind = match kind_word.to_ascii_lowercase().as_str() {
        "devicestatus" => {
            let s = o.get("status").and_then(Value::as_str).filter(|s| !s.trim().is_empty());
            EventKind::DeviceStatus(DeviceStatus::parse(s.ok_or(ParseError::Missing("status"))?))
        }
        w @ ("delivered" | "established" | "held" | "retrieved" | "connectioncleared") => {
            let call_id = id(o, "callId").ok_or(ParseError::Missing("callId"))?;
            let state = match w {
                "delivered" => CallState::Ringing,
                "connectioncleared" => CallState::Cleared,
                _ => CallState::Connected,
            };
            EventKind::Call { call_id, state }
        }
        "absence" => {
            let a = o.get("absence").ok_or(ParseError::Missing("absence"))?;
            EventKind::Absence(absence(a)?)
        }
        "absenceremoved" => {
            EventKind::AbsenceRemoved { absence_id: id(o, "absenceId").ok_or(ParseError::Missing("absenceId"))? }
        }
        _ => EventKind::Other(truncate(kind_word, 40).to_string()),
    };
    Ok(Event { id: id(o, "eventId"), party, at, kind })
}

fn party(o: &Map<String, Value>) -> Result<Party, ParseError> {
    let msisdn = match o.get("msisdn") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(number(s)?),
        Some(Value::Number(n)) => Some(number(&n.to_string())?),
        Some(_) => return Err(invalid("msisdn", "not a string")),
    };
    let p = Party { user_id: id(o, "userId"), msisdn };
    if p.user_id.is_none() && p.msisdn.is_none() {
        return Err(ParseError::Missing("msisdn"));
    }
    Ok(p)
}

fn number(s: &str) -> Result<String, ParseError> {
    let t = s.trim();
    if t.len() > MAX_NUMBER_LEN {
        return Err(invalid("msisdn", "too long"));
    }
    let ok = t.bytes().any(|b| b.is_ascii_digit())
        && t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b' ' | b'(' | b')' | b'.'));
    if !ok {
        return Err(invalid("msisdn", &format!("{:?} is not a phone number", truncate(t, 24))));
    }
    Ok(t.to_string())
}

/// Parses one absence object (`{id, type, from, to, message}`).
pub fn absence(v: &Value) -> Result<Absence, ParseError> {
    let o = object(v)?;
    let id = id(o, "id").ok_or(ParseError::Missing("absence.id"))?;
    let kind = o.get("type").and_then(Value::as_str).ok_or(ParseError::Missing("absence.type"))?;
    let kind = absence_kind(kind).ok_or_else(|| invalid("absence.type", "empty or too long"))?;
    let from = time_field(o, "from")?;
    let to = time_field(o, "to")?;
    if let (Some(f), Some(t)) = (from, to) {
        if t < f {
            return Err(invalid("absence.to", "before from"));
        }
    }
    let text = o
        .get("message")
        .and_then(Value::as_str)
        .map(|m| one_line(truncate(m, MAX_TEXT * 4)))
        .map(|m| truncate(&m, MAX_TEXT).to_string())
        .filter(|m| !m.is_empty());
    Ok(Absence { id, kind, from, to, text })
}

/// An absence type as a lookup key: trimmed, lowercased, `-` and spaces as `_`; `None` when
/// empty, longer than [`MAX_KIND_LEN`] or not made of letters, digits and `_`.
pub fn absence_kind(s: &str) -> Option<String> {
    let t = s.trim();
    if t.is_empty() || t.len() > MAX_KIND_LEN {
        return None;
    }
    let k: String = t.chars().map(|c| if c == '-' || c == ' ' { '_' } else { c.to_ascii_lowercase() }).collect();
    k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_').then_some(k)
}

// ---------------------------------------------------------------------------------------------
// Status list (resync)

/// One user's current status, from the status list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserStatus {
    /// Who.
    pub party: Party,
    /// `status` of the device; `None` when absent.
    pub status: Option<DeviceStatus>,
    /// `updated`: when this status was last changed (events older than it are superseded).
    pub updated: Option<UnixMs>,
    /// Current and scheduled absences (at most [`MAX_ABSENCES`]; malformed ones are dropped and
    /// counted in `bad_absences`).
    pub absences: Vec<Absence>,
    /// Absences that did not parse.
    pub bad_absences: usize,
}

/// One page of the status list.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPage {
    /// The users, each parsed on its own.
    pub users: Vec<Result<UserStatus, ParseError>>,
    /// `nextPage`: pass it back for the next page; `None`: this was the last.
    pub next_page: Option<String>,
}

/// Parses a status list page (`{users: [...], nextPage}`).
pub fn parse_status_list(body: &[u8]) -> Result<StatusPage, ParseError> {
    let v = from_json(body)?;
    let o = object(&v)?;
    let users = match o.get("users") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => &EMPTY,
        Some(_) => return Err(ParseError::Shape("users is not an array".into())),
    };
    if users.len() > MAX_USERS {
        return Err(ParseError::TooMany { what: "users", n: users.len(), max: MAX_USERS });
    }
    let next_page = match o.get("nextPage") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(bounded_id(s, "nextPage")?),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(invalid("nextPage", "not a string")),
    };
    Ok(StatusPage { users: users.iter().map(user_status).collect(), next_page })
}

fn user_status(v: &Value) -> Result<UserStatus, ParseError> {
    let o = object(v)?;
    let party = party(o)?;
    let status = o.get("status").and_then(Value::as_str).filter(|s| !s.trim().is_empty()).map(DeviceStatus::parse);
    let updated = time_field(o, "updated").ok().flatten();
    let mut absences = Vec::new();
    let mut bad_absences = 0;
    match o.get("absences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for x in a {
                match absence(x) {
                    Ok(abs) if absences.len() < MAX_ABSENCES => absences.push(abs),
                    Ok(_) | Err(_) => bad_absences += 1,
                }
            }
        }
        Some(_) => return Err(ParseError::Shape("absences is not an array".into())),
    }
    Ok(UserStatus { party, status, updated, absences, bad_absences })
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Decodes a body of at most [`MAX_BODY`] bytes.
fn from_json(body: &[u8]) -> Result<Value, ParseError> {
    json::from_json_max(body, MAX_BODY)
}

fn object(v: &Value) -> Result<&Map<String, Value>, ParseError> {
    v.as_object().ok_or_else(|| ParseError::Shape("expected an object".into()))
}

fn invalid(field: &'static str, reason: &str) -> ParseError {
    ParseError::Invalid { field, reason: truncate(reason, 80).to_string() }
}

/// An id-like field: a non-empty string (or a number) of at most [`MAX_ID_LEN`] bytes without
/// control characters; anything else is `None`.
fn id(o: &Map<String, Value>, k: &str) -> Option<String> {
    let s = match o.get(k)? {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!s.is_empty() && s.len() <= MAX_ID_LEN && !s.chars().any(char::is_control)).then_some(s)
}

fn bounded_id(s: &str, field: &'static str) -> Result<String, ParseError> {
    if s.len() > MAX_ID_LEN || s.chars().any(char::is_control) {
        return Err(invalid(field, "too long or with control characters"));
    }
    Ok(s.to_string())
}

fn short(o: &Map<String, Value>, k: &str, max: usize) -> Option<String> {
    o.get(k).and_then(Value::as_str).map(|s| truncate(s.trim(), max).to_string()).filter(|s| !s.is_empty())
}

/// Seconds as the toolkit reads them ([`json::seconds`]: a non-negative number or a numeric
/// string); absent or null is `None`.
fn seconds(o: &Map<String, Value>, k: &'static str) -> Result<Option<u64>, ParseError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => json::seconds(v).map(Some).ok_or_else(|| invalid(k, "not a number of seconds")),
    }
}

/// An RFC 3339 time or Unix milliseconds; absent or null is `None`.
fn time_field(o: &Map<String, Value>, k: &'static str) -> Result<Option<UnixMs>, ParseError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() <= 64 => parse_rfc3339(s)
            .map(Some)
            .ok_or_else(|| invalid(k, &format!("{:?} is not an RFC 3339 time", truncate(s, 40)))),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|ms| (0..=253_402_300_799_999).contains(ms))
            .map(Some)
            .ok_or_else(|| invalid(k, "out of range")),
        Some(_) => Err(invalid(k, "not a time")),
    }
}

/// Control characters as spaces, whitespace collapsed.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::{http, oauth};
    use crate::mutate::{Mutator, Xorshift};

    /// A fixture of `fixtures/mbn/`.
    fn fixture(name: &str) -> Vec<u8> {
        crate::mutate::fixture(&format!("mbn/{name}"))
    }

    fn ms(s: &str) -> UnixMs {
        parse_rfc3339(s).expect("test time")
    }

    fn ok_events(body: &[u8]) -> (Option<String>, Vec<Event>) {
        let b = parse_events(body).expect("envelope");
        (b.cursor, b.events.into_iter().map(|e| e.expect("event")).collect())
    }

    #[test]
    fn login_steps_parse() {
        // The token answer is the standard one, read by the toolkit; the token must fit a header.
        let t = oauth::parse_token_response(&fixture("token.json")).unwrap();
        assert_eq!((t.access_token.as_str(), t.expires_in), ("eyJraWQiOiJtYm4tc2ltIn0.c2ltLWFjY2Vzcy0x", 3599));
        assert_eq!(header_token("access_token", &t.access_token).as_deref(), Ok(t.access_token.as_str()));
        assert_eq!(header_token("access_token", " "), Err(ParseError::Missing("access_token")));
        assert!(header_token("access_token", "a b").is_err(), "not a header-safe token");
        assert!(header_token("access_token", &"x".repeat(MAX_TOKEN_LEN + 1)).is_err());
        let u = parse_user_info(&fixture("user_info.json")).unwrap();
        assert_eq!(u.company_id.as_deref(), Some("NO-987654321"));
        assert_eq!(u.user_id.as_deref(), Some("api-user-1"));
        assert_eq!(parse_user_info(b"{}").unwrap(), UserInfo::default());
        let s = parse_status_token(&fixture("status_token.json")).unwrap();
        assert_eq!((s.token.as_str(), s.expires_in), ("st-6f1c2a", Some(3600)));
        let c = parse_csta_token(&fixture("csta_token.json")).unwrap();
        assert_eq!((c.token.as_str(), c.expires_in), ("csta-91be04", Some(3600)), "a numeric string is read");
        assert_eq!(parse_csta_token(&fixture("status_token.json")), Err(ParseError::Missing("cstaToken")));
        assert!(parse_status_token(br#"{"token":"a\u0001b"}"#).is_err(), "not a header-safe token");
        let m = parse_monitor(&fixture("monitor.json")).unwrap();
        assert_eq!((m.id.as_str(), m.expires_in), ("m-20260302-0001", Some(600)));
        assert_eq!(
            parse_monitor(br#"{"expiresIn":-1,"monitorId":"m"}"#).map(|m| m.id),
            Err(invalid("expiresIn", "not a number of seconds"))
        );
        let m = parse_monitor(br#"{"expiresIn":"600","monitorId":7}"#).unwrap();
        assert_eq!((m.id.as_str(), m.expires_in), ("7", Some(600)));
    }

    #[test]
    fn request_builders() {
        // The password grant as Telenor documents it, built by the toolkit.
        assert_eq!(
            oauth::password_form("mbn api@firma.no", "på&=x", None),
            "grant_type=password&username=mbn+api%40firma.no&password=p%C3%A5%26%3Dx"
        );
        assert_eq!(csta_login_body("st-\"1"), r#"{"statusToken":"st-\"1"}"#);
        assert_eq!(
            monitor_start_body(Some("NO-1"), 600),
            r#"{"companyId":"NO-1","expiresIn":600,"type":"ENTERPRISE"}"#
        );
        assert_eq!(monitor_start_body(None, 60), r#"{"expiresIn":60,"type":"ENTERPRISE"}"#);
        assert_eq!(monitor_refresh_body(600), r#"{"expiresIn":600}"#);
        assert_eq!(path_with_id(PATH_EVENTS, "m 1/2"), "/csta/monitor/m%201%2F2/events");
        assert_eq!(events_query(25, None), "timeout=25");
        assert_eq!(events_query(0, Some("1-17&x")), "timeout=0&cursor=1-17%26x");
        assert_eq!(status_list_query(None), "");
        assert_eq!(status_list_query(Some("2")), "page=2");
    }

    #[test]
    fn device_status_events() {
        let (cursor, ev) = ok_events(&fixture("events_device_status.json"));
        assert_eq!(cursor.as_deref(), Some("1-17"));
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].kind, EventKind::DeviceStatus(DeviceStatus::Busy));
        assert_eq!(ev[0].party, Party { user_id: Some("u1".into()), msisdn: Some("+4791234567".into()) });
        assert_eq!(ev[0].at, Some(ms("2026-03-02T09:00:00.120Z")));
        assert_eq!(ev[0].id.as_deref(), Some("e15"));
        assert_eq!(ev[1].kind, EventKind::DeviceStatus(DeviceStatus::Offline), "case-insensitive");
        assert_eq!(ev[2].kind, EventKind::DeviceStatus(DeviceStatus::Available));
    }

    #[test]
    fn call_events() {
        let (_, ev) = ok_events(&fixture("events_calls.json"));
        let kinds: Vec<_> = ev.iter().map(|e| e.kind.clone()).collect();
        let call = |state| EventKind::Call { call_id: "call-7".into(), state };
        assert_eq!(
            kinds,
            vec![
                call(CallState::Ringing),
                call(CallState::Connected),
                EventKind::DeviceStatus(DeviceStatus::Busy),
                call(CallState::Connected),
                call(CallState::Cleared),
                EventKind::DeviceStatus(DeviceStatus::Available),
            ]
        );
    }

    #[test]
    fn absence_events() {
        let (_, ev) = ok_events(&fixture("events_absence.json"));
        let EventKind::Absence(a) = &ev[0].kind else { panic!("{:?}", ev[0]) };
        assert_eq!(a.id, "a-301");
        assert_eq!(a.kind, "illness");
        assert_eq!((a.from, a.to), (Some(ms("2026-03-02T08:00:00Z")), Some(ms("2026-03-03T08:00:00Z"))));
        assert_eq!(a.text.as_deref(), Some("Syk, tilbake i morgen"), "one line");
        let EventKind::Absence(m) = &ev[1].kind else { panic!() };
        assert_eq!((m.kind.as_str(), m.from), ("meeting", Some(ms("2026-03-02T09:00:00Z"))), "offsets are read");
        assert_eq!(m.text.as_deref(), Some("Styremøte"));
        let EventKind::Absence(p) = &ev[2].kind else { panic!() };
        assert_eq!((p.kind.as_str(), p.to, p.text.as_deref()), ("parental_leave", None, None), "until further notice");
        let (_, ev) = ok_events(&fixture("events_absence_removed.json"));
        assert_eq!(ev[0].kind, EventKind::AbsenceRemoved { absence_id: "a-301".into() });
        assert_eq!(absence_kind(" Home Office "), Some("home_office".into()));
        assert_eq!(absence_kind("x".repeat(33).as_str()), None);
        assert_eq!(absence_kind("ferie/fri"), None);
    }

    #[test]
    fn malformed_events_are_reported_one_by_one() {
        let b = parse_events(&fixture("events_malformed.json")).unwrap();
        let results: Vec<String> = b
            .events
            .iter()
            .map(|e| match e {
                Ok(ev) => format!("ok {:?}", ev.kind),
                Err(e) => format!("err {e}"),
            })
            .collect();
        assert_eq!(
            results,
            vec![
                "ok DeviceStatus(Busy)",
                "err missing field status",
                "err missing field eventType",
                "err missing field msisdn",
                "err missing field callId",
                "err invalid absence.to: before from",
                "err unexpected JSON shape: expected an object",
                "err invalid msisdn: \"call me maybe\" is not a phone number",
                "ok Other(\"presenceChanged\")",
                "ok DeviceStatus(Other(\"DO_NOT_DISTURB\"))",
                "ok DeviceStatus(Available)",
            ]
        );
        assert_eq!(b.cursor.as_deref(), Some("1-35"));
    }

    #[test]
    fn poll_envelopes() {
        assert_eq!(parse_events(b"").unwrap(), EventBatch { cursor: None, events: vec![] }, "204: nothing");
        assert_eq!(parse_events(b" \n").unwrap().events.len(), 0);
        let t = parse_events(&fixture("events_poll_timeout.json")).unwrap();
        assert_eq!((t.cursor.as_deref(), t.events.len()), (Some("1-35"), 0));
        assert_eq!(parse_events(b"[]").unwrap().events.len(), 0, "a bare array");
        assert_eq!(parse_events(br#"{"cursor":42}"#).unwrap().cursor.as_deref(), Some("42"));
        assert_eq!(parse_events(br#"{"events":{}}"#), Err(ParseError::Shape("events is not an array".into())));
        assert!(matches!(parse_events(b"{\"events\":["), Err(ParseError::NotJson(_))));
        assert!(matches!(parse_events(b"\"x\""), Err(ParseError::Shape(_))));
        let many = format!("[{}]", vec!["{}"; MAX_EVENTS + 1].join(","));
        assert!(matches!(parse_events(many.as_bytes()), Err(ParseError::TooMany { what: "events", .. })));
        let big = vec![b' '; MAX_BODY + 1];
        assert!(parse_events(&big).is_ok(), "whitespace only is an empty answer");
        let big = [b"[".as_slice(), &vec![b' '; MAX_BODY], b"]"].concat();
        assert!(matches!(parse_events(&big), Err(ParseError::TooLarge { .. })));
    }

    #[test]
    fn status_list_pages() {
        let p = parse_status_list(&fixture("status_list.json")).unwrap();
        assert_eq!(p.next_page.as_deref(), Some("2"));
        assert_eq!(p.users.len(), 5);
        let u1 = p.users[0].as_ref().unwrap();
        assert_eq!((u1.status.clone(), u1.updated), (Some(DeviceStatus::Available), Some(ms("2026-03-02T08:59:00Z"))));
        let u2 = p.users[1].as_ref().unwrap();
        assert_eq!((u2.absences.len(), u2.bad_absences), (1, 1), "one good absence, one malformed");
        assert_eq!(u2.absences[0].kind, "illness");
        let u3 = p.users[2].as_ref().unwrap();
        assert_eq!((u3.status.clone(), u3.absences.len()), (Some(DeviceStatus::Busy), 0));
        let u9 = p.users[3].as_ref().unwrap();
        assert_eq!(
            (u9.party.user_id.as_deref(), u9.party.msisdn.as_deref(), u9.status.clone()),
            (Some("u9"), None, None)
        );
        assert_eq!(p.users[4], Err(ParseError::Missing("msisdn")));
        assert_eq!(parse_status_list(br#"{"users":[],"nextPage":""}"#).unwrap().next_page, None);
        assert_eq!(parse_status_list(br#"{"users":{}}"#), Err(ParseError::Shape("users is not an array".into())));
    }

    #[test]
    fn error_bodies_are_read_by_the_toolkit() {
        assert_eq!(http::error_text(&fixture("error_40106.json")), "40106: Access token expired");
        let oauth = br#"{"error":"invalid_grant","error_description":"Bad user"}"#;
        assert_eq!(http::error_text(oauth), "invalid_grant: Bad user");
        assert_eq!(http::error_text(b"<html>"), "");
    }

    /// Deterministic xorshift mutations of every fixture fed to every parser: nothing panics,
    /// and enough mutants still parse to reach the field-level code.
    #[test]
    fn no_input_panics_any_parser() {
        let mut rng = Xorshift::default();
        let fields: [&[u8]; 9] = [
            b"\"events\":[",
            b"\"eventType\":\"absence\"",
            b"\"absence\":{}",
            b"\"msisdn\":12",
            b"\"from\":99999999999999999",
            b"\"status\":[]",
            b"\"cursor\":{}",
            b"\"expiresIn\":1.5",
            b"\"token\":\" \"",
        ];
        let tokens = [crate::mutate::JSON_TOKENS, &fields].concat();
        let long = "9".repeat(300);
        let words: [&str; 16] = [
            "",
            " ",
            "BUSY",
            "deviceStatus",
            "connectionCleared",
            "absenceRemoved",
            "2026-03-02T09:00:00Z",
            "2026-02-30T25:00:00Z",
            "+47 912 34 567",
            "ILLNESS",
            "x-y z",
            "\\n\\t",
            "40106",
            "{id}",
            "åäö",
            &long,
        ];
        let m = Mutator::new(&tokens, &words);
        let fixtures = crate::mutate::fixture_files("mbn", "json");
        let bases: Vec<&[u8]> = fixtures.iter().map(|(_, b)| &b[..]).collect();
        crate::mutate::no_input_panics(&m, &bases, 20_000, &mut rng, 5_000, |buf, rng| {
            let mut parsed_ok = 0usize;
            if let Ok(b) = parse_events(buf) {
                parsed_ok += 1 + b.events.iter().filter(|e| e.is_ok()).count();
            }
            if let Ok(p) = parse_status_list(buf) {
                parsed_ok += 1 + p.users.iter().filter(|u| u.is_ok()).count();
            }
            parsed_ok += usize::from(oauth::parse_token_response(buf).is_ok());
            parsed_ok += usize::from(parse_user_info(buf).is_ok());
            parsed_ok += usize::from(parse_status_token(buf).is_ok());
            parsed_ok += usize::from(parse_csta_token(buf).is_ok());
            parsed_ok += usize::from(parse_monitor(buf).is_ok());
            parsed_ok += usize::from(!http::error_text(buf).is_empty());
            let text = String::from_utf8_lossy(buf);
            let short = truncate(&text, 200);
            let _ = header_token("token", short);
            let _ = absence_kind(short);
            let _ = DeviceStatus::parse(short);
            let _ = path_with_id(PATH_MONITOR, short);
            let _ = events_query(rng.next(), Some(short));
            parsed_ok
        });
    }
}
