//! The replica: schema copied before subscribing, history triggers, the subscription, upgrades.
//!
//! Order on a new replica: (1) copy main's schema, (2) install the history tables and the
//! ENABLE ALWAYS triggers, (3) create the subscription (initial copy, then streaming). On every
//! schema check afterwards the additive difference is applied, history triggers are added to new
//! tables, and `ALTER SUBSCRIPTION ... REFRESH PUBLICATION` picks the new tables up with their
//! initial copy. The slot on main holds every change until the replica confirms it, so a stall
//! while a table is missing loses nothing, and a refresh copies each new table exactly once.

use mxstack_topology::li::{HISTORY_SKIPS_UPDATES_OF, LI_SCHEMA};
use mxstack_topology::pgsql;
use tokio_postgres::Client;

use crate::config::LiSyncConfig;
use crate::schema::{diff, ident, literal, qualified, Schema, SchemaDiff};

#[derive(Debug)]
pub struct ReplicaError(pub String);

impl std::fmt::Display for ReplicaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReplicaError {}

impl From<tokio_postgres::Error> for ReplicaError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The database's own message (never contains a password) with its detail.
        match e.as_db_error() {
            Some(db) => ReplicaError(format!("{}: {}", db.severity(), db.message())),
            None => ReplicaError(e.to_string()),
        }
    }
}

/// History of every row the replica saw deleted, truncated or rewritten. Generic (one JSON row
/// per change) so a Synapse migration never needs a history migration.
pub fn history_setup_sql() -> String {
    let s = LI_SCHEMA;
    let bulk = crate::dump::BULK_SETTING;
    let skip = HISTORY_SKIPS_UPDATES_OF
        .iter()
        .map(|t| literal(t))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.row_history (
    id bigserial PRIMARY KEY,
    table_name text NOT NULL,
    -- REMOVED: dump mode, a row of the previous copy that main's next snapshot no longer had.
    operation text NOT NULL CHECK (operation IN ('UPDATE', 'DELETE', 'TRUNCATE', 'REMOVED')),
    recorded_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    old_row jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS row_history_by_table ON {s}.row_history (table_name, recorded_at);
-- The LI console looks rows up by event and by room (timelines, originals, purged events).
CREATE INDEX IF NOT EXISTS row_history_by_event ON {s}.row_history (table_name, (old_row->>'event_id'));
CREATE INDEX IF NOT EXISTS row_history_by_room ON {s}.row_history (table_name, (old_row->>'room_id'));
CREATE TABLE IF NOT EXISTS {s}.schema_upgrades (
    id bigserial PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    new_tables text[] NOT NULL,
    statements text[] NOT NULL
);
-- Logical mode: main's sequence values (replication does not carry them) and main's WAL
-- position read just before them: every id in data applied up to that position is covered.
-- Main's foreign keys. The replica has none (it must accept a row whose parent main has since
-- deleted); the working copy adds them NOT VALID, because Synapse LI expects them.
CREATE TABLE IF NOT EXISTS {s}.foreign_keys (
    table_name text NOT NULL,
    name text NOT NULL,
    def text NOT NULL,
    PRIMARY KEY (table_name, name)
);
CREATE TABLE IF NOT EXISTS {s}.sequence_sync (
    id integer PRIMARY KEY CHECK (id = 1),
    main_lsn pg_lsn NOT NULL,
    copied_at timestamptz NOT NULL
);
-- Runs in the apply worker, whose search_path is empty: every name is schema-qualified.
CREATE OR REPLACE FUNCTION {s}.keep_row_history() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
DECLARE
  old_row jsonb := pg_catalog.to_jsonb(OLD);
BEGIN
  -- A dump run replaces whole tables and keeps what it removes itself.
  IF pg_catalog.current_setting('{bulk}', true) = 'on' THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'UPDATE' THEN
    IF old_row = pg_catalog.to_jsonb(NEW) THEN
      RETURN NULL;
    END IF;
  END IF;
  INSERT INTO {s}.row_history (table_name, operation, old_row) VALUES (TG_TABLE_NAME, TG_OP, old_row);
  RETURN NULL;
END
$fn$;
CREATE OR REPLACE FUNCTION {s}.keep_truncated_rows() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
BEGIN
  IF pg_catalog.current_setting('{bulk}', true) = 'on' THEN
    RETURN NULL;
  END IF;
  EXECUTE pg_catalog.format(
    'INSERT INTO {s}.row_history (table_name, operation, old_row) SELECT %L, %L, pg_catalog.to_jsonb(t) FROM %I.%I AS t',
    TG_TABLE_NAME, 'TRUNCATE', TG_TABLE_SCHEMA, TG_TABLE_NAME);
  RETURN NULL;
END
$fn$;
-- Idempotent: adds the triggers a table lacks, ENABLE ALWAYS so the apply worker fires them.
CREATE OR REPLACE FUNCTION {s}.install_history_triggers() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
DECLARE
  t record;
  n integer := 0;
BEGIN
  FOR t IN
    SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
     WHERE ns.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t.oid AND tgname = 'mxstack_li_history') THEN
      IF t.relname IN ({skip}) THEN
        EXECUTE pg_catalog.format('CREATE TRIGGER mxstack_li_history AFTER DELETE ON public.%I FOR EACH ROW EXECUTE FUNCTION {s}.keep_row_history()', t.relname);
      ELSE
        EXECUTE pg_catalog.format('CREATE TRIGGER mxstack_li_history AFTER UPDATE OR DELETE ON public.%I FOR EACH ROW EXECUTE FUNCTION {s}.keep_row_history()', t.relname);
      END IF;
      EXECUTE pg_catalog.format('ALTER TABLE public.%I ENABLE ALWAYS TRIGGER mxstack_li_history', t.relname);
      n := n + 1;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t.oid AND tgname = 'mxstack_li_truncate') THEN
      EXECUTE pg_catalog.format('CREATE TRIGGER mxstack_li_truncate BEFORE TRUNCATE ON public.%I FOR EACH STATEMENT EXECUTE FUNCTION {s}.keep_truncated_rows()', t.relname);
      EXECUTE pg_catalog.format('ALTER TABLE public.%I ENABLE ALWAYS TRIGGER mxstack_li_truncate', t.relname);
    END IF;
  END LOOP;
  RETURN n;
END
$fn$;
"#
    )
}

/// What one pass over the replica did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UpgradeReport {
    pub new_tables: Vec<String>,
    pub statements: Vec<String>,
    pub history_triggers_added: i32,
    pub refreshed: bool,
    pub not_applied: Vec<String>,
    /// The subscription was moved to the current li_replicator password (after a rotation).
    pub connection_updated: bool,
}

/// Run the main-side setup (replica identities, event trigger, role grants, publication) as a
/// superuser of main. `replication_password` sets the role's password (local runs); the
/// Kubernetes operator manages it otherwise.
pub async fn prepare_main(
    admin: &Client,
    synapse_owner: &str,
    replication_password: Option<&str>,
) -> Result<(), ReplicaError> {
    admin
        .batch_execute(&mxstack_topology::li::main_setup_sql(
            synapse_owner,
            replication_password,
        ))
        .await?;
    Ok(())
}

/// Apply `d` in one transaction and record it, so a crash half-way leaves nothing half-done.
pub(crate) async fn apply_diff(replica: &mut Client, d: &SchemaDiff) -> Result<(), ReplicaError> {
    if d.is_empty() {
        return Ok(());
    }
    let tx = replica.transaction().await?;
    for stmt in &d.statements {
        tx.batch_execute(stmt)
            .await
            .map_err(|e| ReplicaError(format!("{}\n  in: {stmt}", ReplicaError::from(e))))?;
    }
    tx.execute(
        &format!(
            "INSERT INTO {LI_SCHEMA}.schema_upgrades (new_tables, statements) VALUES ($1, $2)"
        ),
        &[&d.new_tables, &d.statements],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The subscription named `$1` of this database. pg_subscription is shared by every database of
/// the cluster, so a name alone can match one per database (a second replica database on the LI
/// cluster, as the lag benchmark makes): never look one up by name only.
pub(crate) const THIS_SUBSCRIPTION: &str = "s.subname = $1 AND s.subdbid = \
     (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())";

/// `None`: no subscription yet; else whether it is enabled.
async fn subscription_enabled(replica: &Client, name: &str) -> Result<Option<bool>, ReplicaError> {
    Ok(replica
        .query_opt(
            &format!(
                "SELECT s.subenabled FROM pg_catalog.pg_subscription s WHERE {THIS_SUBSCRIPTION}"
            ),
            &[&name],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Bring the replica up to main: schema, history, subscription (created once), refresh.
/// Safe to run at any time and repeatedly; this is also `mxstack li upgrade-schema`.
///
/// `locker` is a second connection to the replica, used to hold new tables while they join the
/// subscription.
///
/// The subscription is paused (disabled) while new tables are created, and every call that
/// finds it paused, its own pause or one an earlier run left behind (an error, a crash, a
/// timeout), resumes it before returning, error or not: nothing but this function disables it,
/// so a disabled subscription never outlives one call.
///
/// A pass holds the re-attach lock shared for its whole length and does not run while
/// `mxstack li reattach` holds it: a pass would resume the subscription the re-attach keeps
/// disabled until its origin is moved (and the new slot would then skip main's transactions).
pub async fn sync_schema(
    main: &Client,
    replica: &mut Client,
    locker: &mut Client,
    config: &LiSyncConfig,
    main_password: &str,
) -> Result<UpgradeReport, ReplicaError> {
    let key = crate::bulk::Job::Reattach.lock_key();
    let free: bool = replica
        .query_one("SELECT pg_catalog.pg_try_advisory_lock_shared($1)", &[&key])
        .await?
        .get(0);
    if !free {
        return Err(ReplicaError(
            "a re-attach (`mxstack li reattach`) is running: the schema pass waits for it".into(),
        ));
    }
    let r = sync_schema_unlocked(main, replica, locker, config, main_password).await;
    replica
        .execute("SELECT pg_catalog.pg_advisory_unlock_shared($1)", &[&key])
        .await?;
    r
}

async fn sync_schema_unlocked(
    main: &Client,
    replica: &mut Client,
    locker: &mut Client,
    config: &LiSyncConfig,
    main_password: &str,
) -> Result<UpgradeReport, ReplicaError> {
    replica.batch_execute(&history_setup_sql()).await?;
    let main_schema = Schema::read(main).await?;
    let replica_schema = Schema::read(replica).await?;
    let d = diff(&main_schema, &replica_schema);
    let sub = &config.subscription;
    let joins_new = d
        .new_tables
        .iter()
        .any(|t| main_schema.tables.get(t).is_some_and(|t| !t.unlogged));
    let mut report = UpgradeReport {
        new_tables: d.new_tables.clone(),
        statements: d.statements.clone(),
        not_applied: d.not_applied.clone(),
        ..UpgradeReport::default()
    };
    let Some(enabled) = subscription_enabled(replica, &sub.name).await? else {
        report.history_triggers_added = apply_schema(main, replica, &d).await?;
        create_subscription(replica, config, main_password).await?;
        return Ok(report);
    };
    report.connection_updated = update_connection(replica, config, main_password).await?;
    // Left disabled by an earlier run: resumed below like our own pause.
    let mut paused = !enabled;
    let mut outcome = Ok(0);
    if enabled && joins_new {
        // No apply worker may see a new table before it is in the subscription (see `resume`).
        paused = true;
        outcome = set_enabled(replica, &sub.name, false).await.map(|()| 0);
    }
    if outcome.is_ok() {
        outcome = apply_schema(main, replica, &d).await;
    }
    if paused {
        report.refreshed = resume(main, replica, locker, &sub.name).await?;
    } else if let Some(drift) = subscription_drift(main, replica).await?.needs_refresh() {
        // A table on the replica the subscription never listed (only when something other
        // than li-sync enabled the subscription early): its earlier changes were skipped, so
        // copy its rows. A subscribed table main has dropped (Synapse's `_temp_*` scratch
        // tables, often while their initial copy runs, which then fails forever with "not
        // found on publisher"): the refresh takes it out of the subscription; its rows stay on
        // the replica.
        refresh(replica, &sub.name, drift.unsubscribed).await?;
        report.refreshed = true;
    }
    report.history_triggers_added = outcome?;
    Ok(report)
}

/// The additive schema difference, main's foreign keys and the history triggers; returns how
/// many tables got history triggers.
pub(crate) async fn apply_schema(
    main: &Client,
    replica: &mut Client,
    d: &SchemaDiff,
) -> Result<i32, ReplicaError> {
    apply_diff(replica, d).await?;
    record_foreign_keys(main, replica).await?;
    Ok(replica
        .query_one(
            &format!("SELECT {LI_SCHEMA}.install_history_triggers()"),
            &[],
        )
        .await?
        .get(0))
}

/// The subscription's connection to main, with `main_password`.
fn conninfo(config: &LiSyncConfig, main_password: &str) -> String {
    let sub = &config.subscription;
    format!(
        "host={} port={} dbname={} user={} password={} application_name={}",
        sub.main_host, sub.main_port, config.main.dbname, config.main.user, main_password, sub.name
    )
}

/// After `mxstack rotate li_replication_password` (docs/ROTATION.md) the subscription must
/// connect with the password li-sync now holds: PostgreSQL keeps the conninfo it was created
/// with. `ALTER SUBSCRIPTION ... CONNECTION` restarts the apply worker, which resumes from the
/// slot's confirmed position, so nothing is lost; done only when the conninfo differs, since
/// each change restarts the worker. Returns whether it changed.
async fn update_connection(
    replica: &Client,
    config: &LiSyncConfig,
    main_password: &str,
) -> Result<bool, ReplicaError> {
    let sub = &config.subscription;
    let current: Option<String> = replica
        .query_opt(
            &format!(
                "SELECT s.subconninfo FROM pg_catalog.pg_subscription s WHERE {THIS_SUBSCRIPTION}"
            ),
            &[&sub.name],
        )
        .await?
        .map(|r| r.get(0));
    let wanted = conninfo(config, main_password);
    if current.is_none() || current.as_deref() == Some(wanted.as_str()) {
        return Ok(false);
    }
    let alter = format!(
        "ALTER SUBSCRIPTION {} CONNECTION {}",
        ident(&sub.name),
        literal(&wanted),
    );
    execute_with_secret(replica, &alter).await.map_err(|e| {
        ReplicaError(format!(
            "ALTER SUBSCRIPTION {} CONNECTION failed: {}",
            sub.name,
            ReplicaError::from(e)
        ))
    })?;
    Ok(true)
}

async fn create_subscription(
    replica: &Client,
    config: &LiSyncConfig,
    main_password: &str,
) -> Result<(), ReplicaError> {
    let sub = &config.subscription;
    let conninfo = conninfo(config, main_password);
    // Not in a transaction block: it creates the slot on main.
    let create = format!(
        "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (copy_data = true, streaming = on, slot_name = {})",
        ident(&sub.name),
        literal(&conninfo),
        ident(&sub.publication),
        literal(&sub.name),
    );
    execute_with_secret(replica, &create).await.map_err(|e| {
        ReplicaError(format!(
            "CREATE SUBSCRIPTION {} failed: {}",
            sub.name,
            ReplicaError::from(e)
        ))
    })
}

/// Runs `statement`, which carries a password, with the server's statement logging off for it
/// (`mxstack_topology::pgsql`). Each part is its own query: a multi-statement query is one
/// transaction, and CREATE SUBSCRIPTION must run outside one.
pub async fn execute_with_secret(
    client: &Client,
    statement: &str,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(pgsql::QUIET).await?;
    let r = client.batch_execute(statement).await;
    let reset = client.batch_execute(pgsql::RESET).await;
    r.and(reset)
}

async fn refresh(replica: &Client, name: &str, copy_data: bool) -> Result<(), ReplicaError> {
    replica
        .batch_execute(&format!(
            "ALTER SUBSCRIPTION {} REFRESH PUBLICATION WITH (copy_data = {copy_data})",
            ident(name)
        ))
        .await?;
    Ok(())
}

/// Enable a paused subscription without losing a change; returns whether it refreshed.
///
/// Tables created on the replica while it was paused (published by main, present here, not yet
/// subscribed) were created after the slot's position, so every change to them is still in the
/// stream: they join with copy_data = false and are replayed change by change, their
/// UPDATEs and DELETEs kept in history (a snapshot copy would lose those). PostgreSQL skips
/// changes of a table that exists but is not subscribed, so the apply worker must not touch
/// them until the refresh: a SHARE lock (held by `locker`) blocks the worker's ROW EXCLUSIVE
/// open but not the refresh's ACCESS SHARE, and is taken before the subscription is enabled.
///
/// A published table the replica still lacks (the schema step failed) stops the apply worker
/// at its first change ("target relation does not exist"), which skips nothing, so without
/// tables to join the subscription is simply enabled. With both, it stays paused and the call
/// fails: the refresh would fail on the missing table, and enabling would skip the joining
/// tables' changes. The next call retries the schema first.
async fn resume(
    main: &Client,
    replica: &Client,
    locker: &mut Client,
    name: &str,
) -> Result<bool, ReplicaError> {
    let published = published_tables(main).await?;
    let present = replica_tables(replica).await?;
    let subscribed = subscribed_tables(replica).await?;
    let joining: Vec<&String> = published
        .iter()
        .filter(|t| present.contains(*t) && !subscribed.contains(*t))
        .collect();
    let missing: Vec<&String> = published.difference(&present).collect();
    if joining.is_empty() {
        set_enabled(replica, name, true).await?;
        return Ok(false);
    }
    if !missing.is_empty() {
        return Err(ReplicaError(format!(
            "subscription {name} stays paused: tables {} wait to join it, but main also has {} that \
             the replica lacks; li-sync retries at its next schema check (`mxstack li upgrade-schema` \
             retries now)",
            list(&joining),
            list(&missing)
        )));
    }
    let tables: Vec<String> = joining.iter().map(|t| qualified(t)).collect();
    let locker_tx = locker.transaction().await?;
    locker_tx
        .batch_execute(&format!("LOCK TABLE {} IN SHARE MODE", tables.join(", ")))
        .await?;
    set_enabled(replica, name, true).await?;
    // Should main create a table in between, the refresh fails on it; the subscription stays
    // enabled and the next check finds the joining tables unsubscribed and copies their rows
    // (the drift path): the rows are kept, their history of that moment is not.
    refresh(replica, name, false).await?;
    locker_tx.commit().await?;
    Ok(true)
}

/// After a re-attach: tables main publishes that the replica has but the subscription does not
/// list join it without a copy (their rows were absorbed from the slot's snapshot, and nothing
/// has written to main since). Returns their names.
pub(crate) async fn join_unsubscribed(
    main: &Client,
    replica: &Client,
    name: &str,
) -> Result<Vec<String>, ReplicaError> {
    let published = published_tables(main).await?;
    let present = replica_tables(replica).await?;
    let subscribed = subscribed_tables(replica).await?;
    let joining: Vec<String> = published
        .iter()
        .filter(|t| present.contains(*t) && !subscribed.contains(*t))
        .cloned()
        .collect();
    if !joining.is_empty() {
        refresh(replica, name, false).await?;
    }
    Ok(joining)
}

fn list(tables: &[&String]) -> String {
    const SHOWN: usize = 5;
    let mut s = tables
        .iter()
        .take(SHOWN)
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if tables.len() > SHOWN {
        s.push_str(&format!(" and {} more", tables.len() - SHOWN));
    }
    s
}

/// Enable or disable the subscription; on disable, wait until its apply worker has exited.
///
/// pg_stat_subscription has a row for the apply worker (relid NULL) and one for each table-sync
/// worker of an initial copy, so the rows are counted, never assumed to be one. Only the apply
/// worker is waited for: it is the one that would skip a new table's changes. A table-sync
/// worker applies changes of its own table alone (and stops at a relation the replica lacks),
/// and one in the middle of a long COPY notices DISABLE only when the COPY ends, hours later on
/// a large database.
pub(crate) async fn set_enabled(
    replica: &Client,
    name: &str,
    enabled: bool,
) -> Result<(), ReplicaError> {
    replica
        .batch_execute(&format!(
            "ALTER SUBSCRIPTION {} {}",
            ident(name),
            if enabled { "ENABLE" } else { "DISABLE" }
        ))
        .await?;
    if enabled {
        return Ok(());
    }
    for _ in 0..DISABLE_WAIT_STEPS {
        if running_workers(replica, name).await?.apply == 0 {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(ReplicaError(format!(
        "the apply worker of subscription {name} did not stop within {} s after DISABLE",
        DISABLE_WAIT_STEPS / 20
    )))
}

/// 50 ms steps: 30 s (an apply worker finishes the transaction it is applying first).
const DISABLE_WAIT_STEPS: u32 = 600;

/// Processes of a subscription, from pg_stat_subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Workers {
    pub apply: i64,
    pub table_sync: i64,
}

pub async fn running_workers(replica: &Client, name: &str) -> Result<Workers, ReplicaError> {
    let row = replica
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE w.relid IS NULL), count(*) FILTER (WHERE w.relid IS NOT NULL)
                   FROM pg_catalog.pg_stat_subscription w JOIN pg_catalog.pg_subscription s ON s.oid = w.subid
                  WHERE {THIS_SUBSCRIPTION} AND w.pid IS NOT NULL"
            ),
            &[&name],
        )
        .await?;
    Ok(Workers {
        apply: row.get(0),
        table_sync: row.get(1),
    })
}

/// How the subscription's table list differs from main's tables.
#[derive(Debug, Clone, Copy, Default)]
struct Drift {
    /// Main has a table the subscription does not list yet.
    unsubscribed: bool,
    /// The subscription lists a table main no longer has.
    stale: bool,
}

impl Drift {
    fn needs_refresh(self) -> Option<Drift> {
        (self.unsubscribed || self.stale).then_some(self)
    }
}

async fn subscription_drift(main: &Client, replica: &Client) -> Result<Drift, ReplicaError> {
    let published = published_tables(main).await?;
    let subscribed = subscribed_tables(replica).await?;
    Ok(Drift {
        unsubscribed: published.difference(&subscribed).next().is_some(),
        stale: subscribed.difference(&published).next().is_some(),
    })
}

type Names = std::collections::BTreeSet<String>;

async fn names(db: &Client, sql: &str) -> Result<Names, ReplicaError> {
    Ok(db
        .query(sql, &[])
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect())
}

/// Main's tables in the FOR ALL TABLES publication (unlogged ones are not published).
async fn published_tables(main: &Client) -> Result<Names, ReplicaError> {
    names(
        main,
        "SELECT c.relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
            AND c.relpersistence = 'p'",
    )
    .await
}

async fn replica_tables(replica: &Client) -> Result<Names, ReplicaError> {
    names(
        replica,
        "SELECT c.relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
    )
    .await
}

async fn subscribed_tables(replica: &Client) -> Result<Names, ReplicaError> {
    names(
        replica,
        "SELECT c.relname::text FROM pg_catalog.pg_subscription_rel r
           JOIN pg_catalog.pg_class c ON c.oid = r.srrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public'",
    )
    .await
}

/// Does the replica lack anything main has?
pub async fn schema_behind(main: &Client, replica: &Client) -> Result<bool, ReplicaError> {
    schema_behind_of(&Schema::read(main).await?, main, replica).await
}

/// [`schema_behind`] when main's schema has just been read.
pub async fn schema_behind_of(
    main_schema: &Schema,
    main: &Client,
    replica: &Client,
) -> Result<bool, ReplicaError> {
    let d = diff(main_schema, &Schema::read(replica).await?);
    let drift = subscription_drift(main, replica).await?;
    Ok(!d.is_empty() || drift.unsubscribed || drift.stale)
}

/// Record main's foreign keys on the replica (`mxstack_li.foreign_keys`), replacing the set.
pub async fn record_foreign_keys(
    main: &impl tokio_postgres::GenericClient,
    replica: &mut Client,
) -> Result<(), ReplicaError> {
    let rows = main
        .query(
            "SELECT c.relname::text, con.conname::text, pg_catalog.pg_get_constraintdef(con.oid)
               FROM pg_catalog.pg_constraint con
               JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND con.contype = 'f'",
            &[],
        )
        .await?;
    let tx = replica.transaction().await?;
    tx.execute(&format!("DELETE FROM {LI_SCHEMA}.foreign_keys"), &[])
        .await?;
    for r in &rows {
        let (table, name): (String, String) = (r.get(0), r.get(1));
        // NULL: dropped on main after the query's snapshot; nothing to record.
        let Some(def) = r.get::<_, Option<String>>(2) else {
            continue;
        };
        tx.execute(
            &format!(
                "INSERT INTO {LI_SCHEMA}.foreign_keys (table_name, name, def) VALUES ($1, $2, $3)"
            ),
            &[&table, &name, &def],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Logical mode: copy main's sequence values to the replica (never backwards) and record main's
/// WAL position read just before them. Replication does not carry sequences; the working copy
/// needs them (Synapse refuses to start when a sequence is behind its table), and an
/// evidence copy should have them anyway. Returns how many sequences moved.
pub async fn copy_sequences(main: &Client, replica: &Client) -> Result<i64, ReplicaError> {
    let lsn: String = main
        .query_one("SELECT pg_catalog.pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    let values = crate::bulk::sequence_values(main).await?;
    let moved = crate::bulk::set_sequences(replica, &values, true).await?;
    replica
        .execute(
            &format!(
                "INSERT INTO {LI_SCHEMA}.sequence_sync (id, main_lsn, copied_at)
                 VALUES (1, $1::text::pg_lsn, pg_catalog.clock_timestamp())
                 ON CONFLICT (id) DO UPDATE SET main_lsn = EXCLUDED.main_lsn, copied_at = EXCLUDED.copied_at"
            ),
            &[&lsn],
        )
        .await?;
    Ok(moved)
}

/// For tests and tools: the qualified name of a history-bearing table.
pub fn table(name: &str) -> String {
    qualified(name)
}
