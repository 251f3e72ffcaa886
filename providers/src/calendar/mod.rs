//! Calendar free/busy sources — pure parsers and request builders, no I/O.
//!
//! Three protocols answer the same question ("what is on this person's calendar now and
//! next?") and all parse into the common [`model::MailboxSchedule`]:
//! - [`ews`]: Exchange Web Services `GetUserAvailability` (SOAP, on-premises Exchange; in
//!   Exchange Online it is being retired — [`ews::classify_error`] recognises the block);
//! - [`schedule`]: Microsoft Graph `calendar/getSchedule` (JSON, the EWS successor);
//! - [`google`]: Google Calendar `freeBusy` (JSON, busy intervals only).
//!
//! [`model::to_signals`] turns one mailbox's schedule into the one calendar [`Signal`] the hub
//! keeps for that person, and [`model::next_change`] tells the runtime when to re-evaluate so
//! the next meeting starts on time. Everything here is bounded and never panics on input.
//!
//! [`runtime`] is the provider (`type = "calendar"`, `backend = "graph" | "ews" | "google"`).
//!
//! [`Signal`]: presence_actors::model::Signal

pub mod ews;
pub mod google;
pub mod model;
pub mod runtime;
pub mod schedule;

pub use model::{
    next_change, to_signals, BusyStatus, CalendarError, CalendarItem, KeywordRule, MailboxSchedule, SignalPolicy,
};
