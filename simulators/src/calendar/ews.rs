//! Exchange EWS `GetUserAvailability` over SOAP, with Exchange's faults and the block of a
//! retired EWS:
//!
//! - `POST /EWS/Exchange.asmx` (SOAP `GetUserAvailability`, HTTP Basic or app token): ≤ 100
//!   mailboxes, ≤ 42 days, merged interval 5–1440, answers in request order in the request's
//!   `TimeZone` (its `Bias` only; daylight rules are ignored — the client sends UTC); every
//!   `RequestedView` is honoured (`DetailedMerged`, `Detailed`, `FreeBusyMerged`, `FreeBusy`,
//!   `MergedOnly`, `None`). Items get stable ids (mailbox hash + position); `IsMeeting` and
//!   `IsReminderSet` are true for busy and tentative items; private items have empty
//!   `Subject` and `Location`. Request-level errors are SOAP faults with HTTP 500, as Exchange
//!   sends them (`ErrorSchemaValidation` for a body that is not well-formed or lacks a
//!   required element, `ErrorMailboxDataArrayTooBig`, `ErrorTimeIntervalTooBig`, …). The
//!   request is read by a small, bounded, tolerant XML scan (no XML crate): well-formedness,
//!   the five predefined entities and character references, local names only.
//!
//! With [`Misbehave::ews_retired`](super::Misbehave::ews_retired) every request is refused as
//! Exchange Online does once EWS is retired (HTTP 403, empty body); throttling is an
//! `ErrorServerBusy` fault with `BackOffMilliseconds`, other failures an HTML error page.

use std::fmt::Write as _;

use actix_web::{web, HttpRequest, HttpResponse};

use super::tokens::TokenKind;
use super::{gate, is_unknown, lock, merged_view, parse_time, utc_fmt, Backend, Refusal, Shared, Status, DAY_MS, MINUTE_MS};
use crate::basic_credentials;
use presence_sip::body::xml_escape;

/// Most mailboxes per EWS GetUserAvailability request.
pub const MAX_EWS_MAILBOXES: usize = 100;
/// Longest EWS GetUserAvailability window, in days (Exchange's default).
pub const MAX_EWS_WINDOW_DAYS: i64 = 42;
/// Deepest element nesting the EWS request scan accepts.
pub(super) const MAX_XML_DEPTH: usize = 64;

const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const TYPES_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/types";
const MESSAGES_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";
const ERRORS_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/errors";

impl Status {
    fn ews(self) -> &'static str {
        match self {
            Status::Free => "Free",
            Status::Tentative => "Tentative",
            Status::Busy => "Busy",
            Status::Oof => "OOF",
            Status::WorkingElsewhere => "WorkingElsewhere",
        }
    }
}

/// A SOAP fault as Exchange sends it (`faultcode` `a:{code}`, `detail` with the response code
/// and message, and `MessageXml` when given), with HTTP `status`.
fn soap_fault(status: u16, code: &str, message: &str, message_xml: &str) -> HttpResponse {
    let (code, message) = (xml_escape(code), xml_escape(message));
    let mut x = String::with_capacity(900 + message.len() * 2 + message_xml.len());
    x.push_str(r#"<?xml version="1.0" encoding="utf-8"?>"#);
    let _ = write!(
        x,
        r#"<s:Envelope xmlns:s="{SOAP_NS}"><s:Body><s:Fault><faultcode xmlns:a="{TYPES_NS}">a:{code}</faultcode><faultstring xml:lang="en-US">{message}</faultstring><detail><e:ResponseCode xmlns:e="{ERRORS_NS}">{code}</e:ResponseCode><e:Message xmlns:e="{ERRORS_NS}">{message}</e:Message>"#
    );
    if !message_xml.is_empty() {
        let _ = write!(x, r#"<t:MessageXml xmlns:t="{TYPES_NS}">{message_xml}</t:MessageXml>"#);
    }
    x.push_str("</detail></s:Fault></s:Body></s:Envelope>");
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("text/xml; charset=utf-8")
        .body(x)
}

/// `ErrorSchemaValidation` (HTTP 500) at byte `offset` of `doc`.
fn schema_fault(doc: &[u8], offset: usize, violation: &str) -> HttpResponse {
    let upto = doc.get(..offset.min(doc.len())).unwrap_or_default();
    let line = upto.iter().filter(|b| **b == b'\n').count() + 1;
    let col = upto.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    let violation = format!("{violation} Line {line}, position {col}.");
    let xml = format!(
        "<t:LineNumber>{line}</t:LineNumber><t:LinePosition>{col}</t:LinePosition><t:Violation>{}</t:Violation>",
        xml_escape(&violation)
    );
    soap_fault(500, "ErrorSchemaValidation", &format!("The request failed schema validation: {violation}"), &xml)
}

/// What a GetUserAvailability request asks, as read by [`read_ews_request`].
#[derive(Debug, Default)]
pub(super) struct EwsQuery {
    saw_request: bool,
    pub(super) mailboxes: Vec<String>,
    pending_address: Option<String>,
    pub(super) bias: Option<String>,
    pub(super) start: Option<String>,
    pub(super) end: Option<String>,
    pub(super) interval: Option<String>,
    pub(super) view: Option<String>,
}

/// Reads the request's fields (see [`EwsQuery`]); `Err((offset, message))` when the body is
/// not well-formed XML.
pub(super) fn read_ews_request(doc: &str) -> Result<EwsQuery, (usize, String)> {
    let mut q = EwsQuery::default();
    scan_xml(doc, |path, text| {
        let Some((&name, up)) = path.split_last() else { return };
        let parent = up.last().copied();
        let grandparent = up.len().checked_sub(2).and_then(|i| up.get(i)).copied();
        let under = |el: &str| up.contains(&el);
        match name {
            "GetUserAvailabilityRequest" => q.saw_request = true,
            "Address" if under("MailboxData") && under("MailboxDataArray") => q.pending_address = Some(text.trim().to_string()),
            "MailboxData" if parent == Some("MailboxDataArray") => {
                let a = q.pending_address.take().unwrap_or_default();
                q.mailboxes.push(a);
            }
            "Bias" if parent == Some("TimeZone") && grandparent == Some("GetUserAvailabilityRequest") => q.bias = Some(text.trim().to_string()),
            "StartTime" if parent == Some("TimeWindow") => q.start = Some(text.trim().to_string()),
            "EndTime" if parent == Some("TimeWindow") => q.end = Some(text.trim().to_string()),
            "MergedFreeBusyIntervalInMinutes" if under("FreeBusyViewOptions") => q.interval = Some(text.trim().to_string()),
            "RequestedView" if under("FreeBusyViewOptions") => q.view = Some(text.trim().to_string()),
            _ => {}
        }
    })?;
    Ok(q)
}

/// A small well-formedness scan: calls `on_close(path, text)` with the local names from the
/// root down to each element as it closes, and the element's own (entity-decoded) text.
/// Prolog, comments and CDATA are accepted; DTDs are refused (Exchange prohibits them).
/// `Err((byte offset, message))` on the first problem. Never panics; nesting is bounded.
fn scan_xml<'a>(doc: &'a str, mut on_close: impl FnMut(&[&'a str], &str)) -> Result<(), (usize, String)> {
    let mut i = if doc.starts_with('\u{feff}') { '\u{feff}'.len_utf8() } else { 0 };
    let mut names: Vec<&'a str> = Vec::new();
    let mut locals: Vec<&'a str> = Vec::new();
    let mut text = String::new();
    let mut seen_root = false;
    let err = |at: usize, m: &str| -> Result<(), (usize, String)> { Err((at, m.to_string())) };
    while let Some(rest) = doc.get(i..) {
        if rest.is_empty() {
            break;
        }
        if !rest.starts_with('<') {
            let len = rest.find('<').unwrap_or(rest.len());
            let raw = rest.get(..len).unwrap_or_default();
            if names.is_empty() {
                if !raw.trim().is_empty() {
                    return err(i, "Data at the root level is invalid.");
                }
            } else if let Err(m) = decode_text(raw, &mut text) {
                return err(i, m);
            }
            i += len;
            continue;
        }
        let skip = |open: usize, close: &str| rest.get(open..).and_then(|r| r.find(close)).map(|k| open + k + close.len());
        if rest.starts_with("<?") {
            let Some(n) = skip(2, "?>") else { return err(i, "Unexpected end of file in a processing instruction.") };
            i += n;
            continue;
        }
        if rest.starts_with("<!--") {
            let Some(n) = skip(4, "-->") else { return err(i, "Unexpected end of file in a comment.") };
            i += n;
            continue;
        }
        if rest.starts_with("<![CDATA[") {
            if names.is_empty() {
                return err(i, "Data at the root level is invalid.");
            }
            let Some(n) = skip(9, "]]>") else { return err(i, "Unexpected end of file in CDATA.") };
            text.push_str(rest.get(9..n - 3).unwrap_or_default());
            i += n;
            continue;
        }
        if rest.starts_with("<!") {
            return err(i, "For security reasons DTD is prohibited in this XML document.");
        }
        // A tag: find its '>' outside quoted attribute values.
        let mut quote: Option<char> = None;
        let mut close = None;
        for (k, c) in rest.char_indices().skip(1) {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '<') => return err(i + k, "'<' is an unexpected token."),
                (None, '>') => {
                    close = Some(k);
                    break;
                }
                _ => {}
            }
        }
        let Some(close) = close else { return err(i, "Unexpected end of file while parsing a tag.") };
        let inner = rest.get(1..close).unwrap_or_default();
        let tag_at = i;
        i += close + 1;
        if let Some(name) = inner.strip_prefix('/') {
            let name = name.trim_end();
            match names.pop() {
                Some(open) if open == name => {
                    on_close(&locals, &text);
                    locals.pop();
                    text.clear();
                }
                Some(open) => return err(tag_at, &format!("The '{open}' start tag does not match the end tag of '{name}'.")),
                None => return err(tag_at, "Unexpected end tag."),
            }
            continue;
        }
        let (inner, empty) = match inner.strip_suffix('/') {
            Some(x) => (x, true),
            None => (inner, false),
        };
        let name = inner.split(|c: char| c.is_whitespace()).next().unwrap_or_default();
        let valid = name.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if !valid {
            return err(tag_at, "Name cannot begin with this character.");
        }
        if names.is_empty() && seen_root {
            return err(tag_at, "There are multiple root elements.");
        }
        if names.len() >= MAX_XML_DEPTH {
            return err(tag_at, "Elements are nested too deeply.");
        }
        seen_root = true;
        text.clear();
        names.push(name);
        locals.push(name.rsplit(':').next().unwrap_or(name));
        if empty {
            on_close(&locals, "");
            names.pop();
            locals.pop();
        }
    }
    if !names.is_empty() {
        return err(doc.len(), "Unexpected end of file has occurred. The following elements are not closed.");
    }
    if !seen_root {
        return err(0, "Root element is missing.");
    }
    Ok(())
}

/// Appends `raw` to `out`, resolving the predefined entities and character references.
fn decode_text(raw: &str, out: &mut String) -> Result<(), &'static str> {
    let mut rest = raw;
    while let Some(k) = rest.find('&') {
        out.push_str(rest.get(..k).unwrap_or_default());
        let after = rest.get(k + 1..).unwrap_or_default();
        let Some(semi) = after.find(';').filter(|s| *s <= 10) else { return Err("An entity reference is not terminated.") };
        let name = after.get(..semi).unwrap_or_default();
        let c = match name {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(h) = name.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()
                } else {
                    name.strip_prefix('#').and_then(|d| d.parse::<u32>().ok())
                };
                match code.and_then(char::from_u32) {
                    Some(c) if c != '\0' => c,
                    _ => return Err("Reference to an undeclared entity or an invalid character."),
                }
            }
        };
        out.push(c);
        rest = after.get(semi + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(())
}

/// A naive EWS time in the request's zone (`bias` minutes west of UTC) → UTC ms; times with
/// `Z` or an offset are taken as they are.
fn ews_time_in(s: &str, bias_min: i64) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t.as_millisecond());
    }
    parse_time(s, None).map(|local| local.saturating_add(bias_min * MINUTE_MS))
}

/// A UTC time as a naive EWS time in the request's zone.
fn ews_time_out(ms: i64, bias_min: i64) -> String {
    utc_fmt(ms.saturating_sub(bias_min * MINUTE_MS), "%Y-%m-%dT%H:%M:%S")
}

fn ews_timezone(bias: i64) -> String {
    let no_dst = "<t:Bias>0</t:Bias><t:Time>00:00:00</t:Time><t:DayOrder>0</t:DayOrder><t:Month>0</t:Month><t:DayOfWeek>Sunday</t:DayOfWeek>";
    format!("<t:TimeZone><t:Bias>{bias}</t:Bias><t:StandardTime>{no_dst}</t:StandardTime><t:DaylightTime>{no_dst}</t:DaylightTime></t:TimeZone>")
}

/// 64-bit FNV-1a, for stable item ids.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

pub(super) async fn ews(state: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    {
        let mut g = lock(&state);
        g.stats.ews_requests += 1;
        if g.misbehave.ews_retired {
            g.stats.retired_refusals += 1;
            return HttpResponse::Forbidden().finish();
        }
        let basic_ok = basic_credentials(&req).is_some_and(|(u, p)| u == g.cfg.ews_username && p == g.cfg.ews_password);
        if !basic_ok && !g.bearer_ok(&req, TokenKind::Entra) {
            g.stats.unauthorized += 1;
            return HttpResponse::Unauthorized().insert_header(("WWW-Authenticate", "Basic realm=\"sim-ews\"")).finish();
        }
    }
    match gate(&state, Backend::Ews).await {
        Err(Refusal::Throttle(secs)) => {
            let ms = secs.saturating_mul(1000);
            return soap_fault(
                500,
                "ErrorServerBusy",
                "The server cannot service this request right now. Try again later.",
                &format!(r#"<t:Value Name="BackOffMilliseconds">{ms}</t:Value>"#),
            );
        }
        Err(Refusal::Fail(status)) => {
            let code = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::SERVICE_UNAVAILABLE);
            return HttpResponse::build(code).content_type("text/html").body("<html><body>Service Unavailable</body></html>");
        }
        Ok(()) => {}
    }
    let doc = match std::str::from_utf8(&body) {
        Ok(d) => d,
        Err(e) => return schema_fault(&body, e.valid_up_to(), "Invalid character in the given encoding."),
    };
    let q = match read_ews_request(doc) {
        Ok(q) => q,
        Err((at, m)) => return schema_fault(&body, at, &m),
    };
    ews_answer(&state, &body, q)
}

fn ews_answer(state: &Shared, body: &[u8], q: EwsQuery) -> HttpResponse {
    let end_of = body.len();
    if !q.saw_request {
        return soap_fault(500, "ErrorInvalidRequest", "The request is invalid: this server answers GetUserAvailability only.", "");
    }
    let (Some(start_s), Some(end_s)) = (q.start.as_deref(), q.end.as_deref()) else {
        return schema_fault(body, end_of, "The element 'FreeBusyViewOptions' has incomplete content: TimeWindow with StartTime and EndTime expected.");
    };
    let Some(bias) = q.bias.as_deref().map_or(Some(0), |b| b.parse::<i64>().ok()).filter(|b| b.abs() <= 1440) else {
        return schema_fault(body, end_of, "The 'Bias' element is invalid.");
    };
    let (Some(start), Some(end)) = (ews_time_in(start_s, bias), ews_time_in(end_s, bias)) else {
        return schema_fault(body, end_of, "The 'StartTime' or 'EndTime' element is invalid - the value is not a valid dateTime.");
    };
    let Some(interval) = q.interval.as_deref().map_or(Some(30), |i| i.parse::<i64>().ok()) else {
        return schema_fault(body, end_of, "The 'MergedFreeBusyIntervalInMinutes' element is invalid - the value is not a valid int.");
    };
    let view = q.view.as_deref().unwrap_or("DetailedMerged");
    let (merged, events, details) = match view {
        "None" => (false, false, false),
        "MergedOnly" => (true, false, false),
        "FreeBusy" => (false, true, false),
        "FreeBusyMerged" => (true, true, false),
        "Detailed" => (false, true, true),
        "DetailedMerged" => (true, true, true),
        _ => return schema_fault(body, end_of, "The 'RequestedView' element is invalid - the value is not a valid FreeBusyViewType."),
    };
    let mut g = lock(state);
    g.note_mailboxes(q.mailboxes.len());
    if q.mailboxes.is_empty() {
        return soap_fault(500, "ErrorMailboxDataArrayEmpty", "The MailboxDataArray element in the request is empty.", "");
    }
    if q.mailboxes.len() > MAX_EWS_MAILBOXES {
        return soap_fault(
            500,
            "ErrorMailboxDataArrayTooBig",
            &format!("The number of mailboxes in the request ({}) exceeds the maximum of {MAX_EWS_MAILBOXES}.", q.mailboxes.len()),
            "",
        );
    }
    if end <= start {
        return soap_fault(500, "ErrorInvalidTimeInterval", "The specified time interval is invalid: the start time must be before the end time.", "");
    }
    if end - start > MAX_EWS_WINDOW_DAYS * DAY_MS {
        return soap_fault(500, "ErrorTimeIntervalTooBig", &format!("The time window is larger than the allowed limit of {MAX_EWS_WINDOW_DAYS} days."), "");
    }
    if !(5..=1440).contains(&interval) {
        return soap_fault(500, "ErrorInvalidMergedFreeBusyInterval", "The merged free/busy interval must be between 5 and 1440 minutes.", "");
    }
    let mut x = String::with_capacity(2048 + q.mailboxes.len() * 1024);
    x.push_str(r#"<?xml version="1.0" encoding="utf-8"?>"#);
    let _ = write!(
        x,
        r#"<s:Envelope xmlns:s="{SOAP_NS}"><s:Header><h:ServerVersionInfo MajorVersion="15" MinorVersion="20" MajorBuildNumber="7472" MinorBuildNumber="21" Version="V2018_01_08" xmlns:h="{TYPES_NS}" xmlns="{TYPES_NS}"/></s:Header><s:Body><m:GetUserAvailabilityResponse xmlns:m="{MESSAGES_NS}" xmlns:t="{TYPES_NS}"><m:FreeBusyResponseArray>"#
    );
    for mailbox in &q.mailboxes {
        x.push_str("<m:FreeBusyResponse>");
        if is_unknown(mailbox) {
            g.stats.unknown_mailboxes += 1;
            let _ = write!(
                x,
                r#"<m:ResponseMessage ResponseClass="Error"><m:MessageText>Unable to resolve e-mail address &lt;&gt;SMTP:{} to an Active Directory object.</m:MessageText><m:ResponseCode>ErrorMailRecipientNotFound</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey><m:MessageXml><ExceptionType xmlns="{ERRORS_NS}">Microsoft.Exchange.InfoWorker.Common.Availability.MailRecipientNotFoundException</ExceptionType><ExceptionCode xmlns="{ERRORS_NS}">5009</ExceptionCode></m:MessageXml></m:ResponseMessage><m:FreeBusyView><t:FreeBusyViewType>None</t:FreeBusyViewType></m:FreeBusyView></m:FreeBusyResponse>"#,
                xml_escape(mailbox)
            );
            continue;
        }
        g.stats.mailboxes_answered += 1;
        let evs = g.events_in(mailbox, start, end);
        let _ = write!(
            x,
            r#"<m:ResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode></m:ResponseMessage><m:FreeBusyView><t:FreeBusyViewType>{view}</t:FreeBusyViewType>"#
        );
        if merged {
            let _ = write!(x, "<t:MergedFreeBusy>{}</t:MergedFreeBusy>", merged_view(&evs, start, end, interval * MINUTE_MS));
        }
        if events {
            x.push_str("<t:CalendarEventArray>");
            let base = fnv(&mailbox.to_lowercase());
            for (n, e) in evs.iter().enumerate() {
                let _ = write!(
                    x,
                    "<t:CalendarEvent><t:StartTime>{}</t:StartTime><t:EndTime>{}</t:EndTime><t:BusyType>{}</t:BusyType>",
                    ews_time_out(e.start, bias),
                    ews_time_out(e.end, bias),
                    e.status.ews()
                );
                if details {
                    let meeting = matches!(e.status, Status::Busy | Status::Tentative);
                    let _ = write!(x, "<t:CalendarEventDetails><t:ID>{:016X}{:08X}</t:ID>", base, n);
                    if e.private {
                        x.push_str("<t:Subject /><t:Location />");
                    } else {
                        if let Some(s) = &e.subject {
                            let _ = write!(x, "<t:Subject>{}</t:Subject>", xml_escape(s));
                        }
                        if let Some(l) = &e.location {
                            let _ = write!(x, "<t:Location>{}</t:Location>", xml_escape(l));
                        }
                    }
                    let _ = write!(
                        x,
                        "<t:IsMeeting>{meeting}</t:IsMeeting><t:IsRecurring>false</t:IsRecurring><t:IsException>false</t:IsException><t:IsReminderSet>{meeting}</t:IsReminderSet><t:IsPrivate>{}</t:IsPrivate></t:CalendarEventDetails>",
                        e.private
                    );
                }
                x.push_str("</t:CalendarEvent>");
            }
            x.push_str("</t:CalendarEventArray>");
        }
        let _ = write!(
            x,
            "<t:WorkingHours>{}<t:WorkingPeriodArray><t:WorkingPeriod><t:DayOfWeek>Monday Tuesday Wednesday Thursday Friday</t:DayOfWeek><t:StartTimeInMinutes>480</t:StartTimeInMinutes><t:EndTimeInMinutes>1020</t:EndTimeInMinutes></t:WorkingPeriod></t:WorkingPeriodArray></t:WorkingHours></m:FreeBusyView></m:FreeBusyResponse>",
            ews_timezone(bias)
        );
    }
    x.push_str("</m:FreeBusyResponseArray></m:GetUserAvailabilityResponse></s:Body></s:Envelope>");
    HttpResponse::Ok().content_type("text/xml; charset=utf-8").body(g.finish(x))
}
