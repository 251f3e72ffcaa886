//! The SIP presence server task: SUBSCRIBE (`presence`, `dialog`) with NOTIFYs of the merged
//! state, and PUBLISH (RFC 3903) as a source.
//!
//! Runs on its own thread with a single-threaded tokio runtime, so SIP load never competes
//! with the HTTP workers or the user actors' arbiters; it talks to the hub only through the
//! fan-out (changes out) and a signal sink (publications in), both thread-safe.
//!
//! Subscriptions (RFC 6665, RFC 3856, RFC 4235):
//! - Request-URI → person by any identity the directory resolves (SIP URI, extension,
//!   number, id); unknown → `404`. Unsupported event → `489` with `Allow-Events`; an Accept
//!   without the package's type → `406`; expiry below `min_expires` → `423`; above
//!   `max_expires` cut down; `0` ends the subscription with a final NOTIFY.
//! - `200` with a To tag and the granted Expires, then at once a NOTIFY with the full state
//!   (`Subscription-State: active;expires=N`); then a NOTIFY on every change of the person's
//!   merged view. At most one NOTIFY per subscription is in flight; changes meanwhile collapse
//!   to the latest (and `min_notify_interval_ms` paces them). A NOTIFY answered `481` or left
//!   unanswered ends the subscription; expired ones get `terminated;reason=timeout`.
//! - NOTIFYs go back over the TCP connection the SUBSCRIBE came on, or over UDP to the
//!   Contact's address (the source address when the Contact is not an IP literal).
//!
//! Publications (RFC 3903 §6): `presence` only (`489` else), PIDF only (`415` else); initial
//! (body, no SIP-If-Match), refresh (SIP-If-Match, no body), modify (SIP-If-Match + body),
//! remove (SIP-If-Match, Expires 0); unknown entity-tag → `412`. Every `2xx` carries a new
//! SIP-ETag and the granted Expires. Each publication is one `sip` signal instance whose
//! `valid_until` is the publication's expiry, so an expired publication drops out of the merge
//! by itself. The published document is kept and mapped again at every refresh, so RPID
//! elements are judged against their `from`/`until` at that time, not only at the first
//! PUBLISH. Publications are not kept across restarts: the publisher's next refresh gets
//! `412` and it publishes anew, as RFC 3903 intends.
//!
//! Digest authentication (`[sip] require_auth`) guards SUBSCRIBE and PUBLISH; PUBLISH also
//! needs an account with `publish = true`. Over TLS (`tls_listen`), a client certificate the
//! endpoint verified against `tls_client_ca_file` whose subject (or subjectAltName) is an
//! account's `certificate_subject` is that account without digest; any other certificate is
//! challenged like a request without one. Subscriptions made over TLS get their NOTIFYs on the
//! same connection, and the hub's Contact and Via name the TLS port with `transport=tls`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use presence_actors::directory::UserIdx;
use presence_actors::live::LiveDirectory;
use presence_actors::fanout::{Batch, FanOut, Filter, Outbox};
use presence_actors::hub::SignalSink;
use presence_actors::model::{now_ms, MergedView, Signal, Source};
use presence_sip::auth::{AuthError, DigestServer, Ha1};
use presence_sip::body::pidf;
use presence_sip::endpoint::{Endpoint, EndpointConfig, Incoming, Peer, TlsSettings, Transport};
use presence_sip::message::{name_addr_uri, uri_host_port, Builder};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

use super::cert::{self, CertMatch};
use super::{render, SipSection};

/// Counters shown in `/api/stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct SipStats {
    /// Subscriptions now.
    pub subscriptions: std::sync::atomic::AtomicU64,
    /// Publications now.
    pub publications: std::sync::atomic::AtomicU64,
    /// NOTIFYs sent (answered 2xx).
    pub notifies_sent: std::sync::atomic::AtomicU64,
    /// NOTIFYs that failed (timeout, 481, other errors).
    pub notifies_failed: std::sync::atomic::AtomicU64,
    /// Requests refused for authentication.
    pub auth_failures: std::sync::atomic::AtomicU64,
}

/// A running SIP server.
pub struct SipServer {
    /// The bound address (UDP and TCP).
    pub local: SocketAddr,
    /// The TLS listener's address, with `tls_listen`.
    pub tls_local: Option<SocketAddr>,
    /// Counters.
    pub stats: Arc<SipStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SipServer {
    /// Binds and starts the server on its own thread.
    pub fn start(cfg: SipSection, directory: Arc<LiveDirectory>, fanout: Arc<FanOut>, sink: SignalSink) -> std::io::Result<SipServer> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let stats = Arc::new(SipStats::default());
        let st = stats.clone();
        let thread = std::thread::Builder::new().name("sip-server".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let tls = match cfg.tls_server_config() {
                    Ok(t) => t.zip(cfg.tls_listen).map(|(c, addr)| (addr, Arc::new(c))),
                    Err(e) => {
                        let _ = ready_tx.send(Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)));
                        return;
                    }
                };
                let ep_cfg = EndpointConfig {
                    listen: cfg.listen,
                    udp: cfg.udp,
                    tcp: cfg.tcp,
                    queue: 8192,
                    tls: TlsSettings { listen: tls, connect: None },
                    ..Default::default()
                };
                let (ep, requests) = match Endpoint::bind(ep_cfg).await {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((ep.local_addr(), ep.tls_addr())));
                let server = Server::new(cfg, ep.clone(), directory, fanout, sink, st);
                server.run(requests, stop_rx).await;
                ep.shutdown();
            });
        })?;
        let (local, tls_local) = ready_rx.recv().map_err(|_| std::io::Error::other("sip server thread ended"))??;
        match tls_local {
            Some(tls) => info!(%local, %tls, "SIP presence server listening (UDP and TCP; TLS)."),
            None => info!(%local, "SIP presence server listening (UDP and TCP)."),
        }
        Ok(SipServer { local, tls_local, stats, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// Stops the server (final NOTIFYs are sent to subscribers first).
    pub fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Package {
    Presence,
    Dialog,
}

struct Sub {
    user: UserIdx,
    package: Package,
    /// Where NOTIFYs go.
    target: Peer,
    /// NOTIFY Request-URI (the subscriber's Contact).
    remote_uri: String,
    /// NOTIFY From (the SUBSCRIBE's To with our tag).
    local_hdr: String,
    /// NOTIFY To (the SUBSCRIBE's From).
    remote_hdr: String,
    /// The subscriber's From tag.
    remote_tag: String,
    call_id: String,
    cseq: u32,
    version: u64,
    expires_at: Instant,
    entity: String,
    in_flight: bool,
    dirty: bool,
    last_sent_at: Option<Instant>,
    /// The last state told, to skip NOTIFYs that would say the same.
    last_body: Option<u64>,
}

struct Publication {
    user: UserIdx,
    instance: String,
    expires_at: Instant,
    /// The published document, mapped to a signal at every PUBLISH (its RPID periods are
    /// judged at that time).
    doc: pidf::PidfDoc,
}

struct NotifyDone {
    key: String,
    ok: bool,
    terminate: bool,
}

struct Server {
    cfg: SipSection,
    ep: Endpoint,
    directory: Arc<LiveDirectory>,
    fanout: Arc<FanOut>,
    sink: SignalSink,
    stats: Arc<SipStats>,
    digest: DigestServer,
    /// Accounts by user: the digest secret (none for certificate-only ones), may publish.
    accounts: HashMap<String, (Option<Ha1>, bool)>,
    /// Accounts a client certificate stands in for, in the order configured.
    cert_accounts: Vec<(CertMatch, String)>,
    domain: String,
    subs: HashMap<String, Sub>,
    by_user: HashMap<UserIdx, Vec<String>>,
    pubs: HashMap<String, Publication>,
    fan_id: Option<u64>,
    outbox: Option<Arc<Outbox>>,
    wake: Arc<Notify>,
    done_tx: mpsc::UnboundedSender<NotifyDone>,
    done_rx: Option<mpsc::UnboundedReceiver<NotifyDone>>,
}

impl Server {
    fn new(cfg: SipSection, ep: Endpoint, directory: Arc<LiveDirectory>, fanout: Arc<FanOut>, sink: SignalSink, stats: Arc<SipStats>) -> Server {
        let digest = DigestServer::with_algorithms(&cfg.realm, &cfg.digest);
        let accounts = cfg
            .accounts
            .iter()
            .map(|a| {
                // An account with only a certificate_subject has no digest secret at all.
                let ha1 = match (&a.password, &a.ha1_md5, &a.ha1_sha256) {
                    (Some(p), _, _) => Some(Ha1::from_password(&a.user, &cfg.realm, p)),
                    (None, Some(m), Some(s)) => Some(Ha1 { md5: m.to_ascii_lowercase(), sha256: s.to_ascii_lowercase() }),
                    _ => None,
                };
                (a.user.clone(), (ha1, a.publish))
            })
            .collect();
        let cert_accounts = cfg
            .accounts
            .iter()
            .filter_map(|a| Some((CertMatch::parse(a.certificate_subject.as_deref()?).ok()?, a.user.clone())))
            .collect();
        let domain = cfg.domain.clone().unwrap_or_else(|| ep.local_addr().to_string());
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Server {
            cfg,
            ep,
            directory,
            fanout,
            sink,
            stats,
            digest,
            accounts,
            cert_accounts,
            domain,
            subs: HashMap::new(),
            by_user: HashMap::new(),
            pubs: HashMap::new(),
            fan_id: None,
            outbox: None,
            wake: Arc::new(Notify::new()),
            done_tx,
            done_rx: Some(done_rx),
        }
    }

    async fn run(mut self, mut requests: mpsc::Receiver<Incoming>, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let mut done_rx = self.done_rx.take().expect("run once");
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let wake = self.wake.clone();
        self.sink.set_up(true);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(req) = requests.recv() => self.on_request(req).await,
                _ = wake.notified() => self.on_changes(),
                Some(d) = done_rx.recv() => self.on_notify_done(d),
                _ = tick.tick() => self.on_tick(),
            }
        }
        // Tell every subscriber the subscription is over.
        let keys: Vec<String> = self.subs.keys().cloned().collect();
        for k in keys {
            self.send_notify(&k, Some("terminated;reason=deactivated"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(id) = self.fan_id {
            self.fanout.unsubscribe(id);
        }
    }

    // ---- requests --------------------------------------------------------------------------

    async fn on_request(&mut self, req: Incoming) {
        let method = req.msg.method().map(|m| m.to_string()).unwrap_or_default();
        match method.as_str() {
            "SUBSCRIBE" => self.on_subscribe(req).await,
            "PUBLISH" => self.on_publish(req).await,
            "OPTIONS" => {
                let r = Builder::response_to(&req.msg, 200, "OK", Some(&self.ep.token()))
                    .header("Allow", "OPTIONS, SUBSCRIBE, NOTIFY, PUBLISH")
                    .header("Allow-Events", "presence, dialog")
                    .header("Accept", "application/pidf+xml");
                self.ep.respond(&req, r).await
            }
            _ => {
                let r = Builder::response_to(&req.msg, 405, "Method Not Allowed", Some(&self.ep.token()))
                    .header("Allow", "OPTIONS, SUBSCRIBE, NOTIFY, PUBLISH");
                self.ep.respond(&req, r).await
            }
        }
    }

    /// The account a verified client certificate stands in for, if any.
    fn certificate_account(&self, req: &Incoming) -> Option<String> {
        let der = req.peer_certificate.as_ref()?;
        if self.cert_accounts.is_empty() {
            return None;
        }
        match cert::identity(der) {
            Ok(who) => {
                let account = self.cert_accounts.iter().find(|(m, _)| m.matches(&who)).map(|(_, u)| u.clone());
                if account.is_none() {
                    debug!(peer = %req.peer.addr, subject = %who.subject, alt_names = ?who.alt_names, "sip: client certificate names no account; digest instead");
                }
                account
            }
            Err(e) => {
                debug!(peer = %req.peer.addr, error = %e, "sip: client certificate not readable; digest instead");
                None
            }
        }
    }

    /// Checks the client certificate or digest credentials; answers 401 (or 403) itself and
    /// returns None when they fail.
    async fn authenticate(&self, req: &Incoming, publish: bool) -> Option<String> {
        if !self.cfg.require_auth {
            return Some(String::new());
        }
        let result = match self.certificate_account(req) {
            Some(user) => Ok(user),
            None => self.digest.verify(&req.msg, |u| self.accounts.get(u).and_then(|(h, _)| h.clone())),
        };
        match result {
            Ok(user) => {
                if publish && !self.accounts.get(&user).is_some_and(|(_, p)| *p) {
                    self.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                    self.ep.reply(req, 403, "Forbidden (account may not publish)").await;
                    return None;
                }
                Some(user)
            }
            Err(e) => {
                if e != AuthError::Missing {
                    self.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %req.peer.addr, error = %e, "sip: credentials refused");
                }
                let mut r = Builder::response_to(&req.msg, 401, "Unauthorized", Some(&self.ep.token()));
                for c in self.digest.challenges(e == AuthError::Stale) {
                    r = r.header("WWW-Authenticate", &c);
                }
                self.ep.respond(req, r).await;
                None
            }
        }
    }

    fn resolve_aor(&self, uri: &str) -> Option<UserIdx> {
        let d = self.directory.current();
        if let Some(i) = d.resolve(uri) {
            return Some(i);
        }
        let user = presence_sip::message::uri_user(uri)?;
        let user = percent_decode(user);
        d.by_id(&user).or_else(|| d.resolve(&user))
    }

    /// The expiry granted for a SUBSCRIBE or PUBLISH: the default when none is asked, cut to
    /// `max_expires`; `0` passes. Answers `400` (malformed) or `423` (too brief) itself and
    /// returns `None` then.
    async fn granted_expires(&self, req: &Incoming) -> Option<u32> {
        let asked = match req.msg.expires() {
            Ok(a) => a,
            Err(_) => {
                self.ep.reply(req, 400, "Bad Request (Expires)").await;
                return None;
            }
        };
        match asked {
            None => Some(self.cfg.default_expires),
            Some(0) => Some(0),
            Some(e) if e < self.cfg.min_expires => {
                let r = Builder::response_to(&req.msg, 423, "Interval Too Brief", Some(&self.ep.token()))
                    .header("Min-Expires", &self.cfg.min_expires.to_string());
                self.ep.respond(req, r).await;
                None
            }
            Some(e) => Some(e.min(self.cfg.max_expires)),
        }
    }

    async fn on_subscribe(&mut self, req: Incoming) {
        let event = req.msg.event().unwrap_or("").to_ascii_lowercase();
        let package = match event.as_str() {
            "presence" => Package::Presence,
            "dialog" => Package::Dialog,
            _ => {
                let r = Builder::response_to(&req.msg, 489, "Bad Event", Some(&self.ep.token())).header("Allow-Events", "presence, dialog");
                return self.ep.respond(&req, r).await;
            }
        };
        let want = match package {
            Package::Presence => "application/pidf+xml",
            Package::Dialog => "application/dialog-info+xml",
        };
        let accepts = req.msg.header_tokens(&ezk_sip_types::Name::ACCEPT);
        if !accepts.is_empty() && !accepts.iter().any(|a| {
            let t = a.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            t == want || t == "*/*" || t == "application/*"
        }) {
            let r = Builder::response_to(&req.msg, 406, "Not Acceptable", Some(&self.ep.token())).header("Accept", want);
            return self.ep.respond(&req, r).await;
        }
        // In-dialog SUBSCRIBEs (refresh, end) need no new credentials: the dialog was set up by
        // an authenticated request, and its Call-ID and tags (random, 64 bits) must match.
        if req.msg.to.tag.is_none() && self.authenticate(&req, false).await.is_none() {
            return;
        }
        let Some(expires) = self.granted_expires(&req).await else { return };

        // A refresh or an end of an existing subscription.
        if let Some(tag) = req.msg.to.tag.as_deref() {
            let key = format!("{}|{tag}", req.msg.call_id);
            let from_tag = req.msg.from.tag.as_deref().unwrap_or("");
            let Some(sub) = self.subs.get_mut(&key).filter(|s| s.remote_tag == from_tag) else {
                return self.ep.reply(&req, 481, "Subscription Does Not Exist").await;
            };
            sub.expires_at = Instant::now() + Duration::from_secs(expires as u64);
            let r = Builder::response_to(&req.msg, 200, "OK", None)
                .header("Expires", &expires.to_string())
                .header("Contact", &self.ep.contact("presence-hub", req.peer.transport));
            self.ep.respond(&req, r).await;
            if expires == 0 {
                self.send_notify(&key, Some("terminated;reason=timeout"));
            } else {
                // RFC 6665 §4.2.1.2: a refresh is followed by a NOTIFY.
                if let Some(s) = self.subs.get_mut(&key) {
                    s.last_body = None;
                }
                self.send_notify(&key, None);
            }
            return;
        }

        let uri = req.msg.request_uri().unwrap_or("").to_string();
        let Some(user) = self.resolve_aor(&uri) else {
            return self.ep.reply(&req, 404, "Not Found").await;
        };
        if expires == 0 {
            // A fetch (RFC 6665 §4.4.3): answer, send one NOTIFY, keep nothing.
            let tag = self.ep.token();
            let r = Builder::response_to(&req.msg, 200, "OK", Some(&tag)).header("Expires", "0");
            self.ep.respond(&req, r).await;
            let key = self.add_sub(&req, user, package, &uri, &tag, 0);
            self.send_notify(&key, Some("terminated;reason=timeout"));
            return;
        }
        if self.subs.len() >= self.cfg.max_subscriptions {
            let r = Builder::response_to(&req.msg, 503, "Service Unavailable (subscription limit)", Some(&self.ep.token())).header("Retry-After", "60");
            return self.ep.respond(&req, r).await;
        }
        let tag = self.ep.token();
        let r = Builder::response_to(&req.msg, 200, "OK", Some(&tag))
            .header("Expires", &expires.to_string())
            .header("Contact", &self.ep.contact("presence-hub", req.peer.transport));
        self.ep.respond(&req, r).await;
        let key = self.add_sub(&req, user, package, &uri, &tag, expires);
        self.ensure_fanout();
        self.send_notify(&key, None);
    }

    fn add_sub(&mut self, req: &Incoming, user: UserIdx, package: Package, uri: &str, tag: &str, expires: u32) -> String {
        let key = format!("{}|{tag}", req.msg.call_id);
        let contact = req.msg.header(&ezk_sip_types::Name::CONTACT).map(name_addr_uri).unwrap_or("").to_string();
        let from_uri = req.msg.header(&ezk_sip_types::Name::FROM).map(name_addr_uri).unwrap_or("").to_string();
        let remote_uri = if contact.is_empty() { from_uri } else { contact.clone() };
        // NOTIFYs: the connection of the SUBSCRIBE (TCP, TLS); over UDP the Contact's address
        // if it is an IP literal with a port, else where the SUBSCRIBE came from.
        let target = match req.peer.transport {
            Transport::Tcp | Transport::Tls => req.peer,
            Transport::Udp => uri_host_port(&contact)
                .and_then(|hp| hp.parse::<SocketAddr>().ok())
                .map(|addr| Peer { transport: Transport::Udp, addr })
                .unwrap_or(req.peer),
        };
        let to = req.msg.header(&ezk_sip_types::Name::TO).unwrap_or("").to_string();
        let dir = self.directory.current();
        let person = dir.person(user);
        let entity = match (package, person.as_ref().and_then(|p| p.sip_uri())) {
            (Package::Presence, Some(s)) => s.to_string(),
            (Package::Presence, None) => format!("sip:{}@{}", person.as_ref().map(|p| p.id()).unwrap_or("unknown"), self.domain),
            (Package::Dialog, _) => name_addr_uri(&to).to_string(),
        };
        let sub = Sub {
            user,
            package,
            target,
            remote_uri,
            local_hdr: format!("{to};tag={tag}"),
            remote_hdr: req.msg.header(&ezk_sip_types::Name::FROM).unwrap_or("").to_string(),
            remote_tag: req.msg.from.tag.as_deref().unwrap_or("").to_string(),
            call_id: req.msg.call_id.to_string(),
            cseq: 0,
            version: 0,
            expires_at: Instant::now() + Duration::from_secs(expires as u64),
            entity,
            in_flight: false,
            dirty: false,
            last_sent_at: None,
            last_body: None,
        };
        let _ = uri;
        self.subs.insert(key.clone(), sub);
        self.by_user.entry(user).or_default().push(key.clone());
        self.stats.subscriptions.store(self.subs.len() as u64, Ordering::Relaxed);
        key
    }

    fn remove_sub(&mut self, key: &str) {
        if let Some(s) = self.subs.remove(key) {
            if let Some(v) = self.by_user.get_mut(&s.user) {
                v.retain(|k| k != key);
                if v.is_empty() {
                    self.by_user.remove(&s.user);
                }
            }
        }
        self.stats.subscriptions.store(self.subs.len() as u64, Ordering::Relaxed);
    }

    fn ensure_fanout(&mut self) {
        if self.fan_id.is_some() {
            return;
        }
        let wake = self.wake.clone();
        let outbox = Outbox::new(65_536, Box::new(move || wake.notify_one()));
        let id = self.fanout.subscribe(outbox.clone());
        // Every change; the server keeps its own index of who is watched.
        let _ = self.fanout.set_filter(id, Filter { all: true, ..Filter::default() }, None);
        self.fan_id = Some(id);
        self.outbox = Some(outbox);
    }

    fn on_changes(&mut self) {
        let Some(outbox) = self.outbox.clone() else { return };
        let users: Vec<UserIdx> = match self.fanout.drain(&outbox) {
            Batch::Changes(c) => c.iter().map(|c| c.user).collect(),
            Batch::Coalesced(l, _) => l.iter().map(|l| l.user).collect(),
        };
        for u in users {
            let Some(keys) = self.by_user.get(&u).cloned() else { continue };
            // A person who left the directory: their subscriptions end (RFC 6665 §4.2.2,
            // `noresource`: the resource no longer exists).
            let gone = self.fanout.latest(u).is_some_and(|l| l.gone.is_some());
            for k in keys {
                self.send_notify(&k, gone.then_some("terminated;reason=noresource"));
            }
        }
    }

    /// Sends (or schedules) a NOTIFY with the person's current state.
    fn send_notify(&mut self, key: &str, terminate: Option<&str>) {
        let Some(sub) = self.subs.get_mut(key) else { return };
        if sub.in_flight && terminate.is_none() {
            sub.dirty = true;
            return;
        }
        let pace = Duration::from_millis(self.cfg.min_notify_interval_ms);
        if terminate.is_none() && !pace.is_zero() && sub.last_sent_at.is_some_and(|t| t.elapsed() < pace) {
            sub.dirty = true;
            return;
        }
        let latest = self.fanout.latest(sub.user);
        let view: Option<&MergedView> = latest.as_ref().map(|l| &l.view);
        // Skip a NOTIFY that would say what the last one said (a refresh clears `last_body`).
        let (ct, body) = match sub.package {
            Package::Presence => {
                let contact = self.directory.current().person(sub.user).and_then(|p| p.sip_uri().map(str::to_string)).unwrap_or_else(|| sub.entity.clone());
                let body = render::pidf(&sub.entity, &contact, view);
                let h = hash(&body);
                if terminate.is_none() && sub.last_body == Some(h) {
                    return;
                }
                sub.last_body = Some(h);
                ("application/pidf+xml", body)
            }
            Package::Dialog => {
                let lamp = render::lamp(view) as u64;
                if terminate.is_none() && sub.last_body == Some(lamp) {
                    return;
                }
                sub.last_body = Some(lamp);
                let v = sub.version;
                sub.version += 1;
                ("application/dialog-info+xml", render::dialog_info(&sub.entity, v, view))
            }
        };
        let state = match terminate {
            Some(t) => t.to_string(),
            None => {
                let left = sub.expires_at.saturating_duration_since(Instant::now()).as_secs();
                format!("active;expires={left}")
            }
        };
        sub.cseq += 1;
        sub.in_flight = true;
        sub.dirty = false;
        sub.last_sent_at = Some(Instant::now());
        let (via, branch) = self.ep.via(sub.target.transport);
        let event = match sub.package {
            Package::Presence => "presence",
            Package::Dialog => "dialog",
        };
        let req = Builder::request("NOTIFY", &sub.remote_uri)
            .header("Via", &via)
            .header("Max-Forwards", "70")
            .header("From", &sub.local_hdr)
            .header("To", &sub.remote_hdr)
            .header("Call-ID", &sub.call_id)
            .header("CSeq", &format!("{} NOTIFY", sub.cseq))
            .header("Contact", &self.ep.contact("presence-hub", sub.target.transport))
            .header("Event", event)
            .header("Subscription-State", &state)
            .body(ct, body)
            .build();
        let ep = self.ep.clone();
        let target = sub.target;
        let done = self.done_tx.clone();
        let key = key.to_string();
        let terminate = terminate.is_some();
        tokio::spawn(async move {
            let r = ep.request_timeout(target, &branch, req, Duration::from_secs(8)).await;
            let ok = matches!(&r, Ok(m) if m.code().is_some_and(|c| (200..300).contains(&c)));
            if let Ok(m) = &r {
                if !ok {
                    debug!(code = m.code(), "sip: NOTIFY refused");
                }
            }
            let _ = done.send(NotifyDone { key, ok, terminate });
        });
    }

    fn on_notify_done(&mut self, d: NotifyDone) {
        if d.ok {
            self.stats.notifies_sent.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.notifies_failed.fetch_add(1, Ordering::Relaxed);
        }
        if d.terminate || !d.ok {
            self.remove_sub(&d.key);
            return;
        }
        if let Some(s) = self.subs.get_mut(&d.key) {
            s.in_flight = false;
            if s.dirty {
                self.send_notify(&d.key, None);
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self.subs.iter().filter(|(_, s)| s.expires_at <= now && !s.in_flight).map(|(k, _)| k.clone()).collect();
        for k in expired {
            self.send_notify(&k, Some("terminated;reason=timeout"));
        }
        // Paced subscriptions whose interval has passed.
        if self.cfg.min_notify_interval_ms > 0 {
            let due: Vec<String> = self.subs.iter().filter(|(_, s)| s.dirty && !s.in_flight).map(|(k, _)| k.clone()).collect();
            for k in due {
                self.send_notify(&k, None);
            }
        }
        let ep = self.ep.stats();
        self.sink.feed().set_details(serde_json::json!({
            "listen": self.ep.local_addr().to_string(),
            "tls_listen": self.ep.tls_addr().map(|a| a.to_string()),
            "subscriptions": self.subs.len(),
            "publications": self.pubs.len(),
            "notifies_sent": self.stats.notifies_sent.load(Ordering::Relaxed),
            "notifies_failed": self.stats.notifies_failed.load(Ordering::Relaxed),
            "auth_failures": self.stats.auth_failures.load(Ordering::Relaxed),
            "received": ep.received.load(Ordering::Relaxed),
            "malformed": ep.malformed.load(Ordering::Relaxed),
            "retransmissions": ep.retransmissions.load(Ordering::Relaxed),
            "overload_503": ep.overload_503.load(Ordering::Relaxed),
        }));
        let before = self.pubs.len();
        self.pubs.retain(|_, p| p.expires_at > now);
        if self.pubs.len() != before {
            self.stats.publications.store(self.pubs.len() as u64, Ordering::Relaxed);
        }
    }

    // ---- PUBLISH ---------------------------------------------------------------------------

    async fn on_publish(&mut self, req: Incoming) {
        if !self.cfg.publish {
            return self.ep.reply(&req, 405, "Method Not Allowed").await;
        }
        if !req.msg.event().is_some_and(|e| e.eq_ignore_ascii_case("presence")) {
            let r = Builder::response_to(&req.msg, 489, "Bad Event", Some(&self.ep.token())).header("Allow-Events", "presence");
            return self.ep.respond(&req, r).await;
        }
        if self.authenticate(&req, true).await.is_none() {
            return;
        }
        let Some(expires) = self.granted_expires(&req).await else { return };
        let has_body = !req.msg.body.is_empty();
        if has_body && req.msg.content_type().as_deref() != Some(pidf::CONTENT_TYPE) {
            let r = Builder::response_to(&req.msg, 415, "Unsupported Media Type", Some(&self.ep.token())).header("Accept", pidf::CONTENT_TYPE);
            return self.ep.respond(&req, r).await;
        }
        let if_match = req.msg.header(&presence_sip::message::sip_if_match()).map(str::to_string);
        let now = now_ms();
        let until = now + expires as i64 * 1000;
        let (etag, pubn) = match if_match {
            None => {
                if !has_body {
                    return self.ep.reply(&req, 400, "Bad Request (initial PUBLISH needs a body)").await;
                }
                if expires == 0 {
                    return self.ep.reply(&req, 400, "Bad Request (Expires 0 without SIP-If-Match)").await;
                }
                let uri = req.msg.request_uri().unwrap_or("").to_string();
                let Some(user) = self.resolve_aor(&uri) else {
                    return self.ep.reply(&req, 404, "Not Found").await;
                };
                if self.pubs.len() >= self.cfg.max_publications {
                    let r = Builder::response_to(&req.msg, 503, "Service Unavailable (publication limit)", Some(&self.ep.token())).header("Retry-After", "60");
                    return self.ep.respond(&req, r).await;
                }
                let instance = format!("publish:{}", &self.ep.token()[..8]);
                let Some(doc) = self.pidf_doc(&req).await else { return };
                (self.ep.token(), Publication { user, instance, expires_at: Instant::now(), doc })
            }
            Some(tag) => {
                let Some(mut p) = self.pubs.remove(&tag) else {
                    return self.ep.reply(&req, 412, "Conditional Request Failed").await;
                };
                if expires == 0 {
                    // Remove: the source retracts.
                    let _ = self.sink.send_to(p.user, Signal::new(Source::Sip, &p.instance, None, now));
                    self.stats.publications.store(self.pubs.len() as u64, Ordering::Relaxed);
                    let r = Builder::response_to(&req.msg, 200, "OK", None).header("SIP-ETag", &self.ep.token()).header("Expires", "0");
                    return self.ep.respond(&req, r).await;
                }
                if has_body {
                    let Some(doc) = self.pidf_doc(&req).await else {
                        self.pubs.insert(tag, p);
                        return;
                    };
                    p.doc = doc;
                }
                (self.ep.token(), p)
            }
        };
        let mut pubn = pubn;
        pubn.expires_at = Instant::now() + Duration::from_secs(expires as u64);
        // The document as it stands now; its own next change never outlives the publication.
        let mut signal = presence_providers::sip::map::pidf_to_signal(&pubn.doc, Source::Sip, &pubn.instance, now);
        signal.valid_until = Some(until.min(signal.valid_until.unwrap_or(i64::MAX)));
        if let Err(e) = self.sink.send_to(pubn.user, signal) {
            warn!(error = %e, "sip: publication not delivered");
        }
        self.pubs.insert(etag.clone(), pubn);
        self.stats.publications.store(self.pubs.len() as u64, Ordering::Relaxed);
        let r = Builder::response_to(&req.msg, 200, "OK", None).header("SIP-ETag", &etag).header("Expires", &expires.to_string());
        self.ep.respond(&req, r).await;
    }

    /// The PUBLISH body as a PIDF document; `None` once answered `400`.
    async fn pidf_doc(&self, req: &Incoming) -> Option<pidf::PidfDoc> {
        match pidf::parse_pidf(&req.msg.body) {
            Ok(doc) => Some(doc),
            Err(e) => {
                let reason = format!("Bad Request ({e})");
                self.ep.reply(req, 400, &reason).await;
                None
            }
        }
    }
}

fn hash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
