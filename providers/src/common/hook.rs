//! What every provider's webhook (`hook.rs`) answers the same way: a method other than POST,
//! and a body that cannot be read — counted, recorded on the feed's health and answered with
//! the API's JSON error shape, so an operator sees why the peer's calls are refused.

use std::sync::atomic::{AtomicU64, Ordering};

use presence_actors::feeds::FeedEntry;
use presence_actors::provider::{HookRequest, HookResponse};

/// `405` unless the request is a POST; `what` says what is POSTed ("events are POSTed").
pub fn post_only(req: &HookRequest, what: &str) -> Result<(), HookResponse> {
    match req.method.as_str() {
        "POST" => Ok(()),
        _ => Err(HookResponse::error(405, "method_not_allowed", what)),
    }
}

/// A body that could not be read: counted in `counter`, recorded on the feed as "malformed
/// {what}: {error}", answered `400` with the error.
pub fn malformed(counter: &AtomicU64, feed: &FeedEntry, what: &str, error: impl std::fmt::Display) -> HookResponse {
    counter.fetch_add(1, Ordering::Relaxed);
    feed.record_error(&format!("malformed {what}: {error}"));
    HookResponse::error(400, "bad_request", &error.to_string())
}
