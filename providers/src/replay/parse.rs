//! Parser of replay scenarios — pure, bounded, never panics.
//!
//! One JSON object per line; blank lines and lines starting with `#` are skipped:
//! ```text
//! {"at": 12.5, "who": "asa.ostberg@nordvik.se", "source": "pbx", "instance": "1234",
//!  "availability": "Busy", "activity": "InACall", "note": "…", "ooo": false,
//!  "starts_in": 0, "valid_for": 300, "version": 7}
//! ```
//! `at` is seconds from the start of the scenario; `who` is any identity the directory
//! resolves (id, email/UPN, SIP URI, phone number, extension); `starts_in`/`valid_for` are
//! seconds relative to when the event is played. Events are sorted by `at`.

use std::fmt;

use serde::Deserialize;

use presence_actors::model::{Activity, Availability, PrivateDetail, Source, Version};

/// Largest scenario file accepted.
pub const MAX_SCENARIO_BYTES: usize = 32 * 1024 * 1024;
/// Longest line accepted.
pub const MAX_LINE_BYTES: usize = 8 * 1024;

/// One timed event.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioEvent {
    /// Seconds from the start.
    pub at: f64,
    /// Who it is about.
    pub who: String,
    /// Source.
    pub source: Source,
    /// Source instance.
    pub instance: String,
    /// Availability.
    pub availability: Option<Availability>,
    /// Activity.
    pub activity: Option<Activity>,
    /// Note.
    pub note: Option<Box<str>>,
    /// OOO flag.
    pub ooo: bool,
    /// Starts this many seconds after it is played.
    pub starts_in: Option<f64>,
    /// Lasts this many seconds (from its start).
    pub valid_for: Option<f64>,
    /// Version.
    pub version: Option<Version>,
    /// Calendar details.
    pub detail: Option<Box<PrivateDetail>>,
}

/// A line that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIssue {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ParseIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    at: f64,
    who: String,
    source: Source,
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    availability: Option<Availability>,
    #[serde(default)]
    activity: Option<String>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    ooo: bool,
    #[serde(default)]
    starts_in: Option<f64>,
    #[serde(default)]
    valid_for: Option<f64>,
    #[serde(default)]
    version: Option<Version>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    private: bool,
}

fn finite_nonneg(v: f64) -> bool {
    v.is_finite() && (0.0..1e9).contains(&v)
}

/// Parses a scenario; returns the events (sorted by `at`) and the lines it skipped.
pub fn parse_scenario(text: &str) -> (Vec<ScenarioEvent>, Vec<ParseIssue>) {
    let mut events = Vec::new();
    let mut issues = Vec::new();
    if text.len() > MAX_SCENARIO_BYTES {
        issues.push(ParseIssue { line: 0, reason: format!("scenario larger than {MAX_SCENARIO_BYTES} bytes") });
        return (events, issues);
    }
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.len() > MAX_LINE_BYTES {
            issues.push(ParseIssue { line, reason: format!("line longer than {MAX_LINE_BYTES} bytes") });
            continue;
        }
        let l: Line = match serde_json::from_str(t) {
            Ok(l) => l,
            Err(e) => {
                issues.push(ParseIssue { line, reason: e.to_string() });
                continue;
            }
        };
        let times_ok = finite_nonneg(l.at)
            && l.starts_in.is_none_or(finite_nonneg)
            && l.valid_for.is_none_or(|v| finite_nonneg(v) && v > 0.0);
        if !times_ok {
            issues.push(ParseIssue { line, reason: "at, starts_in and valid_for must be finite seconds ≥ 0".into() });
            continue;
        }
        if l.who.trim().is_empty() || l.who.len() > 256 {
            issues.push(ParseIssue { line, reason: "who must be 1-256 bytes".into() });
            continue;
        }
        let detail = (l.subject.is_some() || l.location.is_some() || l.private).then(|| {
            Box::new(PrivateDetail {
                subject: l.subject.map(|s| presence_actors::model::activity::truncate(&s, 200).into()),
                location: l.location.map(|s| presence_actors::model::activity::truncate(&s, 200).into()),
                private: l.private,
            })
        });
        events.push(ScenarioEvent {
            at: l.at,
            instance: l.instance.unwrap_or_else(|| l.source.as_str().to_string()),
            who: l.who,
            source: l.source,
            availability: l.availability,
            activity: l.activity.as_deref().and_then(Activity::parse_source),
            note: l.note.as_deref().and_then(presence_actors::model::signal::bounded_note),
            ooo: l.ooo,
            starts_in: l.starts_in,
            valid_for: l.valid_for,
            version: l.version,
            detail,
        });
    }
    events.sort_by(|a, b| a.at.total_cmp(&b.at));
    (events, issues)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::Xorshift;

    #[test]
    fn parses_a_scenario_and_reports_bad_lines() {
        let text = r#"
# a comment
{"at": 2, "who": "asa.ostberg", "source": "pbx", "instance": "1234", "availability": "Busy", "activity": "InACall", "version": 3}
{"at": 1, "who": "+46701234567", "source": "teams", "availability": "available"}
{"at": -1, "who": "x", "source": "teams"}
{"at": 1, "who": "x", "source": "fax"}
not json
{"at": 3, "who": "x", "source": "calendar", "availability": "Busy", "starts_in": 60, "valid_for": 1800, "subject": "Board", "private": true}
"#;
        let (ev, issues) = parse_scenario(text);
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].who, "+46701234567");
        assert_eq!(ev[0].instance, "teams");
        assert_eq!(ev[1].activity, Some(Activity::InACall));
        assert_eq!(ev[1].version, Some(Version::Num(3)));
        assert!(ev[2].detail.as_ref().is_some_and(|d| d.private));
        assert_eq!(issues.iter().map(|i| i.line).collect::<Vec<_>>(), vec![5, 6, 7]);
    }

    #[test]
    fn no_input_panics_the_parser() {
        // Deterministic garbage, bytes and JSON-ish fragments.
        let mut rng = Xorshift::default();
        let mut next = || rng.next();
        let pieces = ["{", "}", "\"at\":", "1e308", "-0", "\"who\":", "\"source\":\"pbx\"", ",", "\n", "\"å\"", "null", "[", "]", "\\u0000", "NaN"];
        for _ in 0..3000 {
            let n = (next() % 40) as usize;
            let mut s = String::new();
            for _ in 0..n {
                if next() % 3 == 0 {
                    s.push(char::from_u32((next() % 0x3000) as u32).unwrap_or('?'));
                } else {
                    s.push_str(pieces[(next() % pieces.len() as u64) as usize]);
                }
            }
            let _ = parse_scenario(&s);
        }
    }
}
