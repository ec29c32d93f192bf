//! mxstack's key vault: escrow of users' E2EE recovery keys (issue 6).
//!
//! - `POST /v1/keys` (Synapse's escrow module, store API key): the key is encrypted with age to
//!   the vault's public key (private half on the LI side only) and an optional offline
//!   break-glass key, and appended as a new version; nothing is ever overwritten or deleted.
//! - `GET /v1/keys/{user_id}` (the LI console, retrieval API key, `X-Mxstack-Warrant`): every
//!   version as ciphertext, newest first; the retrieval and the warrant it claimed are recorded
//!   in the same transaction.
//!
//! See README.md for the API, the config and the threat model.

pub mod config;
pub mod crypto;
pub mod server;
pub mod store;
pub mod warrant;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub use config::{VaultConfig, VaultConfigExt};
pub use crypto::keygen;

/// Loads the config, opens the database, then serves until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> Result<(), String> {
    let cfg = VaultConfig::load(config_path)?;
    let recipients = cfg
        .recipients()
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let keys = cfg.api_keys()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let store = store::Store::open(&cfg.database).await?;
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
        eprintln!(
            "key-vault: listening on {}, {} database, {} recipient(s){}",
            cfg.listen,
            store.backend(),
            recipients.len(),
            if recipients.len() > 1 {
                " (vault + break-glass)"
            } else {
                " (vault)"
            }
        );
        let signer = cfg
            .warrant_signer
            .as_deref()
            .map(warrant::parse_public_key)
            .transpose()?;
        let vault =
            Arc::new(server::Vault::new(store, recipients, &keys).with_warrant_signer(signer));
        drop(keys);
        let app = server::router(vault);
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| format!("server error: {e}"))
    })
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    eprintln!("key-vault: shutting down");
}
