//! Microsoft Teams presence through Microsoft Graph (`type = "graph_presence"`).
//!
//! - [`parse`]: pure parsers and request builders for the documented shapes (presence,
//!   getPresencesByUserId, subscriptions, change notifications, OAuth2 tokens, errors).
//! - [`client`]: tokens (client credentials for reads; service accounts' refresh tokens for
//!   subscriptions, which Graph allows only with delegated permission) and calls under the
//!   1,500 requests / 30 s budget with `429` + `Retry-After` honoured.
//! - [`hook`]: the webhook (validation handshake, `clientState` check, `202` at once).
//! - [`runtime`]: the reads — start-up snapshot in batches of 650, the people notifications
//!   name, fallback polling while notifications lapse, a periodic consistency check — and the
//!   feed's health under faults (reads with deadlines, a watchdog, nothing notified lost).
//! - [`subscriptions`]: up to 650 people per service account, renewal before the 60-minute
//!   expiry, lifecycle events, deletion at shutdown — in a task of its own.

pub mod client;
pub mod crypto;
pub mod hook;
pub mod parse;
pub mod runtime;
pub mod subscriptions;
#[cfg(test)]
mod tests;

use serde::Deserialize;

use crate::{BuildError, ProviderError, ProviderTask};
use crate::common::config::NoOtherKeys;
use crate::common::defaults;
use crate::common::device_code;
use crate::common::microsoft::MicrosoftApp;
use presence_actors::provider::{Cursors, ProviderContext};

/// One service account that holds a change-notification subscription (up to 650 people).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccount {
    /// A name for logs and health (e.g. the account's UPN).
    pub name: String,
    /// A refresh token of the account for this app (delegated Presence.Read.All,
    /// offline_access), pasted. Optional: `presence-hub login graph --account NAME` signs the
    /// account in and stores its token; rotated tokens are kept in the store either way, and a
    /// stored token is preferred.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl ServiceAccount {
    /// The configured refresh token, unless blank.
    pub fn configured_refresh_token(&self) -> Option<&str> {
        self.refresh_token.as_deref().filter(|t| !t.trim().is_empty())
    }

    /// Whether the account has a refresh token: configured, or stored by the provider `provider`
    /// in `cursors` (under [`client::refresh_cursor`]).
    pub fn has_refresh_token(&self, cursors: &dyn Cursors, provider: &str) -> bool {
        self.configured_refresh_token().is_some() || cursors.get(provider, &client::refresh_cursor(&self.name)).is_some_and(|t| !t.is_empty())
    }
}

/// What an operator is told about a service account with no refresh token.
pub fn needs_login(provider: &str, account: &str) -> String {
    format!("service account {account:?} of provider {provider:?} has no refresh token (none configured, none stored): run `presence-hub login graph --account {account}`")
}

/// `type = "graph_presence"` settings.
#[derive(Debug, Clone, Deserialize)]
pub struct GraphPresenceConfig {
    /// Provider name.
    pub name: String,
    /// The Entra app: `tenant_id`, `client_id` and `client_secret` (all required), `authority`,
    /// `token_url`, `graph_url`.
    #[serde(flatten)]
    pub app: MicrosoftApp,
    /// Use change notifications (needs `service_accounts`); otherwise poll only.
    #[serde(default = "defaults::yes")]
    pub notifications: bool,
    /// Service accounts holding the subscriptions, 650 people each.
    #[serde(default)]
    pub service_accounts: Vec<ServiceAccount>,
    /// The device authorization endpoint `presence-hub login graph` uses; default: the token
    /// endpoint's sibling (`…/oauth2/v2.0/token` → `…/oauth2/v2.0/devicecode`).
    #[serde(default)]
    pub device_code_url: Option<String>,
    /// The `clientState` secret (≤ 128 characters); default: a new random one per start.
    #[serde(default)]
    pub client_state: Option<String>,
    /// Subscription lifetime asked for, in minutes (Graph allows at most 60).
    #[serde(default = "defaults::u64_::<55>")]
    pub subscription_minutes: u64,
    /// Renew this many seconds before expiry.
    #[serde(default = "defaults::u64_::<600>")]
    pub renew_before_secs: u64,
    /// Poll everyone this often as a consistency check (seconds).
    #[serde(default = "defaults::u64_::<900>")]
    pub consistency_poll_secs: u64,
    /// Poll people without a working subscription this often (seconds).
    #[serde(default = "defaults::u64_::<60>")]
    pub fallback_poll_secs: u64,
    /// Gather notifications for this long before fetching their presence (ms).
    #[serde(default = "defaults::u64_::<50>")]
    pub batch_ms: u64,
    /// Deadline of one presence read (getPresencesByUserId), in seconds.
    #[serde(default = "defaults::u64_::<10>")]
    pub read_timeout_secs: u64,
    /// Deadline of one subscription call (create, renew, reauthorize, delete), in seconds.
    #[serde(default = "defaults::u64_::<15>")]
    pub call_timeout_secs: u64,
    /// The feed goes down after this many failed reads in a row.
    #[serde(default = "defaults::u32_::<2>")]
    pub down_after_failures: u32,
    /// The feed goes down when reads have been due this long without one succeeding, whatever
    /// the reason (seconds).
    #[serde(default = "defaults::u64_::<30>")]
    pub watchdog_secs: u64,
    /// Ask Graph to include the presence, encrypted, in notifications (`includeResourceData`):
    /// no fetch per change. Needs the three `encryption_*` settings.
    #[serde(default)]
    pub include_resource_data: bool,
    /// PEM certificate (RSA 2048–4096) whose public key Graph encrypts with.
    #[serde(default)]
    pub encryption_certificate_file: Option<std::path::PathBuf>,
    /// PEM PKCS#8 private key of that certificate.
    #[serde(default)]
    pub encryption_key_file: Option<std::path::PathBuf>,
    /// The certificate's id as sent to Graph (`encryptionCertificateId`).
    #[serde(default)]
    pub encryption_certificate_id: Option<String>,
    /// Refuses any other key (in place of `deny_unknown_fields`, which `app` rules out).
    #[serde(flatten)]
    pub other: NoOtherKeys,
}

impl GraphPresenceConfig {
    /// The device authorization endpoint: `device_code_url`, else the sibling of the token
    /// endpoint ([`device_code::device_code_url`]); `None` when neither gives one.
    pub fn device_code_endpoint(&self) -> Option<String> {
        self.device_code_url.clone().or_else(|| device_code::device_code_url(&self.app.token_endpoint()))
    }

    /// The key that decrypts notifications with resource data (`include_resource_data`).
    pub fn notification_key(&self) -> Result<Option<crypto::NotificationKey>, BuildError> {
        if !self.include_resource_data {
            return Ok(None);
        }
        let (Some(cert), Some(key), Some(id)) = (&self.encryption_certificate_file, &self.encryption_key_file, &self.encryption_certificate_id) else {
            return Err(BuildError::Invalid("include_resource_data needs encryption_certificate_file, encryption_key_file and encryption_certificate_id".into()));
        };
        let read = |p: &std::path::Path| std::fs::read_to_string(p).map_err(|e| BuildError::Io { path: p.display().to_string(), source: e });
        let k = crypto::NotificationKey::from_pem(&read(key)?, &read(cert)?, id).map_err(|e| BuildError::Invalid(e.to_string()))?;
        Ok(Some(k))
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), BuildError> {
        let bad = |m: String| Err(BuildError::Invalid(m));
        if let Err(m) = self.app.require(&["tenant_id", "client_id", "client_secret"]).and_then(|()| self.app.check()) {
            return bad(m);
        }
        if let Some(c) = &self.client_state {
            if c.is_empty() || c.len() > parse::MAX_CLIENT_STATE {
                return bad(format!("client_state must be 1-{} characters", parse::MAX_CLIENT_STATE));
            }
        }
        if !(5..=60).contains(&self.subscription_minutes) {
            return bad("subscription_minutes must be 5-60 (Graph's limit for presence is 60)".into());
        }
        if self.renew_before_secs == 0 || self.renew_before_secs >= self.subscription_minutes * 60 {
            return bad("renew_before_secs must be at least 1 and less than subscription_minutes × 60".into());
        }
        if !(10..=86_400).contains(&self.consistency_poll_secs) || !(5..=86_400).contains(&self.fallback_poll_secs) {
            return bad("consistency_poll_secs must be 10-86400 and fallback_poll_secs 5-86400".into());
        }
        if self.batch_ms > 5_000 {
            return bad("batch_ms must be at most 5000".into());
        }
        if !(1..=120).contains(&self.read_timeout_secs) || !(1..=120).contains(&self.call_timeout_secs) {
            return bad("read_timeout_secs and call_timeout_secs must be 1-120".into());
        }
        if !(1..=10).contains(&self.down_after_failures) {
            return bad("down_after_failures must be 1-10".into());
        }
        if !(2..=3600).contains(&self.watchdog_secs) {
            return bad("watchdog_secs must be 2-3600".into());
        }
        if self.include_resource_data {
            self.notification_key()?;
        }
        let mut names = std::collections::HashSet::new();
        for a in &self.service_accounts {
            if a.name.trim().is_empty() || a.name.len() > 256 {
                return bad("a service account's name must be 1-256 characters".into());
            }
            if !names.insert(a.name.as_str()) {
                return bad(format!("service account {:?} is listed twice", a.name));
            }
        }
        if let Some(u) = &self.device_code_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return bad("device_code_url must be an http(s) URL".into());
            }
        }
        if self.notifications && self.service_accounts.is_empty() {
            return bad("notifications need at least one [[providers.service_accounts]] (Graph allows presence subscriptions only with delegated permission); set notifications = false to poll only".into());
        }
        Ok(())
    }
}

/// The provider's task (registers the webhook now; reads and subscribes once polled). A
/// service account with no refresh token (none configured, none stored by `presence-hub login
/// graph`) fails the start: the feed is down, health says which account needs a login, and the
/// supervisor tries again with back-off (so a login made meanwhile is picked up).
pub fn task(config: &GraphPresenceConfig, ctx: ProviderContext) -> Result<ProviderTask, BuildError> {
    config.validate()?;
    if config.notifications {
        let missing: Vec<String> = config.service_accounts.iter().filter(|a| !a.has_refresh_token(ctx.cursors.as_ref(), &ctx.name)).map(|a| needs_login(&ctx.name, &a.name)).collect();
        if !missing.is_empty() {
            let why = missing.join("; ");
            return Ok(Box::pin(async move { Err(ProviderError::Failed(why)) }));
        }
    }
    let key = config.notification_key()?;
    let rt = runtime::Runtime::new(ctx, config.clone(), key);
    Ok(Box::pin(async move {
        rt.run().await;
        Ok(())
    }))
}
