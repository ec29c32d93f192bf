//! Storage: two append-only tables, `keys` (every version of every escrowed key, as ciphertext)
//! and `retrievals` (every retrieval and the warrant it claimed). The code has no UPDATE or DELETE
//! statement, and triggers make the database itself refuse them.
//!
//! SQLite (default; one file, one connection) or PostgreSQL (>= 14).

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::config::{Database, PgDatabase, PgDatabaseExt};

/// A version to store.
pub struct NewKey {
    pub user_id: String,
    pub device_id: Option<String>,
    pub kind: String,
    pub backup_version: Option<String>,
    pub created_at_ms: i64,
    pub fingerprint: String,
    pub ciphertext: String,
}

/// A stored version, as retrieval returns it.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub version: i64,
    pub device_id: Option<String>,
    pub kind: String,
    pub backup_version: Option<String>,
    pub created_at_ms: i64,
    pub fingerprint: String,
    pub ciphertext: String,
}

/// A retrieval to record.
pub struct RetrievalRecord<'a> {
    pub at_ms: i64,
    pub user_id: &'a str,
    pub warrant: &'a str,
    pub client: &'a str,
}

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    device_id TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('recovery_key', 'backup_key')),
    backup_version TEXT,
    created_at_ms INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    UNIQUE (user_id, version)
);
CREATE TABLE IF NOT EXISTS retrievals (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    warrant TEXT NOT NULL,
    client TEXT NOT NULL,
    versions TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS keys_no_update BEFORE UPDATE ON keys
    BEGIN SELECT RAISE(ABORT, 'mxstack key vault: keys is append-only (UPDATE refused)'); END;
CREATE TRIGGER IF NOT EXISTS keys_no_delete BEFORE DELETE ON keys
    BEGIN SELECT RAISE(ABORT, 'mxstack key vault: keys is append-only (DELETE refused)'); END;
CREATE TRIGGER IF NOT EXISTS retrievals_no_update BEFORE UPDATE ON retrievals
    BEGIN SELECT RAISE(ABORT, 'mxstack key vault: retrievals is append-only (UPDATE refused)'); END;
CREATE TRIGGER IF NOT EXISTS retrievals_no_delete BEFORE DELETE ON retrievals
    BEGIN SELECT RAISE(ABORT, 'mxstack key vault: retrievals is append-only (DELETE refused)'); END;
";

const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys (
    id BIGSERIAL PRIMARY KEY,
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL CHECK (version >= 1),
    device_id TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('recovery_key', 'backup_key')),
    backup_version TEXT,
    created_at_ms BIGINT NOT NULL,
    fingerprint TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    UNIQUE (user_id, version)
);
CREATE TABLE IF NOT EXISTS retrievals (
    id BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    warrant TEXT NOT NULL,
    client TEXT NOT NULL,
    versions TEXT NOT NULL
);
CREATE OR REPLACE FUNCTION mxstack_key_vault_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'mxstack key vault: % is append-only (% refused)', TG_TABLE_NAME, TG_OP;
END
$$;
CREATE OR REPLACE TRIGGER keys_append_only BEFORE UPDATE OR DELETE ON keys
    FOR EACH ROW EXECUTE FUNCTION mxstack_key_vault_append_only();
CREATE OR REPLACE TRIGGER keys_no_truncate BEFORE TRUNCATE ON keys
    FOR EACH STATEMENT EXECUTE FUNCTION mxstack_key_vault_append_only();
CREATE OR REPLACE TRIGGER retrievals_append_only BEFORE UPDATE OR DELETE ON retrievals
    FOR EACH ROW EXECUTE FUNCTION mxstack_key_vault_append_only();
CREATE OR REPLACE TRIGGER retrievals_no_truncate BEFORE TRUNCATE ON retrievals
    FOR EACH STATEMENT EXECUTE FUNCTION mxstack_key_vault_append_only();
";

/// Serialises schema creation among replicas starting at once (pg_advisory_xact_lock key).
const PG_SCHEMA_LOCK: i64 = 0x6d78_6b76_0001;

pub enum Store {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres(Box<PgStore>),
}

pub struct PgStore {
    db: PgDatabase,
    password: String,
    client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

fn versions_json(keys: &[StoredKey]) -> String {
    serde_json::to_string(&keys.iter().map(|k| k.version).collect::<Vec<_>>()).unwrap()
}

impl Store {
    /// Opens (creating if needed) the database and its schema.
    pub async fn open(db: &Database) -> Result<Store, String> {
        match db {
            Database::Sqlite(path) => {
                let conn = open_sqlite(path)?;
                Ok(Store::Sqlite(Arc::new(Mutex::new(conn))))
            }
            Database::Postgres(db) => {
                let store = PgStore {
                    password: db.password()?,
                    db: db.clone(),
                    client: tokio::sync::Mutex::new(None),
                };
                let mut guard = store.client.lock().await;
                let client = store.connect(&mut guard).await?;
                let tx = client.transaction().await.map_err(pg_err)?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_SCHEMA_LOCK])
                    .await
                    .map_err(pg_err)?;
                tx.batch_execute(PG_SCHEMA).await.map_err(pg_err)?;
                tx.commit().await.map_err(pg_err)?;
                drop(guard);
                Ok(Store::Postgres(Box::new(store)))
            }
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Appends a version; returns its number (per user: 1, 2, 3, ...).
    pub async fn insert(&self, k: NewKey) -> Result<i64, String> {
        match self {
            Store::Sqlite(conn) => {
                let conn = conn.clone();
                tokio::task::spawn_blocking(move || {
                    let mut conn = conn.lock().unwrap();
                    let tx = conn
                        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                        .map_err(sqlite_err)?;
                    let version: i64 = tx
                        .query_row(
                            "SELECT COALESCE(MAX(version), 0) + 1 FROM keys WHERE user_id = ?1",
                            [&k.user_id],
                            |r| r.get(0),
                        )
                        .map_err(sqlite_err)?;
                    tx.execute(
                        "INSERT INTO keys (user_id, version, device_id, kind, backup_version, created_at_ms, fingerprint, ciphertext)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        rusqlite::params![
                            k.user_id, version, k.device_id, k.kind, k.backup_version,
                            k.created_at_ms, k.fingerprint, k.ciphertext
                        ],
                    )
                    .map_err(sqlite_err)?;
                    tx.commit().map_err(sqlite_err)?;
                    Ok(version)
                })
                .await
                .map_err(|e| format!("storage task: {e}"))?
            }
            Store::Postgres(pg) => {
                let mut guard = pg.client.lock().await;
                let client = pg.connect(&mut guard).await?;
                let r = async {
                    let tx = client.transaction().await?;
                    // One writer per user at a time: versions are MAX + 1.
                    tx.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                        &[&k.user_id],
                    )
                    .await?;
                    let version: i64 = tx
                        .query_one(
                            "SELECT COALESCE(MAX(version), 0) + 1 FROM keys WHERE user_id = $1",
                            &[&k.user_id],
                        )
                        .await?
                        .get(0);
                    tx.execute(
                        "INSERT INTO keys (user_id, version, device_id, kind, backup_version, created_at_ms, fingerprint, ciphertext)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        &[
                            &k.user_id, &version, &k.device_id, &k.kind, &k.backup_version,
                            &k.created_at_ms, &k.fingerprint, &k.ciphertext,
                        ],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok::<i64, tokio_postgres::Error>(version)
                }
                .await;
                pg.after(&mut guard, r)
            }
        }
    }

    /// Reads every version of `user_id` (newest first) and records the retrieval, in one
    /// transaction: keys are never returned without the record.
    pub async fn retrieve(&self, rec: RetrievalRecord<'_>) -> Result<Vec<StoredKey>, String> {
        match self {
            Store::Sqlite(conn) => {
                let conn = conn.clone();
                let (at_ms, user_id, warrant, client) = (
                    rec.at_ms,
                    rec.user_id.to_string(),
                    rec.warrant.to_string(),
                    rec.client.to_string(),
                );
                tokio::task::spawn_blocking(move || {
                    let mut conn = conn.lock().unwrap();
                    let tx = conn
                        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                        .map_err(sqlite_err)?;
                    let keys = {
                        let mut st = tx
                            .prepare(
                                "SELECT version, device_id, kind, backup_version, created_at_ms, fingerprint, ciphertext
                                 FROM keys WHERE user_id = ?1 ORDER BY version DESC",
                            )
                            .map_err(sqlite_err)?;
                        let rows = st
                            .query_map([&user_id], |r| {
                                Ok(StoredKey {
                                    version: r.get(0)?,
                                    device_id: r.get(1)?,
                                    kind: r.get(2)?,
                                    backup_version: r.get(3)?,
                                    created_at_ms: r.get(4)?,
                                    fingerprint: r.get(5)?,
                                    ciphertext: r.get(6)?,
                                })
                            })
                            .map_err(sqlite_err)?;
                        rows.collect::<Result<Vec<_>, _>>().map_err(sqlite_err)?
                    };
                    tx.execute(
                        "INSERT INTO retrievals (at_ms, user_id, warrant, client, versions) VALUES (?1, ?2, ?3, ?4, ?5)",
                        rusqlite::params![at_ms, user_id, warrant, client, versions_json(&keys)],
                    )
                    .map_err(sqlite_err)?;
                    tx.commit().map_err(sqlite_err)?;
                    Ok(keys)
                })
                .await
                .map_err(|e| format!("storage task: {e}"))?
            }
            Store::Postgres(pg) => {
                let mut guard = pg.client.lock().await;
                let client = pg.connect(&mut guard).await?;
                let r = async {
                    let tx = client.transaction().await?;
                    let keys: Vec<StoredKey> = tx
                        .query(
                            "SELECT version, device_id, kind, backup_version, created_at_ms, fingerprint, ciphertext
                             FROM keys WHERE user_id = $1 ORDER BY version DESC",
                            &[&rec.user_id],
                        )
                        .await?
                        .iter()
                        .map(|r| StoredKey {
                            version: r.get(0),
                            device_id: r.get(1),
                            kind: r.get(2),
                            backup_version: r.get(3),
                            created_at_ms: r.get(4),
                            fingerprint: r.get(5),
                            ciphertext: r.get(6),
                        })
                        .collect();
                    tx.execute(
                        "INSERT INTO retrievals (at_ms, user_id, warrant, client, versions) VALUES ($1, $2, $3, $4, $5)",
                        &[&rec.at_ms, &rec.user_id, &rec.warrant, &rec.client, &versions_json(&keys)],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok::<_, tokio_postgres::Error>(keys)
                }
                .await;
                pg.after(&mut guard, r)
            }
        }
    }

    /// The database answers.
    pub async fn ping(&self) -> Result<(), String> {
        match self {
            Store::Sqlite(conn) => {
                let conn = conn.clone();
                tokio::task::spawn_blocking(move || {
                    conn.lock()
                        .unwrap()
                        .query_row("SELECT 1", [], |_| Ok(()))
                        .map_err(sqlite_err)
                })
                .await
                .map_err(|e| format!("storage task: {e}"))?
            }
            Store::Postgres(pg) => {
                let mut guard = pg.client.lock().await;
                let client = pg.connect(&mut guard).await?;
                let r = client.simple_query("SELECT 1").await.map(|_| ());
                pg.after(&mut guard, r)
            }
        }
    }
}

fn open_sqlite(path: &Path) -> Result<rusqlite::Connection, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
    }
    // Created 0600 before SQLite opens it (ciphertext only, but nobody else needs to read it).
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
    }
    let conn = rusqlite::Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sqlite_err)?;
    conn.execute_batch("PRAGMA synchronous = FULL;")
        .map_err(sqlite_err)?;
    conn.execute_batch(SQLITE_SCHEMA)
        .map_err(|e| format!("{}: creating the schema: {e}", path.display()))?;
    Ok(conn)
}

fn sqlite_err(e: rusqlite::Error) -> String {
    format!("sqlite: {e}")
}

fn pg_err(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("postgres: {}: {}", db.code().code(), db.message()),
        None => format!("postgres: {e}"),
    }
}

impl PgStore {
    /// The connection, (re)connecting when there is none or it closed.
    async fn connect<'g>(
        &self,
        slot: &'g mut Option<tokio_postgres::Client>,
    ) -> Result<&'g mut tokio_postgres::Client, String> {
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, conn) = self
                .db
                .pg_config(&self.password)
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| {
                    format!(
                        "connecting to {}@{}:{}/{}: {}",
                        self.db.user,
                        self.db.host,
                        self.db.port,
                        self.db.dbname,
                        pg_err(e)
                    )
                })?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            *slot = Some(client);
        }
        Ok(slot.as_mut().unwrap())
    }

    /// Maps the error and drops a connection that closed, so the next call reconnects.
    fn after<T>(
        &self,
        slot: &mut Option<tokio_postgres::Client>,
        r: Result<T, tokio_postgres::Error>,
    ) -> Result<T, String> {
        r.map_err(|e| {
            if e.is_closed() || slot.as_ref().is_some_and(|c| c.is_closed()) {
                *slot = None;
            }
            pg_err(e)
        })
    }
}
