//! The key vault's config file (`key-vault.yaml`; written by
//! `mxstack_topology::escrow::key_vault_config`, read by `mxstack-key-vault`). It holds no secret:
//! the API keys and the PostgreSQL password are read from the environment variables the file
//! names, and the recipients are public keys. Loading and the checks that parse keys (age,
//! Ed25519) stay in the vault, which has those dependencies.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// `host:port` to listen on.
    pub listen: String,
    pub database: Database,
    pub recipients: Recipients,
    /// Environment variable holding the API key Synapse (the escrow module) stores with.
    pub store_api_key_env: String,
    /// Environment variable holding the API key the LI console retrieves with.
    pub retrieval_api_key_env: String,
    /// The LI console's Ed25519 public key (base64). Set: every retrieval must carry a claim it
    /// signed naming the user, unexpired and fresh (`mxstack_key_vault::warrant`); unset: the
    /// warrant header is a free-text reference, recorded but not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warrant_signer: Option<String>,
}

/// `{sqlite: PATH}` or `{postgres: {host, port, dbname, user, password_env}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(PgDatabase),
}

/// The vault database.
pub type PgDatabase = crate::PgConnection;

/// age X25519 public keys (`age1...`) every stored key is encrypted to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipients {
    /// The vault key; its private half is held by the LI console only.
    pub vault: String,
    /// Optional offline break-glass key (decrypts with the standard `age` CLI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<String>,
}
