//! The audit log: what is recorded, by whom, and how it is kept.
//!
//! - [`Action`] names every event (the `action` column; `GET /api/audit?action=` filters on it).
//! - [`entry`] builds a record for a caller and a request; writes that change state pass it to
//!   the store method that makes the change, so both commit together.
//! - [`Audit::security`] records a refusal (a bad token, a failed sign-in, a CSRF or Origin
//!   refusal) on its own. Refusals come from outside and may come in floods, so at most
//!   [`SECURITY_PER_MINUTE`] are written a minute; the rest are counted and the count is
//!   written with the next entry that gets through (`detail.suppressed_before`).
//! - Signals pushed through `POST /api/signals` are presence data an integration may send every
//!   second, not a change of settings, and nothing of them is stored: each caller's pushes are
//!   summed per minute into one `signals.pushed` entry ([`Audit::signals_pushed`],
//!   [`Audit::flush_signals`]), so the log says who fed what, without a row per request.
//! - `[audit] retention_days` (default 365): [`purge`] deletes older entries (hourly).

use std::sync::Mutex;

use presence_actors::model::now_ms;
use serde::Deserialize;

use crate::store::{AuditRecord, Store, UnixMs};
use crate::tokens::Caller;

/// Most refusals written a minute.
pub const SECURITY_PER_MINUTE: u32 = 120;

/// `[audit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSection {
    /// Entries older than this are deleted, days.
    pub retention_days: u32,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection { retention_days: 365 }
    }
}

/// Every event the audit log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// An absence was set.
    AbsenceCreated,
    /// An absence was changed (detail: old → new).
    AbsenceChanged,
    /// An absence was cleared (detail: what it was).
    AbsenceCleared,
    /// A person signed in (target: the session).
    SignIn,
    /// A sign-in failed (detail: why).
    SignInFailed,
    /// A person signed out.
    SignOut,
    /// An admin ended someone's session.
    SessionRevoked,
    /// A request's bearer token was refused.
    TokenRefused,
    /// A cookie-authenticated request came without the CSRF token, or from another origin.
    CsrfRefused,
    /// An admin started a directory sync pass.
    DirectorySync,
    /// An admin restarted a provider.
    ProviderRestarted,
    /// An integration pushed signals (one entry per caller and minute, with the counts).
    SignalsPushed,
    /// The configuration file was reloaded (or a reload was refused: `detail.error`).
    ConfigReloaded,
}

impl Action {
    /// Every action, for the API's documentation and tests.
    pub const ALL: [Action; 13] = [
        Action::AbsenceCreated,
        Action::AbsenceChanged,
        Action::AbsenceCleared,
        Action::SignIn,
        Action::SignInFailed,
        Action::SignOut,
        Action::SessionRevoked,
        Action::TokenRefused,
        Action::CsrfRefused,
        Action::DirectorySync,
        Action::ProviderRestarted,
        Action::SignalsPushed,
        Action::ConfigReloaded,
    ];

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::AbsenceCreated => "absence.created",
            Action::AbsenceChanged => "absence.changed",
            Action::AbsenceCleared => "absence.cleared",
            Action::SignIn => "signin",
            Action::SignInFailed => "signin.failed",
            Action::SignOut => "signout",
            Action::SessionRevoked => "session.revoked",
            Action::TokenRefused => "token.refused",
            Action::CsrfRefused => "csrf.refused",
            Action::DirectorySync => "directory.sync",
            Action::ProviderRestarted => "provider.restarted",
            Action::SignalsPushed => "signals.pushed",
            Action::ConfigReloaded => "config.reloaded",
        }
    }
}

/// A record of `caller` doing `action` to `target`.
pub fn entry(caller: &Caller, action: Action, target: Option<&str>, detail: serde_json::Value, ip: Option<String>) -> AuditRecord {
    AuditRecord {
        at: now_ms(),
        actor: caller.actor().to_string(),
        role: Some(caller.role.as_str().to_string()),
        via: caller.via_str().to_string(),
        action: action.as_str().to_string(),
        target: target.map(str::to_string),
        detail: (!detail.is_null()).then(|| detail.to_string()),
        ip,
    }
}

/// A record of something done by nobody known (a refused token, a failed sign-in).
pub fn anonymous(action: Action, via: &str, detail: serde_json::Value, ip: Option<String>) -> AuditRecord {
    AuditRecord {
        at: now_ms(),
        actor: "-".into(),
        role: None,
        via: via.into(),
        action: action.as_str().into(),
        target: None,
        detail: (!detail.is_null()).then(|| detail.to_string()),
        ip,
    }
}

/// The audit log's writer of refusals and of pushed-signal summaries (see the module docs).
pub struct Audit {
    store: Store,
    window: Mutex<Window>,
    pushes: Mutex<std::collections::HashMap<String, Pushes>>,
}

/// One caller's pushes in the current minute.
struct Pushes {
    minute: i64,
    first: AuditRecord,
    requests: u64,
    signals: u64,
}

#[derive(Default)]
struct Window {
    minute: i64,
    written: u32,
    suppressed: u64,
}

impl Audit {
    /// The writer over `store`.
    pub fn new(store: Store) -> Audit {
        Audit { store, window: Mutex::new(Window::default()), pushes: Mutex::default() }
    }

    /// Counts a push of `signals` signals by `caller`. The minute's sum is written by
    /// [`Audit::flush_signals`] once the minute is over.
    pub fn signals_pushed(&self, caller: &Caller, signals: usize, ip: Option<String>) {
        let r = entry(caller, Action::SignalsPushed, None, serde_json::Value::Null, ip);
        let minute = r.at / 60_000;
        let key = r.actor.clone();
        let mut m = self.pushes.lock().unwrap_or_else(|e| e.into_inner());
        if m.get(&key).is_some_and(|p| p.minute != minute) {
            // A new minute for this caller: the last one is due (flush writes it).
            let done = m.remove(&key).expect("present");
            m.insert(format!("{key}\u{0}{}", done.minute), done);
        }
        let p = m.entry(key).or_insert_with(|| Pushes { minute, first: r, requests: 0, signals: 0 });
        p.requests += 1;
        p.signals += signals as u64;
    }

    /// Writes the pushed-signal sums of minutes that are over at `now` (all of them with
    /// `all`, at shutdown). Blocking: call off the async threads.
    pub fn flush_signals(&self, now: UnixMs, all: bool) {
        let due: Vec<Pushes> = {
            let mut m = self.pushes.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<String> = m.iter().filter(|(_, p)| all || p.minute < now / 60_000).map(|(k, _)| k.clone()).collect();
            keys.into_iter().filter_map(|k| m.remove(&k)).collect()
        };
        for p in due {
            let mut r = p.first;
            r.detail = Some(serde_json::json!({ "requests": p.requests, "signals": p.signals, "minute": presence_actors::model::rfc3339(p.minute * 60_000) }).to_string());
            if let Err(e) = self.store.append_audit(&r) {
                tracing::warn!(error = %e, "Could not write a pushed-signals audit entry.");
            }
        }
    }

    /// Records a refusal, within the per-minute budget, off the async threads. Returns once
    /// written (or counted).
    pub async fn security(&self, mut r: AuditRecord) {
        {
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            let minute = r.at / 60_000;
            if minute != w.minute {
                w.minute = minute;
                w.written = 0;
            }
            if w.written >= SECURITY_PER_MINUTE {
                w.suppressed += 1;
                return;
            }
            w.written += 1;
            if w.suppressed > 0 {
                let mut d: serde_json::Value = r.detail.as_deref().and_then(|d| serde_json::from_str(d).ok()).unwrap_or_else(|| serde_json::json!({}));
                d["suppressed_before"] = w.suppressed.into();
                r.detail = Some(d.to_string());
                w.suppressed = 0;
            }
        }
        let store = self.store.clone();
        let action = r.action.clone();
        let res = actix_web::rt::task::spawn_blocking(move || store.append_audit(&r)).await;
        if !matches!(res, Ok(Ok(_))) {
            tracing::error!(action = %action, "Could not write an audit entry.");
        }
    }
}

/// Deletes entries older than `retention_days` (blocking; the hub runs it hourly).
pub fn purge(store: &Store, retention_days: u32, now: UnixMs) {
    match store.purge_audit(now - i64::from(retention_days) * 86_400_000) {
        Ok(n) if n > 0 => tracing::info!(entries = n, retention_days, "Old audit entries deleted."),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "Could not delete old audit entries."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditQuery;

    #[actix_rt::test]
    async fn refusals_past_the_budget_are_counted_not_written() {
        let store = Store::open_in_memory().unwrap();
        let a = Audit::new(store.clone());
        let at = 60_000 * 1_000;
        for _ in 0..SECURITY_PER_MINUTE + 30 {
            a.security(AuditRecord { at, ..anonymous(Action::TokenRefused, "token", serde_json::Value::Null, None) }).await;
        }
        assert_eq!(store.audit_len().unwrap(), SECURITY_PER_MINUTE as usize);
        a.security(AuditRecord { at: at + 60_000, ..anonymous(Action::TokenRefused, "token", serde_json::json!({"why": "x"}), None) }).await;
        let last = &store.audit(&AuditQuery { limit: 1, ..Default::default() }).unwrap()[0].record;
        let d: serde_json::Value = serde_json::from_str(last.detail.as_deref().unwrap()).unwrap();
        assert_eq!((d["suppressed_before"].as_u64(), d["why"].as_str()), (Some(30), Some("x")));
        // Pushed signals: summed per caller and minute.
        let integration = Caller::token("crm", crate::tokens::Role::Admin);
        a.signals_pushed(&integration, 3, None);
        a.signals_pushed(&integration, 2, None);
        a.flush_signals(now_ms(), false);
        assert!(store.audit(&AuditQuery { action: Some("signals.pushed".into()), limit: 10, ..Default::default() }).unwrap().is_empty(), "the minute is not over");
        a.flush_signals(now_ms(), true);
        let sums = store.audit(&AuditQuery { action: Some("signals.pushed".into()), limit: 10, ..Default::default() }).unwrap();
        assert_eq!(sums.len(), 1);
        let d: serde_json::Value = serde_json::from_str(sums[0].record.detail.as_deref().unwrap()).unwrap();
        assert_eq!((d["requests"].as_u64(), d["signals"].as_u64(), sums[0].record.actor.as_str()), (Some(2), Some(5), "crm"));
        let names: std::collections::HashSet<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names.len(), Action::ALL.len());
    }
}
