//! Who is calling: a bearer token ([`crate::tokens`]) or a sign-in session's cookie
//! ([`crate::signin::sessions`]), and the extractors that require a role ([`Operator`],
//! [`Admin`], [`AbsenceWriter`]), answering 401 or 403 before any body is read.
//!
//! - A token comes in `Authorization: Bearer`, or on a stream as `?access_token=` (browsers
//!   cannot set headers on `EventSource` or `WebSocket`); the access log never prints query
//!   strings. A refused token is audited.
//! - A cookie-authenticated request from another origin (`Origin` not the hub's) is refused,
//!   whatever its method — this covers cross-site WebSocket hijacking — and a cookie-authenticated
//!   write (anything but GET/HEAD/OPTIONS) must carry the session's CSRF token in `X-CSRF-Token`.
//!   Both refusals are audited. Bearer-token requests need neither: no browser sends a token
//!   by itself.

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

/// The client's address, for the audit log.
pub fn client_ip(req: &HttpRequest) -> Option<String> {
    req.peer_addr().map(|a| a.ip().to_string())
}

/// The session cookie's name: `__Host-` prefixed (bound to this host, `Secure`, path `/`) when
/// the hub is reached over https.
pub fn session_cookie_name(state: &AppState) -> &'static str {
    if secure_cookies(state) {
        "__Host-ph_session"
    } else {
        "ph_session"
    }
}

/// Cookies get `Secure` when the hub serves TLS or its public URL is https.
pub fn secure_cookies(state: &AppState) -> bool {
    state.config.http.tls_cert_file.is_some() || state.config.http.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
}

/// The value of cookie `name`, if the request has it.
pub fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers().get_all(header::COOKIE).filter_map(|h| h.to_str().ok()).flat_map(|h| h.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"').to_string())
    })
}

/// True when `Origin` (if any) is the hub's own: its public URL's origin, or the origin the
/// request was addressed to.
fn same_origin(req: &HttpRequest, state: &AppState) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        // Browsers send Origin on every cross-origin request and on every write; a request
        // without one is a same-origin read or not from a browser.
        return true;
    };
    if let Some(public) = state.config.http.public_url.as_deref().and_then(|u| reqwest::Url::parse(u).ok()) {
        if public.origin().ascii_serialization() == origin {
            return true;
        }
    }
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host()) == origin
}

/// Authenticates a request (401 when missing or unknown, 403 for a cookie without its CSRF
/// token or from another origin).
pub fn authenticate(req: &HttpRequest) -> Result<Caller, AppError> {
    let state = req.app_data::<actix_web::web::Data<AppState>>().ok_or(AppError::Internal("no app state".into()))?;
    let fail = |m: &str| {
        presence_actors::metrics::Metrics::inc(&state.hub.metrics().http_auth_failures);
        AppError::Unauthorized(m.to_string())
    };
    if let Some(token) = token_of(req) {
        let found = state.tokens.read().unwrap_or_else(|e| e.into_inner()).check(&token).cloned();
        return found.ok_or_else(|| {
            let detail = serde_json::json!({ "path": req.path(), "reason": "unknown token" });
            refuse(state, crate::audit::anonymous(crate::audit::Action::TokenRefused, "token", detail, client_ip(req)));
            fail("the token is not valid")
        });
    }
    let Some(value) = cookie(req, session_cookie_name(state)) else {
        return Err(fail("sign in, or send a bearer token (Authorization: Bearer TOKEN)"));
    };
    let now = presence_actors::model::now_ms();
    let dir = state.hub.directory();
    let session = state.sessions.check(&value, now, |p| dir.by_id(p).is_some()).map_err(|e| fail(e.message()))?;
    let caller = session.caller();
    let csrf_refused = |why: &str| {
        let detail = serde_json::json!({ "path": req.path(), "method": req.method().as_str(), "reason": why });
        refuse(state, crate::audit::entry(&caller, crate::audit::Action::CsrfRefused, None, detail, client_ip(req)));
        AppError::Csrf(format!("{why}; this request needs the X-CSRF-Token header from GET /api/me and must come from the hub's own page"))
    };
    if !same_origin(req, state) {
        return Err(csrf_refused("the request comes from another origin"));
    }
    let safe = matches!(*req.method(), actix_web::http::Method::GET | actix_web::http::Method::HEAD | actix_web::http::Method::OPTIONS);
    if !safe {
        let sent = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if !crate::signin::oidc::constant_time_eq(sent.as_bytes(), session.stored.csrf.as_bytes()) {
            return Err(csrf_refused(if sent.is_empty() { "no CSRF token" } else { "wrong CSRF token" }));
        }
    }
    Ok(caller)
}

/// Records a refusal in the background (the request is answered at once).
fn refuse(state: &actix_web::web::Data<AppState>, r: crate::store::AuditRecord) {
    let state = state.clone();
    actix_web::rt::spawn(async move { state.audit.security(r).await });
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

/// Extracts a caller who may write the absences of the person in the path's `{id}`: an
/// operator or admin for anyone, a signed-in colleague (`self`) for themselves (403 otherwise,
/// before the body is read).
#[derive(Debug, Clone)]
pub struct AbsenceWriter(pub Caller);

impl FromRequest for AbsenceWriter {
    type Error = AppError;
    type Future = std::future::Ready<Result<AbsenceWriter, AppError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready((|| {
            let c = authenticate(req)?;
            c.require(Role::SelfService)?;
            if c.role >= Role::Operator {
                return Ok(AbsenceWriter(c));
            }
            let target = req.match_info().get("id").unwrap_or_default();
            let state = req.app_data::<actix_web::web::Data<AppState>>().ok_or(AppError::Internal("no app state".into()))?;
            let dir = state.hub.directory();
            let own = c.person.as_deref().and_then(|p| dir.by_id(p));
            if own.is_some() && own == dir.by_id(target) {
                Ok(AbsenceWriter(c))
            } else {
                Err(AppError::Forbidden("you may set only your own absences; an operator sets other people's".into()))
            }
        })())
    }
}

impl FromRequest for Admin {
    type Error = AppError;
    type Future = std::future::Ready<Result<Admin, AppError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(authenticate(req).and_then(|c| c.require(Role::Admin).map(|_| Admin(c)).map_err(AppError::from)))
    }
}
