//! Sign-in sessions: the table the cookie is checked against on every request.
//!
//! A session is created at a successful sign-in, written to the store at once (with the
//! sign-in's audit entry, one transaction), and held in memory keyed by the SHA-256 of the
//! cookie value, so a request costs a hash and a map lookup. It ends at its absolute end
//! (`session_hours`), after `idle_minutes` without use, when its person leaves the directory,
//! at sign-out, or when an admin revokes it. Use is written back at most every
//! [`TOUCH_EVERY_MS`], so a busy console does not write on every request; after a restart a
//! session may therefore look up to that much idler than it was.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use crate::store::{AuditRecord, Store, StoreError, StoredSession, UnixMs};
use crate::tokens::{Caller, Role, Via};

/// How often a session's last use is written to the store, at most.
pub const TOUCH_EVERY_MS: i64 = 5 * 60_000;
/// Most sessions at once; the oldest is ended to make room (an attacker who can sign in
/// thousands of times cannot grow memory without bound).
pub const MAX_SESSIONS: usize = 100_000;

/// A live session.
#[derive(Debug)]
pub struct Session {
    /// What is stored.
    pub stored: StoredSession,
    /// Role.
    pub role: Role,
    last_seen: AtomicI64,
    last_written: AtomicI64,
    ended: AtomicBool,
}

impl Session {
    fn new(stored: StoredSession, role: Role) -> Session {
        Session { role, last_seen: AtomicI64::new(stored.last_seen), last_written: AtomicI64::new(stored.last_seen), ended: AtomicBool::new(false), stored }
    }

    /// Last use.
    pub fn last_seen(&self) -> UnixMs {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// The caller a request with this session's cookie is.
    pub fn caller(&self) -> Caller {
        Caller { name: self.stored.name.clone(), role: self.role, person: self.stored.person.clone(), via: Via::Session(self.stored.id.clone()) }
    }
}

/// Why a cookie did not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// No such session (never was, signed out, revoked, or purged).
    Unknown,
    /// Past its absolute end.
    Expired,
    /// Unused for too long.
    Idle,
    /// The person is no longer in the directory.
    Left,
}

impl Ended {
    /// Text for the 401.
    pub fn message(self) -> &'static str {
        match self {
            Ended::Unknown => "the session is not valid; sign in again",
            Ended::Expired => "the session has ended; sign in again",
            Ended::Idle => "the session ended after a period without use; sign in again",
            Ended::Left => "you are no longer in the directory",
        }
    }
}

/// Where a node of a cluster shares its sessions (see `crate::cluster::signin`).
pub trait Replica: Send + Sync {
    /// A session was created here.
    fn created(&self, s: &StoredSession);
    /// A session was used here (at most every [`TOUCH_EVERY_MS`]); `s.last_seen` is the use.
    fn touched(&self, s: &StoredSession);
    /// A session ended here (signed out, revoked, expired, idle, left the directory).
    fn ended(&self, id: &str);
}

/// The live sessions.
pub struct Sessions {
    store: Store,
    idle_ms: i64,
    by_secret: RwLock<HashMap<[u8; 32], Arc<Session>>>,
    replica: std::sync::OnceLock<Arc<dyn Replica>>,
}

/// SHA-256 of a cookie value.
pub fn digest(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

impl Sessions {
    /// Loads the sessions the store holds that have not ended at `now`.
    pub fn load(store: Store, idle_minutes: u32, now: UnixMs) -> Result<Sessions, StoreError> {
        let idle_ms = i64::from(idle_minutes) * 60_000;
        let purged = store.purge_sessions(now, now - idle_ms)?;
        let mut by_secret = HashMap::new();
        for s in store.load_sessions(now)? {
            let Ok(role) = s.role.parse::<Role>() else {
                tracing::warn!(session = %s.id, role = %s.role, "skipping a stored session with an unknown role");
                continue;
            };
            by_secret.insert(s.secret_sha256, Arc::new(Session::new(s, role)));
        }
        if purged > 0 || !by_secret.is_empty() {
            tracing::info!(sessions = by_secret.len(), ended = purged, "Sign-in sessions restored.");
        }
        Ok(Sessions { store, idle_ms, by_secret: RwLock::new(by_secret), replica: std::sync::OnceLock::new() })
    }

    /// Shares this node's sessions with the other nodes of a cluster from now on.
    pub fn set_replica(&self, r: Arc<dyn Replica>) {
        let _ = self.replica.set(r);
    }

    /// A session another node created or used (blocking: call off the async threads): made
    /// live here too, or its last use moved on.
    pub fn adopt(&self, s: StoredSession) {
        let existing = self.by_secret.read().unwrap_or_else(|e| e.into_inner()).get(&s.secret_sha256).cloned();
        if let Some(live) = existing {
            live.last_seen.fetch_max(s.last_seen, Ordering::Relaxed);
            return;
        }
        let Ok(role) = s.role.parse::<Role>() else { return };
        if s.expires_at <= presence_actors::model::now_ms() {
            return;
        }
        // Already stored (this node's own, or seen before a restart): only made live.
        let _ = self.store.insert_session(&s, None);
        let mut m = self.by_secret.write().unwrap_or_else(|e| e.into_inner());
        if m.len() < MAX_SESSIONS {
            m.insert(s.secret_sha256, Arc::new(Session::new(s, role)));
        }
    }

    /// A session another node ended (blocking): ended here too, without a second audit entry.
    pub fn drop_shared(&self, id: &str) {
        if self.forget(id) {
            let _ = self.store.delete_session(id, None);
        }
    }

    fn replicate(&self, f: impl FnOnce(&dyn Replica)) {
        if let Some(r) = self.replica.get() {
            f(r.as_ref());
        }
    }

    /// Stores a new session with its audit entry (blocking: call off the async threads), then
    /// makes it live.
    pub fn create(&self, s: StoredSession, role: Role, audit: &AuditRecord) -> Result<Arc<Session>, StoreError> {
        self.store.insert_session(&s, Some(audit))?;
        self.replicate(|r| r.created(&s));
        let live = Arc::new(Session::new(s, role));
        let mut m = self.by_secret.write().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_SESSIONS {
            if let Some(oldest) = m.iter().min_by_key(|(_, s)| s.last_seen()).map(|(k, _)| *k) {
                if let Some(old) = m.remove(&oldest) {
                    let _ = self.store.delete_session(&old.stored.id, None);
                    self.replicate(|r| r.ended(&old.stored.id));
                }
            }
        }
        m.insert(live.stored.secret_sha256, live.clone());
        Ok(live)
    }

    /// The session of a cookie value at `now`, counting this as use; `in_directory` says
    /// whether a person id is still in the directory. An ended session is dropped.
    pub fn check(&self, cookie: &str, now: UnixMs, in_directory: impl Fn(&str) -> bool) -> Result<Arc<Session>, Ended> {
        let d = digest(cookie);
        let s = self.by_secret.read().unwrap_or_else(|e| e.into_inner()).get(&d).cloned().ok_or(Ended::Unknown)?;
        self.still(&s, now, in_directory)?;
        Ok(s)
    }

    /// Whether session `s` (held by an open stream) is still live at `now`, counting this as
    /// use; an ended one is dropped.
    pub fn still(&self, s: &Arc<Session>, now: UnixMs, in_directory: impl Fn(&str) -> bool) -> Result<(), Ended> {
        let ended = if s.ended.load(Ordering::Relaxed) {
            return Err(Ended::Unknown);
        } else if now >= s.stored.expires_at {
            Some(Ended::Expired)
        } else if now - s.last_seen() > self.idle_ms {
            Some(Ended::Idle)
        } else if s.stored.person.as_deref().is_some_and(|p| !in_directory(p)) {
            Some(Ended::Left)
        } else {
            None
        };
        if let Some(why) = ended {
            self.forget(&s.stored.id);
            self.replicate(|r| r.ended(&s.stored.id));
            let (store, id) = (self.store.clone(), s.stored.id.clone());
            spawn_store(move || store.delete_session(&id, None).map(drop));
            return Err(why);
        }
        s.last_seen.fetch_max(now, Ordering::Relaxed);
        let written = s.last_written.load(Ordering::Relaxed);
        if now - written >= TOUCH_EVERY_MS && s.last_written.compare_exchange(written, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let (store, id) = (self.store.clone(), s.stored.id.clone());
            spawn_store(move || store.touch_session(&id, now));
            self.replicate(|r| r.touched(&StoredSession { last_seen: now, ..s.stored.clone() }));
        }
        Ok(())
    }

    /// The session with public id `id`.
    pub fn by_id(&self, id: &str) -> Option<Arc<Session>> {
        self.by_secret.read().unwrap_or_else(|e| e.into_inner()).values().find(|s| s.stored.id == id).cloned()
    }

    /// Every live session, newest first.
    pub fn list(&self) -> Vec<Arc<Session>> {
        let mut v: Vec<_> = self.by_secret.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.stored.created_at));
        v
    }

    /// Ends session `id` and records why, in one transaction (blocking). `Ok(false)` if there
    /// was no such session.
    pub fn end(&self, id: &str, audit: &AuditRecord) -> Result<bool, StoreError> {
        let stored = self.store.delete_session(id, Some(audit))?;
        self.replicate(|r| r.ended(id));
        Ok(self.forget(id) || stored)
    }

    fn forget(&self, id: &str) -> bool {
        let mut m = self.by_secret.write().unwrap_or_else(|e| e.into_inner());
        let before = m.len();
        m.retain(|_, s| {
            let keep = s.stored.id != id;
            if !keep {
                s.ended.store(true, Ordering::Relaxed);
            }
            keep
        });
        m.len() != before
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.by_secret.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when nobody is signed in.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs a store write off the async threads, logging a failure (housekeeping: the request
/// does not wait for it).
fn spawn_store(f: impl FnOnce() -> Result<(), StoreError> + Send + 'static) {
    let run = move || {
        if let Err(e) = f() {
            tracing::warn!(error = %e, "Could not update a sign-in session in the store.");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => drop(h.spawn_blocking(run)),
        Err(_) => run(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: &str, cookie: &str, person: Option<&str>, at: UnixMs) -> StoredSession {
        stored_as(id, cookie, person, at, Role::SelfService)
    }

    fn stored_as(id: &str, cookie: &str, person: Option<&str>, at: UnixMs, role: Role) -> StoredSession {
        StoredSession {
            id: id.into(),
            secret_sha256: digest(cookie),
            csrf: "csrf".into(),
            person: person.map(Into::into),
            name: "Anna".into(),
            subject: "iss#sub".into(),
            role: role.as_str().into(),
            method: "oidc".into(),
            id_token: None,
            created_at: at,
            last_seen: at,
            expires_at: at + 10 * 3_600_000,
            ip: None,
            user_agent: None,
        }
    }

    fn audit() -> AuditRecord {
        AuditRecord { actor: "anna".into(), via: "oidc".into(), action: "signin".into(), ..Default::default() }
    }

    #[test]
    fn sessions_end_absolutely_when_idle_when_the_person_leaves_and_survive_a_reload() {
        let store = Store::open_in_memory().unwrap();
        let t0 = 1_000_000;
        let s = Sessions::load(store.clone(), 60, t0).unwrap();
        s.create(stored("a", "cookie-a", Some("anna"), t0), Role::SelfService, &audit()).unwrap();
        s.create(stored_as("b", "cookie-b", Some("bo"), t0, Role::Operator), Role::Operator, &audit()).unwrap();
        s.create(stored_as("c", "cookie-c", None, t0, Role::Viewer), Role::Viewer, &audit()).unwrap();
        let everyone = |_: &str| true;
        let c = s.check("cookie-a", t0 + 1, everyone).unwrap().caller();
        assert_eq!((c.role, c.person.as_deref(), c.via), (Role::SelfService, Some("anna"), Via::Session("a".into())));
        assert_eq!(s.check("cookie-x", t0, everyone).unwrap_err(), Ended::Unknown);
        // Restored from the store after a restart.
        let s2 = Sessions::load(store.clone(), 60, t0 + 2).unwrap();
        assert_eq!(s2.len(), 3);
        assert_eq!(s2.check("cookie-b", t0 + 3, everyone).unwrap().role, Role::Operator);
        // Bo leaves the directory.
        assert_eq!(s2.check("cookie-b", t0 + 4, |p| p != "bo").unwrap_err(), Ended::Left);
        assert_eq!(s2.check("cookie-b", t0 + 5, everyone).unwrap_err(), Ended::Unknown);
        // Used within the idle time: goes on; then idle past it.
        s2.check("cookie-a", t0 + 50 * 60_000, everyone).unwrap();
        assert_eq!(s2.check("cookie-c", t0 + 61 * 60_000, everyone).unwrap_err(), Ended::Idle);
        assert_eq!(s2.check("cookie-a", t0 + 10 * 3_600_000, everyone).unwrap_err(), Ended::Expired);
        assert!(s2.is_empty());
    }

    #[test]
    fn revoking_ends_a_session_and_records_it() {
        let store = Store::open_in_memory().unwrap();
        let s = Sessions::load(store.clone(), 60, 0).unwrap();
        s.create(stored("a", "cookie-a", Some("anna"), 0), Role::SelfService, &audit()).unwrap();
        assert_eq!(s.list().len(), 1);
        assert!(s.by_id("a").is_some());
        let revoked = AuditRecord { actor: "admin".into(), via: "token".into(), action: "session.revoked".into(), target: Some("a".into()), ..Default::default() };
        assert!(s.end("a", &revoked).unwrap());
        assert!(!s.end("a", &revoked).unwrap());
        assert_eq!(s.check("cookie-a", 1, |_| true).unwrap_err(), Ended::Unknown);
        assert!(store.load_sessions(0).unwrap().is_empty());
        assert_eq!(store.audit_len().unwrap(), 2);
    }
}
