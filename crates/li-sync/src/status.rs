//! The state of the LI data path, read from both databases (nothing is written): subscription,
//! lag, apply errors, slot retention, schema, history and media ledgers, table counts.

use serde::Serialize;
use tokio_postgres::Client;

use crate::config::LiSyncConfig;
use crate::media::MediaSyncReport;
use crate::replica::{ReplicaError, THIS_SUBSCRIPTION};
use crate::schema::{qualified, Schema};

/// The main tables whose row counts `mxstack li status` compares.
pub const COUNTED_TABLES: [&str; 12] = [
    "events",
    "event_json",
    "redactions",
    "rooms",
    "users",
    "room_memberships",
    "state_events",
    "current_state_events",
    "event_edges",
    "receipts_linearized",
    "local_media_repository",
    "profiles",
];

#[derive(Debug, Clone, Serialize)]
pub struct TableCount {
    pub table: String,
    pub main: i64,
    pub replica: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LiStatus {
    pub mode: String,
    /// Whether the subscription exists on the replica.
    pub subscribed: bool,
    pub subscription_enabled: bool,
    /// An apply worker is running (false while it restarts after an error).
    pub apply_worker_running: bool,
    /// Table-sync workers running (each copies one table of an initial copy).
    pub table_sync_workers: i64,
    /// Seconds the replica is behind: 0 when it has confirmed everything main has written,
    /// else main's measured replay lag for the subscription.
    pub lag_seconds: Option<f64>,
    /// WAL main has written that the replica has not confirmed.
    pub lag_bytes: Option<i64>,
    /// WAL main keeps for the slot (what an outage of the replica costs on main's disk).
    pub slot_retained_bytes: Option<i64>,
    pub slot_active: bool,
    /// Subscribed, but main has no slot of that name: main was restored from a backup (slots
    /// are in none) and `mxstack li reattach` has not run.
    pub slot_missing: bool,
    pub apply_errors: i64,
    pub sync_errors: i64,
    /// Tables still in their initial copy.
    pub tables_syncing: Vec<String>,
    /// Tables on main an UPDATE/DELETE would fail on (should always be empty).
    pub tables_without_identity: Vec<String>,
    /// Main has tables or columns the replica lacks (li-sync applies them on its next check).
    pub schema_behind: bool,
    /// Rows kept in the replica's history (from the id sequence; see `collect`).
    pub history_rows: i64,
    pub schema_upgrades: i64,
    pub media: Option<MediaSyncReport>,
    /// Dump mode: the newest dump run (its record is the checkpoint).
    pub last_dump: Option<crate::bulk::RunStatus>,
    /// The newest working-copy refresh.
    pub last_working_copy: Option<crate::bulk::RunStatus>,
    pub counts: Vec<TableCount>,
    /// When this status was collected (Unix seconds): `mxstack verify` reads a stale one as a
    /// replica (or main) that stopped answering.
    pub collected_at_unix: f64,
}

impl LiStatus {
    /// Why tables of the initial copy cannot progress right now, if they cannot: table-sync
    /// workers are started by the apply worker, which runs only while the subscription is
    /// enabled. (A slow copy of a large table is progress; this is the stopped kind.)
    pub fn initial_copy_stalled(&self) -> Option<&'static str> {
        if self.tables_syncing.is_empty() {
            return None;
        }
        if !self.subscription_enabled {
            Some("the subscription is disabled")
        } else if !self.apply_worker_running && self.table_sync_workers == 0 {
            Some("no apply or table-sync worker runs (see the LI PostgreSQL log)")
        } else {
            None
        }
    }
}

async fn one_i64(db: &Client, sql: &str) -> Result<i64, ReplicaError> {
    Ok(db.query_one(sql, &[]).await?.get(0))
}

async fn table_exists(db: &Client, schema: &str, table: &str) -> Result<bool, ReplicaError> {
    Ok(db
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )
        .await?
        .is_some())
}

/// Collect the status. `with_counts` adds the row-count comparison (a scan of each table).
pub async fn collect(
    main: &Client,
    replica: &Client,
    config: &LiSyncConfig,
    with_counts: bool,
) -> Result<LiStatus, ReplicaError> {
    let sub = &config.subscription.name;
    let mut s = LiStatus {
        mode: format!("{:?}", config.mode).to_lowercase(),
        ..LiStatus::default()
    };
    if let Some(row) = replica
        .query_opt(
            &format!(
                "SELECT s.subenabled,
                        coalesce(st.apply_error_count, 0), coalesce(st.sync_error_count, 0)
                   FROM pg_catalog.pg_subscription s
                   LEFT JOIN pg_catalog.pg_stat_subscription_stats st ON st.subid = s.oid
                  WHERE {THIS_SUBSCRIPTION}"
            ),
            &[sub],
        )
        .await?
    {
        s.subscribed = true;
        s.subscription_enabled = row.get(0);
        s.apply_errors = row.get(1);
        s.sync_errors = row.get(2);
        let workers = crate::replica::running_workers(replica, sub).await?;
        s.apply_worker_running = workers.apply > 0;
        s.table_sync_workers = workers.table_sync;
        s.tables_syncing = replica
            .query(
                "SELECT c.relname::text FROM pg_catalog.pg_subscription_rel r
                   JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid
                   JOIN pg_catalog.pg_class c ON c.oid = r.srrelid
                  WHERE s.subname = $1 AND r.srsubstate <> 'r' ORDER BY 1",
                &[sub],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
    }
    let slot = main
        .query_opt(
            "SELECT sl.active,
                    pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), sl.confirmed_flush_lsn)::bigint,
                    pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), sl.restart_lsn)::bigint,
                    (SELECT extract(epoch FROM r.replay_lag)::float8 FROM pg_catalog.pg_stat_replication r
                      WHERE r.application_name = sl.slot_name ORDER BY r.backend_start DESC LIMIT 1)
               FROM pg_catalog.pg_replication_slots sl WHERE sl.slot_name = $1",
            &[sub],
        )
        .await?;
    s.slot_missing = s.subscribed && slot.is_none();
    if let Some(row) = slot {
        s.slot_active = row.get(0);
        s.lag_bytes = row.get(1);
        s.slot_retained_bytes = row.get(2);
        let replay_lag: Option<f64> = row.get(3);
        s.lag_seconds = match (s.lag_bytes, replay_lag) {
            (Some(b), _) if b <= 0 => Some(0.0),
            (_, Some(l)) => Some(l),
            // Behind, but main has no measurement (no walsender): unknown, not zero.
            _ => None,
        };
    }
    let main_schema = Schema::read(main).await?;
    s.tables_without_identity = main_schema.tables_without_identity();
    s.schema_behind = crate::replica::schema_behind_of(&main_schema, main, replica).await?;
    if table_exists(replica, "mxstack_li", "row_history").await? {
        // Every tick: the highest id (an index lookup; rows are never deleted, so it is the
        // count up to ids of rolled-back apply transactions), not a scan of a growing table.
        s.history_rows = one_i64(
            replica,
            "SELECT coalesce(max(id), 0) FROM mxstack_li.row_history",
        )
        .await?;
        s.schema_upgrades =
            one_i64(replica, "SELECT count(*) FROM mxstack_li.schema_upgrades").await?;
    }
    if table_exists(replica, "mxstack_li", "sync_runs").await? {
        s.last_dump = crate::bulk::last_run(replica, crate::bulk::Job::Dump).await?;
        s.last_working_copy = crate::bulk::last_run(replica, crate::bulk::Job::WorkingCopy).await?;
    }
    if table_exists(replica, "mxstack_li", "media_sync_runs").await? {
        s.media = crate::media::last_run(replica)
            .await
            .map_err(|e| ReplicaError(e.to_string()))?;
    }
    if with_counts {
        for table in COUNTED_TABLES {
            if main_schema.tables.contains_key(table)
                && table_exists(replica, "public", table).await?
            {
                let q = format!("SELECT count(*) FROM {}", qualified(table));
                s.counts.push(TableCount {
                    table: table.to_string(),
                    main: one_i64(main, &q).await?,
                    replica: one_i64(replica, &q).await?,
                });
            }
        }
    }
    s.collected_at_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    Ok(s)
}

/// Counters li-sync keeps between collections.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub schema_upgrades_applied: u64,
    pub media_copied: u64,
    pub media_copy_errors: u64,
    pub collect_errors: u64,
}

/// Prometheus text exposition of a status.
pub fn metrics_text(s: Option<&LiStatus>, c: &Counters) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    gauge(
        "mxstack_li_up",
        "1 when li-sync could read both databases on its last collection",
        "gauge",
        if s.is_some() { 1.0 } else { 0.0 },
    );
    gauge(
        "mxstack_li_collect_errors_total",
        "Status collections that failed",
        "counter",
        c.collect_errors as f64,
    );
    gauge(
        "mxstack_li_schema_upgrades_applied_total",
        "Schema differences li-sync applied to the replica",
        "counter",
        c.schema_upgrades_applied as f64,
    );
    gauge(
        "mxstack_li_media_copied_total",
        "Media objects copied and verified",
        "counter",
        c.media_copied as f64,
    );
    gauge(
        "mxstack_li_media_copy_errors_total",
        "Media objects that failed to copy or verify (retried next pass)",
        "counter",
        c.media_copy_errors as f64,
    );
    if let Some(s) = s {
        let b = |v: bool| if v { 1.0 } else { 0.0 };
        gauge(
            "mxstack_li_subscription_up",
            "1 when the subscription exists, is enabled and its apply worker runs",
            "gauge",
            b(s.subscribed && s.subscription_enabled && s.apply_worker_running),
        );
        if let Some(l) = s.lag_seconds {
            gauge(
                "mxstack_li_lag_seconds",
                "Replication lag in seconds",
                "gauge",
                l,
            );
        }
        if let Some(l) = s.lag_bytes {
            gauge(
                "mxstack_li_lag_bytes",
                "WAL bytes the replica has not confirmed",
                "gauge",
                l as f64,
            );
        }
        if let Some(r) = s.slot_retained_bytes {
            gauge(
                "mxstack_li_slot_retained_bytes",
                "WAL bytes main retains for the LI slot",
                "gauge",
                r as f64,
            );
        }
        gauge(
            "mxstack_li_apply_errors_total",
            "Apply errors of the subscription (pg_stat_subscription_stats)",
            "counter",
            s.apply_errors as f64,
        );
        gauge(
            "mxstack_li_sync_errors_total",
            "Initial-copy errors of the subscription",
            "counter",
            s.sync_errors as f64,
        );
        gauge(
            "mxstack_li_subscription_enabled",
            "1 when the subscription exists and is enabled (li-sync pauses it for a moment while tables join)",
            "gauge",
            b(s.subscribed && s.subscription_enabled),
        );
        gauge(
            "mxstack_li_initial_copy_stalled",
            "1 while tables are in their initial copy and no worker can progress them",
            "gauge",
            b(s.initial_copy_stalled().is_some()),
        );
        gauge(
            "mxstack_li_tables_syncing",
            "Tables still in their initial copy",
            "gauge",
            s.tables_syncing.len() as f64,
        );
        gauge(
            "mxstack_li_tables_without_identity",
            "Tables on main without a usable replica identity",
            "gauge",
            s.tables_without_identity.len() as f64,
        );
        gauge(
            "mxstack_li_schema_behind",
            "1 while main has schema the replica lacks",
            "gauge",
            b(s.schema_behind),
        );
        gauge(
            "mxstack_li_history_rows",
            "Rows kept in the replica's history",
            "gauge",
            s.history_rows as f64,
        );
        for r in [&s.last_dump, &s.last_working_copy].into_iter().flatten() {
            let job = r.job.replace('-', "_");
            if let Some(t) = r.last_success_unix {
                gauge(
                    &format!("mxstack_li_{job}_last_success_timestamp_seconds"),
                    &format!("When the newest successful {} run finished", r.job),
                    "gauge",
                    t,
                );
            }
            gauge(
                &format!("mxstack_li_{job}_failed_runs_total"),
                &format!("{} runs that failed or were interrupted", r.job),
                "counter",
                r.failed_runs as f64,
            );
            gauge(
                &format!("mxstack_li_{job}_last_run_failed"),
                &format!("1 when the newest {} run failed", r.job),
                "gauge",
                b(r.status == "failed"),
            );
        }
        if let Some(m) = &s.media {
            gauge(
                "mxstack_li_media_backlog_objects",
                "Objects on main not yet copied at the end of the last pass",
                "gauge",
                m.backlog as f64,
            );
            gauge(
                "mxstack_li_media_last_sync_timestamp_seconds",
                "When the last media pass finished",
                "gauge",
                m.finished_at_unix,
            );
        }
    }
    out
}
