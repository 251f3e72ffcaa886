//! A real NATS JetStream cluster as a test peer, for the coming cluster of hubs (issue 15).
//!
//! * [`NatsCluster::start`] runs `n` (typically 3) Debian `nats-server` processes (2.9) on
//!   127.0.0.1 that form one cluster with JetStream on every node. Node `i` (0-based) is named
//!   `n{i+1}` and has a client port, a cluster (route) port and an HTTP monitoring port, its own
//!   JetStream store dir and a generated config (`server_name`, `jetstream { store_dir, max_mem,
//!   max_file }`, `cluster { name, listen, no_advertise, routes = [every other node] }`, `http`),
//!   and runs in its own process group with stdout and stderr appended to `n{i+1}.log`
//!   ([`NatsCluster::log`]).
//!   Start-up waits until [`NatsCluster::wait_ready`] holds: every running node says JetStream is
//!   enabled (`/healthz?js-enabled-only=true`), is routed to every other running node (`/routez`),
//!   and all of them name the same JetStream meta leader (`/jsz` `meta_cluster.leader`), a running
//!   node whose `/jsz` lists every other running node as a current replica.
//! * [`NatsCluster::kill`] crashes one node (SIGKILL to its group), [`NatsCluster::stop`] stops it
//!   (SIGTERM, SIGKILL after 3 s), [`NatsCluster::restart`] starts it again with the same ports
//!   and store dir and waits until it rejoined. Dropping the cluster stops every node.
//! * [`NatsConn`] is a minimal client of the NATS text protocol over a plain TCP stream (INFO,
//!   CONNECT, SUB, PUB, PING/PONG, MSG) for tests that need no client crate; [`nats_roundtrip`]
//!   subscribes, publishes and waits for its own message on one node.
//!
//! Needs `apt-get install nats-server` (`./test.sh` does it; the packaged service is not used);
//! without it these tests fail and say so - they never skip.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::kamailio::{file_tail, free_udp_tcp_port, stop_group, LOOPBACK};

pub const INSTALL_HINT: &str = "the NATS cluster peer needs Debian's nats-server: apt-get install nats-server";

/// The `cluster { name }` of every test cluster.
pub const CLUSTER_NAME: &str = "presence-test";

/// How long [`NatsCluster::start`] and [`NatsCluster::restart`] wait for the cluster (a fresh
/// cluster is ready in about a second; an election after a lost leader takes 4 to 9 s in 2.9).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// `nats-server` on `PATH` or in `/usr/sbin` (where Debian puts it, and not on a non-root
/// user's `PATH`).
fn require_nats_server() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`nats-server` not found; {INSTALL_HINT}"))
}

/// One node of a [`NatsCluster`].
struct Node {
    name: String,
    client_port: u16,
    cluster_port: u16,
    http_port: u16,
    store_dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

/// A running cluster of `nats-server`s with JetStream on 127.0.0.1.
pub struct NatsCluster {
    bin: PathBuf,
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts `n` nodes and waits until the cluster is ready (see the module docs); about a
    /// second. Panics with every node's log if a node exits or the cluster is not ready within
    /// 20 s; when a port was taken between the check and nats-server's bind, it tries again
    /// with other ports.
    pub fn start(n: usize) -> NatsCluster {
        assert!(n >= 1, "a cluster needs a node");
        let bin = require_nats_server();
        let mut last_err = String::new();
        for attempt in 0..3 {
            let mut c = NatsCluster { bin: bin.clone(), dir: super::temp_dir("nats"), nodes: Vec::new() };
            for i in 0..n {
                let name = format!("n{}", i + 1);
                c.nodes.push(Node {
                    store_dir: c.dir.join(format!("{name}-store")),
                    config_path: c.dir.join(format!("{name}.conf")),
                    log_path: c.dir.join(format!("{name}.log")),
                    name,
                    client_port: free_udp_tcp_port(),
                    cluster_port: free_udp_tcp_port(),
                    http_port: free_udp_tcp_port(),
                    child: None,
                });
            }
            for i in 0..n {
                c.write_config(i);
                c.spawn(i);
            }
            match c.try_wait_ready(READY_TIMEOUT) {
                Ok(()) => return c,
                Err(e) => {
                    last_err = format!("{e}\n{}", c.logs_report());
                    if !last_err.contains("address already in use") {
                        break;
                    }
                    eprintln!("nats cluster start attempt {attempt} failed (a port was taken): {e}");
                    // Drop stops the nodes and removes the dir (not panicking).
                }
            }
        }
        panic!("the NATS cluster did not come up: {last_err}");
    }

    fn write_config(&self, i: usize) {
        let node = &self.nodes[i];
        let routes: Vec<String> = self
            .nodes
            .iter()
            .filter(|o| o.name != node.name)
            .map(|o| format!("\"nats-route://{LOOPBACK}:{}\"", o.cluster_port))
            .collect();
        // `http` (host:port) rather than `http_port`: the monitoring port binds loopback only,
        // whatever the defaults. nats-server keeps its files in `<store_dir>/jetstream`.
        // `no_advertise`: clients learn no other servers from INFO (`connect_urls`), so one
        // that is given a single URL (the cluster tests' proxy) reconnects only through it.
        let config = format!(
            "# Generated by tests/common/nats.rs\n\
             server_name: \"{name}\"\n\
             listen: \"{LOOPBACK}:{client}\"\n\
             http: \"{LOOPBACK}:{http}\"\n\
             jetstream {{\n  store_dir: \"{store}\"\n  max_mem: 64MB\n  max_file: 256MB\n}}\n\
             cluster {{\n  name: \"{CLUSTER_NAME}\"\n  listen: \"{LOOPBACK}:{cluster}\"\n  no_advertise: true\n  routes: [\n    {routes}\n  ]\n}}\n",
            name = node.name,
            client = node.client_port,
            http = node.http_port,
            store = node.store_dir.to_str().expect("temp dir path is UTF-8"),
            cluster = node.cluster_port,
            routes = routes.join("\n    "),
        );
        std::fs::write(&node.config_path, config).unwrap();
    }

    /// Starts node `i` (not running) in its own process group, appending to its log.
    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {} is already running", node.name);
        let mut log = OpenOptions::new().create(true).append(true).open(&node.log_path).unwrap();
        let _ = writeln!(log, "=== tests/common/nats.rs: starting {} ===", node.name);
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config_path)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0) // its own group: kill/stop reach it alone
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}; {INSTALL_HINT}", self.bin.display()));
        node.child = Some(child);
    }

    /// Number of nodes (running or not).
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// `nats://127.0.0.1:<client port>` of every node, in order.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.url(i)).collect()
    }

    /// `nats://127.0.0.1:<client port>` of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://{LOOPBACK}:{}", self.nodes[i].client_port)
    }

    /// `http://127.0.0.1:<monitoring port>` of node `i`, without a trailing slash.
    pub fn monitor_url(&self, i: usize) -> String {
        format!("http://{LOOPBACK}:{}", self.nodes[i].http_port)
    }

    /// The `server_name` of node `i`: `n{i+1}`.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The index of the node named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Node `i`'s `store_dir` (nats-server writes into its `jetstream` subdirectory).
    pub fn store_dir(&self, i: usize) -> &Path {
        &self.nodes[i].store_dir
    }

    /// Node `i`'s generated config file.
    pub fn config_path(&self, i: usize) -> &Path {
        &self.nodes[i].config_path
    }

    /// The temp dir with the configs, store dirs and logs (removed on drop unless panicking).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether node `i`'s process is running.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i].child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Node `i`'s log: every start of it so far, each after a `=== ... starting n? ===` line.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log_path).unwrap_or_default()
    }

    pub fn log_path(&self, i: usize) -> &Path {
        &self.nodes[i].log_path
    }

    /// Crashes node `i`: SIGKILL to its process group, as a power cut would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            // SAFETY: a plain syscall on the process group of a child the test started.
            unsafe { libc::killpg(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Stops node `i` cleanly (SIGTERM, SIGKILL after 3 s).
    pub fn stop(&mut self, i: usize) {
        if let Some(child) = self.nodes[i].child.take() {
            stop_group(child);
        }
    }

    /// Starts node `i` again (it must be killed or stopped) with the same ports, config and
    /// store dir, and waits until it rejoined: routed to the other running nodes, JetStream on,
    /// the meta leader known to it and agreed by all, and it a current replica at the leader.
    /// Panics with the logs if that does not happen within 20 s.
    pub fn restart(&mut self, i: usize) {
        assert!(!self.is_running(i), "restart({i}): {} is still running", self.nodes[i].name);
        self.nodes[i].child = None;
        let mut tries = 0;
        loop {
            self.spawn(i);
            match self.try_wait_ready(READY_TIMEOUT) {
                Ok(()) => return,
                // The old process's port can linger for a moment after a kill: try again.
                Err(e) if e.contains("exited") && self.log(i).contains("address already in use") && tries < 5 => {
                    tries += 1;
                    self.nodes[i].child = None;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("{} did not rejoin the NATS cluster: {e}\n{}", self.nodes[i].name, self.logs_report()),
            }
        }
    }

    /// Waits until the running nodes form a ready cluster (see the module docs) and returns how
    /// long that took; panics with the logs after `timeout`. After a [`Self::kill`] of the meta
    /// leader this measures the election of a new one.
    pub fn wait_ready(&mut self, timeout: Duration) -> Duration {
        let t0 = Instant::now();
        if let Err(e) = self.try_wait_ready(timeout) {
            panic!("the NATS cluster was not ready within {timeout:?}: {e}\n{}", self.logs_report());
        }
        t0.elapsed()
    }

    fn try_wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            for i in 0..self.nodes.len() {
                if let Some(child) = self.nodes[i].child.as_mut() {
                    if let Ok(Some(st)) = child.try_wait() {
                        self.nodes[i].child = None;
                        return Err(format!("{} exited ({st})", self.nodes[i].name));
                    }
                }
            }
            let why = match self.readiness() {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if t0.elapsed() > timeout {
                return Err(format!("not ready after {timeout:?}: {why}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Ok when the running nodes form a ready cluster, else what is missing.
    fn readiness(&mut self) -> Result<(), String> {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.is_running(i)).collect();
        if running.is_empty() {
            return Err("no node is running".into());
        }
        let mut leader: Option<String> = None;
        for &i in &running {
            let name = &self.nodes[i].name;
            match http_get(self.nodes[i].http_port, "/healthz?js-enabled-only=true") {
                Some((200, body)) if body.contains("ok") => {}
                other => return Err(format!("{name} /healthz?js-enabled-only=true: {other:?}")),
            }
            let routes = self.routez(i).and_then(|r| r["num_routes"].as_u64()).unwrap_or(0);
            if routes < running.len() as u64 - 1 {
                return Err(format!("{name} has {routes} routes of {}", running.len() - 1));
            }
            let l = self.meta_leader(i).ok_or_else(|| format!("{name} knows no meta leader"))?;
            match &leader {
                None => leader = Some(l),
                Some(prev) if *prev != l => return Err(format!("{name} says the meta leader is {l}, others {prev}")),
                Some(_) => {}
            }
        }
        let leader = leader.unwrap();
        let li = self.index_of(&leader).ok_or_else(|| format!("unknown meta leader {leader}"))?;
        if !running.contains(&li) {
            return Err(format!("the meta leader {leader} is not running (no new election yet)"));
        }
        let jsz = self.try_jsz(li).ok_or_else(|| format!("{leader} /jsz does not answer"))?;
        for &i in running.iter().filter(|&&i| i != li) {
            let name = &self.nodes[i].name;
            let current = jsz["meta_cluster"]["replicas"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| r["name"] == name.as_str() && r["current"] == true));
            if !current {
                return Err(format!("{name} is not a current replica at the meta leader {leader}"));
            }
        }
        Ok(())
    }

    /// Node `i`'s `/jsz` (JetStream: config, usage, `meta_cluster`), or None when it does not
    /// answer.
    pub fn try_jsz(&self, i: usize) -> Option<Value> {
        self.monitor_json(i, "/jsz")
    }

    /// Node `i`'s `/jsz`; panics when it does not answer.
    pub fn jsz(&self, i: usize) -> Value {
        self.try_jsz(i).unwrap_or_else(|| panic!("{} {}/jsz does not answer", self.nodes[i].name, self.monitor_url(i)))
    }

    /// Node `i`'s `/varz` (server name, ports, cluster), or None.
    pub fn varz(&self, i: usize) -> Option<Value> {
        self.monitor_json(i, "/varz")
    }

    /// Node `i`'s `/routez` (`num_routes`, `routes`), or None.
    pub fn routez(&self, i: usize) -> Option<Value> {
        self.monitor_json(i, "/routez")
    }

    /// Status and body of `GET <monitor_url(i)><path_and_query>`, or None when it does not answer.
    pub fn monitor_get(&self, i: usize, path_and_query: &str) -> Option<(u16, String)> {
        http_get(self.nodes[i].http_port, path_and_query)
    }

    fn monitor_json(&self, i: usize, path: &str) -> Option<Value> {
        match http_get(self.nodes[i].http_port, path) {
            Some((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// The JetStream meta leader's name as node `i` sees it (`/jsz` `meta_cluster.leader`).
    /// After the leader is lost the others keep naming it until they elect a new one.
    pub fn meta_leader(&self, i: usize) -> Option<String> {
        let l = self.try_jsz(i)?["meta_cluster"]["leader"].as_str()?.to_string();
        (!l.is_empty()).then_some(l)
    }

    /// The index of the meta leader the running nodes agree on (call after [`Self::wait_ready`]).
    pub fn leader_index(&mut self) -> Option<usize> {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.is_running(i)).collect();
        let mut names = running.into_iter().map(|i| self.meta_leader(i));
        let first = names.next()??;
        if names.all(|n| n.as_deref() == Some(first.as_str())) {
            self.index_of(&first)
        } else {
            None
        }
    }

    /// The tail of every node's log, for panic messages.
    pub fn logs_report(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!("--- {} log ({}):\n{}\n", n.name, n.log_path.display(), file_tail(&n.log_path, 2500)));
        }
        out
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
        if std::thread::panicking() {
            eprintln!("NATS cluster files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `GET path` over HTTP/1.0 on 127.0.0.1:`port`: status and body, or None when nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = format!("{LOOPBACK}:{port}").parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).ok()?;
    s.set_read_timeout(Some(HTTP_TIMEOUT)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {LOOPBACK}:{port}\r\n\r\n").as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// One message a [`NatsConn`] received (`MSG <subject> <sid> [reply-to] <#bytes>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsMsg {
    pub subject: String,
    pub sid: String,
    pub reply_to: Option<String>,
    pub payload: Vec<u8>,
}

/// A minimal client of the NATS client protocol over a plain TCP stream: reads the server's
/// INFO, sends CONNECT (not verbose, not pedantic, protocol 1), then SUB/UNSUB/PUB and PING;
/// answers the server's PINGs, skips its async INFOs and returns `-ERR` as an error.
pub struct NatsConn {
    stream: TcpStream,
    buf: Vec<u8>,
    pending: VecDeque<NatsMsg>,
    /// The server's first INFO (`server_name`, `version`, `jetstream`, `connect_urls`, ...).
    pub info: Value,
}

/// What [`NatsConn::read_op`] read.
enum Op {
    Msg(NatsMsg),
    Pong,
}

impl NatsConn {
    /// Connects to `url` (`nats://host:port` or `host:port`) and completes the handshake: INFO,
    /// CONNECT, then a PING answered by PONG, all within `timeout`.
    pub fn connect(url: &str, timeout: Duration) -> Result<NatsConn, String> {
        let hostport = url.strip_prefix("nats://").unwrap_or(url).trim_end_matches('/');
        let addr: SocketAddr = hostport.parse().map_err(|e| format!("{url}: {e}"))?;
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connecting to {url}: {e}"))?;
        stream.set_nodelay(true).ok();
        let mut c = NatsConn { stream, buf: Vec::new(), pending: VecDeque::new(), info: Value::Null };
        let deadline = Instant::now() + timeout;
        let line = c.read_line(deadline)?;
        let info = line.strip_prefix("INFO ").ok_or_else(|| format!("{url}: expected INFO, got {line:?}"))?;
        c.info = serde_json::from_str(info).map_err(|e| format!("{url}: INFO {info:?}: {e}"))?;
        c.send(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"name\":\"presence-hub-test\"}\r\n")?;
        c.flush(deadline.saturating_duration_since(Instant::now()))?;
        Ok(c)
    }

    /// `SUB <subject> <sid>`.
    pub fn subscribe(&mut self, subject: &str, sid: &str) -> Result<(), String> {
        self.send(format!("SUB {subject} {sid}\r\n").as_bytes())
    }

    /// `UNSUB <sid>`.
    pub fn unsubscribe(&mut self, sid: &str) -> Result<(), String> {
        self.send(format!("UNSUB {sid}\r\n").as_bytes())
    }

    /// `PUB <subject> <#bytes>` and the payload (any bytes, CR LF included).
    pub fn publish(&mut self, subject: &str, payload: &[u8]) -> Result<(), String> {
        let mut frame = format!("PUB {subject} {}\r\n", payload.len()).into_bytes();
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\n");
        self.send(&frame)
    }

    /// Sends PING and waits for the PONG: the server has then processed everything sent before
    /// (a SUB is registered locally; routes learn of it a little later). Messages that arrive
    /// meanwhile are kept for [`Self::next_msg`].
    pub fn flush(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        self.send(b"PING\r\n")?;
        loop {
            match self.read_op(deadline)? {
                Op::Pong => return Ok(()),
                Op::Msg(m) => self.pending.push_back(m),
            }
        }
    }

    /// The next message for any subscription, waiting up to `timeout`.
    pub fn next_msg(&mut self, timeout: Duration) -> Result<NatsMsg, String> {
        if let Some(m) = self.pending.pop_front() {
            return Ok(m);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Op::Msg(m) = self.read_op(deadline)? {
                return Ok(m);
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| format!("writing to the NATS server: {e}"))
    }

    /// Reads protocol lines until a MSG or a PONG: answers PING, skips INFO and +OK, fails on
    /// -ERR and at `deadline`.
    fn read_op(&mut self, deadline: Instant) -> Result<Op, String> {
        loop {
            let line = self.read_line(deadline)?;
            let mut words = line.split_whitespace();
            match words.next().unwrap_or("").to_ascii_uppercase().as_str() {
                "MSG" => {
                    let args: Vec<&str> = words.collect();
                    let (subject, sid, reply_to, len) = match args.as_slice() {
                        [s, i, n] => (s, i, None, n),
                        [s, i, r, n] => (s, i, Some(r.to_string()), n),
                        _ => return Err(format!("malformed {line:?}")),
                    };
                    let len: usize = len.parse().map_err(|_| format!("malformed {line:?}"))?;
                    let (subject, sid) = (subject.to_string(), sid.to_string());
                    let mut payload = self.read_exact(len + 2, deadline)?;
                    if !payload.ends_with(b"\r\n") {
                        return Err(format!("payload of {line:?} not followed by CR LF"));
                    }
                    payload.truncate(len);
                    return Ok(Op::Msg(NatsMsg { subject, sid, reply_to, payload }));
                }
                "PONG" => return Ok(Op::Pong),
                "PING" => self.send(b"PONG\r\n")?,
                "INFO" | "+OK" => {}
                "-ERR" => return Err(format!("the NATS server said {line}")),
                _ => return Err(format!("unexpected from the NATS server: {line:?}")),
            }
        }
    }

    /// One CR LF terminated line (without it).
    fn read_line(&mut self, deadline: Instant) -> Result<String, String> {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..p + 2).take(p).collect();
                return String::from_utf8(line).map_err(|e| format!("protocol line not UTF-8: {e}"));
            }
            self.fill(deadline)?;
        }
    }

    fn read_exact(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            self.fill(deadline)?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out waiting for the NATS server".into());
        }
        self.stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err("the NATS server closed the connection".into()),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Err("timed out waiting for the NATS server".into())
            }
            Err(e) => Err(format!("reading from the NATS server: {e}")),
        }
    }
}

/// Connects to `url`, subscribes to `subject`, publishes `payload` on it and returns the payload
/// of the message that comes back, all within 5 s.
pub fn nats_roundtrip(url: &str, subject: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    let timeout = Duration::from_secs(5);
    let deadline = Instant::now() + timeout;
    let mut c = NatsConn::connect(url, timeout)?;
    c.subscribe(subject, "1")?;
    c.publish(subject, payload)?;
    c.flush(deadline.saturating_duration_since(Instant::now()))?;
    let m = c.next_msg(deadline.saturating_duration_since(Instant::now()))?;
    if m.subject != subject || m.sid != "1" {
        return Err(format!("expected a MSG on {subject} sid 1, got {m:?}"));
    }
    Ok(m.payload)
}
