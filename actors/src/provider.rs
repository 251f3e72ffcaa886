//! The provider contract: what every source gets to do its work, and nothing global.
//!
//! A provider receives a [`ProviderContext`] — its name, its feed's health entry, a
//! [`SignalSink`] into the hub, the directory, a shutdown signal, a shared HTTP client and a
//! cursor store — and runs until shutdown. Providers parse with pure functions, `try_send`
//! through the sink (never block on the hub) and mark their feed down when they lose it, so
//! its signals show stale — never Offline.
//!
//! [`ProviderContext::for_test`] gives the same context without a hub: signals and feed
//! changes go to a [`TestHarness`], so a provider's runtime can be unit-tested (with paused
//! tokio time where timers matter).

use std::sync::Arc;

use crate::directory::{Directory, UserIdx};
use crate::feeds::{FeedEntry, Feeds};
use crate::hub::{SignalSink, SinkEvent};
use crate::model::{Policy, Signal};

/// Small persistent key/value state per provider (sync tokens, last sequence numbers).
pub trait Cursors: Send + Sync {
    /// Reads a cursor.
    fn get(&self, provider: &str, key: &str) -> Option<String>;
    /// Writes a cursor.
    fn set(&self, provider: &str, key: &str, value: &str);
}

/// Cursors kept in memory only (tests).
#[derive(Default)]
pub struct MemoryCursors(std::sync::Mutex<std::collections::HashMap<(String, String), String>>);

impl Cursors for MemoryCursors {
    fn get(&self, provider: &str, key: &str) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&(provider.into(), key.into())).cloned()
    }
    fn set(&self, provider: &str, key: &str, value: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert((provider.into(), key.into()), value.into());
    }
}

/// What a test sees of a provider started with [`ProviderContext::for_test`].
pub struct TestHarness {
    /// Every signal and feed change, in order.
    pub events: tokio::sync::mpsc::UnboundedReceiver<SinkEvent>,
    /// Begins the provider's shutdown.
    pub trigger: ShutdownTrigger,
    /// The provider's cursors.
    pub cursors: Arc<MemoryCursors>,
    /// Its webhook handler, once registered.
    pub hooks: Hooks,
    /// Its feed's health and counters.
    pub feed: Arc<FeedEntry>,
    /// The directory the provider sees: tests replace it to check that the provider follows.
    pub directory: Arc<crate::live::LiveDirectory>,
}

impl TestHarness {
    /// The next signal (feed changes before it are skipped), or `None` when the provider has
    /// dropped its context.
    pub async fn next_signal(&mut self) -> Option<(UserIdx, Signal)> {
        loop {
            match self.events.recv().await? {
                SinkEvent::Signal(u, s) => return Some((u, s)),
                SinkEvent::Feed(_) => continue,
            }
        }
    }

    /// The next feed change (signals before it are skipped).
    pub async fn next_feed_change(&mut self) -> Option<bool> {
        loop {
            match self.events.recv().await? {
                SinkEvent::Feed(up) => return Some(up),
                SinkEvent::Signal(..) => continue,
            }
        }
    }

    /// Everything recorded so far, without waiting.
    pub fn drain(&mut self) -> Vec<SinkEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }
}

/// Tells long-running tasks to stop.
#[derive(Clone)]
pub struct Shutdown {
    rx: tokio::sync::watch::Receiver<bool>,
}

/// Triggers a [`Shutdown`].
pub struct ShutdownTrigger {
    tx: tokio::sync::watch::Sender<bool>,
}

impl Shutdown {
    /// A new trigger and its signal.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx })
    }

    /// True once shutdown has begun.
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until shutdown begins.
    pub async fn recv(&mut self) {
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

impl ShutdownTrigger {
    /// Begins shutdown.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

/// Everything a provider needs.
#[derive(Clone)]
pub struct ProviderContext {
    /// Configured name.
    pub name: String,
    /// Its feed's health entry.
    pub feed: Arc<FeedEntry>,
    /// Where its signals go.
    pub sink: SignalSink,
    /// Shutdown signal.
    pub shutdown: Shutdown,
    /// Shared HTTP client.
    pub http: reqwest::Client,
    /// Persistent cursors.
    pub cursors: Arc<dyn Cursors>,
    /// Where the provider registers its webhook handler (served at `/hooks/{name}/…`).
    pub hooks: Hooks,
    /// The hub's own base URL as peers reach it (`[http] public_url`, else the listen
    /// address), e.g. `https://hub.example.com`; webhooks are at `{hub_url}/hooks/{name}/…`.
    pub hub_url: String,
}

impl ProviderContext {
    /// A context for testing a provider without a hub: its signals and feed changes go to the
    /// returned [`TestHarness`], cursors are kept in memory, and the harness triggers shutdown.
    /// `hub_url` is where the provider says its webhooks are (tests that take webhooks point
    /// it at their own listener).
    pub fn for_test(name: &str, directory: Directory, hub_url: &str) -> (ProviderContext, TestHarness) {
        let feeds = Feeds::default();
        let feed = feeds.register(name, "test");
        let live = Arc::new(crate::live::LiveDirectory::new(directory));
        let (sink, events) = SignalSink::for_test(live.clone(), Arc::new(Policy::default()), feed.clone());
        let (trigger, shutdown) = Shutdown::new();
        let cursors = Arc::new(MemoryCursors::default());
        let hooks = Hooks::default();
        let ctx = ProviderContext {
            name: name.to_string(),
            feed: feed.clone(),
            sink,
            shutdown,
            http: reqwest::Client::builder().no_proxy().build().unwrap_or_default(),
            cursors: cursors.clone(),
            hooks: hooks.clone(),
            hub_url: hub_url.to_string(),
        };
        (ctx, TestHarness { events, trigger, cursors, hooks, feed, directory: live })
    }

    /// The URL of this provider's webhook path `tail` (e.g. `notify`).
    pub fn hook_url(&self, tail: &str) -> String {
        format!("{}/hooks/{}/{}", self.hub_url.trim_end_matches('/'), self.name, tail.trim_start_matches('/'))
    }

    /// The current directory version. Directory sync replaces it while the hub runs: a
    /// provider that holds per-person state (subscriptions, polled lists) follows
    /// [`ProviderContext::directory_changes`].
    pub fn directory(&self) -> Arc<Directory> {
        self.sink.directory()
    }

    /// The provider contract's "directory changed" notification: `changed().await` returns
    /// when a new directory version is current. Providers reconcile what they hold with the
    /// newest version (subscribe the newcomers, drop the leavers); versions in between may
    /// be skipped, so never rely on seeing each one.
    pub fn directory_changes(&self) -> tokio::sync::watch::Receiver<Arc<Directory>> {
        self.sink.live_directory().watch()
    }
}

/// A request to a provider's webhook, as the hub's HTTP layer received it (already bounded
/// in size). Providers parse it with pure functions; no HTTP framework types leak in.
#[derive(Debug, Clone)]
pub struct HookRequest {
    /// `GET`, `POST`…
    pub method: String,
    /// The path after `/hooks/{provider}/`.
    pub tail: String,
    /// The raw query string (without `?`).
    pub query: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HookRequest {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A provider's answer to a webhook request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookResponse {
    /// HTTP status.
    pub status: u16,
    /// Content type of `body`.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl HookResponse {
    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<String>) -> HookResponse {
        HookResponse { status, content_type: "text/plain; charset=utf-8", body: body.into().into_bytes() }
    }

    /// A JSON error answer in the API's shape (`{"error", "detail"}`).
    pub fn error(status: u16, error: &str, detail: &str) -> HookResponse {
        let body = serde_json::json!({ "error": error, "detail": detail }).to_string().into_bytes();
        HookResponse { status, content_type: "application/json", body }
    }

    /// An empty answer (`202 Accepted`, `200 OK`…).
    pub fn empty(status: u16) -> HookResponse {
        HookResponse { status, content_type: "text/plain; charset=utf-8", body: Vec::new() }
    }
}

/// Handles webhook requests for one provider. Called on an HTTP worker thread: it must be
/// quick (check, parse, hand work to the provider's task) and must not block.
pub trait HookHandler: Send + Sync {
    /// Answers one request.
    fn handle(&self, req: HookRequest) -> HookResponse;
}

/// The webhook handlers of all providers, by provider name.
#[derive(Clone, Default)]
pub struct Hooks(Arc<std::sync::RwLock<std::collections::HashMap<String, Arc<dyn HookHandler>>>>);

impl Hooks {
    /// Registers (or replaces) the handler of `provider`.
    pub fn register(&self, provider: &str, handler: Arc<dyn HookHandler>) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).insert(provider.to_string(), handler);
    }

    /// Removes the handler of `provider`.
    pub fn unregister(&self, provider: &str) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).remove(provider);
    }

    /// The handler of `provider`.
    pub fn get(&self, provider: &str) -> Option<Arc<dyn HookHandler>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).get(provider).cloned()
    }
}
