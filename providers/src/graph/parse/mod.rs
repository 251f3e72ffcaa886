//! Microsoft Graph presence: parsers and request builders — pure, bounded, never panic.
//!
//! Everything here turns bytes from Graph into plain values, or builds request bodies; there
//! is no I/O, no clock and no actix. Token requests, `Retry-After` and error bodies are the
//! providers' toolkit's ([`crate::common`]).
//!
//! - `presence`: one `presence` object (`GET /users/{id}/presence`, or the decrypted `data`
//!   of a change notification) or the `{"value":[…]}` answer of
//!   `POST /communications/getPresencesByUserId`. One bad item does not lose the others.
//!   [`GraphPresence::to_signal`] maps it onto the model.
//! - `notification`: change and lifecycle notifications ([`parse_notifications`]) and the
//!   validation handshake ([`validation_token`]).
//! - `subscription`: the read request ([`presences_request_body`]) and subscriptions
//!   ([`parse_subscription`], [`subscription_request_body`], [`renewal_body`],
//!   [`presence_filter_resource`]).
//!
//! Mapping decisions:
//! - Availability strings are matched case-insensitively against Graph's nine values, so the
//!   camelCase spellings of the OpenAPI schema (`doNotDisturb`, `beRightBack`…) parse too.
//!   Anything else (e.g. `focusing`) becomes [`Availability::Unknown`] and is recorded in
//!   [`GraphPresence::unknown`] so the runtime can log it once.
//! - Activities go through [`Activity::parse_source`]; strings that only restate availability
//!   (`Available`, `Busy`, `PresenceUnknown`…) give no activity. `AvailableInactive` (the
//!   faded state of a `setPresence` session, §2.4) maps to [`Activity::Inactive`]. A string the
//!   model does not know (it would become `Activity::Other`) gives no activity and is recorded in
//!   `unknown` (the availability's raw value wins when both are unknown).
//! - `PresenceUnknown` (or an unrecognised availability) means Graph has no opinion: the signal
//!   carries neither availability nor activity, so the merge ignores it; the OOO flag and the
//!   note, which are independent facts, are still carried.
//! - Out of office: `ooo` is true when `outOfOfficeSettings.isOutOfOffice` is true **or** the
//!   activity is `OutOfOffice` — Teams shows "Available + OOF" as `Available/OutOfOffice`, and
//!   the settings object is not always present (notifications carry only the two strings).
//! - The note is the status message (HTML tags dropped, common entities decoded, whitespace
//!   collapsed, bounded like every note); when there is none, or it expired, and the person is
//!   out of office, the out-of-office message is used instead.

mod notification;
mod presence;
mod subscription;
#[cfg(test)]
mod tests;

pub use notification::*;
pub use presence::*;
pub use subscription::*;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::common::json::ParseError;
use crate::common::json::{json_error, lenient, Capped};
use presence_actors::model::activity::truncate;
use presence_actors::model::signal::{bounded_note, MAX_NOTE_LEN};
use presence_actors::model::{parse_rfc3339, Activity, Availability, Signal, Source, UnixMs, Version};


/// Most user ids in one `getPresencesByUserId` request.
pub const MAX_IDS_PER_REQUEST: usize = 650;
/// Most user ids in one presence subscription (`$filter=id in (…)`).
pub const MAX_IDS_PER_SUBSCRIPTION: usize = 650;
/// Longest `clientState` we send (the subscription resource allows 128 characters).
pub const MAX_CLIENT_STATE: usize = 128;
/// Largest body any parser here accepts, in bytes.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Longest id (user object id, subscription id) accepted, in bytes.
pub const MAX_ID_LEN: usize = 100;
/// Most items in one notification batch or one presences response.
pub const MAX_ITEMS: usize = 1000;
/// Longest decoded validation token accepted, in bytes.
pub const MAX_VALIDATION_TOKEN: usize = 1024;
/// The source instance of every Teams signal: Graph delivers one aggregate per person.
pub const INSTANCE: &str = "teams";

/// Longest `clientState` accepted in a received notification (the changeNotification resource
/// allows 255; ours are never longer than [`MAX_CLIENT_STATE`]).
pub(crate) const MAX_RECEIVED_CLIENT_STATE: usize = 255;
/// Longest raw unknown value or work location kept.
pub(crate) const MAX_SHORT: usize = 64;
/// Longest sequence number kept (longer ones are not Graph's and are dropped).
pub(crate) const MAX_SEQUENCE: usize = 256;
/// Longest HTML input converted to text (the note is cut to 500 bytes anyway).
pub(crate) const MAX_HTML_INPUT: usize = 64 * 1024;
/// 9999-01-01T00:00:00Z: expiries from here on mean "never".
pub(crate) const FAR_FUTURE_MS: UnixMs = 253_370_764_800_000;

/// Decodes a Graph body (at most [`MAX_BODY`] bytes).
fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    crate::common::json::from_json_max(body, MAX_BODY)
}
