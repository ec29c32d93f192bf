//! li-sync's config file (rendered by `mxstack_topology::li::li_sync_config`). It holds no secret:
//! every password and key is read from the environment variable the file names.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
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
    pub media: Option<MediaConfig>,
    pub schema_check_interval_secs: u64,
    pub status_interval_secs: u64,
    /// Dump mode: the daemon runs a dump sync itself this often (the local runner). Absent where
    /// a scheduler runs `mxstack li dump` (the Kubernetes CronJob).
    #[serde(default)]
    pub dump_interval_secs: Option<u64>,
    /// The browsing stack's working copy, in the replica's cluster (`mxstack li
    /// refresh-working-copy`).
    #[serde(default)]
    pub working_copy: Option<WorkingCopyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkingCopyConfig {
    /// Database Synapse LI runs on; it is refreshed in place, never dropped.
    pub dbname: String,
    /// Synapse LI's role: owns every object the refresh creates.
    pub owner: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Logical,
    Dump,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    /// Environment variable holding the password.
    pub password_env: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    pub name: String,
    pub publication: String,
    /// Main as the LI PostgreSQL server reaches it (the subscription's conninfo).
    pub main_host: String,
    pub main_port: u16,
}

#[derive(Debug, Clone, Deserialize)]
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

impl Database {
    /// The password from the environment. The error names the variable, never a value.
    pub fn password(&self) -> Result<String, ConfigError> {
        std::env::var(&self.password_env).map_err(|_| {
            ConfigError(format!(
                "environment variable {} (password of {}@{}) is not set",
                self.password_env, self.user, self.host
            ))
        })
    }

    /// A tokio-postgres config for this database.
    pub fn pg_config(&self, password: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .dbname(&self.dbname)
            .user(&self.user)
            .password(password)
            .application_name("mxstack-li-sync")
            .connect_timeout(std::time::Duration::from_secs(10));
        c
    }
}

impl MediaConfig {
    pub fn credentials(&self) -> Result<(String, String), ConfigError> {
        let get = |name: &str| {
            std::env::var(name)
                .map_err(|_| ConfigError(format!("environment variable {name} is not set")))
        };
        Ok((get(&self.access_key_env)?, get(&self.secret_key_env)?))
    }
}
