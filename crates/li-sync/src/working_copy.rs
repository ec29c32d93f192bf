//! The browsing stack's working copy (`mxstack li refresh-working-copy`): Synapse LI, Element
//! LI and Synapse Admin LI run on a separate database in the LI cluster, refreshed from the
//! replica on a schedule or on demand, so their own writes (logins, read markers, admin
//! actions) never touch the evidence copy and never collide with replication.
//!
//! A refresh reads the replica in one snapshot and replaces the working copy's tables in one
//! transaction (Synapse LI sees the previous copy until it commits). The database itself is
//! never dropped (the CloudNativePG Database object owns it), and everything the refresh creates
//! belongs to Synapse LI's role. Two things are not a plain copy:
//!
//! - sequences: logical replication does not carry them, and Synapse refuses to start when a
//!   sequence is behind its table. li-sync copies main's values to the replica with main's WAL
//!   position read first; the refresh waits until that position covers everything its snapshot
//!   applied, then copies the values (dump mode sets them with each dump);
//! - credentials: main's access and refresh tokens are removed, so a token of the production
//!   server never works on the LI instance. Users, devices and keys stay (they are evidence).

use std::time::{Duration, Instant};

use tokio_postgres::IsolationLevel;

use crate::bulk::{self, Job, RunFigures};
use crate::config::{Database, LiSyncConfig};
use crate::daemon::connect;
use crate::replica::{ReplicaError, THIS_SUBSCRIPTION};
use crate::schema::{diff, ident, qualified, Schema};
use mxstack_topology::li::LI_SCHEMA;

/// Tables holding credentials of main's sessions; emptied in the working copy.
pub const SCRUBBED_TABLES: [&str; 2] = ["access_tokens", "refresh_tokens"];

/// How long a refresh waits for li-sync to copy main's sequence values past its snapshot.
const SEQUENCE_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RefreshReport {
    pub run_id: i64,
    #[serde(flatten)]
    pub figures: RunFigures,
    pub schema_statements: usize,
    pub credentials_removed: u64,
    pub sequences_set: i64,
    pub seconds: f64,
}

/// Refresh the working copy now. `progress` gets a line per table.
pub async fn refresh(
    config: &LiSyncConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<RefreshReport, ReplicaError> {
    let Some(wc) = &config.working_copy else {
        return Err(ReplicaError(
            "li-sync's config has no working_copy section (is feature li on in mxstack.yaml?)"
                .into(),
        ));
    };
    let started = Instant::now();
    let work_db = Database {
        dbname: wc.dbname.clone(),
        ..config.replica.clone()
    };
    let replica = connect(&config.replica).await?;
    replica.batch_execute(&bulk::runs_setup_sql()).await?;
    let mut work = connect(&work_db).await?;
    bulk::lock(&work, Job::WorkingCopy).await?;
    let run_id = bulk::start_run(&replica, Job::WorkingCopy).await?;
    match copy(config, &replica, &mut work, &wc.owner, run_id, progress).await {
        Ok(mut r) => {
            bulk::finish_run(&replica, run_id, &r.figures).await?;
            r.seconds = started.elapsed().as_secs_f64();
            Ok(r)
        }
        Err(e) => {
            let _ = bulk::fail_run(&replica, run_id, &e.0).await;
            Err(e)
        }
    }
}

async fn copy(
    config: &LiSyncConfig,
    replica: &tokio_postgres::Client,
    work: &mut tokio_postgres::Client,
    owner: &str,
    run_id: i64,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<RefreshReport, ReplicaError> {
    wait_for_replica(config, replica).await?;
    wait_for_initial_copy(replica, &config.subscription.name).await?;
    let mut source_client = connect(&config.replica).await?;
    let source = source_client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    // The first statement fixes the snapshot; the position is read after it, so it is at least
    // what the snapshot contains.
    let applied: Option<String> = source
        .query_opt(
            &format!(
                "SELECT o.remote_lsn::text FROM pg_catalog.pg_replication_origin_status o
                   JOIN pg_catalog.pg_subscription s ON o.external_id = 'pg_' || s.oid::text
                  WHERE {THIS_SUBSCRIPTION}"
            ),
            &[&config.subscription.name],
        )
        .await?
        .and_then(|r| r.get(0));
    if let Some(applied) = &applied {
        wait_for_sequences(replica, applied).await?;
    }
    let schema = Schema::read(&source).await?;
    let sequences = bulk::sequence_values(replica).await?;

    // Everything below runs as Synapse LI's role: it owns what is created. Foreign keys (a
    // working copy whose schema Synapse LI created itself, before the first refresh, has them)
    // are not checked while tables are refilled one by one: the rows come from one snapshot of
    // a database that satisfied them. Setting that takes the superuser, before SET ROLE.
    work.batch_execute(&format!(
        "SET session_replication_role = replica; SET ROLE {}",
        ident(owner)
    ))
    .await?;
    let d = diff(&schema, &Schema::read(&*work).await?);
    let tx = work.transaction().await?;
    for stmt in &d.statements {
        tx.batch_execute(stmt)
            .await
            .map_err(|e| ReplicaError(format!("{}\n  in: {stmt}", ReplicaError::from(e))))?;
    }
    let tables: Vec<&String> = schema.tables.keys().collect();
    if !tables.is_empty() {
        let list: Vec<String> = tables.iter().map(|t| qualified(t)).collect();
        tx.batch_execute(&format!("TRUNCATE {}", list.join(", ")))
            .await?;
    }
    let mut f = RunFigures {
        tables: tables.len() as i32,
        tables_changed: tables.len() as i32,
        main_lsn: applied,
        ..RunFigures::default()
    };
    let n = tables.len();
    for (i, (name, table)) in schema.tables.iter().enumerate() {
        let columns = bulk::copied_columns(table);
        // Unlogged tables (locks) start empty.
        if columns.is_empty() || table.unlogged {
            continue;
        }
        let (rows, bytes) =
            bulk::copy_table(&source, name, &columns, &tx, &qualified(name)).await?;
        f.rows_copied += rows as i64;
        f.bytes_copied += bytes as i64;
        progress(&format!(
            "working copy: [{}/{n}] {name}: {rows} rows",
            i + 1
        ));
    }
    // Main's foreign keys, NOT VALID (the rows come from main's tables, so they hold; Synapse LI's
    // background updates validate some of them and fail when they do not exist).
    let have: std::collections::BTreeSet<(String, String)> = tx
        .query(
            "SELECT c.relname::text, con.conname::text FROM pg_catalog.pg_constraint con
               JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND con.contype = 'f'",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let recorded = source
        .query_one(
            &format!("SELECT pg_catalog.to_regclass('{LI_SCHEMA}.foreign_keys') IS NOT NULL"),
            &[],
        )
        .await?
        .get::<_, bool>(0);
    if recorded {
        for r in source
            .query(
                &format!(
                    "SELECT table_name, name, def FROM {LI_SCHEMA}.foreign_keys ORDER BY 1, 2"
                ),
                &[],
            )
            .await?
        {
            let (table, name, def): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            // Not on the unlogged lock tables: with main's pair of foreign keys between them
            // (one deferred), Synapse LI's read-write locks were never granted and a room's
            // /messages hung; they start empty anyway.
            let logged = schema.tables.get(&table).is_some_and(|t| !t.unlogged);
            if have.contains(&(table.clone(), name.clone())) || !logged {
                continue;
            }
            let def = def.strip_suffix(" NOT VALID").unwrap_or(&def);
            tx.batch_execute(&format!(
                "ALTER TABLE {} ADD CONSTRAINT {} {def} NOT VALID",
                qualified(&table),
                ident(&name)
            ))
            .await
            .map_err(|e| {
                ReplicaError(format!(
                    "{}\n  adding foreign key {name} on {table}",
                    ReplicaError::from(e)
                ))
            })?;
        }
    }
    let mut credentials_removed = 0;
    for t in SCRUBBED_TABLES {
        if schema.tables.contains_key(t) {
            credentials_removed += tx
                .execute(&format!("DELETE FROM {}", qualified(t)), &[])
                .await?;
        }
    }
    let sequences_set = bulk::set_sequences(&tx, &sequences, false).await?;
    tx.commit().await?;
    source.commit().await?;
    Ok(RefreshReport {
        run_id,
        figures: f,
        schema_statements: d.statements.len(),
        credentials_removed,
        sequences_set,
        seconds: 0.0,
    })
}

/// The replica must hold a copy before it is copied: in logical mode the subscription exists
/// (li-sync creates it seconds after it starts), in dump mode a dump has succeeded.
async fn wait_for_replica(
    config: &LiSyncConfig,
    replica: &tokio_postgres::Client,
) -> Result<(), ReplicaError> {
    let start = Instant::now();
    loop {
        let ready = if config.mode == crate::config::SyncMode::Dump {
            bulk::last_run(replica, Job::Dump)
                .await?
                .is_some_and(|r| r.last_success_unix.is_some())
        } else {
            replica
                .query_opt(
                    &format!(
                        "SELECT 1 FROM pg_catalog.pg_subscription s WHERE {THIS_SUBSCRIPTION}"
                    ),
                    &[&config.subscription.name],
                )
                .await?
                .is_some()
        };
        if ready {
            return Ok(());
        }
        if start.elapsed() > SEQUENCE_WAIT * 2 {
            return Err(ReplicaError(format!(
                "the replica is empty after {} s: {}",
                (SEQUENCE_WAIT * 2).as_secs(),
                if config.mode == crate::config::SyncMode::Dump {
                    "no dump run has succeeded yet (`mxstack li dump`)".to_string()
                } else {
                    format!(
                        "no subscription {} yet (li-sync creates it once main's schema is copied; is `mxstack serve li-sync` running?)",
                        config.subscription.name
                    )
                }
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Logical mode: a table still in its initial copy holds part of its rows; wait until every
/// table is streaming (a new replica copies for a while after `mxstack up`).
async fn wait_for_initial_copy(
    replica: &tokio_postgres::Client,
    subscription: &str,
) -> Result<(), ReplicaError> {
    let start = Instant::now();
    loop {
        let copying: i64 = replica
            .query_one(
                "SELECT count(*) FROM pg_catalog.pg_subscription_rel r
                   JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid
                  WHERE s.subname = $1 AND r.srsubstate <> 'r'",
                &[&subscription],
            )
            .await?
            .get(0);
        if copying == 0 {
            return Ok(());
        }
        if start.elapsed() > SEQUENCE_WAIT {
            return Err(ReplicaError(format!(
                "{copying} tables of the replica are still in their initial copy after {} s; try again when `mxstack li status` shows none",
                SEQUENCE_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Wait until li-sync has copied main's sequence values from a point at or after `applied`
/// (main's WAL position the replica had applied when the snapshot was taken).
async fn wait_for_sequences(
    replica: &tokio_postgres::Client,
    applied: &str,
) -> Result<(), ReplicaError> {
    let start = Instant::now();
    loop {
        let covered = replica
            .query_opt(
                &format!(
                    "SELECT main_lsn >= $1::text::pg_lsn FROM {LI_SCHEMA}.sequence_sync WHERE id = 1"
                ),
                &[&applied],
            )
            .await?
            .is_some_and(|r| r.get::<_, bool>(0));
        if covered {
            return Ok(());
        }
        if start.elapsed() > SEQUENCE_WAIT {
            return Err(ReplicaError(format!(
                "main's sequence values on the replica are older than its data (applied up to {applied}) \
                 after {} s: li-sync copies them every status interval; is `mxstack serve li-sync` running?",
                SEQUENCE_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
