//! The two token endpoints in front of the data endpoints, and the check of the tokens they
//! issue:
//!
//! - `POST /{tenant}/oauth2/v2.0/token`: Entra `client_credentials` (app tokens, any scope),
//!   valid for Graph and for EWS's `Authorization: Bearer`.
//! - `POST /google/token`: Google `refresh_token` grant (Google access tokens for
//!   `POST /calendar/v3/freeBusy`).
//!
//! Tokens are opaque strings that live [`token_lifetime`](super::CalendarSimConfig::token_lifetime); an Entra token is
//! not accepted where a Google one is wanted, nor the other way round.

use std::collections::HashMap;
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{lock, Shared, State};
use crate::graph::now_ms;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenKind {
    /// Entra app token (Graph, EWS bearer).
    Entra,
    /// Google access token.
    Google,
}

impl State {
    fn issue(&mut self, kind: TokenKind) -> (String, u64) {
        let now = Instant::now();
        self.tokens.retain(|_, (_, exp)| *exp > now);
        self.next_token += 1;
        let prefix = if kind == TokenKind::Entra { "eyJ0eXAi.sim" } else { "ya29.sim" };
        let token = format!("{prefix}-{}-{}", self.next_token, now_ms());
        let life = self.cfg.token_lifetime;
        self.tokens.insert(token.clone(), (kind, now + life));
        (token, life.as_secs())
    }

    /// True when `req` carries a live bearer token of `kind`.
    pub(super) fn bearer_ok(&self, req: &HttpRequest, kind: TokenKind) -> bool {
        bearer_token(req).is_some_and(|t| self.tokens.get(t).is_some_and(|(k, exp)| *k == kind && *exp > Instant::now()))
    }
}

/// The token of an `Authorization: Bearer` header.
pub(super) fn bearer_token(req: &HttpRequest) -> Option<&str> {
    req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim)
}

type FormResult = Result<web::Form<HashMap<String, String>>, actix_web::Error>;

pub(super) async fn entra_token(state: web::Data<Shared>, tenant: web::Path<String>, form: FormResult) -> HttpResponse {
    let mut g = lock(&state);
    g.stats.token_requests += 1;
    let oauth = |code: &str, desc: &str| HttpResponse::BadRequest().json(json!({ "error": code, "error_description": desc, "error_codes": [70000] }));
    if tenant.as_str() != g.cfg.tenant {
        return oauth("invalid_request", "AADSTS90002: Tenant not found. Check to make sure you have the correct tenant ID.");
    }
    let Ok(f) = form.map(web::Form::into_inner) else {
        return oauth("invalid_request", "AADSTS900144: The request body must contain the following parameter: 'grant_type'.");
    };
    if f.get("client_id") != Some(&g.cfg.client_id) || f.get("client_secret") != Some(&g.cfg.client_secret) {
        return HttpResponse::Unauthorized().json(json!({ "error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided." }));
    }
    if f.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth("unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type.");
    }
    let (access, life) = g.issue(TokenKind::Entra);
    HttpResponse::Ok().json(json!({ "token_type": "Bearer", "expires_in": life, "ext_expires_in": life, "access_token": access }))
}

pub(super) async fn google_token(state: web::Data<Shared>, form: FormResult) -> HttpResponse {
    let mut g = lock(&state);
    g.stats.token_requests += 1;
    let Ok(f) = form.map(web::Form::into_inner) else {
        return HttpResponse::BadRequest().json(json!({ "error": "invalid_request", "error_description": "Required parameter is missing: grant_type" }));
    };
    if f.get("client_id") != Some(&g.cfg.google_client_id) || f.get("client_secret") != Some(&g.cfg.google_client_secret) {
        return HttpResponse::Unauthorized().json(json!({ "error": "invalid_client", "error_description": "Unauthorized" }));
    }
    match f.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {}
        Some(other) => {
            return HttpResponse::BadRequest()
                .json(json!({ "error": "unsupported_grant_type", "error_description": format!("Invalid grant_type: {other}") }))
        }
        None => {
            return HttpResponse::BadRequest().json(json!({ "error": "invalid_request", "error_description": "Required parameter is missing: grant_type" }))
        }
    }
    if f.get("refresh_token") != Some(&g.cfg.google_refresh_token) {
        return HttpResponse::BadRequest().json(json!({ "error": "invalid_grant", "error_description": "Bad Request" }));
    }
    let (access, life) = g.issue(TokenKind::Google);
    HttpResponse::Ok().json(json!({
        "access_token": access, "expires_in": life, "token_type": "Bearer",
        "scope": "https://www.googleapis.com/auth/calendar.freebusy",
    }))
}
