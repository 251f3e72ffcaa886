//! Pure reading of Skype for Business notification bodies (no actix, no I/O): what a NOTIFY,
//! BENOTIFY or piggy-backed `200` carries ([`read_notification`]), what each RLMI part asks of
//! the provider ([`read_part`]), the key a resource URI is matched by ([`uri_key`]), and
//! [`SfbCategories`], one person's category instances kept across notifications.
//!
//! The XML itself (categories, RLMI, `multipart/related`) is read by the SIP crate
//! (`presence_sip::body::{msrtc, rlmi}`); this module decides what a body means here:
//!
//! - A body of type `application/msrtc-event-categories+xml` is a single-resource notification:
//!   the categories document itself. `multipart/*` and `application/rlmi+xml` are RLMI with one
//!   categories part per resource. Anything else is refused.
//! - An RLMI part: `active` with a categories body → the person's categories; `resubscribe` →
//!   a single subscription, at its `poolFqdn` when named; `terminated` with `deactivated`,
//!   `timeout` or `probation` → a single subscription at the same server; `terminated` for any
//!   other reason (`noresource`, `rejected`) → the person is gone; `pending`, other states and
//!   an `active` part without a body → nothing.
//! - [`SfbCategories`]: a full document replaces the kept instances, a delta updates them, an
//!   empty category instance deletes one.

use presence_sip::body::msrtc::{self, Categories, Category, CategoryValue, MsrtcError};
use presence_sip::body::rlmi::{self, InstanceState, ResourcePart, RlmiError, RlmiNotify};

use crate::sip::map::media_type;

/// Why a notification body (or one part of it) could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The notification's content type is neither categories nor RLMI.
    #[error("unsupported content type {0:?}")]
    ContentType(String),
    /// An RLMI part that is not a categories document.
    #[error("unsupported part type {0:?}")]
    PartType(String),
    /// A categories document that does not parse.
    #[error(transparent)]
    Categories(#[from] MsrtcError),
    /// An RLMI notification that does not parse.
    #[error(transparent)]
    Rlmi(#[from] RlmiError),
}

/// What a notification body carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// A single-resource notification: the categories document itself.
    Categories(Categories),
    /// An RLMI list with one part per resource.
    Rlmi(RlmiNotify),
}

/// Reads a notification body by its `Content-Type` (module docs).
pub fn read_notification(content_type: &str, body: &[u8]) -> Result<Notification, ParseError> {
    let media = media_type(content_type).to_ascii_lowercase();
    if media == msrtc::CONTENT_TYPE {
        return Ok(Notification::Categories(msrtc::parse_categories(body)?));
    }
    if !(media.starts_with("multipart/") || media == rlmi::CONTENT_TYPE) {
        return Err(ParseError::ContentType(media));
    }
    Ok(Notification::Rlmi(rlmi::parse_rlmi_notify(content_type, body)?))
}

/// What one RLMI part asks of the provider (module docs).
#[derive(Debug, Clone, PartialEq)]
pub enum PartEvent {
    /// The person's categories.
    Categories(Categories),
    /// Subscribe the person singly: at the named pool, or (`None`) at the configured server.
    Resubscribe(Option<String>),
    /// The resource is gone (the `terminated` reason, if any): the person's source is Unknown.
    Gone(Option<String>),
    /// Nothing to do.
    Nothing,
}

/// Reads one RLMI part (module docs). An `active` part whose body is not a readable categories
/// document is an error; the other parts of the notification are unaffected.
pub fn read_part(part: ResourcePart) -> Result<PartEvent, ParseError> {
    match part.instance.state {
        InstanceState::Active => {
            let Some(body) = part.body else { return Ok(PartEvent::Nothing) };
            if let Some(ct) = part.content_type {
                if !media_type(&ct).eq_ignore_ascii_case(msrtc::CONTENT_TYPE) {
                    return Err(ParseError::PartType(ct));
                }
            }
            Ok(PartEvent::Categories(msrtc::parse_categories(&body)?))
        }
        InstanceState::Pending | InstanceState::Other(_) => Ok(PartEvent::Nothing),
        InstanceState::Resubscribe => Ok(PartEvent::Resubscribe(part.instance.pool_fqdn)),
        InstanceState::Terminated => Ok(match part.instance.reason.as_deref() {
            Some("deactivated" | "timeout" | "probation") => PartEvent::Resubscribe(None),
            _ => PartEvent::Gone(part.instance.reason),
        }),
    }
}

/// The key a resource URI is matched by: the bare URI, lower case.
pub fn uri_key(uri: &str) -> String {
    presence_sip::message::name_addr_uri(uri).trim().to_ascii_lowercase()
}

/// Most category instances kept per person (a watcher sees a handful).
pub const MAX_CACHED_CATEGORIES: usize = 64;

/// One person's category instances, kept across notifications (module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SfbCategories {
    uri: String,
    items: Vec<Category>,
}

impl SfbCategories {
    /// Replaces everything with a full document.
    pub fn replace(&mut self, doc: Categories) {
        self.items.clear();
        self.uri = doc.uri.clone();
        self.update(doc);
    }

    /// Applies a delta: instances are replaced by `(name, instance)`; an empty `state`,
    /// `note` or `calendarData` instance deletes it.
    pub fn update(&mut self, doc: Categories) {
        if !doc.uri.is_empty() {
            self.uri = doc.uri;
        }
        for c in doc.categories {
            let pos = self.items.iter().position(|x| x.name == c.name && x.instance == c.instance);
            let known = matches!(c.name.as_str(), "state" | "note" | "calendarData");
            match (pos, matches!(c.value, CategoryValue::Other) && known) {
                (Some(i), true) => {
                    self.items.remove(i);
                }
                (None, true) => {}
                (Some(i), false) => self.items[i] = c,
                (None, false) if self.items.len() < MAX_CACHED_CATEGORIES => self.items.push(c),
                (None, false) => {}
            }
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The kept instances as a document.
    pub fn doc(&self) -> Categories {
        Categories { uri: self.uri.clone(), categories: self.items.clone() }
    }
}
