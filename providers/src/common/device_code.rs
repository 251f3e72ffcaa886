//! The OAuth 2.0 device authorization grant (RFC 8628) as the Microsoft identity platform runs
//! it: `presence-hub login graph` signs a service account in with it and keeps the refresh
//! token it brings.
//!
//! 1. `POST {authority}/{tenant}/oauth2/v2.0/devicecode` with `client_id` and `scope` answers
//!    `device_code`, `user_code`, `verification_uri`, `expires_in`, `interval` and `message`
//!    ([`parse_device_code`]).
//! 2. The person opens `verification_uri` anywhere, enters `user_code` and signs in.
//! 3. Meanwhile the client polls the token endpoint with
//!    `grant_type=urn:ietf:params:oauth:grant-type:device_code` every `interval` seconds:
//!    `authorization_pending` → keep polling; `slow_down` → keep polling, 5 s slower from now
//!    on; `expired_token` → the code has expired; `authorization_declined` (Microsoft) or
//!    `access_denied` (RFC 8628) → the person refused; `bad_verification_code` or anything else
//!    → give up ([`poll_outcome`]).
//!
//! The parsers, the forms and [`poll_outcome`] are pure; [`request_device_code`],
//! [`poll_once`] and [`wait_for_token`] talk to the endpoints.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::http::{self, CallError, Limits};
use super::json::{from_json, seconds, ParseError};
use super::oauth::{self, OAuthError, TokenResponse, TOKEN_LIMITS};
use presence_actors::model::activity::truncate;

/// The `grant_type` of a device-code token request.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Polling interval when the answer has none (RFC 8628 § 3.2).
pub const DEFAULT_INTERVAL: u64 = 5;
/// How much slower polling gets after `slow_down` (RFC 8628 § 3.5).
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// Longest code lifetime accepted (Microsoft's default is 15 minutes).
const MAX_EXPIRES_IN: u64 = 3600;
/// Longest interval accepted.
const MAX_INTERVAL: u64 = 60;
/// Polls in a row that may fail for the endpoint's own trouble (5xx, 429, no answer) before
/// the flow gives up.
const MAX_TRANSIENT: u32 = 5;

/// The answer of the device authorization endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceCode {
    /// The code the client polls with (secret: never printed).
    pub device_code: String,
    /// The short code the person enters.
    pub user_code: String,
    /// Where the person enters it (`verification_uri`; the v1 endpoint's `verification_url`).
    pub verification_uri: String,
    /// Lifetime of both codes, in seconds.
    pub expires_in: u64,
    /// Seconds to wait between polls (at least 1; [`DEFAULT_INTERVAL`] when absent).
    pub interval: u64,
    /// Instructions for the person, as the endpoint words them.
    pub message: Option<String>,
}

impl std::fmt::Debug for DeviceCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCode")
            .field("device_code", &"<redacted>")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .field("message", &self.message)
            .finish()
    }
}

/// Parses the device authorization answer: `device_code`, `user_code`, `verification_uri`
/// and `expires_in` are required; `interval` is 1–60 s.
pub fn parse_device_code(body: &[u8]) -> Result<DeviceCode, ParseError> {
    #[derive(Deserialize)]
    struct Raw {
        device_code: Option<String>,
        user_code: Option<String>,
        verification_uri: Option<String>,
        verification_url: Option<String>,
        expires_in: Option<Value>,
        interval: Option<Value>,
        message: Option<String>,
    }
    let raw: Raw = from_json(body)?;
    let text = |v: Option<String>, field: &'static str| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).ok_or(ParseError::Missing(field));
    let device_code = text(raw.device_code, "device_code")?;
    let user_code = text(raw.user_code, "user_code")?;
    let verification_uri = text(raw.verification_uri.or(raw.verification_url), "verification_uri")?;
    let number = |v: Option<Value>, field: &'static str, max: u64| -> Result<Option<u64>, ParseError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match seconds(&v) {
                Some(n) if (1..=max).contains(&n) => Ok(Some(n)),
                _ => Err(ParseError::Invalid { field, reason: truncate(&v.to_string(), 40).to_string() }),
            },
        }
    };
    let expires_in = number(raw.expires_in, "expires_in", MAX_EXPIRES_IN)?.ok_or(ParseError::Missing("expires_in"))?;
    let interval = number(raw.interval, "interval", MAX_INTERVAL)?.unwrap_or(DEFAULT_INTERVAL);
    Ok(DeviceCode {
        device_code,
        user_code: truncate(&user_code, 64).to_string(),
        verification_uri: truncate(&verification_uri, 512).to_string(),
        expires_in,
        interval,
        message: raw.message.map(|m| truncate(m.trim(), 1024).to_string()).filter(|m| !m.is_empty()),
    })
}

/// The form of the device authorization request.
pub fn device_code_form(client_id: &str, scope: &str) -> String {
    super::form::encode(&[("client_id", client_id), ("scope", scope)])
}

/// The form of one poll of the token endpoint (a confidential client adds its secret, as its
/// refresh grants do).
pub fn device_token_form(client_id: &str, client_secret: Option<&str>, device_code: &str) -> String {
    let mut pairs = vec![("grant_type", DEVICE_CODE_GRANT), ("client_id", client_id)];
    if let Some(s) = client_secret.filter(|s| !s.is_empty()) {
        pairs.push(("client_secret", s));
    }
    pairs.push(("device_code", device_code));
    super::form::encode(&pairs)
}

/// The device authorization endpoint that goes with a Microsoft token endpoint:
/// `…/oauth2/v2.0/token` → `…/oauth2/v2.0/devicecode` (both v1 and v2 pair up so). `None`
/// when `token_url` does not end in `/token`.
pub fn device_code_url(token_url: &str) -> Option<String> {
    let (path, query) = token_url.split_once('?').map_or((token_url, None), |(p, q)| (p, Some(q)));
    let base = path.trim_end_matches('/').strip_suffix("/token")?;
    Some(format!("{base}/devicecode{}", query.map(|q| format!("?{q}")).unwrap_or_default()))
}

/// What one poll of the token endpoint says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Signed in: the tokens.
    Done(TokenResponse),
    /// `authorization_pending`: not yet.
    Pending,
    /// `slow_down`: not yet, and poll 5 s less often.
    SlowDown,
    /// `expired_token`: the codes have expired; start again.
    Expired,
    /// `authorization_declined` / `access_denied`: the person refused.
    Denied(String),
    /// The endpoint's own trouble (5xx, 429, no answer): try again at the next interval.
    Transient(String),
    /// Anything else (`bad_verification_code`, `invalid_client`, …): give up, with the
    /// endpoint's text.
    Failed(String),
}

/// `error: description`, as the endpoint put it.
pub fn error_text(e: &OAuthError) -> String {
    match &e.description {
        Some(d) => format!("{}: {d}", e.error),
        None => e.error.clone(),
    }
}

/// What a token endpoint's error answer means to the polling client.
pub fn poll_outcome(e: &OAuthError) -> Poll {
    match e.error.as_str() {
        "authorization_pending" => Poll::Pending,
        "slow_down" => Poll::SlowDown,
        "expired_token" | "code_expired" => Poll::Expired,
        "authorization_declined" | "access_denied" => Poll::Denied(error_text(e)),
        _ => Poll::Failed(error_text(e)),
    }
}

/// The interval after a poll said `outcome`: [`SLOW_DOWN_STEP`] longer after `slow_down`.
pub fn next_interval(current: Duration, outcome: &Poll) -> Duration {
    match outcome {
        Poll::SlowDown => current + SLOW_DOWN_STEP,
        _ => current,
    }
}

/// Why the flow ended without tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceFlowError {
    /// The device authorization request failed.
    #[error("the device authorization request failed: {0}")]
    Start(String),
    /// Nobody signed in before the code expired.
    #[error("the code expired before anyone signed in; run the command again")]
    Expired,
    /// The person refused.
    #[error("the sign-in was declined: {0}")]
    Denied(String),
    /// The token endpoint refused, or kept failing.
    #[error("the token endpoint refused: {0}")]
    Failed(String),
}

/// Asks `url` (the device authorization endpoint) for a code.
pub async fn request_device_code(client: &reqwest::Client, url: &str, client_id: &str, scope: &str) -> Result<DeviceCode, DeviceFlowError> {
    let req = client.post(url).header("content-type", "application/x-www-form-urlencoded").header("accept", "application/json").body(device_code_form(client_id, scope));
    let a = http::send(req, TOKEN_LIMITS).await.map_err(|e| DeviceFlowError::Start(e.to_string()))?;
    if a.status != 200 {
        let why = oauth::parse_oauth_error(&a.body).map(|e| error_text(&e)).unwrap_or_else(|| format!("HTTP {}", a.status));
        return Err(DeviceFlowError::Start(why));
    }
    parse_device_code(&a.body).map_err(|e| DeviceFlowError::Start(format!("bad answer: {e}")))
}

/// One poll of the token endpoint `url` with `form` ([`device_token_form`]).
pub async fn poll_once(client: &reqwest::Client, url: &str, form: String, limits: Limits) -> Poll {
    let req = client.post(url).header("content-type", "application/x-www-form-urlencoded").header("accept", "application/json").body(form);
    let a = match http::send(req, limits).await {
        Ok(a) => a,
        Err(e @ (CallError::Unreachable(_) | CallError::TimedOut(_))) => return Poll::Transient(e.to_string()),
        Err(e) => return Poll::Failed(e.to_string()),
    };
    if a.status == 200 {
        return match oauth::parse_token_response(&a.body) {
            Ok(t) => Poll::Done(t),
            Err(e) => Poll::Failed(format!("bad answer: {e}")),
        };
    }
    match oauth::parse_oauth_error(&a.body) {
        Some(e) => poll_outcome(&e),
        None if a.status == 429 || a.status >= 500 => Poll::Transient(format!("HTTP {}", a.status)),
        None => Poll::Failed(format!("HTTP {}", a.status)),
    }
}

/// Polls `token_url` for `code` until the person has signed in (the tokens), refused, or the
/// code has expired: every `interval` (5 s more after each `slow_down`); a few transient
/// failures in a row are tolerated. Gives up by itself shortly after `expires_in` in case the
/// endpoint never says `expired_token`.
pub async fn wait_for_token(client: &reqwest::Client, token_url: &str, client_id: &str, client_secret: Option<&str>, code: &DeviceCode) -> Result<TokenResponse, DeviceFlowError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(code.expires_in) + Duration::from_secs(code.interval.max(5));
    let mut interval = Duration::from_secs(code.interval.max(1));
    let mut transient = 0;
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() >= deadline {
            return Err(DeviceFlowError::Expired);
        }
        let outcome = poll_once(client, token_url, device_token_form(client_id, client_secret, &code.device_code), TOKEN_LIMITS).await;
        interval = next_interval(interval, &outcome);
        match outcome {
            Poll::Done(t) => return Ok(t),
            Poll::Pending | Poll::SlowDown => transient = 0,
            Poll::Transient(why) => {
                transient += 1;
                if transient >= MAX_TRANSIENT {
                    return Err(DeviceFlowError::Failed(why));
                }
            }
            Poll::Expired => return Err(DeviceFlowError::Expired),
            Poll::Denied(why) => return Err(DeviceFlowError::Denied(why)),
            Poll::Failed(why) => return Err(DeviceFlowError::Failed(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::oauth::parse_oauth_error;
    use crate::common::test_peer::{local, Reply, TestPeer};

    /// Microsoft's documented answer, with its 15-minute lifetime.
    const ANSWER: &str = r#"{"user_code":"YZMYLD4K","device_code":"HAQABAAEAAAD--DLA3VO7Qrdd","verification_uri":"https://microsoft.com/devicelogin","expires_in":900,"interval":5,"message":"To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code YZMYLD4K to authenticate."}"#;

    #[test]
    fn the_device_code_answer_is_parsed_and_checked() {
        let c = parse_device_code(ANSWER.as_bytes()).expect("answer");
        assert_eq!((c.user_code.as_str(), c.verification_uri.as_str(), c.expires_in, c.interval), ("YZMYLD4K", "https://microsoft.com/devicelogin", 900, 5));
        assert!(c.message.as_deref().is_some_and(|m| m.contains("YZMYLD4K")));
        assert!(!format!("{c:?}").contains("HAQAB"), "Debug leaves the device code out");
        // The v1 spelling, a string number, no interval.
        let c = parse_device_code(br#"{"device_code":"d","user_code":"u","verification_url":"https://x","expires_in":"600"}"#).expect("answer");
        assert_eq!((c.verification_uri.as_str(), c.expires_in, c.interval, c.message), ("https://x", 600, DEFAULT_INTERVAL, None));
        let without = |field: &'static str| {
            let mut v: Value = serde_json::from_str(ANSWER).unwrap();
            v.as_object_mut().unwrap().remove(field);
            parse_device_code(v.to_string().as_bytes())
        };
        for field in ["device_code", "user_code", "verification_uri", "expires_in"] {
            assert_eq!(without(field), Err(ParseError::Missing(field)), "{field}");
        }
        for (interval, expires_in) in [("0", "600"), ("3600", "600"), ("5", "-5"), ("5", r#""soon""#), ("5", "86400")] {
            let body = format!(r#"{{"device_code":"d","user_code":"u","verification_uri":"https://x","expires_in":{expires_in},"interval":{interval}}}"#);
            assert!(matches!(parse_device_code(body.as_bytes()), Err(ParseError::Invalid { .. })), "{body}");
        }
        assert!(parse_device_code(b"<html>").is_err());
    }

    #[test]
    fn forms_and_the_endpoint_pairing() {
        assert_eq!(device_code_form("id-1", "https://graph.microsoft.com/Presence.Read.All offline_access"), "client_id=id-1&scope=https%3A%2F%2Fgraph.microsoft.com%2FPresence.Read.All+offline_access");
        assert_eq!(device_token_form("id-1", None, "d+c"), "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&client_id=id-1&device_code=d%2Bc");
        assert_eq!(device_token_form("id-1", Some("s"), "d"), "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&client_id=id-1&client_secret=s&device_code=d");
        assert_eq!(device_token_form("id-1", Some(""), "d"), device_token_form("id-1", None, "d"));
        assert_eq!(device_code_url("https://login.microsoftonline.com/t1/oauth2/v2.0/token").as_deref(), Some("https://login.microsoftonline.com/t1/oauth2/v2.0/devicecode"));
        assert_eq!(device_code_url("https://login.microsoftonline.com/t1/oauth2/token/").as_deref(), Some("https://login.microsoftonline.com/t1/oauth2/devicecode"));
        assert_eq!(device_code_url("http://127.0.0.1:9/t/oauth2/v2.0/token?mkt=sv-SE").as_deref(), Some("http://127.0.0.1:9/t/oauth2/v2.0/devicecode?mkt=sv-SE"));
        assert_eq!(device_code_url("https://idp.example/oauth/access"), None);
    }

    #[test]
    fn token_endpoint_errors_map_to_what_the_client_does() {
        let e = |error: &str| parse_oauth_error(format!(r#"{{"error":"{error}","error_description":"AADSTS70016: not yet"}}"#).as_bytes()).expect("oauth error");
        assert_eq!(poll_outcome(&e("authorization_pending")), Poll::Pending);
        assert_eq!(poll_outcome(&e("slow_down")), Poll::SlowDown);
        assert_eq!(poll_outcome(&e("expired_token")), Poll::Expired);
        assert_eq!(poll_outcome(&e("authorization_declined")), Poll::Denied("authorization_declined: AADSTS70016: not yet".into()));
        assert_eq!(poll_outcome(&e("access_denied")), Poll::Denied("access_denied: AADSTS70016: not yet".into()));
        assert_eq!(poll_outcome(&e("bad_verification_code")), Poll::Failed("bad_verification_code: AADSTS70016: not yet".into()));
        let one = Duration::from_secs(1);
        assert_eq!(next_interval(one, &Poll::SlowDown), Duration::from_secs(6));
        assert_eq!(next_interval(one, &Poll::Pending), one);
    }

    /// Against a scripted endpoint: pending twice, `slow_down` once (the next poll comes 5 s
    /// later), then tokens; a denial and an expiry end the flow with their error.
    #[tokio::test(start_paused = true)]
    async fn polling_honours_pending_slow_down_and_the_end_states() {
        local(async {
            let polls = std::sync::Arc::new(std::sync::Mutex::new(Vec::<tokio::time::Instant>::new()));
            let p = polls.clone();
            let peer = TestPeer::start(move |_r| {
                let mut g = p.lock().unwrap();
                g.push(tokio::time::Instant::now());
                match g.len() {
                    1 | 2 => Reply::Status(400, r#"{"error":"authorization_pending"}"#.to_string()),
                    3 => Reply::Status(400, r#"{"error":"slow_down"}"#.to_string()),
                    4 => Reply::Status(503, "oops".to_string()),
                    _ => Reply::Status(200, r#"{"access_token":"at","refresh_token":"rt","expires_in":3599}"#.to_string()),
                }
            })
            .await;
            let code = DeviceCode { device_code: "d".into(), user_code: "U".into(), verification_uri: "https://x".into(), expires_in: 900, interval: 1, message: None };
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            let t = wait_for_token(&client, &peer.url, "c", Some("s"), &code).await.expect("tokens");
            assert_eq!(t.refresh_token.as_deref(), Some("rt"));
            let at = polls.lock().unwrap().clone();
            let gaps: Vec<u64> = at.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
            assert_eq!(gaps, vec![1, 1, 6, 6], "5 s slower after slow_down, and it stays so");
            for (answer, want) in [
                (r#"{"error":"authorization_declined","error_description":"AADSTS70000: declined"}"#, DeviceFlowError::Denied("authorization_declined: AADSTS70000: declined".into())),
                (r#"{"error":"expired_token"}"#, DeviceFlowError::Expired),
                (r#"{"error":"invalid_client","error_description":"AADSTS7000215"}"#, DeviceFlowError::Failed("invalid_client: AADSTS7000215".into())),
            ] {
                peer.set(move |_r| Reply::Status(400, answer.to_string()));
                assert_eq!(wait_for_token(&client, &peer.url, "c", None, &code).await, Err(want));
            }
            // An endpoint that never says `expired_token` still ends after the lifetime.
            peer.set(|_r| Reply::Status(400, r#"{"error":"authorization_pending"}"#.to_string()));
            let short = DeviceCode { expires_in: 3, ..code };
            assert_eq!(wait_for_token(&client, &peer.url, "c", None, &short).await, Err(DeviceFlowError::Expired));
        })
        .await;
    }
}
