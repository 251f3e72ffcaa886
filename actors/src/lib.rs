//! presence-actors: the canonical model, the merge policy and the actor shells of presence-hub.
//!
//! Layout:
//! - [`model`]: availability, activity, signals, absences, the merge policy — plain Rust.
#![warn(missing_docs)]

pub mod model;
