//! SIP sources: SIP/SIMPLE presence (`type = "sip_presence"`, RFC 3856 with PIDF/RPID bodies)
//! and PBX busy lamps (`type = "sip_dialog"`, the dialog event package of RFC 4235). Skype for
//! Business (`type = "sfb"`) has its own folder, [`crate::sfb`], and uses the SIP pieces here.
//!
//! - [`connect`]: the SIP connection settings every SIP source declares (one struct, flattened
//!   into the configs), their checks, and the code that uses them (bind, resolve, OPTIONS
//!   keep-alive, stray requests, counters, close) — shared with `sfb`.
//! - [`runtime`]: the task shared by `sip_presence` and `sip_dialog` — one subscription per
//!   person (rate-limited at start), refreshed before expiry and re-established with back-off;
//!   an OPTIONS health check that marks the feed stale (never Offline) while the peer is down
//!   and re-subscribes everyone when it comes back.
//! - [`map`]: pure mapping of parsed bodies to the hub's signals.
//! - `tests.rs`: runtime tests of `sip_dialog` against a PBX played on loopback; `played.rs`:
//!   what they share with the runtime tests of `sfb` (a SIP peer played on loopback, reading
//!   the test harness).
//!
//! The SIP layer itself (messages, transactions, subscriptions, bodies) is the `presence-sip`
//! crate.

pub mod connect;
pub mod map;
#[cfg(test)]
pub(crate) mod played;
pub mod runtime;
#[cfg(test)]
mod tests;

use presence_sip::endpoint::Transport;
use serde::Deserialize;

use crate::common::config::NoOtherKeys;
use crate::common::login::Login;
use crate::BuildError;
pub use connect::SipConnection;

/// The connection defaults of `sip_presence` and `sip_dialog`: UDP, 600 s subscriptions.
#[derive(Debug, Clone)]
pub struct SipDefaults;

impl connect::ConnectionDefaults for SipDefaults {
    const TRANSPORT: Transport = Transport::Udp;
    const EXPIRES_SECS: u32 = 600;
}

/// Settings shared by `sip_presence` and `sip_dialog`.
#[derive(Debug, Clone, Deserialize)]
pub struct SipSourceConfig {
    /// Provider name.
    pub name: String,
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
    /// New subscriptions per second at start and after the peer comes back.
    #[serde(default = "default_rate")]
    pub subscribe_rate: u32,
    /// Only the people whose extension starts with one of these (empty: everyone who has the
    /// resource's fields) — for a PBX that serves one site's extension range.
    #[serde(default)]
    pub extension_prefixes: Vec<String>,
    /// The connection: `server`, `transport` (default `udp`), `local`, `expires_secs` (default
    /// 600), `keepalive_secs` — flat keys.
    #[serde(flatten)]
    pub conn: SipConnection<SipDefaults>,
    /// Digest `username` and `password` for a challenging peer.
    #[serde(flatten)]
    pub login: Login,
    /// Refuses any other key (in place of `deny_unknown_fields`, which `conn` rules out).
    #[serde(flatten)]
    pub other: NoOtherKeys,
}

fn default_rate() -> u32 {
    50
}

impl SipSourceConfig {
    /// A configuration with every optional setting at its default: read as the config file
    /// with only `name` and `server` is read, so the two cannot differ.
    pub fn new(name: &str, server: &str) -> SipSourceConfig {
        serde_json::from_value(serde_json::json!({ "name": name, "server": server })).expect("a name and a server make a SIP source config")
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), BuildError> {
        let bad = |m: &str| Err(BuildError::Invalid(m.to_string()));
        self.conn.check()?;
        self.login.check().map_err(BuildError::Invalid)?;
        if let Err(m) = crate::check_extension_prefixes(&self.extension_prefixes) {
            return bad(&m);
        }
        if !(1..=10_000).contains(&self.subscribe_rate) {
            return bad("subscribe_rate must be 1..=10000");
        }
        Ok(())
    }

    /// The resource domain.
    pub fn domain(&self) -> String {
        self.domain.clone().unwrap_or_else(|| self.conn.server_host().to_string())
    }
}

/// The URI to subscribe to for one person: `template` filled ([`fill_template`]), when it gives
/// a `sip:` or `sips:` URI.
pub fn resource_uri(template: &str, person: &presence_actors::directory::PersonRef<'_>, domain: &str) -> Option<String> {
    fill_template(template, person, domain).filter(|u| u.starts_with("sip:") || u.starts_with("sips:"))
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
