//! Pure mapping of O2G events to the hub's signals (no I/O).
//!
//! Telephony → one `pbx` signal per person, instance `{name}` ([`UserTelephony`]). Calls are
//! tracked by `callRef`; a call's state is its legs' states (the user's devices), or
//! `callData.state` when it has no legs:
//!
//! | calls | availability | activity |
//! |---|---|---|
//! | any leg `RINGING_INCOMING` | Busy | Ringing |
//! | else any `ACTIVE`, `DIALING`, `RINGING_OUTGOING` | Busy | InACall |
//! | else any `HELD` | Busy | OnHold |
//! | else any `OFF_HOOK` (busy, not in a call) | Busy | — |
//! | no call (or only `IDLE`/`RELEASING`/`UNKNOWN` legs) | Available | — |
//!
//! The user state (`OnUserStateModified`, `userState` of a snapshot) is the fallback when no
//! call says anything: `BUSY` then gives Busy — but only when it is newer than the last call
//! event, so the `BUSY` that accompanies a call does not outlive the call's `OnCallRemoved`
//! while the matching `FREE` is on its way. When every known device of the person is
//! `OUT_OF_SERVICE` and no call is going on, the signal carries no availability and the note
//! "Desk phone out of service": the PBX cannot tell whether the person is there.
//!
//! Routing → one `pbx` signal, instance `{name}-routing` ([`routing_signal`]): DND on is
//! DoNotDisturb. A forward is an annotation (no availability: a forward says where calls go,
//! not whether the person is there) with the note "Forwarded to \<number|voicemail\>" —
//! "… when busy", "… on no answer", "… when busy or on no answer" for the conditional kinds.
//! An overflow adds "Overflow to \<destination\> on no answer" (or "when busy"…). Nothing set
//! retracts the slot. As in the SDK only route `[0]` counts, and a route whose destinations
//! are not exactly one is no route.
//!
//! `{name}` is the provider's configured name ([`Instances`]).

use std::collections::BTreeMap;

use crate::common::slots;
use presence_actors::model::{Activity, Availability, Signal, Source, UnixMs};

use super::parse::{Call, CallData, Event, Leg, MediaState, OperationalState, Route, RoutingState, UserState};

slots::second_slot!(
    /// The routing slot (DND, forwards), beside the telephony: instance `{name}-routing`.
    RoutingSlot = "routing"
);

/// The instances of a provider's two slots per person: telephony ([`Instances::first`], the
/// provider's name) and routing ([`Instances::second`], `{name}-routing`).
pub type Instances = slots::Instances<RoutingSlot>;

/// Most calls tracked per person (a peer cannot grow the state without bound).
pub const MAX_CALLS: usize = 16;
/// Most legs tracked per call.
pub const MAX_LEGS: usize = 8;
/// Most devices tracked per person.
pub const MAX_DEVICES: usize = 8;

/// What the calls say, most important last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CallState {
    /// Nothing going on.
    Idle,
    /// Off hook, not in a call.
    OffHook,
    /// A held call.
    Held,
    /// Dialing, ringing out, or talking.
    Talking,
    /// An incoming call is ringing.
    Ringing,
}

fn rank(s: &MediaState) -> CallState {
    match s {
        MediaState::RingingIncoming => CallState::Ringing,
        MediaState::Active | MediaState::Dialing | MediaState::RingingOutgoing => CallState::Talking,
        MediaState::Held => CallState::Held,
        MediaState::OffHook => CallState::OffHook,
        _ => CallState::Idle,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct CallTrack {
    /// deviceId → state.
    legs: BTreeMap<String, MediaState>,
    /// `callData.state`, used when there are no legs.
    call_state: Option<MediaState>,
}

impl CallTrack {
    fn state(&self) -> CallState {
        if self.legs.is_empty() {
            return self.call_state.as_ref().map_or(CallState::Idle, rank);
        }
        self.legs.values().map(rank).max().unwrap_or(CallState::Idle)
    }

    fn set_leg(&mut self, l: &Leg) {
        if self.legs.len() < MAX_LEGS || self.legs.contains_key(&l.device_id) {
            self.legs.insert(bound(&l.device_id), l.state.clone());
        }
    }

    fn set_data(&mut self, d: &Option<CallData>) {
        if let Some(s) = d.as_ref().and_then(|d| d.state.clone()) {
            self.call_state = Some(s);
        }
    }

    fn from_call(c: &Call) -> CallTrack {
        let mut t = CallTrack::default();
        t.set_data(&c.call_data);
        for l in &c.legs {
            t.set_leg(l);
        }
        t
    }
}

fn bound(s: &str) -> String {
    presence_actors::model::activity::truncate(s, super::parse::MAX_ID_LEN).to_string()
}

/// One person's telephony as O2G reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserTelephony {
    calls: BTreeMap<String, CallTrack>,
    user_state: Option<UserState>,
    /// The user state came after the last call event (so it may speak for the person).
    user_state_newer: bool,
    devices: BTreeMap<String, OperationalState>,
    /// Something was heard (an event or a snapshot).
    known: bool,
}

impl UserTelephony {
    /// Nothing known yet.
    pub fn new() -> UserTelephony {
        UserTelephony::default()
    }

    /// Applies a telephony event; returns false for events this tracker does not use (routing,
    /// channel information, others).
    pub fn apply(&mut self, ev: &Event) -> bool {
        match ev {
            Event::CallCreated(c) => {
                self.put_call(&c.call.call_ref, CallTrack::from_call(&c.call));
                self.user_state_newer = false;
            }
            Event::CallModified(m) => {
                let mut t = m.previous_call_ref.as_ref().and_then(|p| self.calls.remove(p)).unwrap_or_default();
                if let Some(existing) = self.calls.remove(&m.call_ref) {
                    // The call goes on; an entry taken over from previousCallRef merges into it.
                    let mut e = existing;
                    for (k, v) in t.legs {
                        e.legs.entry(k).or_insert(v);
                    }
                    t = e;
                }
                t.set_data(&m.call_data);
                for l in &m.removed_legs {
                    t.legs.remove(&l.device_id);
                }
                for l in m.added_legs.iter().chain(&m.modified_legs) {
                    t.set_leg(l);
                }
                let key = m.replaced_by_call_ref.as_deref().filter(|r| !r.trim().is_empty()).unwrap_or(&m.call_ref);
                self.put_call(key, t);
                self.user_state_newer = false;
            }
            Event::CallRemoved(r) => {
                self.calls.remove(&r.call_ref);
                self.user_state_newer = false;
            }
            Event::UserStateModified(u) => {
                self.user_state = Some(u.state.clone());
                self.user_state_newer = true;
            }
            Event::DeviceStateModified(d) => {
                for s in &d.device_states {
                    if self.devices.len() < MAX_DEVICES || self.devices.contains_key(&s.device_id) {
                        self.devices.insert(bound(&s.device_id), s.state.clone());
                    }
                }
            }
            Event::TelephonyState(t) => {
                // A snapshot: the whole truth about the person's calls now.
                let st = t.state.clone().unwrap_or_default();
                self.calls.clear();
                for c in st.calls.iter().take(MAX_CALLS) {
                    self.calls.insert(bound(&c.call_ref), CallTrack::from_call(c));
                }
                self.user_state = st.user_state;
                self.user_state_newer = true;
            }
            _ => return false,
        }
        self.known = true;
        true
    }

    fn put_call(&mut self, call_ref: &str, t: CallTrack) {
        if self.calls.len() >= MAX_CALLS && !self.calls.contains_key(call_ref) {
            // A peer that never removes calls: forget the oldest reference (lowest key).
            if let Some(k) = self.calls.keys().next().cloned() {
                self.calls.remove(&k);
            }
        }
        self.calls.insert(bound(call_ref), t);
    }

    /// What the calls say.
    pub fn call_state(&self) -> CallState {
        self.calls.values().map(CallTrack::state).max().unwrap_or(CallState::Idle)
    }

    /// Calls tracked.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// True when every known device is out of service.
    pub fn out_of_service(&self) -> bool {
        !self.devices.is_empty() && self.devices.values().all(|s| *s == OperationalState::OutOfService)
    }

    /// The `pbx` signal (instance [`Instances::first`]), or `None` while nothing has been
    /// heard.
    pub fn signal(&self, instances: &Instances, now: UnixMs) -> Option<Signal> {
        if !self.known {
            return None;
        }
        let (availability, activity) = match self.call_state() {
            CallState::Ringing => (Availability::Busy, Some(Activity::Ringing)),
            CallState::Talking => (Availability::Busy, Some(Activity::InACall)),
            CallState::Held => (Availability::Busy, Some(Activity::OnHold)),
            CallState::OffHook => (Availability::Busy, None),
            CallState::Idle if self.out_of_service() => {
                return Some(Signal::new(Source::Pbx, &instances.first, None, now).note("Desk phone out of service"));
            }
            CallState::Idle if self.user_state_newer && self.user_state == Some(UserState::Busy) => {
                (Availability::Busy, None)
            }
            CallState::Idle => (Availability::Available, None),
        };
        let mut s = Signal::new(Source::Pbx, &instances.first, Some(availability), now);
        s.activity = activity;
        Some(s)
    }
}

/// A forward or overflow destination as text, or `None` for "no destination".
fn destination(r: &[super::parse::Destination]) -> Option<String> {
    let [d] = r else { return None };
    match d.kind.as_str() {
        "VOICEMAIL" => Some("voicemail".into()),
        "NUMBER" | "ASSOCIATE" => {
            let n = d.number.as_deref().or(d.device_id.as_deref()).map(str::trim).filter(|n| !n.is_empty());
            Some(bound(n.unwrap_or(if d.kind == "ASSOCIATE" { "the associate" } else { "a number" })))
        }
        _ => None,
    }
}

fn condition(kind: Option<&str>) -> &'static str {
    match kind {
        Some("BUSY") => " when busy",
        Some("NO_ANSWER") => " on no answer",
        Some("BUSY_NO_ANSWER") => " when busy or on no answer",
        // Absent, "IMMEDIATE", or unknown: immediate (as the SDK maps unknown values).
        _ => "",
    }
}

/// What a routing state says, for health details and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// DND is on.
    pub dnd: bool,
    /// An immediate forward: its destination.
    pub forward: Option<String>,
    /// The note, if any.
    pub note: Option<String>,
}

/// Reads a routing state.
pub fn routing(rs: &RoutingState) -> Routing {
    let dnd = rs.dnd_state.as_ref().is_some_and(|d| d.activate);
    let mut notes = Vec::new();
    let mut forward = None;
    if let Some((dest, cond)) = first_route(&rs.forward_routes) {
        if cond.is_empty() {
            forward = Some(dest.clone());
        }
        notes.push(format!("Forwarded to {dest}{cond}"));
    }
    if let Some((dest, cond)) = first_route(&rs.overflow_routes) {
        // An overflow is never immediate: without a condition it is on no answer.
        let cond = if cond.is_empty() { condition(Some("NO_ANSWER")) } else { cond };
        notes.push(format!("Overflow to {dest}{cond}"));
    }
    Routing { dnd, forward, note: (!notes.is_empty()).then(|| notes.join("; ")) }
}

/// Where the first of `routes` goes and when (as in the SDK only route `[0]` counts); `None`
/// when it goes nowhere.
fn first_route(routes: &[Route]) -> Option<(String, &'static str)> {
    let r = routes.first()?;
    Some((destination(&r.destinations)?, condition(r.condition.as_deref())))
}

/// The routing signal (instance [`Instances::second`]); an empty one retracts the slot.
pub fn routing_signal(rs: &RoutingState, instances: &Instances, now: UnixMs) -> Signal {
    let r = routing(rs);
    let mut s = Signal::new(Source::Pbx, &instances.second, r.dnd.then_some(Availability::DoNotDisturb), now);
    if let Some(n) = &r.note {
        s = s.note(n);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse_event;
    use super::*;

    fn ev(s: &str) -> Event {
        parse_event(s.as_bytes()).unwrap()
    }

    fn fixture(name: &str) -> Event {
        let path = format!("{}/../fixtures/o2g/{name}", env!("CARGO_MANIFEST_DIR"));
        parse_event(&std::fs::read(&path).unwrap()).unwrap()
    }

    /// What `t` says once `event` is applied.
    fn after(t: &mut UserTelephony, event: Event) -> String {
        t.apply(&event);
        view(t)
    }

    fn view(t: &UserTelephony) -> String {
        match t.signal(&Instances::of("o2g"), 0) {
            None => "-".into(),
            Some(s) => format!(
                "{}/{}{}",
                s.availability.map_or("None".to_string(), |a| format!("{a:?}")),
                s.activity.map_or("-".to_string(), |a| a.to_string()),
                s.note.map_or(String::new(), |n| format!(" ({n})"))
            ),
        }
    }

    #[test]
    fn a_call_rings_is_answered_held_and_ends() {
        let mut t = UserTelephony::new();
        assert_eq!(view(&t), "-");
        assert_eq!(after(&mut t, fixture("on_call_created.json")), "Busy/Ringing");
        assert_eq!(after(&mut t, fixture("on_user_state_modified.json")), "Busy/Ringing");
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnCallModified","loginName":"2624","callRef":"3b1f0a2c","modifiedLegs":[{"deviceId":"2624","state":"ACTIVE"}]}"#)), "Busy/InACall");
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnCallModified","loginName":"2624","callRef":"3b1f0a2c","modifiedLegs":[{"deviceId":"2624","state":"HELD"}]}"#)), "Busy/OnHold");
        // Removed: the BUSY user state from before the removal does not keep the person busy.
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnCallRemoved","loginName":"2624","callRef":"3b1f0a2c","cause":"CLEARED"}"#)), "Available/-");
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnUserStateModified","loginName":"2624","state":"FREE"}"#)), "Available/-");
        assert_eq!(t.calls(), 0);
    }

    #[test]
    fn priorities_across_calls_and_legs() {
        let mut t = UserTelephony::new();
        t.apply(&ev(
            r#"{"eventName":"OnCallCreated","loginName":"1","callRef":"a","legs":[{"deviceId":"1","state":"HELD"}]}"#,
        ));
        assert_eq!(view(&t), "Busy/OnHold");
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnCallCreated","loginName":"1","callRef":"b","legs":[{"deviceId":"1","state":"DIALING"}]}"#)), "Busy/InACall");
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnCallModified","loginName":"1","callRef":"b","modifiedLegs":[{"deviceId":"1","state":"RINGING_OUTGOING"}]}"#)), "Busy/InACall");
        // Call waiting: a ringing call wins over a held one and a talking one.
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnCallCreated","loginName":"1","callRef":"c","legs":[{"deviceId":"1","state":"RINGING_INCOMING"}]}"#)), "Busy/Ringing");
        t.apply(&ev(r#"{"eventName":"OnCallRemoved","loginName":"1","callRef":"c"}"#));
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnCallRemoved","loginName":"1","callRef":"b"}"#)), "Busy/OnHold");
        // Legs going idle or releasing do not count; callData.state stands in without legs.
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnCallModified","loginName":"1","callRef":"a","modifiedLegs":[{"deviceId":"1","state":"RELEASING"}]}"#)), "Available/-");
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnCallCreated","loginName":"1","callRef":"d","callData":{"state":"OFF_HOOK"}}"#)), "Busy/-");
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnCallModified","loginName":"1","callRef":"d","removedLegs":[],"addedLegs":[{"deviceId":"1","state":"UNKNOWN"}]}"#)), "Available/-");
    }

    #[test]
    fn modified_calls_replace_and_move_references() {
        let mut t = UserTelephony::new();
        t.apply(&ev(r#"{"eventName":"OnCallCreated","loginName":"1","callRef":"old","legs":[{"deviceId":"1","state":"ACTIVE"}]}"#));
        // previousCallRef: "old" is gone (no OnCallRemoved for it), "new" carries on.
        t.apply(&ev(r#"{"eventName":"OnCallModified","loginName":"1","callRef":"new","previousCallRef":"old","modifiedLegs":[{"deviceId":"1","state":"HELD"}]}"#));
        assert_eq!((t.calls(), view(&t).as_str()), (1, "Busy/OnHold"));
        t.apply(&ev(r#"{"eventName":"OnCallRemoved","loginName":"1","callRef":"new"}"#));
        assert_eq!((t.calls(), view(&t).as_str()), (0, "Available/-"));
        // replacedByCallRef: the call goes on under the new reference.
        t.apply(&ev(
            r#"{"eventName":"OnCallCreated","loginName":"1","callRef":"x","legs":[{"deviceId":"1","state":"ACTIVE"}]}"#,
        ));
        t.apply(&ev(r#"{"eventName":"OnCallModified","loginName":"1","callRef":"x","replacedByCallRef":"y"}"#));
        assert_eq!((t.calls(), view(&t).as_str()), (1, "Busy/InACall"));
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnCallRemoved","loginName":"1","callRef":"y"}"#)), "Available/-");
        // A modification of a call never seen (its OnCallCreated was missed) is tracked.
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnCallModified","loginName":"1","callRef":"z","modifiedLegs":[{"deviceId":"1","state":"ACTIVE"}]}"#)), "Busy/InACall");
        // Removed legs, in the Node spelling too.
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnCallModified","loginName":"1","callRef":"z","removedLeg":[{"deviceId":"1","state":"IDLE"}]}"#)), "Available/-");
    }

    #[test]
    fn user_state_is_the_fallback_without_call_information() {
        let mut t = UserTelephony::new();
        assert_eq!(after(&mut t, fixture("on_user_state_modified.json")), "Busy/-");
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnUserStateModified","loginName":"2624","state":"FREE"}"#)), "Available/-");
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnUserStateModified","loginName":"2624","state":"UNKNOWN"}"#)), "Available/-");
    }

    #[test]
    fn a_snapshot_replaces_everything() {
        let mut t = UserTelephony::new();
        t.apply(&ev(r#"{"eventName":"OnCallCreated","loginName":"2624","callRef":"gone","legs":[{"deviceId":"2624","state":"RINGING_INCOMING"}]}"#));
        t.apply(&fixture("on_telephony_state.json"));
        assert_eq!((t.calls(), view(&t).as_str()), (2, "Busy/InACall"));
        t.apply(&ev(r#"{"eventName":"OnTelephonyState","loginName":"2624","state":{"calls":[],"userState":"FREE"}}"#));
        assert_eq!((t.calls(), view(&t).as_str()), (0, "Available/-"));
        // No calls but BUSY (off hook on a device O2G does not report calls for): Busy.
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnTelephonyState","loginName":"2624","state":{"userState":"BUSY"}}"#)), "Busy/-");
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnTelephonyState","loginName":"2624"}"#)), "Available/-");
    }

    #[test]
    fn devices_out_of_service_annotate() {
        let mut t = UserTelephony::new();
        assert_eq!(after(&mut t, fixture("on_device_state_modified.json")), "None/- (Desk phone out of service)");
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnCallCreated","loginName":"2624","callRef":"a","legs":[{"deviceId":"2624","state":"RINGING_INCOMING"}]}"#)), "Busy/Ringing");
        t.apply(&ev(r#"{"eventName":"OnCallRemoved","loginName":"2624","callRef":"a"}"#));
        assert_eq!(after(&mut t, ev(r#"{"eventName":"OnDeviceStateModified","loginName":"2624","deviceStates":[{"deviceId":"2624","state":"IN_SERVICE"}]}"#)), "Available/-");
    }

    #[test]
    fn state_is_bounded() {
        let mut t = UserTelephony::new();
        for i in 0..100 {
            t.apply(&ev(&format!(r#"{{"eventName":"OnCallCreated","loginName":"1","callRef":"c{i:03}","legs":[{{"deviceId":"1","state":"ACTIVE"}}]}}"#)));
        }
        assert_eq!(t.calls(), MAX_CALLS);
        assert!(!t.apply(&fixture("on_channel_information.json")));
        assert!(!t.apply(&fixture("on_routing_state_changed.json")));
    }

    fn routing_of(s: &str) -> (Option<Availability>, Option<String>) {
        let Event::RoutingStateChanged(r) = ev(s) else { panic!() };
        let sig = routing_signal(&r.routing_state, &Instances::of("o2g"), 0);
        assert_eq!((sig.source, &*sig.instance), (Source::Pbx, "o2g-routing"));
        (sig.availability, sig.note.map(|n| n.to_string()))
    }

    #[test]
    fn routing_maps_dnd_forward_and_overflow() {
        let Event::RoutingStateChanged(r) = fixture("on_routing_state_changed.json") else { panic!() };
        let sig = routing_signal(&r.routing_state, &Instances::of("o2g"), 0);
        assert_eq!(sig.availability, None);
        assert_eq!(
            sig.note.as_deref(),
            Some("Forwarded to 91234567 when busy or on no answer; Overflow to voicemail on no answer")
        );
        assert_eq!(routing(&r.routing_state).forward, None, "a conditional forward is not an immediate one");

        let cases = [
            (r#"{"dndState":{"activate":true}}"#, (Some(Availability::DoNotDisturb), None)),
            (r#"{"dndState":{"activate":false}}"#, (None, None)),
            (r#"{}"#, (None, None)),
            (
                r#"{"forwardRoutes":[{"destinations":[{"type":"NUMBER","number":"+4791234567"}]}]}"#,
                (None, Some("Forwarded to +4791234567".to_string())),
            ),
            (
                r#"{"forwardRoutes":[{"forwardType":"IMMEDIATE","destinations":[{"type":"VOICEMAIL"}]}],"dndState":{"activate":true}}"#,
                (Some(Availability::DoNotDisturb), Some("Forwarded to voicemail".to_string())),
            ),
            (r#"{"forwardRoutes":[{"destinations":[]}]}"#, (None, None)),
            (r#"{"forwardRoutes":[{"destinations":[{"type":"NONE"}]}]}"#, (None, None)),
            (
                r#"{"forwardRoutes":[{"forwardType":"SOMETHING_NEW","destinations":[{"type":"ASSOCIATE","number":"2000"}]}]}"#,
                (None, Some("Forwarded to 2000".to_string())),
            ),
            (
                r#"{"overflowRoutes":[{"overflowType":"BUSY","destinations":[{"type":"NUMBER","number":"2100"}]}]}"#,
                (None, Some("Overflow to 2100 when busy".to_string())),
            ),
        ];
        for (rs, want) in cases {
            let got =
                routing_of(&format!(r#"{{"eventName":"OnRoutingStateChanged","loginName":"1","routingState":{rs}}}"#));
            assert_eq!(got, want, "{rs}");
        }
        // Nothing set: the signal retracts the slot.
        let Event::RoutingStateChanged(r) =
            ev(r#"{"eventName":"OnRoutingStateChanged","loginName":"1","routingState":{}}"#)
        else {
            panic!()
        };
        assert!(routing_signal(&r.routing_state, &Instances::of("o2g"), 0).is_retraction());
        let Event::RoutingStateChanged(r) = ev(
            r#"{"eventName":"OnRoutingStateChanged","loginName":"1","routingState":{"forwardRoutes":[{"destinations":[{"type":"NUMBER","number":"91234567"}]}]}}"#,
        ) else {
            panic!()
        };
        assert_eq!(routing(&r.routing_state).forward.as_deref(), Some("91234567"));
    }
}
