//! The LI console: the one place an investigator reads a target's conversations, strictly within
//! an approved, unexpired warrant, with every access in a hash-chained audit log.
//!
//! - [`store`]: accounts (Argon2id + TOTP), sessions, warrants (four-eyes approval, expiry) and the
//!   audit log, in SQLite; [`audit`]: the hash chain and its verification
//!   (`mxstack li audit verify`); [`totp`]: the second factor.
//! - [`replica`]: what the console reads from the LI replica (timelines, row history, key backup).
//! - [`vault`]: escrowed keys retrieved under a warrant and opened with the vault identity;
//!   [`e2ee`]: escrowed key -> secret storage -> backup key -> room keys -> Megolm plaintext.
//! - [`view`]: the one model pages and exports render; [`media`]: verified, scanned LI media.
//! - [`web`]: the server-rendered pages; [`export`]: signed evidence packages.

use std::path::Path;
use std::sync::Arc;

pub mod audit;
pub mod config;
pub mod e2ee;
pub mod export;
pub mod media;
pub mod replica;
pub mod store;
pub mod time;
pub mod totp;
pub mod vault;
pub mod view;
pub mod web;

use config::{env_secret, ConsoleConfig};

/// Runs the console until SIGTERM/SIGINT.
pub fn run(config_path: &Path) -> Result<(), String> {
    let cfg = ConsoleConfig::load(config_path)?;
    let store = store::Store::open(&cfg.database)
        .map_err(|e| format!("{}: {e}", cfg.database.display()))?;
    let password = env_secret(&cfg.replica.password_env, "replica.password_env")?;
    let mut pg = tokio_postgres::Config::new();
    pg.host(&cfg.replica.host)
        .port(cfg.replica.port)
        .dbname(&cfg.replica.dbname)
        .user(&cfg.replica.user)
        .password(password)
        .application_name("mxstack-li-console")
        .connect_timeout(std::time::Duration::from_secs(10));
    let signing_key = export::signing_key(&env_secret(&cfg.signing_key_env, "signing_key_env")?)?;
    let vault = vault::VaultClient::new(
        &cfg.key_vault.url,
        env_secret(
            &cfg.key_vault.retrieval_api_key_env,
            "key_vault.retrieval_api_key_env",
        )?,
        &env_secret(&cfg.vault_identity_env, "vault_identity_env")?,
        signing_key.clone(),
    )?;
    let media = match &cfg.media {
        Some(m) => Some(media::MediaStore::new(
            m,
            env_secret(&m.access_key_env, "media.access_key_env")?,
            env_secret(&m.secret_key_env, "media.secret_key_env")?,
            cfg.clamd.as_deref(),
            &cfg.server_name,
        )?),
        None => None,
    };
    let console = Arc::new(web::Console::new(
        store,
        replica::Replica::new(pg),
        vault,
        media,
        signing_key,
        cfg.secure_cookies,
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
        eprintln!("mxstack li-console listening on {}", cfg.listen);
        if let Some(addr) = &cfg.metrics_listen {
            let metrics = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (metrics_listen): {e}"))?;
            let app = web::metrics_router(console.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(metrics, app).await {
                    eprintln!("metrics listener: {e}");
                }
            });
        }
        axum::serve(listener, web::router(console))
            .with_graceful_shutdown(shutdown())
            .await
            .map_err(|e| format!("server: {e}"))
    })
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Creates an account (the CLI's `mxstack li console add-user`), audited with actor `cli`.
pub fn add_user(
    database: &Path,
    username: &str,
    role: store::Role,
    password: &str,
) -> Result<store::NewAccount, String> {
    let store = store::Store::open(database).map_err(|e| format!("{}: {e}", database.display()))?;
    let now = time::now_ms();
    let account = store
        .create_account(username, password, role, now)
        .map_err(|e| e.to_string())?;
    store
        .audit(
            Some("cli"),
            "account.create",
            username,
            &serde_json::json!({"role": role.as_str()}),
            now,
        )
        .map_err(|e| format!("audit log: {e}"))?;
    Ok(account)
}
