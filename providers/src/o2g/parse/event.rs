//! The events: one flat JSON object with `eventName` at top level per stream line or webhook
//! POST. The payloads are the SDKs' types, with the fields presence uses.

use serde::Deserialize;
use serde_json::Value;

use super::{bounded, ParseError, HEARTBEAT_TEXT, MAX_EVENT_BYTES};
use crate::common::json::{self, json_error};
use presence_actors::model::activity::truncate;

// ---------------------------------------------------------------------------------------------
// Enums, tolerant of values added by newer servers.

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
        #[serde(from = "String")]
        pub enum $name {
            $($(#[$vm])* $v,)+
            /// A value this parser does not know (kept, bounded).
            Other(String),
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $($s => $name::$v,)+
                    _ => $name::Other(truncate(&s, 64).to_string()),
                }
            }
        }
        impl $name {
            /// The wire value.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$v => $s,)+
                    $name::Other(s) => s,
                }
            }
        }
    };
}

wire_enum!(
    /// `MediaState` of a leg, participant or call.
    MediaState {
        /// `UNKNOWN`.
        Unknown = "UNKNOWN",
        /// `OFF_HOOK`: busy but not in a call (service activation…).
        OffHook = "OFF_HOOK",
        /// `IDLE`.
        Idle = "IDLE",
        /// `RELEASING`.
        Releasing = "RELEASING",
        /// `DIALING`: outgoing call being set up.
        Dialing = "DIALING",
        /// `HELD`.
        Held = "HELD",
        /// `RINGING_INCOMING`.
        RingingIncoming = "RINGING_INCOMING",
        /// `RINGING_OUTGOING`.
        RingingOutgoing = "RINGING_OUTGOING",
        /// `ACTIVE`.
        Active = "ACTIVE",
    }
);

wire_enum!(
    /// `UserState`.
    UserState {
        /// `FREE`.
        Free = "FREE",
        /// `BUSY`.
        Busy = "BUSY",
        /// `UNKNOWN`.
        Unknown = "UNKNOWN",
    }
);

wire_enum!(
    /// `OperationalState` of a device.
    OperationalState {
        /// `IN_SERVICE`.
        InService = "IN_SERVICE",
        /// `OUT_OF_SERVICE`.
        OutOfService = "OUT_OF_SERVICE",
        /// `UNKNOWN`.
        Unknown = "UNKNOWN",
    }
);

// ---------------------------------------------------------------------------------------------
// Event payloads.

/// `PartyInfo.id`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PartyId {
    /// `loginName`.
    pub login_name: Option<String>,
    /// `phoneNumber`.
    pub phone_number: Option<String>,
}

/// `PartyInfo` (initial called, participants' identity).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PartyInfo {
    /// `id`.
    pub id: Option<PartyId>,
    /// `firstName`.
    pub first_name: Option<String>,
    /// `lastName`.
    pub last_name: Option<String>,
    /// `displayName`.
    pub display_name: Option<String>,
}

/// `CallData` (the fields presence uses).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CallData {
    /// `initialCalled`.
    pub initial_called: Option<PartyInfo>,
    /// `deviceCall`.
    pub device_call: Option<bool>,
    /// `anonymous`.
    pub anonymous: Option<bool>,
    /// `state`: the call's media state.
    pub state: Option<MediaState>,
}

/// `Leg`: one of the user's devices in a call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Leg {
    /// `deviceId`: the device's number.
    pub device_id: String,
    /// `state`.
    pub state: MediaState,
    /// `ringingRemote`.
    #[serde(default)]
    pub ringing_remote: bool,
}

/// `Participant`: another party of a call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    /// `participantId`.
    pub participant_id: String,
    /// `identity`.
    #[serde(default)]
    pub identity: Option<PartyInfo>,
    /// `state`.
    #[serde(default)]
    pub state: Option<MediaState>,
}

/// `Call` (in `OnTelephonyState.state.calls`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    /// `callRef`.
    pub call_ref: String,
    /// `callData`.
    #[serde(default)]
    pub call_data: Option<CallData>,
    /// `legs`.
    #[serde(default)]
    pub legs: Vec<Leg>,
    /// `participants`.
    #[serde(default)]
    pub participants: Vec<Participant>,
}

/// `OnCallCreated`: a new call of the user, with its cause and initiator.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallCreated {
    /// `loginName`.
    pub login_name: String,
    /// `cause` (`CallCause`).
    #[serde(default)]
    pub cause: Option<String>,
    /// `initiator` (a participant id).
    #[serde(default)]
    pub initiator: Option<String>,
    /// The call: `callRef`, `callData`, `legs`, `participants` (the fields of a [`Call`], at
    /// the top level of the event).
    #[serde(flatten)]
    pub call: Call,
}

/// `OnCallModified`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallModified {
    /// `loginName`.
    pub login_name: String,
    /// `callRef`.
    pub call_ref: String,
    /// `cause`.
    #[serde(default)]
    pub cause: Option<String>,
    /// `previousCallRef`: `callRef` replaces it (no `OnCallRemoved` comes for it).
    #[serde(default)]
    pub previous_call_ref: Option<String>,
    /// `replacedByCallRef`: this call goes on under that reference.
    #[serde(default)]
    pub replaced_by_call_ref: Option<String>,
    /// `callData`.
    #[serde(default)]
    pub call_data: Option<CallData>,
    /// `modifiedLegs`.
    #[serde(default)]
    pub modified_legs: Vec<Leg>,
    /// `addedLegs`.
    #[serde(default)]
    pub added_legs: Vec<Leg>,
    /// `removedLegs` (Java/C#) or `removedLeg` (Node).
    #[serde(default, alias = "removedLeg")]
    pub removed_legs: Vec<Leg>,
    /// `modifiedParticipants`.
    #[serde(default)]
    pub modified_participants: Vec<Participant>,
    /// `addedParticipants`.
    #[serde(default)]
    pub added_participants: Vec<Participant>,
    /// `removedParticipantIds` (Java/C#) or `removedParticipants` (Node).
    #[serde(default, alias = "removedParticipants")]
    pub removed_participant_ids: Vec<String>,
}

/// `OnCallRemoved`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRemoved {
    /// `loginName`.
    pub login_name: String,
    /// `callRef`.
    pub call_ref: String,
    /// `cause`.
    #[serde(default)]
    pub cause: Option<String>,
    /// `newDestination`: where a forwarded or redirected call went.
    #[serde(default)]
    pub new_destination: Option<String>,
}

/// `OnUserStateModified`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserStateModified {
    /// `loginName`.
    pub login_name: String,
    /// `state`.
    pub state: UserState,
}

/// `DeviceState`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceState {
    /// `deviceId`.
    pub device_id: String,
    /// `state`.
    pub state: OperationalState,
}

/// `OnDeviceStateModified`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStateModified {
    /// `loginName`.
    pub login_name: String,
    /// `deviceStates`.
    #[serde(default)]
    pub device_states: Vec<DeviceState>,
}

/// `TelephonicState`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TelephonicState {
    /// `calls`: the user's calls now.
    pub calls: Vec<Call>,
    /// `userState`.
    pub user_state: Option<UserState>,
}

/// `OnTelephonyState`: the answer to a snapshot request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TelephonyState {
    /// `loginName`.
    pub login_name: String,
    /// `state`.
    #[serde(default)]
    pub state: Option<TelephonicState>,
}

/// `Destination` of a route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Destination {
    /// `type`: `VOICEMAIL`, `NUMBER`, `ASSOCIATE`, `MOBILE`; anything else means none.
    #[serde(rename = "type")]
    pub kind: String,
    /// `deviceId`.
    pub device_id: Option<String>,
    /// `number`.
    pub number: Option<String>,
    /// `selected` (presentation routes).
    pub selected: Option<bool>,
}

/// A route of a [`RoutingState`]: presentation (`presentationRoutes[]`), forward
/// (`forwardRoutes[]`) or overflow (`overflowRoutes[]`). The three differ only in the field that
/// says when a route applies, which a presentation route lacks and the others name after their
/// kind: `forwardType` (absent = immediate), `overflowType` — both read into
/// [`Route::condition`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Route {
    /// `forwardType` or `overflowType`: `BUSY`, `NO_ANSWER`, `BUSY_NO_ANSWER` (a forward's
    /// absent or `IMMEDIATE`: immediate).
    #[serde(rename = "forwardType", alias = "overflowType")]
    pub condition: Option<String>,
    /// `destinations`: exactly one means the route is set.
    pub destinations: Vec<Destination>,
}

/// `dndState`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DndState {
    /// `activate`.
    pub activate: bool,
}

/// `RoutingState`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RoutingState {
    /// `presentationRoutes`.
    pub presentation_routes: Vec<Route>,
    /// `forwardRoutes` (only `[0]` counts).
    pub forward_routes: Vec<Route>,
    /// `overflowRoutes` (only `[0]` counts).
    pub overflow_routes: Vec<Route>,
    /// `dndState` (absent = off).
    pub dnd_state: Option<DndState>,
}

/// `OnRoutingStateChanged` (also the answer to a routing snapshot request).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingStateChanged {
    /// `loginName`.
    pub login_name: String,
    /// `routingState`.
    pub routing_state: RoutingState,
}

/// `eventSummary` counters (absent = unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EventSummary {
    /// `missedCallsNb`.
    pub missed_calls_nb: Option<u32>,
    /// `voiceMessagesNb`.
    pub voice_messages_nb: Option<u32>,
    /// `callBackRequestsNb`.
    pub call_back_requests_nb: Option<u32>,
}

/// `OnEventSummaryUpdated`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSummaryUpdated {
    /// `loginName`.
    pub login_name: String,
    /// `eventSummary`.
    #[serde(default)]
    pub event_summary: EventSummary,
}

/// The events with a payload type of their own, each about one user (`loginName`): the variant
/// of [`Event`] (named as its payload type) and its `eventName`. [`Event`], [`Event::name`],
/// [`Event::login_name`] and the dispatch of [`parse_event`] are generated from this one list.
macro_rules! events {
    ($($(#[$m:meta])* $v:ident = $name:literal),+ $(,)?) => {
        /// One event.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Event {
            /// `OnChannelInformation`: the channel is established (first event), or a heartbeat
            /// (`text == "keepalive"`).
            ChannelInformation {
                /// `text`.
                text: Option<String>,
            },
            $($(#[$m])* $v($v),)+
            /// Any other event (hunting groups, maintenance, comlog…): named, otherwise ignored.
            Other {
                /// `eventName` (bounded).
                name: String,
                /// `loginName`, if any (bounded).
                login_name: Option<String>,
            },
        }

        impl Event {
            /// The user the event is about.
            pub fn login_name(&self) -> Option<&str> {
                match self {
                    Event::ChannelInformation { .. } => None,
                    $(Event::$v(e) => Some(&e.login_name),)+
                    Event::Other { login_name, .. } => login_name.as_deref(),
                }
            }

            /// The `eventName`.
            pub fn name(&self) -> &str {
                match self {
                    Event::ChannelInformation { .. } => CHANNEL_INFORMATION,
                    $(Event::$v(_) => $name,)+
                    Event::Other { name, .. } => name,
                }
            }
        }

        /// The event named `name` from its fields (`login_name` already read from them).
        fn payload(name: &str, fields: Value, login_name: Option<String>) -> Result<Event, ParseError> {
            match name {
                $($name)|+ if login_name.as_deref().is_none_or(str::is_empty) => Err(ParseError::Missing("loginName")),
                $($name => serde_json::from_value(fields).map(Event::$v).map_err(|e| json_error(e).into()),)+
                _ => Ok(Event::Other { name: truncate(name, 64).to_string(), login_name }),
            }
        }
    };
}

/// `eventName` of the channel's first event and of its heartbeats.
const CHANNEL_INFORMATION: &str = "OnChannelInformation";

events! {
    /// `OnCallCreated`.
    CallCreated = "OnCallCreated",
    /// `OnCallModified`.
    CallModified = "OnCallModified",
    /// `OnCallRemoved`.
    CallRemoved = "OnCallRemoved",
    /// `OnUserStateModified`.
    UserStateModified = "OnUserStateModified",
    /// `OnDeviceStateModified`.
    DeviceStateModified = "OnDeviceStateModified",
    /// `OnTelephonyState`.
    TelephonyState = "OnTelephonyState",
    /// `OnRoutingStateChanged`.
    RoutingStateChanged = "OnRoutingStateChanged",
    /// `OnEventSummaryUpdated`.
    EventSummaryUpdated = "OnEventSummaryUpdated",
}

impl Event {
    /// True for a heartbeat.
    pub fn is_heartbeat(&self) -> bool {
        matches!(self, Event::ChannelInformation { text: Some(t) } if t.trim() == HEARTBEAT_TEXT)
    }
}

/// Parses one event (one line of the stream, or one webhook body).
pub fn parse_event(bytes: &[u8]) -> Result<Event, ParseError> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(ParseError::TooLong);
    }
    let Value::Object(mut fields) = json::from_json_max(bytes.trim_ascii(), MAX_EVENT_BYTES)? else {
        return Err(json::ParseError::Shape("an event is a JSON object".into()).into());
    };
    let name = match fields.remove("eventName") {
        Some(Value::String(n)) if !n.trim().is_empty() => n,
        _ => return Err(ParseError::Missing("eventName")),
    };
    let name = name.trim();
    if name == CHANNEL_INFORMATION {
        let text = fields.get("text").and_then(Value::as_str).map(|t| truncate(t, 256).to_string());
        return Ok(Event::ChannelInformation { text });
    }
    let login_name = fields.get("loginName").and_then(Value::as_str).map(bounded);
    payload(name, Value::Object(fields), login_name)
}
