//! Change and lifecycle notifications as Graph POSTs them to the webhook, and the validation
//! handshake.

use super::*;

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
pub(super) fn user_id_from_path(path: &str) -> Option<String> {
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

pub(super) fn required_id(v: Option<&str>, field: &'static str) -> Result<String, ParseError> {
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
pub(super) fn form_decode(s: &str) -> Vec<u8> {
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
