//! Calendar free/busy sources — pure parsers and request builders, no I/O.
//!
//! Three protocols answer the same question ("what is on this person's calendar now and
//! next?") and all parse into the common [`model::MailboxSchedule`]:
//! - [`ews`]: Exchange Web Services `GetUserAvailability` (SOAP, on-premises Exchange; in
//!   Exchange Online it is being retired — [`ews::classify_error`] recognises the block);
//! - [`schedule`]: Microsoft Graph `calendar/getSchedule` (JSON, the EWS successor);
//! - [`google`]: Google Calendar `freeBusy` (JSON, busy intervals only).
//!
//! [`model::to_signals`] turns one mailbox's schedule into the one calendar [`Signal`] the hub
//! keeps for that person, and [`model::next_change`] tells the runtime when to re-evaluate so
//! the next meeting starts on time. Everything here is bounded and never panics on input.
//!
//! The provider (`type = "calendar"`, `backend = "graph" | "ews" | "google"`) is its
//! configuration ([`CalendarConfig`], here) and its task ([`runtime`]). Its signals fill a slot
//! named after the provider, so two calendar providers (EWS for on-premises mailboxes, Graph
//! for cloud ones) sit side by side.
//!
//! [`Signal`]: presence_actors::model::Signal

pub mod ews;
pub mod google;
pub mod model;
pub mod runtime;
pub mod schedule;
#[cfg(test)]
mod tests;

pub use model::{
    next_change, to_signals, BusyStatus, CalendarError, CalendarItem, KeywordRule, MailboxSchedule, SignalPolicy,
};

use serde::Deserialize;

use crate::BuildError;
use crate::common::config::NoOtherKeys;
use crate::common::login::Login;
use crate::common::defaults;
use crate::common::microsoft::MicrosoftApp;

/// Which protocol the provider speaks.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Microsoft Graph `calendar/getSchedule` (app permission Calendars.Read).
    Graph,
    /// Exchange Web Services `GetUserAvailability` (on-premises Exchange; retired in Exchange Online).
    Ews,
    /// Google Calendar `freeBusy`.
    Google,
}

/// `type = "calendar"` settings.
#[derive(Debug, Clone, Deserialize)]
pub struct CalendarConfig {
    /// Provider name.
    pub name: String,
    /// `graph`, `ews` or `google`.
    pub backend: Backend,
    /// The OAuth app: `tenant_id` (Graph, and EWS with OAuth), `client_id` and `client_secret`
    /// (Graph, EWS with OAuth, Google), `authority`, `token_url` (overriding the default of the
    /// backend), `graph_url`.
    #[serde(flatten)]
    pub app: MicrosoftApp,
    /// EWS endpoint, e.g. `https://mail.example.com/EWS/Exchange.asmx`.
    #[serde(default)]
    pub ews_url: Option<String>,
    /// EWS Basic `username` and `password` (on-premises); without them, EWS uses an OAuth
    /// app token.
    #[serde(flatten)]
    pub login: Login,
    /// Google Calendar API base URL.
    #[serde(default = "default_google_url")]
    pub google_url: String,
    /// Google OAuth refresh token (an account with calendar.freebusy for the mailboxes).
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Poll every mailbox this often (seconds).
    #[serde(default = "defaults::u64_::<300>")]
    pub poll_interval_secs: u64,
    /// How far ahead to read (hours).
    #[serde(default = "defaults::u64_::<24>")]
    pub window_hours: u64,
    /// Merged free/busy slot length (EWS, Graph), minutes.
    #[serde(default = "defaults::u32_::<15>")]
    pub interval_minutes: u32,
    /// Keep meeting subjects and locations (shown only where `[policy] calendar_details`
    /// allows; never for private items).
    #[serde(default)]
    pub keep_details: bool,
    /// Subject-prefix rules, e.g. `{ prefix = "Lunch", availability = "Away", activity = "Lunch" }`.
    #[serde(default)]
    pub keywords: Vec<KeywordRule>,
    /// Deadline of one free/busy request, in seconds (EWS answers for 100 mailboxes can take
    /// a while; a backend that hangs past this counts as failed).
    #[serde(default = "defaults::u64_::<30>")]
    pub request_timeout_secs: u64,
    /// The feed goes down after this many failed polls in a row (its meetings show stale).
    #[serde(default = "defaults::u32_::<2>")]
    pub down_after_failures: u32,
    /// Refuses any other key (in place of `deny_unknown_fields`, which `app` rules out).
    #[serde(flatten)]
    pub other: NoOtherKeys,
}

fn default_google_url() -> String {
    "https://www.googleapis.com/calendar/v3".into()
}

impl CalendarConfig {
    /// Checks the settings for the chosen backend.
    pub fn validate(&self) -> Result<(), BuildError> {
        let bad = |m: String| Err(BuildError::Invalid(m));
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        match self.backend {
            Backend::Graph => {
                if !self.app.has_app_credentials() {
                    return bad("the graph backend needs tenant_id (or token_url), client_id and client_secret".into());
                }
            }
            Backend::Ews => {
                if !set(&self.ews_url) {
                    return bad("the ews backend needs ews_url".into());
                }
                if let Err(m) = self.login.check() {
                    return bad(m);
                }
                if self.login.pair().is_none() && !self.app.has_app_credentials() {
                    return bad("the ews backend needs username and password, or tenant_id, client_id and client_secret".into());
                }
            }
            Backend::Google => {
                if self.app.require(&["client_id", "client_secret"]).is_err() || !set(&self.refresh_token) {
                    return bad("the google backend needs client_id, client_secret and refresh_token".into());
                }
            }
        }
        if let Err(m) = self.app.check() {
            return bad(m);
        }
        if !(30..=86_400).contains(&self.poll_interval_secs) {
            return bad("poll_interval_secs must be 30-86400".into());
        }
        let max_hours = match self.backend {
            Backend::Ews => ews::MAX_WINDOW_DAYS * 24,
            Backend::Graph => schedule::MAX_WINDOW_DAYS * 24,
            Backend::Google => 62 * 24,
        };
        if self.window_hours == 0 || self.window_hours as i64 > max_hours {
            return bad(format!("window_hours must be 1-{max_hours} for this backend"));
        }
        if !(5..=1440).contains(&self.interval_minutes) {
            return bad("interval_minutes must be 5-1440".into());
        }
        if self.keywords.len() > 100 {
            return bad("at most 100 keywords".into());
        }
        if !(1..=300).contains(&self.request_timeout_secs) {
            return bad("request_timeout_secs must be 1-300".into());
        }
        if !(1..=10).contains(&self.down_after_failures) {
            return bad("down_after_failures must be 1-10".into());
        }
        Ok(())
    }

    pub(crate) fn batch_size(&self) -> usize {
        match self.backend {
            Backend::Graph => schedule::MAX_SCHEDULES,
            Backend::Ews => ews::MAX_MAILBOXES,
            Backend::Google => google::MAX_ITEMS,
        }
    }

    pub(crate) fn token_endpoint(&self) -> String {
        match (self.backend, &self.app.token_url) {
            (Backend::Google, None) => "https://oauth2.googleapis.com/token".into(),
            _ => self.app.token_endpoint(),
        }
    }

    pub(crate) fn scope(&self) -> &'static str {
        match self.backend {
            Backend::Graph => "https://graph.microsoft.com/.default",
            Backend::Ews => "https://outlook.office365.com/.default",
            Backend::Google => "https://www.googleapis.com/auth/calendar.freebusy",
        }
    }
}

impl CalendarConfig {
    pub(crate) fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Graph => "graph",
            Backend::Ews => "ews",
            Backend::Google => "google",
        }
    }
}

/// The provider's task.
pub fn task(config: &CalendarConfig, ctx: presence_actors::provider::ProviderContext) -> Result<crate::ProviderTask, BuildError> {
    config.validate()?;
    let rt = runtime::Runtime::new(ctx, config.clone());
    Ok(Box::pin(async move {
        rt.run().await;
        Ok(())
    }))
}

