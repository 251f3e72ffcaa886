//! Runtime tests of the `sip_dialog` provider without a hub: [`ProviderContext::for_test`]
//! records its signals and feed changes, and a PBX played with the project's own SIP stack
//! ([`Pbx`], UDP on loopback, played with [`super::played`]) answers SUBSCRIBEs and sends dialog-info NOTIFYs — or refuses a
//! refresh, or falls silent.
//!
//! - A confirmed dialog in the first NOTIFY becomes a `pbx` InACall signal, and the feed is up.
//! - A refresh answered `481` retracts that person's signal (Unknown) while the feed stays up;
//!   the subscription comes back by itself.
//! - A PBX that stops answering takes the feed down (stale: no signal is retracted); when it
//!   answers again everyone is re-subscribed and the feed comes back up.
//! - At shutdown the provider un-SUBSCRIBEs (`Expires: 0`) and its task returns `Ok`.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use presence_actors::directory::{Directory, NumberPlan, Person};
use presence_actors::hub::SinkEvent;
use presence_actors::model::{Activity, Availability, Signal, Source};
use presence_actors::provider::{ProviderContext, TestHarness};
use presence_sip::body::dialog_info::{build_dialog_info, Dialog, DialogInfo, DialogState, Direction, DocState, Participant};
use presence_sip::endpoint::{Endpoint, Incoming, Transport};
use presence_sip::message::Builder;
use tokio::sync::mpsc;

use super::played::{self, ends_ok, lamp, local, play, Play, Run};
use super::runtime::Package;
use super::SipSourceConfig;

/// What the PBX does with the requests it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// New subscriptions get `200` with `Expires: grant` and a NOTIFY of the extension's
    /// state; refreshes get `200` too, or `481` with `refuse_refresh`. OPTIONS get `200`.
    Answer { grant: u32, refuse_refresh: bool },
    /// Nothing is answered.
    Silent,
}

/// A SUBSCRIBE the PBX received.
#[derive(Debug, Clone)]
struct Seen {
    user: String,
    event: String,
    expires: Option<u32>,
    call_id: String,
    /// Within an existing dialog (it carries our To tag).
    in_dialog: bool,
}

/// The PBX: its address, behaviour, the extension's call state (`busy`: one confirmed
/// dialog), and every SUBSCRIBE it received.
struct Pbx {
    addr: SocketAddr,
    mode: Rc<Cell<Mode>>,
    busy: Rc<Cell<bool>>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

/// One subscription dialog at the PBX.
struct Watch {
    tag: String,
    cseq: u32,
    version: u64,
}

/// The PBX's side of the wire: its behaviour and state, shared with the test's [`Pbx`].
struct Played {
    mode: Rc<Cell<Mode>>,
    busy: Rc<Cell<bool>>,
    watches: HashMap<String, Watch>,
    seen: mpsc::UnboundedSender<Seen>,
}

impl Play for Played {
    async fn serve(&mut self, ep: &Endpoint, req: Incoming) {
        let Mode::Answer { grant, refuse_refresh } = self.mode.get() else { return };
        serve(ep, req, grant, refuse_refresh, self.busy.get(), &mut self.watches, &self.seen).await;
    }
}

impl Pbx {
    /// Binds on loopback and serves on the current `LocalSet`.
    async fn start(mode: Mode, busy: bool) -> Pbx {
        let mode = Rc::new(Cell::new(mode));
        let busy = Rc::new(Cell::new(busy));
        let (tx, seen) = mpsc::unbounded_channel();
        let ep = play(Played { mode: mode.clone(), busy: busy.clone(), watches: HashMap::new(), seen: tx }).await;
        Pbx { addr: ep.local_addr(), mode, busy, seen }
    }

    /// The next SUBSCRIBE received (within 5 s).
    async fn next_subscribe(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(5), self.seen.recv()).await.expect("a SUBSCRIBE within 5 s").expect("the PBX runs")
    }
}

async fn serve(ep: &Endpoint, req: Incoming, grant: u32, refuse_refresh: bool, busy: bool, watches: &mut HashMap<String, Watch>, seen: &mpsc::UnboundedSender<Seen>) {
    let method = req.msg.method().map(|m| m.to_string()).unwrap_or_default();
    match method.as_str() {
        "OPTIONS" => ep.reply(&req, 200, "OK").await,
        "SUBSCRIBE" => {
            let call_id = req.msg.call_id.to_string();
            let expires = req.msg.expires().ok().flatten();
            let in_dialog = req.msg.to.tag.is_some();
            // The resource is the To URI's user (in the dialog the Request-URI is this PBX's
            // own Contact, the remote target).
            let user = req.msg.header(&presence_sip::message::Name::TO).and_then(presence_sip::message::uri_user).unwrap_or_default().to_string();
            let event = req.msg.event().unwrap_or_default().to_string();
            let _ = seen.send(Seen { user: user.clone(), event, expires, call_id: call_id.clone(), in_dialog });
            if in_dialog {
                let known = watches.contains_key(&call_id);
                if !known || (refuse_refresh && expires != Some(0)) {
                    return ep.reply(&req, 481, "Subscription Does Not Exist").await;
                }
                let granted = if expires == Some(0) { 0 } else { grant };
                ep.respond(&req, Builder::response_to(&req.msg, 200, "OK", None).header("Expires", &granted.to_string())).await;
                if granted == 0 {
                    watches.remove(&call_id);
                }
                return;
            }
            let tag = ep.token();
            let r = Builder::response_to(&req.msg, 200, "OK", Some(&tag))
                .header("Expires", &grant.to_string())
                .header("Contact", &ep.contact("pbx", Transport::Udp));
            ep.respond(&req, r).await;
            let w = watches.entry(call_id.clone()).or_insert(Watch { tag, cseq: 0, version: 0 });
            w.cseq += 1;
            let notify = notify(ep, &req, &user, w, grant, busy);
            w.version += 1;
            let (ep, peer) = (ep.clone(), req.peer);
            tokio::task::spawn_local(async move {
                let (branch, bytes) = notify;
                let _ = ep.request_timeout(peer, &branch, bytes, Duration::from_secs(2)).await;
            });
        }
        _ => ep.reply(&req, 405, "Method Not Allowed").await,
    }
}

/// The NOTIFY of a new subscription with the extension's full state: its branch and bytes.
fn notify(ep: &Endpoint, sub: &Incoming, ext: &str, w: &Watch, expires: u32, busy: bool) -> (String, bytes::Bytes) {
    let entity = format!("sip:{ext}@127.0.0.1");
    let mut doc = DialogInfo { version: w.version, state: DocState::Full, entity: entity.clone(), dialogs: vec![] };
    if busy {
        doc.dialogs.push(Dialog {
            id: "call-1".into(),
            call_id: Some("call-1@pbx".into()),
            direction: Some(Direction::Recipient),
            state: DialogState::Confirmed,
            remote: Some(Participant { identity: Some("sip:+46812345@pstn".into()), display: None, target: None }),
            local: Some(Participant { identity: Some(entity.clone()), display: None, target: None }),
            ..Dialog::default()
        });
    }
    let (via, branch) = ep.via(Transport::Udp);
    let from_tag = sub.msg.from.tag.as_deref().unwrap_or_default();
    let bytes = Builder::request("NOTIFY", &format!("sip:presence-hub@{}", sub.peer.addr))
        .header("Via", &via)
        .header("Max-Forwards", "70")
        .header("From", &format!("<{entity}>;tag={}", w.tag))
        .header("To", &format!("<sip:presence-hub@127.0.0.1>;tag={from_tag}"))
        .header("Call-ID", &sub.msg.call_id)
        .header("CSeq", &format!("{} NOTIFY", w.cseq))
        .header("Contact", &ep.contact("pbx", Transport::Udp))
        .header("Event", "dialog")
        .header("Subscription-State", &format!("active;expires={expires}"))
        .body("application/dialog-info+xml", build_dialog_info(&doc))
        .build();
    (branch, bytes)
}

/// Two people; only Ada's extension (2001) is in the provider's range.
fn directory() -> Directory {
    let ada = Person { extension: Some("2001".into()), ..Person::new("ada", "Ada Andersson") };
    let bo = Person { extension: Some("3001".into()), ..Person::new("bo", "Bo Berg") };
    Directory::build(vec![ada, bo], &NumberPlan::sweden()).expect("directory")
}

/// A `sip_dialog` provider against `pbx` on the current `LocalSet`: its harness, Ada's index
/// and the task.
fn start(pbx: &Pbx, keepalive_secs: u64) -> (TestHarness, u32, Run) {
    let text = format!(
        "name = \"pbx\"\nserver = \"{}\"\ntransport = \"udp\"\nexpires_secs = 60\nkeepalive_secs = {keepalive_secs}\nextension_prefixes = [\"2\"]\n",
        pbx.addr
    );
    let cfg: SipSourceConfig = toml::from_str(&text).expect("config");
    let dir = directory();
    let ada = dir.by_id("ada").expect("Ada");
    let (ctx, h) = ProviderContext::for_test("pbx", dir, "http://127.0.0.1:9");
    let run = tokio::task::spawn_local(super::runtime::task(&cfg, Package::Dialog, ctx).expect("task"));
    (h, ada, run)
}

/// The PBX in `mode` (Ada's extension `busy` or not), a `sip_dialog` provider against it
/// ([`start`]), and the first SUBSCRIBE the PBX received.
async fn begin(mode: Mode, busy: bool, keepalive_secs: u64) -> (Pbx, TestHarness, u32, Run, Seen) {
    let mut pbx = Pbx::start(mode, busy).await;
    let (h, ada, run) = start(&pbx, keepalive_secs);
    let first = pbx.next_subscribe().await;
    (pbx, h, ada, run, first)
}

/// The next signal; it is for Ada and no feed change comes first.
async fn next_signal(h: &mut TestHarness, ada: u32) -> Signal {
    played::next_signal(h, &[ada]).await.1
}

/// Signals (all about Ada) until the feed goes `up`.
async fn until_feed(h: &mut TestHarness, up: bool, ada: u32) -> Vec<Signal> {
    played::until_feed(h, up, &[ada]).await.into_iter().map(|(_, s)| s).collect()
}

/// Asks the provider to stop; expects its un-SUBSCRIBE of `call_id` and a graceful end.
async fn stop(h: &TestHarness, pbx: &mut Pbx, call_id: &str, run: Run) {
    h.trigger.trigger();
    let bye = pbx.next_subscribe().await;
    assert_eq!((bye.call_id.as_str(), bye.in_dialog, bye.expires), (call_id, true, Some(0)), "{bye:?}");
    ends_ok(run).await;
}

/// A busy lamp: the subscription, the confirmed dialog as InACall, a refresh refused with
/// `481` (the signal is retracted, the feed stays up), the subscription coming back by itself,
/// and the un-SUBSCRIBE at shutdown.
#[tokio::test]
async fn a_busy_lamp_a_refused_refresh_and_the_unsubscribe_at_shutdown() {
    local(async {
        let (mut pbx, mut h, ada, run, first) = begin(Mode::Answer { grant: 1, refuse_refresh: true }, true, 0).await;

        // Only Ada (in range) is subscribed, to the dialog package of her extension.
        assert_eq!((first.user.as_str(), first.event.as_str(), first.expires, first.in_dialog), ("2001", "dialog", Some(60), false), "{first:?}");
        assert!(until_feed(&mut h, true, ada).await.is_empty(), "the feed is up on the 200");
        let s = next_signal(&mut h, ada).await;
        assert_eq!(lamp(&s), (Source::Pbx, Some(Availability::Busy), Some(Activity::InACall)), "{s:?}");

        // The refresh (granted 1 s) is refused: Ada's lamp is retracted, the feed stays up.
        let refresh = pbx.next_subscribe().await;
        assert_eq!((refresh.call_id.as_str(), refresh.in_dialog), (first.call_id.as_str(), true), "{refresh:?}");
        let s = next_signal(&mut h, ada).await;
        assert_eq!((s.source, s.availability), (Source::Pbx, Some(Availability::Unknown)), "{s:?}");
        pbx.mode.set(Mode::Answer { grant: 60, refuse_refresh: false });
        pbx.busy.set(false);

        // It comes back in a new dialog; the call has ended meanwhile.
        let again = pbx.next_subscribe().await;
        assert!(!again.in_dialog && again.call_id != first.call_id, "{again:?}");
        let s = next_signal(&mut h, ada).await;
        assert_eq!(lamp(&s), (Source::Pbx, Some(Availability::Available), None), "{s:?}");

        stop(&h, &mut pbx, &again.call_id, run).await;
        let rest = h.drain();
        assert!(rest.iter().all(|e| !matches!(e, SinkEvent::Feed(false))), "the feed never went down: {rest:?}");
    })
    .await;
}

/// A PBX that stops answering (OPTIONS every second, two misses): the feed goes down without
/// retracting the lamp; when the PBX answers again, Ada is re-subscribed and her state read
/// before the feed is up again.
#[tokio::test]
async fn a_silent_pbx_takes_the_feed_down_and_is_resubscribed_when_back() {
    local(async {
        let (mut pbx, mut h, ada, run, first) = begin(Mode::Answer { grant: 60, refuse_refresh: false }, true, 1).await;
        let before = until_feed(&mut h, true, ada).await;
        let s = match before.last() {
            Some(s) => s.clone(),
            None => next_signal(&mut h, ada).await,
        };
        assert_eq!(lamp(&s), (Source::Pbx, Some(Availability::Busy), Some(Activity::InACall)), "{s:?}");

        pbx.mode.set(Mode::Silent);
        let t0 = std::time::Instant::now();
        let during = until_feed(&mut h, false, ada).await;
        assert!(during.is_empty(), "nothing retracted while the PBX is silent: {during:?}");
        assert!(t0.elapsed() < Duration::from_secs(7), "down after {:?}", t0.elapsed());

        pbx.mode.set(Mode::Answer { grant: 60, refuse_refresh: false });
        let again = pbx.next_subscribe().await;
        assert!(!again.in_dialog && again.call_id != first.call_id, "a new subscription: {again:?}");
        let after = until_feed(&mut h, true, ada).await;
        let s = after.last().expect("Ada's state is read before the feed is up");
        assert_eq!(lamp(s), (Source::Pbx, Some(Availability::Busy), Some(Activity::InACall)), "{s:?}");
        assert!(after.iter().all(|s| s.availability != Some(Availability::Unknown)), "{after:?}");

        stop(&h, &mut pbx, &again.call_id, run).await;
    })
    .await;
}

/// The directory changes while the provider runs (no restart): Ada's extension changes and Cy
/// (in range) joins — Ada's old dialog is un-SUBSCRIBEd (`Expires: 0`), the new extension and
/// Cy's are subscribed and their lamps come in; then Cy leaves and her dialog is ended. Bo
/// (out of range) is never subscribed, and the feed never goes down.
#[tokio::test]
async fn the_subscriptions_follow_the_live_directory() {
    local(async {
        let (mut pbx, mut h, ada, run, first) = begin(Mode::Answer { grant: 60, refuse_refresh: false }, true, 0).await;
        assert_eq!(first.user, "2001", "{first:?}");
        until_feed(&mut h, true, ada).await;

        let ada_moved = Person { extension: Some("2009".into()), ..Person::new("ada", "Ada Andersson") };
        let bo = Person { extension: Some("3001".into()), ..Person::new("bo", "Bo Berg") };
        let cy = Person { extension: Some("2002".into()), ..Person::new("cy", "Cy Carlsson") };
        let (next, _) = h.directory.current().next(vec![ada_moved.clone(), bo.clone(), cy]).expect("next version");
        let next = next.expect("the version changes something");
        h.directory.replace(std::sync::Arc::new(next));
        let cy = h.directory.current().by_id("cy").expect("Cy");
        assert_eq!(h.directory.current().by_id("ada"), Some(ada), "Ada keeps her index");

        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(pbx.next_subscribe().await);
        }
        let bye = seen.iter().find(|s| s.in_dialog).expect("an un-SUBSCRIBE of Ada's old dialog");
        assert_eq!((bye.call_id.as_str(), bye.user.as_str(), bye.expires), (first.call_id.as_str(), "2001", Some(0)), "{seen:?}");
        let mut new: Vec<&Seen> = seen.iter().filter(|s| !s.in_dialog).collect();
        new.sort_by(|a, b| a.user.cmp(&b.user));
        assert_eq!(new.iter().map(|s| (s.user.as_str(), s.expires)).collect::<Vec<_>>(), [("2002", Some(60)), ("2009", Some(60))], "{seen:?}");
        let (cy_call, ada_call) = (new[0].call_id.clone(), new[1].call_id.clone());

        // Both lamps come in from the new subscriptions' NOTIFYs.
        let mut lamps = HashMap::new();
        while lamps.len() < 2 {
            let (who, s) = played::next_signal(&mut h, &[ada, cy]).await;
            lamps.insert(who, lamp(&s));
        }
        assert_eq!(lamps[&cy], (Source::Pbx, Some(Availability::Busy), Some(Activity::InACall)), "{lamps:?}");

        // Cy leaves: her dialog is ended, nobody else is touched.
        let (next, _) = h.directory.current().next(vec![ada_moved, bo]).expect("next version");
        let next = next.expect("the version changes something");
        h.directory.replace(std::sync::Arc::new(next));
        let bye = pbx.next_subscribe().await;
        assert_eq!((bye.call_id.as_str(), bye.in_dialog, bye.expires), (cy_call.as_str(), true, Some(0)), "{bye:?}");

        stop(&h, &mut pbx, &ada_call, run).await;
        let rest = h.drain();
        assert!(rest.iter().all(|e| !matches!(e, SinkEvent::Feed(false))), "the feed never went down: {rest:?}");
    })
    .await;
}
