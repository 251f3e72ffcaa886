//! The configuration file (TOML): every option, its default, and validation.
//!
//! `presence-hub check-config --config FILE` loads and validates a file without starting
//! anything. With no config at all the hub runs the built-in demo (`cli::demo`, `demo` feature).
//! `config.example.toml` in the repository documents every option.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tokens::Role;
use presence_actors::directory::NumberPlan;
use presence_actors::model::Policy;
use presence_providers::ProviderConfig;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`--listen` overrides).
    pub listen: SocketAddr,
    /// Data directory for the embedded store (`--data-dir` overrides).
    pub data_dir: PathBuf,
    /// The hub's time zone (IANA name), for people-facing times.
    pub time_zone: String,
    /// Logging.
    pub log: LogConfig,
    /// Shards and queues.
    pub hub: HubSection,
    /// HTTP limits.
    pub http: HttpSection,
    /// Streams (WebSocket, SSE).
    pub stream: StreamSection,
    /// Snapshot persistence.
    pub snapshot: SnapshotSection,
    /// The people directory.
    pub directory: DirectorySection,
    /// API tokens.
    pub tokens: Vec<TokenConfig>,
    /// Merge policy.
    pub policy: Policy,
    /// Presence sources.
    pub providers: Vec<ProviderConfig>,
    /// The web directory and attendant console.
    pub web: WebSection,
    /// The SIP presence server.
    pub sip: crate::sip_server::SipSection,
    /// Signing people in (`[auth.oidc]`).
    pub auth: crate::signin::AuthSection,
    /// The audit log.
    pub audit: crate::audit::AuditSection,
    /// Running as one node of a cluster on NATS JetStream; absent: a single node.
    pub cluster: Option<crate::cluster::ClusterSection>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            time_zone: "Europe/Stockholm".into(),
            log: LogConfig::default(),
            hub: HubSection::default(),
            http: HttpSection::default(),
            stream: StreamSection::default(),
            snapshot: SnapshotSection::default(),
            directory: DirectorySection::default(),
            sip: crate::sip_server::SipSection::default(),
            tokens: Vec::new(),
            policy: Policy::default(),
            providers: Vec::new(),
            web: WebSection::default(),
            auth: Default::default(),
            audit: Default::default(),
            cluster: None,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Format.
    pub format: LogFormat,
    /// `tracing` filter, e.g. `info` or `presence_hub=debug,info`. `RUST_LOG` overrides.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Human, level: "info".into() }
    }
}

/// `[hub]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubSection {
    /// Shard arbiters (threads); default: the number of CPUs.
    pub shards: Option<usize>,
    /// Changes kept for stream resume.
    pub replay_buffer: usize,
    /// Shard mailbox capacity.
    pub shard_mailbox: usize,
    /// User actor mailbox capacity.
    pub user_mailbox: usize,
    /// Timer resolution of the shards, in milliseconds.
    pub tick_ms: u64,
    /// Most live user actors in all shards together; the least recently used idle ones are
    /// parked as compact state (an idle actor costs ~0.85 KB).
    pub max_live_actors: usize,
    /// At shutdown, how long providers get to finish their graceful stop (delete Graph
    /// subscriptions, log out of O2G, un-SUBSCRIBE) before they are aborted, in seconds.
    pub provider_stop_secs: u64,
}

impl Default for HubSection {
    fn default() -> Self {
        HubSection { shards: None, replay_buffer: 32_768, shard_mailbox: 8192, user_mailbox: 256, tick_ms: 100, max_live_actors: 4096, provider_stop_secs: 10 }
    }
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Largest JSON request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest directory import body, in bytes.
    pub max_import_bytes: usize,
    /// HTTP worker threads; default: 2 (the shards do the heavy lifting).
    pub workers: Option<usize>,
    /// Require a token for `/metrics` (default: open, it holds only counts).
    pub metrics_require_token: bool,
    /// Largest page size of search results.
    pub max_page: usize,
    /// Largest webhook body (`/hooks/…`: Graph change notifications, operator pushes), in bytes.
    pub max_hook_bytes: usize,
    /// The hub's base URL as webhook senders reach it (e.g. `https://hub.example.com`), used
    /// in subscriptions providers create. Default: `http://` (`https://` with TLS) + the
    /// listen address.
    pub public_url: Option<String>,
    /// PEM certificate chain (leaf first): with `tls_key_file`, the listener speaks HTTPS.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

impl HttpSection {
    /// `https` when TLS is configured, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert_file.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The hub's base URL as peers reach it: `public_url` (without a trailing `/`), else the
    /// scheme and the listen address.
    pub fn base_url(&self, listen: std::net::SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("{}://{listen}", self.scheme()),
        }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            max_body_bytes: 64 * 1024,
            max_import_bytes: 32 * 1024 * 1024,
            workers: None,
            metrics_require_token: false,
            max_page: 500,
            max_hook_bytes: 4 * 1024 * 1024,
            public_url: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// `[stream]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSection {
    /// Changes queued per client before it coalesces to the latest per person.
    pub outbox_capacity: usize,
    /// Heartbeat interval, seconds.
    pub heartbeat_secs: u64,
    /// Most concurrent stream clients.
    pub max_subscribers: usize,
    /// Largest client message (WebSocket), bytes.
    pub max_message_bytes: usize,
}

impl Default for StreamSection {
    fn default() -> Self {
        StreamSection { outbox_capacity: 1024, heartbeat_secs: 15, max_subscribers: 10_000, max_message_bytes: 256 * 1024 }
    }
}

/// `[snapshot]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotSection {
    /// How often changed presence is written to the store, milliseconds.
    pub interval_ms: u64,
}

impl Default for SnapshotSection {
    fn default() -> Self {
        SnapshotSection { interval_ms: 2000 }
    }
}

/// `[directory]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectorySection {
    /// A CSV or JSON file imported at start (replacing the stored directory when it changed).
    /// Without `sources` it is also watched: a changed file is applied live. The shorthand
    /// for one `type = "file"` source.
    pub import: Option<PathBuf>,
    /// How phone numbers are normalised to E.164.
    pub number_plan: NumberPlanConfig,
    /// `[[directory.sources]]`: where people come from (LDAP/AD, Entra ID, files), synced
    /// live. With sources, the directory is theirs: `import` must not be set too.
    pub sources: Vec<presence_providers::directory::SourceConfig>,
    /// How the sources' records of one person are matched, tried in order (`entra_id`,
    /// `email`, `id`, `sip_uri`).
    #[serde(deserialize_with = "one_or_many")]
    pub match_key: Vec<crate::sync::merge::MatchKey>,
    /// `[directory.precedence]`: per hub field (or `default`), the source names whose value
    /// wins, first first. Unnamed sources follow in configuration order.
    pub precedence: std::collections::BTreeMap<String, Vec<String>>,
    /// A pass that would remove more than this share of the people (percent) is held and
    /// reported instead of applied.
    pub max_removal_percent: f64,
    /// How long a leaver's absences and last state are kept, so a re-hire or a mistaken
    /// removal gets them back (days).
    pub leaver_retention_days: u32,
}

impl Default for DirectorySection {
    fn default() -> Self {
        use crate::sync::merge::MatchKey;
        DirectorySection {
            import: None,
            number_plan: NumberPlanConfig::default(),
            sources: Vec::new(),
            match_key: vec![MatchKey::EntraId, MatchKey::Email],
            precedence: Default::default(),
            max_removal_percent: 10.0,
            leaver_retention_days: 30,
        }
    }
}

/// A value or a list of values.
fn one_or_many<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(v) => vec![v],
        OneOrMany::Many(v) => v,
    })
}

impl DirectorySection {
    /// The sources to sync: the configured ones, else the `import` file as a file source.
    pub fn effective_sources(&self) -> Vec<presence_providers::directory::SourceConfig> {
        match (&self.import, self.sources.is_empty()) {
            (Some(path), true) => vec![presence_providers::directory::SourceConfig::File(presence_providers::directory::file::FileConfig::new(path.clone()))],
            _ => self.sources.clone(),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.import.is_some() && !self.sources.is_empty() {
            return Err("directory.import and [[directory.sources]] do not go together: add the file as a source with type = \"file\"".into());
        }
        if self.match_key.is_empty() {
            return Err("directory.match_key needs at least one key".into());
        }
        if !(0.0..=100.0).contains(&self.max_removal_percent) {
            return Err("directory.max_removal_percent must be 0-100".into());
        }
        if !(1..=3650).contains(&self.leaver_retention_days) {
            return Err("directory.leaver_retention_days must be 1-3650".into());
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.sources {
            let name = s.name();
            if name.trim().is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(format!("directory source name {name:?}: 1-64 letters, digits, '-' or '_'"));
            }
            if !names.insert(name) {
                return Err(format!("directory source name {name:?} is used twice"));
            }
            s.validate().map_err(|e| format!("directory source {name}: {e}"))?;
        }
        for (field, order) in &self.precedence {
            if field != "default" && !crate::sync::merge::FIELDS.contains(&field.as_str()) {
                return Err(format!("directory.precedence: unknown field {field:?} (fields: default, {})", crate::sync::merge::FIELDS.join(", ")));
            }
            if let Some(n) = order.iter().find(|n| !names.contains(n.as_str())) {
                return Err(format!("directory.precedence.{field}: no source is named {n:?}"));
            }
        }
        Ok(())
    }
}

/// `[directory.number_plan]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NumberPlanConfig {
    /// Country calling code, e.g. "46" (Sweden) or "47" (Norway).
    pub country_code: String,
    /// National trunk prefix ("0" in Sweden, "" in Norway).
    pub trunk_prefix: String,
    /// International call prefix.
    pub international_prefix: String,
    /// Numbers of at most this many digits are extensions.
    pub max_extension_len: usize,
}

impl Default for NumberPlanConfig {
    fn default() -> Self {
        NumberPlanConfig { country_code: "46".into(), trunk_prefix: "0".into(), international_prefix: "00".into(), max_extension_len: 6 }
    }
}

impl NumberPlanConfig {
    /// As the directory's type.
    pub fn plan(&self) -> NumberPlan {
        NumberPlan {
            country_code: self.country_code.clone(),
            trunk_prefix: self.trunk_prefix.clone(),
            international_prefix: self.international_prefix.clone(),
            max_extension_len: self.max_extension_len,
        }
    }
}

/// `[web]`: the web directory and attendant console served at `/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSection {
    /// Serve the web front end at `/` (the API is served either way).
    pub enabled: bool,
    /// Title shown in the page header and the browser tab.
    pub title: String,
    /// Language when the browser's does not decide: `auto` (the browser's), `sv` or `en`.
    pub language: WebLanguage,
    /// Named busy-lamp groups offered to everyone (besides each browser's own list and the
    /// departments).
    pub groups: Vec<WebGroup>,
}

impl Default for WebSection {
    fn default() -> Self {
        WebSection { enabled: true, title: "presence-hub".into(), language: WebLanguage::Auto, groups: Vec::new() }
    }
}

/// The web front end's language.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WebLanguage {
    /// The browser's preferred language if it is Swedish or English, else English.
    #[default]
    Auto,
    /// Swedish.
    Sv,
    /// English.
    En,
}

/// `[[web.groups]]`: a named busy-lamp group.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebGroup {
    /// Name shown in the lamp view ("Reception", "Ledning").
    pub name: String,
    /// People, by any identity the directory resolves (id, e-mail, extension, number…).
    pub members: Vec<String>,
}

/// Most web groups.
pub const MAX_WEB_GROUPS: usize = 100;
/// Most members of one web group.
pub const MAX_WEB_GROUP_MEMBERS: usize = 1000;

/// `[[tokens]]`: one API token, stored as the SHA-256 of the token (hex).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who the token belongs to (shown in logs and on absences it sets).
    pub name: String,
    /// Role.
    pub role: Role,
    /// Hex SHA-256 of the token (`presence-hub hash-token` prints it).
    pub sha256: String,
}

/// Why a configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// Path.
        path: String,
        /// Parser message (with line and column).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
}

/// The `[[providers]]` entries of a TOML text — a config file's, or a shipped example's such as
/// `fixtures/operators/tdc.toml`. `origin` names the text in errors.
pub fn providers_from_toml(text: &str, origin: &str) -> Result<Vec<ProviderConfig>, ConfigError> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        providers: Vec<ProviderConfig>,
    }
    let f: File = toml::from_str(text).map_err(|e| ConfigError::Parse { path: origin.into(), message: e.to_string() })?;
    Ok(f.providers)
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.display().to_string(), source: e })?;
        let cfg: Config = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.display().to_string(), message: e.to_string() })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and consistency (providers too, without starting them).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if let Err(m) = self.sip.validate() {
            return bad(m);
        }
        if let Some(Err(m)) = self.cluster.as_ref().map(|c| c.validate()) {
            return bad(m);
        }
        if jiff::tz::TimeZone::get(&self.time_zone).is_err() {
            return bad(format!("time_zone {:?} is not a known IANA time zone", self.time_zone));
        }
        if !(1..=64).contains(&self.hub.shards.unwrap_or(1)) {
            return bad("hub.shards must be 1-64".into());
        }
        if self.hub.replay_buffer == 0 || self.hub.replay_buffer > 10_000_000 {
            return bad("hub.replay_buffer must be 1-10000000".into());
        }
        if self.hub.shard_mailbox < 16 || self.hub.user_mailbox < 16 {
            return bad("hub.shard_mailbox and hub.user_mailbox must be at least 16".into());
        }
        if !(1..=300).contains(&self.hub.provider_stop_secs) {
            return bad("hub.provider_stop_secs must be 1-300".into());
        }
        if self.hub.max_live_actors == 0 {
            return bad("hub.max_live_actors must be at least 1".into());
        }
        if !(10..=10_000).contains(&self.hub.tick_ms) {
            return bad("hub.tick_ms must be 10-10000".into());
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.http.max_body_bytes) {
            return bad("http.max_body_bytes must be 1 KiB-16 MiB".into());
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.http.max_hook_bytes) {
            return bad("http.max_hook_bytes must be 1 KiB-64 MiB".into());
        }
        if let Some(u) = &self.http.public_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() > 300 {
                return bad("http.public_url must be an http:// or https:// URL".into());
            }
        }
        if self.http.tls_cert_file.is_some() != self.http.tls_key_file.is_some() {
            return bad("http.tls_cert_file and http.tls_key_file go together".into());
        }
        if !(1..=10_000).contains(&self.http.max_page) {
            return bad("http.max_page must be 1-10000".into());
        }
        if !(1..=1_000_000).contains(&self.stream.outbox_capacity) {
            return bad("stream.outbox_capacity must be 1-1000000".into());
        }
        if !(1..=3600).contains(&self.stream.heartbeat_secs) {
            return bad("stream.heartbeat_secs must be 1-3600".into());
        }
        self.directory.validate().map_err(ConfigError::Invalid)?;
        let plan = &self.directory.number_plan;
        if plan.country_code.is_empty() || !plan.country_code.bytes().all(|b| b.is_ascii_digit()) || plan.country_code.len() > 3 {
            return bad("directory.number_plan.country_code must be 1-3 digits".into());
        }
        for t in &self.tokens {
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(format!("token {:?}: sha256 must be 64 hex digits", t.name));
            }
            if t.role == Role::SelfService {
                return bad(format!("token {:?}: the self role is for people who sign in; a token has no person", t.name));
            }
        }
        if let Some(o) = &self.auth.oidc {
            o.validate(self.http.public_url.as_deref()).map_err(ConfigError::Invalid)?;
        }
        if !(1..=3650).contains(&self.audit.retention_days) {
            return bad("audit.retention_days must be 1-3650".into());
        }
        if self.web.title.trim().is_empty() || self.web.title.len() > 100 {
            return bad("web.title must be 1-100 bytes".into());
        }
        if self.web.groups.len() > MAX_WEB_GROUPS {
            return bad(format!("at most {MAX_WEB_GROUPS} web.groups"));
        }
        let mut groups = std::collections::HashSet::new();
        for g in &self.web.groups {
            if g.name.trim().is_empty() || g.name.len() > 100 {
                return bad("web.groups: name must be 1-100 bytes".into());
            }
            if !groups.insert(g.name.as_str()) {
                return bad(format!("web.groups: {:?} is named twice", g.name));
            }
            if g.members.len() > MAX_WEB_GROUP_MEMBERS {
                return bad(format!("web.groups {:?}: at most {MAX_WEB_GROUP_MEMBERS} members", g.name));
            }
        }
        self.policy.validate().map_err(|e| ConfigError::Invalid(format!("policy: {e}")))?;
        let mut names = std::collections::HashSet::new();
        for p in &self.providers {
            if !names.insert(p.name()) {
                return bad(format!("provider name {:?} is used twice", p.name()));
            }
            p.validate().map_err(|e| ConfigError::Invalid(format!("provider {}: {e}", p.name())))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut cfg: Config = toml::from_str(&text).unwrap();
        // Provider files are relative to the repository root.
        cfg.providers.clear();
        cfg.validate().unwrap();
        assert_eq!(cfg.tokens.len(), 3);
    }

    /// Every commented-out `[[providers]]` example in config.example.toml, uncommented, parses
    /// (unknown keys are refused) and validates: the documentation cannot drift from the code.
    #[test]
    fn the_example_provider_blocks_parse_and_validate() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut blocks: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if line.trim() == "# [[providers]]" {
                blocks.extend(current.take());
                current = Some(String::new());
            }
            match (&mut current, line.strip_prefix("# ")) {
                (Some(b), Some(l)) => {
                    b.push_str(l);
                    b.push('\n');
                }
                (Some(_), None) => blocks.extend(current.take()),
                _ => {}
            }
        }
        blocks.extend(current);
        let mut kinds = Vec::new();
        for b in &blocks {
            let providers = providers_from_toml(b, "config.example.toml").unwrap_or_else(|e| panic!("{e}\n{b}"));
            for p in &providers {
                p.validate().unwrap_or_else(|e| panic!("{e}\n{b}"));
                kinds.push(p.kind());
            }
        }
        for k in ["replay", "graph_presence", "calendar", "sip_presence", "sip_dialog", "sfb", "telenor_mbn", "operator", "o2g"] {
            assert!(kinds.contains(&k), "config.example.toml documents no {k} provider: {kinds:?}");
        }
    }

    /// The commented-out `[auth.oidc]` example in config.example.toml, uncommented, parses and
    /// validates (with a public URL), so the documentation cannot drift from the code.
    #[test]
    fn the_example_sign_in_block_parses_and_validates() {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml")).unwrap();
        let block: String = text
            .lines()
            .skip_while(|l| l.trim() != "# [auth.oidc]")
            .take_while(|l| l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        assert!(block.contains("[auth.oidc.roles]"), "{block}");
        let mut cfg: Config = toml::from_str(&format!("[http]\npublic_url = \"https://hub.example.com\"\n{block}")).unwrap_or_else(|e| panic!("{e}\n{block}"));
        let oidc = cfg.auth.oidc.as_mut().unwrap();
        assert_eq!(oidc.roles.get("Switchboard"), Some(&Role::Operator));
        // The example names a secret file; validation only checks that one secret is given.
        cfg.validate().unwrap();
    }

    /// The commented-out `[cluster]` example in config.example.toml, uncommented, parses and
    /// validates, so the documentation cannot drift from the code.
    #[test]
    fn the_example_cluster_block_parses_and_validates() {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml")).unwrap();
        let block: String = text
            .lines()
            .skip_while(|l| l.trim() != "# [cluster]")
            .take_while(|l| l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let cfg: Config = toml::from_str(&block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        let c = cfg.cluster.as_ref().expect("a [cluster] block");
        assert_eq!((c.node.as_str(), c.nats.len(), c.replicas), ("hub-a", 3, 3));
        cfg.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        assert!(toml::from_str::<Config>("listn = \"127.0.0.1:1\"").is_err());
        let cfg: Config = toml::from_str("[hub]\nshards = 0").unwrap();
        assert!(cfg.validate().is_err());
        let cfg: Config = toml::from_str("time_zone = \"Mars/Olympus\"").unwrap();
        assert!(cfg.validate().is_err());
        let cfg: Config = toml::from_str("[[tokens]]\nname=\"x\"\nrole=\"admin\"\nsha256=\"abc\"").unwrap();
        assert!(cfg.validate().is_err());
    }
}
