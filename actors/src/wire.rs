//! The JSON shape of a person's merged presence, shared by the API, streams and snapshot.
//!
//! Serialised once per change (in the user actor) and shared by every subscriber as bytes:
//! encoding per subscriber would multiply the cost by the fan-out.

use serde::{Deserialize, Serialize};

use crate::model::{rfc3339, Activity, Availability, Freshness, MergedView, Source, SourceSet, UnixMs};

/// Borrowing view of a merged presence for serialisation.
#[derive(Serialize)]
struct PresenceOut<'a> {
    id: &'a str,
    availability: Availability,
    activity: Option<&'a Activity>,
    note: Option<&'a str>,
    ooo: bool,
    available_again_at: Option<String>,
    absence_reason: Option<&'a str>,
    freshness: Freshness,
    reasons: SourceSet,
    since: Option<String>,
}

/// Serialises one person's merged presence (`{"id":…,"availability":…,…}`).
pub fn presence_json(id: &str, v: &MergedView) -> String {
    let out = PresenceOut {
        id,
        availability: v.availability,
        activity: v.activity.as_ref(),
        note: v.note.as_deref(),
        ooo: v.ooo,
        available_again_at: v.available_again_at.map(rfc3339),
        absence_reason: v.absence_reason.as_deref(),
        freshness: v.freshness,
        reasons: v.reasons,
        since: (v.since > 0).then(|| rfc3339(v.since)),
    };
    serde_json::to_string(&out).unwrap_or_else(|_| String::from("{}"))
}

/// The identity of a person who left the directory (`{"id":…}`), as a `removed` frame
/// carries it.
pub fn removed_json(id: &str) -> String {
    serde_json::json!({ "id": id }).to_string()
}

/// Owned form, for reading a snapshot back.
#[derive(Deserialize, Debug)]
pub struct PresenceIn {
    /// Person id.
    pub id: String,
    /// Availability.
    pub availability: Availability,
    /// Activity.
    #[serde(default)]
    pub activity: Option<Activity>,
    /// Note.
    #[serde(default)]
    pub note: Option<String>,
    /// OOO flag.
    #[serde(default)]
    pub ooo: bool,
    /// Available again at (RFC 3339).
    #[serde(default)]
    pub available_again_at: Option<String>,
    /// Reasons.
    #[serde(default)]
    pub reasons: Vec<Source>,
    /// Since (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// Reason code of the active absence.
    #[serde(default)]
    pub absence_reason: Option<String>,
    /// Freshness as published (a snapshot is read back stale whatever it says).
    #[serde(default)]
    pub freshness: Option<crate::model::Freshness>,
}

impl PresenceIn {
    /// Back to the view exactly as published, freshness and absence reason included (a
    /// change from another node of a cluster).
    pub fn into_exact_view(self) -> MergedView {
        let freshness = self.freshness.unwrap_or(Freshness::Unknown);
        let reason = self.absence_reason.clone();
        let (_, mut v, _) = self.into_view();
        v.freshness = freshness;
        v.absence_reason = reason.map(String::into_boxed_str);
        v
    }

    /// Back to a view, marked stale (it is what we knew before a restart).
    pub fn into_view(self) -> (String, MergedView, UnixMs) {
        let mut reasons = SourceSet::default();
        for s in self.reasons {
            reasons.insert(s);
        }
        let since = self.since.as_deref().and_then(crate::model::parse_rfc3339).unwrap_or(0);
        let v = MergedView {
            availability: self.availability,
            activity: self.activity,
            note: self.note.as_deref().and_then(crate::model::signal::bounded_note),
            ooo: self.ooo,
            available_again_at: self.available_again_at.as_deref().and_then(crate::model::parse_rfc3339),
            absence_reason: None,
            freshness: if self.availability.is_known() { Freshness::Stale } else { Freshness::Unknown },
            reasons,
            since,
        };
        (self.id, v, since)
    }
}
