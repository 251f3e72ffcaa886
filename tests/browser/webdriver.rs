//! A minimal W3C WebDriver client for the browser tests: starts Debian's
//! chromedriver + headless chromium on loopback, and offers just the commands the
//! tests use (navigation, script execution, element lookup and interaction, key
//! input through the Actions API, polling helpers, screenshots).
//!
//! Everything stays on 127.0.0.1: chromedriver listens on a free loopback port,
//! the HTTP client ignores proxy settings, and chromium is started with the flags
//! that stop it from phoning home. Each session gets a fresh, empty profile dir.
//! Dropping the [`Driver`] kills chromedriver's whole process group (so chromium
//! and its helpers die too) and removes the temporary profile dirs.
//!
//! Needs `apt-get install chromium chromium-driver`.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Key codes for [`Session::keys`] / [`Element::send_keys`] (WebDriver spec, "Keyboard actions").
pub mod keys {
    pub const NULL: &str = "\u{E000}";
    pub const BACKSPACE: &str = "\u{E003}";
    pub const TAB: &str = "\u{E004}";
    pub const ENTER: &str = "\u{E007}";
    pub const SHIFT: &str = "\u{E008}";
    pub const CONTROL: &str = "\u{E009}";
    pub const ALT: &str = "\u{E00A}";
    pub const ESCAPE: &str = "\u{E00C}";
    pub const SPACE: &str = "\u{E00D}";
    pub const PAGE_UP: &str = "\u{E00E}";
    pub const PAGE_DOWN: &str = "\u{E00F}";
    pub const END: &str = "\u{E010}";
    pub const HOME: &str = "\u{E011}";
    pub const ARROW_LEFT: &str = "\u{E012}";
    pub const ARROW_UP: &str = "\u{E013}";
    pub const ARROW_RIGHT: &str = "\u{E014}";
    pub const ARROW_DOWN: &str = "\u{E015}";
    pub const DELETE: &str = "\u{E017}";
    pub const F1: &str = "\u{E031}";
    pub const F2: &str = "\u{E032}";
    pub const F3: &str = "\u{E033}";
    pub const F4: &str = "\u{E034}";
    pub const F5: &str = "\u{E035}";
    pub const F6: &str = "\u{E036}";
    pub const F7: &str = "\u{E037}";
    pub const F8: &str = "\u{E038}";
    pub const F9: &str = "\u{E039}";
    pub const F10: &str = "\u{E03A}";
    pub const F11: &str = "\u{E03B}";
    pub const F12: &str = "\u{E03C}";
    pub const META: &str = "\u{E03D}";
}

/// The W3C web element reference key.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const START_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
const INSTALL_HINT: &str =
    "browser tests need Debian's chromium and chromium-driver: apt-get install chromium chromium-driver";

/// Flags that keep headless chromium quiet, offline and sandbox-free (for containers).
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
];

/// A running chromedriver (in its own process group) plus the chromium binary to drive.
pub struct Driver {
    child: Child,
    port: u16,
    client: reqwest::Client,
    chromium: PathBuf,
    /// Per-driver temp dir holding `chromedriver.log` and the sessions' profile dirs.
    tmp: PathBuf,
    sessions: AtomicUsize,
}

/// Browser settings for [`Driver::session`].
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// BCP 47 language, e.g. "en-US" or "sv-SE" (`--lang` and `intl.accept_languages`).
    pub lang: String,
    pub width: u32,
    pub height: u32,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            lang: "en-US".into(),
            width: 1280,
            height: 800,
        }
    }
}

/// Looks for `name` at `preferred`, then on `PATH`.
fn find_binary(preferred: &str, name: &str) -> Option<PathBuf> {
    let p = Path::new(preferred);
    if p.is_file() {
        return Some(p.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Last `n` bytes (roughly) of a log file, for error messages.
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(n);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

impl Driver {
    /// Finds chromedriver and chromium, starts chromedriver on a free loopback port
    /// and waits (up to 20 s) until `/status` reports ready.
    pub async fn start() -> Result<Driver, String> {
        let chromedriver = find_binary("/usr/bin/chromedriver", "chromedriver")
            .ok_or_else(|| format!("chromedriver not found; {INSTALL_HINT}"))?;
        let chromium = find_binary("/usr/bin/chromium", "chromium")
            .ok_or_else(|| format!("chromium not found; {INSTALL_HINT}"))?;

        static DRIVERS: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = std::env::temp_dir().join(format!(
            "webdriver-{}-{}-{nanos}",
            std::process::id(),
            DRIVERS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;

        // Pick a free port; the tiny race until chromedriver binds it is acceptable here.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let log = tmp.join("chromedriver.log");
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0) // own group, so Drop can kill chromium along with it
            .spawn()
            .map_err(|e| format!("starting {}: {e}", chromedriver.display()))?;

        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("building HTTP client: {e}"))?;
        let mut driver = Driver {
            child,
            port,
            client,
            chromium,
            tmp,
            sessions: AtomicUsize::new(0),
        };

        let deadline = Instant::now() + START_TIMEOUT;
        let status = format!("{}/status", driver.base());
        loop {
            if let Ok(Some(exit)) = driver.child.try_wait() {
                return Err(format!(
                    "chromedriver exited early ({exit}); log: {}",
                    log_tail(&log, 2000)
                ));
            }
            let ready = driver
                .client
                .get(&status)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(resp) = ready {
                if let Ok(v) = resp.json::<Value>().await {
                    if v["value"]["ready"] == json!(true) {
                        return Ok(driver);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "chromedriver on port {port} not ready after {START_TIMEOUT:?}; log: {}",
                    log_tail(&log, 2000)
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts a new headless chromium session with a fresh profile.
    pub async fn session(&self, opts: SessionOptions) -> Result<Session, String> {
        let profile = self.tmp.join(format!(
            "profile-{}",
            self.sessions.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&profile)
            .map_err(|e| format!("creating {}: {e}", profile.display()))?;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!("--window-size={},{}", opts.width, opts.height));
        args.push(format!("--lang={}", opts.lang));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": args,
                // Downloads go, without asking, to the profile's own directory
                // (`Session::downloads`), never to the user's.
                "prefs": {
                    "intl.accept_languages": opts.lang,
                    "download.default_directory": profile.join("downloads"),
                    "download.prompt_for_download": false,
                },
            },
        }}});
        let base = self.base();
        let v = request(
            &self.client,
            reqwest::Method::POST,
            &format!("{base}/session"),
            Some(caps),
        )
        .await
        .map_err(|e| {
            format!(
                "{e}; chromedriver log: {}",
                log_tail(&self.tmp.join("chromedriver.log"), 1500)
            )
        })?;
        let id = v["sessionId"]
            .as_str()
            .ok_or_else(|| format!("new session: no sessionId in {v}"))?;
        Ok(Session(Arc::new(SessionInner {
            client: self.client.clone(),
            url: format!("{base}/session/{id}"),
            profile,
        })))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: plain syscall; the pid is our child's process-group id.
        unsafe { libc::killpg(self.child.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// Sends one WebDriver command and returns its `value`, or an error naming the
/// WebDriver error code and the start of its message.
async fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let what = format!("{method} {url}");
    let mut req = client.request(method, url);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("{what}: {}", error_chain(&e)))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("{what}: reading response: {e}"))?;
    let mut v: Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{what}: HTTP {status}, bad JSON ({e}): {}",
            truncate(&text, 300)
        )
    })?;
    let value = v["value"].take();
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        let message = value["message"].as_str().unwrap_or_default();
        // chromedriver's messages usually repeat the error code; don't say it twice.
        let message = message
            .strip_prefix(error)
            .map_or(message, |m| m.trim_start_matches([':', ' ']));
        return Err(format!("{what}: {error}: {}", truncate(message, 300)));
    }
    if !status.is_success() {
        return Err(format!("{what}: HTTP {status}: {}", truncate(&text, 300)));
    }
    Ok(value)
}

/// `e` plus its sources ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s = format!("{s}: {c}");
        cur = c.source();
    }
    s
}

fn truncate(s: &str, max_chars: usize) -> &str {
    s.char_indices().nth(max_chars).map_or(s, |(i, _)| &s[..i])
}

struct SessionInner {
    client: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    url: String,
    profile: PathBuf,
}

/// A browser session; cheap to clone.
#[derive(Clone)]
pub struct Session(Arc<SessionInner>);

/// A reference to a DOM element in a [`Session`].
#[derive(Clone)]
pub struct Element {
    session: Session,
    id: String,
}

impl Session {
    async fn cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        request(
            &self.0.client,
            method,
            &format!("{}{path}", self.0.url),
            body,
        )
        .await
    }
    async fn get(&self, path: &str) -> Result<Value, String> {
        self.cmd(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.cmd(reqwest::Method::POST, path, Some(body)).await
    }

    fn element(&self, v: &Value) -> Result<Element, String> {
        let id = v[ELEMENT_KEY]
            .as_str()
            .ok_or_else(|| format!("not an element reference: {v}"))?;
        Ok(Element {
            session: self.clone(),
            id: id.to_string(),
        })
    }

    /// Navigates and waits for the page load.
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.post("/url", json!({ "url": url })).await.map(drop)
    }

    pub async fn url(&self) -> Result<String, String> {
        Ok(self
            .get("/url")
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Runs `script` as a function body (`arguments[i]` are `args`); returns its result.
    /// Pass elements with [`Element::to_arg`].
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value, String> {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Like [`Session::execute`], but the result is what the script passes to the
    /// callback `arguments[arguments.length - 1]`.
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> Result<Value, String> {
        self.post("/execute/async", json!({ "script": script, "args": args }))
            .await
    }

    /// First element matching `css`; an error if there is none.
    pub async fn find(&self, css: &str) -> Result<Element, String> {
        let v = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        self.element(&v.map_err(|e| format!("find `{css}`: {e}"))?)
    }

    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>, String> {
        let v = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await;
        let v = v.map_err(|e| format!("find_all `{css}`: {e}"))?;
        v.as_array()
            .into_iter()
            .flatten()
            .map(|e| self.element(e))
            .collect()
    }

    /// `Ok(None)` when nothing matches `css`.
    pub async fn try_find(&self, css: &str) -> Result<Option<Element>, String> {
        match self.find(css).await {
            Ok(e) => Ok(Some(e)),
            Err(e) if e.contains("no such element") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Polls every 50 ms until an element matching `css` exists and is displayed.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.find(css).await {
                Ok(el) => match el.displayed().await {
                    Ok(true) => return Ok(el),
                    Ok(false) => "present but not displayed".to_string(),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(format!("timed out after {timeout:?} waiting for `{css}` to be displayed (last: {last})"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls the JS expression `js_expr` every 50 ms until it is truthy. On timeout
    /// the error names `what` and includes the start of the page text.
    pub async fn wait_until(
        &self,
        js_expr: &str,
        timeout: Duration,
        what: &str,
    ) -> Result<(), String> {
        let script = format!("return !!({js_expr});");
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.execute(&script, vec![]).await {
                Ok(Value::Bool(true)) => return Ok(()),
                Ok(_) => "false".to_string(),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                let body = self
                    .execute(
                        "return document.body ? document.body.innerText : '<no body>';",
                        vec![],
                    )
                    .await
                    .map(|v| truncate(v.as_str().unwrap_or_default(), 2000).to_string())
                    .unwrap_or_else(|e| format!("<unavailable: {e}>"));
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what} (`{js_expr}` was {last}); page text:\n{body}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Types `keys` into whatever has focus (even `<body>`) via the Actions API.
    /// SHIFT/CONTROL/ALT/META stay pressed until pressed again, until [`keys::NULL`],
    /// or until the end of `keys` — like element send-keys.
    pub async fn keys(&self, keys: &str) -> Result<(), String> {
        const MODIFIERS: [char; 4] = ['\u{E008}', '\u{E009}', '\u{E00A}', '\u{E03D}'];
        let mut actions = Vec::new();
        let mut held: Vec<char> = Vec::new();
        let up = |c: char| json!({"type": "keyUp", "value": c.to_string()});
        let down = |c: char| json!({"type": "keyDown", "value": c.to_string()});
        for c in keys.chars() {
            if MODIFIERS.contains(&c) {
                if let Some(i) = held.iter().position(|&h| h == c) {
                    held.remove(i);
                    actions.push(up(c));
                } else {
                    held.push(c);
                    actions.push(down(c));
                }
            } else if c == '\u{E000}' {
                actions.extend(held.drain(..).rev().map(up));
            } else {
                actions.push(down(c));
                actions.push(up(c));
            }
        }
        actions.extend(held.drain(..).rev().map(up));
        let body = json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]});
        self.post("/actions", body).await.map(drop)
    }

    /// PNG of the viewport.
    pub async fn screenshot(&self) -> Result<Vec<u8>, String> {
        decode_png(self.get("/screenshot").await?)
    }

    pub async fn set_window_size(&self, w: u32, h: u32) -> Result<(), String> {
        self.post("/window/rect", json!({"width": w, "height": h}))
            .await
            .map(drop)
    }

    /// Where this session's downloads land.
    pub fn downloads(&self) -> PathBuf {
        self.0.profile.join("downloads")
    }

    /// Ends the session (chromium quits) and removes its profile dir.
    pub async fn close(self) -> Result<(), String> {
        self.cmd(reqwest::Method::DELETE, "", None).await?;
        let _ = std::fs::remove_dir_all(&self.0.profile);
        Ok(())
    }
}

fn decode_png(v: Value) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let b64 = v.as_str().ok_or_else(|| {
        format!(
            "screenshot: expected base64 string, got {}",
            truncate(&v.to_string(), 100)
        )
    })?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("screenshot: bad base64: {e}"))
}

impl Element {
    fn path(&self, cmd: &str) -> String {
        format!("/element/{}/{cmd}", self.id)
    }

    /// The JSON form of this element, for [`Session::execute`] arguments.
    pub fn to_arg(&self) -> Value {
        json!({ (ELEMENT_KEY): self.id })
    }

    pub async fn click(&self) -> Result<(), String> {
        self.session
            .post(&self.path("click"), json!({}))
            .await
            .map(drop)
    }

    /// Types `text` into this element (it gets focus first); may contain [`keys`].
    pub async fn send_keys(&self, text: &str) -> Result<(), String> {
        self.session
            .post(&self.path("value"), json!({ "text": text }))
            .await
            .map(drop)
    }

    pub async fn clear(&self) -> Result<(), String> {
        self.session
            .post(&self.path("clear"), json!({}))
            .await
            .map(drop)
    }

    /// Rendered (visible) text.
    pub async fn text(&self) -> Result<String, String> {
        Ok(self
            .session
            .get(&self.path("text"))
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// HTML attribute, `None` if absent.
    pub async fn attr(&self, name: &str) -> Result<Option<String>, String> {
        Ok(self
            .session
            .get(&self.path(&format!("attribute/{name}")))
            .await?
            .as_str()
            .map(str::to_string))
    }

    /// DOM property (e.g. `value`, `checked`).
    pub async fn prop(&self, name: &str) -> Result<Value, String> {
        self.session
            .get(&self.path(&format!("property/{name}")))
            .await
    }

    pub async fn displayed(&self) -> Result<bool, String> {
        Ok(self
            .session
            .get(&self.path("displayed"))
            .await?
            .as_bool()
            .unwrap_or(false))
    }

    /// First descendant matching `css`.
    pub async fn find(&self, css: &str) -> Result<Element, String> {
        let v = self
            .session
            .post(
                &self.path("element"),
                json!({"using": "css selector", "value": css}),
            )
            .await;
        self.session
            .element(&v.map_err(|e| format!("find `{css}` within element: {e}"))?)
    }

    /// PNG of just this element.
    pub async fn screenshot(&self) -> Result<Vec<u8>, String> {
        decode_png(self.session.get(&self.path("screenshot")).await?)
    }
}
