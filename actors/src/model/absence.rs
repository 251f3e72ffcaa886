//! Manual absences ("hänvisning"): an operator or the person says *Lunch, back 13:00*.
//!
//! An absence has a reason code from a configurable list (each with Swedish and English
//! labels and the availability/activity it implies), optional free text, a start (now or
//! scheduled) and an optional end. While active it becomes a `manual` signal in the merge.

use serde::{Deserialize, Serialize};

use super::{Activity, Availability, UnixMs};

/// Longest free text of an absence, in bytes.
pub const MAX_ABSENCE_TEXT: usize = 500;
/// Most absences (current and scheduled) kept per person.
pub const MAX_ABSENCES_PER_USER: usize = 64;

/// One manual absence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Absence {
    /// Opaque unique id.
    pub id: Box<str>,
    /// Reason code (see [`AbsenceReason::code`]).
    pub reason: Box<str>,
    /// Free text ("Back after the board meeting").
    pub text: Option<Box<str>>,
    /// Start (may be in the future: scheduled).
    pub start: UnixMs,
    /// End; `None` = until further notice.
    pub end: Option<UnixMs>,
    /// When it was created.
    pub created_at: UnixMs,
    /// When it was last changed (re-asserts it over older automatic signals).
    pub updated_at: UnixMs,
    /// Name of the token that set it.
    pub created_by: Option<Box<str>>,
}

impl Absence {
    /// True while `start <= now < end`.
    pub fn is_active(&self, now: UnixMs) -> bool {
        self.start <= now && self.end.is_none_or(|e| now < e)
    }

    /// True once ended.
    pub fn is_over(&self, now: UnixMs) -> bool {
        self.end.is_some_and(|e| e <= now)
    }

    /// The time the merge treats as "when this absence was asserted".
    pub fn effective_at(&self) -> UnixMs {
        self.start.max(self.updated_at)
    }
}

/// One entry of the configurable reason list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbsenceReason {
    /// Stable code used in the API ("lunch").
    pub code: Box<str>,
    /// Swedish label ("Lunch").
    pub label_sv: Box<str>,
    /// English label ("Lunch").
    pub label_en: Box<str>,
    /// Availability while active; `None` annotates only (e.g. working from home).
    #[serde(default)]
    pub availability: Option<Availability>,
    /// Activity while active.
    #[serde(default)]
    pub activity: Option<Activity>,
    /// Sets the out-of-office flag.
    #[serde(default)]
    pub ooo: bool,
}

impl AbsenceReason {
    fn new(code: &str, sv: &str, en: &str, a: Option<Availability>, act: Option<Activity>, ooo: bool) -> Self {
        AbsenceReason {
            code: code.into(),
            label_sv: sv.into(),
            label_en: en.into(),
            availability: a,
            activity: act,
            ooo,
        }
    }

    /// The default list, as Nordic switchboards use it.
    pub fn defaults() -> Vec<AbsenceReason> {
        use Availability::*;
        vec![
            Self::new("lunch", "Lunch", "Lunch", Some(Away), Some(Activity::Lunch), false),
            Self::new("meeting", "Möte", "Meeting", Some(Busy), Some(Activity::InAMeeting), false),
            Self::new("back_soon", "Strax tillbaka", "Back soon", Some(BeRightBack), None, false),
            Self::new("busy", "Upptagen", "Busy", Some(Busy), None, false),
            Self::new("vacation", "Semester", "Vacation", Some(Away), Some(Activity::Vacation), true),
            Self::new("sick", "Sjuk", "Sick", Some(Away), Some(Activity::Sick), true),
            Self::new("gone_for_the_day", "Gått för dagen", "Gone for the day", Some(Away), Some(Activity::OffWork), false),
            Self::new("course", "Kurs", "Course", Some(Away), Some(Activity::Other("Course".into())), true),
            Self::new("business_trip", "Tjänsteresa", "Business trip", Some(Away), Some(Activity::Other("BusinessTrip".into())), true),
            Self::new("parental_leave", "Föräldraledig", "Parental leave", Some(Away), Some(Activity::Other("ParentalLeave".into())), true),
            Self::new("working_elsewhere", "Arbetar på annan plats", "Working elsewhere", None, Some(Activity::WorkingElsewhere), false),
            Self::new("other", "Annat", "Other", Some(Away), None, false),
        ]
    }
}
