//! The OpenID Connect relying party: discovery, the provider's signing keys, the ID token check.
//!
//! - [`parse_discovery`] reads `{issuer}/.well-known/openid-configuration` (OpenID Connect
//!   Discovery 1.0 §4) and insists that the document's `issuer` is the configured one, byte for
//!   byte (§4.3), and that every endpoint is `https` (plain `http` only on loopback, for tests).
//! - [`verify_id_token`] checks an ID token (OpenID Connect Core 1.0 §3.1.3.7): the signature
//!   against the provider's JWKS with `jsonwebtoken` (asymmetric algorithms only — never `none`,
//!   never HMAC with the client secret), `iss`, `aud` (and `azp` when there are several
//!   audiences), `exp`, `iat` within a small clock skew, and the `nonce` the sign-in sent.
//!   An unknown `kid` is [`VerifyError::UnknownKey`], on which the caller re-reads the JWKS once
//!   (key rotation) and tries again.
//! - [`Provider`] holds the discovered endpoints and the cached keys, and does the HTTP:
//!   discovery, JWKS (re-read on an unknown `kid`, once for many sign-ins), and the code exchange
//!   at the token endpoint (client_secret_basic, PKCE verifier) through the providers' toolkit
//!   (bounded reads, deadlines, one error type).
//!
//! The parsing and checking functions are pure; only [`Provider`] does I/O.

use std::collections::HashSet;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use presence_providers::common::http::{self, CallError, Limits};
use presence_providers::common::{form, oauth};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

/// Discovery documents and key sets are small; anything bigger is not one.
const DOC_LIMITS: Limits = Limits::new(256 * 1024, Duration::from_secs(10));
/// Longest ID token accepted, bytes (Entra's with many groups is a few KB).
pub const MAX_ID_TOKEN_BYTES: usize = 32 * 1024;
/// The algorithms an ID token may be signed with.
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why sign-in could not talk to the provider, or refused what it said.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// The provider could not be reached or answered with an error.
    #[error("the identity provider: {0}")]
    Call(#[from] CallError),
    /// The discovery document is unusable.
    #[error("discovery: {0}")]
    Discovery(String),
    /// The key set is unusable.
    #[error("keys: {0}")]
    Keys(String),
    /// The token endpoint's answer has no ID token.
    #[error("the token endpoint answered without an id_token (is `openid` among the scopes?)")]
    NoIdToken,
    /// The ID token was refused.
    #[error("ID token refused: {0}")]
    Refused(#[from] VerifyError),
}

/// Why an ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not a JWS compact token, or its header or claims are not JSON.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Signed with an algorithm that is not allowed (`none`, HMAC…).
    #[error("algorithm {0} is not allowed")]
    Algorithm(String),
    /// No key in the provider's set has this `kid`.
    #[error("no key {0:?} in the provider's key set")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// `exp` has passed.
    #[error("expired")]
    Expired,
    /// `iat` or `nbf` is in the future.
    #[error("issued in the future")]
    NotYetValid,
    /// `iss` is not the provider.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` does not name this client (or `azp` is another client's).
    #[error("wrong audience")]
    Audience,
    /// `nonce` is not the one this sign-in sent.
    #[error("wrong nonce")]
    Nonce,
    /// A required claim is missing.
    #[error("missing claim {0}")]
    Missing(String),
}

/// What the discovery document says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// `issuer`.
    pub issuer: String,
    /// Where the browser goes to sign in.
    pub authorization_endpoint: String,
    /// Where the code is exchanged.
    pub token_endpoint: String,
    /// The signing keys.
    pub jwks_uri: String,
    /// RP-initiated logout, when the provider offers it.
    pub end_session_endpoint: Option<String>,
}

/// Parses a discovery document; `issuer` must be the configured one exactly.
pub fn parse_discovery(body: &[u8], expected_issuer: &str) -> Result<Discovery, OidcError> {
    #[derive(Deserialize)]
    struct Raw {
        issuer: Option<String>,
        authorization_endpoint: Option<String>,
        token_endpoint: Option<String>,
        jwks_uri: Option<String>,
        end_session_endpoint: Option<String>,
        #[serde(default)]
        code_challenge_methods_supported: Option<Vec<String>>,
        #[serde(default)]
        response_types_supported: Option<Vec<String>>,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| OidcError::Discovery(format!("not a discovery document: {e}")))?;
    let need = |v: Option<String>, name: &str| v.filter(|s| !s.is_empty()).ok_or_else(|| OidcError::Discovery(format!("no {name}")));
    let issuer = need(raw.issuer, "issuer")?;
    if issuer != expected_issuer {
        return Err(OidcError::Discovery(format!(
            "the provider names itself {issuer:?}, not {expected_issuer:?}; set [auth.oidc] issuer to exactly {issuer:?}"
        )));
    }
    let d = Discovery {
        issuer,
        authorization_endpoint: need(raw.authorization_endpoint, "authorization_endpoint")?,
        token_endpoint: need(raw.token_endpoint, "token_endpoint")?,
        jwks_uri: need(raw.jwks_uri, "jwks_uri")?,
        end_session_endpoint: raw.end_session_endpoint.filter(|s| !s.is_empty()),
    };
    for u in [&d.issuer, &d.authorization_endpoint, &d.token_endpoint, &d.jwks_uri].into_iter().chain(d.end_session_endpoint.as_ref()) {
        secure_url(u).map_err(OidcError::Discovery)?;
    }
    if raw.response_types_supported.is_some_and(|r| !r.iter().any(|t| t == "code")) {
        return Err(OidcError::Discovery("the provider does not offer the authorization code flow".into()));
    }
    // Absent means "not advertised", which many providers (Entra among them) leave out while
    // supporting S256; present without S256 means PKCE cannot work.
    if raw.code_challenge_methods_supported.is_some_and(|m| !m.iter().any(|t| t == "S256")) {
        return Err(OidcError::Discovery("the provider does not support PKCE with S256".into()));
    }
    Ok(d)
}

/// `https://…`, or `http://` to a loopback host (a test provider).
pub fn secure_url(u: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(u).map_err(|e| format!("{u:?} is not a URL: {e}"))?;
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback());
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!("{u:?} must be https (plain http only to a loopback address)")),
    }
}

/// The claims sign-in uses, from a verified ID token.
#[derive(Debug, Clone, PartialEq)]
pub struct IdClaims {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// Every claim, for role mapping and person matching.
    pub all: Map<String, Value>,
}

impl IdClaims {
    /// A claim as a string (a string claim, or a number written out).
    pub fn string(&self, name: &str) -> Option<String> {
        match self.all.get(name)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A claim as a list of strings (an array of strings, or one string).
    pub fn strings(&self, name: &str) -> Vec<String> {
        match self.all.get(name) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }
}

/// What an ID token must say.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// `iss`.
    pub issuer: &'a str,
    /// `aud` must contain it.
    pub client_id: &'a str,
    /// `nonce` must equal it.
    pub nonce: &'a str,
    /// Allowed clock difference, seconds.
    pub skew_secs: u64,
}

/// Checks `token` against `keys` and `expect` (see the module docs).
pub fn verify_id_token(token: &str, keys: &JwkSet, expect: &Expect<'_>) -> Result<IdClaims, VerifyError> {
    if token.len() > MAX_ID_TOKEN_BYTES {
        return Err(VerifyError::Malformed(format!("longer than {MAX_ID_TOKEN_BYTES} bytes")));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(VerifyError::Algorithm(format!("{:?}", header.alg)));
    }
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid).ok_or_else(|| VerifyError::UnknownKey(kid.clone()))?,
        // No kid: only unambiguous with a single signing key.
        None => match keys.keys.as_slice() {
            [only] => only,
            _ => return Err(VerifyError::UnknownKey(String::new())),
        },
    };
    if let Some(alg) = jwk.common.key_algorithm {
        if format!("{alg:?}") != format!("{:?}", header.alg) {
            return Err(VerifyError::Algorithm(format!("{:?} with a {alg:?} key", header.alg)));
        }
    }
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature) {
        return Err(VerifyError::UnknownKey(header.kid.unwrap_or_default()));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| VerifyError::Malformed(format!("the provider's key: {e}")))?;
    let mut v = Validation::new(header.alg);
    v.leeway = expect.skew_secs;
    v.set_issuer(&[expect.issuer]);
    v.set_audience(&[expect.client_id]);
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::InvalidSignature => VerifyError::Signature,
            K::ExpiredSignature => VerifyError::Expired,
            K::ImmatureSignature => VerifyError::NotYetValid,
            K::InvalidIssuer => VerifyError::Issuer,
            K::InvalidAudience => VerifyError::Audience,
            K::MissingRequiredClaim(c) => VerifyError::Missing(c.clone()),
            K::InvalidAlgorithm | K::InvalidAlgorithmName => VerifyError::Algorithm(format!("{:?}", header.alg)),
            other => VerifyError::Malformed(format!("{other:?}")),
        }
    })?;
    let claims = data.claims;
    let now = jsonwebtoken::get_current_timestamp();
    match claims.get("iat").and_then(Value::as_f64) {
        Some(iat) if iat > (now + expect.skew_secs) as f64 => return Err(VerifyError::NotYetValid),
        Some(_) => {}
        None => return Err(VerifyError::Missing("iat".into())),
    }
    // Several audiences: the token must have been issued to this client (Core §3.1.3.7 step 4-5).
    if let Some(Value::Array(aud)) = claims.get("aud") {
        if aud.len() > 1 && claims.get("azp").and_then(Value::as_str) != Some(expect.client_id) {
            return Err(VerifyError::Audience);
        }
    }
    match claims.get("nonce").and_then(Value::as_str) {
        Some(n) if constant_time_eq(n.as_bytes(), expect.nonce.as_bytes()) => {}
        _ => return Err(VerifyError::Nonce),
    }
    let issuer = claims.get("iss").and_then(Value::as_str).unwrap_or_default().to_string();
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| VerifyError::Missing("sub".into()))?
        .to_string();
    Ok(IdClaims { issuer, subject, all: claims })
}

/// Equal bytes, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses a JWKS document, keeping the keys `jsonwebtoken` can use.
pub fn parse_jwks(body: &[u8]) -> Result<JwkSet, OidcError> {
    // Key by key, so one key of a type this build does not know (a provider may publish an
    // encryption key too) does not make the whole set unusable.
    let raw: Value = serde_json::from_slice(body).map_err(|e| OidcError::Keys(format!("not a key set: {e}")))?;
    let keys = raw.get("keys").and_then(Value::as_array).ok_or_else(|| OidcError::Keys("no \"keys\"".into()))?;
    let keys: Vec<jsonwebtoken::jwk::Jwk> =
        keys.iter().filter_map(|k| serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone()).ok()).filter(|k| k.is_supported() && DecodingKey::from_jwk(k).is_ok()).collect();
    if keys.is_empty() {
        return Err(OidcError::Keys("no usable key".into()));
    }
    Ok(JwkSet { keys })
}

/// The provider: its endpoints and its current keys.
pub struct Provider {
    issuer: String,
    http: reqwest::Client,
    state: Mutex<Option<Loaded>>,
}

struct Loaded {
    discovery: Discovery,
    keys: std::sync::Arc<JwkSet>,
}

impl Provider {
    /// A provider at `issuer`; nothing is fetched until first needed.
    pub fn new(issuer: &str, http: reqwest::Client) -> Provider {
        Provider { issuer: issuer.trim_end_matches('/').to_string(), http, state: Mutex::new(None) }
    }

    /// The configured issuer (no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The discovered endpoints (fetching discovery and keys the first time, and again after a
    /// failure).
    pub async fn discovery(&self) -> Result<Discovery, OidcError> {
        let mut g = self.state.lock().await;
        if g.is_none() {
            *g = Some(self.load().await?);
        }
        Ok(g.as_ref().map(|l| l.discovery.clone()).expect("loaded"))
    }

    async fn load(&self) -> Result<Loaded, OidcError> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let body = http::send(self.http.get(&url).header("accept", "application/json"), DOC_LIMITS).await?.into_body(Duration::from_secs(10))?;
        let discovery = parse_discovery(&body, &self.issuer)?;
        let keys = self.fetch_keys(&discovery.jwks_uri).await?;
        tracing::info!(issuer = %self.issuer, keys = keys.keys.len(), "OpenID provider discovered.");
        Ok(Loaded { discovery, keys: std::sync::Arc::new(keys) })
    }

    async fn fetch_keys(&self, uri: &str) -> Result<JwkSet, OidcError> {
        let body = http::send(self.http.get(uri).header("accept", "application/json"), DOC_LIMITS).await?.into_body(Duration::from_secs(10))?;
        parse_jwks(&body)
    }

    /// Exchanges `code` at the token endpoint and checks the ID token it answers with,
    /// re-reading the keys once when the token names a key the cached set does not have.
    pub async fn exchange(&self, client_id: &str, client_secret: &str, grant: &CodeGrant<'_>, skew_secs: u64) -> Result<(IdClaims, String), OidcError> {
        let CodeGrant { code, redirect_uri, verifier, nonce } = *grant;
        let discovery = self.discovery().await?;
        let basic_user = form::encode_value(client_id);
        let basic_pass = form::encode_value(client_secret);
        let t = oauth::request_token(
            &self.http,
            &discovery.token_endpoint,
            oauth::authorization_code_form(client_id, code, redirect_uri, verifier),
            Some((&basic_user, &basic_pass)),
            oauth::TOKEN_LIMITS,
        )
        .await?;
        let id_token = t.id_token.ok_or(OidcError::NoIdToken)?;
        let expect = Expect { issuer: &self.issuer, client_id, nonce, skew_secs };
        let keys = self.keys().await?;
        match verify_id_token(&id_token, &keys, &expect) {
            Err(VerifyError::UnknownKey(kid)) => {
                tracing::info!(issuer = %self.issuer, kid = %kid, "The ID token names an unknown key; re-reading the provider's keys.");
                let keys = self.refresh_keys(&keys).await?;
                Ok((verify_id_token(&id_token, &keys, &expect)?, id_token))
            }
            r => Ok((r?, id_token)),
        }
    }

    /// Checks an ID token against the current keys (re-reading them once on an unknown `kid`).
    pub async fn verify(&self, id_token: &str, expect: &Expect<'_>) -> Result<IdClaims, OidcError> {
        let keys = self.keys().await?;
        match verify_id_token(id_token, &keys, expect) {
            Err(VerifyError::UnknownKey(_)) => {
                let keys = self.refresh_keys(&keys).await?;
                Ok(verify_id_token(id_token, &keys, expect)?)
            }
            r => Ok(r?),
        }
    }

    /// The `kid`s of the provider's current signing keys (fetching them if needed).
    pub async fn key_ids(&self) -> Result<HashSet<String>, OidcError> {
        Ok(kids(&*self.keys().await?))
    }

    async fn keys(&self) -> Result<std::sync::Arc<JwkSet>, OidcError> {
        self.discovery().await?;
        Ok(self.state.lock().await.as_ref().map(|l| l.keys.clone()).expect("loaded"))
    }

    /// Re-reads the key set that `seen` was read from. Sign-ins that meet the same unknown
    /// `kid` at once cost one fetch: the first re-reads, the others find the set changed.
    /// (ID tokens come only from the hub's own call to the token endpoint, so an unknown `kid`
    /// is the provider's rotation, not something a client can send at will.)
    async fn refresh_keys(&self, seen: &std::sync::Arc<JwkSet>) -> Result<std::sync::Arc<JwkSet>, OidcError> {
        let mut g = self.state.lock().await;
        let l = g.as_mut().ok_or_else(|| OidcError::Keys("not discovered".into()))?;
        if std::sync::Arc::ptr_eq(&l.keys, seen) {
            let keys = self.fetch_keys(&l.discovery.jwks_uri).await?;
            l.keys = std::sync::Arc::new(keys);
        }
        Ok(l.keys.clone())
    }
}

/// What the callback brings to the code exchange.
#[derive(Debug, Clone, Copy)]
pub struct CodeGrant<'a> {
    /// The authorization code.
    pub code: &'a str,
    /// The redirect URI the code was sent to.
    pub redirect_uri: &'a str,
    /// The PKCE verifier of the sign-in.
    pub verifier: &'a str,
    /// The nonce the ID token must carry.
    pub nonce: &'a str,
}

/// The set of `kid`s in a key set (for logs and tests).
pub fn kids(keys: &JwkSet) -> HashSet<String> {
    keys.keys.iter().filter_map(|k| k.common.key_id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_must_name_the_configured_issuer_and_use_https() {
        let doc = |iss: &str, token: &str| {
            serde_json::json!({
                "issuer": iss, "authorization_endpoint": format!("{iss}/authorize"), "token_endpoint": token,
                "jwks_uri": format!("{iss}/keys"), "response_types_supported": ["code", "id_token"],
            })
            .to_string()
        };
        let iss = "https://login.microsoftonline.com/8e2b/v2.0";
        let d = parse_discovery(doc(iss, "https://login.microsoftonline.com/8e2b/oauth2/v2.0/token").as_bytes(), iss).unwrap();
        assert_eq!(d.jwks_uri, format!("{iss}/keys"));
        assert_eq!(d.end_session_endpoint, None);
        let e = parse_discovery(doc(iss, "https://x/token").as_bytes(), "https://login.microsoftonline.com/contoso.se/v2.0").unwrap_err();
        assert!(e.to_string().contains("set [auth.oidc] issuer to exactly"), "{e}");
        let e = parse_discovery(doc(iss, "http://idp.example/token").as_bytes(), iss).unwrap_err();
        assert!(e.to_string().contains("must be https"), "{e}");
        parse_discovery(doc("http://127.0.0.1:9", "http://127.0.0.1:9/token").as_bytes(), "http://127.0.0.1:9").unwrap();
        assert!(parse_discovery(b"<html>", iss).is_err());
        let no_pkce = serde_json::json!({
            "issuer": iss, "authorization_endpoint": "https://a", "token_endpoint": "https://t", "jwks_uri": "https://k",
            "code_challenge_methods_supported": ["plain"],
        });
        assert!(parse_discovery(no_pkce.to_string().as_bytes(), iss).unwrap_err().to_string().contains("S256"));
    }

    #[test]
    fn key_sets_keep_the_usable_keys() {
        let set = serde_json::json!({ "keys": [
            { "kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB" },
            { "kty": "XYZ", "kid": "future" },
        ]});
        let keys = parse_jwks(set.to_string().as_bytes()).unwrap();
        assert_eq!(kids(&keys), HashSet::from(["k1".to_string()]));
        assert!(parse_jwks(br#"{"keys":[]}"#).is_err());
        assert!(parse_jwks(b"[]").is_err());
    }

    #[test]
    fn tokens_that_are_not_signed_with_an_allowed_algorithm_are_refused() {
        let keys = JwkSet { keys: vec![] };
        let expect = Expect { issuer: "https://idp", client_id: "hub", nonce: "n", skew_secs: 60 };
        let b64 = |v: serde_json::Value| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let claims = b64(serde_json::json!({ "iss": "https://idp", "aud": "hub", "sub": "a", "nonce": "n", "exp": 9999999999u64, "iat": 1 }));
        let none = format!("{}.{claims}.", b64(serde_json::json!({ "alg": "none" })));
        assert!(matches!(verify_id_token(&none, &keys, &expect), Err(VerifyError::Malformed(_) | VerifyError::Algorithm(_))));
        let hs = format!("{}.{claims}.c2ln", b64(serde_json::json!({ "alg": "HS256", "kid": "k" })));
        assert_eq!(verify_id_token(&hs, &keys, &expect), Err(VerifyError::Algorithm("HS256".into())));
        let rs = format!("{}.{claims}.c2ln", b64(serde_json::json!({ "alg": "RS256", "kid": "k" })));
        assert_eq!(verify_id_token(&rs, &keys, &expect), Err(VerifyError::UnknownKey("k".into())));
        assert!(matches!(verify_id_token("a.b", &keys, &expect), Err(VerifyError::Malformed(_))));
        assert!(matches!(verify_id_token(&"a".repeat(MAX_ID_TOKEN_BYTES + 1), &keys, &expect), Err(VerifyError::Malformed(_))));
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"ab", b"abc"));
    }
}
