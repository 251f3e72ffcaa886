//! Calls to peers over HTTP: every answer is read in bounded chunks and cut at its limit (a
//! broken or hostile peer cannot make the hub buffer more than the call allows), every call
//! has a deadline sized to it, and every failure is one [`CallError`], classified so a
//! provider can tell throttling, refusal, a missing answer and a bad answer apart.
//!
//! Long-lived streams (the O2G event channel, MBN long polls) read chunk by chunk themselves
//! with an idle timeout; they still use [`CallError`] and [`retry_after`].

use std::time::Duration;

use presence_actors::model::activity::truncate;
use presence_actors::model::{now_ms, UnixMs};

/// Longest `Retry-After` honoured, in milliseconds (1 hour).
pub const MAX_RETRY_AFTER_MS: u64 = 3_600_000;
/// Longest error text kept from a peer's error body, in bytes.
const MAX_MESSAGE: usize = 300;

/// How much a call may read and how long it may take (send, headers and the whole body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body read; a longer answer fails with [`CallError::TooLarge`].
    pub max_body: usize,
    /// Deadline for the whole call; past it the call fails with [`CallError::TimedOut`].
    pub timeout: Duration,
}

impl Limits {
    /// `max_body` bytes within `timeout`.
    pub const fn new(max_body: usize, timeout: Duration) -> Limits {
        Limits { max_body, timeout }
    }
}

/// Why a call to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No connection, or the connection broke (DNS, refused, reset, TLS).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No complete answer within the call's deadline (zero: the HTTP client's own deadline).
    #[error("no answer {}", deadline_text(*.0))]
    TimedOut(Duration),
    /// The answer was longer than the call allows; it was cut and dropped.
    #[error("answer larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// `429` (or a throttling fault): nothing should go out before this has passed.
    #[error("throttled; retry after {} s", .0.as_secs_f32())]
    Throttled(Duration),
    /// The token endpoint refused the credentials.
    #[error("token refused: {0}")]
    Token(String),
    /// Another non-2xx status.
    #[error("HTTP {status}{}{message}", if message.is_empty() { "" } else { ": " })]
    Status {
        /// HTTP status.
        status: u16,
        /// The peer's error code and message, if its body had them (bounded).
        message: String,
        /// `Retry-After`, if given.
        retry_after: Option<Duration>,
    },
    /// A 2xx answer that could not be used.
    #[error("bad answer: {0}")]
    Parse(String),
}

fn deadline_text(d: Duration) -> String {
    if d.is_zero() {
        "in time".into()
    } else {
        format!("within {} s", d.as_secs_f32())
    }
}

impl CallError {
    /// The HTTP status, when the peer answered with one that failed the call.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            CallError::Throttled(_) => Some(429),
            _ => None,
        }
    }

    /// True for `401`/`403`: credentials or a session to renew.
    pub fn unauthorized(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }

    /// How long the peer asked to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Throttled(d) => Some(*d),
            CallError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<super::json::ParseError> for CallError {
    fn from(e: super::json::ParseError) -> Self {
        CallError::Parse(e.to_string())
    }
}

/// An answer, read whole (within its limit).
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// `Retry-After`, parsed.
    pub retry_after: Option<Duration>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// An answer from its parts (tests, and callers that build one from a stream).
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Answer {
        Answer { status, headers: Default::default(), retry_after: None, body: body.into() }
    }

    /// True for 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body of a 2xx answer; else the failure it stands for: `429` becomes
    /// [`CallError::Throttled`] (`Retry-After`, or `default_retry` without one), anything else
    /// [`CallError::Status`] with the peer's own error text (see [`error_text`]).
    pub fn into_body(self, default_retry: Duration) -> Result<Vec<u8>, CallError> {
        if self.ok() {
            return Ok(self.body);
        }
        Err(self.into_error(default_retry))
    }

    /// The failure a non-2xx answer stands for (see [`Answer::into_body`]).
    pub fn into_error(self, default_retry: Duration) -> CallError {
        if self.status == 429 {
            return CallError::Throttled(self.retry_after.unwrap_or(default_retry));
        }
        CallError::Status { status: self.status, message: error_text(&self.body), retry_after: self.retry_after }
    }
}

/// Sends `req` and reads the answer within `limits`: the body in chunks, failing as soon as it
/// passes `max_body` (a `Content-Length` over the limit fails before any is read).
pub async fn send(req: reqwest::RequestBuilder, limits: Limits) -> Result<Answer, CallError> {
    match tokio::time::timeout(limits.timeout, send_unbounded_time(req, limits.max_body)).await {
        Ok(r) => r,
        Err(_) => Err(CallError::TimedOut(limits.timeout)),
    }
}

async fn send_unbounded_time(req: reqwest::RequestBuilder, max_body: usize) -> Result<Answer, CallError> {
    let mut res = req.send().await.map_err(transport)?;
    let status = res.status().as_u16();
    let retry_after = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| retry_after(v, now_ms()));
    let body = read_body(&mut res, max_body).await?;
    Ok(Answer { status, headers: std::mem::take(res.headers_mut()), retry_after, body })
}

/// Reads a response's body in chunks, at most `max` bytes.
pub async fn read_body(res: &mut reqwest::Response, max: usize) -> Result<Vec<u8>, CallError> {
    if res.content_length().is_some_and(|n| n > max as u64) {
        return Err(CallError::TooLarge { max });
    }
    let mut body = Vec::with_capacity(res.content_length().map_or(0, |n| n as usize).min(max).min(64 * 1024));
    while let Some(chunk) = res.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > max {
            return Err(CallError::TooLarge { max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Opens a long-lived stream (a chunked event channel, a long poll): sends `req` and waits for
/// the answer's head within `limits.timeout`. A 2xx answer comes back unread, for the caller to
/// read chunk by chunk with its own idle timeout and its own bound on what it keeps; any other
/// answer is read (at most `limits.max_body` bytes, within the same deadline) and comes back as
/// the [`CallError`] it stands for (see [`Answer::into_error`]). reqwest's own timeout covers
/// the whole body, so `req` needs one as long as the stream may live.
pub async fn open_stream(req: reqwest::RequestBuilder, limits: Limits, default_retry: Duration) -> Result<reqwest::Response, CallError> {
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut res = match tokio::time::timeout_at(deadline, req.send()).await {
        Ok(r) => r.map_err(transport)?,
        Err(_) => return Err(CallError::TimedOut(limits.timeout)),
    };
    if res.status().is_success() {
        return Ok(res);
    }
    let mut answer = Answer::new(res.status().as_u16(), Vec::new());
    answer.retry_after = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| retry_after(v, now_ms()));
    // The error text is a courtesy: a body that is too long or too slow leaves it out.
    if let Ok(Ok(body)) = tokio::time::timeout_at(deadline, read_body(&mut res, limits.max_body)).await {
        answer.body = body;
    }
    answer.headers = std::mem::take(res.headers_mut());
    Err(answer.into_error(default_retry))
}

/// A transport error as a [`CallError`] (the URL left out: it may carry a token).
pub fn transport(e: reqwest::Error) -> CallError {
    if e.is_timeout() {
        return CallError::TimedOut(Duration::ZERO);
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut src = std::error::Error::source(&e);
    // The cause chain says what actually happened ("connection refused").
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    CallError::Unreachable(truncate(&text, MAX_MESSAGE).to_string())
}

/// The peer's own words from an error body: `error.code` + `error.message` (Microsoft Graph,
/// Google), `error` + `error_description` (OAuth2), `code` + `message`, or a short text body.
/// Empty when there is nothing readable.
pub fn error_text(body: &[u8]) -> String {
    use serde_json::Value;
    let head = &body[..body.len().min(64 * 1024)];
    let s = |v: Option<&Value>| -> Option<String> {
        match v? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let text = match serde_json::from_slice::<Value>(head) {
        Ok(v) => {
            let (code, message) = match v.get("error") {
                Some(e @ Value::Object(_)) => (s(e.get("code")), s(e.get("message"))),
                Some(_) => (s(v.get("error")), s(v.get("error_description"))),
                None => (s(v.get("code")), s(v.get("message"))),
            };
            match (code, message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(x), None) | (None, Some(x)) => x,
                (None, None) => String::new(),
            }
        }
        Err(_) => {
            let t = String::from_utf8_lossy(&head[..head.len().min(MAX_MESSAGE)]);
            // Not JSON: a short plain-text reason is worth keeping, markup is not.
            if t.trim_start().starts_with('<') { String::new() } else { t.split_whitespace().collect::<Vec<_>>().join(" ") }
        }
    };
    truncate(&text, MAX_MESSAGE).to_string()
}

/// A `Retry-After` header value as a wait from `now`: delta-seconds or an HTTP-date
/// (IMF-fixdate, plus the obsolete RFC 850 and asctime forms). A date in the past gives zero;
/// the wait is capped at [`MAX_RETRY_AFTER_MS`]. `None` when unparsable.
pub fn retry_after(value: &str, now: UnixMs) -> Option<Duration> {
    retry_after_ms(value, now).map(Duration::from_millis)
}

/// [`retry_after`] in milliseconds.
pub fn retry_after_ms(value: &str, now: UnixMs) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() || v.len() > 64 {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: only overflow can fail, and an overflowing wait is capped anyway.
        let secs = v.parse::<u64>().unwrap_or(u64::MAX);
        return Some(secs.saturating_mul(1000).min(MAX_RETRY_AFTER_MS));
    }
    let at = http_date(v)?;
    let wait = at.saturating_sub(now).clamp(0, MAX_RETRY_AFTER_MS as i64);
    u64::try_from(wait).ok()
}

fn http_date(v: &str) -> Option<UnixMs> {
    static RFC2822: jiff::fmt::rfc2822::DateTimeParser = jiff::fmt::rfc2822::DateTimeParser::new();
    if let Ok(t) = RFC2822.parse_timestamp(v) {
        return Some(t.as_millisecond());
    }
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"].iter().find_map(|f| {
        let dt = jiff::fmt::strtime::parse(f, v).ok()?.to_datetime().ok()?;
        jiff::tz::Offset::UTC.to_timestamp(dt).ok().map(|t| t.as_millisecond())
    })
}

/// A peer on loopback for the tests of calls and streams (here and in the providers): every
/// request gets `answer` (raw HTTP/1.1, written as given), and the connection is held open
/// until the client closes it; `None` answers nothing at all.
#[cfg(test)]
pub(crate) mod loopback {
    use std::io::{Read, Write};

    /// Starts the peer; its base URL, `http://127.0.0.1:{port}`.
    pub(crate) fn peer(answer: Option<Vec<u8>>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port on loopback");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let answer = answer.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n @ 1..) = conn.read(&mut buf) {
                        // A read that starts a request (not the rest of a body) gets the answer.
                        let head = &buf[..n];
                        let request = head.iter().position(|b| *b == b' ').is_some_and(|i| i > 0 && head[..i].iter().all(u8::is_ascii_uppercase));
                        if let (Some(a), true) = (&answer, request) {
                            let _ = conn.write_all(a);
                        }
                    }
                });
            }
        });
        url
    }

    /// An answer: `status` (`"200 OK"`), the headers and the body as given.
    pub(crate) fn answer(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut a = format!("HTTP/1.1 {status}\r\n");
        for (k, v) in headers {
            a.push_str(&format!("{k}: {v}\r\n"));
        }
        a.push_str("\r\n");
        let mut a = a.into_bytes();
        a.extend_from_slice(body);
        a
    }

    /// A client that never goes through a proxy.
    pub(crate) fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().expect("an HTTP client")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> UnixMs {
        presence_actors::model::parse_rfc3339(s).expect("test time")
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = ms("2015-10-21T07:27:30Z");
        let r = |v: &str| retry_after_ms(v, now);
        assert_eq!(r("120"), Some(120_000));
        assert_eq!(r(" 0 "), Some(0));
        assert_eq!(r("7200"), Some(MAX_RETRY_AFTER_MS));
        assert_eq!(r("99999999999999999999999"), Some(MAX_RETRY_AFTER_MS));
        assert_eq!(r("Wed, 21 Oct 2015 07:28:00 GMT"), Some(30_000));
        assert_eq!(r("Wednesday, 21-Oct-15 07:28:00 GMT"), Some(30_000));
        assert_eq!(r("Wed Oct 21 07:28:00 2015"), Some(30_000));
        assert_eq!(r("Wed, 21 Oct 2015 07:00:00 GMT"), Some(0), "past date: retry now");
        assert_eq!(r("Thu, 22 Oct 2015 07:28:00 GMT"), Some(MAX_RETRY_AFTER_MS));
        for bad in ["", "-5", "1.5", "soon", "Wed, 32 Oct 2015 07:28:00 GMT"] {
            assert_eq!(r(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn error_bodies_give_the_peers_words() {
        assert_eq!(error_text(br#"{"error":{"code":"TooManyRequests","message":"Slow down"}}"#), "TooManyRequests: Slow down");
        assert_eq!(error_text(br#"{"error":{"code":404,"message":"Not Found"}}"#), "404: Not Found");
        assert_eq!(error_text(br#"{"error":"invalid_grant","error_description":"AADSTS70008"}"#), "invalid_grant: AADSTS70008");
        assert_eq!(error_text(br#"{"code":"40106","message":"expired"}"#), "40106: expired");
        assert_eq!(error_text(b"Service Unavailable\r\n"), "Service Unavailable");
        assert_eq!(error_text(b"<html><body>500</body></html>"), "");
        assert_eq!(error_text(b""), "");
        assert!(error_text(&vec![b'x'; 100_000]).len() <= MAX_MESSAGE);
    }

    #[tokio::test]
    async fn answers_are_cut_at_their_limit() {
        use super::loopback::{answer, client, peer};
        let limits = Limits::new(1024, Duration::from_secs(5));
        let claimed = peer(Some(answer("200 OK", &[("content-length", "400000000")], b"")));
        assert_eq!(send(client().get(claimed), limits).await.unwrap_err(), CallError::TooLarge { max: 1024 });
        let mut chunks = Vec::new();
        for _ in 0..8 {
            chunks.extend_from_slice(b"200\r\n");
            chunks.extend_from_slice(&[b'x'; 512]);
            chunks.extend_from_slice(b"\r\n");
        }
        chunks.extend_from_slice(b"0\r\n\r\n");
        let chunked = peer(Some(answer("200 OK", &[("transfer-encoding", "chunked")], &chunks)));
        assert_eq!(send(client().get(chunked), limits).await.unwrap_err(), CallError::TooLarge { max: 1024 });
        let fits = peer(Some(answer("200 OK", &[("content-length", "2")], b"{}")));
        assert_eq!(send(client().get(fits), limits).await.unwrap().body, b"{}");
    }

    #[tokio::test]
    async fn streams_open_unread_or_fail_as_call_errors() {
        use super::loopback::{answer, client, peer};
        let limits = Limits::new(1024, Duration::from_millis(300));
        let open = peer(Some(answer("200 OK", &[("transfer-encoding", "chunked")], b"3\r\nabc\r\n")));
        let mut res = open_stream(client().post(open), limits, Duration::ZERO).await.unwrap();
        assert_eq!(res.chunk().await.unwrap().as_deref(), Some(&b"abc"[..]));
        let gone = br#"{"message":"session gone"}"#;
        let refused = peer(Some(answer("401 Unauthorized", &[("content-length", &gone.len().to_string())], gone)));
        let e = open_stream(client().post(refused), limits, Duration::ZERO).await.unwrap_err();
        assert!(e.unauthorized(), "{e}");
        assert_eq!(e.to_string(), "HTTP 401: session gone");
        let busy = peer(Some(answer("429 Too Many Requests", &[("retry-after", "7"), ("content-length", "0")], b"")));
        assert_eq!(open_stream(client().post(busy), limits, Duration::ZERO).await.unwrap_err(), CallError::Throttled(Duration::from_secs(7)));
        let silent = peer(None);
        assert_eq!(open_stream(client().post(silent), limits, Duration::ZERO).await.unwrap_err(), CallError::TimedOut(limits.timeout));
    }

    #[test]
    fn answers_classify_into_call_errors() {
        let mut a = Answer::new(429, "");
        a.retry_after = Some(Duration::from_secs(3));
        assert_eq!(a.into_body(Duration::from_secs(10)), Err(CallError::Throttled(Duration::from_secs(3))));
        assert_eq!(Answer::new(429, "").into_body(Duration::from_secs(10)), Err(CallError::Throttled(Duration::from_secs(10))));
        let e = Answer::new(503, r#"{"error":{"code":"ServiceUnavailable","message":"x"}}"#).into_body(Duration::ZERO).unwrap_err();
        assert_eq!(e.status(), Some(503));
        assert_eq!(e.to_string(), "HTTP 503: ServiceUnavailable: x");
        assert!(Answer::new(401, "").into_body(Duration::ZERO).unwrap_err().unauthorized());
        assert_eq!(Answer::new(204, "").into_body(Duration::ZERO), Ok(Vec::new()));
    }

    /// A peer that streams an endless answer (a broken or hostile peer) is cut at the call's
    /// limit: the call fails with `TooLarge` having read at most the limit plus one chunk, and
    /// the connection is dropped, so the peer can send no more than socket buffers hold.
    #[tokio::test]
    async fn an_endless_answer_is_cut_at_the_limit() {
        use super::super::test_peer::{Reply, TestPeer};
        let peer = TestPeer::start(|_| Reply::Endless(vec![b'x'; 64 * 1024])).await;
        let limits = Limits::new(1024 * 1024, Duration::from_secs(20));
        let t0 = std::time::Instant::now();
        let r = send(reqwest::Client::new().get(format!("{}/presences", peer.url)), limits).await;
        assert_eq!(r.unwrap_err(), CallError::TooLarge { max: 1024 * 1024 });
        assert!(t0.elapsed() < Duration::from_secs(5), "refused at once, not after reading it all: {:?}", t0.elapsed());
        // The peer notices the client went away long before 400 MB.
        let t1 = std::time::Instant::now();
        while peer.endless_sent.lock().unwrap().is_empty() {
            assert!(t1.elapsed() < Duration::from_secs(10), "the client kept reading");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sent = peer.endless_sent.lock().unwrap()[0];
        assert!(sent < 64 * 1024 * 1024, "the peer sent {sent} bytes before the client hung up");
    }

    /// A `Content-Length` over the limit is refused before any of the body is read.
    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_at_once() {
        use super::super::test_peer::{Reply, TestPeer};
        let peer = TestPeer::start(|_| Reply::Status(200, "y".repeat(5000))).await;
        let r = send(reqwest::Client::new().get(peer.url.clone()), Limits::new(4096, Duration::from_secs(5))).await;
        assert_eq!(r.unwrap_err(), CallError::TooLarge { max: 4096 });
        let ok = send(reqwest::Client::new().get(peer.url.clone()), Limits::new(5000, Duration::from_secs(5))).await.unwrap();
        assert_eq!((ok.status, ok.body.len()), (200, 5000));
    }

    /// A peer that never answers fails the call at its deadline.
    #[tokio::test]
    async fn a_hanging_peer_fails_at_the_deadline() {
        use super::super::test_peer::{Reply, TestPeer};
        let peer = TestPeer::start(|_| Reply::Hang).await;
        let t0 = std::time::Instant::now();
        let r = send(reqwest::Client::new().get(peer.url.clone()), Limits::new(4096, Duration::from_millis(300))).await;
        assert_eq!(r.unwrap_err(), CallError::TimedOut(Duration::from_millis(300)));
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
}
