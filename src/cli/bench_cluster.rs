//! `presence-hub bench-cluster`: a load driver against running hubs (one node, or the nodes of a
//! cluster) over their public API, to measure what a change costs from `POST /api/signals` on
//! one node to a WebSocket frame on every node — in a cluster, the NATS hop included.
//!
//! - **Watch**: one WebSocket stream (`/api/stream?all=true`) per `--watch` URL, each read on
//!   its own thread with blocking I/O (a minimal RFC 6455 client: handshake, unmasked server
//!   frames, masked pongs; no TLS, loopback only). Pushing starts once every stream has had
//!   its snapshot.
//! - **Push**: open loop at `--rate` signals/s for `--seconds`, every millisecond the signals
//!   then due in one `POST /api/signals`, round-robin over the `--push` URLs. People are
//!   `<id-prefix>0` … `<id-prefix>N-1` (as `scripts/bench-cluster.sh` writes them), taken in a
//!   shuffled order, each once per round, so a person's signals are `people / rate` seconds
//!   apart. Each signal flips its person between Busy/InACall and Available (Teams, instance
//!   `bench`) and carries a unique note `bc<run>.<n>.<µs>`: its number and its send time, and
//!   the version `n + 1`. Every signal is a change of the merged view, so every one should give
//!   one frame on every stream. The version is what an integration pushing through several
//!   nodes sends (README, "Running a cluster"): two signals of one person sent a moment apart
//!   through two nodes may reach the person's owner in the other order, and the older one is
//!   then dropped instead of undoing the newer.
//! - **Report**: signals pushed and accepted, and per stream: frames matched (each signal
//!   counted once), missing (and of those, how many were a person's last state: the others
//!   were superseded by a later change of the same person, i.e. coalesced on the way),
//!   duplicates, `lagged` frames, and latency from the POST being sent to the frame being
//!   read, p50 / p99 / max. With `--pid LABEL=PID`, each process's CPU time
//!   during the push (% of one core) and its RSS at the end.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long signals are pushed, and to whom: shared by `bench-cluster` and `bench-ws`.
#[derive(clap::Args, Debug, Clone)]
pub struct Load {
    /// Seconds of pushing.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// People in the hub's directory, `<id-prefix>0` … `<id-prefix>N-1`.
    #[arg(long, default_value_t = 320)]
    pub people: usize,
    /// The ids' prefix.
    #[arg(long, default_value = "p")]
    pub id_prefix: String,
}

/// Arguments of `presence-hub bench-cluster`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchClusterArgs {
    /// Hubs that take the pushed signals, round-robin (`http://host:port`, comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub push: Vec<String>,
    /// Hubs to watch: one `?all=true` WebSocket stream each (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub watch: Vec<String>,
    /// An admin token (pushing needs admin; the streams take it as `access_token`).
    #[arg(long, env = "PRESENCE_HUB_TOKEN")]
    pub token: String,
    /// Signals per second (open loop).
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// Who and how long: `--seconds`, `--people`, `--id-prefix`.
    #[command(flatten)]
    pub load: Load,
    /// After the push, how long to wait for the last frames.
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
    /// POSTs in flight at most (beyond, the next POST carries more signals, up to
    /// [`MAX_PER_POST`]).
    #[arg(long, default_value_t = 64)]
    pub max_in_flight: usize,
    /// A process to measure during the push, `LABEL=PID` (repeatable): CPU time and RSS.
    #[arg(long)]
    pub pid: Vec<String>,
    /// Acknowledge every read of the streams at once (TCP_QUICKACK), as a diagnosis: without
    /// it the kernel delays ACKs (up to 40 ms), which a server writing small frames with
    /// Nagle's algorithm on waits for.
    #[arg(long)]
    pub quickack: bool,
    /// A label for the report.
    #[arg(long, default_value = "run")]
    pub label: String,
    /// Also print one JSON object (last line).
    #[arg(long)]
    pub json: bool,
}

/// What one stream saw.
#[derive(Default)]
struct WatchStats {
    /// Signal number → seen.
    seen: Vec<bool>,
    latencies_us: Vec<u64>,
    matched: u64,
    duplicates: u64,
    lagged: u64,
    other_frames: u64,
    error: Option<String>,
}

/// Runs the benchmark and prints a report.
/// Largest handshake answer read from a hub.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Largest WebSocket message (snapshot batch or delta) read from a hub, and the most unread
/// bytes buffered: beyond, the stream is given up with an error instead of growing memory.
pub(crate) const MAX_MESSAGE: usize = 16 << 20;

/// Signals in one POST at most: about 150 bytes each, well under the hub's 64 KiB body limit.
const MAX_PER_POST: usize = 300;

pub fn run(args: BenchClusterArgs) -> Result<()> {
    if args.load.people == 0 || args.rate == 0 || args.load.seconds == 0 {
        bail!("--people, --rate and --seconds must be above 0");
    }
    let total = (args.rate * args.load.seconds) as usize;
    let origin = Instant::now();
    let run_id: u32 = std::process::id() ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let marker = format!("bc{run_id:08x}.");
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicUsize::new(0));
    let stats: Vec<Arc<Mutex<WatchStats>>> = args.watch.iter().map(|_| Arc::new(Mutex::new(WatchStats { seen: vec![false; total], ..Default::default() }))).collect();
    let mut threads = Vec::new();
    for (url, st) in args.watch.iter().zip(&stats) {
        let (url, token, marker, st, stop, ready, quickack) = (url.clone(), args.token.clone(), marker.clone(), st.clone(), stop.clone(), ready.clone(), args.quickack);
        threads.push(std::thread::Builder::new().name("bench-watch".into()).spawn(move || {
            if let Err(e) = watch(&url, &token, &marker, origin, &st, &ready, &stop, quickack) {
                st.lock().unwrap_or_else(|p| p.into_inner()).error = Some(format!("{e:#}"));
                ready.fetch_add(1, Ordering::SeqCst);
            }
        })?);
    }
    // Every stream has its snapshot before the first signal.
    let t = Instant::now();
    while ready.load(Ordering::SeqCst) < args.watch.len() {
        if t.elapsed() > Duration::from_secs(120) {
            bail!("the streams did not all start within 120 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for (url, st) in args.watch.iter().zip(&stats) {
        if let Some(e) = &st.lock().unwrap_or_else(|p| p.into_inner()).error {
            bail!("stream of {url}: {e}");
        }
    }

    let pids: Vec<(String, u32)> = args
        .pid
        .iter()
        .map(|p| {
            let (l, n) = p.split_once('=').with_context(|| format!("--pid {p:?}: LABEL=PID"))?;
            Ok((l.to_string(), n.parse().with_context(|| format!("--pid {p:?}: LABEL=PID"))?))
        })
        .collect::<Result<_>>()?;
    let cpu0: Vec<Option<u64>> = pids.iter().map(|(_, p)| cpu_ticks(*p)).collect();
    let (machine0, self0) = (machine_ticks(), cpu_ticks(std::process::id()));
    let load0 = loadavg();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let push = rt.block_on(push_all(&args, origin, &marker, total))?;
    let cpu1: Vec<Option<u64>> = pids.iter().map(|(_, p)| cpu_ticks(*p)).collect();
    let (machine1, self1) = (machine_ticks(), cpu_ticks(std::process::id()));
    let load1 = loadavg();

    // Drain: until every stream has every accepted signal, or --drain-secs.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(args.drain_secs) {
        if stats.iter().all(|s| s.lock().unwrap_or_else(|p| p.into_inner()).matched >= push.accepted) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }

    // Report.
    let ticks = clock_ticks();
    let push_secs = push.elapsed.as_secs_f64();
    println!("bench-cluster {}: {} people, {} signals/s offered for {} s, push to {} node(s), watch {} node(s)", args.label, args.load.people, args.rate, args.load.seconds, args.push.len(), args.watch.len());
    println!("  pushed {} signals in {} POSTs over {push_secs:.1} s: {} accepted ({:.0}/s), {} refused or failed{}", push.sent, push.posts, push.accepted, push.accepted as f64 / push_secs, push.failed, push.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default());
    let mut watch_json = Vec::new();
    for (url, st) in args.watch.iter().zip(&stats) {
        let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
        s.latencies_us.sort_unstable();
        let q = |f: f64| -> u64 {
            if s.latencies_us.is_empty() {
                return 0;
            }
            let i = ((s.latencies_us.len() as f64 * f).ceil() as usize).clamp(1, s.latencies_us.len()) - 1;
            s.latencies_us[i]
        };
        let (p50, p99, max) = (q(0.5), q(0.99), s.latencies_us.last().copied().unwrap_or(0));
        let missing = push.accepted.saturating_sub(s.matched);
        // Of the missing, those whose person's last signal arrived (an intermediate state,
        // superseded: coalesced somewhere) and the people whose last state never arrived.
        let final_missing = (push.failed == 0).then(|| {
            let mut last = vec![usize::MAX; args.load.people];
            for (n, &u) in push.person.iter().enumerate() {
                last[u as usize] = n;
            }
            last.iter().filter(|&&n| n != usize::MAX && !s.seen[n]).count() as u64
        });
        println!(
            "  {url}: {} of {} delivered ({:.0}/s), {missing} missing ({}), {} duplicates, {} lagged; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms{}",
            s.matched,
            push.accepted,
            s.matched as f64 / push_secs,
            match final_missing {
                Some(f) => format!("{f} of them a person's last state"),
                None => "some POSTs failed: not told apart".into(),
            },
            s.duplicates,
            s.lagged,
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0,
            max as f64 / 1000.0,
            s.error.as_deref().map(|e| format!("; stream error: {e}")).unwrap_or_default()
        );
        watch_json.push(serde_json::json!({
            "url": url, "delivered": s.matched, "missing": missing, "final_missing": final_missing, "duplicates": s.duplicates, "lagged": s.lagged,
            "delivered_per_s": s.matched as f64 / push_secs, "p50_us": p50, "p99_us": p99, "max_us": max, "error": s.error,
        }));
    }
    let mut pid_json = Vec::new();
    for (i, (label, pid)) in pids.iter().enumerate() {
        let cpu = match (cpu0[i], cpu1[i]) {
            (Some(a), Some(b)) => Some((b - a) as f64 / ticks / push_secs * 100.0),
            _ => None,
        };
        let rss = rss_kb(*pid);
        println!(
            "  {label} (pid {pid}): CPU {} of a core during the push, RSS {} MB",
            cpu.map(|c| format!("{c:.0} %")).unwrap_or_else(|| "?".into()),
            rss.map(|r| format!("{:.0}", r as f64 / 1024.0)).unwrap_or_else(|| "?".into())
        );
        pid_json.push(serde_json::json!({ "label": label, "pid": pid, "cpu_pct": cpu, "rss_kb": rss }));
    }
    // The whole machine during the push: what the measured processes and this driver used, and
    // what anything else did (other people's work shares the cores).
    let pct = |t: u64| t as f64 / ticks / push_secs * 100.0;
    let measured: u64 = cpu0.iter().zip(&cpu1).map(|(a, b)| b.unwrap_or(0).saturating_sub(a.unwrap_or(0))).sum();
    let driver = self1.unwrap_or(0).saturating_sub(self0.unwrap_or(0));
    let (busy, steal) = match (machine0, machine1) {
        (Some(a), Some(b)) => (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1)),
        _ => (0, 0),
    };
    let others = busy.saturating_sub(measured + driver);
    println!(
        "  machine during the push: {:.0} % of a core busy (measured processes {:.0} %, this driver {:.0} %, anything else {:.0} %), steal {:.0} %; load average {load0} before, {load1} after",
        pct(busy),
        pct(measured),
        pct(driver),
        pct(others),
        pct(steal)
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "machine_busy_pct": pct(busy), "measured_pct": pct(measured), "driver_pct": pct(driver), "others_pct": pct(others), "steal_pct": pct(steal),
                "load_before": load0, "load_after": load1,
                "label": args.label, "people": args.load.people, "rate": args.rate, "seconds": args.load.seconds,
                "push_nodes": args.push.len(), "watch_nodes": args.watch.len(),
                "sent": push.sent, "accepted": push.accepted, "failed": push.failed, "posts": push.posts,
                "accepted_per_s": push.accepted as f64 / push_secs,
                "watch": watch_json, "pids": pid_json,
            })
        );
    }
    Ok(())
}

pub(crate) struct PushResult {
    /// The person of each signal, by number.
    pub(crate) person: Vec<u32>,
    pub(crate) sent: u64,
    pub(crate) accepted: u64,
    pub(crate) failed: u64,
    pub(crate) posts: u64,
    pub(crate) elapsed: Duration,
    pub(crate) first_error: Option<String>,
}

/// Pushes `total` signals at `rate` per second (open loop).
pub(crate) async fn push_all(args: &BenchClusterArgs, origin: Instant, marker: &str, total: usize) -> Result<PushResult> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.max_in_flight).timeout(Duration::from_secs(30)).build()?;
    let urls: Vec<String> = args.push.iter().map(|u| format!("{}/api/signals", u.trim_end_matches('/'))).collect();
    let auth = format!("Bearer {}", args.token);
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut order: Vec<u32> = (0..args.load.people as u32).collect();
    let mut pos = order.len();
    let mut busy = vec![false; args.load.people];
    let mut person = Vec::with_capacity(total);
    let (mut sent, mut posts, mut target) = (0usize, 0u64, 0usize);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut tasks = Vec::new();
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * args.rate as f64) as usize).min(total);
        if due <= sent || in_flight.load(Ordering::Relaxed) >= args.max_in_flight {
            continue;
        }
        let n = (due - sent).min(MAX_PER_POST);
        let mut body = String::with_capacity(n * 150 + 16);
        body.push_str("{\"signals\":[");
        let t_us = origin.elapsed().as_micros() as u64;
        for i in 0..n {
            if pos == order.len() {
                // A new round: everyone once, in a new order.
                for j in (1..order.len()).rev() {
                    order.swap(j, (next() % (j as u64 + 1)) as usize);
                }
                pos = 0;
            }
            let u = order[pos] as usize;
            pos += 1;
            person.push(u as u32);
            busy[u] = !busy[u];
            let (avail, act) = if busy[u] { ("Busy", ",\"activity\":\"InACall\"") } else { ("Available", "") };
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                "{{\"who\":\"{}{u}\",\"source\":\"teams\",\"instance\":\"bench\",\"availability\":\"{avail}\"{act},\"note\":\"{marker}{n}.{t_us}\",\"version\":{}}}",
                args.load.id_prefix,
                sent + i + 1,
                n = sent + i
            ));
        }
        body.push_str("]}");
        sent += n;
        let url = urls[target % urls.len()].clone();
        target += 1;
        posts += 1;
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (client, auth, accepted, failed, in_flight, first_error) = (client.clone(), auth.clone(), accepted.clone(), failed.clone(), in_flight.clone(), first_error.clone());
        tasks.push(tokio::spawn(async move {
            let r = client.post(&url).header("authorization", auth).header("content-type", "application/json").body(body).send().await;
            let err = match r {
                Ok(resp) if resp.status().is_success() => None,
                Ok(resp) => {
                    let status = resp.status();
                    Some(format!("{url}: {status} {}", resp.text().await.unwrap_or_default().chars().take(200).collect::<String>()))
                }
                Err(e) => Some(format!("{url}: {e}")),
            };
            match err {
                None => accepted.fetch_add(n as u64, Ordering::Relaxed),
                Some(e) => {
                    first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                    failed.fetch_add(n as u64, Ordering::Relaxed)
                }
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
        }));
        if tasks.len() > 4096 {
            tasks.retain(|t| !t.is_finished());
        }
    }
    let elapsed = start.elapsed();
    for t in tasks {
        let _ = t.await;
    }
    let first_error = first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
    Ok(PushResult { person, sent: sent as u64, accepted: accepted.load(Ordering::Relaxed), failed: failed.load(Ordering::Relaxed), posts, elapsed, first_error })
}

/// Reads one stream until `stop`: counts and times every frame that carries one of this run's
/// notes.
#[allow(clippy::too_many_arguments)]
fn watch(url: &str, token: &str, marker: &str, origin: Instant, st: &Mutex<WatchStats>, ready: &AtomicUsize, stop: &AtomicBool, quickack: bool) -> Result<()> {
    let u = reqwest::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    if u.scheme() != "http" {
        bail!("{url}: only http:// (the driver speaks plain WebSocket on loopback)");
    }
    let host = u.host_str().context("no host")?;
    let port = u.port_or_known_default().unwrap_or(80);
    let mut s = TcpStream::connect((host, port)).with_context(|| format!("connecting to {host}:{port}"))?;
    s.set_nodelay(true)?;
    let path = format!("{}/api/stream?all=true&access_token={token}", u.path().trim_end_matches('/'));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 16];
    // The answer's head (a key of 16 bytes, base64: RFC 6455's example; the answer's
    // Sec-WebSocket-Accept is not checked).
    let head_end = loop {
        if let Some(i) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if buf.len() > MAX_HEAD {
            bail!("the hub's handshake answer is over {MAX_HEAD} bytes");
        }
        match s.read(&mut chunk) {
            Ok(0) => bail!("the hub closed the connection during the handshake"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.into()),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    if !head.starts_with("HTTP/1.1 101") {
        let body = String::from_utf8_lossy(&buf[head_end..buf.len().min(head_end + 300)]).to_string();
        bail!("no WebSocket upgrade: {} {body}", head.lines().next().unwrap_or(""));
    }
    buf.drain(..head_end);
    let mut writer = s.try_clone()?;
    let mut message: Vec<u8> = Vec::new();
    let mut was_ready = false;
    let needle = format!("\"note\":\"{marker}");
    let finder = memchr::memmem::Finder::new(needle.as_bytes());
    loop {
        // Every complete frame in the buffer.
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
                        let now_us = origin.elapsed().as_micros() as u64;
                        let mut g = st.lock().unwrap_or_else(|p| p.into_inner());
                        if message.starts_with(b"{\"type\":\"delta\"") {
                            match finder.find(&message) {
                                Some(i) => record(&mut g, &message[i + needle.len()..], now_us),
                                None => g.other_frames += 1,
                            }
                        } else if message.starts_with(b"{\"type\":\"lagged\"") {
                            g.lagged += 1;
                        } else if message.starts_with(b"{\"type\":\"snapshot\"") {
                            if !was_ready && memchr::memmem::find(&message[..message.len().min(200)], b"\"last\":true").is_some() {
                                was_ready = true;
                                ready.fetch_add(1, Ordering::SeqCst);
                            }
                        } else {
                            g.other_frames += 1;
                        }
                        message.clear();
                    }
                }
                0x8 => {
                    let _ = writer.write_all(&client_frame(0x8, &[]));
                    if !was_ready {
                        bail!("the hub closed the stream before its snapshot");
                    }
                    return if stop.load(Ordering::Relaxed) { Ok(()) } else { bail!("the hub closed the stream") };
                }
                0x9 => writer.write_all(&client_frame(0xA, p))?,
                _ => {}
            }
            at += len;
        }
        buf.drain(..at);
        if buf.len() > MAX_MESSAGE {
            bail!("a WebSocket frame from the hub over {MAX_MESSAGE} bytes");
        }
        if stop.load(Ordering::Relaxed) {
            let _ = writer.write_all(&client_frame(0x8, &[]));
            return Ok(());
        }
        match s.read(&mut chunk) {
            Ok(0) => bail!("the hub closed the connection"),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if quickack {
                    set_quickack(&s);
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Counts one matched frame: `rest` starts after the marker, `<n>.<µs>"`.
fn record(g: &mut WatchStats, rest: &[u8], now_us: u64) {
    let end = memchr::memchr(b'"', rest).unwrap_or(rest.len());
    let text = std::str::from_utf8(&rest[..end]).unwrap_or("");
    let Some((n, t)) = text.split_once('.') else { return };
    let (Ok(n), Ok(t)) = (n.parse::<usize>(), t.parse::<u64>()) else { return };
    if n >= g.seen.len() {
        return;
    }
    if g.seen[n] {
        g.duplicates += 1;
        return;
    }
    g.seen[n] = true;
    g.matched += 1;
    g.latencies_us.push(now_us.saturating_sub(t));
}

/// One frame at the start of `b`, if complete: (its length, FIN, opcode, the payload's range).
pub(crate) fn parse_frame(b: &[u8]) -> Option<(usize, bool, u8, std::ops::Range<usize>)> {
    if b.len() < 2 {
        return None;
    }
    let fin = b[0] & 0x80 != 0;
    let opcode = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let (len, mut at): (usize, usize) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    if masked {
        // Servers do not mask (RFC 6455 § 5.1); a hub that did would be wrong, not read here.
        at += 4;
    }
    let end = at.checked_add(len)?;
    (b.len() >= end).then_some((end, fin, opcode, at..end))
}

/// A masked client frame (FIN set) with a short payload (control frames: at most 125 bytes).
pub(crate) fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let mask = [0x5a, 0x17, 0xc3, 0x88];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// TCP_QUICKACK: the kernel acknowledges at once instead of delaying; it turns itself off
/// again, so it is set after every read.
fn set_quickack(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and a pointer to an int of the size given.
    unsafe {
        libc::setsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_QUICKACK, (&one as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t);
    }
}

/// User + system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces), from its closing parenthesis.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Busy and steal time of the whole machine (all CPUs), in clock ticks, from `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = s.lines().next()?.strip_prefix("cpu ")?.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal …: busy is the first seven less idle
    // and iowait.
    let busy = f.iter().take(7).sum::<u64>() - f.get(3)? - f.get(4)?;
    Some((busy, *f.get(7)?))
}

/// The load averages (1, 5, 15 minutes).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// VmRSS of a process, in KiB.
pub(crate) fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_parsed_when_complete() {
        let mut f = vec![0x81, 126, 0x01, 0x00];
        f.extend(std::iter::repeat_n(b'x', 256));
        assert_eq!(parse_frame(&f[..100]), None);
        assert_eq!(parse_frame(&f), Some((260, true, 1, 4..260)));
        assert_eq!(parse_frame(&[0x89, 0x02, b'h', b'b']), Some((4, true, 9, 2..4)));
        let pong = client_frame(0xA, b"hb");
        assert_eq!(pong[0], 0x8A);
        assert_eq!(pong[1], 0x82);
        assert_eq!(pong[6] ^ pong[2], b'h');
    }

    #[test]
    fn an_oversized_frame_from_the_hub_is_refused_not_buffered() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            c.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").unwrap();
            // A frame announcing 32 MiB, then more than the limit of it.
            let mut head = vec![0x81, 127];
            head.extend_from_slice(&(32u64 << 20).to_be_bytes());
            c.write_all(&head).unwrap();
            let block = vec![b'x'; 1 << 20];
            for _ in 0..20 {
                if c.write_all(&block).is_err() {
                    return;
                }
            }
        });
        let st = Mutex::new(WatchStats::default());
        let e = watch(&format!("http://{addr}"), "t", "bc1.", Instant::now(), &st, &AtomicUsize::new(0), &AtomicBool::new(false), false).unwrap_err().to_string();
        assert!(e.contains("over 16777216 bytes"), "{e}");
    }

    #[test]
    fn a_note_is_counted_once() {
        let mut g = WatchStats { seen: vec![false; 4], ..Default::default() };
        record(&mut g, b"2.1000\",\"ooo\":false", 1500);
        record(&mut g, b"2.1000\"", 1600);
        record(&mut g, b"9.1000\"", 1600);
        assert_eq!((g.matched, g.duplicates, g.latencies_us.clone()), (1, 1, vec![500]));
    }
}
