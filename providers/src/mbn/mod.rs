//! Telenor Norway Mobilt Bedriftsnett (MBN) as a presence source (`type = "telenor_mbn"`):
//! mobile device status (available, busy, offline; calls ringing and up) and user absences
//! (meeting, illness, holiday…) of everyone in the enterprise, through the MBN partner status
//! API.
//!
//! The flow is Telenor's, as publicly described: an OAuth2 password grant with the company's
//! system user ("API User", created in *Min Bedrift*) and the partner's client id and secret,
//! then `catalog/userInfo`, a token from `status/token`, a login to the CSTA interface at
//! `/csta/authentication/token`, and an *enterprise monitor* of all users and devices. **The
//! payloads and the event transport are not public**: [`parse`] holds every shape we assumed
//! (field names, enum spellings, header names, the long-polling event queue with a cursor) in
//! one module, and the paths are configurable, so the real specification replaces them in one
//! place.
//!
//! - [`parse`]: pure parsers and request builders (assumed shapes, documented there).
//! - [`map`]: per-person state (lines, calls, absences) and the two signals it implies —
//!   source `mobile`, instance `{name}` for the phone and `{name}-absence` for the absence (the
//!   provider's configured name), mapped through the hub's absence reason list.
//! - [`runtime`]: the task — login chain, monitor start and keep-alive, long polling, re-login
//!   on `401`/expiry, a new monitor and a resync (the status list) after a gap, feed health.
//!
//! Calls, the token request, back-off, JSON decoding and form encoding are the providers'
//! toolkit's ([`crate::common`]). People are found by their mobile number through the
//! directory (E.164 or national form; the directory's number plan normalises), else by an
//! external id `mbn:{userId}`.

pub mod map;
pub mod parse;
pub mod runtime;

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::common::{self, defaults};
use crate::{BuildError, ProviderTask};
use presence_actors::provider::ProviderContext;

/// The paths of the API below `base_url`. The first three are Telenor's documented step names;
/// the rest are assumed (see [`parse`]). `{id}` stands for the monitor id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MbnPaths {
    /// `catalog/userInfo`.
    pub user_info: String,
    /// `status/token`.
    pub status_token: String,
    /// `/csta/authentication/token`.
    pub csta_token: String,
    /// Enterprise monitor start (`POST`).
    pub monitor_start: String,
    /// One monitor: refresh (`PUT`) and stop (`DELETE`); contains `{id}`.
    pub monitor: String,
    /// The monitor's long-poll event queue (`GET`); contains `{id}`.
    pub events: String,
    /// The status of every user (`GET`, paged): the resync.
    pub status_list: String,
}

impl Default for MbnPaths {
    fn default() -> Self {
        MbnPaths {
            user_info: parse::PATH_USER_INFO.into(),
            status_token: parse::PATH_STATUS_TOKEN.into(),
            csta_token: parse::PATH_CSTA_TOKEN.into(),
            monitor_start: parse::PATH_MONITOR_START.into(),
            monitor: parse::PATH_MONITOR.into(),
            events: parse::PATH_EVENTS.into(),
            status_list: parse::PATH_STATUS_LIST.into(),
        }
    }
}

/// `type = "telenor_mbn"` settings.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MbnConfig {
    /// Provider name.
    pub name: String,
    /// Base URL of the MBN partner API (given by Telenor with the partner agreement; not public).
    pub base_url: String,
    /// The OAuth2 token endpoint.
    #[serde(default = "default_token_url")]
    pub token_url: String,
    /// The partner application's client id (sent as HTTP Basic with the secret).
    pub client_id: String,
    /// The partner application's client secret.
    pub client_secret: String,
    /// The company's system user ("API User", from Min Bedrift).
    pub username: String,
    /// Its password.
    pub password: String,
    /// OAuth2 scope, if the partner agreement names one.
    #[serde(default)]
    pub scope: Option<String>,
    /// Longest wait of one event poll, in seconds (the server answers earlier when events come).
    #[serde(default = "defaults::u64_::<25>")]
    pub poll_wait_secs: u64,
    /// Monitor lifetime asked for, in seconds.
    #[serde(default = "defaults::u64_::<600>")]
    pub monitor_expires_secs: u64,
    /// Refresh the monitor this often, in seconds (at the latest at half its lifetime).
    #[serde(default = "defaults::u64_::<240>")]
    pub monitor_refresh_secs: u64,
    /// Timeout of a request, in seconds (an event poll gets its wait on top).
    #[serde(default = "defaults::u64_::<10>")]
    pub request_timeout_secs: u64,
    /// Consecutive failures after which the feed is marked down (its signals show stale).
    #[serde(default = "defaults::u32_::<3>")]
    pub failures_before_down: u32,
    /// Longest wait between retries, in seconds.
    #[serde(default = "defaults::u64_::<30>")]
    pub max_backoff_secs: u64,
    /// MBN absence type → hub absence reason code, over the defaults (`illness = "sick"`,
    /// `holiday = "vacation"`, `meeting = "meeting"`, `lunch = "lunch"`…; unmapped types are
    /// `other`).
    #[serde(default)]
    pub absence_reasons: BTreeMap<String, String>,
    /// API paths below `base_url`.
    #[serde(default)]
    pub paths: MbnPaths,
}

impl fmt::Debug for MbnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MbnConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"…")
            .field("username", &self.username)
            .field("password", &"…")
            .field("scope", &self.scope)
            .field("poll_wait_secs", &self.poll_wait_secs)
            .field("monitor_expires_secs", &self.monitor_expires_secs)
            .field("monitor_refresh_secs", &self.monitor_refresh_secs)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("failures_before_down", &self.failures_before_down)
            .field("max_backoff_secs", &self.max_backoff_secs)
            .field("absence_reasons", &self.absence_reasons)
            .field("paths", &self.paths)
            .finish()
    }
}

fn default_token_url() -> String {
    parse::DEFAULT_TOKEN_URL.into()
}

impl MbnConfig {
    /// A configuration with every optional setting at its default: what the config file gives
    /// when only the required keys are written.
    pub fn new(
        name: &str,
        base_url: &str,
        client_id: &str,
        client_secret: &str,
        username: &str,
        password: &str,
    ) -> Self {
        let required = serde_json::json!({
            "name": name, "base_url": base_url, "client_id": client_id, "client_secret": client_secret,
            "username": username, "password": password,
        });
        serde_json::from_value(required).expect("the required keys are strings")
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), BuildError> {
        let bad = |m: String| Err(BuildError::Invalid(m));
        for (field, v) in [
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
            ("username", &self.username),
            ("password", &self.password),
        ] {
            if v.trim().is_empty() || v.len() > 1024 {
                return bad(format!("{field} must be set (at most 1024 bytes)"));
            }
        }
        for (field, v) in [("base_url", &self.base_url), ("token_url", &self.token_url)] {
            let rest = v.strip_prefix("https://").or_else(|| v.strip_prefix("http://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) || v.chars().any(char::is_whitespace) {
                return bad(format!("{field} must be an http(s) URL"));
            }
        }
        if self.scope.as_ref().is_some_and(|s| s.len() > 1024) {
            return bad("scope is longer than 1024 bytes".into());
        }
        let range = |field: &str, v: u64, r: std::ops::RangeInclusive<u64>| {
            defaults::check_range(field, v, r).map_err(|m| BuildError::Invalid(m.to_string()))
        };
        range("poll_wait_secs", self.poll_wait_secs, 1..=300)?;
        range("monitor_expires_secs", self.monitor_expires_secs, 30..=86_400)?;
        // Refreshed before it expires.
        range("monitor_refresh_secs", self.monitor_refresh_secs, 5..=self.monitor_expires_secs - 1)?;
        range("request_timeout_secs", self.request_timeout_secs, 1..=120)?;
        range("failures_before_down", self.failures_before_down.into(), 1..=100)?;
        range("max_backoff_secs", self.max_backoff_secs, 1..=3600)?;
        for (kind, code) in &self.absence_reasons {
            if parse::absence_kind(kind).is_none() {
                return bad(format!(
                    "absence_reasons: {kind:?} is not an absence type (1-32 letters, digits, _ - or spaces)"
                ));
            }
            let ok = !code.is_empty()
                && code.len() <= 32
                && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return bad(format!("absence_reasons: {code:?} is not a reason code (1-32 of a-z, 0-9 and _)"));
            }
        }
        let p = &self.paths;
        for (field, v, needs_id) in [
            ("user_info", &p.user_info, false),
            ("status_token", &p.status_token, false),
            ("csta_token", &p.csta_token, false),
            ("monitor_start", &p.monitor_start, false),
            ("monitor", &p.monitor, true),
            ("events", &p.events, true),
            ("status_list", &p.status_list, false),
        ] {
            if !v.starts_with('/') || v.len() > 512 || v.contains(['?', '#']) || v.chars().any(char::is_whitespace) {
                return bad(format!("paths.{field} must be a path starting with / (no query)"));
            }
            if needs_id != v.contains("{id}") {
                return bad(format!(
                    "paths.{field} must {}contain {{id}} (the monitor id)",
                    if needs_id { "" } else { "not " }
                ));
            }
        }
        Ok(())
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url.trim_end_matches('/'), path)
    }
}

/// The provider's task.
pub fn task(config: &MbnConfig, ctx: ProviderContext) -> Result<ProviderTask, BuildError> {
    config.validate()?;
    Ok(common::task(runtime::Runtime::new(ctx, config.clone()).run()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(extra: Value) -> Result<MbnConfig, String> {
        let mut v = json!({
            "name": "mbn", "base_url": "https://mbn.example/api", "client_id": "c", "client_secret": "s",
            "username": "u", "password": "p",
        });
        for (k, x) in extra.as_object().into_iter().flatten() {
            v[k] = x.clone();
        }
        let c: MbnConfig = serde_json::from_value(v).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn mbn_config_defaults_and_validation() {
        let c = parse(json!({})).unwrap();
        assert_eq!(c.token_url, "https://api.telenor.no/oauth/v2/token");
        assert_eq!(
            (c.poll_wait_secs, c.monitor_expires_secs, c.monitor_refresh_secs, c.request_timeout_secs),
            (25, 600, 240, 10)
        );
        assert_eq!((c.failures_before_down, c.max_backoff_secs, c.scope.as_deref()), (3, 30, None));
        let n = MbnConfig::new("mbn", "https://mbn.example/api", "c", "s", "u", "p");
        assert_eq!(format!("{n:?}"), format!("{c:?}"), "new() is the file with only the required keys");
        assert_eq!(c.paths, MbnPaths::default());
        assert_eq!(c.url(&c.paths.user_info), "https://mbn.example/api/catalog/userInfo");
        assert!(!format!("{c:?}").contains("\"p\""), "the password is not logged");
        let c = parse(
            json!({ "absence_reasons": { "COURSE": "meeting" }, "paths": { "events": "/v2/monitors/{id}/poll" } }),
        )
        .unwrap();
        assert_eq!(c.absence_reasons["COURSE"], "meeting");
        assert_eq!(c.paths.events, "/v2/monitors/{id}/poll");
        assert_eq!(c.paths.monitor, "/csta/monitor/{id}");
        for bad in [
            json!({ "poll_wait_secs": 0 }),
            json!({ "monitor_refresh_secs": 600 }),
            json!({ "monitor_expires_secs": 10 }),
            json!({ "token_url": "ftp://x" }),
            json!({ "base_url": "https://" }),
            json!({ "client_id": "" }),
            json!({ "unknown": 1 }),
            json!({ "absence_reasons": { "illness": "Sick Leave" } }),
            json!({ "absence_reasons": { "": "sick" } }),
            json!({ "paths": { "events": "/events" } }),
            json!({ "paths": { "user_info": "catalog/userInfo" } }),
            json!({ "paths": { "status_list": "/status/{id}" } }),
            json!({ "paths": { "nope": "/x" } }),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
