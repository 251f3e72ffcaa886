//! SIP sources: SIP/SIMPLE presence (`type = "sip_presence"`, RFC 3856 with PIDF/RPID bodies)
//! and PBX busy lamps (`type = "sip_dialog"`, the dialog event package of RFC 4235). Skype for
//! Business (`type = "sfb"`) has its own folder, [`crate::sfb`], and uses the SIP pieces here.
//!
//! - [`runtime`]: the task shared by `sip_presence` and `sip_dialog` — one subscription per
//!   person (rate-limited at start), refreshed before expiry and re-established with back-off;
//!   an OPTIONS health check that marks the feed stale (never Offline) while the peer is down
//!   and re-subscribes everyone when it comes back.
//! - [`map`]: pure mapping of parsed bodies to the hub's signals.
//!
//! The SIP layer itself (messages, transactions, subscriptions, bodies) is the `presence-sip`
//! crate.

pub mod map;
pub mod runtime;
#[cfg(test)]
mod tests;

use serde::Deserialize;

use crate::BuildError;

/// Settings shared by `sip_presence` and `sip_dialog`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipSourceConfig {
    /// Provider name.
    pub name: String,
    /// The presence server or PBX: `host:port` (port 5060 when left out).
    pub server: String,
    /// `udp` or `tcp`.
    #[serde(default = "default_transport")]
    pub transport: String,
    /// Local address to bind (UDP and TCP on one port); port 0 picks a free one.
    #[serde(default = "default_local")]
    pub local: String,
    /// Domain of the resource URIs and of the hub's From; default: the server's host.
    #[serde(default)]
    pub domain: Option<String>,
    /// The hub's identity at the peer (From); default `sip:presence-hub@{domain}`.
    #[serde(default)]
    pub from: Option<String>,
    /// Which URI to subscribe to for each person, with placeholders `{sip_uri}`, `{sip_user}`,
    /// `{extension}`, `{id}`, `{email}`, `{email_user}` and `{domain}`. People without a
    /// needed field are left out. Default: `{sip_uri}` (presence), `sip:{extension}@{domain}`
    /// (dialog).
    #[serde(default)]
    pub resource: Option<String>,
    /// Subscription lifetime asked for, in seconds.
    #[serde(default = "default_expires")]
    pub expires_secs: u32,
    /// New subscriptions per second at start and after the peer comes back.
    #[serde(default = "default_rate")]
    pub subscribe_rate: u32,
    /// OPTIONS health check interval in seconds (0: off).
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// Digest user name for a challenging peer.
    #[serde(default)]
    pub username: Option<String>,
    /// Digest password.
    #[serde(default)]
    pub password: Option<String>,
    /// Only the people whose extension starts with one of these (empty: everyone who has the
    /// resource's fields) — for a PBX that serves one site's extension range.
    #[serde(default)]
    pub extension_prefixes: Vec<String>,
}

fn default_transport() -> String {
    "udp".into()
}
fn default_local() -> String {
    "127.0.0.1:0".into()
}
fn default_expires() -> u32 {
    600
}
fn default_rate() -> u32 {
    50
}
fn default_keepalive() -> u64 {
    10
}

impl SipSourceConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), BuildError> {
        let bad = |m: &str| Err(BuildError::Invalid(format!("provider {}: {m}", self.name)));
        if presence_sip::endpoint::Transport::parse(&self.transport).is_none() {
            return bad("transport must be udp or tcp");
        }
        if self.local.parse::<std::net::SocketAddr>().is_err() {
            return bad("local must be an IP address and port, e.g. 0.0.0.0:5070");
        }
        if self.server.trim().is_empty() {
            return bad("server is required (host:port)");
        }
        if let Err(m) = crate::check_extension_prefixes(&self.extension_prefixes) {
            return bad(&m);
        }
        if !(60..=86_400).contains(&self.expires_secs) {
            return bad("expires_secs must be 60..=86400");
        }
        if !(1..=10_000).contains(&self.subscribe_rate) {
            return bad("subscribe_rate must be 1..=10000");
        }
        if self.username.is_some() != self.password.is_some() {
            return bad("username and password go together");
        }
        Ok(())
    }

    /// The server's host (for the default domain).
    pub fn server_host(&self) -> &str {
        let s = self.server.trim();
        if let Some(rest) = s.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        s.rsplit_once(':').map(|(h, _)| h).unwrap_or(s)
    }

    /// `host:port` with the default port added.
    pub fn server_with_port(&self) -> String {
        with_default_port(&self.server, 5060)
    }

    /// The resource domain.
    pub fn domain(&self) -> String {
        self.domain.clone().unwrap_or_else(|| self.server_host().to_string())
    }
}

/// `host:port` with `port` added when absent (IPv6 literals in brackets).
pub(crate) fn with_default_port(s: &str, port: u16) -> String {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        return if rest.contains("]:") { s.to_string() } else { format!("{s}:{port}") };
    }
    match s.rsplit_once(':') {
        Some((_, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => s.to_string(),
        _ => format!("{s}:{port}"),
    }
}

/// Fills a resource template for one person; `None` when a needed field is missing.
pub fn fill_template(template: &str, person: &presence_actors::directory::PersonRef<'_>, domain: &str) -> Option<String> {
    let mut out = template.to_string();
    let sip = person.sip_uri();
    let email = person.email();
    let fields: [(&str, Option<String>); 7] = [
        ("{sip_uri}", sip.map(str::to_string)),
        ("{sip_user}", sip.and_then(presence_sip::message::uri_user).map(str::to_string)),
        ("{extension}", person.extension().map(str::to_string)),
        ("{id}", Some(person.id().to_string())),
        ("{email}", email.map(str::to_string)),
        ("{email_user}", email.and_then(|e| e.split('@').next()).map(str::to_string)),
        ("{domain}", Some(domain.to_string())),
    ];
    for (k, v) in fields {
        if out.contains(k) {
            out = out.replace(k, &v?);
        }
    }
    Some(out)
}
