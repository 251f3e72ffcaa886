//! Request bodies for presence reads and subscriptions, and the subscription Graph answers
//! with.

use super::*;

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
