//! The `entra` directory source: the people of an Entra ID tenant, read app-only through
//! Microsoft Graph.
//!
//! - **Whole tenant** (no `group`): `GET /users/delta?$select=…` (only the properties the
//!   mapping uses), following `@odata.nextLink` to the `@odata.deltaLink`, which is kept as the
//!   cursor with the time it was issued. An incremental pass starts from it and gets only the
//!   users changed since, with `@removed` for those deleted (`changed`: restorable,
//!   `deleted`: for good — both are removals here). Needs the application permission
//!   `User.Read.All`.
//! - **One group** (`group = "<object id>"`): its transitive members that are users,
//!   `GET /groups/{id}/transitiveMembers/microsoft.graph.user`, paged, as a full pass every
//!   time (Graph has no delta for transitive members). Needs `GroupMember.Read.All`, and
//!   `User.Read.All` for the members' properties (without it Graph returns members with their
//!   id only).
//!
//! **Partial updates.** Graph sends a changed user with *at least* the changed properties, so
//! a property left out of an incremental answer means "unchanged", and `null` means "cleared".
//! The source keeps the last-known state of every user in memory ([`parse::User`]) and applies
//! each change onto it, so every entry it hands back is a complete record. That state belongs
//! to one delta link: an incremental pass runs only from the link this very source issued; after
//! a restart (memory empty, a link in the store) or with a link from elsewhere, it runs a full
//! pass and says so ([`super::PassKind::Full`]).
//!
//! **Falling back to a full pass**: no cursor, a cursor that is not one, a delta link older
//! than seven days (Microsoft's lifetime for directory delta tokens), or Graph refusing the link
//! (`410 Gone`, or the error codes `syncStateNotFound` / `resyncRequired`).
//!
//! **Filter.** Graph's delta takes no `$filter` but `id eq …`, so `filter` is applied here to
//! the selected properties ([`filter`]); a user who stops matching (e.g. `accountEnabled eq
//! true` and the account is disabled) is reported in [`super::Pass::removed`].
//!
//! **Throttling and limits.** `429` (and `503`/`504` with `Retry-After`) are waited out as Graph
//! asks (the toolkit's [`crate::common::microsoft::throttle_wait`]), each wait at most
//! `max_retry_wait_secs` and at most `max_retries` per pass; every page is read within
//! `max_page_bytes` and `call_timeout_secs`; more than `max_users` users fail the pass with
//! [`super::SourceError::Limit`]. A `401` renews the app token once; a second is
//! [`super::SourceError::Auth`].
//!
//! - [`parse`]: pages, users, partial updates, the mapping to [`super::Record`], the cursor (pure).
//! - [`filter`]: the `filter` setting (pure).
//! - [`runtime`]: the calls and the passes.

pub mod filter;
pub mod parse;
pub mod runtime;

use serde::Deserialize;

pub use runtime::EntraSource;

use super::SourceError;
use crate::common::config::NoOtherKeys;
use crate::common::defaults::{self, check_range};
use crate::common::microsoft::MicrosoftApp;

/// `[[directory.sources]] type = "entra"`. `Debug` leaves the client secret out.
#[derive(Debug, Clone, Deserialize)]
pub struct EntraConfig {
    /// Name of the source (`entra` when not given).
    #[serde(default = "default_name")]
    pub name: String,
    /// The Entra app: `tenant_id` (or `token_url`), `client_id` and `client_secret` required;
    /// `authority`, `graph_url`.
    #[serde(flatten)]
    pub app: MicrosoftApp,
    /// Which users count ([`filter`]), e.g. `accountEnabled eq true`; applied by the source.
    #[serde(default)]
    pub filter: Option<String>,
    /// Read the transitive members of this group (object id) instead of the whole tenant.
    #[serde(default)]
    pub group: Option<String>,
    /// Seconds between passes.
    #[serde(default = "defaults::u64_::<{ super::defaults::INTERVAL_SECS }>")]
    pub interval_secs: u64,
    /// Most users one pass may read; more fail it with a limit error.
    #[serde(default = "defaults::usize_::<1_000_000>")]
    pub max_users: usize,
    /// Users per page asked for in group mode (`$top`, Graph allows 1-999).
    #[serde(default = "defaults::u32_::<999>")]
    pub page_size: u32,
    /// Deadline of one page (and of the token call), in seconds.
    #[serde(default = "defaults::u64_::<30>")]
    pub call_timeout_secs: u64,
    /// Largest page body read, in bytes.
    #[serde(default = "defaults::usize_::<{ 16 * 1024 * 1024 }>")]
    pub max_page_bytes: usize,
    /// Most throttled answers waited out in one pass; one more fails the pass.
    #[serde(default = "defaults::u32_::<5>")]
    pub max_retries: u32,
    /// Longest wait for one throttled answer, in seconds; Graph asking for longer fails the
    /// pass (the next one comes at the interval).
    #[serde(default = "defaults::u64_::<60>")]
    pub max_retry_wait_secs: u64,
    /// Refuses any other key (in place of `deny_unknown_fields`, which `app` rules out).
    #[serde(flatten)]
    pub other: NoOtherKeys,
}

fn default_name() -> String {
    "entra".into()
}

impl EntraConfig {
    /// Checks the settings without connecting.
    pub fn validate(&self) -> Result<(), SourceError> {
        self.check().map_err(SourceError::Config)
    }

    fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        if self.app.token_url.is_none() {
            self.app.require(&["tenant_id"])?;
        }
        self.app.require(&["client_id", "client_secret"])?;
        self.app.check()?;
        if let Some(f) = &self.filter {
            filter::Filter::parse(f)?;
        }
        if let Some(g) = &self.group {
            let ok = !g.is_empty() && g.len() <= 64 && g.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok {
                return Err("group must be the group's object id (letters, digits and -, at most 64)".into());
            }
        }
        check_range("interval_secs", self.interval_secs, 10..=86_400)?;
        check_range("max_users", self.max_users, 1..=10_000_000)?;
        check_range("page_size", self.page_size, 1..=999)?;
        check_range("call_timeout_secs", self.call_timeout_secs, 1..=300)?;
        check_range("max_page_bytes", self.max_page_bytes, 64 * 1024..=crate::common::json::MAX_BODY)?;
        check_range("max_retries", self.max_retries, 0..=20)?;
        check_range("max_retry_wait_secs", self.max_retry_wait_secs, 1..=600)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::SourceConfig;

    const BASE: &str = "type = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s3cret-value\"\n";

    fn error(extra: &str) -> String {
        match toml::from_str::<SourceConfig>(&format!("{BASE}{extra}")) {
            Err(e) => e.to_string(),
            Ok(c) => c.validate().err().map(|e| e.to_string()).unwrap_or_default(),
        }
    }

    #[test]
    fn the_contract_keys_parse_with_defaults_and_the_secret_stays_out_of_debug() {
        let text = format!("{BASE}name = \"hr\"\nauthority = \"https://login.microsoftonline.com\"\ngraph_url = \"https://graph.microsoft.com/v1.0\"\nfilter = \"accountEnabled eq true\"\ninterval_secs = 300\n");
        let c: SourceConfig = toml::from_str(&text).unwrap();
        c.validate().unwrap();
        assert_eq!((c.name(), c.kind(), c.interval().as_secs(), c.full_interval()), ("hr", "entra", 300, None));
        let SourceConfig::Entra(e) = &c else { panic!("entra") };
        assert_eq!((e.max_users, e.page_size, e.max_retries, e.max_retry_wait_secs), (1_000_000, 999, 5, 60));
        assert!(!format!("{c:?}").contains("s3cret-value"), "{c:?}");
        let d: SourceConfig = toml::from_str(BASE).unwrap();
        assert_eq!(d.name(), "entra");
        assert_eq!(error(""), "");
    }

    #[test]
    fn bad_settings_are_refused_with_a_plain_reason() {
        assert!(error("colour = \"blue\"").contains("unknown field `colour`"), "{}", error("colour = 1"));
        let e = error("filter = \"city eq 'Oslo'\"");
        assert!(e.starts_with("configuration: filter: unknown property"), "{e}");
        assert_eq!(error("group = \"a/../b\""), "configuration: group must be the group's object id (letters, digits and -, at most 64)");
        assert_eq!(error("interval_secs = 1"), "configuration: interval_secs must be 10-86400");
        assert_eq!(error("page_size = 1000"), "configuration: page_size must be 1-999");
        assert_eq!(error("graph_url = \"ftp://x\""), "configuration: graph_url must be an http(s) URL");
        let no_secret = toml::from_str::<SourceConfig>("type = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"").unwrap();
        assert_eq!(no_secret.validate().unwrap_err().to_string(), "configuration: client_secret must be set");
        let no_tenant = toml::from_str::<SourceConfig>("type = \"entra\"\nclient_id = \"c\"\nclient_secret = \"s\"").unwrap();
        assert_eq!(no_tenant.validate().unwrap_err().to_string(), "configuration: tenant_id must be set");
    }
}
