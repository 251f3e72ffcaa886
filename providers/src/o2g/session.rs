//! The O2G administrator session and every request made in it: discovery, authenticate (HTTP
//! Basic), the session (`POST …/sessions`) and its keep-alive, subscribing and deleting
//! subscriptions, snapshot requests, and logout.
//!
//! Every call goes through the providers' toolkit ([`crate::common::http::send`]): its answer
//! is read in bounded chunks and refused past [`parse::MAX_DOCUMENT`] (a broken peer cannot
//! make the hub buffer more), and it has a deadline (`call_timeout_secs`; logout
//! [`LOGOUT_TIMEOUT`]). Failures are the toolkit's [`CallError`]. The event stream is
//! [`super::reader`]'s.

use std::time::Duration;

use tracing::debug;

use super::parse::{self, Delivery, SessionInfo, SubscriptionResult};
use super::O2gConfig;
use crate::common::http::{self, CallError, Limits};
use presence_actors::model::now_ms;

/// Wait assumed when O2G answers `429` without `Retry-After`.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(5);
/// Deadline of each call that ends the session at shutdown (and of deleting a subscription).
pub const LOGOUT_TIMEOUT: Duration = Duration::from_secs(2);

impl From<parse::ParseError> for CallError {
    fn from(e: parse::ParseError) -> Self {
        CallError::Parse(e.to_string())
    }
}

/// The limits of an O2G call that must end within `timeout`.
pub fn limits(timeout: Duration) -> Limits {
    Limits::new(parse::MAX_DOCUMENT, timeout)
}

/// A request to O2G: JSON accepted, the session cookie when there is one, a JSON body if any.
fn request(http: &reqwest::Client, method: reqwest::Method, url: &str, cookie: Option<&str>, body: Option<String>) -> reqwest::RequestBuilder {
    let mut rb = http.request(method, url).header("accept", "application/json");
    if let Some(c) = cookie {
        rb = rb.header("cookie", c);
    }
    if let Some(b) = body {
        rb = rb.header("content-type", "application/json").body(b);
    }
    rb
}

/// One O2G call within `limits`: the body of a 2xx answer, else the failure it stands for.
pub async fn call(http: &reqwest::Client, method: reqwest::Method, url: &str, cookie: Option<&str>, body: Option<String>, limits: Limits) -> Result<Vec<u8>, CallError> {
    http::send(request(http, method, url, cookie, body), limits).await?.into_body(DEFAULT_RETRY)
}

/// Which snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `OnTelephonyState`.
    Telephony,
    /// `OnRoutingStateChanged`.
    Routing,
}

/// An open administrator session.
#[derive(Clone)]
pub struct Session {
    http: reqwest::Client,
    limits: Limits,
    credential: String,
    sessions_url: String,
    subscriptions_url: String,
    telephony_url: String,
    routing_url: String,
    /// What the server said about the session.
    pub info: SessionInfo,
    /// The server's product and version from discovery, for health details.
    pub server: Option<String>,
    /// When it was opened (ms since the epoch).
    pub created_at: i64,
    /// The last successful keep-alive.
    pub last_keepalive_at: Option<i64>,
    /// Successful keep-alives.
    pub keepalives: u64,
}

impl Session {
    /// Logs in: discovery (without it, the documented default authenticate URL), authenticate
    /// with HTTP Basic, then `POST …/sessions`. Each call within `cfg.call_timeout_secs`.
    pub async fn open(http: &reqwest::Client, cfg: &O2gConfig, provider: &str) -> Result<Session, CallError> {
        let limits = limits(cfg.call_timeout());
        let base = cfg.base_url.trim_end_matches('/');
        let public = cfg.public_access;
        let default_auth = format!("{base}/api/rest/authenticate?version={}", parse::API_VERSION);
        let discovery = call(http, reqwest::Method::GET, &format!("{base}/api/rest"), None, None, limits).await;
        let (auth_url, server) = match discovery.and_then(|b| Ok(parse::parse_discovery(&b)?)) {
            Ok(d) => (d.authenticate_url(public).map_or(default_auth, str::to_string), d.product),
            Err(e) => {
                debug!(provider = %provider, error = %e, "O2G discovery failed; using the default authenticate URL.");
                (default_auth, None)
            }
        };
        let auth = request(http, reqwest::Method::GET, &auth_url, None, None).basic_auth(&cfg.login, Some(&cfg.password));
        let answer = http::send(auth, limits).await?;
        let set_cookie = answer.header("set-cookie").map(str::to_string);
        let auth = parse::parse_authenticate(&answer.into_body(DEFAULT_RETRY)?)?;
        // The credential is the cookie's value; a differing Set-Cookie wins (the server's word).
        let credential = set_cookie.as_deref().and_then(parse::credential_from_set_cookie).map_or(auth.credential.clone(), str::to_string);
        let sessions_url = auth.sessions_url(public).unwrap_or_default().to_string();
        let cookie = parse::cookie_header(&credential);
        let body = call(http, reqwest::Method::POST, &sessions_url, Some(&cookie), Some(parse::session_request(&cfg.application_name)), limits).await?;
        let info = parse::parse_session(&body)?;
        let base_url = info.base_url(public).unwrap_or_default().to_string();
        let service = |name: &str| info.service_url(name, public).unwrap_or_else(|| format!("{base_url}/{name}"));
        Ok(Session {
            http: http.clone(),
            limits,
            subscriptions_url: service("subscriptions"),
            telephony_url: service("telephony"),
            routing_url: service("routing"),
            credential,
            sessions_url,
            info,
            server,
            created_at: now_ms(),
            last_keepalive_at: None,
            keepalives: 0,
        })
    }

    /// The `Cookie` header of the session.
    pub fn cookie(&self) -> String {
        parse::cookie_header(&self.credential)
    }

    /// `POST …/sessions/keepalive`.
    pub async fn keepalive(&mut self) -> Result<(), CallError> {
        let url = format!("{}/keepalive", self.sessions_url);
        self.call(reqwest::Method::POST, &url, Some(String::new()), self.limits).await?;
        self.last_keepalive_at = Some(now_ms());
        self.keepalives += 1;
        Ok(())
    }

    /// `POST …/subscriptions` for `logins`, telephony and routing events delivered as asked.
    pub async fn subscribe(&self, logins: &[String], delivery: &Delivery) -> Result<SubscriptionResult, CallError> {
        let body = parse::subscription_request(logins, &[parse::PACKAGE_TELEPHONY, parse::PACKAGE_ROUTING], delivery);
        let answer = self.call(reqwest::Method::POST, &self.subscriptions_url, Some(body), self.limits).await?;
        Ok(parse::parse_subscription(&answer)?)
    }

    /// `DELETE …/subscriptions/{id}`, within [`LOGOUT_TIMEOUT`].
    pub async fn delete_subscription(&self, id: &str) -> Result<(), CallError> {
        let url = parse::subscription_url(&self.subscriptions_url, id);
        self.call(reqwest::Method::DELETE, &url, None, limits(LOGOUT_TIMEOUT)).await.map(drop)
    }

    /// What the snapshot requests of this session need (they run in a task of their own).
    pub fn snapshots(&self) -> Snapshots {
        Snapshots {
            http: self.http.clone(),
            limits: self.limits,
            cookie: self.cookie(),
            telephony_url: self.telephony_url.clone(),
            routing_url: self.routing_url.clone(),
        }
    }

    /// Ends the session (`DELETE …/sessions`), within [`LOGOUT_TIMEOUT`].
    pub async fn logout(self) -> Result<(), CallError> {
        self.call(reqwest::Method::DELETE, &self.sessions_url, None, limits(LOGOUT_TIMEOUT)).await.map(drop)
    }

    async fn call(&self, method: reqwest::Method, url: &str, body: Option<String>, limits: Limits) -> Result<Vec<u8>, CallError> {
        call(&self.http, method, url, Some(&self.cookie()), body, limits).await
    }
}

/// Snapshot requests of one session: O2G answers each on the event channel
/// (`OnTelephonyState`, `OnRoutingStateChanged`), the request itself only says it was taken.
#[derive(Clone)]
pub struct Snapshots {
    http: reqwest::Client,
    limits: Limits,
    cookie: String,
    telephony_url: String,
    routing_url: String,
}

impl Snapshots {
    /// `POST …/{telephony|routing}/state/snapshot?loginName=`.
    pub async fn request(&self, login: &str, kind: Kind) -> Result<(), CallError> {
        let service = match kind {
            Kind::Telephony => &self.telephony_url,
            Kind::Routing => &self.routing_url,
        };
        let url = parse::snapshot_url(service, login);
        call(&self.http, reqwest::Method::POST, &url, Some(&self.cookie), Some(String::new()), self.limits).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::http::loopback::{answer, client, peer};

    #[tokio::test]
    async fn an_oversized_answer_is_refused_not_read() {
        let huge = peer(Some(answer("200 OK", &[("content-length", "400000000")], b"")));
        let e = call(&client(), reqwest::Method::GET, &huge, None, None, limits(Duration::from_secs(5))).await.unwrap_err();
        assert_eq!(e, CallError::TooLarge { max: parse::MAX_DOCUMENT });
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_times_out() {
        let silent = peer(None);
        let e = call(&client(), reqwest::Method::POST, &silent, Some("AlcUserId=c"), Some(String::new()), limits(Duration::from_millis(200))).await.unwrap_err();
        assert_eq!(e, CallError::TimedOut(Duration::from_millis(200)));
    }

    #[tokio::test]
    async fn login_fails_on_an_oversized_session_document() {
        // Discovery refused, authenticate fine, the session answer endless: the login fails.
        let mut cfg = O2gConfig::new("o2g", "http://127.0.0.1:9", "admin", "secret");
        let sessions = peer(Some(answer("200 OK", &[("content-length", "400000000")], b"")));
        let auth = format!(r#"{{"credential":"c1","internalUrl":"{sessions}/api/rest/1.0/sessions"}}"#);
        let base = peer(Some(answer("200 OK", &[("content-length", &auth.len().to_string()), ("set-cookie", "AlcUserId=c2; Path=/")], auth.as_bytes())));
        cfg.base_url = base;
        cfg.call_timeout_secs = 5;
        let e = Session::open(&client(), &cfg, "o2g").await.err().expect("the session answer is refused");
        assert_eq!(e, CallError::TooLarge { max: parse::MAX_DOCUMENT });
    }
}
