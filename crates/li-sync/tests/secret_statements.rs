//! A statement that carries a password never reaches PostgreSQL's log, even when it fails.
//! PostgreSQL logs the text of a failed statement (`log_min_error_statement`); CI once found the
//! li_replicator password in the LI cluster's log after a rotation. li-sync's subscription
//! statements run through `replica::execute_with_secret`, and the setup scripts put each
//! password statement inside `mxstack_topology::pgsql::with_secret`.

mod common;
mod support;

use common::connect;
use mxstack_li_sync::replica::execute_with_secret;
use mxstack_topology::pgsql;
use support::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_statement_with_a_password_is_not_logged_and_later_ones_are() {
    let pg = PgCluster::start();
    let db = connect(&pg.dsn("postgres", "postgres")).await;

    // Without the settings the server logs the statement: the check below can fail.
    let plain = "ALTER SUBSCRIPTION missing_a CONNECTION 'password=plain-marker-1'";
    assert!(db.batch_execute(plain).await.is_err());

    // li-sync's path: the error is logged, the statement is not.
    let secret = "ALTER SUBSCRIPTION missing_b CONNECTION 'password=secret-marker-2'";
    let e = execute_with_secret(&db, secret).await.unwrap_err();
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("missing_b"), "{e:?}");

    // A setup script's path (psql sends each statement on its own and stops at the error).
    let script = pgsql::with_secret("ALTER ROLE missing_role WITH PASSWORD 'secret-marker-3';");
    let other = connect(&pg.dsn("postgres", "postgres")).await;
    let mut failed = false;
    for statement in script.split_inclusive(";\n") {
        if other.batch_execute(statement).await.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the script's ALTER ROLE should fail: {script}");

    // The session that ran the secret statement logs statements again afterwards.
    assert!(db
        .batch_execute("SELECT * FROM missing_table_4")
        .await
        .is_err());

    // The server writes the log line before it sends the error.
    let log = pg.log();
    assert!(
        log.contains("plain-marker-1"),
        "control: the plain statement is logged\n{log}"
    );
    assert!(
        log.contains("\"missing_b\" does not exist"),
        "the error is still logged\n{log}"
    );
    assert!(log.contains("\"missing_role\" does not exist"), "{log}");
    assert!(
        !log.contains("secret-marker-2"),
        "li-sync's statement was logged"
    );
    assert!(
        !log.contains("secret-marker-3"),
        "the setup script's statement was logged"
    );
    assert!(
        log.contains("STATEMENT:  SELECT * FROM missing_table_4"),
        "{log}"
    );
}
