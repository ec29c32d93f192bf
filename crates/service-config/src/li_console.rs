//! The LI console's config file (`li-console.yaml`; written by
//! `mxstack_topology::li_console::console_config`, read by `mxstack-li-console`). It holds no
//! secret: every credential is read from the environment variable the file names (the Kubernetes
//! Secret or `mxstack up` sets them).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The key of the console's audit anchor lines on stdout (`{"action":…,"audit_hash":…,
/// "audit_seq":…}`, one per audit entry): the log collector matches it to keep those lines in an
/// audit stream of their own, with their own retention (docs/LOGS.md).
pub const AUDIT_ANCHOR_KEY: &str = "audit_hash";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Media>,
    // Field order is the file's order, and rendered files are compared byte for byte across
    // releases: the cookie flag has always come before the two optional settings below.
    /// Set the session cookie's `Secure` flag (behind TLS; off for the local loopback run).
    #[serde(default = "yes")]
    pub secure_cookies: bool,
    /// clamd `host:port`: media is scanned before it is shown or exported. Absent: media is
    /// refused (never served unscanned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamd: Option<String>,
    /// `host:port` of a second listener serving only `/metrics` (Prometheus), so the pages'
    /// listener, which the edge exposes, never serves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
}

fn yes() -> bool {
    true
}

/// The LI replica the console reads.
pub type Replica = crate::PgConnection;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVault {
    /// Base URL, e.g. `http://key-vault:8092`.
    pub url: String,
    /// Environment variable holding the vault's retrieval API key.
    pub retrieval_api_key_env: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
