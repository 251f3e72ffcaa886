//! Helpers of the runtime tests of the SIP sources (`sip_dialog` in `sip/tests.rs`, `sfb` in
//! `sfb/runtime_tests.rs`): a SIP peer played on loopback with the project's own SIP stack
//! ([`play`]), and the reading of what the provider under test gave its [`TestHarness`].

use std::net::SocketAddr;
use std::time::Duration;

use presence_actors::directory::UserIdx;
use presence_actors::hub::SinkEvent;
use presence_actors::model::{Activity, Availability, Signal, Source};
use presence_actors::provider::TestHarness;
use presence_sip::endpoint::{Endpoint, EndpointConfig, Incoming};

/// A provider's task spawned on the test's `LocalSet`.
pub(crate) type Run = tokio::task::JoinHandle<Result<(), crate::ProviderError>>;

/// What a played peer does with each request it gets.
pub(crate) trait Play: 'static {
    /// Serves one request: answers it (or not), records it, sends what follows.
    async fn serve(&mut self, ep: &Endpoint, req: Incoming);
}

/// Binds a peer on loopback (UDP and TCP on one port) and serves its requests in order with
/// `peer` on the current `LocalSet`. Returns its endpoint, to send requests of its own.
pub(crate) async fn play(mut peer: impl Play) -> Endpoint {
    let cfg = EndpointConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..Default::default() };
    let (ep, mut rx) = Endpoint::bind(cfg).await.expect("bind the played peer");
    let e = ep.clone();
    tokio::task::spawn_local(async move {
        while let Some(req) = rx.recv().await {
            peer.serve(&e, req).await;
        }
    });
    ep
}

/// Runs a test on a `LocalSet` (the peer and the provider are spawned on it).
pub(crate) async fn local(test: impl std::future::Future<Output = ()>) {
    tokio::task::LocalSet::new().run_until(test).await
}

/// The next signal or feed change (within 8 s).
pub(crate) async fn next_event(h: &mut TestHarness) -> SinkEvent {
    tokio::time::timeout(Duration::from_secs(8), h.events.recv()).await.expect("an event within 8 s").expect("the provider is running")
}

/// The next signal; it is about one of `watched`, and no feed change comes first.
pub(crate) async fn next_signal(h: &mut TestHarness, watched: &[UserIdx]) -> (UserIdx, Signal) {
    match next_event(h).await {
        SinkEvent::Signal(i, s) => {
            assert!(watched.contains(&i), "a signal for someone not subscribed ({i}): {s:?}");
            (i, s)
        }
        SinkEvent::Feed(up) => panic!("feed went {up} while a signal was due"),
    }
}

/// Signals (each about one of `watched`) until the feed goes `up`.
pub(crate) async fn until_feed(h: &mut TestHarness, up: bool, watched: &[UserIdx]) -> Vec<(UserIdx, Signal)> {
    let mut seen = Vec::new();
    loop {
        match next_event(h).await {
            SinkEvent::Feed(u) if u == up => return seen,
            SinkEvent::Feed(u) => panic!("feed went {u} while waiting for {up}"),
            SinkEvent::Signal(i, s) => {
                assert!(watched.contains(&i), "a signal for someone not subscribed ({i}): {s:?}");
                seen.push((i, s));
            }
        }
    }
}

/// What a lamp shows: source, availability, activity.
pub(crate) fn lamp(s: &Signal) -> (Source, Option<Availability>, Option<Activity>) {
    (s.source, s.availability, s.activity.clone())
}

/// The provider's task ends by itself, `Ok`, within 3 s.
pub(crate) async fn ends_ok(run: Run) {
    tokio::time::timeout(Duration::from_secs(3), run).await.expect("stops in time").expect("no panic").expect("ok");
}
