//! The LI console (feature `li`): its config file, the one source for both targets (the
//! Kubernetes ConfigMap and `mxstack up`). The file holds no secret: every credential is named by
//! the environment variable that carries it.

use mxstack_service_config::li_console::{ConsoleConfig, KeyVault, Media, Replica};
use serde_json::Value;

use crate::escrow::ENV_RETRIEVAL_API_KEY;

/// The console's read-only role on the LI cluster (a member of `pg_read_all_data`, nothing else).
pub const CONSOLE_DB_ROLE: &str = "li_console";
/// The console's SQLite file (accounts, sessions, warrants, audit log) in its state directory.
pub const CONSOLE_SQLITE_FILE: &str = "li-console.sqlite3";
pub const ENV_DB_PASSWORD: &str = "MXSTACK_LI_CONSOLE_DB_PASSWORD";
pub const ENV_VAULT_IDENTITY: &str = "MXSTACK_LI_CONSOLE_VAULT_IDENTITY";
pub const ENV_SIGNING_KEY: &str = "MXSTACK_LI_CONSOLE_SIGNING_KEY";
pub const ENV_S3_ACCESS_KEY: &str = "MXSTACK_LI_CONSOLE_S3_ACCESS_KEY";
pub const ENV_S3_SECRET_KEY: &str = "MXSTACK_LI_CONSOLE_S3_SECRET_KEY";

/// Where the console finds everything it talks to.
pub struct ConsoleEndpoints<'a> {
    pub listen: &'a str,
    pub database: &'a str,
    pub server_name: &'a str,
    /// `(host, port, dbname)` of the LI replica.
    pub replica: (&'a str, u16, &'a str),
    pub key_vault_url: &'a str,
    /// `(endpoint URL, bucket, region)` of the LI media bucket.
    pub media: (&'a str, &'a str, &'a str),
    /// clamd `host:port`, when feature `antivirus` is on.
    pub clamd: Option<String>,
    /// Behind TLS (Kubernetes): the session cookie gets `Secure`.
    pub secure_cookies: bool,
    /// `host:port` of the Prometheus listener (`/metrics` only), apart from the pages.
    pub metrics_listen: Option<&'a str>,
}

/// The console's config file (`mxstack serve li-console --config`), as the value the targets
/// write out. See [`console_config_typed`].
pub fn console_config(e: &ConsoleEndpoints) -> Value {
    crate::service_config_value(&console_config_typed(e))
}

/// The console's config as the type the console reads.
pub fn console_config_typed(e: &ConsoleEndpoints) -> ConsoleConfig {
    ConsoleConfig {
        listen: e.listen.to_string(),
        database: e.database.into(),
        server_name: e.server_name.to_string(),
        replica: Replica {
            host: e.replica.0.to_string(),
            port: e.replica.1,
            dbname: e.replica.2.to_string(),
            user: CONSOLE_DB_ROLE.into(),
            password_env: ENV_DB_PASSWORD.into(),
        },
        key_vault: KeyVault {
            url: e.key_vault_url.to_string(),
            retrieval_api_key_env: ENV_RETRIEVAL_API_KEY.into(),
        },
        vault_identity_env: ENV_VAULT_IDENTITY.into(),
        signing_key_env: ENV_SIGNING_KEY.into(),
        media: Some(Media {
            endpoint: e.media.0.to_string(),
            bucket: e.media.1.to_string(),
            region: e.media.2.to_string(),
            access_key_env: ENV_S3_ACCESS_KEY.into(),
            secret_key_env: ENV_S3_SECRET_KEY.into(),
        }),
        secure_cookies: e.secure_cookies,
        clamd: e.clamd.clone(),
        metrics_listen: e.metrics_listen.map(str::to_string),
    }
}

/// SQL that creates the console's role on the LI cluster (local runner; on Kubernetes the
/// CloudNativePG Cluster's managed roles do the same): login, read everything, write nothing.
pub fn console_role_sql(password: &str) -> String {
    let pw = password.replace('\'', "''");
    let alter = crate::pgsql::with_secret(&format!(
        "ALTER ROLE {CONSOLE_DB_ROLE} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD '{pw}';"
    ));
    format!(
        "DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{CONSOLE_DB_ROLE}') THEN
    CREATE ROLE {CONSOLE_DB_ROLE} LOGIN;
  END IF;
END $$;
{alter}GRANT pg_read_all_data TO {CONSOLE_DB_ROLE};
"
    )
}
