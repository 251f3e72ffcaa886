//! The operator provider's task, and the state it shares with the webhook.
//!
//! Both intakes feed one [`Shared`] state: the body is parsed by the compiled [`Mapping`],
//! then, under one lock, the [`Ingest`] orders the events per person and the resulting
//! signals are handed to the hub (`try_send`, never blocking) — under the lock, so two
//! requests handled on two HTTP workers cannot reorder one person's signals. The webhook is
//! [`super::hook`]'s.
//!
//! The task polls when `[providers.poll]` is set, watches webhook silence when
//! `stale_after_secs` is set, decides whether the feed is up, and refreshes `details` twice a
//! second. A poll is one call through the providers' toolkit ([`http::send`]): its answer read
//! in bounded chunks (at most `max_body_bytes`) within `timeout_secs`, `If-None-Match` with
//! the last applied `ETag` (a `304` changes nothing), every failure one [`CallError`]. Failed
//! polls back off with jitter ([`Backoff`], from `interval_secs` doubling to
//! `max_backoff_secs`), never sooner than a `Retry-After` (capped at `max_backoff_secs`); after
//! `stale_after_failures` in a row the feed is down until a poll succeeds.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, info, warn};

use super::hook::{HookStats, OperatorHook};
use super::map::{Ingest, IngestConfig, Outcome};
use crate::common::slots::Instances;
use super::parse::{Format, Mapping, ParseError};
use super::{OperatorConfig, PollConfig, Verifier};
use crate::common::backoff::Backoff;
use crate::common::http::{self, CallError, Limits};
use presence_actors::feeds::FeedEntry;
use presence_actors::model::{now_ms, rfc3339, UnixMs};
use presence_actors::provider::ProviderContext;

/// Most distinct unresolved numbers and unknown words logged (each once).
const MAX_LOGGED: usize = 1000;
/// Wait assumed when the poll endpoint answers `429` without `Retry-After` (the back-off
/// decides then).
const DEFAULT_RETRY: Duration = Duration::ZERO;
/// Longest `ETag` kept for the next poll.
const MAX_ETAG_LEN: usize = 256;

/// State shared by the webhook and the task.
pub struct Shared {
    ctx: ProviderContext,
    mapping: Mapping,
    ingest: Mutex<Ingest>,
    logged: Mutex<HashSet<String>>,
    /// Webhook counters.
    pub hook: HookStats,
}

impl Shared {
    /// The state of the provider `ctx` with `cfg`'s signal rules and the compiled `mapping`.
    pub fn new(ctx: ProviderContext, cfg: &OperatorConfig, mapping: Mapping) -> Shared {
        let ingest = Ingest::new(IngestConfig {
            instances: Instances::of(&ctx.name),
            forward_note: cfg.forward_note.clone(),
            forwarded_availability: cfg.forwarded_availability,
            reasons: cfg.reasons(),
            max_skew_ms: cfg.max_clock_skew_secs as i64 * 1000,
        });
        Shared { ctx, mapping, ingest: Mutex::new(ingest), logged: Default::default(), hook: HookStats::default() }
    }

    /// The provider's feed.
    pub fn feed(&self) -> &FeedEntry {
        &self.ctx.feed
    }

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

    fn totals(&self) -> (super::map::Counts, usize) {
        let g = self.ingest.lock().unwrap_or_else(|p| p.into_inner());
        (g.totals(), g.people())
    }
}

/// The poller: its settings and state.
struct Poll {
    cfg: PollConfig,
    backoff: Backoff,
    etag: Option<String>,
    failures: u32,
    polls: u64,
    not_modified: u64,
    errors: u64,
    last_ok_at: Option<UnixMs>,
    last_error: Option<String>,
    next_at: UnixMs,
}

impl Poll {
    fn new(cfg: PollConfig) -> Poll {
        let backoff = Backoff::new(Duration::from_secs(cfg.interval_secs), Duration::from_secs(cfg.max_backoff_secs));
        Poll {
            cfg,
            backoff,
            etag: None,
            failures: 0,
            polls: 0,
            not_modified: 0,
            errors: 0,
            last_ok_at: None,
            last_error: None,
            next_at: 0,
        }
    }

    /// Polls once and schedules the next poll: after `interval_secs`, or after the back-off.
    async fn poll(&mut self, http: &reqwest::Client, shared: &Shared) {
        let res = self.fetch(http, shared).await;
        let now = now_ms();
        self.polls += 1;
        let name = &shared.ctx.name;
        match res {
            Ok(()) => {
                if self.failures > 0 {
                    info!(provider = %name, after = self.failures, "Operator poll works again.");
                }
                self.failures = 0;
                self.backoff.reset();
                self.last_ok_at = Some(now);
                self.next_at = now + self.cfg.interval_secs as i64 * 1000;
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                self.errors += 1;
                let msg = format!("poll: {e}");
                shared.feed().record_error(&msg);
                self.last_error = Some(msg);
                // Never before Retry-After, but no later than the longest back-off.
                let retry = e.retry_after().unwrap_or_default().min(Duration::from_secs(self.cfg.max_backoff_secs));
                let wait = self.backoff.next_delay().max(retry);
                warn!(provider = %name, error = %e, failures = self.failures, retry_in = ?wait, "Operator poll failed.");
                self.next_at = now + wait.as_millis() as i64;
            }
        }
    }

    /// One GET of the poll URL, applied; a `304` (the `ETag` still holds) changes nothing.
    async fn fetch(&mut self, http: &reqwest::Client, shared: &Shared) -> Result<(), CallError> {
        let p = &self.cfg;
        let accept = match shared.mapping.format() {
            Format::Json => "application/json",
            Format::Xml => "application/xml, text/xml",
        };
        let mut req = http.get(&p.url).header("accept", accept);
        for (k, v) in &p.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(t) = &p.bearer_token {
            req = req.bearer_auth(t);
        } else {
            req = p.login.basic(req);
        }
        if let Some(e) = &self.etag {
            req = req.header("if-none-match", e.as_str());
        }
        let answer = http::send(req, Limits::new(p.max_body_bytes, Duration::from_secs(p.timeout_secs))).await?;
        if answer.status == 304 {
            self.not_modified += 1;
            return Ok(());
        }
        let etag = answer.header("etag").map(str::to_string);
        let body = answer.into_body(DEFAULT_RETRY)?;
        shared.ingest(&body, "poll").map_err(|e| CallError::Parse(e.to_string()))?;
        // Only a body that was applied may be skipped next time.
        self.etag = etag.filter(|e| e.len() <= MAX_ETAG_LEN);
        Ok(())
    }

    /// Health details.
    fn details(&self) -> serde_json::Value {
        serde_json::json!({
            // Without the query string, which may carry a key.
            "url": self.cfg.url.split('?').next().unwrap_or_default(),
            "interval_secs": self.cfg.interval_secs,
            "polls": self.polls,
            "not_modified": self.not_modified,
            "errors": self.errors,
            "failures_in_a_row": self.failures,
            "last_ok_at": self.last_ok_at.map(rfc3339),
            "last_error": self.last_error,
            "next_at": (self.next_at > 0).then(|| rfc3339(self.next_at)),
            "etag": self.etag.is_some(),
        })
    }
}

/// The running provider.
pub struct Runtime {
    ctx: ProviderContext,
    cfg: OperatorConfig,
    shared: Arc<Shared>,
    poll: Option<Poll>,
    started_at: UnixMs,
}

impl Runtime {
    /// Builds the state and registers the webhook.
    pub fn new(ctx: ProviderContext, cfg: OperatorConfig, mapping: Mapping) -> Runtime {
        let shared = Arc::new(Shared::new(ctx.clone(), &cfg, mapping));
        if let Some(w) = &cfg.webhook {
            let verifier = w.verifier();
            if matches!(verifier, Verifier::None) {
                warn!(provider = %ctx.name, "Operator webhook without authentication (auth = \"none\"): only behind a proxy that authenticates.");
            }
            ctx.hooks.register(&ctx.name, Arc::new(OperatorHook::new(shared.clone(), &w.path, verifier)));
        }
        let poll = cfg.poll.clone().map(Poll::new);
        Runtime { ctx, cfg, shared, poll, started_at: now_ms() }
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
        if self.poll.is_some() {
            self.ctx.feed.set_state("connecting");
        } else {
            self.ctx.sink.set_up(true);
            self.ctx.feed.set_state("listening");
        }
        loop {
            if let Some(p) = self.poll.as_mut().filter(|p| now_ms() >= p.next_at) {
                p.poll(&self.ctx.http, &self.shared).await;
            }
            self.health();
            self.report();
            let next_poll = self.poll.as_ref().map_or(UnixMs::MAX, |p| p.next_at);
            let sleep = next_poll.saturating_sub(now_ms()).clamp(10, 500) as u64;
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = tokio::time::sleep(Duration::from_millis(sleep)) => {}
            }
        }
        self.ctx.hooks.unregister(&self.ctx.name);
        info!(provider = %self.ctx.name, "Operator provider stopped.");
    }

    /// Up unless polling keeps failing or the webhook has been silent too long.
    fn health(&mut self) {
        let now = now_ms();
        let poll_down = self.poll.as_ref().map(|p| p.failures >= p.cfg.stale_after_failures);
        let poll_up = self.poll.as_ref().map(|p| p.failures < p.cfg.stale_after_failures && p.last_ok_at.is_some());
        let silent = self.cfg.webhook.as_ref().and_then(|w| w.stale_after_secs).is_some_and(|s| {
            let last = self.shared.hook.last_at.load(Ordering::Relaxed);
            now - last.max(self.started_at) > s as i64 * 1000
        });
        let (up, state) = match (poll_down, poll_up, silent) {
            (Some(true), _, _) => (false, "down"),
            (None, _, true) => (false, "silent"),
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
        let (events, people) = self.shared.totals();
        let hook = &self.shared.hook;
        let webhook = self.cfg.webhook.as_ref().map(|w| hook.details(&self.ctx.hook_url(&w.path), &w.verifier()));
        self.ctx.feed.set_details(serde_json::json!({
            "operator": self.cfg.operator,
            "format": self.shared.mapping.format(),
            "webhook": webhook,
            "poll": self.poll.as_ref().map(Poll::details),
            "events": events,
            "people": people,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::http::loopback::{answer, client, peer};
    use crate::common::test_peer::{Reply, Request, TestPeer};
    use presence_actors::directory::{Directory, NumberPlan, Person};
    use presence_actors::hub::SinkEvent;
    use presence_actors::provider::TestHarness;

    const RINGING: &[u8] = br#"{"events":[{"msisdn":"2624","state":"ringing"}]}"#;

    /// The shared state of a JSON mapping, one person at extension 2624, and a poller of `url`.
    fn poller(url: &str, edit: impl FnOnce(&mut PollConfig)) -> (Shared, Poll, TestHarness) {
        let cfg: OperatorConfig = serde_json::from_value(serde_json::json!({
            "name": "tdc",
            "poll": { "url": url, "interval_secs": 2, "max_backoff_secs": 60, "max_body_bytes": 1024 },
            "mapping": { "format": "json", "events": "$.events[*]", "number": "$.msisdn", "call_state": "$.state" },
        }))
        .expect("a config");
        cfg.validate().expect("a valid config");
        let mut p = Person::new("asa", "Åsa");
        p.extension = Some("2624".into());
        let dir = Directory::build(vec![p], &NumberPlan::sweden()).expect("a directory");
        let (ctx, harness) = ProviderContext::for_test("tdc", dir, "http://127.0.0.1:9");
        let mut poll = cfg.poll.clone().expect("polling");
        edit(&mut poll);
        (Shared::new(ctx, &cfg, cfg.compile().expect("a mapping")), Poll::new(poll), harness)
    }

    fn signals(h: &mut TestHarness) -> usize {
        h.drain().into_iter().filter(|e| matches!(e, SinkEvent::Signal(..))).count()
    }

    #[tokio::test]
    async fn an_answer_is_applied_and_its_etag_kept_and_a_304_changes_nothing() {
        let len = RINGING.len().to_string();
        let fresh = peer(Some(answer("200 OK", &[("etag", "\"v1\""), ("content-length", &len)], RINGING)));
        let (shared, mut poll, mut harness) = poller(&fresh, |_| {});
        poll.fetch(&client(), &shared).await.expect("a poll");
        assert_eq!((poll.etag.as_deref(), signals(&mut harness)), (Some("\"v1\""), 1));
        let same = peer(Some(answer("304 Not Modified", &[("content-length", "0")], b"")));
        poll.cfg.url = same;
        poll.fetch(&client(), &shared).await.expect("a poll");
        assert_eq!((poll.etag.as_deref(), poll.not_modified, signals(&mut harness)), (Some("\"v1\""), 1, 0));
        // The next request asks with the ETag.
        let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
        let log = seen.clone();
        let asks = TestPeer::start(move |r| {
            log.lock().unwrap().push(r.clone());
            Reply::Status(304, String::new())
        })
        .await;
        poll.cfg.url = asks.url.clone();
        poll.fetch(&client(), &shared).await.expect("a poll");
        assert_eq!(TestPeer::header(&seen.lock().unwrap()[0], "if-none-match"), Some("\"v1\""));
    }

    #[tokio::test]
    async fn an_oversized_answer_is_refused_and_a_bad_body_keeps_no_etag() {
        let huge = peer(Some(answer("200 OK", &[("content-length", "400000000")], b"")));
        let (shared, mut poll, _harness) = poller(&huge, |_| {});
        assert_eq!(poll.fetch(&client(), &shared).await, Err(CallError::TooLarge { max: 1024 }));
        let bad = peer(Some(answer("200 OK", &[("etag", "\"v2\""), ("content-length", "1")], b"{")));
        poll.cfg.url = bad;
        assert!(matches!(poll.fetch(&client(), &shared).await, Err(CallError::Parse(_))));
        assert_eq!(poll.etag, None, "only an applied body may be skipped next time");
    }

    #[tokio::test]
    async fn failures_back_off_never_sooner_than_retry_after_and_reset_on_success() {
        let busy = peer(Some(answer("503 Service Unavailable", &[("retry-after", "7"), ("content-length", "0")], b"")));
        let (shared, mut poll, _harness) = poller(&busy, |_| {});
        let t0 = now_ms();
        poll.poll(&client(), &shared).await;
        assert_eq!((poll.failures, poll.errors), (1, 1));
        assert!((7_000..9_000).contains(&(poll.next_at - t0)), "Retry-After 7 s: {}", poll.next_at - t0);
        assert!(poll.last_error.as_deref().is_some_and(|e| e.starts_with("poll: HTTP 503")), "{:?}", poll.last_error);
        let silent = peer(Some(answer("500 Internal Server Error", &[("content-length", "0")], b"")));
        poll.cfg.url = silent;
        for _ in 0..3 {
            poll.poll(&client(), &shared).await;
        }
        // 2 s doubling: the fourth wait is drawn from the upper half of 16 s.
        let wait = poll.next_at - now_ms();
        assert!((7_000..=16_000).contains(&wait), "{wait}");
        let len = RINGING.len().to_string();
        poll.cfg.url = peer(Some(answer("200 OK", &[("content-length", &len)], RINGING)));
        poll.poll(&client(), &shared).await;
        assert_eq!((poll.failures, poll.backoff.attempts()), (0, 0));
        assert!((1_000..=2_100).contains(&(poll.next_at - now_ms())), "the interval again");
    }
}
