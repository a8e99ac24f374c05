//! The sandbox's state in SQLite. Schema changes are numbered migrations recorded in
//! `PRAGMA user_version`, so a newer sandbox opens an older database and upgrades it.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::{Result, SandboxError};

/// Migrations, in order; the database's `user_version` is how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: API keys. Only the SHA-256 of each secret is kept: secrets are 32 random bytes, so a
    // fast hash is enough (there is nothing to guess).
    "CREATE TABLE api_keys (
        client_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );",
    // 2: runs, with what the API shows of their action. The task (command and environment) is
    // kept so a run can be described after a restart.
    "CREATE TABLE runs (
        project TEXT NOT NULL,
        domain TEXT NOT NULL,
        name TEXT NOT NULL,
        task_json TEXT NOT NULL,
        phase TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        error_json TEXT,
        abort_reason TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (project, domain, name)
    );",
    // 3: every phase an action's attempts entered, in order: the per-attempt history that
    // GetActionDetails shows (each retry with its own error and times), kept across restarts.
    "CREATE TABLE action_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        project TEXT NOT NULL,
        domain TEXT NOT NULL,
        run TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        phase TEXT NOT NULL,
        error_json TEXT,
        occurred_at_ms INTEGER NOT NULL
    );
    CREATE INDEX action_events_by_run ON action_events (project, domain, run, seq);",
    // 4: the cache: which run first succeeded for a cache key.
    "CREATE TABLE cache_entries (
        cache_key TEXT PRIMARY KEY,
        run TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    );",
];

/// One phase an attempt entered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub attempt: u32,
    pub phase: String,
    pub error_json: Option<String>,
    pub occurred_at_ms: i64,
}

/// A stored run: what the API shows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub project: String,
    pub domain: String,
    pub name: String,
    pub task_json: String,
    pub phase: String,
    pub attempts: u32,
    pub error_json: Option<String>,
    pub abort_reason: Option<String>,
}

/// A stored API key, without its secret (which is not stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub client_id: String,
    pub name: String,
    pub created_at: i64,
}

/// The database. SQLite calls are short; the sandbox serves one machine, so a mutex around one
/// connection is simpler than a pool and fast enough.
pub struct Store {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn db_err(e: &rusqlite::Error) -> SandboxError {
    SandboxError::Store(e.to_string())
}

pub(crate) fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Store {
    /// Open (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        // Created 0600 before SQLite sees it: SQLite would create it (and its -wal and -shm
        // files, which take the database's mode) as 0644 less the umask.
        #[allow(
            clippy::disallowed_methods,
            reason = "SQLite writes its database in place; this only sets its mode before it does"
        )]
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| SandboxError::Io(format!("cannot create {}: {e}", path.display())))?;
        }
        let conn = Connection::open(path).map_err(|e| db_err(&e))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .map_err(|e| db_err(&e))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| db_err(&e))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            return Err(SandboxError::Store(format!(
                "{} was written by a newer sandbox (schema {version}, this one knows {}); upgrade flyte-run",
                path.display(),
                MIGRATIONS.len()
            )));
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            conn.execute_batch(&format!(
                "BEGIN; {migration} PRAGMA user_version = {}; COMMIT;",
                i + 1
            ))
            .map_err(|e| db_err(&e))?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (statements are atomic).
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn insert_api_key(
        &self,
        client_id: &str,
        name: &str,
        secret: &str,
        now: i64,
    ) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO api_keys (client_id, name, secret_sha256, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![client_id, name, sha256_hex(secret), now],
            )
            .map_err(|e| db_err(&e))?;
        Ok(())
    }

    pub fn api_key(&self, client_id: &str) -> Result<Option<ApiKeyRecord>> {
        self.conn()
            .query_row(
                "SELECT client_id, name, created_at FROM api_keys WHERE client_id = ?1",
                params![client_id],
                |row| {
                    Ok(ApiKeyRecord {
                        client_id: row.get(0)?,
                        name: row.get(1)?,
                        created_at: row.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| db_err(&e))
    }

    pub fn api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT client_id, name, created_at FROM api_keys ORDER BY rowid")
            .map_err(|e| db_err(&e))?;
        let rows = statement
            .query_map([], |row| {
                Ok(ApiKeyRecord {
                    client_id: row.get(0)?,
                    name: row.get(1)?,
                    created_at: row.get(2)?,
                })
            })
            .map_err(|e| db_err(&e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| db_err(&e))
    }

    /// Whether a key was deleted (false when there was none).
    pub fn delete_api_key(&self, client_id: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM api_keys WHERE client_id = ?1",
                params![client_id],
            )
            .map_err(|e| db_err(&e))?;
        Ok(n > 0)
    }

    pub fn insert_run(&self, run: &RunRecord, now: i64) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO runs (project, domain, name, task_json, phase, attempts, error_json, abort_reason, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![run.project, run.domain, run.name, run.task_json, run.phase, run.attempts, run.error_json, run.abort_reason, now],
            )
            .map_err(|e| db_err(&e))?;
        Ok(())
    }

    /// Record where a run's action is now.
    pub fn update_run(&self, run: &RunRecord) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE runs SET phase = ?4, attempts = ?5, error_json = ?6, abort_reason = ?7
                 WHERE project = ?1 AND domain = ?2 AND name = ?3",
                params![
                    run.project,
                    run.domain,
                    run.name,
                    run.phase,
                    run.attempts,
                    run.error_json,
                    run.abort_reason
                ],
            )
            .map_err(|e| db_err(&e))?;
        Ok(())
    }

    /// Append a phase entered by an attempt of the run `(project, domain, run)`.
    pub fn append_event(
        &self,
        (project, domain, run): (&str, &str, &str),
        event: &EventRecord,
    ) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO action_events (project, domain, run, attempt, phase, error_json, occurred_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    project,
                    domain,
                    run,
                    event.attempt,
                    event.phase,
                    event.error_json,
                    event.occurred_at_ms
                ],
            )
            .map_err(|e| db_err(&e))?;
        Ok(())
    }

    /// The phases a run's attempts entered, oldest first.
    pub fn events(&self, (project, domain, run): (&str, &str, &str)) -> Result<Vec<EventRecord>> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT attempt, phase, error_json, occurred_at_ms FROM action_events
                 WHERE project = ?1 AND domain = ?2 AND run = ?3 ORDER BY seq",
            )
            .map_err(|e| db_err(&e))?;
        let rows = statement
            .query_map(params![project, domain, run], |row| {
                Ok(EventRecord {
                    attempt: row.get(0)?,
                    phase: row.get(1)?,
                    error_json: row.get(2)?,
                    occurred_at_ms: row.get(3)?,
                })
            })
            .map_err(|e| db_err(&e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| db_err(&e))
    }

    /// The run whose outputs are cached under `key`, if any.
    pub fn cache_entry(&self, key: &str) -> Result<Option<String>> {
        self.conn()
            .query_row(
                "SELECT run FROM cache_entries WHERE cache_key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| db_err(&e))
    }

    /// Record `run` as the cached result for `key`; false when an entry was there first.
    pub fn put_cache_entry(&self, key: &str, run: &str, now_ms: i64) -> Result<bool> {
        let inserted = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO cache_entries (cache_key, run, created_at_ms) VALUES (?1, ?2, ?3)",
                params![key, run, now_ms],
            )
            .map_err(|e| db_err(&e))?;
        Ok(inserted > 0)
    }

    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT project, domain, name, task_json, phase, attempts, error_json, abort_reason FROM runs ORDER BY rowid",
            )
            .map_err(|e| db_err(&e))?;
        let rows = statement
            .query_map([], |row| {
                Ok(RunRecord {
                    project: row.get(0)?,
                    domain: row.get(1)?,
                    name: row.get(2)?,
                    task_json: row.get(3)?,
                    phase: row.get(4)?,
                    attempts: row.get(5)?,
                    error_json: row.get(6)?,
                    abort_reason: row.get(7)?,
                })
            })
            .map_err(|e| db_err(&e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| db_err(&e))
    }

    /// Whether `secret` is the secret of `client_id` (hashes compared in constant time).
    pub fn check_secret(&self, client_id: &str, secret: &str) -> Result<bool> {
        let stored: Option<String> = self
            .conn()
            .query_row(
                "SELECT secret_sha256 FROM api_keys WHERE client_id = ?1",
                params![client_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| db_err(&e))?;
        let presented = sha256_hex(secret);
        Ok(stored.is_some_and(|s| {
            s.len() == presented.len()
                && s.bytes()
                    .zip(presented.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        }))
    }
}
