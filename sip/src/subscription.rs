//! The subscriber side of SIP-specific event notification (RFC 6665): one task per
//! subscription that SUBSCRIBEs, answers the NOTIFYs of its dialog, refreshes before expiry,
//! and comes back by itself after anything goes wrong.
//!
//! * Refresh: at the granted expiry minus a margin (a quarter of it, at most 60 s).
//! * Errors (timeout, 5xx, 481 on refresh, `terminated` NOTIFY): the subscription reports
//!   [`SubEvent::Down`] and starts a new dialog after a back-off of 1 s doubling to
//!   [`MAX_BACKOFF`] with jitter (`Retry-After` and `retry-after=` are honoured;
//!   `rejected`/`noresource` wait the maximum). `deactivated`/`timeout` re-subscribe at once.
//! * `401`/`407`: answered once per challenge with the configured credentials; `423`: the
//!   expiry is raised to `Min-Expires`.
//! * [`Subscription::resubscribe`] forces a new dialog (the provider calls it when its health
//!   check saw the peer come back: a restarted presence server has forgotten its subscriptions).
//! * Dropping the [`Subscription`] un-SUBSCRIBEs (Expires: 0) and ends the task.
//!
//! The dialog follows RFC 3261 §12: in-dialog requests (refresh, un-SUBSCRIBE) go to the remote
//! target — the Contact of the `200`, updated by each NOTIFY's (a target refresh, RFC 6665
//! §4.1.2.4) — through the route set the peer's proxies recorded (`Record-Route` of the `200`
//! in reverse, or of a NOTIFY that came first), as `Route` headers (loose routing; a strict
//! router's URI becomes the Request-URI). They are still sent to [`SubscribeSpec::peer`], the
//! first hop.
//!
//! NOTIFYs are answered `200` before they are handed on; Skype for Business's `BENOTIFY` gets no
//! answer (MS-SIP §3.3.5.1). A NOTIFY may arrive before the `200` of its SUBSCRIBE (RFC 6665
//! §4.1.2.4); it is accepted on the From tag. Events keep the peer's order: a response received
//! before a NOTIFY is reported first.

use crate::auth::answer_challenge;
use crate::endpoint::{Endpoint, Incoming, Peer, TxError};
use crate::message::{Builder, Message};
use bytes::Bytes;
use ezk_sip_types::header::typed::{EventReasonValue, SubStateValue, SubscriptionState};
use ezk_sip_types::Name;
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What to subscribe to.
#[derive(Debug, Clone)]
pub struct SubscribeSpec {
    /// Where requests go (a presence server, a PBX, a Skype for Business pool).
    pub peer: Peer,
    /// Request-URI and To (the resource).
    pub uri: String,
    /// From (the hub's identity at the peer).
    pub from: String,
    /// User part of the Contact.
    pub contact_user: String,
    /// Event package (`presence`, `dialog`).
    pub event: String,
    /// Accept header value.
    pub accept: String,
    /// Requested expiry in seconds.
    pub expires: u32,
    /// More headers (Supported, Require… for Skype for Business).
    pub headers: Vec<(String, String)>,
    /// A body (Skype for Business batch subscriptions): content type and bytes.
    pub body: Option<(String, Bytes)>,
    /// Digest credentials (user, password) for a challenging peer.
    pub credentials: Option<(String, String)>,
}

/// The Subscription-State of a NOTIFY, simplified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubState {
    Active,
    Pending,
    Terminated { reason: Option<String> },
}

/// What a subscription reports.
#[derive(Debug, Clone)]
pub enum SubEvent {
    /// The peer accepted the SUBSCRIBE (first or after a restart); `body` is a notification
    /// piggy-backed on the 200 (Skype for Business `ms-piggyback-first-notify`): the full
    /// `Content-Type` value (parameters such as `boundary` included) and the bytes.
    Active { expires: u32, body: Option<(String, Bytes)> },
    /// A NOTIFY/BENOTIFY of the dialog. `first` marks the first of a new dialog (full state:
    /// version counters of the body start again).
    Notify { state: SubState, content_type: Option<String>, body: Bytes, msg: Box<Message>, first: bool },
    /// No usable subscription now; the next attempt is in `retry_in`. `requested` is true when
    /// [`Subscription::resubscribe`] asked for it.
    Down { reason: String, retry_in: Duration, requested: bool },
}

enum Command {
    Resubscribe,
}

/// A running subscription. Dropping it un-SUBSCRIBEs.
#[derive(Debug)]
pub struct Subscription {
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscription {
    /// Starts a subscription; its events go to `events` tagged with `key`.
    pub fn spawn<K: Clone + Send + Sync + 'static>(endpoint: Endpoint, spec: SubscribeSpec, key: K, events: mpsc::Sender<(K, SubEvent)>) -> Subscription {
        let (ctx, crx) = mpsc::channel(4);
        let task = tokio::spawn(run(endpoint, spec, key, events, crx));
        Subscription { commands: ctx, task }
    }

    /// Drops the current dialog and subscribes anew (after the peer restarted).
    pub fn resubscribe(&self) {
        let _ = self.commands.try_send(Command::Resubscribe);
    }

    /// Whether the task still runs.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

struct Dialog {
    call_id: String,
    from_tag: String,
    to_tag: Option<String>,
    cseq: u32,
    nc: u32,
    notified: bool,
    /// The peer's Contact (RFC 3261 §12.1.2): the Request-URI of in-dialog requests.
    remote_target: Option<String>,
    /// The route set (`Route` values in the order they are sent).
    route_set: Vec<String>,
}

impl Dialog {
    /// Request-URI and `Route` values of the next request: outside the dialog the resource
    /// itself; in it the remote target through the route set (RFC 3261 §12.2.1.1).
    fn request_target(&self, resource: &str) -> (String, Vec<String>) {
        if self.to_tag.is_none() {
            return (resource.to_string(), Vec::new());
        }
        let target = self.remote_target.clone().unwrap_or_else(|| resource.to_string());
        match self.route_set.first() {
            // A strict router (no `lr`): its URI is the Request-URI, the target goes last.
            Some(first) if !route_is_loose(first) => {
                let mut routes: Vec<String> = self.route_set[1..].to_vec();
                routes.push(format!("<{target}>"));
                (crate::message::name_addr_uri(first).to_string(), routes)
            }
            _ => (target, self.route_set.clone()),
        }
    }

    /// Takes the remote target from a `Contact`, if there is one.
    fn refresh_target(&mut self, msg: &Message) {
        if let Some(c) = msg.header(&Name::CONTACT).map(crate::message::name_addr_uri).filter(|c| !c.is_empty() && *c != "*") {
            self.remote_target = Some(c.to_string());
        }
    }
}

/// Whether a `Route`/`Record-Route` value names a loose router (`;lr` in its URI).
fn route_is_loose(value: &str) -> bool {
    crate::message::name_addr_uri(value).split(';').skip(1).any(|p| p.trim().eq_ignore_ascii_case("lr") || p.trim().to_ascii_lowercase().starts_with("lr="))
}

/// The values of a `Record-Route` (or `Route`) header, each header and each comma-separated
/// entry in order (commas inside `<…>` or quotes do not split).
fn route_values(msg: &Message) -> Vec<String> {
    let mut out = Vec::new();
    for v in msg.headers.get_raw(&Name::RECORD_ROUTE) {
        let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
        let bytes = v.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'"' => quoted = !quoted,
                b'<' if !quoted => depth += 1,
                b'>' if !quoted => depth -= 1,
                b',' if !quoted && depth == 0 => {
                    out.push(v[start..i].trim().to_string());
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push(v[start..].trim().to_string());
    }
    out.retain(|r| !r.is_empty());
    out
}

enum Outcome {
    /// Stop for good (the handle was dropped).
    Stop,
    /// Start a new dialog after this wait.
    Retry(Duration, String),
    /// Start a new dialog at once (asked for).
    Resubscribe,
}

async fn run<K: Clone + Send + Sync + 'static>(
    ep: Endpoint,
    mut spec: SubscribeSpec,
    key: K,
    events: mpsc::Sender<(K, SubEvent)>,
    mut commands: mpsc::Receiver<Command>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let (ntx, nrx) = mpsc::channel(32);
        let mut dialog = Dialog {
            call_id: format!("{}@presence-hub", ep.token()),
            from_tag: ep.token(),
            to_tag: None,
            cseq: 0,
            nc: 0,
            notified: false,
            remote_target: None,
            route_set: Vec::new(),
        };
        ep.register_dialog(&dialog.call_id, ntx);
        let outcome = one_dialog(&ep, &mut spec, &key, &events, &mut commands, &mut dialog, nrx, &mut backoff).await;
        ep.unregister_dialog(&dialog.call_id);
        match outcome {
            Outcome::Stop => return,
            Outcome::Resubscribe => {
                let reason = "re-subscribing (peer restarted)".to_string();
                let ev = SubEvent::Down { reason, retry_in: Duration::ZERO, requested: true };
                let _ = events.send((key.clone(), ev)).await;
            }
            Outcome::Retry(wait, reason) => {
                let _ = events.send((key.clone(), SubEvent::Down { reason, retry_in: wait, requested: false })).await;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    cmd = commands.recv() => if cmd.is_none() { return },
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn one_dialog<K: Clone + Send + Sync + 'static>(
    ep: &Endpoint,
    spec: &mut SubscribeSpec,
    key: &K,
    events: &mpsc::Sender<(K, SubEvent)>,
    commands: &mut mpsc::Receiver<Command>,
    dialog: &mut Dialog,
    mut notifies: mpsc::Receiver<Incoming>,
    backoff: &mut Duration,
) -> Outcome {
    // Initial SUBSCRIBE.
    let granted = match subscribe(ep, spec, dialog, spec.expires, &mut notifies, key, events).await {
        Ok((granted, body)) => {
            *backoff = Duration::from_secs(1);
            let _ = events.send((key.clone(), SubEvent::Active { expires: granted, body })).await;
            granted
        }
        Err(fail) => return fail.into_outcome(backoff),
    };
    let mut refresh_at = tokio::time::Instant::now() + refresh_after(granted);
    loop {
        tokio::select! {
            n = notifies.recv() => {
                let Some(n) = n else { return Outcome::Retry(next_backoff(backoff), "dialog closed".into()) };
                if let Some(SubState::Terminated { reason }) = on_notify(ep, dialog, n, key, events).await {
                    return terminated_outcome(reason, backoff);
                }
            }
            _ = tokio::time::sleep_until(refresh_at) => {
                match subscribe(ep, spec, dialog, spec.expires, &mut notifies, key, events).await {
                    Ok((granted, _)) => refresh_at = tokio::time::Instant::now() + refresh_after(granted),
                    Err(fail) => return fail.into_outcome(backoff),
                }
            }
            cmd = commands.recv() => match cmd {
                None => {
                    if dialog.to_tag.is_some() {
                        let _ = tokio::time::timeout(Duration::from_secs(2), subscribe(ep, spec, dialog, 0, &mut notifies, key, events)).await;
                    }
                    return Outcome::Stop;
                }
                Some(Command::Resubscribe) => return Outcome::Resubscribe,
            }
        }
    }
}

fn terminated_outcome(reason: Option<String>, backoff: &mut Duration) -> Outcome {
    let wait = match reason.as_deref() {
        Some("deactivated") | Some("timeout") => Duration::from_millis(50),
        Some("rejected") | Some("noresource") => MAX_BACKOFF,
        _ => next_backoff(backoff),
    };
    let reason = reason.unwrap_or_else(|| "terminated".into());
    Outcome::Retry(wait, format!("subscription terminated by the peer ({reason})"))
}

fn refresh_after(granted: u32) -> Duration {
    let g = granted.max(1) as u64;
    Duration::from_secs(g - (g / 4).min(60)).max(Duration::from_secs(1))
}

fn next_backoff(backoff: &mut Duration) -> Duration {
    let cur = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    // ±20 % jitter so a restarted peer is not hit by every subscription at once.
    let jitter = (crate::random_u64() % 400) as f64 / 1000.0 + 0.8;
    cur.mul_f64(jitter)
}

enum Failure {
    /// A NOTIFY ended the subscription while the SUBSCRIBE was out.
    Terminated(Option<String>),
    Timeout,
    Status(u16, Option<u32>),
    Transport(String),
}

impl Failure {
    fn into_outcome(self, backoff: &mut Duration) -> Outcome {
        match self {
            Failure::Terminated(reason) => terminated_outcome(reason, backoff),
            Failure::Timeout => Outcome::Retry(next_backoff(backoff), "no answer to SUBSCRIBE".into()),
            Failure::Transport(e) => Outcome::Retry(next_backoff(backoff), e),
            Failure::Status(code, retry_after) => {
                let wait = match (retry_after, code) {
                    (Some(s), _) => Duration::from_secs(s.min(3600) as u64),
                    (None, 403 | 404 | 489) => MAX_BACKOFF,
                    _ => next_backoff(backoff),
                };
                Outcome::Retry(wait, format!("SUBSCRIBE answered {code}"))
            }
        }
    }
}

/// Sends a SUBSCRIBE in (or starting) the dialog, answering challenges and 423 once each.
/// NOTIFYs arriving meanwhile are handled. Returns the granted expiry and a piggy-backed body.
#[allow(clippy::too_many_arguments)]
async fn subscribe<K: Clone + Send + Sync + 'static>(
    ep: &Endpoint,
    spec: &mut SubscribeSpec,
    dialog: &mut Dialog,
    expires: u32,
    notifies: &mut mpsc::Receiver<Incoming>,
    key: &K,
    events: &mpsc::Sender<(K, SubEvent)>,
) -> Result<(u32, Option<(String, Bytes)>), Failure> {
    let mut auth: Option<(Name, String)> = None;
    let mut expires = expires;
    for _attempt in 0..4 {
        dialog.cseq += 1;
        let (via, branch) = ep.via(spec.peer.transport);
        let to = match &dialog.to_tag {
            Some(t) => format!("<{}>;tag={t}", spec.uri),
            None => format!("<{}>", spec.uri),
        };
        let (ruri, routes) = dialog.request_target(&spec.uri);
        let mut b = Builder::request("SUBSCRIBE", &ruri)
            .header("Via", &via)
            .header("Max-Forwards", "70")
            .header("From", &format!("<{}>;tag={}", spec.from, dialog.from_tag))
            .header("To", &to)
            .header("Call-ID", &dialog.call_id)
            .header("CSeq", &format!("{} SUBSCRIBE", dialog.cseq))
            .header("Contact", &ep.contact(&spec.contact_user, spec.peer.transport))
            .header("Event", &spec.event)
            .header("Accept", &spec.accept)
            .header("Expires", &expires.to_string())
            .header("User-Agent", ep.user_agent());
        for r in &routes {
            b = b.header("Route", r);
        }
        for (n, v) in &spec.headers {
            b = b.header(n, v);
        }
        if let Some((name, value)) = &auth {
            b = b.header(name.as_print_str(), value);
        }
        if let Some((ct, body)) = &spec.body {
            b = b.body(ct, body.clone());
        }
        let fut = ep.request(spec.peer, &branch, b.build());
        let mut terminated = None;
        tokio::pin!(fut);
        // Serve NOTIFYs that race the response. The response goes first when both are there:
        // a notification the peer sent after its 200 (SfB's next BENOTIFY after the
        // piggy-backed first one) must be reported after `Active`, in the peer's order.
        let resp = loop {
            tokio::select! {
                biased;
                r = &mut fut => break r,
                Some(n) = notifies.recv() => {
                    if let Some(SubState::Terminated { reason }) = on_notify(ep, dialog, n, key, events).await {
                        terminated = Some(reason);
                    }
                }
            }
        };
        if let Some(reason) = terminated {
            return Err(Failure::Terminated(reason));
        }
        let resp = match resp {
            Ok(r) => r,
            Err(TxError::Timeout) => return Err(Failure::Timeout),
            Err(e) => return Err(Failure::Transport(e.to_string())),
        };
        let code = resp.code().unwrap_or(0);
        match code {
            200..=299 => {
                if dialog.to_tag.is_none() {
                    dialog.to_tag = resp.to.tag.as_ref().map(|t| t.to_string());
                    // The dialog starts here: the route set is the Record-Route reversed.
                    dialog.route_set = route_values(&resp).into_iter().rev().collect();
                }
                dialog.refresh_target(&resp);
                let granted = resp.expires().ok().flatten().unwrap_or(expires);
                // The whole Content-Type value: a multipart body needs its boundary.
                let body = (!resp.body.is_empty())
                    .then(|| (resp.content_type_value().unwrap_or_default().to_string(), resp.body.clone()));
                return Ok((granted, body));
            }
            401 | 407 if auth.is_none() => {
                let Some((user, pass)) = &spec.credentials else { return Err(Failure::Status(code, None)) };
                dialog.nc += 1;
                auth = answer_challenge(&resp, "SUBSCRIBE", &ruri, user, pass, dialog.nc);
                if auth.is_none() {
                    return Err(Failure::Status(code, None));
                }
            }
            423 => {
                let min = resp.header(&Name::MIN_EXPIRES).and_then(|v| v.parse::<u32>().ok());
                match min {
                    Some(m) if m > expires && m <= 86_400 => {
                        expires = m;
                        spec.expires = m;
                    }
                    _ => return Err(Failure::Status(code, None)),
                }
            }
            _ => {
                let retry_after = resp.header(&Name::RETRY_AFTER).and_then(|v| v.split([';', ' ']).next()?.parse().ok());
                return Err(Failure::Status(code, retry_after));
            }
        }
    }
    Err(Failure::Status(401, None))
}

/// Answers a NOTIFY of the dialog and reports it; returns its Subscription-State.
async fn on_notify<K: Clone + Send + Sync + 'static>(ep: &Endpoint, dialog: &mut Dialog, n: Incoming, key: &K, events: &mpsc::Sender<(K, SubEvent)>) -> Option<SubState> {
    let method = n.msg.method().map(|m| m.to_string()).unwrap_or_default();
    let benotify = method.eq_ignore_ascii_case("BENOTIFY");
    if method != "NOTIFY" && !benotify {
        ep.reply(&n, 405, "Method Not Allowed").await;
        return None;
    }
    if n.msg.to.tag.as_deref() != Some(dialog.from_tag.as_str()) {
        if !benotify {
            ep.reply(&n, 481, "Subscription Does Not Exist").await;
        }
        return None;
    }
    if dialog.to_tag.is_none() {
        // A NOTIFY before the 200 starts the dialog; here (as its UAS) the route set is the
        // Record-Route in order.
        dialog.to_tag = n.msg.from.tag.as_ref().map(|t| t.to_string());
        dialog.route_set = route_values(&n.msg);
    }
    dialog.refresh_target(&n.msg);
    let state = n
        .msg
        .headers
        .get_named::<SubscriptionState>()
        .map(|s| match s.state {
            SubStateValue::Active => SubState::Active,
            SubStateValue::Pending => SubState::Pending,
            SubStateValue::Terminated => SubState::Terminated { reason: s.reason.map(reason_text) },
        })
        // SfB's BENOTIFY and some PBXes omit it; treat as active.
        .unwrap_or(SubState::Active);
    if !benotify {
        ep.respond(&n, Builder::response_to(&n.msg, 200, "OK", None)).await;
    }
    let content_type = n.msg.content_type();
    let body = n.msg.body.clone();
    let first = !dialog.notified;
    dialog.notified = true;
    let _ = events
        .send((key.clone(), SubEvent::Notify { state: state.clone(), content_type, body, msg: Box::new(n.msg), first }))
        .await;
    Some(state)
}

fn reason_text(r: EventReasonValue) -> String {
    r.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{DigestServer, Ha1};
    use crate::endpoint::{EndpointConfig, Transport};

    async fn notify(ep: &Endpoint, sub: &Incoming, to_tag: &str, cseq: u32, state: &str, body: &str) -> Message {
        let (via, branch) = ep.via(sub.peer.transport);
        let b = Builder::request("NOTIFY", crate::message::name_addr_uri(sub.msg.header(&Name::CONTACT).unwrap()))
            .header("Via", &via)
            .header("From", &format!("<sip:alice@127.0.0.1>;tag={to_tag}"))
            .header("To", sub.msg.header(&Name::FROM).unwrap())
            .header("Call-ID", &sub.msg.call_id)
            .header("CSeq", &format!("{cseq} NOTIFY"))
            .header("Event", "presence")
            .header("Subscription-State", state)
            .body("application/pidf+xml", body.to_string());
        ep.request(sub.peer, &branch, b.build()).await.unwrap()
    }

    #[tokio::test]
    async fn subscribes_refreshes_notifies_and_comes_back_after_termination() {
        for transport in [Transport::Udp, Transport::Tcp] {
            let (server, mut srx) = Endpoint::bind(EndpointConfig::default()).await.unwrap();
            let (client, _crx) = Endpoint::bind(EndpointConfig::default()).await.unwrap();
            let digest = DigestServer::new("peer");
            let spec = SubscribeSpec {
                peer: Peer { transport, addr: server.local_addr() },
                uri: "sip:alice@127.0.0.1".into(),
                from: "sip:hub@127.0.0.1".into(),
                contact_user: "hub".into(),
                event: "presence".into(),
                accept: "application/pidf+xml".into(),
                expires: 4,
                headers: vec![],
                body: None,
                credentials: Some(("hub".into(), "pw".into())),
            };
            let (etx, mut erx) = mpsc::channel(16);
            let sub = Subscription::spawn(client.clone(), spec, 7u32, etx);

            // 1: challenged, then accepted with a short expiry.
            let first = srx.recv().await.unwrap();
            assert_eq!(first.msg.event(), Some("presence"));
            let mut r = Builder::response_to(&first.msg, 401, "Unauthorized", Some("t1"));
            for c in digest.challenges(false) {
                r = r.header("WWW-Authenticate", &c);
            }
            server.respond(&first, r).await;
            let second = srx.recv().await.unwrap();
            let user = digest.verify(&second.msg, |u| (u == "hub").then(|| Ha1::from_password("hub", "peer", "pw"))).unwrap();
            assert_eq!(user, "hub");
            // Two proxies recorded the route; the notifier's Contact is the remote target.
            let ok = Builder::response_to(&second.msg, 200, "OK", Some("t1"))
                .header("Expires", "2")
                .header("Record-Route", "<sip:p2.example.test;lr>, <sip:p1.example.test;lr;transport=tls>")
                .header("Contact", "<sip:alice@10.0.0.9:5070;transport=tcp>");
            server.respond(&second, ok).await;
            let (k, ev) = erx.recv().await.unwrap();
            assert_eq!(k, 7);
            assert!(matches!(ev, SubEvent::Active { expires: 2, .. }), "{ev:?}");

            // 2: a NOTIFY is answered 200 and reported with its body.
            let resp = notify(&server, &second, "t1", 1, "active;expires=2", "<presence/>").await;
            assert_eq!(resp.code(), Some(200));
            let (_, ev) = erx.recv().await.unwrap();
            let SubEvent::Notify { state, body, .. } = ev else { panic!("{ev:?}") };
            assert_eq!(state, SubState::Active);
            assert_eq!(&body[..], b"<presence/>");

            // 3: the refresh comes in the same dialog before expiry.
            let refresh = tokio::time::timeout(Duration::from_secs(3), srx.recv()).await.unwrap().unwrap();
            assert_eq!(refresh.msg.call_id, second.msg.call_id);
            assert_eq!(refresh.msg.to.tag.as_deref(), Some("t1"));
            assert!(refresh.msg.cseq > second.msg.cseq);
            assert_eq!(refresh.msg.request_uri(), Some("sip:alice@10.0.0.9:5070;transport=tcp"), "to the remote target");
            assert_eq!(refresh.msg.header_tokens(&Name::ROUTE), ["<sip:p1.example.test;lr;transport=tls>", "<sip:p2.example.test;lr>"], "the route set, reversed");
            server.respond(&refresh, Builder::response_to(&refresh.msg, 200, "OK", None).header("Expires", "60")).await;

            // 4: terminated;reason=deactivated → Down, then a new dialog at once.
            let _ = notify(&server, &second, "t1", 2, "terminated;reason=deactivated", "").await;
            let mut saw_down = false;
            while let Ok(Some((_, ev))) = tokio::time::timeout(Duration::from_millis(500), erx.recv()).await {
                if matches!(ev, SubEvent::Down { .. }) {
                    saw_down = true;
                    break;
                }
            }
            assert!(saw_down);
            let again = tokio::time::timeout(Duration::from_secs(2), srx.recv()).await.unwrap().unwrap();
            assert_ne!(again.msg.call_id, second.msg.call_id);
            assert!(again.msg.to.tag.is_none());
            server.respond(&again, Builder::response_to(&again.msg, 200, "OK", Some("t2")).header("Expires", "60")).await;

            // 5: dropping the handle un-SUBSCRIBEs.
            drop(sub);
            let bye = tokio::time::timeout(Duration::from_secs(2), srx.recv()).await.unwrap().unwrap();
            assert_eq!(bye.msg.expires().unwrap(), Some(0));
            assert_eq!(bye.msg.call_id, again.msg.call_id);
            server.respond(&bye, Builder::response_to(&bye.msg, 200, "OK", None)).await;
        }
    }

    #[tokio::test]
    async fn an_unanswered_subscribe_reports_down_and_retries() {
        let cfg = EndpointConfig { transaction_timeout: Duration::from_millis(600), ..Default::default() };
        let (client, _crx) = Endpoint::bind(cfg).await.unwrap();
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let spec = SubscribeSpec {
            peer: Peer { transport: Transport::Udp, addr: silent.local_addr().unwrap() },
            uri: "sip:2001@127.0.0.1".into(),
            from: "sip:hub@127.0.0.1".into(),
            contact_user: "hub".into(),
            event: "dialog".into(),
            accept: "application/dialog-info+xml".into(),
            expires: 600,
            headers: vec![],
            body: None,
            credentials: None,
        };
        let (etx, mut erx) = mpsc::channel(16);
        let _sub = Subscription::spawn(client, spec, (), etx);
        let (_, ev) = tokio::time::timeout(Duration::from_secs(3), erx.recv()).await.unwrap().unwrap();
        let SubEvent::Down { reason, retry_in, .. } = ev else { panic!("{ev:?}") };
        assert!(reason.contains("no answer"), "{reason}");
        assert!(retry_in <= Duration::from_millis(1200));
        // It tries again.
        let mut buf = [0u8; 4096];
        let mut seen = std::collections::HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
        while tokio::time::Instant::now() < deadline && seen.len() < 2 {
            if let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_millis(500), silent.recv_from(&mut buf)).await {
                let m = Message::parse(Bytes::copy_from_slice(&buf[..n])).unwrap();
                seen.insert(m.call_id.to_string());
            }
        }
        assert_eq!(seen.len(), 2, "a second dialog was started");
    }

    /// The Request-URI and Route headers of in-dialog requests: the resource before the
    /// dialog; the remote target through loose routers; a strict router's URI as the
    /// Request-URI with the target last.
    #[test]
    fn in_dialog_requests_follow_the_remote_target_and_the_route_set() {
        let mut d = Dialog { call_id: "c".into(), from_tag: "f".into(), to_tag: None, cseq: 1, nc: 0, notified: false, remote_target: Some("sip:pool@10.0.0.5:5061;transport=tls".into()), route_set: vec!["<sip:dir.example.test;lr>".into()] };
        assert_eq!(d.request_target("sip:alice@x"), ("sip:alice@x".to_string(), vec![]));
        d.to_tag = Some("t".into());
        assert_eq!(d.request_target("sip:alice@x"), ("sip:pool@10.0.0.5:5061;transport=tls".to_string(), vec!["<sip:dir.example.test;lr>".to_string()]));
        d.route_set = vec!["<sip:strict.example.test>".into(), "<sip:next.example.test;lr>".into()];
        assert_eq!(
            d.request_target("sip:alice@x"),
            ("sip:strict.example.test".to_string(), vec!["<sip:next.example.test;lr>".to_string(), "<sip:pool@10.0.0.5:5061;transport=tls>".to_string()])
        );
        d.remote_target = None;
        d.route_set.clear();
        assert_eq!(d.request_target("sip:alice@x"), ("sip:alice@x".to_string(), vec![]), "no Contact: the resource");
        let raw = "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 SUBSCRIBE\r\nRecord-Route: <sip:a.test;lr>,\"Pool, Front\" <sip:b.test;lr>\r\nRecord-Route: <sip:c.test;lr;x=\"1,2\">\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(Bytes::from(raw)).unwrap();
        assert_eq!(route_values(&m), ["<sip:a.test;lr>", "\"Pool, Front\" <sip:b.test;lr>", "<sip:c.test;lr;x=\"1,2\">"]);
    }
}
