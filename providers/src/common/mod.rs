//! The providers' toolkit: what every source needs to talk to its peer, written once.
//!
//! - [`http`]: calls with bounded reads and a deadline per call, one [`http::CallError`] for
//!   every failure, `Retry-After`, the peer's error text.
//! - [`oauth`]: token requests (client credentials, refresh token with rotation kept in the
//!   store, password grant), token caching.
//! - [`device_code`]: the device authorization grant (RFC 8628) that `presence-hub login graph`
//!   signs service accounts in with.
//! - [`backoff`]: exponential back-off with jitter.
//! - [`defaults`]: defaults for config fields.
//! - [`config`]: refusing unknown keys in configs made of shared pieces.
//! - [`microsoft`]: a Microsoft identity platform app — credentials, authority, token and Graph URLs.
//! - [`login`]: a user name and password (SIP digest, EWS Basic, an operator's poll), checked once.
//! - [`json`]: bounded JSON decoding and the parse error the pure parsers share.
//! - [`hook`]: what every webhook answers alike (POST only, a malformed body).
//! - [`follow`]: following the live directory — what changed since the per-person values a
//!   provider holds (subscriptions, polled lists), for its reconcile step.
//! - [`form`]: form encoding (`application/x-www-form-urlencoded`).
//! - [`secret`]: random secrets from the operating system.
//! - [`slots`]: the instances of a provider's two signal slots per person.
//! - [`task`]: a provider's task from its runtime's `run`.
//!
//! A provider uses these and keeps only what is its own: its wire formats (`parse.rs`), its
//! mapping to signals (`map.rs`) and its state machine (`runtime.rs`).

pub mod backoff;
pub mod config;
pub mod defaults;
pub mod device_code;
pub mod follow;
pub mod form;
pub mod hook;
pub mod http;
pub mod json;
pub mod login;
pub mod microsoft;
pub mod oauth;
pub mod secret;
pub mod slots;
#[cfg(test)]
pub(crate) mod test_peer;

/// A provider's task from its runtime's `run` future, which returns only once shutdown has come
/// and the graceful stop is done: the supervisor then gets `Ok` (see [`crate::ProviderTask`]).
pub fn task(run: impl std::future::Future<Output = ()> + 'static) -> crate::ProviderTask {
    Box::pin(async move {
        run.await;
        Ok(())
    })
}
