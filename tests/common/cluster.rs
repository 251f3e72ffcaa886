//! A cluster of real hub processes on a real NATS JetStream cluster, for `tests/cluster.rs`
//! (issue 15).
//!
//! * [`HubNode`] is one `presence-hub --config FILE` process (the binary, as `tests/crash.rs`
//!   runs it) with a `[cluster]` block: its own data dir, HTTP port and SIP port (for a
//!   `sip_dialog` provider's `local`), the demo directory, the admin token, and stdout and
//!   stderr appended to its log file. [`HubNode::kill9`] crashes it, [`HubNode::sigterm`]
//!   stops it as systemd does; the admin GET helpers read `/api/cluster`, `/api/providers` and
//!   `/readyz`.
//! * [`HubCluster`] holds the [`NatsCluster`] and the nodes; when a test panics (a failed
//!   assertion, a timed-out wait) dropping it prints the tail of every hub's log and every
//!   NATS server's log.
//! * [`TcpProxy`] is a TCP proxy on loopback (accept, connect upstream, copy both ways): a node
//!   that reaches NATS only through it is cut off with [`TcpProxy::cut`] (every connection is
//!   dropped and new ones are closed at once) and let back with [`TcpProxy::heal`]. The NATS
//!   servers do not advertise each other to clients (`no_advertise`), so the client cannot
//!   reconnect around it.
//! * [`wait_until`] polls like `wait_for`, but its condition says what it saw, and the panic
//!   after the timeout shows the last of it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::kamailio::{file_tail, free_udp_tcp_port, LOOPBACK};
use super::nats::NatsCluster;
use super::{client, temp_dir, ADMIN};

/// How much of each log a failure report shows.
const LOG_TAIL: usize = 6000;

/// Polls `f` every 50 ms until it returns `Ok`; panics after `timeout` with `what` and the last
/// `Err` it returned (what it saw instead).
pub async fn wait_until<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Result<T, String>) -> T {
    let t0 = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(seen) => assert!(t0.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}; last seen: {seen}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One hub process with a `[cluster]` block.
pub struct HubNode {
    /// `cluster.node`.
    pub name: String,
    /// Its HTTP port on 127.0.0.1 (the Graph provider's webhooks are on it).
    pub port: u16,
    /// A free port on 127.0.0.1 (UDP and TCP) for its `sip_dialog` provider's `local`.
    pub sip_port: u16,
    /// Its directory: config, log, data.
    pub dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl HubNode {
    /// Writes the config of node `name`: listening on a free port, its own data dir, the demo
    /// directory, the admin token, `[cluster]` with `nats`, `replicas = 3` and `lease_ms`, and
    /// the `[[providers]]` blocks `providers` writes for it (given the node, for its ports).
    pub fn new(name: &str, nats: &[String], lease_ms: u64, providers: &dyn Fn(&HubNode) -> String) -> HubNode {
        let dir = temp_dir(&format!("cluster-{name}"));
        let mut node = HubNode {
            name: name.to_string(),
            port: free_udp_tcp_port(),
            sip_port: free_udp_tcp_port(),
            config_path: dir.join("config.toml"),
            log_path: dir.join("hub.log"),
            dir,
            child: None,
        };
        let demo_csv = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/directory/demo.csv");
        let nats: Vec<String> = nats.iter().map(|u| format!("\"{u}\"")).collect();
        let config = format!(
            r#"listen = "{LOOPBACK}:{port}"
data_dir = "{data}"
[directory]
import = "{demo_csv}"
[[tokens]]
name = "admin"
role = "admin"
sha256 = "{admin}"
[cluster]
nats = [{nats}]
node = "{name}"
replicas = 3
lease_ms = {lease_ms}
{providers}"#,
            port = node.port,
            data = node.dir.join("data").display(),
            admin = presence_hub::tokens::hash_token(ADMIN),
            nats = nats.join(", "),
            providers = providers(&node),
        );
        std::fs::write(&node.config_path, config).unwrap();
        node.child = None;
        node
    }

    /// Starts the process (not running), appending its output to its log.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).unwrap();
        let _ = writeln!(log, "=== tests/common/cluster.rs: starting {} ===", self.name);
        // Through a symlink named after the node: a `pkill presence-hub` run by hand elsewhere
        // on the machine (another checkout's cluster) stopped these nodes mid-test.
        let exe = self.dir.join(format!("ph-{}", self.name));
        if !exe.exists() {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_presence-hub"), &exe).unwrap();
        }
        let child = Command::new(&exe)
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start presence-hub");
        self.child = Some(child);
    }

    /// Waits until `/readyz` answers 200; panics if the process exits or after `timeout`.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let what = format!("{} ready", self.name);
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                panic!("{} exited during start-up ({st})", self.name);
            }
            let (status, body) = self.readyz().await;
            if status == 200 {
                return;
            }
            assert!(t0.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}; /readyz {status} {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `127.0.0.1:<HTTP port>`: who the Graph simulator logs for this node's subscriptions.
    pub fn http_addr(&self) -> String {
        format!("{LOOPBACK}:{}", self.port)
    }

    /// `127.0.0.1:<SIP port>`: who the PBX simulator logs for this node's SUBSCRIBEs.
    pub fn sip_addr(&self) -> String {
        format!("{LOOPBACK}:{}", self.sip_port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{LOOPBACK}:{}{path}", self.port)
    }

    /// SIGKILL, as a crash or a power cut; waits for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as systemd stops it; waits up to 20 s for the exit and returns its status.
    pub fn sigterm(&mut self) -> ExitStatus {
        let mut c = self.child.take().unwrap_or_else(|| panic!("{} is not running", self.name));
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
                panic!("{} did not stop within 20 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status once the process has exited (None while it runs, or never started).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let c = self.child.as_mut()?;
        let st = c.try_wait().ok()??;
        self.child = None;
        Some(st)
    }

    /// Its whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// `GET path` with the admin token: status and JSON body (Null when none answers).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        match client().get(self.url(path)).bearer_auth(ADMIN).timeout(Duration::from_secs(3)).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// `GET /readyz`: status and body as text.
    pub async fn readyz(&self) -> (u16, String) {
        match client().get(self.url("/readyz")).timeout(Duration::from_secs(3)).send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// `GET /api/cluster` (Null when it does not answer 200).
    pub async fn cluster_report(&self) -> Value {
        match self.get("/api/cluster").await {
            (200, v) => v,
            _ => Value::Null,
        }
    }

    /// The value of the series `name` (no labels) in `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let r = client().get(self.url("/metrics")).bearer_auth(ADMIN).timeout(Duration::from_secs(3)).send().await.ok()?;
        let text = r.text().await.ok()?;
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// The `/api/providers` entry named `name` (Null when none).
    pub async fn provider(&self, name: &str) -> Value {
        let (_, v) = self.get("/api/providers").await;
        v.as_array().and_then(|a| a.iter().find(|p| p["name"] == name).cloned()).unwrap_or(Value::Null)
    }
}

impl Drop for HubNode {
    fn drop(&mut self) {
        self.kill9();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The owner of the lease of provider `name` in a `/api/cluster` report.
pub fn lease_owner(report: &Value, name: &str) -> Option<String> {
    report["leases"].as_array()?.iter().find(|l| l["kind"] == "provider" && l["name"] == name)?["owner"].as_str().map(str::to_string)
}

/// A NATS cluster and the hub nodes on it; prints every log when the test fails.
pub struct HubCluster {
    pub nats: NatsCluster,
    pub nodes: Vec<HubNode>,
}

impl HubCluster {
    pub fn new(nats: NatsCluster) -> HubCluster {
        HubCluster { nats, nodes: Vec::new() }
    }

    /// Adds (does not start) a node; returns its index.
    pub fn add(&mut self, node: HubNode) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The index of the node named `name`.
    pub fn index_of(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The tail of every hub's and every NATS server's log.
    pub fn logs_report(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!("--- {} log ({}):\n{}\n", n.name, n.log_path.display(), file_tail(&n.log_path, LOG_TAIL)));
        }
        out.push_str(&self.nats.logs_report());
        out
    }
}

impl Drop for HubCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("===== the cluster test failed; the logs =====\n{}", self.logs_report());
        }
        for n in &mut self.nodes {
            n.kill9();
        }
    }
}

/// A TCP proxy on 127.0.0.1 to the first of `upstream` that accepts (see the module docs).
/// Runs on the test's tokio runtime.
pub struct TcpProxy {
    addr: SocketAddr,
    inner: Arc<ProxyInner>,
    accept: tokio::task::JoinHandle<()>,
}

struct ProxyInner {
    upstream: Vec<SocketAddr>,
    /// Set while cut; changed under `conns`'s lock, so no accepted connection escapes a cut.
    cut: AtomicBool,
    conns: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    accepted: AtomicU64,
    refused: AtomicU64,
}

impl TcpProxy {
    pub async fn start(upstream: &[String]) -> TcpProxy {
        let upstream: Vec<SocketAddr> = upstream.iter().map(|u| u.strip_prefix("nats://").unwrap_or(u).parse().unwrap()).collect();
        let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(ProxyInner { upstream, cut: AtomicBool::new(false), conns: Mutex::new(Vec::new()), accepted: AtomicU64::new(0), refused: AtomicU64::new(0) });
        let i = inner.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else { continue };
                let mut conns = i.conns.lock().unwrap();
                if i.cut.load(Ordering::SeqCst) {
                    i.refused.fetch_add(1, Ordering::Relaxed);
                    drop(down);
                    continue;
                }
                i.accepted.fetch_add(1, Ordering::Relaxed);
                let upstream = i.upstream.clone();
                conns.retain(|h| !h.is_finished());
                conns.push(tokio::spawn(async move {
                    for a in upstream {
                        if let Ok(mut up) = tokio::net::TcpStream::connect(a).await {
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                            return;
                        }
                    }
                }));
            }
        });
        TcpProxy { addr, inner, accept }
    }

    /// `nats://127.0.0.1:<port>` of the proxy.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Drops every connection through the proxy and closes new ones at once.
    pub fn cut(&self) {
        let mut conns = self.inner.conns.lock().unwrap();
        self.inner.cut.store(true, Ordering::SeqCst);
        for h in conns.drain(..) {
            h.abort(); // drops both sockets: the client and the server see the connection close
        }
    }

    /// Accepts and forwards connections again.
    pub fn heal(&self) {
        let _conns = self.inner.conns.lock().unwrap();
        self.inner.cut.store(false, Ordering::SeqCst);
    }

    /// Connections forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed at once because the proxy was cut.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for h in self.inner.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}
