//! Directory sources: where the people of the hub come from — Active Directory or any LDAP
//! server ([`ldap`]), Entra ID through Microsoft Graph ([`entra`]), or a CSV/JSON file
//! ([`file`]) — configured as `[[directory.sources]]`.
//!
//! A source only reads. Each pass hands back a [`Pass`]: the people it read as [`Entry`]s (a
//! stable key and the raw [`Record`] of fields) and, for incremental passes, the keys it knows
//! to be gone. Merging several sources, validating the records, guarding against mass removal
//! and applying the differences to the running hub is the sync engine's business (in the hub
//! crate), so every source is testable on its own against its real peer.

use std::time::Duration;

use serde::Deserialize;

pub use presence_actors::directory::Record;

pub mod file;

#[cfg(feature = "entra")]
pub mod entra;
#[cfg(feature = "ldap")]
pub mod ldap;

/// Whether a pass reads everything or only what changed since the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PassKind {
    /// Every person the source has: whoever is missing has left.
    Full,
    /// Only the people changed since the cursor, and the keys the source reports removed.
    Incremental,
}

/// One person as a source read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The source's stable identity of the person (LDAP `objectGUID` as text, Entra object id).
    pub key: Box<str>,
    /// The fields, before validation.
    pub record: Record,
}

/// What one pass of a source read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// What kind of pass this was. A source asked for an incremental pass answers with a full
    /// one when it must (no cursor, a cursor from another server, an expired delta link).
    pub kind: PassKind,
    /// The people read.
    pub entries: Vec<Entry>,
    /// Keys the source reported as removed (Entra's `@removed`); LDAP never fills this.
    pub removed: Vec<Box<str>>,
    /// What the next incremental pass starts from, to be kept in the store (an LDAP
    /// high-water mark with the server it came from; an Entra delta link and when it was
    /// issued). `None`: the source keeps none.
    pub cursor: Option<String>,
}

/// Why a pass failed. The directory is kept as it was; the source is reported stale.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The settings cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// No server could be reached (every URL tried).
    #[error("connect: {0}")]
    Connect(String),
    /// The server refused the credentials (bind, token).
    #[error("authentication: {0}")]
    Auth(String),
    /// The server answered something the source cannot use.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The answer went past a limit (size, count).
    #[error("limit: {0}")]
    Limit(String),
}

/// Defaults shared by the sources.
pub(crate) mod defaults {
    /// `interval_secs`: an incremental pass every five minutes.
    pub const INTERVAL_SECS: u64 = 300;
    /// `full_pass_secs`: a full pass every hour.
    pub const FULL_PASS_SECS: u64 = 3600;
}

/// One `[[directory.sources]]` entry, selected by its `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // one per configured source, read once: size does not matter
pub enum SourceConfig {
    /// Active Directory or another LDAP server.
    #[cfg(feature = "ldap")]
    #[serde(rename = "ldap")]
    Ldap(Box<ldap::LdapConfig>),
    /// Entra ID through Microsoft Graph `/users/delta`.
    #[cfg(feature = "entra")]
    #[serde(rename = "entra")]
    Entra(entra::EntraConfig),
    /// A CSV or JSON file.
    #[serde(rename = "file")]
    File(file::FileConfig),
}

impl SourceConfig {
    /// The configured name.
    pub fn name(&self) -> &str {
        match self {
            #[cfg(feature = "ldap")]
            SourceConfig::Ldap(c) => &c.name,
            #[cfg(feature = "entra")]
            SourceConfig::Entra(c) => &c.name,
            SourceConfig::File(c) => &c.name,
        }
    }

    /// The source type, as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            #[cfg(feature = "ldap")]
            SourceConfig::Ldap(_) => "ldap",
            #[cfg(feature = "entra")]
            SourceConfig::Entra(_) => "entra",
            SourceConfig::File(_) => "file",
        }
    }

    /// Checks the settings without connecting (`check-config`).
    pub fn validate(&self) -> Result<(), SourceError> {
        match self {
            #[cfg(feature = "ldap")]
            SourceConfig::Ldap(c) => c.validate(),
            #[cfg(feature = "entra")]
            SourceConfig::Entra(c) => c.validate(),
            SourceConfig::File(c) => c.validate(),
        }
    }

    /// How often an incremental pass runs.
    pub fn interval(&self) -> Duration {
        match self {
            #[cfg(feature = "ldap")]
            SourceConfig::Ldap(c) => Duration::from_secs(c.interval_secs),
            #[cfg(feature = "entra")]
            SourceConfig::Entra(c) => Duration::from_secs(c.interval_secs),
            SourceConfig::File(c) => Duration::from_secs(c.interval_secs),
        }
    }

    /// How often a full pass runs (`None`: the source needs none — its incremental passes
    /// report removals).
    pub fn full_interval(&self) -> Option<Duration> {
        match self {
            #[cfg(feature = "ldap")]
            SourceConfig::Ldap(c) => Some(Duration::from_secs(c.full_pass_secs)),
            #[cfg(feature = "entra")]
            SourceConfig::Entra(_) => None,
            SourceConfig::File(_) => None,
        }
    }

    /// Connects the source (nothing is read until [`Source::pass`]).
    pub fn source(&self) -> Result<Source, SourceError> {
        Ok(match self {
            #[cfg(feature = "ldap")]
            SourceConfig::Ldap(c) => Source::Ldap(ldap::LdapSource::new(c)?),
            #[cfg(feature = "entra")]
            SourceConfig::Entra(c) => Source::Entra(entra::EntraSource::new(c)?),
            SourceConfig::File(c) => Source::File(file::FileSource::new(c)),
        })
    }
}

/// A source ready to run passes.
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // one per configured source, built once: size does not matter
pub enum Source {
    /// LDAP.
    #[cfg(feature = "ldap")]
    Ldap(ldap::LdapSource),
    /// Entra ID.
    #[cfg(feature = "entra")]
    Entra(entra::EntraSource),
    /// A file.
    File(file::FileSource),
}

impl Source {
    /// Runs one pass. `cursor` is what the previous pass returned (from the store); with
    /// [`PassKind::Incremental`] the source reads only what changed since then, or falls back
    /// to a full pass and says so in [`Pass::kind`].
    pub async fn pass(&mut self, want: PassKind, cursor: Option<&str>) -> Result<Pass, SourceError> {
        match self {
            #[cfg(feature = "ldap")]
            Source::Ldap(s) => s.pass(want, cursor).await,
            #[cfg(feature = "entra")]
            Source::Entra(s) => s.pass(want, cursor).await,
            Source::File(s) => s.pass(want, cursor).await,
        }
    }
}
