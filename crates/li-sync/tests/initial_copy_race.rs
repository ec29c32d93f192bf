//! Issue 15: a schema change on main while table-sync workers of the initial copy run, and a
//! subscription left disabled by an interrupted run, against two real PostgreSQL clusters.
//!
//! The race is made deterministic by slowing the initial copy on the replica: a BEFORE INSERT
//! trigger (ENABLE ALWAYS, so the table-sync worker fires it during its COPY) sleeps per row, so
//! two table-sync workers are still copying when the schema change is absorbed. Before the fix,
//! the pause read pg_stat_subscription expecting one row, failed with "query returned an
//! unexpected number of rows", and left the subscription disabled for good.

mod common;
mod support;

use std::time::Duration;

use common::{config, connect, count, wait_for};
use mxstack_li_sync::config::{LiSyncConfig, SyncMode};
use mxstack_li_sync::replica::{prepare_main, running_workers, sync_schema};
use support::PgCluster;
use tokio_postgres::Client;

const SUB: &str = "mxstack_li";
/// Rows in each slow table, and the sleep per row during its initial copy: 6 s of copy.
const SLOW_ROWS: i64 = 60;
const SLEEP_PER_ROW: &str = "0.1";

async fn enabled(replica: &Client) -> bool {
    replica
        .query_one(
            "SELECT subenabled FROM pg_subscription WHERE subname = $1
                AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&SUB],
        )
        .await
        .unwrap()
        .get(0)
}

/// Creates `table` on the replica with a BEFORE INSERT trigger (ENABLE ALWAYS, so the
/// table-sync worker fires it in its COPY) sleeping `seconds` per row: an initial copy that is
/// provably still running for a while.
async fn slow_copy(replica: &Client, table: &str, columns: &str, seconds: &str) {
    replica
        .batch_execute(&format!(
            "CREATE TABLE public.{table} ({columns});
             CREATE FUNCTION public.{table}_slow() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_catalog.pg_sleep({seconds}); RETURN NEW; END $$;
             CREATE TRIGGER {table}_slow BEFORE INSERT ON public.{table}
               FOR EACH ROW EXECUTE FUNCTION public.{table}_slow();
             ALTER TABLE public.{table} ENABLE ALWAYS TRIGGER {table}_slow;"
        ))
        .await
        .unwrap();
}

struct Pair {
    _main: PgCluster,
    li: PgCluster,
    synapse: Client,
    replicator: Client,
    replica: Client,
    locker: Client,
    cfg: LiSyncConfig,
}

impl Pair {
    async fn start(main_sql: &str) -> Pair {
        let (main, li) = common::clusters();
        let synapse = connect(&main.dsn("synapse", "synapse")).await;
        synapse.batch_execute(main_sql).await.unwrap();
        let admin = connect(&main.dsn("postgres", "synapse")).await;
        prepare_main(&admin, "synapse", Some("replicator-pw"))
            .await
            .unwrap();
        let replicator = connect(&main.dsn("li_replicator", "synapse")).await;
        let replica = connect(&li.dsn("li_sync", "synapse_li")).await;
        let locker = connect(&li.dsn("li_sync", "synapse_li")).await;
        let cfg = config(&main, &li, SyncMode::Logical);
        Pair {
            _main: main,
            li,
            synapse,
            replicator,
            replica,
            locker,
            cfg,
        }
    }

    async fn sync(&mut self) -> Result<mxstack_li_sync::replica::UpgradeReport, String> {
        sync_schema(
            &self.replicator,
            &mut self.replica,
            &mut self.locker,
            &self.cfg,
            "replicator-pw",
        )
        .await
        .map_err(|e| e.0)
    }

    async fn all_ready(&self) -> bool {
        count(
            &self.replica,
            "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'",
        )
        .await
            == 0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_change_during_the_initial_copy_leaves_the_subscription_enabled() {
    let slow = |t: &str| {
        format!(
            "CREATE TABLE {t} (id bigint PRIMARY KEY, body text);
             INSERT INTO {t} SELECT i, 'row ' || i FROM generate_series(1, {SLOW_ROWS}) i;"
        )
    };
    let mut p = Pair::start(&format!("{}{}", slow("slow_a"), slow("slow_b"))).await;
    // The replica's copies of the tables, each with a trigger that makes its initial copy slow
    // (the schema step finds them in place and adds nothing).
    for t in ["slow_a", "slow_b"] {
        slow_copy(
            &p.replica,
            t,
            "id bigint PRIMARY KEY, body text",
            SLEEP_PER_ROW,
        )
        .await;
    }
    let first = p.sync().await.expect("first sync creates the subscription");
    assert!(first.new_tables.is_empty(), "{first:?}");
    wait_for(
        "two table-sync workers copying",
        Duration::from_secs(30),
        async || running_workers(&p.replica, SUB).await.unwrap().table_sync == 2,
    )
    .await;

    // Synapse's background updates create and fill a scratch table while the copy runs.
    p.synapse
        .batch_execute(
            "CREATE TABLE _temp_populate (room_id text, pos bigint);
             INSERT INTO _temp_populate VALUES ('!a', 1), ('!b', 2);
             UPDATE _temp_populate SET pos = 3 WHERE room_id = '!a';",
        )
        .await
        .unwrap();
    let during = running_workers(&p.replica, SUB).await.unwrap();
    assert_eq!(
        during.table_sync, 2,
        "the copy is still running: {during:?}"
    );
    let report = p
        .sync()
        .await
        .expect("a schema change during the initial copy is absorbed");
    assert_eq!(report.new_tables, vec!["_temp_populate".to_string()]);
    assert!(report.refreshed, "{report:?}");
    assert!(
        enabled(&p.replica).await,
        "the subscription is enabled again"
    );

    wait_for("the initial copy", Duration::from_secs(60), async || {
        p.all_ready().await
    })
    .await;
    for t in ["slow_a", "slow_b"] {
        assert_eq!(
            count(&p.replica, &format!("SELECT count(*) FROM public.{t}")).await,
            SLOW_ROWS,
            "{t} copied whole"
        );
    }
    wait_for(
        "the new table replayed",
        Duration::from_secs(30),
        async || {
            count(
                &p.replica,
                "SELECT count(*) FROM public._temp_populate WHERE pos = 3",
            )
            .await
                == 1
        },
    )
    .await;
    assert_eq!(
        count(
            &p.replica,
            "SELECT count(*) FROM mxstack_li.row_history WHERE table_name = '_temp_populate' AND operation = 'UPDATE'"
        )
        .await,
        1,
        "joined change by change: the UPDATE made before it joined is history"
    );
    // Streaming continues.
    p.synapse
        .batch_execute("INSERT INTO slow_a VALUES (1000, 'after')")
        .await
        .unwrap();
    wait_for(
        "streaming after the copy",
        Duration::from_secs(30),
        async || {
            count(
                &p.replica,
                "SELECT count(*) FROM public.slow_a WHERE id = 1000",
            )
            .await
                == 1
        },
    )
    .await;
}

/// An interrupted run (a crash, an error, a timeout) between pausing the subscription and
/// resuming it: the next call resumes it without losing a change to the tables created in
/// between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_left_paused_is_resumed_without_loss() {
    let mut p = Pair::start("CREATE TABLE rooms (room_id text PRIMARY KEY, name text);").await;
    // A second database on the LI cluster with a subscription of the same name (pg_subscription
    // is shared by the cluster's databases): every lookup must take ours.
    p.li.psql("postgres", "CREATE DATABASE other_replica");
    p.li.psql(
        "other_replica",
        &format!(
            "CREATE TABLE rooms (room_id text PRIMARY KEY, name text);
             CREATE SUBSCRIPTION {SUB} CONNECTION 'host=127.0.0.1 port={} dbname=synapse user=li_replicator password=replicator-pw' \
             PUBLICATION mxstack_li WITH (enabled = false, create_slot = false, slot_name = NONE, copy_data = false)",
            p.cfg.main.port
        ),
    );
    p.sync().await.unwrap();
    wait_for("the initial copy", Duration::from_secs(30), async || {
        p.all_ready().await
    })
    .await;

    // What a run that died after its schema step leaves: the subscription disabled, main's new
    // table created on the replica but not subscribed.
    p.replica
        .batch_execute("ALTER SUBSCRIPTION mxstack_li DISABLE")
        .await
        .unwrap();
    wait_for(
        "the apply worker to stop",
        Duration::from_secs(30),
        async || running_workers(&p.replica, SUB).await.unwrap().apply == 0,
    )
    .await;
    p.synapse
        .batch_execute(
            "CREATE TABLE receipts (room_id text, user_id text, event_id text, UNIQUE (room_id, user_id));
             INSERT INTO receipts VALUES ('!r', '@a', '$1'), ('!r', '@b', '$1');
             UPDATE receipts SET event_id = '$2' WHERE user_id = '@a';
             DELETE FROM receipts WHERE user_id = '@b';
             INSERT INTO rooms VALUES ('!r', 'while paused');",
        )
        .await
        .unwrap();
    p.replica
        .batch_execute(
            "CREATE TABLE public.receipts (room_id text, user_id text, event_id text, UNIQUE (room_id, user_id))",
        )
        .await
        .unwrap();
    let status = mxstack_li_sync::status::collect(&p.replicator, &p.replica, &p.cfg, false)
        .await
        .unwrap();
    assert!(status.subscribed && !status.subscription_enabled);
    assert!(
        mxstack_li_sync::status::metrics_text(Some(&status), &Default::default())
            .contains("mxstack_li_subscription_enabled 0"),
        "the metric the LiSubscriptionDisabled alert reads"
    );

    let report = p.sync().await.expect("resumed");
    assert!(report.new_tables.is_empty(), "{report:?}");
    assert!(report.refreshed);
    assert!(enabled(&p.replica).await);
    wait_for(
        "changes made while paused",
        Duration::from_secs(30),
        async || {
            count(&p.replica, "SELECT count(*) FROM public.rooms").await == 1
                && count(&p.replica, "SELECT count(*) FROM public.receipts").await == 1
        },
    )
    .await;
    let history = count(
        &p.replica,
        "SELECT count(*) FROM mxstack_li.row_history WHERE table_name = 'receipts'",
    )
    .await;
    assert_eq!(
        history, 2,
        "the UPDATE and the DELETE made while paused are kept"
    );
    let status = mxstack_li_sync::status::collect(&p.replicator, &p.replica, &p.cfg, false)
        .await
        .unwrap();
    assert!(status.subscription_enabled && status.initial_copy_stalled().is_none());
}

/// A subscription disabled during its initial copy: `li status` and the metrics call the copy
/// stalled with its cause, and the next run resumes it and the copy completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_subscription_during_the_initial_copy_is_reported_stalled() {
    let mut p = Pair::start(
        "CREATE TABLE big (id bigint PRIMARY KEY);
         INSERT INTO big SELECT generate_series(1, 10);",
    )
    .await;
    slow_copy(&p.replica, "big", "id bigint PRIMARY KEY", "0.2").await;
    p.sync().await.unwrap();
    p.replica
        .batch_execute("ALTER SUBSCRIPTION mxstack_li DISABLE")
        .await
        .unwrap();
    wait_for(
        "the apply worker to stop",
        Duration::from_secs(30),
        async || running_workers(&p.replica, SUB).await.unwrap().apply == 0,
    )
    .await;
    let status = mxstack_li_sync::status::collect(&p.replicator, &p.replica, &p.cfg, false)
        .await
        .unwrap();
    assert_eq!(status.tables_syncing, vec!["big".to_string()]);
    assert_eq!(
        status.initial_copy_stalled(),
        Some("the subscription is disabled")
    );
    assert!(
        mxstack_li_sync::status::metrics_text(Some(&status), &Default::default())
            .contains("mxstack_li_initial_copy_stalled 1")
    );
    p.sync().await.expect("resumed");
    wait_for("the initial copy", Duration::from_secs(60), async || {
        p.all_ready().await
    })
    .await;
    assert_eq!(
        count(&p.replica, "SELECT count(*) FROM public.big").await,
        10
    );
}
