//! Key escrow (feature `li`): the Synapse module through which a logged-in user's client hands its
//! E2EE key to the key vault, after checking it against the user's current key backup.
//! The module is `python/mxstack_synapse/escrow.py`; docs/ESCROW.md describes the client API.

use mxstack_service_config::key_vault::{Database, Recipients, VaultConfig};
use serde_json::{json, Value};

use crate::addressing::Addressing;

/// The module class Synapse loads (homeserver.yaml `modules:`).
pub const ESCROW_MODULE: &str = "mxstack_synapse.escrow.KeyEscrow";
/// The client endpoint the module registers (served by main: the router sends
/// `/_synapse/client/...` to main).
pub const ESCROW_PATH: &str = "/_synapse/client/mxstack/escrow";
/// The key vault's store endpoint the module posts to.
pub const VAULT_STORE_PATH: &str = "/v1/keys";
/// How long the module waits for the vault.
pub const VAULT_TIMEOUT_SECS: u32 = 10;

/// Environment variable holding the store API key (Synapse's escrow module stores with it).
pub const ENV_STORE_API_KEY: &str = "MXSTACK_KEY_VAULT_STORE_API_KEY";
/// Environment variable holding the retrieval API key (the LI console retrieves with it).
pub const ENV_RETRIEVAL_API_KEY: &str = "MXSTACK_KEY_VAULT_RETRIEVAL_API_KEY";
/// The variable holding a second API key the vault accepts while a rotation runs (the one being
/// retired, or on Kubernetes first the one being introduced), beside the variable `var` of the
/// current one (`mxstack_key_vault::config::other_env`).
pub fn other_env(var: &str) -> String {
    format!("{var}_OTHER")
}
/// The vault's SQLite file name (in its state directory / volume).
pub const VAULT_SQLITE_FILE: &str = "key-vault.sqlite3";

/// The key vault's config file (`mxstack serve key-vault --config`), the one source for both
/// targets. It holds no secret: the API keys come from [`ENV_STORE_API_KEY`] and
/// [`ENV_RETRIEVAL_API_KEY`]; `vault_recipient` is the public half (`age1...`) of secret
/// `key_vault_age_identity`. `database` is the SQLite file the vault keeps its versions in.
/// `warrant_signer` is the LI console's public key (`Secrets::li_console_public_key`): the vault
/// releases keys only for a user named in a fresh, unexpired warrant claim the console signed.
/// Returns the value the targets write out; see [`key_vault_config_typed`].
pub fn key_vault_config(
    listen: &str,
    database: &str,
    vault_recipient: &str,
    warrant_signer: &str,
) -> Value {
    crate::service_config_value(&key_vault_config_typed(
        listen,
        database,
        vault_recipient,
        warrant_signer,
    ))
}

/// The key vault's config as the type the vault reads. mxstack renders no break-glass recipient:
/// mxstack.yaml has no setting for one (crates/key-vault/README.md shows the field).
pub fn key_vault_config_typed(
    listen: &str,
    database: &str,
    vault_recipient: &str,
    warrant_signer: &str,
) -> VaultConfig {
    VaultConfig {
        listen: listen.to_string(),
        database: Database::Sqlite(database.into()),
        recipients: Recipients {
            vault: vault_recipient.to_string(),
            break_glass: None,
        },
        store_api_key_env: ENV_STORE_API_KEY.into(),
        retrieval_api_key_env: ENV_RETRIEVAL_API_KEY.into(),
        warrant_signer: Some(warrant_signer.to_string()),
    }
}

/// The `modules:` entry: the vault's address and the file holding the store API key (never the
/// key itself: homeserver.yaml is a ConfigMap).
pub fn synapse_module(addr: &dyn Addressing) -> Value {
    let v = addr.key_vault();
    json!({
        "module": ESCROW_MODULE,
        "config": {
            "vault_url": format!("http://{}:{}", v.host, v.port),
            "api_key_path": addr.synapse_paths().key_vault_store_api_key_file.display().to_string(),
            "timeout_secs": VAULT_TIMEOUT_SECS,
        }
    })
}
