//! After a restore (`mxstack restore`, or a CloudNativePG recovery): the subscription attached
//! again to main, without losing a row on the LI side.
//!
//! Why it is needed: a replication slot is not in a base backup nor in the WAL, so a restored
//! main has no slot `mxstack_li` (or a stale one a backup carried), and the LI cluster's
//! replication origin points at a position of main's old timeline. Enabling the subscription
//! as it is would fail for want of the slot, or, worse, start from the old origin position and
//! silently skip every new transaction of the restored main below it.
//!
//! What it does, with nothing writing to main (restore runs it with the stack down; on
//! Kubernetes, with Synapse scaled to 0), holding the re-attach lock that keeps a running
//! li-sync's schema passes out:
//!
//! 1. disables the subscription (its apply worker exits);
//! 2. applies main's additive schema difference and the history triggers (as a schema pass);
//! 3. drops the slot if one is there and creates it anew: its position is main's present;
//! 4. absorbs main's present state as a dump run does ([`crate::dump::absorb_tables`]): every
//!    row the LI side has and main does not (main was rewound to before it, or the LI side is
//!    ahead of main's archive) is kept in `mxstack_li.row_history` as `REMOVED` before the
//!    table mirrors main; rows main has and the LI side lacks (the LI archive was behind) are
//!    copied; sequences follow main;
//! 5. moves the subscription's replication origin to the new slot's position (backwards, when
//!    the LI side had seen more of the old timeline) and enables the subscription; tables main
//!    has that the subscription did not list join without a copy (their rows were absorbed).
//!
//! From there on every change of main streams from the new slot. The history the LI side had
//! is untouched: absorbing only adds to it.

use std::time::Instant;

use tokio_postgres::IsolationLevel;

use crate::bulk::{self, RunFigures};
use crate::config::LiSyncConfig;
use crate::daemon::connect;
use crate::dump::{absorb_tables, BULK_SETTING};
use crate::replica::{self, history_setup_sql, ReplicaError, THIS_SUBSCRIPTION};
use crate::schema::{diff, Schema};

/// What a re-attach did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReattachReport {
    pub subscription: String,
    /// A slot of that name was on main (carried by a backup) and was replaced.
    pub replaced_slot: bool,
    /// The new slot's position on main: the origin the subscription resumes from.
    pub slot_lsn: String,
    /// The subscription's origin before (a position on main's timeline before the restore).
    pub previous_origin_lsn: Option<String>,
    #[serde(flatten)]
    pub figures: RunFigures,
    pub sequences_set: i64,
    pub tables_joined: Vec<String>,
    pub seconds: f64,
}

/// Re-attach the subscription to main (see the module's documentation). `Ok(None)`: the LI
/// side has no subscription (dump mode, or li-sync never subscribed): nothing to re-attach;
/// li-sync subscribes when it starts.
pub async fn reattach(
    config: &LiSyncConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Option<ReattachReport>, ReplicaError> {
    let started = Instant::now();
    let name = &config.subscription.name;
    let mut replica = connect(&config.replica).await?;
    let Some((oid, previous)) = subscription_origin(&replica, name).await? else {
        return Ok(None);
    };
    // Waits for a schema pass of a running li-sync to end and keeps the next ones out until
    // this connection closes (they would resume the subscription too early).
    replica
        .execute(
            "SELECT pg_catalog.pg_advisory_lock($1)",
            &[&bulk::Job::Reattach.lock_key()],
        )
        .await?;
    replica.batch_execute(&history_setup_sql()).await?;
    replica::set_enabled(&replica, name, false).await?;
    progress(&format!("reattach: subscription {name} disabled"));
    let mut main = connect(&config.main).await?;
    let d = diff(&Schema::read(&main).await?, &Schema::read(&replica).await?);
    replica::apply_schema(&main, &mut replica, &d).await?;
    let replaced_slot = drop_slot(&main, name).await?;
    // Nothing writes to main: the slot's position and the snapshot below see the same state.
    let slot_lsn: String = main
        .query_one(
            "SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')",
            &[name],
        )
        .await?
        .get(0);
    progress(&format!(
        "reattach: slot {name} created on main at {slot_lsn}"
    ));
    let snapshot = main
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let main_schema = Schema::read(&snapshot).await?;
    let sequences = bulk::sequence_values(&snapshot).await?;
    let tx = replica.transaction().await?;
    tx.batch_execute(&format!("SET LOCAL {BULK_SETTING} = 'on'"))
        .await?;
    let mut figures = absorb_tables(&snapshot, &tx, &main_schema, "reattach", progress).await?;
    figures.main_lsn = Some(slot_lsn.clone());
    let sequences_set = bulk::set_sequences(&tx, &sequences, true).await?;
    tx.commit().await?;
    snapshot.commit().await?;
    // Backwards too: positions of main's old timeline above the new slot's mean nothing now.
    replica
        .execute(
            "SELECT pg_catalog.pg_replication_origin_advance('pg_' || $1::oid::text, $2::text::pg_lsn)",
            &[&oid, &slot_lsn],
        )
        .await?;
    replica::set_enabled(&replica, name, true).await?;
    let tables_joined = replica::join_unsubscribed(&main, &replica, name).await?;
    progress(&format!(
        "reattach: subscription {name} enabled from {slot_lsn} ({} rows kept in history)",
        figures.history_rows
    ));
    Ok(Some(ReattachReport {
        subscription: name.clone(),
        replaced_slot,
        slot_lsn,
        previous_origin_lsn: previous,
        figures,
        sequences_set,
        tables_joined,
        seconds: started.elapsed().as_secs_f64(),
    }))
}

/// The subscription's oid and its origin's position, if it exists in this database.
async fn subscription_origin(
    replica: &tokio_postgres::Client,
    name: &str,
) -> Result<Option<(u32, Option<String>)>, ReplicaError> {
    let row = replica
        .query_opt(
            &format!(
                "SELECT s.oid, (SELECT o.remote_lsn::text FROM pg_catalog.pg_replication_origin_status o
                                 WHERE o.external_id = 'pg_' || s.oid::text)
                   FROM pg_catalog.pg_subscription s WHERE {THIS_SUBSCRIPTION}"
            ),
            &[&name],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Drops main's slot `name` if it is there; returns whether it was.
async fn drop_slot(main: &tokio_postgres::Client, name: &str) -> Result<bool, ReplicaError> {
    let n = main
        .execute(
            "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots
              WHERE slot_name = $1",
            &[&name],
        )
        .await?;
    Ok(n > 0)
}
