//! Microsoft Graph `POST /users/{id}/calendar/getSchedule` (JSON): request body and response
//! parser — pure, bounded, never panics.
//!
//! The request asks in `UTC`; without a `Prefer: outlook.timezone` header Graph answers in
//! UTC too (`{"dateTime": "2024-05-06T09:00:00.0000000", "timeZone": "UTC"}`). IANA zone names
//! are resolved through the system time zone database; Windows names ("W. Europe Standard
//! Time", only sent when that header asks for them) are not, and make that schedule's `error`.
//!
//! `availabilityView` is kept as [`MailboxSchedule::merged`]; note that Graph folds
//! `workingElsewhere` into digit `0` there for backward compatibility, so the items — not the
//! digits — are what the model maps. A per-schedule `error` (`{"message", "responseCode"}`)
//! becomes that schedule's `error`; a top-level `error` object is [`CalendarError::Service`].

use serde::Deserialize;

use presence_actors::model::activity::truncate;
use presence_actors::model::UnixMs;

use super::model::{
    bounded_error, bounded_text, check_interval, check_request, merged_digits, naive_utc, parse_time_in_zone,
    BusyStatus, CalendarError, CalendarItem, MailboxSchedule, MAX_BODY_BYTES, MAX_ITEMS_PER_MAILBOX,
};

/// Most schedules per request (Graph answers `ErrorMailboxDataArrayTooBig` beyond).
pub const MAX_SCHEDULES: usize = 100;
/// Longest time window, in days (Graph answers `ErrorTimeIntervalTooBig` beyond).
pub const MAX_WINDOW_DAYS: i64 = 62;

/// The JSON body of a getSchedule request for `schedules` over `[start, end)` (UTC, seconds
/// precision), merged in `interval_minutes` slots (5–1440).
pub fn request_body(
    schedules: &[&str],
    start: UnixMs,
    end: UnixMs,
    interval_minutes: u32,
) -> Result<String, CalendarError> {
    check_request(schedules, MAX_SCHEDULES, start, end, Some(MAX_WINDOW_DAYS))?;
    check_interval(interval_minutes)?;
    let body = serde_json::json!({
        "schedules": schedules,
        "startTime": { "dateTime": naive_utc(start)?, "timeZone": "UTC" },
        "endTime": { "dateTime": naive_utc(end)?, "timeZone": "UTC" },
        "availabilityViewInterval": interval_minutes,
    });
    Ok(body.to_string())
}

#[derive(Deserialize)]
struct Response {
    value: Option<Vec<Information>>,
    error: Option<TopError>,
}

#[derive(Deserialize)]
struct TopError {
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Information {
    schedule_id: Option<String>,
    availability_view: Option<String>,
    schedule_items: Option<Vec<Item>>,
    error: Option<FreeBusyError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FreeBusyError {
    message: Option<String>,
    response_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    status: Option<String>,
    start: Option<DateTimeZone>,
    end: Option<DateTimeZone>,
    is_private: Option<bool>,
    subject: Option<String>,
    location: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DateTimeZone {
    date_time: Option<String>,
    time_zone: Option<String>,
}

impl DateTimeZone {
    fn millis(&self) -> Option<i64> {
        parse_time_in_zone(self.date_time.as_deref()?, self.time_zone.as_deref())
    }
}

/// Parses a getSchedule response: one [`MailboxSchedule`] per `value[]` entry, in order
/// (Graph answers in request order), `mailbox` = `scheduleId`.
pub fn parse_response(json: &[u8]) -> Result<Vec<MailboxSchedule>, CalendarError> {
    if json.len() > MAX_BODY_BYTES {
        return Err(CalendarError::TooLarge { max: MAX_BODY_BYTES });
    }
    let r: Response = serde_json::from_slice(json).map_err(|e| CalendarError::Json(bounded_error(&e.to_string())))?;
    if let Some(e) = r.error {
        return Err(CalendarError::Service {
            code: truncate(e.code.as_deref().unwrap_or("error"), 128).to_string(),
            message: bounded_error(e.message.as_deref().unwrap_or("")),
        });
    }
    let value = r.value.ok_or_else(|| CalendarError::Unexpected("no value array".into()))?;
    Ok(value.into_iter().map(schedule).collect())
}

fn schedule(info: Information) -> MailboxSchedule {
    let mailbox = truncate(info.schedule_id.as_deref().unwrap_or("").trim(), 320).to_string();
    if let Some(e) = info.error {
        let code = e.response_code.as_deref().map(str::trim).filter(|c| !c.is_empty()).unwrap_or("error");
        let text = match e.message.as_deref().map(str::trim) {
            Some(m) if !m.is_empty() => format!("{code}: {m}"),
            _ => code.to_string(),
        };
        return MailboxSchedule::failed(&mailbox, &text);
    }
    let mut items = Vec::new();
    for it in info.schedule_items.unwrap_or_default() {
        let (Some(start), Some(end)) =
            (it.start.as_ref().and_then(DateTimeZone::millis), it.end.as_ref().and_then(DateTimeZone::millis))
        else {
            return MailboxSchedule::failed(&mailbox, "unreadable start/end in scheduleItems (time zone not UTC?)");
        };
        if end <= start || items.len() >= MAX_ITEMS_PER_MAILBOX {
            continue;
        }
        let private = it.is_private == Some(true);
        items.push(CalendarItem {
            start,
            end,
            status: it.status.as_deref().and_then(BusyStatus::parse).unwrap_or(BusyStatus::NoData),
            subject: if private { None } else { it.subject.as_deref().and_then(bounded_text) },
            location: if private { None } else { it.location.as_deref().and_then(bounded_text) },
            private,
            is_meeting: None,
        });
    }
    MailboxSchedule { mailbox, items, merged: info.availability_view.as_deref().and_then(merged_digits), error: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::tests::{assert_mailbox, parsed, DAY0, H, M};
    use crate::mutate::{no_input_panics, Mutator, Xorshift, JSON_TOKENS};
    use crate::calendar::model::{to_signals, SignalPolicy};
    use presence_actors::model::Activity;

    const FIXTURE: &[u8] = include_bytes!("../../../fixtures/calendar/graph_getschedule.json");

    #[test]
    fn builds_a_utc_request_body() {
        let b = request_body(&["alice@contoso.com", "bob@contoso.com"], DAY0 + 8 * H, DAY0 + 18 * H, 15).expect("body");
        let v: serde_json::Value = serde_json::from_str(&b).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "schedules": ["alice@contoso.com", "bob@contoso.com"],
                "startTime": {"dateTime": "2024-05-06T08:00:00", "timeZone": "UTC"},
                "endTime": {"dateTime": "2024-05-06T18:00:00", "timeZone": "UTC"},
                "availabilityViewInterval": 15
            })
        );
        let many: Vec<String> = (0..101).map(|i| format!("u{i}@contoso.com")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(
            request_body(&many, DAY0, DAY0 + H, 30),
            Err(CalendarError::TooManyMailboxes { max: 100, .. })
        ));
        assert!(request_body(&["a@b"], DAY0, DAY0 + 62 * 24 * H, 30).is_ok());
        assert!(matches!(
            request_body(&["a@b"], DAY0, DAY0 + 62 * 24 * H + 1, 30),
            Err(CalendarError::WindowTooLong { max_days: 62 })
        ));
        assert!(matches!(request_body(&["a@b"], DAY0, DAY0 - 1, 30), Err(CalendarError::EmptyWindow)));
        assert!(matches!(request_body(&["a@b"], DAY0, DAY0 + H, 1441), Err(CalendarError::BadInterval(1441))));
    }

    #[test]
    fn parses_the_fixture() {
        let got = parse_response(FIXTURE).expect("parse");
        assert_eq!(got.len(), 3);

        let alice = &got[0];
        let items = [
            parsed(DAY0 + 8 * H, DAY0 + 12 * H, BusyStatus::WorkingElsewhere, Some("Client site"), Some("Contoso Oslo"), false, None),
            parsed(DAY0 + 9 * H, DAY0 + 10 * H, BusyStatus::Busy, Some("Planning"), Some("Room 2"), false, None),
            parsed(DAY0 + 10 * H, DAY0 + 10 * H + 30 * M, BusyStatus::Busy, None, None, true, None),
            parsed(DAY0 + 13 * H, DAY0 + 14 * H, BusyStatus::Tentative, Some("Maybe: vendor demo"), None, false, None),
            parsed(DAY0 + 14 * H, DAY0 + 15 * H, BusyStatus::Oof, None, None, false, None),
            parsed(DAY0 + 15 * H, DAY0 + 16 * H, BusyStatus::NoData, None, None, false, None),
        ];
        assert_mailbox(alice, "alice@contoso.com", Some("0220013000"), &items);
        // availabilityView shows 0 for the first hour, yet the item says workingElsewhere.
        assert_eq!(alice.merged.as_deref().and_then(|m| m.chars().next()), Some('0'));
        assert!(!format!("{got:?}").contains("Therapy"), "private subject leaked");

        let bob = &got[1];
        assert_eq!(bob.mailbox, "bob@contoso.com");
        assert!(bob.items.is_empty());
        assert_eq!(bob.merged.as_deref(), Some("0000000000"));
        assert_eq!(bob.error, None);

        let ghost = &got[2];
        assert_eq!(ghost.mailbox, "ghost@contoso.com");
        assert_eq!(
            ghost.error.as_deref(),
            Some("ErrorMailRecipientNotFound: The SMTP address has no mailbox associated with it.")
        );
        assert!(ghost.items.is_empty() && ghost.merged.is_none());
    }

    #[test]
    fn working_elsewhere_annotates_although_the_view_says_free() {
        let got = parse_response(FIXTURE).expect("parse");
        let sig = to_signals(&got[0], DAY0 + 8 * H + 30 * M, &SignalPolicy::default()).pop().expect("signal");
        assert_eq!(sig.availability, None);
        assert_eq!(sig.activity, Some(Activity::WorkingElsewhere));
        assert_eq!(sig.valid_until, Some(DAY0 + 12 * H));
        // The private meeting shows as busy, without subject.
        let keep = SignalPolicy { keep_details: true, ..SignalPolicy::default() };
        let sig = to_signals(&got[0], DAY0 + 10 * H + 10 * M, &keep).pop().expect("signal");
        assert_eq!(sig.activity, Some(Activity::InAMeeting));
        assert!(sig.detail.is_some_and(|d| d.private && d.subject.is_none()));
    }

    #[test]
    fn top_level_errors_and_bad_bodies() {
        let e = parse_response(br#"{"error":{"code":"ErrorMailboxDataArrayTooBig","message":"allowed size = 100"}}"#);
        assert!(
            matches!(e, Err(CalendarError::Service { code, message }) if code == "ErrorMailboxDataArrayTooBig" && message == "allowed size = 100")
        );
        assert!(matches!(parse_response(b"{}"), Err(CalendarError::Unexpected(_))));
        assert!(matches!(parse_response(b"[1,2"), Err(CalendarError::Json(_))));
        assert!(matches!(parse_response(br#"{"value":[{"scheduleItems":"x"}]}"#), Err(CalendarError::Json(_))));
        // A Windows zone name cannot be resolved: that schedule fails, the others stand.
        let body = br#"{"value":[
            {"scheduleId":"a","scheduleItems":[{"status":"busy","start":{"dateTime":"2024-05-06T09:00:00","timeZone":"Pacific Standard Time"},"end":{"dateTime":"2024-05-06T10:00:00","timeZone":"Pacific Standard Time"}}]},
            {"scheduleId":"b","scheduleItems":[{"status":"busy","start":{"dateTime":"2024-05-06T09:00:00Z"},"end":{"dateTime":"2024-05-06T10:00:00+00:00","timeZone":"UTC"}}]}]}"#;
        let got = parse_response(body).expect("parse");
        assert!(got[0].error.is_some() && got[0].items.is_empty());
        assert_eq!(got[1].items[0].start, DAY0 + 9 * H);
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(matches!(parse_response(&huge), Err(CalendarError::TooLarge { .. })));
    }

    /// Deterministic xorshift mutations of the fixture(s), 12,000 of them: no input panics the
    /// parser, and enough mutants still parse to reach the deep paths.
    #[test]
    fn no_input_panics_the_parser() {
        let own: [&[u8]; 3] = [b"\"\\ud800\"", b"\"isPrivate\":true", b"-0"];
        let tokens = [JSON_TOKENS, &own].concat();
        let mut rng = Xorshift::default();
        no_input_panics(&Mutator::new(&tokens, &[]), &[FIXTURE], 12_000, &mut rng, 1_000, |v, _| usize::from(parse_response(v).is_ok()));
    }
}
