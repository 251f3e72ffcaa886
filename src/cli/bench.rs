//! `presence-hub bench`: drives synthetic signals through the real path and reports
//! throughput, latency and memory.
//!
//! Path measured: `SignalSink::send_to` (as a provider calls it) → shard actor → user actor →
//! merge → fan-out → subscriber outbox → subscriber actor → serialised frame handed to a sink.
//! The sink is in-process (no socket), so the figures isolate the hub from the kernel's
//! socket writes; latency is from the moment the signal enters the sink to the moment its
//! frame reaches each subscriber's sink.
//!
//! Phases:
//! 1. start-up: N people written to a fresh store, then load + build directory + start shards +
//!    restore (the real start-up path), timed;
//! 2. memory: RSS before and after N people each get signals from 3 sources (one user actor
//!    each, 3 slots), divided by N;
//! 3. throughput: as fast as the hub absorbs (bounded in-flight window), for `--duration`;
//! 4. latency: open-loop at `--rate` events/s, p50/p99/p99.9/max from signal to frame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::Result;
use futures_util::future::LocalBoxFuture;

use crate::store::Store;
use presence_actors::directory::{synth, Directory, NumberPlan};
use presence_actors::fanout::Filter;
use presence_actors::hub::{Hub, HubConfig, SignalSink};
use presence_actors::metrics::Metrics;
use presence_actors::model::{now_ms, Activity, Availability, Policy, Signal, Source};
use presence_actors::subscriber::{Frame, FrameSink, SetFilter, SinkClosed, Subscriber};

/// Arguments of `presence-hub bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// People in the synthetic directory.
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Subscribers watching everyone.
    #[arg(long, default_value_t = 20)]
    pub watch_all: usize,
    /// Subscribers watching a few people each.
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// People per watcher.
    #[arg(long, default_value_t = 50)]
    pub per_watcher: usize,
    /// Seconds of the throughput phase.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Offered events/s of the latency phase (0 skips it).
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 10)]
    pub latency_duration: u64,
    /// Shard arbiters (default: CPUs).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Most live user actors (all shards); idle people beyond it are parked.
    #[arg(long, default_value_t = 4096)]
    pub max_live: usize,
    /// Outbox capacity per subscriber.
    #[arg(long, default_value_t = 1024)]
    pub outbox: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Latency histogram: 1 µs buckets to 1 ms, then 1% steps (log) to ~100 s.
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram { counts: vec![0; 1000 + 1200], total: 0, max_us: 0 }
    }
    fn bucket(us: u64) -> usize {
        if us < 1000 {
            us as usize
        } else {
            (1000 + ((us as f64 / 1000.0).ln() / 0.01f64.ln_1p()) as usize).min(2199)
        }
    }
    fn value(b: usize) -> u64 {
        if b < 1000 {
            b as u64
        } else {
            (1000.0 * (0.01f64.ln_1p() * (b - 1000) as f64).exp()) as u64
        }
    }
    fn record(&mut self, us: u64) {
        self.counts[Self::bucket(us)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }
    fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.max_us = self.max_us.max(o.max_us);
    }
    fn quantile(&self, q: f64) -> u64 {
        let want = (self.total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want.max(1) {
                return Self::value(b);
            }
        }
        self.max_us
    }
}

/// A sink that records latency and counts frames (shared with the driver).
struct BenchSink {
    hist: Arc<Mutex<Histogram>>,
    frames: Arc<AtomicU64>,
}

impl FrameSink for BenchSink {
    fn write(self, frames: Vec<Frame>) -> LocalBoxFuture<'static, Result<Self, SinkClosed>> {
        let now = Instant::now();
        let mut bytes = 0usize;
        {
            let mut h = self.hist.lock().unwrap_or_else(|p| p.into_inner());
            for f in &frames {
                bytes += f.data.len();
                if let Some(t) = f.ingest {
                    h.record(now.duration_since(t).as_micros() as u64);
                }
            }
        }
        std::hint::black_box(bytes);
        self.frames.fetch_add(frames.len() as u64, Ordering::Relaxed);
        Box::pin(std::future::ready(Ok(self)))
    }
}

fn rss() -> u64 {
    crate::http::admin::rss_bytes().unwrap_or(0)
}

/// Runs the benchmark (its own actix System).
pub fn run(args: BenchArgs) -> Result<()> {
    let sys = actix::System::new();
    sys.block_on(bench(args))
}

struct Driver {
    sink: SignalSink,
    n: u32,
    rng: u64,
    state: Vec<u8>,
}

impl Driver {
    fn next_u32(&mut self) -> u32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 16) as u32
    }

    /// One event that changes the merged view of a random person: cycles their Teams state
    /// through Available → Busy/InACall (PBX) → Available → DND so every event is a change.
    fn send_one(&mut self) {
        let u = self.next_u32() % self.n;
        let st = &mut self.state[u as usize];
        *st = (*st + 1) % 4;
        let now = now_ms();
        let sig = match *st {
            0 => Signal::new(Source::Teams, "t", Some(Availability::Available), now),
            1 => Signal::new(Source::Pbx, "ext", Some(Availability::Busy), now).with_activity(Activity::InACall),
            2 => Signal::new(Source::Pbx, "ext", Some(Availability::Available), now),
            _ => Signal::new(Source::Teams, "t", Some(Availability::DoNotDisturb), now).with_activity(Activity::Presenting),
        };
        let _ = self.sink.send_to(u, sig);
    }
}

async fn wait_quiet(m: &Metrics, target: u64, timeout: Duration) {
    let t0 = Instant::now();
    while Metrics::get(&m.changes_published) < target && t0.elapsed() < timeout {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn bench(args: BenchArgs) -> Result<()> {
    let n = args.users.max(1);
    let out = |k: &str, v: String| {
        if !args.json {
            println!("{k:<44} {v}");
        }
    };
    if !args.json {
        println!("presence-hub bench: {n} people, {} watch-all subscribers, {} watchers × {} people", args.watch_all, args.watchers, args.per_watcher);
    }

    // Phase 1: start-up through the store, as `run` does it. The memory baseline is the
    // process before anything: per-person figures include everything the hub holds for them
    // (and what the allocator and SQLite's page cache keep), like RSS(N) − RSS(empty).
    let rss_start = rss();
    let people = synth::generate(n, 42);
    let tmp = std::env::temp_dir().join(format!("presence-bench-{}", std::process::id()));
    let store = Store::open(&tmp)?;
    crate::save_directory(&store, &people)?;
    // A snapshot of everyone's presence, as a restart finds it.
    let snap: Vec<(String, String)> = people
        .iter()
        .map(|p| {
            let v = presence_actors::model::MergedView {
                availability: Availability::Busy,
                activity: Some(Activity::InAMeeting),
                freshness: presence_actors::model::Freshness::Live,
                since: now_ms(),
                ..Default::default()
            };
            (p.id.to_string(), presence_actors::wire::presence_json(&p.id, &v))
        })
        .collect();
    store.save_snapshot(&snap, now_ms())?;
    drop(snap);
    drop(people);
    crate::release_free_memory();
    let rss0 = rss_start;
    let t0 = Instant::now();
    // The real start-up path: people are parsed and packed one row at a time.
    let directory = store
        .with_people(|rows| {
            let people = rows.filter_map(|(_, j)| serde_json::from_str(&j).ok());
            Directory::build_streaming(people, n, &NumberPlan::default())
        })?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::release_free_memory();
    let rss_dir = rss();
    let dir_bytes = directory.memory_bytes();
    let mut cfg = HubConfig::default();
    if let Some(s) = args.shards {
        cfg.shards = s;
    }
    cfg.shard.max_live = args.max_live.div_ceil(cfg.shards.max(1));
    let hub = Hub::start(&cfg, directory, Policy::default());
    crate::restore(&hub, &store).await?;
    let startup = t0.elapsed();
    let _ = std::fs::remove_dir_all(&tmp);
    out("start-up (load + index directory, start shards, restore snapshot)", format!("{:.0} ms", startup.as_secs_f64() * 1000.0));
    out("directory index (estimated)", format!("{:.0} B/person", dir_bytes as f64 / n as f64));

    let feed = hub.feeds().register("bench", "bench");
    let sink = hub.sink(feed);
    sink.set_up(true);
    let m = hub.metrics().clone();

    // Phase 2: memory with every person active on 3 sources.
    let now = now_ms();
    for u in 0..n as u32 {
        let _ = sink.send_to(u, Signal::new(Source::Teams, "t", Some(Availability::Available), now));
        let _ = sink.send_to(u, Signal::new(Source::Pbx, "ext", Some(Availability::Available), now));
        let _ = sink.send_to(
            u,
            Signal::new(Source::Calendar, "cal", Some(Availability::Busy), now)
                .with_activity(Activity::InAMeeting)
                .valid(Some(now + 3_600_000), Some(now + 7_200_000)),
        );
        if u % 4096 == 4095 {
            // Paced: the figure is the steady state, not a burst's queues.
            wait_quiet(&m, u as u64 / 2, Duration::from_secs(30)).await;
        }
    }
    wait_quiet(&m, n as u64, Duration::from_secs(60)).await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    crate::release_free_memory();
    let rss_active = rss();
    let per_user = (rss_active.saturating_sub(rss0)) as f64 / n as f64;
    out("RSS per person (all of it, 3 sources each)", format!("{per_user:.0} B  (RSS {} MB)", rss_active / 1_000_000));
    out("  of which directory (people + index)", format!("{:.0} B", rss_dir.saturating_sub(rss0) as f64 / n as f64));
    out("  of which presence (state, actors, fan-out)", format!("{:.0} B", rss_active.saturating_sub(rss_dir) as f64 / n as f64));

    // Subscribers on their own arbiters (as HTTP workers host them in the server).
    let mut hists = Vec::new();
    let frames = Arc::new(AtomicU64::new(0));
    let sub_arbs: Vec<Arbiter> = (0..2).map(|_| Arbiter::new()).collect();
    let total_subs = args.watch_all + args.watchers;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for i in 0..total_subs {
        let h = Arc::new(Mutex::new(Histogram::new()));
        hists.push(h.clone());
        let sink = BenchSink { hist: h, frames: frames.clone() };
        let filter = if i < args.watch_all {
            Filter { all: true, ..Filter::default() }
        } else {
            let users = (0..args.per_watcher)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    (rng % n as u64) as u32
                })
                .collect();
            Filter { users, ..Filter::default() }
        };
        let (f, d, mm, cap) = (hub.fanout().clone(), hub.live_directory().clone(), m.clone(), args.outbox);
        sub_arbs[i % sub_arbs.len()].spawn(async move {
            let a = Subscriber::start(f, d, mm, sink, cap, Duration::from_secs(15));
            let _ = a.send(SetFilter { filter, since: None }).await;
        });
    }
    while hub.fanout().subscriber_count() < total_subs {
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    actix_rt::time::sleep(Duration::from_millis(500)).await;

    // Phase 3: throughput — keep at most `window` changes in flight.
    let mut driver = Driver { sink, n: n as u32, rng: 0x9E37_79B9_7F4A_7C15, state: vec![0; n] };
    let window = 20_000u64;
    let start_pub = Metrics::get(&m.changes_published);
    let start_frames = frames.load(Ordering::Relaxed);
    let start_coal = Metrics::get(&m.deliveries_coalesced);
    let mut sent = 0u64;
    let t = Instant::now();
    let dur = Duration::from_secs(args.duration);
    while t.elapsed() < dur {
        let done = Metrics::get(&m.changes_published) - start_pub;
        if sent - done < window {
            for _ in 0..1000 {
                driver.send_one();
            }
            sent += 1000;
        } else {
            actix_rt::time::sleep(Duration::from_micros(200)).await;
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let published = Metrics::get(&m.changes_published) - start_pub;
    wait_quiet(&m, start_pub + sent, Duration::from_secs(30)).await;
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    let tput = published as f64 / elapsed;
    let frames_n = frames.load(Ordering::Relaxed) - start_frames;
    let mut h_all = Histogram::new();
    for h in &hists {
        h_all.merge(&h.lock().unwrap_or_else(|p| p.into_inner()));
    }
    out("throughput (signal → merge → frame)", format!("{tput:.0} events/s over {elapsed:.1} s"));
    out("  frames delivered to subscribers", format!("{:.0} frames/s", frames_n as f64 / elapsed));
    out("  deliveries coalesced (slow subscribers)", format!("{}", Metrics::get(&m.deliveries_coalesced) - start_coal));
    out("  latency at max throughput p50 / p99", format!("{} µs / {} µs", h_all.quantile(0.5), h_all.quantile(0.99)));

    // Phase 4: latency at a fixed offered rate (open loop).
    let mut lat = None;
    if args.rate > 0 {
        for h in &hists {
            *h.lock().unwrap_or_else(|p| p.into_inner()) = Histogram::new();
        }
        let t = Instant::now();
        let dur = Duration::from_secs(args.latency_duration);
        let mut sent = 0u64;
        let pub0 = Metrics::get(&m.changes_published);
        while t.elapsed() < dur {
            let due = (t.elapsed().as_secs_f64() * args.rate as f64) as u64;
            while sent < due {
                driver.send_one();
                sent += 1;
            }
            actix_rt::time::sleep(Duration::from_micros(500)).await;
        }
        wait_quiet(&m, pub0 + sent, Duration::from_secs(30)).await;
        actix_rt::time::sleep(Duration::from_millis(300)).await;
        let mut h = Histogram::new();
        for x in &hists {
            h.merge(&x.lock().unwrap_or_else(|p| p.into_inner()));
        }
        out(
            &format!("latency at {} events/s p50 / p99 / p99.9 / max", args.rate),
            format!("{} µs / {} µs / {} µs / {} µs ({} samples)", h.quantile(0.5), h.quantile(0.99), h.quantile(0.999), h.max_us, h.total),
        );
        lat = Some(h);
    }
    let rss_end = rss();
    out("RSS at end", format!("{} MB", rss_end / 1_000_000));
    out("signals coalesced / dropped", format!("{} / {}", Metrics::get(&m.signals_coalesced), Metrics::get(&m.signals_dropped)));
    if args.json {
        let l = lat.as_ref();
        println!(
            "{}",
            serde_json::json!({
                "users": n, "watch_all": args.watch_all, "watchers": args.watchers, "per_watcher": args.per_watcher,
                "startup_ms": startup.as_millis() as u64,
                "rss_per_user_bytes": per_user as u64,
                "throughput_events_per_s": tput as u64,
                "frames_per_s": (frames_n as f64 / elapsed) as u64,
                "latency_rate": args.rate,
                "latency_p50_us": l.map(|h| h.quantile(0.5)),
                "latency_p99_us": l.map(|h| h.quantile(0.99)),
                "latency_p999_us": l.map(|h| h.quantile(0.999)),
                "latency_max_us": l.map(|h| h.max_us),
            })
        );
    }
    hub.stop();
    for a in sub_arbs {
        a.stop();
    }
    actix::System::current().stop();
    Ok(())
}
