//! Mobile operators without a public API — TDC, Phonero, A1 — through one generic adapter
//! (`type = "operator"`).
//!
//! No public developer API for call events exists for these operators (docs/ARCHITECTURE.md,
//! § Protocol references): each needs a partner agreement, and the format comes with it. So
//! nothing here assumes field names. A provider entry says how events arrive and where their
//! fields are:
//!
//! - **Intake**, either or both:
//!   - `[providers.webhook]` ([`hook`]): the operator POSTs to `{hub}/hooks/{name}/{path}`
//!     (default path `events`), authenticated by an HMAC signature of the body (SHA-256 or
//!     SHA-1, hex or base64, optionally Stripe-style `t=…,v1=…` with a tolerance window) or a
//!     shared token header. A wrong or missing signature is answered `401` with a JSON error; a
//!     body that does not parse `400` with the reason; both are counted in health (`errors`,
//!     `/metrics` `presence_provider_errors_total`) and in `details`. Bodies over
//!     `[http] max_hook_bytes` are refused by the hub before they get here.
//!   - `[providers.poll]` ([`runtime`]): the hub GETs a URL every `interval_secs` (Bearer or
//!     Basic auth, extra headers, `ETag` / `If-None-Match`) through the providers' toolkit
//!     (bounded answer, deadline), backs off on errors (with jitter, doubling up to
//!     `max_backoff_secs`, at least any `Retry-After`), and after `stale_after_failures`
//!     failures in a row marks the feed down: its signals show stale, never Offline, until a
//!     poll succeeds again.
//! - **Mapping** `[providers.mapping]` ([`parse`]): JSON (a JSONPath subset) or XML (element
//!   paths) to the event list and to each field — number (required), call state, diversion
//!   target / flag, absence type / text / end, timestamp, event id — and value maps from the
//!   operator's words to call states and to the hub's absence reason codes.
//! - **Signals** ([`map`]): `Source::Mobile`, instance = the provider name for calls and
//!   `{name}-absence` for absences; numbers resolve to people through the directory (E.164,
//!   national forms, extensions); unresolved numbers are counted. Events are ordered per person
//!   by their timestamp: older ones and duplicates are dropped and counted.
//!
//! Example mappings for the three operators ship in `fixtures/operators/{tdc,phonero,a1}.toml`
//! with sample payloads beside them. **They are examples** — no public format exists — to be
//! adjusted to the feed the operator actually delivers.
//!
//! ```toml
//! [[providers]]
//! type = "operator"
//! name = "tdc"
//! operator = "TDC"
//!
//! [providers.webhook]
//! auth = "hmac"
//! header = "X-Signature"
//! scheme = "stripe"             # t=<unix>,v1=<hex HMAC-SHA256 of "t.body">
//! secret = "change-me"
//!
//! [providers.mapping]
//! format = "json"
//! events = "$.events[*]"
//! number = "$.msisdn"
//! call_state = "$.event"
//! forward_to = "$.forward.unconditional.number"
//! forward_active = "$.forward.unconditional.enabled"
//! timestamp = "$.ts"
//! timestamp_format = "rfc3339"
//! event_id = "$.id"
//! [providers.mapping.call_states]
//! call_start = "ringing"
//! call_answered = "in_call"
//! call_end = "idle"
//! forward_changed = "none"
//! ```

#[cfg(test)]
mod fuzz;
pub mod hook;
pub mod map;
pub mod parse;
pub mod runtime;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::common::config::NoOtherKeys;
use crate::common::login::Login;
use crate::common::{self, defaults};
use crate::{BuildError, ProviderTask};
use presence_actors::model::{AbsenceReason, Availability};
use presence_actors::provider::ProviderContext;

pub use hook::{Algorithm, AuthKind, Encoding, Scheme, Verifier};
pub use parse::{CallState, CallStateTarget, Format, Mapping, MappingConfig, TimestampFormat};

/// `[providers.webhook]`: the operator pushes events to the hub.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The path after `/hooks/{name}/` (default `events`).
    #[serde(default = "default_path")]
    pub path: String,
    /// `hmac`, `token` or `none`.
    pub auth: AuthKind,
    /// The header with the signature (default `X-Signature`) or token (default `Authorization`).
    #[serde(default)]
    pub header: Option<String>,
    /// HMAC hash: `sha256` (default) or `sha1`.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Signature encoding: `hex` (default) or `base64`.
    #[serde(default)]
    pub encoding: Encoding,
    /// `plain` (the header is the signature) or `stripe` (`t=<unix>,v1=<sig>` over `"t.body"`).
    #[serde(default)]
    pub scheme: Scheme,
    /// A prefix before the signature in the header (plain scheme), e.g. `sha256=`.
    #[serde(default)]
    pub prefix: String,
    /// The HMAC secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// The shared token (`auth = "token"`); `Bearer ` before it is accepted too.
    #[serde(default)]
    pub token: Option<String>,
    /// Allowed difference between the signed timestamp and the hub's clock (stripe scheme), s.
    #[serde(default = "defaults::u64_::<300>")]
    pub tolerance_secs: u64,
    /// Mark the feed down (stale) when no authenticated request came for this long; for
    /// operators that send heartbeats. Default: never.
    #[serde(default)]
    pub stale_after_secs: Option<u64>,
}

/// `[providers.poll]`: the hub fetches the operator's current state.
#[derive(Debug, Clone, Deserialize)]
pub struct PollConfig {
    /// The URL to GET.
    pub url: String,
    /// Seconds between polls.
    #[serde(default = "defaults::u64_::<10>")]
    pub interval_secs: u64,
    /// Timeout of one request, seconds.
    #[serde(default = "defaults::u64_::<10>")]
    pub timeout_secs: u64,
    /// `Authorization: Bearer` token.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Basic auth `username` and `password`.
    #[serde(flatten)]
    pub login: Login,
    /// Extra request headers (e.g. an API key).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Failures in a row before the feed shows stale.
    #[serde(default = "defaults::u32_::<3>")]
    pub stale_after_failures: u32,
    /// Longest wait between polls while failing, seconds.
    #[serde(default = "defaults::u64_::<300>")]
    pub max_backoff_secs: u64,
    /// Largest answer read, bytes.
    #[serde(default = "defaults::usize_::<{ 4 * 1024 * 1024 }>")]
    pub max_body_bytes: usize,
    /// Refuses any other key (in place of `deny_unknown_fields`, which `login` rules out).
    #[serde(flatten)]
    pub other: NoOtherKeys,
}

/// `type = "operator"` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Provider name (also the instance of its call signals and the webhook path segment).
    pub name: String,
    /// The operator, for health and logs (`TDC`, `Phonero`, `A1`…).
    #[serde(default)]
    pub operator: Option<String>,
    /// Webhook intake.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// Polling intake.
    #[serde(default)]
    pub poll: Option<PollConfig>,
    /// Where the fields are and what the words mean.
    pub mapping: MappingConfig,
    /// Note while diverted; `{to}` is the target.
    #[serde(default = "default_forward_note")]
    pub forward_note: String,
    /// Availability while idle and diverted; default none (the note only annotates).
    #[serde(default)]
    pub forwarded_availability: Option<Availability>,
    /// Absence reasons beyond the hub's defaults (or replacing one by code), for deployments
    /// whose `[policy] absence_reasons` add their own.
    #[serde(default)]
    pub absence_reasons: Vec<AbsenceReason>,
    /// Furthest an event's timestamp may be ahead of the hub's clock, seconds.
    #[serde(default = "defaults::u64_::<300>")]
    pub max_clock_skew_secs: u64,
}

impl PollConfig {
    /// Polling `url` every `interval_secs`, every other setting at its default (what the config
    /// file gives with only these two keys).
    pub fn new(url: &str, interval_secs: u64) -> PollConfig {
        let required = serde_json::json!({ "url": url, "interval_secs": interval_secs });
        serde_json::from_value(required).expect("a URL and a number make a poll config")
    }
}

fn default_path() -> String {
    "events".into()
}
fn default_forward_note() -> String {
    "Forwarded to {to}".into()
}

impl WebhookConfig {
    /// The header name in use.
    pub fn header_name(&self) -> String {
        match (&self.header, self.auth) {
            (Some(h), _) => h.trim().to_ascii_lowercase(),
            (None, AuthKind::Token) => "authorization".into(),
            (None, _) => "x-signature".into(),
        }
    }

    /// The verifier for these settings.
    pub fn verifier(&self) -> Verifier {
        match self.auth {
            AuthKind::Hmac => Verifier::hmac(
                &self.header_name(),
                self.algorithm,
                self.secret.as_deref().unwrap_or_default().as_bytes(),
                self.encoding,
                self.scheme,
                &self.prefix,
                self.tolerance_secs,
            ),
            AuthKind::Token => Verifier::token(&self.header_name(), self.token.as_deref().unwrap_or_default()),
            AuthKind::None => Verifier::None,
        }
    }
}

impl OperatorConfig {
    /// The hub's default absence reasons with this provider's additions.
    pub fn reasons(&self) -> Vec<AbsenceReason> {
        let mut r = AbsenceReason::defaults();
        for extra in &self.absence_reasons {
            match r.iter_mut().find(|x| x.code == extra.code) {
                Some(x) => *x = extra.clone(),
                None => r.push(extra.clone()),
            }
        }
        r
    }

    /// Compiles the mapping.
    pub fn compile(&self) -> Result<Mapping, BuildError> {
        Mapping::compile(&self.mapping, &self.reasons())
            .map_err(|e| BuildError::Invalid(e.to_string()))
    }

    /// Checks the settings: intake present, paths compile, secrets set when auth is on,
    /// intervals sane.
    pub fn validate(&self) -> Result<(), BuildError> {
        let bad = |m: String| Err(BuildError::Invalid(m));
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        let range = |field: &str, v: u64, r: std::ops::RangeInclusive<u64>| {
            defaults::check_range(field, v, r).map_err(|m| BuildError::Invalid(m.to_string()))
        };
        if self.name.trim().is_empty() || self.name.len() > 64 || self.name.contains(['/', '?', '#', ' ']) {
            return bad("name must be 1-64 characters without / ? # or spaces (it is a URL path segment)".into());
        }
        if self.webhook.is_none() && self.poll.is_none() {
            return bad("needs [providers.webhook], [providers.poll] or both".into());
        }
        if let Some(w) = &self.webhook {
            let path_ok = !w.path.is_empty()
                && w.path.len() <= 64
                && w.path.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
                && !w.path.contains("..");
            if !path_ok {
                return bad("webhook.path must be 1-64 characters of A-Z a-z 0-9 - _ . /".into());
            }
            let header = w.header_name();
            if header.is_empty()
                || header.len() > 64
                || !header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return bad("webhook.header must be a header name".into());
            }
            match w.auth {
                AuthKind::Hmac => {
                    if !set(&w.secret) || w.secret.as_deref().is_some_and(|s| s.len() > 1024) {
                        return bad("webhook auth = \"hmac\" needs a secret (1-1024 bytes)".into());
                    }
                    if w.token.is_some() {
                        return bad("webhook.token is for auth = \"token\"; hmac uses secret".into());
                    }
                    if w.scheme == Scheme::Stripe {
                        range("webhook.tolerance_secs", w.tolerance_secs, 1..=86_400)?;
                    }
                    if w.prefix.len() > 32 {
                        return bad("webhook.prefix must be at most 32 bytes".into());
                    }
                }
                AuthKind::Token => {
                    if !set(&w.token) || w.token.as_deref().is_some_and(|s| s.len() > 1024) {
                        return bad("webhook auth = \"token\" needs a token (1-1024 bytes)".into());
                    }
                    if w.secret.is_some() {
                        return bad("webhook.secret is for auth = \"hmac\"; token auth uses token".into());
                    }
                }
                AuthKind::None => {
                    if w.secret.is_some() || w.token.is_some() {
                        return bad(
                            "webhook auth = \"none\" but a secret or token is set; say auth = \"hmac\" or \"token\""
                                .into(),
                        );
                    }
                }
            }
            if let Some(s) = w.stale_after_secs {
                range("webhook.stale_after_secs", s, 5..=86_400)?;
            }
        }
        if let Some(p) = &self.poll {
            if !(p.url.starts_with("https://") || p.url.starts_with("http://")) || p.url.len() > 2048 {
                return bad("poll.url must be an http(s) URL".into());
            }
            range("poll.interval_secs", p.interval_secs, 1..=86_400)?;
            range("poll.timeout_secs", p.timeout_secs, 1..=120)?;
            range("poll.stale_after_failures", p.stale_after_failures.into(), 1..=100)?;
            if p.max_backoff_secs < p.interval_secs || p.max_backoff_secs > 86_400 {
                return bad("poll.max_backoff_secs must be at least interval_secs and at most 86400".into());
            }
            if !(1024..=parse::MAX_BODY).contains(&p.max_body_bytes) {
                return bad("poll.max_body_bytes must be 1 KiB-64 MiB".into());
            }
            if let Err(m) = p.login.check() {
                return bad(format!("poll Basic auth: {m}"));
            }
            if p.bearer_token.is_some() && (p.login.is_set() || !set(&p.bearer_token)) {
                return bad("poll: use either bearer_token (non-empty) or username/password".into());
            }
            for (k, v) in &p.headers {
                if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                    || reqwest::header::HeaderValue::from_str(v).is_err()
                {
                    return bad(format!("poll.headers: {k:?} is not a valid header"));
                }
            }
        }
        if self.forward_note.len() > 200 {
            return bad("forward_note must be at most 200 bytes".into());
        }
        range("max_clock_skew_secs", self.max_clock_skew_secs, 0..=86_400)?;
        let policy = presence_actors::model::Policy { absence_reasons: self.reasons(), ..Default::default() };
        if let Err(e) = policy.validate() {
            return bad(format!("absence_reasons: {e}"));
        }
        self.compile()?;
        Ok(())
    }
}

/// Starts the provider on the current runtime.
pub fn task(config: &OperatorConfig, ctx: ProviderContext) -> Result<ProviderTask, BuildError> {
    config.validate()?;
    let mapping = config.compile()?;
    Ok(common::task(runtime::Runtime::new(ctx, config.clone(), mapping).run()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[[providers]]` entries as the config file has them.
    #[derive(Deserialize)]
    struct File {
        providers: Vec<crate::ProviderConfig>,
    }

    /// The shipped example `fixtures/operators/{name}.toml` (they open with the caveat that
    /// they are examples).
    pub(super) fn example(name: &str) -> OperatorConfig {
        let text = String::from_utf8(crate::mutate::fixture(&format!("operators/{name}.toml"))).expect("UTF-8");
        assert!(
            text.trim_start().starts_with('#') && text.contains("EXAMPLE"),
            "{name}.toml must open with the EXAMPLE caveat"
        );
        let f: File = toml::from_str(&text).unwrap_or_else(|e| panic!("{name}.toml: {e}"));
        match f.providers.into_iter().next() {
            Some(crate::ProviderConfig::Operator(c)) => *c,
            _ => panic!("{name}.toml: not an operator provider"),
        }
    }

    /// The sample payloads beside an example, in its format.
    pub(super) fn samples(name: &str) -> Vec<(String, Vec<u8>)> {
        let ext = match example(name).mapping.format {
            Format::Json => "json",
            Format::Xml => "xml",
        };
        crate::mutate::fixture_files(&format!("operators/{name}"), ext)
    }

    /// Parses every sample of an example with the example's mapping; every event maps.
    fn parses(name: &str) -> Vec<parse::OperatorEvent> {
        let c = example(name);
        c.validate().unwrap_or_else(|e| panic!("{name}.toml: {e}"));
        let m = c.compile().unwrap();
        let mut all = Vec::new();
        for (file, body) in samples(name) {
            let evs = m.parse(&body).unwrap_or_else(|e| panic!("{name}/{file}: {e}"));
            assert!(!evs.is_empty(), "{name}/{file}: no events");
            for e in evs {
                let e = e.unwrap_or_else(|e| panic!("{name}/{file}: {e}"));
                assert!(e.unknown.is_empty(), "{name}/{file}: unmapped words {:?}", e.unknown);
                all.push(e);
            }
        }
        all
    }

    fn states(evs: &[parse::OperatorEvent]) -> Vec<Option<CallState>> {
        evs.iter().map(|e| e.call).collect()
    }

    #[test]
    fn tdc_example_parses_its_samples() {
        let evs = parses("tdc");
        assert!(
            states(&evs).contains(&Some(CallState::Ringing))
                && states(&evs).contains(&Some(CallState::InCall))
                && states(&evs).contains(&Some(CallState::Idle))
        );
        assert!(evs.iter().any(|e| matches!(&e.forward, Some(Some(t)) if t.starts_with("+45"))));
        assert!(evs.iter().any(|e| e.forward == Some(None)));
        assert!(evs.iter().any(|e| matches!(&e.absence, Some(Some(a)) if &*a.code == "meeting")));
        assert!(evs.iter().all(|e| e.id.is_some() && e.at.is_some() && e.number.starts_with("+45")));
    }

    #[test]
    fn phonero_example_parses_its_samples() {
        let evs = parses("phonero");
        assert!(states(&evs).contains(&Some(CallState::Ringing)) && states(&evs).contains(&Some(CallState::InCall)));
        assert!(evs.iter().any(|e| matches!(&e.absence, Some(Some(a)) if &*a.code == "sick" && a.text.is_some())));
        assert!(evs.iter().any(|e| e.absence == Some(None)));
        assert!(evs.iter().any(|e| matches!(&e.forward, Some(Some(t)) if t.starts_with("+47"))));
        assert!(evs.iter().all(|e| e.at.is_some() && e.number.starts_with("+47")));
    }

    #[test]
    fn a1_example_parses_its_samples() {
        let evs = parses("a1");
        assert!(
            states(&evs).contains(&Some(CallState::Ringing))
                && states(&evs).contains(&Some(CallState::InCall))
                && states(&evs).contains(&Some(CallState::Idle))
        );
        assert!(evs.iter().any(|e| matches!(&e.absence, Some(Some(a)) if &*a.code == "vacation" && a.until.is_some())));
        assert!(evs.iter().any(|e| matches!(&e.forward, Some(Some(t)) if t.starts_with("+43"))));
        assert!(evs.iter().all(|e| e.at.is_some() && e.number.starts_with("+43")));
    }

    fn base() -> OperatorConfig {
        example("tdc")
    }

    #[test]
    fn validation_catches_config_mistakes() {
        assert!(base().validate().is_ok());
        type Edit = Box<dyn Fn(&mut OperatorConfig)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("needs", Box::new(|c| c.webhook = None)),
            ("secret", Box::new(|c| c.webhook.as_mut().unwrap().secret = Some(" ".into()))),
            ("secret", Box::new(|c| c.webhook.as_mut().unwrap().secret = None)),
            ("needs a token", Box::new(|c| c.webhook.as_mut().unwrap().auth = AuthKind::Token)),
            ("auth = \"none\"", Box::new(|c| c.webhook.as_mut().unwrap().auth = AuthKind::None)),
            ("tolerance", Box::new(|c| c.webhook.as_mut().unwrap().tolerance_secs = 0)),
            ("path", Box::new(|c| c.webhook.as_mut().unwrap().path = "../x".into())),
            ("header", Box::new(|c| c.webhook.as_mut().unwrap().header = Some("bad header".into()))),
            ("name", Box::new(|c| c.name = "a/b".into())),
            ("mapping.events", Box::new(|c| c.mapping.events = "events[*]".into())),
            ("mapping.number", Box::new(|c| c.mapping.number = "$..x".into())),
            (
                "mapping.absences",
                Box::new(|c| {
                    c.mapping.absences.insert("X".into(), "nope".into());
                }),
            ),
            (
                "absence_reasons",
                Box::new(|c| {
                    c.absence_reasons.push(AbsenceReason {
                        code: "Bad Code".into(),
                        label_sv: "x".into(),
                        label_en: "x".into(),
                        availability: None,
                        activity: None,
                        ooo: false,
                    })
                }),
            ),
        ];
        for (want, f) in cases {
            let mut c = base();
            f(&mut c);
            let e = c.validate().expect_err(want).to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        let poll = |f: &dyn Fn(&mut PollConfig)| {
            let mut c = example("a1");
            f(c.poll.as_mut().unwrap());
            c.validate()
        };
        assert!(poll(&|_| {}).is_ok());
        assert!(poll(&|p| p.interval_secs = 0).is_err());
        assert!(poll(&|p| p.url = "ftp://x".into()).is_err());
        assert!(poll(&|p| p.login.password = None).is_err());
        assert!(poll(&|p| p.bearer_token = Some("t".into())).is_err());
        assert!(poll(&|p| p.max_backoff_secs = 0).is_err());
        assert!(poll(&|p| p.timeout_secs = 500).is_err());
        assert!(poll(&|p| {
            p.headers.insert("bad header".into(), "x".into());
        })
        .is_err());
        // XML paths are checked as XML.
        let mut c = example("a1");
        c.mapping.number = "/abs".into();
        assert!(c.validate().unwrap_err().to_string().contains("mapping.number"));
        // Unknown fields are refused.
        let text = String::from_utf8(crate::mutate::fixture("operators/tdc.toml")).unwrap();
        let typo = text.replacen("forward_note", "forwad_note", 1).replacen(
            "[providers.webhook]",
            "[providers.webhook]\nsecert = \"x\"",
            1,
        );
        assert!(toml::from_str::<File>(&typo).is_err());
    }

    #[test]
    fn a_poll_config_from_two_keys_has_the_defaults() {
        let p = PollConfig::new("https://operator.example/state", 60);
        assert_eq!((p.url.as_str(), p.interval_secs, p.timeout_secs), ("https://operator.example/state", 60, 10));
        assert_eq!((p.stale_after_failures, p.max_backoff_secs, p.max_body_bytes), (3, 300, 4 * 1024 * 1024));
        assert!(p.bearer_token.is_none() && p.login.username.is_none() && p.headers.is_empty());
        let login: PollConfig = serde_json::from_value(serde_json::json!({ "url": "https://o.example/", "username": "u", "password": "p" })).unwrap();
        assert_eq!(login.login.pair(), Some(("u", "p")), "username and password stay flat keys");
        let e = serde_json::from_value::<PollConfig>(serde_json::json!({ "url": "https://o.example/", "usrname": "u" })).unwrap_err();
        assert!(e.to_string().contains("unknown field `usrname`"), "{e}");
        let w: WebhookConfig = serde_json::from_value(serde_json::json!({ "auth": "none" })).unwrap();
        assert_eq!((w.path.as_str(), w.tolerance_secs, w.header_name()), ("events", 300, "x-signature".to_string()));
    }

    #[test]
    fn extra_reasons_extend_the_defaults() {
        let mut c = base();
        c.absence_reasons.push(AbsenceReason {
            code: "jury_duty".into(),
            label_sv: "Nämndeman".into(),
            label_en: "Jury duty".into(),
            availability: Some(Availability::Away),
            activity: None,
            ooo: true,
        });
        c.mapping.absences.insert("JURY".into(), "jury_duty".into());
        assert!(c.validate().is_ok());
        assert!(c.reasons().iter().any(|r| &*r.code == "jury_duty"));
        assert!(c.reasons().iter().any(|r| &*r.code == "sick"));
    }
}
