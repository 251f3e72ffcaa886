//! The SIP layer of presence-hub, shared by the SIP sources (SIP/SIMPLE presence, PBX busy lamps
//! through the dialog event package, Skype for Business) and by the hub's own SIP presence server.
//!
//! * [`message`] — SIP messages: parsing with limits (on `ezk-sip-types`), printing, stream framing.
//! * [`body`] — pure parsers and builders of the bodies presence travels in: PIDF + RPID,
//!   dialog-info, msrtc categories, RLMI and `multipart/related`.
//!
//! Everything here is actix-free; the network parts run on tokio.

pub mod body;
