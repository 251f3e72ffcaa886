//! The cluster (`[cluster]`): several hubs on NATS JetStream, so that no node is a single point
//! of failure.
//!
//! The cluster is built on NATS, an existing distributed engine, not on a protocol of ours:
//! - **Membership**: each node puts its key in the KV bucket `<prefix>_nodes` every third of
//!   the lease; the bucket's `max_age` is the lease, so the key of a node that stops renewing
//!   disappears. A node is alive while its key is renewed.
//! - **Leases** ([`lease`]): every feed (each provider, and directory sync) is owned by one
//!   node through a key in the KV bucket `<prefix>_leases`, taken with a create (fails if the
//!   key exists), renewed with a revision-checked update, and gone `lease_ms` after the last
//!   renewal (the bucket's `max_age`). The owner stops the feed before its lease can expire
//!   (fencing): nobody else can take the key until then, so no subscription is ever held twice.
//!
//! The single-node default (no `[cluster]`) uses none of this: SQLite and nothing else.

pub mod cursors;
pub mod directory;
pub mod hooks;
pub mod lease;
pub mod partitions;
pub mod signin;
pub mod writes;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use presence_actors::model::{now_ms, rfc3339};

/// `[cluster]`: the NATS servers and this node's place in the cluster.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// NATS server URLs (`nats://host:port`, `tls://host:port`); the client fails over
    /// between them.
    pub nats: Vec<String>,
    /// This node's name, unique in the cluster: 1-64 letters, digits, '-' or '_'.
    pub node: String,
    /// JetStream replicas of the hub's buckets and streams (1-5; 3 for a cluster of three
    /// NATS servers).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long a lease (a feed's owner, a node's membership) lasts without renewal, in ms
    /// (500-60000). Renewed every third of it; the same on every node.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Names the hub's buckets and streams (`<prefix>_leases`…), so several hubs can share
    /// one NATS: 1-32 letters, digits or '_'.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// A NATS credentials file (`.creds`: user JWT and nkey seed).
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// A file holding an nkey seed (`SU…`), keep it 0600.
    #[serde(default)]
    pub nkey_file: Option<PathBuf>,
    /// User name, with `password` or `password_file`.
    #[serde(default)]
    pub user: Option<String>,
    /// Password of `user`.
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the password of `user`, keep it 0600.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) that sign the NATS servers' certificates; requires TLS.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for NATS servers that verify clients, with `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The key of `tls_cert_file` (PEM).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

fn default_replicas() -> usize {
    3
}
fn default_lease_ms() -> u64 {
    3000
}
fn default_prefix() -> String {
    "ph".into()
}

impl ClusterSection {
    /// Checks the section on its own.
    pub fn validate(&self) -> Result<(), String> {
        if self.nats.is_empty() {
            return Err("cluster.nats needs at least one NATS server URL".into());
        }
        for u in &self.nats {
            let ok = ["nats://", "tls://"].iter().any(|p| u.starts_with(p)) && u.len() > 7 && u.len() <= 512;
            if !ok {
                return Err(format!("cluster.nats: {u:?} is not a nats:// or tls:// URL"));
            }
        }
        if self.node.is_empty() || self.node.len() > 64 || !self.node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(format!("cluster.node {:?}: 1-64 letters, digits, '-' or '_'", self.node));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err("cluster.replicas must be 1-5".into());
        }
        if !(500..=60_000).contains(&self.lease_ms) {
            return Err("cluster.lease_ms must be 500-60000".into());
        }
        if self.prefix.is_empty() || self.prefix.len() > 32 || !self.prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("cluster.prefix {:?}: 1-32 letters, digits or '_'", self.prefix));
        }
        let auth = [self.creds_file.is_some(), self.nkey_file.is_some(), self.user.is_some()].iter().filter(|b| **b).count();
        if auth > 1 {
            return Err("cluster: creds_file, nkey_file and user exclude each other".into());
        }
        if self.user.is_some() && self.password.is_some() == self.password_file.is_some() {
            return Err("cluster.user needs exactly one of password and password_file".into());
        }
        if self.user.is_none() && (self.password.is_some() || self.password_file.is_some()) {
            return Err("cluster.password needs cluster.user".into());
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err("cluster.tls_cert_file and cluster.tls_key_file go together".into());
        }
        Ok(())
    }

    /// The lease.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
}

/// Why the cluster could not be joined.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A credentials, key or password file could not be read.
    #[error("{0}")]
    Secret(String),
    /// No NATS server could be reached.
    #[error("cannot connect to NATS ({servers}): {message}")]
    Connect {
        /// The configured servers.
        servers: String,
        /// What went wrong.
        message: String,
    },
    /// JetStream refused to create or open a bucket or stream.
    #[error("JetStream {what}: {message}")]
    JetStream {
        /// The bucket or stream.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// The existing buckets were made with other settings (another `lease_ms`…).
    #[error("{0}")]
    Mismatch(String),
}

/// Reads a secret file, warning when others may read it.
fn read_secret(path: &PathBuf, what: &str) -> Result<String, ClusterError> {
    #[cfg(unix)]
    if let Ok(m) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if m.permissions().mode() & 0o077 != 0 {
            warn!(path = %path.display(), mode = format!("{:o}", m.permissions().mode() & 0o777), "The NATS {what} file can be read by others; make it 0600.");
        }
    }
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).map_err(|e| ClusterError::Secret(format!("cluster {what} file {}: {e}", path.display())))
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// Leases taken (a feed started on this node).
    pub leases_acquired: AtomicU64,
    /// Leases renewed.
    pub lease_renewals: AtomicU64,
    /// Renewals that failed (NATS unreachable, slow or refusing).
    pub lease_renewal_failures: AtomicU64,
    /// Leases lost: not renewed in time, or taken by another node.
    pub leases_lost: AtomicU64,
    /// Leases given back (shutdown).
    pub leases_released: AtomicU64,
}

/// A node as this node sees it.
#[derive(Debug, Clone)]
struct Member {
    seen: Instant,
    started_at: i64,
}

/// A lease key as this node sees it.
#[derive(Debug, Clone)]
struct Owner {
    node: String,
    seen: Instant,
    deleted: bool,
}

/// What this node knows of the cluster, kept current by the watchers.
#[derive(Debug, Default)]
struct View {
    members: BTreeMap<String, Member>,
    owners: HashMap<String, Owner>,
    /// The watchers have read the buckets' current contents once.
    leases_read: bool,
    nodes_read: bool,
    /// A watcher's last error, for `/api/cluster`.
    last_error: Option<String>,
    /// Per bucket (`[leases, nodes]`), the oldest write of this node's own that the bucket's
    /// watcher has not delivered yet (see [`Cluster::stalled`]).
    unseen: [Option<Unseen>; 2],
    /// Per bucket, the highest revision its watcher delivered (a write can be delivered before
    /// it is acknowledged).
    delivered: [u64; 2],
    /// Bumped when a watcher is found stalled, so that both re-open.
    reopen: u64,
}

/// A write of this node's own, acknowledged by NATS and not yet delivered by its watcher.
#[derive(Debug, Clone, Copy)]
struct Unseen {
    revision: u64,
    /// When it was acknowledged, or the watch last (re)opened.
    since: Instant,
}

/// What a node's key in `<prefix>_nodes` holds.
#[derive(Debug, Serialize, Deserialize)]
struct NodeRecord {
    node: String,
    started_at: i64,
}

/// What a lease key holds.
#[derive(Debug, Serialize, Deserialize)]
struct LeaseRecord {
    node: String,
    /// What the lease is for (`provider`, `directory`).
    kind: String,
    /// The provider's or source's name.
    name: String,
}

struct Inner {
    config: ClusterSection,
    client: async_nats::Client,
    leases: kv::Store,
    nodes: kv::Store,
    view: Mutex<View>,
    metrics: ClusterMetrics,
    started_at: i64,
    /// Names of the leases this node holds, with the wall-clock time each was last renewed.
    held: Mutex<BTreeMap<String, i64>>,
    /// The partitions of the people (set once they start).
    partitions: std::sync::OnceLock<Arc<partitions::Partitions>>,
    /// Absences written through JetStream (set with the partitions).
    writes: std::sync::OnceLock<Arc<writes::Writes>>,
    /// Sign-in state shared by the nodes.
    signin: std::sync::OnceLock<Arc<signin::SharedSignIn>>,
}

/// This node's membership of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.inner.config.node).finish()
    }
}

impl Cluster {
    /// Connects to NATS and opens (or creates) the hub's buckets. Fails when no server
    /// answers within the connection timeout, or when the buckets exist with other settings.
    pub async fn join(config: &ClusterSection) -> Result<Cluster, ClusterError> {
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("presence-hub {}", config.node))
            .connection_timeout(Duration::from_secs(5))
            .ping_interval(Duration::from_millis(config.lease_ms.max(1000)))
            .max_reconnects(None)
            .event_callback(|e| async move {
                match e {
                    async_nats::Event::Connected => info!("Connected to NATS."),
                    async_nats::Event::Disconnected => warn!("Disconnected from NATS; reconnecting."),
                    other => info!(event = %other, "NATS client event."),
                }
            });
        if let Some(p) = &config.creds_file {
            opts = opts.credentials_file(p).await.map_err(|e| ClusterError::Secret(format!("cluster creds_file {}: {e}", p.display())))?;
        }
        if let Some(p) = &config.nkey_file {
            opts = opts.nkey(read_secret(p, "nkey")?);
        }
        if let Some(user) = &config.user {
            let pass = match (&config.password, &config.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => read_secret(f, "password")?,
                (None, None) => String::new(),
            };
            opts = opts.user_and_password(user.clone(), pass);
        }
        if let Some(ca) = &config.tls_ca_file {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(c), Some(k)) = (&config.tls_cert_file, &config.tls_key_file) {
            opts = opts.add_client_certificate(c.clone(), k.clone());
        }
        let servers: Vec<async_nats::ServerAddr> = config
            .nats
            .iter()
            .map(|u| u.parse().map_err(|e| ClusterError::Connect { servers: u.clone(), message: format!("{e}") }))
            .collect::<Result<_, _>>()?;
        let client = opts.connect(servers).await.map_err(|e| ClusterError::Connect { servers: config.nats.join(", "), message: e.to_string() })?;
        let js = jetstream::new(client.clone());
        let lease = config.lease();
        let leases = open_bucket(&js, &format!("{}_leases", config.prefix), lease, config.replicas).await?;
        let nodes = open_bucket(&js, &format!("{}_nodes", config.prefix), lease, config.replicas).await?;
        info!(node = %config.node, servers = %config.nats.join(", "), lease_ms = config.lease_ms, replicas = config.replicas, "Joined the cluster.");
        Ok(Cluster {
            inner: Arc::new(Inner {
                config: config.clone(),
                client,
                leases,
                nodes,
                view: Mutex::new(View::default()),
                metrics: ClusterMetrics::default(),
                started_at: now_ms(),
                held: Mutex::new(BTreeMap::new()),
                partitions: std::sync::OnceLock::new(),
                writes: std::sync::OnceLock::new(),
                signin: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Starts the partitions of the people on this node (see [`partitions`]).
    pub async fn start_partitions(&self, hub: &presence_actors::hub::Hub, store: &crate::store::Store, keeper: &mut lease::Keeper, stop: presence_actors::provider::Shutdown) -> Result<(), ClusterError> {
        let p = partitions::Partitions::start(self, hub, store, keeper, stop.clone()).await?;
        let w = writes::Writes::start(self, p.clone(), hub, store, stop).await?;
        let _ = self.inner.partitions.set(p);
        let _ = self.inner.writes.set(w);
        Ok(())
    }

    /// Shares sign-in sessions and sign-ins in progress with the other nodes.
    pub async fn start_signin(&self, sessions: Arc<crate::signin::sessions::Sessions>, stop: presence_actors::provider::Shutdown) -> Result<(), ClusterError> {
        let s = signin::SharedSignIn::start(self, sessions, stop).await?;
        let _ = self.inner.signin.set(s);
        Ok(())
    }

    /// Sign-in state shared by the nodes, once started.
    pub fn signin(&self) -> Option<&Arc<signin::SharedSignIn>> {
        self.inner.signin.get()
    }

    /// The partitions of the people, once started.
    pub fn partitions(&self) -> Option<&Arc<partitions::Partitions>> {
        self.inner.partitions.get()
    }

    /// Absences written through JetStream, once started.
    pub fn writes(&self) -> Option<&Arc<writes::Writes>> {
        self.inner.writes.get()
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.config.node
    }

    /// The configuration.
    pub fn config(&self) -> &ClusterSection {
        &self.inner.config
    }

    /// The counters.
    pub fn metrics(&self) -> &ClusterMetrics {
        &self.inner.metrics
    }

    /// True while the NATS connection is up.
    pub fn connected(&self) -> bool {
        self.inner.client.connection_state() == async_nats::connection::State::Connected
    }

    fn view(&self) -> MutexGuard<'_, View> {
        self.inner.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The nodes alive now (renewed their membership within the lease), sorted; this node
    /// counts while it is connected.
    pub fn alive_nodes(&self) -> Vec<String> {
        let lease = self.inner.config.lease();
        let now = Instant::now();
        let v = self.view();
        let mut alive: Vec<String> = v.members.iter().filter(|(_, m)| now.duration_since(m.seen) < lease).map(|(n, _)| n.clone()).collect();
        if self.connected() && !alive.iter().any(|n| n == self.node()) {
            alive.push(self.node().to_string());
            alive.sort();
        }
        alive
    }

    /// Starts the watchers of membership and leases and this node's membership heartbeat;
    /// they run until `stop`.
    pub fn start_watchers(&self, stop: presence_actors::provider::Shutdown) {
        let (c, s) = (self.clone(), stop.clone());
        actix_web::rt::spawn(async move { c.watch_loop(true, s).await });
        let (c, s) = (self.clone(), stop.clone());
        actix_web::rt::spawn(async move { c.watch_loop(false, s).await });
        let c = self.clone();
        actix_web::rt::spawn(async move { c.heartbeat_loop(stop).await });
    }

    /// Puts this node's membership key every third of the lease.
    async fn heartbeat_loop(self, mut stop: presence_actors::provider::Shutdown) {
        let every = self.inner.config.lease() / 3;
        let record = serde_json::to_vec(&NodeRecord { node: self.node().to_string(), started_at: self.inner.started_at }).unwrap_or_default();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.recv() => break,
                _ = tick.tick() => {
                    let put = self.inner.nodes.put(self.node(), record.clone().into());
                    match tokio::time::timeout(every, put).await {
                        Ok(Ok(revision)) => self.wrote(false, revision),
                        Ok(Err(e)) => self.note_error(format!("membership: {e}")),
                        Err(_) => self.note_error("membership: NATS did not answer in time".into()),
                    }
                }
            }
        }
        // Leaving: the others see it at once instead of after the lease.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.nodes.delete(self.node())).await;
    }

    fn note_error(&self, e: String) {
        let mut v = self.view();
        if v.last_error.as_deref() != Some(e.as_str()) {
            warn!(error = %e, "Cluster: NATS call failed.");
        }
        v.last_error = Some(e);
    }

    /// Follows one bucket (leases or nodes) into the view; re-opens the watch after an error,
    /// or when it stalls ([`Cluster::stalled`]).
    async fn watch_loop(self, leases: bool, mut stop: presence_actors::provider::Shutdown) {
        let store = if leases { &self.inner.leases } else { &self.inner.nodes };
        let slot = usize::from(!leases);
        loop {
            // With a deadline of ours: opened while JetStream elects a leader, the library's own
            // (10 s) kept the view blind that much longer after the election. With history: the
            // keys as they are now first, then every change.
            let open = tokio::time::timeout(self.stall_after(), store.watch_with_history(">")).await;
            let mut watch = match open.unwrap_or_else(|_| Err(kv::WatchError::new(kv::WatchErrorKind::TimedOut))) {
                Ok(w) => w,
                Err(e) => {
                    self.note_error(format!("watch: {e}"));
                    tokio::select! {
                        _ = stop.recv() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            let epoch = {
                let mut v = self.view();
                if let Some(u) = &mut v.unseen[slot] {
                    u.since = Instant::now();
                }
                v.reopen
            };
            // An empty bucket sends nothing: it is read once the watch is open and pending 0.
            self.mark_read(leases, false);
            let mut check = tokio::time::interval(self.stall_after() / 4);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let next = tokio::select! {
                    _ = stop.recv() => return,
                    n = watch.next() => n,
                    _ = tokio::time::sleep(Duration::from_millis(200)), if !self.is_read(leases) => {
                        self.mark_read(leases, true);
                        continue;
                    }
                    _ = check.tick() => match self.stalled(slot, epoch) {
                        Some(why) => {
                            self.note_error(why);
                            break;
                        }
                        None => continue,
                    },
                };
                let entry = match next {
                    Some(Ok(e)) => e,
                    Some(Err(e)) => {
                        self.note_error(format!("watch: {e}"));
                        break;
                    }
                    None => break,
                };
                let now = Instant::now();
                let deleted = !matches!(entry.operation, kv::Operation::Put);
                let mut v = self.view();
                // In stream order: this entry or a later one shows the write delivered.
                v.delivered[slot] = v.delivered[slot].max(entry.revision);
                if v.unseen[slot].is_some_and(|u| entry.revision >= u.revision) {
                    v.unseen[slot] = None;
                }
                if leases {
                    let node = serde_json::from_slice::<LeaseRecord>(&entry.value).map(|r| r.node).unwrap_or_default();
                    let prev = v.owners.get(&entry.key).map(|o| o.node.clone());
                    if !deleted && prev.as_deref() != Some(node.as_str()) {
                        info!(lease = %entry.key, owner = %node, "Lease owner changed.");
                    }
                    let node = if deleted { prev.unwrap_or_default() } else { node };
                    v.owners.insert(entry.key.clone(), Owner { node, seen: now, deleted });
                    if entry.delta == 0 {
                        v.leases_read = true;
                    }
                } else {
                    if deleted {
                        v.members.remove(&entry.key);
                    } else {
                        let started_at = serde_json::from_slice::<NodeRecord>(&entry.value).map(|r| r.started_at).unwrap_or(0);
                        v.members.insert(entry.key.clone(), Member { seen: now, started_at });
                    }
                    if entry.delta == 0 {
                        v.nodes_read = true;
                    }
                }
            }
            tokio::select! {
                _ = stop.recv() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// This node's write of `revision` into the leases (`leases`) or nodes bucket was
    /// acknowledged: that bucket's watcher must deliver it soon.
    pub(crate) fn wrote(&self, leases: bool, revision: u64) {
        let mut v = self.view();
        let slot = usize::from(!leases);
        if v.unseen[slot].is_none() && revision > v.delivered[slot] {
            v.unseen[slot] = Some(Unseen { revision, since: Instant::now() });
        }
    }

    /// How long a watcher may take to deliver this node's own write before it counts as stalled.
    fn stall_after(&self) -> Duration {
        (self.inner.config.lease() / 2).max(Duration::from_secs(1))
    }

    /// Why the watcher of bucket `slot`, opened at `epoch`, must re-open, if it must.
    ///
    /// After a NATS server fails, the client library recreates a watch's consumer on its own,
    /// but with back-off up to 10 s between attempts, and only notices a consumer lost with a
    /// server it was not connected to after missing heartbeats for 10 s: the view went blind
    /// for 6 s to more than 20 s after the loss of the buckets' leader (every lease missing
    /// from `/api/cluster` while the feeds ran), with nothing to show it. A watcher that has
    /// not delivered this node's own acknowledged write (its membership every third of the
    /// lease, its lease renewals) within [`Cluster::stall_after`] is stalled: both watchers
    /// re-open, and try again every half second while they cannot. (A node that holds no lease
    /// checks its leases watcher only through the membership one; the library's own check
    /// still ends a stall of the other within about 10 s.)
    fn stalled(&self, slot: usize, epoch: u64) -> Option<String> {
        let mut v = self.view();
        if v.reopen != epoch {
            return Some("watch: re-opened with the other bucket's".into());
        }
        let u = v.unseen[slot]?;
        if u.since.elapsed() < self.stall_after() {
            return None;
        }
        v.reopen += 1;
        let bucket = if slot == 0 { "leases" } else { "nodes" };
        Some(format!("watch: this node's write {} into the {bucket} bucket was not seen within {} ms; re-opening the watches", u.revision, self.stall_after().as_millis()))
    }

    fn is_read(&self, leases: bool) -> bool {
        let v = self.view();
        if leases {
            v.leases_read
        } else {
            v.nodes_read
        }
    }

    fn mark_read(&self, leases: bool, read: bool) {
        let mut v = self.view();
        if leases {
            v.leases_read = read;
        } else {
            v.nodes_read = read;
        }
    }

    /// What the watchers know of a lease key: its owner, when it was last seen renewed, and
    /// whether it was given back.
    fn owner(&self, key: &str) -> Option<Owner> {
        self.view().owners.get(key).cloned()
    }

    /// True once both buckets have been read, so lease decisions see the others' keys.
    pub fn caught_up(&self) -> bool {
        let v = self.view();
        v.leases_read && v.nodes_read
    }

    /// True when the node can serve: connected to NATS and caught up with the buckets.
    pub fn ready(&self) -> bool {
        self.connected() && self.caught_up()
    }

    pub(crate) fn set_held(&self, key: &str, renewed_ms: Option<i64>) {
        let mut h = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        match renewed_ms {
            Some(t) => {
                h.insert(key.to_string(), t);
            }
            None => {
                h.remove(key);
            }
        }
    }

    /// True while this node holds the lease `key`.
    pub fn holds(&self, key: &str) -> bool {
        self.inner.held.lock().unwrap_or_else(|p| p.into_inner()).contains_key(key)
    }

    /// Feed leases (not partitions) held by this node now.
    pub fn held_count(&self) -> usize {
        self.inner.held.lock().unwrap_or_else(|p| p.into_inner()).keys().filter(|k| !lease::is_partition(k)).count()
    }

    /// `GET /api/cluster`: this node, every node alive, every lease with its owner and expiry,
    /// the NATS connection and the buckets' replication.
    pub async fn report(&self) -> ClusterReport {
        let lease = self.inner.config.lease();
        let now = Instant::now();
        let wall = now_ms();
        let at = |seen: Instant| rfc3339(wall - now.duration_since(seen).as_millis() as i64 + lease.as_millis() as i64);
        let (nodes, leases, last_error) = {
            let v = self.view();
            let mut count: HashMap<&str, usize> = HashMap::new();
            let mut parts: HashMap<&str, Vec<u32>> = HashMap::new();
            for (k, o) in v.owners.iter().filter(|(_, o)| !o.deleted && now.duration_since(o.seen) < lease) {
                if let ("partition", n) = lease::describe(k) {
                    parts.entry(o.node.as_str()).or_default().extend(n.parse::<u32>().ok());
                }
            }
            let leases: Vec<LeaseReport> = v
                .owners
                .iter()
                .filter(|(_, o)| !o.deleted && now.duration_since(o.seen) < lease)
                .filter(|(k, _)| lease::describe(k).0 != "partition")
                .map(|(k, o)| {
                    *count.entry(o.node.as_str()).or_default() += 1;
                    let (kind, name) = lease::describe(k);
                    LeaseReport { name, kind, key: k.clone(), owner: o.node.clone(), expires_at: at(o.seen) }
                })
                .collect();
            let nodes: Vec<NodeReport> = v
                .members
                .iter()
                .map(|(n, m)| NodeReport {
                    node: n.clone(),
                    alive: now.duration_since(m.seen) < lease,
                    started_at: (m.started_at > 0).then(|| rfc3339(m.started_at)),
                    last_seen_at: rfc3339(wall - now.duration_since(m.seen).as_millis() as i64),
                    leases: count.get(n.as_str()).copied().unwrap_or(0),
                    partitions: {
                        let mut p = parts.get(n.as_str()).cloned().unwrap_or_default();
                        p.sort_unstable();
                        p
                    },
                })
                .collect();
            (nodes, leases, v.last_error.clone())
        };
        let mut leases = leases;
        leases.sort_by(|a, b| a.key.cmp(&b.key));
        // Asked only while connected, and of both streams at once: a node cut from NATS must
        // still answer at once (it did after 2 s per stream, which outlasts the clients and
        // probes that ask a node in trouble what it sees).
        let mut replication = Vec::new();
        if self.connected() {
            let infos = [&self.inner.leases, &self.inner.nodes].map(|store| {
                let mut s = store.stream.clone();
                async move { tokio::time::timeout(Duration::from_secs(1), s.info()).await.ok().and_then(Result::ok).map(replication_of) }
            });
            replication.extend(futures_util::future::join_all(infos).await.into_iter().flatten());
        }
        let info = self.inner.client.server_info();
        ClusterReport {
            node: self.node().to_string(),
            lease_ms: self.inner.config.lease_ms,
            replicas: self.inner.config.replicas,
            nats: NatsReport {
                connected: self.connected(),
                server: (!info.server_name.is_empty()).then(|| info.server_name.clone()),
                url: self.connected().then(|| format!("{}:{}", info.host, info.port)),
                last_error,
            },
            ready: self.ready(),
            nodes,
            leases,
            replication,
        }
    }
}

/// How long a node keeps trying to open or create the hub's buckets and streams at start: a
/// JetStream cluster that has just started, or is electing a leader, answers late.
const OPEN_FOR: Duration = Duration::from_secs(45);

/// Runs `f` until it succeeds, a [`ClusterError::Mismatch`] (not a passing fault), or
/// [`OPEN_FOR`] has passed, pausing 0.5 s doubling to 4 s between tries.
async fn retrying<T, F: std::future::Future<Output = Result<T, ClusterError>>>(what: &str, mut f: impl FnMut() -> F) -> Result<T, ClusterError> {
    let until = Instant::now() + OPEN_FOR;
    let mut pause = Duration::from_millis(500);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e @ ClusterError::Mismatch(_)) => return Err(e),
            Err(e) if Instant::now() + pause >= until => return Err(e),
            Err(e) => {
                warn!(what, error = %e, retry_in = ?pause, "JetStream is not answering yet; trying again.");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
        }
    }
}

/// Reads `stream` in order (the messages under `filter`) until `stop`, or until `each` says
/// [`std::ops::ControlFlow::Break`]. It starts as `first` says (the latest per subject, or
/// everything), after sequence `after` when that is not 0, and after an error re-opens after
/// the last message `each` took, so nothing is read twice or skipped. `each` gets the message,
/// its stream sequence and how many messages were pending after it.
pub(crate) async fn follow_stream(
    stream: &jetstream::stream::Stream,
    filter: String,
    what: &str,
    first: jetstream::consumer::DeliverPolicy,
    after: u64,
    mut stop: presence_actors::provider::Shutdown,
    mut each: impl AsyncFnMut(async_nats::jetstream::Message, u64, u64) -> std::ops::ControlFlow<()>,
) {
    let mut last = after;
    loop {
        let deliver_policy = if last == 0 { first } else { jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence: last + 1 } };
        let config = jetstream::consumer::pull::OrderedConfig { filter_subject: filter.clone(), deliver_policy, ..Default::default() };
        let messages = match stream.create_consumer(config).await {
            Ok(c) => c.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                warn!(what, error = %e, "Cannot read a cluster stream; retrying.");
                tokio::select! {
                    _ = stop.recv() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        loop {
            let m = tokio::select! {
                _ = stop.recv() => return,
                m = messages.next() => m,
            };
            let m = match m {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    warn!(what, error = %e, "Reading a cluster stream failed; re-opening.");
                    break;
                }
                None => break,
            };
            let Ok((seq, pending)) = m.info().map(|i| (i.stream_sequence, i.pending)) else { continue };
            if each(m, seq, pending).await.is_break() {
                return;
            }
            last = seq;
        }
        tokio::select! {
            _ = stop.recv() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Opens a watch of `bucket` that gives the keys as they are, then every change; tries again
/// every half second until it opens or `stop`.
pub(crate) async fn open_watch(bucket: &kv::Store, what: &str, stop: &mut presence_actors::provider::Shutdown) -> Option<kv::Watch> {
    loop {
        match bucket.watch_with_history(">").await {
            Ok(w) => return Some(w),
            Err(e) => {
                warn!(what, error = %e, "Cannot follow a cluster bucket; retrying.");
                tokio::select! {
                    _ = stop.recv() => return None,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
}

/// Opens (or creates) a stream, trying again while JetStream answers late.
pub(crate) async fn open_stream(js: &jetstream::Context, config: jetstream::stream::Config) -> Result<jetstream::stream::Stream, ClusterError> {
    let name = config.name.clone();
    retrying(&name, || {
        let config = config.clone();
        let name = name.clone();
        async move { js.get_or_create_stream(config).await.map_err(|e| ClusterError::JetStream { what: name, message: e.to_string() }) }
    })
    .await
}

/// Opens a bucket (creating it when missing), trying again while JetStream answers late.
pub(crate) async fn open_bucket(js: &jetstream::Context, name: &str, max_age: Duration, replicas: usize) -> Result<kv::Store, ClusterError> {
    retrying(name, || open_bucket_once(js, name, max_age, replicas)).await
}

/// Opens a lease bucket, creating it when missing; refuses one made with another lease or
/// replica count (every node must agree on them).
async fn open_bucket_once(js: &jetstream::Context, name: &str, max_age: Duration, replicas: usize) -> Result<kv::Store, ClusterError> {
    let err = |e: &dyn std::fmt::Display| ClusterError::JetStream { what: format!("bucket {name}"), message: e.to_string() };
    match js.get_key_value(name).await {
        Ok(mut store) => {
            let info = store.stream.info().await.map_err(|e| err(&e))?;
            let c = &info.config;
            if c.max_age != max_age {
                return Err(ClusterError::Mismatch(format!(
                    "bucket {name} keeps keys for {} ms but this node's cluster.lease_ms is {}: every node needs the same lease_ms (or delete the bucket with `nats kv del {name}` while the cluster is down)",
                    c.max_age.as_millis(),
                    max_age.as_millis()
                )));
            }
            if c.num_replicas != replicas {
                warn!(bucket = name, existing = c.num_replicas, configured = replicas, "The bucket exists with another replica count; keeping the existing one.");
            }
            Ok(store)
        }
        Err(_) => {
            // The bucket's stream made directly, as the KV convention has it: `create_key_value`
            // first asks for the account's API level, which Debian's nats-server 2.9 does not
            // report.
            let stream = jetstream::stream::Config {
                name: format!("KV_{name}"),
                subjects: vec![format!("$KV.{name}.>")],
                max_messages_per_subject: 1,
                max_age,
                discard: jetstream::stream::DiscardPolicy::New,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                duplicate_window: max_age.min(Duration::from_secs(120)),
                num_replicas: replicas,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            };
            js.get_or_create_stream(stream).await.map_err(|e| err(&e))?;
            js.get_key_value(name).await.map_err(|e| err(&e))
        }
    }
}

fn replication_of(info: &jetstream::stream::Info) -> ReplicationReport {
    let (leader, replicas) = match &info.cluster {
        Some(c) => (
            c.leader.clone(),
            c.replicas.iter().map(|r| ReplicaReport { server: r.name.clone(), current: r.current, lag: r.lag, active_ms: r.active.as_millis() as u64 }).collect(),
        ),
        None => (None, Vec::new()),
    };
    ReplicationReport { stream: info.config.name.clone(), leader, messages: info.state.messages, replicas }
}

/// `GET /api/cluster`.
#[derive(Debug, Serialize)]
pub struct ClusterReport {
    /// This node.
    pub node: String,
    /// The lease, ms.
    pub lease_ms: u64,
    /// Configured JetStream replicas.
    pub replicas: usize,
    /// The NATS connection.
    pub nats: NatsReport,
    /// Connected and caught up (`/readyz`).
    pub ready: bool,
    /// Every node seen, alive or not.
    pub nodes: Vec<NodeReport>,
    /// Every lease held, with its owner.
    pub leases: Vec<LeaseReport>,
    /// The hub's buckets and streams: leader and replicas with their lag.
    pub replication: Vec<ReplicationReport>,
}

/// The NATS connection.
#[derive(Debug, Serialize)]
pub struct NatsReport {
    /// Connected now.
    pub connected: bool,
    /// The server's name.
    pub server: Option<String>,
    /// Its address.
    pub url: Option<String>,
    /// The last failed NATS call.
    pub last_error: Option<String>,
}

/// A node.
#[derive(Debug, Serialize)]
pub struct NodeReport {
    /// Its name.
    pub node: String,
    /// Renewed its membership within the lease.
    pub alive: bool,
    /// When it started, RFC 3339.
    pub started_at: Option<String>,
    /// When its membership was last renewed, RFC 3339.
    pub last_seen_at: String,
    /// Leases it holds.
    pub leases: usize,
    /// Partitions of the people it owns.
    pub partitions: Vec<u32>,
}

/// A lease.
#[derive(Debug, Serialize)]
pub struct LeaseReport {
    /// The provider's or directory source's name.
    pub name: String,
    /// `provider` or `directory`.
    pub kind: &'static str,
    /// The KV key.
    pub key: String,
    /// The node holding it.
    pub owner: String,
    /// When it expires unless renewed, RFC 3339.
    pub expires_at: String,
}

/// One bucket's or stream's replication.
#[derive(Debug, Serialize)]
pub struct ReplicationReport {
    /// The JetStream stream.
    pub stream: String,
    /// The NATS server leading it.
    pub leader: Option<String>,
    /// Messages held.
    pub messages: u64,
    /// The followers.
    pub replicas: Vec<ReplicaReport>,
}

/// One follower.
#[derive(Debug, Serialize)]
pub struct ReplicaReport {
    /// The NATS server.
    pub server: String,
    /// Caught up with the leader.
    pub current: bool,
    /// Operations behind the leader.
    pub lag: Option<u64>,
    /// Since it was last heard from, ms.
    pub active_ms: u64,
}

/// Rendezvous (highest random weight) hashing: the node that should own `key` among
/// `nodes`. Every node computes the same answer from the same list, and when a node joins or
/// leaves only the keys it wins or held move.
pub fn preferred<'a>(key: &str, nodes: &'a [String]) -> Option<&'a str> {
    nodes.iter().max_by_key(|n| weight(n, key)).map(String::as_str)
}

fn weight(node: &str, key: &str) -> u64 {
    // FNV-1a over node, a separator and key, then a 64-bit finaliser (splitmix64).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain(std::iter::once(0xff)).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Counts for `/metrics`.
pub fn metrics_text(c: &Cluster, out: &mut String) {
    use std::fmt::Write as _;
    let m = c.metrics();
    let alive = c.alive_nodes().len();
    let _ = write!(
        out,
        "# HELP presence_cluster_nats_connected 1 while this node is connected to NATS.\n# TYPE presence_cluster_nats_connected gauge\npresence_cluster_nats_connected {}\n\
         # HELP presence_cluster_nodes_alive Nodes that renewed their membership within the lease.\n# TYPE presence_cluster_nodes_alive gauge\npresence_cluster_nodes_alive {alive}\n\
         # HELP presence_cluster_leases_held Leases (feeds) this node holds.\n# TYPE presence_cluster_leases_held gauge\npresence_cluster_leases_held {}\n\
         # HELP presence_cluster_leases_acquired_total Leases this node took.\n# TYPE presence_cluster_leases_acquired_total counter\npresence_cluster_leases_acquired_total {}\n\
         # HELP presence_cluster_lease_renewals_total Lease renewals.\n# TYPE presence_cluster_lease_renewals_total counter\npresence_cluster_lease_renewals_total {}\n\
         # HELP presence_cluster_lease_renewal_failures_total Lease renewals that failed.\n# TYPE presence_cluster_lease_renewal_failures_total counter\npresence_cluster_lease_renewal_failures_total {}\n\
         # HELP presence_cluster_leases_lost_total Leases lost (not renewed in time, or taken by another node).\n# TYPE presence_cluster_leases_lost_total counter\npresence_cluster_leases_lost_total {}\n",
        u8::from(c.connected()),
        c.held_count(),
        m.leases_acquired.load(Ordering::Relaxed),
        m.lease_renewals.load(Ordering::Relaxed),
        m.lease_renewal_failures.load(Ordering::Relaxed),
        m.leases_lost.load(Ordering::Relaxed),
    );
    if let Some(p) = c.partitions() {
        let pm = p.metrics();
        let _ = write!(
            out,
            "# HELP presence_cluster_partitions_owned Partitions of the people this node owns.\n# TYPE presence_cluster_partitions_owned gauge\npresence_cluster_partitions_owned {}\n\
             # HELP presence_cluster_signals_forwarded_total Signals handed to their person's owner on another node.\n# TYPE presence_cluster_signals_forwarded_total counter\npresence_cluster_signals_forwarded_total {}\n\
             # HELP presence_cluster_signals_received_total Signals taken from other nodes for this node's people.\n# TYPE presence_cluster_signals_received_total counter\npresence_cluster_signals_received_total {}\n\
             # HELP presence_cluster_signals_forward_dropped_total Forwarded signals dropped: too many waiting for an owner.\n# TYPE presence_cluster_signals_forward_dropped_total counter\npresence_cluster_signals_forward_dropped_total {}\n\
             # HELP presence_cluster_changes_published_total Changes of this node's people published to the cluster.\n# TYPE presence_cluster_changes_published_total counter\npresence_cluster_changes_published_total {}\n\
             # HELP presence_cluster_change_publish_failures_total Change publications JetStream did not acknowledge.\n# TYPE presence_cluster_change_publish_failures_total counter\npresence_cluster_change_publish_failures_total {}\n\
             # HELP presence_cluster_changes_consumed_total Changes taken from the cluster's stream into this node's fan-out.\n# TYPE presence_cluster_changes_consumed_total counter\npresence_cluster_changes_consumed_total {}\n\
             # HELP presence_cluster_changes_coalesced_total Changes of this node's people replaced by a newer one before they were published.\n# TYPE presence_cluster_changes_coalesced_total counter\npresence_cluster_changes_coalesced_total {}\n\
             # HELP presence_cluster_changes_skipped_total Changes replaced in the stream (one message per person) before this node read them.\n# TYPE presence_cluster_changes_skipped_total counter\npresence_cluster_changes_skipped_total {}\n",
            p.owned().len(),
            pm.forwarded.load(Ordering::Relaxed),
            pm.received.load(Ordering::Relaxed),
            pm.forward_dropped.load(Ordering::Relaxed),
            pm.published.load(Ordering::Relaxed),
            pm.publish_failures.load(Ordering::Relaxed),
            pm.consumed.load(Ordering::Relaxed),
            pm.coalesced.load(Ordering::Relaxed),
            pm.skipped.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section() -> ClusterSection {
        toml::from_str("nats = [\"nats://127.0.0.1:4222\"]\nnode = \"hub-a\"").expect("parses")
    }

    #[test]
    fn the_section_has_sane_defaults_and_checks_what_it_can() {
        let c = section();
        assert_eq!((c.replicas, c.lease_ms, c.prefix.as_str()), (3, 3000, "ph"));
        assert_eq!(c.validate(), Ok(()));
        let bad = |f: &dyn Fn(&mut ClusterSection)| {
            let mut c = section();
            f(&mut c);
            c.validate().expect_err("refused")
        };
        assert!(bad(&|c| c.nats.clear()).contains("at least one"));
        assert!(bad(&|c| c.nats = vec!["http://x".into()]).contains("nats://"));
        assert!(bad(&|c| c.node = "hub a".into()).contains("cluster.node"));
        assert!(bad(&|c| c.replicas = 0).contains("replicas"));
        assert!(bad(&|c| c.lease_ms = 100).contains("lease_ms"));
        assert!(bad(&|c| c.prefix = "a.b".into()).contains("prefix"));
        assert!(bad(&|c| {
            c.user = Some("hub".into());
        })
        .contains("password"));
        assert!(bad(&|c| {
            c.user = Some("hub".into());
            c.password = Some("x".into());
            c.nkey_file = Some("k".into());
        })
        .contains("exclude"));
        assert!(bad(&|c| c.tls_cert_file = Some("c.pem".into())).contains("go together"));
        assert!(toml::from_str::<ClusterSection>("nats = []\nnode = \"a\"\nleases = 1").is_err(), "unknown keys are refused");
    }

    #[test]
    fn rendezvous_hashing_is_stable_spread_and_moves_only_what_it_must() {
        let three: Vec<String> = ["hub-a", "hub-b", "hub-c"].map(String::from).to_vec();
        let keys: Vec<String> = (0..300).map(|i| format!("part.{i}")).collect();
        let before: Vec<&str> = keys.iter().map(|k| preferred(k, &three).expect("some")).collect();
        for n in &three {
            let c = before.iter().filter(|o| *o == n).count();
            assert!((70..=130).contains(&c), "{n} wins {c} of 300");
        }
        let mut four = three.clone();
        four.push("hub-d".into());
        let after: Vec<&str> = keys.iter().map(|k| preferred(k, &four).expect("some")).collect();
        for (b, a) in before.iter().zip(&after) {
            assert!(a == b || *a == "hub-d", "a key moved from {b} to {a}, not to the newcomer");
        }
        let moved = after.iter().filter(|a| **a == "hub-d").count();
        assert!((45..=105).contains(&moved), "{moved} of 300 moved to the newcomer");
        assert_eq!(preferred("x", &[]), None);
    }
}
