//! Signing in through the organisation's OpenID provider, and the sessions that follow.
//!
//! - `GET /auth/login[?return_to=/path]`: starts the authorization code flow (PKCE S256,
//!   `state`, `nonce`) and sends the browser to the provider. The `state` is also put in a
//!   short-lived cookie, so a callback is accepted only in the browser that started it (a
//!   stranger cannot sign a victim in as the stranger).
//! - `GET /auth/callback`: checks `state`, exchanges the code, checks the ID token, finds the
//!   person, maps the role, opens a session (stored with its audit entry) and sets the cookie.
//!   Any failure is audited and sends the browser to `/?signin_error=<code>`, which the page
//!   puts into words.
//! - `POST /auth/logout`: ends the caller's session; answers the provider's end-session URL
//!   (RP-initiated logout) when it has one, for the page to go to.
//! - `GET /api/me`: who the caller is, their person, role, how they signed in, and for a
//!   session the CSRF token writes must send back.
//! - `GET /api/sessions`, `DELETE /api/sessions/{id}` (admin): list and revoke sessions.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use presence_actors::model::{now_ms, rfc3339};
use serde::Deserialize;

use super::auth::{client_ip, cookie, secure_cookies, session_cookie_name, Admin, Caller, Role};
use super::error::AppError;
use super::AppState;
use crate::audit::{self, Action};
use crate::signin::{self, oidc::OidcError};
use crate::store::StoredSession;
use crate::tokens::Via;

type Data = web::Data<AppState>;

/// The cookie that ties a callback to the browser that started the sign-in.
const LOGIN_COOKIE: &str = "ph_login";

/// `/auth/login`'s query.
#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    return_to: Option<String>,
}

fn not_configured() -> AppError {
    AppError::NotFound("sign-in with an identity provider is not configured ([auth.oidc])".into())
}

fn to_page(code: &str) -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, format!("/?signin_error={code}")))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// `GET /auth/login`.
pub async fn login(state: Data, q: web::Query<LoginQuery>) -> Result<HttpResponse, AppError> {
    let s = state.signin.as_ref().ok_or_else(not_configured)?;
    let discovery = match s.provider.discovery().await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "Sign-in: the identity provider cannot be reached.");
            return Ok(to_page("unavailable"));
        }
    };
    let Some((st, pending)) = s.pending.start(&signin::safe_return_to(q.return_to.as_deref())) else {
        return Err(AppError::Unavailable("too many sign-ins in progress; try again in a few minutes".into()));
    };
    // In a cluster the callback may reach another node: it finds the sign-in there.
    if let Some(shared) = state.cluster.as_ref().and_then(|c| c.signin()) {
        if let Err(e) = shared.put_login(&st, &pending).await {
            tracing::warn!(error = %e, "Sign-in: cannot share the sign-in with the cluster.");
            return Ok(to_page("unavailable"));
        }
    }
    let login_cookie = Cookie::build(LOGIN_COOKIE, st.clone())
        .path("/auth")
        .http_only(true)
        .secure(secure_cookies(&state))
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::seconds(signin::PENDING_TTL.as_secs() as i64))
        .finish();
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, s.authorize_url(&discovery.authorization_endpoint, &st, &pending)))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(login_cookie)
        .finish())
}

/// `/auth/callback`'s query (RFC 6749 §4.1.2 and §4.1.2.1).
#[derive(Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// `GET /auth/callback`.
pub async fn callback(state: Data, req: HttpRequest, q: web::Query<CallbackQuery>) -> Result<HttpResponse, AppError> {
    let s = state.signin.as_ref().ok_or_else(not_configured)?.clone();
    let ip = client_ip(&req);
    let failed = |code: &'static str, reason: String| {
        let state = state.clone();
        let ip = ip.clone();
        async move {
            tracing::warn!(code, reason = %reason, "Sign-in failed.");
            state.audit.security(audit::anonymous(Action::SignInFailed, "oidc", serde_json::json!({ "code": code, "reason": reason }), ip)).await;
            Ok::<_, AppError>(clear_login(to_page(code)))
        }
    };
    let trunc = |s: &str| s.chars().take(200).collect::<String>();
    if let Some(e) = &q.error {
        let code = if e == "access_denied" { "denied" } else { "provider" };
        return failed(code, format!("the provider answered {}: {}", trunc(e), trunc(q.error_description.as_deref().unwrap_or_default()))).await;
    }
    let (Some(code), Some(st)) = (q.code.as_deref(), q.state.as_deref()) else {
        return failed("refused", "the callback has no code or no state".into()).await;
    };
    if cookie(&req, LOGIN_COOKIE).as_deref() != Some(st) {
        return failed("expired", "the callback's state is not the one this browser started (or the sign-in cookie expired)".into()).await;
    }
    // In a cluster the shared copy is taken (once, whichever node the callback reached): a
    // replayed callback finds nothing on any node.
    let local = s.pending.take(st);
    let pending = match state.cluster.as_ref().and_then(|c| c.signin()) {
        Some(shared) => shared.take_login(st).await,
        None => local,
    };
    let Some(pending) = pending else {
        return failed("expired", "unknown or expired state".into()).await;
    };
    let (claims, id_token) = match s
        .provider
        .exchange(
            &s.config.client_id,
            &s.secret,
            &signin::oidc::CodeGrant { code, redirect_uri: &s.redirect_uri, verifier: &pending.verifier, nonce: &pending.nonce },
            s.config.clock_skew_secs,
        )
        .await
    {
        Ok(x) => x,
        // The provider refused the code (invalid_grant…) or the token did not verify.
        Err(e @ (OidcError::Refused(_) | OidcError::Call(presence_providers::common::http::CallError::Token(_)))) => {
            return failed("refused", e.to_string()).await
        }
        Err(e @ (OidcError::Call(_) | OidcError::Discovery(_) | OidcError::Keys(_))) => return failed("unavailable", e.to_string()).await,
        Err(e) => return failed("refused", e.to_string()).await,
    };
    let dir = state.hub.directory();
    let person = signin::match_person(&dir, &s.config, &claims).and_then(|i| dir.person(i).map(|p| (p.id().to_string(), p.name().to_string())));
    let mut role = signin::role_for(&s.config, &claims);
    if person.is_none() {
        // Not in the directory: may look, not write (there is no "own" absence to set).
        role = role.min(Role::Viewer);
    }
    let name = person
        .as_ref()
        .map(|(_, n)| n.clone())
        .or_else(|| claims.string("name"))
        .or_else(|| claims.string("preferred_username"))
        .unwrap_or_else(|| claims.subject.clone());
    let now = now_ms();
    let secret = signin::random_b64(32);
    let stored = StoredSession {
        id: presence_providers::common::secret::random_hex128(),
        secret_sha256: signin::sessions::digest(&secret),
        csrf: signin::random_b64(32),
        person: person.as_ref().map(|(id, _)| id.clone()),
        name: name.chars().take(200).collect(),
        subject: format!("{}#{}", claims.issuer, claims.subject).chars().take(500).collect(),
        role: role.as_str().into(),
        method: "oidc".into(),
        id_token: Some(id_token),
        created_at: now,
        last_seen: now,
        expires_at: now + i64::from(s.config.session_hours) * 3_600_000,
        ip: ip.clone(),
        user_agent: req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|u| u.chars().take(256).collect()),
    };
    let caller = Caller { name: stored.name.clone(), role, person: stored.person.clone(), via: Via::Session(stored.id.clone()) };
    // Entra leaves `groups` out of a token for people in more than 200 groups ("overage"):
    // they get the default role; app roles (`roles`) have no such limit.
    let overage = claims.all.get("_claim_names").and_then(|n| n.get(&s.config.roles_claim)).is_some();
    if overage {
        tracing::warn!(subject = %claims.subject, claim = %s.config.roles_claim, "The ID token names too many groups to list them (overage); the default role applies. Map app roles (roles_claim = \"roles\") instead.");
    }
    let detail = serde_json::json!({
        "overage": overage,
        "subject": stored.subject,
        "in_directory": person.is_some(),
        "claim_roles": claims.strings(&s.config.roles_claim).into_iter().take(20).collect::<Vec<_>>(),
    });
    let entry = audit::entry(&caller, Action::SignIn, Some(&stored.id), detail, ip);
    let sessions = state.sessions.clone();
    let session_id = stored.id.clone();
    super::blocking(move || sessions.create(stored, role, &entry)).await?;
    tracing::info!(session = %session_id, person = ?caller.person, role = role.as_str(), "Signed in.");
    let c = Cookie::build(session_cookie_name(&state), secret)
        .path("/")
        .http_only(true)
        .secure(secure_cookies(&state))
        .same_site(SameSite::Lax)
        .finish();
    Ok(clear_login(
        HttpResponse::Found()
            .insert_header((header::LOCATION, pending.return_to.clone()))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .cookie(c)
            .finish(),
    ))
}

fn clear_login(mut res: HttpResponse) -> HttpResponse {
    let mut c = Cookie::build(LOGIN_COOKIE, "").path("/auth").http_only(true).finish();
    c.make_removal();
    let _ = res.add_cookie(&c);
    res
}

/// `POST /auth/logout` (a session; CSRF-checked like every cookie write).
pub async fn logout(state: Data, req: HttpRequest, caller: Caller) -> Result<HttpResponse, AppError> {
    let Via::Session(id) = &caller.via else {
        return Err(AppError::BadRequest("this request is authenticated with a token; there is no session to sign out of".into()));
    };
    let session = state.sessions.by_id(id);
    let entry = audit::entry(&caller, Action::SignOut, Some(id), serde_json::Value::Null, client_ip(&req));
    let (sessions, sid) = (state.sessions.clone(), id.clone());
    super::blocking(move || sessions.end(&sid, &entry)).await?;
    // RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0 §2), when offered.
    let mut end_session_url = None;
    if let (Some(s), Some(session)) = (&state.signin, session) {
        if let Ok(d) = s.provider.discovery().await {
            if let Some(end) = d.end_session_endpoint {
                let back = format!("{}/", s.redirect_uri.trim_end_matches("/auth/callback"));
                let mut q = vec![("client_id", s.config.client_id.as_str()), ("post_logout_redirect_uri", back.as_str())];
                if let Some(t) = session.stored.id_token.as_deref() {
                    q.push(("id_token_hint", t));
                }
                let sep = if end.contains('?') { '&' } else { '?' };
                end_session_url = Some(format!("{end}{sep}{}", presence_providers::common::form::encode(&q)));
            }
        }
    }
    let mut c = Cookie::build(session_cookie_name(&state), "").path("/").http_only(true).secure(secure_cookies(&state)).finish();
    c.make_removal();
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).cookie(c).json(serde_json::json!({ "end_session_url": end_session_url })))
}

/// `GET /api/me` (viewer): who the caller is and what they may do.
pub async fn me(state: Data, caller: Caller) -> Result<HttpResponse, AppError> {
    caller.require(Role::Viewer)?;
    let dir = state.hub.directory();
    let person = caller.person.as_deref().and_then(|p| dir.by_id(p)).and_then(|i| dir.person(i)).map(|p| {
        serde_json::json!({ "id": p.id(), "name": p.name(), "title": p.title(), "department": p.department(), "email": p.email() })
    });
    let session = match &caller.via {
        Via::Session(id) => state.sessions.by_id(id),
        Via::Token => None,
    };
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(serde_json::json!({
        "name": caller.name,
        "role": caller.role,
        "via": caller.via_str(),
        "person": person,
        "in_directory": caller.person.is_some(),
        "csrf_token": session.as_ref().map(|s| s.stored.csrf.clone()),
        "session": session.as_ref().map(|s| serde_json::json!({
            "id": s.stored.id,
            "created_at": rfc3339(s.stored.created_at),
            "expires_at": rfc3339(s.stored.expires_at),
        })),
    })))
}

/// `GET /api/sessions` (admin): the live sessions, newest first.
pub async fn sessions(state: Data, _admin: Admin) -> Result<HttpResponse, AppError> {
    let out: Vec<_> = state
        .sessions
        .list()
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.stored.id,
                "name": s.stored.name,
                "person": s.stored.person,
                "role": s.role,
                "via": s.stored.method,
                "created_at": rfc3339(s.stored.created_at),
                "last_seen": rfc3339(s.last_seen()),
                "expires_at": rfc3339(s.stored.expires_at),
                "ip": s.stored.ip,
                "user_agent": s.stored.user_agent,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(out))
}

/// `DELETE /api/sessions/{id}` (admin): ends a session at once (its open streams close at their
/// next heartbeat).
pub async fn revoke(state: Data, req: HttpRequest, Admin(caller): Admin, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let session = state.sessions.by_id(&id).ok_or_else(|| AppError::NotFound(format!("no session {:?}", id.chars().take(40).collect::<String>())))?;
    let detail = serde_json::json!({ "person": session.stored.person, "name": session.stored.name });
    let entry = audit::entry(&caller, Action::SessionRevoked, Some(&id), detail, client_ip(&req));
    let sessions = state.sessions.clone();
    let sid = id.clone();
    if !super::blocking(move || sessions.end(&sid, &entry)).await? {
        return Err(AppError::NotFound("the session ended meanwhile".into()));
    }
    tracing::info!(session = %id, by = %caller.actor(), "Session revoked.");
    Ok(HttpResponse::NoContent().finish())
}
