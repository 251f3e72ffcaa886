//! The Graph webhook: `/hooks/{name}/notify` and `/hooks/{name}/lifecycle`.
//!
//! [`GraphHook`] runs on HTTP worker threads: it answers the validation handshake, checks
//! `clientState` on every item (in constant time), decrypts resource data when the provider
//! asked for it, hands the valid items to the provider's task through a bounded channel and
//! answers `202` at once — Graph wants an answer within 3 s, and the presence reads happen
//! afterwards, in batches. A full channel never blocks Graph: it sets a flag, and the task
//! re-reads everyone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::warn;

use super::crypto::NotificationKey;
use crate::common::hook;
use super::parse::{self, LifecycleEvent};
use presence_actors::feeds::FeedEntry;
use presence_actors::provider::{HookHandler, HookRequest, HookResponse};

/// Work the webhook hands to the task.
#[derive(Debug)]
pub enum HookEvent {
    /// These people's presence changed, per the named subscription.
    Changed {
        /// Subscription id.
        subscription: String,
        /// Entra ids.
        users: Vec<String>,
    },
    /// Presence that came inside a notification (decrypted resource data).
    Presence {
        /// Subscription id.
        subscription: String,
        /// The presence.
        presence: Box<parse::GraphPresence>,
    },
    /// A lifecycle event for a subscription.
    Lifecycle {
        /// Subscription id.
        subscription: String,
        /// What happened.
        event: LifecycleEvent,
    },
}

/// Counters shared by the webhook and the task.
#[derive(Default)]
pub struct HookStats {
    /// Notification items accepted.
    pub notifications: AtomicU64,
    /// Items refused for a wrong or missing `clientState`.
    pub rejected_client_state: AtomicU64,
    /// Bodies that did not parse.
    pub malformed: AtomicU64,
    /// Validation handshakes answered.
    pub validations: AtomicU64,
    /// Notifications whose resource data could not be decrypted or verified (fetched instead).
    pub decryption_failures: AtomicU64,
    /// Set when the channel was full: the task resyncs everyone by polling.
    pub overflowed: AtomicBool,
}

/// The webhook: `/hooks/{name}/notify` and `/hooks/{name}/lifecycle`.
pub struct GraphHook {
    /// The secret every notification must carry.
    pub client_state: String,
    /// Decrypts resource data (`include_resource_data`).
    pub key: Option<Arc<NotificationKey>>,
    /// To the provider's task.
    pub tx: mpsc::Sender<HookEvent>,
    /// Counters.
    pub stats: Arc<HookStats>,
    /// The feed, for errors.
    pub feed: Arc<FeedEntry>,
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl HookHandler for GraphHook {
    fn handle(&self, req: HookRequest) -> HookResponse {
        let lifecycle = match req.tail.as_str() {
            "notify" => false,
            "lifecycle" => true,
            _ => return HookResponse::error(404, "not_found", "Graph webhooks are /notify and /lifecycle"),
        };
        // Validation handshake: echo the decoded token as text/plain (within 10 s).
        if let Some(token) = parse::validation_token(&req.query) {
            self.stats.validations.fetch_add(1, Ordering::Relaxed);
            return HookResponse::text(200, token);
        }
        if let Err(r) = hook::post_only(&req, "notifications are POSTed") {
            return r;
        }
        let batch = match parse::parse_notifications(&req.body) {
            Ok(b) => b,
            Err(e) => return hook::malformed(&self.stats.malformed, &self.feed, "notification", e),
        };
        if !batch.invalid.is_empty() {
            self.stats.malformed.fetch_add(batch.invalid.len() as u64, Ordering::Relaxed);
            let (i, e) = &batch.invalid[0];
            self.feed.record_error(&format!("{} malformed notification item(s), e.g. #{i}: {e}", batch.invalid.len()));
        }
        let (mut accepted, mut rejected) = (0usize, 0usize);
        let mut changed: HashMap<String, Vec<String>> = HashMap::new();
        for n in batch.value {
            if !n.client_state.as_deref().is_some_and(|c| same_secret(c, &self.client_state)) {
                rejected += 1;
                continue;
            }
            accepted += 1;
            if lifecycle || n.lifecycle_event.is_some() {
                let event = n.lifecycle_event.unwrap_or(LifecycleEvent::Other("unspecified".into()));
                if self.tx.try_send(HookEvent::Lifecycle { subscription: n.subscription_id, event }).is_err() {
                    self.stats.overflowed.store(true, Ordering::Release);
                }
            } else if let (Some(c), Some(key)) = (&n.encrypted, &self.key) {
                match key.decrypt(c).map_err(|e| e.to_string()).and_then(|d| parse::parse_presence(&d).map_err(|e| e.to_string())) {
                    Ok(p) => {
                        let ev = HookEvent::Presence { subscription: n.subscription_id, presence: Box::new(p) };
                        if self.tx.try_send(ev).is_err() {
                            self.stats.overflowed.store(true, Ordering::Release);
                        }
                    }
                    Err(e) => {
                        // Tampered or undecryptable: trust nothing in it, fetch the person instead.
                        self.stats.decryption_failures.fetch_add(1, Ordering::Relaxed);
                        self.feed.record_error(&format!("encrypted notification refused: {e}"));
                        if let Some(u) = n.user_id {
                            changed.entry(n.subscription_id).or_default().push(u);
                        }
                    }
                }
            } else if let Some(u) = n.user_id {
                changed.entry(n.subscription_id).or_default().push(u);
            }
        }
        self.stats.notifications.fetch_add(accepted as u64, Ordering::Relaxed);
        if rejected > 0 {
            self.stats.rejected_client_state.fetch_add(rejected as u64, Ordering::Relaxed);
            self.feed.record_error(&format!("{rejected} notification(s) with a wrong clientState refused"));
            warn!(provider = %self.feed.name, rejected, "Refused Graph notifications with a wrong clientState.");
        }
        for (subscription, users) in changed {
            if self.tx.try_send(HookEvent::Changed { subscription, users }).is_err() {
                self.stats.overflowed.store(true, Ordering::Release);
            }
        }
        if accepted == 0 && rejected > 0 {
            return HookResponse::error(403, "forbidden", "clientState does not match");
        }
        HookResponse::empty(202)
    }
}
