//! Webhooks into providers: `/hooks/{provider}/{tail}` (any method).
//!
//! Peers that push to the hub — Microsoft Graph change notifications, operator webhooks —
//! reach the provider that registered for `{provider}`. No API token is asked for here: the
//! sender cannot carry one. Each provider authenticates its own traffic instead (Graph's
//! `clientState`, HMAC signatures) and counts what it refuses. The body is bounded by
//! `[http] max_hook_bytes` before the provider sees it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::error::AppError;
use super::AppState;
use presence_actors::provider::HookRequest;

/// Most headers passed on to a provider.
const MAX_HEADERS: usize = 64;

/// `* /hooks/{provider}/{tail}`
pub async fn hook(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    mut payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let (provider, tail) = path.into_inner();
    let handler = state.hooks.get(&provider);
    // On a node of a cluster, a configured provider running on another node gets the request
    // over NATS.
    let remote = handler.is_none() && state.cluster.is_some() && state.config.providers.iter().any(|p| p.name() == provider);
    if handler.is_none() && !remote {
        return Err(AppError::NotFound(format!("no provider {:?} takes webhooks", presence_actors::model::activity::truncate(&provider, 60))));
    }
    let limit = state.config.http.max_hook_bytes;
    if req.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok()).is_some_and(|n| n > limit) {
        return Err(AppError::TooLarge(format!("webhook bodies are at most {limit} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| AppError::BadRequest(format!("reading the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(AppError::TooLarge(format!("webhook bodies are at most {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    let headers = req
        .headers()
        .iter()
        .take(MAX_HEADERS)
        .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_string())))
        .collect();
    let request = HookRequest { method: req.method().to_string(), tail, query: req.query_string().to_string(), headers, body };
    let res = match (handler, &state.cluster) {
        // Handlers only check, parse and enqueue; run them off the async worker all the same.
        (Some(handler), _) => web::block(move || handler.handle(request)).await.map_err(|e| AppError::Internal(format!("webhook handler: {e}")))?,
        (None, Some(c)) => crate::cluster::hooks::forward(c, &provider, request)
            .await
            .ok_or_else(|| AppError::Unavailable(format!("the node running provider {provider:?} did not answer; try again")))?,
        (None, None) => return Err(AppError::NotFound("no such provider".into())),
    };
    let status = StatusCode::from_u16(res.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Ok(HttpResponse::build(status).content_type(res.content_type).body(res.body))
}
