//! The task behind `sip_presence` and `sip_dialog`: subscribes to every configured person at
//! the presence server or PBX and turns NOTIFYs into signals.
//!
//! - Subscriptions start at `subscribe_rate` per second so a large directory does not flood the
//!   peer; each then lives on its own (refresh, back-off, re-subscribe: `presence_sip::subscription`).
//! - Dialog state is kept per extension with [`DialogTracker`]: non-increasing versions are
//!   dropped, full and partial documents applied; a new subscription resets the version.
//! - An OPTIONS request every `keepalive_secs` checks the peer. Two misses in a row (of pings sent
//!   since the peer last answered, `connect::Pings`) mark the
//!   feed down, so its signals show stale (never Offline); when it answers again, every
//!   subscription is renewed from scratch, since a restarted server has forgotten them.
//! - A subscription that fails on its own (say `404` for one user) makes that person's SIP
//!   source Unknown until it comes back.
//! - The people follow the live directory ([`Follow`]): when it changes, newcomers are
//!   subscribed (at `subscribe_rate`), a leaver's subscription is dropped — which
//!   un-SUBSCRIBEs (`Expires: 0`) — and a person whose URI or extension changed is
//!   un-SUBSCRIBEd at the old resource and subscribed at the new one.
//! - Requests outside any dialog are answered: OPTIONS `200`, a NOTIFY of a dialog this task
//!   no longer knows `481` (so the peer drops it), anything else `405`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;

use presence_actors::directory::{PersonRef, UserIdx};
use presence_actors::model::{now_ms, Availability, Signal, Source};
use presence_actors::provider::ProviderContext;
use presence_sip::body::dialog_info::DialogTracker;
use presence_sip::subscription::{SubEvent, SubState, SubscribeSpec, Subscription};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::connect::{answer_stray, close, sip_stats, Connected, PingResult, Pings, TlsHealth};
use super::map;
use super::SipSourceConfig;
use crate::common::follow::Follow;
use crate::BuildError;

/// Which package a [`SipSourceConfig`] subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Package {
    /// `presence` with PIDF (RFC 3856).
    Presence,
    /// `dialog` with dialog-info (RFC 4235).
    Dialog,
}

impl Package {
    fn event(self) -> &'static str {
        match self {
            Package::Presence => "presence",
            Package::Dialog => "dialog",
        }
    }
    fn accept(self) -> &'static str {
        match self {
            Package::Presence => "application/pidf+xml",
            Package::Dialog => "application/dialog-info+xml",
        }
    }
    fn source(self) -> Source {
        match self {
            Package::Presence => Source::Sip,
            Package::Dialog => Source::Pbx,
        }
    }
    fn default_resource(self) -> &'static str {
        match self {
            Package::Presence => "{sip_uri}",
            Package::Dialog => "sip:{extension}@{domain}",
        }
    }
}

/// The task of a `sip_presence` or `sip_dialog` provider.
pub fn task(config: &SipSourceConfig, package: Package, ctx: ProviderContext) -> Result<crate::ProviderTask, BuildError> {
    config.validate()?;
    let cfg = config.clone();
    Ok(Box::pin(async move { run(cfg, package, ctx).await.map_err(crate::ProviderError::Failed) }))
}

struct Target {
    uri: String,
    sub: Option<Subscription>,
    /// Last reported state: true while a subscription is active.
    active: bool,
    /// A state was sent for this person (so a later failure is worth an Unknown).
    sent: bool,
    tracker: DialogTracker,
}

impl Target {
    fn new(uri: String) -> Target {
        Target { uri, sub: None, active: false, sent: false, tracker: DialogTracker::default() }
    }
}

async fn run(cfg: SipSourceConfig, package: Package, ctx: ProviderContext) -> Result<(), String> {
    let mut shutdown = ctx.shutdown.clone();
    let Some(Connected { ep, mut requests, peer }) = cfg.conn.open(&ctx).await.map_err(|e| e.to_string())? else { return Ok(()) };
    let (server, transport) = (peer.addr, peer.transport);
    let domain = cfg.domain();
    let from = cfg.from.clone().unwrap_or_else(|| format!("sip:presence-hub@{domain}"));
    let template = cfg.resource.clone().unwrap_or_else(|| package.default_resource().to_string());

    // Who is subscribed follows the live directory: the resource URI per person in scope.
    let mut follow: Follow<String> = Follow::new(&ctx);
    let want = |_: UserIdx, p: &PersonRef<'_>| crate::extension_in_scope(&cfg.extension_prefixes, p).then(|| super::resource_uri(&template, p, &domain)).flatten();
    let mut targets: HashMap<UserIdx, Target> = HashMap::new();
    for (idx, uri) in follow.update(want).added {
        targets.insert(idx, Target::new(uri));
    }
    info!(provider = %ctx.name, server = %server, local = %ep.local_addr(), people = targets.len(), package = package.event(), "sip provider starting");
    ctx.feed.set_state("subscribing");

    let (etx, mut erx) = mpsc::channel::<(UserIdx, SubEvent)>(4096);
    let spec_for = |uri: &str| SubscribeSpec {
        peer,
        uri: uri.to_string(),
        from: from.clone(),
        contact_user: "presence-hub".into(),
        event: package.event().into(),
        accept: package.accept().into(),
        expires: cfg.conn.expires_secs,
        headers: vec![],
        body: None,
        credentials: cfg.login.credentials(),
    };
    let mut pending: VecDeque<UserIdx> = targets.keys().copied().collect();
    let step = Duration::from_secs(1) / cfg.subscribe_rate.max(1);
    let mut spawn_tick = tokio::time::interval(step.max(Duration::from_micros(100)));
    let mut ping_tick = tokio::time::interval(Duration::from_secs(cfg.conn.keepalive_secs.max(1)));
    let (ptx, mut prx) = mpsc::channel::<(u64, Result<(), String>)>(4);
    let mut pings = Pings::default();
    // Down until the peer answers (a ping or a subscription).
    let mut down = true;
    let mut was_down_after_up = false;
    let mut resubscribing = false;
    // After an outage: people whose first NOTIFY of the new subscription is still due. The feed
    // stays stale until they are all in (or 30 s pass), so no old state shows as live.
    let mut awaiting: std::collections::HashSet<UserIdx> = Default::default();
    let mut resubscribe_deadline: Option<tokio::time::Instant> = None;
    let mut notifies = 0u64;
    let mut bad_bodies = 0u64;
    let mut details_tick = tokio::time::interval(Duration::from_secs(1));
    let mut tls_health = TlsHealth::new(&cfg.conn);

    loop {
        tokio::select! {
            _ = shutdown.recv() => {
                // Dropping the subscriptions un-SUBSCRIBEs; give them a moment.
                targets.clear();
                close(&ep).await;
                return Ok(());
            }
            _ = follow.changed() => {
                // The directory changed: newcomers are subscribed (at `subscribe_rate`), a
                // leaver's target is dropped (which un-SUBSCRIBEs, `Expires: 0`), and a person
                // whose URI changed is un-SUBSCRIBEd at the old one and subscribed at the new.
                let changes = follow.update(want);
                if changes.is_empty() {
                    continue;
                }
                info!(provider = %ctx.name, added = changes.added.len(), removed = changes.removed.len(), changed = changes.changed.len(), "directory changed; following it");
                let was_awaiting = !awaiting.is_empty();
                for (idx, _) in changes.dropped() {
                    targets.remove(&idx);
                    awaiting.remove(&idx);
                }
                pending.retain(|i| targets.contains_key(i));
                for (idx, uri) in changes.taken() {
                    targets.insert(idx, Target::new(uri));
                    pending.push_back(idx);
                }
                if resubscribing && was_awaiting && awaiting.is_empty() {
                    // Only leavers were still awaited after an outage: everyone else is back.
                    resubscribing = false;
                    down = false;
                    resubscribe_deadline = None;
                    ctx.sink.set_up(true);
                }
                if !down {
                    ctx.feed.set_state(if pending.is_empty() { "up" } else { "subscribing" });
                }
            }
            _ = spawn_tick.tick(), if !pending.is_empty() => {
                if let Some(idx) = pending.pop_front() {
                    if let Some(t) = targets.get_mut(&idx) {
                        t.sub = Some(Subscription::spawn(ep.clone(), spec_for(&t.uri), idx, etx.clone()));
                    }
                }
                if pending.is_empty() {
                    ctx.feed.set_state(if down { "down" } else { "up" });
                }
            }
            _ = ping_tick.tick(), if cfg.conn.keepalive_secs > 0 => pings.spawn(&ep, peer, &from, &ptx),
            Some((n, answer)) = prx.recv() => match pings.result(n, answer.is_ok()) {
                PingResult::Old => {}
                PingResult::Answered => {
                    if down && was_down_after_up && !resubscribing {
                        // Back after an outage: it may have forgotten every subscription. Stay
                        // stale until the first new one is accepted (its NOTIFY brings state).
                        resubscribing = true;
                        info!(provider = %ctx.name, "sip peer answers again; re-subscribing everyone");
                        ctx.feed.set_state("resubscribing");
                        awaiting.clear();
                        for (idx, t) in targets.iter() {
                            if let Some(s) = &t.sub {
                                s.resubscribe();
                                awaiting.insert(*idx);
                            }
                        }
                        resubscribe_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(30));
                    } else if down && !was_down_after_up {
                        down = false;
                        ctx.sink.set_up(true);
                        ctx.feed.set_state(if pending.is_empty() { "up" } else { "subscribing" });
                    }
                }
                PingResult::Missed(misses) => {
                    let why = answer.err().unwrap_or_default();
                    if misses >= 2 && !down {
                        down = true;
                        resubscribing = false;
                        was_down_after_up = true;
                        warn!(provider = %ctx.name, server = %server, reason = %why, "sip peer does not answer; feed down (stale)");
                        ctx.feed.set_state("down");
                        ctx.sink.set_up(false);
                    }
                    if misses >= 2 {
                        // Also while down from the start: the health says why (a TLS
                        // certificate refused reads differently from a silent peer).
                        ctx.feed.record_error(&format!("peer does not answer OPTIONS: {why}"));
                    }
                }
            },
            Some((idx, ev)) = erx.recv() => {
                let Some(t) = targets.get_mut(&idx) else { continue };
                match ev {
                    SubEvent::Active { body, .. } => {
                        t.active = true;
                        // The piggy-backed body, if any, is the new dialog's first state.
                        if body.is_some() {
                            t.tracker.reset();
                        }
                        if down && !resubscribing {
                            down = false;
                            pings.answered();
                            ctx.sink.set_up(true);
                            ctx.feed.set_state(if pending.is_empty() { "up" } else { "subscribing" });
                        }
                        if let Some((ct, body)) = body {
                            deliver(&ctx, package, idx, t, Some(ct), &body, &mut bad_bodies);
                        }
                    }
                    SubEvent::Notify { state, content_type, body, first, .. } => {
                        notifies += 1;
                        if first {
                            t.tracker.reset();
                        }
                        if !body.is_empty() {
                            deliver(&ctx, package, idx, t, content_type, &body, &mut bad_bodies);
                        }
                        if first && awaiting.remove(&idx) && awaiting.is_empty() && resubscribing {
                            resubscribing = false;
                            down = false;
                            pings.answered();
                            resubscribe_deadline = None;
                            ctx.sink.set_up(true);
                            ctx.feed.set_state("up");
                        }
                        if matches!(state, SubState::Terminated { .. }) {
                            t.active = false;
                        }
                    }
                    SubEvent::Down { reason, requested, .. } => {
                        if !requested && awaiting.remove(&idx) && awaiting.is_empty() && resubscribing {
                            resubscribing = false;
                            down = false;
                            resubscribe_deadline = None;
                            ctx.sink.set_up(true);
                            ctx.feed.set_state("up");
                        }
                        if t.active || t.sent {
                            tracing::debug!(provider = %ctx.name, uri = %t.uri, %reason, "subscription down");
                        }
                        t.active = false;
                        if t.sent && !down {
                            let s = Signal::new(package.source(), &ctx.name, Some(Availability::Unknown), now_ms())
                                .note("subscription lost");
                            let _ = ctx.sink.send_to(idx, s);
                            t.sent = false;
                        }
                        ctx.feed.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Some(req) = requests.recv() => answer_stray(&ep, req).await,
            _ = tokio::time::sleep_until(resubscribe_deadline.unwrap_or_else(tokio::time::Instant::now)), if resubscribe_deadline.is_some() => {
                warn!(provider = %ctx.name, missing = awaiting.len(), "not every subscription came back within 30 s; feed up anyway");
                resubscribe_deadline = None;
                resubscribing = false;
                down = false;
                awaiting.clear();
                ctx.sink.set_up(true);
                ctx.feed.set_state("up");
            }
            _ = details_tick.tick() => {
                let active = targets.values().filter(|t| t.active).count();
                ctx.feed.set_details(serde_json::json!({
                    "server": server.to_string(),
                    "transport": transport.to_string(),
                    "local": ep.local_addr().to_string(),
                    "package": package.event(),
                    "people": targets.len(),
                    "subscriptions_active": active,
                    "subscriptions_pending": pending.len(),
                    "notifies": notifies,
                    "bad_bodies": bad_bodies,
                    "sip": sip_stats(&ep),
                    "tls": tls_health.details(&ep, peer, &ctx.name, now_ms() / 1000),
                }));
            }
        }
    }
}

fn deliver(ctx: &ProviderContext, package: Package, idx: UserIdx, t: &mut Target, content_type: Option<String>, body: &[u8], bad: &mut u64) {
    let now = now_ms();
    let result = match package {
        Package::Presence => map::presence_signal(content_type.as_deref(), body, &ctx.name, now),
        Package::Dialog => map::dialog_signal(content_type.as_deref(), body, &mut t.tracker, &ctx.name, now),
    };
    match result {
        Ok(Some(signal)) => {
            t.sent = true;
            if let Err(e) = ctx.sink.send_to(idx, signal) {
                tracing::debug!(provider = %ctx.name, error = %e, "signal not delivered");
            }
        }
        Ok(None) => {}
        Err(e) => {
            *bad += 1;
            ctx.feed.record_error(&format!("{}: {e}", t.uri));
            warn!(provider = %ctx.name, uri = %t.uri, error = %e, "sip: body not understood; ignored");
        }
    }
}
