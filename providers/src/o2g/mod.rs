//! Alcatel-Lucent OmniPCX Enterprise through the O2G REST API (`type = "o2g"`): desk phones'
//! call state and routing (forward, overflow, DND) for everyone in the directory.
//!
//! How it talks to O2G (ALE's O2G REST API documentation, its SDKs and tutorial; see
//! `fixtures/o2g/README.md` for where each payload comes from):
//!
//! 1. `GET {base_url}/api/rest` (discovery) → the authenticate URL of version `1.0`;
//!    `GET …/authenticate?version=1.0` with HTTP Basic (`login`, `password`) → `credential`,
//!    sent as the cookie `AlcUserId` from then on; `POST …/sessions {applicationName}` → the
//!    session: `timeToLive` (seconds) and the service URLs. One administrator session serves
//!    the whole PBX.
//! 2. `POST …/sessions/keepalive` every `keepalive_fraction` × `timeToLive`.
//! 3. `POST …/subscriptions` with one selector per package (`telephony`, `routingManagement`),
//!    whose `ids` are the people's O2G login names (`login_template`, default `{extension}`),
//!    split into several subscriptions when `max_ids_per_subscription` is set; `timeout`
//!    (minutes) in chunk mode, `webHookUrl` in webhook mode.
//! 4. Chunk mode: `POST` the polling URL and read the chunked answer — one JSON event per
//!    line, `OnChannelInformation` first, `text: "keepalive"` heartbeats. A clean end (or
//!    `stream_idle_secs` of silence) is re-opened at once; a failure (non-2xx, I/O error)
//!    loses the channel: the feed goes down (stale, never Offline) and the provider
//!    re-subscribes — logging in again first when the session is gone — with back-off and
//!    jitter: the wait doubles from the first of `backoff_secs` to the largest, each drawn from
//!    the upper half of its nominal value (by default 2, 4, 8, 16, 30 s nominal: 1–2, 2–4, 4–8,
//!    8–16, then 15–30 s), back to the first once the feed is up.
//!    Webhook mode: O2G POSTs one event per request to `/hooks/{name}/events/{key}`, where
//!    `key` is a fresh secret per subscription (O2G signs nothing); an unknown key is a `404`.
//! 5. Once a channel is up: `POST …/telephony/state/snapshot?loginName=` and
//!    `…/routing/state/snapshot?loginName=` per person, so changes missed while it was down are
//!    resynced (`OnTelephonyState`, `OnRoutingStateChanged`). The feed is up again when they
//!    are in (or after 20 s). User state (`OnUserStateModified`) is part of the `telephony`
//!    package.
//!
//! Every call but the event stream reads its answer in bounded chunks (a document past
//! [`parse::MAX_DOCUMENT`] is refused) within `call_timeout_secs`; the stream keeps at most
//! [`parse::MAX_EVENT_BYTES`] of a line and opens within the same deadline. All of it goes
//! through the providers' toolkit ([`crate::common`]).
//!
//! - [`parse`]: pure wire handling (documents, events, the line splitter).
//! - [`map`]: pure mapping of events to signals (`pbx` source, instances `{name}` and
//!   `{name}-routing` — the provider's configured name).
//! - [`session`]: discovery, authenticate, the administrator session and its keep-alive, the
//!   session's requests (subscriptions, snapshots) and logout.
//! - [`reader`]: the chunked event stream of one subscription.
//! - [`hook`]: the webhook, with a key per subscription.
//! - [`runtime`]: the provider task: subscriptions, snapshots, recovery, feed health.

pub mod hook;
pub mod map;
pub mod parse;
pub mod reader;
pub mod runtime;
pub mod session;
#[cfg(test)]
mod tests;

use std::time::Duration;

use serde::Deserialize;

use crate::common::backoff::Backoff;
use crate::{BuildError, ProviderTask};
use presence_actors::directory::PersonRef;
use presence_actors::provider::ProviderContext;

/// How events reach the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The long-lived chunked event stream (no inbound port needed). The default.
    #[default]
    Chunk,
    /// O2G POSTs each event to the hub's webhook (`[http] public_url` must reach the hub).
    Webhook,
}

/// `type = "o2g"` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct O2gConfig {
    /// Provider name.
    pub name: String,
    /// The O2G server, e.g. `https://o2g.example.com`; discovery is `{base_url}/api/rest`.
    pub base_url: String,
    /// The O2G administrator login (one session for the whole PBX).
    pub login: String,
    /// Its password.
    pub password: String,
    /// `applicationName` of the session.
    #[serde(default = "default_application_name")]
    pub application_name: String,
    /// `chunk` (default) or `webhook`.
    #[serde(default)]
    pub mode: Mode,
    /// Chunk mode: the event channel's lifetime asked for, in minutes (`timeout`).
    #[serde(default = "default_subscription_timeout")]
    pub subscription_timeout_min: u32,
    /// Each person's O2G login name, with placeholders `{extension}`, `{id}`, `{email}`,
    /// `{email_user}`. People without a needed field are left out.
    #[serde(default = "default_login_template")]
    pub login_template: String,
    /// Session keep-alive every this fraction of `timeToLive` (0.5–0.9).
    #[serde(default = "default_keepalive_fraction")]
    pub keepalive_fraction: f64,
    /// Back-off between recovery attempts, in seconds: the first wait and, as the largest
    /// entry, the longest; the wait doubles in between, with jitter (see [`O2gConfig::backoff`]).
    #[serde(default = "default_backoff")]
    pub backoff_secs: Vec<u64>,
    /// Deadline of each call but the event stream (discovery, login, keep-alive, subscribe,
    /// snapshot) and of the stream's opening, in seconds.
    #[serde(default = "default_call_timeout")]
    pub call_timeout_secs: u64,
    /// Most login names per subscription (default: all in one).
    #[serde(default)]
    pub max_ids_per_subscription: Option<usize>,
    /// Use the public URLs O2G announces (`publicUrl`, `publicBaseUrl`, `publicPollingUrl`)
    /// rather than the private ones.
    #[serde(default)]
    pub public_access: bool,
    /// Chunk mode: a channel silent for this long (no event, no heartbeat) is re-opened
    /// (0: never).
    #[serde(default = "default_stream_idle")]
    pub stream_idle_secs: u64,
    /// Only the people whose extension starts with one of these (empty: everyone with a login
    /// name) — for an OmniPCX that serves one site's extension range.
    #[serde(default)]
    pub extension_prefixes: Vec<String>,
}

fn default_application_name() -> String {
    "presence-hub".into()
}
fn default_subscription_timeout() -> u32 {
    60
}
fn default_login_template() -> String {
    "{extension}".into()
}
fn default_keepalive_fraction() -> f64 {
    0.5
}
fn default_backoff() -> Vec<u64> {
    vec![2, 4, 8, 16, 30]
}
fn default_call_timeout() -> u64 {
    15
}
fn default_stream_idle() -> u64 {
    300
}

const PLACEHOLDERS: [&str; 4] = ["{extension}", "{id}", "{email}", "{email_user}"];

impl O2gConfig {
    /// Settings with the defaults.
    pub fn new(name: &str, base_url: &str, login: &str, password: &str) -> O2gConfig {
        O2gConfig {
            name: name.into(),
            base_url: base_url.into(),
            login: login.into(),
            password: password.into(),
            application_name: default_application_name(),
            mode: Mode::Chunk,
            subscription_timeout_min: default_subscription_timeout(),
            login_template: default_login_template(),
            keepalive_fraction: default_keepalive_fraction(),
            backoff_secs: default_backoff(),
            call_timeout_secs: default_call_timeout(),
            max_ids_per_subscription: None,
            extension_prefixes: Vec::new(),
            public_access: false,
            stream_idle_secs: default_stream_idle(),
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), BuildError> {
        let bad = |m: &str| Err(BuildError::Invalid(m.to_string()));
        if self.name.trim().is_empty() {
            return Err(BuildError::Invalid("an o2g provider needs a name".into()));
        }
        if !(self.base_url.starts_with("https://") || self.base_url.starts_with("http://")) {
            return bad("base_url must be an http(s) URL");
        }
        if self.login.trim().is_empty() || self.login.len() > 256 || self.login.contains(':') {
            return bad("login must be set (no colon: it goes into HTTP Basic)");
        }
        if self.password.is_empty() || self.password.len() > 1024 {
            return bad("password must be set");
        }
        if self.application_name.trim().is_empty() || self.application_name.len() > 64 {
            return bad("application_name must be 1-64 characters");
        }
        if let Err(m) = crate::check_extension_prefixes(&self.extension_prefixes) {
            return bad(&m);
        }
        if !(1..=1440).contains(&self.subscription_timeout_min) {
            return bad("subscription_timeout_min must be 1-1440");
        }
        if !PLACEHOLDERS.iter().any(|p| self.login_template.contains(p)) {
            return bad("login_template needs a placeholder: {extension}, {id}, {email} or {email_user}");
        }
        let mut rest = self.login_template.clone();
        for p in PLACEHOLDERS {
            rest = rest.replace(p, "");
        }
        if rest.contains('{') || rest.contains('}') {
            return bad("login_template knows {extension}, {id}, {email} and {email_user} only");
        }
        if !(0.5..=0.9).contains(&self.keepalive_fraction) {
            return bad("keepalive_fraction must be 0.5-0.9 (of the session's timeToLive)");
        }
        if self.backoff_secs.is_empty() || self.backoff_secs.iter().any(|s| !(1..=3600).contains(s)) {
            return bad("backoff_secs must list 1-3600 s steps, e.g. [2, 4, 8, 16, 30]");
        }
        if !(1..=120).contains(&self.call_timeout_secs) {
            return bad("call_timeout_secs must be 1-120");
        }
        if self.max_ids_per_subscription == Some(0) {
            return bad("max_ids_per_subscription must be at least 1");
        }
        if self.stream_idle_secs != 0 && !(10..=86_400).contains(&self.stream_idle_secs) {
            return bad("stream_idle_secs must be 0 (off) or 10-86400");
        }
        Ok(())
    }

    /// The back-off between recovery attempts: from the first of `backoff_secs`, doubling to
    /// the largest, each wait drawn from the upper half of its nominal value.
    pub fn backoff(&self) -> Backoff {
        let first = self.backoff_secs.first().copied().unwrap_or(2);
        let max = self.backoff_secs.iter().copied().max().unwrap_or(first);
        Backoff::new(Duration::from_secs(first), Duration::from_secs(max))
    }

    /// The deadline of a call.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.call_timeout_secs)
    }
}

/// A person's O2G login name from the template; `None` when a needed field is missing.
pub fn fill_login(template: &str, person: &PersonRef<'_>) -> Option<String> {
    let mut out = template.to_string();
    let email = person.email();
    let fields: [(&str, Option<&str>); 4] = [
        ("{extension}", person.extension()),
        ("{id}", Some(person.id())),
        ("{email}", email),
        ("{email_user}", email.and_then(|e| e.split('@').next())),
    ];
    for (k, v) in fields {
        if out.contains(k) {
            out = out.replace(k, v.map(str::trim).filter(|v| !v.is_empty())?);
        }
    }
    let out = out.trim().to_string();
    (!out.is_empty()).then_some(out)
}

/// The provider's task.
pub fn task(config: &O2gConfig, ctx: ProviderContext) -> Result<ProviderTask, BuildError> {
    config.validate()?;
    let rt = runtime::Runtime::new(ctx, config.clone());
    Ok(Box::pin(async move {
        rt.run().await;
        Ok(())
    }))
}

#[cfg(test)]
mod config_tests {
    use super::*;

    fn parse(extra: &str) -> Result<O2gConfig, String> {
        let text = format!(
            "name = \"o2g\"\nbase_url = \"https://o2g.example.com\"\nlogin = \"admin\"\npassword = \"secret\"\n{extra}"
        );
        let c: O2gConfig = toml_like(&text)?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// The config file is TOML; serde_json stands in here (the crate has no TOML parser):
    /// `key = value` lines become a JSON object.
    fn toml_like(text: &str) -> Result<O2gConfig, String> {
        let mut obj = serde_json::Map::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line.split_once('=').ok_or("no =")?;
            let v: serde_json::Value = serde_json::from_str(v.trim()).map_err(|e| e.to_string())?;
            obj.insert(k.trim().to_string(), v);
        }
        serde_json::from_value(serde_json::Value::Object(obj)).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_validation() {
        let c = parse("").unwrap();
        assert_eq!(c.mode, Mode::Chunk);
        assert_eq!(c.login_template, "{extension}");
        let mut b = c.backoff();
        let nominal: Vec<u64> = (0..7)
            .map(|_| {
                let n = b.peek();
                assert!(b.next_delay() <= n);
                n.as_secs()
            })
            .collect();
        assert_eq!(nominal, [2, 4, 8, 16, 30, 30, 30]);
        let mut one = parse("backoff_secs = [1]").unwrap().backoff();
        assert!((0..3).all(|_| one.next_delay() <= Duration::from_secs(1) && one.peek() == Duration::from_secs(1)));
        assert_eq!(c.call_timeout(), Duration::from_secs(15));
        assert_eq!(parse("mode = \"webhook\"").unwrap().mode, Mode::Webhook);
        for bad in [
            "mode = \"poll\"",
            "keepalive_fraction = 0.95",
            "keepalive_fraction = 0.2",
            "backoff_secs = []",
            "backoff_secs = [0]",
            "subscription_timeout_min = 0",
            "login_template = \"oxe\"",
            "login_template = \"{ext}\"",
            "max_ids_per_subscription = 0",
            "stream_idle_secs = 3",
            "call_timeout_secs = 0",
            "surprise = 1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(
            parse("login_template = \"oxe{extension}\"\nmax_ids_per_subscription = 100\nstream_idle_secs = 0").is_ok()
        );
        let mut c = O2gConfig::new("o2g", "ftp://x", "a", "b");
        assert!(c.validate().is_err());
        c.base_url = "http://127.0.0.1:1".into();
        assert!(c.validate().is_ok());
        c.login = "a:b".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn logins_from_the_template() {
        use presence_actors::directory::{Directory, NumberPlan, Person};
        let mut p = Person::new("asa.ostberg", "Åsa Östberg");
        p.extension = Some("2624".into());
        p.email = Some("asa.ostberg@nordvik.se".into());
        let q = Person::new("no.ext", "No Extension");
        let d = Directory::build(vec![p, q], &NumberPlan::sweden()).unwrap();
        let asa = d.person(0).unwrap();
        let none = d.person(1).unwrap();
        assert_eq!(fill_login("{extension}", &asa).as_deref(), Some("2624"));
        assert_eq!(fill_login("oxe{extension}", &asa).as_deref(), Some("oxe2624"));
        assert_eq!(fill_login("{email_user}", &asa).as_deref(), Some("asa.ostberg"));
        assert_eq!(fill_login("{id}", &none).as_deref(), Some("no.ext"));
        assert_eq!(fill_login("{extension}", &none), None);
    }
}
