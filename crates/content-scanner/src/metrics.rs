//! Prometheus metrics in the text exposition format (a handful of counters and one histogram:
//! not worth a dependency).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds (seconds) of the scan latency histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

#[derive(Default)]
pub struct Metrics {
    pub clean: AtomicU64,
    pub infected: AtomicU64,
    pub too_large: AtomicU64,
    pub scan_errors: AtomicU64,
    pub clamd_errors: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub bytes_scanned: AtomicU64,
    pub requests: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    /// Sum of scan latencies in microseconds.
    latency_sum_us: AtomicU64,
}

impl Metrics {
    pub fn observe_scan(&self, seconds: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us
            .fetch_add((seconds * 1e6) as u64, Relaxed);
    }

    /// `clamd_up`: whether clamd answered a PING just now (the alert ClamdUnavailable must not
    /// wait for a scan to fail).
    pub fn render(&self, cache_entries: usize, clamd_up: bool) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP mxstack_scanner_clamd_up Whether clamd answered PING at this scrape.\n# TYPE mxstack_scanner_clamd_up gauge\nmxstack_scanner_clamd_up {}",
            u8::from(clamd_up)
        );
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let _ = writeln!(
            o,
            "# HELP mxstack_scanner_verdicts_total Files scanned, by verdict.\n# TYPE mxstack_scanner_verdicts_total counter"
        );
        for (v, n) in [
            ("clean", &self.clean),
            ("infected", &self.infected),
            ("too_large", &self.too_large),
            ("error", &self.scan_errors),
        ] {
            let _ = writeln!(
                o,
                "mxstack_scanner_verdicts_total{{verdict=\"{v}\"}} {}",
                n.load(Relaxed)
            );
        }
        counter(
            &mut o,
            "mxstack_scanner_clamd_errors_total",
            "Scans that got no verdict from clamd (down, timeout, protocol).",
            self.clamd_errors.load(Relaxed),
        );
        counter(
            &mut o,
            "mxstack_scanner_upstream_errors_total",
            "Media fetches that failed before a response.",
            self.upstream_errors.load(Relaxed),
        );
        counter(
            &mut o,
            "mxstack_scanner_cache_hits_total",
            "Requests whose bytes matched a cached verdict (scan skipped).",
            self.cache_hits.load(Relaxed),
        );
        counter(
            &mut o,
            "mxstack_scanner_cache_misses_total",
            "Requests that needed a clamd scan.",
            self.cache_misses.load(Relaxed),
        );
        counter(
            &mut o,
            "mxstack_scanner_scanned_bytes_total",
            "Bytes streamed to clamd.",
            self.bytes_scanned.load(Relaxed),
        );
        counter(
            &mut o,
            "mxstack_scanner_requests_total",
            "HTTP requests handled.",
            self.requests.load(Relaxed),
        );
        let _ = writeln!(
            o,
            "# HELP mxstack_scanner_cache_entries Verdicts held in the cache.\n# TYPE mxstack_scanner_cache_entries gauge\nmxstack_scanner_cache_entries {cache_entries}"
        );
        let _ = writeln!(
            o,
            "# HELP mxstack_scanner_scan_seconds clamd scan latency.\n# TYPE mxstack_scanner_scan_seconds histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "mxstack_scanner_scan_seconds_bucket{{le=\"{b}\"}} {}",
                self.buckets[i].load(Relaxed)
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(
            o,
            "mxstack_scanner_scan_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            o,
            "mxstack_scanner_scan_seconds_sum {}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "mxstack_scanner_scan_seconds_count {count}");
        o
    }
}
