//! What the hub needs to run as one node of a cluster, without knowing how the nodes talk.
//!
//! People are split into [`PARTITIONS`] partitions by a hash of their id ([`partition_of`]),
//! the same on every node and across directory versions. A node keeps the state (slots,
//! absences, user actors) only of the people in the partitions it owns. The hub asks its
//! [`Peers`] (set with `Hub::join_cluster`; the root crate implements them on NATS):
//! - whether it owns a partition, and if not, to forward a signal to the owner;
//! - to publish every merged change of its own people to all nodes, instead of numbering it in
//!   the local fan-out: every node (this one too) then puts the change into its fan-out with
//!   the cluster-wide sequence number ([`crate::fanout::FanOut::publish_at`]);
//! - to tell every node that a feed went up or down.
//!
//! A single node has no peers and none of this runs.

use serde::{Deserialize, Serialize};

use crate::directory::{DeptIdx, UserIdx};
use crate::hub::SinkError;
use crate::model::{Activity, Availability, MergedView, PrivateDetail, Signal, Source, UnixMs, Version};

/// Partitions of the people. Fixed, so every node of every version agrees.
pub const PARTITIONS: u32 = 64;

/// The partition of the person with this id (FNV-1a).
pub fn partition_of(id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % PARTITIONS
}

/// A merged change of one of this node's people, for the other nodes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The person's partition.
    pub partition: u32,
    /// The person's index on this node.
    pub user: UserIdx,
    /// The person's id (the same on every node).
    pub id: Box<str>,
    /// The view as JSON (`wire::presence_json`), or `None`: the person left the directory.
    pub json: Option<Box<str>>,
}

/// How the hub reaches the other nodes.
pub trait Peers: Send + Sync + 'static {
    /// True while this node owns `partition`.
    fn owns(&self, partition: u32) -> bool;
    /// Hands a signal about the person `id` to the owner of `partition`.
    fn forward(&self, partition: u32, id: &str, signal: &Signal, feed: &str) -> Result<(), SinkError>;
    /// Publishes a change of one of this node's people to every node.
    fn publish(&self, change: Outgoing);
    /// Tells every node that the feed `name` went up or down on this node.
    fn feed_changed(&self, name: &str, up: bool);
    /// Asks the owner of `partition` for everything it holds about the person `id` (the
    /// detail view on a node that does not own them). `None`: no answer in time.
    fn detail(&self, partition: u32, id: &str) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<DetailWire>> + Send>>;
}

/// One slot on its way to another node (the detail view).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotWire {
    /// Source family.
    pub source: Source,
    /// Source instance.
    pub instance: String,
    /// The feed's name.
    pub feed: String,
    /// Availability.
    pub availability: Option<Availability>,
    /// Activity.
    pub activity: Option<Activity>,
    /// Note.
    pub note: Option<String>,
    /// Out of office.
    pub ooo: bool,
    /// Holds from.
    pub valid_from: Option<UnixMs>,
    /// Expires at.
    pub valid_until: Option<UnixMs>,
    /// Version.
    pub version: Option<Version>,
    /// State began.
    pub since: UnixMs,
    /// Last written.
    pub updated_at: UnixMs,
    /// Restored, not yet confirmed.
    pub restored: bool,
    /// Calendar subject / location (the asking node applies the privacy policy).
    pub detail: Option<PrivateDetail>,
}

/// Everything the owner holds about one person.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetailWire {
    /// The merged view as JSON (`wire::presence_json`).
    pub view: String,
    /// The slots.
    pub slots: Vec<SlotWire>,
    /// The absences.
    pub absences: Vec<crate::model::Absence>,
}

impl DetailWire {
    /// The wire form of a detail; `feed_name` names a feed id of this node.
    pub fn new(id: &str, d: &crate::shard::UserDetail, feed_name: impl Fn(crate::model::FeedId) -> String) -> DetailWire {
        let slots = d
            .slots
            .iter()
            .map(|s| SlotWire {
                source: s.source,
                instance: s.instance.as_str().to_string(),
                feed: feed_name(s.feed),
                availability: s.availability,
                activity: s.activity.clone(),
                note: s.note.as_deref().map(str::to_string),
                ooo: s.ooo,
                valid_from: s.valid_from,
                valid_until: s.valid_until,
                version: s.version.clone(),
                since: s.since,
                updated_at: s.updated_at,
                restored: s.restored,
                detail: s.detail.as_deref().cloned(),
            })
            .collect();
        DetailWire { view: crate::wire::presence_json(id, &d.view), slots, absences: d.absences.clone() }
    }

    /// Back to a detail; `feed_id` finds this node's id of a feed by name.
    pub fn into_detail(self, feed_id: impl Fn(&str) -> crate::model::FeedId) -> crate::shard::UserDetail {
        let view = serde_json::from_str::<crate::wire::PresenceIn>(&self.view).map(|p| p.into_exact_view()).unwrap_or_default();
        let slots = self
            .slots
            .into_iter()
            .map(|s| crate::model::Slot {
                source: s.source,
                instance: s.instance.as_str().into(),
                feed: feed_id(&s.feed),
                availability: s.availability,
                activity: s.activity,
                note: s.note.map(String::into_boxed_str),
                ooo: s.ooo,
                valid_from: s.valid_from,
                valid_until: s.valid_until,
                version: s.version,
                since: s.since,
                updated_at: s.updated_at,
                restored: s.restored,
                detail: s.detail.map(Box::new),
            })
            .collect();
        crate::shard::UserDetail { view, slots, absences: self.absences }
    }
}

/// A signal on its way to another node: the feed travels by name (feed ids are per node).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignalWire {
    /// The person's id.
    pub id: String,
    /// The feed's name.
    pub feed: String,
    /// Source family.
    pub source: Source,
    /// Source instance.
    pub instance: String,
    /// Availability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<Availability>,
    /// Activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<Activity>,
    /// Note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Out of office.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ooo: bool,
    /// Holds from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<UnixMs>,
    /// Expires at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<UnixMs>,
    /// Version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// Observed at.
    pub observed_at: UnixMs,
    /// Private detail (calendar subject), kept only as the provider's settings allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<PrivateDetail>,
}

impl SignalWire {
    /// The wire form of a signal about `id` from the feed `feed`.
    pub fn new(id: &str, feed: &str, s: &Signal) -> SignalWire {
        SignalWire {
            id: id.to_string(),
            feed: feed.to_string(),
            source: s.source,
            instance: s.instance.as_str().to_string(),
            availability: s.availability,
            activity: s.activity.clone(),
            note: s.note.as_deref().map(str::to_string),
            ooo: s.ooo,
            valid_from: s.valid_from,
            valid_until: s.valid_until,
            version: s.version.clone(),
            observed_at: s.observed_at,
            detail: s.detail.as_deref().cloned(),
        }
    }

    /// Back to a signal (the feed id is the receiver's); clamped like any incoming signal.
    pub fn into_signal(self, feed: crate::model::FeedId) -> Signal {
        let mut s = Signal::new(self.source, &self.instance, self.availability, self.observed_at);
        s.feed = feed;
        s.activity = self.activity;
        s.note = self.note.map(String::into_boxed_str);
        s.ooo = self.ooo;
        s.valid_from = self.valid_from;
        s.valid_until = self.valid_until;
        s.version = self.version;
        s.detail = self.detail.map(Box::new);
        s.clamp();
        s
    }
}

/// A change received from the cluster, for [`crate::fanout::FanOut::publish_at`].
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Cluster-wide sequence number.
    pub seq: u64,
    /// The person's index on this node.
    pub user: UserIdx,
    /// Their department.
    pub dept: Option<DeptIdx>,
    /// The view, or `None`: the person left the directory.
    pub view: Option<MergedView>,
    /// The JSON as received.
    pub json: Box<str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition_of("asa.ostberg"), partition_of("asa.ostberg"));
        let mut count = vec![0u32; PARTITIONS as usize];
        for i in 0..6400 {
            count[partition_of(&format!("person.{i}")) as usize] += 1;
        }
        assert!(count.iter().all(|c| (50..=150).contains(c)), "{count:?}");
    }

    #[test]
    fn a_signal_crosses_the_wire_whole() {
        let mut s = Signal::new(Source::Pbx, "ext-1234", Some(Availability::Busy), 1_700_000_000_000);
        s.activity = Some(Activity::InACall);
        s.note = Some("On the phone".into());
        s.valid_until = Some(1_700_000_600_000);
        s.version = Some(Version::Num(7));
        s.feed = 3;
        let w = SignalWire::new("asa.ostberg", "pbx", &s);
        let back: SignalWire = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        assert_eq!((back.id.as_str(), back.feed.as_str()), ("asa.ostberg", "pbx"));
        let mut expect = s.clone();
        expect.feed = 9;
        assert_eq!(back.into_signal(9), expect);
    }
}
