//! Directory sync: runs the `[[directory.sources]]` (LDAP/AD, Entra ID, files), merges what
//! they read and applies the differences to the running hub — people added, changed and
//! removed while streams, searches, providers and the SIP server keep serving.
//!
//! Each source runs on its own task: an incremental pass every `interval_secs`, a full pass
//! at start, every `full_pass_secs` (LDAP, which has no deletion feed) and on request. After
//! each pass the engine merges every source's current people ([`merge`]), builds the next
//! directory version with stable indexes ([`Directory::next`]) and, unless the pass would
//! remove more than `max_removal_percent` of the people (then it is held and reported),
//! writes the changes to the store first and then hands the version to the hub.
//!
//! Safety rules:
//! - Nothing is applied until every source has completed a full pass in this run: a source
//!   that is down at start must not make its people look removed.
//! - A failed pass changes nothing; the source is reported `error` and retried with back-off.
//! - A leaver's absences and last view stay in the store for `leaver_retention_days`, so a
//!   re-hire or a mistaken removal gets them back.

pub mod merge;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

use presence_actors::directory::{DirectoryDiff, NumberPlan};
use presence_actors::hub::Hub;
use presence_actors::model::{now_ms, rfc3339, UnixMs};
use presence_actors::provider::Shutdown;
use presence_actors::shard::Restore;
use presence_actors::wire::PresenceIn;
use presence_providers::common::backoff::Backoff;
use presence_providers::directory::{PassKind, SourceConfig};

use crate::config::DirectorySection;
use crate::store::Store;
use merge::{MatchKey, SourcePeople};

/// Longest a single pass may take before it counts as failed.
const PASS_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The most recent errors kept per source for the admin view.
const MAX_ERRORS: usize = 5;

/// What an admin sees of one source (`GET /api/directory/sources`).
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// The source's name.
    pub name: String,
    /// Its type (`ldap`, `entra`, `file`).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `starting` (no pass yet), `running`, `ok`, `error` (the last pass failed: the
    /// directory is kept as it was), `held` (the last pass was not applied, see `detail`).
    pub state: &'static str,
    /// Why the state is `error` or `held`, or what the engine waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// People this source currently has.
    pub people: usize,
    /// The last completed pass.
    pub last_pass: Option<PassReport>,
    /// The last successful full pass, RFC 3339.
    pub last_full_pass_at: Option<String>,
    /// Failed passes in a row.
    pub consecutive_failures: u32,
    /// The most recent errors, newest first.
    pub errors: Vec<ErrorReport>,
}

/// One completed pass.
#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    /// When it started, RFC 3339.
    pub at: String,
    /// `full` or `incremental`.
    pub kind: PassKind,
    /// How long the source took, in milliseconds.
    pub duration_ms: u64,
    /// Records the source returned.
    pub read: usize,
    /// What applying it changed in the directory.
    pub added: usize,
    /// People whose fields changed.
    pub changed: usize,
    /// People who left.
    pub removed: usize,
    /// People exactly as before.
    pub unchanged: usize,
    /// Records that could not become a person (invalid fields, duplicate ids), all sources.
    pub rejected: usize,
    /// Whether the result reached the hub (`false`: waiting for other sources, or held).
    pub applied: bool,
}

/// A failed pass.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    /// When, RFC 3339.
    pub at: String,
    /// What went wrong.
    pub message: String,
}

/// A request to run passes now (`POST /api/directory/sync`).
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    /// Only this source (else all).
    pub source: Option<String>,
    /// A full pass (else incremental).
    pub full: bool,
    /// Apply even if the pass removes more than `max_removal_percent`.
    pub force: bool,
}

/// Why a sync request was refused.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// No source has that name.
    #[error("no directory source is named {0:?}")]
    UnknownSource(String),
}

struct Slot {
    name: String,
    kind: &'static str,
    /// The source's current people by key, packed (`merge::pack`: a fraction of a `Record`).
    entries: HashMap<Box<str>, Box<str>>,
    loaded: bool,
    state: &'static str,
    detail: Option<String>,
    last_pass: Option<PassReport>,
    last_full_pass_at: Option<UnixMs>,
    failures: u32,
    errors: Vec<ErrorReport>,
    passes_ok: u64,
    passes_failed: u64,
    /// Set by a sync request: the next pass is full.
    want_full: bool,
}

struct Inner {
    hub: Hub,
    store: Store,
    plan: NumberPlan,
    keys: Vec<MatchKey>,
    precedence: std::collections::BTreeMap<String, Vec<String>>,
    max_removal_percent: f64,
    retention_ms: i64,
    slots: Mutex<Vec<Slot>>,
    kicks: Vec<Notify>,
    /// Serialises applies: two sources finishing together apply one after the other.
    apply: tokio::sync::Mutex<()>,
    force: AtomicBool,
    /// On a node of a cluster: true while this node holds directory sync's lease (sources
    /// read and versions apply only then). `None`: a single node, always.
    active: Option<tokio::sync::watch::Receiver<bool>>,
    /// On a node of a cluster: where each applied version's changes go, for the other nodes.
    out: Option<tokio::sync::mpsc::UnboundedSender<Published>>,
    /// This node has published a whole version since it took the lease.
    published: AtomicBool,
}

/// An applied version's changes, for the other nodes of a cluster: people added or changed
/// (id, JSON) and the ids of those removed, then the number of people in the version.
#[derive(Debug, Clone)]
pub struct Published {
    /// People added or changed: id and JSON.
    pub upserts: Vec<(String, String)>,
    /// Ids of people removed.
    pub removed: Vec<String>,
    /// Everyone in the new version: id and JSON (the first version a node publishes, so
    /// the others get the whole directory).
    pub all: Option<Vec<(String, String)>>,
    /// People in the version.
    pub count: usize,
}

/// On a node of a cluster: directory sync runs only while `active` is true, and publishes each
/// applied version's changes to `out`.
pub struct ClusterLink {
    /// True while this node holds directory sync's lease.
    pub active: tokio::sync::watch::Receiver<bool>,
    /// Where applied versions go.
    pub out: tokio::sync::mpsc::UnboundedSender<Published>,
}

/// The running directory sync (cheap to clone).
#[derive(Clone)]
pub struct DirectorySync {
    inner: Arc<Inner>,
}

/// The result of one apply.
struct Applied {
    diff: DirectoryDiff,
    rejected: usize,
    applied: bool,
    /// Set when nothing was applied: why.
    note: Option<String>,
    held: bool,
}

/// A started [`DirectorySync`] and its sources' tasks.
pub type Started = (DirectorySync, Vec<tokio::task::JoinHandle<()>>);

impl DirectorySync {
    /// Starts one task per source (on the current actix/tokio runtime). Returns `None` when
    /// no source is configured.
    pub fn start(hub: Hub, store: Store, config: &DirectorySection, shutdown: Shutdown, cluster: Option<ClusterLink>) -> Result<Option<Started>, String> {
        let sources = config.effective_sources();
        if sources.is_empty() {
            return Ok(None);
        }
        let slots = sources
            .iter()
            .map(|s| Slot {
                name: s.name().to_string(),
                kind: s.kind(),
                entries: HashMap::new(),
                loaded: false,
                state: "starting",
                detail: None,
                last_pass: None,
                last_full_pass_at: None,
                failures: 0,
                errors: Vec::new(),
                passes_ok: 0,
                passes_failed: 0,
                want_full: false,
            })
            .collect();
        let inner = Arc::new(Inner {
            hub,
            store,
            plan: config.number_plan.plan(),
            keys: config.match_key.clone(),
            precedence: config.precedence.clone(),
            max_removal_percent: config.max_removal_percent,
            retention_ms: i64::from(config.leaver_retention_days) * 24 * 3600 * 1000,
            slots: Mutex::new(slots),
            kicks: sources.iter().map(|_| Notify::new()).collect(),
            apply: tokio::sync::Mutex::new(()),
            force: AtomicBool::new(false),
            active: cluster.as_ref().map(|c| c.active.clone()),
            out: cluster.map(|c| c.out),
            published: AtomicBool::new(false),
        });
        let mut tasks = Vec::new();
        for (i, cfg) in sources.into_iter().enumerate() {
            let source = cfg.source().map_err(|e| format!("directory source {}: {e}", cfg.name()))?;
            tasks.push(actix_web::rt::spawn(run_source(inner.clone(), i, cfg, source, shutdown.clone())));
        }
        tasks.push(actix_web::rt::spawn(purge_loop(inner.clone(), shutdown)));
        Ok(Some((DirectorySync { inner }, tasks)))
    }

    /// Every source's state, in configuration order.
    pub fn status(&self) -> Vec<SourceStatus> {
        self.inner
            .lock()
            .iter()
            .map(|s| SourceStatus {
                name: s.name.clone(),
                kind: s.kind,
                state: s.state,
                detail: s.detail.clone(),
                people: s.entries.len(),
                last_pass: s.last_pass.clone(),
                last_full_pass_at: s.last_full_pass_at.map(rfc3339),
                consecutive_failures: s.failures,
                errors: s.errors.clone(),
            })
            .collect()
    }

    /// Starts passes now (the answer does not wait for them).
    pub fn request(&self, req: &SyncRequest) -> Result<Vec<String>, SyncError> {
        let mut started = Vec::new();
        {
            let mut slots = self.inner.lock();
            if let Some(name) = &req.source {
                if !slots.iter().any(|s| &s.name == name) {
                    return Err(SyncError::UnknownSource(name.clone()));
                }
            }
            // Before the kicks: a source task (on another thread) may run its pass at once.
            if req.force {
                self.inner.force.store(true, Ordering::Release);
            }
            for (i, s) in slots.iter_mut().enumerate() {
                if req.source.as_ref().is_none_or(|n| *n == s.name) {
                    s.want_full |= req.full;
                    started.push(s.name.clone());
                    self.inner.kicks[i].notify_one();
                }
            }
        }
        Ok(started)
    }

    /// Prometheus series of the sources.
    pub fn metrics_text(&self, out: &mut String) {
        let slots = self.inner.lock();
        let _ = writeln!(out, "# HELP presence_directory_source_up 1 when the source's last pass succeeded and was applied or unchanged.\n# TYPE presence_directory_source_up gauge");
        for s in slots.iter() {
            let _ = writeln!(out, "presence_directory_source_up{{source=\"{}\"}} {}", s.name, u8::from(s.state == "ok"));
        }
        let _ = writeln!(out, "# HELP presence_directory_source_people People the source currently has.\n# TYPE presence_directory_source_people gauge");
        for s in slots.iter() {
            let _ = writeln!(out, "presence_directory_source_people{{source=\"{}\"}} {}", s.name, s.entries.len());
        }
        let _ = writeln!(out, "# HELP presence_directory_passes_total Passes per source and result.\n# TYPE presence_directory_passes_total counter");
        for s in slots.iter() {
            let _ = writeln!(out, "presence_directory_passes_total{{source=\"{}\",result=\"ok\"}} {}", s.name, s.passes_ok);
            let _ = writeln!(out, "presence_directory_passes_total{{source=\"{}\",result=\"error\"}} {}", s.name, s.passes_failed);
        }
        let _ = writeln!(out, "# HELP presence_directory_pass_duration_seconds How long the source's last pass took.\n# TYPE presence_directory_pass_duration_seconds gauge");
        for s in slots.iter() {
            if let Some(p) = &s.last_pass {
                let _ = writeln!(out, "presence_directory_pass_duration_seconds{{source=\"{}\"}} {:.3}", s.name, p.duration_ms as f64 / 1000.0);
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cursor_key(name: &str) -> String {
        format!("directory:{name}")
    }

    /// Merges every source and applies the result to the store and the hub.
    fn is_active(&self) -> bool {
        self.active.as_ref().is_none_or(|a| *a.borrow())
    }

    async fn apply(&self) -> Applied {
        let _serial = self.apply.lock().await;
        if !self.is_active() {
            let note = "this node no longer runs directory sync (another node of the cluster does)".to_string();
            return Applied { diff: DirectoryDiff::default(), rejected: 0, applied: false, note: Some(note), held: false };
        }
        let current = self.hub.directory();
        let merged = {
            let slots = self.lock();
            if let Some(s) = slots.iter().find(|s| !s.loaded) {
                let note = format!("waiting for the first full pass of source {:?}", s.name);
                return Applied { diff: DirectoryDiff::default(), rejected: 0, applied: false, note: Some(note), held: false };
            }
            let sources: Vec<SourcePeople<'_>> = slots.iter().map(|s| SourcePeople { name: &s.name, entries: &s.entries, key_is_external_id: s.kind != "file" }).collect();
            merge::merge(&sources, &self.keys, &self.precedence, &self.plan, &current)
        };
        for r in merged.rejected.iter().take(20) {
            warn!(source = %r.source, key = %r.key, reason = %r.reason, "A directory record was left out.");
        }
        let rejected = merged.rejected.len();
        let (next, diff) = match current.next(merged.people) {
            Ok((Some(next), diff)) => (next, diff),
            Ok((None, diff)) => {
                self.publish(&current, &current, &diff);
                return Applied { diff, rejected, applied: true, note: None, held: false };
            }
            Err(e) => return Applied { diff: DirectoryDiff::default(), rejected, applied: false, note: Some(format!("the merged directory is invalid: {e}")), held: true },
        };
        let count = current.count();
        let limit = (count as f64 * self.max_removal_percent / 100.0).floor() as usize;
        if count > 0 && diff.removed.len() > limit && !self.force.swap(false, Ordering::AcqRel) {
            let note = format!(
                "held: the pass would remove {} of {count} people ({:.1} %, more than max_removal_percent = {} %); nothing was applied. Check the source's filter and base, or POST /api/directory/sync with \"force\": true to apply it",
                diff.removed.len(),
                diff.removed.len() as f64 * 100.0 / count as f64,
                self.max_removal_percent
            );
            warn!(removed = diff.removed.len(), people = count, "{note}");
            return Applied { diff, rejected, applied: false, note: Some(note), held: true };
        }
        if let Err(note) = apply_version(&self.hub, &self.store, &current, next, &diff).await {
            return Applied { diff, rejected, applied: false, note: Some(note), held: true };
        }
        self.publish(&current, &self.hub.directory(), &diff);
        Applied { diff, rejected, applied: true, note: None, held: false }
    }

    /// Hands an applied version's changes to the other nodes (a cluster); the first version
    /// this node publishes carries everyone.
    fn publish(&self, before: &presence_actors::directory::Directory, after: &presence_actors::directory::Directory, diff: &DirectoryDiff) {
        let Some(out) = &self.out else { return };
        let first = !self.published.swap(true, Ordering::AcqRel);
        if !first && diff.added.is_empty() && diff.changed.is_empty() && diff.removed.is_empty() {
            return;
        }
        let json = |p: presence_actors::directory::PersonRef<'_>| (p.id().to_string(), serde_json::to_string(&p).unwrap_or_default());
        let upserts = diff.added.iter().chain(&diff.changed).filter_map(|&i| after.person(i)).map(json).collect();
        let removed = diff.removed.iter().filter_map(|&i| before.person(i)).map(|p| p.id().to_string()).collect();
        let all = first.then(|| (0..after.len() as u32).filter_map(|i| after.person(i)).map(json).collect());
        let _ = out.send(Published { upserts, removed, all, count: after.count() });
    }
}

/// Makes `next` (built from `current`, `diff` its differences) the directory: the store first
/// (an applied change survives a crash), with what it kept of people who are back, then the
/// running hub. Directory sync and, on a node of a cluster, the versions another node applied.
pub(crate) async fn apply_version(hub: &Hub, store: &Store, current: &presence_actors::directory::Directory, next: presence_actors::directory::Directory, diff: &DirectoryDiff) -> Result<(), String> {
    let upserts: Vec<(String, String)> = diff
        .added
        .iter()
        .chain(&diff.changed)
        .filter_map(|&i| next.person(i))
        .map(|p| (p.id().to_string(), serde_json::to_string(&p).unwrap_or_default()))
        .collect();
    let removed: Vec<String> = diff.removed.iter().filter_map(|&i| current.person(i)).map(|p| p.id().to_string()).collect();
    let added_ids: Vec<(u32, String)> = diff.added.iter().filter_map(|&i| Some((i, next.person(i)?.id().to_string()))).collect();
    let store = store.clone();
    let now = now_ms();
    let saved = actix_web::web::block(move || -> Result<Restore, crate::store::StoreError> {
        store.apply_directory_changes(&upserts, &removed, now)?;
        restore_of(&store, &added_ids, now)
    })
    .await;
    let restore = match saved {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(format!("the store refused the changes: {e}")),
        Err(e) => return Err(format!("the store task failed: {e}")),
    };
    info!(added = diff.added.len(), changed = diff.changed.len(), removed = diff.removed.len(), people = next.count(), "Directory changes applied.");
    hub.apply_directory(next, diff, restore).await;
    Ok(())
}

/// What the store kept of people who are back: their absences that have not ended and their
/// last view.
fn restore_of(store: &Store, people: &[(u32, String)], now: UnixMs) -> Result<Restore, crate::store::StoreError> {
    let mut r = Restore { views: Vec::new(), absences: Vec::new(), slots: Vec::new() };
    for (idx, id) in people {
        for a in store.absences_for(id)? {
            if a.end.is_none_or(|e| e > now) {
                r.absences.push((*idx, a.to_absence()));
            }
        }
        if let Some((json, _)) = store.snapshot_for(id)? {
            if let Ok(p) = serde_json::from_str::<PresenceIn>(&json) {
                r.views.push((*idx, p.into_view().1));
            }
        }
    }
    Ok(r)
}

/// One source's task: passes on its schedule and on request, until shutdown.
async fn run_source(inner: Arc<Inner>, i: usize, cfg: SourceConfig, mut source: presence_providers::directory::Source, mut stop: Shutdown) {
    let name = cfg.name().to_string();
    let interval = cfg.interval();
    let full_every = cfg.full_interval();
    let mut backoff = Backoff::new(Duration::from_secs(1), interval.clamp(Duration::from_secs(1), Duration::from_secs(300)));
    let mut next = Instant::now();
    let mut next_full = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = inner.kicks[i].notified() => {}
            _ = stop.recv() => return,
        }
        if let Some(active) = &inner.active {
            if !*active.borrow() {
                inner.lock()[i].state = "standby";
                inner.published.store(false, Ordering::Release);
                let mut a = active.clone();
                tokio::select! {
                    _ = a.wait_for(|on| *on) => {}
                    _ = stop.recv() => return,
                }
                // Taking over: read everything afresh.
                inner.lock()[i].want_full = true;
            }
        }
        let want = {
            let mut slots = inner.lock();
            let s = &mut slots[i];
            s.state = "running";
            let full = !s.loaded || s.want_full || full_every.is_some_and(|_| Instant::now() >= next_full);
            s.want_full = false;
            if full { PassKind::Full } else { PassKind::Incremental }
        };
        let cursor = inner.store.cursor(&Inner::cursor_key(&name), "cursor").ok().flatten();
        let started = now_ms();
        let t0 = Instant::now();
        let result = tokio::select! {
            r = tokio::time::timeout(PASS_TIMEOUT, source.pass(want, cursor.as_deref())) => r,
            _ = stop.recv() => return,
        };
        let took = t0.elapsed();
        let pass = match result {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                fail(&inner, i, &e.to_string());
                next = Instant::now() + backoff.next_delay();
                continue;
            }
            Err(_) => {
                fail(&inner, i, &format!("the pass took longer than {} s", PASS_TIMEOUT.as_secs()));
                next = Instant::now() + backoff.next_delay();
                continue;
            }
        };
        backoff.reset();
        let read = pass.entries.len();
        let kind = pass.kind;
        // An incremental pass that found nothing (the usual case) costs no merge at all.
        let touched = kind == PassKind::Full || read > 0 || !pass.removed.is_empty();
        {
            let mut slots = inner.lock();
            let s = &mut slots[i];
            if kind == PassKind::Full {
                s.entries = pass.entries.into_iter().map(|e| (e.key, merge::pack(&e.record))).collect();
                s.loaded = true;
                s.last_full_pass_at = Some(started);
            } else {
                for e in pass.entries {
                    s.entries.insert(e.key, merge::pack(&e.record));
                }
            }
            for k in &pass.removed {
                s.entries.remove(k);
            }
        }
        if kind == PassKind::Full {
            next_full = Instant::now() + full_every.unwrap_or(Duration::MAX / 4);
        }
        if let Some(c) = &pass.cursor {
            if let Err(e) = inner.store.set_cursor(&Inner::cursor_key(&name), "cursor", c) {
                warn!(source = %name, error = %e, "Could not save the directory source's cursor.");
            }
        }
        let applied = if touched {
            inner.apply().await
        } else {
            Applied { diff: DirectoryDiff::default(), rejected: 0, applied: true, note: None, held: false }
        };
        {
            let mut slots = inner.lock();
            let s = &mut slots[i];
            s.failures = 0;
            s.passes_ok += 1;
            if touched || s.state != "held" {
                s.state = if applied.held { "held" } else { "ok" };
                s.detail = applied.note.clone();
            }
            s.last_pass = Some(PassReport {
                at: rfc3339(started),
                kind,
                duration_ms: took.as_millis() as u64,
                read,
                added: applied.diff.added.len(),
                changed: applied.diff.changed.len(),
                removed: applied.diff.removed.len(),
                unchanged: applied.diff.unchanged,
                rejected: applied.rejected,
                applied: applied.applied,
            });
        }
        info!(source = %name, kind = ?kind, read, ms = took.as_millis() as u64, applied = applied.applied, "Directory pass done.");
        next = Instant::now() + interval;
    }
}

fn fail(inner: &Inner, i: usize, message: &str) {
    let mut slots = inner.lock();
    let s = &mut slots[i];
    warn!(source = %s.name, error = %message, "Directory pass failed; the directory is kept as it was.");
    s.state = "error";
    s.detail = Some(message.to_string());
    s.failures += 1;
    s.passes_failed += 1;
    s.errors.insert(0, ErrorReport { at: rfc3339(now_ms()), message: message.to_string() });
    s.errors.truncate(MAX_ERRORS);
}

/// Forgets leavers past the retention, hourly.
async fn purge_loop(inner: Arc<Inner>, mut stop: Shutdown) {
    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = hourly.tick() => {
                let store = inner.store.clone();
                let before = now_ms() - inner.retention_ms;
                match actix_web::web::block(move || store.purge_leavers(before)).await {
                    Ok(Ok(n)) if n > 0 => info!(forgotten = n, "Forgot people who left longer ago than the retention."),
                    Ok(Err(e)) => warn!(error = %e, "Could not purge leavers."),
                    _ => {}
                }
            }
            _ = stop.recv() => return,
        }
    }
}

/// Runs one full pass of `cfg` without changing anything (`check-config --connect`): how
/// many people it has and the first names.
pub async fn probe(cfg: &SourceConfig, plan: &NumberPlan) -> Result<(usize, Vec<String>, usize), String> {
    let mut source = cfg.source().map_err(|e| e.to_string())?;
    let pass = source.pass(PassKind::Full, None).await.map_err(|e| e.to_string())?;
    let mut ok = 0;
    let mut invalid = 0;
    let mut names = Vec::new();
    let mut sorted: Vec<_> = pass.entries.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    for e in sorted {
        match e.record.to_person(plan) {
            Ok(p) => {
                ok += 1;
                if names.len() < 3 {
                    names.push(p.name.to_string());
                }
            }
            Err(_) => invalid += 1,
        }
    }
    Ok((ok, names, invalid))
}
