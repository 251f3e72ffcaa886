//! Pure parsers and builders of SIP presence bodies. No I/O, no actix, no tokio.
//!
//! * [`pidf`] — `application/pidf+xml`: PIDF (RFC 3863) with the data model (RFC 4479) and
//!   RPID (RFC 4480); parser and the builder of the documents the hub's presence server sends.
//! * [`dialog_info`] — `application/dialog-info+xml` (RFC 4235): parser, builder and
//!   [`dialog_info::DialogTracker`], which follows one extension's dialogs across NOTIFYs.
//! * [`msrtc`] — Skype for Business: `application/msrtc-event-categories+xml` documents, the
//!   §1.4 aggregation, and the batched-subscription (`batchSub`) body.
//! * [`rlmi`] and [`multipart`] — RFC 4662 resource-list notifications: the
//!   `application/rlmi+xml` document and the `multipart/related` body it travels in.
//!
//! Common rules (every parser here):
//! * Never panics, whatever the input; every failure is a `thiserror` enum value.
//! * Elements and attributes are matched by **local name**: prefixes and namespace URIs differ
//!   between implementations (Kamailio, Asterisk, phones, `http://` vs `https://` Microsoft
//!   schemas), so they are not checked.
//! * Bounded: the limits below apply to every XML body; each module adds its own counts.
//!   Text longer than a limit is cut at a character boundary, never rejected.
//!
//! Common rules (every builder here): the output is well-formed UTF-8 XML, text and attribute
//! values are escaped, and characters XML 1.0 cannot carry (most C0 controls) are dropped.

pub mod dialog_info;
pub mod msrtc;
pub mod multipart;
pub mod pidf;
pub mod rlmi;

mod text;
mod xml;

#[cfg(test)]
mod fuzz;

pub use xml::XmlError;

/// `s` escaped for XML element text or a double-quoted attribute value; characters XML 1.0
/// cannot carry are dropped.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    text::push_escaped(&mut out, s);
    out
}

/// Largest XML body any parser here accepts, in bytes (256 KiB). A PIDF or dialog-info
/// document is a few hundred bytes; an SfB categories document a few KiB.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Deepest element nesting accepted in an XML body (real documents nest at most about 8).
pub const MAX_DEPTH: usize = 32;
/// Most elements in one XML body.
pub const MAX_ELEMENTS: usize = 16_384;
/// Most attributes on one element.
pub const MAX_ATTRIBUTES: usize = 32;
/// Text kept per element or attribute value, in bytes; longer text is cut. Large enough for a
/// six-week SfB free/busy stream in base64.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// Longest note (PIDF note, SfB note body, custom activity text) kept, in bytes.
pub const MAX_NOTE_BYTES: usize = 1024;
/// Longest identifier (URI, id, tag, call-id, token) kept, in bytes.
pub const MAX_ID_BYTES: usize = 1024;
