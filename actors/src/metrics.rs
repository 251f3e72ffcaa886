//! Counters and gauges shared by the actors, providers and HTTP layer.
//!
//! Plain atomics (relaxed): cheap on the hot path, read by `/metrics` and `/api/stats`.
//! Every drop or coalescing on a bounded queue is counted here (docs/ARCHITECTURE.md, § Queues).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Hub-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Signals accepted by the signal sink.
    pub signals_received: AtomicU64,
    /// Signals whose person could not be resolved in the directory.
    pub signals_unresolved: AtomicU64,
    /// Signals that replaced an older pending signal for the same (user, source, instance)
    /// because a shard mailbox was full (newest wins).
    pub signals_coalesced: AtomicU64,
    /// Signals dropped outright (overflow buffer full).
    pub signals_dropped: AtomicU64,
    /// Signals ignored by version ordering (rule 3).
    pub signals_out_of_order: AtomicU64,
    /// Signals ignored because already expired or from an ignored source.
    pub signals_ignored: AtomicU64,
    /// Merged-view changes fanned out.
    pub changes_published: AtomicU64,
    /// Changes put into subscriber outboxes.
    pub deliveries: AtomicU64,
    /// Changes folded into a lagging subscriber's "latest per user" set.
    pub deliveries_coalesced: AtomicU64,
    /// Frames written to clients.
    pub frames_sent: AtomicU64,
    /// Live user actors.
    pub user_actors: AtomicI64,
    /// Connected subscribers.
    pub subscribers: AtomicI64,
    /// Subscribers currently lagging (coalescing).
    pub subscribers_lagging: AtomicI64,
    /// HTTP requests rejected for bad input (4xx other than auth).
    pub http_bad_requests: AtomicU64,
    /// HTTP requests rejected for missing / weak tokens.
    pub http_auth_failures: AtomicU64,
    /// Snapshot rows persisted.
    pub snapshot_rows_written: AtomicU64,
}

impl Metrics {
    /// Adds one.
    #[inline]
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    #[inline]
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Reads a gauge.
    #[inline]
    pub fn gauge(c: &AtomicI64) -> i64 {
        c.load(Ordering::Relaxed)
    }

    /// Name, help and value of every counter, for the Prometheus exposition.
    pub fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        let g = Self::get;
        vec![
            ("presence_signals_received_total", "Signals accepted by the signal sink.", g(&self.signals_received)),
            ("presence_signals_unresolved_total", "Signals naming nobody in the directory.", g(&self.signals_unresolved)),
            ("presence_signals_coalesced_total", "Signals replaced by a newer one while a shard was busy.", g(&self.signals_coalesced)),
            ("presence_signals_dropped_total", "Signals dropped because the overflow buffer was full.", g(&self.signals_dropped)),
            ("presence_signals_out_of_order_total", "Signals ignored by version ordering.", g(&self.signals_out_of_order)),
            ("presence_signals_ignored_total", "Signals ignored (expired or ignored source).", g(&self.signals_ignored)),
            ("presence_changes_published_total", "Merged presence changes fanned out.", g(&self.changes_published)),
            ("presence_deliveries_total", "Changes queued to subscribers.", g(&self.deliveries)),
            ("presence_deliveries_coalesced_total", "Changes coalesced for lagging subscribers.", g(&self.deliveries_coalesced)),
            ("presence_frames_sent_total", "Frames written to stream clients.", g(&self.frames_sent)),
            ("presence_http_bad_requests_total", "HTTP requests rejected as bad input.", g(&self.http_bad_requests)),
            ("presence_http_auth_failures_total", "HTTP requests rejected for missing or weak tokens.", g(&self.http_auth_failures)),
            ("presence_snapshot_rows_written_total", "Presence snapshot rows persisted.", g(&self.snapshot_rows_written)),
        ]
    }

    /// Name, help and value of every gauge.
    pub fn gauges(&self) -> Vec<(&'static str, &'static str, i64)> {
        let g = Self::gauge;
        vec![
            ("presence_user_actors", "Live user actors.", g(&self.user_actors)),
            ("presence_subscribers", "Connected stream subscribers.", g(&self.subscribers)),
            ("presence_subscribers_lagging", "Subscribers currently coalescing.", g(&self.subscribers_lagging)),
        ]
    }
}
