//! Embedded persistent store of presence-hub.
//!
//! One SQLite database, `<data dir>/presence-hub.sqlite`, holds:
//!
//! * the **people directory**: one opaque JSON document per person, kept in
//!   import order and replaced as a whole by each import;
//! * **manual absences**: operator-set "away" entries ([`StoredAbsence`], which converts to and
//!   from the model's `Absence`);
//! * **provider cursors**: a small key/value space per presence provider;
//! * a debounced **snapshot** of each user's merged presence (one opaque JSON
//!   document per user id), so that a restart shows the last known state at once;
//! * the **audit log** ([`audit`]): every write and security event, append-only, each write's
//!   entry committed in the write's own transaction;
//! * **sign-in sessions** ([`sessions`]), so they survive a restart and can be revoked.
//!
//! # Durability
//!
//! The database runs with `journal_mode=WAL` and `synchronous=FULL`: every
//! commit appends to the write-ahead log and fsyncs it before the commit
//! returns. Hence:
//!
//! * every absence write ([`Store::insert_absence`], [`Store::update_absence`],
//!   [`Store::delete_absence`], [`Store::purge_absences`]) is durable when the
//!   call returns `Ok`: it survives a crash of the process *and* of the
//!   operating system / a power loss (given a disk that honours fsync);
//! * bulk writes ([`Store::replace_directory`], [`Store::save_snapshot`],
//!   [`Store::clear_snapshot`]) are single transactions: after a crash either
//!   all of the batch or none of it is visible, never a part;
//! * cursor writes are durable on return as well (same pragma).
//!
//! Person and snapshot documents are opaque to the store: kept byte for byte,
//! never parsed (the caller owns their JSON shape and its deserialisation).
//!
//! Rows that cannot be decoded (wrong column type,
//! invalid UTF-8, ... e.g. after a hand edit or disk damage) are skipped with a
//! `tracing::warn!` that names the row; they never abort a load.
//!
//! # Concurrency
//!
//! [`Store`] is `Clone + Send + Sync`; clones share one SQLite connection behind
//! a mutex. All methods block (fsync), so call them from
//! `tokio::task::spawn_blocking` or from a dedicated writer thread, never
//! directly on an async executor thread.
//!
//! # Schema
//!
//! The schema version lives in `PRAGMA user_version`. Opening applies the
//! missing steps of [`MIGRATIONS`] in order, inside one transaction, and refuses
//! a database whose version is newer than this code knows
//! ([`StoreError::UnsupportedSchema`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use presence_actors::model::Absence;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior};

pub mod audit;
pub mod sessions;

pub use audit::{AuditQuery, AuditRecord, AuditRow};
pub use sessions::StoredSession;

/// Milliseconds since the Unix epoch (UTC).
pub type UnixMs = i64;

/// File name of the database inside the data directory.
pub const DB_FILE_NAME: &str = "presence-hub.sqlite";
/// Largest accepted [`StoredAbsence::text`], in bytes.
pub const MAX_ABSENCE_TEXT_BYTES: usize = 1_000;
/// Largest accepted [`StoredAbsence`] `id`, `user_id`, `reason` and `created_by`, in bytes.
pub const MAX_ABSENCE_FIELD_BYTES: usize = 256;
/// How long a statement waits for a lock held by another connection (e.g. a
/// second process, or an external `sqlite3` shell) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page cache of the connection (negative = KiB). Enough for the unique index of a
/// 100k-person directory during a bulk replace; kept modest because a full scan at start-up
/// would otherwise leave the whole table resident (32 MiB cost ~330 B per person at 100k).
const CACHE_SIZE_KIB: i64 = 8 * 1024;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory could not be created or accessed.
    #[error("data directory {path}: {source}")]
    Io {
        /// The directory concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The database file could not be opened or configured (not a database, permissions, ...).
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The underlying SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer (or unknown) schema version; it is left untouched.
    #[error(
        "database schema version {found} is not supported: this build knows versions up to {supported} \
         (was the data directory written by a newer presence-hub?)"
    )]
    UnsupportedSchema {
        /// `user_version` found in the file.
        found: i64,
        /// Highest version this code can migrate to.
        supported: i64,
    },
    /// An absence with this id already exists (the id is unique across all users).
    #[error("an absence with id {0:?} already exists")]
    Conflict(String),
    /// The input was rejected before reaching the database (too long, empty, duplicate id, ...).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Any other SQLite error (I/O error while writing, disk full, database corrupt, ...).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// One manual absence as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredAbsence {
    /// Opaque id, unique across all users.
    pub id: String,
    /// Person id.
    pub user_id: String,
    /// Reason code, e.g. `"lunch"`.
    pub reason: String,
    /// Free text.
    pub text: Option<String>,
    /// Start of the absence.
    pub start: UnixMs,
    /// End of the absence; `None` = until further notice.
    pub end: Option<UnixMs>,
    /// When it was created.
    pub created_at: UnixMs,
    /// When it was last changed.
    pub updated_at: UnixMs,
    /// Token name of whoever set it.
    pub created_by: Option<String>,
}

impl StoredAbsence {
    /// The stored form of `user`'s absence `a`.
    pub fn from_absence(user: &str, a: &Absence) -> StoredAbsence {
        StoredAbsence {
            id: a.id.to_string(),
            user_id: user.to_string(),
            reason: a.reason.to_string(),
            text: a.text.as_deref().map(str::to_string),
            start: a.start,
            end: a.end,
            created_at: a.created_at,
            updated_at: a.updated_at,
            created_by: a.created_by.as_deref().map(str::to_string),
        }
    }

    /// Back to the model's absence: what start-up restores and the API serves.
    pub fn to_absence(&self) -> Absence {
        Absence {
            id: self.id.as_str().into(),
            reason: self.reason.as_str().into(),
            text: self.text.as_deref().map(Into::into),
            start: self.start,
            end: self.end,
            created_at: self.created_at,
            updated_at: self.updated_at,
            created_by: self.created_by.as_deref().map(Into::into),
        }
    }

    /// The columns in the order the INSERT and UPDATE statements number them (?1..?9), so a
    /// new column is added in one place.
    fn params(&self) -> [&dyn rusqlite::ToSql; 9] {
        [
            &self.id,
            &self.user_id,
            &self.reason,
            &self.text,
            &self.start,
            &self.end,
            &self.created_at,
            &self.updated_at,
            &self.created_by,
        ]
    }

    /// Defence in depth: the API validates first, the store refuses oversized
    /// or empty keys all the same.
    fn validate(&self) -> Result<(), StoreError> {
        fn field(name: &str, value: &str, max: usize) -> Result<(), StoreError> {
            if value.len() > max {
                return Err(StoreError::Invalid(format!(
                    "absence {name} is {} bytes, at most {max} allowed",
                    value.len()
                )));
            }
            Ok(())
        }
        if self.id.is_empty() {
            return Err(StoreError::Invalid("absence id is empty".into()));
        }
        if self.user_id.is_empty() {
            return Err(StoreError::Invalid("absence user_id is empty".into()));
        }
        field("id", &self.id, MAX_ABSENCE_FIELD_BYTES)?;
        field("user_id", &self.user_id, MAX_ABSENCE_FIELD_BYTES)?;
        field("reason", &self.reason, MAX_ABSENCE_FIELD_BYTES)?;
        if let Some(t) = &self.text {
            field("text", t, MAX_ABSENCE_TEXT_BYTES)?;
        }
        if let Some(c) = &self.created_by {
            field("created_by", c, MAX_ABSENCE_FIELD_BYTES)?;
        }
        Ok(())
    }
}

/// One schema migration step. Step `i` (0-based) takes the database from
/// `user_version == i` to `i + 1`. Append new steps; never edit or reorder
/// released ones.
pub struct Migration {
    /// Short description, logged when the step is applied.
    pub description: &'static str,
    /// Applies the step inside the migration transaction.
    pub apply: fn(&Transaction<'_>) -> rusqlite::Result<()>,
}

/// All migration steps, in order. The schema version of this code is their count.
pub const MIGRATIONS: &[Migration] = &[
    Migration { description: "initial schema: people, absences, cursors, snapshot", apply: migrate_v1 },
    Migration { description: "leavers: people removed by directory sync, kept for a while", apply: migrate_v2 },
    Migration { description: "audit log and sign-in sessions", apply: migrate_v3 },
];

/// Schema version written by this code (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn migrate_v1(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    // STRICT tables: SQLite enforces the declared column types, so a wrong
    // type can only come from outside this code.
    tx.execute_batch(
        r#"
        CREATE TABLE people (
            ord INTEGER PRIMARY KEY,
            id  TEXT NOT NULL UNIQUE,
            doc TEXT NOT NULL
        ) STRICT;

        CREATE TABLE absences (
            id         TEXT PRIMARY KEY NOT NULL,
            user_id    TEXT NOT NULL,
            reason     TEXT NOT NULL,
            "text"     TEXT,
            start      INTEGER NOT NULL,
            "end"      INTEGER,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            created_by TEXT
        ) STRICT;
        CREATE INDEX absences_user_start ON absences(user_id, start);
        CREATE INDEX absences_end ON absences("end");

        CREATE TABLE cursors (
            provider   TEXT NOT NULL,
            "key"      TEXT NOT NULL,
            "value"    TEXT NOT NULL,
            updated_at INTEGER NOT NULL,
            PRIMARY KEY (provider, "key")
        ) STRICT;

        CREATE TABLE snapshot (
            user_id TEXT PRIMARY KEY NOT NULL,
            doc     TEXT NOT NULL,
            at      INTEGER NOT NULL
        ) STRICT;
        "#,
    )
}

fn migrate_v2(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    // A leaver's absences and last view stay (keyed by id, as always) until the leaver row is
    // purged, so a re-hire or a mistaken removal gets them back.
    tx.execute_batch(
        r#"
        CREATE TABLE leavers (
            id         TEXT PRIMARY KEY NOT NULL,
            removed_at INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX leavers_removed_at ON leavers(removed_at);
        "#,
    )
}

fn migrate_v3(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    // AUTOINCREMENT: a sequence number is never reused, even after the retention purged the
    // newest rows' predecessors, so a client paging with `before` never sees one twice.
    tx.execute_batch(
        r#"
        CREATE TABLE audit (
            seq    INTEGER PRIMARY KEY AUTOINCREMENT,
            at     INTEGER NOT NULL,
            actor  TEXT NOT NULL,
            role   TEXT,
            via    TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT,
            detail TEXT,
            ip     TEXT
        ) STRICT;
        CREATE INDEX audit_at ON audit(at);
        CREATE INDEX audit_actor ON audit(actor, seq);
        CREATE INDEX audit_target ON audit(target, seq);
        CREATE INDEX audit_action ON audit(action, seq);
        CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
        BEGIN
            SELECT RAISE(ABORT, 'the audit log is append-only');
        END;

        CREATE TABLE sessions (
            id            TEXT PRIMARY KEY NOT NULL,
            secret_sha256 BLOB NOT NULL UNIQUE,
            csrf          TEXT NOT NULL,
            person        TEXT,
            name          TEXT NOT NULL,
            subject       TEXT NOT NULL,
            role          TEXT NOT NULL,
            method        TEXT NOT NULL,
            id_token      TEXT,
            created_at    INTEGER NOT NULL,
            last_seen     INTEGER NOT NULL,
            expires_at    INTEGER NOT NULL,
            ip            TEXT,
            user_agent    TEXT
        ) STRICT;
        "#,
    )
}

/// Columns read by every absence query; `rowid` first, for diagnostics.
macro_rules! absence_select {
    () => {
        r#"SELECT rowid, id, user_id, reason, "text", start, "end", created_at, updated_at, created_by FROM absences "#
    };
}

/// Handle on the store. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    // One connection is enough: absence writes happen at operator rate, snapshot
    // writes are batched by a debouncing writer, and reads are short indexed
    // lookups or one-off bulk loads at start-up. A pool would only add lock
    // contention on the single SQLite write lock, with no throughput to gain.
    // The cost: a 100k-person `replace_directory` (~0.3 s) delays other calls
    // by that much, which imports (rare, background) can afford.
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) `<dir>/presence-hub.sqlite`; creates `dir` if missing.
    ///
    /// The store holds secrets (service accounts' refresh tokens among the provider cursors),
    /// so on unix the directory is made `0700` and the database with its `-wal` and `-shm`
    /// files `0600`, whatever the umask (SQLite gives the `-wal`/`-shm` files it creates later
    /// the database file's mode).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE_NAME);
        private(dir, &path);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        configure(&conn, true).map_err(open_err)?;
        migrate(&mut conn).map_err(|e| match e {
            StoreError::Sqlite(source) => open_err(source),
            other => other,
        })?;
        private(dir, &path);
        tracing::debug!(path = %path.display(), version = SCHEMA_VERSION, "store opened");
        Ok(Store {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path: Some(path),
            }),
        })
    }

    /// Opens a private, empty in-memory store (for tests and `--no-data-dir` runs).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        configure(&conn, false)?;
        migrate(&mut conn)?;
        Ok(Store {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path: None,
            }),
        })
    }

    /// Path of the database file; `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction open
        // (`Transaction` rolls back on drop), so the connection is still sound.
        self.inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in one write transaction (taken at once, so it cannot fail to upgrade) and
    /// commits it; durable when this returns `Ok`, rolled back on any error.
    fn write<R>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let r = f(&tx)?;
        tx.commit()?;
        Ok(r)
    }

    // ---------------------------------------------------------------- directory

    /// Replaces the whole people directory in one transaction: deletes every
    /// person, then inserts `people` in the given order. A duplicate id in
    /// `people` is [`StoreError::Invalid`] and leaves the old directory as it was.
    pub fn replace_directory(&self, people: &[(String, String)]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM people", [])?;
        {
            let mut stmt =
                tx.prepare_cached("INSERT INTO people (ord, id, doc) VALUES (?1, ?2, ?3)")?;
            for (ord, (id, doc)) in people.iter().enumerate() {
                match stmt.execute(params![ord as i64, id, doc]) {
                    Ok(_) => {}
                    Err(e) if is_constraint(&e) => {
                        return Err(StoreError::Invalid(format!(
                            "duplicate person id {id:?} in directory"
                        )));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The people directory as `(id, json)`, in import order.
    pub fn load_directory(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let len = count(&conn, "SELECT count(*) FROM people")?;
        let mut stmt = conn.prepare_cached("SELECT ord, id, doc FROM people ORDER BY ord")?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::with_capacity(len);
        while let Some(row) = rows.next()? {
            match (|| {
                Ok::<_, rusqlite::Error>((row.get::<_, String>(1)?, row.get::<_, String>(2)?))
            })() {
                Ok(p) => out.push(p),
                Err(e) => skip_row("people", row, &e),
            }
        }
        Ok(out)
    }

    /// Hands `f` an iterator over the stored people `(id, json)` in order, read one row at a
    /// time (so a directory can be built while it is read, see `Directory::build_streaming`).
    /// Unreadable rows are skipped with a warning.
    pub fn with_people<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = (String, String)>) -> R) -> Result<R, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT ord, id, doc FROM people ORDER BY ord")?;
        let mut rows = stmt.query([])?;
        let mut failed = None;
        let mut it = std::iter::from_fn(|| loop {
            match rows.next() {
                Ok(Some(row)) => match (row.get::<_, String>(1), row.get::<_, String>(2)) {
                    (Ok(id), Ok(doc)) => return Some((id, doc)),
                    (Err(e), _) | (_, Err(e)) => skip_row("people", row, &e),
                },
                Ok(None) => return None,
                Err(e) => {
                    failed = Some(e);
                    return None;
                }
            }
        });
        let r = f(&mut it);
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(r),
        }
    }

    /// Applies what directory sync changed, in one transaction: `upserts` `(id, json)` are
    /// written (newcomers after everyone else), `removed` ids leave the directory and are
    /// noted as leavers at `at`; a person who comes back is no longer a leaver.
    pub fn apply_directory_changes(&self, upserts: &[(String, String)], removed: &[String], at: UnixMs) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut next: i64 = tx.query_row("SELECT coalesce(max(ord), -1) + 1 FROM people", [], |r| r.get(0))?;
            let mut update = tx.prepare_cached("UPDATE people SET doc = ?2 WHERE id = ?1")?;
            let mut insert = tx.prepare_cached("INSERT INTO people (ord, id, doc) VALUES (?1, ?2, ?3)")?;
            let mut back = tx.prepare_cached("DELETE FROM leavers WHERE id = ?1")?;
            for (id, doc) in upserts {
                if update.execute(params![id, doc])? == 0 {
                    insert.execute(params![next, id, doc])?;
                    next += 1;
                }
                back.execute(params![id])?;
            }
            let mut delete = tx.prepare_cached("DELETE FROM people WHERE id = ?1")?;
            let mut leave = tx.prepare_cached(
                "INSERT INTO leavers (id, removed_at) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET removed_at = excluded.removed_at",
            )?;
            for id in removed {
                delete.execute(params![id])?;
                leave.execute(params![id, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets the people who left before `before`: their absences, their last view and the
    /// leaver row. Returns how many leavers were forgotten.
    pub fn purge_leavers(&self, before: UnixMs) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM absences WHERE user_id IN (SELECT id FROM leavers WHERE removed_at < ?1)", params![before])?;
        tx.execute("DELETE FROM snapshot WHERE user_id IN (SELECT id FROM leavers WHERE removed_at < ?1)", params![before])?;
        let n = tx.execute("DELETE FROM leavers WHERE removed_at < ?1", params![before])?;
        tx.commit()?;
        Ok(n)
    }

    /// The ids of the people who left, with when.
    pub fn leavers(&self) -> Result<Vec<(String, UnixMs)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT id, removed_at FROM leavers ORDER BY removed_at, id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The last stored view of one person, `(json, at)`.
    pub fn snapshot_for(&self, user_id: &str) -> Result<Option<(String, UnixMs)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT doc, at FROM snapshot WHERE user_id = ?1")?;
        let mut rows = stmt.query(params![user_id])?;
        match rows.next()? {
            Some(r) => Ok(Some((r.get(0)?, r.get(1)?))),
            None => Ok(None),
        }
    }

    /// Number of people in the directory.
    pub fn directory_len(&self) -> Result<usize, StoreError> {
        count(&self.conn(), "SELECT count(*) FROM people")
    }

    // ---------------------------------------------------------------- absences

    /// Inserts a new absence and the audit entry that records it, in one transaction; durable
    /// when this returns `Ok`. An existing absence with the same id (for any user) is
    /// [`StoreError::Conflict`].
    pub fn insert_absence(&self, a: &StoredAbsence, audit: Option<&AuditRecord>) -> Result<(), StoreError> {
        a.validate()?;
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                r#"INSERT INTO absences (id, user_id, reason, "text", start, "end", created_at, updated_at, created_by)
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"#,
            )?;
            match stmt.execute(a.params()) {
                Ok(_) => {}
                Err(e) if is_constraint(&e) => return Err(StoreError::Conflict(a.id.clone())),
                Err(e) => return Err(e.into()),
            }
            if let Some(r) = audit {
                audit::append(tx, r)?;
            }
            Ok(())
        })
    }

    /// Overwrites every field of the absence `(a.user_id, a.id)` with `a` and records the
    /// change, in one transaction; durable when this returns `Ok`. `Ok(false)` if there is no
    /// such absence (nothing is recorded).
    pub fn update_absence(&self, a: &StoredAbsence, audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
        a.validate()?;
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                r#"UPDATE absences SET reason = ?3, "text" = ?4, start = ?5, "end" = ?6,
                       created_at = ?7, updated_at = ?8, created_by = ?9
                   WHERE id = ?1 AND user_id = ?2"#,
            )?;
            let n = stmt.execute(a.params())?;
            if n > 0 {
                if let Some(r) = audit {
                    audit::append(tx, r)?;
                }
            }
            Ok(n > 0)
        })
    }

    /// Deletes the absence `(user_id, id)` and records it, in one transaction; durable when this
    /// returns `Ok`. `Ok(false)` if there was no such absence (nothing is recorded).
    pub fn delete_absence(&self, user_id: &str, id: &str, audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
        self.write(|tx| {
            let n = tx.prepare_cached("DELETE FROM absences WHERE id = ?1 AND user_id = ?2")?.execute(params![id, user_id])?;
            if n > 0 {
                if let Some(r) = audit {
                    audit::append(tx, r)?;
                }
            }
            Ok(n > 0)
        })
    }

    /// Applies an absence written through the cluster (created or changed: `Some`; cleared:
    /// `None` for the absence `(user_id, id)`) with its audit entry, and notes `seq` as
    /// applied, in one transaction: exactly once, whatever crashes. `Ok(false)` when `seq` was
    /// applied before.
    pub fn apply_replicated_absence(&self, seq: u64, user_id: &str, id: &str, absence: Option<&StoredAbsence>, audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
        if let Some(a) = absence {
            a.validate()?;
        }
        self.write(|tx| {
            let done: Option<String> = tx
                .prepare_cached(r#"SELECT "value" FROM cursors WHERE provider = 'cluster' AND "key" = 'absences_seq'"#)?
                .query_row([], |r| r.get(0))
                .optional()?;
            if done.and_then(|d| d.parse::<u64>().ok()).is_some_and(|d| d >= seq) {
                return Ok(false);
            }
            match absence {
                Some(a) => {
                    tx.prepare_cached(
                        r#"INSERT INTO absences (id, user_id, reason, "text", start, "end", created_at, updated_at, created_by)
                           VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                           ON CONFLICT (id) DO UPDATE SET reason = excluded.reason, "text" = excluded."text", start = excluded.start,
                               "end" = excluded."end", created_at = excluded.created_at, updated_at = excluded.updated_at, created_by = excluded.created_by"#,
                    )?
                    .execute(a.params())?;
                }
                None => {
                    tx.prepare_cached("DELETE FROM absences WHERE id = ?1 AND user_id = ?2")?.execute(params![id, user_id])?;
                }
            }
            if let Some(r) = audit {
                audit::append(tx, r)?;
            }
            tx.prepare_cached(
                r#"INSERT INTO cursors (provider, "key", "value", updated_at) VALUES ('cluster', 'absences_seq', ?1, ?2)
                   ON CONFLICT (provider, "key") DO UPDATE SET "value" = excluded."value", updated_at = excluded.updated_at"#,
            )?
            .execute(params![seq.to_string(), now_ms()])?;
            Ok(true)
        })
    }

    /// The last absence write of the cluster applied to this store (0: none).
    pub fn replicated_absences_seq(&self) -> Result<u64, StoreError> {
        Ok(self.cursor("cluster", "absences_seq")?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// The absence `(user_id, id)`, if any (an unreadable row counts as absent, with a warning).
    pub fn absence(&self, user_id: &str, id: &str) -> Result<Option<StoredAbsence>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(concat!(absence_select!(), "WHERE id = ?1 AND user_id = ?2"))?;
        Ok(collect_absences(&mut stmt, params![id, user_id])?.pop())
    }

    /// All absences of one user, ordered by start (then id).
    pub fn absences_for(&self, user_id: &str) -> Result<Vec<StoredAbsence>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(concat!(
            absence_select!(),
            "WHERE user_id = ?1 ORDER BY start, id"
        ))?;
        collect_absences(&mut stmt, params![user_id])
    }

    /// All absences that are open-ended or end after `ended_after`
    /// (`end IS NULL OR end > ended_after`), ordered by user, start, id.
    pub fn load_absences(&self, ended_after: UnixMs) -> Result<Vec<StoredAbsence>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(concat!(
            absence_select!(),
            r#"WHERE "end" IS NULL OR "end" > ?1 ORDER BY user_id, start, id"#
        ))?;
        collect_absences(&mut stmt, params![ended_after])
    }

    /// Deletes every absence that ended before `ended_before` (`end < ended_before`;
    /// open-ended ones are kept). Returns how many were deleted.
    pub fn purge_absences(&self, ended_before: UnixMs) -> Result<usize, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(r#"DELETE FROM absences WHERE "end" IS NOT NULL AND "end" < ?1"#)?;
        Ok(stmt.execute(params![ended_before])?)
    }

    // ---------------------------------------------------------------- cursors

    /// The cursor `key` of `provider`, if set.
    pub fn cursor(&self, provider: &str, key: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            r#"SELECT rowid, "value" FROM cursors WHERE provider = ?1 AND "key" = ?2"#,
        )?;
        let mut rows = stmt.query(params![provider, key])?;
        match rows.next()? {
            None => Ok(None),
            Some(row) => match row.get::<_, String>(1) {
                Ok(v) => Ok(Some(v)),
                Err(e) => {
                    skip_row("cursors", row, &e);
                    Ok(None)
                }
            },
        }
    }

    /// Sets (inserts or overwrites) the cursor `key` of `provider`; durable when this returns `Ok`.
    pub fn set_cursor(&self, provider: &str, key: &str, value: &str) -> Result<(), StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            r#"INSERT INTO cursors (provider, "key", "value", updated_at) VALUES (?1, ?2, ?3, ?4)
               ON CONFLICT (provider, "key") DO UPDATE SET "value" = excluded."value", updated_at = excluded.updated_at"#,
        )?;
        stmt.execute(params![provider, key, value, now_ms()])?;
        Ok(())
    }

    // ---------------------------------------------------------------- snapshot

    /// Upserts one snapshot document per user id, all stamped `at`, in one
    /// transaction. Users not in `rows` keep their previous document.
    pub fn save_snapshot(&self, rows: &[(String, String)], at: UnixMs) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO snapshot (user_id, doc, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id) DO UPDATE SET doc = excluded.doc, at = excluded.at",
            )?;
            for (user_id, doc) in rows {
                stmt.execute(params![user_id, doc, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every snapshot document as `(user id, json, at)`, ordered by user id.
    pub fn load_snapshot(&self) -> Result<Vec<(String, String, UnixMs)>, StoreError> {
        let conn = self.conn();
        let len = count(&conn, "SELECT count(*) FROM snapshot")?;
        let mut stmt =
            conn.prepare_cached("SELECT rowid, user_id, doc, at FROM snapshot ORDER BY user_id")?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::with_capacity(len);
        while let Some(row) = rows.next()? {
            match (|| Ok::<_, rusqlite::Error>((row.get(1)?, row.get(2)?, row.get(3)?)))() {
                Ok(r) => out.push(r),
                Err(e) => skip_row("snapshot", row, &e),
            }
        }
        Ok(out)
    }

    /// Deletes every snapshot document.
    pub fn clear_snapshot(&self) -> Result<(), StoreError> {
        self.conn().execute("DELETE FROM snapshot", [])?;
        Ok(())
    }
}

/// Owner-only modes on unix: `dir` `0700`; the database file (created empty with `0600` if
/// missing, so SQLite never writes it with the umask's mode) and its `-wal`/`-shm` files
/// `0600`. Failures are logged, not fatal (a data directory on a file system without modes).
fn private(dir: &Path, db: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let set = |p: &Path, mode: u32| {
            if let Ok(m) = std::fs::metadata(p) {
                if m.permissions().mode() & 0o777 != mode {
                    if let Err(e) = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)) {
                        tracing::warn!(path = %p.display(), error = %e, "could not make a store file private");
                    }
                }
            }
        };
        set(dir, 0o700);
        if !db.exists() {
            let _ = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(db);
        }
        set(db, 0o600);
        for suffix in ["-wal", "-shm"] {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            set(Path::new(&p), 0o600);
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, db);
}

/// Connection settings; must run outside any transaction.
fn configure(conn: &Connection, on_disk: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(32);
    // WAL: readers never block the writer, and a commit is one sequential
    // append to the log instead of rewriting pages in place.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if on_disk && !mode.eq_ignore_ascii_case("wal") {
        // Still crash-safe with a rollback journal and synchronous=FULL, only slower.
        tracing::warn!(journal_mode = %mode, "could not switch the database to WAL mode");
    }
    // FULL, not NORMAL: an absence acknowledged by the API must survive a crash of
    // the process *and* of the OS / a power cut. With WAL, FULL fsyncs the log on
    // every commit; NORMAL would fsync only at checkpoints, so the last commits
    // could be lost on power failure (they would still survive a process crash).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -CACHE_SIZE_KIB)?;
    Ok(())
}

/// Brings the schema up to [`SCHEMA_VERSION`], or refuses a newer one.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // IMMEDIATE: take the write lock before reading the version, so two
    // processes opening the same fresh directory cannot both migrate.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if !(0..=SCHEMA_VERSION).contains(&found) {
        return Err(StoreError::UnsupportedSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(()); // dropping `tx` ends the (empty) transaction
    }
    for (step, m) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let to = step as i64 + 1;
        (m.apply)(&tx)?;
        tx.pragma_update(None, "user_version", to)?;
        tracing::info!(
            from = step,
            to,
            description = m.description,
            "applying store migration"
        );
    }
    tx.commit()?;
    Ok(())
}

fn count(conn: &Connection, sql: &str) -> Result<usize, StoreError> {
    let n: i64 = conn.prepare_cached(sql)?.query_row([], |r| r.get(0))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::ConstraintViolation))
}

/// Logs an unreadable row (column 0 must be its rowid) and goes on.
fn skip_row(table: &'static str, row: &Row<'_>, e: &rusqlite::Error) {
    let rowid: Option<i64> = row.get(0).ok();
    tracing::warn!(table, rowid, error = %e, "skipping unreadable row");
}

fn absence_from_row(row: &Row<'_>) -> rusqlite::Result<StoredAbsence> {
    Ok(StoredAbsence {
        id: row.get(1)?,
        user_id: row.get(2)?,
        reason: row.get(3)?,
        text: row.get(4)?,
        start: row.get(5)?,
        end: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
        created_by: row.get(9)?,
    })
}

fn collect_absences(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredAbsence>, StoreError> {
    collect_rows(stmt, params, "absences", absence_from_row)
}

/// Every row of `stmt` read with `read`; an unreadable row (its column 0 is its rowid) is
/// skipped with a warning naming `table`.
fn collect_rows<T>(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    table: &'static str,
    read: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        match read(row) {
            Ok(a) => out.push(a),
            Err(e) => skip_row(table, row, &e),
        }
    }
    Ok(out)
}

fn now_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let p = std::env::temp_dir().join(format!(
                "presence-hub-store-{tag}-{}-{}-{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).expect("create temp dir");
            TempDir(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn absence(id: &str, user: &str, start: UnixMs, end: Option<UnixMs>) -> StoredAbsence {
        StoredAbsence {
            id: id.into(),
            user_id: user.into(),
            reason: "lunch".into(),
            text: Some(format!("text of {id}")),
            start,
            end,
            created_at: 1_000,
            updated_at: 1_000,
            created_by: Some("desk-1".into()),
        }
    }

    fn people(n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| {
                let id = format!("p{i:06}");
                let doc = serde_json::json!({
                    "id": id,
                    "name": format!("Person Number {i}"),
                    "email": format!("person.number.{i}@example.org"),
                    "department": format!("Department {}", i % 97),
                    "title": "Senior switchboard liaison for cross-team coordination",
                    "phones": [format!("+41 44 {:03} {:02} {:02}", i % 1000, i % 100, (i / 100) % 100), "+41 44 000 00 00"],
                    "location": "Building C, floor 4, room 4.17, near the south staircase",
                    "tags": ["alpha", "beta", "gamma", "delta"],
                    "notes": "Prefers calls before noon; forward to deputy when away."
                })
                .to_string();
                (id, doc)
            })
            .collect()
    }

    #[test]
    fn directory_changes_keep_leavers_until_purged() {
        let store = Store::open_in_memory().unwrap();
        store.replace_directory(&[("anna".into(), "{}".into()), ("bo".into(), "{}".into())]).unwrap();
        store.insert_absence(&StoredAbsence { id: "a1".into(), user_id: "bo".into(), reason: "lunch".into(), text: None, start: 1, end: None, created_at: 1, updated_at: 1, created_by: None }, None).unwrap();
        store.save_snapshot(&[("bo".into(), "{\"id\":\"bo\"}".into())], 5).unwrap();
        store.apply_directory_changes(&[("anna".into(), "{\"v\":2}".into()), ("cia".into(), "{}".into())], &["bo".into()], 100).unwrap();
        let ids: Vec<String> = store.load_directory().unwrap().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec!["anna", "cia"], "newcomers after everyone else");
        assert_eq!(store.load_directory().unwrap()[0].1, "{\"v\":2}");
        assert_eq!(store.leavers().unwrap(), vec![("bo".to_string(), 100)]);
        assert_eq!(store.purge_leavers(100).unwrap(), 0, "not older than the cut-off");
        assert_eq!(store.absences_for("bo").unwrap().len(), 1, "kept while a leaver");
        // Bo comes back, leaves again, and is forgotten after the retention.
        store.apply_directory_changes(&[("bo".into(), "{}".into())], &[], 200).unwrap();
        assert!(store.leavers().unwrap().is_empty());
        store.apply_directory_changes(&[], &["bo".into()], 300).unwrap();
        assert_eq!(store.purge_leavers(301).unwrap(), 1);
        assert!(store.absences_for("bo").unwrap().is_empty());
        assert_eq!(store.snapshot_for("bo").unwrap(), None);
    }

    #[test]
    fn store_is_clone_send_sync() {
        fn check<T: Clone + Send + Sync + 'static>() {}
        check::<Store>();
        fn check_err<T: std::error::Error + Send + Sync + 'static>() {}
        check_err::<StoreError>();
    }

    #[test]
    fn open_creates_dir_and_sets_pragmas() {
        let tmp = TempDir::new("pragmas");
        let dir = tmp.path().join("nested").join("data");
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.path(), Some(dir.join(DB_FILE_NAME).as_path()));
        assert!(dir.join(DB_FILE_NAME).is_file());
        let conn = store.conn();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous must be FULL");
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        drop(conn);
        assert_eq!(Store::open_in_memory().unwrap().path(), None);
    }

    /// The store holds refresh tokens: owner-only modes whatever the umask, and they stay so
    /// when an existing store with looser modes is opened again.
    #[cfg(unix)]
    #[test]
    fn the_store_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let wal = |dir: &Path, suffix: &str| dir.join(format!("{DB_FILE_NAME}{suffix}"));
        let tmp = TempDir::new("modes");
        let dir = tmp.path().join("data");
        let store = Store::open(&dir).unwrap();
        store.set_cursor("teams", "refresh:svc1", "secret").unwrap();
        assert_eq!(mode(&dir), 0o700);
        for suffix in ["", "-wal", "-shm"] {
            assert!(wal(&dir, suffix).exists(), "{suffix}");
            assert_eq!(mode(&wal(&dir, suffix)), 0o600, "{DB_FILE_NAME}{suffix}");
        }
        drop(store);
        // Loosened by hand (or made by an older version): tightened at the next open.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(wal(&dir, ""), std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.cursor("teams", "refresh:svc1").unwrap().as_deref(), Some("secret"));
        assert_eq!((mode(&dir), mode(&wal(&dir, ""))), (0o700, 0o600));
        for suffix in ["-wal", "-shm"] {
            if wal(&dir, suffix).exists() {
                assert_eq!(mode(&wal(&dir, suffix)), 0o600, "{suffix}");
            }
        }
    }

    #[test]
    fn open_errors_are_clear() {
        let tmp = TempDir::new("openerr");
        // The data dir is a file.
        let file = tmp.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(Store::open(&file), Err(StoreError::Io { .. })));
        // The database file is not a database.
        let dir = tmp.path().join("garbage");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(DB_FILE_NAME), vec![0x42u8; 8192]).unwrap();
        match Store::open(&dir) {
            Err(e @ StoreError::Open { .. }) => {
                assert!(e.to_string().contains(DB_FILE_NAME), "{e}")
            }
            other => panic!("expected Open error, got {other:?}"),
        }
    }

    #[test]
    fn directory_round_trip_keeps_order() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(store.directory_len().unwrap(), 0);
        assert!(store.load_directory().unwrap().is_empty());
        // Deliberately not sorted by id: import order must be kept.
        let a: Vec<(String, String)> = ["zed", "amy", "mia"]
            .iter()
            .map(|id| (id.to_string(), format!(r#"{{"id":"{id}"}}"#)))
            .collect();
        store.replace_directory(&a).unwrap();
        assert_eq!(store.load_directory().unwrap(), a);
        assert_eq!(store.directory_len().unwrap(), 3);
        // Replacing drops people who are gone.
        let b = vec![
            ("bob".to_string(), "{}".to_string()),
            ("amy".to_string(), r#"{"v":2}"#.to_string()),
        ];
        store.replace_directory(&b).unwrap();
        assert_eq!(store.load_directory().unwrap(), b);
        // A duplicate id rejects the whole import and keeps the old directory.
        let dup = vec![
            ("x".to_string(), "{}".to_string()),
            ("x".to_string(), "{}".to_string()),
        ];
        assert!(matches!(
            store.replace_directory(&dup),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(store.load_directory().unwrap(), b);
        store.replace_directory(&[]).unwrap();
        assert_eq!(store.directory_len().unwrap(), 0);
    }

    #[test]
    fn absence_round_trip() {
        let store = Store::open_in_memory().unwrap();
        let mut a = absence("a1", "u1", 100, Some(200));
        store.insert_absence(&a, None).unwrap();
        assert_eq!(store.absence("u1", "a1").unwrap(), Some(a.clone()));
        assert_eq!(
            store.absence("u2", "a1").unwrap(),
            None,
            "key is (user_id, id)"
        );
        assert_eq!(store.absence("u1", "nope").unwrap(), None);

        let bare = StoredAbsence {
            text: None,
            end: None,
            created_by: None,
            ..absence("a0", "u1", 50, None)
        };
        store.insert_absence(&bare, None).unwrap();
        assert_eq!(store.absence("u1", "a0").unwrap(), Some(bare.clone()));
        assert_eq!(
            store.absences_for("u1").unwrap(),
            vec![bare.clone(), a.clone()],
            "ordered by start"
        );
        assert!(store.absences_for("u2").unwrap().is_empty());

        a.reason = "meeting".into();
        a.text = None;
        a.end = None;
        a.updated_at = 2_000;
        assert!(store.update_absence(&a, None).unwrap());
        assert_eq!(store.absence("u1", "a1").unwrap(), Some(a.clone()));

        assert!(store.delete_absence("u1", "a1", None).unwrap());
        assert_eq!(store.absence("u1", "a1").unwrap(), None);
        assert!(!store.delete_absence("u1", "a1", None).unwrap());
        assert_eq!(store.absences_for("u1").unwrap(), vec![bare]);
    }

    #[test]
    fn duplicate_absence_id_conflicts() {
        let store = Store::open_in_memory().unwrap();
        let a = absence("dup", "u1", 1, None);
        store.insert_absence(&a, None).unwrap();
        match store.insert_absence(&a, None) {
            Err(StoreError::Conflict(id)) => assert_eq!(id, "dup"),
            other => panic!("expected Conflict, got {other:?}"),
        }
        // Ids are unique across users too.
        assert!(matches!(
            store.insert_absence(&absence("dup", "u2", 1, None), None),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.absences_for("u1").unwrap(), vec![a]);
    }

    #[test]
    fn update_and_delete_of_missing_return_false() {
        let store = Store::open_in_memory().unwrap();
        assert!(!store.update_absence(&absence("x", "u1", 1, None), None).unwrap());
        assert!(!store.delete_absence("u1", "x", None).unwrap());
        store.insert_absence(&absence("x", "u1", 1, None), None).unwrap();
        // Wrong user: not found, and nothing changed.
        assert!(!store.update_absence(&absence("x", "u2", 5, None), None).unwrap());
        assert!(!store.delete_absence("u2", "x", None).unwrap());
        assert_eq!(store.absence("u1", "x").unwrap().map(|a| a.start), Some(1));
    }

    #[test]
    fn invalid_absences_are_rejected() {
        let store = Store::open_in_memory().unwrap();
        let ok = absence("a", "u", 1, None);
        let long = "x".repeat(MAX_ABSENCE_FIELD_BYTES + 1);
        let cases = [
            StoredAbsence {
                text: Some("é".repeat(501)),
                ..ok.clone()
            }, // 1002 bytes
            StoredAbsence {
                id: long.clone(),
                ..ok.clone()
            },
            StoredAbsence {
                user_id: long.clone(),
                ..ok.clone()
            },
            StoredAbsence {
                reason: long.clone(),
                ..ok.clone()
            },
            StoredAbsence {
                created_by: Some(long.clone()),
                ..ok.clone()
            },
            StoredAbsence {
                id: String::new(),
                ..ok.clone()
            },
            StoredAbsence {
                user_id: String::new(),
                ..ok.clone()
            },
        ];
        for c in &cases {
            assert!(
                matches!(store.insert_absence(c, None), Err(StoreError::Invalid(_))),
                "{c:?}"
            );
        }
        // Exactly at the limits is fine.
        let edge = StoredAbsence {
            text: Some("t".repeat(MAX_ABSENCE_TEXT_BYTES)),
            reason: "r".repeat(MAX_ABSENCE_FIELD_BYTES),
            ..ok.clone()
        };
        store.insert_absence(&edge, None).unwrap();
        let too_long = StoredAbsence {
            text: Some("t".repeat(MAX_ABSENCE_TEXT_BYTES + 1)),
            ..edge.clone()
        };
        assert!(matches!(
            store.update_absence(&too_long, None),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(store.absence("u", "a").unwrap(), Some(edge));
    }

    #[test]
    fn load_and_purge_absences_filter_on_end() {
        let store = Store::open_in_memory().unwrap();
        let open = absence("open", "u2", 10, None);
        let past = absence("past", "u1", 10, Some(100));
        let edge = absence("edge", "u1", 50, Some(500));
        let future = absence("future", "u1", 20, Some(1_000));
        for a in [&open, &past, &edge, &future] {
            store.insert_absence(a, None).unwrap();
        }
        // end IS NULL OR end > 500; ordered by user, start.
        assert_eq!(
            store.load_absences(500).unwrap(),
            vec![future.clone(), open.clone()]
        );
        assert_eq!(
            store.load_absences(499).unwrap(),
            vec![future.clone(), edge.clone(), open.clone()]
        );
        assert_eq!(store.load_absences(0).unwrap().len(), 4);

        // end < 500: only "past"; "edge" (end == 500) and open-ended stay.
        assert_eq!(store.purge_absences(500).unwrap(), 1);
        assert_eq!(store.absence("u1", "past").unwrap(), None);
        assert_eq!(store.purge_absences(500).unwrap(), 0);
        assert_eq!(store.purge_absences(i64::MAX).unwrap(), 2);
        assert_eq!(store.load_absences(i64::MIN).unwrap(), vec![open]);
    }

    #[test]
    fn cursor_round_trip() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(store.cursor("teams", "delta").unwrap(), None);
        store.set_cursor("teams", "delta", "abc").unwrap();
        store.set_cursor("pbx", "delta", "other").unwrap();
        assert_eq!(
            store.cursor("teams", "delta").unwrap().as_deref(),
            Some("abc")
        );
        store.set_cursor("teams", "delta", "def").unwrap();
        assert_eq!(
            store.cursor("teams", "delta").unwrap().as_deref(),
            Some("def")
        );
        assert_eq!(
            store.cursor("pbx", "delta").unwrap().as_deref(),
            Some("other")
        );
        assert_eq!(store.cursor("teams", "other").unwrap(), None);
        store.set_cursor("teams", "empty", "").unwrap();
        assert_eq!(store.cursor("teams", "empty").unwrap().as_deref(), Some(""));
    }

    #[test]
    fn snapshot_upsert_overwrites_and_clears() {
        let store = Store::open_in_memory().unwrap();
        assert!(store.load_snapshot().unwrap().is_empty());
        let s = |u: &str, d: &str| (u.to_string(), d.to_string());
        store
            .save_snapshot(
                &[s("u2", r#"{"s":"busy"}"#), s("u1", r#"{"s":"free"}"#)],
                10,
            )
            .unwrap();
        assert_eq!(
            store.load_snapshot().unwrap(),
            vec![
                ("u1".into(), r#"{"s":"free"}"#.into(), 10),
                ("u2".into(), r#"{"s":"busy"}"#.into(), 10)
            ]
        );
        store
            .save_snapshot(&[s("u1", r#"{"s":"away"}"#), s("u3", "{}")], 20)
            .unwrap();
        assert_eq!(
            store.load_snapshot().unwrap(),
            vec![
                ("u1".into(), r#"{"s":"away"}"#.into(), 20),
                ("u2".into(), r#"{"s":"busy"}"#.into(), 10),
                ("u3".into(), "{}".into(), 20)
            ]
        );
        store.save_snapshot(&[], 30).unwrap();
        assert_eq!(store.load_snapshot().unwrap().len(), 3);
        store.clear_snapshot().unwrap();
        assert!(store.load_snapshot().unwrap().is_empty());
    }

    #[test]
    fn reopen_after_drop_keeps_data() {
        let tmp = TempDir::new("reopen");
        let a = absence("a1", "u1", 1, Some(2));
        let dir_rows = people(10);
        {
            let store = Store::open(tmp.path()).unwrap();
            let clone = store.clone();
            store.replace_directory(&dir_rows).unwrap();
            clone.insert_absence(&a, None).unwrap();
            store.set_cursor("teams", "k", "v").unwrap();
            store
                .save_snapshot(&[("u1".into(), "{}".into())], 7)
                .unwrap();
        }
        let store = Store::open(tmp.path()).unwrap();
        assert_eq!(store.load_directory().unwrap(), dir_rows);
        assert_eq!(store.absences_for("u1").unwrap(), vec![a]);
        assert_eq!(store.cursor("teams", "k").unwrap().as_deref(), Some("v"));
        assert_eq!(
            store.load_snapshot().unwrap(),
            vec![("u1".into(), "{}".into(), 7)]
        );
    }

    #[test]
    fn migration_is_idempotent() {
        let tmp = TempDir::new("migrate");
        Store::open(tmp.path())
            .unwrap()
            .insert_absence(&absence("a", "u", 1, None), None)
            .unwrap();
        for _ in 0..2 {
            let store = Store::open(tmp.path()).unwrap();
            let v: i64 = store
                .conn()
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, SCHEMA_VERSION);
            assert_eq!(store.absences_for("u").unwrap().len(), 1);
        }
        // Two handles open at once on the same directory also work.
        let s1 = Store::open(tmp.path()).unwrap();
        let s2 = Store::open(tmp.path()).unwrap();
        s1.set_cursor("p", "k", "1").unwrap();
        assert_eq!(s2.cursor("p", "k").unwrap().as_deref(), Some("1"));
    }

    #[test]
    fn refuses_newer_schema() {
        let tmp = TempDir::new("newer");
        {
            let store = Store::open(tmp.path()).unwrap();
            store
                .conn()
                .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        match Store::open(tmp.path()) {
            Err(e @ StoreError::UnsupportedSchema { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&format!("version {}", SCHEMA_VERSION + 1)),
                    "{msg}"
                );
                assert!(msg.contains("newer"), "{msg}");
            }
            other => panic!("expected UnsupportedSchema, got {other:?}"),
        }
        // The file is left untouched.
        let conn = Connection::open(tmp.path().join(DB_FILE_NAME)).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION + 1);
    }

    #[test]
    fn corrupt_rows_are_skipped_not_fatal() {
        let store = Store::open_in_memory().unwrap();
        let good = absence("good", "u1", 1, None);
        store.insert_absence(&good, None).unwrap();
        store
            .replace_directory(&[("p1".into(), "{}".into())])
            .unwrap();
        {
            let conn = store.conn();
            // Invalid UTF-8 in TEXT columns passes STRICT type checks but cannot be decoded.
            conn.execute_batch(
                r#"INSERT INTO absences (id, user_id, reason, start, created_at, updated_at)
                       VALUES ('bad', 'u1', CAST(x'ff' AS TEXT), 0, 0, 0);
                   INSERT INTO people (ord, id, doc) VALUES (5, 'p2', CAST(x'c3' AS TEXT));
                   INSERT INTO people (ord, id, doc) VALUES (6, 'p3', '{"ok":true}');
                   INSERT INTO snapshot (user_id, doc, at) VALUES (CAST(x'fe' AS TEXT), '{}', 1);
                   INSERT INTO snapshot (user_id, doc, at) VALUES ('u1', '{}', 2);
                   INSERT INTO cursors (provider, "key", "value", updated_at) VALUES ('p', 'k', CAST(x'ff' AS TEXT), 0);"#,
            )
            .unwrap();
        }
        assert_eq!(store.absences_for("u1").unwrap(), vec![good.clone()]);
        assert_eq!(store.load_absences(0).unwrap(), vec![good]);
        assert_eq!(store.absence("u1", "bad").unwrap(), None);
        assert_eq!(
            store.load_directory().unwrap(),
            vec![
                ("p1".to_string(), "{}".to_string()),
                ("p3".to_string(), r#"{"ok":true}"#.to_string())
            ]
        );
        assert_eq!(
            store.load_snapshot().unwrap(),
            vec![("u1".into(), "{}".into(), 2)]
        );
        assert_eq!(store.cursor("p", "k").unwrap(), None);
    }

    #[test]
    fn poisoned_lock_is_recovered() {
        let store = Store::open_in_memory().unwrap();
        let s2 = store.clone();
        let _ = std::thread::spawn(move || {
            let _guard = s2.conn();
            panic!("deliberate panic while holding the lock");
        })
        .join();
        store.set_cursor("p", "k", "v").unwrap();
        assert_eq!(store.cursor("p", "k").unwrap().as_deref(), Some("v"));
    }

    /// Env var that turns `crash_durability` into the child "writer" process.
    const CRASH_WRITER_ENV: &str = "PRESENCE_HUB_STORE_CRASH_WRITER_DIR";
    const ACK_PREFIX: &str = "ACKED ";

    /// Kills the child on drop, so a failing assertion leaves no process behind.
    struct KillOnDrop(Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn crash_durability() {
        if let Some(dir) = std::env::var_os(CRASH_WRITER_ENV) {
            // Child: insert absences until killed (bounded, in case the parent died).
            let store = Store::open(Path::new(&dir)).expect("writer: open");
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut out = std::io::stdout().lock();
            // libtest has printed "test <name> ... " without a newline: end that line first.
            writeln!(out).expect("writer: stdout");
            for i in 0..1_000_000u32 {
                if Instant::now() > deadline {
                    break;
                }
                let id = format!("crash-{i:07}");
                store
                    .insert_absence(&absence(&id, &format!("u{}", i % 13), i.into(), None), None)
                    .expect("writer: insert");
                // Acknowledge only after insert_absence returned.
                writeln!(out, "{ACK_PREFIX}{id}").expect("writer: stdout");
                out.flush().expect("writer: flush");
            }
            return;
        }

        const WANT: usize = 300;
        let tmp = TempDir::new("crash");
        let db_dir = tmp.path().join("data");
        let stderr_log = tmp.path().join("writer-stderr.log");
        // This test's own path relative to the crate root (module_path! starts with the crate name).
        let module = module_path!()
            .split_once("::")
            .map_or(module_path!(), |(_, rest)| rest);
        let test_name = format!("{module}::crash_durability");
        let child = Command::new(std::env::current_exe().expect("current_exe"))
            .args(["--exact", &test_name, "--nocapture", "--test-threads=1"])
            .env(CRASH_WRITER_ENV, &db_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(&stderr_log).expect("stderr log"),
            ))
            .spawn()
            .expect("spawn writer");
        let mut child = KillOnDrop(child);
        let mut reader = BufReader::new(child.0.stdout.take().expect("child stdout"));

        let mut acked: Vec<String> = Vec::new();
        let mut line = String::new();
        let take_line = |line: &str, acked: &mut Vec<String>| {
            // Only complete lines: a line cut by the kill is not an acknowledgement we can trust.
            if let Some(id) = line
                .strip_suffix('\n')
                .and_then(|l| l.strip_prefix(ACK_PREFIX))
            {
                acked.push(id.to_string());
            }
        };
        while acked.len() < WANT {
            line.clear();
            let n = reader.read_line(&mut line).expect("read child stdout");
            if n == 0 {
                let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
                panic!("writer exited after {} acks; stderr:\n{log}", acked.len());
            }
            take_line(&line, &mut acked);
        }
        // SIGKILL mid-stream: the writer is most likely inside an insert right now.
        child.0.kill().expect("kill writer");
        let status = child.0.wait().expect("wait writer");
        assert!(
            !status.success(),
            "writer should have been killed, got {status:?}"
        );
        // Ids the writer printed before dying are acknowledged too.
        let mut rest = String::new();
        reader
            .read_to_string(&mut rest)
            .expect("drain child stdout");
        for l in rest.split_inclusive('\n') {
            take_line(l, &mut acked);
        }

        let store = Store::open(&db_dir).expect("reopen after kill");
        let stored: std::collections::HashSet<String> = store
            .load_absences(i64::MIN)
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
        assert!(
            missing.is_empty(),
            "{} of {} acknowledged absences lost: {missing:?}",
            missing.len(),
            acked.len()
        );
        // At most the one in flight may be there without an acknowledgement.
        let unacked: Vec<&String> = stored.iter().filter(|id| !acked.contains(*id)).collect();
        assert!(
            unacked.len() <= 1,
            "more than the one in-flight insert stored without an ack: {unacked:?}"
        );
        eprintln!(
            "crash_durability: {} acknowledged, {} stored after SIGKILL",
            acked.len(),
            stored.len()
        );
    }

    /// Bulk timings. Run in release:
    /// `cargo test --release -- --ignored --nocapture bulk_timings`
    #[test]
    #[ignore = "timing run; use --release -- --ignored --nocapture bulk_timings"]
    fn bulk_timings() {
        const N: usize = 100_000;
        let tmp = TempDir::new("bench");
        let store = Store::open(tmp.path()).unwrap();
        let rows = people(N);
        let avg = rows.iter().map(|(_, d)| d.len()).sum::<usize>() / N;
        let time = |label: &str, f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            let el = t.elapsed();
            println!("{label:<48} {:>8.1} ms", el.as_secs_f64() * 1e3);
            el
        };
        println!("{N} people, average JSON document {avg} bytes");
        time("replace_directory (empty -> 100k)", &mut || {
            store.replace_directory(&rows).unwrap()
        });
        time("replace_directory (100k -> 100k)", &mut || {
            store.replace_directory(&rows).unwrap()
        });
        let mut loaded = Vec::new();
        time("load_directory (100k)", &mut || {
            loaded = store.load_directory().unwrap()
        });
        assert_eq!(loaded.len(), N);
        time("directory_len", &mut || {
            assert_eq!(store.directory_len().unwrap(), N)
        });

        let snap: Vec<(String, String)> =
            rows.iter().map(|(id, d)| (id.clone(), d.clone())).collect();
        time("save_snapshot (100k new rows)", &mut || {
            store.save_snapshot(&snap, 1).unwrap()
        });
        time("save_snapshot (100k overwrites)", &mut || {
            store.save_snapshot(&snap, 2).unwrap()
        });
        let small: Vec<(String, String)> = snap[..100].to_vec();
        time(
            "save_snapshot (100 rows, typical debounce batch)",
            &mut || store.save_snapshot(&small, 3).unwrap(),
        );
        let mut s = Vec::new();
        time("load_snapshot (100k)", &mut || {
            s = store.load_snapshot().unwrap()
        });
        assert_eq!(s.len(), N);

        const K: usize = 200;
        let el = time("insert_absence x200 (each fsync'd)", &mut || {
            for i in 0..K {
                store
                    .insert_absence(&absence(
                        &format!("b{i}"),
                        &format!("p{:06}", i),
                        i as i64,
                        None,
                    ), None)
                    .unwrap();
            }
        });
        println!(
            "{:<48} {:>8.2} ms",
            "  per insert_absence",
            el.as_secs_f64() * 1e3 / K as f64
        );
        time("absences_for (one user)", &mut || {
            assert_eq!(store.absences_for("p000007").unwrap().len(), 1)
        });
        time("load_absences (200)", &mut || {
            assert_eq!(store.load_absences(0).unwrap().len(), K)
        });
    }
}
