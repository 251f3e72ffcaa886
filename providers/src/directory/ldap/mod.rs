//! The `ldap` directory source: Active Directory or any LDAP server. (Being built.)

use serde::Deserialize;

use super::{Pass, PassKind, SourceError};

/// `[[directory.sources]] type = "ldap"`.
#[derive(Debug, Clone, Deserialize)]
pub struct LdapConfig {
    /// Name of the source.
    pub name: String,
    /// Seconds between incremental passes.
    #[serde(default = "interval")]
    pub interval_secs: u64,
    /// Seconds between full passes.
    #[serde(default = "full")]
    pub full_pass_secs: u64,
}

fn interval() -> u64 {
    super::defaults::INTERVAL_SECS
}

fn full() -> u64 {
    super::defaults::FULL_PASS_SECS
}

impl LdapConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), SourceError> {
        Err(SourceError::Config("the ldap source is not built yet".into()))
    }
}

/// An LDAP source.
#[derive(Debug)]
pub struct LdapSource;

impl LdapSource {
    /// A source for `config`.
    pub fn new(config: &LdapConfig) -> Result<LdapSource, SourceError> {
        config.validate().map(|()| LdapSource)
    }

    /// Runs one pass.
    pub async fn pass(&mut self, _want: PassKind, _cursor: Option<&str>) -> Result<Pass, SourceError> {
        Err(SourceError::Config("the ldap source is not built yet".into()))
    }
}
