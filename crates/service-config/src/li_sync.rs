//! li-sync's config file (`li-sync.yaml`; written by `mxstack_topology::li::li_sync_config`, read
//! by `mxstack-li-sync` and the `mxstack li ...` commands). It holds no secret: every password and
//! key is read from the environment variable the file names.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiSyncConfig {
    /// HTTP listener for /health, /status and /metrics.
    pub listen: String,
    /// `logical` or `dump`.
    pub mode: SyncMode,
    /// Main's database as li-sync reaches it (the read-only replication role).
    pub main: Database,
    /// The LI replica.
    pub replica: Database,
    pub subscription: Subscription,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaConfig>,
    pub schema_check_interval_secs: u64,
    pub status_interval_secs: u64,
    /// The browsing stack's working copy, in the replica's cluster (`mxstack li
    /// refresh-working-copy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_copy: Option<WorkingCopyConfig>,
    // Last: field order is the file's order, and the local runner's files have always had it at
    // the end (rendered files are compared byte for byte across releases).
    /// Dump mode: the daemon runs a dump sync itself this often (the local runner). Absent where
    /// a scheduler runs `mxstack li dump` (the Kubernetes CronJob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_interval_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkingCopyConfig {
    /// Database Synapse LI runs on; it is refreshed in place, never dropped.
    pub dbname: String,
    /// Synapse LI's role: owns every object the refresh creates.
    pub owner: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Logical,
    Dump,
}

/// A database li-sync connects to.
pub type Database = crate::PgConnection;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    pub name: String,
    pub publication: String,
    /// Main as the LI PostgreSQL server reaches it (the subscription's conninfo).
    pub main_host: String,
    pub main_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// S3 endpoint URL, path-style (e.g. `http://127.0.0.1:8333`).
    pub endpoint: String,
    pub region: String,
    pub main_bucket: String,
    pub li_bucket: String,
    pub access_key_env: String,
    pub secret_key_env: String,
    pub interval_secs: u64,
}

/// A config li-sync cannot use: unreadable or invalid, or a credential it names is not set.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl LiSyncConfig {
    pub fn load(path: &std::path::Path) -> Result<LiSyncConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        serde_saphyr::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }
}
