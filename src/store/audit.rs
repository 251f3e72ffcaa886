//! The audit log's table: who did what to whom, and every security event (sign-in, refused
//! token, revoked session…), one row an event, append-only.
//!
//! - An entry that records a write goes in **the same transaction** as the write
//!   ([`Store::insert_absence`] and the other absence and session writes take an
//!   `Option<&AuditRecord>`), so an acknowledged write always has its entry, and an entry never
//!   stands for a write that did not happen.
//! - The table refuses `UPDATE` (a trigger): entries are never changed. Rows leave only through
//!   [`Store::purge_audit`], the retention (`[audit] retention_days`).
//! - [`Store::audit`] reads newest first, filtered and paged by sequence number.

use rusqlite::{params_from_iter, Row, Transaction};

use presence_actors::model::activity::truncate as cut;

use super::{collect_rows, Store, StoreError, UnixMs};

/// Longest text kept in one field of an entry; longer input is cut (entries record what
/// callers sent, and a caller must not be able to make them large).
pub const MAX_AUDIT_FIELD_BYTES: usize = 512;
/// Longest `detail` document kept, bytes.
pub const MAX_AUDIT_DETAIL_BYTES: usize = 8 * 1024;

/// One event to record.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// When it happened (ms since the epoch).
    pub at: UnixMs,
    /// Who: a token's name, a signed-in person's id (or subject when not in the directory),
    /// `system` for the hub itself, `-` when unknown (a refused token).
    pub actor: String,
    /// The actor's role at the time, when known.
    pub role: Option<String>,
    /// How the actor was authenticated: `token`, `oidc`, `system`.
    pub via: String,
    /// What happened: `absence.created`, `signin.failed`… (the list is in `crate::audit::Action`).
    pub action: String,
    /// Whom or what it was done to: a person id, a session id, a directory source.
    pub target: Option<String>,
    /// The rest, as a JSON document (old → new of a change, the reason of a refusal).
    pub detail: Option<String>,
    /// The client's address.
    pub ip: Option<String>,
}

/// A recorded entry: its sequence number (ascending with time) and the record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    /// Sequence number, the paging key.
    pub seq: i64,
    /// The entry.
    #[serde(flatten)]
    pub record: AuditRecord,
}

/// Which entries to read: every field narrows; newest first.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// At or after this time.
    pub since: Option<UnixMs>,
    /// Before this time.
    pub until: Option<UnixMs>,
    /// Exactly this actor.
    pub actor: Option<String>,
    /// Exactly this target.
    pub target: Option<String>,
    /// This action, or with a trailing `.*` every action under it (`absence.*`).
    pub action: Option<String>,
    /// Only entries with a sequence number below this (the next page).
    pub before_seq: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

/// Appends `r` inside an open transaction; the sequence number it got.
pub(super) fn append(tx: &Transaction<'_>, r: &AuditRecord) -> Result<i64, StoreError> {
    let f = |s: &str| cut(s, MAX_AUDIT_FIELD_BYTES).to_string();
    let detail = r.detail.as_deref().map(|d| {
        if d.len() <= MAX_AUDIT_DETAIL_BYTES {
            d.to_string()
        } else {
            // Still a JSON document: the cut text as a string.
            serde_json::json!({ "truncated": cut(d, MAX_AUDIT_DETAIL_BYTES - 64) }).to_string()
        }
    });
    let mut stmt = tx.prepare_cached(
        "INSERT INTO audit (at, actor, role, via, action, target, detail, ip) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    stmt.execute(rusqlite::params![
        r.at,
        f(&r.actor),
        r.role.as_deref().map(f),
        f(&r.via),
        f(&r.action),
        r.target.as_deref().map(f),
        detail,
        r.ip.as_deref().map(f),
    ])?;
    Ok(tx.last_insert_rowid())
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        seq: row.get(0)?,
        record: AuditRecord {
            at: row.get(1)?,
            actor: row.get(2)?,
            role: row.get(3)?,
            via: row.get(4)?,
            action: row.get(5)?,
            target: row.get(6)?,
            detail: row.get(7)?,
            ip: row.get(8)?,
        },
    })
}

impl Store {
    /// Records one event on its own (a sign-in refused, a sync started); durable on `Ok`.
    pub fn append_audit(&self, r: &AuditRecord) -> Result<i64, StoreError> {
        self.write(|tx| append(tx, r))
    }

    /// Entries matching `q`, newest first (at most `q.limit`, and never more than 10,000).
    pub fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        let mut sql = String::from("SELECT seq, at, actor, role, via, action, target, detail, ip FROM audit WHERE 1=1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(v) = q.since {
            arg(&mut sql, " AND at >= ?", v.into());
        }
        if let Some(v) = q.until {
            arg(&mut sql, " AND at < ?", v.into());
        }
        if let Some(v) = &q.actor {
            arg(&mut sql, " AND actor = ?", v.clone().into());
        }
        if let Some(v) = &q.target {
            arg(&mut sql, " AND target = ?", v.clone().into());
        }
        match q.action.as_deref() {
            Some(prefix) if prefix.ends_with(".*") => {
                // A range on the text, not LIKE: `_` and `%` in the input mean themselves.
                let p = &prefix[..prefix.len() - 1];
                arg(&mut sql, " AND action >= ?", p.to_string().into());
                arg(&mut sql, " AND action < ?", format!("{p}\u{10ffff}").into());
            }
            Some(a) => arg(&mut sql, " AND action = ?", a.to_string().into()),
            None => {}
        }
        if let Some(v) = q.before_seq {
            arg(&mut sql, " AND seq < ?", v.into());
        }
        let limit = q.limit.clamp(1, 10_000) as i64;
        arg(&mut sql, " ORDER BY seq DESC LIMIT ?", limit.into());
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        collect_rows(&mut stmt, params_from_iter(args), "audit", from_row)
    }

    /// Deletes the entries recorded before `before` (the retention); how many.
    pub fn purge_audit(&self, before: UnixMs) -> Result<usize, StoreError> {
        Ok(self.conn().execute("DELETE FROM audit WHERE at < ?1", [before])?)
    }

    /// Number of entries.
    pub fn audit_len(&self) -> Result<usize, StoreError> {
        super::count(&self.conn(), "SELECT count(*) FROM audit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at: UnixMs, actor: &str, action: &str, target: &str) -> AuditRecord {
        AuditRecord { at, actor: actor.into(), via: "token".into(), action: action.into(), target: Some(target.into()), ..Default::default() }
    }

    #[test]
    fn entries_are_filtered_paged_newest_first_and_never_changed() {
        let s = Store::open_in_memory().unwrap();
        s.append_audit(&rec(1_000, "ops", "absence.created", "u1")).unwrap();
        s.append_audit(&rec(2_000, "ops", "absence.cleared", "u1")).unwrap();
        s.append_audit(&rec(3_000, "anna", "signin", "sess")).unwrap();
        s.append_audit(&rec(4_000, "x_y", "absence_created", "u2")).unwrap();
        let all = s.audit(&AuditQuery { limit: 100, ..Default::default() }).unwrap();
        assert_eq!(all.iter().map(|r| r.record.at).collect::<Vec<_>>(), [4_000, 3_000, 2_000, 1_000]);
        let q = |q: AuditQuery| s.audit(&AuditQuery { limit: 100, ..q }).unwrap().iter().map(|r| r.record.at).collect::<Vec<_>>();
        assert_eq!(q(AuditQuery { action: Some("absence.*".into()), ..Default::default() }), [2_000, 1_000]);
        assert_eq!(q(AuditQuery { actor: Some("ops".into()), ..Default::default() }), [2_000, 1_000]);
        assert_eq!(q(AuditQuery { target: Some("u1".into()), since: Some(1_500), ..Default::default() }), [2_000]);
        assert_eq!(q(AuditQuery { until: Some(3_000), ..Default::default() }), [2_000, 1_000]);
        // `_` is not a wildcard.
        assert_eq!(q(AuditQuery { action: Some("absence_created".into()), ..Default::default() }), [4_000]);
        let page1 = s.audit(&AuditQuery { limit: 2, ..Default::default() }).unwrap();
        let page2 = s.audit(&AuditQuery { limit: 2, before_seq: Some(page1[1].seq), ..Default::default() }).unwrap();
        assert_eq!(page2.iter().map(|r| r.record.at).collect::<Vec<_>>(), [2_000, 1_000]);

        let err = s.conn().execute("UPDATE audit SET actor = 'someone else'", []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        assert_eq!(s.purge_audit(2_500).unwrap(), 2);
        assert_eq!(s.audit_len().unwrap(), 2);
    }

    #[test]
    fn oversized_fields_are_cut() {
        let s = Store::open_in_memory().unwrap();
        let mut r = rec(1, &"å".repeat(1_000), "signin.failed", "t");
        r.detail = Some(serde_json::json!({ "reason": "x".repeat(20_000) }).to_string());
        s.append_audit(&r).unwrap();
        let got = &s.audit(&AuditQuery { limit: 1, ..Default::default() }).unwrap()[0].record;
        assert!(got.actor.len() <= MAX_AUDIT_FIELD_BYTES && got.actor.starts_with("åå"));
        let d: serde_json::Value = serde_json::from_str(got.detail.as_deref().unwrap()).unwrap();
        assert!(d["truncated"].as_str().unwrap().len() < MAX_AUDIT_DETAIL_BYTES);
    }
}
