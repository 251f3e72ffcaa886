//! The operator provider's task and webhook.
//!
//! Both intakes feed one [`Shared`] state: the body is parsed by the compiled [`Mapping`],
//! then, under one lock, the [`Ingest`] orders the events per person and the resulting
//! signals are handed to the hub (`try_send`, never blocking) — under the lock, so two
//! requests handled on two HTTP workers cannot reorder one person's signals.
//!
//! - The webhook ([`OperatorHook`]) runs on HTTP worker threads: it checks the method, path
//!   and authentication (`401` + JSON error), parses (`400` + the reason), ingests, and answers
//!   `200` with what it did (`{"accepted", "duplicates", "out_of_order", "unresolved",
//!   "invalid"}`). Refusals are counted in the feed's `errors` and in `details`.
//! - The task polls when `[providers.poll]` is set (ETag, backoff, stale after repeated
//!   failures), watches webhook silence when `stale_after_secs` is set, decides whether the
//!   feed is up, and refreshes `details` twice a second.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, info, warn};

use super::ingest::{Ingest, IngestConfig, Outcome};
use super::mapping::{Format, Mapping, ParseError};
use super::{OperatorConfig, PollConfig, Verifier};
use presence_actors::model::{now_ms, rfc3339, UnixMs};
use presence_actors::provider::{HookHandler, HookRequest, HookResponse, ProviderContext};

/// Most distinct unresolved numbers and unknown words logged (each once).
const MAX_LOGGED: usize = 1000;

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

/// State shared by the webhook and the task.
pub struct Shared {
    ctx: ProviderContext,
    mapping: Mapping,
    ingest: Mutex<Ingest>,
    logged: Mutex<std::collections::HashSet<String>>,
    /// Webhook counters.
    pub hook: HookStats,
}

impl Shared {
    /// Parses a body and applies its events; `Err` when the body does not parse.
    pub fn ingest(&self, body: &[u8], via: &str) -> Result<Outcome, ParseError> {
        let events = self.mapping.parse(body)?;
        let dir = self.ctx.directory().clone();
        let now = now_ms();
        let out = {
            let mut g = self.ingest.lock().unwrap_or_else(|p| p.into_inner());
            let out = g.apply(events, &|n| dir.resolve(n), now);
            for (idx, s) in &out.signals {
                if let Err(e) = self.ctx.sink.send_to(*idx, s.clone()) {
                    debug!(provider = %self.ctx.name, error = %e, "Signal not delivered.");
                }
            }
            out
        };
        if out.counts.unresolved > 0 {
            self.ctx.feed.unresolved.fetch_add(out.counts.unresolved, Ordering::Relaxed);
        }
        if out.counts.invalid > 0 {
            let why = out.first_error.as_deref().unwrap_or("invalid event");
            self.ctx.feed.record_error(&format!("{via}: {} event(s) refused, e.g. {why}", out.counts.invalid));
        }
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        for n in &out.unresolved {
            if logged.len() < MAX_LOGGED && logged.insert(format!("n:{n}")) {
                warn!(provider = %self.ctx.name, number = %n, "An operator event names a number nobody in the directory has (logged once).");
            }
        }
        for (field, w) in &out.unknown {
            if logged.len() < MAX_LOGGED && logged.insert(format!("{field}:{w}")) {
                warn!(provider = %self.ctx.name, field, value = %w, "The mapping does not know this operator word; add it to the value map (logged once).");
            }
        }
        Ok(out)
    }
}

/// The webhook: `/hooks/{name}/{path}`.
pub struct OperatorHook {
    shared: Arc<Shared>,
    path: String,
    verifier: Verifier,
}

fn json(status: u16, v: serde_json::Value) -> HookResponse {
    HookResponse { status, content_type: "application/json", body: v.to_string().into_bytes() }
}

impl HookHandler for OperatorHook {
    fn handle(&self, req: HookRequest) -> HookResponse {
        let feed = &self.shared.ctx.feed;
        let stats = &self.shared.hook;
        if req.tail.trim_matches('/') != self.path {
            stats.not_found.fetch_add(1, Ordering::Relaxed);
            return HookResponse::error(404, "not_found", &format!("this provider takes events at /{}", self.path));
        }
        if req.method != "POST" {
            stats.not_found.fetch_add(1, Ordering::Relaxed);
            return HookResponse::error(405, "method_not_allowed", "events are POSTed");
        }
        if let Err(e) = self.verifier.verify(|n| req.header(n), &req.body, now_ms()) {
            stats.rejected_auth.fetch_add(1, Ordering::Relaxed);
            feed.record_error(&format!("webhook refused: {e}"));
            warn!(provider = %feed.name, error = %e, "Refused an operator webhook request.");
            return HookResponse::error(401, "unauthorized", &e.to_string());
        }
        let out = match self.shared.ingest(&req.body, "webhook") {
            Ok(o) => o,
            Err(e) => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                feed.record_error(&format!("malformed webhook body: {e}"));
                return HookResponse::error(400, "bad_request", &e.to_string());
            }
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

/// Poller state.
#[derive(Default)]
struct Poll {
    etag: Option<String>,
    failures: u32,
    polls: u64,
    not_modified: u64,
    errors: u64,
    last_ok_at: Option<UnixMs>,
    last_error: Option<String>,
    next_at: UnixMs,
}

/// Why one poll failed.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("HTTP {status}")]
    Status { status: u16, retry_after_ms: Option<i64> },
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Malformed(ParseError),
}

/// The running provider.
pub struct Runtime {
    ctx: ProviderContext,
    cfg: OperatorConfig,
    shared: Arc<Shared>,
    poll: Poll,
    started_at: UnixMs,
}

impl Runtime {
    /// Builds the state and registers the webhook.
    pub fn new(ctx: ProviderContext, cfg: OperatorConfig, mapping: Mapping) -> Runtime {
        let ingest = Ingest::new(IngestConfig {
            instance: ctx.name.clone(),
            absence_instance: format!("{}-absence", ctx.name),
            forward_note: cfg.forward_note.clone(),
            forwarded_availability: cfg.forwarded_availability,
            reasons: cfg.reasons(),
            max_skew_ms: cfg.max_clock_skew_secs as i64 * 1000,
        });
        let shared = Arc::new(Shared {
            ctx: ctx.clone(),
            mapping,
            ingest: Mutex::new(ingest),
            logged: Default::default(),
            hook: HookStats::default(),
        });
        if let Some(w) = &cfg.webhook {
            let verifier = w.verifier();
            if matches!(verifier, Verifier::None) {
                warn!(provider = %ctx.name, "Operator webhook without authentication (auth = \"none\"): only behind a proxy that authenticates.");
            }
            let hook = OperatorHook { shared: shared.clone(), path: w.path.trim_matches('/').to_string(), verifier };
            ctx.hooks.register(&ctx.name, Arc::new(hook));
        }
        Runtime { ctx, cfg, shared, poll: Poll::default(), started_at: now_ms() }
    }

    /// Runs until shutdown.
    pub async fn run(mut self) {
        let mut shutdown = self.ctx.shutdown.clone();
        info!(
            provider = %self.ctx.name,
            operator = self.cfg.operator.as_deref().unwrap_or(""),
            webhook = self.cfg.webhook.as_ref().map(|w| self.ctx.hook_url(&w.path)),
            poll = self.cfg.poll.as_ref().map(|p| p.url.as_str()),
            "Operator provider starting."
        );
        if self.cfg.poll.is_some() {
            self.ctx.feed.set_state("connecting");
        } else {
            self.ctx.sink.set_up(true);
            self.ctx.feed.set_state("listening");
        }
        loop {
            let now = now_ms();
            if let Some(p) = self.cfg.poll.clone() {
                if now >= self.poll.next_at {
                    self.poll_once(&p).await;
                }
            }
            self.health();
            self.report();
            let next_poll = if self.cfg.poll.is_some() { self.poll.next_at } else { UnixMs::MAX };
            let sleep = next_poll.saturating_sub(now_ms()).clamp(10, 500) as u64;
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = tokio::time::sleep(Duration::from_millis(sleep)) => {}
            }
        }
        self.ctx.hooks.unregister(&self.ctx.name);
        info!(provider = %self.ctx.name, "Operator provider stopped.");
    }

    async fn poll_once(&mut self, p: &PollConfig) {
        let res = self.fetch(p).await;
        let now = now_ms();
        self.poll.polls += 1;
        let interval = p.interval_secs as i64 * 1000;
        match res {
            Ok(()) => {
                if self.poll.failures > 0 {
                    info!(provider = %self.ctx.name, after = self.poll.failures, "Operator poll works again.");
                }
                self.poll.failures = 0;
                self.poll.last_ok_at = Some(now);
                self.poll.next_at = now + interval;
            }
            Err(e) => {
                self.poll.failures = self.poll.failures.saturating_add(1);
                self.poll.errors += 1;
                let msg = format!("poll: {e}");
                self.ctx.feed.record_error(&msg);
                self.poll.last_error = Some(msg);
                warn!(provider = %self.ctx.name, error = %e, failures = self.poll.failures, "Operator poll failed.");
                // Doubling from the interval, capped, and never before Retry-After.
                let backoff = interval
                    .saturating_mul(1i64 << (self.poll.failures - 1).min(20))
                    .min(p.max_backoff_secs as i64 * 1000);
                let retry = match e {
                    PollError::Status { retry_after_ms: Some(r), .. } => r.min(p.max_backoff_secs as i64 * 1000),
                    _ => 0,
                };
                self.poll.next_at = now + backoff.max(retry);
            }
        }
    }

    async fn fetch(&mut self, p: &PollConfig) -> Result<(), PollError> {
        let accept = match self.shared.mapping.format() {
            Format::Json => "application/json",
            Format::Xml => "application/xml, text/xml",
        };
        let mut req = self.ctx.http.get(&p.url).timeout(Duration::from_secs(p.timeout_secs)).header("accept", accept);
        for (k, v) in &p.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(t) = &p.bearer_token {
            req = req.bearer_auth(t);
        } else if let (Some(u), Some(pw)) = (&p.username, &p.password) {
            req = req.basic_auth(u, Some(pw));
        }
        if let Some(e) = &self.poll.etag {
            req = req.header("if-none-match", e.as_str());
        }
        let mut res = req.send().await.map_err(|e| PollError::Unreachable(e.without_url().to_string()))?;
        let status = res.status().as_u16();
        if status == 304 {
            self.poll.not_modified += 1;
            return Ok(());
        }
        if status != 200 {
            let retry_after_ms = res
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
                .map(|s| s.clamp(0, 86_400) * 1000);
            return Err(PollError::Status { status, retry_after_ms });
        }
        let etag = res.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
        if res.content_length().is_some_and(|n| n as usize > p.max_body_bytes) {
            return Err(PollError::TooLarge(p.max_body_bytes));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| PollError::Unreachable(e.without_url().to_string()))? {
            if body.len() + chunk.len() > p.max_body_bytes {
                return Err(PollError::TooLarge(p.max_body_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        self.shared.ingest(&body, "poll").map_err(PollError::Malformed)?;
        // Only a body that was applied may be skipped next time.
        self.poll.etag = etag.filter(|e| e.len() <= 256);
        Ok(())
    }

    /// Up unless polling keeps failing or the webhook has been silent too long.
    fn health(&mut self) {
        let now = now_ms();
        let poll_down = self.cfg.poll.as_ref().map(|p| self.poll.failures >= p.stale_after_failures);
        let poll_up = poll_down.map(|d| !d && self.poll.last_ok_at.is_some());
        let silent = self.cfg.webhook.as_ref().and_then(|w| w.stale_after_secs).is_some_and(|s| {
            let last = self.shared.hook.last_at.load(Ordering::Relaxed);
            now - last.max(self.started_at) > s as i64 * 1000
        });
        let (up, state) = match (poll_down, poll_up, silent) {
            (Some(true), _, _) => (false, "down"),
            (_, _, true) if self.cfg.poll.is_none() => (false, "silent"),
            (Some(false), Some(false), _) => (self.ctx.feed.is_up(), "connecting"),
            _ => (true, "up"),
        };
        if self.ctx.feed.is_up() != up {
            if up {
                info!(provider = %self.ctx.name, "Operator feed is up.");
            } else {
                warn!(provider = %self.ctx.name, state, "Operator feed is down; its signals show stale (never Offline).");
            }
            self.ctx.sink.set_up(up);
        }
        self.ctx.feed.set_state(state);
    }

    fn report(&self) {
        let totals = self.shared.ingest.lock().map(|g| (g.totals(), g.people())).unwrap_or_else(|p| {
            let g = p.into_inner();
            (g.totals(), g.people())
        });
        let h = &self.shared.hook;
        let webhook = self.cfg.webhook.as_ref().map(|w| {
            serde_json::json!({
                "url": self.ctx.hook_url(&w.path),
                "auth": w.verifier().describe(),
                "accepted": h.accepted.load(Ordering::Relaxed),
                "rejected_auth": h.rejected_auth.load(Ordering::Relaxed),
                "malformed": h.malformed.load(Ordering::Relaxed),
                "not_found": h.not_found.load(Ordering::Relaxed),
                "last_at": Some(h.last_at.load(Ordering::Relaxed)).filter(|t| *t > 0).map(rfc3339),
            })
        });
        let poll = self.cfg.poll.as_ref().map(|p| {
            serde_json::json!({
                // Without the query string, which may carry a key.
                "url": p.url.split('?').next().unwrap_or_default(),
                "interval_secs": p.interval_secs,
                "polls": self.poll.polls,
                "not_modified": self.poll.not_modified,
                "errors": self.poll.errors,
                "failures_in_a_row": self.poll.failures,
                "last_ok_at": self.poll.last_ok_at.map(rfc3339),
                "last_error": self.poll.last_error,
                "next_at": (self.poll.next_at > 0).then(|| rfc3339(self.poll.next_at)),
                "etag": self.poll.etag.is_some(),
            })
        });
        self.ctx.feed.set_details(serde_json::json!({
            "operator": self.cfg.operator,
            "format": self.shared.mapping.format(),
            "webhook": webhook,
            "poll": poll,
            "events": totals.0,
            "people": totals.1,
        }));
    }
}

#[cfg(test)]
mod tests {
    use crate::operator::{AuthKind, WebhookConfig};

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
}
