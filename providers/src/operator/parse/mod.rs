//! The configurable field mapping of the generic operator adapter: the operator's JSON or XML
//! body to [`OperatorEvent`]s — pure, no I/O, never panics.
//!
//! No mobile operator publishes the format of its call events (docs/ARCHITECTURE.md,
//! § Protocol references), so the adapter does not know field names: a [`MappingConfig`] says
//! where the event list is and where each field sits inside one event, and which operator words
//! mean what. [`Mapping::compile`] checks it once; [`Mapping::parse`] reads a body.
//!
//! - **JSON** paths are a small JSONPath subset ([`JsonPath`]): `$` is the document (for the
//!   event list) or the event (for fields); then `.name`, `['name']` (names with dots or
//!   spaces), `[3]` (an index), `[*]` and `.*` (every element or member). `$.events[*]`,
//!   `$.data.calls`, `$.a[0].b`. An event-list path that ends on one array takes its elements.
//!   Bodies are decoded through the providers' toolkit ([`crate::common::json`]), at most
//!   [`MAX_BODY`] bytes.
//! - **XML** paths are element paths by local name (namespaces ignored, [`XmlPath`]): the
//!   event list is absolute (`/presence/subscriber`, `*` matches any name); a field is relative
//!   to the event (`callState`, `diversion/@target`, `@msisdn`, `.` for the event's own text).
//!
//! A field that is absent says nothing (the last known value stands); an empty value clears
//! (no diversion, no absence). Operator words are matched case-insensitively after trimming.
//! Everything is bounded ([`MAX_BODY`], [`MAX_EVENTS`], [`MAX_XML_NODES`], [`MAX_XML_DEPTH`],
//! [`MAX_VALUE_LEN`]) and no input panics the parser (see the mutation test in `fuzz`).
//!
//! - `path.rs`: the JSON and XML paths and the XML document they select from.

mod path;

pub use path::*;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::json;
use presence_actors::model::activity::truncate;
use presence_actors::model::{AbsenceReason, UnixMs};

/// Largest body parsed, in bytes (the largest `poll.max_body_bytes`; webhook bodies are cut
/// earlier, at `[http] max_hook_bytes`).
pub const MAX_BODY: usize = 64 * 1024 * 1024;
/// Most events taken from one body.
pub const MAX_EVENTS: usize = 10_000;
/// Longest field value kept, in bytes (numbers, ids, words; texts are cut to this).
pub const MAX_VALUE_LEN: usize = 500;
/// Earliest timestamp accepted (2000-01-01T00:00:00Z), ms.
const MIN_TS_MS: i64 = 946_684_800_000;
/// Latest timestamp accepted (2200-01-01T00:00:00Z), ms.
const MAX_TS_MS: i64 = 7_258_118_400_000;

/// The body format of the operator's feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON, fields by JSONPath subset.
    Json,
    /// XML, fields by element paths.
    Xml,
}

/// How the timestamp field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    /// A number below 10¹¹ is epoch seconds, above it epoch milliseconds; else RFC 3339.
    #[default]
    Auto,
    /// RFC 3339 with an offset (`2026-03-02T09:15:04.120Z`, `…+01:00`).
    Rfc3339,
    /// Seconds since the epoch (fractions allowed).
    EpochS,
    /// Milliseconds since the epoch.
    EpochMs,
}

/// A call state, as the hub understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// A call is alerting on the phone.
    Ringing,
    /// In a call (answered, connected, held).
    InCall,
    /// No call.
    Idle,
    /// The operator says something the mapping does not know, or "unknown": no opinion.
    Unknown,
}

/// What an operator call-state word maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStateTarget {
    /// Ringing.
    Ringing,
    /// In a call.
    InCall,
    /// Idle.
    Idle,
    /// No opinion.
    Unknown,
    /// The word says nothing about the call (e.g. an event type `forward_changed`).
    None,
}

/// `[providers.mapping]`: where the events and their fields are, and what the words mean.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// `json` or `xml`.
    pub format: Format,
    /// Path to the event list: `$.events[*]` (JSON), `/presence/subscriber` (XML).
    pub events: String,
    /// The phone number (E.164, national form or extension). Required.
    pub number: String,
    /// The call state word (see `call_states`).
    #[serde(default)]
    pub call_state: Option<String>,
    /// The diversion (forward) target number.
    #[serde(default)]
    pub forward_to: Option<String>,
    /// Whether the diversion is on (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`,
    /// `enabled`/`disabled`, `active`/`inactive`). Without it, a non-empty `forward_to` means on.
    #[serde(default)]
    pub forward_active: Option<String>,
    /// The absence type word (see `absences`).
    #[serde(default)]
    pub absence: Option<String>,
    /// The absence's free text.
    #[serde(default)]
    pub absence_text: Option<String>,
    /// When the absence ends (same format as `timestamp`).
    #[serde(default)]
    pub absence_until: Option<String>,
    /// When the operator observed the event; orders events per person.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// How `timestamp` and `absence_until` are written.
    #[serde(default)]
    pub timestamp_format: TimestampFormat,
    /// A unique event id (duplicates are dropped).
    #[serde(default)]
    pub event_id: Option<String>,
    /// Operator call-state words → `ringing`, `in_call`, `idle`, `unknown` or `none`.
    /// The canonical words are always understood; without this table, common words are too
    /// (`alerting`, `connected`, `busy`, `free`, `call_start`, `call_end`…).
    #[serde(default)]
    pub call_states: BTreeMap<String, CallStateTarget>,
    /// Operator absence words → the hub's absence reason codes (`meeting`, `sick`,
    /// `vacation`, `lunch`…) or `none` (clears). The codes themselves are always understood.
    #[serde(default)]
    pub absences: BTreeMap<String, String>,
    /// The reason code for absence words not in `absences` (`none`: ignore them).
    #[serde(default = "default_unknown_absence")]
    pub unknown_absence: String,
}

fn default_unknown_absence() -> String {
    "other".into()
}

/// Why a mapping does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MappingError {
    /// A path is not in the supported subset.
    #[error("mapping.{field}: {reason}")]
    BadPath {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An absence word maps to a code the hub does not know.
    #[error("mapping.absences: {word:?} maps to {code:?}, which is not an absence reason code ({known})")]
    UnknownReason {
        /// The operator word.
        word: String,
        /// The code.
        code: String,
        /// The known codes.
        known: String,
    },
    /// A value map key is empty or too long.
    #[error("mapping.{field}: keys must be 1-{MAX_VALUE_LEN} bytes")]
    BadKey {
        /// The map.
        field: &'static str,
    },
}

/// Why a whole body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Not JSON, or larger than [`MAX_BODY`] (the toolkit's decoding errors).
    #[error(transparent)]
    Json(#[from] json::ParseError),
    /// Not well-formed XML, or over a limit.
    #[error("not well-formed XML: {0}")]
    Xml(String),
    /// More events than [`MAX_EVENTS`].
    #[error("more than {MAX_EVENTS} events in one body")]
    TooManyEvents,
}

/// Why one event was refused (the others in the body still count).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// No number, or an empty one.
    #[error("event #{0}: no number")]
    MissingNumber(usize),
    /// A field holds an object or array where a value was expected.
    #[error("event #{index}: {field} is not a single value")]
    NotScalar {
        /// Position in the body.
        index: usize,
        /// The field.
        field: &'static str,
    },
    /// A value is longer than [`MAX_VALUE_LEN`].
    #[error("event #{index}: {field} is too long")]
    TooLong {
        /// Position in the body.
        index: usize,
        /// The field.
        field: &'static str,
    },
    /// The timestamp does not parse or is out of range.
    #[error("event #{index}: {field}: {reason}")]
    BadTimestamp {
        /// Position in the body.
        index: usize,
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `forward_active` is not a boolean word.
    #[error("event #{index}: forward_active {value:?} is not true/false")]
    BadBoolean {
        /// Position in the body.
        index: usize,
        /// The value (cut).
        value: String,
    },
}

/// An absence the operator reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AbsenceStatement {
    /// The hub's reason code.
    pub code: Box<str>,
    /// Free text.
    pub text: Option<String>,
    /// End, if given.
    pub until: Option<UnixMs>,
}

/// One event, mapped. `None` fields say nothing (the last known value stands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorEvent {
    /// The phone number as sent.
    pub number: String,
    /// The call state.
    pub call: Option<CallState>,
    /// `Some(Some(target))`: diverted (target may be empty when not given); `Some(None)`: not.
    pub forward: Option<Option<String>>,
    /// `Some(Some(a))`: absent; `Some(None)`: the absence is over.
    pub absence: Option<Option<AbsenceStatement>>,
    /// When the operator observed it (ms).
    pub at: Option<UnixMs>,
    /// The operator's event id.
    pub id: Option<String>,
    /// Words the maps did not know, as `(field, value)` — shown in health, logged once.
    pub unknown: Vec<(&'static str, String)>,
}

impl OperatorEvent {
    /// A hash of what the event says (not its id): equal for a re-sent event.
    pub fn fingerprint(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        (&self.call, &self.forward, &self.absence, self.at).hash(&mut h);
        h.finish()
    }
}

#[derive(Debug, Clone)]
enum Path {
    Json(JsonPath),
    Xml(XmlPath),
}

#[derive(Debug, Clone)]
enum AbsenceTarget {
    Clear,
    Reason(Box<str>),
}

/// A compiled mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    format: Format,
    events: Path,
    number: Path,
    call_state: Option<Path>,
    forward_to: Option<Path>,
    forward_active: Option<Path>,
    absence: Option<Path>,
    absence_text: Option<Path>,
    absence_until: Option<Path>,
    timestamp: Option<Path>,
    event_id: Option<Path>,
    ts_format: TimestampFormat,
    call_states: HashMap<String, CallStateTarget>,
    absences: HashMap<String, AbsenceTarget>,
    unknown_absence: AbsenceTarget,
}

/// Call-state words understood when no `call_states` table is configured.
const DEFAULT_CALL_STATES: &[(&str, CallStateTarget)] = &[
    ("alerting", CallStateTarget::Ringing),
    ("ring", CallStateTarget::Ringing),
    ("incoming", CallStateTarget::Ringing),
    ("offered", CallStateTarget::Ringing),
    ("delivered", CallStateTarget::Ringing),
    ("call_start", CallStateTarget::Ringing),
    ("busy", CallStateTarget::InCall),
    ("connected", CallStateTarget::InCall),
    ("answered", CallStateTarget::InCall),
    ("call_answered", CallStateTarget::InCall),
    ("active", CallStateTarget::InCall),
    ("established", CallStateTarget::InCall),
    ("held", CallStateTarget::InCall),
    ("on_hold", CallStateTarget::InCall),
    ("talking", CallStateTarget::InCall),
    ("free", CallStateTarget::Idle),
    ("available", CallStateTarget::Idle),
    ("ready", CallStateTarget::Idle),
    ("released", CallStateTarget::Idle),
    ("cleared", CallStateTarget::Idle),
    ("ended", CallStateTarget::Idle),
    ("disconnected", CallStateTarget::Idle),
    ("call_end", CallStateTarget::Idle),
];

/// Absence words understood when no `absences` table is configured (besides the codes).
const DEFAULT_ABSENCES: &[(&str, &str)] =
    &[("illness", "sick"), ("ill", "sick"), ("holiday", "vacation"), ("travel", "business_trip"), ("none", "none")];

fn key(s: &str) -> String {
    s.trim().to_lowercase()
}

impl Mapping {
    /// Compiles a mapping against the hub's absence reasons.
    pub fn compile(cfg: &MappingConfig, reasons: &[AbsenceReason]) -> Result<Mapping, MappingError> {
        let path = |field: &'static str, s: &str, events: bool| -> Result<Path, MappingError> {
            let r = match (cfg.format, events) {
                (Format::Json, _) => JsonPath::compile(s).map(Path::Json),
                (Format::Xml, true) => XmlPath::compile_events(s).map(Path::Xml),
                (Format::Xml, false) => XmlPath::compile_field(s).map(Path::Xml),
            };
            r.map_err(|reason| MappingError::BadPath { field, reason })
        };
        let opt = |field: &'static str, s: &Option<String>| -> Result<Option<Path>, MappingError> {
            s.as_deref().map(|s| path(field, s, false)).transpose()
        };
        let known = |code: &str| reasons.iter().any(|r| &*r.code == code);
        let known_list = || reasons.iter().map(|r| &*r.code).collect::<Vec<_>>().join(", ");
        let target = |word: &str, code: &str| -> Result<AbsenceTarget, MappingError> {
            let c = code.trim();
            if c.eq_ignore_ascii_case("none") {
                Ok(AbsenceTarget::Clear)
            } else if known(c) {
                Ok(AbsenceTarget::Reason(c.into()))
            } else {
                Err(MappingError::UnknownReason { word: word.into(), code: c.into(), known: known_list() })
            }
        };

        let mut call_states = HashMap::new();
        if cfg.call_states.is_empty() {
            call_states.extend(DEFAULT_CALL_STATES.iter().map(|(k, v)| (k.to_string(), *v)));
        }
        for (w, t) in [
            ("ringing", CallStateTarget::Ringing),
            ("in_call", CallStateTarget::InCall),
            ("idle", CallStateTarget::Idle),
            ("unknown", CallStateTarget::Unknown),
        ] {
            call_states.insert(w.to_string(), t);
        }
        for (k, v) in &cfg.call_states {
            if k.trim().is_empty() || k.len() > MAX_VALUE_LEN {
                return Err(MappingError::BadKey { field: "call_states" });
            }
            call_states.insert(key(k), *v);
        }

        let mut absences = HashMap::new();
        for r in reasons {
            absences.insert(key(&r.code), AbsenceTarget::Reason(r.code.clone()));
        }
        if cfg.absences.is_empty() {
            for (w, c) in DEFAULT_ABSENCES {
                if let Ok(t) = target(w, c) {
                    absences.insert(w.to_string(), t);
                }
            }
        }
        for (k, v) in &cfg.absences {
            if k.trim().is_empty() || k.len() > MAX_VALUE_LEN {
                return Err(MappingError::BadKey { field: "absences" });
            }
            absences.insert(key(k), target(k, v)?);
        }
        let unknown_absence = target("(unknown)", &cfg.unknown_absence)?;

        Ok(Mapping {
            format: cfg.format,
            events: path("events", &cfg.events, true)?,
            number: path("number", &cfg.number, false)?,
            call_state: opt("call_state", &cfg.call_state)?,
            forward_to: opt("forward_to", &cfg.forward_to)?,
            forward_active: opt("forward_active", &cfg.forward_active)?,
            absence: opt("absence", &cfg.absence)?,
            absence_text: opt("absence_text", &cfg.absence_text)?,
            absence_until: opt("absence_until", &cfg.absence_until)?,
            timestamp: opt("timestamp", &cfg.timestamp)?,
            event_id: opt("event_id", &cfg.event_id)?,
            ts_format: cfg.timestamp_format,
            call_states,
            absences,
            unknown_absence,
        })
    }

    /// The body format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Maps a call-state word; `None` when the word says nothing about the call. Unknown
    /// words are `Unknown` and reported as unknown.
    pub fn call_state(&self, word: &str) -> (Option<CallState>, bool) {
        match self.call_states.get(&key(word)) {
            Some(CallStateTarget::Ringing) => (Some(CallState::Ringing), false),
            Some(CallStateTarget::InCall) => (Some(CallState::InCall), false),
            Some(CallStateTarget::Idle) => (Some(CallState::Idle), false),
            Some(CallStateTarget::Unknown) => (Some(CallState::Unknown), false),
            Some(CallStateTarget::None) => (None, false),
            None => (Some(CallState::Unknown), true),
        }
    }

    /// Maps an absence word to a reason code (`None`: no absence). The flag is true when the
    /// word was not in the table.
    pub fn absence_code(&self, word: &str) -> (Option<Box<str>>, bool) {
        if word.trim().is_empty() {
            return (None, false);
        }
        let (t, unknown) = match self.absences.get(&key(word)) {
            Some(t) => (t, false),
            None => (&self.unknown_absence, true),
        };
        match t {
            AbsenceTarget::Clear => (None, unknown),
            AbsenceTarget::Reason(c) => (Some(c.clone()), unknown),
        }
    }

    /// Parses a body into events. A body that does not parse is an error; an event that does
    /// not map is an error in its place, and the others still count.
    pub fn parse(&self, body: &[u8]) -> Result<Vec<Result<OperatorEvent, EventError>>, ParseError> {
        match (&self.events, self.format) {
            (Path::Json(p), _) => {
                let doc: Value = json::from_json_max(body, MAX_BODY)?;
                let mut sel = p.select(&doc, MAX_EVENTS + 1);
                if sel.len() == 1 {
                    if let Value::Array(a) = sel[0] {
                        sel = a.iter().take(MAX_EVENTS + 1).collect();
                    }
                }
                if sel.len() > MAX_EVENTS {
                    return Err(ParseError::TooManyEvents);
                }
                Ok(sel.into_iter().enumerate().map(|(i, ev)| self.event(i, &|p| json_field(ev, p))).collect())
            }
            (Path::Xml(p), _) => {
                let doc = XmlDoc::parse(body)?;
                let sel = doc.select(p, MAX_EVENTS + 1);
                if sel.len() > MAX_EVENTS {
                    return Err(ParseError::TooManyEvents);
                }
                Ok(sel.into_iter().enumerate().map(|(i, n)| self.event(i, &|p| xml_field(&doc, n, p))).collect())
            }
        }
    }

    fn event(
        &self,
        index: usize,
        get: &dyn Fn(&Path) -> Result<Option<String>, ()>,
    ) -> Result<OperatorEvent, EventError> {
        let field = |field: &'static str, p: Option<&Path>| -> Result<Option<String>, EventError> {
            let Some(p) = p else { return Ok(None) };
            match get(p) {
                Err(()) => Err(EventError::NotScalar { index, field }),
                Ok(Some(v)) if v.len() > MAX_VALUE_LEN => match field {
                    "absence_text" => {
                        Ok(Some(truncate(&v, MAX_VALUE_LEN).to_string()))
                    }
                    _ => Err(EventError::TooLong { index, field }),
                },
                Ok(v) => Ok(v),
            }
        };
        let number = field("number", Some(&self.number))?.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
        let Some(number) = number else { return Err(EventError::MissingNumber(index)) };
        let mut unknown = Vec::new();
        let call = match field("call_state", self.call_state.as_ref())? {
            Some(w) => {
                let (c, unk) = self.call_state(&w);
                if unk {
                    unknown.push(("call_state", w));
                }
                c
            }
            None => None,
        };
        let ts =
            |f: &'static str, v: Option<String>| -> Result<Option<UnixMs>, EventError> {
                match v.as_deref().map(str::trim) {
                    None | Some("") => Ok(None),
                    Some(s) => parse_timestamp(s, self.ts_format)
                        .map(Some)
                        .map_err(|reason| EventError::BadTimestamp { index, field: f, reason }),
                }
            };
        let at = ts("timestamp", field("timestamp", self.timestamp.as_ref())?)?;
        let target = field("forward_to", self.forward_to.as_ref())?.map(|t| t.trim().to_string());
        let active = match field("forward_active", self.forward_active.as_ref())? {
            Some(v) => Some(parse_bool(&v).ok_or_else(|| EventError::BadBoolean {
                index,
                value: truncate(&v, 40).to_string(),
            })?),
            None => None,
        };
        let forward = match (active, target) {
            (Some(false), _) => Some(None),
            (Some(true), t) => Some(Some(t.unwrap_or_default())),
            (None, Some(t)) if t.is_empty() => Some(None),
            (None, Some(t)) => Some(Some(t)),
            (None, None) => None,
        };
        let absence = match field("absence", self.absence.as_ref())? {
            Some(w) => {
                let (code, unk) = self.absence_code(&w);
                if unk {
                    unknown.push(("absence", w.trim().to_string()));
                }
                match code {
                    Some(code) => {
                        let text = field("absence_text", self.absence_text.as_ref())?
                            .map(|t| t.trim().to_string())
                            .filter(|t| !t.is_empty());
                        let until = ts("absence_until", field("absence_until", self.absence_until.as_ref())?)?;
                        Some(Some(AbsenceStatement { code, text, until }))
                    }
                    None => Some(None),
                }
            }
            None => None,
        };
        let id = field("event_id", self.event_id.as_ref())?.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        Ok(OperatorEvent { number, call, forward, absence, at, id, unknown })
    }
}

fn json_field(ev: &Value, p: &Path) -> Result<Option<String>, ()> {
    let Path::Json(p) = p else { return Ok(None) };
    match p.first(ev) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(Value::Array(_) | Value::Object(_)) => Err(()),
    }
}

fn xml_field(doc: &XmlDoc, n: usize, p: &Path) -> Result<Option<String>, ()> {
    let Path::Xml(p) = p else { return Ok(None) };
    Ok(doc.field(n, p).map(str::to_string))
}

/// Reads a boolean word (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, `enabled`/
/// `disabled`, `active`/`inactive`; empty is false).
pub fn parse_bool(s: &str) -> Option<bool> {
    match key(s).as_str() {
        "true" | "1" | "yes" | "y" | "on" | "enabled" | "active" => Some(true),
        "false" | "0" | "no" | "n" | "off" | "disabled" | "inactive" | "" => Some(false),
        _ => None,
    }
}

/// Parses a timestamp to ms since the epoch; out-of-range values (before 2000, after 2200)
/// are refused, as a unit mix-up is the likely cause.
pub fn parse_timestamp(s: &str, f: TimestampFormat) -> Result<UnixMs, String> {
    let s = s.trim();
    let numeric = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && s.bytes().filter(|&b| b == b'.').count() <= 1;
    let ms = match f {
        TimestampFormat::Rfc3339 => rfc3339_ms(s)?,
        TimestampFormat::EpochS => epoch(s, 1000.0)?,
        TimestampFormat::EpochMs => epoch(s, 1.0)?,
        TimestampFormat::Auto if numeric => {
            let v: f64 = s.parse().map_err(|_| format!("{:?} is not a number", cut(s)))?;
            if v < 1e11 {
                epoch(s, 1000.0)?
            } else {
                epoch(s, 1.0)?
            }
        }
        TimestampFormat::Auto => rfc3339_ms(s)?,
    };
    if !(MIN_TS_MS..=MAX_TS_MS).contains(&ms) {
        return Err(format!("{:?} is out of range (2000-2200)", cut(s)));
    }
    Ok(ms)
}

fn cut(s: &str) -> &str {
    truncate(s, 40)
}

fn rfc3339_ms(s: &str) -> Result<UnixMs, String> {
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| format!("{:?} is not an RFC 3339 time with an offset", cut(s)))
}

fn epoch(s: &str, scale: f64) -> Result<UnixMs, String> {
    if let Ok(n) = s.parse::<i64>() {
        return n.checked_mul(scale as i64).ok_or_else(|| format!("{:?} is out of range", cut(s)));
    }
    let v: f64 = s.parse().map_err(|_| format!("{:?} is not a number", cut(s)))?;
    let ms = v * scale;
    if !ms.is_finite() || ms.abs() > 1e15 {
        return Err(format!("{:?} is out of range", cut(s)));
    }
    Ok(ms.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reasons() -> Vec<AbsenceReason> {
        AbsenceReason::defaults()
    }

    fn json_cfg(events: &str) -> MappingConfig {
        MappingConfig {
            format: Format::Json,
            events: events.into(),
            number: "$.msisdn".into(),
            call_state: Some("$.state".into()),
            forward_to: Some("$.fwd.to".into()),
            forward_active: None,
            absence: Some("$.abs.type".into()),
            absence_text: Some("$.abs.text".into()),
            absence_until: None,
            timestamp: Some("$.ts".into()),
            timestamp_format: TimestampFormat::Auto,
            event_id: Some("$.id".into()),
            call_states: BTreeMap::new(),
            absences: BTreeMap::new(),
            unknown_absence: "other".into(),
        }
    }

    #[test]
    fn json_events_map_with_value_maps_and_defaults() {
        let m = Mapping::compile(&json_cfg("$.events[*]"), &reasons()).unwrap();
        let body = json!({"events": [
            {"id": "e1", "msisdn": "+46701234567", "state": "ALERTING", "ts": "2026-03-02T09:15:04.120Z"},
            {"id": "e2", "msisdn": 46701234567u64, "state": "Connected", "ts": 1772442905},
            {"msisdn": "+46701234567", "state": "call_end", "fwd": {"to": "+46812345"}, "ts": 1772442906000u64},
            {"msisdn": "+46701234567", "fwd": {"to": ""}, "abs": {"type": "ILLNESS", "text": " Home "}},
            {"msisdn": "+46701234567", "state": "teleporting", "abs": {"type": "Jury duty"}},
            {"msisdn": "+46701234567", "abs": {"type": ""}},
            {"state": "idle"},
            {"msisdn": "+4670", "fwd": {"to": {"x": 1}}},
            {"msisdn": "+4670", "ts": "yesterday"},
        ]});
        let evs = m.parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(evs.len(), 9);
        let e0 = evs[0].as_ref().unwrap();
        assert_eq!((e0.call, e0.at, e0.id.as_deref()), (Some(CallState::Ringing), Some(1_772_442_904_120), Some("e1")));
        assert_eq!(e0.forward, None, "absent fields say nothing");
        let e1 = evs[1].as_ref().unwrap();
        assert_eq!(
            (e1.number.as_str(), e1.call, e1.at),
            ("46701234567", Some(CallState::InCall), Some(1_772_442_905_000))
        );
        let e2 = evs[2].as_ref().unwrap();
        assert_eq!(
            (e2.call, e2.forward.clone(), e2.at),
            (Some(CallState::Idle), Some(Some("+46812345".into())), Some(1_772_442_906_000))
        );
        let e3 = evs[3].as_ref().unwrap();
        assert_eq!(e3.forward, Some(None), "an empty target clears the diversion");
        assert_eq!(
            e3.absence,
            Some(Some(AbsenceStatement { code: "sick".into(), text: Some("Home".into()), until: None }))
        );
        let e4 = evs[4].as_ref().unwrap();
        assert_eq!(e4.call, Some(CallState::Unknown));
        assert_eq!(e4.absence.clone().flatten().map(|a| a.code), Some("other".into()));
        assert_eq!(e4.unknown, vec![("call_state", "teleporting".to_string()), ("absence", "Jury duty".to_string())]);
        assert_eq!(evs[5].as_ref().unwrap().absence, Some(None), "an empty absence clears it");
        assert_eq!(evs[6], Err(EventError::MissingNumber(6)));
        assert_eq!(evs[7], Err(EventError::NotScalar { index: 7, field: "forward_to" }));
        assert!(matches!(evs[8], Err(EventError::BadTimestamp { index: 8, .. })));
    }

    #[test]
    fn configured_maps_replace_the_default_words_but_keep_the_canonical_ones() {
        let mut c = json_cfg("$");
        c.call_states.insert("RING".into(), CallStateTarget::Ringing);
        c.call_states.insert("forward_changed".into(), CallStateTarget::None);
        c.absences.insert("MOTE".into(), "meeting".into());
        c.absences.insert("Tilgjengelig".into(), "none".into());
        let m = Mapping::compile(&c, &reasons()).unwrap();
        assert_eq!(m.call_state(" ring "), (Some(CallState::Ringing), false));
        assert_eq!(m.call_state("in_call"), (Some(CallState::InCall), false));
        assert_eq!(
            m.call_state("alerting"),
            (Some(CallState::Unknown), true),
            "defaults are off once a table is given"
        );
        assert_eq!(m.call_state("FORWARD_CHANGED"), (None, false));
        assert_eq!(m.absence_code("mote"), (Some("meeting".into()), false));
        assert_eq!(m.absence_code("SICK"), (Some("sick".into()), false), "reason codes are always understood");
        assert_eq!(m.absence_code("TILGJENGELIG"), (None, false));
        assert_eq!(m.absence_code("illness"), (Some("other".into()), true));
        // One object at $ is one event; an array at $ is a list.
        let one = m.parse(br#"{"msisdn":"1","state":"RING"}"#).unwrap();
        assert_eq!(one.len(), 1);
        let list = m.parse(br#"[{"msisdn":"1"},{"msisdn":"2"}]"#).unwrap();
        assert_eq!(list.len(), 2);
        c.absences.insert("X".into(), "no_such_code".into());
        assert!(matches!(Mapping::compile(&c, &reasons()), Err(MappingError::UnknownReason { .. })));
        let mut c = json_cfg("$");
        c.unknown_absence = "none".into();
        let m = Mapping::compile(&c, &reasons()).unwrap();
        assert_eq!(m.absence_code("whatever"), (None, true));
    }

    #[test]
    fn forward_active_flag_decides_when_mapped() {
        let mut c = json_cfg("$[*]");
        c.forward_active = Some("$.fwd.on".into());
        let m = Mapping::compile(&c, &reasons()).unwrap();
        let evs = m
            .parse(br#"[{"msisdn":"1","fwd":{"on":true,"to":"+4599"}},{"msisdn":"1","fwd":{"on":"false","to":"+4599"}},{"msisdn":"1","fwd":{"on":"yes"}},{"msisdn":"1","fwd":{"on":"maybe"}}]"#)
            .unwrap();
        assert_eq!(evs[0].as_ref().unwrap().forward, Some(Some("+4599".into())));
        assert_eq!(evs[1].as_ref().unwrap().forward, Some(None));
        assert_eq!(evs[2].as_ref().unwrap().forward, Some(Some(String::new())));
        assert!(matches!(evs[3], Err(EventError::BadBoolean { .. })));
    }

    #[test]
    fn timestamps_in_every_format() {
        use TimestampFormat::*;
        assert_eq!(parse_timestamp("2026-03-02T09:15:04.120Z", Rfc3339), Ok(1_772_442_904_120));
        assert_eq!(parse_timestamp("2026-03-02T10:15:04+01:00", Auto), Ok(1_772_442_904_000));
        assert_eq!(parse_timestamp("1772442904", EpochS), Ok(1_772_442_904_000));
        assert_eq!(parse_timestamp("1772442904.5", EpochS), Ok(1_772_442_904_500));
        assert_eq!(parse_timestamp("1772442904120", EpochMs), Ok(1_772_442_904_120));
        assert_eq!(parse_timestamp("1772442904", Auto), Ok(1_772_442_904_000));
        assert_eq!(parse_timestamp("1772442904120", Auto), Ok(1_772_442_904_120));
        assert!(parse_timestamp("2026-03-02T09:15:04", Rfc3339).is_err(), "no offset");
        assert!(parse_timestamp("1772442904120", EpochS).is_err(), "ms given as seconds is out of range");
        assert!(parse_timestamp("1772442904", EpochMs).is_err(), "seconds given as ms is 1970");
        assert!(parse_timestamp("99999999999999999999999", EpochS).is_err());
        assert!(parse_timestamp("1e400", EpochS).is_err());
        assert!(parse_timestamp("NaN", EpochS).is_err());
        assert!(parse_timestamp("", Auto).is_err());
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        let m = Mapping::compile(&json_cfg("$.events[*]"), &reasons()).unwrap();
        assert!(matches!(m.parse(b"{\"events\": ["), Err(ParseError::Json(_))));
        assert_eq!(m.parse(b"{\"other\": 1}").unwrap().len(), 0, "no events is not an error");
        let many = format!("{{\"events\": [{}]}}", vec!["{}"; MAX_EVENTS + 1].join(","));
        assert_eq!(m.parse(many.as_bytes()), Err(ParseError::TooManyEvents));
        let long = format!("{{\"events\": [{{\"msisdn\": \"{}\"}}]}}", "1".repeat(MAX_VALUE_LEN + 1));
        assert!(matches!(m.parse(long.as_bytes()).unwrap()[0], Err(EventError::TooLong { field: "number", .. })));
    }
}
