//! mxstack's content scanner: antivirus in the Matrix media path.
//!
//! - Transparent mode: the router sends media downloads and thumbnails here; the scanner fetches
//!   them from the media workers with the caller's credentials, streams them through clamd and
//!   passes on only clean bytes.
//! - The matrix-content-scanner API (`/_matrix/media_proxy/unstable/...`), encrypted
//!   attachments included, for clients built for the reference scanner.
//! - `/_mxstack/scan` for the Synapse upload module: infected uploads are refused before they
//!   are stored.
//!
//! See README.md for the design and docs/ANTIVIRUS.md for operations.

pub mod cache;
pub mod clamd;
pub mod config;
pub mod crypto;
pub mod metrics;
pub mod server;
pub mod upstream;

use std::path::Path;
use std::sync::Arc;

use axum::serve::ListenerExt;

pub use config::ScannerConfig;

/// Loads the config and the request secret, then serves until SIGTERM or SIGINT.
pub fn run(config_path: &Path, threads: usize) -> Result<(), String> {
    let cfg = ScannerConfig::load(config_path)?;
    let secret = std::fs::read_to_string(&cfg.request_secret_path).map_err(|e| {
        format!(
            "{}: cannot read the request secret: {e}",
            cfg.request_secret_path.display()
        )
    })?;
    let key = crypto::RequestKey::from_base64(&secret)
        .map_err(|e| format!("{}: {e}", cfg.request_secret_path.display()))?;
    pin_mmap_threshold();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        // TCP_NODELAY: a response's head and body leave as soon as they are ready instead of
        // waiting for the client's delayed ACK (axum leaves Nagle on).
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?
            .tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
        eprintln!(
            "content-scanner: listening on {}, clamd at {}, {} upstream(s), limit {} bytes",
            cfg.listen,
            cfg.clamd,
            cfg.upstreams.len(),
            cfg.max_file_bytes
        );
        let app = server::router(Arc::new(server::Scanner::new(cfg, key)));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown())
            .await
            .map_err(|e| format!("server error: {e}"))
    })
}

/// Held bodies (up to 12 MiB each) are allocated and freed all the time. After the first such
/// free, glibc raises its mmap threshold and keeps later ones in per-thread heaps, so the process
/// would hold several times the buffer budget; a fixed threshold hands every large buffer back to
/// the kernel when it is freed (peak RSS of the benchmark: 87 MiB before, see docs/BENCHMARKS.md).
fn pin_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it runs before the runtime starts its threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    eprintln!("content-scanner: shutting down");
}
