//! A Microsoft identity platform (Entra) app: the credentials and endpoints every provider that
//! talks to Microsoft declares the same way — `tenant_id`, `client_id`, `client_secret`,
//! `authority`, `token_url`, `graph_url` — and the token endpoint they make.
//!
//! A provider's config takes the keys flat (`#[serde(flatten)] app: MicrosoftApp`, followed by
//! [`super::config::NoOtherKeys`] so unknown keys are still refused); which of them are required
//! is the provider's to say in its `validate` ([`MicrosoftApp::require`]). The calendar
//! provider's Google backend reads `client_id`, `client_secret` and `token_url` from here too.
//!
//! What every app-only Graph caller shares is here too: the app token ([`app_tokens`], client
//! credentials for [`GRAPH_APP_SCOPE`]) and how long a Graph answer asks to be left alone
//! ([`throttle_wait`]: `429` with `Retry-After` or [`GRAPH_DEFAULT_RETRY`], `503`/`504` with
//! `Retry-After`). The Teams presence provider (`graph/client.rs`) and the `entra` directory
//! source use them.

use std::time::Duration;

use serde::Deserialize;

use super::defaults;
use super::oauth::{self, TokenCache};

/// The scope of application (client-credentials) tokens for Microsoft Graph: the app's
/// consented application permissions.
pub const GRAPH_APP_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Wait assumed when Graph answers `429` without `Retry-After`.
pub const GRAPH_DEFAULT_RETRY: Duration = Duration::from_secs(10);

/// The app token of `client_id` and `client_secret` at `token_url` (client credentials for
/// [`GRAPH_APP_SCOPE`]), cached until shortly before it expires.
pub fn app_tokens(token_url: &str, client_id: &str, client_secret: &str) -> TokenCache {
    TokenCache::new(token_url, oauth::client_credentials_form(client_id, client_secret, GRAPH_APP_SCOPE))
}

/// How long a Graph answer with `status` (and `retry_after`, its parsed `Retry-After`) asks
/// the caller to hold back: `429` → `Retry-After`, else [`GRAPH_DEFAULT_RETRY`]; `503`/`504` →
/// `Retry-After` if given (a plain outage without one is not throttling); anything else none.
pub fn throttle_wait(status: u16, retry_after: Option<Duration>) -> Option<Duration> {
    match status {
        429 => Some(retry_after.unwrap_or(GRAPH_DEFAULT_RETRY)),
        503 | 504 => retry_after,
        _ => None,
    }
}

/// The longest credential (`tenant_id`, `client_id`, `client_secret`) accepted, in bytes.
pub const MAX_CREDENTIAL_LEN: usize = 1024;

/// The app's settings, as the config file spells them; a key left out takes its value from
/// [`MicrosoftApp::default`]. `Debug` leaves the client secret out.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct MicrosoftApp {
    /// Entra tenant id.
    pub tenant_id: Option<String>,
    /// App (client) id.
    pub client_id: Option<String>,
    /// Client secret.
    pub client_secret: Option<String>,
    /// Identity provider base URL; the token endpoint is `{authority}/{tenant_id}/oauth2/v2.0/token`.
    pub authority: String,
    /// Full token endpoint, overriding `authority`.
    pub token_url: Option<String>,
    /// Graph base URL.
    pub graph_url: String,
}

impl Default for MicrosoftApp {
    /// No credentials; Microsoft's public endpoints ([`defaults::microsoft_authority`],
    /// [`defaults::graph_url`]).
    fn default() -> MicrosoftApp {
        MicrosoftApp {
            tenant_id: None,
            client_id: None,
            client_secret: None,
            authority: defaults::microsoft_authority(),
            token_url: None,
            graph_url: defaults::graph_url(),
        }
    }
}

impl std::fmt::Debug for MicrosoftApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicrosoftApp")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .field("authority", &self.authority)
            .field("token_url", &self.token_url)
            .field("graph_url", &self.graph_url)
            .finish()
    }
}

/// Whether an optional setting holds something other than white space.
fn set(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| !s.trim().is_empty())
}

impl MicrosoftApp {
    /// The token endpoint: `token_url`, else `{authority}/{tenant_id}/oauth2/v2.0/token`.
    pub fn token_endpoint(&self) -> String {
        match &self.token_url {
            Some(u) => u.clone(),
            None => format!("{}/{}/oauth2/v2.0/token", self.authority.trim_end_matches('/'), self.tenant().unwrap_or_default()),
        }
    }

    /// The tenant, when set.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant_id.as_deref().filter(|_| set(&self.tenant_id))
    }

    /// The client id, empty when not set (a provider's `validate` requires it first).
    pub fn client_id(&self) -> &str {
        self.client_id.as_deref().unwrap_or_default()
    }

    /// The client secret, empty when not set.
    pub fn client_secret(&self) -> &str {
        self.client_secret.as_deref().unwrap_or_default()
    }

    /// The app token (client credentials for Graph) from [`MicrosoftApp::token_endpoint`].
    pub fn app_tokens(&self) -> TokenCache {
        app_tokens(&self.token_endpoint(), self.client_id(), self.client_secret())
    }

    /// Whether an app token can be asked for: a token endpoint (`tenant_id` or `token_url`),
    /// `client_id` and `client_secret`.
    pub fn has_app_credentials(&self) -> bool {
        (set(&self.tenant_id) || set(&self.token_url)) && set(&self.client_id) && set(&self.client_secret)
    }

    /// `Err("{key} must be set")` for the first of `keys` (`tenant_id`, `client_id`,
    /// `client_secret`, `token_url`) that is missing or blank.
    pub fn require(&self, keys: &[&str]) -> Result<(), String> {
        for key in keys {
            let v = match *key {
                "tenant_id" => &self.tenant_id,
                "client_id" => &self.client_id,
                "client_secret" => &self.client_secret,
                "token_url" => &self.token_url,
                other => return Err(format!("{other} is not a Microsoft app setting")),
            };
            if !set(v) {
                return Err(format!("{key} must be set"));
            }
        }
        Ok(())
    }

    /// Checks what is set: credentials at most [`MAX_CREDENTIAL_LEN`] bytes, the URLs http(s).
    pub fn check(&self) -> Result<(), String> {
        for (key, v) in [("tenant_id", &self.tenant_id), ("client_id", &self.client_id), ("client_secret", &self.client_secret)] {
            if v.as_ref().is_some_and(|v| v.len() > MAX_CREDENTIAL_LEN) {
                return Err(format!("{key} is longer than {MAX_CREDENTIAL_LEN} bytes"));
            }
        }
        for (key, v) in [("authority", Some(&self.authority)), ("graph_url", Some(&self.graph_url)), ("token_url", self.token_url.as_ref())] {
            if v.is_some_and(|v| !(v.starts_with("https://") || v.starts_with("http://"))) {
                return Err(format!("{key} must be an http(s) URL"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(toml_text: &str) -> MicrosoftApp {
        toml::from_str(toml_text).expect("app settings")
    }

    #[test]
    fn defaults_are_the_public_endpoints_and_the_token_url_follows_the_tenant() {
        let a = app("");
        assert_eq!(a, MicrosoftApp::default());
        assert_eq!(a.authority, "https://login.microsoftonline.com");
        assert_eq!(a.graph_url, "https://graph.microsoft.com/v1.0");
        let a = app("tenant_id = \"t1\"\nauthority = \"http://127.0.0.1:9/\"");
        assert_eq!(a.token_endpoint(), "http://127.0.0.1:9/t1/oauth2/v2.0/token");
        let a = app("tenant_id = \"t1\"\ntoken_url = \"http://127.0.0.1:9/token\"");
        assert_eq!(a.token_endpoint(), "http://127.0.0.1:9/token");
    }

    #[test]
    fn require_names_the_first_missing_key_and_check_the_first_bad_one() {
        let a = app("tenant_id = \"t\"\nclient_id = \" \"");
        assert_eq!(a.require(&["tenant_id"]), Ok(()));
        assert_eq!(a.require(&["tenant_id", "client_id", "client_secret"]), Err("client_id must be set".into()));
        assert!(!a.has_app_credentials());
        let a = app("token_url = \"https://x/token\"\nclient_id = \"c\"\nclient_secret = \"s\"");
        assert!(a.has_app_credentials(), "token_url stands in for tenant_id");
        assert_eq!(a.require(&["tenant_id"]), Err("tenant_id must be set".into()));
        assert_eq!(a.check(), Ok(()));
        assert_eq!(app("graph_url = \"ftp://x\"").check(), Err("graph_url must be an http(s) URL".into()));
        let long = format!("client_secret = \"{}\"", "s".repeat(MAX_CREDENTIAL_LEN + 1));
        assert_eq!(app(&long).check(), Err("client_secret is longer than 1024 bytes".into()));
    }

    #[test]
    fn debug_leaves_the_secret_out_and_graph_answers_say_how_long_to_wait() {
        let text = format!("{:?}", app("client_id = \"c\"\nclient_secret = \"hunter2-very-secret\""));
        assert!(!text.contains("hunter2") && text.contains("<redacted>") && text.contains("\"c\""), "{text}");
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(throttle_wait(429, s(3)), s(3));
        assert_eq!(throttle_wait(429, None), Some(GRAPH_DEFAULT_RETRY));
        assert_eq!((throttle_wait(503, s(2)), throttle_wait(504, None), throttle_wait(500, s(2)), throttle_wait(200, s(1))), (s(2), None, None, None));
    }
}
