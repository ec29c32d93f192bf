//! The content scanner's config file (`scanner.yaml`; written by `mxstack render` and `mxstack up`
//! from `mxstack_topology::antivirus::scanner_config`, read by `mxstack-content-scanner`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScannerConfig {
    /// `host:port` to listen on.
    pub listen: String,
    /// Base URLs of the media workers (`http://host:port`), tried in turn.
    pub upstreams: Vec<String>,
    /// clamd's `host:port`.
    pub clamd: String,
    /// Largest file scanned; anything bigger gets the `too_large` verdict and is never served.
    pub max_file_bytes: u64,
    /// Files up to this size are fetched once and held in memory while scanned; bigger ones are
    /// scanned in one streaming pass and served in a second, hash-checked pass.
    pub memory_buffer_bytes: u64,
    /// Total bytes held in memory by all requests at once (at least `memory_buffer_bytes`).
    /// Files up to a quarter of it are held too, fetched once, while it has room; otherwise they
    /// take the two-pass streaming path. Rendered from the container's memory limit.
    #[serde(default = "default_memory_budget")]
    pub memory_budget_bytes: u64,
    /// Concurrent scans, each on its own pooled clamd session.
    pub clamd_connections: usize,
    pub scan_timeout_secs: u64,
    pub verdict_cache_entries: usize,
    /// File holding the base64 Curve25519 secret key for `encrypted_body` (the MCS API).
    pub request_secret_path: PathBuf,
}

fn default_memory_budget() -> u64 {
    48 << 20
}

impl ScannerConfig {
    pub fn load(path: &Path) -> Result<ScannerConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let c: ScannerConfig =
            serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        c.validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(c)
    }

    /// What the scanner refuses to start with. Here rather than in the scanner so the writer's
    /// tests hold the rendered file to the same rules.
    pub fn validate(&self) -> Result<(), String> {
        if self.upstreams.is_empty() {
            return Err("`upstreams` is empty: list at least one media worker URL".into());
        }
        if let Some(u) = self.upstreams.iter().find(|u| !u.starts_with("http://")) {
            return Err(format!(
                "upstream `{u}` must be an http:// URL inside the cluster"
            ));
        }
        if self.clamd_connections == 0 {
            return Err("`clamd_connections` must be at least 1".into());
        }
        if self.memory_budget_bytes < self.memory_buffer_bytes {
            return Err(format!(
                "`memory_budget_bytes` ({}) is below `memory_buffer_bytes` ({}): a buffered file \
                 could never be admitted; raise the budget or lower the buffer",
                self.memory_budget_bytes, self.memory_buffer_bytes
            ));
        }
        if self.max_file_bytes == 0 {
            return Err("`max_file_bytes` must be positive".into());
        }
        Ok(())
    }
}
