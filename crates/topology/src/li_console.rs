//! The LI console (feature `li`): its config file, the one source for both targets (the
//! Kubernetes ConfigMap and `mxstack up`). The file holds no secret: every credential is named by
//! the environment variable that carries it.

use serde_json::{json, Value};

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

/// The console's config file (`mxstack serve li-console --config`).
pub fn console_config(e: &ConsoleEndpoints) -> Value {
    let mut v = json!({
        "listen": e.listen,
        "database": e.database,
        "server_name": e.server_name,
        "replica": {
            "host": e.replica.0,
            "port": e.replica.1,
            "dbname": e.replica.2,
            "user": CONSOLE_DB_ROLE,
            "password_env": ENV_DB_PASSWORD,
        },
        "key_vault": { "url": e.key_vault_url, "retrieval_api_key_env": ENV_RETRIEVAL_API_KEY },
        "vault_identity_env": ENV_VAULT_IDENTITY,
        "signing_key_env": ENV_SIGNING_KEY,
        "media": {
            "endpoint": e.media.0,
            "bucket": e.media.1,
            "region": e.media.2,
            "access_key_env": ENV_S3_ACCESS_KEY,
            "secret_key_env": ENV_S3_SECRET_KEY,
        },
        "secure_cookies": e.secure_cookies,
    });
    if let Some(c) = &e.clamd {
        v["clamd"] = json!(c);
    }
    if let Some(m) = e.metrics_listen {
        v["metrics_listen"] = json!(m);
    }
    v
}

/// SQL that creates the console's role on the LI cluster (local runner; on Kubernetes the
/// CloudNativePG Cluster's managed roles do the same): login, read everything, write nothing.
pub fn console_role_sql(password: &str) -> String {
    let pw = password.replace('\'', "''");
    format!(
        "DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{CONSOLE_DB_ROLE}') THEN
    CREATE ROLE {CONSOLE_DB_ROLE} LOGIN;
  END IF;
END $$;
ALTER ROLE {CONSOLE_DB_ROLE} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD '{pw}';
GRANT pg_read_all_data TO {CONSOLE_DB_ROLE};
"
    )
}
