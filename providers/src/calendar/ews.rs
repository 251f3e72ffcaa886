//! Exchange Web Services `GetUserAvailability` (SOAP): request builder, response parser and
//! error classification — pure, bounded, never panics.
//!
//! The request asks for a `DetailedMerged` view in a fixed UTC time zone (every `Bias` 0, no
//! daylight transition: `Month`/`DayOrder` 0, the Windows convention for "no DST"), so the
//! naive times Exchange returns (`2024-05-06T09:00:00`) are UTC; times with `Z` or an offset
//! are accepted as well. The parser streams the document with quick-xml and matches elements
//! by **local name**: servers use `m:`/`t:` prefixes, default namespaces, or the `https://`
//! spelling found in Microsoft's own examples, and all of them parse the same.
//!
//! Answers come back in request order (`FreeBusyResponseArray/FreeBusyResponse`, one per
//! mailbox); a `ResponseClass="Error"` answer becomes that mailbox's `error`
//! ("ErrorMailRecipientNotFound: …"); `Success` and `Warning` answers carry data. Items of a
//! private appointment (`IsPrivate` true) lose subject and location here, before anything
//! else sees them.
//!
//! ## Errors and the Exchange Online retirement
//! [`classify_error`] reads a failed exchange (HTTP status + body) into an [`EwsError`]:
//! throttling (`ErrorServerBusy` fault with `MessageXml/Value[@Name="BackOffMilliseconds"]`,
//! HTTP 429/503), authentication (401), other SOAP faults, and **retirement**. Microsoft blocks
//! EWS in Exchange Online tenant by tenant from 1 October 2026 (`EWSEnabled` turned False unless
//! the admin set it True with an `EWSAllowedAppIDs` allow list) and switches it off for everyone
//! on 1 April 2027. Microsoft documents the policy, not the wire shape of a refusal; what
//! clients observe is HTTP 403 Forbidden (a policy block, usually with an empty body). So
//! [`EwsError::Retired`] covers: HTTP 403, HTTP 410 Gone (the likely shape once the endpoint is
//! gone), and any status whose body says EWS is disabled, not enabled, blocked, retired or
//! deprecated, or names `EWSEnabled` / `EWSAllowedAppIDs`. Its message tells the operator to use
//! the Graph calendar provider (`getSchedule`) instead. `ErrorInvalidServerVersion` is *not*
//! treated as retirement: it means the `RequestServerVersion` header is not supported.

use std::fmt::Write as _;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use presence_actors::model::activity::truncate;
use presence_actors::model::UnixMs;

use super::model::{
    bounded_error, bounded_text, check_interval, check_request, merged_digits, naive_utc, parse_time, BusyStatus,
    CalendarError, CalendarItem, MailboxSchedule, MAX_BODY_BYTES, MAX_ITEMS_PER_MAILBOX,
};

/// Most mailboxes per request (also Exchange's distribution-list expansion cap).
pub const MAX_MAILBOXES: usize = 100;
/// Longest time window, in days (Exchange's default; admin-configurable).
pub const MAX_WINDOW_DAYS: i64 = 42;
/// Deepest element nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// Text kept per element, in bytes; longer text is cut.
const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Most `FreeBusyResponse` elements read (a request has at most [`MAX_MAILBOXES`]).
const MAX_RESPONSES: usize = 1_000;
/// Body bytes searched for retirement wording.
const MAX_SNIFF_BYTES: usize = 64 * 1024;

const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const TYPES_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/types";
const MESSAGES_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";

/// What went wrong with an EWS call, as far as the caller must act on it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EwsError {
    /// EWS is blocked or retired for this tenant, mailbox or application (Exchange Online EWS
    /// retirement: blocking from October 2026, shut down April 2027). Retrying will not help.
    #[error(
        "EWS is blocked or retired for this tenant, mailbox or application ({detail}); \
         use the Graph calendar provider (getSchedule) instead"
    )]
    Retired {
        /// What gave it away (status, code, message).
        detail: String,
    },
    /// The server is throttling: wait `back_off_ms` (when given) before the next request.
    #[error("EWS is throttling{}", back_off_ms.map(|ms| format!(": back off {ms} ms")).unwrap_or_default())]
    Throttled {
        /// `BackOffMilliseconds` from the fault's `MessageXml`, when present.
        back_off_ms: Option<u64>,
    },
    /// HTTP 401: the credentials or token were refused.
    #[error("EWS refused the credentials (HTTP 401)")]
    Unauthorized,
    /// Another SOAP fault or error response.
    #[error("EWS fault {code}: {message}")]
    Soap {
        /// `ResponseCode` or the `faultcode` without its prefix.
        code: String,
        /// The fault's message.
        message: String,
    },
    /// An HTTP error without a readable SOAP fault.
    #[error("EWS answered HTTP {status}")]
    Http {
        /// The HTTP status.
        status: u16,
    },
    /// A body that is neither a response nor a fault.
    #[error("unreadable EWS answer: {0}")]
    Malformed(String),
}

/// Builds the SOAP envelope of a `GetUserAvailability` request for `mailboxes` over
/// `[start, end)` (UTC, seconds precision), with a `DetailedMerged` view merged in
/// `interval_minutes` slots (5–1440).
pub fn request(mailboxes: &[&str], start: UnixMs, end: UnixMs, interval_minutes: u32) -> Result<String, CalendarError> {
    check_request(mailboxes, MAX_MAILBOXES, start, end, Some(MAX_WINDOW_DAYS))?;
    check_interval(interval_minutes)?;
    let (from, to) = (naive_utc(start)?, naive_utc(end)?);
    let no_dst = "<t:Bias>0</t:Bias><t:Time>00:00:00</t:Time><t:DayOrder>0</t:DayOrder>\
                  <t:Month>0</t:Month><t:DayOfWeek>Sunday</t:DayOfWeek>";
    let mut x = String::with_capacity(1200 + mailboxes.len() * 200);
    x.push_str(r#"<?xml version="1.0" encoding="utf-8"?>"#);
    let _ = write!(
        x,
        r#"<soap:Envelope xmlns:soap="{SOAP_NS}" xmlns:t="{TYPES_NS}"><soap:Header><t:RequestServerVersion Version="Exchange2013"/></soap:Header><soap:Body>"#
    );
    let _ = write!(x, r#"<GetUserAvailabilityRequest xmlns="{MESSAGES_NS}" xmlns:t="{TYPES_NS}">"#);
    let _ = write!(
        x,
        "<t:TimeZone><t:Bias>0</t:Bias><t:StandardTime>{no_dst}</t:StandardTime><t:DaylightTime>{no_dst}</t:DaylightTime></t:TimeZone>"
    );
    x.push_str("<MailboxDataArray>");
    for m in mailboxes {
        let _ = write!(
            x,
            "<t:MailboxData><t:Email><t:Address>{}</t:Address></t:Email><t:AttendeeType>Required</t:AttendeeType><t:ExcludeConflicts>false</t:ExcludeConflicts></t:MailboxData>",
            quick_xml::escape::escape(*m)
        );
    }
    x.push_str("</MailboxDataArray>");
    let _ = write!(
        x,
        "<t:FreeBusyViewOptions><t:TimeWindow><t:StartTime>{from}</t:StartTime><t:EndTime>{to}</t:EndTime></t:TimeWindow><t:MergedFreeBusyIntervalInMinutes>{interval_minutes}</t:MergedFreeBusyIntervalInMinutes><t:RequestedView>DetailedMerged</t:RequestedView></t:FreeBusyViewOptions>"
    );
    x.push_str("</GetUserAvailabilityRequest></soap:Body></soap:Envelope>");
    Ok(x)
}

/// Parses a `GetUserAvailability` response: one [`MailboxSchedule`] per requested mailbox, in
/// request order. A SOAP fault becomes [`CalendarError::Ews`] (classified as
/// [`classify_error`] would); a different number of answers than mailboxes is an error.
pub fn parse_response(xml: &[u8], mailboxes: &[&str]) -> Result<Vec<MailboxSchedule>, CalendarError> {
    if xml.len() > MAX_BODY_BYTES {
        return Err(CalendarError::TooLarge { max: MAX_BODY_BYTES });
    }
    let doc = scan(xml)?;
    if let Some(f) = &doc.fault {
        return Err(CalendarError::Ews(fault_error(f)));
    }
    if !doc.saw_array {
        return Err(CalendarError::Unexpected("no FreeBusyResponseArray".into()));
    }
    if doc.responses.len() != mailboxes.len() {
        return Err(CalendarError::CountMismatch { expected: mailboxes.len(), got: doc.responses.len() });
    }
    Ok(doc.responses.into_iter().zip(mailboxes).map(|(r, m)| r.finish(m)).collect())
}

/// Classifies a failed EWS exchange from its HTTP status and body (see the module docs).
/// Bodies of any size and shape are accepted; only the first [`MAX_BODY_BYTES`] are read.
pub fn classify_error(http_status: u16, body: &[u8]) -> EwsError {
    let body = &body[..body.len().min(MAX_BODY_BYTES)];
    let doc = scan(body).ok();
    let fault = doc.as_ref().and_then(|d| d.fault.clone().or_else(|| d.first_error.clone()));

    if http_status == 410 {
        return EwsError::Retired { detail: "HTTP 410 Gone: the EWS endpoint no longer exists".into() };
    }
    // Retirement wording: in the fault when there is one; in the raw body when it is not an
    // EWS document at all (HTML error page, plain text) — never in calendar data.
    let retired = match &fault {
        Some(f) => says_retired(&format!("{} {}", f.code(), f.message()).to_lowercase())
            .then(|| format!("HTTP {http_status}, {}: {}", f.code(), f.message())),
        None if !doc.as_ref().is_some_and(|d| d.saw_array) => {
            let head = String::from_utf8_lossy(&body[..body.len().min(MAX_SNIFF_BYTES)]).into_owned();
            says_retired(&head.to_lowercase()).then(|| format!("HTTP {http_status}, {}", truncate(head.trim(), 200)))
        }
        None => None,
    };
    if let Some(detail) = retired {
        return EwsError::Retired { detail: bounded_error(&detail) };
    }
    if http_status == 403 {
        return EwsError::Retired {
            detail: "HTTP 403 Forbidden: Exchange refuses EWS by policy (EWSEnabled / EWSAllowedAppIDs)".into(),
        };
    }
    if http_status == 401 {
        return EwsError::Unauthorized;
    }
    if let Some(f) = &fault {
        return fault_error(f);
    }
    if matches!(http_status, 429 | 503) {
        return EwsError::Throttled { back_off_ms: None };
    }
    if !(200..300).contains(&http_status) {
        return EwsError::Http { status: http_status };
    }
    EwsError::Malformed("no SOAP fault or error response in the body".into())
}

/// Response codes that mean "slow down".
const THROTTLE_CODES: [&str; 3] = ["ErrorServerBusy", "ErrorTooManyObjectsOpened", "ErrorExceededConnectionCount"];

fn fault_error(f: &Fault) -> EwsError {
    let code = f.code();
    if THROTTLE_CODES.iter().any(|c| c.eq_ignore_ascii_case(code)) {
        return EwsError::Throttled { back_off_ms: f.back_off_ms };
    }
    let text = format!("{} {}", code, f.message()).to_lowercase();
    if says_retired(&text) {
        return EwsError::Retired { detail: bounded_error(&format!("{code}: {}", f.message())) };
    }
    EwsError::Soap { code: code.to_string(), message: f.message().to_string() }
}

/// True when lower-cased text says EWS is switched off for good or by policy.
fn says_retired(text: &str) -> bool {
    const SETTINGS: [&str; 4] = ["ewsenabled", "ewsallowedappids", "ewsapplicationaccesspolicy", "ewsallowlist"];
    const STATES: [&str; 10] = [
        "disabled",
        "not enabled",
        "retire",
        "blocked",
        "deprecat",
        "no longer",
        "turned off",
        "shut down",
        "not allowed",
        "allow list",
    ];
    if SETTINGS.iter().any(|s| text.contains(s)) {
        return true;
    }
    let names_ews = has_word(text, "ews") || text.contains("exchange web services");
    names_ews && STATES.iter().any(|s| text.contains(s))
}

/// `word` occurs with no letter or digit right before or after it.
fn has_word(text: &str, word: &str) -> bool {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text.get(from..).and_then(|t| t.find(word)) {
        let at = from + i;
        let end = at + word.len();
        let before = at.checked_sub(1).and_then(|j| b.get(j)).is_some_and(u8::is_ascii_alphanumeric);
        let after = b.get(end).is_some_and(u8::is_ascii_alphanumeric);
        if !before && !after {
            return true;
        }
        from = end;
    }
    false
}

// ---------------------------------------------------------------------------------------------
// The streaming scan.

/// A SOAP fault (or, for [`classify_error`], the first error response).
#[derive(Clone, Debug, Default)]
struct Fault {
    fault_code: Option<String>,
    fault_string: Option<String>,
    response_code: Option<String>,
    message: Option<String>,
    back_off_ms: Option<u64>,
}

impl Fault {
    /// `ResponseCode`, else the `faultcode` without its namespace prefix.
    fn code(&self) -> &str {
        self.response_code
            .as_deref()
            .or(self.fault_code.as_deref().map(|c| c.rsplit(':').next().unwrap_or(c)))
            .unwrap_or("Fault")
    }

    fn message(&self) -> &str {
        self.message.as_deref().or(self.fault_string.as_deref()).unwrap_or("")
    }
}

#[derive(Default)]
struct Response {
    class: Option<String>,
    code: Option<String>,
    message: Option<String>,
    merged: Option<String>,
    items: Vec<CalendarItem>,
    bad_time: bool,
}

impl Response {
    fn is_error(&self) -> bool {
        self.class.as_deref().is_some_and(|c| c.eq_ignore_ascii_case("Error"))
    }

    fn finish(self, mailbox: &str) -> MailboxSchedule {
        if self.is_error() {
            let code = self.code.as_deref().unwrap_or("Error");
            let text = match self.message.as_deref() {
                Some(m) if !m.is_empty() => format!("{code}: {m}"),
                _ => code.to_string(),
            };
            return MailboxSchedule::failed(mailbox, &text);
        }
        if self.bad_time {
            return MailboxSchedule::failed(mailbox, "unreadable StartTime/EndTime in CalendarEvent");
        }
        MailboxSchedule { mailbox: mailbox.to_string(), items: self.items, merged: self.merged, error: None }
    }
}

#[derive(Default)]
struct EventFields {
    start: Option<String>,
    end: Option<String>,
    busy: Option<String>,
    subject: Option<String>,
    location: Option<String>,
    is_meeting: Option<bool>,
    private: bool,
}

#[derive(Default)]
struct Scan {
    fault: Option<Fault>,
    first_error: Option<Fault>,
    saw_array: bool,
    responses: Vec<Response>,
}

/// Elements the scan cares about; everything else is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum El {
    Fault,
    FaultCode,
    FaultString,
    Code,
    Reason,
    Text,
    ResponseCode,
    Message,
    MessageText,
    Value,
    FreeBusyResponseArray,
    FreeBusyResponse,
    ResponseMessage,
    FreeBusyView,
    MergedFreeBusy,
    CalendarEventArray,
    CalendarEvent,
    StartTime,
    EndTime,
    BusyType,
    CalendarEventDetails,
    Subject,
    Location,
    IsMeeting,
    IsPrivate,
    Other,
}

fn element(local: &[u8]) -> El {
    match local {
        b"Fault" => El::Fault,
        b"faultcode" => El::FaultCode,
        b"faultstring" => El::FaultString,
        b"Code" => El::Code,
        b"Reason" => El::Reason,
        b"Text" => El::Text,
        b"ResponseCode" => El::ResponseCode,
        b"Message" => El::Message,
        b"MessageText" => El::MessageText,
        b"Value" => El::Value,
        b"FreeBusyResponseArray" => El::FreeBusyResponseArray,
        b"FreeBusyResponse" => El::FreeBusyResponse,
        b"ResponseMessage" => El::ResponseMessage,
        b"FreeBusyView" => El::FreeBusyView,
        b"MergedFreeBusy" => El::MergedFreeBusy,
        b"CalendarEventArray" => El::CalendarEventArray,
        b"CalendarEvent" => El::CalendarEvent,
        b"StartTime" => El::StartTime,
        b"EndTime" => El::EndTime,
        b"BusyType" => El::BusyType,
        b"CalendarEventDetails" => El::CalendarEventDetails,
        b"Subject" => El::Subject,
        b"Location" => El::Location,
        b"IsMeeting" => El::IsMeeting,
        b"IsPrivate" => El::IsPrivate,
        _ => El::Other,
    }
}

fn xs_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn xml_err(e: impl std::fmt::Display) -> CalendarError {
    CalendarError::Xml(bounded_error(&e.to_string()))
}

/// The scanner's position and the item being read.
struct State {
    stack: Vec<El>,
    text: String,
    in_fault: bool,
    event: Option<EventFields>,
    /// `Value@Name` of the element being read is `BackOffMilliseconds`.
    back_off_value: bool,
    out: Scan,
}

impl State {
    fn parent(&self) -> Option<El> {
        self.stack.last().copied()
    }

    fn inside(&self, el: El) -> bool {
        self.stack.contains(&el)
    }

    fn response(&mut self) -> Option<&mut Response> {
        if self.inside(El::FreeBusyResponse) {
            self.out.responses.last_mut()
        } else {
            None
        }
    }

    fn open(&mut self, el: El, e: &BytesStart<'_>, decoder: quick_xml::encoding::Decoder) -> Result<(), CalendarError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(CalendarError::Xml(format!("elements nested deeper than {MAX_DEPTH}")));
        }
        self.text.clear();
        self.back_off_value = false;
        match el {
            El::Fault => {
                self.in_fault = true;
                self.out.fault.get_or_insert_with(Fault::default);
            }
            El::FreeBusyResponseArray => self.out.saw_array = true,
            El::FreeBusyResponse if self.parent() == Some(El::FreeBusyResponseArray) => {
                if self.out.responses.len() >= MAX_RESPONSES {
                    return Err(CalendarError::Unexpected(format!(
                        "more than {MAX_RESPONSES} FreeBusyResponse elements"
                    )));
                }
                self.out.responses.push(Response::default());
            }
            El::ResponseMessage => {
                if let Some(class) = attribute(e, b"ResponseClass", decoder)? {
                    if let Some(r) = self.response() {
                        r.class = Some(truncate(&class, 32).to_string());
                    }
                }
            }
            El::CalendarEvent if self.parent() == Some(El::CalendarEventArray) => {
                self.event = Some(EventFields::default());
            }
            El::Value => {
                self.back_off_value = attribute(e, b"Name", decoder)?.is_some_and(|n| n == "BackOffMilliseconds");
            }
            _ => {}
        }
        self.stack.push(el);
        Ok(())
    }

    fn close(&mut self, el: El) {
        self.stack.pop();
        let text = std::mem::take(&mut self.text);
        let t = text.trim();
        let parent = self.parent();
        if self.in_fault {
            self.close_in_fault(el, parent, t);
            return;
        }
        match (el, parent) {
            (El::ResponseCode, Some(El::ResponseMessage)) => {
                if let Some(r) = self.response() {
                    r.code = Some(truncate(t, 128).to_string());
                }
            }
            (El::MessageText, Some(El::ResponseMessage)) => {
                if let Some(r) = self.response() {
                    r.message = Some(bounded_error(t));
                }
            }
            (El::ResponseMessage, _) => self.note_first_error(),
            (El::MergedFreeBusy, Some(El::FreeBusyView)) => {
                let m = merged_digits(t);
                if let Some(r) = self.response() {
                    r.merged = m;
                }
            }
            (El::StartTime | El::EndTime | El::BusyType | El::IsPrivate, Some(El::CalendarEvent))
            | (El::Subject | El::Location | El::IsMeeting | El::IsPrivate, Some(El::CalendarEventDetails)) => {
                if let Some(ev) = self.event.as_mut() {
                    match el {
                        El::StartTime => ev.start = Some(t.to_string()),
                        El::EndTime => ev.end = Some(t.to_string()),
                        El::BusyType => ev.busy = Some(t.to_string()),
                        El::Subject => ev.subject = bounded_text(t),
                        El::Location => ev.location = bounded_text(t),
                        El::IsMeeting => ev.is_meeting = xs_bool(t),
                        El::IsPrivate => ev.private |= xs_bool(t) == Some(true),
                        _ => {}
                    }
                }
            }
            (El::CalendarEvent, Some(El::CalendarEventArray)) => {
                if let Some(ev) = self.event.take() {
                    self.finish_event(ev);
                }
            }
            _ => {}
        }
    }

    fn close_in_fault(&mut self, el: El, parent: Option<El>, t: &str) {
        let back_off = self.back_off_value;
        let Some(f) = self.out.fault.as_mut() else { return };
        match (el, parent) {
            (El::Fault, _) => self.in_fault = false,
            (El::FaultCode, _) => f.fault_code = Some(truncate(t, 128).to_string()),
            (El::Value, Some(El::Code)) => f.fault_code = Some(truncate(t, 128).to_string()),
            (El::FaultString, _) | (El::Text, Some(El::Reason)) => f.fault_string = Some(bounded_error(t)),
            (El::ResponseCode, _) => f.response_code = Some(truncate(t, 128).to_string()),
            (El::Message, _) => f.message = Some(bounded_error(t)),
            (El::Value, _) if back_off => f.back_off_ms = t.parse().ok(),
            _ => {}
        }
    }

    /// Remembers the first error answer, for [`classify_error`] of a non-fault body.
    fn note_first_error(&mut self) {
        if self.out.first_error.is_some() {
            return;
        }
        let Some(r) = self.out.responses.last() else { return };
        if r.is_error() && self.inside(El::FreeBusyResponse) {
            self.out.first_error =
                Some(Fault { response_code: r.code.clone(), message: r.message.clone(), ..Fault::default() });
        }
    }

    fn finish_event(&mut self, ev: EventFields) {
        let Some(r) = self.response() else { return };
        let (Some(start), Some(end)) =
            (ev.start.as_deref().and_then(parse_time), ev.end.as_deref().and_then(parse_time))
        else {
            r.bad_time = true;
            return;
        };
        if end <= start || r.items.len() >= MAX_ITEMS_PER_MAILBOX {
            return;
        }
        let status = ev.busy.as_deref().and_then(BusyStatus::parse).unwrap_or(BusyStatus::NoData);
        r.items.push(CalendarItem {
            start,
            end,
            status,
            subject: if ev.private { None } else { ev.subject },
            location: if ev.private { None } else { ev.location },
            private: ev.private,
            is_meeting: ev.is_meeting,
        });
    }

    fn push_text(&mut self, s: &str) {
        if self.text.len() < MAX_FIELD_BYTES {
            self.text.push_str(truncate(s, MAX_FIELD_BYTES - self.text.len()));
        }
    }
}

/// An attribute's unescaped value, matched by local name.
fn attribute(
    e: &BytesStart<'_>,
    name: &[u8],
    decoder: quick_xml::encoding::Decoder,
) -> Result<Option<String>, CalendarError> {
    for a in e.attributes() {
        let a = a.map_err(xml_err)?;
        if a.key.local_name().as_ref() == name {
            return Ok(Some(a.decode_and_unescape_value(decoder).map_err(xml_err)?.into_owned()));
        }
    }
    Ok(None)
}

fn scan(xml: &[u8]) -> Result<Scan, CalendarError> {
    let mut reader = Reader::from_reader(xml);
    let mut st = State {
        stack: Vec::with_capacity(16),
        text: String::new(),
        in_fault: false,
        event: None,
        back_off_value: false,
        out: Scan::default(),
    };
    loop {
        let decoder = reader.decoder();
        match reader.read_event().map_err(xml_err)? {
            Event::Start(e) => {
                let el = element(e.local_name().as_ref());
                st.open(el, &e, decoder)?;
            }
            Event::Empty(e) => {
                let el = element(e.local_name().as_ref());
                st.open(el, &e, decoder)?;
                st.close(el);
            }
            Event::End(_) => {
                if st.stack.is_empty() {
                    return Err(CalendarError::Xml("unmatched end tag".into()));
                }
                let el = st.stack.last().copied().unwrap_or(El::Other);
                st.close(el);
            }
            Event::Text(t) => {
                let s = t.xml_content().map_err(xml_err)?;
                st.push_text(&s);
            }
            Event::CData(t) => {
                let s = t.decode().map_err(xml_err)?;
                st.push_text(&s);
            }
            Event::GeneralRef(r) => {
                if r.is_char_ref() {
                    match r.resolve_char_ref().map_err(xml_err)? {
                        Some(c) => st.push_text(c.encode_utf8(&mut [0; 4])),
                        None => return Err(CalendarError::Xml("bad character reference".into())),
                    }
                } else {
                    let name = r.decode().map_err(xml_err)?;
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => st.push_text(s),
                        None => {
                            return Err(CalendarError::Xml(format!("unknown entity &{};", truncate(&name, 32))));
                        }
                    }
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !st.stack.is_empty() {
        return Err(CalendarError::Xml("document ends inside an element".into()));
    }
    Ok(st.out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::tests::{assert_mailbox, parsed, DAY0, H, M};
    use crate::mutate::{no_input_panics, Mutator, Xorshift, XML_TOKENS};
    use crate::calendar::model::{to_signals, SignalPolicy};
    use presence_actors::model::{Activity, Availability};

    const DETAILED: &[u8] = include_bytes!("../../../fixtures/calendar/ews_detailed_merged.xml");
    const BUSY: &[u8] = include_bytes!("../../../fixtures/calendar/ews_server_busy.xml");
    const RETIRED: &[u8] = include_bytes!("../../../fixtures/calendar/ews_retired.xml");
    const MAILBOXES: [&str; 2] = ["alice@contoso.com", "ghost@contoso.com"];

    #[test]
    fn builds_a_detailed_merged_request_in_utc() {
        let x = request(&["alice@contoso.com", "o'brien&co@contoso.com"], DAY0, DAY0 + 24 * H, 15).expect("request");
        assert!(x.starts_with(r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/""#));
        assert!(x.contains(r#"<soap:Header><t:RequestServerVersion Version="Exchange2013"/></soap:Header>"#));
        assert!(x.contains(
            r#"<GetUserAvailabilityRequest xmlns="http://schemas.microsoft.com/exchange/services/2006/messages""#
        ));
        assert!(x.contains("<t:TimeZone><t:Bias>0</t:Bias><t:StandardTime><t:Bias>0</t:Bias><t:Time>00:00:00</t:Time><t:DayOrder>0</t:DayOrder><t:Month>0</t:Month><t:DayOfWeek>Sunday</t:DayOfWeek></t:StandardTime><t:DaylightTime><t:Bias>0</t:Bias>"));
        assert!(x.contains("<t:Address>alice@contoso.com</t:Address>"));
        assert!(x.contains("<t:Address>o&apos;brien&amp;co@contoso.com</t:Address>"));
        assert_eq!(
            x.matches("<t:AttendeeType>Required</t:AttendeeType><t:ExcludeConflicts>false</t:ExcludeConflicts>")
                .count(),
            2
        );
        assert!(x.contains("<t:TimeWindow><t:StartTime>2024-05-06T00:00:00</t:StartTime><t:EndTime>2024-05-07T00:00:00</t:EndTime></t:TimeWindow>"));
        assert!(x.contains("<t:MergedFreeBusyIntervalInMinutes>15</t:MergedFreeBusyIntervalInMinutes><t:RequestedView>DetailedMerged</t:RequestedView>"));
        // The request is itself well-formed XML.
        assert!(scan(x.as_bytes()).is_ok());
    }

    #[test]
    fn request_limits() {
        let many: Vec<String> = (0..101).map(|i| format!("u{i}@contoso.com")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(
            request(&many, DAY0, DAY0 + H, 30),
            Err(CalendarError::TooManyMailboxes { max: 100, got: 101 })
        ));
        assert!(request(&many[..100], DAY0, DAY0 + H, 30).is_ok());
        assert!(matches!(request(&[], DAY0, DAY0 + H, 30), Err(CalendarError::NoMailboxes)));
        assert!(matches!(request(&["a@b"], DAY0, DAY0, 30), Err(CalendarError::EmptyWindow)));
        assert!(matches!(request(&["a@b"], DAY0 + H, DAY0, 30), Err(CalendarError::EmptyWindow)));
        assert!(request(&["a@b"], DAY0, DAY0 + 42 * 24 * H, 30).is_ok());
        assert!(matches!(
            request(&["a@b"], DAY0, DAY0 + 42 * 24 * H + 1, 30),
            Err(CalendarError::WindowTooLong { max_days: 42 })
        ));
        assert!(matches!(request(&["a@b"], DAY0, DAY0 + H, 4), Err(CalendarError::BadInterval(4))));
        assert!(matches!(request(&["a\u{1}@b"], DAY0, DAY0 + H, 30), Err(CalendarError::InvalidAddress(_))));
    }

    #[test]
    fn parses_the_detailed_merged_fixture() {
        let got = parse_response(DETAILED, &MAILBOXES).expect("parse");
        assert_eq!(got.len(), 2);
        let items = [
            parsed(DAY0 + 9 * H, DAY0 + 10 * H, BusyStatus::Busy, Some("Budget review"), Some("Room 4.12"), false, Some(true)),
            parsed(DAY0 + 10 * H, DAY0 + 11 * H, BusyStatus::Tentative, Some("Architecture sync"), None, false, Some(true)),
            parsed(DAY0 + 11 * H, DAY0 + 12 * H, BusyStatus::Busy, None, None, true, Some(false)),
            parsed(DAY0 + 12 * H, DAY0 + 13 * H, BusyStatus::Free, Some("Lunch"), None, false, Some(false)),
            parsed(DAY0 + 13 * H, DAY0 + 17 * H, BusyStatus::WorkingElsewhere, Some("Home office"), None, false, Some(false)),
            parsed(DAY0 + 8 * H, DAY0 + 9 * H, BusyStatus::Oof, Some("Dentist"), Some("Town"), false, Some(false)),
            parsed(DAY0 + 17 * H, DAY0 + 18 * H, BusyStatus::NoData, None, None, false, None),
        ];
        assert_mailbox(&got[0], "alice@contoso.com", Some("3220"), &items);
        let ghost = &got[1];
        assert_eq!(ghost.mailbox, "ghost@contoso.com");
        assert!(ghost.items.is_empty());
        assert_eq!(
            ghost.error.as_deref(),
            Some("ErrorMailRecipientNotFound: Unable to resolve e-mail address <>SMTP:ghost@contoso.com to an Active Directory object.")
        );
        // The private item's subject appears nowhere in the output.
        assert!(!format!("{got:?}").contains("Interview"));
    }

    #[test]
    fn fixture_maps_to_the_expected_signals() {
        let got = parse_response(DETAILED, &MAILBOXES).expect("parse");
        let p = SignalPolicy { keep_details: true, ..SignalPolicy::default() };
        let at = |t: i64| to_signals(&got[0], t, &p).into_iter().next().expect("one signal");
        let s = at(DAY0 + 8 * H + 30 * M);
        assert!(s.ooo);
        assert_eq!(s.activity, Some(Activity::OutOfOffice));
        let s = at(DAY0 + 9 * H + 30 * M);
        assert_eq!((s.availability, s.activity.clone()), (Some(Availability::Busy), Some(Activity::InAMeeting)));
        assert_eq!(s.detail.and_then(|d| d.subject).as_deref(), Some("Budget review"));
        let s = at(DAY0 + 11 * H + 30 * M);
        assert!(s.detail.as_ref().is_some_and(|d| d.private && d.subject.is_none() && d.location.is_none()));
        let s = at(DAY0 + 12 * H + 30 * M);
        assert_eq!(s.valid_from, Some(DAY0 + 13 * H), "lunch is free: the next item is announced");
        assert_eq!(s.activity, Some(Activity::WorkingElsewhere));
        assert!(to_signals(&got[1], DAY0, &p).is_empty());
    }

    #[test]
    fn prefixes_and_https_namespaces_do_not_matter() {
        let xml = br#"<?xml version="1.0"?>
<GetUserAvailabilityResponse xmlns="https://schemas.microsoft.com/exchange/services/2006/messages">
 <FreeBusyResponseArray><FreeBusyResponse><ResponseMessage ResponseClass="Success"><ResponseCode>NoError</ResponseCode></ResponseMessage>
  <FreeBusyView><x:MergedFreeBusy xmlns:x="urn:whatever">0120</x:MergedFreeBusy>
   <CalendarEventArray xmlns="https://schemas.microsoft.com/exchange/services/2006/types"><CalendarEvent>
    <StartTime>2006-10-16T06:00:00-07:00</StartTime><EndTime>2006-10-16T06:30:00-07:00</EndTime><BusyType>Busy</BusyType>
    <IsPrivate>false</IsPrivate><CalendarEventDetails><Subject>A &amp; B &#x263A;</Subject><Location/></CalendarEventDetails>
   </CalendarEvent></CalendarEventArray></FreeBusyView></FreeBusyResponse></FreeBusyResponseArray></GetUserAvailabilityResponse>"#;
        let got = parse_response(xml, &["x@y"]).expect("parse");
        assert_eq!(got[0].merged.as_deref(), Some("0120"));
        let it = &got[0].items[0];
        assert_eq!(it.subject.as_deref(), Some("A & B \u{263A}"));
        assert_eq!(it.location, None);
        assert_eq!(it.start, 1_161_003_600_000); // 2006-10-16T13:00:00Z
        assert_eq!(it.end - it.start, 30 * M);
    }

    #[test]
    fn structural_problems_are_errors() {
        assert!(matches!(
            parse_response(DETAILED, &["only-one"]),
            Err(CalendarError::CountMismatch { expected: 1, got: 2 })
        ));
        assert!(matches!(parse_response(b"<a><b></a>", &[]), Err(CalendarError::Xml(_))));
        assert!(matches!(parse_response(b"<a><b>", &[]), Err(CalendarError::Xml(_))));
        assert!(matches!(parse_response(b"<a>&bogus;</a>", &[]), Err(CalendarError::Xml(_))));
        assert!(matches!(parse_response(b"<a/>", &[]), Err(CalendarError::Unexpected(_))));
        let deep = format!("{}{}", "<a>".repeat(MAX_DEPTH + 1), "</a>".repeat(MAX_DEPTH + 1));
        assert!(matches!(parse_response(deep.as_bytes(), &[]), Err(CalendarError::Xml(_))));
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(matches!(parse_response(&huge, &[]), Err(CalendarError::TooLarge { .. })));
        // A bad time spoils that mailbox only.
        let bad = String::from_utf8_lossy(DETAILED).replacen("2024-05-06T09:00:00", "soon", 1);
        let got = parse_response(bad.as_bytes(), &MAILBOXES).expect("parse");
        assert!(got[0].items.is_empty());
        assert!(got[0].error.as_deref().is_some_and(|e| e.contains("StartTime")));
    }

    #[test]
    fn server_busy_is_throttling_with_back_off() {
        assert_eq!(classify_error(500, BUSY), EwsError::Throttled { back_off_ms: Some(297_749) });
        assert_eq!(classify_error(200, BUSY), EwsError::Throttled { back_off_ms: Some(297_749) });
        match parse_response(BUSY, &["a@b"]) {
            Err(CalendarError::Ews(EwsError::Throttled { back_off_ms: Some(297_749) })) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(classify_error(429, b""), EwsError::Throttled { back_off_ms: None });
        assert_eq!(classify_error(503, b"<html>Service Unavailable</html>"), EwsError::Throttled { back_off_ms: None });
    }

    #[test]
    fn retirement_shapes_say_use_graph() {
        let e = classify_error(500, RETIRED);
        assert!(matches!(&e, EwsError::Retired { detail } if detail.contains("ErrorAccessDenied")), "{e:?}");
        assert!(e.to_string().contains("Graph calendar provider"), "{e}");
        assert!(matches!(parse_response(RETIRED, &["a@b"]), Err(CalendarError::Ews(EwsError::Retired { .. }))));
        for (status, body) in [
            (403, &b""[..]),
            (403, b"<html><body>403 - Forbidden: Access is denied.</body></html>"),
            (410, b""),
            (401, b"EWS has been retired for Exchange Online. Use Microsoft Graph."),
            (500, b"Exchange Web Services are disabled for this organization"),
            (400, b"The application is not in the EWSAllowedAppIDs list"),
        ] {
            let e = classify_error(status, body);
            assert!(matches!(e, EwsError::Retired { .. }), "{status} {:?} → {e:?}", String::from_utf8_lossy(body));
            assert!(e.to_string().contains("use the Graph calendar provider"));
        }
    }

    #[test]
    fn other_failures_are_classified() {
        assert_eq!(classify_error(401, b""), EwsError::Unauthorized);
        assert_eq!(classify_error(404, b"not here"), EwsError::Http { status: 404 });
        assert!(matches!(classify_error(200, b"<ok/>"), EwsError::Malformed(_)));
        let fault = br#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>
<faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">a:ErrorInvalidServerVersion</faultcode>
<faultstring xml:lang="en-US">The specified server version is invalid.</faultstring></s:Fault></s:Body></s:Envelope>"#;
        assert_eq!(
            classify_error(500, fault),
            EwsError::Soap {
                code: "ErrorInvalidServerVersion".into(),
                message: "The specified server version is invalid.".into()
            }
        );
        // An error answer inside a 200 body is reported by its code.
        let e = classify_error(200, DETAILED);
        assert!(matches!(&e, EwsError::Soap { code, .. } if code == "ErrorMailRecipientNotFound"), "{e:?}");
        // "views" and "news" are not "EWS".
        assert!(!says_retired("the news views were disabled"));
        assert!(says_retired("ews is disabled"));
    }

    /// Deterministic xorshift mutations of the fixture(s), 12,000 of them: no input panics the
    /// parser, and enough mutants still parse to reach the deep paths.
    #[test]
    fn no_input_panics_the_parser() {
        let own: [&[u8]; 5] = [b"\"", b"ResponseClass=\"Error\"", b"<CalendarEvent>", b"&#99999999;", b"<s:Fault>"];
        let tokens = [XML_TOKENS, &own].concat();
        let seeds = [DETAILED, BUSY, RETIRED];
        let mut rng = Xorshift::new(0x2545_F491_4F6C_DD1D);
        // Counted: the mutants that got past the XML layer (answers and classified faults).
        no_input_panics(&Mutator::new(&tokens, &[]), &seeds, 12_000, &mut rng, 1_000, |v, rng| {
            let _ = classify_error((rng.next() % 600) as u16, v);
            usize::from(!matches!(parse_response(v, &MAILBOXES), Err(CalendarError::Xml(_))))
        });
    }
}
