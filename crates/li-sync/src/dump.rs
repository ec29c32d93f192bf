//! Dump mode (`li.sync: dump`, `mxstack li dump`): for sites that forbid logical replication,
//! the replica is refreshed from a consistent snapshot of main on a schedule, like the seed's
//! pg_dump/pg_restore job, with three differences:
//!
//! - nothing is lost between two runs' copies: a row of the previous copy that is not in main's
//!   snapshot (deleted, or changed, on main since) is kept in `mxstack_li.row_history` as
//!   `REMOVED` before the table is replaced. What happened *between* two snapshots (a row
//!   written and deleted in between) cannot be seen; that is what logical mode is for;
//! - the swap is one transaction: readers of the replica see the previous copy until the new
//!   one commits, and a failed run changes nothing (the seed's restore overwrote in place);
//! - a lock that dies with its holder, and a run record (`mxstack_li.sync_runs`) that is the
//!   checkpoint and the status, instead of a lock file and a JSON file on a pod's disk.
//!
//! No pg_dump binary: main is read in one REPEATABLE READ, READ ONLY transaction (the snapshot
//! pg_dump takes) with binary COPY, as the read-only `li_replicator`, and streamed into the
//! replica, so the job needs no PostgreSQL client tools matching the server version.

use std::time::Instant;

use mxstack_topology::li::{HISTORY_SKIPS_UPDATES_OF, LI_SCHEMA};
use tokio_postgres::IsolationLevel;

use crate::bulk::{self, Job, RunFigures};
use crate::config::LiSyncConfig;
use crate::daemon::connect;
use crate::replica::{apply_diff, history_setup_sql, ReplicaError};
use crate::schema::{diff, ident, literal, qualified, Schema};

/// What one dump run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DumpReport {
    pub run_id: i64,
    #[serde(flatten)]
    pub figures: RunFigures,
    pub schema_statements: usize,
    pub sequences_set: i64,
    pub seconds: f64,
}

/// Session setting the history triggers obey: a dump replaces whole tables and records what it
/// removes itself, so triggers left from logical mode must not copy every truncated row again.
pub const BULK_SETTING: &str = "mxstack_li.bulk";

/// Run one dump sync now. `progress` gets a line per table.
pub async fn run(
    config: &LiSyncConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<DumpReport, ReplicaError> {
    let started = Instant::now();
    let mut replica = connect(&config.replica).await?;
    replica.batch_execute(&bulk::runs_setup_sql()).await?;
    bulk::lock(&replica, Job::Dump).await?;
    // EXISTS: a database may hold several subscriptions.
    if replica
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s JOIN pg_catalog.pg_database d ON d.oid = s.subdbid
                             WHERE d.datname = pg_catalog.current_database())",
            &[],
        )
        .await?
        .get::<_, bool>(0)
    {
        return Err(ReplicaError(format!(
            "{} on {}:{} has a subscription (logical mode): a dump would fight the apply worker. \
             Give dump mode its own replica database, or drop the subscription first \
             (DROP SUBSCRIPTION {}) if the site moved to dump mode",
            config.replica.dbname,
            config.replica.host,
            config.replica.port,
            config.subscription.name
        )));
    }
    let run_id = bulk::start_run(&replica, Job::Dump).await?;
    match dump(config, &mut replica, run_id, progress).await {
        Ok(mut report) => {
            report.seconds = started.elapsed().as_secs_f64();
            Ok(report)
        }
        Err(e) => {
            // The replica is unchanged (the transaction rolled back); say so in the record.
            let _ = bulk::fail_run(&replica, run_id, &e.0).await;
            Err(e)
        }
    }
}

/// Holds `name` for the rest of the snapshot (ACCESS SHARE, as pg_dump does), or says it is gone.
/// Synapse drops scratch tables of its background updates (`_temp_populate_user_directory_*`)
/// at any time: one listed when the snapshot began can be dropped before its copy, and the copy
/// would then fail the whole dump.
async fn lock_if_present(
    snapshot: &tokio_postgres::Transaction<'_>,
    name: &str,
) -> Result<bool, ReplicaError> {
    let t = qualified(name);
    snapshot
        .batch_execute(&format!(
            "DO $mxstack$ BEGIN
               IF pg_catalog.to_regclass({lit}) IS NOT NULL THEN
                 LOCK TABLE {t} IN ACCESS SHARE MODE;
               END IF;
             EXCEPTION WHEN undefined_table THEN NULL;
             END $mxstack$",
            lit = literal(&t)
        ))
        .await?;
    let present: bool = snapshot
        .query_one("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[&t])
        .await?
        .get(0);
    Ok(present)
}

async fn dump(
    config: &LiSyncConfig,
    replica: &mut tokio_postgres::Client,
    run_id: i64,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<DumpReport, ReplicaError> {
    replica.batch_execute(&history_setup_sql()).await?;
    let mut main = connect(&config.main).await?;
    let snapshot = main
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    // The first statement fixes the snapshot; sequences read after it are at least every id
    // the snapshot contains.
    let main_lsn: String = snapshot
        .query_one("SELECT pg_catalog.pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    let main_schema = Schema::read(&snapshot).await?;
    let sequences = bulk::sequence_values(&snapshot).await?;

    // Additive schema first, in its own recorded transaction (as in logical mode).
    let d = diff(&main_schema, &Schema::read(replica).await?);
    apply_diff(replica, &d).await?;
    crate::replica::record_foreign_keys(&snapshot, replica).await?;

    let tx = replica.transaction().await?;
    tx.batch_execute(&format!("SET LOCAL {BULK_SETTING} = 'on'"))
        .await?;
    let mut f = absorb_tables(&snapshot, &tx, &main_schema, "dump", progress).await?;
    f.main_lsn = Some(main_lsn);
    let sequences_set = bulk::set_sequences(&tx, &sequences, true).await?;
    bulk::finish_run(&tx, run_id, &f).await?;
    tx.commit().await?;
    snapshot.commit().await?;
    Ok(DumpReport {
        run_id,
        figures: f,
        schema_statements: d.statements.len(),
        sequences_set,
        seconds: 0.0,
    })
}

/// Makes every table of `main_schema` on the replica equal main's table in `snapshot`, in the
/// replica's transaction `tx` (with [`BULK_SETTING`] on): main's rows are loaded into a
/// temporary table, every row of the replica main does not have is kept in
/// `mxstack_li.row_history` as `REMOVED`, and the table is replaced only if it differs. Dump
/// mode runs it on every sync; `reattach` once after a restore, so the rows a rewound main no
/// longer has stay on the LI side.
pub(crate) async fn absorb_tables(
    snapshot: &tokio_postgres::Transaction<'_>,
    tx: &tokio_postgres::Transaction<'_>,
    main_schema: &Schema,
    job: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<RunFigures, ReplicaError> {
    let mut f = RunFigures {
        tables: main_schema.tables.values().filter(|t| !t.unlogged).count() as i32,
        ..RunFigures::default()
    };
    let n = main_schema.tables.len();
    for (i, (name, table)) in main_schema.tables.iter().enumerate() {
        let columns = bulk::copied_columns(table);
        // Unlogged tables hold transient locks only and are never published.
        if columns.is_empty() || table.unlogged {
            continue;
        }
        if !lock_if_present(snapshot, name).await? {
            progress(&format!(
                "{job}: [{}/{n}] {name}: dropped on main during the dump, skipped",
                i + 1
            ));
            continue;
        }
        let typed: Vec<String> = table
            .columns
            .iter()
            .filter(|c| c.generated.is_none())
            .map(|c| format!("{} {}", ident(&c.name), c.type_sql))
            .collect();
        tx.batch_execute(&format!(
            "DROP TABLE IF EXISTS pg_temp.mxstack_incoming;
             CREATE TEMP TABLE mxstack_incoming ({}) ON COMMIT DROP",
            typed.join(", ")
        ))
        .await?;
        let (rows, bytes) =
            bulk::copy_table(snapshot, name, &columns, tx, "pg_temp.mxstack_incoming").await?;
        f.rows_copied += rows as i64;
        f.bytes_copied += bytes as i64;
        let cols = columns.join(", ");
        let t = qualified(name);
        // Rows of the previous copy main no longer has, as a multiset (keyless tables may hold
        // equal rows), compared over main's columns as jsonb (every type has jsonb equality).
        let gone = format!(
            "SELECT pg_catalog.to_jsonb(q) AS j FROM (SELECT {cols} FROM {t}) q
             EXCEPT ALL
             SELECT pg_catalog.to_jsonb(s) FROM pg_temp.mxstack_incoming s"
        );
        // Bookkeeping rewritten all the time (locks, stream positions, background-update
        // progress) carries no user content: compared, never kept (as in logical mode).
        let keep = !HISTORY_SKIPS_UPDATES_OF.contains(&name.as_str());
        let removed = if keep {
            tx.execute(
                &format!(
                    "INSERT INTO {LI_SCHEMA}.row_history (table_name, operation, old_row)
                     SELECT {}, 'REMOVED', j FROM ({gone}) gone",
                    literal(name)
                ),
                &[],
            )
            .await?
        } else {
            tx.query_one(&format!("SELECT count(*) FROM ({gone}) gone"), &[])
                .await?
                .get::<_, i64>(0) as u64
        };
        let current: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .await?
            .get(0);
        // Nothing removed and as many rows: the copy already equals main's table.
        let changed = removed > 0 || current != rows as i64;
        if changed {
            tx.batch_execute(&format!(
                "TRUNCATE {t};
                 INSERT INTO {t} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM pg_temp.mxstack_incoming"
            ))
            .await?;
            f.tables_changed += 1;
        }
        if keep {
            f.history_rows += removed as i64;
        }
        progress(&format!(
            "{job}: [{}/{n}] {name}: {rows} rows{}{}",
            i + 1,
            if changed { ", replaced" } else { ", unchanged" },
            if removed > 0 && keep {
                format!(", {removed} kept in history")
            } else {
                String::new()
            }
        ));
    }
    Ok(f)
}
