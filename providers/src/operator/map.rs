//! From mapped operator events to the hub's signals — pure: no I/O, time is an argument.
//!
//! [`Ingest`] keeps, per person, the last applied timestamp and what the operator last said
//! (call state, diversion, absence), and turns each event into at most two signals:
//!
//! - **calls** (`Source::Mobile`, instance = the provider name): idle → Available; ringing →
//!   Busy / Ringing; in a call → Busy / InACall; unknown → no opinion. An active diversion
//!   adds the note "Forwarded to …" (the `forward_note` template). While the phone is idle
//!   and diverted, the call signal only annotates (no availability; configurable with
//!   `forwarded_availability`): calls to the mobile go elsewhere, so "Available" would send
//!   the switchboard to the wrong place, and the other sources decide.
//! - **absences** (instance `{name}-absence`): the reason's availability, activity and
//!   out-of-office flag from the hub's reason list (`sick` → Away / Sick / OOO), the text as
//!   the note, the end as `valid_until`; a cleared absence retracts the slot.
//!
//! Ordering (per person): an event older than the last applied one is dropped
//! (`out_of_order`); an event id seen before, or an event with the same timestamp saying the
//! same thing without an id, is dropped (`duplicates`). Events without a timestamp count as
//! received now. Timestamps more than `max_skew_ms` ahead of the clock are refused, so one
//! bad clock cannot block a person's later events.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Serialize;

use super::parse::{AbsenceStatement, CallState, EventError, OperatorEvent};
use crate::common::slots::{AbsenceSlot, Instances};
use presence_actors::directory::UserIdx;
use presence_actors::model::{AbsenceReason, Activity, Availability, Signal, Source, UnixMs};

/// Event ids remembered for duplicate detection.
pub const MAX_SEEN_IDS: usize = 20_000;

/// Settings of an [`Ingest`].
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// The instances of call signals (the provider's name) and absence signals
    /// (`{name}-absence`).
    pub instances: Instances<AbsenceSlot>,
    /// Note for an active diversion; `{to}` is replaced by the target.
    pub forward_note: String,
    /// Availability while idle and diverted; `None` annotates only.
    pub forwarded_availability: Option<Availability>,
    /// The hub's absence reasons.
    pub reasons: Vec<AbsenceReason>,
    /// Furthest a timestamp may be ahead of the clock, ms.
    pub max_skew_ms: i64,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Events applied.
    pub applied: u64,
    /// Dropped: seen before.
    pub duplicates: u64,
    /// Dropped: older than the last applied for that person.
    pub out_of_order: u64,
    /// Dropped: the number matches nobody in the directory.
    pub unresolved: u64,
    /// Dropped: the event did not map (no number, bad timestamp…).
    pub invalid: u64,
    /// Words the value maps did not know.
    pub unknown_values: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.applied += o.applied;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.unresolved += o.unresolved;
        self.invalid += o.invalid;
        self.unknown_values += o.unknown_values;
    }
}

/// What one batch did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Signals to send, in order.
    pub signals: Vec<(UserIdx, Signal)>,
    /// Counters of this batch.
    pub counts: Counts,
    /// The first refusal's reason (for the answer and health).
    pub first_error: Option<String>,
    /// Numbers that matched nobody.
    pub unresolved: Vec<String>,
    /// Unknown words as `(field, value)`.
    pub unknown: Vec<(&'static str, String)>,
}

#[derive(Debug, Default)]
struct Person {
    last_at: UnixMs,
    last_fp: u64,
    call: Option<CallState>,
    forward: Option<String>,
    absence: Option<AbsenceStatement>,
}

/// The per-person state and the event → signal rules.
#[derive(Debug)]
pub struct Ingest {
    cfg: IngestConfig,
    people: HashMap<UserIdx, Person>,
    seen: HashSet<Box<str>>,
    seen_order: VecDeque<Box<str>>,
    totals: Counts,
}

impl Ingest {
    /// An empty state.
    pub fn new(cfg: IngestConfig) -> Ingest {
        Ingest {
            cfg,
            people: HashMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            totals: Counts::default(),
        }
    }

    /// Counters since start.
    pub fn totals(&self) -> Counts {
        self.totals
    }

    /// People with operator state.
    pub fn people(&self) -> usize {
        self.people.len()
    }

    /// Applies a batch in order. `resolve` maps a number to a person.
    pub fn apply(
        &mut self,
        events: Vec<Result<OperatorEvent, EventError>>,
        resolve: &dyn Fn(&str) -> Option<UserIdx>,
        now: UnixMs,
    ) -> Outcome {
        let mut out = Outcome::default();
        for ev in events {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    out.counts.invalid += 1;
                    out.first_error.get_or_insert_with(|| e.to_string());
                    continue;
                }
            };
            out.counts.unknown_values += ev.unknown.len() as u64;
            let at = ev.at.unwrap_or(now);
            if at > now.saturating_add(self.cfg.max_skew_ms) {
                out.counts.invalid += 1;
                out.first_error
                    .get_or_insert_with(|| format!("{}: timestamp {} s in the future", ev.number, (at - now) / 1000));
                continue;
            }
            let Some(idx) = resolve(&ev.number) else {
                out.counts.unresolved += 1;
                if out.unresolved.len() < 16 {
                    out.unresolved.push(ev.number.clone());
                }
                continue;
            };
            if ev.id.as_deref().is_some_and(|id| self.seen.contains(id)) {
                out.counts.duplicates += 1;
                continue;
            }
            let fp = ev.fingerprint();
            let p = self.people.entry(idx).or_default();
            if at < p.last_at {
                out.counts.out_of_order += 1;
                continue;
            }
            if at == p.last_at && ev.id.is_none() && fp == p.last_fp {
                out.counts.duplicates += 1;
                continue;
            }
            p.last_at = at;
            p.last_fp = fp;
            let observed = at.min(now);
            let call_changed = ev.call.is_some() || ev.forward.is_some();
            if let Some(c) = ev.call {
                p.call = Some(c);
            }
            if let Some(f) = ev.forward {
                p.forward = f;
            }
            if call_changed {
                out.signals.push((idx, call_signal(&self.cfg, p, observed)));
            }
            if let Some(a) = ev.absence {
                p.absence = a;
                out.signals.push((idx, absence_signal(&self.cfg, p.absence.as_ref(), observed)));
            }
            out.counts.applied += 1;
            if let Some(id) = ev.id {
                self.remember(id.into_boxed_str());
            }
            if out.unknown.len() < 16 {
                out.unknown.extend(ev.unknown);
            }
        }
        self.totals.add(&out.counts);
        out
    }

    fn remember(&mut self, id: Box<str>) {
        if self.seen_order.len() >= MAX_SEEN_IDS {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        if self.seen.insert(id.clone()) {
            self.seen_order.push_back(id);
        }
    }
}

fn call_signal(cfg: &IngestConfig, p: &Person, at: UnixMs) -> Signal {
    let note = p.forward.as_deref().map(|t| {
        if t.is_empty() {
            "Forwarded".to_string()
        } else {
            cfg.forward_note.replace("{to}", t)
        }
    });
    let (availability, activity) = match p.call {
        Some(CallState::Ringing) => (Some(Availability::Busy), Some(Activity::Ringing)),
        Some(CallState::InCall) => (Some(Availability::Busy), Some(Activity::InACall)),
        Some(CallState::Idle) | None if p.forward.is_some() => {
            (cfg.forwarded_availability.filter(|a| a.is_known()), None)
        }
        Some(CallState::Idle) => (Some(Availability::Available), None),
        Some(CallState::Unknown) => (Some(Availability::Unknown), None),
        // Nothing known about calls and no diversion: retract.
        None => (None, None),
    };
    let mut s = Signal::new(Source::Mobile, &cfg.instances.first, availability, at);
    s.activity = activity;
    if let Some(n) = note {
        s = s.note(&n);
    }
    s
}

fn absence_signal(cfg: &IngestConfig, a: Option<&AbsenceStatement>, at: UnixMs) -> Signal {
    let Some(a) = a else {
        return Signal::new(Source::Mobile, &cfg.instances.second, None, at);
    };
    let r = cfg.reasons.iter().find(|r| r.code == a.code);
    let mut s =
        Signal::new(Source::Mobile, &cfg.instances.second, r.map_or(Some(Availability::Away), |r| r.availability), at);
    s.activity = r.and_then(|r| r.activity.clone());
    s.ooo = r.is_some_and(|r| r.ooo);
    s.valid_until = a.until;
    match &a.text {
        Some(t) => s = s.note(t),
        // Nothing else would say why (e.g. a reason that only has a label).
        None if s.is_retraction() => s = s.note(r.map_or(&*a.code, |r| &*r.label_en)),
        None => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> IngestConfig {
        IngestConfig {
            instances: Instances::of("tdc"),
            forward_note: "Forwarded to {to}".into(),
            forwarded_availability: None,
            reasons: AbsenceReason::defaults(),
            max_skew_ms: 300_000,
        }
    }

    fn ev(number: &str, at: Option<i64>) -> OperatorEvent {
        OperatorEvent {
            number: number.into(),
            call: None,
            forward: None,
            absence: None,
            at,
            id: None,
            unknown: Vec::new(),
        }
    }

    fn call(number: &str, c: CallState, at: i64) -> OperatorEvent {
        OperatorEvent { call: Some(c), ..ev(number, Some(at)) }
    }

    fn resolve(n: &str) -> Option<UserIdx> {
        match n {
            "+46701" => Some(1),
            "+46702" => Some(2),
            _ => None,
        }
    }

    const NOW: i64 = 1_772_442_904_000;

    #[test]
    fn call_states_become_mobile_signals() {
        let mut ing = Ingest::new(cfg());
        let out = ing.apply(
            vec![
                Ok(call("+46701", CallState::Ringing, NOW - 3000)),
                Ok(call("+46701", CallState::InCall, NOW - 2000)),
                Ok(call("+46701", CallState::Idle, NOW - 1000)),
            ],
            &resolve,
            NOW,
        );
        let got: Vec<_> = out
            .signals
            .iter()
            .map(|(i, s)| (*i, s.source, s.availability, s.activity.clone(), s.observed_at))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, Source::Mobile, Some(Availability::Busy), Some(Activity::Ringing), NOW - 3000),
                (1, Source::Mobile, Some(Availability::Busy), Some(Activity::InACall), NOW - 2000),
                (1, Source::Mobile, Some(Availability::Available), None, NOW - 1000),
            ]
        );
        assert!(out.signals.iter().all(|(_, s)| &*s.instance == "tdc"));
        assert_eq!(out.counts.applied, 3);
        let unk = ing.apply(vec![Ok(call("+46701", CallState::Unknown, NOW))], &resolve, NOW);
        assert_eq!(unk.signals[0].1.availability, Some(Availability::Unknown), "unknown is no opinion, never Offline");
    }

    #[test]
    fn diversion_annotates_and_keeps_the_call_state() {
        let mut ing = Ingest::new(cfg());
        let mut e = call("+46701", CallState::Idle, NOW - 5000);
        e.forward = Some(Some("+4670999".into()));
        let out = ing.apply(vec![Ok(e)], &resolve, NOW);
        let s = &out.signals[0].1;
        assert_eq!((s.availability, s.note.as_deref()), (None, Some("Forwarded to +4670999")));
        assert!(!s.is_retraction());
        // A call while diverted: busy, still noted; diversion off: plain again.
        let out = ing.apply(vec![Ok(call("+46701", CallState::InCall, NOW - 4000))], &resolve, NOW);
        let s = &out.signals[0].1;
        assert_eq!(
            (s.availability, s.activity.clone(), s.note.as_deref()),
            (Some(Availability::Busy), Some(Activity::InACall), Some("Forwarded to +4670999"))
        );
        let mut off = ev("+46701", Some(NOW - 3000));
        off.forward = Some(None);
        let out = ing.apply(vec![Ok(off)], &resolve, NOW);
        assert_eq!((out.signals[0].1.availability, out.signals[0].1.note.as_deref()), (Some(Availability::Busy), None));
        // Configured availability while idle and diverted.
        let mut c = cfg();
        c.forwarded_availability = Some(Availability::Away);
        let mut ing = Ingest::new(c);
        let mut e = ev("+46702", Some(NOW));
        e.forward = Some(Some(String::new()));
        let out = ing.apply(vec![Ok(e)], &resolve, NOW);
        assert_eq!(
            (out.signals[0].1.availability, out.signals[0].1.note.as_deref()),
            (Some(Availability::Away), Some("Forwarded"))
        );
    }

    #[test]
    fn absences_map_to_the_hubs_reasons_and_clear() {
        let mut ing = Ingest::new(cfg());
        let mut e = ev("+46701", Some(NOW - 1000));
        e.absence = Some(Some(AbsenceStatement {
            code: "sick".into(),
            text: Some("Home today".into()),
            until: Some(NOW + 3_600_000),
        }));
        let out = ing.apply(vec![Ok(e)], &resolve, NOW);
        let s = &out.signals[0].1;
        assert_eq!(&*s.instance, "tdc-absence");
        assert_eq!((s.availability, s.activity.clone(), s.ooo), (Some(Availability::Away), Some(Activity::Sick), true));
        assert_eq!((s.note.as_deref(), s.valid_until), (Some("Home today"), Some(NOW + 3_600_000)));
        let mut e = ev("+46701", Some(NOW - 500));
        e.absence = Some(Some(AbsenceStatement { code: "meeting".into(), text: None, until: None }));
        let out = ing.apply(vec![Ok(e)], &resolve, NOW);
        assert_eq!(
            (out.signals[0].1.availability, out.signals[0].1.activity.clone(), out.signals[0].1.ooo),
            (Some(Availability::Busy), Some(Activity::InAMeeting), false)
        );
        let mut e = ev("+46701", Some(NOW));
        e.absence = Some(None);
        let out = ing.apply(vec![Ok(e)], &resolve, NOW);
        assert!(out.signals[0].1.is_retraction());
        assert_eq!(out.signals.len(), 1, "an absence-only event sends no call signal");
    }

    #[test]
    fn out_of_order_duplicates_unresolved_and_future_events_are_dropped() {
        let mut ing = Ingest::new(cfg());
        let mut a = call("+46701", CallState::InCall, NOW - 1000);
        a.id = Some("e1".into());
        let mut dup = a.clone();
        dup.call = Some(CallState::Idle); // same id, whatever it says
        let older = call("+46701", CallState::Idle, NOW - 2000);
        let same = call("+46701", CallState::Ringing, NOW - 500);
        let out = ing.apply(
            vec![
                Ok(a),
                Ok(dup),
                Ok(older),
                Ok(same.clone()),
                Ok(same),
                Ok(call("+46709", CallState::Idle, NOW)),
                Ok(call("+46702", CallState::Idle, NOW + 3_600_000)),
                Err(EventError::MissingNumber(7)),
            ],
            &resolve,
            NOW,
        );
        assert_eq!(
            out.counts,
            Counts { applied: 2, duplicates: 2, out_of_order: 1, unresolved: 1, invalid: 2, unknown_values: 0 }
        );
        assert_eq!(out.unresolved, vec!["+46709".to_string()]);
        assert!(out.first_error.as_deref().is_some_and(|e| e.contains("future")));
        // Equal timestamps that say something different both apply (second-resolution clocks).
        let out = ing.apply(vec![Ok(call("+46701", CallState::Idle, NOW - 500))], &resolve, NOW);
        assert_eq!(out.counts.applied, 1);
        // The other person is independent.
        let out = ing.apply(vec![Ok(call("+46702", CallState::Idle, NOW - 10_000))], &resolve, NOW);
        assert_eq!(out.counts.applied, 1);
        assert_eq!(ing.totals().applied, 4);
        assert_eq!(ing.people(), 2);
    }

    #[test]
    fn the_id_memory_is_bounded() {
        let mut ing = Ingest::new(cfg());
        for i in 0..MAX_SEEN_IDS + 10 {
            ing.remember(format!("id{i}").into());
        }
        assert_eq!(ing.seen.len(), MAX_SEEN_IDS);
        assert!(!ing.seen.contains("id0"));
        assert!(ing.seen.contains(format!("id{}", MAX_SEEN_IDS + 9).as_str()));
    }
}
