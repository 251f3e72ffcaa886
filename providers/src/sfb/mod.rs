//! The Skype for Business source (`type = "sfb"`): enhanced presence of every person with a
//! SIP URI, through batched category subscriptions to the front-end pool ([MS-PRES]
//! §2.2.2.4.1, §3.4.5; [MS-SIP] §3.3.5.1).
//!
//! - [`parse`]: pure reading of notification bodies (categories or RLMI, what each RLMI part
//!   asks for) and the category instances kept per person.
//! - [`map`]: pure mapping of a person's categories to an `sfb` signal.
//! - [`runtime`]: the task — batched subscriptions, single re-subscriptions at other pools, the
//!   OPTIONS health check.
//! - Here: the configuration ([`SfbConfig`]) and [`task`].
//! - `tests.rs`: unit tests of the configuration, the parsing and the mapping;
//!   `runtime_tests.rs`: the task against a front-end pool played on loopback (no hub).
//!
//! It is built with the `sip` feature: it speaks SIP through the `presence-sip` crate, and
//! shares the SIP connection settings and the code that uses them with `sip_presence` and
//! `sip_dialog` (`crate::sip`).

pub mod map;
pub mod parse;
pub mod runtime;
#[cfg(test)]
mod runtime_tests;
#[cfg(test)]
mod tests;

use presence_actors::provider::ProviderContext;
use presence_sip::body::msrtc;
use presence_sip::endpoint::Transport;
use presence_sip::message::{uri_host_port, uri_user};
use serde::Deserialize;

use crate::common::config::NoOtherKeys;
use crate::common::login::Login;
use crate::sip::connect::ConnectionDefaults;
use crate::sip::SipConnection;
use crate::BuildError;

/// What the SUBSCRIBEs accept (batched and single-resource alike).
pub const ACCEPT: &str = "application/msrtc-event-categories+xml, application/rlmi+xml, multipart/related";
/// Port of a `poolFqdn` without one over TCP (over TLS it is 5061,
/// [`TLS_PORT`](crate::sip::connect::TLS_PORT)).
pub const DEFAULT_POOL_PORT: u16 = 5060;

/// The connection defaults of `sfb`: TCP, one-hour subscriptions.
#[derive(Debug, Clone)]
pub struct SfbDefaults;

impl ConnectionDefaults for SfbDefaults {
    const TRANSPORT: Transport = Transport::Tcp;
    const EXPIRES_SECS: u32 = 3600;
}

/// Settings of a `type = "sfb"` provider.
#[derive(Debug, Clone, Deserialize)]
pub struct SfbConfig {
    /// Provider name.
    pub name: String,
    /// The service account's SIP URI (`sip:hub-svc@contoso.com`): From, To and Request-URI
    /// of the batched SUBSCRIBEs.
    pub from: String,
    /// Resource URIs per batched SUBSCRIBE.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Which URI to watch for each person (placeholders as for `sip_presence`; `{domain}` is
    /// the host of `from`). Default `{sip_uri}`; people without one are left out.
    #[serde(default)]
    pub resource: Option<String>,
    /// Single-resource (re-)subscriptions per second (SIPE spreads them at 25/s).
    #[serde(default = "default_resubscribe_rate")]
    pub resubscribe_rate: u32,
    /// Keep calendarState meeting subjects and locations in the signals' private detail.
    #[serde(default)]
    pub keep_details: bool,
    /// Connect as a Skype for Business **trusted application**: mutual TLS with the
    /// application's certificate (`tls_cert_file` + `tls_key_file`), which the pool trusts
    /// because its subject is a trusted application pool's FQDN — no digest, no password;
    /// `from` is the application's URI (or GRUU). Needs `transport = "tls"`.
    #[serde(default)]
    pub trusted_application: bool,
    /// A trusted application's own TLS port (`host:port` to bind, e.g. `0.0.0.0:6001`): the
    /// port given to `New-CsTrustedApplication -Port`, where the pool connects to the
    /// application with mutual TLS (its certificate must chain to `tls_ca_file`). Without it
    /// the pool must answer and notify over the hub's own connection.
    #[serde(default)]
    pub tls_listen: Option<String>,
    /// With `tls_listen`: the trusted application computer's FQDN, written in Via and Contact
    /// so the pool connects back to it; the certificate must carry it.
    #[serde(default)]
    pub contact_host: Option<String>,
    /// The connection to the front-end pool: `server`, `transport` (default `tcp`; `tls` for a
    /// real pool, port 5061), `local`, `expires_secs` (default 3600), `keepalive_secs`,
    /// `tls_ca_file`, `tls_cert_file`, `tls_key_file`, `server_name` — flat keys.
    #[serde(flatten)]
    pub conn: SipConnection<SfbDefaults>,
    /// Digest `username` and `password` for a challenging peer.
    #[serde(flatten)]
    pub login: Login,
    /// Refuses any other key (in place of `deny_unknown_fields`, which `conn` rules out).
    #[serde(flatten)]
    pub other: NoOtherKeys,
}

fn default_batch_size() -> usize {
    200
}
fn default_resubscribe_rate() -> u32 {
    25
}

impl SfbConfig {
    /// A configuration with every optional setting at its default: read as the config file
    /// with only `name`, `server` and `from` is read, so the two cannot differ.
    pub fn new(name: &str, server: &str, from: &str) -> SfbConfig {
        serde_json::from_value(serde_json::json!({ "name": name, "server": server, "from": from })).expect("a name, a server and a From make an sfb config")
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), BuildError> {
        let bad = |m: &str| Err(BuildError::Invalid(m.to_string()));
        self.conn.check()?;
        self.login.check().map_err(BuildError::Invalid)?;
        if !(self.from.starts_with("sip:") && uri_user(&self.from).is_some_and(|u| !u.is_empty())) {
            return bad("from must be the service account's SIP URI, e.g. sip:hub-svc@contoso.com");
        }
        if !(1..=msrtc::MAX_BATCH_RESOURCES).contains(&self.batch_size) {
            return bad("batch_size must be 1..=1000");
        }
        if !(1..=1000).contains(&self.resubscribe_rate) {
            return bad("resubscribe_rate must be 1..=1000");
        }
        if self.trusted_application {
            if self.conn.transport() != Transport::Tls {
                return bad("trusted_application needs transport = \"tls\": a pool trusts an application by its TLS certificate");
            }
            if self.conn.tls_cert_file.is_none() {
                return bad("trusted_application needs tls_cert_file and tls_key_file: the certificate the pool trusts (its subject is the trusted application pool's FQDN)");
            }
            if self.login.credentials().is_some() {
                return bad("trusted_application takes no username or password: the pool trusts the certificate");
            }
        }
        match (&self.tls_listen, &self.contact_host) {
            (None, None) => {}
            (Some(listen), Some(host)) => {
                if !self.trusted_application {
                    return bad("tls_listen is a trusted application's port: it needs trusted_application = true");
                }
                if listen.parse::<std::net::SocketAddr>().is_err() {
                    return bad("tls_listen must be an IP address and port, e.g. 0.0.0.0:6001");
                }
                if presence_sip::tls::server_name(host).is_err() || host.contains(':') && host.parse::<std::net::IpAddr>().is_err() {
                    return bad("contact_host must be a host name (the trusted application computer's FQDN) or an IP address");
                }
            }
            _ => return bad("tls_listen and contact_host go together"),
        }
        self.tls_listener()?;
        Ok(())
    }

    /// The trusted application's listener ([`tls_listen`](SfbConfig::tls_listen)): the
    /// application's certificate, the pool's required and checked against `tls_ca_file`.
    pub fn tls_listener(&self) -> Result<Option<crate::sip::connect::TlsListen>, BuildError> {
        let (Some(listen), Some(host)) = (&self.tls_listen, &self.contact_host) else { return Ok(None) };
        let (Some(cert), Some(key), Some(ca)) = (&self.conn.tls_cert_file, &self.conn.tls_key_file, &self.conn.tls_ca_file) else {
            return Err(BuildError::Invalid("tls_listen needs tls_cert_file, tls_key_file and tls_ca_file".into()));
        };
        let config = presence_sip::tls::server_config(std::path::Path::new(cert), std::path::Path::new(key), Some(std::path::Path::new(ca)))
            .map_err(|e| BuildError::Invalid(format!("tls_listen: {e}")))?;
        let addr = listen.parse().map_err(|_| BuildError::Invalid("tls_listen must be an IP address and port".into()))?;
        Ok(Some(crate::sip::connect::TlsListen { addr, config: std::sync::Arc::new(config), advertise: host.clone() }))
    }

    /// The port of a pool FQDN without one: 5061 over TLS, else 5060.
    pub fn pool_port(&self) -> u16 {
        if self.conn.transport() == Transport::Tls {
            crate::sip::connect::TLS_PORT
        } else {
            DEFAULT_POOL_PORT
        }
    }

    /// The service account's domain (`{domain}` in the resource template).
    pub fn domain(&self) -> String {
        let hp = uri_host_port(&self.from).unwrap_or("");
        hp.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(hp, |(h, _)| h).to_string()
    }
}

/// The task of an `sfb` provider.
pub fn task(config: &SfbConfig, ctx: ProviderContext) -> Result<crate::ProviderTask, BuildError> {
    config.validate()?;
    let cfg = config.clone();
    Ok(Box::pin(async move { runtime::run(cfg, ctx).await.map_err(|e| crate::ProviderError::Failed(e.to_string())) }))
}
