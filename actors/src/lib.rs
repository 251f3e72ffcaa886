//! presence-actors: the canonical model, the merge policy, the directory and the actor shells
//! of presence-hub.
//!
//! Layout:
//! - [`model`]: availability, activity, signals, absences, the merge policy — plain Rust,
//!   no actix types, unit-tested table-driven.
//! - [`directory`]: people, identity resolution (email, SIP URI, E.164, extension…) and search.
//! - [`live`]: the current directory version, replaced live by directory sync and watched.
//! - [`wire`]: the JSON shape of a merged presence, encoded once per change.
//! - [`fanout`]: hub-wide change sequence, replay ring, bounded coalescing outboxes.
//! - [`shard`]: shard actors on a fixed pool of arbiters, and the user actors they own.
//! - [`subscriber`]: one actor per stream client, generic over a [`subscriber::FrameSink`].
//! - [`hub`]: the handle that starts the shards and routes signals, absences and queries.
//! - [`feeds`]: provider feed health (up/down, counters) read by the merge and the API.
//! - [`provider`]: the contract a provider is built against ([`provider::ProviderContext`]).
//! - [`metrics`]: counters and gauges.
//! - [`cluster`]: partitions of the people and the [`cluster::Peers`] a hub of several nodes reaches.
//!
//! Actor semantics (ordering, drops, parking, restarts): README.md, "Architecture".
#![warn(missing_docs)]

pub mod cluster;
pub mod directory;
pub mod fanout;
pub mod feeds;
pub mod hub;
pub mod live;
pub mod metrics;
pub mod model;
pub mod provider;
pub mod shard;
pub mod subscriber;
pub mod wire;
