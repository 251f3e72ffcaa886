//! Feed health: one entry per provider instance, read by the merge and by `/api/providers`.
//!
//! A provider marks its feed up or down through its sink ([`crate::hub::SignalSink::set_up`],
//! the only way: it also re-merges everyone, so the change reaches every stream); while down,
//! the merge treats that feed's slots as stale (Unknown, never Offline). Counters record events, errors and the last event time.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use crate::model::{rfc3339, now_ms, FeedId};

/// Longest error text kept per feed.
const MAX_ERROR_LEN: usize = 300;

/// Health and counters of one provider instance.
#[derive(Debug)]
pub struct FeedEntry {
    /// Feed id (index in the registry).
    pub id: FeedId,
    /// Configured provider name.
    pub name: String,
    /// Provider type ("replay", "api", …).
    pub kind: String,
    up: AtomicBool,
    /// Signals emitted.
    pub events: AtomicU64,
    /// Errors seen (bad payloads, lost connections…).
    pub errors: AtomicU64,
    /// Signals that named nobody in the directory.
    pub unresolved: AtomicU64,
    last_event_at: AtomicI64,
    state: Mutex<String>,
    last_error: Mutex<Option<(i64, String)>>,
    details: Mutex<serde_json::Value>,
}

/// The JSON shape of a feed in `/api/providers`.
#[derive(Serialize, Debug)]
pub struct FeedReport {
    /// Provider name.
    pub name: String,
    /// Provider type.
    #[serde(rename = "type")]
    pub kind: String,
    /// "up", "down", or a provider-specific state ("connecting", "throttled"…).
    pub state: String,
    /// Whether its signals count as live.
    pub up: bool,
    /// Time of the last signal.
    pub last_event_at: Option<String>,
    /// Signals emitted.
    pub events: u64,
    /// Errors seen.
    pub errors: u64,
    /// Signals naming nobody in the directory.
    pub unresolved: u64,
    /// Last error and when.
    pub last_error: Option<String>,
    /// Time of the last error.
    pub last_error_at: Option<String>,
    /// Provider-specific details (subscriptions, throttling…).
    pub details: serde_json::Value,
}

impl FeedEntry {
    /// True while the feed is up.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Sets up/down; returns true if it changed. Crate-private on purpose: a provider marks
    /// its feed up or down through [`crate::hub::SignalSink::set_up`], the one call that also
    /// re-merges everyone the feed covers, so consoles see the change on their streams.
    pub(crate) fn set_up(&self, up: bool) -> bool {
        let was = self.up.swap(up, Ordering::AcqRel);
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = if up { "up".into() } else { "down".into() };
        was != up
    }

    /// Sets up/down as the node running the feed reports it (a cluster), keeping this node's
    /// state word (`standby`: the feed runs elsewhere); returns true if it changed.
    pub(crate) fn set_up_elsewhere(&self, up: bool) -> bool {
        self.up.swap(up, Ordering::AcqRel) != up
    }

    /// Sets a provider-specific state word without changing up/down.
    pub fn set_state(&self, s: &str) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s.chars().take(40).collect();
    }

    /// Records an emitted signal.
    pub fn record_event(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
        self.last_event_at.store(now_ms(), Ordering::Relaxed);
    }

    /// Records an error.
    pub fn record_error(&self, msg: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let text = crate::model::activity::truncate(msg, MAX_ERROR_LEN).to_string();
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((now_ms(), text));
    }

    /// Replaces the provider-specific details object.
    pub fn set_details(&self, v: serde_json::Value) {
        *self.details.lock().unwrap_or_else(|p| p.into_inner()) = v;
    }

    /// A report for the API.
    pub fn report(&self) -> FeedReport {
        let last = self.last_event_at.load(Ordering::Relaxed);
        let err = self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        FeedReport {
            name: self.name.clone(),
            kind: self.kind.clone(),
            state: self.state.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            up: self.is_up(),
            last_event_at: (last > 0).then(|| rfc3339(last)),
            events: self.events.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            unresolved: self.unresolved.load(Ordering::Relaxed),
            last_error_at: err.as_ref().map(|e| rfc3339(e.0)),
            last_error: err.map(|e| e.1),
            details: self.details.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// Registry of feeds. Feed 0 is the hub's own API (manual absences, pushed signals).
#[derive(Debug)]
pub struct Feeds {
    entries: RwLock<Vec<Arc<FeedEntry>>>,
}

impl Default for Feeds {
    fn default() -> Self {
        let f = Feeds { entries: RwLock::new(Vec::new()) };
        f.register("api", "api").set_up(true);
        f
    }
}

impl Feeds {
    /// Adds a feed (initially down until the provider says it is up).
    pub fn register(&self, name: &str, kind: &str) -> Arc<FeedEntry> {
        let mut g = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let e = Arc::new(FeedEntry {
            id: g.len() as FeedId,
            name: name.to_string(),
            kind: kind.to_string(),
            up: AtomicBool::new(false),
            events: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            unresolved: AtomicU64::new(0),
            last_event_at: AtomicI64::new(0),
            state: Mutex::new("starting".into()),
            last_error: Mutex::new(None),
            details: Mutex::new(serde_json::Value::Null),
        });
        g.push(e.clone());
        e
    }

    /// True if the feed is up; unknown feeds count as up (nothing says otherwise).
    pub fn is_up(&self, id: FeedId) -> bool {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).get(id as usize).is_none_or(|e| e.is_up())
    }

    /// Every feed.
    pub fn all(&self) -> Vec<Arc<FeedEntry>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A feed by id.
    pub fn get(&self, id: FeedId) -> Option<Arc<FeedEntry>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).get(id as usize).cloned()
    }

    /// The feed with this name (feeds travel by name between the nodes of a cluster).
    pub fn by_name(&self, name: &str) -> Option<Arc<FeedEntry>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).iter().find(|f| f.name == name).cloned()
    }
}
