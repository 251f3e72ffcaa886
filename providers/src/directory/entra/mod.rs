//! The `entra` directory source: Entra ID through Microsoft Graph `/users/delta`. (Being built.)

use serde::Deserialize;

use super::{Pass, PassKind, SourceError};

/// `[[directory.sources]] type = "entra"`.
#[derive(Debug, Clone, Deserialize)]
pub struct EntraConfig {
    /// Name of the source.
    pub name: String,
    /// Seconds between incremental passes.
    #[serde(default = "interval")]
    pub interval_secs: u64,
}

fn interval() -> u64 {
    super::defaults::INTERVAL_SECS
}

impl EntraConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), SourceError> {
        Err(SourceError::Config("the entra source is not built yet".into()))
    }
}

/// An LDAP source.
#[derive(Debug)]
pub struct EntraSource;

impl EntraSource {
    /// A source for `config`.
    pub fn new(config: &EntraConfig) -> Result<EntraSource, SourceError> {
        config.validate().map(|()| EntraSource)
    }

    /// Runs one pass.
    pub async fn pass(&mut self, _want: PassKind, _cursor: Option<&str>) -> Result<Pass, SourceError> {
        Err(SourceError::Config("the entra source is not built yet".into()))
    }
}
