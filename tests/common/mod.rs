//! Test support: start the real server on 127.0.0.1:0 in its own actix System thread.

#![allow(dead_code)]

pub mod cluster;
pub mod kamailio;
pub mod nats;
pub mod oidc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use presence_hub::tokens::{hash_token, Role};
use presence_hub::config::{Config, TokenConfig};
use presence_hub::{run, RunOptions};

pub const VIEWER: &str = "test-viewer-token-0123456789";
pub const OPERATOR: &str = "test-operator-token-0123456789";
pub const ADMIN: &str = "test-admin-token-0123456789";

pub struct Server {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The listener speaks HTTPS (`[http] tls_cert_file`).
    pub tls: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", if self.tls { "https" } else { "http" }, self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("{}://{}{}", if self.tls { "wss" } else { "ws" }, self.addr, path)
    }

    /// Graceful stop (flushes the snapshot).
    pub fn stop(mut self) -> PathBuf {
        self.shutdown();
        self.data_dir.clone()
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("presence-test-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A config with the three test tokens and the demo directory imported from fixtures.
pub fn test_config(data_dir: PathBuf) -> Config {
    let mut c = Config { data_dir, ..Config::default() };
    c.directory.import = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/directory/demo.csv"));
    c.tokens = vec![
        TokenConfig { name: "viewer".into(), role: Role::Viewer, sha256: hash_token(VIEWER) },
        TokenConfig { name: "operator".into(), role: Role::Operator, sha256: hash_token(OPERATOR) },
        TokenConfig { name: "admin".into(), role: Role::Admin, sha256: hash_token(ADMIN) },
    ];
    c.stream.heartbeat_secs = 1;
    c.snapshot.interval_ms = 100;
    c.hub.shards = Some(2);
    c
}

/// Starts the real server with `config` and waits until it answers /readyz.
pub fn start(config: Config) -> Server {
    start_on(config, std::net::TcpListener::bind("127.0.0.1:0").unwrap())
}

/// As [`start`], on a listener the test bound first (to know the hub's URL before it starts,
/// e.g. to register its redirect URI at an OpenID provider).
pub fn start_on(config: Config, listener: std::net::TcpListener) -> Server {
    let addr = listener.local_addr().unwrap();
    let data_dir = config.data_dir.clone();
    let tls = config.http.tls_cert_file.is_some();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let sys = actix_rt::System::new();
        let res = sys.block_on(run(config, RunOptions::default(), listener, async move {
            let _ = rx.await;
        }));
        if let Err(e) = res {
            eprintln!("server failed: {e}");
        }
    });
    let s = Server { addr, data_dir, tls, stop: Some(tx), thread: Some(thread) };
    let t0 = std::time::Instant::now();
    if tls {
        // On a thread of its own: the caller may be inside a tokio runtime.
        let url = s.url("/readyz");
        let ready = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let c = tls_client();
            while !rt.block_on(async { c.get(&url).send().await.is_ok_and(|r| r.status() == 200) }) {
                if t0.elapsed() > Duration::from_secs(30) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            true
        });
        assert!(ready.join().unwrap(), "server did not become ready over HTTPS");
        return s;
    }
    loop {
        if let Ok(mut c) = std::net::TcpStream::connect(addr) {
            use std::io::{Read, Write};
            let _ = c.write_all(b"GET /readyz HTTP/1.0\r\n\r\n");
            let mut buf = String::new();
            let _ = c.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200") {
                return s;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "server did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The test CA that signed `fixtures/tls/hub-cert.pem` (PEM).
pub fn test_ca_pem() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tls/ca-cert.pem")).unwrap()
}

/// A client that trusts only the test CA.
pub fn tls_client() -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&test_ca_pem()).unwrap();
    reqwest::Client::builder().timeout(Duration::from_secs(10)).tls_certs_only([ca]).build().unwrap()
}

/// Sets `[http] tls_cert_file` / `tls_key_file` to the test certificate.
pub fn with_test_tls(mut c: Config) -> Config {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    c.http.tls_cert_file = Some(dir.join("hub-cert.pem"));
    c.http.tls_key_file = Some(dir.join("hub-key.pem"));
    c
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// A WebSocket client of `/api/stream`.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Polls `f` every 50 ms until it is true; fails the test after `timeout`, naming `what`.
pub async fn wait_for(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f().await {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `/api/providers` entry named `name` (admin token).
pub async fn provider_named(s: &Server, name: &str) -> serde_json::Value {
    let v: serde_json::Value =
        client().get(s.url("/api/providers")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    v.as_array().unwrap().iter().find(|p| p["name"] == name).cloned().unwrap_or_else(|| panic!("no provider {name}: {v}"))
}

/// `GET /api/users/{id}` with `token`.
pub async fn user_detail(s: &Server, id: &str, token: &str) -> serde_json::Value {
    client().get(s.url(&format!("/api/users/{id}"))).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

/// A person's merged presence (viewer token).
pub async fn presence_of(s: &Server, id: &str) -> serde_json::Value {
    user_detail(s, id, VIEWER).await["presence"].clone()
}

/// A WebSocket subscribed to `ids` (viewer token), once their snapshot is in.
pub async fn watch(s: &Server, ids: &[&str]) -> Ws {
    use futures_util::{SinkExt, StreamExt};
    let url = format!("{}?access_token={VIEWER}", s.ws_url("/api/stream"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let sub = serde_json::json!({ "op": "subscribe", "users": ids }).to_string();
    ws.send(tokio_tungstenite::tungstenite::Message::text(sub)).await.unwrap();
    loop {
        let msg = ws.next().await.unwrap().unwrap();
        let Ok(f) = serde_json::from_str::<serde_json::Value>(msg.to_text().unwrap_or("")) else { continue };
        if f["type"] == "snapshot" && f["last"] == true {
            return ws;
        }
    }
}

/// The next `delta` frame (whole), failing the test after `secs` seconds.
pub async fn delta_frame(ws: &mut Ws, secs: u64) -> serde_json::Value {
    use futures_util::StreamExt;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(secs), ws.next())
            .await
            .unwrap_or_else(|_| panic!("a delta within {secs} s"))
            .unwrap()
            .unwrap();
        let Ok(f) = serde_json::from_str::<serde_json::Value>(msg.to_text().unwrap_or("")) else { continue };
        if f["type"] == "delta" {
            return f;
        }
    }
}

/// The non-empty values of one column of the demo directory (`fixtures/directory/demo.csv`,
/// which has no quoted cells).
pub fn demo_column(name: &str) -> Vec<String> {
    let csv = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/directory/demo.csv")).unwrap();
    let mut lines = csv.lines();
    let col = lines.next().unwrap().split(',').position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
    lines.filter_map(|l| l.split(',').nth(col)).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string).collect()
}

/// A shipped operator example (`fixtures/operators/{name}.toml`) as the adapter reads it.
pub fn operator_example(name: &str) -> presence_providers::operator::OperatorConfig {
    let path = format!("{}/fixtures/operators/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    match presence_hub::config::providers_from_toml(&text, &path).unwrap().into_iter().next() {
        Some(presence_providers::ProviderConfig::Operator(c)) => *c,
        _ => panic!("{path}: not an operator provider"),
    }
}

/// Every presence a WebSocket client watching some people receives (snapshot and deltas), with
/// the time it arrived: the console's view, recorded in the background.
pub struct StreamLog {
    frames: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, serde_json::Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StreamLog {
    /// Watches `ids` on `/api/stream` (viewer token) from now on.
    pub async fn watch(s: &Server, ids: &[&str]) -> StreamLog {
        use futures_util::{SinkExt, StreamExt};
        let url = format!("{}?access_token={VIEWER}", s.ws_url("/api/stream"));
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let sub = serde_json::json!({ "op": "subscribe", "users": ids }).to_string();
        ws.send(tokio_tungstenite::tungstenite::Message::text(sub)).await.unwrap();
        let frames = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let f = frames.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(msg.to_text().unwrap_or("")) else { continue };
                let ps = match v["type"].as_str() {
                    Some("delta") => vec![v["presence"].clone()],
                    Some("snapshot") => v["presence"].as_array().cloned().unwrap_or_default(),
                    _ => continue,
                };
                let now = std::time::Instant::now();
                f.lock().unwrap().extend(ps.into_iter().map(|p| (now, p)));
            }
        });
        StreamLog { frames, task }
    }

    /// The first presence of `id` received at or after `since` for which `f` holds; fails the
    /// test after `timeout`, naming `what` and showing what was received.
    pub async fn first_after(&self, since: std::time::Instant, id: &str, what: &str, timeout: Duration, f: impl Fn(&serde_json::Value) -> bool) -> (std::time::Instant, serde_json::Value) {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(hit) = self.frames.lock().unwrap().iter().find(|(t, p)| *t >= since && p["id"] == id && f(p)).cloned() {
                return hit;
            }
            if t0.elapsed() > timeout {
                let seen: Vec<String> = self.all(id).iter().map(|p| format!("{}/{}/{}", p["availability"], p["activity"], p["freshness"])).collect();
                panic!("timed out waiting for {what} on the stream; {id} was: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every presence of `id` received so far.
    pub fn all(&self, id: &str) -> Vec<serde_json::Value> {
        self.frames.lock().unwrap().iter().filter(|(_, p)| p["id"] == id).map(|(_, p)| p.clone()).collect()
    }
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}
