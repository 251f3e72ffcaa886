//! Pure O2G wire handling: the login documents (discovery, authenticate, session), the
//! subscription request and answer, the events, and the line splitter of the chunked event
//! stream. No I/O, no actix types; every function takes bytes or values and returns data or a
//! [`ParseError`], and no input panics (see the mutation tests in `parse/tests.rs`). Bodies are
//! decoded through the providers' toolkit ([`crate::common::json`]): a document larger than
//! [`MAX_DOCUMENT`], an event larger than [`MAX_EVENT_BYTES`], is refused before it is parsed.
//!
//! - `session.rs`: discovery, authenticate, the session, subscriptions, snapshot URLs.
//! - `event.rs`: the events (one JSON object per stream line or webhook POST).
//! - `stream.rs`: the line splitter of the chunked event stream.
//!
//! Field names are the ones the ALE O2G SDKs (de)serialise (`o2g-node-sdk`'s internal JSON
//! types, the Java SDK's event classes, the C# SDK): `eventName`, `loginName`, `callRef`,
//! `legs[].state`, `routingState.forwardRoutes`… Where a name or value is not in those sources but
//! synthesized \[S\] or assumed \[A\] (`fixtures/o2g/README.md`), it is used in this module only, named in a constant or a
//! comment here:
//!
//! - \[A\] the `credential` of `authenticate` is also accepted as the `AlcUserId` cookie value
//!   the server sets (the name is documented; the cookie's attributes are not, and are ignored);
//! - \[A\] the session's `timeToLive` defaults to [`DEFAULT_TTL_SECS`] when absent or zero;
//! - \[A\] a webhook subscription answer's `mode` (`"WEBHOOK"`) is read but never required: only
//!   `status == "ACCEPTED"` decides, as in the SDKs;
//! - \[S\] the values of every fixture in `fixtures/o2g/` (no verbatim event text is public).
//!
//! Every event is a flat object with `eventName` at top level. Unknown event names parse as
//! [`Event::Other`]; unknown enum values (new call causes, media states) are kept as text so
//! newer servers do not break the parser. Both spellings the SDKs disagree on are read:
//! `removedLegs` (Java/C#) and `removedLeg` (Node), `removedParticipantIds` (Java/C#) and
//! `removedParticipants` (Node).

mod event;
mod session;
mod stream;
#[cfg(test)]
mod tests;

pub use event::*;
pub use session::*;
pub use stream::*;

use crate::common::json;
use presence_actors::model::activity::truncate;

/// Longest event line kept from the chunked stream (longer lines are dropped and counted).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Largest document (discovery, authenticate, session, subscription answer) accepted, in bytes:
/// each is a few kilobytes, so anything near this is not O2G's.
pub const MAX_DOCUMENT: usize = 1024 * 1024;
/// Session lifetime assumed when the server does not say (\[A\]).
pub const DEFAULT_TTL_SECS: u64 = 300;
/// The cookie that carries the session credential (\[D\]: O2G tutorial, python sample).
pub const COOKIE_NAME: &str = "AlcUserId";
/// The `text` of a heartbeat `OnChannelInformation` (\[D\]: C# SDK `ChunkEventing`).
pub const HEARTBEAT_TEXT: &str = "keepalive";
/// The API version asked for in discovery, authenticate and subscriptions.
pub const API_VERSION: &str = "1.0";
/// The event package of telephony events (calls, user and device state).
pub const PACKAGE_TELEPHONY: &str = "telephony";
/// The event package of routing events (forward, overflow, DND) — not `routing`.
pub const PACKAGE_ROUTING: &str = "routingManagement";
/// The event package of event summary counters (missed calls, voicemail).
pub const PACKAGE_EVENT_SUMMARY: &str = "eventSummary";
/// Longest text kept from a peer's identifiers (call references, logins, numbers).
pub const MAX_ID_LEN: usize = 256;

/// Why a document or event could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, not the expected shape, or too large (the toolkit's decoding errors).
    #[error(transparent)]
    Json(#[from] json::ParseError),
    /// A required field is missing or empty.
    #[error("missing {0}")]
    Missing(&'static str),
    /// The server refused (a subscription whose `status` is not `ACCEPTED`).
    #[error("refused: {0}")]
    Refused(String),
    /// A stream line longer than [`MAX_EVENT_BYTES`].
    #[error("event line longer than {MAX_EVENT_BYTES} bytes")]
    TooLong,
}

/// Decodes a document (at most [`MAX_DOCUMENT`] bytes).
fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    Ok(json::from_json_max(body, MAX_DOCUMENT)?)
}

/// An identifier from the peer, trimmed and bounded to [`MAX_ID_LEN`].
fn bounded(s: &str) -> String {
    truncate(s.trim(), MAX_ID_LEN).to_string()
}
