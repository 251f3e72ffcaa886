//! The sign-in sessions' table: one row a signed-in browser, so sessions survive a restart
//! and an admin can revoke one.
//!
//! The cookie's value is never stored: a row holds its SHA-256, so a copy of the database
//! signs nobody in. The row's `id` is a separate public handle (what `DELETE /api/sessions/{id}`
//! and the audit log name). Creating and deleting a session take the audit entry that records
//! it, in the same transaction.

use rusqlite::{params, Row};

use super::audit::{append, AuditRecord};
use super::{collect_rows, Store, StoreError, UnixMs};

/// One session as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredSession {
    /// Public handle (hex).
    pub id: String,
    /// SHA-256 of the cookie value.
    pub secret_sha256: [u8; 32],
    /// The CSRF token writes must send back (`X-CSRF-Token`).
    pub csrf: String,
    /// The person's directory id, when the directory knows them.
    pub person: Option<String>,
    /// Display name (the directory's, else the provider's `name` claim).
    pub name: String,
    /// `iss` and `sub` of the ID token, one string (`{iss}#{sub}`).
    pub subject: String,
    /// Role (wire name).
    pub role: String,
    /// How they signed in (`oidc`).
    pub method: String,
    /// The ID token, for `id_token_hint` at RP-initiated logout.
    pub id_token: Option<String>,
    /// Created.
    pub created_at: UnixMs,
    /// Last request seen (written at most every few minutes).
    pub last_seen: UnixMs,
    /// Absolute end.
    pub expires_at: UnixMs,
    /// Client address at sign-in.
    pub ip: Option<String>,
    /// Browser at sign-in (cut to 256 bytes).
    pub user_agent: Option<String>,
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<StoredSession> {
    let digest: Vec<u8> = row.get(2)?;
    let secret_sha256: [u8; 32] = digest
        .try_into()
        .map_err(|_| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Blob, "not a SHA-256 digest".into()))?;
    Ok(StoredSession {
        id: row.get(1)?,
        secret_sha256,
        csrf: row.get(3)?,
        person: row.get(4)?,
        name: row.get(5)?,
        subject: row.get(6)?,
        role: row.get(7)?,
        method: row.get(8)?,
        id_token: row.get(9)?,
        created_at: row.get(10)?,
        last_seen: row.get(11)?,
        expires_at: row.get(12)?,
        ip: row.get(13)?,
        user_agent: row.get(14)?,
    })
}

impl Store {
    /// Stores a new session and the audit entry of the sign-in, in one transaction.
    pub fn insert_session(&self, s: &StoredSession, audit: Option<&AuditRecord>) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO sessions (id, secret_sha256, csrf, person, name, subject, role, method, id_token, created_at, \
                 last_seen, expires_at, ip, user_agent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                s.id,
                &s.secret_sha256[..],
                s.csrf,
                s.person,
                s.name,
                s.subject,
                s.role,
                s.method,
                s.id_token,
                s.created_at,
                s.last_seen,
                s.expires_at,
                s.ip,
                s.user_agent
            ])?;
            if let Some(a) = audit {
                append(tx, a)?;
            }
            Ok(())
        })
    }

    /// Deletes the session `id` and records why (sign-out, revoked), in one transaction.
    /// `Ok(false)` when there was no such session (and nothing is recorded).
    pub fn delete_session(&self, id: &str, audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
        self.write(|tx| {
            let n = tx.prepare_cached("DELETE FROM sessions WHERE id = ?1")?.execute([id])?;
            if n > 0 {
                if let Some(a) = audit {
                    append(tx, a)?;
                }
            }
            Ok(n > 0)
        })
    }

    /// Notes that session `id` was used at `at`.
    pub fn touch_session(&self, id: &str, at: UnixMs) -> Result<(), StoreError> {
        self.conn().prepare_cached("UPDATE sessions SET last_seen = max(last_seen, ?2) WHERE id = ?1")?.execute(params![id, at])?;
        Ok(())
    }

    /// Every session that has not reached its absolute end at `now`.
    pub fn load_sessions(&self, now: UnixMs) -> Result<Vec<StoredSession>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT rowid, id, secret_sha256, csrf, person, name, subject, role, method, id_token, created_at, last_seen, \
             expires_at, ip, user_agent FROM sessions WHERE expires_at > ?1 ORDER BY created_at",
        )?;
        collect_rows(&mut stmt, [now], "sessions", from_row)
    }

    /// Deletes the sessions that ended (absolute end before `now`, or idle since before
    /// `idle_before`); how many.
    pub fn purge_sessions(&self, now: UnixMs, idle_before: UnixMs) -> Result<usize, StoreError> {
        Ok(self.conn().execute("DELETE FROM sessions WHERE expires_at <= ?1 OR last_seen < ?2", params![now, idle_before])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::AuditQuery;

    fn session(id: &str, expires_at: UnixMs) -> StoredSession {
        StoredSession {
            id: id.into(),
            secret_sha256: [id.as_bytes()[0]; 32],
            csrf: "c".into(),
            person: Some("p1".into()),
            name: "Anna".into(),
            subject: "https://idp#anna".into(),
            role: "self".into(),
            method: "oidc".into(),
            id_token: Some("eyJ…".into()),
            created_at: 1_000,
            last_seen: 1_000,
            expires_at,
            ip: Some("127.0.0.1".into()),
            user_agent: None,
        }
    }

    #[test]
    fn sessions_round_trip_with_their_audit_entries_and_expire() {
        let s = Store::open_in_memory().unwrap();
        let signin = AuditRecord { at: 1_000, actor: "p1".into(), via: "oidc".into(), action: "signin".into(), ..Default::default() };
        s.insert_session(&session("a", 10_000), Some(&signin)).unwrap();
        s.insert_session(&session("b", 5_000), None).unwrap();
        // The same public id twice is refused, and takes its audit entry with it.
        assert!(s.insert_session(&session("a", 10_000), Some(&signin)).is_err());
        assert_eq!(s.audit_len().unwrap(), 1);
        assert_eq!(s.load_sessions(2_000).unwrap(), vec![session("a", 10_000), session("b", 5_000)]);
        assert_eq!(s.load_sessions(6_000).unwrap().len(), 1);
        s.touch_session("a", 3_000).unwrap();
        s.touch_session("a", 2_000).unwrap();
        assert_eq!(s.load_sessions(0).unwrap()[0].last_seen, 3_000);

        let revoked = AuditRecord { at: 4_000, actor: "admin".into(), via: "token".into(), action: "session.revoked".into(), ..Default::default() };
        assert!(s.delete_session("a", Some(&revoked)).unwrap());
        assert!(!s.delete_session("a", Some(&revoked)).unwrap());
        let actions: Vec<_> = s.audit(&AuditQuery { limit: 10, ..Default::default() }).unwrap().into_iter().map(|r| r.record.action).collect();
        assert_eq!(actions, ["session.revoked", "signin"]);
        // b: idle since 1_000.
        assert_eq!(s.purge_sessions(2_000, 1_500).unwrap(), 1);
        assert!(s.load_sessions(0).unwrap().is_empty());
    }
}
