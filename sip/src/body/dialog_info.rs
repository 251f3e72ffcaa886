//! `application/dialog-info+xml` (RFC 4235, the dialog event package behind PBX busy lamps):
//! parser, builder, and [`DialogTracker`], which keeps one extension's dialogs across NOTIFYs
//! and derives its [`ExtensionState`].
//!
//! What is read: `dialog-info@version` (required: ordering depends on it), `@state`
//! (`full`/`partial`; absent reads as `full`), `@entity`; each `dialog`'s `id` (falls back to
//! `call-id` when absent), `call-id`, `local-tag`, `remote-tag`, `direction`, `state` with its
//! `event` and `code` attributes, `duration`, and `local`/`remote` participants (`identity`
//! with `display`, `target@uri`). Names are matched by local name and values
//! case-insensitively; an unknown dialog state is an error (a dialog without a state cannot be
//! tracked), an unknown `event` is kept as [`StateEvent::Other`], a `code` outside 100–699
//! reads as `None`.
//!
//! ## Tracking (RFC 4235 §4.1 and §3.7)
//! * A document whose `version` is not greater than the last applied one is refused with
//!   [`ApplyOutcome::Stale`] (not an error: re-ordered or duplicated NOTIFYs are normal).
//! * `full` state replaces every dialog; `partial` updates or inserts the dialogs it names.
//!   A `terminated` dialog is removed in both cases.
//! * A `partial` document that skips versions is applied, and reported as
//!   [`ApplyOutcome::Gap`]: a notification was lost, so the caller should refresh the
//!   subscription to get full state again.
//! * When a **new subscription** starts (e.g. after the notifier restarted and counts from 0
//!   again) the caller calls [`DialogTracker::reset`] first, so the next document is accepted
//!   whatever its version.
//!
//! ## Extension state
//! [`ExtensionState`] is derived from the live dialogs, most important first:
//! 1. [`InCall`](ExtensionState::InCall): any `confirmed` dialog (confirmed wins over ringing:
//!    a call waiting on a busy phone is still "in a call").
//! 2. [`Dialing`](ExtensionState::Dialing): any `trying`/`proceeding`/`early` dialog with
//!    `direction="initiator"` — the extension placed a call that is ringing out. The person
//!    is occupied (it is "in a call" for presence purposes), so this ranks above ringing;
//!    it is kept distinct so a console can show "ringing out".
//! 3. [`Ringing`](ExtensionState::Ringing): any `trying`/`proceeding`/`early` dialog with
//!    `direction="recipient"` or no direction (Asterisk omits it on some versions).
//! 4. [`Idle`](ExtensionState::Idle): no live dialog (an empty full-state document is idle).
//!
//! Limits: [`MAX_DIALOGS`] dialogs per document (more is an error) and per tracker (the
//! oldest is dropped); identifiers cut to [`MAX_ID_BYTES`](super::MAX_ID_BYTES); plus the
//! XML limits of [`crate::body`].

use std::fmt::Write as _;

use super::text::{escape, id, opt_id, push_escaped, truncate};
use super::xml::{self, Element, XmlError};

/// Dialog-info namespace.
pub const NS_DIALOG_INFO: &str = "urn:ietf:params:xml:ns:dialog-info";
/// MIME type of a dialog-info document.
pub const CONTENT_TYPE: &str = "application/dialog-info+xml";
/// Most dialogs in one document, and kept by one [`DialogTracker`].
pub const MAX_DIALOGS: usize = 64;

/// Why a dialog-info body was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DialogInfoError {
    /// Not a readable XML document with a `dialog-info` root.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// `version` is absent or not a non-negative integer.
    #[error("dialog-info version is missing or invalid: {0:?}")]
    BadVersion(String),
    /// `state` is neither `full` nor `partial`.
    #[error("dialog-info state is neither full nor partial: {0:?}")]
    BadDocState(String),
    /// A dialog has neither `id` nor `call-id`.
    #[error("a dialog has neither id nor call-id")]
    MissingDialogId,
    /// A dialog's `state` is absent or not an RFC 4235 state.
    #[error("dialog {id:?} has no valid state: {state:?}")]
    BadDialogState {
        /// The dialog's id.
        id: String,
        /// The state text found (cut).
        state: String,
    },
    /// More than [`MAX_DIALOGS`] dialogs.
    #[error("more than {max} dialogs in one dialog-info document")]
    TooManyDialogs {
        /// The limit.
        max: usize,
    },
}

/// A dialog-info document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialogInfo {
    /// `version`: increases by one per NOTIFY of a subscription.
    pub version: u64,
    /// `full` or `partial`.
    pub state: DocState,
    /// `entity`: the monitored URI; empty when absent.
    pub entity: String,
    /// The dialogs, in document order.
    pub dialogs: Vec<Dialog>,
}

/// Whether a document carries every dialog or only changed ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocState {
    /// `full`.
    Full,
    /// `partial`.
    Partial,
}

/// One dialog of the monitored entity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dialog {
    /// `id` (or `call-id` when the sender gave no id).
    pub id: String,
    /// `call-id`.
    pub call_id: Option<String>,
    /// `local-tag`.
    pub local_tag: Option<String>,
    /// `remote-tag`.
    pub remote_tag: Option<String>,
    /// `direction`.
    pub direction: Option<Direction>,
    /// `state` text.
    pub state: DialogState,
    /// `state@event`: why the dialog ended.
    pub event: Option<StateEvent>,
    /// `state@code`: the SIP response code (100–699).
    pub code: Option<u16>,
    /// `duration`, in seconds.
    pub duration: Option<u64>,
    /// The monitored side.
    pub local: Option<Participant>,
    /// The other side.
    pub remote: Option<Participant>,
}

/// Who created the dialog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `initiator`: the entity placed the call.
    Initiator,
    /// `recipient`: the entity is being called.
    Recipient,
}

/// RFC 4235 dialog states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DialogState {
    /// `trying`.
    #[default]
    Trying,
    /// `proceeding`.
    Proceeding,
    /// `early`: ringing.
    Early,
    /// `confirmed`: the call is up.
    Confirmed,
    /// `terminated`.
    Terminated,
}

/// Why a dialog ended (`state@event`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateEvent {
    /// `cancelled`.
    Cancelled,
    /// `rejected`.
    Rejected,
    /// `replaced`.
    Replaced,
    /// `local-bye`.
    LocalBye,
    /// `remote-bye`.
    RemoteBye,
    /// `error`.
    Error,
    /// `timeout`.
    Timeout,
    /// Anything else (kept as sent, cut).
    Other(String),
}

/// A `local` or `remote` participant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Participant {
    /// `identity` URI.
    pub identity: Option<String>,
    /// `identity@display`.
    pub display: Option<String>,
    /// `target@uri`.
    pub target: Option<String>,
}

const STATES: [(&str, DialogState); 5] = [
    ("trying", DialogState::Trying),
    ("proceeding", DialogState::Proceeding),
    ("early", DialogState::Early),
    ("confirmed", DialogState::Confirmed),
    ("terminated", DialogState::Terminated),
];

const EVENTS: [(&str, StateEvent); 7] = [
    ("cancelled", StateEvent::Cancelled),
    ("rejected", StateEvent::Rejected),
    ("replaced", StateEvent::Replaced),
    ("local-bye", StateEvent::LocalBye),
    ("remote-bye", StateEvent::RemoteBye),
    ("error", StateEvent::Error),
    ("timeout", StateEvent::Timeout),
];

impl DialogState {
    /// The RFC 4235 name.
    pub fn as_str(self) -> &'static str {
        STATES.iter().find(|(_, s)| *s == self).map_or("trying", |(n, _)| n)
    }

    fn parse(s: &str) -> Option<DialogState> {
        STATES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s.trim())).map(|(_, s)| *s)
    }

    fn is_early(self) -> bool {
        matches!(self, DialogState::Trying | DialogState::Proceeding | DialogState::Early)
    }
}

impl StateEvent {
    /// The RFC 4235 name (or the text of [`StateEvent::Other`]).
    pub fn as_str(&self) -> &str {
        match self {
            StateEvent::Other(s) => s,
            e => EVENTS.iter().find(|(_, x)| x == e).map_or("", |(n, _)| n),
        }
    }

    fn parse(s: &str) -> Option<StateEvent> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        Some(
            EVENTS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(s))
                .map_or_else(|| StateEvent::Other(truncate(s, 64).to_string()), |(_, e)| e.clone()),
        )
    }
}

/// Parses a dialog-info document (see the module docs).
pub fn parse_dialog_info(body: &[u8]) -> Result<DialogInfo, DialogInfoError> {
    let root = xml::parse(body, Some("dialog-info"))?;
    let v = root.attr("version").unwrap_or("").trim();
    let version = v.parse::<u64>().map_err(|_| DialogInfoError::BadVersion(truncate(v, 32).to_string()))?;
    let state = match root.attr("state").map(str::trim) {
        None => DocState::Full,
        Some(s) if s.eq_ignore_ascii_case("full") => DocState::Full,
        Some(s) if s.eq_ignore_ascii_case("partial") => DocState::Partial,
        Some(s) => return Err(DialogInfoError::BadDocState(truncate(s, 32).to_string())),
    };
    let mut dialogs = Vec::new();
    for d in root.children_named("dialog") {
        if dialogs.len() >= MAX_DIALOGS {
            return Err(DialogInfoError::TooManyDialogs { max: MAX_DIALOGS });
        }
        dialogs.push(dialog(d)?);
    }
    Ok(DialogInfo { version, state, entity: id(root.attr("entity").unwrap_or("")), dialogs })
}

fn dialog(el: &Element) -> Result<Dialog, DialogInfoError> {
    let call_id = opt_id(el.attr("call-id"));
    let id = opt_id(el.attr("id")).or_else(|| call_id.clone()).ok_or(DialogInfoError::MissingDialogId)?;
    let st = el.child("state");
    let state_text = st.map_or("", |s| s.text.trim());
    let state = DialogState::parse(state_text).ok_or_else(|| DialogInfoError::BadDialogState {
        id: id.clone(),
        state: truncate(state_text, 32).to_string(),
    })?;
    let direction = el.attr("direction").and_then(|d| {
        let d = d.trim();
        if d.eq_ignore_ascii_case("initiator") {
            Some(Direction::Initiator)
        } else if d.eq_ignore_ascii_case("recipient") {
            Some(Direction::Recipient)
        } else {
            None
        }
    });
    Ok(Dialog {
        id,
        call_id,
        local_tag: opt_id(el.attr("local-tag")),
        remote_tag: opt_id(el.attr("remote-tag")),
        direction,
        state,
        event: st.and_then(|s| s.attr("event")).and_then(StateEvent::parse),
        code: st
            .and_then(|s| s.attr("code"))
            .and_then(|c| c.trim().parse::<u16>().ok())
            .filter(|c| (100..=699).contains(c)),
        duration: el.child_text("duration").and_then(|d| d.parse().ok()),
        local: el.child("local").map(participant),
        remote: el.child("remote").map(participant),
    })
}

fn participant(el: &Element) -> Participant {
    let identity = el.child("identity");
    Participant {
        identity: opt_id(identity.map(|i| i.text.as_str())),
        display: opt_id(identity.and_then(|i| i.attr("display"))),
        target: opt_id(el.child("target").and_then(|t| t.attr("uri"))),
    }
}

/// Builds a dialog-info document (UTF-8, with declaration). Everything
/// [`parse_dialog_info`] reads is written, so build → parse gives the same value back.
pub fn build_dialog_info(doc: &DialogInfo) -> String {
    let mut x = String::with_capacity(256 + doc.dialogs.len() * 256);
    let state = match doc.state {
        DocState::Full => "full",
        DocState::Partial => "partial",
    };
    let _ = write!(
        x,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<dialog-info xmlns="{NS_DIALOG_INFO}" version="{}" state="{state}" entity="{}">"#,
        doc.version,
        escape(&doc.entity)
    );
    for d in &doc.dialogs {
        let _ = write!(x, r#"<dialog id="{}""#, escape(&d.id));
        for (name, v) in [("call-id", &d.call_id), ("local-tag", &d.local_tag), ("remote-tag", &d.remote_tag)] {
            if let Some(v) = v {
                let _ = write!(x, r#" {name}="{}""#, escape(v));
            }
        }
        match d.direction {
            Some(Direction::Initiator) => x.push_str(r#" direction="initiator""#),
            Some(Direction::Recipient) => x.push_str(r#" direction="recipient""#),
            None => {}
        }
        x.push_str("><state");
        if let Some(e) = &d.event {
            let _ = write!(x, r#" event="{}""#, escape(e.as_str()));
        }
        if let Some(c) = d.code {
            let _ = write!(x, r#" code="{c}""#);
        }
        let _ = write!(x, ">{}</state>", d.state.as_str());
        if let Some(s) = d.duration {
            let _ = write!(x, "<duration>{s}</duration>");
        }
        for (tag, p) in [("local", &d.local), ("remote", &d.remote)] {
            let Some(p) = p else { continue };
            let _ = write!(x, "<{tag}>");
            if p.identity.is_some() || p.display.is_some() {
                x.push_str("<identity");
                if let Some(dn) = &p.display {
                    let _ = write!(x, r#" display="{}""#, escape(dn));
                }
                x.push('>');
                push_escaped(&mut x, p.identity.as_deref().unwrap_or(""));
                x.push_str("</identity>");
            }
            if let Some(t) = &p.target {
                let _ = write!(x, r#"<target uri="{}"/>"#, escape(t));
            }
            let _ = write!(x, "</{tag}>");
        }
        x.push_str("</dialog>");
    }
    x.push_str("</dialog-info>");
    x
}

// ---------------------------------------------------------------------------------------------
// Tracking.

/// What an extension is doing, derived from its live dialogs (see the module docs for the
/// precedence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExtensionState {
    /// No live dialog.
    Idle,
    /// An incoming call is ringing.
    Ringing,
    /// An outgoing call is ringing out (the person is occupied).
    Dialing,
    /// A call is up.
    InCall,
}

/// The extension state of a set of dialogs (terminated ones are ignored).
pub fn extension_state<'a>(dialogs: impl IntoIterator<Item = &'a Dialog>) -> ExtensionState {
    dialogs
        .into_iter()
        .map(|d| match (d.state, d.direction) {
            (DialogState::Confirmed, _) => ExtensionState::InCall,
            (s, Some(Direction::Initiator)) if s.is_early() => ExtensionState::Dialing,
            (s, _) if s.is_early() => ExtensionState::Ringing,
            _ => ExtensionState::Idle,
        })
        .max()
        .unwrap_or(ExtensionState::Idle)
}

/// What [`DialogTracker::apply`] did with a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The document was applied.
    Applied,
    /// A partial document was applied, but versions between the last one and this were never
    /// seen: the caller should refresh the subscription to get full state.
    Gap {
        /// The version that was expected (last + 1).
        expected: u64,
        /// The version received.
        got: u64,
    },
    /// The document's version is not newer than the last applied one: nothing changed.
    Stale {
        /// The last applied version.
        last: u64,
        /// The version received.
        got: u64,
    },
}

/// One entity's dialogs across the NOTIFYs of its subscription (pure, no clock).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DialogTracker {
    version: Option<u64>,
    dialogs: Vec<Dialog>,
}

impl DialogTracker {
    /// An empty tracker: no version seen, idle.
    pub fn new() -> DialogTracker {
        DialogTracker::default()
    }

    /// Applies a document (see the module docs): refuses stale versions, replaces everything
    /// on full state, updates/inserts on partial state, drops terminated dialogs.
    pub fn apply(&mut self, doc: &DialogInfo) -> ApplyOutcome {
        let mut outcome = ApplyOutcome::Applied;
        if let Some(last) = self.version {
            if doc.version <= last {
                return ApplyOutcome::Stale { last, got: doc.version };
            }
            if doc.state == DocState::Partial && doc.version > last + 1 {
                outcome = ApplyOutcome::Gap { expected: last + 1, got: doc.version };
            }
        }
        self.version = Some(doc.version);
        if doc.state == DocState::Full {
            self.dialogs.clear();
        }
        for d in &doc.dialogs {
            let at = self.dialogs.iter().position(|x| x.id == d.id);
            match (d.state, at) {
                (DialogState::Terminated, Some(i)) => {
                    self.dialogs.remove(i);
                }
                (DialogState::Terminated, None) => {}
                (_, Some(i)) => self.dialogs[i] = d.clone(),
                (_, None) => {
                    if self.dialogs.len() >= MAX_DIALOGS {
                        self.dialogs.remove(0);
                    }
                    self.dialogs.push(d.clone());
                }
            }
        }
        outcome
    }

    /// Forgets the last version so the next document is accepted whatever its version: call
    /// it when a new subscription starts (the notifier may have restarted and count from 0).
    /// The dialogs are kept until that document replaces them, so a lamp does not blink.
    pub fn reset(&mut self) {
        self.version = None;
    }

    /// The last applied version.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// The live dialogs, oldest first.
    pub fn dialogs(&self) -> &[Dialog] {
        &self.dialogs
    }

    /// The extension state of the live dialogs.
    pub fn state(&self) -> ExtensionState {
        extension_state(&self.dialogs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::fuzz::{mutate, truncations, Xorshift, XML_TOKENS};

    const EARLY_FULL: &[u8] = include_bytes!("../../../fixtures/sip/dialog/v17_full_early_recipient.xml");
    const CONFIRMED_PARTIAL: &[u8] = include_bytes!("../../../fixtures/sip/dialog/v18_partial_confirmed.xml");
    const REGRESSION: &[u8] = include_bytes!("../../../fixtures/sip/dialog/v16_full_regression.xml");
    const REJECTED_486: &[u8] = include_bytes!("../../../fixtures/sip/dialog/v19_partial_terminated_rejected_486.xml");
    const IDLE_FULL: &[u8] = include_bytes!("../../../fixtures/sip/dialog/v20_full_empty.xml");
    const DIALING: &[u8] = include_bytes!("../../../fixtures/sip/dialog/v22_partial_initiator_trying.xml");
    const CALL_WAITING: &[u8] = include_bytes!("../../../fixtures/sip/dialog/v23_full_call_waiting.xml");
    const RESTARTED: &[u8] = include_bytes!("../../../fixtures/sip/dialog/v0_full_after_restart.xml");

    fn parse(b: &[u8]) -> DialogInfo {
        parse_dialog_info(b).expect("parse")
    }

    #[test]
    fn parses_the_full_early_fixture() {
        let d = parse(EARLY_FULL);
        assert_eq!(d.version, 17);
        assert_eq!(d.state, DocState::Full);
        assert_eq!(d.entity, "sip:2001@pbx.example.com");
        assert_eq!(
            d.dialogs,
            vec![Dialog {
                id: "a8f3".into(),
                call_id: Some("7c1e@10.0.0.5".into()),
                local_tag: Some("11".into()),
                remote_tag: Some("22".into()),
                direction: Some(Direction::Recipient),
                state: DialogState::Early,
                event: None,
                code: None,
                duration: None,
                local: Some(Participant {
                    identity: Some("sip:2001@pbx.example.com".into()),
                    display: None,
                    target: Some("sip:2001@10.0.0.21:5060".into()),
                }),
                remote: Some(Participant {
                    identity: Some("sip:2000@pbx.example.com".into()),
                    display: Some("Reception".into()),
                    target: None,
                }),
            }]
        );
        assert_eq!(extension_state(&d.dialogs), ExtensionState::Ringing);
    }

    #[test]
    fn terminated_rejected_486() {
        let d = parse(REJECTED_486);
        assert_eq!(d.state, DocState::Partial);
        let x = &d.dialogs[0];
        assert_eq!(x.state, DialogState::Terminated);
        assert_eq!(x.event, Some(StateEvent::Rejected));
        assert_eq!(x.code, Some(486));
        assert_eq!(extension_state(&d.dialogs), ExtensionState::Idle);
    }

    #[test]
    fn tracks_a_call_across_notifies() {
        let mut t = DialogTracker::new();
        assert_eq!(t.state(), ExtensionState::Idle);
        assert_eq!(t.apply(&parse(EARLY_FULL)), ApplyOutcome::Applied);
        assert_eq!(t.state(), ExtensionState::Ringing);
        assert_eq!(t.apply(&parse(CONFIRMED_PARTIAL)), ApplyOutcome::Applied);
        assert_eq!(t.state(), ExtensionState::InCall);
        assert_eq!(t.dialogs().len(), 1);
        assert_eq!(t.dialogs()[0].duration, Some(12));
        // An older full document arrives late: ignored, the call stays up.
        assert_eq!(t.apply(&parse(REGRESSION)), ApplyOutcome::Stale { last: 18, got: 16 });
        assert_eq!(t.apply(&parse(CONFIRMED_PARTIAL)), ApplyOutcome::Stale { last: 18, got: 18 });
        assert_eq!(t.state(), ExtensionState::InCall);
        assert_eq!(t.version(), Some(18));
        // Terminated (rejected 486) removes the dialog.
        assert_eq!(t.apply(&parse(REJECTED_486)), ApplyOutcome::Applied);
        assert!(t.dialogs().is_empty());
        assert_eq!(t.state(), ExtensionState::Idle);
        assert_eq!(t.apply(&parse(IDLE_FULL)), ApplyOutcome::Applied);
        // Version 21 was lost: applied, but reported.
        assert_eq!(t.apply(&parse(DIALING)), ApplyOutcome::Gap { expected: 21, got: 22 });
        assert_eq!(t.state(), ExtensionState::Dialing);
        // Full state replaces everything: confirmed wins over ringing (call waiting).
        assert_eq!(t.apply(&parse(CALL_WAITING)), ApplyOutcome::Applied);
        assert_eq!(t.dialogs().len(), 2);
        assert_eq!(t.state(), ExtensionState::InCall);
        // The PBX restarted and counts from 0: refused until a new subscription resets.
        let restarted = parse(RESTARTED);
        assert_eq!(restarted.version, 0);
        assert_eq!(t.apply(&restarted), ApplyOutcome::Stale { last: 23, got: 0 });
        t.reset();
        assert_eq!(t.version(), None);
        assert_eq!(t.state(), ExtensionState::InCall, "dialogs kept until the new document");
        assert_eq!(t.apply(&restarted), ApplyOutcome::Applied);
        assert_eq!(t.state(), ExtensionState::Ringing, "no direction reads as incoming");
        assert_eq!(t.version(), Some(0));
    }

    #[test]
    fn precedence_of_states() {
        let d = |state, direction| Dialog { id: "x".into(), state, direction, ..Dialog::default() };
        use DialogState::*;
        use Direction::*;
        for (dialogs, want) in [
            (vec![], ExtensionState::Idle),
            (vec![d(Terminated, None)], ExtensionState::Idle),
            (vec![d(Trying, None)], ExtensionState::Ringing),
            (vec![d(Proceeding, Some(Recipient))], ExtensionState::Ringing),
            (vec![d(Early, Some(Initiator))], ExtensionState::Dialing),
            (vec![d(Trying, Some(Initiator)), d(Early, Some(Recipient))], ExtensionState::Dialing),
            (vec![d(Early, Some(Recipient)), d(Confirmed, Some(Initiator))], ExtensionState::InCall),
            (vec![d(Confirmed, None)], ExtensionState::InCall),
        ] {
            assert_eq!(extension_state(&dialogs), want, "{dialogs:?}");
        }
    }

    #[test]
    fn tracker_is_bounded_and_partial_first_is_accepted() {
        let mut t = DialogTracker::new();
        for v in 0..(MAX_DIALOGS as u64 + 5) {
            let doc = DialogInfo {
                version: v,
                state: DocState::Partial,
                entity: String::new(),
                dialogs: vec![Dialog { id: format!("d{v}"), state: DialogState::Confirmed, ..Dialog::default() }],
            };
            assert_eq!(t.apply(&doc), ApplyOutcome::Applied);
        }
        assert_eq!(t.dialogs().len(), MAX_DIALOGS);
        assert_eq!(t.dialogs()[0].id, "d5", "the oldest are dropped");
    }

    #[test]
    fn errors_and_leniency() {
        let e = |x: &str| parse_dialog_info(x.as_bytes());
        assert!(matches!(e(r#"<dialog-info state="full"/>"#), Err(DialogInfoError::BadVersion(_))));
        assert!(matches!(e(r#"<dialog-info version="-1"/>"#), Err(DialogInfoError::BadVersion(_))));
        assert!(matches!(e(r#"<dialog-info version="1" state="half"/>"#), Err(DialogInfoError::BadDocState(_))));
        assert!(matches!(
            e(r#"<dialog-info version="1"><dialog><state>early</state></dialog></dialog-info>"#),
            Err(DialogInfoError::MissingDialogId)
        ));
        assert!(matches!(
            e(r#"<dialog-info version="1"><dialog id="a"><state>ringing</state></dialog></dialog-info>"#),
            Err(DialogInfoError::BadDialogState { .. })
        ));
        assert!(matches!(
            e(r#"<dialog-info version="1"><dialog id="a"/></dialog-info>"#),
            Err(DialogInfoError::BadDialogState { .. })
        ));
        let many = r#"<dialog id="a"><state>early</state></dialog>"#.repeat(MAX_DIALOGS + 1);
        assert_eq!(
            e(&format!(r#"<dialog-info version="1">{many}</dialog-info>"#)),
            Err(DialogInfoError::TooManyDialogs { max: MAX_DIALOGS })
        );
        assert!(matches!(e("<presence/>"), Err(DialogInfoError::Xml(XmlError::UnexpectedRoot { .. }))));
        // Lenient: no state attribute = full; call-id stands in for id; case; odd event; bad code.
        let d = e(r#"<d:dialog-info xmlns:d="urn:ietf:params:xml:ns:dialog-info" version=" 3 ">
              <d:dialog call-id="c@h" direction="RECIPIENT"><d:state event="parked" code="999"> Confirmed </d:state></d:dialog>
            </d:dialog-info>"#)
        .expect("lenient");
        assert_eq!(d.state, DocState::Full);
        assert_eq!(d.dialogs[0].id, "c@h");
        assert_eq!(d.dialogs[0].state, DialogState::Confirmed);
        assert_eq!(d.dialogs[0].direction, Some(Direction::Recipient));
        assert_eq!(d.dialogs[0].event, Some(StateEvent::Other("parked".into())));
        assert_eq!(d.dialogs[0].code, None);
    }

    #[test]
    fn build_then_parse_round_trips() {
        for fixture in [EARLY_FULL, CONFIRMED_PARTIAL, REJECTED_486, IDLE_FULL, DIALING, CALL_WAITING, RESTARTED] {
            let d = parse(fixture);
            assert_eq!(parse(build_dialog_info(&d).as_bytes()), d);
        }
        let d = DialogInfo {
            version: u64::MAX,
            state: DocState::Partial,
            entity: "sip:o'hara&co@pbx".into(),
            dialogs: vec![Dialog {
                id: "<id>".into(),
                call_id: Some("c\"1".into()),
                local_tag: Some("l".into()),
                remote_tag: None,
                direction: Some(Direction::Initiator),
                state: DialogState::Terminated,
                event: Some(StateEvent::Other("parked".into())),
                code: Some(603),
                duration: Some(0),
                local: Some(Participant { identity: None, display: Some("Me & you".into()), target: None }),
                remote: Some(Participant::default()),
            }],
        };
        let x = build_dialog_info(&d);
        assert!(x.contains(r#"entity="sip:o&apos;hara&amp;co@pbx""#));
        assert_eq!(parse(x.as_bytes()), d);
        for (_, e) in EVENTS.iter() {
            assert_eq!(StateEvent::parse(e.as_str()).as_ref(), Some(e));
        }
    }

    /// Deterministic mutations and every truncation of the fixtures: nothing panics, and
    /// enough mutants still parse to reach the deep paths.
    #[test]
    fn no_input_panics_the_parser() {
        let mut rng = Xorshift::new(0xD1B5_4A32_D192_ED03);
        let seeds = [EARLY_FULL, CONFIRMED_PARTIAL, REJECTED_486, CALL_WAITING, DIALING];
        let mut ok = 0usize;
        let mut t = DialogTracker::new();
        for i in 0..12_000 {
            let v = mutate(seeds[i % seeds.len()], &mut rng, &XML_TOKENS);
            if let Ok(d) = parse_dialog_info(&v) {
                ok += 1;
                let _ = t.apply(&d);
                let _ = t.state();
            }
        }
        assert!(ok > 1_000, "only {ok} mutants parsed: the deep paths went untested");
        for seed in [EARLY_FULL, CALL_WAITING] {
            for t in truncations(seed) {
                let _ = parse_dialog_info(t);
            }
        }
    }
}
