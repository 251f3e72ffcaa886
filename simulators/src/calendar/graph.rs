//! Microsoft Graph `getSchedule` (its app tokens come from the Entra endpoint in `tokens.rs`):
//!
//! - `POST /v1.0/users/{user}/calendar/getSchedule` (Graph, app token): ≤ 100 schedules, ≤ 62
//!   days, `availabilityViewInterval` 5–1440, answered in UTC (`Prefer: outlook.timezone` is
//!   ignored; `{user}` is not checked, as an app token may read any mailbox).
//!   `workingElsewhere` folds into digit `0` of `availabilityView`, as Graph does; private
//!   items carry no `subject` or `location`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::tokens::{bearer_token, TokenKind};
use super::{gate, is_unknown, lock, merged_view, parse_time, utc_fmt, Backend, Refusal, Shared, Status, DAY_MS, MINUTE_MS};
use crate::graph::graph_error;

/// Most schedules per Graph getSchedule request.
pub const MAX_GRAPH_SCHEDULES: usize = 100;
/// Longest Graph getSchedule window, in days.
pub const MAX_GRAPH_WINDOW_DAYS: i64 = 62;

impl Status {
    fn graph(self) -> &'static str {
        match self {
            Status::Free => "free",
            Status::Tentative => "tentative",
            Status::Busy => "busy",
            Status::Oof => "oof",
            Status::WorkingElsewhere => "workingElsewhere",
        }
    }
}

/// Graph's `dateTime`: `2024-05-06T09:00:00.0000000`.
fn graph_time(ms: i64) -> String {
    format!("{}.{:03}0000", utc_fmt(ms, "%Y-%m-%dT%H:%M:%S"), ms.rem_euclid(1000))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleBody {
    schedules: Vec<String>,
    start_time: DateTimeZone,
    end_time: DateTimeZone,
    availability_view_interval: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DateTimeZone {
    date_time: String,
    time_zone: Option<String>,
}

fn working_hours_json() -> Value {
    json!({
        "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
        "startTime": "08:00:00.0000000",
        "endTime": "17:00:00.0000000",
        "timeZone": { "name": "UTC" },
    })
}

pub(super) async fn get_schedule(state: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    {
        let mut g = lock(&state);
        g.stats.graph_requests += 1;
        if !g.bearer_ok(&req, TokenKind::Entra) {
            g.stats.unauthorized += 1;
            let msg = if bearer_token(&req).is_some() { "Access token validation failure." } else { "Access token is empty." };
            return graph_error(401, "InvalidAuthenticationToken", msg);
        }
    }
    match gate(&state, Backend::Graph).await {
        Err(Refusal::Throttle(secs)) => {
            return HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", secs.to_string()))
                .json(json!({ "error": { "code": "ApplicationThrottled", "message": "Application is over its MailboxConcurrency limit." } }))
        }
        Err(Refusal::Fail(503)) => return graph_error(503, "ServiceUnavailable", "The service is temporarily unavailable."),
        Err(Refusal::Fail(status)) => return graph_error(status, "InternalServerError", "An internal server error occurred."),
        Ok(()) => {}
    }
    let Ok(b) = serde_json::from_slice::<ScheduleBody>(&body) else {
        return graph_error(400, "RequestBodyRead", "The request body could not be read as a getSchedule request.");
    };
    let mut g = lock(&state);
    g.note_mailboxes(b.schedules.len());
    if b.schedules.is_empty() {
        return graph_error(400, "ErrorMailboxDataArrayEmpty", "At least one schedule is required.");
    }
    if b.schedules.len() > MAX_GRAPH_SCHEDULES {
        return graph_error(
            400,
            "ErrorMailboxDataArrayTooBig",
            &format!("Mailbox array too big: allowed size = {MAX_GRAPH_SCHEDULES}, actual size = {}.", b.schedules.len()),
        );
    }
    let (Some(start), Some(end)) = (
        parse_time(&b.start_time.date_time, b.start_time.time_zone.as_deref()),
        parse_time(&b.end_time.date_time, b.end_time.time_zone.as_deref()),
    ) else {
        return graph_error(400, "ErrorInvalidTimeZone", "startTime/endTime cannot be read (dateTime and an IANA or UTC timeZone).");
    };
    if end <= start {
        return graph_error(400, "ErrorInvalidTimeInterval", "The start time must be before the end time.");
    }
    if end - start > MAX_GRAPH_WINDOW_DAYS * DAY_MS {
        return graph_error(400, "ErrorTimeIntervalTooBig", &format!("The time window is longer than {MAX_GRAPH_WINDOW_DAYS} days."));
    }
    let interval = b.availability_view_interval.unwrap_or(30);
    if !(5..=1440).contains(&interval) {
        return graph_error(400, "ErrorInvalidMergedFreeBusyInterval", "availabilityViewInterval must be between 5 and 1440 minutes.");
    }
    let mut value = Vec::with_capacity(b.schedules.len());
    for id in &b.schedules {
        if is_unknown(id) {
            g.stats.unknown_mailboxes += 1;
            value.push(json!({
                "scheduleId": id, "availabilityView": "", "scheduleItems": [],
                "error": { "message": "The SMTP address has no mailbox associated with it.", "responseCode": "ErrorMailRecipientNotFound" },
            }));
            continue;
        }
        g.stats.mailboxes_answered += 1;
        let events = g.events_in(id, start, end);
        let items: Vec<Value> = events
            .iter()
            .map(|e| {
                let mut item = json!({
                    "isPrivate": e.private,
                    "status": e.status.graph(),
                    "start": { "dateTime": graph_time(e.start), "timeZone": "UTC" },
                    "end": { "dateTime": graph_time(e.end), "timeZone": "UTC" },
                });
                if !e.private {
                    item["subject"] = json!(e.subject.as_deref().unwrap_or(""));
                    item["location"] = json!(e.location.as_deref().unwrap_or(""));
                }
                item
            })
            .collect();
        value.push(json!({
            "scheduleId": id,
            "availabilityView": merged_view(&events, start, end, interval * MINUTE_MS),
            "scheduleItems": items,
            "workingHours": working_hours_json(),
        }));
    }
    let body = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.scheduleInformation)",
        "value": value,
    })
    .to_string();
    HttpResponse::Ok().content_type("application/json").body(g.finish(body))
}
