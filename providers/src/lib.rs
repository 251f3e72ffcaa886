//! presence-providers: the sources of presence, one module per source behind its own Cargo
//! feature, and the one registration table that lists them.
//!
//! Adding a provider: add a folder module (`mod.rs` with the config and `task`, `parse.rs`
//! pure, `map.rs` to signals, `runtime.rs` the task, optionally `hook.rs` — the shape the
//! providers are being brought to; docs/ARCHITECTURE.md lists where each one stands) built on
//! the toolkit in [`common`]; add a feature in `Cargo.toml`; add the module to the table below
//! (`providers!`, its `modules` list) and one line for each `type` it serves. Nothing else
//! lists providers: the config enum, `check-config`, the supervisor and the HTTP webhooks all
//! follow from that table.
//!
//! [`supervisor`] runs every provider's task, restarts it with back-off when it fails and
//! stops it gracefully at shutdown.
//!
//! Layout:
//! - [`replay`]: plays a scenario file of timed signals (JSON Lines); drives the demo and tests.
//! - [`graph`]: Microsoft Teams presence through Microsoft Graph (polling + change notifications).
//! - [`calendar`]: calendars — Graph getSchedule, Exchange EWS GetUserAvailability, Google freeBusy.
//! - [`sip`]: SIP/SIMPLE presence and PBX busy lamps (dialog event package); the SIP connection
//!   settings and code the SIP sources share.
//! - [`sfb`]: Skype for Business enhanced presence (batched category subscriptions; `sip` feature).
//! - [`mbn`]: Telenor Norway Mobilt Bedriftsnett — mobile device status and absences.
//! - [`operator`]: mobile operators without a public API (TDC, Phonero, A1) — a webhook
//!   receiver and polling client whose JSON/XML field mapping is configuration.
//! - [`o2g`]: Alcatel-Lucent OmniPCX Enterprise call and routing state through the O2G REST API.
#![warn(missing_docs)]

use serde::Deserialize;

pub use presence_actors::provider::ProviderContext;

pub mod common;
pub mod directory;
#[cfg(test)]
pub(crate) mod mutate;
pub mod supervisor;

/// Generates, from the one table below, the provider modules, the [`ProviderConfig`] enum
/// (selected by `type`), its `name`/`kind`/`validate`, and [`build`].
macro_rules! providers {
    (
        modules { $( #[cfg($mcfg:meta)] $module:ident, )* }
        $( #[doc = $doc:literal] #[cfg($cfg:meta)] $variant:ident($ty:ty) = $kind:literal => |$c:ident, $ctx:ident| $task:expr; )*
    ) => {
        $( #[cfg($mcfg)] pub mod $module; )*

        /// One `[[providers]]` entry of the config file, selected by its `type`.
        #[derive(Debug, Clone, Deserialize)]
        #[serde(tag = "type")]
        #[non_exhaustive]
        pub enum ProviderConfig {
            $( #[doc = $doc] #[cfg($cfg)] #[serde(rename = $kind)] $variant($ty), )*
        }

        impl ProviderConfig {
            /// The configured name.
            pub fn name(&self) -> &str {
                match self { $( #[cfg($cfg)] ProviderConfig::$variant(c) => &c.name, )* }
            }

            /// The provider type, as written in the config.
            pub fn kind(&self) -> &'static str {
                match self { $( #[cfg($cfg)] ProviderConfig::$variant(_) => $kind, )* }
            }

            /// Checks the configuration without starting anything (`check-config`).
            pub fn validate(&self) -> Result<(), BuildError> {
                match self { $( #[cfg($cfg)] ProviderConfig::$variant(c) => c.validate(), )* }
            }
        }

        /// Builds a provider's task (the one place that maps config to code). Nothing runs
        /// until the task is polled; [`start`] runs it under the supervisor.
        pub fn build(config: &ProviderConfig, ctx: ProviderContext) -> Result<ProviderTask, BuildError> {
            match config { $( #[cfg($cfg)] ProviderConfig::$variant($c) => { let $ctx = ctx; $task } )* }
        }
    };
}

// The table: the provider modules (each behind its feature), then one line per provider — its
// `type`, its config, its task.
providers! {
    modules {
        #[cfg(feature = "replay")] replay,
        #[cfg(feature = "graph")] graph,
        #[cfg(feature = "calendar")] calendar,
        #[cfg(feature = "sip")] sip,
        #[cfg(feature = "sip")] sfb,
        #[cfg(feature = "mbn")] mbn,
        #[cfg(feature = "operator")] operator,
        #[cfg(feature = "o2g")] o2g,
    }
    /// Replays a scenario file.
    #[cfg(feature = "replay")] Replay(replay::ReplayConfig) = "replay" => |c, ctx| replay::task(c, ctx);
    /// Microsoft Teams presence through Microsoft Graph.
    #[cfg(feature = "graph")] GraphPresence(graph::GraphPresenceConfig) = "graph_presence" => |c, ctx| graph::task(c, ctx);
    /// Calendars: Graph getSchedule, Exchange EWS, Google freeBusy.
    #[cfg(feature = "calendar")] Calendar(calendar::CalendarConfig) = "calendar" => |c, ctx| calendar::task(c, ctx);
    /// SIP/SIMPLE presence: SUBSCRIBE to a presence server (PIDF/RPID).
    #[cfg(feature = "sip")] SipPresence(sip::SipSourceConfig) = "sip_presence" => |c, ctx| sip::runtime::task(c, sip::runtime::Package::Presence, ctx);
    /// PBX busy lamps: SUBSCRIBE to the dialog event package.
    #[cfg(feature = "sip")] SipDialog(sip::SipSourceConfig) = "sip_dialog" => |c, ctx| sip::runtime::task(c, sip::runtime::Package::Dialog, ctx);
    /// Skype for Business enhanced presence: batched category subscriptions to a pool.
    #[cfg(feature = "sip")] Sfb(sfb::SfbConfig) = "sfb" => |c, ctx| sfb::task(c, ctx);
    /// Telenor Norway Mobilt Bedriftsnett: mobile device status and absences.
    #[cfg(feature = "mbn")] TelenorMbn(mbn::MbnConfig) = "telenor_mbn" => |c, ctx| mbn::task(c, ctx);
    /// Mobile operator call state, absences and diversions through a configurable mapping.
    #[cfg(feature = "operator")] Operator(Box<operator::OperatorConfig>) = "operator" => |c, ctx| operator::task(c, ctx);
    /// Alcatel-Lucent OmniPCX Enterprise through O2G: call and routing events.
    #[cfg(feature = "o2g")] O2g(o2g::O2gConfig) = "o2g" => |c, ctx| o2g::task(c, ctx);
}

/// Why a provider could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A file the provider needs could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The configuration is invalid: what is wrong (without the provider's name, which the
    /// caller adds once).
    #[error("{0}")]
    Invalid(String),
}

/// Why a provider's task ended before shutdown (the supervisor restarts it).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The provider gave up; the text says why.
    #[error("{0}")]
    Failed(String),
}

/// A provider's task: runs until [`ProviderContext::shutdown`], does its graceful stop
/// (deletes subscriptions, logs out, un-SUBSCRIBEs) and returns `Ok`. `Err` — or a panic —
/// before shutdown means it failed, and [`supervisor`] restarts it. `Ok` before shutdown means
/// it has nothing more to do (a finished replay).
pub type ProviderTask = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ProviderError>>>>;

pub use supervisor::{start, stop_all, ProviderHandle};

/// Whether `person` belongs to a source scoped by `extension_prefixes`: everyone when the list
/// is empty, else the people whose extension starts with one of the prefixes. A company with
/// two PBXs (one site each) gives each PBX source its site's extension range.
#[cfg(any(feature = "sip", feature = "o2g"))]
pub(crate) fn extension_in_scope(
    prefixes: &[String],
    person: &presence_actors::directory::PersonRef<'_>,
) -> bool {
    prefixes.is_empty()
        || person
            .extension()
            .is_some_and(|e| prefixes.iter().any(|p| e.starts_with(p.as_str())))
}

/// Checks an `extension_prefixes` setting: at most 1,000 prefixes of 1–20 digits (a leading `+`
/// allowed).
#[cfg(any(feature = "sip", feature = "o2g"))]
pub(crate) fn check_extension_prefixes(prefixes: &[String]) -> Result<(), String> {
    if prefixes.len() > 1000 {
        return Err("extension_prefixes: at most 1000 prefixes".into());
    }
    for p in prefixes {
        let digits = p.strip_prefix('+').unwrap_or(p);
        if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("extension_prefixes: {p:?} is not 1-20 digits"));
        }
    }
    Ok(())
}

#[cfg(all(test, any(feature = "sip", feature = "o2g")))]
mod tests {
    #[test]
    fn extension_prefixes_are_digits_and_bounded() {
        let v = |p: &[&str]| crate::check_extension_prefixes(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(v(&[]).is_ok());
        assert!(v(&["5", "26", "+4722"]).is_ok());
        for bad in ["", "+", "5x", " 5", "123456789012345678901"] {
            let e = v(&[bad]).unwrap_err();
            assert!(e.contains("extension_prefixes"), "{bad:?}: {e}");
        }
        assert!(v(&vec!["1"; 1001]).unwrap_err().contains("at most 1000"));
        assert!(v(&vec!["1"; 1000]).is_ok());
    }
}
