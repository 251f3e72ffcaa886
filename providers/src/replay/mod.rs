//! The replay provider: plays a scenario of timed signals from a JSON Lines file.
//!
//! Each line is one event (see `parse.rs` for the format). The provider emits each event at its
//! offset from the start (scaled by `speed`), through the same [`ProviderContext`] sink every
//! real provider uses, so the demo and the tests exercise the real path: identity resolution,
//! shard routing, merge, fan-out. With `loop = true` it starts over at the end, shifting
//! numeric versions so ordering still holds.

mod parse;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tracing::{debug, info, warn};

use crate::{BuildError, ProviderTask};
use presence_actors::model::{now_ms, Signal, Version};
use presence_actors::provider::ProviderContext;

pub use parse::{parse_scenario, ParseIssue, ScenarioEvent, MAX_SCENARIO_BYTES};

/// `type = "replay"` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// Provider name.
    pub name: String,
    /// The scenario file (JSON Lines).
    pub file: PathBuf,
    /// Start over at the end.
    #[serde(default, rename = "loop")]
    pub repeat: bool,
    /// Time scale: 2.0 plays twice as fast.
    #[serde(default = "one")]
    pub speed: f64,
}

fn one() -> f64 {
    1.0
}

impl ReplayConfig {
    /// Checks the settings and that the file parses.
    pub fn validate(&self) -> Result<(), BuildError> {
        if !(self.speed.is_finite() && self.speed > 0.0 && self.speed <= 1000.0) {
            return Err(BuildError::Invalid("speed must be in (0, 1000]".into()));
        }
        let (events, issues) = self.load()?;
        if let Some(i) = issues.first() {
            return Err(BuildError::Invalid(format!("{}: {}", self.file.display(), i)));
        }
        if events.is_empty() {
            return Err(BuildError::Invalid(format!("{} has no events", self.file.display())));
        }
        Ok(())
    }

    fn load(&self) -> Result<(Vec<ScenarioEvent>, Vec<ParseIssue>), BuildError> {
        let io = |e| BuildError::Io { path: self.file.display().to_string(), source: e };
        let meta = std::fs::metadata(&self.file).map_err(io)?;
        if meta.len() > MAX_SCENARIO_BYTES as u64 {
            return Err(BuildError::Invalid(format!(
                "{}: larger than {} bytes",
                self.file.display(),
                MAX_SCENARIO_BYTES
            )));
        }
        let text = std::fs::read_to_string(&self.file).map_err(io)?;
        Ok(parse_scenario(&text))
    }
}

/// The replay task: emits each event at its time; at the end, starts over (`loop = true`) or
/// keeps the feed up with what it sent until shutdown.
pub fn task(config: &ReplayConfig, ctx: ProviderContext) -> Result<ProviderTask, BuildError> {
    let (events, issues) = config.load()?;
    for i in &issues {
        warn!(provider = %ctx.name, file = %config.file.display(), issue = %i, "Skipping a bad scenario line.");
        ctx.feed.record_error(&i.to_string());
    }
    let max_version = events.iter().filter_map(|e| match e.version {
        Some(Version::Num(n)) => Some(n),
        _ => None,
    });
    let span = max_version.max().unwrap_or(0) + 1;
    let replay = Replay { events, round: 0, span, speed: config.speed, repeat: config.repeat, ctx };
    Ok(Box::pin(replay.run()))
}

struct Replay {
    events: Vec<ScenarioEvent>,
    round: u64,
    span: u64,
    speed: f64,
    repeat: bool,
    ctx: ProviderContext,
}

impl Replay {
    fn emit(&self, e: &ScenarioEvent) {
        let now = now_ms();
        let scale = |secs: f64| (secs * 1000.0 / self.speed) as i64;
        let mut s = Signal::new(e.source, &e.instance, e.availability, now);
        s.activity = e.activity.clone();
        s.note = e.note.clone();
        s.ooo = e.ooo;
        s.valid_from = e.starts_in.map(|d| now + scale(d));
        s.valid_until = e.valid_for.map(|d| now + scale(e.starts_in.unwrap_or(0.0) + d));
        s.version = match &e.version {
            Some(Version::Num(n)) => Some(Version::Num(n + self.round * self.span)),
            other => other.clone(),
        };
        s.detail = e.detail.clone();
        if let Err(err) = self.ctx.sink.send(&e.who, s) {
            debug!(provider = %self.ctx.name, who = %e.who, error = %err, "Replay event not delivered.");
        }
    }

    async fn run(mut self) -> Result<(), crate::ProviderError> {
        let mut shutdown = self.ctx.shutdown.clone();
        info!(provider = %self.ctx.name, events = self.events.len(), "Replay provider starting.");
        self.ctx.sink.set_up(true);
        'rounds: loop {
            let started = tokio::time::Instant::now();
            for i in 0..self.events.len() {
                let at = started + Duration::from_secs_f64((self.events[i].at / self.speed).clamp(0.0, 1e9));
                tokio::select! {
                    _ = shutdown.recv() => break 'rounds,
                    _ = tokio::time::sleep_until(at) => {}
                }
                self.emit(&self.events[i]);
            }
            if !self.repeat {
                info!(provider = %self.ctx.name, "Replay finished.");
                shutdown.recv().await;
                break;
            }
            self.round += 1;
        }
        self.ctx.sink.set_up(false);
        Ok(())
    }
}
