//! The task of the Skype for Business source (`type = "sfb"`): batched category subscriptions
//! to the front-end pool for every person with a SIP URI ([MS-PRES] §2.2.2.4.1, §3.4.5; [MS-SIP]
//! §3.3.5.1), their notifications turned into `sfb` signals.
//!
//! - People are split into batches of `batch_size`; each batch is one SUBSCRIBE to the service
//!   account's own URI with `Require: adhoclist, categoryList`, `Supported: eventlist,
//!   ms-benotify, ms-piggyback-first-notify` and a `batchSub` body naming the batch. Each is a
//!   `presence_sip::subscription::Subscription`: refreshed before expiry, re-established with
//!   back-off, digest answered.
//! - Notifications (the first one piggy-backed on the `200`, later ones `BENOTIFY` or
//!   `NOTIFY`) are `multipart/related` RLMI with one categories part per resource; a
//!   single-resource notification may be the categories document itself. RLMI versions not
//!   newer than the last one of the subscription are dropped (a new dialog starts again).
//!   Each person's category instances are kept ([`SfbCategories`]) so deltas apply on top,
//!   and mapped to one `sfb` signal ([`map::sfb_signal`]).
//! - Instance states: `resubscribe` → a single-resource subscription to the named `poolFqdn`
//!   (an `ip:port` literal or a host resolved, port 5060 with the configured transport; TLS's
//!   5061 is not spoken) or, without a pool, to the same server, spread at `resubscribe_rate`
//!   per second as SIPE does; `terminated` with `noresource`/`rejected` → the person's SfB
//!   source Unknown; with `deactivated`/`timeout`/`probation` → re-subscribed singly.
//! - Health: an OPTIONS request every `keepalive_secs`; two misses in a row (of pings sent
//!   since the pool last answered), or a batch subscription lost, mark the feed down, so SfB signals show stale — never Offline. When the
//!   pool answers again, every subscription is renewed from scratch (a restarted front end has
//!   forgotten them). A single subscription that fails on its own makes that person Unknown.
//! - The people follow the live directory ([`Follow`]): a leaver leaves their batch, a newcomer
//!   joins one with room (or a new one), and each batch whose people changed is subscribed
//!   anew with its new batchSub (the old dialog un-SUBSCRIBEd); a single subscription of a
//!   leaver is dropped. A batch made for newcomers does not hold the feed down.
//! - A body that cannot be read (RLMI or one person's categories part) is logged, counted in
//!   the feed's errors and in `details.bad_bodies`, and skipped; the other people of the same
//!   notification are not disturbed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use presence_actors::directory::{PersonRef, UserIdx};
use presence_actors::model::{now_ms, Availability, Signal, Source};
use presence_actors::provider::ProviderContext;
use presence_sip::body::msrtc::{self, BatchAction, BatchSub};
use presence_sip::body::rlmi::RlmiNotify;
use presence_sip::endpoint::{Endpoint, Peer, Transport};
use presence_sip::message::uri_user;
use presence_sip::subscription::{SubEvent, SubState, SubscribeSpec, Subscription};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::map;
use super::parse::{self, uri_key, Notification, ParseError, PartEvent, SfbCategories};
use super::{SfbConfig, ACCEPT};
use crate::sip::connect::{answer_stray, close, resolve, sip_stats, with_default_port, ConnectError, Connected, PingResult, Pings, TlsHealth};
use crate::common::follow::Follow;
use crate::sip::resource_uri;

/// Which subscription an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    /// A batch, and its generation (events of a replaced subscription are ignored).
    Batch(usize, u32),
    /// A person's single subscription, and its generation (events of a replaced one are
    /// ignored).
    Single(UserIdx, u32),
}

struct Batch {
    people: Vec<UserIdx>,
    sub: Option<Subscription>,
    /// Generation of `sub`: it is replaced when the batch's people change.
    gen: u32,
    active: bool,
    /// Made for newcomers after start and not active yet: the feed does not wait for it.
    joining: bool,
    last_version: Option<u64>,
    /// People whose state came in this dialog: their first part is their full state.
    seen: HashSet<UserIdx>,
    notifications: u64,
    /// The loss epoch of its last `Active`.
    epoch: u64,
}

struct Single {
    /// The pool as named (`None`: the configured server).
    pool: Option<String>,
    addr: Option<SocketAddr>,
    sub: Option<Subscription>,
    active: bool,
    last_version: Option<u64>,
    /// The person's state came in this dialog.
    seen: bool,
    gen: u32,
    /// The loss epoch of its last `Active`.
    epoch: u64,
}

struct Person {
    uri: String,
    cache: SfbCategories,
    /// A state was sent (so a later failure is worth an Unknown).
    sent: bool,
    single: Option<Single>,
}

impl Batch {
    fn new(people: Vec<UserIdx>, joining: bool) -> Batch {
        Batch { people, sub: None, gen: 0, active: false, joining, last_version: None, seen: HashSet::new(), notifications: 0, epoch: 0 }
    }
}

impl Person {
    fn new(uri: String) -> Person {
        Person { uri, cache: SfbCategories::default(), sent: false, single: None }
    }
}

/// Each person's resource URI, the first person's only when several share one.
fn sfb_uris<'a>(template: &'a str, domain: &'a str) -> impl FnMut(UserIdx, &PersonRef<'_>) -> Option<String> + 'a {
    let mut seen = HashSet::new();
    move |_, p| {
        let uri = resource_uri(template, p, domain)?;
        seen.insert(uri_key(&uri)).then_some(uri)
    }
}

enum Pending {
    Batch(usize),
    Single(UserIdx),
}

#[derive(Default)]
struct Counters {
    notifies: u64,
    benotifies: u64,
    piggybacked: u64,
    bad_bodies: u64,
    stale_versions: u64,
    noresource: u64,
    resubscribes: u64,
}

/// A pool's address for a single subscription (person, generation, address).
type Resolved = (UserIdx, u32, Result<SocketAddr, String>);

struct Runner {
    /// The people subscribed, following the live directory: their resource URI.
    follow: Follow<String>,
    template: String,
    domain: String,
    cfg: SfbConfig,
    ctx: ProviderContext,
    ep: Endpoint,
    server: Peer,
    from: String,
    people: HashMap<UserIdx, Person>,
    by_uri: HashMap<String, UserIdx>,
    batches: Vec<Batch>,
    queue: VecDeque<Pending>,
    events: mpsc::Sender<(Key, SubEvent)>,
    resolved: mpsc::Sender<Resolved>,
    n: Counters,
    /// The pool answers (OPTIONS or a subscription).
    peer_ok: bool,
    /// What the feed says now.
    up: bool,
    /// The pool was lost after having answered: re-subscribe all when it is back.
    lost: bool,
    /// Counts losses; a subscription active since the last one needs no renewal.
    epoch: u64,
    /// Generations of single subscriptions.
    next_gen: u32,
    /// The OPTIONS health check.
    pings: Pings,
    /// The certificates' subjects and days left, over TLS.
    tls_health: TlsHealth,
}

/// Runs an `sfb` provider until shutdown (see [`super::task`]).
pub(super) async fn run(cfg: SfbConfig, ctx: ProviderContext) -> Result<(), ConnectError> {
    let mut shutdown = ctx.shutdown.clone();
    let listen = cfg.tls_listener().map_err(|e| ConnectError::Listen(e.to_string()))?;
    let Some(Connected { ep, mut requests, peer: server }) = cfg.conn.open_with(&ctx, listen).await? else { return Ok(()) };
    if let Some(at) = ep.tls_addr() {
        info!(provider = %ctx.name, listen = %at, "sfb: accepting the pool's TLS connections (trusted application port)");
    }

    let domain = cfg.domain();
    let template = cfg.resource.clone().unwrap_or_else(|| "{sip_uri}".to_string());
    let mut follow = Follow::new(&ctx);
    let mut people = HashMap::new();
    let mut by_uri = HashMap::new();
    let mut order = Vec::new();
    for (idx, uri) in follow.update(sfb_uris(&template, &domain)).added {
        by_uri.insert(uri_key(&uri), idx);
        order.push(idx);
        people.insert(idx, Person::new(uri));
    }
    let batches: Vec<Batch> = order.chunks(cfg.batch_size.max(1)).map(|c| Batch::new(c.to_vec(), false)).collect();
    info!(provider = %ctx.name, server = %server.addr, local = %ep.local_addr(), people = people.len(), batches = batches.len(), "sfb provider starting");
    ctx.feed.set_state("subscribing");

    let (etx, mut erx) = mpsc::channel::<(Key, SubEvent)>(4096);
    let (rtx, mut rrx) = mpsc::channel::<Resolved>(256);
    let queue = (0..batches.len()).map(Pending::Batch).collect();
    let tls_health = TlsHealth::new(&cfg.conn);
    let mut r = Runner {
        follow,
        template,
        domain,
        from: cfg.from.trim().to_string(),
        server,
        cfg,
        ctx,
        ep,
        people,
        by_uri,
        batches,
        queue,
        events: etx,
        resolved: rtx,
        n: Counters::default(),
        peer_ok: false,
        up: false,
        lost: false,
        epoch: 0,
        next_gen: 0,
        pings: Pings::default(),
        tls_health,
    };
    r.update_up();

    let step = Duration::from_secs(1) / r.cfg.resubscribe_rate.max(1);
    let mut spawn_tick = tokio::time::interval(step.max(Duration::from_millis(1)));
    let mut ping_tick = tokio::time::interval(Duration::from_secs(r.cfg.conn.keepalive_secs.max(1)));
    let (ptx, mut prx) = mpsc::channel::<(u64, Result<(), String>)>(8);
    let mut details_tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.recv() => {
                // Dropping the subscriptions un-SUBSCRIBEs; give them a moment.
                r.batches.clear();
                r.people.clear();
                close(&r.ep).await;
                return Ok(());
            }
            _ = spawn_tick.tick(), if !r.queue.is_empty() => r.next_pending(),
            _ = ping_tick.tick(), if r.cfg.conn.keepalive_secs > 0 => r.pings.spawn(&r.ep, r.server, &r.from, &ptx),
            Some((n, answer)) = prx.recv() => r.on_ping(n, answer),
            Some((key, ev)) = erx.recv() => r.on_event(key, ev),
            Some((idx, gen, addr)) = rrx.recv() => r.on_resolved(idx, gen, addr),
            _ = r.follow.changed() => r.on_directory(),
            Some(req) = requests.recv() => answer_stray(&r.ep, req).await,
            _ = details_tick.tick() => r.details(),
        }
    }
}

impl Runner {
    fn spec(&self, peer: Peer, uri: &str, resources: Vec<String>, batched: bool) -> SubscribeSpec {
        let mut headers = Vec::new();
        if batched {
            headers.push(("Require".to_string(), "adhoclist, categoryList".to_string()));
            headers.push(("Supported".to_string(), "eventlist".to_string()));
        }
        for (n, v) in
            [("Supported", "ms-benotify"), ("Proxy-Require", "ms-benotify"), ("Supported", "ms-piggyback-first-notify")]
        {
            headers.push((n.to_string(), v.to_string()));
        }
        let body = msrtc::build_batch_sub(&BatchSub {
            uri: self.from.clone(),
            action: BatchAction::Subscribe,
            action_id: format!("{}", presence_sip::random_u64() % 100_000_000),
            resources,
            categories: msrtc::DEFAULT_CATEGORIES.iter().map(|c| c.to_string()).collect(),
        });
        SubscribeSpec {
            peer,
            uri: uri.to_string(),
            from: self.from.clone(),
            contact_user: uri_user(&self.from).unwrap_or("presence-hub").to_string(),
            event: "presence".into(),
            accept: ACCEPT.into(),
            expires: self.cfg.conn.expires_secs,
            headers,
            body: Some((msrtc::BATCH_SUB_CONTENT_TYPE.into(), Bytes::from(body))),
            credentials: self.cfg.login.credentials(),
        }
    }

    /// The directory changed: a leaver (or the old URI of a changed one) leaves their batch
    /// and their single subscription is dropped; a newcomer joins a batch with room, else a
    /// new batch. Each batch whose people changed is subscribed anew (queued at
    /// `resubscribe_rate`; its old subscription runs until then and is then un-SUBSCRIBEd):
    /// the batchSub of a subscription names its people for as long as it lives.
    fn on_directory(&mut self) {
        let changes = self.follow.update(sfb_uris(&self.template, &self.domain));
        if changes.is_empty() {
            return;
        }
        info!(provider = %self.ctx.name, added = changes.added.len(), removed = changes.removed.len(), changed = changes.changed.len(), "directory changed; sfb follows it");
        let mut touched = Vec::new();
        for (idx, uri) in changes.dropped() {
            if self.by_uri.get(&uri_key(uri)) == Some(&idx) {
                self.by_uri.remove(&uri_key(uri));
            }
            // Dropping a single subscription un-SUBSCRIBEs it.
            self.people.remove(&idx);
            for (i, b) in self.batches.iter_mut().enumerate() {
                if let Some(at) = b.people.iter().position(|p| *p == idx) {
                    b.people.remove(at);
                    b.seen.remove(&idx);
                    touched.push(i);
                }
            }
        }
        let size = self.cfg.batch_size.max(1);
        for (idx, uri) in changes.taken() {
            self.by_uri.insert(uri_key(&uri), idx);
            self.people.insert(idx, Person::new(uri));
            let i = match self.batches.iter().position(|b| b.people.len() < size) {
                Some(i) => i,
                None => {
                    self.batches.push(Batch::new(Vec::new(), true));
                    self.batches.len() - 1
                }
            };
            self.batches[i].people.push(idx);
            touched.push(i);
        }
        self.queue.retain(|p| match p {
            Pending::Single(idx) => self.people.contains_key(idx),
            Pending::Batch(_) => true,
        });
        touched.sort_unstable();
        touched.dedup();
        for i in touched {
            if !self.queue.iter().any(|p| matches!(p, Pending::Batch(b) if *b == i)) {
                self.queue.push_back(Pending::Batch(i));
            }
        }
        self.update_up();
    }

    /// Starts the next queued subscription (one per tick of `resubscribe_rate`).
    fn next_pending(&mut self) {
        match self.queue.pop_front() {
            Some(Pending::Batch(i)) => {
                let Some(b) = self.batches.get_mut(i) else { return };
                // A batch made anew (its people changed): the old subscription is dropped,
                // which un-SUBSCRIBEs it, and its late events are ignored (generation).
                b.gen = b.gen.wrapping_add(1);
                b.last_version = None;
                b.seen.clear();
                if b.people.is_empty() {
                    b.sub = None;
                    b.active = false;
                } else {
                    let key = Key::Batch(i, b.gen);
                    let uris: Vec<String> = b.people.iter().filter_map(|p| self.people.get(p)).map(|p| p.uri.clone()).collect();
                    let spec = self.spec(self.server, &self.from, uris, true);
                    let sub = Subscription::spawn(self.ep.clone(), spec, key, self.events.clone());
                    if let Some(b) = self.batches.get_mut(i) {
                        b.sub = Some(sub);
                    }
                }
            }
            Some(Pending::Single(idx)) => {
                let Some(p) = self.people.get(&idx) else { return };
                let Some(s) = &p.single else { return };
                let gen = s.gen;
                match &s.pool {
                    None => self.on_resolved(idx, gen, Ok(self.server.addr)),
                    Some(pool) => {
                        let (pool, tx) = (with_default_port(pool, self.cfg.pool_port()), self.resolved.clone());
                        let tls = (self.server.transport == Transport::Tls).then(|| self.ep.clone());
                        tokio::spawn(async move {
                            let addr = tokio::time::timeout(Duration::from_secs(5), resolve(&pool))
                                .await
                                .unwrap_or_else(|_| Err(format!("cannot resolve {pool}: timeout")));
                            // Over TLS, that pool's front end proves it is that pool: its
                            // certificate must carry the pool's FQDN.
                            if let (Some(ep), Ok(addr)) = (tls, &addr) {
                                let host = pool.rsplit_once(':').map_or(pool.as_str(), |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
                                if let Ok(name) = presence_sip::tls::server_name(host) {
                                    ep.set_tls_name(*addr, name);
                                }
                            }
                            let _ = tx.send((idx, gen, addr)).await;
                        });
                    }
                }
            }
            None => {}
        }
        self.update_up();
    }

    fn on_resolved(&mut self, idx: UserIdx, gen: u32, addr: Result<SocketAddr, String>) {
        let transport = self.server.transport;
        let Some(p) = self.people.get(&idx) else { return };
        if p.single.as_ref().is_none_or(|s| s.gen != gen) {
            return; // replaced meanwhile
        }
        let uri = p.uri.clone();
        match addr {
            Ok(addr) => {
                let spec = self.spec(Peer { transport, addr }, &uri, vec![uri.clone()], false);
                if let Some(s) = self.people.get_mut(&idx).and_then(|p| p.single.as_mut()) {
                    let key = Key::Single(idx, s.gen);
                    s.addr = Some(addr);
                    s.sub = Some(Subscription::spawn(self.ep.clone(), spec, key, self.events.clone()));
                }
            }
            Err(e) => {
                warn!(provider = %self.ctx.name, %uri, error = %e, "sfb: pool of a re-subscription not found");
                self.ctx.feed.record_error(&e);
                self.unknown(idx);
            }
        }
    }

    /// The answer (or not) of ping `n` (see [`Pings`]).
    fn on_ping(&mut self, n: u64, answer: Result<(), String>) {
        match self.pings.result(n, answer.is_ok()) {
            PingResult::Old => return,
            PingResult::Answered => {
                if !self.peer_ok {
                    self.peer_ok = true;
                    self.recovered();
                }
            }
            PingResult::Missed(misses) => {
                let why = answer.err().unwrap_or_default();
                if misses >= 2 && self.peer_ok {
                    self.peer_ok = false;
                    self.lost = true;
                    self.epoch += 1;
                    warn!(provider = %self.ctx.name, server = %self.server.addr, reason = %why, "sfb pool does not answer; feed down (stale)");
                }
                if misses >= 2 {
                    // Also while down from the start: the health says why (a certificate the
                    // pool refused reads differently from a silent pool).
                    self.ctx.feed.record_error(&format!("pool does not answer OPTIONS: {why}"));
                }
            }
        }
        self.update_up();
    }

    /// The pool answers again after a loss: a restarted front end has forgotten its
    /// subscriptions, so every one not re-established since is renewed from scratch (those at
    /// other pools are left alone).
    fn recovered(&mut self) {
        if !self.lost {
            return;
        }
        self.lost = false;
        info!(provider = %self.ctx.name, "sfb pool answers again; re-subscribing");
        let epoch = self.epoch;
        for b in self.batches.iter_mut().filter(|b| b.epoch < epoch) {
            if let Some(s) = &b.sub {
                s.resubscribe();
                b.active = false;
            }
        }
        for s in self.people.values().filter_map(|p| p.single.as_ref()).filter(|s| s.pool.is_none() && s.epoch < epoch)
        {
            if let Some(sub) = &s.sub {
                sub.resubscribe();
            }
        }
    }

    /// Up while the pool answers and every batch is subscribed (but the empty ones and those
    /// made for newcomers that are not active yet).
    fn update_up(&mut self) {
        let up = self.peer_ok && self.batches.iter().filter(|b| !b.people.is_empty() && !b.joining).all(|b| b.active);
        if up != self.up {
            self.up = up;
            self.ctx.sink.set_up(up);
        }
        let state = match (up, self.queue.is_empty()) {
            (true, true) => "up",
            (_, false) => "subscribing",
            (false, true) => "down",
        };
        self.ctx.feed.set_state(state);
    }

    fn on_event(&mut self, key: Key, ev: SubEvent) {
        match key {
            Key::Single(idx, gen) => {
                if self.people.get(&idx).and_then(|p| p.single.as_ref()).is_none_or(|s| s.gen != gen) {
                    return; // a replaced single subscription's last words
                }
            }
            Key::Batch(i, gen) => {
                if self.batches.get(i).is_none_or(|b| b.gen != gen) {
                    return; // a replaced batch subscription's last words
                }
            }
        }
        match ev {
            SubEvent::Active { body, .. } => {
                match key {
                    Key::Batch(i, _) => {
                        if let Some(b) = self.batches.get_mut(i) {
                            b.active = true;
                            b.joining = false;
                            b.epoch = self.epoch;
                        }
                        // The pool answered a subscription: it is there.
                        self.peer_ok = true;
                        self.pings.answered();
                        self.recovered();
                    }
                    Key::Single(idx, _) => {
                        if let Some(s) = self.people.get_mut(&idx).and_then(|p| p.single.as_mut()) {
                            s.active = true;
                            s.epoch = self.epoch;
                        }
                    }
                }
                if let Some((ct, body)) = body {
                    self.n.piggybacked += 1;
                    self.on_body(key, &ct, &body, true);
                }
                self.update_up();
            }
            SubEvent::Notify { state, body, msg, .. } => {
                if msg.method().is_some_and(|m| m.to_string().eq_ignore_ascii_case("BENOTIFY")) {
                    self.n.benotifies += 1;
                } else {
                    self.n.notifies += 1;
                }
                if let Key::Batch(i, _) = key {
                    if let Some(b) = self.batches.get_mut(i) {
                        b.notifications += 1;
                    }
                }
                if !body.is_empty() {
                    let ct = msg.content_type_value().unwrap_or("").to_string();
                    self.on_body(key, &ct, &body, false);
                }
                if matches!(state, SubState::Terminated { .. }) {
                    self.sub_lost(key);
                    self.update_up();
                }
            }
            SubEvent::Down { reason, retry_in, .. } => {
                debug!(provider = %self.ctx.name, ?key, %reason, ?retry_in, "sfb subscription down");
                let was_active = match key {
                    Key::Batch(i, _) => self.batches.get(i).is_some_and(|b| b.active),
                    Key::Single(idx, _) => {
                        self.people.get(&idx).and_then(|p| p.single.as_ref()).is_some_and(|s| s.active)
                    }
                };
                let hint = if self.cfg.trusted_application && (reason.contains("answered 401") || reason.contains("answered 407")) {
                    " — the pool does not trust the hub as an application: the certificate's subject must be a trusted application \
                     pool's FQDN (New-CsTrustedApplicationPool) with this application on it (New-CsTrustedApplication), topology enabled"
                } else {
                    ""
                };
                self.ctx.feed.record_error(&format!("{}: {reason}{hint}", if was_active { "subscription lost" } else { "subscribing failed" }));
                self.sub_lost(key);
                if let Key::Single(idx, _) = key {
                    // A person's own subscription failed while the feed is fine: Unknown.
                    if self.up && self.people.get(&idx).is_some_and(|p| p.sent) {
                        self.unknown(idx);
                    }
                }
                self.update_up();
            }
        }
    }

    /// A subscription's dialog ended: the next one starts versions again.
    fn sub_lost(&mut self, key: Key) {
        match key {
            Key::Batch(i, _) => {
                if let Some(b) = self.batches.get_mut(i) {
                    b.active = false;
                    b.last_version = None;
                    b.seen.clear();
                }
            }
            Key::Single(idx, _) => {
                if let Some(s) = self.people.get_mut(&idx).and_then(|p| p.single.as_mut()) {
                    s.active = false;
                    s.last_version = None;
                    s.seen = false;
                }
            }
        }
    }

    fn bad_body(&mut self, what: &str, error: &dyn std::fmt::Display) {
        self.n.bad_bodies += 1;
        self.ctx.feed.record_error(&format!("{what}: {error}"));
        warn!(provider = %self.ctx.name, what, %error, "sfb: body not understood; ignored");
    }

    /// A notification body (piggy-backed when `first`).
    fn on_body(&mut self, key: Key, content_type: &str, body: &[u8], first: bool) {
        match parse::read_notification(content_type, body) {
            // A single-resource notification: the categories document itself.
            Ok(Notification::Categories(doc)) => {
                let idx = match key {
                    Key::Single(idx, _) => Some(idx),
                    Key::Batch(..) => self.by_uri.get(&uri_key(&doc.uri)).copied(),
                };
                match idx {
                    Some(idx) => {
                        let full = self.first_in_dialog(key, idx) || first;
                        self.apply(idx, doc, full);
                    }
                    None => debug!(provider = %self.ctx.name, uri = %doc.uri, "sfb: categories of nobody watched"),
                }
            }
            Ok(Notification::Rlmi(n)) => self.on_rlmi(key, n),
            Err(e @ ParseError::Categories(_)) => {
                let who = match key {
                    Key::Single(idx, _) => self.people.get(&idx).map(|p| p.uri.clone()).unwrap_or_default(),
                    Key::Batch(i, _) => format!("batch {i}"),
                };
                self.bad_body(&who, &e);
            }
            Err(e @ ParseError::Rlmi(_)) => self.bad_body("RLMI notification", &e),
            Err(e) => self.bad_body("notification", &e),
        }
    }

    fn on_rlmi(&mut self, key: Key, n: RlmiNotify) {
        let last = match key {
            Key::Batch(i, _) => self.batches.get_mut(i).map(|b| &mut b.last_version),
            Key::Single(idx, _) => {
                self.people.get_mut(&idx).and_then(|p| p.single.as_mut()).map(|s| &mut s.last_version)
            }
        };
        let Some(last) = last else { return };
        if last.is_some_and(|l| n.list.version <= l) {
            self.n.stale_versions += 1;
            debug!(provider = %self.ctx.name, version = n.list.version, "sfb: RLMI version not newer; dropped");
            return;
        }
        *last = Some(n.list.version);
        let full = n.list.full_state;
        for part in n.resources {
            let Some(&idx) = self.by_uri.get(&uri_key(&part.uri)) else {
                debug!(provider = %self.ctx.name, uri = %part.uri, "sfb: resource nobody watches");
                continue;
            };
            let uri = part.uri.clone();
            match parse::read_part(part) {
                Ok(PartEvent::Categories(doc)) => {
                    if matches!(key, Key::Batch(..)) {
                        // Homed here again: the batch serves the person.
                        if let Some(p) = self.people.get_mut(&idx) {
                            p.single = None;
                        }
                    }
                    let first = self.first_in_dialog(key, idx);
                    self.apply(idx, doc, full || first);
                }
                Ok(PartEvent::Nothing) => {}
                Ok(PartEvent::Resubscribe(pool)) => self.resubscribe(idx, pool),
                Ok(PartEvent::Gone(reason)) => {
                    self.n.noresource += 1;
                    debug!(provider = %self.ctx.name, %uri, ?reason, "sfb: resource terminated");
                    if let Some(p) = self.people.get_mut(&idx) {
                        p.single = None;
                    }
                    self.unknown(idx);
                }
                Err(e) => self.bad_body(&uri, &e),
            }
        }
    }

    /// True the first time a person's state comes in the current dialog of `key` (a full
    /// state split over several notifications is not `fullState` in any one of them).
    fn first_in_dialog(&mut self, key: Key, idx: UserIdx) -> bool {
        match key {
            Key::Batch(i, _) => self.batches.get_mut(i).is_some_and(|b| b.seen.insert(idx)),
            Key::Single(..) => self
                .people
                .get_mut(&idx)
                .and_then(|p| p.single.as_mut())
                .is_some_and(|s| !std::mem::replace(&mut s.seen, true)),
        }
    }

    /// Queues a single-resource subscription (unless one to the same pool runs).
    fn resubscribe(&mut self, idx: UserIdx, pool: Option<String>) {
        let Some(p) = self.people.get_mut(&idx) else { return };
        if p.single.as_ref().is_some_and(|s| s.pool == pool && s.sub.as_ref().is_some_and(Subscription::is_running)) {
            return;
        }
        debug!(provider = %self.ctx.name, uri = %p.uri, ?pool, "sfb: re-subscribing singly");
        self.n.resubscribes += 1;
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        p.single =
            Some(Single { pool, addr: None, sub: None, active: false, last_version: None, seen: false, gen, epoch: 0 });
        self.queue.push_back(Pending::Single(idx));
    }

    fn apply(&mut self, idx: UserIdx, doc: msrtc::Categories, full: bool) {
        let Some(p) = self.people.get_mut(&idx) else { return };
        if full {
            p.cache.replace(doc);
        } else {
            p.cache.update(doc);
        }
        let signal = map::sfb_signal(&p.cache.doc(), &self.ctx.name, self.cfg.keep_details, now_ms());
        p.sent = !signal.is_retraction();
        if let Err(e) = self.ctx.sink.send_to(idx, signal) {
            debug!(provider = %self.ctx.name, error = %e, "signal not delivered");
        }
    }

    /// The person's SfB source has no opinion (not found, or their subscription failed).
    fn unknown(&mut self, idx: UserIdx) {
        let Some(p) = self.people.get_mut(&idx) else { return };
        p.cache.clear();
        p.sent = false;
        let s = Signal::new(Source::Sfb, &self.ctx.name, Some(Availability::Unknown), now_ms());
        if let Err(e) = self.ctx.sink.send_to(idx, s) {
            debug!(provider = %self.ctx.name, error = %e, "signal not delivered");
        }
    }

    fn details(&mut self) {
        let tls = self.tls_health.details(&self.ep, self.server, &self.ctx.name, now_ms() / 1000);
        let mut pools: HashMap<String, usize> = HashMap::new();
        let (mut singles, mut singles_active) = (0usize, 0usize);
        for p in self.people.values() {
            if let Some(s) = &p.single {
                singles += 1;
                singles_active += s.active as usize;
                let name = s.pool.clone().unwrap_or_else(|| self.server.addr.to_string());
                *pools.entry(name).or_default() += 1;
            }
        }
        let batches: Vec<serde_json::Value> = self
            .batches
            .iter()
            .map(|b| {
                serde_json::json!({
                    "people": b.people.len(),
                    "state": if b.active { "active" } else if b.sub.is_some() { "down" } else { "pending" },
                    "version": b.last_version,
                    "notifications": b.notifications,
                })
            })
            .collect();
        self.ctx.feed.set_details(serde_json::json!({
            "server": self.server.addr.to_string(),
            "transport": self.server.transport.to_string(),
            "local": self.ep.local_addr().to_string(),
            "from": self.from,
            "people": self.people.len(),
            "batches": batches,
            "subscriptions_active": self.batches.iter().filter(|b| b.active).count(),
            "singles": singles,
            "singles_active": singles_active,
            "pools": pools,
            "pending": self.queue.len(),
            "notifies": self.n.notifies,
            "benotifies": self.n.benotifies,
            "piggybacked": self.n.piggybacked,
            "bad_bodies": self.n.bad_bodies,
            "stale_versions": self.n.stale_versions,
            "noresource": self.n.noresource,
            "resubscribes": self.n.resubscribes,
            "sip": sip_stats(&self.ep),
            "tls": tls,
        }));
    }
}
