//! The hub as a SIP presence server (`[sip]`). It is two things at once:
//!
//! - a **built-in source**: SIP endpoints PUBLISH their presence (RFC 3903), and each
//!   publication is a signal of source `sip` (feed `sip`), merged like any provider's;
//! - a **subscriber** of the merged state: SIP phones, attendant consoles and presence clients
//!   SUBSCRIBE to `presence` (NOTIFY with PIDF + RPID of the merged state) or `dialog` (NOTIFY
//!   with dialog-info, so BLF keys light with the merged state), fed by the same fan-out as the
//!   WebSocket and SSE streams.
//!
//! UDP and TCP on one port, TLS on another (`tls_listen`); digest authentication, or over TLS
//! a verified client certificate ([`cert`]). Not to be confused with `sip/` (the crate
//! `presence-sip`, the SIP stack this server is built on) or `providers/src/sip/` (the sources
//! that SUBSCRIBE to other presence servers and PBXs).
//!
//! - [`server`]: the server task (subscriptions, NOTIFY pacing, the event state compositor).
//! - [`render`]: merged view → PIDF / dialog-info.

pub mod cert;
pub mod render;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// SIP over TLS (RFC 3261 §26.2) on this address (5061 by convention); needs
    /// `tls_cert_file` and `tls_key_file`.
    pub tls_listen: Option<SocketAddr>,
    /// The server's certificate chain (PEM).
    pub tls_cert_file: Option<PathBuf>,
    /// The server's private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// Require a client certificate chaining to a CA of this PEM file on the TLS port; an
    /// account's `certificate_subject` then stands in for its digest password.
    pub tls_client_ca_file: Option<PathBuf>,
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
            tls_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
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
    /// Over TLS, a client certificate (verified against `[sip] tls_client_ca_file`) whose
    /// subject is this distinguished name (RFC 4514, as `openssl x509 -noout -subject -nameopt
    /// RFC2253` prints it), or with a subjectAltName URI or DNS name equal to this, is this
    /// account without digest. See [`cert`].
    #[serde(default)]
    pub certificate_subject: Option<String>,
}

impl SipSection {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if !self.udp && !self.tcp && self.tls_listen.is_none() {
            return Err("sip: udp and tcp are both off and there is no tls_listen".into());
        }
        self.tls_server_config()?;
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
            if a.user.trim().is_empty() || (a.password.is_none() && !hashes && a.certificate_subject.is_none()) {
                return Err(format!("sip account {:?}: needs a user and a password (or ha1_md5 and ha1_sha256, or a certificate_subject)", a.user));
            }
            if let Some(s) = &a.certificate_subject {
                cert::CertMatch::parse(s).map_err(|e| format!("sip account {:?}: {e}", a.user))?;
                if self.tls_client_ca_file.is_none() {
                    return Err(format!(
                        "sip account {:?}: certificate_subject needs [sip] tls_listen and tls_client_ca_file (client certificates are only asked for and verified then)",
                        a.user
                    ));
                }
            }
        }
        Ok(())
    }

    /// The TLS server configuration of `tls_listen`, checked: the files are read, the key must
    /// be the certificate's, the client CA must be usable. `None` without `tls_listen`.
    pub fn tls_server_config(&self) -> Result<Option<rustls::ServerConfig>, String> {
        let Some(listen) = self.tls_listen else {
            if self.tls_cert_file.is_some() || self.tls_key_file.is_some() || self.tls_client_ca_file.is_some() {
                return Err("sip: tls_cert_file, tls_key_file and tls_client_ca_file need tls_listen".into());
            }
            return Ok(None);
        };
        let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) else {
            return Err(format!("sip: tls_listen = \"{listen}\" needs tls_cert_file and tls_key_file (PEM)"));
        };
        presence_sip::tls::server_config(cert, key, self.tls_client_ca_file.as_deref())
            .map(Some)
            .map_err(|e| format!("sip: tls_listen: {e}"))
    }
}
