//! What the hub's SIP presence server tells watchers: a person's merged view as PIDF + RPID
//! (`presence` package) and as dialog-info (`dialog` package, for BLF keys). Pure functions.
//!
//! PIDF: one tuple (`basic` open, closed when Offline, left out when Unknown) with the person's
//! SIP address as contact, and a `dm:person` with the RPID activity, the `until` of the
//! available-again time, `user-input idle` for the idle states, and the note.
//!
//! dialog-info: a BLF lamp is lit when the person cannot take a call. A ringing call gives an
//! `early` dialog (the lamp flashes), any other state that is not available (a call, a meeting,
//! Busy, Do not disturb, Away, Offline…) a `confirmed` dialog (the lamp is lit); Available and
//! Unknown give no dialog (the lamp is off). Always `state="full"`; `version` counts the
//! NOTIFYs of the subscription.

use presence_actors::model::{Activity, Availability, MergedView};
use presence_sip::body::pidf::{self, Activities, Basic, Contact, InputState, Note, PidfDoc, Person, Tuple, UserInput};

/// PIDF + RPID for a merged view (`None`: nothing known yet).
pub fn pidf(entity: &str, contact: &str, view: Option<&MergedView>) -> String {
    let mut doc = PidfDoc { entity: entity.to_string(), ..PidfDoc::default() };
    let mut tuple = Tuple {
        id: "hub".into(),
        contact: Some(Contact { uri: contact.to_string(), priority: None }),
        ..Tuple::default()
    };
    let Some(v) = view.filter(|v| v.availability != Availability::Unknown) else {
        tuple.notes.push(Note::new("unknown"));
        doc.tuples.push(tuple);
        return pidf::build_pidf(&doc);
    };
    tuple.basic = Some(if v.availability == Availability::Offline { Basic::Closed } else { Basic::Open });
    tuple.timestamp = jiff::Timestamp::from_millisecond(v.since).ok();
    doc.tuples.push(tuple);

    let mut person = Person { id: Some("p".into()), ..Person::default() };
    let activity = rpid_activity(v);
    if let Some(a) = activity {
        person.activities.push(Activities {
            list: vec![a],
            until: v.available_again_at.and_then(|t| jiff::Timestamp::from_millisecond(t).ok()),
            ..Activities::default()
        });
    }
    if matches!(v.availability, Availability::AvailableIdle | Availability::BusyIdle) || v.activity == Some(Activity::Inactive) {
        person.user_input = Some(UserInput { state: InputState::Idle, last_input: None, idle_threshold: None });
    }
    if let Some(n) = &v.note {
        person.notes.push(Note::new(n.to_string()));
    }
    doc.persons.push(person);
    pidf::build_pidf(&doc)
}

fn rpid_activity(v: &MergedView) -> Option<pidf::Activity> {
    use pidf::Activity as R;
    let from_activity = v.activity.as_ref().and_then(|a| match a {
        Activity::InACall | Activity::InAConferenceCall | Activity::Ringing | Activity::OnHold => Some(R::OnThePhone),
        Activity::InAMeeting => Some(R::Meeting),
        Activity::Presenting => Some(R::Presentation),
        Activity::Lunch => Some(R::Meal),
        Activity::Vacation => Some(R::Vacation),
        Activity::OutOfOffice | Activity::OffWork => Some(R::Away),
        Activity::UrgentInterruptionsOnly => Some(R::Busy),
        Activity::Sick => Some(R::Other("Sick".into())),
        Activity::Other(t) => Some(R::Other(t.to_string())),
        Activity::Inactive | Activity::Tentative | Activity::WorkingElsewhere => None,
    });
    from_activity.or(match v.availability {
        Availability::Busy | Availability::BusyIdle | Availability::DoNotDisturb => Some(R::Busy),
        Availability::BeRightBack | Availability::Away => Some(R::Away),
        _ => None,
    })
}

/// The lamp a merged view lights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lamp {
    /// Free: no dialog.
    Off,
    /// A call is ringing: an `early` dialog.
    Ringing,
    /// Cannot take a call: a `confirmed` dialog.
    On,
}

/// The lamp for a view.
pub fn lamp(view: Option<&MergedView>) -> Lamp {
    let Some(v) = view else { return Lamp::Off };
    if v.activity == Some(Activity::Ringing) {
        return Lamp::Ringing;
    }
    if v.activity.as_ref().is_some_and(Activity::is_call) {
        return Lamp::On;
    }
    match v.availability {
        Availability::Unknown | Availability::Available | Availability::AvailableIdle => Lamp::Off,
        _ => Lamp::On,
    }
}

/// dialog-info for a view.
pub fn dialog_info(entity: &str, version: u64, view: Option<&MergedView>) -> String {
    use presence_sip::body::dialog_info::{build_dialog_info, Dialog, DialogInfo, DialogState, DocState, Direction};
    let mut doc = DialogInfo { version, state: DocState::Full, entity: entity.to_string(), dialogs: Vec::new() };
    let state = match lamp(view) {
        Lamp::Off => None,
        Lamp::Ringing => Some(DialogState::Early),
        Lamp::On => Some(DialogState::Confirmed),
    };
    if let Some(state) = state {
        doc.dialogs.push(Dialog {
            id: "hub".into(),
            direction: Some(Direction::Recipient),
            state,
            ..Dialog::default()
        });
    }
    build_dialog_info(&doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_actors::model::{Freshness, SourceSet};

    fn view(a: Availability, act: Option<Activity>) -> MergedView {
        MergedView {
            availability: a,
            activity: act,
            note: Some("Lunch, back 13:00 <&>".into()),
            ooo: false,
            available_again_at: Some(1_893_499_200_000),
            absence_reason: None,
            freshness: Freshness::Live,
            reasons: SourceSet::default(),
            since: 1_700_000_000_000,
        }
    }

    #[test]
    fn pidf_round_trips_through_the_parser_and_the_source_mapping() {
        let v = view(Availability::BeRightBack, Some(Activity::Lunch));
        let xml = pidf("sip:alice@hub", "sip:alice@example.com", Some(&v));
        let doc = pidf::parse_pidf(xml.as_bytes()).unwrap();
        assert_eq!(doc.open(), Some(true));
        assert_eq!(doc.note(), Some("Lunch, back 13:00 <&>"));
        let s = presence_providers::sip::map::pidf_to_signal(&doc, presence_actors::model::Source::Sip, "x", 1_700_000_000_000);
        assert_eq!(s.availability, Some(Availability::BeRightBack));
        assert_eq!(s.activity, Some(Activity::Lunch));
        assert_eq!(s.valid_until, Some(1_893_499_200_000));
        let off = pidf("sip:a@h", "sip:a@h", Some(&view(Availability::Offline, None)));
        assert_eq!(pidf::parse_pidf(off.as_bytes()).unwrap().open(), Some(false));
        let unknown = pidf("sip:a@h", "sip:a@h", None);
        assert_eq!(pidf::parse_pidf(unknown.as_bytes()).unwrap().open(), None);
    }

    #[test]
    fn lamps() {
        assert_eq!(lamp(None), Lamp::Off);
        assert_eq!(lamp(Some(&view(Availability::Available, None))), Lamp::Off);
        assert_eq!(lamp(Some(&view(Availability::Busy, Some(Activity::Ringing)))), Lamp::Ringing);
        assert_eq!(lamp(Some(&view(Availability::Busy, Some(Activity::InACall)))), Lamp::On);
        assert_eq!(lamp(Some(&view(Availability::Away, None))), Lamp::On);
        assert_eq!(lamp(Some(&view(Availability::Busy, Some(Activity::InAMeeting)))), Lamp::On);
    }
}
