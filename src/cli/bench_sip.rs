//! `presence-hub bench-sip`: a SIP presence workload against any presence server on loopback —
//! the hub's own SIP server or Kamailio's presence module — so both are measured with the same
//! load: watchers SUBSCRIBE to `presentities` people (`watchers` each), then PUBLISHes (PIDF,
//! modifying each person's publication with its entity-tag, RFC 3903) arrive open-loop at
//! `rate` per second for `duration` seconds, and every NOTIFY the watchers get is counted and
//! timed (each PUBLISH's note carries its send time, which the NOTIFY's PIDF carries back).
//!
//! With `--pid`, the server's CPU time (user + system, its child processes included) and
//! memory (PSS from `/proc/PID/smaps_rollup`, summed over the processes) are read before and
//! after. `scripts/bench-sip.sh` starts the hub and Kamailio and runs this against each.
//! The generator runs on one thread so that it takes the same share of the machine in both runs.
//!
//! With `--lists K` the same people are watched through resource lists (RFC 4662) instead:
//! the hub offers `sip:{list_prefix}{k}@DOMAIN` (`[[sip.lists]]`, `k` = 0…K-1, each with an
//! equal share of the people in order), and each of `watchers` consoles SUBSCRIBEs once to
//! every list. A list NOTIFY may carry several people's changes; the report counts NOTIFYs
//! and the people's updates they carry, and times every update. `scripts/bench-sip-lists.sh`
//! runs single subscriptions against lists, with the hub's render cache on and off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use presence_sip::endpoint::{Endpoint, EndpointConfig, Peer, Transport};
use presence_sip::message::{sip_etag, Builder};
use presence_sip::subscription::{SubEvent, SubscribeSpec, Subscription};
use tokio::sync::{mpsc, Semaphore};

/// Arguments of `presence-hub bench-sip`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchSipArgs {
    /// The presence server (UDP).
    #[arg(long)]
    pub server: SocketAddr,
    /// Domain of the presentities' URIs (`sip:userN@DOMAIN`).
    #[arg(long, default_value = "127.0.0.1")]
    pub domain: String,
    /// People published and watched (`user0` … `userN-1`).
    #[arg(long, default_value_t = 1000)]
    pub presentities: usize,
    /// Watchers per person (each one SUBSCRIBE dialog).
    #[arg(long, default_value_t = 5)]
    pub watchers: usize,
    /// PUBLISHes per second (open loop).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Digest user (when the server challenges).
    #[arg(long)]
    pub user: Option<String>,
    /// Digest password.
    #[arg(long)]
    pub password: Option<String>,
    /// Process id of the server, for CPU and memory (its children are included).
    #[arg(long)]
    pub pid: Option<u32>,
    /// A label for the report.
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Watch the people through this many resource lists (0: one subscription per person and
    /// watcher).
    #[arg(long, default_value_t = 0)]
    pub lists: usize,
    /// Transport of the watchers' subscriptions: `udp` or `tcp` (PUBLISHes go over UDP).
    #[arg(long, default_value = "udp")]
    pub transport: String,
    /// User part of the list URIs before the list's number.
    #[arg(long, default_value = "lamps")]
    pub list_prefix: String,
}

#[derive(Default)]
struct Counters {
    notifies: AtomicU64,
    notifies_with_mark: AtomicU64,
    /// People's updates received (one per NOTIFY of a single subscription; one per part of a
    /// list NOTIFY).
    updates: AtomicU64,
    publish_ok: AtomicU64,
    publish_err: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

/// Runs the workload and prints a report.
pub fn run(args: BenchSipArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: BenchSipArgs) -> Result<()> {
    let t_origin = Instant::now();
    let counters = Arc::new(Counters::default());
    let creds = args.user.clone().zip(args.password.clone());
    let peer = Peer { transport: Transport::Udp, addr: args.server };
    let watch_transport = Transport::parse(&args.transport).filter(|t| *t != Transport::Tls).context("--transport is udp or tcp")?;
    let watch_peer = Peer { transport: watch_transport, addr: args.server };

    // Watchers: a few endpoints (sockets), many dialogs.
    let endpoints = 4.min(args.watchers * args.presentities).max(1);
    let mut eps = Vec::new();
    for _ in 0..endpoints {
        let cfg = EndpointConfig { tcp: watch_transport == Transport::Tcp, queue: 65_536, transaction_timeout: Duration::from_secs(8), ..Default::default() };
        eps.push(Endpoint::bind(cfg).await.context("binding a watcher endpoint")?.0);
    }
    let (etx, mut erx) = mpsc::channel::<((), SubEvent)>(65_536);
    let c = counters.clone();
    let origin = t_origin;
    let active = Arc::new(AtomicU64::new(0));
    let act = active.clone();
    let counting = tokio::spawn(async move {
        while let Some((_, ev)) = erx.recv().await {
            match ev {
                SubEvent::Active { .. } => {
                    act.fetch_add(1, Ordering::Relaxed);
                }
                SubEvent::Notify { body, .. } => {
                    c.notifies.fetch_add(1, Ordering::Relaxed);
                    let now = origin.elapsed().as_micros() as u64;
                    let sent = marks(&body);
                    c.updates.fetch_add(sent.len().max(1) as u64, Ordering::Relaxed);
                    if !sent.is_empty() {
                        c.notifies_with_mark.fetch_add(1, Ordering::Relaxed);
                        c.latencies_us.lock().unwrap().extend(sent.into_iter().map(|s| now.saturating_sub(s)));
                    }
                }
                SubEvent::Down { .. } => {}
            }
        }
    });
    let per_watcher = if args.lists > 0 { args.lists } else { args.presentities };
    let total_subs = per_watcher * args.watchers;
    match args.lists {
        0 => println!("{}: subscribing {total_subs} watchers to {} people at {} …", args.label, args.presentities, args.server),
        k => println!("{}: {} consoles subscribing to {k} lists of {} people at {} …", args.label, args.watchers, args.presentities / k, args.server),
    }
    let mut subs = Vec::with_capacity(total_subs);
    let t_sub = Instant::now();
    for w in 0..args.watchers {
        for p in 0..per_watcher {
            let ep = eps[(w * per_watcher + p) % eps.len()].clone();
            let (uri, accept, headers) = match args.lists {
                0 => (format!("sip:user{p}@{}", args.domain), "application/pidf+xml", vec![]),
                _ => (
                    format!("sip:{}{p}@{}", args.list_prefix, args.domain),
                    "application/pidf+xml, application/rlmi+xml, multipart/related",
                    vec![("Supported".to_string(), "eventlist".to_string())],
                ),
            };
            let spec = SubscribeSpec {
                peer: watch_peer,
                uri,
                from: format!("sip:watcher{w}@127.0.0.1"),
                contact_user: format!("watcher{w}"),
                event: "presence".into(),
                accept: accept.into(),
                expires: 3600,
                headers,
                body: None,
                credentials: creds.clone(),
            };
            subs.push(Subscription::spawn(ep, spec, (), etx.clone()));
            if subs.len() % 500 == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while (active.load(Ordering::Relaxed) as usize) < total_subs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let up = active.load(Ordering::Relaxed);
    println!("  {up} of {total_subs} subscriptions active after {:.1} s", t_sub.elapsed().as_secs_f64());
    // The first NOTIFYs (a list's full state may take hundreds) are over before the load.
    let settle = Instant::now();
    let mut last = u64::MAX;
    while settle.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counters.notifies.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    println!("  {last} NOTIFYs of the initial state");

    // Publisher: one endpoint, open loop, at most 4096 PUBLISHes in flight.
    let pcfg = EndpointConfig { tcp: false, queue: 1024, transaction_timeout: Duration::from_secs(8), ..Default::default() };
    let (pub_ep, _prx) = Endpoint::bind(pcfg).await?;
    let etags: Arc<Mutex<HashMap<usize, String>>> = Arc::default();
    let inflight = Arc::new(Semaphore::new(4096));
    let cpu0 = args.pid.map(proc_cpu_ticks);
    let self0 = proc_cpu_ticks(std::process::id());
    let mem0 = args.pid.map(proc_pss_kb);
    counters.notifies.store(0, Ordering::Relaxed);
    counters.updates.store(0, Ordering::Relaxed);
    counters.notifies_with_mark.store(0, Ordering::Relaxed);
    counters.latencies_us.lock().unwrap().clear();
    let start = Instant::now();
    let total = args.rate * args.duration;
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let mut sent = 0u64;
    let mut next = tokio::time::Instant::now();
    while sent < total {
        next += interval;
        tokio::time::sleep_until(next).await;
        let Ok(permit) = inflight.clone().acquire_owned().await else { break };
        let p = (sent as usize) % args.presentities;
        sent += 1;
        let ep = pub_ep.clone();
        let etags = etags.clone();
        let c = counters.clone();
        let domain = args.domain.clone();
        let creds = creds.clone();
        let sent_us = t_origin.elapsed().as_micros() as u64;
        tokio::spawn(async move {
            let _permit = permit;
            let etag = etags.lock().unwrap().get(&p).cloned();
            match publish(&ep, peer, &domain, p, sent_us, etag.as_deref(), creds.as_ref()).await {
                Some(tag) => {
                    c.publish_ok.fetch_add(1, Ordering::Relaxed);
                    etags.lock().unwrap().insert(p, tag);
                }
                None => {
                    c.publish_err.fetch_add(1, Ordering::Relaxed);
                    etags.lock().unwrap().remove(&p);
                }
            }
        });
    }
    let send_secs = start.elapsed().as_secs_f64();
    // Let the last NOTIFYs arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = args.pid.map(proc_cpu_ticks);
    let self1 = proc_cpu_ticks(std::process::id());
    let mem1 = args.pid.map(proc_pss_kb);
    let notifies = counters.notifies.load(Ordering::Relaxed);
    let updates = counters.updates.load(Ordering::Relaxed);
    let marked = counters.notifies_with_mark.load(Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *counters.latencies_us.lock().unwrap());
    lat.sort_unstable();
    let pct = |q: f64| lat.get(((lat.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0) as f64 / 1000.0;
    println!("{}:", args.label);
    println!("  PUBLISH offered   {sent} in {send_secs:.1} s ({:.0}/s)", sent as f64 / send_secs);
    println!(
        "  PUBLISH answered  {} 2xx, {} failed",
        counters.publish_ok.load(Ordering::Relaxed),
        counters.publish_err.load(Ordering::Relaxed)
    );
    println!(
        "  NOTIFY received   {notifies} ({:.0}/s over {secs:.1} s; expected ≈ {} = PUBLISH × watchers)",
        notifies as f64 / secs,
        sent * args.watchers as u64
    );
    if args.lists > 0 {
        println!(
            "  people's updates  {updates} ({:.0}/s; {:.1} per NOTIFY; expected ≈ {} = PUBLISH × consoles, fewer when coalesced)",
            updates as f64 / secs,
            updates as f64 / notifies.max(1) as f64,
            sent * args.watchers as u64
        );
    }
    println!("  PUBLISH → NOTIFY  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} updates timed in {marked} NOTIFYs)", pct(0.5), pct(0.99), pct(1.0), lat.len());
    if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
        let ticks = c1.saturating_sub(c0) as f64;
        let hz = 100.0; // USER_HZ on Linux
        println!("  server CPU        {:.1} s = {:.0} % of one core", ticks / hz, 100.0 * ticks / hz / secs);
    }
    println!(
        "  load generator    {:.0} % of one core (it shares the machine with the server)",
        100.0 * self1.saturating_sub(self0) as f64 / 100.0 / secs
    );
    if let (Some(m0), Some(m1)) = (mem0, mem1) {
        println!("  server memory     PSS {:.1} MB before the load, {:.1} MB after", m0 as f64 / 1024.0, m1 as f64 / 1024.0);
    }
    drop(subs);
    tokio::time::sleep(Duration::from_millis(300)).await;
    counting.abort();
    Ok(())
}

/// The send times PUBLISHes put in their notes (`bench:<µs>;`): one in a PIDF, one per part
/// of a list NOTIFY.
fn marks(body: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    for i in memchr::memmem::find_iter(body, b"bench:") {
        let rest = &body[i + 6..];
        let Some(end) = rest.iter().position(|b| !b.is_ascii_digit()) else { continue };
        if let Some(v) = std::str::from_utf8(&rest[..end]).ok().and_then(|s| s.parse().ok()) {
            out.push(v);
        }
    }
    out
}

async fn publish(ep: &Endpoint, peer: Peer, domain: &str, p: usize, sent_us: u64, etag: Option<&str>, creds: Option<&(String, String)>) -> Option<String> {
    let uri = format!("sip:user{p}@{domain}");
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="{uri}"><tuple id="t1"><status><basic>open</basic></status></tuple><dm:person id="p1"><rpid:activities><rpid:on-the-phone/></rpid:activities><dm:note>bench:{sent_us};</dm:note></dm:person></presence>"#
    );
    let mut auth: Option<(String, String)> = None;
    for cseq in 1..=2 {
        let (via, branch) = ep.via(Transport::Udp);
        let mut b = Builder::request("PUBLISH", &uri)
            .header("Via", &via)
            .header("Max-Forwards", "70")
            .header("From", &format!("<{uri}>;tag={}", ep.token()))
            .header("To", &format!("<{uri}>"))
            .header("Call-ID", &format!("{}@bench", ep.token()))
            .header("CSeq", &format!("{cseq} PUBLISH"))
            .header("Event", "presence")
            .header("Expires", "3600");
        if let Some(tag) = etag {
            b = b.header("SIP-If-Match", tag);
        }
        if let Some((n, v)) = &auth {
            b = b.header(n, v);
        }
        let r = ep.request(peer, &branch, b.body("application/pidf+xml", body.clone()).build()).await.ok()?;
        match (r.code()?, creds, &auth) {
            (200..=299, _, _) => return r.header(&sip_etag()).map(str::to_string),
            (401 | 407, Some((u, pw)), None) => {
                let (n, v) = presence_sip::auth::answer_challenge(&r, "PUBLISH", &uri, u, pw, 1)?;
                auth = Some((n.as_print_str().to_string(), v));
            }
            _ => return None,
        }
    }
    None
}

/// The process and its descendants.
fn family(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
                if let Some(ppid) = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|x| x.parse().ok()) {
                    parents.entry(ppid).or_default().push(p);
                }
            }
        }
    }
    let mut i = 0;
    while i < all.len() {
        if let Some(kids) = parents.get(&all[i]) {
            all.extend(kids);
        }
        i += 1;
    }
    all
}

/// utime + stime (+ children's waited-for times) of the process family, in clock ticks.
fn proc_cpu_ticks(pid: u32) -> u64 {
    family(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|stat| {
            let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            // fields after ')': state=0, ppid=1, … utime=11, stime=12
            f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0) + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
        })
        .sum()
}

/// Proportional set size of the process family, in KiB (shared memory counted once).
fn proc_pss_kb(pid: u32) -> u64 {
    family(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .filter_map(|s| s.lines().find(|l| l.starts_with("Pss:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()))
        .sum()
}
