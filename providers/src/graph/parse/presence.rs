//! One person's presence as Graph reports it, the answer of `getPresencesByUserId`, and the
//! status message reduced to plain text.

use super::*;

/// One person's presence as Graph reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphPresence {
    /// The user's Entra object id.
    pub id: String,
    /// Availability; `Unknown` for `PresenceUnknown`, a missing value or an unknown string.
    pub availability: Availability,
    /// Activity, unless it only restates availability or is not recognised.
    pub activity: Option<Activity>,
    /// The raw availability or activity value that was not recognised (for a log-once),
    /// bounded to 64 bytes; `None` when everything was known.
    pub unknown: Option<String>,
    /// `sequenceNumber`: lexicographically ordered version of the presence object.
    pub sequence: Option<String>,
    /// The status message: HTML tags stripped, entities decoded, whitespace collapsed, bounded
    /// like every note (500 bytes); `None` when empty.
    pub status_message: Option<String>,
    /// When the status message expires (`expiryDateTime`); `None` when absent, "never"
    /// (year 9999) or in a time zone other than UTC without an offset in `dateTime`.
    pub status_expires_at: Option<UnixMs>,
    /// Out of office: `outOfOfficeSettings.isOutOfOffice` or activity `OutOfOffice`.
    pub ooo: bool,
    /// The out-of-office message, cleaned like the status message.
    pub ooo_message: Option<String>,
    /// `workLocation.workLocationType` (`office`, `remote`, `timeOff`…), unless unspecified.
    pub work_location: Option<String>,
}

impl GraphPresence {
    /// Maps the presence onto a model signal: source Teams, instance [`INSTANCE`], version =
    /// `sequenceNumber`, no validity bound. `PresenceUnknown` gives neither availability nor
    /// activity (no opinion). The note is the status message unless it has expired at
    /// `observed_at`, else the out-of-office message when out of office.
    pub fn to_signal(&self, observed_at: UnixMs) -> Signal {
        let known = self.availability.is_known();
        let mut s = Signal::new(Source::Teams, INSTANCE, known.then_some(self.availability), observed_at);
        s.activity = if known { self.activity.clone() } else { None };
        let status = self.status_message.as_deref().filter(|_| self.status_expires_at.is_none_or(|t| t > observed_at));
        let ooo_note = if self.ooo { self.ooo_message.as_deref() } else { None };
        s.note = status.or(ooo_note).and_then(bounded_note);
        s.ooo = self.ooo;
        s.version = self.sequence.as_deref().map(|v| Version::Text(v.into()));
        s.clamp();
        s
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPresence {
    id: Option<String>,
    availability: Option<String>,
    activity: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    status_message: Option<RawStatusMessage>,
    #[serde(default, deserialize_with = "lenient")]
    out_of_office_settings: Option<RawOutOfOffice>,
    #[serde(default, deserialize_with = "lenient")]
    sequence_number: Option<String>,
    #[serde(default)]
    work_location: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatusMessage {
    #[serde(default, deserialize_with = "lenient")]
    message: Option<RawItemBody>,
    #[serde(default, deserialize_with = "lenient")]
    expiry_date_time: Option<RawDateTimeTimeZone>,
}

#[derive(Deserialize)]
struct RawItemBody {
    #[serde(default, deserialize_with = "lenient")]
    content: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDateTimeTimeZone {
    date_time: Option<String>,
    time_zone: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOutOfOffice {
    #[serde(default, deserialize_with = "lenient")]
    is_out_of_office: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    message: Option<String>,
}

/// Parses one `presence` object (`GET …/presence`, or a decrypted notification `data`).
/// Unknown fields are ignored; `id` is required (1–100 bytes).
pub fn parse_presence(json: &[u8]) -> Result<GraphPresence, ParseError> {
    presence_from_raw(from_json(json)?)
}

/// Parses the `{"value":[…]}` answer of `getPresencesByUserId`: one result per item, so one
/// bad item does not lose the others. Fails as a whole only when the envelope is unusable or
/// holds more than [`MAX_ITEMS`] items.
pub fn parse_presences(json: &[u8]) -> Result<Vec<Result<GraphPresence, ParseError>>, ParseError> {
    #[derive(Deserialize)]
    struct Envelope {
        value: Option<Capped<Value, MAX_ITEMS>>,
    }
    let env: Envelope = from_json(json)?;
    let items = env.value.ok_or(ParseError::Missing("value"))?.check("presences")?;
    Ok(items
        .into_iter()
        .map(|v| serde_json::from_value::<RawPresence>(v).map_err(json_error).and_then(presence_from_raw))
        .collect())
}

fn presence_from_raw(raw: RawPresence) -> Result<GraphPresence, ParseError> {
    let id = required_id(raw.id.as_deref(), "id")?;
    let mut unknown = None;
    let availability = match raw.availability.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Availability::Unknown,
        Some(a) => map_availability(a).unwrap_or_else(|| {
            unknown = Some(truncate(a, MAX_SHORT).to_string());
            Availability::Unknown
        }),
    };
    let activity = match raw.activity.as_deref() {
        None => None,
        Some(a) => {
            let (activity, recognised) = map_activity(a);
            if !recognised && unknown.is_none() {
                unknown = Some(truncate(a.trim(), MAX_SHORT).to_string());
            }
            activity
        }
    };
    let (status_message, status_expires_at) = match raw.status_message {
        None => (None, None),
        Some(sm) => (
            sm.message.and_then(|m| m.content).as_deref().and_then(clean_text),
            sm.expiry_date_time.and_then(|e| graph_date_time(e.date_time.as_deref()?, e.time_zone.as_deref())),
        ),
    };
    let (settings_ooo, ooo_message) = match raw.out_of_office_settings {
        None => (false, None),
        Some(o) => (o.is_out_of_office.unwrap_or(false), o.message.as_deref().and_then(clean_text)),
    };
    let ooo = settings_ooo || activity == Some(Activity::OutOfOffice);
    let sequence = raw
        .sequence_number
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= MAX_SEQUENCE)
        .map(String::from);
    Ok(GraphPresence {
        id,
        availability,
        activity,
        unknown,
        sequence,
        status_message,
        status_expires_at,
        ooo,
        ooo_message,
        work_location: work_location(raw.work_location.as_ref()),
    })
}

/// Graph's availability values, matched case-insensitively.
const GRAPH_AVAILABILITY: [(&str, Availability); 9] = [
    ("Available", Availability::Available),
    ("AvailableIdle", Availability::AvailableIdle),
    ("Away", Availability::Away),
    ("BeRightBack", Availability::BeRightBack),
    ("Busy", Availability::Busy),
    ("BusyIdle", Availability::BusyIdle),
    ("DoNotDisturb", Availability::DoNotDisturb),
    ("Offline", Availability::Offline),
    ("PresenceUnknown", Availability::Unknown),
];

fn map_availability(s: &str) -> Option<Availability> {
    GRAPH_AVAILABILITY.iter().find(|(name, _)| name.eq_ignore_ascii_case(s)).map(|(_, a)| *a)
}

/// The activity, and whether the string was recognised.
fn map_activity(s: &str) -> (Option<Activity>, bool) {
    let t = s.trim();
    if t.eq_ignore_ascii_case("AvailableInactive") {
        return (Some(Activity::Inactive), true);
    }
    match Activity::parse_source(t) {
        Some(Activity::Other(_)) => (None, false),
        a => (a, true),
    }
}

fn work_location(v: Option<&Value>) -> Option<String> {
    let s = match v? {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("workLocationType")?.as_str()?,
        _ => return None,
    };
    let s = s.trim();
    let unspecified =
        s.is_empty() || s.eq_ignore_ascii_case("unspecified") || s.eq_ignore_ascii_case("unknownFutureValue");
    (!unspecified).then(|| truncate(s, MAX_SHORT).to_string())
}

/// A Graph `dateTimeTimeZone`: an offset in `dateTime` wins; otherwise only UTC is understood.
fn graph_date_time(date_time: &str, time_zone: Option<&str>) -> Option<UnixMs> {
    let dt = date_time.trim();
    if dt.is_empty() || dt.len() > 64 {
        return None;
    }
    let ms = match parse_rfc3339(dt) {
        Some(ms) => ms,
        None => {
            let utc = time_zone
                .map(str::trim)
                .is_some_and(|z| ["UTC", "Etc/UTC", "GMT", "Etc/GMT", "Z"].iter().any(|n| n.eq_ignore_ascii_case(z)));
            if !utc {
                return None;
            }
            civil_utc(dt)?
        }
    };
    (ms < FAR_FUTURE_MS).then_some(ms)
}

/// A time stamp as Graph writes them: RFC 3339, or without offset (then UTC).
pub(super) fn graph_time(s: &str) -> Option<UnixMs> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    parse_rfc3339(s).or_else(|| civil_utc(s))
}

fn civil_utc(s: &str) -> Option<UnixMs> {
    let civil: jiff::civil::DateTime = s.parse().ok()?;
    jiff::tz::Offset::UTC.to_timestamp(civil).ok().map(|t| t.as_millisecond())
}


/// Status and out-of-office messages to one line of plain text: tags dropped (with the
/// contents of `head`, `style`, `script`, `title` and comments), block tags as spaces, common
/// entities decoded, control characters removed, whitespace collapsed, bounded like a note.
pub(super) fn clean_text(raw: &str) -> Option<String> {
    let text = decode_entities(&strip_tags(truncate(raw, MAX_HTML_INPUT)));
    let text: String = text.chars().filter(|c| !c.is_control() || c.is_whitespace()).collect();
    let mut out = String::with_capacity(text.len().min(2 * MAX_NOTE_LEN));
    for word in text.split_whitespace() {
        if out.len() > 2 * MAX_NOTE_LEN {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    bounded_note(truncate(&out, MAX_NOTE_LEN)).map(String::from)
}

const RAW_TEXT_TAGS: [&str; 4] = ["head", "style", "script", "title"];
const BLOCK_TAGS: [&str; 21] = [
    "br",
    "p",
    "div",
    "li",
    "ul",
    "ol",
    "tr",
    "td",
    "th",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "blockquote",
    "pre",
    "body",
    "html",
];

/// Drops tags. A `<` starts a tag only when followed by a letter, `/`, `!` or `?` and closed
/// by a later `>`; otherwise it is text ("a < b", "<3"). Linear in the input.
fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut skipping: Option<&'static str> = None;
    let mut no_more_gt = false;
    while let Some(lt) = rest.find('<') {
        if skipping.is_none() {
            out.push_str(rest.get(..lt).unwrap_or(""));
        }
        let after = rest.get(lt + 1..).unwrap_or("");
        if let Some(comment) = after.strip_prefix("!--") {
            match comment.find("-->") {
                Some(end) => {
                    rest = comment.get(end + 3..).unwrap_or("");
                    continue;
                }
                None => return out,
            }
        }
        let starts_tag =
            after.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || matches!(b, b'/' | b'!' | b'?'));
        let gt = if starts_tag && !no_more_gt { after.find('>') } else { None };
        match gt {
            Some(gt) => {
                let inner = after.get(..gt).unwrap_or("");
                let closing = inner.starts_with('/');
                let name: String = inner
                    .trim_start_matches('/')
                    .bytes()
                    .take_while(u8::is_ascii_alphanumeric)
                    .take(16)
                    .map(|b| char::from(b.to_ascii_lowercase()))
                    .collect();
                match skipping {
                    Some(end) => {
                        if closing && name == end {
                            skipping = None;
                        }
                    }
                    None => {
                        if !closing && !inner.ends_with('/') {
                            skipping = RAW_TEXT_TAGS.iter().copied().find(|t| *t == name);
                        }
                        if BLOCK_TAGS.contains(&name.as_str()) {
                            out.push(' ');
                        }
                    }
                }
                rest = after.get(gt + 1..).unwrap_or("");
            }
            None => {
                // No '>' after this point means none after any later '<' either.
                no_more_gt |= starts_tag;
                if skipping.is_none() {
                    out.push('<');
                }
                rest = after;
            }
        }
    }
    if skipping.is_none() {
        out.push_str(rest);
    }
    out
}

/// Decodes `&amp; &lt; &gt; &quot; &apos; &nbsp; &ndash; &mdash; &hellip;` and numeric
/// references; anything else stays as written. `&nbsp;` becomes a plain space.
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(rest.get(..amp).unwrap_or(""));
        let after = rest.get(amp + 1..).unwrap_or("");
        let semi = after.bytes().take(10).position(|b| b == b';');
        match semi.and_then(|n| Some((n, entity(after.get(..n)?)?))) {
            Some((n, c)) => {
                out.push(c);
                rest = after.get(n + 1..).unwrap_or("");
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "ndash" => '\u{2013}',
        "mdash" => '\u{2014}',
        "hellip" => '\u{2026}',
        _ => {
            let num = name.strip_prefix('#')?;
            let n = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse::<u32>().ok()?,
            };
            match char::from_u32(n)? {
                '\u{a0}' => ' ',
                c => c,
            }
        }
    })
}
