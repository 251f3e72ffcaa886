//! The O2G webhook (`mode = "webhook"`): O2G POSTs one event per request to
//! `/hooks/{name}/events/{key}`.
//!
//! O2G signs nothing, so each subscription gets a fresh random key
//! ([`crate::common::secret::random_hex128`]) in its `webHookUrl`, and only the keys of the
//! current subscriptions are accepted: an unknown key is a `404`, the answer of a receiver
//! without an active subscription. [`O2gHook`] runs on HTTP worker threads:
//! it parses the one event of the POST, hands it to the provider's task through the bounded
//! channel the stream readers use, and answers at once. A full channel never blocks O2G: it
//! sets a flag, and the task resyncs everyone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use super::parse;
use crate::common::hook;
use super::runtime::Input;
use presence_actors::feeds::FeedEntry;
use presence_actors::provider::{HookHandler, HookRequest, HookResponse};

/// Counters shared by the webhook handler and the task.
#[derive(Default)]
pub struct Counters {
    /// Events that did not parse.
    pub malformed: AtomicU64,
    /// Webhook POSTs for a key no current subscription has (answered 404).
    pub unknown_subscription: AtomicU64,
    /// Webhook events accepted.
    pub webhook_events: AtomicU64,
    /// Set when the task's queue was full: everyone is resynced.
    pub overflowed: AtomicBool,
}

/// The webhook: `POST /hooks/{name}/events/{key}`, one event per request.
pub struct O2gHook {
    /// Key → (subscription generation, subscription slot).
    keys: RwLock<HashMap<String, (u64, usize)>>,
    tx: mpsc::Sender<Input>,
    counters: Arc<Counters>,
    feed: Arc<FeedEntry>,
}

impl O2gHook {
    /// A handler handing events to `tx`; no key is accepted until [`O2gHook::set_keys`].
    pub fn new(tx: mpsc::Sender<Input>, counters: Arc<Counters>, feed: Arc<FeedEntry>) -> O2gHook {
        O2gHook { keys: RwLock::new(HashMap::new()), tx, counters, feed }
    }

    /// The keys of the current subscriptions (empty: none is accepted).
    pub fn set_keys(&self, keys: HashMap<String, (u64, usize)>) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }
}

impl HookHandler for O2gHook {
    fn handle(&self, req: HookRequest) -> HookResponse {
        let Some(key) = req.tail.strip_prefix("events/").filter(|k| !k.is_empty() && !k.contains('/')) else {
            return HookResponse::error(404, "not_found", "O2G events are POSTed to /events/{key}");
        };
        let Some((gen, sub)) = self.keys.read().unwrap_or_else(|p| p.into_inner()).get(key).copied() else {
            self.counters.unknown_subscription.fetch_add(1, Ordering::Relaxed);
            return HookResponse::error(404, "not_found", "no active subscription");
        };
        if let Err(r) = hook::post_only(&req, "events are POSTed") {
            return r;
        }
        let event = match parse::parse_event(&req.body) {
            Ok(e) => e,
            Err(e) => return hook::malformed(&self.counters.malformed, &self.feed, "webhook event", e),
        };
        self.counters.webhook_events.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(Input::Event { gen, sub, event: Box::new(event) }).is_err() {
            self.counters.overflowed.store(true, Ordering::Release);
        }
        HookResponse::empty(200)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_actors::feeds::Feeds;

    fn post(tail: &str, body: &str) -> HookRequest {
        HookRequest { method: "POST".into(), tail: tail.into(), query: String::new(), headers: Vec::new(), body: body.as_bytes().to_vec() }
    }

    #[test]
    fn only_current_keys_are_heard_and_events_go_to_their_subscription() {
        let (tx, mut rx) = mpsc::channel(1);
        let counters = Arc::new(Counters::default());
        let hook = O2gHook::new(tx, counters.clone(), Feeds::default().register("omnipcx", "o2g"));
        let event = r#"{"eventName":"OnUserStateModified","loginName":"2624","state":"BUSY"}"#;
        assert_eq!(hook.handle(post("events/k1", event)).status, 404, "no subscription yet");
        hook.set_keys(HashMap::from([("k1".to_string(), (3, 1))]));
        assert_eq!(hook.handle(post("events/k2", event)).status, 404);
        assert_eq!(hook.handle(post("events/k1/x", event)).status, 404);
        assert_eq!(hook.handle(HookRequest { method: "GET".into(), ..post("events/k1", "") }).status, 405);
        assert_eq!(hook.handle(post("events/k1", "{")).status, 400);
        assert_eq!(hook.handle(post("events/k1", event)).status, 200);
        match rx.try_recv() {
            Ok(Input::Event { gen: 3, sub: 1, event }) => assert_eq!(event.login_name(), Some("2624")),
            other => panic!("{other:?}"),
        }
        // A full queue never blocks O2G: the event is acknowledged and everyone resynced later.
        assert_eq!(hook.handle(post("events/k1", event)).status, 200);
        assert_eq!(hook.handle(post("events/k1", event)).status, 200);
        assert!(counters.overflowed.load(Ordering::Acquire));
        assert_eq!(counters.unknown_subscription.load(Ordering::Relaxed), 2);
        assert_eq!(counters.malformed.load(Ordering::Relaxed), 1);
        assert_eq!(counters.webhook_events.load(Ordering::Relaxed), 3);
    }
}
