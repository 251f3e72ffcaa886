//! Bearer tokens with roles: `viewer` < `operator` < `admin`.
//!
//! Tokens are configured as the SHA-256 of the token, never in clear; a request's token is
//! hashed and looked up, and the comparison of the digests is constant-time. Tokens are long
//! random strings, so an unsalted hash is enough (there is nothing to brute-force in a
//! 256-bit space) — do not use passwords as tokens.
//!
//! Browsers cannot set headers on `EventSource` or `WebSocket`, so the streams also accept
//! `?access_token=`; the access log never prints query strings.

use std::collections::HashMap;

use actix_web::{dev::Payload, http::header, FromRequest, HttpRequest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::http::error::AppError;
use crate::http::AppState;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read presence, search, stream.
    Viewer,
    /// Also set and clear absences.
    Operator,
    /// Also providers, stats, signal push.
    Admin,
}

impl Role {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Token name.
    pub name: String,
    /// Role.
    pub role: Role,
}

impl Caller {
    /// Fails with 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), AppError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!("this needs the {} role; the token has {}", role.as_str(), self.role.as_str())))
        }
    }
}

/// The token table: SHA-256 digest → caller.
#[derive(Debug, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Caller>,
}

/// Hex SHA-256 of a token (what goes into the config).
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Tokens {
    /// From `(name, role, sha256-hex)` entries; bad digests are skipped (config validation
    /// rejects them first).
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, Role, &'a str)>) -> Tokens {
        let by_digest = entries
            .into_iter()
            .filter_map(|(n, r, h)| Some((parse_hex32(h)?, Caller { name: n.to_string(), role: r })))
            .collect();
        Tokens { by_digest }
    }

    /// The demo's documented tokens.
    pub fn demo() -> Tokens {
        let v = hash_token("demo-viewer");
        let o = hash_token("demo-operator");
        let a = hash_token("demo-admin");
        Tokens::new([("demo-viewer", Role::Viewer, v.as_str()), ("demo-operator", Role::Operator, o.as_str()), ("demo-admin", Role::Admin, a.as_str())])
    }

    /// Looks a token up.
    pub fn check(&self, token: &str) -> Option<&Caller> {
        let d: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Constant-time over the digest of the one candidate the map finds: the map lookup
        // itself works on a hash of a hash, which leaks nothing useful about the token.
        let (k, c) = self.by_digest.get_key_value(&d)?;
        let diff = k.iter().zip(d.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then_some(c)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// True if none are configured.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// The bearer token of a request: `Authorization: Bearer …`, else `?access_token=…`.
pub fn token_of(req: &HttpRequest) -> Option<String> {
    if let Some(h) = req.headers().get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()) {
        let (scheme, rest) = h.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim().to_string());
    }
    let q = req.query_string();
    q.split('&').find_map(|kv| kv.strip_prefix("access_token=")).map(|v| {
        percent_decode(v)
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FromRequest for Caller {
    type Error = AppError;
    type Future = std::future::Ready<Result<Caller, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(authenticate(req))
    }
}

/// Authenticates a request (401 when missing or unknown).
pub fn authenticate(req: &HttpRequest) -> Result<Caller, AppError> {
    let state = req.app_data::<actix_web::web::Data<AppState>>().ok_or(AppError::Internal("no app state".into()))?;
    let fail = |m: &str| {
        presence_actors::metrics::Metrics::inc(&state.hub.metrics().http_auth_failures);
        AppError::Unauthorized(m.to_string())
    };
    let token = token_of(req).ok_or_else(|| fail("a bearer token is required (Authorization: Bearer TOKEN)"))?;
    state.tokens.check(&token).cloned().ok_or_else(|| fail("the token is not valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_hash_and_roles_are_ordered() {
        let t = Tokens::demo();
        assert_eq!(t.check("demo-operator").map(|c| c.role), Some(Role::Operator));
        assert!(t.check("demo-operatorx").is_none());
        assert!(t.check("").is_none());
        let op = t.check("demo-operator").unwrap();
        assert!(op.require(Role::Viewer).is_ok());
        assert!(op.require(Role::Operator).is_ok());
        assert!(op.require(Role::Admin).is_err());
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}

/// Extracts a caller with at least the operator role (403 otherwise). Put it before body
/// extractors so a weaker token is refused before the body is even read.
#[derive(Debug, Clone)]
pub struct Operator(pub Caller);

/// Extracts a caller with the admin role (403 otherwise).
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl FromRequest for Operator {
    type Error = AppError;
    type Future = std::future::Ready<Result<Operator, AppError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(authenticate(req).and_then(|c| c.require(Role::Operator).map(|_| Operator(c))))
    }
}

impl FromRequest for Admin {
    type Error = AppError;
    type Future = std::future::Ready<Result<Admin, AppError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(authenticate(req).and_then(|c| c.require(Role::Admin).map(|_| Admin(c))))
    }
}
