//! `presence-hub bench-ws`: many stream clients against one running hub, over real sockets —
//! what a company's open directory tabs and consoles cost the hub, and how fast a change reaches
//! all of them.
//!
//! - **Clients**: `--ws N` WebSocket clients (`/api/stream?all=true`) and `--sse M` SSE clients
//!   (`/api/events?all=true`), opened `--connect-at-once` at a time, all in this one process on
//!   one thread (tokio, current-thread runtime), each a minimal reader: the RFC 6455 frames of
//!   `bench-cluster`'s client (pongs answered), or SSE `data:` lines. A client is ready once its
//!   snapshot's last frame is in; pushing starts once every client is.
//! - **Memory**: with `--pid PID` (the hub), its RSS before the clients connect, once they are
//!   all idle after their snapshot, and after the push: the difference per client is what a
//!   client costs the hub.
//! - **Push**: `bench-cluster`'s open loop (`POST /api/signals`, `--rate` per second for
//!   `--seconds`, each signal a change of the merged view carrying its number and send time).
//! - **Report**: deliveries (signals × clients), missing, frames/s, and the latency from the
//!   POST being sent to the frame being read, p50 / p99 / max over every delivery (a log-linear
//!   histogram, about 3 % wide buckets: a million deliveries cost no memory here).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::bench_cluster::{client_frame, parse_frame, push_all, rss_kb, BenchClusterArgs, Load, MAX_HEAD, MAX_MESSAGE};

/// Arguments of `presence-hub bench-ws`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchWsArgs {
    /// The hub (`http://host:port`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An admin token (pushing needs admin; the clients take it as `access_token`).
    #[arg(long, env = "PRESENCE_HUB_TOKEN")]
    pub token: String,
    /// WebSocket clients, each watching everyone.
    #[arg(long, default_value_t = 1000)]
    pub ws: usize,
    /// SSE clients, each watching everyone.
    #[arg(long, default_value_t = 0)]
    pub sse: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 100)]
    pub connect_at_once: usize,
    /// Signals per second (open loop); every one goes to every client.
    #[arg(long, default_value_t = 5)]
    pub rate: u64,
    /// Who and how long: `--seconds` (0: connect, measure memory, and stop), `--people`,
    /// `--id-prefix`.
    #[command(flatten)]
    pub load: Load,
    /// The hub's process id, to read its RSS.
    #[arg(long)]
    pub pid: Option<u32>,
    /// After the push, how long to wait for the last frames.
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
    /// Also print one JSON object (last line).
    #[arg(long)]
    pub json: bool,
}

/// Latencies in µs, log-linear: 32 buckets per power of two.
struct Histogram {
    buckets: Vec<AtomicU64>,
    max: AtomicU64,
}

const SUB: u32 = 32;

impl Histogram {
    fn new() -> Histogram {
        Histogram { buckets: (0..64 * SUB).map(|_| AtomicU64::new(0)).collect(), max: AtomicU64::new(0) }
    }

    fn bucket(us: u64) -> usize {
        if us < SUB as u64 {
            return us as usize;
        }
        let exp = 63 - us.leading_zeros();
        let shift = exp - SUB.trailing_zeros();
        ((exp - SUB.trailing_zeros() + 1) * SUB + ((us >> shift) as u32 - SUB)) as usize
    }

    /// The smallest value of bucket `b`.
    fn low(b: usize) -> u64 {
        let b = b as u32;
        if b < SUB {
            return b as u64;
        }
        let shift = b / SUB - 1;
        ((SUB + b % SUB) as u64) << shift
    }

    fn record(&self, us: u64) {
        self.buckets[Self::bucket(us).min(self.buckets.len() - 1)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The value at quantile `q` (a bucket's lower bound).
    fn quantile(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let want = ((n as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want {
                return Self::low(i);
            }
        }
        self.max.load(Ordering::Relaxed)
    }
}

/// What the clients count, shared.
struct Shared {
    hist: Histogram,
    ready: AtomicUsize,
    failed: AtomicUsize,
    frames: AtomicU64,
    matched: AtomicU64,
    lagged: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    origin: Instant,
    needle: Vec<u8>,
}

impl Shared {
    fn fail(&self, e: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
    }

    /// One message of a stream (a WebSocket text frame or an SSE event's data).
    fn message(&self, m: &[u8], ready: &mut bool) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        if m.starts_with(b"{\"type\":\"delta\"") {
            if let Some(i) = memchr::memmem::find(m, &self.needle) {
                let rest = &m[i + self.needle.len()..];
                let end = memchr::memchr(b'"', rest).unwrap_or(rest.len());
                if let Some((_, t)) = std::str::from_utf8(&rest[..end]).ok().and_then(|s| s.split_once('.')) {
                    if let Ok(t) = t.parse::<u64>() {
                        let now = self.origin.elapsed().as_micros() as u64;
                        self.hist.record(now.saturating_sub(t));
                        self.matched.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        } else if m.starts_with(b"{\"type\":\"lagged\"") {
            self.lagged.fetch_add(1, Ordering::Relaxed);
        } else if !*ready && m.starts_with(b"{\"type\":\"snapshot\"") && memchr::memmem::find(&m[..m.len().min(200)], b"\"last\":true").is_some() {
            *ready = true;
            self.ready.fetch_add(1, Ordering::SeqCst);
        }
    }
}

pub fn run(args: BenchWsArgs) -> Result<()> {
    if args.ws + args.sse == 0 {
        bail!("--ws or --sse: at least one client");
    }
    let u = reqwest::Url::parse(&args.url).with_context(|| format!("{:?} is not a URL", args.url))?;
    if u.scheme() != "http" {
        bail!("{}: only http:// (the clients speak plain HTTP on loopback)", args.url);
    }
    let addr = format!("{}:{}", u.host_str().context("no host")?, u.port_or_known_default().unwrap_or(80));
    let run_id: u32 = std::process::id() ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let marker = format!("bc{run_id:08x}.");
    let origin = Instant::now();
    let shared = Arc::new(Shared {
        hist: Histogram::new(),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        frames: AtomicU64::new(0),
        matched: AtomicU64::new(0),
        lagged: AtomicU64::new(0),
        first_error: Default::default(),
        origin,
        needle: format!("\"note\":\"{marker}").into_bytes(),
    });
    let clients = args.ws + args.sse;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let rss0 = args.pid.and_then(rss_kb);
    rt.block_on(async {
        let gate = Arc::new(tokio::sync::Semaphore::new(args.connect_at_once.max(1)));
        let t0 = Instant::now();
        for i in 0..clients {
            let (shared, addr, token, gate) = (shared.clone(), addr.clone(), args.token.clone(), gate.clone());
            let sse = i >= args.ws;
            tokio::spawn(async move {
                if let Err(e) = client(&addr, &token, sse, &shared, gate).await {
                    shared.fail(format!("{e:#}"));
                }
            });
        }
        while shared.ready.load(Ordering::SeqCst) + shared.failed.load(Ordering::SeqCst) < clients {
            if t0.elapsed() > Duration::from_secs(300) {
                bail!("{} of {clients} clients ready after 300 s", shared.ready.load(Ordering::SeqCst));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let connect_secs = t0.elapsed().as_secs_f64();
        if shared.failed.load(Ordering::SeqCst) > 0 {
            let e = shared.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default();
            bail!("{} of {clients} clients failed; first: {e}", shared.failed.load(Ordering::SeqCst));
        }
        // Idle: let the hub settle after the snapshots before reading its RSS.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_idle = args.pid.and_then(rss_kb);
        let frames_before = shared.frames.load(Ordering::Relaxed);
        let total = (args.rate * args.load.seconds) as usize;
        let (push, push_secs) = if total > 0 {
            let pa = BenchClusterArgs {
                push: vec![args.url.clone()],
                watch: vec![],
                token: args.token.clone(),
                rate: args.rate,
                load: args.load.clone(),
                drain_secs: args.drain_secs,
                max_in_flight: 16,
                pid: vec![],
                quickack: false,
                label: "bench-ws".into(),
                json: false,
            };
            let push = push_all(&pa, origin, &marker, total).await?;
            let expected = push.accepted * clients as u64;
            let t = Instant::now();
            while shared.matched.load(Ordering::Relaxed) < expected && t.elapsed() < Duration::from_secs(args.drain_secs) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let secs = push.elapsed.as_secs_f64();
            (Some(push), secs)
        } else {
            (None, 0.0)
        };
        let rss_after = args.pid.and_then(rss_kb);
        let frames = shared.frames.load(Ordering::Relaxed) - frames_before;
        let h = &shared.hist;
        let (p50, p99, max) = (h.quantile(0.5), h.quantile(0.99), h.max.load(Ordering::Relaxed));
        let mb = |kb: Option<u64>| kb.map(|k| format!("{:.1} MB", k as f64 / 1024.0)).unwrap_or_else(|| "?".into());
        let per_client = match (rss0, rss_idle) {
            (Some(a), Some(b)) => Some((b as f64 - a as f64) / clients as f64),
            _ => None,
        };
        println!("bench-ws: {} WebSocket + {} SSE clients watching all {} people at {}, ready in {connect_secs:.1} s", args.ws, args.sse, args.load.people, args.url);
        println!(
            "  hub RSS: {} before, {} with the clients idle ({} per client), {} after the push",
            mb(rss0),
            mb(rss_idle),
            per_client.map(|k| format!("{k:.1} KB")).unwrap_or_else(|| "?".into()),
            mb(rss_after)
        );
        let (accepted, expected) = match &push {
            Some(p) => (p.accepted, p.accepted * clients as u64),
            None => (0, 0),
        };
        let matched = shared.matched.load(Ordering::Relaxed);
        if let Some(p) = &push {
            println!("  pushed {} signals over {push_secs:.1} s: {} accepted, {} refused or failed", p.sent, p.accepted, p.failed);
            println!(
                "  delivered {matched} of {expected} ({} missing), {} lagged notices, {:.0} frames/s to the clients; change → client latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                expected.saturating_sub(matched),
                shared.lagged.load(Ordering::Relaxed),
                frames as f64 / push_secs.max(0.001),
                p50 as f64 / 1000.0,
                p99 as f64 / 1000.0,
                max as f64 / 1000.0
            );
        }
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "ws": args.ws, "sse": args.sse, "people": args.load.people, "rate": args.rate, "seconds": args.load.seconds,
                    "connect_secs": connect_secs, "rss_before_kb": rss0, "rss_idle_kb": rss_idle, "rss_after_kb": rss_after,
                    "rss_per_client_kb": per_client, "accepted": accepted, "expected": expected, "delivered": matched,
                    "lagged": shared.lagged.load(Ordering::Relaxed), "frames_per_s": frames as f64 / push_secs.max(0.001),
                    "p50_us": p50, "p99_us": p99, "max_us": max,
                })
            );
        }
        Ok(())
    })
}

/// One client: connects (holding a place at the gate until its snapshot is in), then reads
/// until the process ends.
async fn client(addr: &str, token: &str, sse: bool, shared: &Shared, gate: Arc<tokio::sync::Semaphore>) -> Result<()> {
    let permit = gate.acquire_owned().await?;
    let mut s = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    let request = if sse {
        format!("GET /api/events?all=true&access_token={token} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
    } else {
        format!(
            "GET /api/stream?all=true&access_token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    s.write_all(request.as_bytes()).await?;
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            bail!("the hub's answer head is over {MAX_HEAD} bytes");
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("the hub closed the connection before answering");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let want = if sse { "HTTP/1.1 200" } else { "HTTP/1.1 101" };
    if !head.starts_with(want) {
        bail!("{}: {}", if sse { "no event stream" } else { "no WebSocket upgrade" }, head.lines().next().unwrap_or(""));
    }
    // SSE: a chunked body; the events are found in the chunk data, whose framing lines
    // (sizes) never start with `data:` (the hub writes each event in one chunk).
    buf.drain(..head_end);
    let mut ready = false;
    let mut permit = Some(permit);
    let mut message: Vec<u8> = Vec::new();
    loop {
        if sse {
            // Events end with a blank line; each `data:` line of one is the JSON.
            while let Some(i) = memchr::memmem::find(&buf, b"\n\n") {
                for line in buf[..i].split(|b| *b == b'\n') {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if let Some(d) = line.strip_prefix(b"data:") {
                        let d = d.strip_prefix(b" ").unwrap_or(d);
                        shared.message(d, &mut ready);
                    }
                }
                buf.drain(..i + 2);
            }
        } else {
            let mut at = 0;
            while let Some((len, fin, opcode, payload)) = parse_frame(&buf[at..]) {
                let p = &buf[at + payload.start..at + payload.end];
                match opcode {
                    0x0..=0x2 => {
                        if message.len() + p.len() > MAX_MESSAGE {
                            bail!("a WebSocket message from the hub over {MAX_MESSAGE} bytes");
                        }
                        message.extend_from_slice(p);
                        if fin {
                            shared.message(&message, &mut ready);
                            message.clear();
                        }
                    }
                    0x8 => bail!("the hub closed the stream"),
                    0x9 => s.write_all(&client_frame(0xA, p)).await?,
                    _ => {}
                }
                at += len;
            }
            buf.drain(..at);
        }
        if ready {
            permit.take();
            if buf.capacity() > 64 * 1024 && buf.len() < 1024 {
                buf.shrink_to(16 * 1024);
            }
        }
        if buf.len() > MAX_MESSAGE {
            bail!("a message from the hub over {MAX_MESSAGE} bytes");
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("the hub closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets are ordered, about 3 % wide, and a quantile is within a bucket of the truth.
    #[test]
    fn the_histogram_is_log_linear() {
        let mut last = 0;
        for us in [0u64, 1, 31, 32, 33, 63, 64, 100, 1_000, 12_345, 1_000_000, 60_000_000] {
            let b = Histogram::bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            let low = Histogram::low(b);
            assert!(low <= us && us - low <= us / 32 + 1, "{us}: bucket {b} starts at {low}");
        }
        let h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record(us);
        }
        let p50 = h.quantile(0.5);
        assert!((4_800..=5_000).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99);
        assert!((9_600..=9_900).contains(&p99), "{p99}");
        assert_eq!(h.max.load(Ordering::Relaxed), 10_000);
    }
}
