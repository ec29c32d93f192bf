//! `mxstack serve li-sync`: keeps the replica's schema up with main, copies media, and serves
//! /health, /status (JSON) and /metrics. Every failure is retried; none stops the process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_postgres::{Client, NoTls};

use crate::config::{Database, DatabaseExt, LiSyncConfig, MediaConfigExt, SyncMode};
use crate::media::MediaSync;
use crate::replica::{sync_schema, ReplicaError};
use crate::status::{collect, metrics_text, Counters, LiStatus};

#[derive(Default)]
struct Shared {
    status: Mutex<Option<LiStatus>>,
    counters: Mutex<Counters>,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, what: &str, e: impl std::fmt::Display) {
        let msg = format!("{what}: {e}");
        eprintln!("li-sync: {msg}");
        *self.last_error.lock().unwrap() = Some(msg);
    }
}

/// Connect with the password from the environment; the connection task runs in the background.
pub async fn connect(db: &Database) -> Result<Client, ReplicaError> {
    let password = db.password().map_err(|e| ReplicaError(e.0))?;
    let (client, conn) = db.pg_config(&password).connect(NoTls).await.map_err(|e| {
        ReplicaError(format!(
            "connecting to {}@{}:{}/{}: {}",
            db.user,
            db.host,
            db.port,
            db.dbname,
            ReplicaError::from(e)
        ))
    })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn replica_loop(config: Arc<LiSyncConfig>, shared: Arc<Shared>) {
    let main_password = match config.main.password() {
        Ok(p) => p,
        Err(e) => return shared.error("config", e),
    };
    loop {
        let result: Result<(), ReplicaError> = async {
            let main = connect(&config.main).await?;
            let mut replica = connect(&config.replica).await?;
            let mut locker = connect(&config.replica).await?;
            if config.mode == SyncMode::Logical {
                let r = sync_schema(&main, &mut replica, &mut locker, &config, &main_password).await?;
                eprintln!(
                    "li-sync: replica in step with main's schema ({} new tables, {} statements)",
                    r.new_tables.len(),
                    r.statements.len()
                );
                if r.connection_updated {
                    eprintln!("li-sync: the subscription connects with the current li_replicator password");
                }
            }
            let mut since_schema_check = Duration::ZERO;
            let tick = Duration::from_secs(config.status_interval_secs.max(1));
            loop {
                if config.mode == SyncMode::Logical && replica_ready(&replica).await? {
                    crate::replica::copy_sequences(&main, &replica).await?;
                }
                let status = collect(&main, &replica, &config, false).await?;
                if config.mode == SyncMode::Logical
                    && since_schema_check >= Duration::from_secs(config.schema_check_interval_secs)
                {
                    since_schema_check = Duration::ZERO;
                    // The status just compared the schemas. A disabled subscription is
                    // resumed by the same call (only sync_schema pauses it; an error or a crash
                    // between its pause and resume leaves it to this check).
                    if status.schema_behind || (status.subscribed && !status.subscription_enabled) {
                        let r = sync_schema(&main, &mut replica, &mut locker, &config, &main_password).await?;
                        eprintln!(
                            "li-sync: schema upgrade applied: new tables {:?}, {} statements, refreshed {}",
                            r.new_tables, r.statements.len(), r.refreshed
                        );
                        for n in &r.not_applied {
                            eprintln!("li-sync: not applied (needs an operator): {n}");
                        }
                        shared.counters.lock().unwrap().schema_upgrades_applied += 1;
                    }
                }
                *shared.status.lock().unwrap() = Some(status);
                *shared.last_error.lock().unwrap() = None;
                tokio::time::sleep(tick).await;
                since_schema_check += tick;
            }
        }
        .await;
        if let Err(e) = result {
            shared.error("replica", e);
            *shared.status.lock().unwrap() = None;
            shared.counters.lock().unwrap().collect_errors += 1;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The replica's LI schema exists (li-sync created it; sequence values have a place to go).
async fn replica_ready(replica: &Client) -> Result<bool, ReplicaError> {
    Ok(replica
        .query_one(
            "SELECT pg_catalog.to_regclass('mxstack_li.sequence_sync') IS NOT NULL",
            &[],
        )
        .await?
        .get(0))
}

/// Dump mode where no scheduler runs `mxstack li dump` (the local runner): one run at start,
/// then one every `dump_interval_secs`.
async fn dump_loop(config: Arc<LiSyncConfig>, shared: Arc<Shared>) {
    let Some(every) = config.dump_interval_secs else {
        return;
    };
    if config.mode != SyncMode::Dump {
        return;
    }
    let every = Duration::from_secs(every.max(10));
    loop {
        match crate::dump::run(&config, &|_| {}).await {
            Ok(r) => eprintln!(
                "li-sync: dump run {} done in {:.1} s: {} rows, {} tables replaced, {} rows kept in history",
                r.run_id, r.seconds, r.figures.rows_copied, r.figures.tables_changed, r.figures.history_rows
            ),
            Err(e) => shared.error("dump", e),
        }
        tokio::time::sleep(every).await;
    }
}

async fn media_loop(config: Arc<LiSyncConfig>, shared: Arc<Shared>) {
    let Some(media) = config.media.clone() else {
        return;
    };
    let (access, secret) = match media.credentials() {
        Ok(c) => c,
        Err(e) => return shared.error("media config", e),
    };
    let sync = match MediaSync::new(&media, access, secret) {
        Ok(s) => s,
        Err(e) => return shared.error("media config", e),
    };
    let interval = Duration::from_secs(media.interval_secs.max(1));
    // Let the replica loop create the LI schema first (two CREATE SCHEMA IF NOT EXISTS at once
    // can collide).
    for _ in 0..60 {
        if shared.status.lock().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    loop {
        let result: Result<(), String> = async {
            let replica = connect(&config.replica).await.map_err(|e| e.to_string())?;
            MediaSync::ensure_ledger(&replica)
                .await
                .map_err(|e| e.to_string())?;
            loop {
                let report = sync.sync_once(&replica).await.map_err(|e| e.to_string())?;
                {
                    let mut c = shared.counters.lock().unwrap();
                    c.media_copied += report.copied;
                    c.media_copy_errors += report.errors;
                }
                if report.copied > 0 || report.errors > 0 {
                    eprintln!(
                        "li-sync: media pass: {} copied, {} errors, {} left",
                        report.copied, report.errors, report.backlog
                    );
                }
                tokio::time::sleep(interval).await;
            }
        }
        .await;
        if let Err(e) = result {
            shared.error("media", e);
        }
        tokio::time::sleep(interval).await;
    }
}

async fn health() -> &'static str {
    "ok"
}

async fn status(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let status = shared.status.lock().unwrap().clone();
    let error = shared.last_error.lock().unwrap().clone();
    let code = if status.is_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(serde_json::json!({ "status": status, "last_error": error })),
    )
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let status = shared.status.lock().unwrap().clone();
    let counters = shared.counters.lock().unwrap().clone();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_text(status.as_ref(), &counters),
    )
}

/// Run until SIGTERM/SIGINT.
pub async fn run(config: LiSyncConfig) -> Result<(), String> {
    // Fail at once on missing credentials rather than in a retry loop.
    config.main.password().map_err(|e| e.0)?;
    config.replica.password().map_err(|e| e.0)?;
    if let Some(m) = &config.media {
        m.credentials().map_err(|e| e.0)?;
    }
    let config = Arc::new(config);
    let shared = Arc::new(Shared::default());
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", config.listen))?;
    eprintln!(
        "li-sync: {} mode, listening on {}",
        format!("{:?}", config.mode).to_lowercase(),
        config.listen
    );
    let app = Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(shared.clone());
    tokio::spawn(replica_loop(config.clone(), shared.clone()));
    tokio::spawn(media_loop(config.clone(), shared.clone()));
    tokio::spawn(dump_loop(config.clone(), shared.clone()));
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| e.to_string())
}
