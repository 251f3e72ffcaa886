//! Reloading the configuration file while the hub runs (`SIGHUP`, or
//! `POST /api/config/reload` for an admin).
//!
//! The file is read and validated whole; an invalid file changes nothing and says why. What
//! can change live is applied at once: the API tokens (`[[tokens]]`: add, rotate or revoke one
//! without a restart). Every other top-level section that differs from the file the hub runs
//! with is named in the answer as needing a restart (providers, listeners, the directory…), so
//! an operator knows what the edit did and did not do. Each reload, applied or refused, is in
//! the audit log (`config.reloaded`).

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::tokens::Tokens;

/// The sections applied without a restart.
pub const LIVE_SECTIONS: [&str; 1] = ["tokens"];

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    /// Sections that changed and are in force now.
    pub applied: Vec<String>,
    /// Sections that changed and take effect at the next restart.
    pub restart_needed: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The hub runs without a configuration file (the built-in demo).
    #[error("the hub runs without a configuration file (the built-in demo); there is nothing to reload")]
    NoFile,
    /// The file cannot be read, or is not a valid configuration; the running one stays.
    #[error("{0}; the running configuration stays in force")]
    Invalid(String),
}

/// The top-level sections whose TOML differs between `old` and `new` (texts of the file).
pub fn changed_sections(old: &str, new: &str) -> Result<BTreeSet<String>, String> {
    let parse = |t: &str| t.parse::<toml::Table>().map_err(|e| e.to_string());
    let (a, b) = (parse(old)?, parse(new)?);
    Ok(a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect())
}

/// Reads and checks `path` against `running` (the text the hub runs with): the new tokens
/// table when `[[tokens]]` changed, the new text, and the report.
pub fn prepare(path: &Path, running: &str) -> Result<(Option<Tokens>, String, ReloadReport), ReloadError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReloadError::Invalid(format!("cannot read {}: {e}", path.display())))?;
    let cfg: Config = toml::from_str(&text).map_err(|e| ReloadError::Invalid(format!("{}: {e}", path.display())))?;
    cfg.validate().map_err(|e| ReloadError::Invalid(e.to_string()))?;
    let changed = changed_sections(running, &text).map_err(ReloadError::Invalid)?;
    let (applied, restart_needed): (Vec<String>, Vec<String>) = changed.into_iter().partition(|s| LIVE_SECTIONS.contains(&s.as_str()));
    let tokens = applied
        .iter()
        .any(|s| s == "tokens")
        .then(|| Tokens::new(cfg.tokens.iter().map(|t| (t.name.as_str(), t.role, t.sha256.as_str()))));
    Ok((tokens, text, ReloadReport { applied, restart_needed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sections_that_differ_are_named() {
        let old = "listen = \"127.0.0.1:8080\"\n[web]\ntitle = \"A\"\n[[tokens]]\nname = \"a\"\nrole = \"viewer\"\nsha256 = \"00\"\n";
        let new = "listen = \"127.0.0.1:8080\"\n# a comment\n[web]\ntitle = \"B\"\n[[tokens]]\nname = \"a\"\nrole = \"viewer\"\nsha256 = \"00\"\n[audit]\nretention_days = 30\n";
        assert_eq!(changed_sections(old, new).unwrap(), BTreeSet::from(["web".to_string(), "audit".to_string()]));
        assert!(changed_sections(old, old).unwrap().is_empty());
        assert!(changed_sections(old, "[[tokens]\n").is_err());
    }
}
