//! Microsoft Graph presence: parsers and request builders — pure, bounded, never panic.
//!
//! Everything here turns bytes from Graph (or from the Microsoft identity platform) into plain
//! values, or builds request bodies; there is no I/O, no clock and no actix (protocols.md §2).
//!
//! - Presence ([`parse_presence`], [`parse_presences`]): one `presence` object
//!   (`GET /users/{id}/presence`, or the decrypted `data` of a change notification) or the
//!   `{"value":[…]}` answer of `POST /communications/getPresencesByUserId`. One bad item does not
//!   lose the others. [`GraphPresence::to_signal`] maps it onto the model.
//! - Change and lifecycle notifications ([`parse_notifications`]), the validation handshake
//!   ([`validation_token`]), subscriptions ([`parse_subscription`],
//!   [`subscription_request_body`], [`renewal_body`], [`presence_filter_resource`]).
//! - OAuth2 token endpoint ([`parse_token_response`], [`parse_oauth_error`],
//!   [`client_credentials_form`], [`refresh_token_form`]), Graph error bodies
//!   ([`parse_graph_error`]) and `Retry-After` ([`retry_after`]).
//!
//! Mapping decisions:
//! - Availability strings are matched case-insensitively against Graph's nine values, so the
//!   camelCase spellings of the OpenAPI schema (`doNotDisturb`, `beRightBack`…) parse too.
//!   Anything else (e.g. `focusing`) becomes [`Availability::Unknown`] and is recorded in
//!   [`GraphPresence::unknown`] so the runtime can log it once.
//! - Activities go through [`Activity::parse_source`]; strings that only restate availability
//!   (`Available`, `Busy`, `PresenceUnknown`…) give no activity. `AvailableInactive` (the
//!   faded state of a `setPresence` session, §2.4) maps to [`Activity::Inactive`]. A string the
//!   model does not know (it would become `Activity::Other`) gives no activity and is recorded in
//!   `unknown` (the availability's raw value wins when both are unknown).
//! - `PresenceUnknown` (or an unrecognised availability) means Graph has no opinion: the signal
//!   carries neither availability nor activity, so the merge ignores it; the OOO flag and the
//!   note, which are independent facts, are still carried.
//! - Out of office: `ooo` is true when `outOfOfficeSettings.isOutOfOffice` is true **or** the
//!   activity is `OutOfOffice` — Teams shows "Available + OOF" as `Available/OutOfOffice`, and
//!   the settings object is not always present (notifications carry only the two strings).
//! - The note is the status message (HTML tags dropped, common entities decoded, whitespace
//!   collapsed, bounded like every note); when there is none, or it expired, and the person is
//!   out of office, the out-of-office message is used instead.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use presence_actors::model::activity::truncate;
use presence_actors::model::signal::{bounded_note, MAX_NOTE_LEN};
use presence_actors::model::{parse_rfc3339, Activity, Availability, Signal, Source, UnixMs, Version};

/// Most user ids in one `getPresencesByUserId` request.
pub const MAX_IDS_PER_REQUEST: usize = 650;
/// Most user ids in one presence subscription (`$filter=id in (…)`).
pub const MAX_IDS_PER_SUBSCRIPTION: usize = 650;
/// Longest `clientState` we send (the subscription resource allows 128 characters).
pub const MAX_CLIENT_STATE: usize = 128;
/// Largest body any parser here accepts, in bytes.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Longest id (user object id, subscription id) accepted, in bytes.
pub const MAX_ID_LEN: usize = 100;
/// Most items in one notification batch or one presences response.
pub const MAX_ITEMS: usize = 1000;
/// Longest decoded validation token accepted, in bytes.
pub const MAX_VALIDATION_TOKEN: usize = 1024;
/// Longest `Retry-After` honoured, in milliseconds (1 hour).
pub const MAX_RETRY_AFTER_MS: u64 = 3_600_000;
/// Lifetime assumed when a token response has no `expires_in`, in seconds.
pub const DEFAULT_EXPIRES_IN: u64 = 3600;
/// The source instance of every Teams signal: Graph delivers one aggregate per person.
pub const INSTANCE: &str = "teams";

/// Longest `clientState` accepted in a received notification (the changeNotification resource
/// allows 255; ours are never longer than [`MAX_CLIENT_STATE`]).
const MAX_RECEIVED_CLIENT_STATE: usize = 255;
/// Longest raw unknown value, work location, OAuth error code kept.
const MAX_SHORT: usize = 64;
/// Longest error description / message kept.
const MAX_TEXT: usize = 1024;
/// Longest sequence number kept (longer ones are not Graph's and are dropped).
const MAX_SEQUENCE: usize = 256;
/// Longest HTML input converted to text (the note is cut to 500 bytes anyway).
const MAX_HTML_INPUT: usize = 64 * 1024;
/// Longest serde error message kept (they may quote the input).
const MAX_ERROR_MESSAGE: usize = 200;
/// 9999-01-01T00:00:00Z: expiries from here on mean "never".
const FAR_FUTURE_MS: UnixMs = 253_370_764_800_000;

/// Why a body could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The body is larger than [`MAX_BODY`].
    #[error("body too large: {len} > {max} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON at all (syntax error, truncated).
    #[error("not JSON: {0}")]
    NotJson(String),
    /// JSON, but not the expected shape (wrong types).
    #[error("unexpected JSON shape: {0}")]
    Shape(String),
    /// A required field is absent or null.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A field has an unusable value.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// More items than allowed.
    #[error("too many {what}: {n} > {max}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// How many there were.
        n: usize,
        /// The limit.
        max: usize,
    },
    /// A list that must not be empty is empty.
    #[error("no {0}")]
    Empty(&'static str),
}

// ---------------------------------------------------------------------------------------------
// Presence

/// One person's presence as Graph reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphPresence {
    /// The user's Entra object id.
    pub id: String,
    /// Availability; `Unknown` for `PresenceUnknown`, a missing value or an unknown string.
    pub availability: Availability,
    /// Activity, unless it only restates availability or is not recognised.
    pub activity: Option<Activity>,
    /// The raw availability or activity value that was not recognised (for a log-once),
    /// bounded to 64 bytes; `None` when everything was known.
    pub unknown: Option<String>,
    /// `sequenceNumber`: lexicographically ordered version of the presence object.
    pub sequence: Option<String>,
    /// The status message: HTML tags stripped, entities decoded, whitespace collapsed, bounded
    /// like every note (500 bytes); `None` when empty.
    pub status_message: Option<String>,
    /// When the status message expires (`expiryDateTime`); `None` when absent, "never"
    /// (year 9999) or in a time zone other than UTC without an offset in `dateTime`.
    pub status_expires_at: Option<UnixMs>,
    /// Out of office: `outOfOfficeSettings.isOutOfOffice` or activity `OutOfOffice`.
    pub ooo: bool,
    /// The out-of-office message, cleaned like the status message.
    pub ooo_message: Option<String>,
    /// `workLocation.workLocationType` (`office`, `remote`, `timeOff`…), unless unspecified.
    pub work_location: Option<String>,
}

impl GraphPresence {
    /// Maps the presence onto a model signal: source Teams, instance [`INSTANCE`], version =
    /// `sequenceNumber`, no validity bound. `PresenceUnknown` gives neither availability nor
    /// activity (no opinion). The note is the status message unless it has expired at
    /// `observed_at`, else the out-of-office message when out of office.
    pub fn to_signal(&self, observed_at: UnixMs) -> Signal {
        let known = self.availability.is_known();
        let mut s = Signal::new(Source::Teams, INSTANCE, known.then_some(self.availability), observed_at);
        s.activity = if known { self.activity.clone() } else { None };
        let status = self.status_message.as_deref().filter(|_| self.status_expires_at.is_none_or(|t| t > observed_at));
        let ooo_note = if self.ooo { self.ooo_message.as_deref() } else { None };
        s.note = status.or(ooo_note).and_then(bounded_note);
        s.ooo = self.ooo;
        s.version = self.sequence.as_deref().map(|v| Version::Text(v.into()));
        s.clamp();
        s
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPresence {
    id: Option<String>,
    availability: Option<String>,
    activity: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    status_message: Option<RawStatusMessage>,
    #[serde(default, deserialize_with = "lenient")]
    out_of_office_settings: Option<RawOutOfOffice>,
    #[serde(default, deserialize_with = "lenient")]
    sequence_number: Option<String>,
    #[serde(default)]
    work_location: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatusMessage {
    #[serde(default, deserialize_with = "lenient")]
    message: Option<RawItemBody>,
    #[serde(default, deserialize_with = "lenient")]
    expiry_date_time: Option<RawDateTimeTimeZone>,
}

#[derive(Deserialize)]
struct RawItemBody {
    #[serde(default, deserialize_with = "lenient")]
    content: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDateTimeTimeZone {
    date_time: Option<String>,
    time_zone: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOutOfOffice {
    #[serde(default, deserialize_with = "lenient")]
    is_out_of_office: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    message: Option<String>,
}

/// Parses one `presence` object (`GET …/presence`, or a decrypted notification `data`).
/// Unknown fields are ignored; `id` is required (1–100 bytes).
pub fn parse_presence(json: &[u8]) -> Result<GraphPresence, ParseError> {
    presence_from_raw(from_json(json)?)
}

/// Parses the `{"value":[…]}` answer of `getPresencesByUserId`: one result per item, so one
/// bad item does not lose the others. Fails as a whole only when the envelope is unusable or
/// holds more than [`MAX_ITEMS`] items.
pub fn parse_presences(json: &[u8]) -> Result<Vec<Result<GraphPresence, ParseError>>, ParseError> {
    #[derive(Deserialize)]
    struct Envelope {
        value: Option<Capped<Value, MAX_ITEMS>>,
    }
    let env: Envelope = from_json(json)?;
    let items = env.value.ok_or(ParseError::Missing("value"))?.check("presences")?;
    Ok(items
        .into_iter()
        .map(|v| serde_json::from_value::<RawPresence>(v).map_err(json_error).and_then(presence_from_raw))
        .collect())
}

fn presence_from_raw(raw: RawPresence) -> Result<GraphPresence, ParseError> {
    let id = required_id(raw.id.as_deref(), "id")?;
    let mut unknown = None;
    let availability = match raw.availability.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Availability::Unknown,
        Some(a) => map_availability(a).unwrap_or_else(|| {
            unknown = Some(truncate(a, MAX_SHORT).to_string());
            Availability::Unknown
        }),
    };
    let activity = match raw.activity.as_deref() {
        None => None,
        Some(a) => {
            let (activity, recognised) = map_activity(a);
            if !recognised && unknown.is_none() {
                unknown = Some(truncate(a.trim(), MAX_SHORT).to_string());
            }
            activity
        }
    };
    let (status_message, status_expires_at) = match raw.status_message {
        None => (None, None),
        Some(sm) => (
            sm.message.and_then(|m| m.content).as_deref().and_then(clean_text),
            sm.expiry_date_time.and_then(|e| graph_date_time(e.date_time.as_deref()?, e.time_zone.as_deref())),
        ),
    };
    let (settings_ooo, ooo_message) = match raw.out_of_office_settings {
        None => (false, None),
        Some(o) => (o.is_out_of_office.unwrap_or(false), o.message.as_deref().and_then(clean_text)),
    };
    let ooo = settings_ooo || activity == Some(Activity::OutOfOffice);
    let sequence = raw
        .sequence_number
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= MAX_SEQUENCE)
        .map(String::from);
    Ok(GraphPresence {
        id,
        availability,
        activity,
        unknown,
        sequence,
        status_message,
        status_expires_at,
        ooo,
        ooo_message,
        work_location: work_location(raw.work_location.as_ref()),
    })
}

/// Graph's availability values, matched case-insensitively.
const GRAPH_AVAILABILITY: [(&str, Availability); 9] = [
    ("Available", Availability::Available),
    ("AvailableIdle", Availability::AvailableIdle),
    ("Away", Availability::Away),
    ("BeRightBack", Availability::BeRightBack),
    ("Busy", Availability::Busy),
    ("BusyIdle", Availability::BusyIdle),
    ("DoNotDisturb", Availability::DoNotDisturb),
    ("Offline", Availability::Offline),
    ("PresenceUnknown", Availability::Unknown),
];

fn map_availability(s: &str) -> Option<Availability> {
    GRAPH_AVAILABILITY.iter().find(|(name, _)| name.eq_ignore_ascii_case(s)).map(|(_, a)| *a)
}

/// The activity, and whether the string was recognised.
fn map_activity(s: &str) -> (Option<Activity>, bool) {
    let t = s.trim();
    if t.eq_ignore_ascii_case("AvailableInactive") {
        return (Some(Activity::Inactive), true);
    }
    match Activity::parse_source(t) {
        Some(Activity::Other(_)) => (None, false),
        a => (a, true),
    }
}

fn work_location(v: Option<&Value>) -> Option<String> {
    let s = match v? {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("workLocationType")?.as_str()?,
        _ => return None,
    };
    let s = s.trim();
    let unspecified =
        s.is_empty() || s.eq_ignore_ascii_case("unspecified") || s.eq_ignore_ascii_case("unknownFutureValue");
    (!unspecified).then(|| truncate(s, MAX_SHORT).to_string())
}

/// A Graph `dateTimeTimeZone`: an offset in `dateTime` wins; otherwise only UTC is understood.
fn graph_date_time(date_time: &str, time_zone: Option<&str>) -> Option<UnixMs> {
    let dt = date_time.trim();
    if dt.is_empty() || dt.len() > 64 {
        return None;
    }
    let ms = match parse_rfc3339(dt) {
        Some(ms) => ms,
        None => {
            let utc = time_zone
                .map(str::trim)
                .is_some_and(|z| ["UTC", "Etc/UTC", "GMT", "Etc/GMT", "Z"].iter().any(|n| n.eq_ignore_ascii_case(z)));
            if !utc {
                return None;
            }
            civil_utc(dt)?
        }
    };
    (ms < FAR_FUTURE_MS).then_some(ms)
}

/// A time stamp as Graph writes them: RFC 3339, or without offset (then UTC).
fn graph_time(s: &str) -> Option<UnixMs> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    parse_rfc3339(s).or_else(|| civil_utc(s))
}

fn civil_utc(s: &str) -> Option<UnixMs> {
    let civil: jiff::civil::DateTime = s.parse().ok()?;
    jiff::tz::Offset::UTC.to_timestamp(civil).ok().map(|t| t.as_millisecond())
}

// ---------------------------------------------------------------------------------------------
// Requests for presence and subscriptions

/// The body of `POST /communications/getPresencesByUserId`: `{"ids":[…]}`. Fails when empty,
/// over [`MAX_IDS_PER_REQUEST`], or when an id is empty, over 100 bytes or contains whitespace.
pub fn presences_request_body(ids: &[&str]) -> Result<String, ParseError> {
    #[derive(Serialize)]
    struct Body<'a> {
        ids: &'a [&'a str],
    }
    check_ids(ids, MAX_IDS_PER_REQUEST)?;
    serde_json::to_string(&Body { ids }).map_err(|e| ParseError::Invalid { field: "ids", reason: e.to_string() })
}

/// The subscription resource for several users:
/// `/communications/presences?$filter=id in ('a','b')` (a `'` in an id is doubled). Fails when
/// empty, over [`MAX_IDS_PER_SUBSCRIPTION`], or on a bad id.
pub fn presence_filter_resource(ids: &[&str]) -> Result<String, ParseError> {
    check_ids(ids, MAX_IDS_PER_SUBSCRIPTION)?;
    let mut out = String::from("/communications/presences?$filter=id in (");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('\'');
        out.push_str(&id.replace('\'', "''"));
        out.push('\'');
    }
    out.push(')');
    Ok(out)
}

fn check_ids(ids: &[&str], max: usize) -> Result<(), ParseError> {
    if ids.is_empty() {
        return Err(ParseError::Empty("ids"));
    }
    if ids.len() > max {
        return Err(ParseError::TooMany { what: "ids", n: ids.len(), max });
    }
    if let Some(bad) = ids
        .iter()
        .find(|id| id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(ParseError::Invalid { field: "ids", reason: format!("bad id {:?}", truncate(bad, 40)) });
    }
    Ok(())
}

/// A subscription as Graph returns it from `POST /subscriptions` or `PATCH /subscriptions/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Subscription id.
    pub id: String,
    /// The subscribed resource.
    pub resource: Option<String>,
    /// `expirationDateTime`.
    pub expires_at: Option<UnixMs>,
    /// The `clientState` Graph echoes in every notification.
    pub client_state: Option<String>,
}

/// Parses a subscription; `id` is required.
pub fn parse_subscription(body: &[u8]) -> Result<Subscription, ParseError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        id: Option<String>,
        resource: Option<String>,
        expiration_date_time: Option<String>,
        client_state: Option<String>,
    }
    let raw: Raw = from_json(body)?;
    Ok(Subscription {
        id: required_id(raw.id.as_deref(), "id")?,
        resource: raw.resource,
        expires_at: raw.expiration_date_time.as_deref().and_then(graph_time),
        client_state: raw.client_state,
    })
}

/// The body of `POST /subscriptions` for presence (`changeType` `updated`). Fails when
/// `client_state` is empty or over [`MAX_CLIENT_STATE`] bytes, when a URL or the resource is
/// empty, or when `include_resource_data` is set without an encryption certificate (Graph
/// requires one). `encryption_certificate` is `(base64 certificate, certificate id)`.
pub fn subscription_request_body(
    resource: &str,
    notification_url: &str,
    lifecycle_url: Option<&str>,
    expires_at: UnixMs,
    client_state: &str,
    include_resource_data: bool,
    encryption_certificate: Option<(&str, &str)>,
) -> Result<String, ParseError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        change_type: &'a str,
        notification_url: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        lifecycle_notification_url: Option<&'a str>,
        resource: &'a str,
        expiration_date_time: String,
        client_state: &'a str,
        include_resource_data: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        encryption_certificate: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        encryption_certificate_id: Option<&'a str>,
    }
    let invalid = |field, reason: &str| ParseError::Invalid { field, reason: reason.to_string() };
    if client_state.is_empty() {
        return Err(invalid("clientState", "empty"));
    }
    if client_state.len() > MAX_CLIENT_STATE {
        return Err(ParseError::Invalid {
            field: "clientState",
            reason: format!("{} bytes > {MAX_CLIENT_STATE}", client_state.len()),
        });
    }
    if resource.trim().is_empty() {
        return Err(invalid("resource", "empty"));
    }
    if notification_url.trim().is_empty() {
        return Err(invalid("notificationUrl", "empty"));
    }
    if lifecycle_url.is_some_and(|u| u.trim().is_empty()) {
        return Err(invalid("lifecycleNotificationUrl", "empty"));
    }
    if let Some((cert, id)) = encryption_certificate {
        if cert.trim().is_empty() || id.trim().is_empty() {
            return Err(invalid("encryptionCertificate", "empty certificate or id"));
        }
    } else if include_resource_data {
        return Err(invalid("encryptionCertificate", "required with includeResourceData"));
    }
    let body = Body {
        change_type: "updated",
        notification_url,
        lifecycle_notification_url: lifecycle_url,
        resource,
        expiration_date_time: format_utc(expires_at),
        client_state,
        include_resource_data,
        encryption_certificate: encryption_certificate.map(|(c, _)| c),
        encryption_certificate_id: encryption_certificate.map(|(_, id)| id),
    };
    serde_json::to_string(&body).map_err(|e| ParseError::Invalid { field: "subscription", reason: e.to_string() })
}

/// The body of `PATCH /subscriptions/{id}`: `{"expirationDateTime":"2024-05-06T10:00:00Z"}`
/// (whole seconds, UTC; clamped to 1970 … 9999-12-30).
pub fn renewal_body(expires_at: UnixMs) -> String {
    format!("{{\"expirationDateTime\":\"{}\"}}", format_utc(expires_at))
}

fn format_utc(ms: UnixMs) -> String {
    let secs = ms.div_euclid(1000).clamp(0, jiff::Timestamp::MAX.as_second());
    jiff::Timestamp::from_second(secs).map(|t| t.to_string()).unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

// ---------------------------------------------------------------------------------------------
// Change notifications

/// One delivery to the notification (or lifecycle) URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationBatch {
    /// The usable notifications, in order.
    pub value: Vec<Notification>,
    /// `validationTokens` (JWTs) sent with notifications that carry resource data.
    pub validation_tokens: Vec<String>,
    /// Items that could not be used (index in `value` of the body, reason), e.g. without
    /// `subscriptionId`; the others are still delivered.
    pub invalid: Vec<(usize, ParseError)>,
}

/// One change or lifecycle notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The subscription it belongs to.
    pub subscription_id: String,
    /// The `clientState` to compare with ours (≤ 255 bytes).
    pub client_state: Option<String>,
    /// `updated` for presence.
    pub change_type: Option<String>,
    /// The changed resource (`communications/presences/{id}`).
    pub resource: Option<String>,
    /// `tenantId`, else `organizationId`.
    pub tenant_id: Option<String>,
    /// The user: `resourceData.id`, else parsed from `resourceData.@odata.id` or `resource`
    /// (`communications/presences/{id}`, `communications/presences('{id}')`,
    /// `users/{id}/presence`).
    pub user_id: Option<String>,
    /// `subscriptionExpirationDateTime`.
    pub subscription_expires_at: Option<UnixMs>,
    /// Encrypted resource data (with `includeResourceData`).
    pub encrypted: Option<EncryptedContent>,
    /// Set on lifecycle notifications.
    pub lifecycle_event: Option<LifecycleEvent>,
    /// `resourceData.sequenceNumber` if Graph ever sends one (undocumented; usually `None`).
    pub sequence_hint: Option<String>,
}

/// `encryptedContent` of a notification; the base64 strings are kept as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedContent {
    /// AES-CBC ciphertext of the resource (base64).
    pub data: String,
    /// HMAC-SHA256 of `data` (base64).
    pub data_signature: String,
    /// The symmetric key, RSA-OAEP encrypted with our certificate (base64).
    pub data_key: String,
    /// `encryptionCertificateId`: our id of the certificate used.
    pub certificate_id: Option<String>,
    /// `encryptionCertificateThumbprint`.
    pub certificate_thumbprint: Option<String>,
}

/// `lifecycleEvent` of a lifecycle notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// The subscription must be reauthorized (or renewed) soon.
    ReauthorizationRequired,
    /// Graph removed the subscription: recreate it and resync.
    SubscriptionRemoved,
    /// Notifications were missed: resync.
    Missed,
    /// Any other value, as sent (bounded to 64 bytes).
    Other(String),
}

impl LifecycleEvent {
    fn parse(s: &str) -> LifecycleEvent {
        let t = s.trim();
        if t.eq_ignore_ascii_case("reauthorizationRequired") {
            LifecycleEvent::ReauthorizationRequired
        } else if t.eq_ignore_ascii_case("subscriptionRemoved") {
            LifecycleEvent::SubscriptionRemoved
        } else if t.eq_ignore_ascii_case("missed") {
            LifecycleEvent::Missed
        } else {
            LifecycleEvent::Other(truncate(t, MAX_SHORT).to_string())
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNotification {
    subscription_id: Option<String>,
    client_state: Option<String>,
    change_type: Option<String>,
    resource: Option<String>,
    tenant_id: Option<String>,
    organization_id: Option<String>,
    subscription_expiration_date_time: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    resource_data: Option<RawResourceData>,
    encrypted_content: Option<RawEncrypted>,
    lifecycle_event: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResourceData {
    #[serde(default, deserialize_with = "lenient")]
    id: Option<String>,
    #[serde(rename = "@odata.id", default, deserialize_with = "lenient")]
    odata_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    sequence_number: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEncrypted {
    data: Option<String>,
    data_signature: Option<String>,
    data_key: Option<String>,
    encryption_certificate_id: Option<String>,
    encryption_certificate_thumbprint: Option<String>,
}

/// Parses a delivery to the notification or lifecycle URL:
/// `{"value":[…],"validationTokens":[…]}`. Fails as a whole when the envelope is unusable or
/// holds more than [`MAX_ITEMS`] items; a bad item lands in [`NotificationBatch::invalid`].
pub fn parse_notifications(body: &[u8]) -> Result<NotificationBatch, ParseError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Envelope {
        value: Option<Capped<Value, MAX_ITEMS>>,
        validation_tokens: Option<Capped<Value, MAX_ITEMS>>,
    }
    let env: Envelope = from_json(body)?;
    let items = env.value.ok_or(ParseError::Missing("value"))?.check("notifications")?;
    let validation_tokens = match env.validation_tokens {
        None => Vec::new(),
        Some(t) => t
            .check("validation tokens")?
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) if !s.trim().is_empty() => Some(s),
                _ => None,
            })
            .collect(),
    };
    let mut batch =
        NotificationBatch { value: Vec::with_capacity(items.len()), validation_tokens, invalid: Vec::new() };
    for (i, v) in items.into_iter().enumerate() {
        match serde_json::from_value::<RawNotification>(v).map_err(json_error).and_then(notification_from_raw) {
            Ok(n) => batch.value.push(n),
            Err(e) => batch.invalid.push((i, e)),
        }
    }
    Ok(batch)
}

fn notification_from_raw(r: RawNotification) -> Result<Notification, ParseError> {
    let subscription_id = required_id(r.subscription_id.as_deref(), "subscriptionId")?;
    if r.client_state.as_ref().is_some_and(|c| c.len() > MAX_RECEIVED_CLIENT_STATE) {
        return Err(ParseError::Invalid {
            field: "clientState",
            reason: format!("longer than {MAX_RECEIVED_CLIENT_STATE} bytes"),
        });
    }
    let encrypted = match r.encrypted_content {
        None => None,
        Some(e) => {
            let need = |v: Option<String>, field| v.filter(|s| !s.trim().is_empty()).ok_or(ParseError::Missing(field));
            Some(EncryptedContent {
                data: need(e.data, "encryptedContent.data")?,
                data_signature: need(e.data_signature, "encryptedContent.dataSignature")?,
                data_key: need(e.data_key, "encryptedContent.dataKey")?,
                certificate_id: e.encryption_certificate_id,
                certificate_thumbprint: e.encryption_certificate_thumbprint,
            })
        }
    };
    let rd = r.resource_data.as_ref();
    let user_id = rd
        .and_then(|d| d.id.as_deref())
        .and_then(clean_id)
        .or_else(|| rd.and_then(|d| d.odata_id.as_deref()).and_then(user_id_from_path))
        .or_else(|| r.resource.as_deref().and_then(user_id_from_path));
    let sequence_hint = rd
        .and_then(|d| d.sequence_number.as_deref())
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= MAX_SEQUENCE)
        .map(String::from);
    Ok(Notification {
        subscription_id,
        client_state: r.client_state,
        change_type: r.change_type,
        tenant_id: r.tenant_id.or(r.organization_id),
        user_id,
        subscription_expires_at: r.subscription_expiration_date_time.as_deref().and_then(graph_time),
        encrypted,
        lifecycle_event: r.lifecycle_event.as_deref().map(LifecycleEvent::parse),
        sequence_hint,
        resource: r.resource,
    })
}

/// The user id in `communications/presences/{id}`, `communications/presences('{id}')`,
/// `users/{id}/presence` or `users('{id}')/presence` (leading `/` and case ignored).
fn user_id_from_path(path: &str) -> Option<String> {
    let p = path.trim().trim_start_matches('/');
    for prefix in ["communications/presences", "users"] {
        let Some(rest) = strip_prefix_ci(p, prefix) else { continue };
        let id = if let Some(r) = rest.strip_prefix("('") {
            r.split("')").next()?
        } else if let Some(r) = rest.strip_prefix('/') {
            r.split(['/', '?']).next()?
        } else {
            continue;
        };
        return clean_id(id);
    }
    None
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    s.get(..prefix.len()).filter(|head| head.eq_ignore_ascii_case(prefix))?;
    s.get(prefix.len()..)
}

/// An id usable as a key: trimmed, 1–100 bytes, no whitespace, quotes, slashes or controls.
fn clean_id(s: &str) -> Option<String> {
    let t = s.trim();
    let ok = !t.is_empty()
        && t.len() <= MAX_ID_LEN
        && !t.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '\'' | '"' | '/' | '?'));
    ok.then(|| t.to_string())
}

fn required_id(v: Option<&str>, field: &'static str) -> Result<String, ParseError> {
    let t = v.ok_or(ParseError::Missing(field))?.trim();
    let reason = if t.is_empty() {
        "empty".to_string()
    } else if t.len() > MAX_ID_LEN {
        format!("longer than {MAX_ID_LEN} bytes")
    } else if t.chars().any(char::is_control) {
        "control character".to_string()
    } else {
        return Ok(t.to_string());
    };
    Err(ParseError::Invalid { field, reason })
}

/// The validation token of Graph's handshake, from the raw query string of the request to the
/// notification URL (`validationToken=Validation%3a+Testing…`, a leading `?` is allowed):
/// percent-decoded with `+` as space, as Graph expects it echoed. `None` when absent or when
/// the decoded token is over [`MAX_VALIDATION_TOKEN`] bytes.
pub fn validation_token(query: &str) -> Option<String> {
    let q = query.strip_prefix('?').unwrap_or(query);
    for pair in q.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key.len() > 64 || !form_decode(key).eq_ignore_ascii_case(b"validationToken") {
            continue;
        }
        if value.len() > 3 * MAX_VALIDATION_TOKEN {
            return None;
        }
        let token = form_decode(value);
        if token.len() > MAX_VALIDATION_TOKEN {
            return None;
        }
        return Some(String::from_utf8_lossy(&token).into_owned());
    }
    None
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; a `%` not
/// followed by two hex digits is kept as it is.
fn form_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (b.get(i + 1).and_then(hex_value), b.get(i + 2).and_then(hex_value)) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn hex_value(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

// ---------------------------------------------------------------------------------------------
// OAuth2 and errors

/// A successful answer of the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenResponse {
    /// The bearer token.
    pub access_token: String,
    /// Lifetime in seconds (a number or a numeric string; [`DEFAULT_EXPIRES_IN`] when absent,
    /// as RFC 6749 makes it optional).
    pub expires_in: u64,
    /// A new refresh token (delegated flows), to store in place of the old one.
    pub refresh_token: Option<String>,
    /// `Bearer`.
    pub token_type: Option<String>,
}

/// Parses a token endpoint answer; `access_token` is required.
pub fn parse_token_response(body: &[u8]) -> Result<TokenResponse, ParseError> {
    #[derive(Deserialize)]
    struct Raw {
        access_token: Option<String>,
        expires_in: Option<Value>,
        refresh_token: Option<String>,
        token_type: Option<String>,
    }
    let raw: Raw = from_json(body)?;
    let access_token = raw.access_token.filter(|t| !t.trim().is_empty()).ok_or(ParseError::Missing("access_token"))?;
    let expires_in = match raw.expires_in {
        None | Some(Value::Null) => DEFAULT_EXPIRES_IN,
        Some(v) => seconds(&v).ok_or_else(|| ParseError::Invalid {
            field: "expires_in",
            reason: truncate(&v.to_string(), 40).to_string(),
        })?,
    };
    Ok(TokenResponse {
        access_token,
        expires_in,
        refresh_token: raw.refresh_token.filter(|t| !t.trim().is_empty()),
        token_type: raw.token_type,
    })
}

fn seconds(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            let f = n.as_f64()?;
            // `as` saturates; the range check keeps negative and non-finite values out.
            (f.is_finite() && f >= 0.0).then_some(f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The `application/x-www-form-urlencoded` body of a client-credentials token request.
pub fn client_credentials_form(client_id: &str, client_secret: &str, scope: &str) -> String {
    form(&[
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", client_secret),
        ("scope", scope),
    ])
}

/// The `application/x-www-form-urlencoded` body of a refresh-token request (public clients
/// send no secret).
pub fn refresh_token_form(client_id: &str, client_secret: Option<&str>, refresh_token: &str, scope: &str) -> String {
    let mut pairs = vec![("grant_type", "refresh_token"), ("client_id", client_id)];
    if let Some(secret) = client_secret {
        pairs.push(("client_secret", secret));
    }
    pairs.push(("refresh_token", refresh_token));
    pairs.push(("scope", scope));
    form(&pairs)
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        form_encode(&mut out, k);
        out.push('=');
        form_encode(&mut out, v);
    }
    out
}

/// WHATWG `application/x-www-form-urlencoded` byte serialisation: alphanumerics and `*-._`
/// stay, space becomes `+`, everything else `%XX`.
fn form_encode(out: &mut String, s: &str) {
    fn hex(n: u8) -> char {
        let n = n & 0x0f;
        char::from(if n < 10 { b'0' + n } else { b'A' + n - 10 })
    }
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(hex(b >> 4));
                out.push(hex(b));
            }
        }
    }
}

/// An error answer of the token endpoint (`{"error":"invalid_grant","error_description":…}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// The error code (`invalid_grant`, `invalid_client`…), bounded to 64 bytes.
    pub error: String,
    /// `error_description` (AADSTS text), bounded to 1024 bytes.
    pub description: Option<String>,
}

/// Parses a token endpoint error; `None` when the body is not one.
pub fn parse_oauth_error(body: &[u8]) -> Option<OAuthError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default, deserialize_with = "lenient")]
        error: Option<String>,
        #[serde(default, deserialize_with = "lenient")]
        error_description: Option<String>,
    }
    let raw: Raw = from_json(body).ok()?;
    let error = raw.error.map(|e| e.trim().to_string()).filter(|e| !e.is_empty())?;
    Some(OAuthError {
        error: truncate(&error, MAX_SHORT).to_string(),
        description: raw.error_description.map(|d| truncate(d.trim(), MAX_TEXT).to_string()).filter(|d| !d.is_empty()),
    })
}

/// A Graph error body: `{"error":{"code":"TooManyRequests","message":"…"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    /// `error.code`, bounded to 64 bytes.
    pub code: String,
    /// `error.message` (empty when absent), bounded to 1024 bytes.
    pub message: String,
}

/// Parses a Graph error body; `None` when the body is not one.
pub fn parse_graph_error(body: &[u8]) -> Option<GraphError> {
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default, deserialize_with = "lenient")]
        code: Option<String>,
        #[serde(default, deserialize_with = "lenient")]
        message: Option<String>,
    }
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default, deserialize_with = "lenient")]
        error: Option<Inner>,
    }
    let inner = from_json::<Raw>(body).ok()?.error?;
    let code = inner.code.map(|c| c.trim().to_string()).filter(|c| !c.is_empty())?;
    Some(GraphError {
        code: truncate(&code, MAX_SHORT).to_string(),
        message: inner.message.map(|m| truncate(m.trim(), MAX_TEXT).to_string()).unwrap_or_default(),
    })
}

/// A `Retry-After` header value as a wait in milliseconds from `now`: delta-seconds or an
/// HTTP-date (IMF-fixdate, plus the obsolete RFC 850 and asctime forms). A date in the past
/// gives 0; the wait is capped at [`MAX_RETRY_AFTER_MS`]. `None` when unparsable.
pub fn retry_after(value: &str, now: UnixMs) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() || v.len() > 64 {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: only overflow can fail, and an overflowing wait is capped anyway.
        let secs = v.parse::<u64>().unwrap_or(u64::MAX);
        return Some(secs.saturating_mul(1000).min(MAX_RETRY_AFTER_MS));
    }
    let at = http_date(v)?;
    let wait = at.saturating_sub(now).clamp(0, MAX_RETRY_AFTER_MS as i64);
    u64::try_from(wait).ok()
}

fn http_date(v: &str) -> Option<UnixMs> {
    static RFC2822: jiff::fmt::rfc2822::DateTimeParser = jiff::fmt::rfc2822::DateTimeParser::new();
    if let Ok(t) = RFC2822.parse_timestamp(v) {
        return Some(t.as_millisecond());
    }
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"].iter().find_map(|f| {
        let dt = jiff::fmt::strtime::parse(f, v).ok()?.to_datetime().ok()?;
        jiff::tz::Offset::UTC.to_timestamp(dt).ok().map(|t| t.as_millisecond())
    })
}

// ---------------------------------------------------------------------------------------------
// Text

/// Status and out-of-office messages to one line of plain text: tags dropped (with the
/// contents of `head`, `style`, `script`, `title` and comments), block tags as spaces, common
/// entities decoded, control characters removed, whitespace collapsed, bounded like a note.
fn clean_text(raw: &str) -> Option<String> {
    let text = decode_entities(&strip_tags(truncate(raw, MAX_HTML_INPUT)));
    let text: String = text.chars().filter(|c| !c.is_control() || c.is_whitespace()).collect();
    let mut out = String::with_capacity(text.len().min(2 * MAX_NOTE_LEN));
    for word in text.split_whitespace() {
        if out.len() > 2 * MAX_NOTE_LEN {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    bounded_note(truncate(&out, MAX_NOTE_LEN)).map(String::from)
}

const RAW_TEXT_TAGS: [&str; 4] = ["head", "style", "script", "title"];
const BLOCK_TAGS: [&str; 21] = [
    "br",
    "p",
    "div",
    "li",
    "ul",
    "ol",
    "tr",
    "td",
    "th",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "blockquote",
    "pre",
    "body",
    "html",
];

/// Drops tags. A `<` starts a tag only when followed by a letter, `/`, `!` or `?` and closed
/// by a later `>`; otherwise it is text ("a < b", "<3"). Linear in the input.
fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut skipping: Option<&'static str> = None;
    let mut no_more_gt = false;
    while let Some(lt) = rest.find('<') {
        if skipping.is_none() {
            out.push_str(rest.get(..lt).unwrap_or(""));
        }
        let after = rest.get(lt + 1..).unwrap_or("");
        if let Some(comment) = after.strip_prefix("!--") {
            match comment.find("-->") {
                Some(end) => {
                    rest = comment.get(end + 3..).unwrap_or("");
                    continue;
                }
                None => return out,
            }
        }
        let starts_tag =
            after.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || matches!(b, b'/' | b'!' | b'?'));
        let gt = if starts_tag && !no_more_gt { after.find('>') } else { None };
        match gt {
            Some(gt) => {
                let inner = after.get(..gt).unwrap_or("");
                let closing = inner.starts_with('/');
                let name: String = inner
                    .trim_start_matches('/')
                    .bytes()
                    .take_while(u8::is_ascii_alphanumeric)
                    .take(16)
                    .map(|b| char::from(b.to_ascii_lowercase()))
                    .collect();
                match skipping {
                    Some(end) => {
                        if closing && name == end {
                            skipping = None;
                        }
                    }
                    None => {
                        if !closing && !inner.ends_with('/') {
                            skipping = RAW_TEXT_TAGS.iter().copied().find(|t| *t == name);
                        }
                        if BLOCK_TAGS.contains(&name.as_str()) {
                            out.push(' ');
                        }
                    }
                }
                rest = after.get(gt + 1..).unwrap_or("");
            }
            None => {
                // No '>' after this point means none after any later '<' either.
                no_more_gt |= starts_tag;
                if skipping.is_none() {
                    out.push('<');
                }
                rest = after;
            }
        }
    }
    if skipping.is_none() {
        out.push_str(rest);
    }
    out
}

/// Decodes `&amp; &lt; &gt; &quot; &apos; &nbsp; &ndash; &mdash; &hellip;` and numeric
/// references; anything else stays as written. `&nbsp;` becomes a plain space.
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(rest.get(..amp).unwrap_or(""));
        let after = rest.get(amp + 1..).unwrap_or("");
        let semi = after.bytes().take(10).position(|b| b == b';');
        match semi.and_then(|n| Some((n, entity(after.get(..n)?)?))) {
            Some((n, c)) => {
                out.push(c);
                rest = after.get(n + 1..).unwrap_or("");
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "ndash" => '\u{2013}',
        "mdash" => '\u{2014}',
        "hellip" => '\u{2026}',
        _ => {
            let num = name.strip_prefix('#')?;
            let n = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse::<u32>().ok()?,
            };
            match char::from_u32(n)? {
                '\u{a0}' => ' ',
                c => c,
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// JSON helpers

fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    if body.len() > MAX_BODY {
        return Err(ParseError::TooLarge { len: body.len(), max: MAX_BODY });
    }
    serde_json::from_slice(body).map_err(json_error)
}

fn json_error(e: serde_json::Error) -> ParseError {
    let msg = e.to_string();
    let msg = truncate(&msg, MAX_ERROR_MESSAGE).to_string();
    match e.classify() {
        serde_json::error::Category::Data => ParseError::Shape(msg),
        _ => ParseError::NotJson(msg),
    }
}

/// `deserialize_with` for optional fields: a value of the wrong shape becomes `None` instead
/// of failing the whole object.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let v = Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

/// A JSON array of which at most `N` items are kept; the rest are counted, not stored.
struct Capped<T, const N: usize> {
    items: Vec<T>,
    total: usize,
}

impl<T, const N: usize> Capped<T, N> {
    fn check(self, what: &'static str) -> Result<Vec<T>, ParseError> {
        if self.total > N {
            return Err(ParseError::TooMany { what, n: self.total, max: N });
        }
        Ok(self.items)
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Capped<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for V<T, N> {
            type Value = Capped<T, N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                let mut total = 0usize;
                loop {
                    let more = if total < N {
                        seq.next_element::<T>()?.map(|x| items.push(x)).is_some()
                    } else {
                        seq.next_element::<IgnoredAny>()?.is_some()
                    };
                    if !more {
                        break;
                    }
                    total += 1;
                }
                Ok(Capped { items, total })
            }
        }
        d.deserialize_seq(V::<T, N>(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::{Mutator, Xorshift};

    const TEAMS_TABLE: &[u8] = include_bytes!("../../../fixtures/graph/presences_teams_table.json");
    const CAMELCASE: &[u8] = include_bytes!("../../../fixtures/graph/presence_camelcase_focusing.json");
    const STATUS_EXPIRY: &[u8] = include_bytes!("../../../fixtures/graph/presence_status_message_expiry.json");
    const STATUS_PLAIN: &[u8] = include_bytes!("../../../fixtures/graph/presence_status_message_plain.json");
    const OOO: &[u8] = include_bytes!("../../../fixtures/graph/presence_ooo.json");
    const ONE_BAD: &[u8] = include_bytes!("../../../fixtures/graph/presences_one_bad_item.json");
    const TWO_SUBS: &[u8] = include_bytes!("../../../fixtures/graph/notifications_two_subscriptions.json");
    const ENCRYPTED: &[u8] = include_bytes!("../../../fixtures/graph/notification_encrypted.json");
    const LIFECYCLE: &[u8] = include_bytes!("../../../fixtures/graph/lifecycle_reauthorization_required.json");
    const ERROR_429: &[u8] = include_bytes!("../../../fixtures/graph/error_429.json");
    const TOKEN: &[u8] = include_bytes!("../../../fixtures/graph/token_response.json");
    const INVALID_GRANT: &[u8] = include_bytes!("../../../fixtures/graph/oauth_invalid_grant.json");
    const SUBSCRIPTION: &[u8] = include_bytes!("../../../fixtures/graph/subscription_created.json");

    const ALL_FIXTURES: [&[u8]; 13] = [
        TEAMS_TABLE,
        CAMELCASE,
        STATUS_EXPIRY,
        STATUS_PLAIN,
        OOO,
        ONE_BAD,
        TWO_SUBS,
        ENCRYPTED,
        LIFECYCLE,
        ERROR_429,
        TOKEN,
        INVALID_GRANT,
        SUBSCRIPTION,
    ];

    fn ms(s: &str) -> UnixMs {
        parse_rfc3339(s).expect("test time")
    }

    fn all_ok(json: &[u8]) -> Vec<GraphPresence> {
        parse_presences(json).expect("envelope").into_iter().map(|r| r.expect("item")).collect()
    }

    #[test]
    fn teams_table_maps_every_pair() {
        use Activity as Ac;
        use Availability as Av;
        let want: [(Av, Option<Ac>, bool); 15] = [
            (Av::Available, None, false),
            (Av::Available, Some(Ac::OutOfOffice), true),
            (Av::Busy, None, false),
            (Av::Busy, Some(Ac::InACall), false),
            (Av::Busy, Some(Ac::InAMeeting), false),
            (Av::DoNotDisturb, None, false),
            (Av::DoNotDisturb, Some(Ac::Presenting), false),
            (Av::Away, None, false),
            (Av::BeRightBack, None, false),
            (Av::Offline, Some(Ac::OffWork), false),
            (Av::Busy, Some(Ac::InAConferenceCall), false),
            (Av::AvailableIdle, Some(Ac::Inactive), false),
            (Av::BusyIdle, Some(Ac::Inactive), false),
            (Av::DoNotDisturb, Some(Ac::UrgentInterruptionsOnly), false),
            (Av::Unknown, None, false),
        ];
        let got = all_ok(TEAMS_TABLE);
        assert_eq!(got.len(), want.len());
        for (i, (p, (av, ac, ooo))) in got.iter().zip(want).enumerate() {
            let n = i + 1;
            assert_eq!(p.id, format!("6e1c0a0b-{n:04}-4c2e-9a0f-1b2c3d4e5f{n:02}"));
            assert_eq!((p.availability, p.activity.clone()), (av, ac.clone()), "row {n}");
            assert_eq!(p.ooo, ooo, "row {n}");
            assert_eq!(p.unknown, None, "row {n}");
            assert_eq!(p.sequence.as_deref(), Some(format!("C1_{:010}", 1000 + n).as_str()));
            assert_eq!(
                (p.status_message.as_deref(), p.ooo_message.as_deref(), p.work_location.as_deref()),
                (None, None, None)
            );

            let s = p.to_signal(1_000);
            assert_eq!(s.source, Source::Teams);
            assert_eq!(&*s.instance, "teams");
            assert_eq!(s.availability, av.is_known().then_some(av));
            assert_eq!(s.activity, ac);
            assert_eq!(s.ooo, ooo);
            assert_eq!(s.note, None);
            assert_eq!(s.version, Some(Version::Text(format!("C1_{:010}", 1000 + n).into())));
            assert_eq!((s.valid_from, s.valid_until, s.observed_at), (None, None, 1_000));
        }
        // PresenceUnknown: no opinion at all.
        assert!(got[14].to_signal(0).is_retraction());
    }

    #[test]
    fn camelcase_values_parse_and_focusing_is_recorded_as_unknown() {
        let got = all_ok(CAMELCASE);
        let view: Vec<_> = got
            .iter()
            .map(|p| (p.availability, p.activity.clone(), p.unknown.as_deref(), p.sequence.as_deref()))
            .collect();
        assert_eq!(
            view,
            vec![
                (Availability::DoNotDisturb, Some(Activity::Presenting), None, Some("C1_0000002001")),
                (Availability::BeRightBack, None, None, Some("C1_0000002002")),
                (Availability::AvailableIdle, Some(Activity::Inactive), None, Some("C1_0000002003")),
                (Availability::Busy, None, Some("focusing"), Some("C1_0000002004")),
                (Availability::Unknown, Some(Activity::InAMeeting), Some("focusing"), Some("C1_0000002005")),
                (Availability::Unknown, None, None, None),
            ]
        );
        // Busy/focusing keeps Busy; an unknown availability is no opinion (activity dropped too).
        let busy = got[3].to_signal(5);
        assert_eq!((busy.availability, busy.activity.clone()), (Some(Availability::Busy), None));
        let focusing = got[4].to_signal(5);
        assert_eq!((focusing.availability, focusing.activity.clone()), (None, None));
        assert!(focusing.is_retraction());
    }

    #[test]
    fn status_message_with_expiry_is_cleaned_and_expires() {
        let p = parse_presence(STATUS_EXPIRY).expect("presence");
        assert_eq!(p.id, "5b4c7a62-2f1e-4d3a-9c8b-7e6f5d4c3b2a");
        assert_eq!((p.availability, p.activity.clone()), (Availability::Busy, Some(Activity::InAMeeting)));
        assert_eq!(p.status_message.as_deref(), Some("Board review & budget <Q3> \u{2013} call \"Lena\" at 4711"));
        assert_eq!(p.status_expires_at, Some(ms("2024-05-06T17:00:00Z")));
        assert_eq!(p.work_location.as_deref(), Some("office"));
        assert!(!p.ooo);
        assert_eq!(p.ooo_message, None);

        let before = p.to_signal(ms("2024-05-06T16:59:59Z"));
        assert_eq!(before.note.as_deref(), p.status_message.as_deref());
        assert_eq!(before.version, Some(Version::Text("C1_0000003001".into())));
        assert_eq!(before.valid_until, None);
        let after = p.to_signal(ms("2024-05-06T17:00:00Z"));
        assert_eq!(after.note, None);
        assert_eq!(after.availability, Some(Availability::Busy));
    }

    #[test]
    fn status_message_without_expiry_is_trimmed() {
        let p = parse_presence(STATUS_PLAIN).expect("presence");
        assert_eq!(p.status_message.as_deref(), Some("Working from the Malmö office today"));
        assert_eq!(p.status_expires_at, None);
        assert_eq!(p.work_location, None, "unspecified is no location");
        let s = p.to_signal(ms("2030-01-01T00:00:00Z"));
        assert_eq!(s.note.as_deref(), Some("Working from the Malmö office today"));
        assert_eq!((s.availability, s.activity), (Some(Availability::Available), None));
    }

    #[test]
    fn out_of_office_sets_flag_and_note() {
        let p = parse_presence(OOO).expect("presence");
        assert!(p.ooo);
        assert_eq!(p.activity, Some(Activity::OutOfOffice));
        assert_eq!(p.status_message, None);
        assert_eq!(
            p.ooo_message.as_deref(),
            Some("I am away until 13 May. For urgent matters call the switchboard \u{2013} ext. 100.")
        );
        assert_eq!(p.work_location.as_deref(), Some("timeOff"));
        let s = p.to_signal(7);
        assert_eq!(
            (s.availability, s.activity.clone(), s.ooo),
            (Some(Availability::Available), Some(Activity::OutOfOffice), true)
        );
        assert_eq!(s.note.as_deref(), p.ooo_message.as_deref());
        assert_eq!(s.version, Some(Version::Text("C1_0000005001".into())));
    }

    #[test]
    fn ooo_comes_from_settings_or_activity() {
        let by_settings = br#"{"id":"u1","availability":"Busy","activity":"InAMeeting",
            "outOfOfficeSettings":{"isOutOfOffice":true,"message":"Back Monday"},
            "statusMessage":{"message":{"content":"Ask Pia","contentType":"text"}}}"#;
        let p = parse_presence(by_settings).expect("presence");
        assert!(p.ooo);
        assert_eq!(p.activity, Some(Activity::InAMeeting));
        // A status message wins over the OOO message as the note.
        assert_eq!(p.to_signal(0).note.as_deref(), Some("Ask Pia"));

        let by_activity = br#"{"id":"u2","availability":"Away","activity":"OutOfOffice","outOfOfficeSettings":{"isOutOfOffice":false}}"#;
        assert!(parse_presence(by_activity).expect("presence").ooo);

        let not_ooo = br#"{"id":"u3","availability":"Away","activity":"Away","outOfOfficeSettings":{"isOutOfOffice":false,"message":"old text"}}"#;
        let p = parse_presence(not_ooo).expect("presence");
        assert!(!p.ooo);
        assert_eq!(p.ooo_message.as_deref(), Some("old text"));
        assert_eq!(p.to_signal(0).note, None, "the OOO message is a note only while out of office");

        // PresenceUnknown keeps the independent OOO fact.
        let unknown_ooo = br#"{"id":"u4","availability":"PresenceUnknown","activity":"OutOfOffice"}"#;
        let s = parse_presence(unknown_ooo).expect("presence").to_signal(0);
        assert_eq!((s.availability, s.activity, s.ooo), (None, None, true));
    }

    #[test]
    fn one_bad_item_does_not_lose_the_others() {
        let got = parse_presences(ONE_BAD).expect("envelope");
        assert_eq!(got.len(), 5);
        let first = got[0].as_ref().expect("first");
        assert_eq!(
            (first.id.as_str(), first.activity.clone()),
            ("11111111-2222-4333-8444-555555555501", Some(Activity::InACall))
        );
        assert_eq!(got[1], Err(ParseError::Missing("id")));
        assert!(matches!(got[2], Err(ParseError::Shape(_))), "{:?}", got[2]);
        assert!(matches!(got[3], Err(ParseError::Shape(_))), "{:?}", got[3]);
        let last = got[4].as_ref().expect("wrong-shaped optional fields are ignored");
        assert_eq!(
            (last.availability, last.status_message.clone(), last.ooo, last.work_location.clone()),
            (Availability::Away, None, false, None)
        );
    }

    #[test]
    fn presence_errors_are_clear() {
        assert!(matches!(parse_presence(b"not json"), Err(ParseError::NotJson(_))));
        assert!(matches!(parse_presence(b"{\"id\":"), Err(ParseError::NotJson(_))));
        assert!(matches!(parse_presence(b"[]"), Err(ParseError::Shape(_))));
        assert_eq!(parse_presence(b"{}"), Err(ParseError::Missing("id")));
        assert_eq!(parse_presence(b"{}").map_err(|e| e.to_string()), Err("missing field id".to_string()));
        assert_eq!(parse_presence(br#"{"id":null}"#), Err(ParseError::Missing("id")));
        assert!(matches!(parse_presence(br#"{"id":"  "}"#), Err(ParseError::Invalid { field: "id", .. })));
        let long = format!(r#"{{"id":"{}"}}"#, "a".repeat(101));
        assert!(matches!(parse_presence(long.as_bytes()), Err(ParseError::Invalid { field: "id", .. })));
        let ok = format!(r#"{{"id":"{}"}}"#, "a".repeat(100));
        let p = parse_presence(ok.as_bytes()).expect("100 bytes is fine");
        assert_eq!((p.availability, p.activity, p.unknown), (Availability::Unknown, None, None));
        let big = vec![b' '; MAX_BODY + 1];
        assert_eq!(parse_presence(&big), Err(ParseError::TooLarge { len: MAX_BODY + 1, max: MAX_BODY }));
        assert_eq!(
            parse_presence(&big).map_err(|e| e.to_string()),
            Err(format!("body too large: {} > {MAX_BODY} bytes", MAX_BODY + 1))
        );
        assert_eq!(parse_presences(br#"{"value":null}"#), Err(ParseError::Missing("value")));
        assert!(matches!(parse_presences(br#"{"value":{}}"#), Err(ParseError::Shape(_))));
        let many = format!(r#"{{"value":[{}]}}"#, vec!["{}"; MAX_ITEMS + 1].join(","));
        assert_eq!(
            parse_presences(many.as_bytes()),
            Err(ParseError::TooMany { what: "presences", n: MAX_ITEMS + 1, max: MAX_ITEMS })
        );
    }

    #[test]
    fn expiry_time_zones() {
        let with = |dt: &str, tz: &str| {
            let body = format!(
                r#"{{"id":"u","statusMessage":{{"message":{{"content":"x"}},"expiryDateTime":{{"dateTime":"{dt}","timeZone":"{tz}"}}}}}}"#
            );
            parse_presence(body.as_bytes()).expect("presence").status_expires_at
        };
        assert_eq!(with("2024-05-06T17:00:00.0000000", "UTC"), Some(ms("2024-05-06T17:00:00Z")));
        assert_eq!(with("2024-05-06T17:00:00", "utc"), Some(ms("2024-05-06T17:00:00Z")));
        assert_eq!(with("2024-05-06T17:00:00+02:00", "W. Europe Standard Time"), Some(ms("2024-05-06T15:00:00Z")));
        assert_eq!(with("2024-05-06T17:00:00Z", "Pacific Standard Time"), Some(ms("2024-05-06T17:00:00Z")));
        assert_eq!(with("2024-05-06T17:00:00", "W. Europe Standard Time"), None);
        assert_eq!(with("2024-05-06T17:00:00", ""), None);
        assert_eq!(with("9999-12-31T23:59:59.9999999", "UTC"), None, "year 9999 means never");
        assert_eq!(with("tomorrow", "UTC"), None);
    }

    #[test]
    fn request_body_takes_650_ids_and_refuses_651() {
        let ids: Vec<String> = (0..651).map(|i| format!("00000000-0000-4000-8000-{i:012}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let body = presences_request_body(&refs[..650]).expect("650 ids");
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["ids"].as_array().map(Vec::len), Some(650));
        assert_eq!(v["ids"][649], "00000000-0000-4000-8000-000000000649");
        let err = presences_request_body(&refs).expect_err("651 ids");
        assert_eq!(err, ParseError::TooMany { what: "ids", n: 651, max: 650 });
        assert_eq!(err.to_string(), "too many ids: 651 > 650");
        assert_eq!(presences_request_body(&[]), Err(ParseError::Empty("ids")));
        assert_eq!(presences_request_body(&["a", "b"]).as_deref(), Ok(r#"{"ids":["a","b"]}"#));
        assert!(matches!(presences_request_body(&["a", ""]), Err(ParseError::Invalid { field: "ids", .. })));
        assert!(matches!(presences_request_body(&["a b"]), Err(ParseError::Invalid { field: "ids", .. })));

        assert_eq!(
            presence_filter_resource(&["a", "b'c"]).as_deref(),
            Ok("/communications/presences?$filter=id in ('a','b''c')")
        );
        let resource = presence_filter_resource(&refs[..650]).expect("650 ids");
        assert_eq!(resource.matches("','").count(), 649);
        assert_eq!(presence_filter_resource(&refs), Err(ParseError::TooMany { what: "ids", n: 651, max: 650 }));
        assert_eq!(presence_filter_resource(&[]), Err(ParseError::Empty("ids")));
    }

    #[test]
    fn notification_batch_mixing_two_subscriptions() {
        let b = parse_notifications(TWO_SUBS).expect("batch");
        assert_eq!(b.value.len(), 3);
        assert_eq!(b.invalid, vec![(3, ParseError::Missing("subscriptionId"))]);
        assert!(b.validation_tokens.is_empty());
        let view: Vec<_> = b
            .value
            .iter()
            .map(|n| {
                (n.subscription_id.as_str(), n.client_state.as_deref(), n.user_id.as_deref(), n.subscription_expires_at)
            })
            .collect();
        assert_eq!(
            view,
            vec![
                (
                    "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
                    Some("hub-secret-A"),
                    Some("6e1c0a0b-0001-4c2e-9a0f-1b2c3d4e5f01"),
                    Some(ms("2024-05-06T10:00:00Z"))
                ),
                (
                    "c4a1b9f2-8e3d-4f6a-b0c1-2d3e4f5a6b7c",
                    Some("hub-secret-B"),
                    Some("0c7d2a51-1111-4b6e-8d3e-5a9f00000004"),
                    Some(ms("2024-05-06T10:30:00Z"))
                ),
                (
                    "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
                    Some("hub-secret-A"),
                    Some("6e1c0a0b-0002-4c2e-9a0f-1b2c3d4e5f02"),
                    Some(ms("2024-05-06T10:00:00Z"))
                ),
            ]
        );
        for n in &b.value {
            assert_eq!(n.change_type.as_deref(), Some("updated"));
            assert_eq!(
                n.tenant_id.as_deref(),
                Some("bb8775a4-4d8c-42cf-a1d4-4d58c2bb668f"),
                "tenantId or organizationId"
            );
            assert_eq!(
                (n.encrypted.as_ref(), n.lifecycle_event.as_ref(), n.sequence_hint.as_deref()),
                (None, None, None)
            );
        }
        assert_eq!(
            b.value[0].resource.as_deref(),
            Some("communications/presences/6e1c0a0b-0001-4c2e-9a0f-1b2c3d4e5f01")
        );
    }

    #[test]
    fn encrypted_notification_envelope() {
        let b = parse_notifications(ENCRYPTED).expect("batch");
        assert!(b.invalid.is_empty());
        assert_eq!(
            b.validation_tokens,
            vec!["eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJwbGFjZWhvbGRlciJ9.c2lnbmF0dXJlLXBsYWNlaG9sZGVy"
                .to_string()]
        );
        let n = &b.value[0];
        assert_eq!(n.user_id.as_deref(), Some("5b4c7a62-2f1e-4d3a-9c8b-7e6f5d4c3b2a"));
        assert_eq!(
            n.encrypted,
            Some(EncryptedContent {
                data: "UExBQ0VIT0xERVItQ0lQSEVSVEVYVC1HRU5FUkFURUQtTEFURVI=".into(),
                data_signature: "UExBQ0VIT0xERVItSE1BQy1TSEEyNTY=".into(),
                data_key: "UExBQ0VIT0xERVItUlNBLU9BRVAtV1JBUFBFRC1LRVk=".into(),
                certificate_id: Some("hub-cert-1".into()),
                certificate_thumbprint: Some("3A5F0B8C9D1E2F3A4B5C6D7E8F9A0B1C2D3E4F50".into()),
            })
        );
        // An envelope without the key cannot be decrypted: the item is invalid, not dropped silently.
        let no_key = br#"{"value":[{"subscriptionId":"s","encryptedContent":{"data":"x","dataSignature":"y"}}]}"#;
        let b = parse_notifications(no_key).expect("batch");
        assert_eq!(b.invalid, vec![(0, ParseError::Missing("encryptedContent.dataKey"))]);
    }

    #[test]
    fn decrypted_notification_data_is_a_presence() {
        let data = br##"{"@odata.id":"users/5b4c7a62/presence","@odata.type":"#microsoft.graph.presence",
            "id":"5b4c7a62","availability":"Busy","activity":"InACall"}"##;
        let p = parse_presence(data).expect("presence");
        assert_eq!(
            (p.id.as_str(), p.availability, p.activity.clone()),
            ("5b4c7a62", Availability::Busy, Some(Activity::InACall))
        );
        assert_eq!((p.sequence.as_deref(), p.status_message.as_deref(), p.ooo), (None, None, false));
        let s = p.to_signal(9);
        assert_eq!((s.availability, s.activity, s.version), (Some(Availability::Busy), Some(Activity::InACall), None));

        // The faded state of a setPresence session.
        let faded = br#"{"id":"u","availability":"Available","activity":"AvailableInactive"}"#;
        let p = parse_presence(faded).expect("presence");
        assert_eq!((p.activity, p.unknown), (Some(Activity::Inactive), None));
    }

    #[test]
    fn lifecycle_reauthorization_required() {
        let b = parse_notifications(LIFECYCLE).expect("batch");
        let n = &b.value[0];
        assert_eq!(n.lifecycle_event, Some(LifecycleEvent::ReauthorizationRequired));
        assert_eq!(n.subscription_id, "7f105c7d-2dc5-4530-97cd-4e7ae6534c07");
        assert_eq!(n.client_state.as_deref(), Some("hub-secret-A"));
        assert_eq!(n.user_id, None, "a $filter resource names no single user");
        assert_eq!(n.subscription_expires_at, Some(ms("2024-05-06T10:00:00Z")));
        let others = br#"{"value":[{"subscriptionId":"s","lifecycleEvent":"subscriptionRemoved"},
            {"subscriptionId":"s","lifecycleEvent":"Missed"},{"subscriptionId":"s","lifecycleEvent":"somethingNew"}]}"#;
        let events: Vec<_> =
            parse_notifications(others).expect("batch").value.into_iter().map(|n| n.lifecycle_event).collect();
        assert_eq!(
            events,
            vec![
                Some(LifecycleEvent::SubscriptionRemoved),
                Some(LifecycleEvent::Missed),
                Some(LifecycleEvent::Other("somethingNew".into()))
            ]
        );
    }

    #[test]
    fn notification_limits_and_user_id_forms() {
        let items = |n: usize| format!(r#"{{"value":[{}]}}"#, vec![r#"{"subscriptionId":"s"}"#; n].join(","));
        assert_eq!(parse_notifications(items(MAX_ITEMS).as_bytes()).map(|b| b.value.len()), Ok(MAX_ITEMS));
        assert_eq!(
            parse_notifications(items(MAX_ITEMS + 1).as_bytes()),
            Err(ParseError::TooMany { what: "notifications", n: MAX_ITEMS + 1, max: MAX_ITEMS })
        );
        assert_eq!(parse_notifications(b"{}"), Err(ParseError::Missing("value")));
        let long_state = format!(r#"{{"value":[{{"subscriptionId":"s","clientState":"{}"}}]}}"#, "c".repeat(256));
        assert!(matches!(
            parse_notifications(long_state.as_bytes()).expect("batch").invalid[..],
            [(0, ParseError::Invalid { field: "clientState", .. })]
        ));

        for (path, want) in [
            ("communications/presences/abc", Some("abc")),
            ("/Communications/Presences('abc')", Some("abc")),
            ("users/abc/presence", Some("abc")),
            ("users('abc')/presence", Some("abc")),
            ("communications/presences?$filter=id in ('a')", None),
            ("communications/presences/", None),
            ("usersabc/presence", None),
            ("é", None),
        ] {
            assert_eq!(user_id_from_path(path).as_deref(), want, "{path}");
        }
        let from_odata = br#"{"value":[{"subscriptionId":"s","resourceData":{"@odata.id":"users/u9/presence","sequenceNumber":"C1_9"}}]}"#;
        let n = &parse_notifications(from_odata).expect("batch").value[0];
        assert_eq!((n.user_id.as_deref(), n.sequence_hint.as_deref()), (Some("u9"), Some("C1_9")));
    }

    #[test]
    fn validation_token_is_url_decoded() {
        let q = "validationToken=Validation%3a+Testing+client+application+reachability+for+subscription+Request-Id%3a+5f4c2b1e-0000-4000-8000-000000000001";
        assert_eq!(
            validation_token(q).as_deref(),
            Some("Validation: Testing client application reachability for subscription Request-Id: 5f4c2b1e-0000-4000-8000-000000000001")
        );
        assert_eq!(validation_token("?a=1&validationToken=x%2By%C3%A5&b=2").as_deref(), Some("x+yå"));
        assert_eq!(validation_token("validationToken=100%25+sure%zz%4").as_deref(), Some("100% sure%zz%4"));
        assert_eq!(validation_token("validationToken=").as_deref(), Some(""));
        assert_eq!(validation_token("a=1&b=2"), None);
        assert_eq!(validation_token(""), None);
        assert_eq!(validation_token("validationTokenX=1"), None);
        let max = format!("validationToken={}", "t".repeat(MAX_VALIDATION_TOKEN));
        assert_eq!(validation_token(&max).map(|t| t.len()), Some(MAX_VALIDATION_TOKEN));
        let over = format!("validationToken={}", "t".repeat(MAX_VALIDATION_TOKEN + 1));
        assert_eq!(validation_token(&over), None);
    }

    #[test]
    fn subscriptions_are_built_and_parsed() {
        let s = parse_subscription(SUBSCRIPTION).expect("subscription");
        assert_eq!(s.id, "7f105c7d-2dc5-4530-97cd-4e7ae6534c07");
        assert_eq!(s.client_state.as_deref(), Some("hub-secret-A"));
        assert_eq!(s.expires_at, Some(ms("2024-05-06T10:00:00Z")));
        assert_eq!(
            s.resource.as_deref(),
            Some("/communications/presences?$filter=id in ('6e1c0a0b-0001-4c2e-9a0f-1b2c3d4e5f01','6e1c0a0b-0002-4c2e-9a0f-1b2c3d4e5f02')")
        );
        assert_eq!(parse_subscription(b"{\"resource\":\"x\"}"), Err(ParseError::Missing("id")));

        let resource = presence_filter_resource(&["u1", "u2"]).expect("resource");
        let exp = ms("2024-05-06T10:00:00.250Z");
        let body = subscription_request_body(
            &resource,
            "https://hub.example.com/graph/notify",
            Some("https://hub.example.com/graph/lifecycle"),
            exp,
            "hub-secret-A",
            true,
            Some(("TUlJQmNlcnQ=", "hub-cert-1")),
        )
        .expect("body");
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "changeType": "updated",
                "notificationUrl": "https://hub.example.com/graph/notify",
                "lifecycleNotificationUrl": "https://hub.example.com/graph/lifecycle",
                "resource": "/communications/presences?$filter=id in ('u1','u2')",
                "expirationDateTime": "2024-05-06T10:00:00Z",
                "clientState": "hub-secret-A",
                "includeResourceData": true,
                "encryptionCertificate": "TUlJQmNlcnQ=",
                "encryptionCertificateId": "hub-cert-1"
            })
        );
        let plain =
            subscription_request_body("/communications/presences/u1", "https://h/n", None, exp, "s", false, None)
                .expect("body");
        assert_eq!(
            plain,
            r#"{"changeType":"updated","notificationUrl":"https://h/n","resource":"/communications/presences/u1","expirationDateTime":"2024-05-06T10:00:00Z","clientState":"s","includeResourceData":false}"#
        );
        let build =
            |state: &str, data: bool| subscription_request_body("/r", "https://h/n", None, exp, state, data, None);
        assert!(build(&"c".repeat(MAX_CLIENT_STATE), false).is_ok());
        assert!(matches!(
            build(&"c".repeat(MAX_CLIENT_STATE + 1), false),
            Err(ParseError::Invalid { field: "clientState", .. })
        ));
        assert!(matches!(build("", false), Err(ParseError::Invalid { field: "clientState", .. })));
        assert!(matches!(build("s", true), Err(ParseError::Invalid { field: "encryptionCertificate", .. })));

        assert_eq!(renewal_body(exp), r#"{"expirationDateTime":"2024-05-06T10:00:00Z"}"#);
        assert_eq!(renewal_body(-5), r#"{"expirationDateTime":"1970-01-01T00:00:00Z"}"#);
        assert_eq!(renewal_body(i64::MAX), r#"{"expirationDateTime":"9999-12-30T22:00:00Z"}"#);
    }

    #[test]
    fn oauth_token_and_errors() {
        let t = parse_token_response(TOKEN).expect("token");
        assert_eq!(t.expires_in, 4703);
        assert_eq!(t.token_type.as_deref(), Some("Bearer"));
        assert_eq!(t.refresh_token.as_deref(), Some("0.AXoA-placeholder-refresh-token"));
        assert!(t.access_token.starts_with("eyJ0eXAi"));
        let as_string = parse_token_response(br#"{"access_token":"a","expires_in":"3599"}"#).expect("token");
        assert_eq!((as_string.expires_in, as_string.refresh_token), (3599, None));
        assert_eq!(parse_token_response(br#"{"access_token":"a"}"#).map(|t| t.expires_in), Ok(DEFAULT_EXPIRES_IN));
        assert!(matches!(
            parse_token_response(br#"{"access_token":"a","expires_in":-1}"#),
            Err(ParseError::Invalid { field: "expires_in", .. })
        ));
        assert!(matches!(
            parse_token_response(br#"{"access_token":"a","expires_in":"soon"}"#),
            Err(ParseError::Invalid { .. })
        ));
        assert_eq!(parse_token_response(INVALID_GRANT), Err(ParseError::Missing("access_token")));
        assert_eq!(parse_oauth_error(TOKEN), None);

        let e = parse_oauth_error(INVALID_GRANT).expect("oauth error");
        assert_eq!(e.error, "invalid_grant");
        assert!(e
            .description
            .as_deref()
            .is_some_and(|d| d.starts_with("AADSTS70008: The provided authorization code")));
        assert_eq!(parse_oauth_error(ERROR_429), None, "a Graph error is not an OAuth error");

        let g = parse_graph_error(ERROR_429).expect("graph error");
        assert_eq!(g, GraphError { code: "TooManyRequests".into(), message: "Please retry again later.".into() });
        assert_eq!(parse_graph_error(INVALID_GRANT), None);
        assert_eq!(parse_graph_error(b"<html>busy</html>"), None);
        assert_eq!(
            parse_graph_error(br#"{"error":{"code":"Forbidden"}}"#),
            Some(GraphError { code: "Forbidden".into(), message: String::new() })
        );
    }

    #[test]
    fn forms_are_percent_encoded() {
        assert_eq!(
            client_credentials_form("id-1", "s3cr3t+/=&~", "https://graph.microsoft.com/.default"),
            "grant_type=client_credentials&client_id=id-1&client_secret=s3cr3t%2B%2F%3D%26%7E&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"
        );
        assert_eq!(
            refresh_token_form("id-1", None, "0.AX å", "Presence.Read.All offline_access"),
            "grant_type=refresh_token&client_id=id-1&refresh_token=0.AX+%C3%A5&scope=Presence.Read.All+offline_access"
        );
        assert_eq!(
            refresh_token_form("id-1", Some("s"), "r", "x"),
            "grant_type=refresh_token&client_id=id-1&client_secret=s&refresh_token=r&scope=x"
        );
        // Round trip through our own decoder.
        let odd = "a+b c%d&e=f/ü";
        let mut enc = String::new();
        form_encode(&mut enc, odd);
        assert_eq!(form_decode(&enc), odd.as_bytes());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = ms("2015-10-21T07:27:30Z");
        assert_eq!(retry_after("120", now), Some(120_000));
        assert_eq!(retry_after(" 0 ", now), Some(0));
        assert_eq!(retry_after("7200", now), Some(MAX_RETRY_AFTER_MS));
        assert_eq!(retry_after("99999999999999999999999", now), Some(MAX_RETRY_AFTER_MS));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(30_000));
        assert_eq!(retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now), Some(30_000));
        assert_eq!(retry_after("Wed Oct 21 07:28:00 2015", now), Some(30_000));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(0), "past date: retry now");
        assert_eq!(retry_after("Thu, 22 Oct 2015 07:28:00 GMT", now), Some(MAX_RETRY_AFTER_MS));
        for bad in ["", "-5", "1.5", "soon", "Wed, 32 Oct 2015 07:28:00 GMT"] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn html_is_reduced_to_text() {
        let cases = [
            ("a < b > c", Some("a < b > c")),
            ("I <3 Teams", Some("I <3 Teams")),
            ("<b>bold</b> and <i>it</i>alic", Some("bold and italic")),
            ("line<br/>break<p>para</p>", Some("line break para")),
            ("x<!-- a > b -->y", Some("xy")),
            ("open <a href='x'", Some("open <a href='x'")),
            ("<style>p{}</style><script>alert(1)</script>shown", Some("shown")),
            ("&lt;b&gt; &amp;amp; &#39;q&#x27; &#0;&#x110000;&bogus; & ;", Some("<b> &amp; 'q' &#x110000;&bogus; & ;")),
            ("<p> </p>&nbsp;", None),
            ("tab\there\r\nnext", Some("tab here next")),
        ];
        for (input, want) in cases {
            assert_eq!(clean_text(input).as_deref(), want, "{input:?}");
        }
        let long = format!("<p>{}</p>", "word ".repeat(1000));
        assert_eq!(clean_text(&long).map(|t| t.len()), Some(MAX_NOTE_LEN - 1), "bounded, trailing space trimmed");
        // Pathological input stays linear.
        let many_open = "<a".repeat(200_000);
        assert_eq!(clean_text(&many_open).map(|t| t.len()), Some(MAX_NOTE_LEN));
    }

    /// Deterministic mutations of every fixture fed to every parser: nothing panics, and enough
    /// mutants still parse to reach the mapping code.
    #[test]
    fn no_input_panics_any_parser() {
        let mut rng = Xorshift::new(0x2545_F491_4F6C_DD1D);
        let fragments: [&[u8]; 24] = [
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b":",
            b"null",
            b"\"",
            b"\\u0000",
            b"\\ud800",
            b"1e999",
            b"-0",
            b"\"value\":[",
            b"\"id\":\"x\"",
            b"\"availability\":\"Busy\"",
            b"\"activity\":{}",
            b"<p>&#x1F600;&amp",
            b"\xff\xfe",
            b"\"expiryDateTime\":{\"dateTime\":\"9999-12-31T23:59:59\",\"timeZone\":\"UTC\"}",
            b"\"expires_in\":\"18446744073709551616\"",
            b"\"subscriptionId\":\"s\"",
            b"\"encryptedContent\":{}",
            b"\"lifecycleEvent\":7",
            b"%zz%",
        ];
        let long = "x".repeat(300);
        let words: [&str; 22] = [
            "",
            " ",
            "Busy",
            "doNotDisturb",
            "focusing",
            "OutOfOffice",
            "AvailableInactive",
            "PresenceUnknown",
            "<p>a &amp; b</p><style>x",
            "&#x1F600;&#99999999999;",
            "9999-12-31T23:59:59.9999999",
            "2024-05-06T17:00:00",
            "2024-05-06T17:00:00+02:00",
            "UTC",
            "communications/presences('x')",
            "users/",
            "reauthorizationRequired",
            "\\u00e5\\n",
            "3599",
            "-1",
            "office",
            &long,
        ];
        let m = Mutator::new(&fragments, &words);
        let mut parsed_ok = 0usize;
        for round in 0..20_000usize {
            let buf = m.mutate(ALL_FIXTURES[round % ALL_FIXTURES.len()], &mut rng);
            let now = (rng.next() % 4_000_000_000_000) as i64;
            if let Ok(p) = parse_presence(&buf) {
                parsed_ok += 1;
                let _ = p.to_signal(now);
            }
            if let Ok(items) = parse_presences(&buf) {
                parsed_ok += 1;
                for p in items.into_iter().flatten() {
                    let _ = p.to_signal(now);
                }
            }
            parsed_ok += usize::from(parse_notifications(&buf).is_ok());
            parsed_ok += usize::from(parse_subscription(&buf).is_ok());
            parsed_ok += usize::from(parse_token_response(&buf).is_ok());
            parsed_ok += usize::from(parse_oauth_error(&buf).is_some());
            parsed_ok += usize::from(parse_graph_error(&buf).is_some());
            let text = String::from_utf8_lossy(&buf);
            let short = truncate(&text, 200);
            let _ = validation_token(&text);
            let _ = validation_token(short);
            let _ = retry_after(short, now);
            let _ = retry_after(truncate(short, 40), now);
            let _ = clean_text(&text);
            let ids: Vec<&str> = short.split(',').collect();
            let _ = presences_request_body(&ids);
            let _ = presence_filter_resource(&ids);
            let with_data = rng.below(2) == 0;
            let _ = subscription_request_body(short, short, Some(short), now, truncate(short, 130), with_data, None);
            let _ = renewal_body(now.wrapping_mul(rng.next() as i64));
        }
        // The mutations must not be so destructive that nothing parses.
        assert!(parsed_ok > 3_000, "only {parsed_ok} parses succeeded");
    }
}
