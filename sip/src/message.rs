//! SIP messages (RFC 3261 §7): parsing with limits, the few derived fields every layer above
//! needs (Call-ID, CSeq, From/To tags, the top Via), building requests and responses, and framing
//! on stream transports (§18.3).
//!
//! Header syntax is parsed by `ezk-sip-types` (typed headers: Via, From/To, CSeq, Contact,
//! Event, Subscription-State, Expires, the authentication headers…). This module adds what a
//! server facing the network needs around it: a size limit, a header-count limit, the checks
//! that make a message usable (mandatory headers present and well formed, CSeq method equal to
//! the request method, Content-Length consistent with the body) and errors that say which of
//! them failed, so the transport can answer `400 Bad Request` with a reason or drop a bad
//! response. Nothing here panics on any input (fuzzed below and run over RFC 4475).

use bytes::{Bytes, BytesMut};
use bytesstr::BytesStr;
use ezk_sip_types::header::typed::{CSeq, CallID, FromTo, Via};
use ezk_sip_types::msg::{Line, MessageLine, PullParser};
use ezk_sip_types::parse::Parse;
use ezk_sip_types::uri::SipUri;
use ezk_sip_types::{Headers, Method};
/// Header names (`Name::TO`, …) for [`Message::header`], re-exported for users of this crate.
pub use ezk_sip_types::Name;
use std::fmt::{self, Write as _};

/// Largest message accepted on any transport (the UDP datagram limit; RFC 3261 §18.1.1 keeps
/// UDP messages far smaller, but SfB and RLMI notifications can be large over TCP).
pub const MAX_MESSAGE_LEN: usize = 65_535;
/// Most header lines in one message.
pub const MAX_HEADER_LINES: usize = 128;

/// `SIP-If-Match` (RFC 3903), which `ezk-sip-types` does not name.
pub fn sip_if_match() -> Name {
    Name::custom("SIP-If-Match", &["sip-if-match"])
}

/// `SIP-ETag` (RFC 3903).
pub fn sip_etag() -> Name {
    Name::custom("SIP-ETag", &["sip-etag"])
}

/// Why a message was not accepted. The text is suitable for a `400` reason phrase / warning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message larger than {MAX_MESSAGE_LEN} bytes")]
    TooLarge,
    #[error("more than {MAX_HEADER_LINES} header lines")]
    TooManyHeaders,
    #[error("incomplete message head")]
    Incomplete,
    #[error("header line is not UTF-8")]
    NotUtf8,
    #[error("malformed start line")]
    BadStartLine,
    #[error("unsupported URI scheme in the Request-URI")]
    UnsupportedUriScheme,
    #[error("unsupported SIP version")]
    BadVersion,
    #[error("malformed header line")]
    BadHeaderLine,
    #[error("missing or malformed {0} header")]
    BadHeader(&'static str),
    #[error("CSeq method does not match the request method")]
    CSeqMismatch,
    #[error("Content-Length is malformed")]
    BadContentLength,
    #[error("body shorter than Content-Length")]
    ShortBody,
    #[error("status code out of range")]
    BadStatus,
}

/// The first line.
#[derive(Debug, Clone)]
pub enum StartLine {
    Request { method: Method, uri: SipUri, uri_text: String },
    Response { code: u16, reason: String },
}

/// A parsed, checked SIP message.
#[derive(Debug, Clone)]
pub struct Message {
    pub start: StartLine,
    pub headers: Headers,
    pub body: Bytes,
    pub call_id: BytesStr,
    pub cseq: u32,
    pub cseq_method: Method,
    pub from: FromTo,
    pub to: FromTo,
    /// The top Via (the one a response is matched on / sent back along).
    pub via: Via,
}

impl Message {
    /// Parses one complete message (a UDP datagram or a frame cut by [`Framer`]).
    /// Bytes after the body announced by Content-Length are ignored (RFC 3261 §18.3).
    pub fn parse(buffer: Bytes) -> Result<Message, ParseError> {
        if buffer.len() > MAX_MESSAGE_LEN {
            return Err(ParseError::TooLarge);
        }
        // Leading CRLFs (keep-alives, RFC 5626 §4.4.1) are allowed before a message.
        let skip = buffer.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
        let buffer = buffer.slice(skip..);
        let mut parser = PullParser::new(&buffer, 0);
        let mut start: Option<MessageLine> = None;
        let mut headers = Headers::with_capacity(16);
        let mut lines = 0usize;
        let mut uri_text = String::new();
        for item in &mut parser {
            let line = item.map_err(|_| ParseError::Incomplete)?;
            let line = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
            if start.is_none() {
                start = Some(parse_start_line(&buffer, line, &mut uri_text)?);
                continue;
            }
            lines += 1;
            if lines > MAX_HEADER_LINES {
                return Err(ParseError::TooManyHeaders);
            }
            // Folded lines: CRLF + whitespace is one SP before interpretation (§7.3.1).
            let parsed = if line.contains(['\r', '\n']) {
                let unfolded = Bytes::from(unfold(line));
                let text = std::str::from_utf8(&unfolded).map_err(|_| ParseError::NotUtf8)?;
                Line::parse(&unfolded, text).map(|(_, l)| l).map_err(|_| ())
            } else {
                Line::parse(&buffer, line).map(|(_, l)| l).map_err(|_| ())
            };
            match parsed {
                Ok(l) if !l.name.as_print_str().is_empty() => headers.insert(l.name, l.value),
                _ => return Err(ParseError::BadHeaderLine),
            }
        }
        let head_end = parser.head_end();
        let start = start.ok_or(ParseError::BadStartLine)?;
        let body = match headers.get_raw(&Name::CONTENT_LENGTH).next() {
            Some(v) => {
                let len: usize = v.trim().parse().map_err(|_| ParseError::BadContentLength)?;
                if head_end.checked_add(len).is_none_or(|end| end > buffer.len()) {
                    return Err(ParseError::ShortBody);
                }
                buffer.slice(head_end..head_end + len)
            }
            None => buffer.slice(head_end.min(buffer.len())..),
        };
        if headers.get_raw(&Name::CONTENT_LENGTH).count() > 1 {
            return Err(ParseError::BadContentLength);
        }

        let call_id = headers.get_named::<CallID>().map_err(|_| ParseError::BadHeader("Call-ID"))?.0;
        if call_id.trim().is_empty() || call_id.contains(char::is_whitespace) {
            return Err(ParseError::BadHeader("Call-ID"));
        }
        let cseq = headers.get_named::<CSeq>().map_err(|_| ParseError::BadHeader("CSeq"))?;
        let from = single::<FromTo>(&headers, Name::FROM, "From")?;
        let to = single::<FromTo>(&headers, Name::TO, "To")?;
        let via = top_via(&headers)?;
        let start = match start {
            MessageLine::Request(rl) => {
                if cseq.method != rl.method {
                    return Err(ParseError::CSeqMismatch);
                }
                if let Some(v) = headers.get_raw(&Name::MAX_FORWARDS).next() {
                    v.trim().parse::<u8>().map_err(|_| ParseError::BadHeader("Max-Forwards"))?;
                }
                StartLine::Request { method: rl.method, uri: rl.uri, uri_text }
            }
            MessageLine::Response(sl) => {
                let code = sl.code.into_u16();
                if !(100..=699).contains(&code) {
                    return Err(ParseError::BadStatus);
                }
                StartLine::Response { code, reason: sl.reason.map(|r| r.to_string()).unwrap_or_default() }
            }
        };
        Ok(Message { start, headers, body, call_id, cseq: cseq.cseq, cseq_method: cseq.method, from, to, via })
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method, or None for a response.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code, or None for a request.
    pub fn code(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The top Via's branch parameter.
    pub fn branch(&self) -> Option<&str> {
        self.via.params.get_val("branch").map(|b| b.as_str())
    }

    /// The first value of a header, trimmed.
    pub fn header(&self, name: &Name) -> Option<&str> {
        self.headers.get_raw(name).next().map(|v| v.trim())
    }

    /// Every value of a header, comma lists split (for Supported, Require, Allow-Events…).
    pub fn header_tokens(&self, name: &Name) -> Vec<&str> {
        self.headers
            .get_raw(name)
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// The Event header's package (without parameters), lower-cased comparison left to callers.
    pub fn event(&self) -> Option<&str> {
        self.header(&Name::EVENT).map(|e| e.split(';').next().unwrap_or("").trim())
    }

    /// The Expires header as a number, or `Err` when present but malformed.
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        match self.header(&Name::EXPIRES) {
            None => Ok(None),
            Some(v) => v.parse::<u32>().map(Some).map_err(|_| ParseError::BadHeader("Expires")),
        }
    }

    /// The media type of the body without parameters, lower case.
    pub fn content_type(&self) -> Option<String> {
        self.header(&Name::CONTENT_TYPE).map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
    }

    /// The whole `Content-Type` value, parameters included (a multipart body's boundary).
    pub fn content_type_value(&self) -> Option<&str> {
        self.header(&Name::CONTENT_TYPE)
    }

    /// The Request-URI as received.
    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri_text, .. } => Some(uri_text),
            StartLine::Response { .. } => None,
        }
    }

    /// The user part of the Request-URI (`alice` of `sip:alice@example.com`).
    pub fn request_user(&self) -> Option<&str> {
        self.request_uri().and_then(uri_user)
    }
}

/// Checks every Via value strictly (each comma-separated element must parse completely) and
/// returns the top one.
fn top_via(headers: &Headers) -> Result<Via, ParseError> {
    use ezk_sip_types::header::HeaderParse;
    let bad = ParseError::BadHeader("Via");
    let mut top = None;
    for raw in headers.get_raw(&Name::VIA) {
        let src = Bytes::copy_from_slice(raw.as_bytes());
        let mut rest = std::str::from_utf8(&src).map_err(|_| bad.clone())?.trim();
        loop {
            let (remaining, via) = Via::parse(&src, rest).map_err(|_| bad.clone())?;
            top.get_or_insert(via);
            let remaining = remaining.trim_start();
            if remaining.is_empty() {
                break;
            }
            rest = remaining.strip_prefix(',').ok_or(bad.clone())?.trim_start();
            if rest.is_empty() {
                return Err(bad);
            }
        }
    }
    top.ok_or(bad)
}

fn single<H: ezk_sip_types::header::DecodeValues>(headers: &Headers, name: Name, what: &'static str) -> Result<H, ParseError> {
    let mut values = headers.get_raw(&name);
    let first = values.next().ok_or(ParseError::BadHeader(what))?;
    if values.next().is_some() {
        return Err(ParseError::BadHeader(what));
    }
    if !balanced(first) {
        return Err(ParseError::BadHeader(what));
    }
    let first = plain_display_name(first);
    H::decode(&mut std::iter::once(&first)).map(|(_, h)| h).map_err(|_| ParseError::BadHeader(what))
}

/// Quotes closed and angle brackets paired outside quotes, no space just inside `<` `>`
/// (RFC 4475 quotbal, badaspec).
fn balanced(v: &str) -> bool {
    let (mut quoted, mut escaped, mut depth) = (false, false, 0i32);
    let b = v.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => quoted = true,
            b'<' => {
                depth += 1;
                if b.get(i + 1).is_some_and(|n| n.is_ascii_whitespace()) {
                    return false;
                }
            }
            b'>' => {
                depth -= 1;
                if i > 0 && b[i - 1].is_ascii_whitespace() {
                    return false;
                }
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return false;
        }
    }
    !quoted && depth == 0
}

/// `ezk-sip-types` does not read quoted-pairs (`\"`, `\\`) inside a quoted display name (RFC 3261
/// §25.1 allows them; RFC 4475 wsinv and intmeth use them). The display name is only shown,
/// never matched, so it is simplified before the typed parse: escapes resolved, inner quotes and
/// backslashes dropped. The raw header is kept as received.
fn plain_display_name(value: &BytesStr) -> BytesStr {
    let v = value.trim_start();
    if !v.starts_with('"') || !v.contains('\\') {
        return value.clone();
    }
    let mut out = String::with_capacity(v.len());
    out.push('"');
    let mut chars = v[1..].chars();
    let mut closed = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if n != '"' && n != '\\' {
                        out.push(n);
                    }
                }
            }
            '"' => {
                closed = true;
                break;
            }
            c => out.push(c),
        }
    }
    if !closed {
        return value.clone();
    }
    out.push('"');
    out.push_str(chars.as_str());
    BytesStr::from(out)
}

fn parse_start_line(src: &Bytes, line: &str, uri_text: &mut String) -> Result<MessageLine, ParseError> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        if !rest.starts_with("2.0 ") && !rest.starts_with("2.0\t") {
            return Err(ParseError::BadVersion);
        }
        return match MessageLine::parse(src)(line) {
            Ok((_, l @ MessageLine::Response(_))) => Ok(l),
            _ => Err(ParseError::BadStartLine),
        };
    }
    // Method SP Request-URI SP SIP-Version, single spaces (RFC 3261 §7.1; RFC 4475 lwsruri/lwsstart).
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(ParseError::BadStartLine);
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(ParseError::BadStartLine);
    }
    if version != "SIP/2.0" {
        return Err(ParseError::BadVersion);
    }
    let scheme = uri.split(':').next().unwrap_or("");
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return Err(ParseError::UnsupportedUriScheme);
    }
    if uri.contains(['<', '>', '"']) {
        return Err(ParseError::BadStartLine);
    }
    match MessageLine::parse(src)(line) {
        Ok((rest, l @ MessageLine::Request(_))) if rest.trim().is_empty() => {
            uri_text.push_str(uri);
            Ok(l)
        }
        _ => Err(ParseError::BadStartLine),
    }
}

fn unfold(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' || c == '\n' {
            while chars.peek().is_some_and(|c| matches!(c, '\r' | '\n' | ' ' | '\t')) {
                chars.next();
            }
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// The user part of a SIP URI string (`sip:alice@host;x` → `alice`), unescaped characters kept.
pub fn uri_user(uri: &str) -> Option<&str> {
    let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
    let rest = uri.strip_prefix("sip:").or_else(|| uri.strip_prefix("sips:")).or_else(|| uri.strip_prefix("pres:"))?;
    let at = rest.find('@')?;
    let user = &rest[..at];
    Some(user.split(';').next().unwrap_or(user).split(':').next().unwrap_or(user))
}

/// The host[:port] part of a SIP URI string.
pub fn uri_host_port(uri: &str) -> Option<&str> {
    let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
    let rest = uri.strip_prefix("sip:").or_else(|| uri.strip_prefix("sips:"))?;
    let rest = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    Some(rest.split([';', '?', '>']).next().unwrap_or(rest))
}

/// The URI inside a name-addr (`"Alice" <sip:a@b>;tag=1` → `sip:a@b`) or an addr-spec.
pub fn name_addr_uri(value: &str) -> &str {
    let value = value.trim();
    if let (Some(l), Some(r)) = (value.find('<'), value.find('>')) {
        if l < r {
            return &value[l + 1..r];
        }
    }
    value.split(';').next().unwrap_or(value).trim()
}

/// Cuts messages out of a byte stream (TCP, RFC 3261 §18.3): skips keep-alive CRLFs, requires
/// Content-Length, bounds the message size. When a message's Content-Length puts it over
/// [`MAX_MESSAGE_LEN`], its head stays readable through [`Framer::oversized_head`] so the
/// request can be answered `513 Message Too Large` before the connection is closed.
#[derive(Debug, Default)]
pub struct Framer {
    buf: BytesMut,
    /// How much of `buf` is known to hold no end of a head yet: the next search starts there
    /// (a few bytes back, for a `\r\n\r\n` split across reads), so a head that arrives a
    /// byte at a time costs linear time, not quadratic.
    scanned: usize,
}

/// A framing result.
#[derive(Debug)]
pub enum Frame {
    /// One complete message's bytes (still to be parsed).
    Message(Bytes),
    /// A keep-alive ping (CRLFCRLF) that asks for a pong (CRLF).
    Ping,
}

impl Framer {
    pub fn new() -> Framer {
        Framer::default()
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, `Err` when the stream is
    /// beyond repair (too large, no Content-Length): the connection should be closed. After
    /// [`ParseError::TooLarge`], [`oversized_head`](Framer::oversized_head) gives the head to
    /// answer when it could be read.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ParseError> {
        let crlfs = self.buf.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
        if crlfs > 0 {
            self.scanned = 0;
            let ping = self.buf.starts_with(b"\r\n\r\n");
            let _ = self.buf.split_to(crlfs);
            if ping {
                return Ok(Some(Frame::Ping));
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let Some(head_end) = find_head_end_from(&self.buf, self.scanned) else {
            self.scanned = self.buf.len().saturating_sub(3);
            if self.buf.len() > MAX_MESSAGE_LEN {
                return Err(ParseError::TooLarge);
            }
            return Ok(None);
        };
        let head = &self.buf[..head_end];
        let mut content_length = None;
        for line in head.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
            let name = trim_ascii(&line[..colon]);
            if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
                let value = std::str::from_utf8(trim_ascii(&line[colon + 1..])).map_err(|_| ParseError::BadContentLength)?;
                content_length = Some(value.parse::<usize>().map_err(|_| ParseError::BadContentLength)?);
            }
        }
        let len = content_length.ok_or(ParseError::BadHeader("Content-Length"))?;
        let total = head_end.checked_add(len).ok_or(ParseError::TooLarge)?;
        if total > MAX_MESSAGE_LEN {
            return Err(ParseError::TooLarge);
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        self.scanned = 0;
        Ok(Some(Frame::Message(self.buf.split_to(total).freeze())))
    }

    /// The head (start line and header lines, through the blank line) of the message at the
    /// front of the buffer, once it is complete and within [`MAX_MESSAGE_LEN`]. After
    /// `next_frame` failed with [`ParseError::TooLarge`] this is the head of the over-long
    /// message, for a `513` answer. `None` when the head itself is over the limit (or still
    /// incomplete): nothing can be read to address an answer.
    pub fn oversized_head(&self) -> Option<&[u8]> {
        let head_end = find_head_end(&self.buf)?;
        (head_end <= MAX_MESSAGE_LEN).then(|| &self.buf[..head_end])
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    find_head_end_from(buf, 0)
}

/// [`find_head_end`], searching from `from` on (`buf[..from]` is known to hold no `\n` that
/// ends the head, except in its last three bytes, which the caller leaves out of `from`).
fn find_head_end_from(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from.min(buf.len());
    while let Some(p) = memchr::memchr(b'\n', &buf[i..]) {
        let nl = i + p;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        if rest.starts_with(b"\n") {
            return Some(nl + 2);
        }
        i = nl + 1;
    }
    None
}

/// Builds an outgoing message as text: start line, headers in order, Content-Length, body.
#[derive(Debug, Clone)]
pub struct Builder {
    head: String,
    body: Bytes,
}

impl Builder {
    /// A request line.
    pub fn request(method: &str, uri: &str) -> Builder {
        Builder { head: format!("{method} {uri} SIP/2.0\r\n"), body: Bytes::new() }
    }

    /// A status line.
    pub fn response(code: u16, reason: &str) -> Builder {
        Builder { head: format!("SIP/2.0 {code} {reason}\r\n"), body: Bytes::new() }
    }

    /// A response to `req` with the headers RFC 3261 §8.2.6.2 copies: Via (all), From, To (with
    /// `to_tag` added when the request's To has none), Call-ID, CSeq.
    pub fn response_to(req: &Message, code: u16, reason: &str, to_tag: Option<&str>) -> Builder {
        let mut b = Builder::response(code, reason);
        for v in req.headers.get_raw(&Name::VIA) {
            b = b.header("Via", v.trim());
        }
        for v in req.headers.get_raw(&Name::FROM) {
            b = b.header("From", v.trim());
        }
        for v in req.headers.get_raw(&Name::TO) {
            let v = v.trim();
            match (to_tag, req.to.tag.is_some()) {
                (Some(tag), false) if code > 100 => b = b.header("To", &format!("{v};tag={tag}")),
                _ => b = b.header("To", v),
            }
        }
        b.header("Call-ID", &req.call_id).header("CSeq", &format!("{} {}", req.cseq, req.cseq_method))
    }

    /// Appends a header (the value must not contain CR or LF; they are replaced by spaces).
    pub fn header(mut self, name: &str, value: &str) -> Builder {
        let _ = write!(self.head, "{name}: ");
        for c in value.chars() {
            self.head.push(if c == '\r' || c == '\n' { ' ' } else { c });
        }
        self.head.push_str("\r\n");
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(self, content_type: &str, body: impl Into<Bytes>) -> Builder {
        let mut b = self.header("Content-Type", content_type);
        b.body = body.into();
        b
    }

    /// The bytes on the wire.
    pub fn build(self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.head.len() + 24 + self.body.len());
        out.extend_from_slice(self.head.as_bytes());
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
        out.extend_from_slice(&self.body);
        out.freeze()
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.start {
            StartLine::Request { method, uri_text, .. } => write!(f, "{method} {uri_text}"),
            StartLine::Response { code, reason } => write!(f, "{code} {reason} ({} {})", self.cseq, self.cseq_method),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "SUBSCRIBE sip:alice@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Hub\" <sip:hub@127.0.0.1>;tag=1928301774\r\n\
To: <sip:alice@127.0.0.1>\r\n\
Call-ID: a84b4c76e66710@pc33\r\n\
CSeq: 314159 SUBSCRIBE\r\n\
Event: presence;id=1\r\n\
Expires: 600\r\n\
Accept: application/pidf+xml\r\n\
Contact: <sip:hub@127.0.0.1:5070>\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn parses_a_subscribe() {
        let m = Message::parse(Bytes::from_static(SUB.as_bytes())).unwrap();
        assert_eq!(m.method(), Some(&Method::SUBSCRIBE));
        assert_eq!(m.request_user(), Some("alice"));
        assert_eq!(m.event(), Some("presence"));
        assert_eq!(m.expires().unwrap(), Some(600));
        assert_eq!(m.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(m.from.tag.as_deref(), Some("1928301774"));
        assert!(m.to.tag.is_none());
        assert_eq!(m.cseq, 314159);
        assert_eq!(&*m.call_id, "a84b4c76e66710@pc33");
    }

    #[test]
    fn response_copies_the_dialog_headers_and_adds_a_tag() {
        let m = Message::parse(Bytes::from_static(SUB.as_bytes())).unwrap();
        let r = Builder::response_to(&m, 200, "OK", Some("xyz")).header("Expires", "600").build();
        let r = Message::parse(r).unwrap();
        assert_eq!(r.code(), Some(200));
        assert_eq!(r.to.tag.as_deref(), Some("xyz"));
        assert_eq!(r.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(r.cseq_method, Method::SUBSCRIBE);
    }

    #[test]
    fn rejects_cleanly() {
        let cases: &[(&str, ParseError)] = &[
            ("SUBSCRIBE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n", ParseError::CSeqMismatch),
            ("SUBSCRIBE tel:+4612 SIP/2.0\r\n\r\n", ParseError::UnsupportedUriScheme),
            ("SUBSCRIBE sip:a@b SIP/7.0\r\n\r\n", ParseError::BadVersion),
            ("SUBSCRIBE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 SUBSCRIBE\r\nContent-Length: 10\r\n\r\nabc", ParseError::ShortBody),
            ("SUBSCRIBE sip:a@b SIP/2.0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 SUBSCRIBE\r\n\r\n", ParseError::BadHeader("Via")),
        ];
        for (text, want) in cases {
            assert_eq!(Message::parse(Bytes::copy_from_slice(text.as_bytes())).unwrap_err(), *want, "{text}");
        }
    }

    #[test]
    fn framer_cuts_a_stream() {
        let mut f = Framer::new();
        let two = format!("\r\n\r\n{SUB}{SUB}");
        let (a, b) = two.as_bytes().split_at(40);
        f.extend(a);
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Ping))));
        assert!(matches!(f.next_frame(), Ok(None)));
        f.extend(b);
        for _ in 0..2 {
            let Ok(Some(Frame::Message(m))) = f.next_frame() else { panic!("no frame") };
            assert_eq!(Message::parse(m).unwrap().cseq, 314159);
        }
        assert!(matches!(f.next_frame(), Ok(None)));
        let mut f = Framer::new();
        f.extend(b"NOTIFY sip:a@b SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(f.next_frame().unwrap_err(), ParseError::BadHeader("Content-Length"));
    }

    /// The same frames whatever the reads: every cut into two reads, and one byte a time —
    /// for heads ending `\r\n\r\n` and `\n\n` (the search resumes where it left off).
    #[test]
    fn framer_finds_heads_across_any_cut_of_the_reads() {
        let lf = SUB.replace("\r\n", "\n");
        let stream = format!("{SUB}{lf}\r\n\r\n{SUB}");
        let bytes = stream.as_bytes();
        let frames = |reads: &mut dyn Iterator<Item = &[u8]>| {
            let mut f = Framer::new();
            let mut out = Vec::new();
            for r in reads {
                f.extend(r);
                while let Ok(Some(fr)) = f.next_frame() {
                    if let Frame::Message(m) = fr {
                        out.push(Message::parse(m).unwrap().cseq);
                    }
                }
            }
            out
        };
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(frames(&mut [a, b].into_iter()), [314159, 314159, 314159], "cut at {cut}");
        }
        assert_eq!(frames(&mut bytes.chunks(1)), [314159, 314159, 314159], "a byte at a time");
    }

    #[test]
    fn framer_keeps_the_head_of_an_oversized_message() {
        // Content-Length over the limit: refused at once, the head still readable.
        let head = "PUBLISH sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 100000\r\n\r\n";
        let mut f = Framer::new();
        f.extend(format!("\r\n{head}xxxx").as_bytes());
        assert_eq!(f.next_frame().unwrap_err(), ParseError::TooLarge);
        assert_eq!(f.oversized_head(), Some(head.as_bytes()));
        // Exactly at the limit is fine.
        let mut f = Framer::new();
        let at = format!("PUBLISH sip:a@b SIP/2.0\r\nContent-Length: {}\r\n\r\n", MAX_MESSAGE_LEN - 50);
        assert_eq!(at.len(), 50);
        f.extend(at.as_bytes());
        assert!(matches!(f.next_frame(), Ok(None)));
        let mut f = Framer::new();
        f.extend(format!("PUBLISH sip:a@b SIP/2.0\r\nContent-Length: {}\r\n\r\n", MAX_MESSAGE_LEN - 49).as_bytes());
        assert_eq!(f.next_frame().unwrap_err(), ParseError::TooLarge, "one byte over");
        // A head over the limit: nothing to answer.
        let mut f = Framer::new();
        f.extend(format!("PUBLISH sip:a@b SIP/2.0\r\nX: {}", "y".repeat(MAX_MESSAGE_LEN)).as_bytes());
        assert_eq!(f.next_frame().unwrap_err(), ParseError::TooLarge);
        assert_eq!(f.oversized_head(), None);
        f.extend(b"\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(f.oversized_head(), None);
    }

    #[test]
    fn uri_helpers() {
        assert_eq!(uri_user("sip:alice@example.com;transport=tcp"), Some("alice"));
        assert_eq!(uri_user("<sips:2001@pbx:5061>"), Some("2001"));
        assert_eq!(uri_host_port("sip:alice@127.0.0.1:5070;transport=tcp"), Some("127.0.0.1:5070"));
        assert_eq!(name_addr_uri("\"A, B\" <sip:a@b>;tag=1"), "sip:a@b");
    }

    #[test]
    fn mutations_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = SUB.as_bytes();
        for cut in 0..base.len() {
            let _ = Message::parse(Bytes::copy_from_slice(&base[..cut]));
        }
        for _ in 0..20_000 {
            let mut m = base.to_vec();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % m.len().max(1);
                match next() % 3 {
                    0 => m[i] = next() as u8,
                    1 => m.insert(i, b"\r\n:;<>\"\\ ,=@\0\xff"[next() as usize % 14]),
                    _ => {
                        m.remove(i);
                    }
                }
            }
            let _ = Message::parse(Bytes::from(m.clone()));
            let mut f = Framer::new();
            f.extend(&m);
            while let Ok(Some(_)) = f.next_frame() {}
        }
    }
}
