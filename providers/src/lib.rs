//! presence-providers: the sources of presence, one module per source behind its own Cargo
//! feature, and the one registration table that lists them.
//!
//! Adding a provider: add a folder module with a pure parser (no actix types) and an actor or
//! task that uses only the [`ProviderContext`] it is given; add a feature in `Cargo.toml`;
//! add one variant to [`ProviderConfig`] and one arm to [`build`]. Nothing else lists providers.
//!
//! Layout:
//! - [`replay`]: plays a scenario file of timed signals (JSON Lines); drives the demo and tests.
//! - [`graph`]: Microsoft Teams presence through Microsoft Graph (polling + change notifications).
//! - [`calendar`]: calendars — Graph getSchedule, Exchange EWS GetUserAvailability, Google freeBusy.
//! - [`sip`]: SIP/SIMPLE presence, PBX busy lamps (dialog event package), Skype for Business.
//! - [`mbn`]: Telenor Norway Mobilt Bedriftsnett — mobile device status and absences.
//! - [`operator`]: mobile operators without a public API (TDC, Phonero, A1) — a webhook
//!   receiver and polling client whose JSON/XML field mapping is configuration.
//! - [`o2g`]: Alcatel-Lucent OmniPCX Enterprise call and routing state through the O2G REST API.
#![warn(missing_docs)]

use serde::Deserialize;

pub use presence_actors::provider::ProviderContext;

#[cfg(feature = "calendar")]
pub mod calendar;
pub mod common;
#[cfg(feature = "graph")]
pub mod graph;
#[cfg(feature = "mbn")]
pub mod mbn;
#[cfg(test)]
pub(crate) mod mutate;
#[cfg(feature = "operator")]
pub mod operator;
#[cfg(feature = "o2g")]
pub mod o2g;
#[cfg(feature = "replay")]
pub mod replay;
#[cfg(feature = "sip")]
pub mod sip;

/// One `[[providers]]` entry of the config file, selected by its `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProviderConfig {
    /// Replays a scenario file.
    #[cfg(feature = "replay")]
    Replay(replay::ReplayConfig),
    /// Microsoft Teams presence through Microsoft Graph.
    #[cfg(feature = "graph")]
    GraphPresence(graph::GraphPresenceConfig),
    /// Calendars: Graph getSchedule, Exchange EWS, Google freeBusy.
    #[cfg(feature = "calendar")]
    Calendar(calendar::CalendarConfig),
    /// SIP/SIMPLE presence: SUBSCRIBE to a presence server (PIDF/RPID).
    #[cfg(feature = "sip")]
    SipPresence(sip::SipSourceConfig),
    /// PBX busy lamps: SUBSCRIBE to the dialog event package.
    #[cfg(feature = "sip")]
    SipDialog(sip::SipSourceConfig),
    /// Skype for Business enhanced presence: batched category subscriptions to a pool.
    #[cfg(feature = "sip")]
    Sfb(sip::sfb::SfbConfig),
    /// Telenor Norway Mobilt Bedriftsnett: mobile device status and absences.
    #[cfg(feature = "mbn")]
    TelenorMbn(mbn::MbnConfig),
    /// Mobile operator call state, absences and diversions through a configurable mapping.
    #[cfg(feature = "operator")]
    Operator(Box<operator::OperatorConfig>),
    /// Alcatel-Lucent OmniPCX Enterprise through O2G: call and routing events.
    #[cfg(feature = "o2g")]
    O2g(o2g::O2gConfig),
}

impl ProviderConfig {
    /// The configured name.
    pub fn name(&self) -> &str {
        match self {
            #[cfg(feature = "replay")]
            ProviderConfig::Replay(c) => &c.name,
            #[cfg(feature = "graph")]
            ProviderConfig::GraphPresence(c) => &c.name,
            #[cfg(feature = "calendar")]
            ProviderConfig::Calendar(c) => &c.name,
            #[cfg(feature = "sip")]
            ProviderConfig::SipPresence(c) | ProviderConfig::SipDialog(c) => &c.name,
            #[cfg(feature = "sip")]
            ProviderConfig::Sfb(c) => &c.name,
            #[cfg(feature = "mbn")]
            ProviderConfig::TelenorMbn(c) => &c.name,
            #[cfg(feature = "operator")]
            ProviderConfig::Operator(c) => &c.name,
            #[cfg(feature = "o2g")]
            ProviderConfig::O2g(c) => &c.name,
        }
    }

    /// The provider type, as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            #[cfg(feature = "replay")]
            ProviderConfig::Replay(_) => "replay",
            #[cfg(feature = "graph")]
            ProviderConfig::GraphPresence(_) => "graph_presence",
            #[cfg(feature = "calendar")]
            ProviderConfig::Calendar(_) => "calendar",
            #[cfg(feature = "sip")]
            ProviderConfig::SipPresence(_) => "sip_presence",
            #[cfg(feature = "sip")]
            ProviderConfig::SipDialog(_) => "sip_dialog",
            #[cfg(feature = "sip")]
            ProviderConfig::Sfb(_) => "sfb",
            #[cfg(feature = "mbn")]
            ProviderConfig::TelenorMbn(_) => "telenor_mbn",
            #[cfg(feature = "operator")]
            ProviderConfig::Operator(_) => "operator",
            #[cfg(feature = "o2g")]
            ProviderConfig::O2g(_) => "o2g",
        }
    }

    /// Checks the configuration without starting anything (`check-config`).
    pub fn validate(&self) -> Result<(), BuildError> {
        match self {
            #[cfg(feature = "replay")]
            ProviderConfig::Replay(c) => c.validate(),
            #[cfg(feature = "graph")]
            ProviderConfig::GraphPresence(c) => c.validate(),
            #[cfg(feature = "calendar")]
            ProviderConfig::Calendar(c) => c.validate(),
            #[cfg(feature = "sip")]
            ProviderConfig::SipPresence(c) | ProviderConfig::SipDialog(c) => c.validate(),
            #[cfg(feature = "sip")]
            ProviderConfig::Sfb(c) => c.validate(),
            #[cfg(feature = "mbn")]
            ProviderConfig::TelenorMbn(c) => c.validate(),
            #[cfg(feature = "operator")]
            ProviderConfig::Operator(c) => c.validate(),
            #[cfg(feature = "o2g")]
            ProviderConfig::O2g(c) => c.validate(),
        }
    }
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
    /// The configuration is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// A running provider.
pub struct ProviderHandle {
    stop: Box<dyn FnOnce() + Send>,
}

impl ProviderHandle {
    /// Wraps a stop function.
    pub fn new(stop: impl FnOnce() + Send + 'static) -> Self {
        ProviderHandle { stop: Box::new(stop) }
    }

    /// Runs a provider's task on the current runtime; stopping the provider aborts it (a
    /// graceful stop is the task's own, on `ctx.shutdown`).
    pub fn spawn(task: impl std::future::Future<Output = ()> + 'static) -> Self {
        let task = actix::spawn(task);
        ProviderHandle::new(move || task.abort())
    }

    /// Stops the provider.
    pub fn stop(self) {
        (self.stop)()
    }
}

/// Starts a provider (the one place that maps config to code).
pub fn build(config: &ProviderConfig, ctx: ProviderContext) -> Result<ProviderHandle, BuildError> {
    match config {
        #[cfg(feature = "replay")]
        ProviderConfig::Replay(c) => replay::start(c, ctx),
        #[cfg(feature = "graph")]
        ProviderConfig::GraphPresence(c) => graph::start(c, ctx),
        #[cfg(feature = "calendar")]
        ProviderConfig::Calendar(c) => calendar::start(c, ctx),
        #[cfg(feature = "sip")]
        ProviderConfig::SipPresence(c) => sip::runtime::start(c, sip::runtime::Package::Presence, ctx),
        #[cfg(feature = "sip")]
        ProviderConfig::SipDialog(c) => sip::runtime::start(c, sip::runtime::Package::Dialog, ctx),
        #[cfg(feature = "sip")]
        ProviderConfig::Sfb(c) => sip::sfb::start(c, ctx),
        #[cfg(feature = "mbn")]
        ProviderConfig::TelenorMbn(c) => mbn::start(c, ctx),
        #[cfg(feature = "operator")]
        ProviderConfig::Operator(c) => operator::start(c, ctx),
        #[cfg(feature = "o2g")]
        ProviderConfig::O2g(c) => o2g::start(c, ctx),
    }
}

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
