//! The hub as a SIP presence server (`[sip]`). It is two things at once:
//!
//! - a **built-in source**: SIP endpoints PUBLISH their presence (RFC 3903), and each
//!   publication is a signal of source `sip` (feed `sip`), merged like any provider's;
//! - a **subscriber** of the merged state: SIP phones, attendant consoles and presence clients
//!   SUBSCRIBE to `presence` (NOTIFY with PIDF + RPID of the merged state) or `dialog` (NOTIFY
//!   with dialog-info, so BLF keys light with the merged state), fed by the same fan-out as the
//!   WebSocket and SSE streams.
//!
//! UDP and TCP on one port; digest authentication. Not to be confused with `sip/` (the crate
//! `presence-sip`, the SIP stack this server is built on) or `providers/src/sip/` (the sources
//! that SUBSCRIBE to other presence servers and PBXs).
//!
//! - [`server`]: the server task (subscriptions, NOTIFY pacing, the event state compositor).
//! - [`render`]: merged view → PIDF / dialog-info.

pub mod render;
pub mod server;

use std::net::SocketAddr;

use serde::Deserialize;

/// `[sip]`: the SIP presence server.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipSection {
    /// Run the SIP server.
    pub enabled: bool,
    /// Address for UDP and TCP.
    pub listen: SocketAddr,
    /// Accept UDP.
    pub udp: bool,
    /// Accept TCP.
    pub tcp: bool,
    /// Domain of the URIs the hub writes (entity, contact); default: the listen address.
    pub domain: Option<String>,
    /// Digest realm.
    pub realm: String,
    /// Challenge SUBSCRIBE and PUBLISH (digest). Turning it off lets anyone on the network
    /// watch everyone's presence: only for closed networks.
    pub require_auth: bool,
    /// Accounts of watchers and publishers.
    pub accounts: Vec<SipAccount>,
    /// Digest algorithms offered, one challenge each, most preferred first: `MD5`, `SHA-256`.
    /// Many clients (sipp, older desk phones) only read the first challenge, so MD5 leads by
    /// default; put `SHA-256` first (or alone) where every client supports it (RFC 8760).
    pub digest: Vec<presence_sip::auth::DigestAlgorithm>,
    /// Shortest subscription/publication accepted (a shorter one gets `423 Min-Expires`).
    pub min_expires: u32,
    /// Longest subscription/publication granted (longer ones are cut to this).
    pub max_expires: u32,
    /// Expiry when a SUBSCRIBE/PUBLISH names none.
    pub default_expires: u32,
    /// Most subscriptions at once (`503` beyond).
    pub max_subscriptions: usize,
    /// Most publications at once (`503` beyond).
    pub max_publications: usize,
    /// Shortest time between two NOTIFYs of one subscription, in ms; changes in between are
    /// coalesced to the latest. RFC 3856 suggests 5 s for presence; BLF keys want 0.
    pub min_notify_interval_ms: u64,
    /// Accept PUBLISH.
    pub publish: bool,
}

impl Default for SipSection {
    fn default() -> Self {
        SipSection {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            udp: true,
            tcp: true,
            domain: None,
            realm: "presence-hub".into(),
            require_auth: true,
            accounts: Vec::new(),
            digest: vec![presence_sip::auth::DigestAlgorithm::Md5, presence_sip::auth::DigestAlgorithm::Sha256],
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_subscriptions: 100_000,
            max_publications: 100_000,
            min_notify_interval_ms: 0,
            publish: true,
        }
    }
}

/// `[[sip.accounts]]`: a SIP user of the hub.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipAccount {
    /// Digest user name.
    pub user: String,
    /// Password (or give both HA1 values instead, so no password is stored).
    #[serde(default)]
    pub password: Option<String>,
    /// Hex MD5(user:realm:password).
    #[serde(default)]
    pub ha1_md5: Option<String>,
    /// Hex SHA-256(user:realm:password).
    #[serde(default)]
    pub ha1_sha256: Option<String>,
    /// May PUBLISH presence (for anyone in the directory).
    #[serde(default)]
    pub publish: bool,
}

impl SipSection {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if !self.udp && !self.tcp {
            return Err("sip: udp and tcp are both off".into());
        }
        if self.min_expires == 0 || self.min_expires > self.max_expires || self.max_expires > 86_400 {
            return Err("sip: need 0 < min_expires <= max_expires <= 86400".into());
        }
        if !(self.min_expires..=self.max_expires).contains(&self.default_expires) {
            return Err("sip: default_expires must lie between min_expires and max_expires".into());
        }
        if self.require_auth && self.accounts.is_empty() {
            return Err("sip: require_auth is on but no [[sip.accounts]] are configured".into());
        }
        for a in &self.accounts {
            let hashes = a.ha1_md5.is_some() && a.ha1_sha256.is_some();
            if a.user.trim().is_empty() || (a.password.is_none() && !hashes) {
                return Err(format!("sip account {:?}: needs a user and a password (or ha1_md5 and ha1_sha256)", a.user));
            }
        }
        Ok(())
    }
}
