//! `mxstack li reattach` against two real PostgreSQL clusters: main "restored" (its slot gone,
//! rows the LI side has no longer on main, rows the LI side never saw), the LI side's origin on
//! a position of main's old timeline ahead of the new main. After the re-attach the LI side
//! mirrors main, keeps what main lost in history, and replicates again.

mod common;
mod support;

use std::time::Duration;

use common::{config, connect, count, wait_for};
use mxstack_li_sync::config::SyncMode;
use mxstack_li_sync::reattach::reattach;
use mxstack_li_sync::replica::{prepare_main, sync_schema};

const TABLES: &str = "
CREATE TABLE events (stream_ordering bigint NOT NULL, event_id text NOT NULL, room_id text NOT NULL);
CREATE UNIQUE INDEX events_order ON events (stream_ordering);
CREATE TABLE event_json (event_id text NOT NULL, json text NOT NULL);
CREATE UNIQUE INDEX event_json_id ON event_json (event_id);
";

fn insert(from: i32, to: i32) -> String {
    format!(
        "INSERT INTO events SELECT i, '$e' || i, '!r' FROM generate_series({from}, {to}) i;
         INSERT INTO event_json SELECT '$e' || i, '{{\"body\": \"m' || i || '\"}}' FROM generate_series({from}, {to}) i;"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_main_is_reattached_and_nothing_on_the_li_side_is_lost() {
    let (main, li) = common::clusters();
    let synapse = connect(&main.dsn("synapse", "synapse")).await;
    synapse.batch_execute(TABLES).await.unwrap();
    let admin = connect(&main.dsn("postgres", "synapse")).await;
    prepare_main(&admin, "synapse", Some("replicator-pw"))
        .await
        .unwrap();
    synapse.batch_execute(&insert(1, 10)).await.unwrap();
    let cfg = config(&main, &li, SyncMode::Logical);
    let replicator = connect(&main.dsn("li_replicator", "synapse")).await;
    let mut replica = connect(&li.dsn("li_sync", "synapse_li")).await;
    let mut locker = connect(&li.dsn("li_sync", "synapse_li")).await;
    sync_schema(
        &replicator,
        &mut replica,
        &mut locker,
        &cfg,
        "replicator-pw",
    )
    .await
    .unwrap();
    let live = async |n: i64| count(&replica, "SELECT count(*) FROM public.event_json").await == n;
    wait_for("initial copy", Duration::from_secs(30), async || {
        live(10).await
    })
    .await;

    // The "restore": the subscription stops, main loses $e6..$e10 (rewound to before them) and
    // gains $e11, $e12 the LI side never saw; the slot is gone (slots are in no backup) and the
    // LI side's origin is ahead of everything the new main will write.
    replica
        .batch_execute("ALTER SUBSCRIPTION mxstack_li DISABLE")
        .await
        .unwrap();
    wait_for("apply worker gone", Duration::from_secs(30), async || {
        count(
            &admin,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'mxstack_li' AND active",
        )
        .await
            == 0
    })
    .await;
    synapse
        .batch_execute(&format!(
            "DELETE FROM events WHERE stream_ordering > 5; DELETE FROM event_json WHERE event_id IN ('$e6', '$e7', '$e8', '$e9', '$e10'); {}",
            insert(11, 12)
        ))
        .await
        .unwrap();
    admin
        .batch_execute("SELECT pg_drop_replication_slot('mxstack_li')")
        .await
        .unwrap();
    replica
        .batch_execute(
            "SELECT pg_replication_origin_advance('pg_' || oid, 'FF/0') FROM pg_subscription WHERE subname = 'mxstack_li'",
        )
        .await
        .unwrap();

    let status = mxstack_li_sync::status::collect(&replicator, &replica, &cfg, false)
        .await
        .unwrap();
    assert!(status.slot_missing, "li status names the missing slot");

    let report = reattach(&cfg, &|_| {})
        .await
        .unwrap()
        .expect("a subscription");
    let status = mxstack_li_sync::status::collect(&replicator, &replica, &cfg, false)
        .await
        .unwrap();
    assert!(!status.slot_missing);
    assert!(!report.replaced_slot);
    assert_eq!(report.previous_origin_lsn.as_deref(), Some("FF/0"));
    // $e6..$e10 in both tables: kept in history, not live.
    assert_eq!(report.figures.history_rows, 10, "{report:?}");
    let kept = count(
        &replica,
        "SELECT count(*) FROM mxstack_li.row_history WHERE operation = 'REMOVED'
          AND table_name = 'event_json' AND old_row->>'event_id' IN ('$e6', '$e7', '$e8', '$e9', '$e10')",
    )
    .await;
    assert_eq!(kept, 5);
    // Live tables mirror main: $e1..$e5, $e11, $e12.
    assert_eq!(
        count(
            &replica,
            "SELECT count(*) FROM public.events WHERE stream_ordering IN (1, 2, 3, 4, 5, 11, 12)"
        )
        .await,
        7
    );
    assert!(live(7).await);

    // Replication resumes from the new slot: a row main writes now (with a stream ordering the
    // LI side once had for another event) arrives, nothing conflicts.
    synapse
        .batch_execute("INSERT INTO events VALUES (6, '$new6', '!r'); INSERT INTO event_json VALUES ('$new6', '{}');")
        .await
        .unwrap();
    wait_for(
        "a change after the re-attach",
        Duration::from_secs(30),
        async || {
            count(
                &replica,
                "SELECT count(*) FROM public.events WHERE event_id = '$new6'",
            )
            .await
                == 1
        },
    )
    .await;
    // Its origin moved back to the new slot's positions.
    let origin: String = replica
        .query_one(
            "SELECT remote_lsn::text FROM pg_replication_origin_status o JOIN pg_subscription s ON o.external_id = 'pg_' || s.oid",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(origin, "FF/0");

    // While a re-attach holds its lock, a schema pass (li-sync's, or upgrade-schema) stays out:
    // it would enable the subscription before the origin is moved.
    let holder = connect(&li.dsn("li_sync", "synapse_li")).await;
    holder
        .batch_execute("SELECT pg_advisory_lock(x'6d784c490003'::bigint)")
        .await
        .unwrap();
    let e = sync_schema(
        &replicator,
        &mut replica,
        &mut locker,
        &cfg,
        "replicator-pw",
    )
    .await
    .unwrap_err();
    assert!(e.0.contains("re-attach"), "{e}");
    drop(holder);

    // Again (the slot is there now): replaced, nothing new to keep.
    let again = reattach(&cfg, &|_| {}).await.unwrap().unwrap();
    assert!(again.replaced_slot);
    assert_eq!(again.figures.history_rows, 0);
    synapse.batch_execute(&insert(20, 20)).await.unwrap();
    wait_for(
        "a change after the second re-attach",
        Duration::from_secs(30),
        async || {
            count(
                &replica,
                "SELECT count(*) FROM public.events WHERE event_id = '$e20'",
            )
            .await
                == 1
        },
    )
    .await;
}
