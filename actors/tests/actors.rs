//! Actor-level tests: parking idle user actors, timers on parked people, feed health, and a
//! slow subscriber that must not slow a fast one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use presence_actors::directory::{synth, Directory, NumberPlan};
use presence_actors::fanout::Filter;
use presence_actors::hub::{Hub, HubConfig};
use presence_actors::model::{now_ms, Activity, Availability, Freshness, Policy, Signal, Source};
use presence_actors::shard::ShardConfig;
use presence_actors::subscriber::{Frame, FrameKind, FrameSink, SetFilter, SinkClosed, Subscriber};

fn hub(people: usize, max_live: usize) -> Hub {
    let dir = Directory::build(synth::generate(people, 1), &NumberPlan::default()).unwrap();
    let cfg = HubConfig {
        shards: 2,
        shard: ShardConfig { max_live, tick: Duration::from_millis(20), ..ShardConfig::default() },
        replay_buffer: 1000,
    };
    Hub::start(&cfg, dir, Policy::default())
}

async fn eventually(mut f: impl FnMut() -> bool) {
    // Generous: CI machines run test binaries' tests in parallel on 2 cores.
    for _ in 0..1000 {
        if f() {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 10 s");
}

#[actix_rt::test]
async fn parked_people_keep_their_state_and_timers() {
    let hub = hub(50, 2);
    let feed = hub.feeds().register("t", "test");
    let sink = hub.sink(feed.clone());
    sink.set_up(true);
    let now = now_ms();
    for u in 0..20u32 {
        let s = Signal::new(Source::Calendar, "m", Some(Availability::Busy), now)
            .with_activity(Activity::InAMeeting)
            .valid(Some(now), Some(now + 600));
        sink.send_to(u, s).unwrap();
    }
    let f = hub.fanout().clone();
    eventually(|| (0..20).all(|u| f.latest(u).is_some_and(|c| c.view.availability == Availability::Busy))).await;
    // Idle actors beyond max_live (2 per shard) are parked by the shards' ticks.
    let mut st = hub.stats().await;
    for _ in 0..100 {
        if st.live <= 4 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
        st = hub.stats().await;
    }
    assert_eq!(st.users, 20, "every person keeps state");
    assert!(st.live <= 4, "at most max_live per shard stay live (got {})", st.live);
    assert_eq!(hub.user_actors(), st.live as i64, "parked actors have stopped");
    // A parked person's detail is served from the cell.
    let d = hub.detail(0).await;
    assert_eq!(d.view.availability, Availability::Busy);
    assert_eq!(d.slots.len(), 1);
    // The meeting ends while most are parked: the shard's timer settles them in place.
    eventually(|| (0..20).all(|u| f.latest(u).is_some_and(|c| c.view.availability == Availability::Unknown))).await;
    // A parked person wakes on the next signal with the state it had.
    sink.send_to(3, Signal::new(Source::Teams, "t", Some(Availability::Away), now_ms())).unwrap();
    eventually(|| f.latest(3).is_some_and(|c| c.view.availability == Availability::Away)).await;
    assert_eq!(hub.detail(3).await.slots.len(), 1, "the expired meeting is gone, Teams is there");
    hub.stop();
}

#[actix_rt::test]
async fn a_feed_going_down_makes_its_signals_stale_never_offline() {
    let hub = hub(10, 1);
    let feed = hub.feeds().register("teams", "test");
    let sink = hub.sink(feed);
    sink.set_up(true);
    for u in 0..5u32 {
        sink.send_to(u, Signal::new(Source::Teams, "t", Some(Availability::Offline), now_ms())).unwrap();
    }
    let f = hub.fanout().clone();
    eventually(|| (0..5).all(|u| f.latest(u).is_some_and(|c| c.view.availability == Availability::Offline))).await;
    sink.set_up(false);
    eventually(|| {
        (0..5).all(|u| f.latest(u).is_some_and(|c| c.view.availability == Availability::Unknown && c.view.freshness == Freshness::Stale))
    })
    .await;
    sink.set_up(true);
    eventually(|| (0..5).all(|u| f.latest(u).is_some_and(|c| c.view.availability == Availability::Offline && c.view.freshness == Freshness::Live))).await;
    hub.stop();
}

/// A sink that records delta sequence numbers, optionally sleeping on every write.
struct TestSink {
    seqs: Arc<Mutex<Vec<u64>>>,
    kinds: Arc<Mutex<Vec<FrameKind>>>,
    delay: Duration,
    writes: Arc<AtomicU64>,
}

impl FrameSink for TestSink {
    fn write(self, frames: Vec<Frame>) -> LocalBoxFuture<'static, Result<Self, SinkClosed>> {
        Box::pin(async move {
            self.writes.fetch_add(1, Ordering::Relaxed);
            if !self.delay.is_zero() {
                actix_rt::time::sleep(self.delay).await;
            }
            for f in frames {
                self.kinds.lock().unwrap().push(f.kind);
                if f.kind == FrameKind::Delta {
                    self.seqs.lock().unwrap().push(f.seq);
                }
            }
            Ok(self)
        })
    }
}

#[actix_rt::test]
async fn a_slow_subscriber_never_slows_a_fast_one_and_stays_bounded() {
    let hub = hub(200, 1000);
    let feed = hub.feeds().register("t", "test");
    let sink = hub.sink(feed);
    sink.set_up(true);
    let mk = |delay: Duration, capacity: usize| {
        let s = TestSink { seqs: Default::default(), kinds: Default::default(), delay, writes: Default::default() };
        let (seqs, kinds) = (s.seqs.clone(), s.kinds.clone());
        let a = Subscriber::start(hub.fanout().clone(), hub.live_directory().clone(), hub.metrics().clone(), s, capacity, Duration::from_secs(30));
        (a, seqs, kinds)
    };
    let (fast, fast_seqs, _) = mk(Duration::ZERO, 100_000);
    let (slow, slow_seqs, slow_kinds) = mk(Duration::from_millis(300), 64);
    fast.send(SetFilter { filter: Filter { all: true, ..Filter::default() }, since: None }).await.unwrap().unwrap();
    slow.send(SetFilter { filter: Filter { all: true, ..Filter::default() }, since: None }).await.unwrap().unwrap();
    let n = 4000u32;
    let t0 = std::time::Instant::now();
    for i in 0..n {
        // Each person alternates, so every signal is a change.
        let u = i % 200;
        let a = if (i / 200) % 2 == 0 { Availability::Busy } else { Availability::Available };
        let _ = sink.send_to(u, Signal::new(Source::Teams, "t", Some(a), now_ms()));
        if i % 50 == 0 {
            actix_rt::task::yield_now().await;
        }
    }
    let published = || hub.metrics().changes_published.load(Ordering::Relaxed);
    eventually(|| fast_seqs.lock().unwrap().len() as u64 >= published() && published() >= 200).await;
    // The fast one got every change, in strictly increasing order, while the slow one (300 ms
    // per write) was still far behind: it did not wait for it.
    let seqs = fast_seqs.lock().unwrap().clone();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    let slow_got = slow_seqs.lock().unwrap().len();
    assert!(slow_got < seqs.len() / 2, "slow {slow_got} vs fast {} after {:?}", seqs.len(), t0.elapsed());
    // The fast one ends with everyone's final state (coalescing upstream only drops superseded states).
    let f = hub.fanout().clone();
    for u in 0..200u32 {
        let want = if ((n - 200 + u) / 200).is_multiple_of(2) { Availability::Busy } else { Availability::Available };
        eventually(|| f.latest(u).is_some_and(|c| c.view.availability == want)).await;
    }
    // The slow one coalesced: a lagged notice, and never more than its capacity queued.
    eventually(|| slow_kinds.lock().unwrap().contains(&FrameKind::Lagged)).await;
    assert!(hub.metrics().deliveries_coalesced.load(Ordering::Relaxed) > 0);
    hub.stop();
}

/// Captures frame texts.
struct CaptureSink(Arc<Mutex<Vec<String>>>);

impl FrameSink for CaptureSink {
    fn write(self, frames: Vec<Frame>) -> LocalBoxFuture<'static, Result<Self, SinkClosed>> {
        self.0.lock().unwrap().extend(frames.into_iter().map(|f| f.data));
        Box::pin(std::future::ready(Ok(self)))
    }
}

#[actix_rt::test]
async fn a_large_snapshot_comes_in_parts_with_everyone_once() {
    let hub = hub(1200, 100);
    let feed = hub.feeds().register("t", "test");
    let sink = hub.sink(feed);
    sink.set_up(true);
    for u in 0..300u32 {
        sink.send_to(u, Signal::new(Source::Teams, "t", Some(Availability::Busy), now_ms())).unwrap();
    }
    let f = hub.fanout().clone();
    eventually(|| (0..300).all(|u| f.latest(u).is_some())).await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let sub = Subscriber::start(hub.fanout().clone(), hub.live_directory().clone(), hub.metrics().clone(), CaptureSink(got.clone()), 64, Duration::from_secs(30));
    sub.send(SetFilter { filter: Filter { all: true, ..Filter::default() }, since: None }).await.unwrap().unwrap();
    eventually(|| got.lock().unwrap().len() >= 3).await;
    let frames: Vec<serde_json::Value> = got.lock().unwrap().iter().map(|t| serde_json::from_str(t).unwrap()).collect();
    assert_eq!(frames.len(), 3, "1200 people in parts of 500");
    let mut ids = std::collections::HashSet::new();
    let mut busy = 0;
    for (i, fr) in frames.iter().enumerate() {
        assert_eq!(fr["type"], "snapshot");
        assert_eq!(fr["part"], i);
        assert_eq!(fr["last"], i == 2);
        assert_eq!(fr["seq"], frames[0]["seq"]);
        for p in fr["presence"].as_array().unwrap() {
            assert!(ids.insert(p["id"].as_str().unwrap().to_string()), "each person once");
            busy += (p["availability"] == "Busy") as usize;
        }
    }
    assert_eq!(ids.len(), 1200);
    assert_eq!(busy, 300);
    hub.stop();
}

#[actix_rt::test]
async fn a_directory_version_applies_live_to_streams_search_and_signals() {
    use presence_actors::directory::Person;
    use presence_actors::model::Absence;
    use presence_actors::shard::Restore;
    let hub = hub(30, 100);
    let feed = hub.feeds().register("t", "test");
    let sink = hub.sink(feed);
    sink.set_up(true);
    let dir0 = hub.directory();
    let leaver = dir0.person(5).unwrap().to_person();
    let dept = leaver.department.clone().expect("synth people have departments");
    let dept_idx = dir0.department_idx(&dept).unwrap();
    sink.send_to(5, Signal::new(Source::Teams, "t", Some(Availability::Busy), now_ms())).unwrap();
    let f = hub.fanout().clone();
    eventually(|| f.latest(5).is_some()).await;

    // A stream watching the leaver's department.
    let got = Arc::new(Mutex::new(Vec::new()));
    let sub = Subscriber::start(hub.fanout().clone(), hub.live_directory().clone(), hub.metrics().clone(), CaptureSink(got.clone()), 64, Duration::from_secs(30));
    sub.send(SetFilter { filter: Filter { departments: vec![dept_idx], ..Filter::default() }, since: None }).await.unwrap().unwrap();
    eventually(|| !got.lock().unwrap().is_empty()).await;
    let mut changes = hub.live_directory().watch();

    // The next version: person 5 leaves, a newcomer joins the same department with an
    // absence the store kept (a re-hire).
    let mut people: Vec<Person> = dir0.people().filter(|(i, _)| *i != 5).map(|(_, p)| p.to_person()).collect();
    let mut newcomer = Person::new("nils.ny", "Nils Nykvist");
    newcomer.department = Some(dept.clone());
    people.push(newcomer);
    let (dir1, diff) = dir0.next(people).unwrap();
    let dir1 = dir1.unwrap();
    assert_eq!((diff.removed.clone(), diff.added.clone()), (vec![5], vec![30]));
    let now = now_ms();
    let lunch = Absence {
        id: "a1".into(),
        reason: "lunch".into(),
        text: None,
        start: now - 60_000,
        end: Some(now + 3_600_000),
        created_at: now - 60_000,
        updated_at: now - 60_000,
        created_by: None,
    };
    hub.apply_directory(dir1, &diff, Restore { views: vec![], absences: vec![(30, lunch)], slots: vec![] }).await;

    assert!(changes.has_changed().unwrap(), "watchers are told");
    let dir = changes.borrow_and_update().clone();
    assert_eq!(dir.by_id("nils.ny"), Some(30));
    assert_eq!(hub.directory().search(&presence_actors::directory::SearchQuery { q: "nykvist", department: None, offset: 0, limit: 5 }).items, vec![30]);
    assert!(sink.send(&leaver.id, Signal::new(Source::Teams, "t", Some(Availability::Away), now_ms())).is_err(), "the leaver no longer resolves");
    eventually(|| {
        let frames = got.lock().unwrap();
        let has = |t: &str, id: &str| frames.iter().any(|fr| fr.contains(&format!("\"type\":\"{t}\"")) && fr.contains(&format!("\"id\":\"{id}\"")));
        has("removed", &leaver.id) && has("delta", "nils.ny")
    })
    .await;
    let frames = got.lock().unwrap().clone();
    let newcomer_frame = frames.iter().find(|fr| fr.contains("nils.ny")).unwrap();
    assert!(newcomer_frame.contains("\"absence_reason\":\"lunch\""), "the kept absence applies: {newcomer_frame}");
    // Signals for the newcomer reach them; the other people kept their index.
    sink.send("nils.ny", Signal::new(Source::Teams, "t", Some(Availability::Available), now_ms())).unwrap();
    assert_eq!(hub.directory().by_id(dir0.person(6).unwrap().id()), Some(6));
    assert_eq!(hub.directory().count(), 30);
    hub.stop();
}
