//! Signals: one source's statement about one person, as providers deliver them.
//!
//! A provider parses its feed, resolves the person through the directory and emits a
//! [`Signal`]. The user actor keeps one [`Slot`] per `(source, instance)` — the newest signal
//! of that source instance — and the merge policy combines the slots into the merged view.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Activity, Availability, UnixMs};

/// Longest note / status message kept, in bytes.
pub const MAX_NOTE_LEN: usize = 500;
/// Longest instance name kept, in bytes.
pub const MAX_INSTANCE_LEN: usize = 128;
/// Longest text version kept, in bytes.
pub const MAX_VERSION_LEN: usize = 64;

/// Where a signal comes from (docs/ARCHITECTURE.md, § Sources).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Microsoft Teams (Graph presence).
    Teams,
    /// Skype for Business / Lync enhanced presence.
    Sfb,
    /// Generic SIP/SIMPLE presence (PIDF/RPID), including SIP PUBLISH to the hub.
    Sip,
    /// Calendars: Exchange EWS, Graph getSchedule, Google freeBusy.
    Calendar,
    /// PBX extension state: dialog-info, O2G, CSTA.
    Pbx,
    /// Mobile operator call state.
    Mobile,
    /// Manual absences set by operators or the person.
    Manual,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 7] =
        [Source::Teams, Source::Sfb, Source::Sip, Source::Calendar, Source::Pbx, Source::Mobile, Source::Manual];

    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Teams => "teams",
            Source::Sfb => "sfb",
            Source::Sip => "sip",
            Source::Calendar => "calendar",
            Source::Pbx => "pbx",
            Source::Mobile => "mobile",
            Source::Manual => "manual",
        }
    }

    /// True for sources whose calls count as live telephony.
    pub const fn carries_telephony(self) -> bool {
        matches!(self, Source::Pbx | Source::Mobile | Source::Sfb | Source::Teams | Source::Sip)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::ALL
            .into_iter()
            .find(|x| x.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown source {:?}", s.chars().take(32).collect::<String>()))
    }
}

/// Ordering stamp of a source: Graph `sequenceNumber` (lexicographic text), dialog-info
/// `version`, SfB `publishTime` (numeric). Versions of different kinds do not compare; the
/// newer signal is then accepted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Version {
    /// Numeric version.
    Num(u64),
    /// Lexicographically ordered text version.
    Text(Box<str>),
}

impl Version {
    /// `Some(ordering)` when both are of the same kind.
    pub fn compare(&self, other: &Version) -> Option<Ordering> {
        match (self, other) {
            (Version::Num(a), Version::Num(b)) => Some(a.cmp(b)),
            (Version::Text(a), Version::Text(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// Identifies one provider instance's feed, so its slots can be marked stale when it is down.
pub type FeedId = u16;

/// Calendar details that privacy rules may hide (merge rule 8, docs/ARCHITECTURE.md).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateDetail {
    /// Meeting subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Box<str>>,
    /// Meeting location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Box<str>>,
    /// The item is marked private at the source: never reveal details.
    #[serde(default)]
    pub private: bool,
}

/// One source's statement about one person.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    /// Which source family.
    pub source: Source,
    /// Which instance of the source: endpoint, mailbox item, extension, MSISDN…
    pub instance: super::ShortStr,
    /// The provider feed that delivered it.
    pub feed: FeedId,
    /// Availability, or `None` when the signal only annotates (tentative, OOO-only).
    pub availability: Option<Availability>,
    /// Activity, if any.
    pub activity: Option<Activity>,
    /// Note / status message (bounded to [`MAX_NOTE_LEN`]).
    pub note: Option<Box<str>>,
    /// Out-of-office flag.
    pub ooo: bool,
    /// The state holds from this time (future meetings, scheduled absences).
    pub valid_from: Option<UnixMs>,
    /// The state expires at this time.
    pub valid_until: Option<UnixMs>,
    /// Ordering stamp; updates with a version ≤ the last seen are ignored.
    pub version: Option<Version>,
    /// When the source observed / stamped this state.
    pub observed_at: UnixMs,
    /// Subject / location, kept only as the privacy policy allows.
    pub detail: Option<Box<PrivateDetail>>,
}

impl Signal {
    /// A signal with only the essentials set; the rest default.
    pub fn new(source: Source, instance: &str, availability: Option<Availability>, observed_at: UnixMs) -> Signal {
        Signal {
            source,
            instance: super::activity::truncate(instance, MAX_INSTANCE_LEN).into(),
            feed: 0,
            availability,
            activity: None,
            note: None,
            ooo: false,
            valid_from: None,
            valid_until: None,
            version: None,
            observed_at,
            detail: None,
        }
    }

    /// Builder: activity.
    pub fn with_activity(mut self, a: Activity) -> Signal {
        self.activity = Some(a);
        self
    }

    /// Builder: validity window.
    pub fn valid(mut self, from: Option<UnixMs>, until: Option<UnixMs>) -> Signal {
        self.valid_from = from;
        self.valid_until = until;
        self
    }

    /// Builder: version.
    pub fn version(mut self, v: Version) -> Signal {
        self.version = Some(v);
        self
    }

    /// Builder: note (bounded).
    pub fn note(mut self, n: &str) -> Signal {
        self.note = bounded_note(n);
        self
    }

    /// True when the signal says nothing at all: it retracts the slot.
    pub fn is_retraction(&self) -> bool {
        self.availability.is_none() && self.activity.is_none() && !self.ooo && self.note.is_none()
    }

    /// Cuts over-long fields to their bounds (providers call this on untrusted input).
    pub fn clamp(&mut self) {
        if self.instance.len() > MAX_INSTANCE_LEN {
            self.instance = super::activity::truncate(&self.instance, MAX_INSTANCE_LEN).into();
        }
        if let Some(n) = &self.note {
            if n.len() > MAX_NOTE_LEN {
                self.note = bounded_note(n);
            }
        }
        if let Some(Version::Text(t)) = &self.version {
            if t.len() > MAX_VERSION_LEN {
                self.version = Some(Version::Text(super::activity::truncate(t, MAX_VERSION_LEN).into()));
            }
        }
    }
}

/// Trims a note and cuts it to [`MAX_NOTE_LEN`]; empty → None.
pub fn bounded_note(n: &str) -> Option<Box<str>> {
    let t = n.trim();
    (!t.is_empty()).then(|| super::activity::truncate(t, MAX_NOTE_LEN).into())
}

/// How fresh a piece of presence is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Freshness {
    /// Delivered by a feed that is up.
    Live,
    /// Last known value from a feed that is down, or restored from the snapshot after a restart.
    Stale,
    /// Nothing known.
    #[default]
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_within_kind_only() {
        assert_eq!(Version::Num(2).compare(&Version::Num(10)), Some(Ordering::Less));
        assert_eq!(Version::Text("0002".into()).compare(&Version::Text("0010".into())), Some(Ordering::Less));
        assert_eq!(Version::Num(2).compare(&Version::Text("1".into())), None);
    }

    #[test]
    fn clamp_bounds_untrusted_fields() {
        let mut s = Signal::new(Source::Teams, "i", Some(Availability::Busy), 0);
        s.instance = "x".repeat(1000).into();
        s.note = Some("n".repeat(5000).into());
        s.version = Some(Version::Text("v".repeat(500).into()));
        s.clamp();
        assert_eq!(s.instance.len(), MAX_INSTANCE_LEN);
        assert_eq!(s.note.as_deref().map(str::len), Some(MAX_NOTE_LEN));
        assert!(matches!(&s.version, Some(Version::Text(t)) if t.len() == MAX_VERSION_LEN));
    }
}
