//! What only the `presence-hub` command line needs, kept out of the hub's library modules:
//! the built-in demo, the two benchmark commands and `login`. Errors here are `anyhow` (they end at the
//! command line); the library modules use their own `thiserror` types.
//!
//! - `demo`: the built-in demo company and its simulators (`presence-hub` with no
//!   `--config`). Behind the `demo` feature, on by default; a production build
//!   (`cargo build --release --no-default-features`) has neither it nor the simulators.
//! - [`bench`]: `presence-hub bench`, the hub's benchmark.
//! - [`bench_directory`]: `presence-hub bench-directory`, what directory sync costs the hub.
//! - [`bench_cluster`]: `presence-hub bench-cluster`, a load driver against running hubs (a
//!   cluster's nodes): signals pushed over the API, frames timed on every node's stream.
//! - [`bench_sip`]: `presence-hub bench-sip`, a SIP presence workload against a presence server.
//! - [`bench_ws`]: `presence-hub bench-ws`, many WebSocket and SSE clients against one hub: RSS
//!   per client, change → client latency.
//! - [`login`]: `presence-hub login graph`, signing the Teams service accounts in (OAuth device
//!   code) and checking their stored tokens.

pub mod bench;
pub mod bench_cluster;
pub mod bench_directory;
pub mod bench_sip;
pub mod bench_ws;
pub mod login;
#[cfg(feature = "demo")]
pub mod demo;
