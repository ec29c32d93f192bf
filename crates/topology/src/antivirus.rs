//! Antivirus in the media path (feature `antivirus`): the content scanner's config, clamd's
//! config and the Synapse upload module's settings, all from the same topology, so the size
//! limits of Synapse, the scanner and clamd cannot disagree (a file Synapse accepts is never
//! too big for clamd to scan, and clamd reports what exceeds its limits instead of passing it).

use mxstack_service_config::content_scanner::ScannerConfig;
use serde_json::{json, Value};

use crate::addressing::Addressing;
use crate::workers::WorkerKind;
use crate::Topology;

/// The Python module (in the Synapse image, and written by `mxstack up`) that hands every upload
/// to the scanner before Synapse stores it.
pub const UPLOAD_MODULE: &str = "mxstack_synapse.UploadScanner";
/// The scanner's upload-scan endpoint (not routed from outside: only Synapse calls it).
pub const UPLOAD_SCAN_PATH: &str = "/_mxstack/scan";
/// File name of the scanner's Curve25519 request secret.
pub const REQUEST_SECRET_FILE: &str = "request_secret";
/// Largest body the scanner holds in memory at once; bigger files are scanned and served in two
/// streaming passes, never buffered whole.
pub const MEMORY_BUFFER_BYTES: u64 = 4 << 20;
/// The EICAR test signature (matches the EICAR string anywhere in a file). `mxstack up` and the
/// tests use it, so scanning works without downloading any signature database.
pub const EICAR_TEST_SIGNATURE: &str =
    "Eicar-Body-Test:0:*:45494341522d5354414e444152442d414e544956495255532d544553542d46494c45\n";
pub const TEST_SIGNATURE_FILE: &str = "mxstack-test.ndb";

/// Synapse's size syntax (`parse_size`): a number with an optional `K` or `M` suffix (powers of
/// 1024).
pub fn synapse_size_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1024),
        'M' | 'm' => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok().map(|n| n * mult)
}

/// Largest file the scanner accepts: Synapse's upload limit.
pub fn max_file_bytes(t: &Topology) -> u64 {
    synapse_size_bytes(&t.config.synapse.max_upload_size).unwrap_or(50 * 1024 * 1024)
}

/// Where the scanner fetches media from: every media worker, or main when there is none.
pub fn upstreams(t: &Topology, addr: &dyn Addressing) -> Vec<String> {
    let processes = t.processes();
    let media: Vec<_> = processes
        .iter()
        .filter(|p| p.kind == Some(WorkerKind::MediaRepository))
        .collect();
    let chosen: Vec<_> = if media.is_empty() {
        processes.iter().take(1).collect()
    } else {
        media
    };
    chosen
        .into_iter()
        .map(|p| {
            let a = addr.http(p);
            format!("http://{}:{}", a.host, a.port)
        })
        .collect()
}

/// Bytes the scanner may hold in memory across all requests: 3/8 of its container's memory limit
/// (the rest is the runtime, connection buffers and allocator slack; the benchmark's peak RSS
/// with a 48 MiB budget was 55 MiB), never below one memory buffer.
pub fn memory_budget_bytes(t: &Topology) -> u64 {
    let mib = t
        .sizing
        .resources_for(mxstack_spec::Component::ContentScanner, &t.config)
        .memory_mib as u64;
    (mib * 3 / 8 * (1 << 20)).max(MEMORY_BUFFER_BYTES)
}

/// The scanner's worker threads: one per CPU of its container's request, at least one. It waits on
/// the media workers and clamd far more than it computes (about 0.16 ms of CPU per small file),
/// and on two shared cores one thread measured faster than two (docs/BENCHMARKS.md).
pub fn scanner_threads(t: &Topology) -> usize {
    let millis = t
        .sizing
        .resources_for(mxstack_spec::Component::ContentScanner, &t.config)
        .cpu_millis as usize;
    millis.div_ceil(1000).max(1)
}

/// The content scanner's config file (no secrets: the request secret is read from a file), as the
/// value the targets write out. See [`scanner_config_typed`].
pub fn scanner_config(
    t: &Topology,
    addr: &dyn Addressing,
    listen: &str,
    request_secret_path: &str,
) -> Value {
    crate::service_config_value(&scanner_config_typed(t, addr, listen, request_secret_path))
}

/// The content scanner's config as the type the scanner reads.
pub fn scanner_config_typed(
    t: &Topology,
    addr: &dyn Addressing,
    listen: &str,
    request_secret_path: &str,
) -> ScannerConfig {
    let clamd = addr.clamd();
    ScannerConfig {
        listen: listen.to_string(),
        upstreams: upstreams(t, addr),
        clamd: format!("{}:{}", clamd.host, clamd.port),
        max_file_bytes: max_file_bytes(t),
        memory_buffer_bytes: MEMORY_BUFFER_BYTES,
        memory_budget_bytes: memory_budget_bytes(t),
        clamd_connections: 16,
        // Below the 60 s Synapse's HTTP client waits for the upload module's request.
        scan_timeout_secs: 50,
        verdict_cache_entries: t.config.antivirus.verdict_cache_entries as usize,
        request_secret_path: request_secret_path.into(),
    }
}

/// clamd.conf. Limits sit above the scanner's, so everything the scanner passes on is scanned
/// whole; `AlertExceedsMax` turns anything beyond clamd's own limits (archive bombs) into a
/// finding instead of an unscanned "OK" (ClamAV's default).
pub fn clamd_conf(t: &Topology, bind: &str, port: u16, database_dir: &str) -> String {
    let mib = max_file_bytes(t).div_ceil(1024 * 1024) + 1;
    format!(
        "# clamd: generated by mxstack\n\
         Foreground yes\n\
         LogTime yes\n\
         LogClean no\n\
         LogVerbose no\n\
         DatabaseDirectory {database_dir}\n\
         TCPSocket {port}\n\
         TCPAddr {bind}\n\
         MaxThreads 12\n\
         MaxQueue 200\n\
         IdleTimeout 60\n\
         CommandReadTimeout 30\n\
         SendBufTimeout 500\n\
         StreamMaxLength {mib}M\n\
         MaxFileSize {mib}M\n\
         MaxScanSize {scan}M\n\
         AlertExceedsMax yes\n\
         SelfCheck 3600\n",
        scan = mib * 4
    )
}

/// freshclam.conf for the signature-update sidecar: the official CDN by `DatabaseMirror`, any
/// other URL as a `PrivateMirror` (a cvdupdate host or an internal mirror).
pub fn freshclam_conf(t: &Topology, database_dir: &str) -> String {
    let mirror = t.config.antivirus.signature_mirror.trim_end_matches('/');
    let host = mirror
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let source = if host == "database.clamav.net" {
        format!("DatabaseMirror {host}")
    } else {
        format!("PrivateMirror {mirror}")
    };
    format!(
        "# freshclam: generated by mxstack\n\
         Foreground yes\n\
         DatabaseDirectory {database_dir}\n\
         {source}\n\
         Checks 12\n\
         TestDatabases no\n\
         LogTime yes\n"
    )
}

/// The `modules:` entry of homeserver.yaml: media workers ask the scanner about every upload.
pub fn synapse_module(addr: &dyn Addressing) -> Value {
    let s = addr.content_scanner();
    json!({
        "module": UPLOAD_MODULE,
        "config": {
            "scanner_url": format!("http://{}:{}{}", s.host, s.port, UPLOAD_SCAN_PATH),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synapse_sizes() {
        assert_eq!(synapse_size_bytes("100M"), Some(100 << 20));
        assert_eq!(synapse_size_bytes("512K"), Some(512 << 10));
        assert_eq!(synapse_size_bytes("1000"), Some(1000));
        assert_eq!(synapse_size_bytes("lots"), None);
    }
}
