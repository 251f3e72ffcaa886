//! The request side of the bearer tokens ([`crate::tokens`]): finding a request's token, and
//! the extractors that authenticate it ([`Caller`]) and require a role ([`Operator`],
//! [`Admin`]), answering 401 or 403.
//!
//! Browsers cannot set headers on `EventSource` or `WebSocket`, so the streams also accept
//! `?access_token=`; the access log never prints query strings.

use actix_web::{dev::Payload, http::header, FromRequest, HttpRequest};

use super::error::AppError;
use super::AppState;
pub use crate::tokens::{Caller, Role};

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
        std::future::ready(authenticate(req).and_then(|c| c.require(Role::Operator).map(|_| Operator(c)).map_err(AppError::from)))
    }
}

impl FromRequest for Admin {
    type Error = AppError;
    type Future = std::future::Ready<Result<Admin, AppError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(authenticate(req).and_then(|c| c.require(Role::Admin).map(|_| Admin(c)).map_err(AppError::from)))
    }
}
