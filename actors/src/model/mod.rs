//! The canonical presence model and merge policy — plain Rust, no actix types.
//!
//! Layout:
//! - [`availability`]: the ordered availability scale (SfB numbers).
//! - [`activity`]: what a person is doing, with default availability bounds.
//! - [`signal`]: one source's statement about a person; sources, versions, freshness.
//! - [`absence`]: manual absences and the configurable reason list.
//! - [`policy`]: the merge policy as data (config file section `[policy]`).
//! - [`merge`]: per-user state (slots, absences) and the merge into a [`MergedView`].
//!
//! Everything here is unit-tested table-driven and can be fuzzed without a runtime.

pub mod absence;
pub mod activity;
pub mod availability;
pub mod merge;
pub mod policy;
pub mod short;
pub mod signal;

pub use absence::{Absence, AbsenceReason};
pub use activity::Activity;
pub use availability::Availability;
pub use merge::{MergedView, Slot, SlotFreshness, SourceSet, UserPresence};
pub use policy::{DetailPolicy, Policy};
pub use short::ShortStr;
pub use signal::{Freshness, FeedId, PrivateDetail, Signal, Source, Version};

/// Milliseconds since the Unix epoch (UTC). The model stores times as this compact integer.
pub type UnixMs = i64;

/// The current wall-clock time.
pub fn now_ms() -> UnixMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Formats a time as RFC 3339 UTC ("2026-11-24T13:00:00Z").
pub fn rfc3339(ms: UnixMs) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

/// Parses an RFC 3339 time into [`UnixMs`].
pub fn parse_rfc3339(s: &str) -> Option<UnixMs> {
    s.trim().parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}
