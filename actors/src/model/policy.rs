//! The merge policy as data: the `[policy]` section of the config file.
//!
//! Every merge rule (docs/ARCHITECTURE.md, § The default merge rules) that a deployment might
//! reasonably want to change is a field
//! here; the defaults are the documented policy. The merge itself lives in [`super::merge`].

use serde::{Deserialize, Serialize};

use super::{AbsenceReason, Activity, Availability, Source};

/// Who may see calendar subjects and locations (rule 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DetailPolicy {
    /// Never sent to clients: "Meeting until 14:00" only. The default.
    #[default]
    Hidden,
    /// Sent to tokens with the operator or admin role.
    Operators,
    /// Sent to every authenticated client.
    Everyone,
}

/// Override of an activity's availability bounds (rule 6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundsRule {
    /// The activity.
    pub activity: Activity,
    /// Lowest availability number at which it is shown (also its specificity).
    pub min: u32,
    /// Highest availability number at which it is shown.
    pub max: u32,
}

/// The merge policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Rule 4: the newest manual absence hides *older* automatic signals.
    pub manual_hides_older: bool,
    /// Rule 4 exception: a ringing, active or held call always shows, even when a manual
    /// absence is newer; the merged availability is then at least `call_availability`, and
    /// "away"-type states are set aside while the call lasts (the person is demonstrably there).
    pub telephony_always_shows: bool,
    /// Availability a live call implies.
    pub call_availability: Availability,
    /// Rule 6: activity bound overrides; activities not listed use their defaults.
    pub activity_bounds: Vec<BoundsRule>,
    /// Sources whose signals are ignored entirely.
    pub ignore_sources: Vec<Source>,
    /// How long state restored from the snapshot after a restart is shown (as stale) when no
    /// live signal replaces it, in seconds.
    pub restored_ttl_secs: u64,
    /// Rule 8: who sees calendar subjects and locations.
    pub calendar_details: DetailPolicy,
    /// The manual absence reasons offered to operators.
    pub absence_reasons: Vec<AbsenceReason>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            manual_hides_older: true,
            telephony_always_shows: true,
            call_availability: Availability::Busy,
            activity_bounds: Vec::new(),
            ignore_sources: Vec::new(),
            restored_ttl_secs: 3600,
            calendar_details: DetailPolicy::Hidden,
            absence_reasons: AbsenceReason::defaults(),
        }
    }
}

/// Why a policy is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Two absence reasons share a code.
    #[error("absence reason code {0:?} is listed twice")]
    DuplicateReason(String),
    /// A reason code is empty, too long or not `[a-z0-9_]`.
    #[error("absence reason code {0:?} must be 1-32 characters of a-z, 0-9 and _")]
    BadReasonCode(String),
    /// A bounds rule has min > max.
    #[error("bounds for {0} have min > max")]
    BadBounds(String),
    /// The call availability is not a busy-type state.
    #[error("call_availability must be Busy, BusyIdle or DoNotDisturb")]
    BadCallAvailability,
}

impl Policy {
    /// Checks the policy for mistakes a config author can make.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let mut seen = std::collections::HashSet::new();
        for r in &self.absence_reasons {
            let ok = !r.code.is_empty()
                && r.code.len() <= 32
                && r.code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(PolicyError::BadReasonCode(r.code.to_string()));
            }
            if !seen.insert(r.code.clone()) {
                return Err(PolicyError::DuplicateReason(r.code.to_string()));
            }
        }
        for b in &self.activity_bounds {
            if b.min > b.max {
                return Err(PolicyError::BadBounds(b.activity.to_string()));
            }
        }
        if !matches!(
            self.call_availability,
            Availability::Busy | Availability::BusyIdle | Availability::DoNotDisturb
        ) {
            return Err(PolicyError::BadCallAvailability);
        }
        Ok(())
    }

    /// The bounds in force for an activity.
    pub fn bounds(&self, a: &Activity) -> (u32, u32) {
        self.activity_bounds
            .iter()
            .find(|b| &b.activity == a)
            .map(|b| (b.min, b.max))
            .unwrap_or_else(|| a.default_bounds())
    }

    /// Looks up an absence reason by code.
    pub fn reason(&self, code: &str) -> Option<&AbsenceReason> {
        self.absence_reasons.iter().find(|r| &*r.code == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_is_valid() {
        Policy::default().validate().unwrap();
    }

    #[test]
    fn duplicate_and_bad_codes_are_rejected() {
        let mut p = Policy::default();
        let first = p.absence_reasons[0].clone();
        p.absence_reasons.push(first);
        assert!(matches!(p.validate(), Err(PolicyError::DuplicateReason(_))));
        let mut p = Policy::default();
        p.absence_reasons[0].code = "Lunch Break".into();
        assert!(matches!(p.validate(), Err(PolicyError::BadReasonCode(_))));
    }

    #[test]
    fn bounds_override_replaces_default() {
        let mut p = Policy::default();
        assert_eq!(p.bounds(&Activity::InAMeeting), (6500, 8999));
        p.activity_bounds.push(BoundsRule { activity: Activity::InAMeeting, min: 6000, max: 20000 });
        assert_eq!(p.bounds(&Activity::InAMeeting), (6000, 20000));
    }
}
