//! A PBX's busy-lamp side: a SIP notifier of the dialog event package (RFC 4235) for its
//! extensions, over UDP and TCP on loopback, built on the project's SIP layer.
//!
//! Watchers SUBSCRIBE to `sip:EXT@host` with `Event: dialog`; the simulator answers `200`,
//! sends the extension's full state at once (version 0 for a new subscription), then a NOTIFY
//! per call-state change — partial documents (only the changed dialog) or full ones, as
//! configured — with the version counting up. Calls are set with [`PbxSim::set_call`] or made
//! up by [`PbxSim::drive_demo`] (ring, answer, talk, hang up). [`PbxSim::restart`] forgets every
//! subscription (as a rebooted PBX does) and [`PbxSim::set_silent`] stops answering, for tests
//! of the source's recovery.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use presence_sip::body::dialog_info::{build_dialog_info, Dialog, DialogInfo, DialogState, Direction, DocState, Participant};
use presence_sip::endpoint::{Endpoint, EndpointConfig, Incoming, Peer};
use presence_sip::message::{name_addr_uri, uri_host_port, Builder};
use tokio::sync::mpsc;

use crate::graph::Rng;

/// What an extension is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// No call.
    Idle,
    /// A call from `from` is ringing.
    Ringing {
        /// Caller (a SIP URI or number).
        from: String,
    },
    /// Talking with `with`.
    Talking {
        /// The other party.
        with: String,
    },
}

/// Settings.
#[derive(Debug, Clone)]
pub struct PbxSimConfig {
    /// Where to listen (UDP and TCP).
    pub listen: SocketAddr,
    /// Send partial documents for changes (full ones otherwise).
    pub partial: bool,
    /// Shortest subscription accepted.
    pub min_expires: u32,
}

impl Default for PbxSimConfig {
    fn default() -> Self {
        PbxSimConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), partial: true, min_expires: 60 }
    }
}

struct Watch {
    ext: String,
    peer: Peer,
    remote_uri: String,
    local_hdr: String,
    remote_hdr: String,
    call_id: String,
    cseq: u32,
    version: u64,
    expires_at: Instant,
}

#[derive(Default)]
struct State {
    calls: HashMap<String, (Call, u64)>,
    watches: HashMap<String, Watch>,
    silent: bool,
    next_call: u64,
    notifies: u64,
    /// SUBSCRIBEs received, oldest first ([`PbxSim::subscription_log`]).
    log: Vec<crate::SubEvent>,
}

/// A running PBX simulator; stops when dropped.
pub struct PbxSim {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changes: mpsc::UnboundedSender<Option<String>>,
    ep: Endpoint,
    _thread: std::thread::JoinHandle<()>,
}

impl PbxSim {
    /// Starts the simulator on its own thread.
    pub fn start(cfg: PbxSimConfig) -> std::io::Result<PbxSim> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let (ctx, crx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new().name("pbx-sim".into()).spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let ep_cfg = EndpointConfig { listen: cfg.listen, ..Default::default() };
                match Endpoint::bind(ep_cfg).await {
                    Ok((ep, rx)) => {
                        let _ = ready_tx.send(Ok(ep.clone()));
                        serve(ep, rx, crx, st, cfg).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })?;
        let ep = ready_rx.recv().map_err(|_| std::io::Error::other("pbx-sim thread ended"))??;
        Ok(PbxSim { addr: ep.local_addr(), state, changes: ctx, ep, _thread: thread })
    }

    /// The bound address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets an extension's call state; watchers are notified.
    pub fn set_call(&self, ext: &str, call: Call) {
        {
            let mut s = self.state.lock().unwrap();
            s.next_call += 1;
            let id = s.next_call;
            let entry = s.calls.entry(ext.to_string()).or_insert((Call::Idle, id));
            if entry.0 == Call::Idle {
                entry.1 = id; // a new call gets a new dialog id
            }
            entry.0 = call;
        }
        let _ = self.changes.send(Some(ext.to_string()));
    }

    /// An extension's call state.
    pub fn call(&self, ext: &str) -> Call {
        self.state.lock().unwrap().calls.get(ext).map(|c| c.0.clone()).unwrap_or(Call::Idle)
    }

    /// Number of live subscriptions.
    pub fn subscriptions(&self) -> usize {
        self.state.lock().unwrap().watches.len()
    }

    /// Every SUBSCRIBE for the dialog package received so far, oldest first: `subscribe` (a
    /// new one), `refresh` or `unsubscribe` (`Expires: 0`), by the request's source address.
    pub fn subscription_log(&self) -> Vec<crate::SubEvent> {
        self.state.lock().unwrap().log.clone()
    }

    /// NOTIFYs sent so far.
    pub fn notifies(&self) -> u64 {
        self.state.lock().unwrap().notifies
    }

    /// Forgets every subscription, as a rebooted PBX does (refreshes then get `481`).
    pub fn restart(&self) {
        self.state.lock().unwrap().watches.clear();
    }

    /// Stops answering anything (a PBX that is down) or starts again.
    pub fn set_silent(&self, silent: bool) {
        self.state.lock().unwrap().silent = silent;
    }

    /// Counters of the SIP endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// Makes calls on `extensions` forever: every `every` (± half) one extension starts
    /// ringing, is answered after 2–8 s, talks for 10–90 s and hangs up; some calls are
    /// not answered.
    pub fn drive_demo(self: &Arc<Self>, extensions: Vec<String>, every: Duration, seed: u64) -> std::io::Result<()> {
        let sim = Arc::downgrade(self);
        std::thread::Builder::new().name("pbx-sim-demo".into()).spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            let mut rng = Rng::new(seed);
            rt.block_on(async move {
                let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Call, Duration)>();
                loop {
                    let wait = every.as_millis() as u64 / 2 + rng.below(every.as_millis() as u64 + 1);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(wait)) => {
                            let Some(sim) = sim.upgrade() else { return };
                            if extensions.is_empty() {
                                return;
                            }
                            let ext = extensions[rng.below(extensions.len() as u64) as usize].clone();
                            if sim.call(&ext) != Call::Idle {
                                continue;
                            }
                            let from = format!("sip:+4687{:06}@pstn", rng.below(1_000_000));
                            sim.set_call(&ext, Call::Ringing { from: from.clone() });
                            let answered = rng.below(5) > 0;
                            let ring = Duration::from_secs(2 + rng.below(7));
                            let next = if answered { Call::Talking { with: from } } else { Call::Idle };
                            let _ = done_tx.send((ext, next, ring));
                            let _ = &done_tx;
                        }
                        Some((ext, next, after)) = done_rx.recv() => {
                            let tx = done_tx.clone();
                            let talk = Duration::from_secs(10 + rng.below(81));
                            let sim = sim.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(after).await;
                                let Some(s) = sim.upgrade() else { return };
                                let talking = matches!(next, Call::Talking { .. });
                                s.set_call(&ext, next);
                                if talking {
                                    let _ = tx.send((ext, Call::Idle, talk));
                                }
                            });
                        }
                    }
                }
            });
        })?;
        Ok(())
    }
}

async fn serve(
    ep: Endpoint,
    mut rx: mpsc::Receiver<Incoming>,
    mut changes: mpsc::UnboundedReceiver<Option<String>>,
    state: Arc<Mutex<State>>,
    cfg: PbxSimConfig,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            Some(req) = rx.recv() => {
                if state.lock().unwrap().silent {
                    continue;
                }
                on_request(&ep, &state, &cfg, req).await;
            }
            Some(Some(ext)) = changes.recv() => {
                let keys: Vec<String> = state.lock().unwrap().watches.iter().filter(|(_, w)| w.ext == ext).map(|(k, _)| k.clone()).collect();
                for k in keys {
                    notify(&ep, &state, &k, cfg.partial, None);
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let expired: Vec<String> = state.lock().unwrap().watches.iter().filter(|(_, w)| w.expires_at <= now).map(|(k, _)| k.clone()).collect();
                for k in expired {
                    notify(&ep, &state, &k, false, Some("terminated;reason=timeout"));
                    state.lock().unwrap().watches.remove(&k);
                }
            }
        }
    }
}

async fn on_request(ep: &Endpoint, state: &Arc<Mutex<State>>, cfg: &PbxSimConfig, req: Incoming) {
    let method = req.msg.method().map(|m| m.to_string()).unwrap_or_default();
    match method.as_str() {
        "OPTIONS" => ep.reply(&req, 200, "OK").await,
        "SUBSCRIBE" => {
            if !req.msg.event().is_some_and(|e| e.eq_ignore_ascii_case("dialog")) {
                return ep.respond(&req, Builder::response_to(&req.msg, 489, "Bad Event", Some(&ep.token())).header("Allow-Events", "dialog")).await;
            }
            let expires = req.msg.expires().ok().flatten().unwrap_or(3600);
            let what = match (expires, req.msg.to.tag.is_some()) {
                (0, _) => "unsubscribe",
                (_, true) => "refresh",
                (_, false) => "subscribe",
            };
            state.lock().unwrap().log.push(crate::SubEvent { at: Instant::now(), by: req.peer.addr.to_string(), what });
            if expires != 0 && expires < cfg.min_expires {
                let r = Builder::response_to(&req.msg, 423, "Interval Too Brief", Some(&ep.token())).header("Min-Expires", &cfg.min_expires.to_string());
                return ep.respond(&req, r).await;
            }
            let Some(ext) = req.msg.request_user().map(str::to_string) else {
                return ep.reply(&req, 404, "Not Found").await;
            };
            if let Some(tag) = req.msg.to.tag.clone() {
                let key = format!("{}|{tag}", req.msg.call_id);
                let known = state.lock().unwrap().watches.contains_key(&key);
                if !known {
                    return ep.reply(&req, 481, "Subscription Does Not Exist").await;
                }
                ep.respond(&req, Builder::response_to(&req.msg, 200, "OK", None).header("Expires", &expires.to_string())).await;
                if expires == 0 {
                    notify(ep, state, &key, false, Some("terminated;reason=timeout"));
                    state.lock().unwrap().watches.remove(&key);
                } else {
                    if let Some(w) = state.lock().unwrap().watches.get_mut(&key) {
                        w.expires_at = Instant::now() + Duration::from_secs(expires as u64);
                    }
                    notify(ep, state, &key, false, None);
                }
                return;
            }
            let tag = ep.token();
            let r = Builder::response_to(&req.msg, 200, "OK", Some(&tag)).header("Expires", &expires.to_string()).header("Contact", &ep.contact("pbx", req.peer.transport));
            ep.respond(&req, r).await;
            let contact = req.msg.header(&ezk_sip_types::Name::CONTACT).map(name_addr_uri).unwrap_or("").to_string();
            let peer = match req.peer.transport {
                presence_sip::endpoint::Transport::Tcp | presence_sip::endpoint::Transport::Tls => req.peer,
                t => uri_host_port(&contact).and_then(|h| h.parse().ok()).map(|addr| Peer { transport: t, addr }).unwrap_or(req.peer),
            };
            let key = format!("{}|{tag}", req.msg.call_id);
            let to = req.msg.header(&ezk_sip_types::Name::TO).unwrap_or("").to_string();
            let w = Watch {
                ext,
                peer,
                remote_uri: if contact.is_empty() { name_addr_uri(req.msg.header(&ezk_sip_types::Name::FROM).unwrap_or("")).to_string() } else { contact },
                local_hdr: format!("{to};tag={tag}"),
                remote_hdr: req.msg.header(&ezk_sip_types::Name::FROM).unwrap_or("").to_string(),
                call_id: req.msg.call_id.to_string(),
                cseq: 0,
                version: 0,
                expires_at: Instant::now() + Duration::from_secs(expires as u64),
            };
            state.lock().unwrap().watches.insert(key.clone(), w);
            let terminate = (expires == 0).then_some("terminated;reason=timeout");
            notify(ep, state, &key, false, terminate);
            if expires == 0 {
                state.lock().unwrap().watches.remove(&key);
            }
        }
        "NOTIFY" => ep.reply(&req, 481, "Subscription Does Not Exist").await,
        _ => ep.reply(&req, 405, "Method Not Allowed").await,
    }
}

/// Sends the NOTIFY of one subscription (fire and forget; a refused one ends it).
fn notify(ep: &Endpoint, state: &Arc<Mutex<State>>, key: &str, partial: bool, terminate: Option<&str>) {
    let mut s = state.lock().unwrap();
    let (call, call_id) = {
        let Some(w) = s.watches.get(key) else { return };
        s.calls.get(&w.ext).cloned().unwrap_or((Call::Idle, 0))
    };
    s.notifies += 1;
    let Some(w) = s.watches.get_mut(key) else { return };
    let host = ep.local_addr();
    let entity = format!("sip:{}@{host}", w.ext);
    let mut doc = DialogInfo { version: w.version, state: if partial { DocState::Partial } else { DocState::Full }, entity: entity.clone(), dialogs: vec![] };
    w.version += 1;
    let dialog = |state: DialogState, remote: &str| Dialog {
        id: format!("call-{call_id}"),
        call_id: Some(format!("call-{call_id}@pbx")),
        direction: Some(Direction::Recipient),
        state,
        remote: Some(Participant { identity: Some(remote.to_string()), display: None, target: None }),
        local: Some(Participant { identity: Some(entity.clone()), display: None, target: None }),
        ..Dialog::default()
    };
    match &call {
        Call::Idle if partial && call_id > 0 => doc.dialogs.push(dialog(DialogState::Terminated, "")),
        Call::Idle => {}
        Call::Ringing { from } => doc.dialogs.push(dialog(DialogState::Early, from)),
        Call::Talking { with } => doc.dialogs.push(dialog(DialogState::Confirmed, with)),
    }
    w.cseq += 1;
    let (via, branch) = ep.via(w.peer.transport);
    let sub_state = match terminate {
        Some(t) => t.to_string(),
        None => format!("active;expires={}", w.expires_at.saturating_duration_since(Instant::now()).as_secs()),
    };
    let req = Builder::request("NOTIFY", &w.remote_uri)
        .header("Via", &via)
        .header("Max-Forwards", "70")
        .header("From", &w.local_hdr)
        .header("To", &w.remote_hdr)
        .header("Call-ID", &w.call_id)
        .header("CSeq", &format!("{} NOTIFY", w.cseq))
        .header("Contact", &ep.contact("pbx", w.peer.transport))
        .header("Event", "dialog")
        .header("Subscription-State", &sub_state)
        .body("application/dialog-info+xml", build_dialog_info(&doc))
        .build();
    let peer = w.peer;
    drop(s);
    let ep = ep.clone();
    let state = state.clone();
    let key = key.to_string();
    tokio::spawn(async move {
        let ok = matches!(ep.request_timeout(peer, &branch, req, Duration::from_secs(8)).await, Ok(m) if m.code().is_some_and(|c| c < 300));
        if !ok {
            state.lock().unwrap().watches.remove(&key);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_sip::body::dialog_info::{parse_dialog_info, DialogTracker, ExtensionState};
    use presence_sip::endpoint::Transport;
    use presence_sip::subscription::{SubEvent, SubscribeSpec, Subscription};

    #[tokio::test]
    async fn watchers_get_full_state_then_changes() {
        let sim = PbxSim::start(PbxSimConfig::default()).unwrap();
        let (ep, _rx) = Endpoint::bind(EndpointConfig::default()).await.unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let spec = SubscribeSpec {
            peer: Peer { transport: Transport::Udp, addr: sim.addr() },
            uri: format!("sip:2001@{}", sim.addr()),
            from: "sip:hub@127.0.0.1".into(),
            contact_user: "hub".into(),
            event: "dialog".into(),
            accept: "application/dialog-info+xml".into(),
            expires: 600,
            headers: vec![],
            body: None,
            credentials: None,
        };
        let _sub = Subscription::spawn(ep, spec, (), tx);
        let mut tracker = DialogTracker::default();
        let mut next = async || loop {
            let (_, ev) = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await.unwrap().unwrap();
            if let SubEvent::Notify { body, .. } = ev {
                let doc = parse_dialog_info(&body).unwrap();
                tracker.apply(&doc);
                return (doc, tracker.state());
            }
        };
        let (first, st) = next().await;
        assert_eq!((first.version, first.state, st), (0, DocState::Full, ExtensionState::Idle));
        sim.set_call("2001", Call::Ringing { from: "sip:+46812345@pstn".into() });
        let (d, st) = next().await;
        assert_eq!((d.version, d.state, st), (1, DocState::Partial, ExtensionState::Ringing));
        sim.set_call("2001", Call::Talking { with: "sip:+46812345@pstn".into() });
        assert_eq!(next().await.1, ExtensionState::InCall);
        sim.set_call("2001", Call::Idle);
        assert_eq!(next().await.1, ExtensionState::Idle);
        assert_eq!(sim.subscriptions(), 1);
    }
}
