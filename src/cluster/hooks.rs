//! Webhooks that reach a node not running their provider (behind a load balancer, a Graph
//! notification or an operator's webhook may reach any node): handed to the node that runs it
//! over NATS (`<prefix>.hook.<provider>`), and answered with that node's answer.
//!
//! The receiving node bounds the body (`[http] max_hook_bytes`) before anything else; the
//! provider's own handler, on its node, authenticates the traffic (Graph's `clientState`,
//! signatures) exactly as on a single node. Every node listens for every provider and only
//! the node whose provider has registered a handler answers; a request nobody answers in
//! [`HOOK_WAIT`] gets `503`, so the sender retries (Graph and the operators do).

use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::warn;

use presence_actors::provider::{HookRequest, HookResponse, Hooks, Shutdown};

use super::Cluster;

/// How long a node waits for the provider's node to answer a webhook.
pub const HOOK_WAIT: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
struct WireRequest {
    method: String,
    tail: String,
    query: String,
    headers: Vec<(String, String)>,
    body: String,
}

#[derive(Serialize, Deserialize)]
struct WireResponse {
    status: u16,
    content_type: String,
    body: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn subject(cluster: &Cluster, provider: &str) -> String {
    format!("{}.hook.{}", cluster.config().prefix, super::partitions::token(provider))
}

/// Hands a webhook request to the node running `provider`; `None` when no node answered.
pub async fn forward(cluster: &Cluster, provider: &str, req: HookRequest) -> Option<HookResponse> {
    let wire = WireRequest { method: req.method, tail: req.tail, query: req.query, headers: req.headers, body: b64().encode(&req.body) };
    let body = serde_json::to_vec(&wire).ok()?;
    let reply = tokio::time::timeout(HOOK_WAIT, cluster.inner.client.request(subject(cluster, provider), body.into())).await.ok()?.ok()?;
    let r: WireResponse = serde_json::from_slice(&reply.payload).ok()?;
    let content_type = match r.content_type.as_str() {
        "application/json" => "application/json",
        "text/plain; charset=utf-8" => "text/plain; charset=utf-8",
        "application/xml" => "application/xml",
        "text/xml; charset=utf-8" => "text/xml; charset=utf-8",
        _ => "application/octet-stream",
    };
    Some(HookResponse { status: r.status, content_type, body: b64().decode(r.body).ok()? })
}

/// Answers forwarded webhooks for `providers` whose handler is registered on this node.
pub fn serve(cluster: &Cluster, hooks: Hooks, providers: Vec<String>, stop: Shutdown) {
    for name in providers {
        let (cluster, hooks, mut stop) = (cluster.clone(), hooks.clone(), stop.clone());
        actix_web::rt::spawn(async move {
            let mut sub = match cluster.inner.client.subscribe(subject(&cluster, &name)).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(provider = %name, error = %e, "Cannot take webhooks forwarded by other nodes.");
                    return;
                }
            };
            loop {
                let m = tokio::select! {
                    _ = stop.recv() => return,
                    m = sub.next() => match m { Some(m) => m, None => return },
                };
                let (Some(reply), Some(handler)) = (m.reply, hooks.get(&name)) else { continue };
                let Ok(w) = serde_json::from_slice::<WireRequest>(&m.payload) else { continue };
                let Ok(body) = b64().decode(w.body) else { continue };
                let req = HookRequest { method: w.method, tail: w.tail, query: w.query, headers: w.headers, body };
                let res = match actix_web::web::block(move || handler.handle(req)).await {
                    Ok(r) => r,
                    Err(_) => HookResponse::error(500, "internal", "webhook handler failed"),
                };
                let out = WireResponse { status: res.status, content_type: res.content_type.to_string(), body: b64().encode(&res.body) };
                let _ = cluster.inner.client.publish(reply, serde_json::to_vec(&out).unwrap_or_default().into()).await;
            }
        });
    }
}
