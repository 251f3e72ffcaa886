//! Subscriber actors: one per stream client (WebSocket, SSE, benchmark sink).
//!
//! A subscriber owns a bounded [`Outbox`] registered with the [`FanOut`] and a [`FrameSink`]
//! that writes frames to its client. The outbox wakes the actor (one `Wake` at a time);
//! the actor drains it, turns the changes into frames and writes them while holding its
//! mailbox (`ctx.wait`), so a slow client back-pressures only itself: its outbox fills and
//! coalesces to the latest state per person.
//!
//! Stream protocol (every frame is one JSON object with a `type`):
//! - `snapshot` `{seq, part, last, presence:[…]}` — full state of the filter as of `seq`,
//!   in parts of at most [`SNAPSHOT_PART`] people;
//! - `resumed` `{seq, from}` — the client's `since` was still in the replay buffer; the
//!   missed deltas follow;
//! - `delta` `{seq, presence:{…}}` — one person changed; `seq` strictly increases;
//! - `lagged` `{seq, coalesced}` — the client fell behind; the latest state of each person
//!   who changed follows as deltas;
//! - `heartbeat` `{seq}` — sent when idle, every heartbeat interval;
//! - `error` `{error, detail}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;

use crate::directory::{Directory, UserIdx};
use crate::live::LiveDirectory;
use crate::fanout::{Batch, Change, FanOut, Filter, FilterError, Latest, Outbox, Start};
use crate::metrics::Metrics;
use crate::model::MergedView;
use crate::wire::presence_json;

/// People per snapshot frame.
pub const SNAPSHOT_PART: usize = 500;

/// Kind of frame, for sinks that label them (SSE `event:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Snapshot part.
    Snapshot,
    /// Resume notice.
    Resumed,
    /// One change.
    Delta,
    /// A person left the directory.
    Removed,
    /// Lag notice.
    Lagged,
    /// Idle heartbeat.
    Heartbeat,
    /// Error.
    Error,
}

impl FrameKind {
    /// The `type` / SSE event name.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Snapshot => "snapshot",
            FrameKind::Resumed => "resumed",
            FrameKind::Delta => "delta",
            FrameKind::Removed => "removed",
            FrameKind::Lagged => "lagged",
            FrameKind::Heartbeat => "heartbeat",
            FrameKind::Error => "error",
        }
    }
}

/// One frame: JSON text plus what sinks need to label it.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Kind.
    pub kind: FrameKind,
    /// The sequence number it brings the client to.
    pub seq: u64,
    /// JSON text.
    pub data: String,
    /// When the signal behind a delta entered the hub (for latency measurement).
    pub ingest: Option<Instant>,
}

/// The client went away.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the stream client is gone")]
pub struct SinkClosed;

/// Writes frames to a client. Taken by value and handed back, so the write can be awaited
/// inside the actor without borrowing it.
pub trait FrameSink: Sized + Unpin + 'static {
    /// Writes the frames in order.
    fn write(self, frames: Vec<Frame>) -> LocalBoxFuture<'static, Result<Self, SinkClosed>>;
    /// Called once when the subscriber stops.
    fn close(self) {}
}

/// Wakes the subscriber: its outbox has something.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

/// Sets what the subscriber watches and where it starts.
#[derive(Message)]
#[rtype(result = "Result<(), FilterError>")]
pub struct SetFilter {
    /// The filter.
    pub filter: Filter,
    /// Resume after this sequence number, if the replay buffer still has it.
    pub since: Option<u64>,
}

/// Sends an error frame to the client (bad client message).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientError {
    /// Short error code.
    pub error: String,
    /// Human-readable detail.
    pub detail: String,
}

/// Stops the subscriber.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

/// One stream client.
pub struct Subscriber<S: FrameSink> {
    fanout: Arc<FanOut>,
    directory: Arc<LiveDirectory>,
    metrics: Arc<Metrics>,
    sink: Option<S>,
    outbox: Arc<Outbox>,
    id: u64,
    heartbeat: Duration,
    last_write: Instant,
}

impl<S: FrameSink> Subscriber<S> {
    /// Starts a subscriber on the current arbiter with an outbox of `capacity` changes.
    pub fn start(
        fanout: Arc<FanOut>,
        directory: Arc<LiveDirectory>,
        metrics: Arc<Metrics>,
        sink: S,
        capacity: usize,
        heartbeat: Duration,
    ) -> Addr<Self> {
        Subscriber::create(move |ctx| {
            // Weak: the fan-out registry must not keep a dead client's actor alive.
            let weak = ctx.address().downgrade();
            let outbox = Outbox::new(
                capacity,
                Box::new(move || {
                    if let Some(a) = weak.upgrade() {
                        // At most one Wake is outstanding; if the mailbox is full anyway the
                        // heartbeat tick drains.
                        let _ = a.try_send(Wake);
                    }
                }),
            );
            let id = fanout.subscribe(outbox.clone());
            Subscriber {
                fanout,
                directory,
                metrics,
                sink: Some(sink),
                outbox,
                id,
                heartbeat,
                last_write: Instant::now(),
            }
        })
    }

    fn delta(c: &Change) -> Frame {
        if c.removed {
            return Self::removed(c.seq, &c.json);
        }
        Self::delta_json(c.seq, &c.json, c.ingest)
    }

    /// `{"type":"removed","seq":…,"presence":{"id":…}}`: the person left the directory.
    fn removed(seq: u64, json: &str) -> Frame {
        Frame { kind: FrameKind::Removed, seq, data: format!("{{\"type\":\"removed\",\"seq\":{seq},\"presence\":{json}}}"), ingest: None }
    }

    fn delta_json(seq: u64, json: &str, ingest: Option<Instant>) -> Frame {
        let mut data = String::with_capacity(json.len() + 48);
        data.push_str("{\"type\":\"delta\",\"seq\":");
        data.push_str(&seq.to_string());
        data.push_str(",\"presence\":");
        data.push_str(json);
        data.push('}');
        Frame { kind: FrameKind::Delta, seq, data, ingest }
    }

    /// A delta encoded from a person's latest view (resume, coalesced catch-up).
    fn delta_latest(dir: &Directory, l: &Latest) -> Option<Frame> {
        if let Some(id) = &l.gone {
            return Some(Self::removed(l.seq, &crate::wire::removed_json(id)));
        }
        let p = dir.person(l.user)?;
        Some(Self::delta_json(l.seq, &presence_json(p.id(), &l.view), None))
    }

    fn notice(kind: FrameKind, seq: u64, extra: &str) -> Frame {
        Frame { kind, seq, data: format!("{{\"type\":\"{}\",\"seq\":{seq}{extra}}}", kind.as_str()), ingest: None }
    }

    fn snapshot_frames(&self, seq: u64, changes: Vec<Latest>, unseen: Vec<UserIdx>) -> Vec<Frame> {
        let unknown = MergedView::default();
        let directory = self.directory.current();
        // Encoded straight into the parts: a 100k-person snapshot never exists twice.
        let known = changes.iter().filter(|c| c.gone.is_none()).filter_map(|c| Some(presence_json(directory.person(c.user)?.id(), &c.view)));
        let fresh = unseen.iter().filter_map(|u| directory.person(*u)).map(|p| presence_json(p.id(), &unknown));
        // Counted without decoding anyone: `contains` only checks the slot.
        let total = changes.iter().filter(|c| c.gone.is_none() && directory.contains(c.user)).count()
            + unseen.iter().filter(|u| directory.contains(**u)).count();
        let parts = total.div_ceil(SNAPSHOT_PART).max(1);
        let mut items = known.chain(fresh);
        let mut frames = Vec::with_capacity(parts);
        for part in 0..parts {
            let mut data = format!("{{\"type\":\"snapshot\",\"seq\":{seq},\"part\":{part},\"last\":{},\"presence\":[", part + 1 == parts);
            for (i, it) in items.by_ref().take(SNAPSHOT_PART).enumerate() {
                if i > 0 {
                    data.push(',');
                }
                data.push_str(&it);
            }
            data.push_str("]}");
            frames.push(Frame { kind: FrameKind::Snapshot, seq, data, ingest: None });
        }
        frames
    }

    fn write(&mut self, frames: Vec<Frame>, ctx: &mut Context<Self>) {
        if frames.is_empty() {
            return;
        }
        let Some(sink) = self.sink.take() else { return };
        let n = frames.len() as u64;
        self.metrics.frames_sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        self.last_write = Instant::now();
        ctx.wait(sink.write(frames).into_actor(self).map(|res, act, ctx| match res {
            Ok(sink) => act.sink = Some(sink),
            Err(SinkClosed) => ctx.stop(),
        }));
    }

    fn drain(&mut self, ctx: &mut Context<Self>) {
        let frames = match self.fanout.drain(&self.outbox) {
            Batch::Changes(cs) => cs.iter().map(|c| Self::delta(c)).collect(),
            Batch::Coalesced(cs, folded) => {
                let seq = cs.last().map_or(0, |c| c.seq);
                let mut f = vec![Self::notice(FrameKind::Lagged, seq, &format!(",\"coalesced\":{folded}"))];
                // One directory version for the whole batch (taking it costs a lock).
                let dir = self.directory.current();
                f.extend(cs.iter().filter_map(|c| Self::delta_latest(&dir, c)));
                f
            }
        };
        self.write(frames, ctx);
    }
}

impl<S: FrameSink> Actor for Subscriber<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.heartbeat, |act, ctx| {
            if !act.outbox.is_empty() {
                act.drain(ctx);
            } else if act.last_write.elapsed() >= act.heartbeat {
                let seq = act.fanout.seq();
                act.write(vec![Self::notice(FrameKind::Heartbeat, seq, "")], ctx);
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.fanout.unsubscribe(self.id);
        if let Some(s) = self.sink.take() {
            s.close();
        }
    }
}

impl<S: FrameSink> Handler<Wake> for Subscriber<S> {
    type Result = ();
    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        self.drain(ctx);
    }
}

impl<S: FrameSink> Handler<SetFilter> for Subscriber<S> {
    type Result = Result<(), FilterError>;
    fn handle(&mut self, msg: SetFilter, ctx: &mut Self::Context) -> Self::Result {
        let start = self.fanout.set_filter(self.id, msg.filter, msg.since)?;
        let frames = match start {
            Start::Snapshot { seq, changes, unseen } => self.snapshot_frames(seq, changes, unseen),
            Start::Resume { seq, changes } => {
                let from = msg.since.unwrap_or(0);
                let mut f = vec![Self::notice(FrameKind::Resumed, seq, &format!(",\"from\":{from}"))];
                let dir = self.directory.current();
                f.extend(changes.iter().filter_map(|c| Self::delta_latest(&dir, c)));
                f
            }
        };
        self.write(frames, ctx);
        Ok(())
    }
}

impl<S: FrameSink> Handler<ClientError> for Subscriber<S> {
    type Result = ();
    fn handle(&mut self, msg: ClientError, ctx: &mut Self::Context) {
        let data = serde_json::json!({ "type": "error", "error": msg.error, "detail": msg.detail }).to_string();
        let seq = self.fanout.seq();
        self.write(vec![Frame { kind: FrameKind::Error, seq, data, ingest: None }], ctx);
    }
}

impl<S: FrameSink> Handler<Close> for Subscriber<S> {
    type Result = ();
    fn handle(&mut self, _: Close, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
