//! Google Calendar `POST https://www.googleapis.com/calendar/v3/freeBusy` (JSON): request body
//! and response parser — pure, bounded, never panics.
//!
//! Google reports **busy intervals only**: no tentative, OOF, subject or privacy flag. Every
//! interval becomes a [`BusyStatus::Busy`] item without details. The answer's `calendars` map
//! gives one [`MailboxSchedule`] per calendar id, in id order (JSON objects carry no order we
//! keep); a calendar's `errors` (`[{"domain", "reason"}]`) become its `error`, e.g. `notFound`.
//! `groups` are otherwise ignored: their members appear under `calendars` already; only a
//! group that failed to expand (`groupTooBig`, `tooManyCalendarsRequested`) is listed, as an
//! entry carrying its error. A top-level `error` object is [`CalendarError::Service`].

use std::collections::BTreeMap;

use serde::Deserialize;

use presence_actors::model::activity::truncate;
use presence_actors::model::UnixMs;

use super::model::{
    bounded_error, check_request, parse_time, rfc3339_utc, BusyStatus, CalendarError, CalendarItem, MailboxSchedule,
    MAX_BODY_BYTES, MAX_ITEMS_PER_MAILBOX,
};

/// Most calendars per request (`calendarExpansionMax` ≤ 50).
pub const MAX_ITEMS: usize = 50;
/// Most members a group is expanded to (`groupExpansionMax` ≤ 100).
pub const MAX_GROUP_EXPANSION: usize = 100;

/// The JSON body of a freeBusy query for `calendars` (calendar ids, user emails or group
/// emails) over `[start, end)` in UTC, seconds precision.
pub fn request_body(calendars: &[&str], start: UnixMs, end: UnixMs) -> Result<String, CalendarError> {
    check_request(calendars, MAX_ITEMS, start, end, None)?;
    let items: Vec<_> = calendars.iter().map(|c| serde_json::json!({ "id": c })).collect();
    let body = serde_json::json!({
        "timeMin": rfc3339_utc(start)?,
        "timeMax": rfc3339_utc(end)?,
        "timeZone": "UTC",
        "groupExpansionMax": MAX_GROUP_EXPANSION,
        "calendarExpansionMax": MAX_ITEMS,
        "items": items,
    });
    Ok(body.to_string())
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    calendars: BTreeMap<String, Calendar>,
    #[serde(default)]
    groups: BTreeMap<String, Group>,
    error: Option<TopError>,
}

#[derive(Deserialize)]
struct TopError {
    code: Option<i64>,
    status: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct Calendar {
    #[serde(default)]
    busy: Vec<Period>,
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct Period {
    start: Option<String>,
    end: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    domain: Option<String>,
    reason: Option<String>,
}

/// "notFound", or "a, b" for several; the domain stands in for a missing reason.
fn reasons(errors: &[ErrorEntry]) -> String {
    let list: Vec<&str> = errors
        .iter()
        .map(|e| {
            e.reason.as_deref().or(e.domain.as_deref()).map(str::trim).filter(|r| !r.is_empty()).unwrap_or("error")
        })
        .collect();
    bounded_error(&list.join(", "))
}

/// Parses a freeBusy response (see the module docs).
pub fn parse_response(json: &[u8]) -> Result<Vec<MailboxSchedule>, CalendarError> {
    if json.len() > MAX_BODY_BYTES {
        return Err(CalendarError::TooLarge { max: MAX_BODY_BYTES });
    }
    let r: Response = serde_json::from_slice(json).map_err(|e| CalendarError::Json(bounded_error(&e.to_string())))?;
    if let Some(e) = r.error {
        let code = e.status.or_else(|| e.code.map(|c| c.to_string())).unwrap_or_else(|| "error".into());
        return Err(CalendarError::Service {
            code: truncate(&code, 128).to_string(),
            message: bounded_error(e.message.as_deref().unwrap_or("")),
        });
    }
    let mut out = Vec::with_capacity(r.calendars.len());
    for (id, cal) in &r.calendars {
        let id = truncate(id.trim(), 320);
        if !cal.errors.is_empty() {
            out.push(MailboxSchedule::failed(id, &reasons(&cal.errors)));
            continue;
        }
        out.push(calendar(id, cal));
    }
    for (id, group) in &r.groups {
        if !group.errors.is_empty() && !r.calendars.contains_key(id) {
            out.push(MailboxSchedule::failed(truncate(id.trim(), 320), &reasons(&group.errors)));
        }
    }
    Ok(out)
}

fn calendar(id: &str, cal: &Calendar) -> MailboxSchedule {
    let mut items = Vec::with_capacity(cal.busy.len().min(MAX_ITEMS_PER_MAILBOX));
    for p in &cal.busy {
        let (Some(start), Some(end)) = (p.start.as_deref().and_then(parse_time), p.end.as_deref().and_then(parse_time))
        else {
            return MailboxSchedule::failed(id, "unreadable start/end in busy");
        };
        if end <= start || items.len() >= MAX_ITEMS_PER_MAILBOX {
            continue;
        }
        items.push(CalendarItem {
            start,
            end,
            status: BusyStatus::Busy,
            subject: None,
            location: None,
            private: false,
            is_meeting: None,
        });
    }
    MailboxSchedule { mailbox: id.to_string(), items, merged: None, error: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::tests::{DAY0, H, M};
    use crate::mutate::{no_input_panics, Mutator, Xorshift, JSON_TOKENS};
    use crate::calendar::model::{to_signals, SignalPolicy};
    use presence_actors::model::{Activity, Availability};

    const FIXTURE: &[u8] = include_bytes!("../../../fixtures/calendar/google_freebusy.json");

    #[test]
    fn builds_the_request_body() {
        let b = request_body(&["alice@example.com", "team@example.com"], DAY0, DAY0 + 24 * H).expect("body");
        let v: serde_json::Value = serde_json::from_str(&b).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "timeMin": "2024-05-06T00:00:00Z",
                "timeMax": "2024-05-07T00:00:00Z",
                "timeZone": "UTC",
                "groupExpansionMax": 100,
                "calendarExpansionMax": 50,
                "items": [{"id": "alice@example.com"}, {"id": "team@example.com"}]
            })
        );
        let many: Vec<String> = (0..51).map(|i| format!("u{i}@example.com")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(request_body(&many[..50], DAY0, DAY0 + H).is_ok());
        assert!(matches!(
            request_body(&many, DAY0, DAY0 + H),
            Err(CalendarError::TooManyMailboxes { max: 50, got: 51 })
        ));
        assert!(matches!(request_body(&[], DAY0, DAY0 + H), Err(CalendarError::NoMailboxes)));
        assert!(matches!(request_body(&["a"], DAY0, DAY0), Err(CalendarError::EmptyWindow)));
    }

    #[test]
    fn parses_the_fixture() {
        let got = parse_response(FIXTURE).expect("parse");
        let ids: Vec<&str> = got.iter().map(|s| s.mailbox.as_str()).collect();
        assert_eq!(ids, ["alice@example.com", "bob@example.com", "nobody@example.com", "huge-list@example.com"]);

        let alice = &got[0];
        assert_eq!(alice.error, None);
        assert_eq!(alice.merged, None);
        let spans: Vec<(i64, i64)> = alice.items.iter().map(|i| (i.start, i.end)).collect();
        assert_eq!(spans, [(DAY0 + 9 * H, DAY0 + 10 * H), (DAY0 + 11 * H, DAY0 + 12 * H + 30 * M)]);
        assert!(alice
            .items
            .iter()
            .all(|i| i.status == BusyStatus::Busy && i.subject.is_none() && i.location.is_none() && !i.private));

        assert!(got[1].items.is_empty() && got[1].error.is_none());
        assert_eq!(got[2].error.as_deref(), Some("notFound"));
        assert!(got[2].items.is_empty());
        assert_eq!(got[3].error.as_deref(), Some("groupTooBig"));

        let sig = to_signals(alice, DAY0 + 9 * H + 15 * M, &SignalPolicy::default()).pop().expect("signal");
        assert_eq!((sig.availability, sig.activity), (Some(Availability::Busy), Some(Activity::InAMeeting)));
        assert_eq!((sig.valid_from, sig.valid_until), (Some(DAY0 + 9 * H), Some(DAY0 + 10 * H)));
    }

    #[test]
    fn top_level_errors_and_bad_bodies() {
        let e = parse_response(br#"{"error":{"code":400,"message":"Bad Request","status":"INVALID_ARGUMENT","errors":[{"domain":"global","reason":"timeRangeEmpty"}]}}"#);
        assert!(
            matches!(e, Err(CalendarError::Service { code, message }) if code == "INVALID_ARGUMENT" && message == "Bad Request")
        );
        let e = parse_response(br#"{"error":{"code":403,"message":"Forbidden"}}"#);
        assert!(matches!(e, Err(CalendarError::Service { code, .. }) if code == "403"));
        assert!(matches!(parse_response(b"nope"), Err(CalendarError::Json(_))));
        assert_eq!(parse_response(b"{}").map(|v| v.len()).ok(), Some(0));
        let bad = br#"{"calendars":{"a":{"busy":[{"start":"later","end":"2024-05-06T10:00:00Z"}]},"b":{"busy":[{"start":"2024-05-06T09:00:00Z","end":"2024-05-06T10:00:00Z"}]}}}"#;
        let got = parse_response(bad).expect("parse");
        assert!(got[0].error.is_some() && got[0].items.is_empty());
        assert_eq!(got[1].items.len(), 1);
        let errs =
            br#"{"calendars":{"a":{"errors":[{"domain":"global","reason":"notFound"},{"domain":"usageLimits"}]}}}"#;
        assert_eq!(parse_response(errs).expect("parse")[0].error.as_deref(), Some("notFound, usageLimits"));
    }

    /// Deterministic xorshift mutations of the fixture(s), 12,000 of them: no input panics the
    /// parser, and enough mutants still parse to reach the deep paths.
    #[test]
    fn no_input_panics_the_parser() {
        let own: [&[u8]; 3] = [b"\"errors\":[{}]", b"\"9999-99-99T99:99:99Z\"", b"\"\\u0000\""];
        let tokens = [JSON_TOKENS, &own].concat();
        let mut rng = Xorshift::new(0xD1B5_4A32_D192_ED03);
        no_input_panics(&Mutator::new(&tokens, &[]), &[FIXTURE], 12_000, &mut rng, 1_000, |v, _| usize::from(parse_response(v).is_ok()));
    }
}
