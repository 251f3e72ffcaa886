//! The SIP connection every SIP source uses (`sip_presence`, `sip_dialog` and `sfb`): one
//! struct for the settings they all declare ([`SipConnection`]: server, transport, local
//! address, subscription lifetime, OPTIONS keep-alive), their checks, and
//! the code that uses them — binding the endpoint and finding the peer ([`SipConnection::open`]),
//! the OPTIONS keep-alive ([`Pings`]), answering requests outside any dialog
//! ([`answer_stray`]), the endpoint's counters for the feed's details ([`sip_stats`]) and the
//! graceful close ([`close`]).
//!
//! Over TLS (`transport = "tls"`, RFC 3261 §26.2) the peer's certificate must chain to
//! `tls_ca_file` and carry `server_name` (default: the host of `server`); `tls_cert_file` +
//! `tls_key_file` are the certificate this side presents (a Skype for Business trusted
//! application's, or a client certificate a Kamailio with `require_certificate` asks for). The
//! connection is kept alive with CRLF pings every [`CRLF_KEEPALIVE`] (RFC 5626 §4.4.1), and
//! requests carry Via `alias` (RFC 5923) so the peer sends its NOTIFYs back over it.
//!
//! The settings keep their flat keys in the config file: each provider's config holds a
//! [`SipConnection`] as `#[serde(flatten)]`, followed by
//! [`NoOtherKeys`](crate::common::config::NoOtherKeys), which refuses any key no setting claimed
//! as `deny_unknown_fields` would (that cannot go with a flattened struct). The two settings whose default
//! differs between providers (`transport`, `expires_secs`) take it from the provider's
//! [`ConnectionDefaults`]. The digest credentials (`username`, `password`) are the configs' own
//! flattened [`Login`](crate::common::login::Login), beside this struct.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use presence_actors::provider::ProviderContext;
use presence_sip::endpoint::{Endpoint, EndpointConfig, Incoming, Peer, TlsSettings, Transport};
use presence_sip::message::Builder;
use serde::Deserialize;
use tokio::sync::mpsc;

/// The defaults a provider gives the connection settings that differ between providers.
pub trait ConnectionDefaults {
    /// `transport` when the config leaves it out.
    const TRANSPORT: Transport;
    /// `expires_secs` when the config leaves it out.
    const EXPIRES_SECS: u32;
}

/// The SIP connection settings of a provider, flattened into its config (module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(bound = "")]
pub struct SipConnection<D: ConnectionDefaults> {
    /// The peer — presence server, PBX or SfB front-end pool: `host:port` (port 5060 when left
    /// out).
    pub server: String,
    /// `udp`, `tcp` or `tls`; the default is the provider's.
    #[serde(default = "default_transport::<D>")]
    pub transport: String,
    /// Local address to bind (UDP and TCP on one port); port 0 picks a free one.
    #[serde(default = "default_local")]
    pub local: String,
    /// Subscription lifetime asked for, in seconds; the default is the provider's.
    #[serde(default = "default_expires::<D>")]
    pub expires_secs: u32,
    /// OPTIONS health check interval in seconds (0: off).
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// TLS: the CA certificates (PEM) the peer's certificate must chain to. Required with
    /// `transport = "tls"`.
    #[serde(default)]
    pub tls_ca_file: Option<String>,
    /// TLS: the certificate chain (PEM) this side presents, with `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<String>,
    /// TLS: the private key (PEM) of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<String>,
    /// TLS: the name the peer's certificate must carry (and the SNI sent); default: the host
    /// of `server`.
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(skip)]
    defaults: PhantomData<D>,
}

fn default_transport<D: ConnectionDefaults>() -> String {
    D::TRANSPORT.to_string()
}
fn default_local() -> String {
    "127.0.0.1:0".into()
}
fn default_expires<D: ConnectionDefaults>() -> u32 {
    D::EXPIRES_SECS
}
fn default_keepalive() -> u64 {
    10
}

/// The CRLF keep-alive interval of a TCP or TLS connection to the peer.
pub const CRLF_KEEPALIVE: Duration = Duration::from_secs(30);
/// The port of a `server` without one over TLS (5060 otherwise).
pub const TLS_PORT: u16 = 5061;

/// Why a SIP source could not start talking to its peer.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `local` is not an address.
    #[error("local {0:?} is not an IP address and port")]
    Local(String),
    /// The TLS settings cannot be used (a file, the key, the name).
    #[error("{0}")]
    Tls(#[from] presence_sip::tls::TlsError),
    /// The TLS listener's settings cannot be used.
    #[error("{0}")]
    Listen(String),
    /// The local sockets could not be bound.
    #[error("bind {local}: {source}")]
    Bind {
        /// The address.
        local: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A TLS listener for the peer's own connections ([`SipConnection::open_with`]).
pub struct TlsListen {
    /// Where.
    pub addr: SocketAddr,
    /// The server configuration (this side's certificate; the peer's required).
    pub config: Arc<rustls::ServerConfig>,
    /// The host written in Via and Contact: the name the certificate carries.
    pub advertise: String,
}

/// A bound endpoint and the peer it talks to.
pub struct Connected {
    /// The endpoint (UDP and TCP on `local`).
    pub ep: Endpoint,
    /// Requests that arrived outside any of the endpoint's subscriptions.
    pub requests: mpsc::Receiver<Incoming>,
    /// The peer: the configured transport and the server's resolved address.
    pub peer: Peer,
}

impl<D: ConnectionDefaults> SipConnection<D> {
    /// The settings with every optional one at its default (what the config file gives when
    /// only `server` is written).
    pub fn new(server: &str) -> SipConnection<D> {
        SipConnection {
            server: server.into(),
            transport: default_transport::<D>(),
            local: default_local(),
            expires_secs: default_expires::<D>(),
            keepalive_secs: default_keepalive(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            server_name: None,
            defaults: PhantomData,
        }
    }

    /// Checks the settings.
    pub fn check(&self) -> Result<(), crate::BuildError> {
        let bad = |m: &str| Err(crate::BuildError::Invalid(m.into()));
        let Some(transport) = Transport::parse(&self.transport) else {
            return bad("transport must be udp, tcp or tls");
        };
        if transport == Transport::Tls {
            if self.tls_ca_file.is_none() {
                return bad("transport = \"tls\" needs tls_ca_file: the CA certificates (PEM) the server's certificate must chain to");
            }
            // The files are read now, so a wrong path or a key that is not the certificate's
            // is refused when the config is read, not found out by a feed that stays down.
            self.tls_settings().map_err(|e| crate::BuildError::Invalid(format!("TLS: {e}")))?;
        } else if self.tls_ca_file.is_some() || self.tls_cert_file.is_some() || self.tls_key_file.is_some() || self.server_name.is_some() {
            return bad("tls_ca_file, tls_cert_file, tls_key_file and server_name are for transport = \"tls\"");
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return bad("tls_cert_file and tls_key_file go together");
        }
        if self.local.parse::<SocketAddr>().is_err() {
            return bad("local must be an IP address and port, e.g. 0.0.0.0:5070");
        }
        if self.server.trim().is_empty() {
            return bad("server is required (host:port)");
        }
        if !(60..=86_400).contains(&self.expires_secs) {
            return bad("expires_secs must be 60..=86400");
        }
        Ok(())
    }

    /// The transport (the provider's default when the setting does not parse).
    pub fn transport(&self) -> Transport {
        Transport::parse(&self.transport).unwrap_or(D::TRANSPORT)
    }

    /// The server's host (for a default domain).
    pub fn server_host(&self) -> &str {
        let s = self.server.trim();
        if let Some(rest) = s.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        s.rsplit_once(':').map(|(h, _)| h).unwrap_or(s)
    }

    /// `host:port` of the server, with the default port added (5061 over TLS, else 5060).
    pub fn server_with_port(&self) -> String {
        with_default_port(&self.server, if self.transport() == Transport::Tls { TLS_PORT } else { 5060 })
    }

    /// The TLS client settings: the CA, this side's certificate if any, the server's name.
    pub fn tls_settings(&self) -> Result<TlsSettings, presence_sip::tls::TlsError> {
        let ca = self.tls_ca_file.as_deref().unwrap_or_default();
        let identity = self.tls_cert_file.as_deref().zip(self.tls_key_file.as_deref()).map(|(c, k)| (Path::new(c), Path::new(k)));
        let config = presence_sip::tls::client_config(Path::new(ca), identity)?;
        let name = presence_sip::tls::server_name(self.server_name.as_deref().unwrap_or(self.server_host()))?;
        Ok(TlsSettings { listen: None, connect: Some((Arc::new(config), name)) })
    }

    /// Binds the endpoint on `local` (TCP always, UDP with the UDP transport) and resolves the
    /// server, retrying while it is not found ([`resolve_until_found`]); `Ok(None)` when shut
    /// down meanwhile.
    pub async fn open(&self, ctx: &ProviderContext) -> Result<Option<Connected>, ConnectError> {
        self.open_with(ctx, None).await
    }

    /// [`open`](SipConnection::open), also accepting TLS connections from the peer
    /// (`listen`: where, with which server configuration, and the host written in Via and
    /// Contact) — a Skype for Business pool connecting to a trusted application's port.
    pub async fn open_with(&self, ctx: &ProviderContext, listen: Option<TlsListen>) -> Result<Option<Connected>, ConnectError> {
        let transport = self.transport();
        let local: SocketAddr = self.local.parse().map_err(|_| ConnectError::Local(self.local.clone()))?;
        let mut tls = if transport == Transport::Tls { self.tls_settings()? } else { TlsSettings::default() };
        let keepalive = transport.is_stream().then_some(CRLF_KEEPALIVE);
        let advertise = listen.as_ref().map(|l| l.advertise.clone());
        tls.listen = listen.map(|l| (l.addr, l.config));
        let cfg = EndpointConfig { listen: local, udp: transport == Transport::Udp, tcp: true, tls, keepalive, advertise, ..Default::default() };
        let (ep, requests) = Endpoint::bind(cfg).await.map_err(|source| ConnectError::Bind { local, source })?;
        let Some(addr) = resolve_until_found(ctx, &self.server_with_port()).await else { return Ok(None) };
        Ok(Some(Connected { ep, requests, peer: Peer { transport, addr } }))
    }
}

/// `host:port` with `port` added when absent (IPv6 literals in brackets).
pub fn with_default_port(s: &str, port: u16) -> String {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        return if rest.contains("]:") { s.to_string() } else { format!("{s}:{port}") };
    }
    match s.rsplit_once(':') {
        Some((_, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => s.to_string(),
        _ => format!("{s}:{port}"),
    }
}

/// The first address `server` (`host:port`) resolves to.
pub async fn resolve(server: &str) -> Result<SocketAddr, String> {
    let mut addrs = tokio::net::lookup_host(server).await.map_err(|e| format!("cannot resolve {server}: {e}"))?;
    addrs.next().ok_or_else(|| format!("cannot resolve {server}"))
}

/// Resolves the peer's address, retrying every 10 s (feed down meanwhile); `None` on shutdown.
pub async fn resolve_until_found(ctx: &ProviderContext, server: &str) -> Option<SocketAddr> {
    let mut shutdown = ctx.shutdown.clone();
    ctx.feed.set_state("resolving");
    loop {
        match resolve(server).await {
            Ok(a) => return Some(a),
            Err(e) => {
                ctx.feed.record_error(&e);
                ctx.sink.set_up(false);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                    _ = shutdown.recv() => return None,
                }
            }
        }
    }
}

/// One OPTIONS request to `peer`: `Ok` when anything answers within 3 s, else why not (no
/// answer, or the connection's failure: a TLS certificate refused, a connection refused).
pub async fn ping(ep: &Endpoint, peer: Peer, from: &str) -> Result<(), String> {
    let (via, branch) = ep.via(peer.transport);
    let uri = format!("sip:{}", peer.addr);
    let req = Builder::request("OPTIONS", &uri)
        .header("Via", &via)
        .header("Max-Forwards", "70")
        .header("From", &format!("<{from}>;tag={}", ep.token()))
        .header("To", &format!("<{uri}>"))
        .header("Call-ID", &format!("{}@presence-hub", ep.token()))
        .header("CSeq", "1 OPTIONS")
        .header("User-Agent", ep.user_agent())
        .build();
    // Any response means the peer is alive (some answer OPTIONS with 404/405/483).
    match ep.request_timeout(peer, &branch, req, Duration::from_secs(3)).await {
        Ok(_) => Ok(()),
        Err(presence_sip::endpoint::TxError::Timeout) => Err("no answer to OPTIONS".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The OPTIONS health check's count. Pings are numbered, and a miss counts only for a ping
/// sent since the peer last answered (a ping or a subscription): over TCP nothing resends a
/// ping lost while the peer was silent, so it times out after the peer is back, and must not
/// take the feed down a second time.
#[derive(Debug, Default)]
pub struct Pings {
    sent: u64,
    answered_from: u64,
    misses: u32,
}

/// What a ping's result means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingResult {
    /// The peer answered.
    Answered,
    /// No answer: this many in a row.
    Missed(u32),
    /// No answer to a ping sent before the peer's latest answer: says nothing.
    Old,
}

impl Pings {
    /// Sends the next ping in the background; its number and whether it was answered (or why
    /// not) go to `tx`.
    pub fn spawn(&mut self, ep: &Endpoint, peer: Peer, from: &str, tx: &mpsc::Sender<(u64, Result<(), String>)>) {
        self.sent += 1;
        let (ep, tx, from, n) = (ep.clone(), tx.clone(), from.to_string(), self.sent);
        tokio::spawn(async move {
            let ok = ping(&ep, peer, &from).await;
            let _ = tx.send((n, ok)).await;
        });
    }

    /// The peer answered something else (a subscription): pings sent so far say nothing more.
    pub fn answered(&mut self) {
        self.misses = 0;
        self.answered_from = self.sent + 1;
    }

    /// Ping `n` was answered (`ok`) or not.
    pub fn result(&mut self, n: u64, ok: bool) -> PingResult {
        if ok {
            self.misses = 0;
            self.answered_from = self.answered_from.max(n + 1);
            PingResult::Answered
        } else if n < self.answered_from {
            PingResult::Old
        } else {
            self.misses += 1;
            PingResult::Missed(self.misses)
        }
    }
}

/// Answers a request outside any dialog: OPTIONS `200`, a NOTIFY of a dialog no longer known
/// `481` (so the peer drops it), BENOTIFY nothing (it is never answered), anything else `405`.
pub async fn answer_stray(ep: &Endpoint, req: Incoming) {
    let method = req.msg.method().map(|m| m.to_string()).unwrap_or_default();
    match method.as_str() {
        "OPTIONS" => ep.reply(&req, 200, "OK").await,
        "NOTIFY" => ep.reply(&req, 481, "Subscription Does Not Exist").await,
        "BENOTIFY" => {}
        _ => ep.respond(&req, Builder::response_to(&req.msg, 405, "Method Not Allowed", Some(&ep.token())).header("Allow", "OPTIONS, NOTIFY")).await,
    }
}

/// Warn about a certificate this close to its end.
pub const CERT_WARN_DAYS: i64 = 30;

/// The TLS part of a SIP feed's details: this side's certificate (`tls_cert_file`) and the
/// server's, as last seen, each with its subject, end and days left — and a warning in the log,
/// once a day, when either ends within [`CERT_WARN_DAYS`] (an expired trusted-application
/// certificate is a classic cause of a Skype for Business feed going down).
#[derive(Debug, Default)]
pub struct TlsHealth {
    own: Option<presence_sip::tls::CertificateInfo>,
    tls: bool,
    warned_at: Option<std::time::Instant>,
}

impl TlsHealth {
    /// For a connection's settings (nothing to say unless it is TLS).
    pub fn new<D: ConnectionDefaults>(conn: &SipConnection<D>) -> TlsHealth {
        let own = conn
            .tls_cert_file
            .as_deref()
            .and_then(|f| presence_sip::tls::certificates(Path::new(f)).ok())
            .and_then(|c| c.first().and_then(|c| presence_sip::tls::certificate_info(c.as_ref())));
        TlsHealth { own, tls: conn.transport() == Transport::Tls, warned_at: None }
    }

    /// The `tls` object of the details at `now_s` (Unix seconds), `None` unless TLS.
    pub fn details(&mut self, ep: &Endpoint, peer: Peer, provider: &str, now_s: i64) -> Option<serde_json::Value> {
        if !self.tls {
            return None;
        }
        let server = ep.peer_certificate(peer).and_then(|c| presence_sip::tls::certificate_info(&c));
        let describe = |c: &presence_sip::tls::CertificateInfo| {
            let end = jiff::Timestamp::from_second(c.not_after).map(|t| t.to_string()).unwrap_or_default();
            serde_json::json!({ "subject": c.subject, "not_after": end, "days_left": (c.not_after - now_s).div_euclid(86_400) })
        };
        let soon: Vec<(&str, &presence_sip::tls::CertificateInfo)> =
            [("tls_cert_file", self.own.as_ref()), ("server", server.as_ref())].into_iter().filter_map(|(w, c)| c.map(|c| (w, c))).filter(|(_, c)| c.not_after - now_s < CERT_WARN_DAYS * 86_400).collect();
        if !soon.is_empty() && self.warned_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(86_400)) {
            self.warned_at = Some(std::time::Instant::now());
            for (which, c) in soon {
                tracing::warn!(%provider, certificate = which, subject = %c.subject, days_left = (c.not_after - now_s).div_euclid(86_400), "A SIP TLS certificate ends within 30 days (or has ended); renew it.");
            }
        }
        Some(serde_json::json!({
            "certificate": self.own.as_ref().map(describe),
            "server_certificate": server.as_ref().map(describe),
        }))
    }
}

/// The endpoint's counters, as the `sip` object of a feed's details.
pub fn sip_stats(ep: &Endpoint) -> serde_json::Value {
    let stats = ep.stats();
    serde_json::json!({
        "received": stats.received.load(Ordering::Relaxed),
        "sent": stats.sent.load(Ordering::Relaxed),
        "malformed": stats.malformed.load(Ordering::Relaxed),
        "retransmissions": stats.retransmissions.load(Ordering::Relaxed),
        "timeouts": stats.timeouts.load(Ordering::Relaxed),
    })
}

/// The graceful close, once the subscriptions were dropped (which un-SUBSCRIBEs them): gives
/// the un-SUBSCRIBEs a moment, then shuts the endpoint down.
pub async fn close(ep: &Endpoint) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    ep.shutdown();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone)]
    struct Udp;
    impl ConnectionDefaults for Udp {
        const TRANSPORT: Transport = Transport::Udp;
        const EXPIRES_SECS: u32 = 600;
    }

    #[test]
    fn peer_addresses_get_the_default_port() {
        assert_eq!(with_default_port("127.0.0.1:5070", 5060), "127.0.0.1:5070");
        assert_eq!(with_default_port("pool2.contoso.com", 5060), "pool2.contoso.com:5060");
        assert_eq!(with_default_port("[::1]", 5060), "[::1]:5060");
        assert_eq!(with_default_port("[::1]:5071", 5060), "[::1]:5071");
        assert_eq!(SipConnection::<Udp>::new("[::1]:5071").server_host(), "::1");
        assert_eq!(SipConnection::<Udp>::new(" pbx.example.com ").server_with_port(), "pbx.example.com:5060");
    }

    /// Pings 1–3 go out while the peer is silent; it answers ping 5; 3 and 4 time out after
    /// that and say nothing. A subscription answered counts as the peer answering too.
    #[test]
    fn a_miss_counts_only_for_pings_sent_since_the_peer_last_answered() {
        let mut p = Pings { sent: 3, ..Pings::default() };
        assert_eq!((p.result(1, false), p.result(2, false)), (PingResult::Missed(1), PingResult::Missed(2)));
        p.sent = 5;
        assert_eq!(p.result(5, true), PingResult::Answered);
        assert_eq!((p.result(3, false), p.result(4, false)), (PingResult::Old, PingResult::Old));
        p.sent = 6;
        assert_eq!(p.result(6, false), PingResult::Missed(1), "a new ping's miss counts");
        p.sent = 7;
        p.answered();
        assert_eq!(p.result(7, false), PingResult::Old, "sent before the subscription was answered");
        p.sent = 8;
        assert_eq!(p.result(8, false), PingResult::Missed(1), "the count starts again");
    }

    fn fixture(name: &str) -> String {
        format!("{}/../fixtures/tls/sip/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn tls_settings_are_read_and_default_to_port_5061_and_the_server_host() {
        let c: SipConnection<Udp> = serde_json::from_value(serde_json::json!({
            "server": "pool.example.test", "transport": "tls", "tls_ca_file": fixture("ca-cert.pem"),
            "tls_cert_file": fixture("app-cert.pem"), "tls_key_file": fixture("app-key.pem"),
        }))
        .unwrap();
        c.check().expect("valid");
        assert_eq!((c.transport(), c.server_with_port()), (Transport::Tls, "pool.example.test:5061".to_string()));
        let tls = c.tls_settings().unwrap();
        let (_, name) = tls.connect.expect("client settings");
        assert_eq!(name.to_str(), "pool.example.test");
        let c: SipConnection<Udp> = serde_json::from_value(serde_json::json!({
            "server": "127.0.0.1:5071", "transport": "TLS", "tls_ca_file": fixture("ca-cert.pem"), "server_name": "pool.example.test",
        }))
        .unwrap();
        c.check().expect("valid");
        assert_eq!(c.tls_settings().unwrap().connect.unwrap().1.to_str(), "pool.example.test");
    }

    /// Over TLS the details name both certificates with their days left; the expired fixture
    /// shows negative days. Without TLS there is nothing to say.
    #[tokio::test]
    async fn tls_health_names_the_certificates_and_their_days_left() {
        let c: SipConnection<Udp> = serde_json::from_value(serde_json::json!({
            "server": "127.0.0.1:5061", "transport": "tls", "tls_ca_file": fixture("ca-cert.pem"),
            "tls_cert_file": fixture("expired-cert.pem"), "tls_key_file": fixture("expired-key.pem"),
        }))
        .unwrap();
        let (ep, _rx) = Endpoint::bind(EndpointConfig::default()).await.unwrap();
        let peer = Peer { transport: Transport::Tls, addr: "127.0.0.1:5061".parse().unwrap() };
        let now = 1_609_459_200 + 10 * 86_400;
        let d = TlsHealth::new(&c).details(&ep, peer, "p", now).expect("TLS");
        assert_eq!(d["certificate"]["subject"], "CN=pool.example.test", "{d}");
        assert_eq!((d["certificate"]["not_after"].as_str(), d["certificate"]["days_left"].as_i64()), (Some("2021-01-01T00:00:00Z"), Some(-10)), "{d}");
        assert!(d["server_certificate"].is_null(), "not connected yet: {d}");
        assert!(TlsHealth::new(&SipConnection::<Udp>::new("pbx:5060")).details(&ep, peer, "p", now).is_none());
    }

    #[test]
    fn settings_are_checked() {
        let parse = |extra: serde_json::Value| -> SipConnection<Udp> {
            serde_json::from_value(crate::common::json::with_keys(serde_json::json!({ "server": "pbx:5060" }), extra)).unwrap()
        };
        let c = parse(serde_json::json!({}));
        assert_eq!(format!("{c:?}"), format!("{:?}", SipConnection::<Udp>::new("pbx:5060")), "new() gives the file's defaults");
        assert_eq!((c.transport(), c.expires_secs, c.keepalive_secs), (Transport::Udp, 600, 10));
        assert!(c.check().is_ok());
        for (bad, why) in [
            (serde_json::json!({ "transport": "tls" }), "needs tls_ca_file"),
            (serde_json::json!({ "transport": "sctp" }), "udp, tcp or tls"),
            (serde_json::json!({ "tls_ca_file": "/x" }), "are for transport = \"tls\""),
            (serde_json::json!({ "transport": "tls", "tls_ca_file": "/nonexistent/ca.pem" }), "TLS: /nonexistent/ca.pem"),
            (serde_json::json!({ "transport": "tls", "tls_ca_file": fixture("ca-cert.pem"), "tls_cert_file": fixture("app-cert.pem") }), "go together"),
            (serde_json::json!({ "transport": "tls", "tls_ca_file": fixture("ca-cert.pem"), "tls_cert_file": fixture("app-cert.pem"), "tls_key_file": fixture("pool-key.pem") }), "TLS settings"),
            (serde_json::json!({ "transport": "tls", "tls_ca_file": fixture("ca-cert.pem"), "server_name": "not a name" }), "not a host name"),
            (serde_json::json!({ "local": "nowhere" }), "local"),
            (serde_json::json!({ "server": " " }), "server"),
            (serde_json::json!({ "expires_secs": 59 }), "expires_secs"),
        ] {
            let e = parse(bad.clone()).check().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    /// Every key of a `sip_presence`/`sip_dialog` block lands in its setting (the flat key names
    /// are a contract), read from TOML as the hub reads its config file.
    #[test]
    fn every_sip_key_parses_from_toml() {
        let text = r#"
            name = "kamailio"
            server = "presence.example.com:5060"
            transport = "tcp"
            local = "0.0.0.0:5070"
            domain = "example.com"
            from = "sip:presence-hub@example.com"
            resource = "sip:{extension}@{domain}"
            expires_secs = 900
            subscribe_rate = 20
            keepalive_secs = 0
            username = "presence-hub"
            password = "pw"
            extension_prefixes = ["2", "3"]
        "#;
        let c: crate::sip::SipSourceConfig = toml::from_str(text).expect("config");
        c.validate().expect("valid");
        let conn = &c.conn;
        assert_eq!((c.name.as_str(), conn.server.as_str(), conn.transport(), conn.local.as_str()), ("kamailio", "presence.example.com:5060", Transport::Tcp, "0.0.0.0:5070"));
        assert_eq!((c.domain(), c.from.as_deref(), c.resource.as_deref()), ("example.com".into(), Some("sip:presence-hub@example.com"), Some("sip:{extension}@{domain}")));
        assert_eq!((conn.expires_secs, c.subscribe_rate, conn.keepalive_secs), (900, 20, 0));
        assert_eq!((c.login.credentials(), c.extension_prefixes.clone()), (Some(("presence-hub".into(), "pw".into())), vec!["2".to_string(), "3".to_string()]));
        let d: crate::sip::SipSourceConfig = toml::from_str("name = \"pbx\"\nserver = \"pbx.example.com\"").expect("config");
        assert_eq!(format!("{d:?}"), format!("{:?}", crate::sip::SipSourceConfig::new("pbx", "pbx.example.com")), "new() gives the file's defaults");
        assert_eq!((d.conn.transport.as_str(), d.conn.expires_secs, d.subscribe_rate, d.domain()), ("udp", 600, 50, "pbx.example.com".into()));
    }

    /// Through the providers' table as the hub reads it (`type` selects the config): `type` is
    /// not an unknown key, every other unclaimed key is, for each SIP source, when the file is read.
    #[test]
    fn unknown_keys_are_refused_through_the_table() {
        let block = |kind: &str, extra: &str| format!("type = \"{kind}\"\nname = \"p\"\nserver = \"127.0.0.1\"\nfrom = \"sip:hub@x\"\n{extra}");
        for kind in ["sip_presence", "sip_dialog", "sfb"] {
            let ok = crate::common::config::valid_provider(&block(kind, ""));
            assert_eq!(ok.kind(), kind);
            let e = crate::common::config::provider_error(&block(kind, "expire_secs = 60"));
            assert!(e.contains("unknown field `expire_secs`"), "{kind}: {e}");
            let e = crate::common::config::provider_error(&block(kind, "password = \"p\""));
            assert_eq!(e, "username and password go together", "{kind}");
            let (crate::ProviderConfig::SipPresence(c) | crate::ProviderConfig::SipDialog(c)) = crate::common::config::valid_provider(&block(kind, "username = \"u\"\npassword = \"p\"")) else {
                continue;
            };
            assert_eq!(c.login.credentials(), Some(("u".into(), "p".into())), "{kind}");
        }
    }
}
