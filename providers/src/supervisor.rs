//! One supervisor for every provider: runs its task, restarts it with back-off when it fails,
//! and stops it gracefully at shutdown.
//!
//! - A provider's task ([`crate::ProviderTask`]) runs until the context's shutdown signal,
//!   finishes its graceful stop and returns `Ok`. Returning `Err`, or panicking, before
//!   shutdown is a failure: the supervisor marks the feed down (its signals show stale, never
//!   Offline), records the error in provider health, waits (1 s doubling to 60 s, with jitter;
//!   back to 1 s after a run of 5 minutes) and builds the task afresh from its config.
//! - [`ProviderHandle::restarter`] lets an admin restart a provider
//!   (`POST /api/providers/{name}/restart`): the running task gets its own stop signal, has
//!   [`RESTART_STOP`] to finish its graceful stop (delete its subscriptions, log out), and a new
//!   one is built from the config at once. Each run has a stop signal of its own that follows the
//!   hub's shutdown, so a restart stops one provider and nothing else.
//! - [`start_gated`] runs a provider only while a [`Gate`] permits it: in a cluster the node
//!   must hold the provider's lease. When the permit is withdrawn the run gets its stop signal
//!   and is aborted at the permit's deadline (the lease's fencing time), so a node that lost
//!   its lease never keeps a subscription another node is about to take.
//! - [`stop_all`] is the shutdown: the hub has triggered the shared shutdown signal; this
//!   waits for every provider to finish its graceful stop until a deadline, then aborts the
//!   rest and names them in the log.
//!
//! Providers are tasks on the hub's runtime rather than actix actors: each owns its state in
//! one `async` loop over `tokio::select!` (timers, sockets, webhook channels), which is what
//! the peers' protocols are — sequences of awaited calls — and what paused tokio time can
//! test. The user actors stay actors; the contract between the two is the
//! [`ProviderContext`]'s sink.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::common::backoff::Backoff;
use crate::{build, BuildError, ProviderConfig, ProviderContext};
use presence_actors::provider::{Shutdown, ShutdownTrigger};

/// First wait before a failed provider is restarted.
const RESTART_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between restarts.
const RESTART_MAX: Duration = Duration::from_secs(60);
/// A run this long counts as healthy: the next failure waits the first delay again.
const HEALTHY_RUN: Duration = Duration::from_secs(300);

/// How long a provider restarted by an admin gets to finish its graceful stop.
pub const RESTART_STOP: Duration = Duration::from_secs(10);

/// Whether a gated provider may run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// It may run (the node holds its lease).
    Run,
    /// It must stop, gracefully if it can, and be gone by `by` at the latest.
    Stop {
        /// When the run is aborted if it has not finished its graceful stop.
        by: tokio::time::Instant,
    },
}

/// The controlling side of a gate ([`start_gated`]): held by whatever grants the permit (the
/// cluster's lease keeper).
#[derive(Debug, Clone)]
pub struct Gate {
    permit: Arc<tokio::sync::watch::Sender<Permit>>,
    running: tokio::sync::watch::Receiver<bool>,
}

/// The provider's side of a gate.
#[derive(Debug)]
pub struct GateRx {
    permit: tokio::sync::watch::Receiver<Permit>,
    running: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    /// A closed gate (nothing runs until [`Gate::open`]) and its provider side.
    pub fn new() -> (Gate, GateRx) {
        let (ptx, prx) = tokio::sync::watch::channel(Permit::Stop { by: tokio::time::Instant::now() });
        let (rtx, rrx) = tokio::sync::watch::channel(false);
        (Gate { permit: Arc::new(ptx), running: rrx }, GateRx { permit: prx, running: rtx })
    }

    /// Lets the provider run.
    pub fn open(&self) {
        self.permit.send_if_modified(|p| std::mem::replace(p, Permit::Run) != Permit::Run);
    }

    /// Withdraws the permit: the run stops gracefully and is aborted at `by`. A later
    /// deadline never replaces an earlier one.
    pub fn close(&self, by: tokio::time::Instant) {
        self.permit.send_if_modified(|p| match *p {
            Permit::Stop { by: old } if old <= by => false,
            _ => {
                *p = Permit::Stop { by };
                true
            }
        });
    }

    /// True while the permit is granted.
    pub fn is_open(&self) -> bool {
        *self.permit.borrow() == Permit::Run
    }

    /// True while a run of the provider is alive (started and not yet stopped or aborted).
    pub fn is_running(&self) -> bool {
        *self.running.borrow()
    }

    /// Waits until no run of the provider is alive.
    pub async fn stopped(&self) {
        let mut r = self.running.clone();
        let _ = r.wait_for(|running| !running).await;
    }
}

impl GateRx {
    /// Waits for the permit; `false` when the controlling side is gone.
    pub async fn permitted(&mut self) -> bool {
        self.permit.wait_for(|p| *p == Permit::Run).await.is_ok()
    }

    /// Waits until the permit is withdrawn; returns its deadline (now, if the controlling
    /// side is gone).
    pub async fn withdrawn(&mut self) -> tokio::time::Instant {
        match self.permit.wait_for(|p| *p != Permit::Run).await {
            Ok(p) => match *p {
                Permit::Stop { by } => by,
                Permit::Run => tokio::time::Instant::now(),
            },
            Err(_) => tokio::time::Instant::now(),
        }
    }

    /// Tells the controlling side whether something runs under the permit.
    pub fn set_running(&self, running: bool) {
        self.running.send_replace(running);
    }
}

/// A running, supervised provider.
pub struct ProviderHandle {
    name: String,
    join: JoinHandle<()>,
    restart: Restarter,
}

/// Asks a supervised provider to restart (cheap to clone, `Send`).
#[derive(Debug, Clone)]
pub struct Restarter(tokio::sync::mpsc::UnboundedSender<()>);

impl Restarter {
    /// Asks for a restart; `false` when the provider is no longer supervised (shut down, or
    /// finished).
    pub fn restart(&self) -> bool {
        self.0.send(()).is_ok()
    }
}

impl ProviderHandle {
    /// What restarts this provider.
    pub fn restarter(&self) -> Restarter {
        self.restart.clone()
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True once the supervisor has ended (after shutdown, or a provider that finished).
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}

/// Builds the provider's task (which checks its config) and runs it under the supervisor on
/// the current (actix or tokio `LocalSet`) runtime.
pub fn start(config: &ProviderConfig, ctx: ProviderContext) -> Result<ProviderHandle, BuildError> {
    let config = config.clone();
    spawn(move |ctx| build(&config, ctx), ctx)
}

/// Checks the provider's config at once, and runs it under the supervisor only while `gate`
/// permits (see [`Gate`]). Each permitted period is one supervised run with its own stop
/// signal (restarts with back-off inside it, as [`start`]); when the permit is withdrawn the
/// feed is marked down and the run is stopped, and aborted at the permit's deadline.
pub fn start_gated(config: &ProviderConfig, ctx: ProviderContext, gate: GateRx) -> Result<ProviderHandle, BuildError> {
    config.validate()?;
    let config = config.clone();
    Ok(spawn_gated(move |ctx| build(&config, ctx), ctx, gate))
}

fn spawn_gated(rebuild: impl Fn(ProviderContext) -> Result<crate::ProviderTask, BuildError> + Clone + 'static, ctx: ProviderContext, gate: GateRx) -> ProviderHandle {
    let name = ctx.name.clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let join = tokio::task::spawn_local(gated(rebuild, ctx, gate, rx));
    ProviderHandle { name, join, restart: Restarter(tx) }
}

/// The loop of [`start_gated`].
async fn gated(
    rebuild: impl Fn(ProviderContext) -> Result<crate::ProviderTask, BuildError> + Clone + 'static,
    ctx: ProviderContext,
    mut gate: GateRx,
    mut restarts: tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        // Wait for the permit.
        tokio::select! {
            _ = shutdown.recv() => return,
            r = gate.permit.wait_for(|p| *p == Permit::Run) => if r.is_err() { return },
        }
        let (stop_period, period_ctx) = for_one_run(&ctx);
        let inner = match spawn(rebuild.clone(), period_ctx) {
            Ok(h) => h,
            Err(e) => {
                // The config was checked at start; a build that fails now fails every time.
                fail(&ctx, &format!("provider could not be built: {e}"));
                return;
            }
        };
        gate.running.send_replace(true);
        info!(provider = %ctx.name, "Provider started: this node holds its lease.");
        let ProviderHandle { mut join, restart, .. } = inner;
        let by = loop {
            tokio::select! {
                _ = shutdown.recv() => {
                    stop_period.trigger();
                    let _ = (&mut join).await;
                    gate.running.send_replace(false);
                    return;
                }
                Some(()) = restarts.recv() => { restart.restart(); }
                r = gate.permit.changed() => {
                    if r.is_err() { break tokio::time::Instant::now(); }
                    if let Permit::Stop { by } = *gate.permit.borrow_and_update() { break by; }
                }
                _ = &mut join => {
                    // The provider finished by itself (Ok before shutdown): it is done.
                    gate.running.send_replace(false);
                    return;
                }
            }
        };
        stop_period.trigger();
        if tokio::time::timeout_at(by, &mut join).await.is_err() {
            join.abort();
            let _ = (&mut join).await;
            warn!(provider = %ctx.name, "The provider did not finish its graceful stop before the lease deadline; aborted.");
        }
        ctx.sink.set_up(false);
        ctx.feed.set_state("standby");
        gate.running.send_replace(false);
        info!(provider = %ctx.name, "Provider stopped: this node no longer holds its lease.");
    }
}

/// Builds the first task with `rebuild` (failing as the build fails) and supervises it.
fn spawn(rebuild: impl Fn(ProviderContext) -> Result<crate::ProviderTask, BuildError> + 'static, ctx: ProviderContext) -> Result<ProviderHandle, BuildError> {
    let (trigger, run_ctx) = for_one_run(&ctx);
    let first = rebuild(run_ctx)?;
    let name = ctx.name.clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let join = tokio::task::spawn_local(supervise(rebuild, ctx, (trigger, first), rx));
    Ok(ProviderHandle { name, join, restart: Restarter(tx) })
}

/// A context for one run: the same, with a stop signal of its own (see the module docs).
fn for_one_run(ctx: &ProviderContext) -> (ShutdownTrigger, ProviderContext) {
    let (trigger, shutdown) = Shutdown::new();
    (trigger, ProviderContext { shutdown, ..ctx.clone() })
}

/// Aborts a spawned task when dropped (the supervisor itself aborted at the deadline).
struct AbortOnDrop(JoinHandle<Result<(), crate::ProviderError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `first`, and after a failure (or an admin's restart) a new task from `rebuild`, until
/// shutdown.
async fn supervise(
    rebuild: impl Fn(ProviderContext) -> Result<crate::ProviderTask, BuildError>,
    ctx: ProviderContext,
    first: (ShutdownTrigger, crate::ProviderTask),
    mut restarts: tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let mut shutdown = ctx.shutdown.clone();
    let mut backoff = Backoff::new(RESTART_FIRST, RESTART_MAX);
    let mut task = Some(first);
    loop {
        if let Some((stop_run, t)) = task.take() {
            let started = tokio::time::Instant::now();
            // Its own task, so a panic ends only this run.
            let mut run = AbortOnDrop(tokio::task::spawn_local(t));
            let outcome = tokio::select! {
                o = &mut run.0 => o,
                _ = shutdown.recv() => {
                    // The hub's shutdown: this run stops gracefully; stop_all holds the deadline.
                    stop_run.trigger();
                    let _ = (&mut run.0).await;
                    return;
                }
                Some(()) = restarts.recv() => {
                    info!(provider = %ctx.name, "Restarting the provider, as an admin asked.");
                    stop_run.trigger();
                    if tokio::time::timeout(RESTART_STOP, &mut run.0).await.is_err() {
                        warn!(provider = %ctx.name, "The provider did not finish its graceful stop in time; aborted.");
                    }
                    drop(run);
                    ctx.feed.set_state("restarting");
                    let (trigger, run_ctx) = for_one_run(&ctx);
                    match rebuild(run_ctx) {
                        Ok(t) => task = Some((trigger, t)),
                        Err(e) => fail(&ctx, &format!("provider could not be rebuilt: {e}")),
                    }
                    continue;
                }
            };
            if ctx.shutdown.is_shutdown() {
                return;
            }
            let why = match outcome {
                Ok(Ok(())) => {
                    info!(provider = %ctx.name, "Provider finished.");
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(e) if e.is_panic() => format!("panicked: {}", panic_text(e.into_panic())),
                Err(_) => "cancelled".to_string(),
            };
            if started.elapsed() >= HEALTHY_RUN {
                backoff.reset();
            }
            fail(&ctx, &format!("provider failed: {why}"));
        }
        let wait = backoff.next_delay();
        warn!(provider = %ctx.name, retry_in = ?wait, "Restarting the provider after a pause.");
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(wait) => {}
            // An admin's restart skips the rest of the pause.
            Some(()) = restarts.recv() => info!(provider = %ctx.name, "Restarting the provider now, as an admin asked."),
        }
        let (trigger, run_ctx) = for_one_run(&ctx);
        match rebuild(run_ctx) {
            Ok(t) => task = Some((trigger, t)),
            Err(e) => fail(&ctx, &format!("provider could not be rebuilt: {e}")),
        }
    }
}

fn fail(ctx: &ProviderContext, why: &str) {
    error!(provider = %ctx.name, reason = %why, "Provider failed; its feed shows stale until it runs again.");
    ctx.feed.record_error(why);
    ctx.feed.set_state("restarting");
    ctx.sink.set_up(false);
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "(no message)".into())
}

/// Waits until every provider has finished its graceful stop (shutdown must already be
/// triggered), at most `deadline` in all; aborts the rest. Returns the names of those aborted.
pub async fn stop_all(providers: Vec<ProviderHandle>, deadline: Duration) -> Vec<String> {
    let until = tokio::time::Instant::now() + deadline;
    let mut aborted = Vec::new();
    for p in providers {
        let ProviderHandle { name, mut join, .. } = p;
        if tokio::time::timeout_at(until, &mut join).await.is_err() {
            join.abort();
            aborted.push(name);
        }
    }
    if aborted.is_empty() {
        info!("Every provider stopped gracefully.");
    } else {
        warn!(aborted = ?aborted, deadline = ?deadline, "Providers did not finish their graceful stop in time; aborted.");
    }
    aborted
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use presence_actors::directory::{Directory, NumberPlan};
    use presence_actors::hub::SinkEvent;

    use super::*;

    /// Runs `test` on a `LocalSet` (providers are local tasks) with a test context named `name`.
    async fn local<F: std::future::Future<Output = ()>>(name: &str, test: impl FnOnce(ProviderContext, presence_actors::provider::TestHarness) -> F) {
        let dir = Directory::build(vec![], &NumberPlan::sweden()).expect("empty directory");
        let (ctx, h) = ProviderContext::for_test(name, dir, "http://127.0.0.1:9");
        tokio::task::LocalSet::new().run_until(test(ctx, h)).await;
    }

    /// A provider that panics twice, then fails once with an error, then runs: the supervisor
    /// restarts it each time after a growing pause (paused time), marks the feed down and
    /// records why, and stops it at shutdown.
    #[tokio::test(start_paused = true)]
    async fn a_failing_provider_is_restarted_with_back_off() {
        local("flaky", |ctx, mut h| async move {
            let runs = Rc::new(Cell::new(0u32));
            let started: Rc<std::cell::RefCell<Vec<tokio::time::Instant>>> = Default::default();
            let make = {
                let (runs, started) = (runs.clone(), started.clone());
                move |ctx: ProviderContext| -> Result<crate::ProviderTask, BuildError> {
                    let (runs, started) = (runs.clone(), started.clone());
                    Ok(Box::pin(async move {
                        runs.set(runs.get() + 1);
                        started.borrow_mut().push(tokio::time::Instant::now());
                        match runs.get() {
                            1 | 2 => panic!("run {} broke", runs.get()),
                            3 => Err(crate::ProviderError::Failed("peer refused".into())),
                            _ => {
                                ctx.sink.set_up(true);
                                let mut s = ctx.shutdown.clone();
                                s.recv().await;
                                Ok(())
                            }
                        }
                    }))
                }
            };
            let handle = spawn(make, ctx.clone()).expect("task");
            // Run 4 brings the feed up.
            loop {
                match tokio::time::timeout(Duration::from_secs(600), h.events.recv()).await.expect("in time").expect("open") {
                    SinkEvent::Feed(true) => break,
                    _ => continue,
                }
            }
            assert_eq!(runs.get(), 4);
            let t = started.borrow().clone();
            let gaps: Vec<Duration> = t.windows(2).map(|w| w[1] - w[0]).collect();
            // 1 s, 2 s, 4 s nominal, each drawn from its upper half.
            for (gap, nominal) in gaps.iter().zip([1u64, 2, 4]) {
                let n = Duration::from_secs(nominal);
                assert!(*gap >= n / 2 && *gap <= n + Duration::from_millis(50), "gap {gap:?} for {n:?}");
            }
            let report = h.feed.report();
            assert_eq!(report.errors, 3);
            assert!(report.last_error.is_some_and(|e| e.contains("peer refused")));
            h.trigger.trigger();
            assert_eq!(stop_all(vec![handle], Duration::from_secs(10)).await, Vec::<String>::new());
        })
        .await;
    }

    /// A gated provider runs only while its permit is granted: nothing before `open`; when
    /// the permit is withdrawn the run gets its stop signal, the feed goes down, and a run
    /// that ignores the signal is aborted exactly at the permit's deadline (fencing); `open`
    /// again starts a new run.
    #[tokio::test(start_paused = true)]
    async fn a_gated_provider_runs_only_while_permitted_and_is_fenced_at_the_deadline() {
        local("pbx", |ctx, mut h| async move {
            let runs = Rc::new(Cell::new(0u32));
            let make = {
                let runs = runs.clone();
                move |ctx: ProviderContext| -> Result<crate::ProviderTask, BuildError> {
                    let runs = runs.clone();
                    Ok(Box::pin(async move {
                        runs.set(runs.get() + 1);
                        ctx.sink.set_up(true);
                        // Ignores its stop signal: only the deadline ends it.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok(())
                    }))
                }
            };
            let (gate, rx) = Gate::new();
            let handle = spawn_gated(make, ctx.clone(), rx);
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(runs.get(), 0, "no run before the permit");
            assert!(!gate.is_running());
            gate.open();
            assert!(matches!(h.events.recv().await, Some(SinkEvent::Feed(true))));
            assert_eq!(runs.get(), 1);
            assert!(gate.is_running());
            let t0 = tokio::time::Instant::now();
            let by = t0 + Duration::from_millis(1500);
            gate.close(by);
            // A later deadline does not replace the earlier one.
            gate.close(t0 + Duration::from_secs(60));
            gate.stopped().await;
            assert_eq!(tokio::time::Instant::now(), by, "aborted at the deadline, not later");
            assert!(matches!(h.events.recv().await, Some(SinkEvent::Feed(false))));
            assert_eq!(h.feed.report().state, "standby");
            gate.open();
            assert!(matches!(h.events.recv().await, Some(SinkEvent::Feed(true))));
            assert_eq!(runs.get(), 2);
            h.trigger.trigger();
            assert_eq!(stop_all(vec![handle], Duration::from_secs(1)).await, vec!["pbx".to_string()]);
        })
        .await;
    }

    /// A provider that ignores shutdown is aborted at the deadline and named.
    #[tokio::test(start_paused = true)]
    async fn a_provider_that_does_not_stop_is_aborted_at_the_deadline() {
        local("stuck", |ctx, h| async move {
            let make = |_ctx: ProviderContext| -> Result<crate::ProviderTask, BuildError> {
                Ok(Box::pin(async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(())
                }))
            };
            let handle = spawn(make, ctx).expect("task");
            h.trigger.trigger();
            let t0 = tokio::time::Instant::now();
            let aborted = stop_all(vec![handle], Duration::from_secs(10)).await;
            assert_eq!(aborted, vec!["stuck".to_string()]);
            assert_eq!(t0.elapsed(), Duration::from_secs(10));
        })
        .await;
    }

    /// An admin's restart stops the running task gracefully through its own stop signal (the
    /// hub's shutdown is not touched), builds a new one at once, and the new one stops at the
    /// hub's shutdown as usual.
    #[tokio::test(start_paused = true)]
    async fn an_admin_restart_stops_the_run_gracefully_and_starts_a_new_one() {
        local("graph", |ctx, h| async move {
            let log: Rc<std::cell::RefCell<Vec<String>>> = Default::default();
            let make = {
                let log = log.clone();
                move |ctx: ProviderContext| -> Result<crate::ProviderTask, BuildError> {
                    let log = log.clone();
                    Ok(Box::pin(async move {
                        let n = log.borrow().iter().filter(|l| l.starts_with("start")).count() + 1;
                        log.borrow_mut().push(format!("start {n}"));
                        let mut s = ctx.shutdown.clone();
                        s.recv().await;
                        // The graceful stop (delete subscriptions…) takes a moment.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        log.borrow_mut().push(format!("stopped {n}"));
                        Ok(())
                    }))
                }
            };
            let handle = spawn(make, ctx.clone()).expect("task");
            tokio::time::sleep(Duration::from_millis(10)).await;
            let t0 = tokio::time::Instant::now();
            assert!(handle.restarter().restart());
            while log.borrow().len() < 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(*log.borrow(), ["start 1", "stopped 1", "start 2"]);
            assert!(t0.elapsed() < Duration::from_secs(2), "no back-off pause after an admin's restart: {:?}", t0.elapsed());
            assert!(!ctx.shutdown.is_shutdown(), "the hub's shutdown is not triggered by a restart");
            h.trigger.trigger();
            assert!(stop_all(vec![handle], Duration::from_secs(10)).await.is_empty());
            assert_eq!(log.borrow().last().map(String::as_str), Some("stopped 2"));
        })
        .await;
    }
}
