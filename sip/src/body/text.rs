//! Small text helpers shared by the body parsers and builders: cutting at a character
//! boundary, XML escaping for the builders, timestamps, base64.

use std::fmt::Write as _;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::{MAX_ID_BYTES, MAX_NOTE_BYTES};

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A trimmed identifier (URI, id, tag), bounded by [`MAX_ID_BYTES`].
pub(crate) fn id(s: &str) -> String {
    truncate(s.trim(), MAX_ID_BYTES).to_string()
}

/// A trimmed, non-empty identifier, or `None`.
pub(crate) fn opt_id(s: Option<&str>) -> Option<String> {
    s.map(str::trim).filter(|s| !s.is_empty()).map(id)
}

/// A trimmed note bounded by [`MAX_NOTE_BYTES`].
pub(crate) fn note(s: &str) -> String {
    truncate(s.trim(), MAX_NOTE_BYTES).to_string()
}

/// Parses an XML Schema `dateTime`. A value without offset (SfB's `publishTime`,
/// `2024-05-06T09:14:02.117`) is read as UTC. Unreadable values give `None`.
pub(crate) fn parse_time(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t);
    }
    let dt: DateTime = s.parse().ok()?;
    dt.to_zoned_datetime(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// RFC 3339 in UTC with `Z` (fractional seconds only when non-zero).
pub(crate) fn format_time(t: Timestamp) -> String {
    t.to_string()
}

/// SfB style: UTC, milliseconds, no offset (`2024-05-06T09:14:02.117`).
pub(crate) fn format_time_ms_naive(t: Timestamp) -> String {
    let mut s = String::with_capacity(24);
    let _ = write!(s, "{}", t.strftime("%Y-%m-%dT%H:%M:%S%.3f"));
    s
}

/// Parses a boolean attribute (`true`/`false`/`1`/`0`, case-insensitive).
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("true") || s == "1" {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") || s == "0" {
        Some(false)
    } else {
        None
    }
}

/// Whether XML 1.0 can carry `c`.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Appends `s` escaped for element text or a double-quoted attribute value; characters XML
/// cannot carry are dropped.
pub(crate) fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Keep CR and TAB through attribute-value normalisation.
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

/// `s` escaped (see [`push_escaped`]).
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    push_escaped(&mut out, s);
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Lenient base64 decoding: whitespace is skipped, padding optional, decoding stops at the
/// first `=`. Any other byte outside the alphabet gives `None`.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s.as_bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            c if c.is_ascii_whitespace() => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_at_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn times() {
        let t = parse_time("2024-05-06T09:14:02.117").expect("naive");
        assert_eq!(t, parse_time("2024-05-06T09:14:02.117Z").expect("zulu"));
        assert_eq!(format_time_ms_naive(t), "2024-05-06T09:14:02.117");
        assert_eq!(parse_time(&format_time(t)), Some(t));
        assert_eq!(parse_time("2024-05-06T11:14:02.117+02:00"), Some(t));
        assert_eq!(parse_time("soon"), None);
        assert_eq!(parse_time(""), None);
    }

    #[test]
    fn escaping_drops_what_xml_cannot_carry() {
        assert_eq!(escape("a<b>&\"c'\u{1}\r\t"), "a&lt;b&gt;&amp;&quot;c&apos;&#13;&#9;");
    }

    #[test]
    fn base64_round_trip() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar", &[0, 0xff, 0xaa, 0x55]] {
            assert_eq!(base64_decode(&base64_encode(data)).as_deref(), Some(data));
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_decode("Zm9v\r\n YmE=").as_deref(), Some(&b"fooba"[..]));
        assert_eq!(base64_decode("Zm9v*"), None);
    }
}
