//! The replica path against two real PostgreSQL clusters: identities on main, schema copy,
//! history, migrations absorbed, an outage caught up with nothing missing or changed.

mod common;
mod support;

use std::time::Duration;

use common::{config, connect, count, wait_for};
use mxstack_li_sync::config::SyncMode;
use mxstack_li_sync::replica::{prepare_main, schema_behind, sync_schema};
use mxstack_li_sync::schema::Schema;
use tokio_postgres::Client;

/// Tables shaped like Synapse's three kinds: primary key, usable unique index, neither.
const SYNAPSE_LIKE: &str = "
CREATE TABLE rooms (room_id text PRIMARY KEY, creator text);
CREATE TABLE events (stream_ordering bigint NOT NULL, event_id text NOT NULL, room_id text NOT NULL, type text);
CREATE UNIQUE INDEX events_order ON events (stream_ordering);
CREATE UNIQUE INDEX events_id ON events (event_id);
CREATE TABLE event_json (event_id text NOT NULL, room_id text NOT NULL, json text NOT NULL);
CREATE UNIQUE INDEX event_json_id ON event_json (event_id);
CREATE TABLE users (name text, password_hash text, deactivated smallint DEFAULT 0 NOT NULL, UNIQUE (name));
CREATE TABLE user_directory (user_id text NOT NULL, room_id text, display_name text);
CREATE UNIQUE INDEX user_directory_user ON user_directory (user_id);
CREATE TABLE worker_locks (lock_name text NOT NULL, lock_key text NOT NULL, token text NOT NULL, last_renewed_ts bigint NOT NULL);
CREATE UNIQUE INDEX worker_locks_key ON worker_locks (lock_name, lock_key);
";

async fn history(replica: &Client, table: &str, op: &str) -> i64 {
    count(
        replica,
        &format!("SELECT count(*) FROM mxstack_li.row_history WHERE table_name = '{table}' AND operation = '{op}'"),
    )
    .await
}

/// Every table has finished its initial copy (until then the apply worker leaves its changes
/// to the table's sync worker).
async fn all_tables_ready(replica: &Client) -> bool {
    count(
        replica,
        "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'",
    )
    .await
        == 0
}

/// A fingerprint of a table's rows in a fixed order, to compare main and replica row by row.
async fn rows_digest(db: &Client, table: &str, order: &str) -> String {
    db.query_one(
        &format!(
            "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY {order}), '')) FROM {table} t"
        ),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_replica_keeps_history_absorbs_migrations_and_catches_up() {
    let (main, mut li) = common::clusters();

    let synapse = connect(&main.dsn("synapse", "synapse")).await;
    // Half of the tables exist before prepare-main, half are created after it (the event
    // trigger must cover them).
    let (before, after) = SYNAPSE_LIKE.split_at(SYNAPSE_LIKE.find("CREATE TABLE users").unwrap());
    synapse.batch_execute(before).await.unwrap();
    let admin = connect(&main.dsn("postgres", "synapse")).await;
    prepare_main(&admin, "synapse", Some("replicator-pw"))
        .await
        .unwrap();
    prepare_main(&admin, "synapse", Some("replicator-pw"))
        .await
        .expect("idempotent");
    synapse.batch_execute(after).await.unwrap();

    let main_schema = Schema::read(&admin).await.unwrap();
    assert!(
        main_schema.tables_without_identity().is_empty(),
        "{:?}",
        main_schema.tables_without_identity()
    );
    assert_eq!(
        format!("{:?}", main_schema.tables["users"].identity),
        "Full",
        "users has a unique key on a nullable column: FULL"
    );

    // The replication role may read, never write.
    let replicator = connect(&main.dsn("li_replicator", "synapse")).await;
    assert!(replicator
        .batch_execute("INSERT INTO rooms VALUES ('!x', 'y')")
        .await
        .is_err());
    assert!(replicator
        .batch_execute("DELETE FROM events")
        .await
        .is_err());

    synapse
        .batch_execute(
            "INSERT INTO rooms VALUES ('!r', '@a');
             INSERT INTO users VALUES ('@a', 'hash-a', 0), ('@b', 'hash-b', 0);
             INSERT INTO user_directory VALUES ('@a', '!r', 'Alice'), ('@b', '!r', 'Bob');
             INSERT INTO worker_locks VALUES ('l', 'k', 't', 1);
             INSERT INTO events SELECT i, '$e' || i, '!r', 'm.room.message' FROM generate_series(1, 50) i;
             INSERT INTO event_json SELECT '$e' || i, '!r', '{\"body\": \"secret ' || i || '\"}' FROM generate_series(1, 50) i;",
        )
        .await
        .unwrap();

    let cfg = config(&main, &li, SyncMode::Logical);
    let mut replica = connect(&li.dsn("li_sync", "synapse_li")).await;
    let mut locker = connect(&li.dsn("li_sync", "synapse_li")).await;
    let report = sync_schema(
        &replicator,
        &mut replica,
        &mut locker,
        &cfg,
        "replicator-pw",
    )
    .await
    .unwrap();
    assert_eq!(report.new_tables.len(), 6, "{report:?}");
    wait_for("initial copy", Duration::from_secs(30), async || {
        count(&replica, "SELECT count(*) FROM public.event_json").await == 50
            && all_tables_ready(&replica).await
    })
    .await;

    // Synapse censors, deletes, truncates, renews locks: every UPDATE/DELETE works on main...
    synapse
        .batch_execute(
            "UPDATE event_json SET json = '{}' WHERE event_id = '$e1';
             DELETE FROM events WHERE stream_ordering <= 5;
             DELETE FROM event_json WHERE event_id IN ('$e2', '$e3');
             UPDATE users SET password_hash = '', deactivated = 1 WHERE name = '@b';
             UPDATE worker_locks SET last_renewed_ts = 2;
             TRUNCATE user_directory;
             INSERT INTO user_directory VALUES ('@a', '!r', 'Alice');
             DELETE FROM worker_locks;
             DELETE FROM rooms;",
        )
        .await
        .unwrap();
    // ...the replica mirrors main...
    wait_for("changes applied", Duration::from_secs(30), async || {
        count(&replica, "SELECT count(*) FROM public.rooms").await == 0
            && count(&replica, "SELECT count(*) FROM public.worker_locks").await == 0
    })
    .await;
    assert_eq!(
        rows_digest(&replica, "public.event_json", "event_id").await,
        rows_digest(&synapse, "event_json", "event_id").await
    );
    // ...and keeps every original.
    let original: String = replica
        .query_one(
            "SELECT old_row->>'json' FROM mxstack_li.row_history
              WHERE table_name = 'event_json' AND operation = 'UPDATE' AND old_row->>'event_id' = '$e1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(original, "{\"body\": \"secret 1\"}");
    assert_eq!(history(&replica, "events", "DELETE").await, 5);
    assert_eq!(history(&replica, "event_json", "DELETE").await, 2);
    assert_eq!(history(&replica, "users", "UPDATE").await, 1);
    assert_eq!(history(&replica, "user_directory", "TRUNCATE").await, 2);
    assert_eq!(history(&replica, "rooms", "DELETE").await, 1);
    assert_eq!(
        history(&replica, "worker_locks", "UPDATE").await,
        0,
        "lock renewals are not history"
    );
    assert_eq!(history(&replica, "worker_locks", "DELETE").await, 1);

    // A scratch table created, written and dropped on main before li-sync looks (Synapse's
    // background updates do this): the replica must not stall on it.
    for stmt in [
        "CREATE TABLE _temp_scratch (pos bigint, note text)",
        "INSERT INTO _temp_scratch VALUES (1, 'x')",
        "DROP TABLE _temp_scratch",
    ] {
        synapse.batch_execute(stmt).await.unwrap();
    }
    // A Synapse migration: a new table without any key, a new column on a busy table.
    synapse
        .batch_execute(
            "CREATE TABLE sliding_sync_things (room_id text, value text);
             ALTER TABLE events ADD COLUMN rejection_reason text;
             INSERT INTO sliding_sync_things VALUES ('!r', 'v1'), ('!r', 'v2');
             UPDATE sliding_sync_things SET value = 'v3' WHERE value = 'v1';
             INSERT INTO events VALUES (100, '$e100', '!r', 'm.room.message', 'none');",
        )
        .await
        .expect("UPDATE on a new table without a key works on main (event trigger set FULL)");
    assert!(schema_behind(&replicator, &replica).await.unwrap());
    let report = sync_schema(
        &replicator,
        &mut replica,
        &mut locker,
        &cfg,
        "replicator-pw",
    )
    .await
    .unwrap();
    assert_eq!(
        report.new_tables,
        vec![
            "_temp_scratch".to_string(),
            "sliding_sync_things".to_string()
        ]
    );
    assert!(report.refreshed);
    wait_for("migration absorbed", Duration::from_secs(30), async || {
        count(
            &replica,
            "SELECT count(*) FROM public.events WHERE rejection_reason = 'none'",
        )
        .await
            == 1
            && count(&replica, "SELECT count(*) FROM public.sliding_sync_things").await == 2
    })
    .await;
    // Replayed change by change, not copied: the UPDATE made before the table joined is history.
    assert_eq!(history(&replica, "sliding_sync_things", "UPDATE").await, 1);
    assert!(!schema_behind(&replicator, &replica).await.unwrap());

    // Main drops a subscribed table (a finished `_temp_*` scratch table; dropped during its
    // initial copy, that copy fails forever with "not found on publisher"): the subscription lets
    // go of it, the replica keeps its rows.
    synapse
        .batch_execute("DROP TABLE sliding_sync_things")
        .await
        .unwrap();
    assert!(schema_behind(&replicator, &replica).await.unwrap());
    let report = sync_schema(
        &replicator,
        &mut replica,
        &mut locker,
        &cfg,
        "replicator-pw",
    )
    .await
    .unwrap();
    assert!(report.refreshed);
    assert_eq!(
        count(
            &replica,
            "SELECT count(*) FROM pg_subscription_rel r JOIN pg_class c ON c.oid = r.srrelid
              WHERE c.relname = 'sliding_sync_things'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&replica, "SELECT count(*) FROM public.sliding_sync_things").await,
        2
    );
    assert!(!schema_behind(&replicator, &replica).await.unwrap());

    // The replica is down for a while under writes, then catches up with nothing missing.
    drop(replica);
    drop(locker);
    li.stop();
    for i in 0..20 {
        synapse
            .batch_execute(&format!(
                "INSERT INTO events SELECT s, '$e' || s, '!r', 'm.room.message', NULL FROM generate_series({a}, {b}) s;
                 INSERT INTO event_json SELECT '$e' || s, '!r', '{{\"n\": ' || s || '}}' FROM generate_series({a}, {b}) s;
                 UPDATE event_json SET json = '{{}}' WHERE event_id = '$e{c}';",
                a = 1000 + i * 50,
                b = 1049 + i * 50,
                c = 1000 + i * 50,
            ))
            .await
            .unwrap();
    }
    li.start_again();
    let replica = connect(&li.dsn("li_sync", "synapse_li")).await;
    wait_for("catch-up", Duration::from_secs(60), async || {
        count(&replica, "SELECT count(*) FROM public.events").await
            == count(&synapse, "SELECT count(*) FROM events").await
    })
    .await;
    for (table, order) in [("events", "stream_ordering"), ("event_json", "event_id")] {
        let main_rows = rows_digest(&synapse, table, order).await;
        // The replica's events has the same columns in the same order: compare whole rows.
        wait_for("identical rows", Duration::from_secs(30), async || {
            rows_digest(&replica, &format!("public.{table}"), order).await == main_rows
        })
        .await;
    }
    assert_eq!(
        history(&replica, "event_json", "UPDATE").await,
        21,
        "every censoring during the outage is kept"
    );
    assert!(
        !main.log().contains("does not have a replica identity"),
        "{}",
        main.log()
    );
}
