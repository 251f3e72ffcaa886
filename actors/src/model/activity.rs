//! Activity: what a person is doing, qualifying their availability ("In a call", "Lunch").
//!
//! A closed set of well-known activities plus `Other(text)` for anything a source reports that
//! we do not know (bounded to [`MAX_OTHER_LEN`] bytes). Each activity has default availability
//! bounds (SfB's `minAvailability`/`maxAvailability`, [MS-PRES] §3.8.5.1.2.3; the defaults are
//! tabled in docs/ARCHITECTURE.md, § Activities): the merge
//! shows an activity only when the merged availability lies inside its bounds, and among those
//! the one with the highest lower bound (the most specific) wins.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest free-text activity kept, in bytes.
pub const MAX_OTHER_LEN: usize = 64;

/// What a person is doing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Activity {
    /// In a two-party call (PBX, mobile, Teams, SfB).
    InACall,
    /// In a conference call.
    InAConferenceCall,
    /// A call is ringing (alerting) on one of the person's devices.
    Ringing,
    /// A call is on hold.
    OnHold,
    /// In a meeting (calendar or Teams).
    InAMeeting,
    /// Presenting / sharing a screen.
    Presenting,
    /// Busy, urgent interruptions only (SfB workgroup view of DND).
    UrgentInterruptionsOnly,
    /// Out of office (calendar, auto-reply).
    OutOfOffice,
    /// Off work.
    OffWork,
    /// Inactive (idle device).
    Inactive,
    /// Tentative meeting: annotates only, never makes anyone busy.
    Tentative,
    /// Working elsewhere: annotates only.
    WorkingElsewhere,
    /// Lunch / meal.
    Lunch,
    /// Vacation.
    Vacation,
    /// Sick.
    Sick,
    /// Anything else, as reported (bounded).
    Other(Box<str>),
}

impl Activity {
    /// True for live telephony: a ringing, active or held call. The merge policy never lets
    /// a manual absence hide these (a switchboard must not transfer to someone on a call).
    pub fn is_call(&self) -> bool {
        matches!(
            self,
            Activity::InACall | Activity::InAConferenceCall | Activity::Ringing | Activity::OnHold
        )
    }

    /// True for activities that only annotate (tentative, working elsewhere): they never
    /// change availability and are not chosen as the merged activity.
    pub fn is_annotation(&self) -> bool {
        matches!(self, Activity::Tentative | Activity::WorkingElsewhere)
    }

    /// Canonical wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Activity::InACall => "InACall",
            Activity::InAConferenceCall => "InAConferenceCall",
            Activity::Ringing => "Ringing",
            Activity::OnHold => "OnHold",
            Activity::InAMeeting => "InAMeeting",
            Activity::Presenting => "Presenting",
            Activity::UrgentInterruptionsOnly => "UrgentInterruptionsOnly",
            Activity::OutOfOffice => "OutOfOffice",
            Activity::OffWork => "OffWork",
            Activity::Inactive => "Inactive",
            Activity::Tentative => "Tentative",
            Activity::WorkingElsewhere => "WorkingElsewhere",
            Activity::Lunch => "Lunch",
            Activity::Vacation => "Vacation",
            Activity::Sick => "Sick",
            Activity::Other(s) => s,
        }
    }

    /// Parses a source's activity string. Case-insensitive; knows Graph names, SfB tokens
    /// (`on-the-phone`, `in-a-meeting`, `in-presentation`…) and RPID activities (`meal`,
    /// `meeting`, `vacation`…). Returns `None` for strings that only restate availability
    /// (Graph's `Available`, `Busy`, `Away`… carry no extra meaning) or are empty.
    pub fn parse_source(s: &str) -> Option<Activity> {
        let t = s.trim();
        if t.is_empty() {
            return None;
        }
        let mut key = String::with_capacity(t.len().min(80));
        for c in t.chars().take(80).filter(|c| !matches!(c, '-' | '_' | ' ')) {
            key.push(c.to_ascii_lowercase());
        }
        Some(match key.as_str() {
            "available" | "busy" | "away" | "berightback" | "donotdisturb" | "offline"
            | "availableidle" | "busyidle" | "presenceunknown" | "unknown" | "none" => return None,
            "inacall" | "onthephone" | "incall" | "call" | "busyinacall" => Activity::InACall,
            "inaconferencecall" | "inaconference" | "conference" => Activity::InAConferenceCall,
            "ringing" | "alerting" | "early" => Activity::Ringing,
            "onhold" | "hold" | "held" => Activity::OnHold,
            "inameeting" | "meeting" | "busyinameeting" => Activity::InAMeeting,
            "presenting" | "inpresentation" | "presentation" => Activity::Presenting,
            "urgentinterruptionsonly" => Activity::UrgentInterruptionsOnly,
            "outofoffice" | "oof" | "ooo" => Activity::OutOfOffice,
            "offwork" => Activity::OffWork,
            "inactive" => Activity::Inactive,
            "tentative" => Activity::Tentative,
            "workingelsewhere" => Activity::WorkingElsewhere,
            "lunch" | "meal" | "outtolunch" | "breakfast" | "dinner" => Activity::Lunch,
            "vacation" | "holiday" | "holidays" => Activity::Vacation,
            "sick" | "illness" | "ill" => Activity::Sick,
            _ => Activity::Other(truncate(t, MAX_OTHER_LEN).into()),
        })
    }

    /// Default availability bounds `[min, max]` (SfB numbers) within which this activity is
    /// shown. The lower bound also ranks specificity: higher = more specific.
    pub fn default_bounds(&self) -> (u32, u32) {
        match self {
            // A call qualifies Busy and DND (DND + call shows the call).
            Activity::InACall | Activity::InAConferenceCall | Activity::Ringing | Activity::OnHold => {
                (6500, 11999)
            }
            Activity::InAMeeting => (6500, 8999),
            // SfB publishes it at 6900, inside Busy; the hub's Busy is 6500, so it must show there.
            Activity::UrgentInterruptionsOnly => (6500, 11999),
            Activity::Presenting => (6500, 11999),
            Activity::Inactive => (3500, 8999),
            // Absence-like activities qualify "away" states; OOO is handled as a flag as well.
            Activity::Lunch | Activity::Vacation | Activity::Sick | Activity::OffWork => (9000, u32::MAX),
            Activity::OutOfOffice => (12000, u32::MAX),
            Activity::Tentative | Activity::WorkingElsewhere => (0, u32::MAX),
            Activity::Other(_) => (0, u32::MAX),
        }
    }
}

/// Cuts `s` to at most `max` bytes on a char boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl fmt::Display for Activity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Activity {
    type Err = std::convert::Infallible;
    /// Like [`Activity::parse_source`], but an availability-only word becomes `Other`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Activity::parse_source(s).unwrap_or_else(|| Activity::Other(truncate(s.trim(), MAX_OTHER_LEN).into())))
    }
}

impl Serialize for Activity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Activity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(s.parse().unwrap_or(Activity::Other("".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens_from_every_source_family() {
        let cases = [
            ("InACall", Some(Activity::InACall)),
            ("on-the-phone", Some(Activity::InACall)),
            ("inameeting", Some(Activity::InAMeeting)),
            ("in-presentation", Some(Activity::Presenting)),
            ("meal", Some(Activity::Lunch)),
            ("OutOfOffice", Some(Activity::OutOfOffice)),
            ("Available", None),
            ("Busy", None),
            ("", None),
            ("Focusing", Some(Activity::Other("Focusing".into()))),
        ];
        for (s, want) in cases {
            assert_eq!(Activity::parse_source(s), want, "{s}");
        }
    }

    #[test]
    fn other_text_is_bounded() {
        let long = "x".repeat(500);
        match Activity::parse_source(&long) {
            Some(Activity::Other(t)) => assert_eq!(t.len(), MAX_OTHER_LEN),
            other => panic!("{other:?}"),
        }
        let multibyte = "å".repeat(100);
        match Activity::parse_source(&multibyte) {
            Some(Activity::Other(t)) => assert!(t.len() <= MAX_OTHER_LEN),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn calls_and_annotations_are_classified() {
        assert!(Activity::Ringing.is_call());
        assert!(Activity::OnHold.is_call());
        assert!(!Activity::InAMeeting.is_call());
        assert!(Activity::Tentative.is_annotation());
        assert!(!Activity::Lunch.is_annotation());
    }
}
