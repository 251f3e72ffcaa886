//! OAuth2 token requests (RFC 6749) for every provider that needs one: the client-credentials,
//! refresh-token and password grants, the token answer and the error answer, and a cache that
//! keeps an access token until shortly before it expires.
//!
//! - [`parse_token_response`] / [`parse_oauth_error`] and the `*_form` builders are pure.
//! - [`request_token`] posts a form to a token endpoint within [`Limits`].
//! - [`TokenCache`] holds one grant's token and renews it a minute before expiry (or at half
//!   its life, if shorter); [`TokenCache::forget`] after a `401` forces a new one.
//! - [`refresh_grant`] runs a refresh-token grant whose rotated refresh tokens are kept in the
//!   provider's cursor store, so a restart keeps working after Entra or Google rotated the
//!   token; a stored token that stopped working falls back once to the configured one.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::http::{self, CallError, Limits};
use super::json::{from_json, lenient, seconds, ParseError};
use presence_actors::model::activity::truncate;
use presence_actors::provider::Cursors;

/// Lifetime assumed when a token answer has no `expires_in`, in seconds (RFC 6749 makes it
/// optional).
pub const DEFAULT_EXPIRES_IN: u64 = 3600;
/// Longest OAuth error code kept.
const MAX_SHORT: usize = 64;
/// Longest error description kept.
const MAX_TEXT: usize = 1024;
/// Token endpoint answers are small; anything bigger is not one.
pub const TOKEN_LIMITS: Limits = Limits::new(64 * 1024, Duration::from_secs(10));

/// A successful answer of the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenResponse {
    /// The bearer token.
    pub access_token: String,
    /// Lifetime in seconds (a number or a numeric string; [`DEFAULT_EXPIRES_IN`] when absent).
    pub expires_in: u64,
    /// A new refresh token (delegated flows), to store in place of the old one.
    pub refresh_token: Option<String>,
    /// `Bearer`.
    pub token_type: Option<String>,
    /// The OpenID Connect ID token (authorization-code grants with the `openid` scope), unverified.
    pub id_token: Option<String>,
}

/// Parses a token endpoint answer; `access_token` is required.
pub fn parse_token_response(body: &[u8]) -> Result<TokenResponse, ParseError> {
    #[derive(Deserialize)]
    struct Raw {
        access_token: Option<String>,
        expires_in: Option<Value>,
        refresh_token: Option<String>,
        token_type: Option<String>,
        id_token: Option<String>,
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
        id_token: raw.id_token.filter(|t| !t.trim().is_empty()),
    })
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

/// The form of a client-credentials token request.
pub fn client_credentials_form(client_id: &str, client_secret: &str, scope: &str) -> String {
    super::form::encode(&[
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", client_secret),
        ("scope", scope),
    ])
}

/// The form of an authorization-code token request (RFC 6749 §4.1.3) with its PKCE verifier
/// (RFC 7636); the client authenticates separately (HTTP Basic).
pub fn authorization_code_form(client_id: &str, code: &str, redirect_uri: &str, code_verifier: &str) -> String {
    super::form::encode(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", code_verifier),
        ("client_id", client_id),
    ])
}

/// The form of a refresh-token request (public clients send no secret).
pub fn refresh_token_form(client_id: &str, client_secret: Option<&str>, refresh_token: &str, scope: &str) -> String {
    let mut pairs = vec![("grant_type", "refresh_token"), ("client_id", client_id)];
    if let Some(secret) = client_secret {
        pairs.push(("client_secret", secret));
    }
    pairs.push(("refresh_token", refresh_token));
    pairs.push(("scope", scope));
    super::form::encode(&pairs)
}

/// The form of a resource-owner password request (the client authenticates separately, e.g.
/// with HTTP Basic); `scope` is left out when empty.
pub fn password_form(username: &str, password: &str, scope: Option<&str>) -> String {
    let mut pairs = vec![("grant_type", "password"), ("username", username), ("password", password)];
    if let Some(s) = scope.filter(|s| !s.is_empty()) {
        pairs.push(("scope", s));
    }
    super::form::encode(&pairs)
}

/// Posts `form` to the token endpoint `url` (optionally with HTTP Basic client credentials)
/// and reads the answer: a non-200 answer is [`CallError::Token`] with the endpoint's own
/// reason (`invalid_grant: AADSTS…`), except `429` and `5xx`, which are the endpoint's trouble,
/// not the credentials', and keep their status.
pub async fn request_token(
    client: &reqwest::Client,
    url: &str,
    form: String,
    basic: Option<(&str, &str)>,
    limits: Limits,
) -> Result<TokenResponse, CallError> {
    let mut req = client.post(url).header("content-type", "application/x-www-form-urlencoded").header("accept", "application/json").body(form);
    if let Some((u, p)) = basic {
        req = req.basic_auth(u, Some(p));
    }
    let a = http::send(req, limits).await?;
    if a.status == 429 || a.status >= 500 {
        return Err(a.into_error(Duration::from_secs(10)));
    }
    if a.status != 200 {
        let why = parse_oauth_error(&a.body)
            .map(|e| format!("{}{}", e.error, e.description.map(|d| format!(": {d}")).unwrap_or_default()))
            .unwrap_or_else(|| format!("HTTP {}", a.status));
        return Err(CallError::Token(why));
    }
    Ok(parse_token_response(&a.body)?)
}

/// When a token of `expires_in` seconds obtained now should be renewed: a minute before it
/// expires, or at half its life if that is sooner.
pub fn renew_at(expires_in: u64) -> Instant {
    let life = Duration::from_secs(expires_in.max(1));
    Instant::now() + life - Duration::from_secs(60).min(life / 2)
}

/// One grant's access token, cached until [`renew_at`].
pub struct TokenCache {
    url: String,
    form: String,
    basic: Option<(String, String)>,
    limits: Limits,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl TokenCache {
    /// A cache for the grant `form` at `url`.
    pub fn new(url: impl Into<String>, form: String) -> TokenCache {
        TokenCache { url: url.into(), form, basic: None, limits: TOKEN_LIMITS, cached: tokio::sync::Mutex::new(None) }
    }

    /// The client authenticates with HTTP Basic.
    pub fn with_basic(mut self, user: &str, password: &str) -> TokenCache {
        self.basic = Some((user.to_string(), password.to_string()));
        self
    }

    /// Other limits for the token call.
    pub fn with_limits(mut self, limits: Limits) -> TokenCache {
        self.limits = limits;
        self
    }

    /// The token, from the cache or a new request.
    pub async fn get(&self, client: &reqwest::Client) -> Result<String, CallError> {
        let mut g = self.cached.lock().await;
        if let Some((t, until)) = g.as_ref().filter(|(_, until)| *until > Instant::now()) {
            let _ = until;
            return Ok(t.clone());
        }
        let basic = self.basic.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let t = request_token(client, &self.url, self.form.clone(), basic, self.limits).await?;
        *g = Some((t.access_token.clone(), renew_at(t.expires_in)));
        Ok(t.access_token)
    }

    /// Forgets the cached token (after a `401`).
    pub async fn forget(&self) {
        *self.cached.lock().await = None;
    }
}

/// Where a rotated refresh token is kept: the provider's cursor store, under `key`.
pub struct RotationStore<'a> {
    /// The store.
    pub cursors: &'a dyn Cursors,
    /// The provider's name.
    pub provider: &'a str,
    /// The cursor key (e.g. `refresh:{account}`).
    pub key: &'a str,
}

/// A refresh-token grant. The newest refresh token is read from `store` (falling back to
/// `configured`); when the endpoint rotates it, the new one is stored. A stored token that is
/// refused is tried once more as the configured one (an operator may have pasted a new one).
/// With neither a stored nor a configured token nothing is sent: [`CallError::Token`]
/// ([`NO_REFRESH_TOKEN`]).
pub async fn refresh_grant(
    client: &reqwest::Client,
    url: &str,
    client_id: &str,
    client_secret: Option<&str>,
    configured: Option<&str>,
    scope: &str,
    store: RotationStore<'_>,
) -> Result<TokenResponse, CallError> {
    let configured = configured.filter(|c| !c.trim().is_empty());
    let stored = store.cursors.get(store.provider, store.key).filter(|s| !s.is_empty());
    let Some(refresh) = stored.as_deref().or(configured) else {
        return Err(CallError::Token(NO_REFRESH_TOKEN.into()));
    };
    let form = refresh_token_form(client_id, client_secret, refresh, scope);
    let t = match request_token(client, url, form, None, TOKEN_LIMITS).await {
        Err(CallError::Token(_)) if stored.is_some() && configured.is_some_and(|c| c != refresh) => {
            let form = refresh_token_form(client_id, client_secret, configured.unwrap_or_default(), scope);
            let t = request_token(client, url, form, None, TOKEN_LIMITS).await?;
            if t.refresh_token.is_none() {
                store.cursors.set(store.provider, store.key, "");
            }
            t
        }
        other => other?,
    };
    if let Some(new) = t.refresh_token.as_deref().filter(|n| *n != refresh) {
        store.cursors.set(store.provider, store.key, new);
    }
    Ok(t)
}

/// Why [`refresh_grant`] had nothing to send.
pub const NO_REFRESH_TOKEN: &str = "no refresh token (none stored, none configured)";

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = include_bytes!("../../../fixtures/graph/token_response.json");
    const INVALID_GRANT: &[u8] = include_bytes!("../../../fixtures/graph/oauth_invalid_grant.json");
    const GRAPH_429: &[u8] = include_bytes!("../../../fixtures/graph/error_429.json");

    #[test]
    fn token_answers_and_errors() {
        let t = parse_token_response(TOKEN).expect("token");
        assert_eq!(t.expires_in, 4703);
        assert_eq!(t.token_type.as_deref(), Some("Bearer"));
        assert_eq!(t.refresh_token.as_deref(), Some("0.AXoA-placeholder-refresh-token"));
        assert!(t.access_token.starts_with("eyJ0eXAi"));
        let as_string = parse_token_response(br#"{"access_token":"a","expires_in":"3599"}"#).expect("token");
        assert_eq!((as_string.expires_in, as_string.refresh_token), (3599, None));
        assert_eq!(parse_token_response(br#"{"access_token":"a"}"#).map(|t| t.expires_in), Ok(DEFAULT_EXPIRES_IN));
        assert_eq!(parse_token_response(br#"{"access_token":" "}"#), Err(ParseError::Missing("access_token")));
        for bad in [r#"{"access_token":"a","expires_in":-1}"#, r#"{"access_token":"a","expires_in":"soon"}"#] {
            assert!(matches!(parse_token_response(bad.as_bytes()), Err(ParseError::Invalid { field: "expires_in", .. })), "{bad}");
        }
        assert_eq!(parse_token_response(INVALID_GRANT), Err(ParseError::Missing("access_token")));
        assert_eq!(parse_oauth_error(TOKEN), None);
        let e = parse_oauth_error(INVALID_GRANT).expect("oauth error");
        assert_eq!(e.error, "invalid_grant");
        assert!(e.description.as_deref().is_some_and(|d| d.starts_with("AADSTS70008: The provided authorization code")));
        assert_eq!(parse_oauth_error(GRAPH_429), None, "a Graph error is not an OAuth error");
        assert_eq!(parse_oauth_error(b"nope"), None);
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
        assert_eq!(refresh_token_form("id-1", Some("s"), "r", "x"), "grant_type=refresh_token&client_id=id-1&client_secret=s&refresh_token=r&scope=x");
        assert_eq!(password_form("u", "p w", None), "grant_type=password&username=u&password=p+w");
        assert_eq!(password_form("u", "p", Some("s")), "grant_type=password&username=u&password=p&scope=s");
    }
}
