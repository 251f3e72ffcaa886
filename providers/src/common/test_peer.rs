//! A scripted HTTP peer on loopback for the providers' runtime tests: every request is
//! recorded and answered by a closure, so a runtime can be driven through outages, hangs,
//! oversized answers and event streams without a simulator or a hub. Test-only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the peer received it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`…
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// How the peer answers one request.
pub enum Reply {
    /// A status and a body.
    Status(u16, String),
    /// Never answers (the connection stays open).
    Hang,
    /// A `200` whose chunked body never ends (`chunk` repeated); records how much was sent
    /// before the client hung up.
    Endless(Vec<u8>),
    /// A `200` whose chunked body is what the test sends on the channel, a chunk per message,
    /// for as long as it likes: the body ends cleanly when every sender is dropped (an event
    /// stream that the test feeds and closes).
    Stream(tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>),
}

type Script = dyn Fn(&Request) -> Reply + Send + Sync;

/// The peer.
pub struct TestPeer {
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    script: Arc<Mutex<Arc<Script>>>,
    /// Bytes of endless bodies written before the client went away.
    pub endless_sent: Arc<Mutex<Vec<usize>>>,
}

impl TestPeer {
    /// Starts a peer answering with `script`.
    pub async fn start(script: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> TestPeer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let peer = TestPeer {
            url,
            requests: Default::default(),
            script: Arc::new(Mutex::new(Arc::new(script))),
            endless_sent: Default::default(),
        };
        let (requests, script, endless) = (peer.requests.clone(), peer.script.clone(), peer.endless_sent.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (requests, script, endless) = (requests.clone(), script.clone(), endless.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, requests, script, endless).await;
                });
            }
        });
        peer
    }

    /// Answers from now on with `script`.
    pub fn set(&self, script: impl Fn(&Request) -> Reply + Send + Sync + 'static) {
        *self.script.lock().unwrap() = Arc::new(script);
    }

    /// The value of header `name` in a request.
    pub fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
        r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every request received so far whose path starts with `prefix`, in order.
    pub fn requests(&self, method: &str, prefix: &str) -> Vec<Request> {
        self.requests.lock().unwrap().iter().filter(|r| r.method == method && r.path.starts_with(prefix)).cloned().collect()
    }

    /// Requests whose path starts with `prefix`.
    pub fn count(&self, method: &str, prefix: &str) -> usize {
        self.requests.lock().unwrap().iter().filter(|r| r.method == method && r.path.starts_with(prefix)).count()
    }
}

async fn serve(mut sock: TcpStream, requests: Arc<Mutex<Vec<Request>>>, script: Arc<Mutex<Arc<Script>>>, endless: Arc<Mutex<Vec<usize>>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        // Head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let (method, path) = (first.next().unwrap_or("").to_string(), first.next().unwrap_or("").to_string());
        let headers: Vec<(String, String)> = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
        let len = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse::<usize>().ok()).unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let req = Request { method, path, headers, body };
        requests.lock().unwrap().push(req.clone());
        let f = script.lock().unwrap().clone();
        match f(&req) {
            Reply::Status(status, body) => {
                let out = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                sock.write_all(out.as_bytes()).await?;
            }
            Reply::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
            Reply::Endless(chunk) => {
                sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n").await?;
                let frame = [format!("{:x}\r\n", chunk.len()).into_bytes(), chunk.clone(), b"\r\n".to_vec()].concat();
                let mut sent = 0usize;
                while sock.write_all(&frame).await.is_ok() {
                    sent += chunk.len();
                    if sent > 1 << 30 {
                        break;
                    }
                }
                endless.lock().unwrap().push(sent);
                return Ok(());
            }
            Reply::Stream(mut rx) => {
                sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n").await?;
                while let Some(data) = rx.recv().await {
                    if !data.is_empty() {
                        sock.write_all(&[format!("{:x}\r\n", data.len()).into_bytes(), data, b"\r\n".to_vec()].concat()).await?;
                    }
                }
                sock.write_all(b"0\r\n\r\n").await?;
            }
        }
    }
}

/// Runs `f` on a new `LocalSet`, so it can `spawn_local` a provider's task (which is not
/// `Send`): the body of every provider runtime test.
pub async fn local<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::LocalSet::new().run_until(f).await
}
