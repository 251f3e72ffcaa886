//! Importing people from CSV and JSON exports (HR systems, Entra ID, Excel).
//!
//! Both formats share one set of field names and one validation path
//! (`RawRow` → `build_person`), so a file behaves the same whichever format
//! it arrives in. The importers are strict where a mistake would silently
//! break the hub (missing names, malformed e-mail, duplicate explicit ids,
//! oversized values) and lenient where the data is merely imperfect: phone
//! numbers that cannot be normalised are kept with `e164: None`, unknown
//! columns are ignored, blank rows are skipped.
//!
//! Limits (all documented constants) bound memory and time on hostile or
//! broken input; the parsers never panic.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{BufRead, BufReader, Read};

use serde::de::{self, Deserializer as _, SeqAccess, Visitor};
use serde::Deserialize;

use super::fold::fold_search_text;
use super::phone::normalize_phone;
use super::{ExternalId, NumberPlan, Person, Phone, PhoneKind};

/// Most rows (CSV records or JSON array entries) accepted in one import.
pub const MAX_ROWS: usize = 1_000_000;

/// Longest accepted text value, in bytes after trimming. Generous for any
/// real name, title or address, small enough to keep memory per person bounded.
pub const MAX_FIELD_BYTES: usize = 256;

/// Longest accepted multi-value CSV cell (`phones`, `external_ids`), in bytes.
/// Each value inside is still limited to [`MAX_FIELD_BYTES`].
pub const MAX_LIST_FIELD_BYTES: usize = 4096;

/// Most phone numbers, and most external ids, per person.
pub const MAX_LIST_ITEMS: usize = 16;

/// The header line is sniffed for its delimiter from at most this many bytes.
const MAX_SNIFF_BYTES: u64 = 64 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why an import failed. CSV positions are 1-based physical line numbers
/// (the header is line 1); JSON positions are 0-based array indexes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Reading the input failed.
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
    /// The input is empty (no CSV header line, no JSON value).
    #[error("the input is empty")]
    Empty,
    /// The CSV header has neither a `name` column nor first/last name columns.
    #[error("the CSV header has no name column (expected \"name\", or \"first_name\" and \"last_name\")")]
    MissingNameColumn,
    /// The CSV is malformed (e.g. invalid UTF-8, broken quoting).
    #[error("CSV error on line {line}: {reason}")]
    Csv {
        /// Line of the error (0 if unknown).
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The JSON is malformed, or not an array of objects with the expected
    /// value types.
    #[error("invalid JSON: {reason}")]
    Json {
        /// Line of the error (1-based; 0 if unknown).
        line: usize,
        /// Column of the error (1-based; 0 if unknown).
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// The input has more than [`MAX_ROWS`] rows.
    #[error("more than {limit} rows")]
    TooManyRows {
        /// The limit.
        limit: usize,
    },
    /// A CSV value is longer than allowed.
    #[error("line {line}, column {column} ({field}): value is {len} bytes; the limit is {limit}")]
    FieldTooLong {
        /// Line of the row.
        line: u64,
        /// 1-based column number.
        column: usize,
        /// Column header as written in the file.
        field: String,
        /// Length of the value in bytes (trimmed).
        len: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A CSV row has a missing or invalid value.
    #[error("line {line}, {field}: {reason}")]
    Invalid {
        /// Line of the row.
        line: u64,
        /// Field name (canonical, e.g. "email").
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A JSON entry has a missing or invalid value.
    #[error("entry {index}, {field}: {reason}")]
    InvalidEntry {
        /// 0-based index in the array.
        index: usize,
        /// Field name (canonical, e.g. "email").
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Two CSV rows have the same explicit id.
    #[error("duplicate id {id:?} on lines {first_line} and {line}")]
    DuplicateId {
        /// The id.
        id: String,
        /// Line of the first row with it.
        first_line: u64,
        /// Line of the second row with it.
        line: u64,
    },
    /// Two JSON entries have the same explicit id.
    #[error("duplicate id {id:?} in entries {first_index} and {index}")]
    DuplicateIdEntry {
        /// The id.
        id: String,
        /// Index of the first entry with it.
        first_index: usize,
        /// Index of the second entry with it.
        index: usize,
    },
}

/// A validation failure inside one row, before it is given a position.
#[derive(Debug)]
struct FieldError {
    field: &'static str,
    reason: String,
}

impl FieldError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        FieldError { field, reason: reason.into() }
    }
}

/// One row's values, borrowed from the CSV record or the JSON entry, before
/// validation. `None` and empty strings both mean "absent".
#[derive(Debug, Default)]
struct RawRow<'a> {
    id: Option<&'a str>,
    name: Option<&'a str>,
    first_name: Option<&'a str>,
    last_name: Option<&'a str>,
    title: Option<&'a str>,
    department: Option<&'a str>,
    email: Option<&'a str>,
    upn: Option<&'a str>,
    extension: Option<&'a str>,
    sip_uri: Option<&'a str>,
    entra_id: Option<&'a str>,
    /// (kind, number, field it came from)
    phones: Vec<(PhoneKind, &'a str, &'static str)>,
    /// (kind, value)
    external_ids: Vec<(&'a str, &'a str)>,
}

/// A validated person whose id may still have to be derived.
#[derive(Debug)]
struct Candidate {
    person: Person,
    /// The id came from the input (duplicates are errors) rather than
    /// being derived (duplicates get a suffix).
    explicit_id: bool,
}

/// Trims `v`, enforces [`MAX_FIELD_BYTES`] and collapses inner whitespace
/// and control characters (e.g. a newline inside a quoted CSV cell) to
/// single spaces. Empty → `None`.
fn text(field: &'static str, v: Option<&str>) -> Result<Option<Box<str>>, FieldError> {
    let Some(t) = v.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
    if t.len() > MAX_FIELD_BYTES {
        return Err(FieldError::new(field, format!("value is {} bytes; the limit is {MAX_FIELD_BYTES}", t.len())));
    }
    Ok(Some(collapse_whitespace(t).into()))
}

fn collapse_whitespace(t: &str) -> Cow<'_, str> {
    let odd = |c: char| c.is_control() || (c.is_whitespace() && c != ' ');
    if !t.contains("  ") && !t.chars().any(odd) {
        return Cow::Borrowed(t);
    }
    let mut out = String::with_capacity(t.len());
    let mut space = false;
    for c in t.chars() {
        if c.is_whitespace() || c.is_control() {
            space = true;
        } else {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Checks that `id` can be used as one URL path segment: no whitespace or
/// control characters and none of `/ ? #`.
fn check_id(id: &str) -> Result<(), String> {
    if id.len() > MAX_FIELD_BYTES {
        return Err(format!("is {} bytes; the limit is {MAX_FIELD_BYTES}", id.len()));
    }
    match id.chars().find(|&c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#')) {
        Some(c) => Err(format!("must not contain {c:?} (ids are used in URLs)")),
        None if id.is_empty() => Err("is empty".into()),
        None => Ok(()),
    }
}

fn check_email(e: &str) -> Result<(), String> {
    if e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{e:?} contains spaces"));
    }
    let ats = e.matches('@').count();
    if ats != 1 {
        return Err(format!("{e:?} must contain exactly one '@' (found {ats})"));
    }
    match e.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok(()),
        _ => Err(format!("{e:?} needs text before and after the '@'")),
    }
}

/// Validates one row and turns it into a person (with an empty id if none
/// was given; [`assign_ids`] fills it in).
fn build_person(raw: &RawRow<'_>, plan: &NumberPlan) -> Result<Candidate, FieldError> {
    let name = match text("name", raw.name)? {
        Some(n) => n,
        None => {
            let first = text("first_name", raw.first_name)?;
            let last = text("last_name", raw.last_name)?;
            let joined = [first.as_deref(), last.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
            match text("name", Some(&joined))? {
                Some(n) => n,
                None => return Err(FieldError::new("name", "a name is required")),
            }
        }
    };

    let id = text("id", raw.id)?;
    if let Some(id) = &id {
        check_id(id).map_err(|r| FieldError::new("id", r))?;
    }

    let (email_field, email_raw) = match raw.email.filter(|e| !e.trim().is_empty()) {
        Some(e) => ("email", Some(e)),
        None => ("upn", raw.upn),
    };
    let email = text(email_field, email_raw)?.map(|e| match e.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("mailto:") => e[7..].trim().into(),
        _ => e,
    });
    if let Some(e) = &email {
        check_email(e).map_err(|r| FieldError::new(email_field, r))?;
    }

    let sip_uri = match text("sip_uri", raw.sip_uri)? {
        None => None,
        Some(s) if s.contains(' ') => return Err(FieldError::new("sip_uri", format!("{s:?} contains spaces"))),
        Some(s) => {
            let has_scheme = s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("sip:"))
                || s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("sips:"));
            Some(if has_scheme { s } else { format!("sip:{s}").into() })
        }
    };

    if raw.phones.len() > MAX_LIST_ITEMS {
        return Err(FieldError::new("phones", format!("more than {MAX_LIST_ITEMS} phone numbers")));
    }
    let mut phones = Vec::with_capacity(raw.phones.len());
    for &(kind, number, field) in &raw.phones {
        if let Some(number) = text(field, Some(number))? {
            // Kept even when it does not normalise: an operator can still
            // read and dial it, it just cannot be matched automatically.
            let e164 = normalize_phone(&number, plan).map(String::into_boxed_str);
            phones.push(Phone { kind, number, e164 });
        }
    }

    let mut external_ids: Vec<ExternalId> = Vec::new();
    if let Some(v) = text("entra_id", raw.entra_id)? {
        external_ids.push(ExternalId { kind: "entra".into(), value: v });
    }
    for &(kind, value) in &raw.external_ids {
        let kind = text("external_ids", Some(kind))?;
        let value = text("external_ids", Some(value))?;
        match (kind, value) {
            (Some(kind), Some(value)) => {
                let x = ExternalId { kind, value };
                if !external_ids.contains(&x) {
                    external_ids.push(x);
                }
            }
            _ => return Err(FieldError::new("external_ids", "each external id needs a kind and a value (kind:value)")),
        }
    }
    if external_ids.len() > MAX_LIST_ITEMS {
        return Err(FieldError::new("external_ids", format!("more than {MAX_LIST_ITEMS} external ids")));
    }
    phones.shrink_to_fit();
    external_ids.shrink_to_fit();

    Ok(Candidate {
        explicit_id: id.is_some(),
        person: Person {
            id: id.unwrap_or_default(),
            name,
            title: text("title", raw.title)?,
            department: text("department", raw.department)?,
            email,
            phones,
            extension: text("extension", raw.extension)?,
            sip_uri,
            external_ids,
        },
    })
}

/// The base of a derived id: the e-mail's local part lower-cased if that is
/// a usable id, else the folded name as a dotted slug ("Åsa Östberg" →
/// "asa.ostberg").
fn derived_id_base(p: &Person) -> String {
    if let Some((local, _)) = p.email.as_deref().and_then(|e| e.split_once('@')) {
        let local = local.to_lowercase();
        if check_id(&local).is_ok() {
            return local;
        }
    }
    let mut slug = String::new();
    fold_search_text(&p.name, &mut slug);
    let mut slug = slug.replace(' ', ".");
    if slug.len() > MAX_FIELD_BYTES - 8 {
        let mut end = MAX_FIELD_BYTES - 8;
        while !slug.is_char_boundary(end) {
            end -= 1;
        }
        slug.truncate(end);
    }
    if slug.is_empty() {
        slug.push_str("person");
    }
    slug
}

/// Gives every candidate its final id. Explicit ids must be unique (the
/// error carries both positions); derived ids avoid every explicit id and
/// each other by appending "-2", "-3", … in input order.
fn assign_ids(cands: Vec<(Candidate, u64)>) -> Result<Vec<Person>, (String, u64, u64)> {
    let mut explicit: HashMap<&str, u64> = HashMap::new();
    for (c, pos) in &cands {
        if c.explicit_id {
            if let Some(&first) = explicit.get(&*c.person.id) {
                return Err((c.person.id.to_string(), first, *pos));
            }
            explicit.insert(&c.person.id, *pos);
        }
    }
    let explicit: HashSet<String> = explicit.into_keys().map(str::to_owned).collect();
    let mut derived: HashSet<String> = HashSet::new();
    let mut out = Vec::with_capacity(cands.len());
    for (mut c, _) in cands {
        if !c.explicit_id {
            let base = derived_id_base(&c.person);
            let mut id = base.clone();
            let mut n = 2u64;
            while explicit.contains(&id) || derived.contains(&id) {
                id = format!("{base}-{n}");
                n += 1;
            }
            c.person.id = id.as_str().into();
            derived.insert(id);
        }
        out.push(c.person);
    }
    Ok(out)
}

// ------------------------------------------------------------- records ----

/// The fields of one person as a directory source reads them (LDAP attributes, Microsoft
/// Graph user properties), before validation: the input of [`Record::to_person`], which runs
/// the same validation as the CSV and JSON importers. Empty strings mean "absent".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record {
    /// The hub id; derived from the e-mail or the name when absent.
    pub id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Given name (used only when there is no display name).
    pub first_name: Option<String>,
    /// Surname (used only when there is no display name).
    pub last_name: Option<String>,
    /// Job title.
    pub title: Option<String>,
    /// Department.
    pub department: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Sign-in name, used as the e-mail when there is none.
    pub upn: Option<String>,
    /// Internal extension.
    pub extension: Option<String>,
    /// SIP address, with or without `sip:`.
    pub sip_uri: Option<String>,
    /// Entra object id.
    pub entra_id: Option<String>,
    /// Phone numbers with their kind.
    pub phones: Vec<(PhoneKind, String)>,
    /// Ids in other systems: (kind, value).
    pub external_ids: Vec<(String, String)>,
}

/// Why a [`Record`] is not a valid person: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RecordError {
    /// Field name (canonical, e.g. "email").
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl From<&Person> for Record {
    /// The fields of an imported person, with its id and numbers as written.
    fn from(p: &Person) -> Record {
        let s = |v: &Option<Box<str>>| v.as_deref().map(str::to_owned);
        Record {
            id: Some(p.id.to_string()),
            name: Some(p.name.to_string()),
            title: s(&p.title),
            department: s(&p.department),
            email: s(&p.email),
            extension: s(&p.extension),
            sip_uri: s(&p.sip_uri),
            entra_id: p.external_ids.iter().find(|x| &*x.kind == "entra").map(|x| x.value.to_string()),
            phones: p.phones.iter().map(|ph| (ph.kind, ph.number.to_string())).collect(),
            external_ids: p.external_ids.iter().filter(|x| &*x.kind != "entra").map(|x| (x.kind.to_string(), x.value.to_string())).collect(),
            ..Record::default()
        }
    }
}

impl Record {
    /// Validates and normalises the record (phone numbers with `plan`) into a [`Person`]. A
    /// missing id is derived as the importers do (e-mail local part, else the folded name);
    /// making derived ids unique is the caller's business.
    pub fn to_person(&self, plan: &NumberPlan) -> Result<Person, RecordError> {
        fn o(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|v| !v.trim().is_empty())
        }
        let field_of = |k: PhoneKind| match k {
            PhoneKind::Mobile => "mobile",
            PhoneKind::Work => "phone",
            PhoneKind::Home => "home_phone",
            _ => "phones",
        };
        if self.phones.len() > MAX_LIST_ITEMS {
            return Err(RecordError { field: "phones", reason: format!("more than {MAX_LIST_ITEMS} phone numbers") });
        }
        if self.external_ids.len() > MAX_LIST_ITEMS {
            return Err(RecordError { field: "external_ids", reason: format!("more than {MAX_LIST_ITEMS} external ids") });
        }
        let raw = RawRow {
            id: o(&self.id),
            name: o(&self.name),
            first_name: o(&self.first_name),
            last_name: o(&self.last_name),
            title: o(&self.title),
            department: o(&self.department),
            email: o(&self.email),
            upn: o(&self.upn),
            extension: o(&self.extension),
            sip_uri: o(&self.sip_uri),
            entra_id: o(&self.entra_id),
            phones: self.phones.iter().map(|(k, n)| (*k, n.as_str(), field_of(*k))).collect(),
            external_ids: self.external_ids.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        };
        let mut c = build_person(&raw, plan).map_err(|e| RecordError { field: e.field, reason: e.reason })?;
        if !c.explicit_id {
            c.person.id = derived_id_base(&c.person).into();
        }
        Ok(c.person)
    }
}

// ---------------------------------------------------------------- CSV ----

/// Column positions of the fields we read. Headers are matched after
/// trimming, lower-casing and turning spaces/dashes into underscores, so
/// "First Name", "first-name" and "FIRST_NAME" are the same column.
#[derive(Debug, Default)]
struct Columns {
    id: Option<usize>,
    name: Option<usize>,
    first_name: Option<usize>,
    last_name: Option<usize>,
    title: Option<usize>,
    department: Option<usize>,
    email: Option<usize>,
    upn: Option<usize>,
    mobile: Option<usize>,
    phone: Option<usize>,
    home_phone: Option<usize>,
    phones: Option<usize>,
    extension: Option<usize>,
    sip_uri: Option<usize>,
    entra_id: Option<usize>,
    external_ids: Option<usize>,
}

impl Columns {
    fn from_headers(headers: &csv::StringRecord) -> Result<Columns, ImportError> {
        let mut c = Columns::default();
        for (i, h) in headers.iter().enumerate() {
            let key: String = h
                .trim_start_matches('\u{feff}')
                .trim()
                .chars()
                .map(|ch| if ch == ' ' || ch == '-' { '_' } else { ch.to_ascii_lowercase() })
                .collect();
            let slot = match key.as_str() {
                "id" => &mut c.id,
                "name" | "display_name" | "displayname" => &mut c.name,
                "first_name" | "firstname" | "given_name" | "givenname" => &mut c.first_name,
                "last_name" | "lastname" | "surname" => &mut c.last_name,
                "title" | "job_title" | "jobtitle" => &mut c.title,
                "department" | "dept" => &mut c.department,
                "email" | "e_mail" | "mail" => &mut c.email,
                "upn" | "userprincipalname" => &mut c.upn,
                "mobile" | "mobile_phone" | "mobilephone" => &mut c.mobile,
                "phone" | "work_phone" | "business_phone" => &mut c.phone,
                "home_phone" | "homephone" => &mut c.home_phone,
                "phones" => &mut c.phones,
                "extension" | "ext" => &mut c.extension,
                "sip_uri" | "sip" => &mut c.sip_uri,
                "entra_id" | "object_id" | "objectid" => &mut c.entra_id,
                "external_ids" => &mut c.external_ids,
                _ => continue, // unknown columns are ignored
            };
            // The first of duplicate columns wins.
            slot.get_or_insert(i);
        }
        if c.name.is_none() && c.first_name.is_none() && c.last_name.is_none() {
            return Err(ImportError::MissingNameColumn);
        }
        Ok(c)
    }

    /// Extracts one record's values, enforcing per-cell length limits with
    /// the line and column in the error.
    fn row<'r>(&self, rec: &'r csv::StringRecord, headers: &csv::StringRecord, line: u64) -> Result<RawRow<'r>, ImportError> {
        let cell = |col: Option<usize>, limit: usize| -> Result<Option<&'r str>, ImportError> {
            let Some(i) = col else { return Ok(None) };
            let v = rec.get(i).map(str::trim).filter(|v| !v.is_empty());
            match v {
                Some(v) if v.len() > limit => Err(ImportError::FieldTooLong {
                    line,
                    column: i + 1,
                    field: headers.get(i).unwrap_or_default().chars().take(64).collect(),
                    len: v.len(),
                    limit,
                }),
                _ => Ok(v),
            }
        };
        let one = |col| cell(col, MAX_FIELD_BYTES);
        let invalid = |field: &'static str, reason: String| ImportError::Invalid { line, field, reason };

        let mut raw = RawRow {
            id: one(self.id)?,
            name: one(self.name)?,
            first_name: one(self.first_name)?,
            last_name: one(self.last_name)?,
            title: one(self.title)?,
            department: one(self.department)?,
            email: one(self.email)?,
            upn: one(self.upn)?,
            extension: one(self.extension)?,
            sip_uri: one(self.sip_uri)?,
            entra_id: one(self.entra_id)?,
            ..RawRow::default()
        };
        for (col, kind, field) in [
            (self.mobile, PhoneKind::Mobile, "mobile"),
            (self.phone, PhoneKind::Work, "phone"),
            (self.home_phone, PhoneKind::Home, "home_phone"),
        ] {
            if let Some(v) = one(col)? {
                raw.phones.push((kind, v, field));
            }
        }
        if let Some(list) = cell(self.phones, MAX_LIST_FIELD_BYTES)? {
            for item in split_list(list) {
                raw.phones.push(parse_phone_item(item));
            }
        }
        if let Some(list) = cell(self.external_ids, MAX_LIST_FIELD_BYTES)? {
            for item in split_list(list) {
                match item.split_once(':') {
                    Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => raw.external_ids.push((k, v)),
                    _ => return Err(invalid("external_ids", format!("{item:?} is not kind:value"))),
                }
            }
        }
        if raw.phones.len() > MAX_LIST_ITEMS {
            return Err(invalid("phones", format!("more than {MAX_LIST_ITEMS} phone numbers")));
        }
        if raw.external_ids.len() > MAX_LIST_ITEMS {
            return Err(invalid("external_ids", format!("more than {MAX_LIST_ITEMS} external ids")));
        }
        Ok(raw)
    }
}

/// Splits a `|`-separated multi-value cell, dropping empty items.
fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split('|').map(str::trim).filter(|s| !s.is_empty())
}

/// "mobile:070-123 45 67" → (Mobile, "070-123 45 67"); a number without a
/// known kind label (including "tel:+46…") is [`PhoneKind::Other`].
fn parse_phone_item(item: &str) -> (PhoneKind, &str, &'static str) {
    if let Some((label, number)) = item.split_once(':') {
        if let Some(kind) = PhoneKind::from_label(label) {
            return (kind, number.trim(), "phones");
        }
    }
    (PhoneKind::Other, item, "phones")
}

/// Picks the delimiter by counting candidates outside quotes in the header.
fn sniff_delimiter(header: &[u8]) -> u8 {
    let (mut comma, mut semi, mut tab) = (0usize, 0usize, 0usize);
    let mut quoted = false;
    for &b in header {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => comma += 1,
            b';' if !quoted => semi += 1,
            b'\t' if !quoted => tab += 1,
            _ => {}
        }
    }
    if semi > comma && semi >= tab {
        b';'
    } else if tab > comma && tab > semi {
        b'\t'
    } else {
        b','
    }
}

/// Wraps the CSV input to give rows correct 1-based line numbers.
///
/// The csv crate's own positions cannot be used for that: a record's
/// position is where the *previous* record ended, so blank lines it skips
/// (and the LF of a CRLF) are not counted, and with CRLF input the first row
/// even reports line 1. This tap keeps the bytes csv has read but we have
/// not yet passed (bounded by csv's read-ahead buffer plus one record), so
/// the true start of a record can be found by skipping those terminators.
struct LineTap<R> {
    inner: R,
    /// Bytes from stream offset `base` on.
    pending: std::collections::VecDeque<u8>,
    base: u64,
    /// Newlines before `base`, plus lines skipped before the header.
    lines: u64,
}

impl<R: Read> Read for LineTap<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.pending.extend(&out[..n]);
        Ok(n)
    }
}

impl<R> LineTap<R> {
    /// Line of the record csv reports at stream offset `pos`.
    fn line_at(&mut self, pos: u64) -> u64 {
        let n = (pos.saturating_sub(self.base) as usize).min(self.pending.len());
        let (a, b) = self.pending.as_slices();
        let na = n.min(a.len());
        let newlines = memchr::memchr_iter(b'\n', &a[..na]).count() + memchr::memchr_iter(b'\n', &b[..n - na]).count();
        self.lines += newlines as u64;
        self.pending.drain(..n);
        self.base += n as u64;
        // Terminators csv skipped silently before the record starts.
        let skipped = self.pending.iter().take_while(|&&b| b == b'\n' || b == b'\r').filter(|&&b| b == b'\n').count();
        self.lines + skipped as u64 + 1
    }

    /// Best guess when csv gives no position: the line we have reached.
    fn current_line(&self) -> u64 {
        self.lines + 1
    }
}

fn csv_error<R>(e: csv::Error, tap: &mut LineTap<R>) -> ImportError {
    let line = match e.position() {
        Some(p) => tap.line_at(p.byte()),
        None => tap.current_line(),
    };
    if e.is_io_error() {
        if let csv::ErrorKind::Io(io) = e.into_kind() {
            return ImportError::Io(io);
        }
        return ImportError::Csv { line, reason: "read error".into() };
    }
    // csv's message carries its own (unreliable) position; keep only the cause.
    let reason = match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("invalid UTF-8 in field {}", err.field() + 1),
        _ => e.to_string(),
    };
    ImportError::Csv { line, reason }
}

/// Imports people from CSV (UTF-8, with or without BOM; `,` `;` or tab
/// delimited, sniffed from the header line).
///
/// The header names the columns, case-insensitively; all are optional except
/// a name (`name`, or `first_name`/`given_name` + `last_name`/`surname`):
/// `id`, `title`, `department`, `email` (or `upn`), `mobile`, `phone` (work),
/// `home_phone`, `phones` (`|`-separated, each optionally `kind:number`),
/// `extension`, `sip_uri` (or `sip`; "sip:" is added if missing), `entra_id`
/// (or `object_id`), `external_ids` (`kind:value|kind:value`). Unknown
/// columns are ignored, blank rows skipped. Rows without an `id` get one
/// derived from the e-mail or name (made unique with "-2", "-3", …).
/// Errors name the physical line (the header is line 1, blank lines count).
pub fn from_csv<R: Read>(r: R, plan: &NumberPlan) -> Result<Vec<Person>, ImportError> {
    let mut reader = BufReader::new(r);
    // The header is the first non-blank line; its delimiters decide the
    // dialect. Blank lines before it still count for line numbers.
    let mut head = Vec::new();
    let mut blank_lines = 0u64;
    let mut budget = MAX_SNIFF_BYTES;
    loop {
        head.clear();
        let n = (&mut reader).take(budget).read_until(b'\n', &mut head)?;
        if blank_lines == 0 && head.starts_with(BOM) {
            head.drain(..BOM.len());
        }
        if n == 0 || budget <= n as u64 {
            break;
        }
        budget -= n as u64;
        if !head.iter().all(u8::is_ascii_whitespace) {
            break;
        }
        blank_lines += 1;
    }
    if head.iter().all(u8::is_ascii_whitespace) {
        return Err(ImportError::Empty);
    }
    let delimiter = sniff_delimiter(&head);
    let input = std::io::Cursor::new(head).chain(reader);
    let tap = LineTap { inner: input, pending: Default::default(), base: 0, lines: blank_lines };
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true) // short rows just lack the trailing optional columns
        .from_reader(tap);
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => return Err(csv_error(e, rdr.get_mut())),
    };
    let cols = Columns::from_headers(&headers)?;

    let mut cands: Vec<(Candidate, u64)> = Vec::new();
    let mut rec = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(e, rdr.get_mut())),
        }
        let tap = rdr.get_mut();
        let line = match rec.position() {
            Some(p) => tap.line_at(p.byte()),
            None => tap.current_line(),
        };
        if rec.iter().all(|f| f.trim().is_empty()) {
            continue; // e.g. ";;;;" lines that spreadsheets leave at the end
        }
        if cands.len() >= MAX_ROWS {
            return Err(ImportError::TooManyRows { limit: MAX_ROWS });
        }
        let raw = cols.row(&rec, &headers, line)?;
        let cand = build_person(&raw, plan).map_err(|e| ImportError::Invalid { line, field: e.field, reason: e.reason })?;
        cands.push((cand, line));
    }
    assign_ids(cands).map_err(|(id, first_line, line)| ImportError::DuplicateId { id, first_line, line })
}

// --------------------------------------------------------------- JSON ----

/// A JSON scalar read as text: strings as they are, integers in decimal
/// (extensions and numbers are often exported as JSON numbers).
#[derive(Debug)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `"a|b"` or `[item, item]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JsonList<T> {
    Text(String),
    Items(Vec<T>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JsonPhone {
    Text(Text),
    Item {
        #[serde(default)]
        kind: Option<String>,
        number: Text,
    },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JsonExternalId {
    Text(String),
    Item { kind: String, value: Text },
}

/// One JSON entry. Synonyms are separate fields (not serde aliases) so an
/// export carrying both `email` and `upn` is not a "duplicate field" error.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct JsonRow {
    id: Option<Text>,
    name: Option<Text>,
    display_name: Option<Text>,
    first_name: Option<Text>,
    given_name: Option<Text>,
    last_name: Option<Text>,
    surname: Option<Text>,
    title: Option<Text>,
    department: Option<Text>,
    email: Option<Text>,
    upn: Option<Text>,
    mobile: Option<Text>,
    phone: Option<Text>,
    home_phone: Option<Text>,
    phones: Option<JsonList<JsonPhone>>,
    extension: Option<Text>,
    sip_uri: Option<Text>,
    sip: Option<Text>,
    entra_id: Option<Text>,
    object_id: Option<Text>,
    external_ids: Option<JsonList<JsonExternalId>>,
}

fn s(t: &Option<Text>) -> Option<&str> {
    t.as_ref().map(|t| t.0.as_str()).filter(|v| !v.trim().is_empty())
}

impl JsonRow {
    fn raw(&self) -> Result<RawRow<'_>, FieldError> {
        let mut raw = RawRow {
            id: s(&self.id),
            name: s(&self.name).or(s(&self.display_name)),
            first_name: s(&self.first_name).or(s(&self.given_name)),
            last_name: s(&self.last_name).or(s(&self.surname)),
            title: s(&self.title),
            department: s(&self.department),
            email: s(&self.email),
            upn: s(&self.upn),
            extension: s(&self.extension),
            sip_uri: s(&self.sip_uri).or(s(&self.sip)),
            entra_id: s(&self.entra_id).or(s(&self.object_id)),
            ..RawRow::default()
        };
        for (v, kind, field) in [
            (&self.mobile, PhoneKind::Mobile, "mobile"),
            (&self.phone, PhoneKind::Work, "phone"),
            (&self.home_phone, PhoneKind::Home, "home_phone"),
        ] {
            if let Some(v) = s(v) {
                raw.phones.push((kind, v, field));
            }
        }
        match &self.phones {
            None => {}
            Some(JsonList::Text(list)) => raw.phones.extend(split_list(list).map(parse_phone_item)),
            Some(JsonList::Items(items)) => {
                for item in items.iter().take(MAX_LIST_ITEMS + 1) {
                    match item {
                        JsonPhone::Text(t) => raw.phones.push(parse_phone_item(&t.0)),
                        JsonPhone::Item { kind, number } => {
                            // Unknown kinds are kept as Other rather than rejected.
                            let kind = kind.as_deref().and_then(PhoneKind::from_label).unwrap_or(PhoneKind::Other);
                            raw.phones.push((kind, &number.0, "phones"));
                        }
                    }
                }
            }
        }
        let bad_ext = |item: &str| FieldError::new("external_ids", format!("{item:?} is not kind:value"));
        match &self.external_ids {
            None => {}
            Some(JsonList::Text(list)) => {
                for item in split_list(list) {
                    raw.external_ids.push(item.split_once(':').ok_or_else(|| bad_ext(item))?);
                }
            }
            Some(JsonList::Items(items)) => {
                for item in items.iter().take(MAX_LIST_ITEMS + 1) {
                    match item {
                        JsonExternalId::Text(t) => raw.external_ids.push(t.split_once(':').ok_or_else(|| bad_ext(t))?),
                        JsonExternalId::Item { kind, value } => raw.external_ids.push((kind, &value.0)),
                    }
                }
            }
        }
        if raw.phones.len() > MAX_LIST_ITEMS {
            return Err(FieldError::new("phones", format!("more than {MAX_LIST_ITEMS} phone numbers")));
        }
        if raw.external_ids.len() > MAX_LIST_ITEMS {
            return Err(FieldError::new("external_ids", format!("more than {MAX_LIST_ITEMS} external ids")));
        }
        Ok(raw)
    }
}

/// Streams the top-level array, validating entries as they arrive so a huge
/// file never exists as a `Vec<JsonRow>`. A failure is parked in `error` and
/// the parse aborted with a placeholder serde error.
struct Rows<'p> {
    plan: &'p NumberPlan,
    out: Vec<(Candidate, u64)>,
    error: Option<ImportError>,
    /// Index of the entry being read, once inside the array (for messages).
    current: Option<usize>,
}

impl<'de> Visitor<'de> for &mut Rows<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of people")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        self.current = Some(0);
        while let Some(row) = seq.next_element::<JsonRow>()? {
            if index >= MAX_ROWS {
                self.error = Some(ImportError::TooManyRows { limit: MAX_ROWS });
                return Err(de::Error::custom("too many rows"));
            }
            let cand = row.raw().and_then(|raw| build_person(&raw, self.plan));
            match cand {
                Ok(c) => self.out.push((c, index as u64)),
                Err(e) => {
                    self.error = Some(ImportError::InvalidEntry { index, field: e.field, reason: e.reason });
                    return Err(de::Error::custom("invalid entry"));
                }
            }
            index += 1;
            self.current = Some(index);
        }
        self.current = None;
        Ok(())
    }
}

/// Imports people from a JSON array of objects with the same field names as
/// the CSV columns (see [`from_csv`]). `phones` may also be an array of
/// `{"kind", "number"}` (or of strings) and `external_ids` an array of
/// `{"kind", "value"}` (or of "kind:value" strings); numbers may be JSON
/// integers. The output of serialising `Vec<Person>` imports unchanged.
pub fn from_json<R: Read>(r: R, plan: &NumberPlan) -> Result<Vec<Person>, ImportError> {
    let mut reader = BufReader::new(r);
    if reader.fill_buf()?.starts_with(BOM) {
        reader.consume(BOM.len());
    }
    let mut de = serde_json::Deserializer::from_reader(reader);
    let mut rows = Rows { plan, out: Vec::new(), error: None, current: None };
    let parsed = (&mut de).deserialize_seq(&mut rows).and_then(|()| de.end());
    if let Some(e) = rows.error.take() {
        return Err(e);
    }
    if let Err(e) = parsed {
        return Err(match e.classify() {
            serde_json::error::Category::Io => ImportError::Io(e.into()),
            serde_json::error::Category::Eof if e.line() <= 1 && e.column() == 0 => ImportError::Empty,
            _ => {
                let reason = match rows.current {
                    Some(i) => format!("entry {i}: {e}"),
                    None => e.to_string(),
                };
                ImportError::Json { line: e.line(), column: e.column(), reason }
            }
        });
    }
    assign_ids(rows.out).map_err(|(id, first, second)| ImportError::DuplicateIdEntry {
        id,
        first_index: first as usize,
        index: second as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> NumberPlan {
        NumberPlan::default()
    }

    fn csv(s: &str) -> Result<Vec<Person>, ImportError> {
        from_csv(s.as_bytes(), &plan())
    }

    #[test]
    fn full_csv_row() {
        let people = csv(
            "Id,Name,Title,Department,Email,Mobile,Phone,Home_Phone,Phones,Extension,SIP,Entra_ID,External_IDs,Shoe size\n\
             asa.ostberg,Åsa Östberg,Växelansvarig,Växel,Asa.Ostberg@Example.se,070-123 45 67,08-123 456 78,,mobile:+47 912 34 567|n/a,1234,asa.ostberg@example.se,6F1C2B9A-0000-4000-8000-000000000001,hr:42|badge:7,44\n",
        )
        .expect("valid");
        assert_eq!(people.len(), 1);
        let p = &people[0];
        assert_eq!(&*p.id, "asa.ostberg");
        assert_eq!(&*p.name, "Åsa Östberg");
        assert_eq!(p.title.as_deref(), Some("Växelansvarig"));
        assert_eq!(p.department.as_deref(), Some("Växel"));
        assert_eq!(p.email.as_deref(), Some("Asa.Ostberg@Example.se"));
        assert_eq!(p.extension.as_deref(), Some("1234"));
        assert_eq!(p.sip_uri.as_deref(), Some("sip:asa.ostberg@example.se"));
        let phones: Vec<(PhoneKind, &str, Option<&str>)> =
            p.phones.iter().map(|ph| (ph.kind, &*ph.number, ph.e164.as_deref())).collect();
        assert_eq!(
            phones,
            [
                (PhoneKind::Mobile, "070-123 45 67", Some("+46701234567")),
                (PhoneKind::Work, "08-123 456 78", Some("+46812345678")),
                (PhoneKind::Mobile, "+47 912 34 567", Some("+4791234567")),
                (PhoneKind::Other, "n/a", None),
            ]
        );
        let ext: Vec<(&str, &str)> = p.external_ids.iter().map(|x| (&*x.kind, &*x.value)).collect();
        assert_eq!(ext, [("entra", "6F1C2B9A-0000-4000-8000-000000000001"), ("hr", "42"), ("badge", "7")]);
    }

    #[test]
    fn semicolons_bom_and_name_parts() {
        let people = csv("\u{feff}first_name;Surname;UPN\r\nÅsa;Östberg;asa@example.se\r\nBjörn;Ängström;\r\n;;\r\n")
            .expect("valid");
        assert_eq!(people.len(), 2);
        assert_eq!(&*people[0].name, "Åsa Östberg");
        assert_eq!(&*people[0].id, "asa"); // from the UPN's local part
        assert_eq!(people[0].email.as_deref(), Some("asa@example.se"));
        assert_eq!(&*people[1].id, "bjorn.angstrom"); // from the folded name
    }

    #[test]
    fn derived_ids_are_made_unique() {
        let people = csv(
            "name,email,id\nAnna Berg,,\nAnna Berg,,\nÅnna Berg,,\nAnna Berg,,anna.berg-2\nBo,Bo.X@a.se,\nBo,bo.x@b.se,\n",
        )
        .expect("valid");
        let ids: Vec<&str> = people.iter().map(|p| &*p.id).collect();
        assert_eq!(ids, ["anna.berg", "anna.berg-3", "anna.berg-4", "anna.berg-2", "bo.x", "bo.x-2"]);
    }

    #[test]
    fn duplicate_explicit_id_names_both_lines() {
        let err = csv("id,name\na,A\nb,B\n\na,C\n").expect_err("duplicate");
        match err {
            ImportError::DuplicateId { id, first_line, line } => {
                assert_eq!((id.as_str(), first_line, line), ("a", 2, 5));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn validation_errors_carry_positions() {
        let long = "x".repeat(MAX_FIELD_BYTES + 1);
        match csv(&format!("name,title\nA,ok\nB,{long}\n")) {
            Err(ImportError::FieldTooLong { line: 3, column: 2, field, len, limit }) => {
                assert_eq!((field.as_str(), len, limit), ("title", 257, 256));
            }
            other => panic!("unexpected {other:?}"),
        }
        match csv("name,email\nA,a@b.se\n,x@y.se\n") {
            Err(ImportError::Invalid { line: 3, field: "name", .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        for bad in ["a@b@c", "ab", "@b", "a@", "a b@c"] {
            match csv(&format!("name,email\nA,{bad}\n")) {
                Err(ImportError::Invalid { line: 2, field: "email", reason }) => assert!(!reason.is_empty()),
                other => panic!("{bad}: unexpected {other:?}"),
            }
        }
        match csv("name,id\nA,a/b\n") {
            Err(ImportError::Invalid { line: 2, field: "id", .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        match csv("name,external_ids\nA,hr\n") {
            Err(ImportError::Invalid { line: 2, field: "external_ids", .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        let e = csv("name,email\nA,a@b@c\n").expect_err("invalid");
        assert!(e.to_string().starts_with("line 2, email: "), "{e}");
    }

    #[test]
    fn line_numbers_count_blank_lines_crlf_and_quoted_newlines() {
        let lines = |input: &str| -> u64 {
            match csv(input) {
                Err(ImportError::Invalid { line, .. }) => line,
                other => panic!("{input:?}: unexpected {other:?}"),
            }
        };
        assert_eq!(lines("name,email\nA,a@b\n\n\nB,bad\n"), 5);
        assert_eq!(lines("name,email\r\nB,bad\r\n"), 2);
        assert_eq!(lines("name,email\r\nA,a@b\r\n\r\nB,bad\r\n"), 4);
        assert_eq!(lines("name,email\n\"A\nB\",a@b\nC,bad"), 4);
        assert_eq!(lines("\n\nname,email\nB,bad\n"), 4);
        assert_eq!(lines("\u{feff}name,email\n , \nB,bad\n"), 3);
        match from_csv(&b"name\n\nok\n\xff\xfe\n"[..], &plan()) {
            Err(ImportError::Csv { line: 4, reason }) => assert!(reason.contains("UTF-8"), "{reason}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn structural_errors() {
        assert!(matches!(csv(""), Err(ImportError::Empty)));
        assert!(matches!(csv("\n\n"), Err(ImportError::Empty)));
        assert!(matches!(csv("id,title\n1,x\n"), Err(ImportError::MissingNameColumn)));
        assert!(matches!(from_csv(&b"name\n\xff\xfe\n"[..], &plan()), Err(ImportError::Csv { line: 2, .. })));
        // Header only: no people, not an error.
        assert_eq!(csv("name,email\n").expect("valid").len(), 0);
    }

    #[test]
    fn quoted_cells_and_short_rows() {
        let people = csv("name,title,department\n\"Berg, Anna\",\"Chef\nEkonomi\"\nBo\n").expect("valid");
        assert_eq!(&*people[0].name, "Berg, Anna");
        assert_eq!(people[0].title.as_deref(), Some("Chef Ekonomi"));
        assert_eq!(&*people[1].name, "Bo");
        assert_eq!(people[1].department, None);
    }

    #[test]
    fn records_validate_like_rows() {
        let mut r = Record {
            name: Some("Åsa Östberg".into()),
            upn: Some("Asa.Ostberg@Example.se".into()),
            sip_uri: Some("asa@example.se".into()),
            entra_id: Some("0b4e".into()),
            phones: vec![(PhoneKind::Mobile, "070-123 45 67".into())],
            ..Record::default()
        };
        let p = r.to_person(&plan()).unwrap();
        assert_eq!(&*p.id, "asa.ostberg");
        assert_eq!(p.email.as_deref(), Some("Asa.Ostberg@Example.se"));
        assert_eq!(p.sip_uri.as_deref(), Some("sip:asa@example.se"));
        assert_eq!(p.phones[0].e164.as_deref(), Some("+46701234567"));
        assert_eq!(p.external_ids[0].kind.as_ref(), "entra");
        r.email = Some("not an address".into());
        assert_eq!(r.to_person(&plan()).unwrap_err().field, "email");
        let nameless = Record { id: Some("x".into()), ..Record::default() };
        assert_eq!(nameless.to_person(&plan()).unwrap_err().field, "name");
    }

    #[test]
    fn json_import() {
        let json = r#"[
          {"id": "asa.ostberg", "name": "Åsa Östberg", "email": "asa@example.se",
           "phones": [{"kind": "mobile", "number": "070-123 45 67"}, {"kind": "pager", "number": 12345678}, "work:08-123 456 78"],
           "external_ids": [{"kind": "entra", "value": "6f1c2b9a-0000-4000-8000-000000000001"}, "hr:42"],
           "extension": 1234, "sip": "asa@example.se", "unknown": {"nested": [1, 2]}},
          {"given_name": "Björn", "surname": "Ängström", "mobile": "0701112233", "entra_id": null, "upn": "b.a@example.se", "email": ""}
        ]"#;
        let people = from_json(json.as_bytes(), &plan()).expect("valid");
        assert_eq!(people.len(), 2);
        let p = &people[0];
        assert_eq!(p.extension.as_deref(), Some("1234"));
        assert_eq!(p.sip_uri.as_deref(), Some("sip:asa@example.se"));
        assert_eq!(p.phones.len(), 3);
        assert_eq!(p.phones[1].kind, PhoneKind::Other);
        assert_eq!(p.phones[1].e164, None); // 8 digits without trunk prefix
        assert_eq!(p.phones[2].kind, PhoneKind::Work);
        assert_eq!(p.external_ids.len(), 2);
        assert_eq!(&*people[1].name, "Björn Ängström");
        assert_eq!(&*people[1].id, "b.a");
        assert_eq!(people[1].email.as_deref(), Some("b.a@example.se"));
    }

    #[test]
    fn json_round_trip_of_serialised_people() {
        let people = csv("id,name,mobile,entra_id,sip_uri\na,Åsa,070-123 45 67,6f1c2b9a-0000-4000-8000-000000000001,sip:a@x.se\n")
            .expect("valid");
        let json = serde_json::to_string(&people).expect("serialise");
        assert!(json.contains(r#""kind":"mobile""#), "{json}");
        let back = from_json(json.as_bytes(), &plan()).expect("valid");
        assert_eq!(back, people);
    }

    #[test]
    fn json_errors() {
        let p = plan();
        assert!(matches!(from_json(&b""[..], &p), Err(ImportError::Empty)));
        assert!(matches!(from_json(&b"{}"[..], &p), Err(ImportError::Json { .. })));
        match from_json(&b"[{\"name\":\"A\"},\n {\"name\": true}]"[..], &p) {
            Err(ImportError::Json { line: 2, reason, .. }) => assert!(reason.starts_with("entry 1: "), "{reason}"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(from_json(&b"[] x"[..], &p), Err(ImportError::Json { .. })));
        match from_json(&b"[{\"name\":\"A\"},{\"email\":\"x@y\"}]"[..], &p) {
            Err(ImportError::InvalidEntry { index: 1, field: "name", .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        match from_json(&b"[{\"id\":\"a\",\"name\":\"A\"},{\"name\":\"B\"},{\"id\":\"a\",\"name\":\"C\"}]"[..], &p) {
            Err(ImportError::DuplicateIdEntry { id, first_index: 0, index: 2 }) => assert_eq!(id, "a"),
            other => panic!("unexpected {other:?}"),
        }
        let long = "y".repeat(300);
        match from_json(format!("[{{\"name\":\"A\",\"title\":\"{long}\"}}]").as_bytes(), &p) {
            Err(ImportError::InvalidEntry { index: 0, field: "title", .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        let many: Vec<String> = (0..20).map(|i| format!("\"07012345{i:02}\"")).collect();
        let json = format!("[{{\"name\":\"A\",\"phones\":[{}]}}]", many.join(","));
        assert!(matches!(from_json(json.as_bytes(), &p), Err(ImportError::InvalidEntry { field: "phones", .. })));
    }
}
