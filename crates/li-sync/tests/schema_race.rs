//! Reading main's schema while Synapse changes it: an index dropped after the read's snapshot is
//! seen by the catalog query but has no definition any more (`pg_get_indexdef` reads the latest
//! catalog). The read must leave it out, not fail; CI once lost `li dump` to it.

mod common;
mod support;

use common::connect;
use mxstack_li_sync::schema::Schema;
use support::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_dropped_during_a_read_are_left_out() {
    let main = PgCluster::start();
    main.psql(
        "postgres",
        "CREATE TABLE events (id bigint NOT NULL, room text);
         CREATE INDEX events_room ON events (room);
         CREATE INDEX events_kept ON events (id);",
    );
    let mut reader = connect(&main.dsn("postgres", "postgres")).await;
    let other = connect(&main.dsn("postgres", "postgres")).await;
    let before = Schema::read(&reader).await.unwrap();
    let events = &before.tables["events"];
    assert_eq!(events.indexes.len(), 2, "{events:?}");

    // The reader's snapshot is taken before the drop; pg_get_indexdef sees after it.
    let tx = reader
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .unwrap();
    tx.query_one("SELECT 1", &[]).await.unwrap();
    other.batch_execute("DROP INDEX events_room").await.unwrap();
    let during = Schema::read(&tx).await.unwrap();
    let events = &during.tables["events"];
    let names: Vec<&str> = events.indexes.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["events_kept"]);
    tx.commit().await.unwrap();
}
