//! presence-hub: a presence hub for switchboards.
//!
//! It collects presence from Teams, Skype for Business, calendars, PBX extension state,
//! mobile-operator call state and manual absences, merges it per person with a documented
//! policy, and pushes the merged state — with its reasons and its age — to attendant consoles,
//! a web directory, SIP BLF clients and webhooks.
//!
//! Layout (this crate is wiring only; the model and actors live in `presence-actors`, the
//! sources in `presence-providers`):
//! - [`config`]: the TOML configuration and its validation.
//! - [`tokens`]: roles, callers and bearer tokens (the HTTP extractors are in [`http::auth`]).
//! - [`signin`]: OpenID Connect sign-in and the sessions that follow (`[auth.oidc]`).
//! - [`audit`]: the audit log (every write and security event).
//! - [`reload`]: reloading the configuration file while running (SIGHUP, `POST /api/config/reload`).
//! - [`store`]: the embedded SQLite store (directory, absences, cursors, snapshot).
//! - [`http`]: the JSON API, streams and operations endpoints ([`http::configure`]).
//! - [`sip_server`]: the hub's SIP presence server (`[sip]`): PUBLISH in, NOTIFY out.
//! - [`cluster`]: one node of a cluster of hubs on NATS JetStream (`[cluster]`).
//! - [`cli`]: what only the command line needs: the built-in demo (`demo` feature) and the
//!   benchmark commands.
//! - [`run`]: start-up, serving, graceful shutdown.

pub mod audit;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod http;
pub mod reload;
pub mod signin;
pub mod sip_server;
pub mod store;
pub mod sync;
pub mod tls;
pub mod tokens;

use std::future::Future;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use tracing::{info, warn};

use crate::tokens::{Role, Tokens};
use crate::config::Config;
use crate::http::AppState;
use crate::store::Store;
use presence_actors::directory::{import, Directory, Person};
use presence_actors::hub::{Hub, HubConfig};
use presence_actors::model::now_ms;
use presence_actors::provider::{Cursors, ProviderContext, Shutdown};
use presence_actors::shard::ShardConfig;
use presence_actors::wire::PresenceIn;

/// Why the hub could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    /// The directory could not be imported or built.
    #[error("directory: {0}")]
    Directory(String),
    /// `[auth.oidc]` cannot be used (its client secret file cannot be read…).
    #[error("sign-in: {0}")]
    SignIn(String),
    /// A provider could not start.
    #[error("provider {name}: {message}")]
    Provider {
        /// Provider name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The HTTP server failed.
    #[error("http: {0}")]
    Http(#[from] std::io::Error),
    /// `[http] tls_cert_file` / `tls_key_file` cannot be used.
    #[error("https: {0}")]
    Tls(#[from] tls::TlsError),
    /// `[cluster]`: NATS cannot be reached or its buckets cannot be used.
    #[error("cluster: {0}")]
    Cluster(#[from] cluster::ClusterError),
}

/// How to run. The default is a deployment: everything comes from the config. The built-in
/// demo (`cli::demo::run_options`, with the `demo` feature) fills in the rest.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Running the built-in demo (`GET /api/ui` says so).
    pub demo: bool,
    /// The directory (CSV) to store and use when the config imports none and the store holds
    /// none: the demo company.
    pub demo_directory: Option<&'static str>,
    /// Tokens in clear, with their roles, that replace `[[tokens]]` and that the sign-in page
    /// offers: the demo's documented tokens.
    pub demo_tokens: Vec<(Role, String)>,
    /// When `[sip] listen`'s port is taken, listen on one the OS picks instead of failing (the
    /// demo: 5060 when it is free). A deployment fails, so a misconfiguration is seen.
    pub sip_any_port_when_taken: bool,
    /// Called once the hub serves, with the addresses it serves on (the demo prints its banner).
    pub on_ready: Option<OnReady>,
    /// The configuration file the hub was started with, for reloads (SIGHUP,
    /// `POST /api/config/reload`); `None` in the demo.
    pub config_file: Option<std::path::PathBuf>,
}

/// Where the hub serves, once it does.
#[derive(Debug, Clone, Copy)]
pub struct Serving {
    /// The HTTP listener.
    pub http: std::net::SocketAddr,
    /// The SIP presence server (UDP and TCP), when `[sip]` is enabled.
    pub sip: Option<std::net::SocketAddr>,
    /// The SIP presence server's TLS listener, with `[sip] tls_listen`.
    pub sip_tls: Option<std::net::SocketAddr>,
}

/// A callback for [`RunOptions::on_ready`].
#[derive(Clone)]
pub struct OnReady(pub Arc<dyn Fn(&Serving) + Send + Sync>);

impl std::fmt::Debug for OnReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnReady(..)")
    }
}

/// Cursors kept in the store.
struct StoreCursors(Store);

impl Cursors for StoreCursors {
    fn get(&self, provider: &str, key: &str) -> Option<String> {
        self.0.cursor(provider, key).ok().flatten()
    }
    fn set(&self, provider: &str, key: &str, value: &str) {
        if let Err(e) = self.0.set_cursor(provider, key, value) {
            warn!(provider, key, error = %e, "Could not save a provider cursor.");
        }
    }
}

/// Reads a directory file (CSV or JSON by extension).
pub fn read_directory_file(path: &Path, config: &Config) -> Result<Vec<Person>, RunError> {
    let plan = config.directory.number_plan.plan();
    let f = std::fs::File::open(path).map_err(|e| RunError::Directory(format!("{}: {e}", path.display())))?;
    let json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let r = if json { import::from_json(f, &plan) } else { import::from_csv(f, &plan) };
    r.map_err(|e| RunError::Directory(format!("{}: {e}", path.display())))
}

/// Replaces the stored directory with `people` if it differs; returns true if it did.
pub fn save_directory(store: &Store, people: &[Person]) -> Result<bool, RunError> {
    let rows: Vec<(String, String)> = people
        .iter()
        .map(|p| (p.id.to_string(), serde_json::to_string(p).unwrap_or_default()))
        .collect();
    if store.load_directory()? == rows {
        return Ok(false);
    }
    store.replace_directory(&rows)?;
    Ok(true)
}

/// Builds the directory: from the configured import file (stored when it changed), else from
/// the store (streamed: people are packed as they are read), else — for the demo — from
/// [`RunOptions::demo_directory`].
fn load_directory(store: &Store, config: &Config, opts: &RunOptions) -> Result<Directory, RunError> {
    let plan = config.directory.number_plan.plan();
    let dir_err = |e: presence_actors::directory::DirectoryError| RunError::Directory(e.to_string());
    if let Some(path) = &config.directory.import {
        let people = read_directory_file(path, config)?;
        if save_directory(store, &people)? {
            info!(people = people.len(), file = %path.display(), "Directory imported.");
        }
        return Directory::build(people, &plan).map_err(dir_err);
    }
    if let (0, Some(csv)) = (store.directory_len()?, opts.demo_directory) {
        let people = import::from_csv(csv.as_bytes(), &plan)
            .map_err(|e| RunError::Directory(format!("demo directory: {e}")))?;
        save_directory(store, &people)?;
        return Directory::build(people, &plan).map_err(dir_err);
    }
    let expected = store.directory_len()?;
    store
        .with_people(|rows| {
            let people = rows.filter_map(|(id, json)| match serde_json::from_str::<Person>(&json) {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(person = %id, error = %e, "Skipping an unreadable stored person.");
                    None
                }
            });
            Directory::build_streaming(people, expected, &plan)
        })?
        .map_err(dir_err)
}

/// Starts the hub on `listener` and serves until `shutdown` completes. Must run inside an
/// actix `System` (e.g. `#[actix_web::main]` or `actix_rt::System::new().block_on`).
pub async fn run(
    config: Config,
    opts: RunOptions,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let t0 = std::time::Instant::now();
    // First, so a bad certificate stops the start before anything else runs.
    let tls = match (&config.http.tls_cert_file, &config.http.tls_key_file) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let store = Store::open(&config.data_dir)?;
    // Joined before anything starts: a node that cannot reach NATS must not run feeds.
    let cluster = match &config.cluster {
        Some(c) => Some(cluster::Cluster::join(c).await?),
        None => None,
    };
    let directory = load_directory(&store, &config, &opts)?;
    release_free_memory();
    let shards = config.hub.shards.unwrap_or_else(|| HubConfig::default().shards);
    let hub_config = HubConfig {
        shards,
        shard: ShardConfig {
            mailbox: config.hub.shard_mailbox,
            user_mailbox: config.hub.user_mailbox,
            tick: Duration::from_millis(config.hub.tick_ms),
            max_live: config.hub.max_live_actors.div_ceil(shards.max(1)),
        },
        replay_buffer: config.hub.replay_buffer,
    };
    let hub = Hub::start(&hub_config, directory, config.policy.clone());
    if cluster.is_none() {
        restore(&hub, &store).await?;
    }

    let (trigger, stop) = Shutdown::new();
    let http_client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| RunError::Provider { name: "http".into(), message: e.to_string() })?;
    // In a cluster a provider's cursors (subscription ids, rotated tokens) follow the feed to
    // whichever node runs it.
    let cursors: Arc<dyn Cursors> = match &cluster {
        Some(c) => cluster::cursors::ClusterCursors::start(c, stop.clone()).await?,
        None => Arc::new(StoreCursors(store.clone())),
    };
    let hooks = presence_actors::provider::Hooks::default();
    let hub_url = config.http.base_url(listener.local_addr()?);
    let mut providers = Vec::new();
    let mut keeper = cluster.as_ref().map(|c| {
        let mut k = cluster::lease::Keeper::new(c.clone());
        k.watch_feeds(hub.clone());
        k
    });
    if let (Some(c), Some(k)) = (&cluster, &mut keeper) {
        // People are partitioned before any feed runs: a signal finds its owner from the start.
        c.start_partitions(&hub, &store, k, stop.clone()).await?;
    }
    for p in &config.providers {
        let feed = hub.feeds().register(p.name(), p.kind());
        let ctx = ProviderContext {
            name: p.name().to_string(),
            sink: hub.sink(feed.clone()),
            feed,
            shutdown: stop.clone(),
            http: http_client.clone(),
            cursors: cursors.clone(),
            hooks: hooks.clone(),
            hub_url: hub_url.clone(),
        };
        let handle = match &mut keeper {
            // In a cluster a provider runs only on the node holding its lease.
            Some(k) => {
                let (gate, rx) = presence_providers::supervisor::Gate::new();
                ctx.feed.set_state("standby");
                k.add(cluster::lease::LeaseKind::Provider, p.name(), gate);
                presence_providers::supervisor::start_gated(p, ctx, rx)
            }
            None => presence_providers::start(p, ctx),
        };
        providers.push(handle.map_err(|e| RunError::Provider { name: p.name().into(), message: e.to_string() })?);
    }

    // Directory sync: the sources' first passes start now; nothing is applied until each has
    // completed one.
    // In a cluster the sources are read on the node holding directory sync's lease, and every
    // node applies the versions it publishes.
    let link = match (&cluster, &mut keeper) {
        (Some(c), Some(k)) if !config.directory.effective_sources().is_empty() => Some(cluster::directory::start(c, &hub, &store, k, stop.clone()).await?),
        _ => None,
    };
    let sync = sync::DirectorySync::start(hub.clone(), store.clone(), &config.directory, stop.clone(), link).map_err(RunError::Directory)?;
    let (sync, sync_tasks) = match sync {
        Some((s, t)) => (Some(s), t),
        None => (None, Vec::new()),
    };

    let api_feed = hub.feeds().get(0).expect("feed 0 is registered by Feeds::default");
    let tokens = if !opts.demo_tokens.is_empty() {
        Tokens::in_clear(opts.demo_tokens.iter().map(|(r, t)| (*r, t.as_str())))
    } else {
        Tokens::new(config.tokens.iter().map(|t| (t.name.as_str(), t.role, t.sha256.as_str())))
    };
    for g in &config.web.groups {
        let dir = hub.directory();
        let unknown: Vec<&str> = g.members.iter().map(String::as_str).filter(|m| dir.by_id(m).or_else(|| dir.resolve(m)).is_none()).collect();
        if !unknown.is_empty() {
            warn!(group = %g.name, unknown = ?unknown, "Web lamp group names people the directory does not know; they are left out.");
        }
    }
    if tokens.is_empty() {
        warn!("No API tokens are configured: every API request will be refused.");
    }
    let signin = match &config.auth.oidc {
        Some(o) => Some(Arc::new(signin::SignIn::new(o.clone(), config.http.public_url.as_deref()).map_err(RunError::SignIn)?)),
        None => None,
    };
    let idle_minutes = config.auth.oidc.as_ref().map_or(120, |o| o.idle_minutes);
    let sessions = Arc::new(signin::sessions::Sessions::load(store.clone(), idle_minutes, now_ms())?);
    if let Some(c) = &cluster {
        c.start_signin(sessions.clone(), stop.clone()).await?;
    }
    let workers = config.http.workers.unwrap_or(2).clamp(1, 64);
    let restarters = providers.iter().map(|p: &presence_providers::supervisor::ProviderHandle| (p.name().to_string(), p.restarter())).collect();
    // The text the running configuration came from, to tell what a reload changes.
    let config_text = opts.config_file.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
    let keeper = match (&cluster, keeper) {
        (Some(c), Some(k)) => {
            c.start_watchers(stop.clone());
            cluster::hooks::serve(c, hooks.clone(), config.providers.iter().map(|p| p.name().to_string()).collect(), stop.clone());
            Some(actix_web::rt::spawn(k.run(stop.clone())))
        }
        _ => None,
    };
    let state = web::Data::new(AppState {
        cluster: cluster.clone(),
        config_file: opts.config_file.clone().map(|p| (p, std::sync::Mutex::new(config_text.unwrap_or_default()))),
        restarters,
        signin,
        sessions,
        audit: Arc::new(audit::Audit::new(store.clone())),
        api_sink: hub.sink(api_feed),
        sync,
        hub: hub.clone(),
        store: store.clone(),
        tokens: std::sync::RwLock::new(tokens),
        config: Arc::new(config.clone()),
        ready: Default::default(),
        demo: opts.demo,
        demo_tokens: opts.demo_tokens,
        hooks,
    });
    let sip_server = if config.sip.enabled {
        let feed = hub.feeds().register("sip", "sip_publish");
        let start = |sip: sip_server::SipSection| sip_server::server::SipServer::start(sip, hub.live_directory().clone(), hub.fanout().clone(), hub.sink(feed.clone()));
        let server = match start(config.sip.clone()) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && opts.sip_any_port_when_taken => {
                let mut sip = config.sip.clone();
                sip.listen.set_port(0);
                if let Some(tls) = &mut sip.tls_listen {
                    tls.set_port(0);
                }
                let s = start(sip);
                if let Ok(s) = &s {
                    info!(taken = %config.sip.listen, listen = %s.local, tls = ?s.tls_local, "A SIP port (UDP/TCP or TLS) is taken; the SIP presence server listens on free ones instead.");
                }
                s
            }
            s => s,
        };
        Some(server.map_err(|e| RunError::Provider { name: "sip".into(), message: format!("SIP server on {}: {e}", config.sip.listen) })?)
    } else {
        None
    };
    let persister = actix_web::rt::spawn(persist_loop(
        hub.clone(),
        store.clone(),
        state.audit.clone(),
        Duration::from_millis(config.snapshot.interval_ms),
        config.audit.retention_days,
        stop.clone(),
    ));

    let st = state.clone();
    let server = HttpServer::new(move || App::new().wrap(actix_web::middleware::Compress::default()).configure(http::configure(st.clone())))
        .workers(workers)
        // Stream frames are small and go out one by one: with Nagle's algorithm on, a frame
        // written while the previous one is unacknowledged waits for the client's delayed ACK
        // (up to 40 ms on Linux; BENCHMARKS.md, "Cluster").
        .tcp_nodelay(true)
        .disable_signals()
        .shutdown_timeout(5);
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    let addr = server.addrs().first().copied();
    let server = server.run();
    let handle = server.handle();
    state.ready.store(true, Ordering::Release);
    info!(
        listen = ?addr,
        people = hub.directory().count(),
        shards = hub.shard_count(),
        startup_ms = t0.elapsed().as_millis() as u64,
        "presence-hub is ready."
    );
    let server_task = actix_web::rt::spawn(server);
    #[cfg(unix)]
    let reloader = actix_web::rt::spawn(reload_on_sighup(state.clone()));
    if let (Some(on_ready), Some(http)) = (&opts.on_ready, addr) {
        (on_ready.0)(&Serving { http, sip: sip_server.as_ref().map(|s| s.local), sip_tls: sip_server.as_ref().and_then(|s| s.tls_local) });
    }
    shutdown.await;
    #[cfg(unix)]
    reloader.abort();
    info!("Shutting down.");
    trigger.trigger();
    // Providers finish their graceful stop (each within the deadline) while the HTTP server
    // drains; whatever is left at the deadline is aborted and named in the log.
    let stop_deadline = Duration::from_secs(config.hub.provider_stop_secs);
    let (_, _) = futures_util::join!(presence_providers::stop_all(providers, stop_deadline), async {
        handle.stop(true).await;
        let _ = server_task.await;
    });
    if let Some(k) = keeper {
        // The providers have stopped: the leases are given back so others take over at once.
        let _ = tokio::time::timeout(Duration::from_secs(5), k).await;
    }
    for t in sync_tasks {
        // Each stops at the shutdown signal; a pass in flight is abandoned (nothing half
        // applied: the store and the hub only ever take whole versions).
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    if let Some(s) = sip_server {
        actix_web::rt::task::spawn_blocking(move || s.stop()).await.ok();
    }
    let _ = persister.await;
    persist_once(&hub, &store).await;
    hub.stop();
    info!("Stopped.");
    Ok(())
}

/// Hands memory freed after start-up (parsed rows, import buffers) back to the OS, so the
/// resident size reflects what the hub holds, not what it once parsed.
pub fn release_free_memory() {
    // SAFETY: mi_collect only frees mimalloc's own unused pages; no preconditions. Harmless
    // when mimalloc is not the global allocator (its heaps are then empty).
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Puts back the snapshot (stale) and the stored absences.
pub(crate) async fn restore(hub: &Hub, store: &Store) -> Result<(), RunError> {
    let dir = hub.directory().clone();
    let now = now_ms();
    let mut views = Vec::new();
    for (id, json, _at) in store.load_snapshot()? {
        let Some(idx) = dir.by_id(&id) else { continue };
        match serde_json::from_str::<PresenceIn>(&json) {
            Ok(p) => views.push((idx, p.into_view().1)),
            Err(e) => warn!(person = %id, error = %e, "Skipping an unreadable snapshot row."),
        }
    }
    let mut absences = Vec::new();
    for a in store.load_absences(now)? {
        if let Some(idx) = dir.by_id(&a.user_id) {
            absences.push((idx, a.to_absence()));
        }
    }
    info!(views = views.len(), absences = absences.len(), "Restored the last known state.");
    hub.restore(views, absences).await;
    release_free_memory();
    Ok(())
}

/// Reloads the configuration file at each SIGHUP (see [`reload`]), as `systemctl reload` does.
#[cfg(unix)]
async fn reload_on_sighup(state: web::Data<AppState>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        warn!("Cannot listen for SIGHUP; reload with POST /api/config/reload instead.");
        return;
    };
    while hup.recv().await.is_some() {
        let system = tokens::Caller::token("system", Role::Admin);
        let _ = http::admin::reload_config(&state, &system, None, "signal").await;
    }
}

/// How long ended absences stay in the store (for "who was away yesterday" questions).
const KEEP_ENDED_ABSENCES_MS: i64 = 30 * 24 * 3600 * 1000;

/// Writes changed presence to the store every `every` until shutdown, and hourly purges
/// absences that ended more than [`KEEP_ENDED_ABSENCES_MS`] ago and audit entries older than
/// `audit_days`.
async fn persist_loop(hub: Hub, store: Store, audit: Arc<audit::Audit>, every: Duration, audit_days: u32, mut stop: Shutdown) {
    let mut tick = actix_web::rt::time::interval(every);
    let mut hourly = actix_web::rt::time::interval(Duration::from_secs(3600));
    let mut minutely = actix_web::rt::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => persist_once(&hub, &store).await,
            _ = minutely.tick() => {
                let a = audit.clone();
                let _ = web::block(move || a.flush_signals(now_ms(), false)).await;
            }
            _ = hourly.tick() => {
                let st = store.clone();
                match web::block(move || {
                    audit::purge(&st, audit_days, now_ms());
                    st.purge_absences(now_ms() - KEEP_ENDED_ABSENCES_MS)
                })
                .await
                {
                    Ok(Ok(n)) if n > 0 => info!(purged = n, "Purged old absences."),
                    Ok(Err(e)) => warn!(error = %e, "Could not purge old absences."),
                    _ => {}
                }
            }
            _ = stop.recv() => {
                let _ = web::block(move || audit.flush_signals(now_ms(), true)).await;
                break;
            }
        }
    }
}

async fn persist_once(hub: &Hub, store: &Store) {
    let (changes, seq) = hub.fanout().unpersisted();
    if changes.is_empty() {
        hub.fanout().mark_persisted(seq);
        return;
    }
    let dir = hub.directory().clone();
    let rows: Vec<(String, String)> = changes
        .iter()
        .filter_map(|c| dir.person(c.user).map(|p| (p.id().to_string(), presence_actors::wire::presence_json(p.id(), &c.view))))
        .collect();
    let n = rows.len() as u64;
    let store = store.clone();
    match web::block(move || store.save_snapshot(&rows, now_ms())).await {
        Ok(Ok(())) => {
            hub.fanout().mark_persisted(seq);
            hub.metrics().snapshot_rows_written.fetch_add(n, Ordering::Relaxed);
        }
        Ok(Err(e)) => warn!(error = %e, "Could not write the presence snapshot; will retry."),
        Err(e) => warn!(error = %e, "Snapshot task failed; will retry."),
    }
}
