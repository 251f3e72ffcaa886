//! The provider contract: what every source gets to do its work, and nothing global.
//!
//! A provider receives a [`ProviderContext`] — its name, its feed's health entry, a
//! [`SignalSink`] into the hub, the directory, a shutdown signal, a shared HTTP client and a
//! cursor store — and runs until shutdown. Providers parse with pure functions, `try_send`
//! through the sink (never block on the hub) and mark their feed down when they lose it, so
//! its signals show stale — never Offline.

use std::sync::Arc;

use crate::directory::Directory;
use crate::feeds::FeedEntry;
use crate::hub::SignalSink;

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
}

impl ProviderContext {
    /// The directory.
    pub fn directory(&self) -> &Arc<Directory> {
        self.sink.directory()
    }
}
