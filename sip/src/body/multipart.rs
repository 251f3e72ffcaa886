//! `multipart/related` bodies (RFC 2046 §5.1 syntax, RFC 2387 `start` and `type`), as used by
//! resource-list NOTIFYs (RFC 4662 §5) and SfB batched notifications: parser and builder, plus
//! the `Content-Type` header value parser the boundary comes from.
//!
//! Parsing:
//! * The boundary comes from the `boundary` parameter, quoted or not; `start` (the root part's
//!   Content-ID, angle brackets removed) and `type` (the root part's type) are read too.
//! * A delimiter is `--boundary` at the start of the body or of a line, followed by optional
//!   transport padding (spaces, tabs) and a line break; the close delimiter adds `--`. The line
//!   break before a delimiter belongs to the delimiter. Lines may end in CRLF or bare LF
//!   (mixed is fine). The preamble and the epilogue are ignored.
//! * Each part's headers end at the first empty line; folded header lines are unfolded;
//!   header names are compared case-insensitively. A part that starts with an empty line has
//!   no headers. Bodies are returned as bytes, untouched.
//! * A body without a close delimiter (cut in transit) is an error, so is a body with no part.
//!
//! Limits: [`MAX_MULTIPART_BYTES`] per body, [`MAX_PART_BYTES`] per part, [`MAX_PARTS`]
//! parts, [`MAX_PART_HEADERS`] headers per part, [`MAX_HEADER_BYTES`] per (unfolded) header,
//! [`MAX_BOUNDARY_LEN`] per boundary. Exceeding any is an error.

use std::fmt::Write as _;

use memchr::memmem;

use super::text::truncate;
use super::MAX_BODY_BYTES;

/// Largest multipart body accepted, in bytes (1 MiB: an SfB batch of a few hundred contacts'
/// categories fits).
pub const MAX_MULTIPART_BYTES: usize = 1024 * 1024;
/// Largest single part body, in bytes (the XML limit, [`MAX_BODY_BYTES`]).
pub const MAX_PART_BYTES: usize = MAX_BODY_BYTES;
/// Most parts in one body.
pub const MAX_PARTS: usize = 1024;
/// Most headers in one part.
pub const MAX_PART_HEADERS: usize = 32;
/// Longest header (name, colon and unfolded value), in bytes.
pub const MAX_HEADER_BYTES: usize = 4096;
/// Longest boundary (RFC 2046 allows 70; some senders use longer ones).
pub const MAX_BOUNDARY_LEN: usize = 200;
/// Longest `Content-Type` header value parsed, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 4096;
/// Most parameters in one `Content-Type` value.
pub const MAX_CONTENT_TYPE_PARAMS: usize = 32;

/// Why a multipart body or a `Content-Type` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// The `Content-Type` value is not `type/subtype *(; name=value)`.
    #[error("malformed Content-Type: {0}")]
    BadContentType(String),
    /// The `Content-Type` is not `multipart/*`.
    #[error("not a multipart Content-Type: {0}")]
    NotMultipart(String),
    /// No usable `boundary` parameter (absent, empty, too long, or with line breaks).
    #[error("missing or invalid boundary parameter")]
    BadBoundary,
    /// The body is larger than [`MAX_MULTIPART_BYTES`], or a part than [`MAX_PART_BYTES`].
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Body or part.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More parts or headers than the limits allow.
    #[error("more than {max} {what}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// No delimiter line with this boundary in the body.
    #[error("no part delimited by the boundary")]
    NoParts,
    /// The close delimiter (`--boundary--`) is missing: the body was cut.
    #[error("the close delimiter is missing")]
    Unterminated,
    /// A header line of a part is unreadable (no colon, not UTF-8, too long).
    #[error("malformed part header: {0}")]
    BadHeader(String),
    /// A part body contains the boundary, or a header value contains a line break (builder).
    #[error("cannot build: {0}")]
    Build(&'static str),
}

/// A parsed `Content-Type` value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContentType {
    /// `type/subtype`, lower-cased.
    pub mime: String,
    /// Parameters in order: name lower-cased, value unquoted.
    pub params: Vec<(String, String)>,
}

impl ContentType {
    /// Parses `type/subtype *(; name=value)`; values may be tokens or quoted strings.
    pub fn parse(value: &str) -> Result<ContentType, MultipartError> {
        let bad = |why: &str| MultipartError::BadContentType(format!("{why}: {:?}", truncate(value, 64)));
        if value.len() > MAX_CONTENT_TYPE_BYTES {
            return Err(bad("too long"));
        }
        let (mime, mut rest) = value.split_once(';').unwrap_or((value, ""));
        let mime = mime.trim().to_ascii_lowercase();
        let (ty, sub) = mime.split_once('/').ok_or_else(|| bad("no subtype"))?;
        if !is_token(ty) || !is_token(sub) {
            return Err(bad("bad type"));
        }
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches([' ', '\t', ';']);
            if rest.is_empty() {
                break;
            }
            if params.len() >= MAX_CONTENT_TYPE_PARAMS {
                return Err(bad("too many parameters"));
            }
            let (name, after) = rest.split_once('=').ok_or_else(|| bad("parameter without value"))?;
            let name = name.trim().to_ascii_lowercase();
            if !is_token(&name) {
                return Err(bad("bad parameter name"));
            }
            let after = after.trim_start();
            let (val, next) = if let Some(q) = after.strip_prefix('"') {
                let mut val = String::new();
                let mut chars = q.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, e)) = chars.next() {
                                val.push(e);
                            }
                        }
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => val.push(c),
                    }
                }
                let end = end.ok_or_else(|| bad("unterminated quoted string"))?;
                let next = q[end..].trim_start();
                if !(next.is_empty() || next.starts_with(';')) {
                    return Err(bad("text after a quoted value"));
                }
                (val, next)
            } else {
                let end = after.find(';').unwrap_or(after.len());
                let val = after[..end].trim();
                // Tolerated beyond RFC 2045 tokens: `<`, `>`, `@`, `:` and `/` (unquoted
                // `start=<cid@host>` and `type=application/rlmi+xml` are common in SIP).
                if val.is_empty() || val.chars().any(|c| c.is_control() || c == '"' || c == ' ') {
                    return Err(bad("bad parameter value"));
                }
                (val.to_string(), &after[end..])
            };
            params.push((name, val));
            rest = next;
        }
        Ok(ContentType { mime, params })
    }

    /// The first parameter with this name (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Display for ContentType {
    /// `type/subtype;name=value`, quoting values that are not tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.mime)?;
        for (n, v) in &self.params {
            if is_token(v) {
                write!(f, ";{n}={v}")?;
            } else {
                f.write_str(";")?;
                f.write_str(n)?;
                f.write_str("=\"")?;
                for c in v.chars() {
                    if c == '"' || c == '\\' {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str("\"")?;
            }
        }
        Ok(())
    }
}

/// An RFC 2045 token.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// One body part.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Part {
    /// Headers in order: (name as sent, trimmed value).
    pub headers: Vec<(String, String)>,
    /// The body, untouched.
    pub body: Vec<u8>,
}

impl Part {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// `Content-Type`.
    pub fn content_type(&self) -> Option<&str> {
        self.header("Content-Type")
    }

    /// `Content-ID` without angle brackets.
    pub fn content_id(&self) -> Option<&str> {
        self.header("Content-ID").map(strip_cid)
    }
}

/// A Content-ID or `cid` reference without surrounding angle brackets or a `cid:` prefix.
pub fn strip_cid(s: &str) -> &str {
    let s = s.trim();
    let s = s.strip_prefix("cid:").unwrap_or(s);
    s.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(s).trim()
}

/// A multipart body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Multipart {
    /// The boundary.
    pub boundary: String,
    /// `start`: the root part's Content-ID, without angle brackets.
    pub start: Option<String>,
    /// `type`: the root part's content type.
    pub root_type: Option<String>,
    /// The parts.
    pub parts: Vec<Part>,
}

impl Multipart {
    /// The part whose Content-ID is `cid` (angle brackets and `cid:` are ignored on both sides).
    pub fn part_by_cid(&self, cid: &str) -> Option<&Part> {
        let cid = strip_cid(cid);
        self.parts.iter().find(|p| p.content_id() == Some(cid))
    }

    /// The root part: the `start` part, else the first part of the `type` type, else the first.
    pub fn root(&self) -> Option<&Part> {
        self.start
            .as_deref()
            .and_then(|s| self.part_by_cid(s))
            .or_else(|| {
                let ty = self.root_type.as_deref()?;
                self.parts.iter().find(|p| {
                    p.content_type()
                        .and_then(|c| ContentType::parse(c).ok())
                        .is_some_and(|c| c.mime.eq_ignore_ascii_case(ty))
                })
            })
            .or_else(|| self.parts.first())
    }
}

fn valid_boundary(b: &str) -> bool {
    !b.is_empty() && b.len() <= MAX_BOUNDARY_LEN && !b.contains(['\r', '\n'])
}

/// Parses a multipart body given its `Content-Type` header value (see the module docs).
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Result<Multipart, MultipartError> {
    let ct = ContentType::parse(content_type)?;
    if !ct.mime.starts_with("multipart/") {
        return Err(MultipartError::NotMultipart(truncate(&ct.mime, 64).to_string()));
    }
    let boundary = ct.param("boundary").filter(|b| valid_boundary(b)).ok_or(MultipartError::BadBoundary)?;
    if body.len() > MAX_MULTIPART_BYTES {
        return Err(MultipartError::TooLarge { what: "multipart body", len: body.len(), max: MAX_MULTIPART_BYTES });
    }
    let delim = format!("--{boundary}");
    let finder = memmem::Finder::new(delim.as_bytes());
    // (start of the delimiter line including the preceding line break, end of the line, close?)
    let mut delims: Vec<(usize, usize, bool)> = Vec::new();
    let mut from = 0;
    while let Some(i) = finder.find(&body[from..]).map(|i| i + from) {
        from = i + delim.len();
        if i > 0 && body[i - 1] != b'\n' {
            continue;
        }
        let mut j = i + delim.len();
        let close = body[j..].starts_with(b"--");
        if close {
            j += 2;
        }
        while matches!(body.get(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        let line_end = match body.get(j) {
            Some(b'\n') => j + 1,
            Some(b'\r') if body.get(j + 1) == Some(&b'\n') => j + 2,
            None if close => j,
            _ => continue,
        };
        let start = if i >= 2 && &body[i - 2..i] == b"\r\n" { i - 2 } else { i.saturating_sub(1) };
        delims.push((start, line_end, close));
        if close {
            break;
        }
        if delims.len() > MAX_PARTS {
            return Err(MultipartError::TooMany { what: "parts", max: MAX_PARTS });
        }
    }
    match delims.last() {
        None => return Err(MultipartError::NoParts),
        Some((_, _, false)) => return Err(MultipartError::Unterminated),
        Some(_) => {}
    }
    if delims.len() < 2 {
        return Err(MultipartError::NoParts);
    }
    let mut parts = Vec::with_capacity(delims.len() - 1);
    for w in delims.windows(2) {
        let (content_start, content_end) = (w[0].1, w[1].0);
        let content = body.get(content_start..content_end.max(content_start)).unwrap_or(&[]);
        parts.push(part(content)?);
    }
    Ok(Multipart {
        boundary: boundary.to_string(),
        start: ct.param("start").map(|s| strip_cid(s).to_string()),
        root_type: ct.param("type").map(|s| s.trim().to_ascii_lowercase()),
        parts,
    })
}

fn part(content: &[u8]) -> Result<Part, MultipartError> {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    loop {
        let (line, next) = match memchr::memchr(b'\n', &content[pos..]) {
            Some(n) => (&content[pos..pos + n], pos + n + 1),
            // Headers without the empty line that ends them: the part has no body.
            None => (&content[pos..], content.len()),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos = next;
        if line.is_empty() {
            break;
        }
        let line = std::str::from_utf8(line).map_err(|_| MultipartError::BadHeader("not UTF-8".into()))?;
        if line.starts_with([' ', '\t']) {
            let Some((_, v)) = headers.last_mut() else {
                return Err(MultipartError::BadHeader("continuation line without a header".into()));
            };
            if v.len() + line.len() > MAX_HEADER_BYTES {
                return Err(MultipartError::BadHeader("header too long".into()));
            }
            v.push(' ');
            v.push_str(line.trim());
        } else {
            if headers.len() >= MAX_PART_HEADERS {
                return Err(MultipartError::TooMany { what: "headers in one part", max: MAX_PART_HEADERS });
            }
            if line.len() > MAX_HEADER_BYTES {
                return Err(MultipartError::BadHeader("header too long".into()));
            }
            let (name, value) =
                line.split_once(':').ok_or_else(|| MultipartError::BadHeader(truncate(line, 64).to_string()))?;
            let name = name.trim();
            if !is_token(name) {
                return Err(MultipartError::BadHeader(truncate(line, 64).to_string()));
            }
            headers.push((name.to_string(), value.trim().to_string()));
        }
        if pos >= content.len() {
            break;
        }
    }
    let body = &content[pos.min(content.len())..];
    if body.len() > MAX_PART_BYTES {
        return Err(MultipartError::TooLarge { what: "part", len: body.len(), max: MAX_PART_BYTES });
    }
    Ok(Part { headers, body: body.to_vec() })
}

/// Builds a multipart/related body with CRLF line breaks. Returns the `Content-Type` header
/// value (`multipart/related;type=…;start="<…>";boundary=…`, `type` and `start` when set) and
/// the body. Fails when the boundary is invalid (empty, longer than [`MAX_BOUNDARY_LEN`], or
/// not made of RFC 2046 `bchars` without space), when it occurs in a part body, or when a
/// header name or value could break the header block.
pub fn build_multipart(m: &Multipart) -> Result<(String, Vec<u8>), MultipartError> {
    let b = &m.boundary;
    let bchar = |c: char| c.is_ascii_alphanumeric() || "'()+_,-./:=?".contains(c);
    if b.is_empty() || b.len() > MAX_BOUNDARY_LEN.min(70) || !b.chars().all(bchar) {
        return Err(MultipartError::Build("invalid boundary"));
    }
    let delim = format!("--{b}");
    let finder = memmem::Finder::new(delim.as_bytes());
    let mut ct = ContentType { mime: "multipart/related".into(), params: Vec::new() };
    if let Some(t) = &m.root_type {
        ct.params.push(("type".into(), t.clone()));
    }
    if let Some(s) = &m.start {
        ct.params.push(("start".into(), format!("<{s}>")));
    }
    ct.params.push(("boundary".into(), b.clone()));
    if ct.params.iter().any(|(_, v)| v.contains(['\r', '\n'])) {
        return Err(MultipartError::Build("line break in a Content-Type parameter"));
    }
    let mut out = Vec::with_capacity(m.parts.iter().map(|p| p.body.len() + 200).sum::<usize>() + 64);
    for p in &m.parts {
        if finder.find(&p.body).is_some() {
            return Err(MultipartError::Build("the boundary occurs in a part body"));
        }
        let mut head = String::new();
        let _ = write!(head, "{delim}\r\n");
        for (n, v) in &p.headers {
            if !is_token(n) || v.contains(['\r', '\n']) {
                return Err(MultipartError::Build("header name or value unusable"));
            }
            let _ = write!(head, "{n}: {v}\r\n");
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&p.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("{delim}--\r\n").as_bytes());
    Ok((ct.to_string(), out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::fuzz::{mutate, truncations, Xorshift};

    const BODY: &[u8] = b"preamble\r\n--b1\r\nContent-ID: <a@x>\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1  \r\n\r\nno headers\r\n--b1--\r\nepilogue";

    #[test]
    fn content_type_values() {
        let ct = ContentType::parse(
            r#"Multipart/Related; type="application/rlmi+xml" ; start="<nXYxAE@pres.example.com>";boundary=50UBfW7LSCVLtggUPytvwWp"#,
        )
        .expect("parse");
        assert_eq!(ct.mime, "multipart/related");
        assert_eq!(ct.param("TYPE"), Some("application/rlmi+xml"));
        assert_eq!(ct.param("start"), Some("<nXYxAE@pres.example.com>"));
        assert_eq!(ct.param("boundary"), Some("50UBfW7LSCVLtggUPytvwWp"));
        // Unquoted start and type as some SIP servers send them; escaped quotes.
        let ct = ContentType::parse(r#"multipart/related;type=application/rlmi+xml;start=<x@y>;boundary="a \"q\" b""#)
            .expect("parse");
        assert_eq!(ct.param("start"), Some("<x@y>"));
        assert_eq!(ct.param("boundary"), Some(r#"a "q" b"#));
        assert_eq!(ContentType::parse(&ct.to_string()), Ok(ct));
        for bad in
            ["", "text", "/x", "a/b; c", "a/b; =v", r#"a/b; c="open"#, r#"a/b; c="x" y"#, "a/b; c=has space", "a b/c"]
        {
            assert!(ContentType::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ContentType::parse("text/plain;").map(|c| c.params.len()), Ok(0));
    }

    #[test]
    fn parses_crlf_and_padding_and_headerless_parts() {
        let m =
            parse_multipart(r#"multipart/related;boundary="b1";start="<a@x>";type="text/plain""#, BODY).expect("parse");
        assert_eq!(m.boundary, "b1");
        assert_eq!(m.start.as_deref(), Some("a@x"));
        assert_eq!(m.root_type.as_deref(), Some("text/plain"));
        assert_eq!(m.parts.len(), 2);
        assert_eq!(m.parts[0].content_id(), Some("a@x"));
        assert_eq!(m.parts[0].content_type(), Some("text/plain"));
        assert_eq!(m.parts[0].body, b"hello");
        assert!(m.parts[1].headers.is_empty());
        assert_eq!(m.parts[1].body, b"no headers");
        assert_eq!(m.part_by_cid("<a@x>").map(|p| p.body.as_slice()), Some(&b"hello"[..]));
        assert_eq!(m.part_by_cid("cid:a@x").map(|p| p.body.as_slice()), Some(&b"hello"[..]));
        assert_eq!(m.root().map(|p| p.body.as_slice()), Some(&b"hello"[..]));
    }

    #[test]
    fn parses_bare_lf_folding_and_lookalike_boundaries() {
        let body = b"--xyz\nContent-Type: a/b;\n  charset=utf-8\n\nline1\n--xyzz is not a delimiter\n x--xyz neither\n--xyz\n\n\n\n--xyz--";
        let m = parse_multipart("multipart/mixed; boundary=xyz", body).expect("parse");
        assert_eq!(m.parts.len(), 2);
        assert_eq!(m.parts[0].content_type(), Some("a/b; charset=utf-8"));
        assert_eq!(m.parts[0].body, b"line1\n--xyzz is not a delimiter\n x--xyz neither");
        assert_eq!(m.parts[1].body, b"\n", "an empty line of content after the header separator");
        assert_eq!(m.root().map(|p| p.body.len()), Some(m.parts[0].body.len()), "root falls back to the first part");
    }

    #[test]
    fn errors() {
        let p = |ct: &str, b: &[u8]| parse_multipart(ct, b);
        assert!(matches!(p("application/pidf+xml", BODY), Err(MultipartError::NotMultipart(_))));
        assert_eq!(p("multipart/related", BODY), Err(MultipartError::BadBoundary));
        assert_eq!(p("multipart/related;boundary=\"\"", BODY), Err(MultipartError::BadBoundary));
        let long = format!("multipart/related;boundary={}", "x".repeat(MAX_BOUNDARY_LEN + 1));
        assert_eq!(p(&long, BODY), Err(MultipartError::BadBoundary));
        assert_eq!(p("multipart/related;boundary=zz", BODY), Err(MultipartError::NoParts));
        assert_eq!(p("multipart/related;boundary=b1", &BODY[..BODY.len() - 20]), Err(MultipartError::Unterminated));
        assert_eq!(p("multipart/related;boundary=b1", b"--b1--"), Err(MultipartError::NoParts));
        assert!(matches!(
            p("multipart/related;boundary=b1", b"--b1\r\nnot a header\r\n\r\nx\r\n--b1--"),
            Err(MultipartError::BadHeader(_))
        ));
        assert!(matches!(
            p("multipart/related;boundary=b1", b"--b1\r\n continued\r\n\r\nx\r\n--b1--"),
            Err(MultipartError::BadHeader(_))
        ));
        let many = "--b\r\n\r\nx\r\n".repeat(MAX_PARTS + 1) + "--b--";
        assert_eq!(
            p("multipart/related;boundary=b", many.as_bytes()),
            Err(MultipartError::TooMany { what: "parts", max: MAX_PARTS })
        );
        let ok = "--b\r\n\r\nx\r\n".repeat(MAX_PARTS) + "--b--";
        assert_eq!(p("multipart/related;boundary=b", ok.as_bytes()).map(|m| m.parts.len()), Ok(MAX_PARTS));
        let headers = "H: v\r\n".repeat(MAX_PART_HEADERS + 1);
        assert!(matches!(
            p("multipart/related;boundary=b", format!("--b\r\n{headers}\r\nx\r\n--b--").as_bytes()),
            Err(MultipartError::TooMany { .. })
        ));
        let big = vec![b'x'; MAX_MULTIPART_BYTES + 1];
        assert!(matches!(p("multipart/related;boundary=b", &big), Err(MultipartError::TooLarge { .. })));
        let part = format!("--b\r\n\r\n{}\r\n--b--", "y".repeat(MAX_PART_BYTES + 1));
        assert!(matches!(p("multipart/related;boundary=b", part.as_bytes()), Err(MultipartError::TooLarge { .. })));
    }

    #[test]
    fn build_then_parse_round_trips() {
        let m = Multipart {
            boundary: "50UBfW7LSCVLtggUPytvwWp".into(),
            start: Some("root@hub".into()),
            root_type: Some("application/rlmi+xml".into()),
            parts: vec![
                Part {
                    headers: vec![
                        ("Content-Transfer-Encoding".into(), "binary".into()),
                        ("Content-ID".into(), "<root@hub>".into()),
                        ("Content-Type".into(), "application/rlmi+xml;charset=\"UTF-8\"".into()),
                    ],
                    body: b"<list/>\r\n\r\n--not-the-boundary\n".to_vec(),
                },
                Part { headers: vec![], body: b"".to_vec() },
                Part { headers: vec![("X".into(), "".into())], body: vec![0, 0xff, b'\r', b'\n'] },
            ],
        };
        let (ct, body) = build_multipart(&m).expect("build");
        assert_eq!(
            ct,
            r#"multipart/related;type="application/rlmi+xml";start="<root@hub>";boundary=50UBfW7LSCVLtggUPytvwWp"#
        );
        assert!(body.starts_with(b"--50UBfW7LSCVLtggUPytvwWp\r\nContent-Transfer-Encoding: binary\r\n"));
        assert!(body.ends_with(b"\r\n--50UBfW7LSCVLtggUPytvwWp--\r\n"));
        assert_eq!(parse_multipart(&ct, &body), Ok(m.clone()));

        let mut bad = m.clone();
        bad.parts[0].body = b"x\r\n--50UBfW7LSCVLtggUPytvwWp\r\n".to_vec();
        assert!(matches!(build_multipart(&bad), Err(MultipartError::Build(_))));
        let mut bad = m.clone();
        bad.parts[0].headers[0].1 = "a\r\nInjected: yes".into();
        assert!(matches!(build_multipart(&bad), Err(MultipartError::Build(_))));
        let mut bad = m;
        bad.boundary = "has space".into();
        assert!(matches!(build_multipart(&bad), Err(MultipartError::Build(_))));
    }

    /// Deterministic mutations and every truncation: nothing panics, and enough mutants still
    /// parse to reach the part parser.
    #[test]
    fn no_input_panics_the_parser() {
        let mut rng = Xorshift::new(0x5851_F42D_4C95_7F2D);
        let tokens: [&[u8]; 8] = [b"\r\n", b"\n", b"--b1", b"--b1--", b"\r\n--b1\r\n", b":", b" ", b"\xff"];
        let cts = [
            "multipart/related;boundary=b1",
            "multipart/related;boundary=\"b1\";start=\"<a@x>\"",
            "multipart/x;boundary=b",
        ];
        let mut ok = 0usize;
        for i in 0..12_000 {
            let v = mutate(BODY, &mut rng, &tokens);
            if let Ok(m) = parse_multipart(cts[i % cts.len()], &v) {
                ok += 1;
                let _ = m.root();
            }
            let ct = mutate(cts[i % cts.len()].as_bytes(), &mut rng, &tokens);
            let _ = parse_multipart(&String::from_utf8_lossy(&ct), BODY);
        }
        assert!(ok > 1_000, "only {ok} mutants parsed");
        for t in truncations(BODY) {
            let _ = parse_multipart(cts[0], t);
        }
        for t in truncations(cts[1].as_bytes()) {
            let _ = parse_multipart(&String::from_utf8_lossy(t), BODY);
        }
    }
}
