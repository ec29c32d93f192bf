//! li-sync's config file (rendered by `mxstack_topology::li::li_sync_config`). It holds no secret:
//! every password and key is read from the environment variable the file names.
//!
//! The types and their loading live in `mxstack-service-config`, shared with the writer, so the
//! file written and the file read cannot disagree. What needs li-sync's own dependencies (a
//! tokio-postgres config) or the environment (credentials) is here, as extension traits.

pub use mxstack_service_config::li_sync::{
    ConfigError, Database, LiSyncConfig, MediaConfig, Subscription, SyncMode, WorkingCopyConfig,
};

/// How li-sync connects to a [`Database`] of its config.
pub trait DatabaseExt {
    /// The password from the environment. The error names the variable, never a value.
    fn password(&self) -> Result<String, ConfigError>;
    /// A tokio-postgres config for this database.
    fn pg_config(&self, password: &str) -> tokio_postgres::Config;
}

impl DatabaseExt for Database {
    fn password(&self) -> Result<String, ConfigError> {
        std::env::var(&self.password_env).map_err(|_| {
            ConfigError(format!(
                "environment variable {} (password of {}@{}) is not set",
                self.password_env, self.user, self.host
            ))
        })
    }

    fn pg_config(&self, password: &str) -> tokio_postgres::Config {
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

/// The S3 credentials of li-sync's [`MediaConfig`].
pub trait MediaConfigExt {
    /// `(access key, secret key)` from the environment variables the config names.
    fn credentials(&self) -> Result<(String, String), ConfigError>;
}

impl MediaConfigExt for MediaConfig {
    fn credentials(&self) -> Result<(String, String), ConfigError> {
        let get = |name: &str| {
            std::env::var(name)
                .map_err(|_| ConfigError(format!("environment variable {name} is not set")))
        };
        Ok((get(&self.access_key_env)?, get(&self.secret_key_env)?))
    }
}
