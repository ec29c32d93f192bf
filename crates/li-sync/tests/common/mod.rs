//! Client-side helpers the li-sync tests share: a connection, a count, a wait, and li-sync's
//! config for two test clusters (`support` holds the servers; the LI console's tests include
//! that one too, so these stay apart).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use mxstack_li_sync::config::{Database, LiSyncConfig, Subscription, SyncMode, WorkingCopyConfig};
use tokio_postgres::{Client, NoTls};

use crate::support::PgCluster;

/// Trust authentication in these clusters: the variable only has to exist.
pub const PASSWORD_ENV: &str = "MXSTACK_LI_TEST_PASSWORD";

pub async fn connect(dsn: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

pub async fn count(db: &Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

pub async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Main (role and database `synapse`) and the LI cluster (superuser `li_sync` owning
/// `synapse_li`, and `synapse_li` owning the working copy `synapse_li_work`).
pub fn clusters() -> (PgCluster, PgCluster) {
    let main = PgCluster::start();
    let li = PgCluster::start();
    main.psql(
        "postgres",
        "CREATE ROLE synapse LOGIN; CREATE DATABASE synapse OWNER synapse",
    );
    li.psql(
        "postgres",
        "CREATE ROLE li_sync LOGIN SUPERUSER; CREATE DATABASE synapse_li OWNER li_sync;
         CREATE ROLE synapse_li LOGIN; CREATE DATABASE synapse_li_work OWNER synapse_li",
    );
    (main, li)
}

/// li-sync's config for main and the LI cluster (subscription `mxstack_li`, 1 s intervals).
pub fn config(main: &PgCluster, li: &PgCluster, mode: SyncMode) -> LiSyncConfig {
    std::env::set_var(PASSWORD_ENV, "unused-with-trust");
    let db = |port: u16, dbname: &str, user: &str| Database {
        host: "127.0.0.1".into(),
        port,
        dbname: dbname.into(),
        user: user.into(),
        password_env: PASSWORD_ENV.into(),
    };
    LiSyncConfig {
        listen: "127.0.0.1:0".into(),
        mode,
        main: db(main.port, "synapse", "li_replicator"),
        replica: db(li.port, "synapse_li", "li_sync"),
        subscription: Subscription {
            name: "mxstack_li".into(),
            publication: "mxstack_li".into(),
            main_host: "127.0.0.1".into(),
            main_port: main.port,
        },
        media: None,
        schema_check_interval_secs: 1,
        status_interval_secs: 1,
        dump_interval_secs: None,
        working_copy: Some(WorkingCopyConfig {
            dbname: "synapse_li_work".into(),
            owner: "synapse_li".into(),
        }),
    }
}
