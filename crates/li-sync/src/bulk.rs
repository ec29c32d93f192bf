//! What the two whole-database jobs share (the dump sync and the working-copy refresh): a lock
//! that dies with its holder, a run record that is the job's checkpoint and status, streaming
//! one table from one database to another, and sequence values.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mxstack_topology::li::LI_SCHEMA;
use tokio_postgres::{Client, GenericClient, Transaction};

use crate::replica::ReplicaError;
use crate::schema::{ident, qualified, Table};

/// Which job a run record or lock belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    Dump,
    WorkingCopy,
    /// `mxstack li reattach`: no run record; its lock keeps schema passes out (see
    /// [`crate::replica::sync_schema`]).
    Reattach,
}

impl Job {
    pub fn as_str(self) -> &'static str {
        match self {
            Job::Dump => "dump",
            Job::WorkingCopy => "working-copy",
            Job::Reattach => "reattach",
        }
    }

    /// Session advisory lock key ("mxLI" and the job): released by PostgreSQL when the holder's
    /// connection ends, so a crashed job never leaves a stale lock behind (the seed's lock file
    /// had to be removed by hand).
    pub(crate) fn lock_key(self) -> i64 {
        0x6d78_4c49_0000
            + match self {
                Job::Dump => 1,
                Job::WorkingCopy => 2,
                Job::Reattach => 3,
            }
    }
}

/// Take the job's lock on `db` for the life of this connection, or say who holds it.
pub async fn lock(db: &Client, job: Job) -> Result<(), ReplicaError> {
    let got: bool = db
        .query_one(
            "SELECT pg_catalog.pg_try_advisory_lock($1)",
            &[&job.lock_key()],
        )
        .await?
        .get(0);
    if got {
        return Ok(());
    }
    let holder = db
        .query_opt(
            "SELECT a.pid, coalesce(a.application_name, ''), pg_catalog.to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ')
               FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted
                AND ((l.classid::bigint << 32) | l.objid::bigint) = $1
                -- Advisory locks are per database: the same job may hold one in another.
                AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
              LIMIT 1",
            &[&job.lock_key()],
        )
        .await?;
    let who = match holder {
        Some(r) => format!(
            " (backend pid {}, {}, connected since {})",
            r.get::<_, i32>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2)
        ),
        None => String::new(),
    };
    Err(ReplicaError(format!(
        "another {} run holds the lock{who}; it is released when that run ends: try again later",
        job.as_str()
    )))
}

/// The run records (`mxstack_li.sync_runs`): one row per run, written when it starts and when
/// it ends. The newest successful row is the checkpoint: what the copy reflects and when.
pub fn runs_setup_sql() -> String {
    let s = LI_SCHEMA;
    format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.sync_runs (
    id bigserial PRIMARY KEY,
    job text NOT NULL CHECK (job IN ('dump', 'working-copy')),
    started_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at timestamptz,
    status text NOT NULL CHECK (status IN ('running', 'success', 'failed')),
    error text,
    tables integer,
    tables_changed integer,
    rows_copied bigint,
    bytes_copied bigint,
    history_rows bigint,
    main_lsn pg_lsn
);
CREATE INDEX IF NOT EXISTS sync_runs_by_job ON {s}.sync_runs (job, id);"
    )
}

/// Record the start of a run; a run left `running` by a process that died is closed as
/// interrupted (this caller holds the lock, so nothing else is running).
pub async fn start_run(db: &Client, job: Job) -> Result<i64, ReplicaError> {
    db.execute(
        &format!(
            "UPDATE {LI_SCHEMA}.sync_runs SET status = 'failed', finished_at = pg_catalog.clock_timestamp(),
                    error = 'interrupted: the process stopped before the run finished'
              WHERE job = $1 AND status = 'running'"
        ),
        &[&job.as_str()],
    )
    .await?;
    Ok(db
        .query_one(
            &format!(
                "INSERT INTO {LI_SCHEMA}.sync_runs (job, status) VALUES ($1, 'running') RETURNING id"
            ),
            &[&job.as_str()],
        )
        .await?
        .get(0))
}

/// Figures of a finished run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunFigures {
    pub tables: i32,
    pub tables_changed: i32,
    pub rows_copied: i64,
    pub bytes_copied: i64,
    pub history_rows: i64,
    pub main_lsn: Option<String>,
}

/// Mark a run successful. Called inside the transaction that publishes the copy, so the record
/// and the data commit together.
pub async fn finish_run(
    tx: &impl GenericClient,
    run_id: i64,
    f: &RunFigures,
) -> Result<(), ReplicaError> {
    tx.execute(
        &format!(
            "UPDATE {LI_SCHEMA}.sync_runs SET status = 'success', finished_at = pg_catalog.clock_timestamp(),
                    tables = $2, tables_changed = $3, rows_copied = $4, bytes_copied = $5,
                    history_rows = $6, main_lsn = $7::text::pg_lsn
              WHERE id = $1"
        ),
        &[
            &run_id,
            &f.tables,
            &f.tables_changed,
            &f.rows_copied,
            &f.bytes_copied,
            &f.history_rows,
            &f.main_lsn,
        ],
    )
    .await?;
    Ok(())
}

pub async fn fail_run(db: &Client, run_id: i64, error: &str) -> Result<(), ReplicaError> {
    db.execute(
        &format!(
            "UPDATE {LI_SCHEMA}.sync_runs SET status = 'failed', finished_at = pg_catalog.clock_timestamp(), error = $2
              WHERE id = $1"
        ),
        &[&run_id, &error],
    )
    .await?;
    Ok(())
}

/// The newest run of a job, as status reports it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RunStatus {
    pub job: String,
    pub status: String,
    pub started_at_unix: f64,
    pub finished_at_unix: Option<f64>,
    pub error: Option<String>,
    pub rows_copied: Option<i64>,
    pub bytes_copied: Option<i64>,
    pub history_rows: Option<i64>,
    /// When the newest successful run finished (the copy is as of then).
    pub last_success_unix: Option<f64>,
    pub failed_runs: i64,
    pub total_runs: i64,
}

pub async fn last_run(db: &Client, job: Job) -> Result<Option<RunStatus>, ReplicaError> {
    let row = db
        .query_opt(
            &format!(
                "SELECT status, extract(epoch FROM started_at)::float8, extract(epoch FROM finished_at)::float8,
                        error, rows_copied, bytes_copied, history_rows,
                        (SELECT extract(epoch FROM max(finished_at))::float8 FROM {LI_SCHEMA}.sync_runs
                          WHERE job = $1 AND status = 'success'),
                        (SELECT count(*) FROM {LI_SCHEMA}.sync_runs WHERE job = $1 AND status = 'failed'),
                        (SELECT count(*) FROM {LI_SCHEMA}.sync_runs WHERE job = $1)
                   FROM {LI_SCHEMA}.sync_runs WHERE job = $1 ORDER BY id DESC LIMIT 1"
            ),
            &[&job.as_str()],
        )
        .await?;
    Ok(row.map(|r| RunStatus {
        job: job.as_str().into(),
        status: r.get(0),
        started_at_unix: r.get(1),
        finished_at_unix: r.get(2),
        error: r.get(3),
        rows_copied: r.get(4),
        bytes_copied: r.get(5),
        history_rows: r.get(6),
        last_success_unix: r.get(7),
        failed_runs: r.get(8),
        total_runs: r.get(9),
    }))
}

/// Column list of `table` as a copy moves it: every column but stored generated ones (the
/// target computes those itself).
pub fn copied_columns(table: &Table) -> Vec<String> {
    table
        .columns
        .iter()
        .filter(|c| c.generated.is_none())
        .map(|c| ident(&c.name))
        .collect()
}

/// Stream `SELECT columns FROM public.table` from `source` into `target_table` (binary COPY,
/// constant memory). Returns rows and bytes moved.
pub async fn copy_table(
    source: &Transaction<'_>,
    table: &str,
    columns: &[String],
    target: &Transaction<'_>,
    target_table: &str,
) -> Result<(u64, u64), ReplicaError> {
    let cols = columns.join(", ");
    let out = source
        .copy_out(&format!(
            "COPY (SELECT {cols} FROM {}) TO STDOUT (FORMAT binary)",
            qualified(table)
        ))
        .await?;
    let sink = target
        .copy_in::<_, Bytes>(&format!(
            "COPY {target_table} ({cols}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    futures_util::pin_mut!(out);
    futures_util::pin_mut!(sink);
    let mut bytes = 0u64;
    while let Some(chunk) = out.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        sink.send(chunk).await?;
    }
    let rows = sink.finish().await?;
    Ok((rows, bytes))
}

/// `public`'s sequences that were ever used, with their values.
pub async fn sequence_values(db: &impl GenericClient) -> Result<Vec<(String, i64)>, ReplicaError> {
    Ok(db
        .query(
            "SELECT sequencename::text, last_value FROM pg_catalog.pg_sequences
              WHERE schemaname = 'public' AND last_value IS NOT NULL ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Set the sequences `db` has to `values` (never backwards when `forward_only`); returns how
/// many changed. Sequences `db` lacks are skipped (the schema sync creates them).
pub async fn set_sequences(
    db: &impl GenericClient,
    values: &[(String, i64)],
    forward_only: bool,
) -> Result<i64, ReplicaError> {
    let names: Vec<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
    let vals: Vec<i64> = values.iter().map(|(_, v)| *v).collect();
    let cond = if forward_only {
        "p.last_value IS NULL OR p.last_value < s.v"
    } else {
        "p.last_value IS DISTINCT FROM s.v"
    };
    Ok(db
        .query_one(
            &format!(
                "SELECT count(pg_catalog.setval(pg_catalog.format('public.%I', s.name)::regclass, s.v))
                   FROM unnest($1::text[], $2::int8[]) AS s(name, v)
                   JOIN pg_catalog.pg_sequences p ON p.schemaname = 'public' AND p.sequencename = s.name
                  WHERE {cond}"
            ),
            &[&names, &vals],
        )
        .await?
        .get(0))
}
