//! li-sync: the lawful-intercept data path.
//!
//! - [`replica`]: makes logical replication of a Synapse database safe (replica identities, an
//!   event trigger on main), copies the schema to the replica before subscribing, keeps every
//!   deleted or rewritten row in history tables, and absorbs Synapse schema upgrades.
//! - [`media`]: copies every media object from the main bucket to the LI bucket, verified, and
//!   never deletes.
//! - [`dump`]: dump mode, a consistent snapshot of main replacing the replica on a schedule,
//!   keeping what each run removes.
//! - [`working_copy`]: the browsing stack's database, refreshed from the replica.
//! - [`status`]: lag, apply errors, slot retention, media backlog, table counts, the last dump
//!   and refresh; Prometheus text.

pub mod bulk;
pub mod config;
pub mod dump;
pub mod media;
pub mod reattach;
pub mod working_copy;

pub use config::LiSyncConfig;
pub mod daemon;
pub mod replica;
pub mod schema;
pub mod status;

use std::path::Path;

use config::DatabaseExt;

/// Environment variables `li prepare-main` reads main's superuser from (the Kubernetes Job gets
/// them from the CloudNativePG superuser secret; never an LI workload).
pub use mxstack_topology::li::{ENV_MAIN_ADMIN_PASSWORD, ENV_MAIN_ADMIN_USER};

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// `mxstack serve li-sync --config FILE`.
pub fn serve(config_path: &Path) -> Result<(), String> {
    let config = LiSyncConfig::load(config_path).map_err(|e| e.0)?;
    runtime()?.block_on(daemon::run(config))
}

/// `mxstack li status`: read both databases once.
pub fn status(config: &LiSyncConfig, with_counts: bool) -> Result<status::LiStatus, String> {
    runtime()?.block_on(async {
        let main = daemon::connect(&config.main).await.map_err(|e| e.0)?;
        let replica = daemon::connect(&config.replica).await.map_err(|e| e.0)?;
        status::collect(&main, &replica, config, with_counts)
            .await
            .map_err(|e| e.0)
    })
}

/// `mxstack li upgrade-schema`: apply main's additive schema difference and refresh now.
pub fn upgrade_schema(config: &LiSyncConfig) -> Result<replica::UpgradeReport, String> {
    let main_password = config.main.password().map_err(|e| e.0)?;
    runtime()?.block_on(async {
        let main = daemon::connect(&config.main).await.map_err(|e| e.0)?;
        let mut replica = daemon::connect(&config.replica).await.map_err(|e| e.0)?;
        let mut locker = daemon::connect(&config.replica).await.map_err(|e| e.0)?;
        replica::sync_schema(&main, &mut replica, &mut locker, config, &main_password)
            .await
            .map_err(|e| e.0)
    })
}

/// `mxstack li dump`: one dump-mode sync now (progress lines on stderr).
pub fn dump(config: &LiSyncConfig) -> Result<dump::DumpReport, String> {
    runtime()?.block_on(async {
        dump::run(config, &|line| eprintln!("{line}"))
            .await
            .map_err(|e| e.0)
    })
}

/// `mxstack li refresh-working-copy`: refresh the browsing stack's database from the replica.
pub fn refresh_working_copy(config: &LiSyncConfig) -> Result<working_copy::RefreshReport, String> {
    runtime()?.block_on(async {
        working_copy::refresh(config, &|line| eprintln!("{line}"))
            .await
            .map_err(|e| e.0)
    })
}

/// `mxstack li reattach` (and `mxstack restore`): the subscription attached again to a restored
/// main, the LI side's rows kept (progress lines on stderr). `None`: no subscription to attach.
pub fn reattach(config: &LiSyncConfig) -> Result<Option<reattach::ReattachReport>, String> {
    runtime()?.block_on(async {
        reattach::reattach(config, &|line| eprintln!("{line}"))
            .await
            .map_err(|e| e.0)
    })
}

/// `mxstack li prepare-main`: the superuser part on main (identities, event trigger, grants,
/// publication), with the superuser from the environment.
pub fn prepare_main(config: &LiSyncConfig, synapse_owner: &str) -> Result<(), String> {
    let admin = config::Database {
        user: std::env::var(ENV_MAIN_ADMIN_USER)
            .map_err(|_| format!("environment variable {ENV_MAIN_ADMIN_USER} is not set"))?,
        password_env: ENV_MAIN_ADMIN_PASSWORD.into(),
        ..config.main.clone()
    };
    runtime()?.block_on(async {
        let db = daemon::connect(&admin).await.map_err(|e| e.0)?;
        replica::prepare_main(&db, synapse_owner, None)
            .await
            .map_err(|e| e.0)
    })
}
