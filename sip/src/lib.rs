//! The SIP layer of presence-hub, shared by the SIP sources (SIP/SIMPLE presence, PBX busy lamps
//! through the dialog event package, Skype for Business) and by the hub's own SIP presence server.
//!
//! * [`message`] — SIP messages: parsing with limits (on `ezk-sip-types`), printing, stream framing.
//! * [`body`] — pure parsers and builders of the bodies presence travels in: PIDF + RPID,
//!   dialog-info, msrtc categories, RLMI and `multipart/related`.
//! * [`endpoint`] — transactions over UDP, TCP and TLS; [`tls`] — TLS settings from PEM files.
//!
//! Everything here is actix-free; the network parts run on tokio.

pub mod body;
pub mod message;
pub mod auth;
pub mod endpoint;
pub mod subscription;
pub mod tls;

/// 64 random bits from the OS (`/dev/urandom`), or from the clock and the process id when that
/// cannot be read. Used for tags, branches and Call-IDs, and to seed secrets' derivation.
pub fn random_u64() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok() {
        return u64::from_le_bytes(b);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (t.as_nanos() as u64) ^ ((std::process::id() as u64) << 32)
}
