//! The console's config file. It holds no secret: every credential is read from the environment
//! variable the file names (the Kubernetes Secret or `mxstack up` sets them).

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// `host:port` to listen on.
    pub listen: String,
    /// The console's own SQLite file: accounts, sessions, warrants, the audit log.
    pub database: PathBuf,
    /// Matrix server name of the deployment (`@user:<server_name>`).
    pub server_name: String,
    /// The LI replica (read only: the role is a member of `pg_read_all_data`).
    pub replica: Replica,
    pub key_vault: KeyVault,
    /// Environment variable holding the age identity (`AGE-SECRET-KEY-1...`) that opens what the
    /// vault stores.
    pub vault_identity_env: String,
    /// Environment variable holding the console's Ed25519 signing key (32-byte seed, base64):
    /// evidence manifests are signed with it.
    pub signing_key_env: String,
    /// The LI media bucket (read only). Absent: media is listed but not served.
    #[serde(default)]
    pub media: Option<Media>,
    /// clamd `host:port`: media is scanned before it is shown or exported. Absent: media is
    /// refused (never served unscanned).
    #[serde(default)]
    pub clamd: Option<String>,
    /// Set the session cookie's `Secure` flag (behind TLS; off for the local loopback run).
    #[serde(default = "yes")]
    pub secure_cookies: bool,
    /// `host:port` of a second listener serving only `/metrics` (Prometheus), so the pages'
    /// listener, which the edge exposes, never serves it.
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replica {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    /// Environment variable holding the password.
    pub password_env: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVault {
    /// Base URL, e.g. `http://key-vault:8092`.
    pub url: String,
    /// Environment variable holding the vault's retrieval API key.
    pub retrieval_api_key_env: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// S3 endpoint URL (path-style requests).
    pub endpoint: String,
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    pub access_key_env: String,
    pub secret_key_env: String,
}

fn default_region() -> String {
    "us-east-1".into()
}

impl ConsoleConfig {
    pub fn load(path: &Path) -> Result<ConsoleConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Reads a credential from the environment variable a config field names; the error names the
/// variable and the field, never a value.
pub fn env_secret(var: &str, field: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(format!(
            "environment variable {var} (named by `{field}`) is not set: the console needs it"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxstack_topology::li_console::{console_config, ConsoleEndpoints};

    #[test]
    fn the_topology_renders_a_config_the_console_reads() {
        let v = console_config(&ConsoleEndpoints {
            listen: "0.0.0.0:8093",
            database: "/data/li-console.sqlite3",
            server_name: "acme.test",
            replica: ("li-pg-rw", 5432, "synapse_li"),
            key_vault_url: "http://key-vault:8092",
            media: ("http://s3:8333", "media-li", "us-east-1"),
            clamd: Some("clamav:3310".into()),
            secure_cookies: true,
            metrics_listen: Some("0.0.0.0:9094"),
        });
        let text = serde_saphyr::to_string(&v).unwrap();
        let c: ConsoleConfig = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(c.replica.user, "li_console");
        assert_eq!(c.clamd.as_deref(), Some("clamav:3310"));
        assert_eq!(c.media.unwrap().bucket, "media-li");
        assert!(c.secure_cookies);
        assert_eq!(c.metrics_listen.as_deref(), Some("0.0.0.0:9094"));
        let missing = env_secret("MXSTACK_TEST_SURELY_UNSET", "replica.password_env").unwrap_err();
        assert!(
            missing.contains("MXSTACK_TEST_SURELY_UNSET")
                && missing.contains("replica.password_env")
        );
    }
}
