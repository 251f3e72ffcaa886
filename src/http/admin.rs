//! Operations endpoints: health, readiness, Prometheus metrics, provider health, stats, the
//! OpenAPI document.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use actix_web::{web, HttpRequest, HttpResponse};

use super::error::AppError;
use super::AppState;
use super::auth::{authenticate, Caller, Role};
use presence_actors::metrics::Metrics;

type Data = web::Data<AppState>;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: start-up (restore, providers) is complete.
pub async fn readyz(state: Data) -> HttpResponse {
    if let Some(c) = state.cluster.as_ref().filter(|c| !c.ready()) {
        let detail = if c.connected() { "catching up with the cluster's buckets" } else { "not connected to NATS: this node owns no feed" };
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({ "error": "cluster", "detail": detail }));
    }
    if state.ready.load(Ordering::Acquire) {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({ "error": "starting", "detail": "start-up is not complete" }))
    }
}

/// Unknown routes: a JSON 404.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound(format!("no route for {} {}", req.method(), presence_actors::model::activity::truncate(req.path(), 200))))
}

/// Resident memory of this process, from `/proc/self/statm`.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(state: Data, req: HttpRequest) -> Result<HttpResponse, AppError> {
    if state.config.http.metrics_require_token {
        authenticate(&req)?.require(Role::Admin)?;
    }
    let m = state.hub.metrics();
    let mut out = String::with_capacity(4096);
    for (name, help, v) in m.counters() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    for (name, help, v) in m.gauges() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    let _ = writeln!(out, "# HELP presence_people People in the directory.\n# TYPE presence_people gauge\npresence_people {}", state.hub.directory().count());
    if let Some(sync) = &state.sync {
        sync.metrics_text(&mut out);
    }
    if let Some(c) = &state.cluster {
        crate::cluster::metrics_text(c, &mut out);
    }
    let _ = writeln!(out, "# HELP presence_sequence Current change sequence number.\n# TYPE presence_sequence counter\npresence_sequence {}", state.hub.fanout().seq());
    let feeds = state.hub.feeds().all();
    type Read = fn(&presence_actors::feeds::FeedEntry) -> u64;
    let series: [(&str, &str, &str, Read); 3] = [
        ("presence_provider_events_total", "Signals emitted per provider.", "counter", |f| f.events.load(Ordering::Relaxed)),
        ("presence_provider_errors_total", "Errors per provider.", "counter", |f| f.errors.load(Ordering::Relaxed)),
        ("presence_provider_up", "1 while the provider's feed is up.", "gauge", |f| f.is_up() as u64),
    ];
    for (name, help, kind, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for f in &feeds {
            let _ = writeln!(out, "{name}{{provider=\"{}\",type=\"{}\"}} {}", escape_label(&f.name), escape_label(&f.kind), get(f));
        }
    }
    if let Some(rss) = rss_bytes() {
        let _ = writeln!(out, "# HELP process_resident_memory_bytes Resident memory.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}");
    }
    let _ = writeln!(out, "# HELP process_uptime_seconds Seconds since start.\n# TYPE process_uptime_seconds gauge\nprocess_uptime_seconds {}", state.hub.uptime().as_secs());
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(out))
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `GET /api/providers` (admin): health of every provider.
pub async fn providers(state: Data, caller: Caller) -> Result<HttpResponse, AppError> {
    caller.require(Role::Admin)?;
    let list: Vec<_> = state.hub.feeds().all().iter().map(|f| f.report()).collect();
    Ok(HttpResponse::Ok().json(list))
}

/// `GET /api/cluster` (admin): this node, the nodes alive, every lease and its owner, the
/// NATS connection and replication. 404 on a single node.
pub async fn cluster(state: Data, caller: Caller) -> Result<HttpResponse, AppError> {
    caller.require(Role::Admin)?;
    let c = state.cluster.as_ref().ok_or_else(|| AppError::NotFound("this hub is a single node: [cluster] is not configured".into()))?;
    Ok(HttpResponse::Ok().json(c.report().await))
}

/// `POST /api/providers/{name}/restart` (admin): the provider stops gracefully (deleting its
/// subscriptions, logging out) and starts again from its config → 202; audited.
pub async fn restart_provider(super::auth::Admin(caller): super::auth::Admin, req: HttpRequest, state: Data, name: web::Path<String>) -> Result<HttpResponse, AppError> {
    let name = name.into_inner();
    let r = state.restarters.get(&name).ok_or_else(|| AppError::NotFound(format!("no provider {:?}", name.chars().take(60).collect::<String>())))?;
    if !r.restart() {
        return Err(AppError::Conflict(format!("provider {name:?} is not running (the hub is stopping, or it finished)")));
    }
    let entry = crate::audit::entry(&caller, crate::audit::Action::ProviderRestarted, Some(&name), serde_json::Value::Null, super::auth::client_ip(&req));
    let store = state.store.clone();
    super::blocking(move || store.append_audit(&entry)).await?;
    tracing::info!(provider = %name, by = %caller.actor(), "Provider restart requested.");
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "provider": name, "restarting": true })))
}

/// `POST /api/config/reload` (admin): re-reads the configuration file (see [`crate::reload`]):
/// 200 with what was applied and what needs a restart; 422 for an invalid file (nothing
/// changes); 409 in the demo. Audited either way.
pub async fn reload(super::auth::Admin(caller): super::auth::Admin, req: HttpRequest, state: Data) -> Result<HttpResponse, AppError> {
    let report = reload_config(&state, &caller, super::auth::client_ip(&req), caller.via_str()).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// Reloads the configuration for `caller` (an admin, or the hub itself at SIGHUP) and records
/// it in the audit log.
pub async fn reload_config(state: &AppState, caller: &Caller, ip: Option<String>, via: &str) -> Result<crate::reload::ReloadReport, AppError> {
    let Some((path, running)) = &state.config_file else {
        return Err(AppError::Conflict(crate::reload::ReloadError::NoFile.to_string()));
    };
    let current = running.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (p, c) = (path.clone(), current);
    let prepared = web::block(move || crate::reload::prepare(&p, &c)).await.map_err(|e| AppError::Internal(e.to_string()))?;
    let mut entry = crate::audit::entry(caller, crate::audit::Action::ConfigReloaded, None, serde_json::Value::Null, ip);
    entry.via = via.to_string();
    let result = match prepared {
        Ok((tokens, text, report)) => {
            if let Some(t) = tokens {
                if state.demo_tokens.is_empty() {
                    *state.tokens.write().unwrap_or_else(|e| e.into_inner()) = t;
                }
            }
            *running.lock().unwrap_or_else(|e| e.into_inner()) = text;
            entry.detail = Some(serde_json::json!({ "applied": report.applied, "restart_needed": report.restart_needed }).to_string());
            tracing::info!(applied = ?report.applied, restart_needed = ?report.restart_needed, by = %caller.actor(), "Configuration reloaded.");
            Ok(report)
        }
        Err(e) => {
            entry.detail = Some(serde_json::json!({ "error": e.to_string() }).to_string());
            tracing::warn!(error = %e, by = %caller.actor(), "Configuration reload refused.");
            Err(AppError::Unprocessable(e.to_string()))
        }
    };
    let store = state.store.clone();
    super::blocking(move || store.append_audit(&entry)).await?;
    result
}

/// `GET /api/directory/sources` (admin): every directory source's state, last pass
/// (time, kind, duration, added / changed / removed / unchanged) and recent errors.
pub async fn directory_sources(state: Data, caller: Caller) -> Result<HttpResponse, AppError> {
    caller.require(Role::Admin)?;
    let sources = state.sync.as_ref().map(|s| s.status()).unwrap_or_default();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "people": state.hub.directory().count(), "sources": sources })))
}

/// The optional body of `POST /api/directory/sync`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncBody {
    /// Only this source.
    #[serde(default)]
    pub source: Option<String>,
    /// `full` (default) or `incremental`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Apply even if more than `max_removal_percent` of the people would be removed.
    #[serde(default)]
    pub force: bool,
}

/// `POST /api/directory/sync` (admin): starts passes now → 202 with the sources started. The
/// role is checked before the body is read; the body is optional.
pub async fn directory_sync(super::auth::Admin(caller): super::auth::Admin, req: HttpRequest, state: Data, body: web::Bytes) -> Result<HttpResponse, AppError> {
    let body: SyncBody = if body.iter().all(u8::is_ascii_whitespace) {
        SyncBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| AppError::BadRequest(format!("body: {e}")))?
    };
    let full = match body.kind.as_deref() {
        None | Some("full") => true,
        Some("incremental") => false,
        Some(k) => return Err(AppError::Unprocessable(format!("kind must be \"full\" or \"incremental\", not {k:?}"))),
    };
    let Some(sync) = &state.sync else {
        return Err(AppError::Conflict("no directory source is configured ([[directory.sources]] or [directory] import)".into()));
    };
    let sync_req = crate::sync::SyncRequest { source: body.source, full, force: body.force };
    let started = sync.request(&sync_req).map_err(|e| AppError::NotFound(e.to_string()))?;
    let detail = serde_json::json!({ "sources": started, "kind": if full { "full" } else { "incremental" }, "force": sync_req.force });
    let entry = crate::audit::entry(&caller, crate::audit::Action::DirectorySync, None, detail, super::auth::client_ip(&req));
    let store = state.store.clone();
    super::blocking(move || store.append_audit(&entry)).await?;
    tracing::info!(by = %caller.actor(), sources = ?started, full, force = sync_req.force, "Directory sync requested.");
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "started": started, "kind": if full { "full" } else { "incremental" }, "force": sync_req.force })))
}

/// Estimated bytes of one idle actix 0.13 actor with its context and mailbox (measured when
/// the shard design was chosen; `presence-hub bench` reports the hub's real bytes per person).
const ACTOR_OVERHEAD: usize = 850;

/// `GET /api/stats` (admin): counts and a memory estimate per actor kind.
pub async fn stats(state: Data, caller: Caller) -> Result<HttpResponse, AppError> {
    caller.require(Role::Admin)?;
    let hub = &state.hub;
    let s = hub.stats().await;
    let m = hub.metrics();
    let slot = std::mem::size_of::<presence_actors::model::Slot>() + 48;
    let absence = std::mem::size_of::<presence_actors::model::Absence>() + 64;
    let user_state = std::mem::size_of::<presence_actors::model::UserPresence>() + 64;
    let subs = hub.fanout().subscriber_count();
    let outbox = state.config.stream.outbox_capacity * 8 + 512;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "people": hub.directory().count(),
        "uptime_s": hub.uptime().as_secs(),
        "sequence": hub.fanout().seq(),
        "shards": hub.shard_count(),
        "actors": {
            "user": {
                "count": s.live,
                "people_with_state": s.users,
                "slots": s.slots,
                "absences": s.absences,
                "pending_signals": s.pending,
                "timers": s.timers,
                "estimated_bytes": s.live * ACTOR_OVERHEAD + s.users * user_state + s.slots * slot + s.absences * absence,
            },
            "subscriber": { "count": subs, "estimated_bytes": subs * (ACTOR_OVERHEAD + outbox) },
            "shard": { "count": hub.shard_count() },
            "provider": { "count": hub.feeds().all().len() },
        },
        "memory": {
            "directory_bytes": hub.directory().memory_bytes(),
            "fanout_bytes": hub.fanout().memory_bytes(),
            "rss_bytes": rss_bytes(),
        },
        "signals": {
            "received": Metrics::get(&m.signals_received),
            "unresolved": Metrics::get(&m.signals_unresolved),
            "coalesced": Metrics::get(&m.signals_coalesced),
            "dropped": Metrics::get(&m.signals_dropped),
            "out_of_order": Metrics::get(&m.signals_out_of_order),
        },
        "changes_published": Metrics::get(&m.changes_published),
        "frames_sent": Metrics::get(&m.frames_sent),
    })))
}

/// `GET /api/openapi.json`
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(include_str!("openapi.json"))
}
