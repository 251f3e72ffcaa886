//! A Skype for Business front-end pool simulator speaking real SIP over real sockets
//! (`presence_sip::Endpoint`, UDP and TCP on one loopback port), from the documented shapes of
//! [MS-PRES] §2.2.2.4.1 and [MS-SIP] §3.3.5.1:
//!
//! - **Batched category SUBSCRIBE** to the subscriber's own URI: `Event: presence`,
//!   `Require: adhoclist, categoryList`, an `Accept` naming `application/rlmi+xml` and
//!   `multipart/related`, and a `batchSub` body (`application/msrtc-adrl-categorylist+xml`).
//!   Answered `200` with `Expires` and — when the request says `Supported:
//!   ms-piggyback-first-notify` — the first notification in the `200`'s body:
//!   `multipart/related` with an RLMI root (`version` 0) and one
//!   `application/msrtc-event-categories+xml` part per resource. Resources the pool does not
//!   know get `state="terminated" reason="noresource"`; people homed on another pool get
//!   `state="resubscribe" poolFqdn="…"`.
//! - **Single category SUBSCRIBE** to a contact's URI (what a watcher sends after
//!   `resubscribe`; `batchSub` body with that one resource, optional): answered alike, with the
//!   categories document itself as the body.
//! - Later changes go out as `BENOTIFY` (default; no response expected) or `NOTIFY`
//!   ([`NotifyMethod`]), RLMI `version` increasing per subscription, `fullState="false"`,
//!   carrying only the categories that changed (an empty category instance deletes one).
//! - Refreshes (in-dialog SUBSCRIBE) and un-SUBSCRIBEs (`Expires: 0`); `481` for a dialog it
//!   does not know; `OPTIONS` answered `200`.
//! - Optional digest authentication of every SUBSCRIBE with one configured account.
//! - Optional **SIP over TLS** ([`SfbSimTls`]) on a port of its own, as a real pool listens on
//!   5061: the pool's certificate, and mutual TLS — a client must present a certificate from
//!   the configured CA (others are refused in the handshake). A client whose certificate names
//!   a **trusted application** pool (CN or DNS subjectAltName among
//!   [`SfbSimTls::trusted_applications`], as a pool matches the certificate against the
//!   topology's `New-CsTrustedApplicationPool` FQDNs) needs no digest; any other TLS client is
//!   challenged like a user (`401`), which without the account it cannot answer.
//!
//! SIP messages here stay below the SIP crate's 64 KiB limit: a full state that does not fit
//! one message is split, the first part in the `200`, the rest in notifications right after
//! it (all then `fullState="false"`).
//!
//! Per person it keeps an aggregateState (availability, activity token, custom text), a
//! personal note, an OOF note and an optional calendarState with meeting subject and location
//! ([`SfbPresence`]); tests and the demo change them with [`SfbSim::set`] /
//! [`SfbSim::set_many`], or let [`SfbSim::drive_demo`] do it. Misbehaviour for tests:
//! [`SfbSim::restart`] (forget every subscription and answer nothing for a while, then `481`
//! to refreshes), [`SfbSim::garble`] (a malformed categories part for one person),
//! [`SfbSim::deactivate`] (`terminated;reason=deactivated`), [`SfbSim::home_elsewhere`]
//! (move a person to another pool).
//!
//! The simulator runs on a thread of its own with its own tokio runtime, so its methods are
//! plain synchronous calls usable from any runtime (or none).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ezk_sip_types::Name;
use presence_sip::auth::{AuthError, DigestServer, Ha1};
use presence_sip::body::msrtc::{
    self, Activity, BatchAction, Categories, Category, CategoryValue, CustomText, NoteBody, NoteKind, State, StateKind,
};
use presence_sip::body::rlmi::{self, Instance, InstanceState, Resource, ResourcePart, Rlmi, RlmiNotify};
use presence_sip::endpoint::{Endpoint, EndpointConfig, Incoming, Peer, TlsSettings, Transport};
use presence_sip::message::{name_addr_uri, uri_host_port, uri_user, Builder};
use tokio::sync::mpsc;

use crate::graph::Rng;

/// Instance id of the aggregateState category (the server publishes it as instance 1:
/// "Aggregation containers" in the Lync schema docs).
const AGGREGATE_INSTANCE: u64 = 1;
/// Instance id of the calendarState category (a hash of the mailbox in real deployments).
const CALENDAR_INSTANCE: u64 = 1_906_451_226;
/// Instance id of the note category.
const NOTE_INSTANCE: u64 = 0;

/// How later notifications are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyMethod {
    /// `BENOTIFY`: best effort, no response expected (what SfB sends to `ms-benotify` watchers).
    #[default]
    Benotify,
    /// `NOTIFY`: answered by the watcher; a `481` or no answer ends the subscription.
    Notify,
}

/// Settings of an [`SfbSim`].
#[derive(Debug, Clone)]
pub struct SfbSimConfig {
    /// Where to listen (UDP and TCP share the port; port 0 picks one).
    pub listen: SocketAddr,
    /// Listen on UDP too (TCP always).
    pub udp: bool,
    /// Digest account `(user, password)` every SUBSCRIBE must authenticate with; `None`: open.
    pub account: Option<(String, String)>,
    /// Digest realm.
    pub realm: String,
    /// How changes are sent.
    pub notify: NotifyMethod,
    /// Longest subscription granted, in seconds.
    pub max_expires: u32,
    /// Shortest subscription accepted (`423` below it), in seconds.
    pub min_expires: u32,
    /// People homed on another pool: `(SIP URI, poolFqdn)`; they get `resubscribe`.
    pub homed_elsewhere: Vec<(String, String)>,
    /// Largest notification body, in bytes (full states beyond it are split).
    pub body_budget: usize,
    /// SIP over TLS with mutual TLS (module docs); `None`: UDP and TCP only.
    pub tls: Option<SfbSimTls>,
    /// Send notifications to the subscriber's Contact — over TLS, a new connection to a
    /// trusted application's own port, presenting the pool's certificate — instead of over
    /// the SUBSCRIBE's connection.
    pub notify_to_contact: bool,
    /// Host names of Contacts and their addresses (the tests' DNS: `hub.example.test`).
    pub hosts: Vec<(String, std::net::IpAddr)>,
}

/// The simulated pool's TLS listener (module docs).
#[derive(Debug, Clone)]
pub struct SfbSimTls {
    /// The pool's certificate chain and key (PEM).
    pub cert_file: PathBuf,
    /// Its key.
    pub key_file: PathBuf,
    /// Client certificates must chain to this CA (PEM).
    pub client_ca_file: PathBuf,
    /// Trusted application pool FQDNs: a client certificate naming one (CN or DNS
    /// subjectAltName) is a trusted application and needs no digest.
    pub trusted_applications: Vec<String>,
}

/// Where a Contact is reached (`sip:user@host:port;transport=…`), the host looked up in
/// [`SfbSimConfig::hosts`]; over TLS the endpoint checks the certificate against that host.
fn contact_peer(inner: &Inner, cfg: &SfbSimConfig, contact: &str) -> Option<Peer> {
    let hp = uri_host_port(contact)?;
    let (host, port) = hp.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip,
        Err(_) => cfg.hosts.iter().find(|(h, _)| h.eq_ignore_ascii_case(host))?.1,
    };
    let lower = contact.to_ascii_lowercase();
    let transport = if lower.contains(";transport=tls") {
        Transport::Tls
    } else if lower.contains(";transport=tcp") {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let addr = SocketAddr::new(ip, port);
    if transport == Transport::Tls {
        inner.ep.set_tls_name(addr, presence_sip::tls::server_name(host).ok()?);
    }
    Some(Peer { transport, addr })
}

/// The DNS names of a certificate (DER): its subject CNs and DNS subjectAltNames, lower case.
fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let mut names: Vec<String> = cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(|s| s.to_ascii_lowercase()).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    names
}

impl Default for SfbSimConfig {
    fn default() -> Self {
        SfbSimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            udp: true,
            account: None,
            realm: "SfB Simulator".into(),
            notify: NotifyMethod::Benotify,
            max_expires: 3600,
            min_expires: 60,
            homed_elsewhere: Vec::new(),
            body_budget: 48 * 1024,
            tls: None,
            notify_to_contact: false,
            hosts: Vec::new(),
        }
    }
}

/// A meeting shown by the calendarState.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meeting {
    /// `meetingSubject`.
    pub subject: String,
    /// `meetingLocation`.
    pub location: String,
}

/// One person's presence as the pool publishes it to watchers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SfbPresence {
    /// The aggregateState availability (3500, 6500, 6900, 9500, …; 0: none).
    pub availability: u32,
    /// The aggregateState activity token (`on-the-phone`, `in-a-meeting`, …).
    pub activity: Option<String>,
    /// Custom activity text (LCID 1033).
    pub custom: Option<String>,
    /// The personal note.
    pub note: Option<String>,
    /// The out-of-office note.
    pub oof_note: Option<String>,
    /// A calendarState with meeting subject and location.
    pub meeting: Option<Meeting>,
}

impl SfbPresence {
    /// Availability only.
    pub fn new(availability: u32) -> SfbPresence {
        SfbPresence { availability, ..SfbPresence::default() }
    }

    /// 3500, nothing else.
    pub fn available() -> SfbPresence {
        SfbPresence::new(3500)
    }

    /// With an activity token.
    pub fn activity(mut self, token: &str) -> SfbPresence {
        self.activity = Some(token.into());
        self
    }

    /// With custom activity text.
    pub fn custom(mut self, text: &str) -> SfbPresence {
        self.custom = Some(text.into());
        self
    }

    /// With a personal note.
    pub fn note(mut self, text: &str) -> SfbPresence {
        self.note = Some(text.into());
        self
    }

    /// With an out-of-office note.
    pub fn oof(mut self, text: &str) -> SfbPresence {
        self.oof_note = Some(text.into());
        self
    }

    /// With a meeting in the calendarState.
    pub fn meeting(mut self, subject: &str, location: &str) -> SfbPresence {
        self.meeting = Some(Meeting { subject: subject.into(), location: location.into() });
        self
    }

    fn same_state(&self, o: &SfbPresence) -> bool {
        self.availability == o.availability && self.activity == o.activity && self.custom == o.custom
    }

    fn same_note(&self, o: &SfbPresence) -> bool {
        self.note == o.note && self.oof_note == o.oof_note
    }
}

/// Counters, read with [`SfbSim::stats`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SfbSimStats {
    /// Batched SUBSCRIBEs accepted.
    pub batched_subscribes: u64,
    /// Single-resource SUBSCRIBEs accepted.
    pub single_subscribes: u64,
    /// Refreshes accepted.
    pub refreshes: u64,
    /// Un-SUBSCRIBEs.
    pub unsubscribes: u64,
    /// `401` challenges sent.
    pub challenges: u64,
    /// SUBSCRIBEs accepted from a trusted application (its TLS certificate, no digest).
    pub trusted: u64,
    /// SUBSCRIBEs refused (4xx other than 401).
    pub refused: u64,
    /// Refreshes answered `481`.
    pub unknown_dialogs: u64,
    /// First notifications piggy-backed on a `200`.
    pub piggybacked: u64,
    /// NOTIFYs sent.
    pub notifies: u64,
    /// BENOTIFYs sent.
    pub benotifies: u64,
    /// OPTIONS answered.
    pub options: u64,
    /// Requests left unanswered while "restarting".
    pub ignored: u64,
    /// Resources answered `noresource`.
    pub noresource: u64,
    /// Resources answered `resubscribe`.
    pub resubscribe: u64,
    /// Malformed categories parts sent.
    pub garbled: u64,
}

/// A subscription as [`SfbSim::subscriptions`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// Call-ID.
    pub call_id: String,
    /// Batched (RLMI) or single.
    pub batched: bool,
    /// The subscribed resources.
    pub resources: Vec<String>,
    /// The subscriber (From URI).
    pub subscriber: String,
    /// Notifications sent so far (RLMI version of the last one).
    pub version: u64,
    /// Where notifications go.
    pub notify_to: SocketAddr,
}

struct Person {
    uri: String,
    presence: SfbPresence,
    state_at: i64,
    note_at: i64,
    meeting_at: i64,
}

struct Sub {
    call_id: String,
    local_tag: String,
    /// The subscriber's From (name-addr with tag): our To.
    remote: String,
    /// The SUBSCRIBE's To URI: our From.
    local_uri: String,
    /// RLMI list URI (the subscriber).
    list_uri: String,
    /// The subscriber's Contact: our Request-URI.
    target: String,
    peer: Peer,
    /// Lower-case resource URIs.
    resources: Vec<String>,
    batched: bool,
    version: u64,
    cseq: u32,
    expires_at: Instant,
}

struct Pool {
    cfg: SfbSimConfig,
    people: HashMap<String, Person>,
    elsewhere: HashMap<String, String>,
    garbled: HashSet<String>,
    subs: Vec<Sub>,
    silent_until: Option<Instant>,
    notify: NotifyMethod,
    stats: SfbSimStats,
    last_publish: i64,
    boundary: u64,
}

enum Out {
    Respond(Box<Incoming>, Builder),
    Request { call_id: String, peer: Peer, branch: String, bytes: Bytes, oneway: bool },
}

struct Inner {
    ep: Endpoint,
    state: Mutex<Pool>,
    out: mpsc::UnboundedSender<Out>,
    digest: DigestServer,
}

/// The running simulator; stops when dropped.
pub struct SfbSim {
    inner: Arc<Inner>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn key(uri: &str) -> String {
    name_addr_uri(uri).trim().to_ascii_lowercase()
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl SfbSim {
    /// Starts a pool on `cfg.listen`.
    pub fn start(cfg: SfbSimConfig) -> std::io::Result<SfbSim> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("sfb-sim".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let tls = match &cfg.tls {
                    None => TlsSettings::default(),
                    // Connections it opens (to a trusted application's port) present the pool's
                    // certificate and check the application's against the same CA.
                    Some(t) => match (
                        presence_sip::tls::server_config(&t.cert_file, &t.key_file, Some(&t.client_ca_file)),
                        presence_sip::tls::client_config(&t.client_ca_file, Some((&t.cert_file, &t.key_file))),
                    ) {
                        (Ok(server), Ok(client)) => TlsSettings {
                            listen: Some((SocketAddr::new(cfg.listen.ip(), 0), Arc::new(server))),
                            connect: Some((Arc::new(client), presence_sip::tls::server_name("localhost").expect("a name"))),
                        },
                        (Err(e), _) | (_, Err(e)) => {
                            let _ = tx.send(Err(std::io::Error::other(e.to_string())));
                            return;
                        }
                    },
                };
                let ep_cfg = EndpointConfig {
                    listen: cfg.listen,
                    udp: cfg.udp,
                    tcp: true,
                    transaction_timeout: Duration::from_secs(5),
                    user_agent: "RTC/6.0 (presence-hub SfB simulator)".into(),
                    tls,
                    ..EndpointConfig::default()
                };
                let (ep, requests) = match Endpoint::bind(ep_cfg).await {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let (out, out_rx) = mpsc::unbounded_channel();
                let digest = DigestServer::new(&cfg.realm);
                let elsewhere = cfg.homed_elsewhere.iter().map(|(u, p)| (key(u), p.clone())).collect();
                let notify = cfg.notify;
                let state = Pool {
                    cfg,
                    people: HashMap::new(),
                    elsewhere,
                    garbled: HashSet::new(),
                    subs: Vec::new(),
                    silent_until: None,
                    notify,
                    stats: SfbSimStats::default(),
                    last_publish: 0,
                    boundary: 0,
                };
                let inner = Arc::new(Inner { ep: ep.clone(), state: Mutex::new(state), out, digest });
                let _ = tx.send(Ok(inner.clone()));
                tokio::select! {
                    _ = stop_rx => {}
                    _ = serve(inner.clone(), requests) => {}
                    _ = send_loop(inner.clone(), out_rx) => {}
                }
                ep.shutdown();
            });
        })?;
        let inner = rx.recv().map_err(|e| std::io::Error::other(e.to_string()))??;
        let addr = inner.ep.local_addr();
        Ok(SfbSim { inner, addr, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// The pool's address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The pool's TLS address, when it speaks TLS ([`SfbSimConfig::tls`]).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.inner.ep.tls_addr()
    }

    /// `127.0.0.1:PORT`, as another pool names this one in `poolFqdn` (its TLS port when it
    /// speaks TLS).
    pub fn pool_fqdn(&self) -> String {
        self.tls_addr().unwrap_or(self.addr).to_string()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets everyone in `uris` to `presence` (one notification per subscription).
    pub fn seed(&self, uris: &[String], presence: SfbPresence) {
        self.set_many(uris.iter().map(|u| (u.clone(), presence.clone())).collect());
    }

    /// Sets one person's presence (adding them to the pool if new); subscribers are notified
    /// of what changed.
    pub fn set(&self, uri: &str, presence: SfbPresence) {
        self.set_many(vec![(uri.to_string(), presence)]);
    }

    /// Sets several people's presence at once: each subscription gets one notification listing
    /// every changed person it watches (split only if it would be too large).
    pub fn set_many(&self, changes: Vec<(String, SfbPresence)>) {
        let mut st = self.lock();
        let mut deltas: HashMap<String, Vec<Category>> = HashMap::new();
        for (uri, p) in changes {
            let k = key(&uri);
            let t = st.publish_time();
            let delta = match st.people.get_mut(&k) {
                Some(person) => {
                    let old = std::mem::replace(&mut person.presence, p);
                    let mut cats = Vec::new();
                    if !old.same_state(&person.presence) {
                        person.state_at = t;
                        cats.push(state_category(person));
                    }
                    if !old.same_note(&person.presence) {
                        person.note_at = t;
                        cats.push(note_category(person));
                    }
                    if old.meeting != person.presence.meeting {
                        person.meeting_at = t;
                        cats.push(calendar_category(person));
                    }
                    cats
                }
                None => {
                    let person = Person {
                        uri: name_addr_uri(&uri).trim().to_string(),
                        presence: p,
                        state_at: t,
                        note_at: t,
                        meeting_at: t,
                    };
                    let cats = full_categories(&person);
                    st.people.insert(k.clone(), person);
                    cats
                }
            };
            if !delta.is_empty() {
                deltas.insert(k, delta);
            }
        }
        if !deltas.is_empty() {
            st.notify_deltas(&self.inner, &deltas);
        }
    }

    /// Removes a person from the pool: watchers get `terminated;reason=noresource`.
    pub fn remove(&self, uri: &str) {
        let mut st = self.lock();
        let k = key(uri);
        if st.people.remove(&k).is_some() {
            st.notify_instances(&self.inner, &k, InstanceState::Terminated, Some("noresource".into()), None);
        }
    }

    /// A person's presence.
    pub fn presence(&self, uri: &str) -> Option<SfbPresence> {
        self.lock().people.get(&key(uri)).map(|p| p.presence.clone())
    }

    /// Moves a person to another pool: watchers get `resubscribe` with `poolFqdn`, and this
    /// pool sends nothing more about them.
    pub fn home_elsewhere(&self, uri: &str, pool_fqdn: &str) {
        let mut st = self.lock();
        let k = key(uri);
        st.elsewhere.insert(k.clone(), pool_fqdn.to_string());
        st.notify_instances(&self.inner, &k, InstanceState::Resubscribe, None, Some(pool_fqdn.to_string()));
    }

    /// Homes a person here again (for new subscriptions).
    pub fn home_here(&self, uri: &str) {
        self.lock().elsewhere.remove(&key(uri));
    }

    /// Sends later changes as BENOTIFY or NOTIFY.
    pub fn set_notify_method(&self, m: NotifyMethod) {
        self.lock().notify = m;
    }

    /// While on, this person's categories parts are malformed XML.
    pub fn garble(&self, uri: &str, on: bool) {
        let mut st = self.lock();
        if on {
            st.garbled.insert(key(uri));
        } else {
            st.garbled.remove(&key(uri));
        }
    }

    /// Simulates a front-end restart: every subscription is forgotten and nothing is answered
    /// (not even OPTIONS) for `silent_for`; afterwards refreshes get `481` and new
    /// subscriptions are accepted.
    pub fn restart(&self, silent_for: Duration) {
        let mut st = self.lock();
        st.subs.clear();
        st.silent_until = Some(Instant::now() + silent_for);
    }

    /// True while a [`SfbSim::restart`] keeps the pool silent.
    pub fn is_silent(&self) -> bool {
        self.lock().silent()
    }

    /// Ends every subscription with `NOTIFY` `Subscription-State: terminated;reason=deactivated`
    /// (watchers should re-subscribe at once).
    pub fn deactivate(&self) {
        let mut st = self.lock();
        let subs = std::mem::take(&mut st.subs);
        for mut sub in subs {
            let req = notify_request(&self.inner.ep, &mut sub, "NOTIFY", "terminated;reason=deactivated", None);
            st.stats.notifies += 1;
            let _ = self.inner.out.send(req);
        }
    }

    /// Counters.
    pub fn stats(&self) -> SfbSimStats {
        self.lock().stats.clone()
    }

    /// The live subscriptions.
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        self.lock()
            .subs
            .iter()
            .map(|s| SubscriptionInfo {
                call_id: s.call_id.clone(),
                batched: s.batched,
                resources: s.resources.clone(),
                subscriber: s.list_uri.clone(),
                version: s.version,
                notify_to: s.peer.addr,
            })
            .collect()
    }
}

impl Drop for SfbSim {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Categories.

fn ts(ms: i64) -> Option<jiff::Timestamp> {
    jiff::Timestamp::from_millisecond(ms).ok()
}

fn bounds(token: Option<&str>) -> (Option<u32>, Option<u32>) {
    match token {
        Some("on-the-phone" | "in-a-conference" | "in-a-meeting") => (Some(6500), Some(8999)),
        Some("urgent-interruptions-only") => (Some(6900), Some(8999)),
        Some("in-presentation" | "presenting") => (Some(9000), Some(11999)),
        Some("out-of-office") => (Some(12000), None),
        Some("off-work") => (Some(15000), Some(17999)),
        _ => (None, None),
    }
}

fn state_category(p: &Person) -> Category {
    let pr = &p.presence;
    let activity = (pr.activity.is_some() || pr.custom.is_some()).then(|| {
        let (min, max) = bounds(pr.activity.as_deref());
        Activity {
            token: pr.activity.clone(),
            min_availability: min,
            max_availability: max,
            custom: pr.custom.iter().map(|t| CustomText { lcid: Some(1033), text: t.clone() }).collect(),
        }
    });
    let state = State {
        kind: StateKind::AggregateState,
        availability: (pr.availability > 0).then_some(pr.availability),
        activity,
        last_active: ts(p.state_at),
        device: Some("computer".into()),
        ..State::default()
    };
    Category {
        name: "state".into(),
        instance: AGGREGATE_INSTANCE,
        publish_time: ts(p.state_at),
        value: CategoryValue::State(state),
        ..Category::default()
    }
}

fn note_category(p: &Person) -> Category {
    let mut bodies = Vec::new();
    if let Some(t) = &p.presence.oof_note {
        bodies.push(NoteBody { kind: NoteKind::Oof, text: t.clone(), lcid: Some(1033), ..NoteBody::default() });
    }
    if let Some(t) = &p.presence.note {
        bodies.push(NoteBody { kind: NoteKind::Personal, text: t.clone(), ..NoteBody::default() });
    }
    let value = if bodies.is_empty() { CategoryValue::Other } else { CategoryValue::Note(bodies) };
    Category { name: "note".into(), instance: NOTE_INSTANCE, publish_time: ts(p.note_at), value, ..Category::default() }
}

fn calendar_category(p: &Person) -> Category {
    let value = match &p.presence.meeting {
        None => CategoryValue::Other,
        Some(m) => CategoryValue::State(State {
            kind: StateKind::CalendarState,
            availability: Some(6500),
            activity: Some(Activity {
                token: Some("in-a-meeting".into()),
                min_availability: Some(6500),
                max_availability: Some(8999),
                custom: Vec::new(),
            }),
            start_time: ts(p.meeting_at),
            uri: Some(p.uri.trim_start_matches("sip:").to_string()),
            meeting_subject: Some(m.subject.clone()),
            meeting_location: Some(m.location.clone()),
            ..State::default()
        }),
    };
    Category {
        name: "state".into(),
        instance: CALENDAR_INSTANCE,
        publish_time: ts(p.meeting_at),
        value,
        ..Category::default()
    }
}

/// Everything a watcher sees of a person (absent note and meeting are left out).
fn full_categories(p: &Person) -> Vec<Category> {
    let mut v = vec![state_category(p)];
    if p.presence.note.is_some() || p.presence.oof_note.is_some() {
        v.push(note_category(p));
    }
    if p.presence.meeting.is_some() {
        v.push(calendar_category(p));
    }
    v
}

/// Malformed on purpose: the document is cut inside an element.
fn garbled_part(uri: &str) -> Vec<u8> {
    format!(
        r#"<categories xmlns="{}" uri="{}"><category name="state" instance="1"><state><availability>65"#,
        msrtc::NS_CATEGORIES,
        uri
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Notifications.

/// What one resource of a notification says.
struct Entry {
    uri: String,
    state: InstanceState,
    reason: Option<String>,
    pool: Option<String>,
    body: Option<Vec<u8>>,
}

impl Pool {
    fn silent(&self) -> bool {
        self.silent_until.is_some_and(|t| Instant::now() < t)
    }

    /// A publish time in ms, strictly increasing.
    fn publish_time(&mut self) -> i64 {
        self.last_publish = now_ms().max(self.last_publish + 1);
        self.last_publish
    }

    fn categories_body(&mut self, k: &str, uri: &str, cats: Vec<Category>) -> Vec<u8> {
        if self.garbled.contains(k) {
            self.stats.garbled += 1;
            return garbled_part(uri);
        }
        msrtc::build_categories(&Categories { uri: uri.to_string(), categories: cats }).into_bytes()
    }

    /// The full-state entry of one resource.
    fn full_entry(&mut self, k: &str) -> Entry {
        if let Some(pool) = self.elsewhere.get(k).cloned() {
            self.stats.resubscribe += 1;
            return Entry {
                uri: k.to_string(),
                state: InstanceState::Resubscribe,
                reason: None,
                pool: Some(pool),
                body: None,
            };
        }
        match self.people.get(k) {
            Some(p) => {
                let (uri, cats) = (p.uri.clone(), full_categories(p));
                let body = self.categories_body(k, &uri, cats);
                Entry { uri, state: InstanceState::Active, reason: None, pool: None, body: Some(body) }
            }
            None => {
                self.stats.noresource += 1;
                Entry {
                    uri: k.to_string(),
                    state: InstanceState::Terminated,
                    reason: Some("noresource".into()),
                    pool: None,
                    body: None,
                }
            }
        }
    }

    /// RLMI bodies for `entries`, split to stay within the budget; versions from the sub.
    fn rlmi_bodies(&mut self, sub: &mut Sub, entries: Vec<Entry>, full: bool) -> Vec<(String, Vec<u8>)> {
        let budget = self.cfg.body_budget.max(1024);
        let mut chunks: Vec<Vec<Entry>> = vec![Vec::new()];
        let mut size = 0usize;
        for e in entries {
            let cost = 400 + e.uri.len() * 2 + e.body.as_ref().map_or(0, Vec::len);
            if size + cost > budget && chunks.last().is_some_and(|c| !c.is_empty()) {
                chunks.push(Vec::new());
                size = 0;
            }
            size += cost;
            if let Some(c) = chunks.last_mut() {
                c.push(e);
            }
        }
        let whole = chunks.len() == 1;
        let mut out = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let version = sub.version;
            sub.version += 1;
            let mut list = Rlmi { uri: sub.list_uri.clone(), version, full_state: full && whole, ..Rlmi::default() };
            let mut parts = Vec::new();
            for (i, e) in chunk.into_iter().enumerate() {
                let idx = sub.resources.iter().position(|r| *r == key(&e.uri)).unwrap_or(i);
                let cid = e.body.as_ref().map(|_| format!("{idx}.{version}@sfb-sim"));
                let instance = Instance {
                    id: format!("{}", idx + 1),
                    state: e.state,
                    reason: e.reason,
                    cid: cid.clone(),
                    pool_fqdn: e.pool,
                };
                list.resources.push(Resource { uri: e.uri.clone(), name: None, instances: vec![instance.clone()] });
                parts.push(ResourcePart {
                    uri: e.uri,
                    instance,
                    content_type: e.body.as_ref().map(|_| msrtc::CONTENT_TYPE.to_string()),
                    body: e.body,
                });
            }
            self.boundary += 1;
            let n = RlmiNotify { list, resources: parts };
            match rlmi::build_rlmi_notify(&n, &format!("sfbsim_{}_{}", self.boundary, version)) {
                Ok(b) => out.push(b),
                Err(e) => tracing::warn!(error = %e, "sfb sim: notification not built"),
            }
        }
        out
    }

    /// Sends each subscription watching a changed person one notification (or a few).
    fn notify_deltas(&mut self, inner: &Inner, deltas: &HashMap<String, Vec<Category>>) {
        let mut subs = std::mem::take(&mut self.subs);
        for sub in subs.iter_mut() {
            let watched: Vec<String> = sub
                .resources
                .iter()
                .filter(|r| deltas.contains_key(*r) && !self.elsewhere.contains_key(*r))
                .cloned()
                .collect();
            if watched.is_empty() {
                continue;
            }
            let mut entries = Vec::new();
            for k in watched {
                let Some(uri) = self.people.get(&k).map(|p| p.uri.clone()) else { continue };
                let body = self.categories_body(&k, &uri, deltas[&k].clone());
                entries.push(Entry { uri, state: InstanceState::Active, reason: None, pool: None, body: Some(body) });
            }
            self.send_entries(inner, sub, entries);
        }
        self.subs = subs;
    }

    /// Tells the subscriptions watching `k` about a new instance state.
    fn notify_instances(
        &mut self,
        inner: &Inner,
        k: &str,
        state: InstanceState,
        reason: Option<String>,
        pool: Option<String>,
    ) {
        let mut subs = std::mem::take(&mut self.subs);
        for sub in subs.iter_mut().filter(|s| s.resources.iter().any(|r| r == k)) {
            let e = Entry {
                uri: k.to_string(),
                state: state.clone(),
                reason: reason.clone(),
                pool: pool.clone(),
                body: None,
            };
            self.send_entries(inner, sub, vec![e]);
        }
        self.subs = subs;
    }

    fn send_entries(&mut self, inner: &Inner, sub: &mut Sub, entries: Vec<Entry>) {
        let method = match self.notify {
            NotifyMethod::Benotify => "BENOTIFY",
            NotifyMethod::Notify => "NOTIFY",
        };
        let bodies = if sub.batched {
            self.rlmi_bodies(sub, entries, false)
        } else {
            // A single subscription: the categories document itself; instance changes of a
            // single resource go as RLMI, which SfB also does.
            match entries.into_iter().next() {
                Some(Entry { body: Some(b), state: InstanceState::Active, .. }) => {
                    vec![(msrtc::CONTENT_TYPE.to_string(), b)]
                }
                Some(e) => self.rlmi_bodies(sub, vec![e], false),
                None => Vec::new(),
            }
        };
        for (ct, body) in bodies {
            let req = notify_request(&inner.ep, sub, method, "active", Some((ct, body)));
            match method {
                "BENOTIFY" => self.stats.benotifies += 1,
                _ => self.stats.notifies += 1,
            }
            let _ = inner.out.send(req);
        }
    }
}

/// A NOTIFY/BENOTIFY of `sub`'s dialog.
fn notify_request(ep: &Endpoint, sub: &mut Sub, method: &str, sub_state: &str, body: Option<(String, Vec<u8>)>) -> Out {
    sub.cseq += 1;
    let (via, branch) = ep.via(sub.peer.transport);
    let remaining = sub.expires_at.saturating_duration_since(Instant::now()).as_secs();
    let sub_state = if sub_state == "active" { format!("active;expires={remaining}") } else { sub_state.to_string() };
    let mut b = Builder::request(method, &sub.target)
        .header("Via", &via)
        .header("Max-Forwards", "70")
        .header("From", &format!("<{}>;tag={}", sub.local_uri, sub.local_tag))
        .header("To", &sub.remote)
        .header("Call-ID", &sub.call_id)
        .header("CSeq", &format!("{} {method}", sub.cseq))
        .header("Contact", &ep.contact("pool", sub.peer.transport))
        .header("Event", "presence")
        .header("Subscription-State", &sub_state)
        .header("User-Agent", ep.user_agent());
    if let Some((ct, body)) = body {
        b = b.body(&ct, body);
    }
    Out::Request {
        call_id: sub.call_id.clone(),
        peer: sub.peer,
        branch,
        bytes: b.build(),
        oneway: method.eq_ignore_ascii_case("BENOTIFY"),
    }
}

// ---------------------------------------------------------------------------------------------
// The SIP side.

async fn serve(inner: Arc<Inner>, mut requests: mpsc::Receiver<Incoming>) {
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            req = requests.recv() => {
                let Some(req) = req else { return };
                handle(&inner, req).await;
            }
            _ = sweep.tick() => {
                let now = Instant::now();
                let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
                st.subs.retain(|s| s.expires_at + Duration::from_secs(5) > now);
            }
        }
    }
}

async fn send_loop(inner: Arc<Inner>, mut out: mpsc::UnboundedReceiver<Out>) {
    while let Some(o) = out.recv().await {
        match o {
            Out::Respond(req, b) => inner.ep.respond(&req, b).await,
            Out::Request { call_id, peer, bytes, oneway: true, .. } => {
                if let Err(e) = inner.ep.send_oneway(peer, bytes).await {
                    tracing::debug!(error = %e, %call_id, "sfb sim: BENOTIFY not sent");
                }
            }
            Out::Request { call_id, peer, branch, bytes, oneway: false } => {
                let code = match inner.ep.request_timeout(peer, &branch, bytes, Duration::from_secs(5)).await {
                    Ok(r) => r.code().unwrap_or(0),
                    Err(_) => 408,
                };
                if code >= 300 {
                    // RFC 6665 §4.2.2: a failed NOTIFY ends the subscription.
                    let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
                    st.subs.retain(|s| s.call_id != call_id);
                }
            }
        }
    }
}

async fn handle(inner: &Arc<Inner>, req: Incoming) {
    let method = req.msg.method().map(|m| m.to_string()).unwrap_or_default();
    {
        let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.silent() {
            st.stats.ignored += 1;
            return;
        }
        if method == "OPTIONS" {
            st.stats.options += 1;
        }
    }
    match method.as_str() {
        "OPTIONS" => {
            let b = Builder::response_to(&req.msg, 200, "OK", Some(&inner.ep.token()))
                .header("Allow", "SUBSCRIBE, NOTIFY, BENOTIFY, OPTIONS")
                .header("Supported", "eventlist, ms-benotify, ms-piggyback-first-notify");
            inner.ep.respond(&req, b).await;
        }
        "SUBSCRIBE" => subscribe(inner, req),
        "BENOTIFY" | "ACK" => {}
        _ => {
            let b = Builder::response_to(&req.msg, 405, "Method Not Allowed", Some(&inner.ep.token()))
                .header("Allow", "SUBSCRIBE, OPTIONS");
            inner.ep.respond(&req, b).await;
        }
    }
}

/// Why a SUBSCRIBE is refused: status, reason, extra headers.
type Refusal = (u16, &'static str, Vec<(&'static str, String)>);

fn refuse(code: u16, reason: &'static str) -> Refusal {
    (code, reason, Vec::new())
}

/// `user@host` of a URI, lower case, port and parameters dropped (to compare identities).
fn identity(uri: &str) -> String {
    let user = uri_user(uri).unwrap_or("");
    let host = uri_host_port(uri).unwrap_or("");
    let host = host.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(host, |(h, _)| h);
    format!("{user}@{host}").to_ascii_lowercase()
}

fn subscribe(inner: &Arc<Inner>, req: Incoming) {
    let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
    let result = accept(inner, &mut st, &req);
    if let Err((code, reason, headers)) = result {
        match code {
            401 => st.stats.challenges += 1,
            481 => st.stats.unknown_dialogs += 1,
            _ => st.stats.refused += 1,
        }
        let mut b = Builder::response_to(&req.msg, code, reason, Some(&inner.ep.token()));
        for (n, v) in headers {
            b = b.header(n, &v);
        }
        let _ = inner.out.send(Out::Respond(Box::new(req), b));
    }
}

/// Checks and accepts a SUBSCRIBE (answers it through the send queue), or says why not.
fn accept(inner: &Arc<Inner>, st: &mut Pool, req: &Incoming) -> Result<(), Refusal> {
    let msg = &req.msg;
    let trusted = match (&st.cfg.tls, &req.peer_certificate) {
        (Some(t), Some(cert)) if req.peer.transport == Transport::Tls => {
            let names = certificate_names(cert);
            t.trusted_applications.iter().any(|a| names.contains(&a.to_ascii_lowercase()))
        }
        _ => false,
    };
    if trusted {
        st.stats.trusted += 1;
    } else if st.cfg.account.is_none() && st.cfg.tls.is_some() && req.peer.transport == Transport::Tls {
        // Not a trusted application, and no account to log in with: challenged like a user
        // whose credentials the pool will never accept.
        let challenges = inner.digest.challenges(false);
        return Err((401, "Unauthorized", challenges.into_iter().map(|c| ("WWW-Authenticate", c)).collect()));
    } else if let Some((user, password)) = st.cfg.account.clone() {
        let realm = inner.digest.realm().to_string();
        let lookup = |u: &str| (u == user).then(|| Ha1::from_password(&user, &realm, &password));
        if let Err(e) = inner.digest.verify(msg, lookup) {
            let challenges = inner.digest.challenges(e == AuthError::Stale);
            return Err((401, "Unauthorized", challenges.into_iter().map(|c| ("WWW-Authenticate", c)).collect()));
        }
    }
    if !msg.event().is_some_and(|e| e.eq_ignore_ascii_case("presence")) {
        return Err((489, "Bad Event", vec![("Allow-Events", "presence".into())]));
    }
    let requested = msg.expires().map_err(|_| refuse(400, "Bad Request (Expires)"))?;
    let granted = requested.unwrap_or(st.cfg.max_expires).min(st.cfg.max_expires);
    if granted > 0 && granted < st.cfg.min_expires {
        return Err((423, "Interval Too Brief", vec![("Min-Expires", st.cfg.min_expires.to_string())]));
    }

    // A refresh or un-SUBSCRIBE of a dialog.
    if let Some(tag) = msg.to.tag.as_deref() {
        let Some(i) = st.subs.iter().position(|s| *s.call_id == *msg.call_id && s.local_tag == tag) else {
            return Err(refuse(481, "Subscription Does Not Exist"));
        };
        if granted == 0 {
            st.subs.remove(i);
            st.stats.unsubscribes += 1;
        } else {
            st.subs[i].expires_at = Instant::now() + Duration::from_secs(granted as u64);
            st.stats.refreshes += 1;
        }
        let b = Builder::response_to(msg, 200, "OK", None).header("Expires", &granted.to_string());
        let _ = inner.out.send(Out::Respond(Box::new(req.clone()), b));
        return Ok(());
    }
    if granted == 0 {
        let b = Builder::response_to(msg, 200, "OK", Some(&inner.ep.token())).header("Expires", "0");
        let _ = inner.out.send(Out::Respond(Box::new(req.clone()), b));
        return Ok(());
    }

    let require: Vec<String> = msg.header_tokens(&Name::REQUIRE).iter().map(|t| t.to_ascii_lowercase()).collect();
    if let Some(x) = require.iter().find(|t| !matches!(t.as_str(), "adhoclist" | "categorylist" | "eventlist")) {
        return Err((420, "Bad Extension", vec![("Unsupported", x.clone())]));
    }
    let supported: Vec<String> = msg.header_tokens(&Name::SUPPORTED).iter().map(|t| t.to_ascii_lowercase()).collect();
    let accept: Vec<String> = msg
        .header_tokens(&Name::ACCEPT)
        .iter()
        .map(|t| t.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .collect();
    let from_uri = msg.header(&Name::FROM).map(name_addr_uri).unwrap_or("").to_string();
    let to_uri = msg.header(&Name::TO).map(name_addr_uri).unwrap_or("").to_string();
    let ruri = msg.request_uri().unwrap_or("").to_string();
    let contact = msg
        .header(&Name::CONTACT)
        .map(name_addr_uri)
        .map(str::to_string)
        .ok_or(refuse(400, "Bad Request (Contact)"))?;
    let batch = match msg.content_type().as_deref() {
        None if msg.body.is_empty() => None,
        Some(msrtc::BATCH_SUB_CONTENT_TYPE) => {
            let b = msrtc::parse_batch_sub(&msg.body).map_err(|_| refuse(400, "Bad Request (batchSub)"))?;
            if b.action != BatchAction::Subscribe {
                return Err(refuse(400, "Bad Request (only subscribe actions)"));
            }
            Some(b)
        }
        Some(_) | None => {
            return Err((415, "Unsupported Media Type", vec![("Accept", msrtc::BATCH_SUB_CONTENT_TYPE.into())]));
        }
    };

    let batched = identity(&ruri) == identity(&from_uri);
    let resources: Vec<String> = if batched {
        // [MS-PRES] §2.2.2.4.1: to self, adhoc list with a category list.
        if !(require.iter().any(|t| t == "adhoclist") && require.iter().any(|t| t == "categorylist")) {
            return Err(refuse(400, "Bad Request (batched SUBSCRIBE needs Require: adhoclist, categoryList)"));
        }
        if !(accept.iter().any(|a| a == rlmi::CONTENT_TYPE) && accept.iter().any(|a| a == "multipart/related")) {
            return Err((406, "Not Acceptable", vec![("Accept", "application/rlmi+xml, multipart/related".into())]));
        }
        let b = batch.as_ref().ok_or(refuse(400, "Bad Request (batched SUBSCRIBE without batchSub)"))?;
        if b.resources.is_empty() {
            return Err(refuse(400, "Bad Request (empty adhocList)"));
        }
        let mut seen = HashSet::new();
        b.resources.iter().map(|r| key(r)).filter(|r| seen.insert(r.clone())).collect()
    } else {
        // A single category SUBSCRIBE: To-URI and the listed resource are the contact.
        if !accept.iter().any(|a| a == msrtc::CONTENT_TYPE) {
            return Err((406, "Not Acceptable", vec![("Accept", msrtc::CONTENT_TYPE.into())]));
        }
        let r = key(&ruri);
        if let Some(b) = &batch {
            if b.resources.len() != 1 || key(&b.resources[0]) != r || identity(&to_uri) != identity(&ruri) {
                return Err(refuse(400, "Bad Request (single SUBSCRIBE: To and resource must be the contact)"));
            }
        }
        if !st.people.contains_key(&r) || st.elsewhere.contains_key(&r) {
            return Err(refuse(404, "Not Found"));
        }
        vec![r]
    };

    let mut sub = Sub {
        call_id: msg.call_id.to_string(),
        local_tag: inner.ep.token(),
        remote: msg.header(&Name::FROM).unwrap_or("").to_string(),
        local_uri: to_uri.clone(),
        list_uri: batch.as_ref().map(|b| b.uri.clone()).filter(|u| !u.is_empty()).unwrap_or(from_uri),
        peer: if st.cfg.notify_to_contact { contact_peer(inner, &st.cfg, &contact).ok_or(refuse(400, "Bad Request (Contact not reachable)"))? } else { req.peer },
        target: contact,
        resources,
        batched,
        version: 0,
        cseq: 0,
        expires_at: Instant::now() + Duration::from_secs(granted as u64),
    };
    if batched {
        st.stats.batched_subscribes += 1;
    } else {
        st.stats.single_subscribes += 1;
    }

    // The full state: RLMI chunks (batched) or the categories document (single).
    let bodies = if batched {
        let keys = sub.resources.clone();
        let entries: Vec<Entry> = keys.iter().map(|k| st.full_entry(k)).collect();
        st.rlmi_bodies(&mut sub, entries, true)
    } else {
        let e = st.full_entry(&sub.resources[0]);
        e.body.map(|b| vec![(msrtc::CONTENT_TYPE.to_string(), b)]).unwrap_or_default()
    };
    let piggyback = supported.iter().any(|s| s == "ms-piggyback-first-notify");
    let mut bodies = bodies.into_iter();
    let mut ok = Builder::response_to(msg, 200, "OK", Some(&sub.local_tag))
        .header("Expires", &granted.to_string())
        .header("Contact", &inner.ep.contact("pool", req.peer.transport))
        .header("Supported", "eventlist, ms-benotify, ms-piggyback-first-notify");
    if batched {
        ok = ok.header("Require", "eventlist");
    }
    if piggyback {
        if let Some((ct, body)) = bodies.next() {
            ok = ok.body(&ct, body);
            st.stats.piggybacked += 1;
        }
    }
    let _ = inner.out.send(Out::Respond(Box::new(req.clone()), ok));
    let method = match st.notify {
        NotifyMethod::Benotify => "BENOTIFY",
        NotifyMethod::Notify => "NOTIFY",
    };
    for (ct, body) in bodies {
        let r = notify_request(&inner.ep, &mut sub, method, "active", Some((ct, body)));
        if method == "BENOTIFY" {
            st.stats.benotifies += 1;
        } else {
            st.stats.notifies += 1;
        }
        let _ = inner.out.send(r);
    }
    st.subs.push(sub);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The demo.

/// SfB states the demo moves people between, with weights: (availability, token, weight).
const DEMO_STATES: [(u32, Option<&str>, u32); 12] = [
    (3500, None, 34),
    (5000, None, 6),
    (6500, None, 8),
    (6500, Some("on-the-phone"), 10),
    (6500, Some("in-a-meeting"), 8),
    (6500, Some("in-a-conference"), 3),
    (6900, Some("urgent-interruptions-only"), 2),
    (9500, Some("in-presentation"), 3),
    (12500, None, 6),
    (15500, None, 10),
    (15500, Some("off-work"), 6),
    (18500, None, 4),
];

const DEMO_NOTES: [&str; 5] =
    ["Kundbesök i eftermiddag", "Jobbar hemifrån", "Tillbaka 14:00", "På kurs", "Ring mobilen"];
const DEMO_MEETINGS: [(&str, &str); 4] =
    [("Veckomöte", "Rum Kajen"), ("Budgetgenomgång", "Rum Fyren"), ("Kundmöte", "Teams"), ("Styrgrupp", "Rum Bryggan")];

fn demo_presence(rng: &mut Rng) -> SfbPresence {
    let total: u32 = DEMO_STATES.iter().map(|s| s.2).sum();
    let mut r = rng.below(total as u64) as u32;
    let mut pick = (3500, None);
    for (a, t, w) in DEMO_STATES {
        if r < w {
            pick = (a, t);
            break;
        }
        r -= w;
    }
    let mut p = SfbPresence::new(pick.0);
    p.activity = pick.1.map(str::to_string);
    if pick.1 == Some("in-a-meeting") {
        let (s, l) = DEMO_MEETINGS[rng.below(DEMO_MEETINGS.len() as u64) as usize];
        p = p.meeting(s, l);
    }
    if rng.below(100) < 15 {
        p = p.note(DEMO_NOTES[rng.below(DEMO_NOTES.len() as u64) as usize]);
    }
    if pick.1 == Some("off-work") && rng.below(100) < 30 {
        p.activity = Some("out-of-office".into());
        p = p.oof("Semester, åter måndag. Brådskande ärenden: växeln.");
    }
    p
}

impl SfbSim {
    /// Seeds everyone in `uris` with a plausible working-day state (most Available).
    pub fn seed_demo(&self, uris: &[String], seed: u64) {
        let mut rng = Rng::new(seed);
        let changes = uris
            .iter()
            .map(|u| {
                let p = if rng.below(100) < 60 { SfbPresence::available() } else { demo_presence(&mut rng) };
                (u.clone(), p)
            })
            .collect();
        self.set_many(changes);
    }

    /// Changes a random person's SfB presence every `every` (± half), on a thread of its own,
    /// until the simulator is dropped. Changes reach subscribers as BENOTIFY/NOTIFY.
    pub fn drive_demo(self: &Arc<Self>, uris: Vec<String>, every: Duration, seed: u64) -> std::io::Result<()> {
        let sim: Weak<SfbSim> = Arc::downgrade(self);
        std::thread::Builder::new().name("sfb-sim-demo".into()).spawn(move || {
            let mut rng = Rng::new(seed);
            loop {
                let ms = every.as_millis() as u64;
                std::thread::sleep(Duration::from_millis(ms / 2 + rng.below(ms + 1)));
                let Some(sim) = sim.upgrade() else { return };
                if uris.is_empty() {
                    return;
                }
                let uri = &uris[rng.below(uris.len() as u64) as usize];
                sim.set(uri, demo_presence(&mut rng));
            }
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
