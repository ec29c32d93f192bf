//! mxstack's MatrixRTC authorization service: the HTTP API of Element's lk-jwt-service
//! (`POST /sfu/get`, `POST /get_token`, `GET /healthz`), so Element Call can join calls on our
//! LiveKit SFU.
//!
//! A caller brings an OpenID token its homeserver issued. The service accepts only tokens of
//! our own homeserver (any other `matrix_server_name` is refused before any network call),
//! checks the token with Synapse's federation `openid/userinfo` endpoint, creates the call's
//! LiveKit room if it has an SFU to create it on, and answers with the LiveKit URL and a JWT
//! for exactly that room. See README.md.

pub mod livekit;
pub mod metrics;
pub mod openid;
pub mod server;
pub mod token;

use std::path::Path;
use std::sync::Arc;

pub use mxstack_service_config::rtc_auth::RtcAuthConfig;

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{path}: {why}")]
    Config { path: String, why: String },
    #[error("environment variable {0} (LiveKit keys) is not set")]
    KeysMissing(String),
    #[error("environment variable {0}: {1}")]
    KeysInvalid(String, token::KeysError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Reads the config file.
pub fn load(path: &Path) -> Result<RtcAuthConfig, StartError> {
    let err = |why: String| StartError::Config {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    RtcAuthConfig::from_yaml(&text).map_err(err)
}

/// Loads the config and the LiveKit keys, then serves until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> Result<(), StartError> {
    let cfg = load(config_path)?;
    let keys_text =
        std::env::var(&cfg.keys_env).map_err(|_| StartError::KeysMissing(cfg.keys_env.clone()))?;
    let keys = token::Keys::parse(&keys_text)
        .map_err(|e| StartError::KeysInvalid(cfg.keys_env.clone(), e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| StartError::Listen(cfg.listen.clone(), e))?;
        eprintln!(
            "rtc-auth: listening on {}, accepting OpenID tokens of {} (checked at {}), LiveKit {}{}",
            cfg.listen,
            cfg.server_name,
            cfg.homeserver_url,
            cfg.livekit_url,
            match &cfg.livekit_api_url {
                Some(u) => format!(", rooms created at {u}"),
                None => ", no SFU to create rooms on".into(),
            }
        );
        let state = server::Service::new(cfg, keys).map_err(StartError::Client)?;
        axum::serve(listener, server::router(Arc::new(state)))
            .with_graceful_shutdown(shutdown())
            .await
            .map_err(StartError::Serve)
    })
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
