//! Dump mode and the working copy against real PostgreSQL clusters: a dump keeps what main
//! removed between runs, swaps atomically, locks, records its runs; the working copy gets the
//! replica's data, Synapse LI's ownership, sequences no lower than any id, and no credentials.

mod common;
mod support;

use std::time::Duration;

use common::{config, connect, count};
use mxstack_li_sync::bulk::{self, Job};
use mxstack_li_sync::config::SyncMode;
use mxstack_li_sync::replica::{copy_sequences, prepare_main, sync_schema};
use mxstack_li_sync::{dump, status, working_copy};
use tokio_postgres::Client;

/// Synapse's kinds of tables, a stream sequence, a keyless table with equal rows, bytea, arrays,
/// a generated column, and credentials.
const SCHEMA: &str = "
CREATE SEQUENCE events_stream_seq;
CREATE TABLE events (stream_ordering bigint NOT NULL, event_id text NOT NULL, room_id text NOT NULL, type text);
CREATE UNIQUE INDEX events_order ON events (stream_ordering);
CREATE TABLE event_json (event_id text NOT NULL, room_id text NOT NULL, json text NOT NULL);
CREATE UNIQUE INDEX event_json_id ON event_json (event_id);
CREATE TABLE event_edges (event_id text NOT NULL, prev_event_id text NOT NULL);
CREATE TABLE media (media_id text PRIMARY KEY, sha256 bytea, tags text[], size bigint, size_kib bigint GENERATED ALWAYS AS (size / 1024) STORED);
CREATE TABLE access_tokens (id bigint PRIMARY KEY, user_id text NOT NULL, token text NOT NULL);
CREATE TABLE rooms (room_id text PRIMARY KEY);
CREATE TABLE room_aliases (room_alias text PRIMARY KEY, room_id text NOT NULL REFERENCES rooms (room_id));
CREATE TABLE stream_positions (stream_name text NOT NULL, instance_name text NOT NULL, stream_id bigint NOT NULL);
CREATE UNIQUE INDEX stream_positions_idx ON stream_positions (stream_name, instance_name);
";

async fn write_events(synapse: &Client, from: i64, to: i64) {
    synapse
        .batch_execute(&format!(
            "INSERT INTO events SELECT nextval('events_stream_seq'), '$e' || i, '!r', 'm.room.message' FROM generate_series({from}, {to}) i;
             INSERT INTO event_json SELECT '$e' || i, '!r', '{{\"body\": \"secret ' || i || '\"}}' FROM generate_series({from}, {to}) i;
             INSERT INTO event_edges SELECT '$e' || i, '$e' || (i - 1) FROM generate_series({from}, {to}) i;"
        ))
        .await
        .unwrap();
}

/// A fingerprint of a table's rows in a fixed order.
async fn digest(db: &Client, table: &str) -> String {
    db.query_one(
        &format!(
            "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"
        ),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn same_rows(a: &Client, b: &Client, tables: &[&str]) {
    for t in tables {
        assert_eq!(digest(a, t).await, digest(b, t).await, "{t} differs");
    }
}

async fn removed_bodies(replica: &Client) -> Vec<String> {
    replica
        .query(
            "SELECT old_row->>'json' FROM mxstack_li.row_history
              WHERE table_name = 'event_json' AND operation = 'REMOVED' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

const TABLES: [&str; 8] = [
    "events",
    "event_json",
    "event_edges",
    "media",
    "access_tokens",
    "stream_positions",
    "rooms",
    "room_aliases",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_mode_keeps_what_main_removed_and_swaps_atomically() {
    let (main, li) = common::clusters();
    let synapse = connect(&main.dsn("synapse", "synapse")).await;
    synapse.batch_execute(SCHEMA).await.unwrap();
    let admin = connect(&main.dsn("postgres", "synapse")).await;
    prepare_main(&admin, "synapse", Some("pw")).await.unwrap();
    write_events(&synapse, 1, 200).await;
    synapse
        .batch_execute(
            "INSERT INTO event_edges VALUES ('$dup', '$p'), ('$dup', '$p');
             INSERT INTO media VALUES ('m1', '\\x00ff10', '{a,b}', 4096), ('m2', NULL, NULL, 10);
             INSERT INTO access_tokens VALUES (1, '@a', 'syt_secret_a');
             INSERT INTO stream_positions VALUES ('events', 'master', 200);
             INSERT INTO rooms VALUES ('!r');
             INSERT INTO room_aliases VALUES ('#r:x', '!r');",
        )
        .await
        .unwrap();
    let cfg = config(&main, &li, SyncMode::Dump);
    let replica = connect(&li.dsn("li_sync", "synapse_li")).await;
    let lines = std::sync::Mutex::new(Vec::new());
    let progress = |l: &str| lines.lock().unwrap().push(l.to_string());

    // First run: a full copy, sequences included.
    let r = dump::run(&cfg, &progress).await.unwrap();
    assert_eq!(r.figures.tables, 8);
    assert_eq!(r.figures.rows_copied, 200 * 3 + 2 + 2 + 1 + 1 + 2);
    assert_eq!(r.figures.history_rows, 0);
    assert!(r.schema_statements > 0);
    assert_eq!(lines.lock().unwrap().len(), 8, "a progress line per table");
    assert_eq!(
        count(
            &replica,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
        )
        .await,
        0,
        "the replica accepts rows whose parent main deleted"
    );
    same_rows(&synapse, &replica, &TABLES).await;
    assert_eq!(
        count(&replica, "SELECT last_value FROM events_stream_seq").await,
        200
    );
    assert_eq!(
        count(&replica, "SELECT size_kib FROM media WHERE media_id = 'm1'").await,
        4,
        "generated column computed on the replica"
    );

    // Main censors, deletes, removes one of two equal keyless rows, and writes more.
    synapse
        .batch_execute(
            "UPDATE event_json SET json = '{}' WHERE event_id = '$e7';
             DELETE FROM events WHERE stream_ordering <= 3;
             DELETE FROM event_json WHERE event_id = '$e9';
             DELETE FROM event_edges WHERE ctid = (SELECT min(ctid) FROM event_edges WHERE event_id = '$dup');
             UPDATE stream_positions SET stream_id = 250;",
        )
        .await
        .unwrap();
    write_events(&synapse, 201, 250).await;
    let r = dump::run(&cfg, &|_| {}).await.unwrap();
    same_rows(&synapse, &replica, &TABLES).await;
    // 1 censored + 1 deleted event_json, 3 events, 1 of the equal edges; the stream position
    // moved (its table is replaced) but bookkeeping is not kept in history.
    assert_eq!(r.figures.history_rows, 6, "{r:?}");
    assert_eq!(
        r.figures.tables_changed, 4,
        "media and access_tokens unchanged"
    );
    assert_eq!(
        count(
            &replica,
            "SELECT count(*) FROM mxstack_li.row_history WHERE table_name = 'stream_positions'"
        )
        .await,
        0
    );
    let bodies = removed_bodies(&replica).await;
    assert!(
        bodies.contains(&"{\"body\": \"secret 7\"}".to_string()),
        "{bodies:?}"
    );
    assert!(
        bodies.contains(&"{\"body\": \"secret 9\"}".to_string()),
        "{bodies:?}"
    );
    assert_eq!(
        count(&replica, "SELECT count(*) FROM mxstack_li.row_history WHERE table_name = 'events' AND operation = 'REMOVED'").await,
        3
    );
    assert_eq!(
        count(&replica, "SELECT last_value FROM events_stream_seq").await,
        250
    );

    // Nothing changed: nothing replaced, nothing added to history.
    let r = dump::run(&cfg, &|_| {}).await.unwrap();
    assert_eq!((r.figures.tables_changed, r.figures.history_rows), (0, 0));

    // Another run holds the lock: refused, saying so, and no run recorded.
    let holder = connect(&li.dsn("li_sync", "synapse_li")).await;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&0x6d78_4c49_0001_i64])
        .await
        .unwrap();
    let runs = count(&replica, "SELECT count(*) FROM mxstack_li.sync_runs").await;
    let e = dump::run(&cfg, &|_| {}).await.unwrap_err();
    assert!(e.0.contains("holds the lock"), "{e}");
    assert_eq!(
        count(&replica, "SELECT count(*) FROM mxstack_li.sync_runs").await,
        runs
    );
    drop(holder);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A run that fails half-way (main refuses one table) changes nothing and records why.
    synapse
        .batch_execute("DELETE FROM events WHERE stream_ordering = 4")
        .await
        .unwrap();
    admin
        .batch_execute("REVOKE SELECT ON media FROM li_replicator")
        .await
        .unwrap();
    let before = digest(&replica, "events").await;
    let e = dump::run(&cfg, &|_| {}).await.unwrap_err();
    assert!(e.0.contains("permission denied"), "{e}");
    assert_eq!(digest(&replica, "events").await, before, "rolled back");
    let last = bulk::last_run(&replica, Job::Dump).await.unwrap().unwrap();
    assert_eq!(last.status, "failed");
    assert!(last.error.unwrap().contains("permission denied"));
    assert_eq!((last.total_runs, last.failed_runs), (4, 1));
    admin
        .batch_execute("GRANT SELECT ON media TO li_replicator")
        .await
        .unwrap();

    // Status reports the checkpoint.
    dump::run(&cfg, &|_| {}).await.unwrap();
    let replicator = connect(&main.dsn("li_replicator", "synapse")).await;
    let s = status::collect(&replicator, &replica, &cfg, true)
        .await
        .unwrap();
    let d = s.last_dump.expect("last dump in status");
    assert_eq!(d.status, "success");
    assert!(d.last_success_unix.is_some());

    // The working copy from the dump replica: same rows, Synapse LI owns it, no credentials.
    let r = working_copy::refresh(&cfg, &|_| {}).await.unwrap();
    assert_eq!(r.credentials_removed, 1);
    let work = connect(&li.dsn("li_sync", "synapse_li_work")).await;
    same_rows(
        &replica,
        &work,
        &["events", "event_json", "event_edges", "media"],
    )
    .await;
    assert_eq!(count(&work, "SELECT count(*) FROM access_tokens").await, 0);
    assert_eq!(
        count(
            &work,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conname = 'room_aliases_room_id_fkey' AND NOT convalidated"
        )
        .await,
        1,
        "main's foreign keys, NOT VALID, for Synapse LI"
    );
    assert_eq!(
        count(
            &work,
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S') AND pg_get_userbyid(c.relowner) <> 'synapse_li'"
        )
        .await,
        0,
        "every table and sequence belongs to Synapse LI's role"
    );
    assert_eq!(
        count(&work, "SELECT last_value FROM events_stream_seq").await,
        250
    );
    // Synapse LI's own writes are replaced by the next refresh, without duplicates.
    let synapse_li = connect(&li.dsn("synapse_li", "synapse_li_work")).await;
    synapse_li
        .batch_execute(
            "INSERT INTO access_tokens VALUES (9, '@investigator', 't'); DELETE FROM events",
        )
        .await
        .unwrap();
    working_copy::refresh(&cfg, &|_| {}).await.unwrap();
    same_rows(&replica, &work, &["events", "event_json"]).await;
    assert_eq!(count(&work, "SELECT count(*) FROM access_tokens").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn working_copy_waits_for_sequences_newer_than_its_snapshot() {
    let (main, li) = common::clusters();
    let synapse = connect(&main.dsn("synapse", "synapse")).await;
    synapse.batch_execute(SCHEMA).await.unwrap();
    let admin = connect(&main.dsn("postgres", "synapse")).await;
    prepare_main(&admin, "synapse", Some("pw")).await.unwrap();
    write_events(&synapse, 1, 100).await;
    let cfg = config(&main, &li, SyncMode::Logical);
    let replicator = connect(&main.dsn("li_replicator", "synapse")).await;
    let mut replica = connect(&li.dsn("li_sync", "synapse_li")).await;
    let mut locker = connect(&li.dsn("li_sync", "synapse_li")).await;
    sync_schema(&replicator, &mut replica, &mut locker, &cfg, "pw")
        .await
        .unwrap();
    let caught_up = async |replica: &Client, n: i64| {
        for _ in 0..300 {
            if count(replica, "SELECT count(*) FROM events").await == n
                && count(
                    replica,
                    "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'",
                )
                .await
                    == 0
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("replica did not catch up to {n} events");
    };
    caught_up(&replica, 100).await;
    copy_sequences(&replicator, &replica).await.unwrap();
    assert_eq!(
        count(&replica, "SELECT last_value FROM events_stream_seq").await,
        100
    );

    // Main moves on; the replica applies it, but the sequence copy is older than that.
    write_events(&synapse, 101, 150).await;
    caught_up(&replica, 150).await;
    let cfg2 = cfg.clone();
    let refresh = tokio::spawn(async move { working_copy::refresh(&cfg2, &|_| {}).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !refresh.is_finished(),
        "the refresh waits for newer sequence values"
    );
    copy_sequences(&replicator, &replica).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), refresh)
        .await
        .expect("refresh finished after the copy")
        .unwrap()
        .unwrap();
    assert!(r.figures.main_lsn.is_some());
    let work = connect(&li.dsn("li_sync", "synapse_li_work")).await;
    assert_eq!(count(&work, "SELECT count(*) FROM events").await, 150);
    assert!(
        count(&work, "SELECT last_value FROM events_stream_seq").await
            >= count(&work, "SELECT max(stream_ordering) FROM events").await,
        "no sequence behind its table: Synapse LI starts"
    );
    // The dump job refuses a replica that has a subscription.
    let e = dump::run(&cfg, &|_| {}).await.unwrap_err();
    assert!(e.0.contains("has a subscription"), "{e}");
}
