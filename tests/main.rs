//! The integration tests: one binary (as ripgrep does), so the shared support in `common`
//! and the hub, its simulators and their dependencies compile and link once instead of once
//! per source file. Each module starts the real server on 127.0.0.1:0 (or the real binary)
//! and drives it over its wire protocols; run one with `cargo test --test integration graph::`.

mod common;

mod api;
mod browser;
mod calendar;
mod cluster;
mod cluster_data;
mod crash;
mod demo;
mod directory_sync;
mod entra;
mod graph;
mod kamailio;
mod kamailio_peer;
mod ldap;
mod login;
mod mbn;
mod nats_peer;
mod o2g;
mod oidc_peer;
mod operator;
mod pbx;
mod replay_privacy;
mod sfb;
mod signin;
mod sip_server;
mod sipp;
mod stream;
mod tls;
