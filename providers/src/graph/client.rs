//! HTTP side of the Graph provider: OAuth2 tokens (client credentials for reads, refresh
//! tokens of service accounts for subscriptions) and Graph calls under the documented budget
//! (1,500 requests per 30 s per app and tenant) with `429` + `Retry-After` honoured.
//!
//! Everything here is plain async code over `reqwest` through the providers' toolkit
//! ([`crate::common::http`], [`crate::common::oauth`]); parsing is in [`super::parse`].

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::common::http::{self, CallError, Limits};
use crate::common::microsoft;
use crate::common::oauth::{self, TokenCache};
use presence_actors::model::now_ms;
use presence_actors::provider::Cursors;

/// Requests allowed per window, per app and tenant, for presence reads.
pub const BUDGET_REQUESTS: usize = 1500;
/// The budget's window.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(30);

/// A sliding-window request budget plus a "throttled until" set by `Retry-After`.
pub struct Budget {
    limit: usize,
    window: Duration,
    sent: Mutex<(VecDeque<Instant>, Option<Instant>)>,
}

impl Budget {
    /// A budget of `limit` requests per `window`.
    pub fn new(limit: usize, window: Duration) -> Budget {
        Budget { limit: limit.max(1), window, sent: Mutex::new((VecDeque::new(), None)) }
    }

    /// How long to wait before the next request may go (zero: go now, and it is counted).
    pub fn reserve(&self) -> Duration {
        let now = Instant::now();
        let mut g = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = g.1 {
            if until > now {
                return until - now;
            }
            g.1 = None;
        }
        while g.0.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            g.0.pop_front();
        }
        if g.0.len() >= self.limit {
            let oldest = *g.0.front().expect("non-empty when at the limit");
            return self.window.saturating_sub(now.duration_since(oldest)).max(Duration::from_millis(1));
        }
        g.0.push_back(now);
        Duration::ZERO
    }

    /// Waits for a slot in the budget.
    pub async fn acquire(&self) {
        loop {
            let wait = self.reserve();
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Graph said 429: nothing goes out before `after` has passed.
    pub fn throttle(&self, after: Duration) {
        let mut g = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let until = Instant::now() + after;
        g.1 = Some(g.1.map_or(until, |u| u.max(until)));
    }

    /// Throttled until (ms since the epoch), if throttled now.
    pub fn throttled_until_ms(&self) -> Option<i64> {
        let g = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        g.1.filter(|u| *u > now).map(|u| now_ms() + (u - now).as_millis() as i64)
    }

    /// Requests sent in the current window.
    pub fn in_window(&self) -> usize {
        let now = Instant::now();
        let g = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        g.0.iter().filter(|t| now.duration_since(**t) < self.window).count()
    }
}

/// Talks to the token endpoint and to Graph.
pub struct GraphClient {
    http: reqwest::Client,
    graph_url: String,
    token_url: String,
    client_id: String,
    client_secret: String,
    app: TokenCache,
    /// The presence-read budget.
    pub budget: Budget,
}

/// The scope for application (client credentials) tokens.
pub const APP_SCOPE: &str = microsoft::GRAPH_APP_SCOPE;
/// The scope for delegated tokens of the subscription service accounts.
pub const DELEGATED_SCOPE: &str = "https://graph.microsoft.com/Presence.Read.All offline_access";
/// The cursor a service account's newest refresh token is kept under (in the provider's
/// cursors): `refresh:{account}`.
pub fn refresh_cursor(account: &str) -> String {
    format!("refresh:{account}")
}
/// Wait assumed when Graph answers `429` without `Retry-After`.
const DEFAULT_RETRY: Duration = microsoft::GRAPH_DEFAULT_RETRY;

impl GraphClient {
    /// A client for `graph_url` (e.g. `https://graph.microsoft.com/v1.0`) with tokens from
    /// `token_url` (e.g. `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`).
    pub fn new(http: reqwest::Client, graph_url: &str, token_url: &str, client_id: &str, client_secret: &str) -> GraphClient {
        GraphClient {
            http,
            graph_url: graph_url.trim_end_matches('/').to_string(),
            token_url: token_url.to_string(),
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            app: microsoft::app_tokens(token_url, client_id, client_secret),
            budget: Budget::new(BUDGET_REQUESTS, BUDGET_WINDOW),
        }
    }

    /// The application token (client credentials), cached until shortly before expiry.
    pub async fn app_token(&self) -> Result<String, CallError> {
        self.app.get(&self.http).await
    }

    /// Forgets the application token (after a 401).
    pub async fn drop_app_token(&self) {
        self.app.forget().await
    }

    /// A delegated token for a service account from its refresh token. Entra may rotate the
    /// refresh token: the new one is stored in `cursors` under `refresh:{account}` and is
    /// preferred over the configured one from then on (`presence-hub login graph` stores it
    /// there too).
    pub async fn delegated_token(&self, account: &str, configured_refresh: Option<&str>, cursors: &dyn Cursors, provider: &str) -> Result<(String, Duration), CallError> {
        let key = refresh_cursor(account);
        let store = oauth::RotationStore { cursors, provider, key: &key };
        let t = oauth::refresh_grant(&self.http, &self.token_url, &self.client_id, Some(&self.client_secret), configured_refresh, DELEGATED_SCOPE, store).await?;
        Ok((t.access_token, Duration::from_secs(t.expires_in.max(60))))
    }

    /// A Graph call within `limits`. `budgeted` calls wait for a slot in the presence budget
    /// first (the wait is not part of the call's deadline); a 429 sets the budget's throttle
    /// from `Retry-After` (default 10 s) and comes back as [`CallError::Throttled`], and a 503
    /// or 504 with `Retry-After` holds the budget back as long.
    pub async fn call(&self, method: reqwest::Method, path: &str, token: &str, body: Option<String>, budgeted: bool, limits: Limits) -> Result<Vec<u8>, CallError> {
        if budgeted {
            self.budget.acquire().await;
        }
        let mut req = self.http.request(method, format!("{}{}", self.graph_url, path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let a = http::send(req, limits).await?;
        if let Some(after) = microsoft::throttle_wait(a.status, a.retry_after) {
            self.budget.throttle(after);
        }
        a.into_body(DEFAULT_RETRY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_the_limit_per_window_then_waits() {
        let b = Budget::new(3, Duration::from_millis(200));
        assert!(b.reserve().is_zero());
        assert!(b.reserve().is_zero());
        assert!(b.reserve().is_zero());
        let wait = b.reserve();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(200), "{wait:?}");
        assert_eq!(b.in_window(), 3);
        std::thread::sleep(Duration::from_millis(210));
        assert!(b.reserve().is_zero());
    }

    #[test]
    fn retry_after_holds_everything_back() {
        let b = Budget::new(100, Duration::from_secs(30));
        b.throttle(Duration::from_millis(300));
        let wait = b.reserve();
        assert!(wait > Duration::from_millis(200), "{wait:?}");
        assert!(b.throttled_until_ms().is_some());
        // A shorter Retry-After does not shorten a longer one.
        b.throttle(Duration::from_millis(10));
        assert!(b.reserve() > Duration::from_millis(200));
    }
}
