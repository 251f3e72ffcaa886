//! The common calendar model every free/busy protocol parses into, and its mapping to the one
//! calendar [`Signal`] per person.
//!
//! ## One slot, one signal
//! The hub keeps one slot per `(source, instance)`, so a person's calendar is one signal at a
//! time, not one per item. [`to_signals`] describes:
//! - the **current** item (`start ≤ now < end`); when several overlap the highest precedence
//!   wins: OOF > Busy > WorkingElsewhere > Tentative (ties: the one that ends last);
//! - else the **next** item, with `valid_from` in the future, so the hub switches on time even
//!   if the next poll is late;
//! - else a retraction (availability and activity `None`, no validity): "the calendar has no
//!   opinion", which clears the slot.
//!
//! `valid_from`/`valid_until` are the item's bounds. When later items carry exactly the same
//! state (same mapping and same details), `valid_until` runs through them, so back-to-back
//! meetings do not flicker to "free" at the boundary. The hub drops the slot at `valid_until`;
//! it does not know what comes next. **The provider must re-evaluate at [`next_change`]** (the
//! next start or end of any item after `now`) and emit the new signal then — that is how the
//! next meeting, or a higher-precedence item starting inside the current one, takes over.
//!
//! ## Mapping (merge rule 5, docs/ARCHITECTURE.md)
//! | status | availability | activity | ooo |
//! |---|---|---|---|
//! | Busy | Busy | InAMeeting | – |
//! | OOF | None | OutOfOffice | true |
//! | Tentative | None | Tentative (annotation, never busy) | – |
//! | WorkingElsewhere | None | WorkingElsewhere (annotation) | – |
//! | Free, NoData | item skipped | | |
//!
//! [`KeywordRule`]s (case-insensitive subject prefix, e.g. "Lunch" → Away/Lunch) replace the
//! availability and activity of a mapped item; `ooo` stays as the status says. Free items stay
//! free even when their subject matches: free time is free.
//!
//! ## Privacy
//! A private item never reveals anything beyond its status and times: its detail is
//! `PrivateDetail { subject: None, location: None, private: true }`. The parsers already drop
//! subjects and locations of private items, and [`to_signals`] ignores them even if present.
//! **Keyword rules never look at a private item's subject**: the mapped activity ("Doctor" →
//! an absence reason) would itself disclose what the owner chose to hide. Other items carry
//! subject and location only when [`SignalPolicy::keep_details`] is set (the hub's detail
//! policy then decides who sees them).

use std::cmp::{Ordering, Reverse};
use std::fmt;

use serde::Deserialize;

use presence_actors::model::activity::truncate;
use presence_actors::model::{Activity, Availability, PrivateDetail, Signal, Source, UnixMs};

use super::ews::EwsError;

/// Largest response body any parser accepts, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Most items kept per mailbox; further items are ignored (Exchange's own default limit).
pub const MAX_ITEMS_PER_MAILBOX: usize = 10_000;
/// Longest subject or location kept, in bytes.
pub const MAX_TEXT_LEN: usize = 255;
/// Longest mailbox / calendar address accepted in a request, in bytes.
pub const MAX_ADDRESS_LEN: usize = 320;
/// Longest per-mailbox error text kept, in bytes.
pub const MAX_ERROR_LEN: usize = 500;
/// Shortest merged free/busy interval (EWS and Graph), in minutes.
pub const MIN_INTERVAL_MINUTES: u32 = 5;
/// Longest merged free/busy interval (EWS and Graph), in minutes.
pub const MAX_INTERVAL_MINUTES: u32 = 1440;
/// Longest merged free/busy digit string kept.
pub const MAX_MERGED_LEN: usize = 20_000;
/// Instance name of the calendar signal when no provider name is given ([`SignalPolicy::instance`]).
pub const INSTANCE: &str = "calendar";
/// Longest keyword prefix accepted, in bytes.
pub const MAX_KEYWORD_LEN: usize = 64;

pub(crate) const DAY_MS: i64 = 86_400_000;

/// Free/busy status of one calendar item (EWS `LegacyFreeBusyType`, Graph `freeBusyStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BusyStatus {
    /// Free time.
    Free,
    /// Tentatively accepted or unanswered: annotates, never makes anyone busy.
    Tentative,
    /// Busy: a meeting or appointment.
    Busy,
    /// Out of office.
    Oof,
    /// Working elsewhere (Exchange 2013+, Graph): annotates only.
    WorkingElsewhere,
    /// No data (EWS `NoData`, Graph `unknown`).
    NoData,
}

impl BusyStatus {
    /// Parses an EWS or Graph status, case-insensitively (`Busy`, `busy`, `OOF`, `oof`,
    /// `WorkingElsewhere`, `workingElsewhere`, `NoData`, `unknown`…). `None` if unknown.
    pub fn parse(s: &str) -> Option<BusyStatus> {
        let mut key = String::with_capacity(24);
        for c in s.trim().chars().take(32).filter(|c| !matches!(c, '-' | '_' | ' ')) {
            key.push(c.to_ascii_lowercase());
        }
        Some(match key.as_str() {
            "free" => BusyStatus::Free,
            "tentative" => BusyStatus::Tentative,
            "busy" => BusyStatus::Busy,
            "oof" | "outofoffice" => BusyStatus::Oof,
            "workingelsewhere" => BusyStatus::WorkingElsewhere,
            "nodata" | "unknown" => BusyStatus::NoData,
            _ => return None,
        })
    }

    /// The canonical (EWS) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            BusyStatus::Free => "Free",
            BusyStatus::Tentative => "Tentative",
            BusyStatus::Busy => "Busy",
            BusyStatus::Oof => "OOF",
            BusyStatus::WorkingElsewhere => "WorkingElsewhere",
            BusyStatus::NoData => "NoData",
        }
    }

    /// Precedence among overlapping items: OOF 4 > Busy 3 > WorkingElsewhere 2 > Tentative 1;
    /// Free and NoData 0 (never shown).
    pub const fn precedence(self) -> u8 {
        match self {
            BusyStatus::Oof => 4,
            BusyStatus::Busy => 3,
            BusyStatus::WorkingElsewhere => 2,
            BusyStatus::Tentative => 1,
            BusyStatus::Free | BusyStatus::NoData => 0,
        }
    }
}

impl fmt::Display for BusyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One calendar item, times in UTC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalendarItem {
    /// Start (inclusive).
    pub start: UnixMs,
    /// End (exclusive); parsers only produce items with `end > start`.
    pub end: UnixMs,
    /// Free/busy status.
    pub status: BusyStatus,
    /// Subject, bounded to [`MAX_TEXT_LEN`]; always `None` for private items.
    pub subject: Option<String>,
    /// Location, bounded to [`MAX_TEXT_LEN`]; always `None` for private items.
    pub location: Option<String>,
    /// Marked private at the source.
    pub private: bool,
    /// EWS `IsMeeting` (a meeting with attendees rather than an appointment), when known.
    pub is_meeting: Option<bool>,
}

impl CalendarItem {
    /// True when `now` lies inside the item.
    pub fn is_current(&self, now: UnixMs) -> bool {
        self.start <= now && now < self.end
    }

    /// True for items that can produce a signal (not Free, not NoData, non-empty).
    pub fn is_relevant(&self) -> bool {
        self.status.precedence() > 0 && self.end > self.start
    }
}

/// One mailbox's (or calendar's) answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailboxSchedule {
    /// The mailbox address or calendar id, as requested (EWS, Graph) or as answered (Google).
    pub mailbox: String,
    /// Items in the order the server gave them.
    pub items: Vec<CalendarItem>,
    /// Merged free/busy digits as given (EWS `MergedFreeBusy`, Graph `availabilityView`).
    pub merged: Option<String>,
    /// The per-mailbox error ("code: message"), when the server could not answer for it.
    pub error: Option<String>,
}

impl MailboxSchedule {
    /// A schedule that carries only an error.
    pub fn failed(mailbox: &str, error: &str) -> MailboxSchedule {
        MailboxSchedule { mailbox: mailbox.to_string(), error: Some(bounded_error(error)), ..Default::default() }
    }
}

/// Subject-prefix rule: an item whose subject starts with `prefix` (case-insensitive) shows
/// `availability`/`activity` instead of its status's default mapping.
///
/// Config shape: `{ prefix = "Lunch", availability = "Away", activity = "Lunch" }`;
/// `availability` may be left out (the item then only annotates); `activity` is any name
/// [`Activity::parse_source`] understands that is not a bare availability word.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawKeywordRule")]
pub struct KeywordRule {
    /// Subject prefix, matched case-insensitively after leading whitespace.
    pub prefix: String,
    /// Availability shown instead (`None`: annotation only).
    pub availability: Option<Availability>,
    /// Activity shown instead.
    pub activity: Activity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeywordRule {
    prefix: String,
    #[serde(default)]
    availability: Option<Availability>,
    activity: String,
}

impl TryFrom<RawKeywordRule> for KeywordRule {
    type Error = String;

    fn try_from(r: RawKeywordRule) -> Result<Self, Self::Error> {
        let prefix = r.prefix.trim();
        if prefix.is_empty() || prefix.len() > MAX_KEYWORD_LEN {
            return Err(format!("keyword prefix must be 1-{MAX_KEYWORD_LEN} bytes"));
        }
        let activity = Activity::parse_source(&r.activity).ok_or_else(|| {
            format!(
                "keyword {prefix:?}: activity {:?} is empty or only names an availability",
                truncate(r.activity.trim(), 64)
            )
        })?;
        Ok(KeywordRule { prefix: prefix.to_string(), availability: r.availability, activity })
    }
}

impl KeywordRule {
    /// True when `subject` starts with the prefix, ignoring case and leading whitespace.
    pub fn matches(&self, subject: &str) -> bool {
        let mut s = subject.trim_start().chars().flat_map(char::to_lowercase);
        self.prefix.chars().flat_map(char::to_lowercase).all(|p| s.next() == Some(p))
    }
}

/// How schedules become signals.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalPolicy {
    /// Keep subjects and locations in the signal's detail (never for private items).
    pub keep_details: bool,
    /// Subject-prefix rules, first match wins.
    pub keywords: Vec<KeywordRule>,
    /// The slot the signals fill: the provider's name, so two calendar providers (EWS for
    /// on-premises mailboxes and Graph for cloud ones, the usual hybrid Exchange set-up) keep
    /// a slot each instead of erasing each other's meetings. [`INSTANCE`] by default.
    #[serde(skip)]
    pub instance: String,
}

impl Default for SignalPolicy {
    fn default() -> Self {
        SignalPolicy { keep_details: false, keywords: Vec::new(), instance: INSTANCE.to_string() }
    }
}

/// What one item shows.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mapped {
    availability: Option<Availability>,
    activity: Activity,
    ooo: bool,
}

fn map_item(item: &CalendarItem, policy: &SignalPolicy) -> Option<Mapped> {
    if item.end <= item.start {
        return None;
    }
    let (availability, activity, ooo) = match item.status {
        BusyStatus::Busy => (Some(Availability::Busy), Activity::InAMeeting, false),
        BusyStatus::Oof => (None, Activity::OutOfOffice, true),
        BusyStatus::Tentative => (None, Activity::Tentative, false),
        BusyStatus::WorkingElsewhere => (None, Activity::WorkingElsewhere, false),
        BusyStatus::Free | BusyStatus::NoData => return None,
    };
    let rule = match (&item.subject, item.private) {
        (Some(subject), false) => policy.keywords.iter().find(|r| r.matches(subject)),
        _ => None,
    };
    Some(match rule {
        Some(r) => Mapped { availability: r.availability, activity: r.activity.clone(), ooo },
        None => Mapped { availability, activity, ooo },
    })
}

fn detail_for(item: &CalendarItem, policy: &SignalPolicy) -> Option<Box<PrivateDetail>> {
    if item.private {
        return Some(Box::new(PrivateDetail { subject: None, location: None, private: true }));
    }
    if !policy.keep_details {
        return None;
    }
    let keep = |s: &Option<String>| -> Option<Box<str>> {
        s.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(|t| truncate(t, MAX_TEXT_LEN).into())
    };
    let (subject, location) = (keep(&item.subject), keep(&item.location));
    (subject.is_some() || location.is_some()).then(|| Box::new(PrivateDetail { subject, location, private: false }))
}

/// Order among current items: higher precedence, then later end, then earlier start.
fn current_order(a: &CalendarItem, b: &CalendarItem) -> Ordering {
    (a.status.precedence(), a.end, Reverse(a.start)).cmp(&(b.status.precedence(), b.end, Reverse(b.start)))
}

/// The calendar signal for one mailbox at `now` (see the module docs): a one-element vector
/// describing the current item, else the next one, else a retraction ("no opinion"). Empty
/// when the mailbox answered with an error — the runtime decides what a failed poll means.
pub fn to_signals(schedule: &MailboxSchedule, now: UnixMs, policy: &SignalPolicy) -> Vec<Signal> {
    if schedule.error.is_some() {
        return Vec::new();
    }
    let shown = || schedule.items.iter().filter(|i| i.is_relevant());
    let chosen = shown().filter(|i| i.is_current(now)).max_by(|a, b| current_order(a, b)).or_else(|| {
        shown().filter(|i| i.start > now).min_by_key(|i| (i.start, Reverse(i.status.precedence()), Reverse(i.end)))
    });
    let Some(item) = chosen else {
        return vec![Signal::new(Source::Calendar, &policy.instance, None, now)];
    };
    let Some(mapped) = map_item(item, policy) else {
        // Unreachable for relevant items; "no opinion" is the safe answer.
        return vec![Signal::new(Source::Calendar, &policy.instance, None, now)];
    };
    let detail = detail_for(item, policy);

    // Run `valid_until` through later items that show exactly the same thing.
    let mut same: Vec<(UnixMs, UnixMs)> = shown()
        .filter(|i| {
            i.end > item.end && map_item(i, policy).as_ref() == Some(&mapped) && detail_for(i, policy) == detail
        })
        .map(|i| (i.start, i.end))
        .collect();
    same.sort_unstable();
    let mut until = item.end;
    for (s, e) in same {
        if s > until {
            break;
        }
        until = until.max(e);
    }

    let mut sig =
        Signal::new(Source::Calendar, &policy.instance, mapped.availability, now).valid(Some(item.start), Some(until));
    sig.activity = Some(mapped.activity);
    sig.ooo = mapped.ooo;
    sig.detail = detail;
    vec![sig]
}

/// The next time after `now` at which an item that can show (not Free/NoData) starts or
/// ends: the runtime re-evaluates [`to_signals`] then. `None` when nothing changes any more.
pub fn next_change(schedule: &MailboxSchedule, now: UnixMs) -> Option<UnixMs> {
    schedule.items.iter().filter(|i| i.is_relevant()).flat_map(|i| [i.start, i.end]).filter(|t| *t > now).min()
}

/// Why a request could not be built or a response not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalendarError {
    /// The request names no mailbox.
    #[error("no mailboxes to ask for")]
    NoMailboxes,
    /// The request names more mailboxes than the protocol allows.
    #[error("{got} mailboxes in one request, at most {max} allowed")]
    TooManyMailboxes {
        /// The protocol's limit.
        max: usize,
        /// How many were given.
        got: usize,
    },
    /// A mailbox address is empty, too long or contains control characters.
    #[error("invalid mailbox address {0:?}")]
    InvalidAddress(String),
    /// The window's end is not after its start.
    #[error("empty time window: the end must be after the start")]
    EmptyWindow,
    /// The window is longer than the protocol allows.
    #[error("time window longer than {max_days} days")]
    WindowTooLong {
        /// The protocol's limit in days.
        max_days: i64,
    },
    /// A time cannot be represented.
    #[error("time {0} ms since the epoch is out of range")]
    TimeOutOfRange(i64),
    /// The merged free/busy interval is outside 5–1440 minutes.
    #[error("interval of {0} minutes is outside {MIN_INTERVAL_MINUTES}-{MAX_INTERVAL_MINUTES}")]
    BadInterval(u32),
    /// The response body is larger than [`MAX_BODY_BYTES`].
    #[error("response larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The body is not well-formed XML (or nests too deep).
    #[error("malformed XML: {0}")]
    Xml(String),
    /// The body is not the JSON expected.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// Well-formed but not the expected response.
    #[error("unexpected response: {0}")]
    Unexpected(String),
    /// EWS answered for a different number of mailboxes than asked for.
    #[error("{got} answers for {expected} mailboxes")]
    CountMismatch {
        /// Mailboxes asked for.
        expected: usize,
        /// Answers received.
        got: usize,
    },
    /// The EWS body is a SOAP fault (throttling, retirement, …).
    #[error("EWS: {0}")]
    Ews(#[from] EwsError),
    /// Graph or Google answered with a top-level error object.
    #[error("service error {code}: {message}")]
    Service {
        /// The error code (`ErrorMailboxDataArrayTooBig`, `INVALID_ARGUMENT`, `400`…).
        code: String,
        /// The message.
        message: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the protocol modules.

/// Checks a request's addresses and window.
pub(crate) fn check_request(
    addresses: &[&str],
    max: usize,
    start: UnixMs,
    end: UnixMs,
    max_days: Option<i64>,
) -> Result<(), CalendarError> {
    if addresses.is_empty() {
        return Err(CalendarError::NoMailboxes);
    }
    if addresses.len() > max {
        return Err(CalendarError::TooManyMailboxes { max, got: addresses.len() });
    }
    if let Some(bad) = addresses.iter().find(|a| !valid_address(a)) {
        return Err(CalendarError::InvalidAddress(truncate(bad, 64).to_string()));
    }
    for t in [start, end] {
        if jiff::Timestamp::from_millisecond(t).is_err() {
            return Err(CalendarError::TimeOutOfRange(t));
        }
    }
    if end <= start {
        return Err(CalendarError::EmptyWindow);
    }
    if let Some(days) = max_days {
        if end - start > days * DAY_MS {
            return Err(CalendarError::WindowTooLong { max_days: days });
        }
    }
    Ok(())
}

/// Checks a merged free/busy interval.
pub(crate) fn check_interval(minutes: u32) -> Result<(), CalendarError> {
    if (MIN_INTERVAL_MINUTES..=MAX_INTERVAL_MINUTES).contains(&minutes) {
        Ok(())
    } else {
        Err(CalendarError::BadInterval(minutes))
    }
}

/// Non-empty, bounded, and only characters XML and JSON carry verbatim.
fn valid_address(a: &str) -> bool {
    let t = a.trim();
    !t.is_empty()
        && t.len() == a.len()
        && a.len() <= MAX_ADDRESS_LEN
        && !a.chars().any(|c| c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}'))
}

/// Formats a time as a naive UTC date-time (`2024-05-06T09:00:00`), seconds precision.
pub(crate) fn naive_utc(ms: UnixMs) -> Result<String, CalendarError> {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S").to_string())
        .map_err(|_| CalendarError::TimeOutOfRange(ms))
}

/// Formats a time as RFC 3339 UTC (`2024-05-06T09:00:00Z`), seconds precision.
pub(crate) fn rfc3339_utc(ms: UnixMs) -> Result<String, CalendarError> {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .map_err(|_| CalendarError::TimeOutOfRange(ms))
}

/// Parses a time: RFC 3339 with `Z` or an offset, or a naive date-time taken as UTC
/// (`2024-05-06T09:00:00`, fractional seconds allowed).
pub(crate) fn parse_time(s: &str) -> Option<UnixMs> {
    parse_time_in(s, &jiff::tz::TimeZone::UTC)
}

fn parse_time_in(s: &str, tz: &jiff::tz::TimeZone) -> Option<UnixMs> {
    let t = s.trim();
    if t.is_empty() || t.len() > 64 {
        return None;
    }
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Some(ts.as_millisecond());
    }
    // Only a plain date-time is read in `tz`: anything with an offset or a zone annotation
    // that the timestamp parser refused is rejected rather than guessed.
    let time_part = t.split_once(['T', 't', ' ']).map_or("", |(_, r)| r);
    if t.contains('[') || time_part.contains(['Z', 'z', '+', '-']) {
        return None;
    }
    let dt = t.parse::<jiff::civil::DateTime>().ok()?;
    tz.to_timestamp(dt).ok().map(|ts| ts.as_millisecond())
}

/// Parses a Graph `dateTimeTimeZone`: UTC spellings directly, IANA names through the system
/// time zone database. Windows zone names (only returned when a `Prefer: outlook.timezone`
/// header asked for them; the runtime never does) are not resolved: `None`.
pub(crate) fn parse_time_in_zone(date_time: &str, zone: Option<&str>) -> Option<UnixMs> {
    let z = zone.map(str::trim).unwrap_or("");
    let utc = ["", "utc", "etc/utc", "etc/gmt", "gmt", "z", "zulu", "coordinated universal time"];
    if utc.iter().any(|u| u.eq_ignore_ascii_case(z)) {
        return parse_time(date_time);
    }
    if z.len() > 64 || z.contains("..") {
        return None;
    }
    let tz = jiff::tz::TimeZone::get(z).ok()?;
    parse_time_in(date_time, &tz)
}

/// Trimmed, bounded text; empty → `None`.
pub(crate) fn bounded_text(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| truncate(t, MAX_TEXT_LEN).to_string())
}

/// Error text with whitespace runs collapsed, bounded to [`MAX_ERROR_LEN`].
pub(crate) fn bounded_error(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_ERROR_LEN));
    for w in s.split_whitespace() {
        if out.len() + w.len() + 1 > MAX_ERROR_LEN {
            let room = MAX_ERROR_LEN.saturating_sub(out.len() + 1);
            if room > 0 {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(truncate(w, room));
            }
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// Merged free/busy digits, kept only if they are digits and bounded.
pub(crate) fn merged_digits(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty() && t.len() <= MAX_MERGED_LEN && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::tests::{DAY0, H, M};


    fn item(start: i64, end: i64, status: BusyStatus, subject: Option<&str>) -> CalendarItem {
        CalendarItem {
            start,
            end,
            status,
            subject: subject.map(str::to_string),
            location: subject.map(|_| "Room 1".to_string()),
            private: false,
            is_meeting: Some(true),
        }
    }

    /// Items whose subject starts with "Lunch": Away, at lunch.
    fn lunch_rule() -> KeywordRule {
        KeywordRule { prefix: "Lunch".into(), availability: Some(Availability::Away), activity: Activity::Lunch }
    }

    fn schedule(items: Vec<CalendarItem>) -> MailboxSchedule {
        MailboxSchedule { mailbox: "alice@contoso.com".into(), items, merged: None, error: None }
    }

    fn one(s: &MailboxSchedule, now: i64, p: &SignalPolicy) -> Signal {
        let v = to_signals(s, now, p);
        assert_eq!(v.len(), 1, "{v:?}");
        v.into_iter().next().unwrap_or_else(|| Signal::new(Source::Calendar, "x", None, 0))
    }

    #[test]
    fn parses_statuses_case_insensitively() {
        let cases = [
            ("Busy", Some(BusyStatus::Busy)),
            ("busy", Some(BusyStatus::Busy)),
            ("OOF", Some(BusyStatus::Oof)),
            ("oof", Some(BusyStatus::Oof)),
            ("Tentative", Some(BusyStatus::Tentative)),
            ("workingElsewhere", Some(BusyStatus::WorkingElsewhere)),
            ("WorkingElsewhere", Some(BusyStatus::WorkingElsewhere)),
            ("NoData", Some(BusyStatus::NoData)),
            ("unknown", Some(BusyStatus::NoData)),
            ("free", Some(BusyStatus::Free)),
            (" Free ", Some(BusyStatus::Free)),
            ("elsewhere", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(BusyStatus::parse(s), want, "{s}");
        }
        assert!(BusyStatus::Oof.precedence() > BusyStatus::Busy.precedence());
        assert!(BusyStatus::Busy.precedence() > BusyStatus::WorkingElsewhere.precedence());
        assert!(BusyStatus::WorkingElsewhere.precedence() > BusyStatus::Tentative.precedence());
    }

    #[test]
    fn a_meeting_makes_busy_in_a_meeting_for_its_duration() {
        let s = schedule(vec![item(DAY0 + 9 * H, DAY0 + 10 * H, BusyStatus::Busy, Some("Board"))]);
        let sig = one(&s, DAY0 + 9 * H + 5 * M, &SignalPolicy::default());
        assert_eq!(sig.source, Source::Calendar);
        assert_eq!(&*sig.instance, INSTANCE);
        assert_eq!(sig.availability, Some(Availability::Busy));
        assert_eq!(sig.activity, Some(Activity::InAMeeting));
        assert!(!sig.ooo);
        assert_eq!(sig.valid_from, Some(DAY0 + 9 * H));
        assert_eq!(sig.valid_until, Some(DAY0 + 10 * H));
        assert_eq!(sig.observed_at, DAY0 + 9 * H + 5 * M);
        assert_eq!(sig.detail, None, "details are dropped unless keep_details");

        let keep = SignalPolicy { keep_details: true, ..SignalPolicy::default() };
        let sig = one(&s, DAY0 + 9 * H, &keep);
        let d = sig.detail.expect("detail kept");
        assert_eq!(d.subject.as_deref(), Some("Board"));
        assert_eq!(d.location.as_deref(), Some("Room 1"));
        assert!(!d.private);
    }

    #[test]
    fn oof_sets_the_flag_without_availability() {
        let s = schedule(vec![item(DAY0, DAY0 + 24 * H, BusyStatus::Oof, Some("Vacation"))]);
        let sig = one(&s, DAY0 + 12 * H, &SignalPolicy::default());
        assert!(sig.ooo);
        assert_eq!(sig.availability, None);
        assert_eq!(sig.activity, Some(Activity::OutOfOffice));
        assert_eq!((sig.valid_from, sig.valid_until), (Some(DAY0), Some(DAY0 + 24 * H)));
    }

    #[test]
    fn tentative_and_working_elsewhere_only_annotate() {
        for (status, act) in
            [(BusyStatus::Tentative, Activity::Tentative), (BusyStatus::WorkingElsewhere, Activity::WorkingElsewhere)]
        {
            let s = schedule(vec![item(DAY0 + 9 * H, DAY0 + 17 * H, status, Some("x"))]);
            let sig = one(&s, DAY0 + 10 * H, &SignalPolicy::default());
            assert_eq!(sig.availability, None, "{status}");
            assert_eq!(sig.activity, Some(act));
            assert!(!sig.ooo);
            assert!(!sig.is_retraction());
        }
    }

    #[test]
    fn overlapping_items_show_the_highest_precedence() {
        let s = schedule(vec![
            item(DAY0 + 8 * H, DAY0 + 17 * H, BusyStatus::WorkingElsewhere, None),
            item(DAY0 + 9 * H, DAY0 + 11 * H, BusyStatus::Tentative, None),
            item(DAY0 + 10 * H, DAY0 + 11 * H, BusyStatus::Busy, None),
        ]);
        let p = SignalPolicy::default();
        assert_eq!(one(&s, DAY0 + 9 * H, &p).activity, Some(Activity::WorkingElsewhere));
        let sig = one(&s, DAY0 + 10 * H, &p);
        assert_eq!(sig.availability, Some(Availability::Busy));
        assert_eq!(sig.valid_until, Some(DAY0 + 11 * H));
        let oof = schedule(vec![
            item(DAY0 + 9 * H, DAY0 + 10 * H, BusyStatus::Busy, None),
            item(DAY0, DAY0 + 24 * H, BusyStatus::Oof, None),
        ]);
        assert!(one(&oof, DAY0 + 9 * H, &p).ooo);
    }

    #[test]
    fn a_private_item_never_reveals_its_subject() {
        let mut it = item(DAY0 + 9 * H, DAY0 + 10 * H, BusyStatus::Busy, Some("Lunch with the lawyer"));
        it.private = true;
        let s = schedule(vec![it]);
        let p = SignalPolicy {
            keep_details: true,
            keywords: vec![lunch_rule()],
            ..SignalPolicy::default()
        };
        let sig = one(&s, DAY0 + 9 * H, &p);
        assert_eq!(sig.detail.as_deref(), Some(&PrivateDetail { subject: None, location: None, private: true }));
        // The keyword does not fire on a private subject either.
        assert_eq!(sig.availability, Some(Availability::Busy));
        assert_eq!(sig.activity, Some(Activity::InAMeeting));
    }

    #[test]
    fn a_keyword_rule_overrides_the_mapping() {
        let s = schedule(vec![item(DAY0 + 12 * H, DAY0 + 13 * H, BusyStatus::Busy, Some("  lunch at Harry's"))]);
        let p = SignalPolicy {
            keep_details: false,
            keywords: vec![lunch_rule()],
            ..SignalPolicy::default()
        };
        let sig = one(&s, DAY0 + 12 * H, &p);
        assert_eq!(sig.availability, Some(Availability::Away));
        assert_eq!(sig.activity, Some(Activity::Lunch));
        assert_eq!(sig.detail, None, "the subject matched but is not kept");
        // No match: default mapping.
        let other = schedule(vec![item(DAY0 + 12 * H, DAY0 + 13 * H, BusyStatus::Busy, Some("Launch review"))]);
        assert_eq!(one(&other, DAY0 + 12 * H, &p).activity, Some(Activity::InAMeeting));
        // Free items stay free even when the subject matches.
        let free = schedule(vec![item(DAY0 + 12 * H, DAY0 + 13 * H, BusyStatus::Free, Some("Lunch"))]);
        assert!(one(&free, DAY0 + 12 * H, &p).is_retraction());
    }

    #[test]
    fn keyword_rules_deserialize_from_config() {
        let r: KeywordRule =
            serde_json::from_str(r#"{"prefix":" Lunch ","availability":"away","activity":"meal"}"#).expect("rule");
        assert_eq!(
            r,
            lunch_rule()
        );
        let r: KeywordRule = serde_json::from_str(r#"{"prefix":"Focus","activity":"Focusing"}"#).expect("rule");
        assert_eq!(r.availability, None);
        assert_eq!(r.activity, Activity::Other("Focusing".into()));
        for bad in [
            r#"{"prefix":"","activity":"Lunch"}"#,
            r#"{"prefix":"x","activity":"Busy"}"#,
            r#"{"prefix":"x","availability":"sleepy","activity":"Lunch"}"#,
            r#"{"prefix":"x","activity":"Lunch","extra":1}"#,
        ] {
            assert!(serde_json::from_str::<KeywordRule>(bad).is_err(), "{bad}");
        }
        let p: SignalPolicy =
            serde_json::from_str(r#"{"keep_details":true,"keywords":[{"prefix":"Lunch","activity":"Lunch"}]}"#)
                .expect("policy");
        assert!(p.keep_details);
        assert_eq!(p.keywords.len(), 1);
    }

    #[test]
    fn an_upcoming_item_is_announced_with_a_future_start() {
        let s = schedule(vec![
            item(DAY0 + 7 * H, DAY0 + 8 * H, BusyStatus::Busy, None), // over
            item(DAY0 + 14 * H, DAY0 + 15 * H, BusyStatus::Busy, None),
            item(DAY0 + 11 * H, DAY0 + 12 * H, BusyStatus::Free, None), // never shown
            item(DAY0 + 11 * H, DAY0 + 13 * H, BusyStatus::Tentative, None),
        ]);
        let sig = one(&s, DAY0 + 10 * H, &SignalPolicy::default());
        assert_eq!(sig.valid_from, Some(DAY0 + 11 * H));
        assert_eq!(sig.valid_until, Some(DAY0 + 13 * H));
        assert_eq!(sig.activity, Some(Activity::Tentative));
        assert_eq!(next_change(&s, DAY0 + 10 * H), Some(DAY0 + 11 * H));
    }

    #[test]
    fn no_items_means_no_opinion_and_errors_mean_no_signal() {
        let s = schedule(vec![item(DAY0, DAY0 + H, BusyStatus::NoData, None)]);
        let sig = one(&s, DAY0, &SignalPolicy::default());
        assert!(sig.is_retraction());
        assert_eq!((sig.availability, &sig.activity, sig.valid_from, sig.valid_until), (None, &None, None, None));
        assert!(to_signals(
            &MailboxSchedule::failed("x", "ErrorMailRecipientNotFound"),
            DAY0,
            &SignalPolicy::default()
        )
        .is_empty());
    }

    #[test]
    fn next_change_walks_starts_and_ends() {
        let s = schedule(vec![
            item(DAY0 + 9 * H, DAY0 + 10 * H, BusyStatus::Busy, None),
            item(DAY0 + 10 * H, DAY0 + 11 * H, BusyStatus::Oof, None),
            item(DAY0 + 8 * H, DAY0 + 20 * H, BusyStatus::Free, None),
        ]);
        assert_eq!(next_change(&s, DAY0), Some(DAY0 + 9 * H));
        assert_eq!(next_change(&s, DAY0 + 9 * H), Some(DAY0 + 10 * H));
        assert_eq!(next_change(&s, DAY0 + 10 * H), Some(DAY0 + 11 * H));
        assert_eq!(next_change(&s, DAY0 + 11 * H), None, "free items do not wake anyone");
    }

    #[test]
    fn back_to_back_identical_meetings_do_not_flicker() {
        let s = schedule(vec![
            item(DAY0 + 9 * H, DAY0 + 10 * H, BusyStatus::Busy, Some("A")),
            item(DAY0 + 10 * H, DAY0 + 11 * H, BusyStatus::Busy, Some("B")),
            item(DAY0 + 11 * H + 30 * M, DAY0 + 12 * H, BusyStatus::Busy, Some("C")),
        ]);
        let sig = one(&s, DAY0 + 9 * H, &SignalPolicy::default());
        assert_eq!(sig.valid_until, Some(DAY0 + 11 * H), "runs through B, stops at the gap");
        // With details kept the subjects differ, so each meeting is its own signal.
        let keep = SignalPolicy { keep_details: true, ..SignalPolicy::default() };
        assert_eq!(one(&s, DAY0 + 9 * H, &keep).valid_until, Some(DAY0 + 10 * H));
        // At the boundary the next meeting is current.
        let sig = one(&s, DAY0 + 10 * H, &keep);
        assert_eq!(sig.detail.and_then(|d| d.subject).as_deref(), Some("B"));
    }

    #[test]
    fn times_parse_naive_as_utc_and_with_offsets() {
        assert_eq!(parse_time("2024-05-06T09:00:00"), Some(DAY0 + 9 * H));
        assert_eq!(parse_time("2024-05-06T09:00:00Z"), Some(DAY0 + 9 * H));
        assert_eq!(parse_time("2024-05-06T11:00:00+02:00"), Some(DAY0 + 9 * H));
        assert_eq!(parse_time("2024-05-06T09:00:00.0000000"), Some(DAY0 + 9 * H));
        assert_eq!(parse_time("2024-05-06T09:00:00.5"), Some(DAY0 + 9 * H + 500));
        for bad in
            ["", "yesterday", "2024-05-06T09:00:00+99:00", "2024-13-06T09:00:00", "2024-05-06T09:00:00[Europe/Oslo]"]
        {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(parse_time_in_zone("2024-05-06T09:00:00.0000000", Some("UTC")), Some(DAY0 + 9 * H));
        assert_eq!(parse_time_in_zone("2024-05-06T09:00:00", None), Some(DAY0 + 9 * H));
        assert_eq!(parse_time_in_zone("2024-05-06T09:00:00", Some("W. Europe Standard Time")), None);
        assert_eq!(naive_utc(DAY0 + 9 * H + 999).ok().as_deref(), Some("2024-05-06T09:00:00"));
        assert_eq!(rfc3339_utc(DAY0).ok().as_deref(), Some("2024-05-06T00:00:00Z"));
    }

    #[test]
    fn requests_are_checked() {
        let ok = check_request(&["a@b.c"], 2, DAY0, DAY0 + H, Some(1));
        assert!(ok.is_ok());
        assert!(matches!(check_request(&[], 2, DAY0, DAY0 + H, None), Err(CalendarError::NoMailboxes)));
        assert!(matches!(
            check_request(&["a", "b", "c"], 2, DAY0, DAY0 + H, None),
            Err(CalendarError::TooManyMailboxes { max: 2, got: 3 })
        ));
        for bad in ["", " a@b.c", "a@b.c\n", "a\u{0}b"] {
            assert!(
                matches!(check_request(&[bad], 2, DAY0, DAY0 + H, None), Err(CalendarError::InvalidAddress(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(check_request(&["a"], 2, DAY0, DAY0, None), Err(CalendarError::EmptyWindow)));
        assert!(matches!(
            check_request(&["a"], 2, DAY0, DAY0 + DAY_MS + 1, Some(1)),
            Err(CalendarError::WindowTooLong { max_days: 1 })
        ));
        assert!(matches!(check_request(&["a"], 2, i64::MIN, DAY0, None), Err(CalendarError::TimeOutOfRange(_))));
        assert!(check_interval(5).is_ok() && check_interval(1440).is_ok());
        assert!(check_interval(4).is_err() && check_interval(1441).is_err());
        assert_eq!(bounded_error("  a \n  b\t"), "a b");
        assert!(bounded_error(&"word ".repeat(500)).len() <= MAX_ERROR_LEN);
    }
}
