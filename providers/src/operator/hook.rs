//! The operator webhook: the operator POSTs events to `/hooks/{name}/{path}`.
//!
//! [`OperatorHook`] runs on HTTP worker threads: it checks the path and method (`404`, `405`),
//! then the sender ([`Verifier`]: `401` with a JSON error), parses the body with the mapping
//! (`400` with the reason), hands the events to the provider's shared state
//! ([`Shared::ingest`]), and answers `200` with what it did (`{"accepted", "duplicates",
//! "out_of_order", "unresolved", "invalid"}`). Refusals are counted in the feed's `errors` and
//! in `details` ([`HookStats`]).
//!
//! The sender check is pure (no I/O). Two kinds, as `[providers.webhook] auth` says:
//! - `hmac`: a header carries an HMAC of the body (SHA-256, or SHA-1 for legacy platforms),
//!   hex or base64, optionally behind a prefix (`sha256=…`, GitHub style). With
//!   `scheme = "stripe"` the header is `t=<unix seconds>,v1=<signature>[,v1=…]`, the MAC is
//!   over `"{t}.{body}"`, and `t` must be within `tolerance_secs` of the hub's clock (replays
//!   of old requests are refused).
//! - `token`: a header carries a shared token (`Authorization: Bearer <token>` or a bare
//!   token in e.g. `X-Api-Key`).
//!
//! Comparisons are constant-time (HMAC verification by aws-lc-rs; tokens by
//! `verify_slices_are_equal`), so timing does not reveal how much of a guess was right.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use aws_lc_rs::{constant_time, hmac};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::runtime::Shared;
use crate::common::hook;
use presence_actors::model::{now_ms, rfc3339};
use presence_actors::provider::{HookHandler, HookRequest, HookResponse};

/// Longest signature header read, in bytes.
const MAX_HEADER_LEN: usize = 2048;

/// Counters of the webhook.
#[derive(Default)]
pub struct HookStats {
    /// Requests that passed authentication and parsed.
    pub accepted: AtomicU64,
    /// Requests refused for a wrong or missing signature or token.
    pub rejected_auth: AtomicU64,
    /// Bodies that did not parse, or whose every event was refused.
    pub malformed: AtomicU64,
    /// Requests to other paths or with other methods.
    pub not_found: AtomicU64,
    /// Time of the last accepted request (ms; 0 = never).
    pub last_at: AtomicI64,
}

impl HookStats {
    /// Health details of the webhook at `url`, checked by `verifier`.
    pub fn details(&self, url: &str, verifier: &Verifier) -> serde_json::Value {
        serde_json::json!({
            "url": url,
            "auth": verifier.describe(),
            "accepted": self.accepted.load(Ordering::Relaxed),
            "rejected_auth": self.rejected_auth.load(Ordering::Relaxed),
            "malformed": self.malformed.load(Ordering::Relaxed),
            "not_found": self.not_found.load(Ordering::Relaxed),
            "last_at": Some(self.last_at.load(Ordering::Relaxed)).filter(|t| *t > 0).map(rfc3339),
        })
    }
}

/// The webhook: `/hooks/{name}/{path}`.
pub struct OperatorHook {
    shared: Arc<Shared>,
    path: String,
    verifier: Verifier,
}

impl OperatorHook {
    /// A handler taking events at `/{path}`, checked by `verifier`, into `shared`.
    pub fn new(shared: Arc<Shared>, path: &str, verifier: Verifier) -> OperatorHook {
        OperatorHook { shared, path: path.trim_matches('/').to_string(), verifier }
    }
}

fn json(status: u16, v: serde_json::Value) -> HookResponse {
    HookResponse { status, content_type: "application/json", body: v.to_string().into_bytes() }
}

impl HookHandler for OperatorHook {
    fn handle(&self, req: HookRequest) -> HookResponse {
        let feed = self.shared.feed();
        let stats = &self.shared.hook;
        if req.tail.trim_matches('/') != self.path {
            stats.not_found.fetch_add(1, Ordering::Relaxed);
            return HookResponse::error(404, "not_found", &format!("this provider takes events at /{}", self.path));
        }
        if let Err(r) = hook::post_only(&req, "events are POSTed") {
            stats.not_found.fetch_add(1, Ordering::Relaxed);
            return r;
        }
        if let Err(e) = self.verifier.verify(|n| req.header(n), &req.body, now_ms()) {
            stats.rejected_auth.fetch_add(1, Ordering::Relaxed);
            feed.record_error(&format!("webhook refused: {e}"));
            warn!(provider = %feed.name, error = %e, "Refused an operator webhook request.");
            return HookResponse::error(401, "unauthorized", &e.to_string());
        }
        let out = match self.shared.ingest(&req.body, "webhook") {
            Ok(o) => o,
            Err(e) => return hook::malformed(&stats.malformed, feed, "webhook body", e),
        };
        let c = out.counts;
        let total = c.applied + c.duplicates + c.out_of_order + c.unresolved + c.invalid;
        if c.invalid > 0 && c.invalid == total {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            return HookResponse::error(
                400,
                "bad_request",
                out.first_error.as_deref().unwrap_or("no event could be read"),
            );
        }
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.last_at.store(now_ms(), Ordering::Relaxed);
        json(
            200,
            serde_json::json!({
                "accepted": c.applied,
                "duplicates": c.duplicates,
                "out_of_order": c.out_of_order,
                "unresolved": c.unresolved,
                "invalid": c.invalid,
            }),
        )
    }
}

/// How webhook requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    /// An HMAC signature of the body.
    Hmac,
    /// A shared token in a header.
    Token,
    /// None (only for a feed that reaches the hub through an authenticating proxy).
    None,
}

/// The HMAC hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// HMAC-SHA256.
    #[default]
    Sha256,
    /// HMAC-SHA1 (legacy platforms).
    Sha1,
}

/// How the signature is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Hexadecimal (either case).
    #[default]
    Hex,
    /// Standard base64 (padded or not).
    Base64,
}

/// The signature header's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// The header is the signature of the body (after an optional prefix).
    #[default]
    Plain,
    /// `t=<unix seconds>,v1=<signature>`, signature of `"{t}.{body}"`, time-checked.
    Stripe,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The header is missing.
    #[error("the {0} header is missing")]
    Missing(String),
    /// The header is there but unreadable.
    #[error("the {header} header is malformed: {reason}")]
    Malformed {
        /// The header.
        header: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The signature or token does not match.
    #[error("the {0} header does not match")]
    Mismatch(String),
    /// The signed timestamp is outside the tolerance window.
    #[error("the signed timestamp is {0} s away from the hub's clock (replayed or clock skew)")]
    Expired(i64),
}

/// A compiled verifier.
#[derive(Clone)]
pub enum Verifier {
    /// HMAC.
    Hmac {
        /// Header name, lowercase.
        header: String,
        /// The key (boxed: aws-lc-rs keeps the whole HMAC context inline).
        key: Box<hmac::Key>,
        /// Encoding.
        encoding: Encoding,
        /// Layout.
        scheme: Scheme,
        /// Prefix before the signature (plain scheme).
        prefix: String,
        /// Allowed clock difference (stripe scheme), seconds.
        tolerance_secs: i64,
    },
    /// Shared token.
    Token {
        /// Header name, lowercase.
        header: String,
        /// The token.
        token: Vec<u8>,
    },
    /// Nothing checked.
    None,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verifier::Hmac { header, scheme, .. } => write!(f, "Verifier::Hmac({header}, {scheme:?})"),
            Verifier::Token { header, .. } => write!(f, "Verifier::Token({header})"),
            Verifier::None => f.write_str("Verifier::None"),
        }
    }
}

impl Verifier {
    /// An HMAC verifier.
    pub fn hmac(
        header: &str,
        algorithm: Algorithm,
        secret: &[u8],
        encoding: Encoding,
        scheme: Scheme,
        prefix: &str,
        tolerance_secs: u64,
    ) -> Verifier {
        let alg = match algorithm {
            Algorithm::Sha256 => hmac::HMAC_SHA256,
            Algorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        };
        Verifier::Hmac {
            header: header.trim().to_ascii_lowercase(),
            key: Box::new(hmac::Key::new(alg, secret)),
            encoding,
            scheme,
            prefix: prefix.to_string(),
            tolerance_secs: tolerance_secs.min(i64::MAX as u64) as i64,
        }
    }

    /// A token verifier.
    pub fn token(header: &str, token: &str) -> Verifier {
        Verifier::Token { header: header.trim().to_ascii_lowercase(), token: token.as_bytes().to_vec() }
    }

    /// Short description for health.
    pub fn describe(&self) -> String {
        match self {
            Verifier::Hmac { header, scheme, .. } => {
                format!("hmac ({header}, {})", if *scheme == Scheme::Stripe { "t=,v1=" } else { "plain" })
            }
            Verifier::Token { header, .. } => format!("token ({header})"),
            Verifier::None => "none".into(),
        }
    }

    /// Checks a request. `header` looks a header up by its lowercase name; `now_ms` is the
    /// hub's clock.
    pub fn verify<'a>(
        &self,
        header: impl Fn(&str) -> Option<&'a str>,
        body: &[u8],
        now_ms: i64,
    ) -> Result<(), AuthError> {
        match self {
            Verifier::None => Ok(()),
            Verifier::Token { header: name, token } => {
                let v = header(name).ok_or_else(|| AuthError::Missing(name.clone()))?.trim();
                let v = strip_prefix_ci(v, "bearer ").map(str::trim_start).unwrap_or(v);
                constant_time::verify_slices_are_equal(v.as_bytes(), token)
                    .map_err(|_| AuthError::Mismatch(name.clone()))
            }
            Verifier::Hmac { header: name, key, encoding, scheme, prefix, tolerance_secs } => {
                let v = header(name).ok_or_else(|| AuthError::Missing(name.clone()))?.trim();
                let malformed = |reason| AuthError::Malformed { header: name.clone(), reason };
                if v.len() > MAX_HEADER_LEN {
                    return Err(malformed("too long"));
                }
                match scheme {
                    Scheme::Plain => {
                        let sig =
                            strip_prefix_ci(v, prefix).ok_or_else(|| malformed("the expected prefix is missing"))?;
                        let sig = decode(sig.trim(), *encoding)
                            .ok_or_else(|| malformed("not a signature in the configured encoding"))?;
                        hmac::verify(key, body, &sig).map_err(|_| AuthError::Mismatch(name.clone()))
                    }
                    Scheme::Stripe => {
                        let mut t = None;
                        let mut sigs = Vec::new();
                        for part in v.split(',') {
                            match part.trim().split_once('=') {
                                Some(("t", x)) => {
                                    t = Some(x.trim().parse::<i64>().map_err(|_| malformed("t is not a number"))?)
                                }
                                Some(("v1", x)) => sigs
                                    .push(decode(x.trim(), *encoding).ok_or_else(|| {
                                        malformed("v1 is not a signature in the configured encoding")
                                    })?),
                                _ => {}
                            }
                        }
                        let t = t.ok_or_else(|| malformed("no t="))?;
                        if sigs.is_empty() {
                            return Err(malformed("no v1="));
                        }
                        let skew = (now_ms / 1000).saturating_sub(t);
                        if skew.saturating_abs() > *tolerance_secs {
                            return Err(AuthError::Expired(skew));
                        }
                        let mut signed = Vec::with_capacity(body.len() + 24);
                        signed.extend_from_slice(t.to_string().as_bytes());
                        signed.push(b'.');
                        signed.extend_from_slice(body);
                        // Check every v1 (secret rotation sends two); no early exit on the first.
                        let ok = sigs.iter().fold(false, |acc, s| hmac::verify(key, &signed, s).is_ok() | acc);
                        if ok {
                            Ok(())
                        } else {
                            Err(AuthError::Mismatch(name.clone()))
                        }
                    }
                }
            }
        }
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s.is_char_boundary(prefix.len()) && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

fn decode(s: &str, e: Encoding) -> Option<Vec<u8>> {
    match e {
        Encoding::Hex => {
            if s.is_empty() || s.len() / 2 * 2 != s.len() {
                return None;
            }
            let b = s.as_bytes();
            (0..b.len() / 2).map(|i| Some(((hex(b[2 * i])? << 4) | hex(b[2 * i + 1])?) as u8)).collect()
        }
        Encoding::Base64 => {
            let t = s.trim_end_matches('=');
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(t).ok().filter(|v| !v.is_empty())
        }
    }
}

fn hex(c: u8) -> Option<u32> {
    (c as char).to_digit(16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::{AuthKind, OperatorConfig, WebhookConfig};
    use presence_actors::directory::{Directory, NumberPlan, Person};
    use presence_actors::hub::SinkEvent;
    use presence_actors::provider::ProviderContext;

    // RFC 4231 test case 2 and its HMAC-SHA1 counterpart (RFC 2202 test case 2).
    const KEY: &[u8] = b"Jefe";
    const DATA: &[u8] = b"what do ya want for nothing?";
    const SHA256_HEX: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
    const SHA1_HEX: &str = "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79";

    fn h<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
    }

    #[test]
    fn hmac_plain_hex_and_base64_with_known_vectors() {
        let v = Verifier::hmac("X-Signature", Algorithm::Sha256, KEY, Encoding::Hex, Scheme::Plain, "", 300);
        assert_eq!(v.verify(h(&[("x-signature", SHA256_HEX)]), DATA, 0), Ok(()));
        assert_eq!(v.verify(h(&[("x-signature", &SHA256_HEX.to_uppercase())]), DATA, 0), Ok(()));
        assert!(matches!(v.verify(h(&[("x-signature", SHA256_HEX)]), b"tampered", 0), Err(AuthError::Mismatch(_))));
        assert!(matches!(v.verify(h(&[]), DATA, 0), Err(AuthError::Missing(_))));
        assert!(matches!(v.verify(h(&[("x-signature", "zz")]), DATA, 0), Err(AuthError::Malformed { .. })));
        assert!(matches!(v.verify(h(&[("x-signature", "abc")]), DATA, 0), Err(AuthError::Malformed { .. })));
        let v1 = Verifier::hmac("x-sig", Algorithm::Sha1, KEY, Encoding::Hex, Scheme::Plain, "sha1=", 300);
        assert_eq!(v1.verify(h(&[("x-sig", &format!("sha1={SHA1_HEX}"))]), DATA, 0), Ok(()));
        assert!(
            matches!(v1.verify(h(&[("x-sig", SHA1_HEX)]), DATA, 0), Err(AuthError::Malformed { .. })),
            "prefix required"
        );
        let raw: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&SHA256_HEX[2 * i..2 * i + 2], 16).unwrap()).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        let vb = Verifier::hmac("x-signature", Algorithm::Sha256, KEY, Encoding::Base64, Scheme::Plain, "", 300);
        assert_eq!(vb.verify(h(&[("x-signature", &b64)]), DATA, 0), Ok(()));
        assert_eq!(vb.verify(h(&[("x-signature", b64.trim_end_matches('='))]), DATA, 0), Ok(()));
        assert!(vb.verify(h(&[("x-signature", SHA256_HEX)]), DATA, 0).is_err());
    }

    #[test]
    fn stripe_scheme_signs_timestamp_dot_body_within_tolerance() {
        let secret = b"whsec_test";
        let body = br#"{"events":[]}"#;
        let t = 1_772_442_904i64;
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(body);
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), &signed);
        let sig: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let v = Verifier::hmac("x-signature", Algorithm::Sha256, secret, Encoding::Hex, Scheme::Stripe, "", 300);
        let now = t * 1000 + 5_000;
        let header = format!("t={t},v1={sig}");
        assert_eq!(v.verify(h(&[("x-signature", &header)]), body, now), Ok(()));
        // Secret rotation: two v1 values, the right one second.
        let two = format!("t={t},v1={},v1={sig}", "00".repeat(32));
        assert_eq!(v.verify(h(&[("x-signature", &two)]), body, now), Ok(()));
        // Out of the window (a replay), or the timestamp changed (the MAC covers it).
        assert_eq!(v.verify(h(&[("x-signature", &header)]), body, now + 600_000), Err(AuthError::Expired(605)));
        let moved = format!("t={},v1={sig}", t + 1);
        assert!(matches!(v.verify(h(&[("x-signature", &moved)]), body, now), Err(AuthError::Mismatch(_))));
        for bad in ["v1=abcd", &format!("t=x,v1={sig}"), &format!("t={t}")] {
            assert!(
                matches!(v.verify(h(&[("x-signature", bad)]), body, now), Err(AuthError::Malformed { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn token_in_a_header_or_as_bearer() {
        let v = Verifier::token("Authorization", "s3cret-token");
        assert_eq!(v.verify(h(&[("authorization", "Bearer s3cret-token")]), b"", 0), Ok(()));
        assert_eq!(v.verify(h(&[("authorization", "bearer  s3cret-token")]), b"", 0), Ok(()));
        assert!(matches!(
            v.verify(h(&[("authorization", "Bearer s3cret-tokeN")]), b"", 0),
            Err(AuthError::Mismatch(_))
        ));
        assert!(matches!(v.verify(h(&[("authorization", "Bearer s3cret")]), b"", 0), Err(AuthError::Mismatch(_))));
        assert!(matches!(v.verify(h(&[]), b"", 0), Err(AuthError::Missing(_))));
        let k = Verifier::token("x-api-key", "k");
        assert_eq!(k.verify(h(&[("x-api-key", "k")]), b"", 0), Ok(()));
        assert_eq!(Verifier::None.verify(h(&[]), b"", 0), Ok(()));
    }

    #[test]
    fn an_unauthenticated_request_never_reaches_the_parser() {
        // The verifier runs before the body is looked at; a garbage body with a wrong token
        // is a 401, not a 400.
        let w = WebhookConfig {
            path: "events".into(),
            auth: AuthKind::Token,
            header: Some("X-Api-Key".into()),
            algorithm: Default::default(),
            encoding: Default::default(),
            scheme: Default::default(),
            prefix: String::new(),
            secret: None,
            token: Some("k".into()),
            tolerance_secs: 300,
            stale_after_secs: None,
        };
        let v = w.verifier();
        let headers = [("x-api-key".to_string(), "nope".to_string())];
        let r = v.verify(|n| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()), b"\xff\xfe", 0);
        assert!(r.is_err());
        assert_eq!(v.describe(), "token (x-api-key)");
    }

    /// A webhook with token auth in front of a JSON mapping, and one person at extension 2624.
    fn hook() -> (OperatorHook, presence_actors::provider::TestHarness) {
        let cfg: OperatorConfig = serde_json::from_value(serde_json::json!({
            "name": "tdc",
            "webhook": { "auth": "token", "header": "X-Api-Key", "token": "k" },
            "mapping": { "format": "json", "events": "$.events[*]", "number": "$.msisdn", "call_state": "$.state" },
        }))
        .expect("a config");
        cfg.validate().expect("a valid config");
        let mut p = Person::new("asa", "Åsa");
        p.extension = Some("2624".into());
        let dir = Directory::build(vec![p], &NumberPlan::sweden()).unwrap();
        let (ctx, harness) = ProviderContext::for_test("tdc", dir, "http://127.0.0.1:9");
        let shared = Arc::new(Shared::new(ctx, &cfg, cfg.compile().unwrap()));
        let w = cfg.webhook.as_ref().unwrap();
        (OperatorHook::new(shared, &w.path, w.verifier()), harness)
    }

    fn request(method: &str, tail: &str, key: &str, body: &str) -> HookRequest {
        HookRequest {
            method: method.into(),
            tail: tail.into(),
            query: String::new(),
            headers: vec![("x-api-key".into(), key.into())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_hook_checks_path_method_and_sender_before_it_ingests() {
        let (hook, mut harness) = hook();
        let ringing = r#"{"events":[{"msisdn":"2624","state":"ringing"},{"msisdn":"999","state":"idle"}]}"#;
        assert_eq!(hook.handle(request("POST", "other", "k", ringing)).status, 404);
        assert_eq!(hook.handle(request("GET", "events", "k", ringing)).status, 405);
        assert_eq!(hook.handle(request("POST", "events", "nope", ringing)).status, 401);
        assert_eq!(hook.handle(request("POST", "/events/", "k", "{")).status, 400);
        let unreadable = r#"{"events":[{"state":"idle"}]}"#;
        assert_eq!(hook.handle(request("POST", "events", "k", unreadable)).status, 400, "no event could be read");
        let ok = hook.handle(request("POST", "events", "k", ringing));
        assert_eq!(ok.status, 200);
        let answer: serde_json::Value = serde_json::from_slice(&ok.body).unwrap();
        assert_eq!((answer["accepted"].as_u64(), answer["unresolved"].as_u64()), (Some(1), Some(1)));
        let signals: Vec<_> = harness
            .drain()
            .into_iter()
            .filter_map(|e| if let SinkEvent::Signal(i, s) = e { Some((i, s)) } else { None })
            .collect();
        assert_eq!(signals.len(), 1, "only the accepted request reached the hub");
        assert_eq!(signals[0].1.activity, Some(presence_actors::model::Activity::Ringing));
        let stats = &hook.shared.hook;
        let counts = [&stats.accepted, &stats.rejected_auth, &stats.malformed, &stats.not_found];
        assert_eq!(counts.map(|c| c.load(Ordering::Relaxed)), [1, 1, 2, 2]);
        assert_eq!(hook.shared.feed().errors.load(Ordering::Relaxed), 3, "the refusal and both bad bodies");
        let details = stats.details("http://hub/hooks/tdc/events", &hook.verifier);
        assert_eq!((details["auth"].as_str(), details["accepted"].as_u64()), (Some("token (x-api-key)"), Some(1)));
    }
}
