//! Google Calendar `freeBusy` (its token endpoint is in `tokens.rs`):
//!
//! - `POST /google/token` (Google `refresh_token` grant) and `POST /calendar/v3/freeBusy`
//!   (Google token): ≤ 50 items; busy intervals only (`Busy` and `Oof` events; tentative is
//!   not busy in Google), merged and clipped to the window.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::tokens::TokenKind;
use super::{gate, is_unknown, lock, utc_fmt, Backend, Event, Refusal, Shared, Status};

/// Most items per Google freeBusy request (`calendarExpansionMax` ≤ 50).
pub const MAX_GOOGLE_ITEMS: usize = 50;

impl Status {
    /// Google's freeBusy reports these as busy.
    fn google_busy(self) -> bool {
        matches!(self, Status::Busy | Status::Oof)
    }
}

/// Google's RFC 3339: `2024-05-06T09:00:00Z`.
fn google_time(ms: i64) -> String {
    utc_fmt(ms, "%Y-%m-%dT%H:%M:%SZ")
}

/// Google's echo of the window: `2024-05-06T00:00:00.000Z`.
fn google_time_ms(ms: i64) -> String {
    format!("{}.{:03}Z", utc_fmt(ms, "%Y-%m-%dT%H:%M:%S"), ms.rem_euclid(1000))
}

/// Google's busy list: busy events clipped to `[start, end)`, sorted, overlaps merged.
pub(super) fn busy_periods(events: &[Event], start: i64, end: i64) -> Vec<(i64, i64)> {
    let mut spans: Vec<(i64, i64)> = events
        .iter()
        .filter(|e| e.status.google_busy() && e.overlaps(start, end))
        .map(|e| (e.start.max(start), e.end.min(end)))
        .collect();
    spans.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FreeBusyBody {
    time_min: Option<String>,
    time_max: Option<String>,
    #[serde(default)]
    items: Vec<FreeBusyItem>,
    group_expansion_max: Option<i64>,
    calendar_expansion_max: Option<i64>,
}

#[derive(Deserialize)]
struct FreeBusyItem {
    #[serde(default)]
    id: String,
}

fn google_error(status: u16, domain: &str, reason: &str, message: &str) -> HttpResponse {
    let name = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    };
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST)).json(json!({
        "error": { "code": status, "message": message, "errors": [{ "message": message, "domain": domain, "reason": reason }], "status": name }
    }))
}

pub(super) async fn free_busy(state: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    {
        let mut g = lock(&state);
        g.stats.google_requests += 1;
        if !g.bearer_ok(&req, TokenKind::Google) {
            g.stats.unauthorized += 1;
            return google_error(
                401,
                "global",
                "authError",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            );
        }
    }
    match gate(&state, Backend::Google).await {
        Err(Refusal::Throttle(secs)) => {
            let mut r = google_error(429, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded");
            if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(actix_web::http::header::RETRY_AFTER, v);
            }
            return r;
        }
        Err(Refusal::Fail(status)) => return google_error(status, "global", "backendError", "The service is currently unavailable."),
        Ok(()) => {}
    }
    let Ok(b) = serde_json::from_slice::<FreeBusyBody>(&body) else {
        return google_error(400, "global", "parseError", "Parse Error");
    };
    let mut g = lock(&state);
    g.note_mailboxes(b.items.len());
    let (Some(min_s), Some(max_s)) = (b.time_min.as_deref(), b.time_max.as_deref()) else {
        return google_error(400, "global", "required", "Missing timeMin or timeMax parameter.");
    };
    // Google wants RFC 3339 with an offset here.
    let (Ok(start), Ok(end)) = (min_s.trim().parse::<jiff::Timestamp>(), max_s.trim().parse::<jiff::Timestamp>()) else {
        return google_error(400, "global", "invalid", "Bad Request");
    };
    let (start, end) = (start.as_millisecond(), end.as_millisecond());
    if end <= start {
        return google_error(400, "calendar", "timeRangeEmpty", "The specified time range is empty.");
    }
    if b.items.len() > MAX_GOOGLE_ITEMS || b.calendar_expansion_max.is_some_and(|n| !(1..=50).contains(&n)) {
        return google_error(400, "global", "tooManyCalendarsRequested", "Too many calendars requested.");
    }
    if b.group_expansion_max.is_some_and(|n| !(1..=100).contains(&n)) {
        return google_error(400, "global", "invalid", "Invalid value for groupExpansionMax.");
    }
    let mut calendars = serde_json::Map::new();
    for item in &b.items {
        if is_unknown(&item.id) {
            g.stats.unknown_mailboxes += 1;
            calendars.insert(item.id.clone(), json!({ "errors": [{ "domain": "global", "reason": "notFound" }], "busy": [] }));
            continue;
        }
        g.stats.mailboxes_answered += 1;
        let events = g.events_in(&item.id, start, end);
        let busy: Vec<Value> =
            busy_periods(&events, start, end).into_iter().map(|(s, e)| json!({ "start": google_time(s), "end": google_time(e) })).collect();
        calendars.insert(item.id.clone(), json!({ "busy": busy }));
    }
    let body = json!({
        "kind": "calendar#freeBusy",
        "timeMin": google_time_ms(start),
        "timeMax": google_time_ms(end),
        "calendars": calendars,
    })
    .to_string();
    HttpResponse::Ok().content_type("application/json; charset=UTF-8").body(g.finish(body))
}
