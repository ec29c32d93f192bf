//! What a step measured, and the verdict: pure functions over counts and histograms.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in microseconds, up to 10 minutes, 3 significant digits.
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"))
    }
}

impl Latency {
    pub fn record(&mut self, d: Duration) {
        // Saturate instead of failing: a 10-minute latency is already a failed run.
        self.0.saturating_record((d.as_micros() as u64).max(1));
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn summary(&self) -> Percentiles {
        let ms = |us: u64| (us as f64 / 100.0).round() / 10.0;
        if self.0.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: self.0.len(),
            p50: Some(ms(self.0.value_at_quantile(0.50))),
            p95: Some(ms(self.0.value_at_quantile(0.95))),
            p99: Some(ms(self.0.value_at_quantile(0.99))),
            max: Some(ms(self.0.max())),
        }
    }

    /// The share of values at most `d` (None when nothing was measured).
    pub fn share_at_most(&self, d: Duration) -> Option<f64> {
        let us = (d.as_micros() as u64).max(1);
        (!self.0.is_empty()).then(|| self.0.count_between(0, us) as f64 / self.0.len() as f64)
    }

    /// For the live progress line.
    pub fn p99_ms(&self) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(0.99) as f64 / 1000.0)
    }
}

/// Seconds from a step's start until delivery latency stayed within `slo_ms`: the start of the
/// first `bucket_s` window (by acknowledgement time) from which every window's p99 is within it.
/// `timeline` holds (acknowledged at, latency ms). None when the last window still breaks it.
pub fn recovery_seconds(timeline: &[(f32, f32)], slo_ms: f64, bucket_s: f32) -> Option<f64> {
    let mut buckets: Vec<Vec<f32>> = Vec::new();
    for &(at, ms) in timeline {
        let k = (at.max(0.0) / bucket_s) as usize;
        if buckets.len() <= k {
            buckets.resize(k + 1, Vec::new());
        }
        buckets[k].push(ms);
    }
    let bad = |b: &mut Vec<f32>| {
        if b.is_empty() {
            return false;
        }
        b.sort_by(f32::total_cmp);
        let idx = ((b.len() as f64 * 0.99).ceil() as usize).clamp(1, b.len()) - 1;
        f64::from(b[idx]) > slo_ms
    };
    let last_bad = buckets.iter_mut().rposition(bad);
    match last_bad {
        None => Some(0.0),
        Some(k) if k + 1 == buckets.len() => None,
        Some(k) => Some(f64::from(bucket_s) * (k + 1) as f64),
    }
}

/// Milliseconds, one decimal; null when nothing was measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// How a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    RateLimited,
    ServerError,
    Timeout,
    Other,
}

impl ErrorClass {
    pub fn of_status(status: u16) -> ErrorClass {
        match status {
            429 => ErrorClass::RateLimited,
            500..=599 => ErrorClass::ServerError,
            _ => ErrorClass::Other,
        }
    }
}

/// Requests of one kind and how many failed, by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub requests: u64,
    pub ok: u64,
    pub rate_limited_429: u64,
    pub server_error_5xx: u64,
    pub timeout: u64,
    pub other: u64,
}

impl Counts {
    pub fn ok(&mut self) {
        self.requests += 1;
        self.ok += 1;
    }

    pub fn fail(&mut self, class: ErrorClass) {
        self.requests += 1;
        match class {
            ErrorClass::RateLimited => self.rate_limited_429 += 1,
            ErrorClass::ServerError => self.server_error_5xx += 1,
            ErrorClass::Timeout => self.timeout += 1,
            ErrorClass::Other => self.other += 1,
        }
    }

    pub fn errors(&self) -> u64 {
        self.rate_limited_429 + self.server_error_5xx + self.timeout + self.other
    }
}

/// The service-level objective the tier promises.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Slo {
    pub p99_delivery_ms: f64,
    pub max_error_rate: f64,
}

impl Default for Slo {
    fn default() -> Self {
        Slo {
            p99_delivery_ms: 1000.0,
            max_error_rate: 0.001,
        }
    }
}

/// The generator's own load during a step: above either bound its figures are its own limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct GeneratorLoad {
    /// CPU time (user + system, all threads) over wall time: 1.0 is one core.
    pub cpu_cores: f64,
    pub loop_lag_p99_ms: f64,
    pub loop_lag_max_ms: f64,
    pub saturated: bool,
}

pub const MAX_LAG_P99_MS: f64 = 50.0;
pub const MAX_CPU_CORES: f64 = 0.9;

impl GeneratorLoad {
    pub fn new(cpu_cores: f64, lag_p99_ms: f64, lag_max_ms: f64) -> GeneratorLoad {
        GeneratorLoad {
            cpu_cores: (cpu_cores * 1000.0).round() / 1000.0,
            loop_lag_p99_ms: (lag_p99_ms * 10.0).round() / 10.0,
            loop_lag_max_ms: (lag_max_ms * 10.0).round() / 10.0,
            saturated: lag_p99_ms > MAX_LAG_P99_MS || cpu_cores > MAX_CPU_CORES,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    Fail,
    GeneratorLimited,
}

impl Verdict {
    /// 0: the promise holds; 1: it does not; 3: this machine could not drive the load.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::GeneratorLimited => 3,
        }
    }
}

/// What a step's verdict is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepFigures {
    /// Sends the generator started per minute (its open-loop schedule, Poisson noise included,
    /// plus those it held back because too many were in flight).
    pub offered_per_min: f64,
    pub achieved_per_min: f64,
    pub delivery_p99_ms: Option<f64>,
    pub error_rate: f64,
    pub never_delivered: u64,
    pub generator: GeneratorLoad,
}

/// Sustained: p99 delivery and error rate within the SLO, nothing acknowledged lost, and at
/// least 95% of the offered sends acknowledged (against the offered rate, not the target: a
/// short Poisson run offers a few percent less or more than its target by chance). The reasons say what failed.
pub fn judge(f: &StepFigures, slo: &Slo) -> (Verdict, Vec<String>) {
    let mut reasons = Vec::new();
    match f.delivery_p99_ms {
        None => reasons.push("no delivery was measured".to_string()),
        Some(p) if p > slo.p99_delivery_ms => {
            reasons.push(format!("p99 delivery {p} ms > {} ms", slo.p99_delivery_ms))
        }
        Some(_) => {}
    }
    if f.error_rate > slo.max_error_rate {
        reasons.push(format!(
            "error rate {:.3}% > {:.3}%",
            f.error_rate * 100.0,
            slo.max_error_rate * 100.0
        ));
    }
    if f.never_delivered > 0 {
        reasons.push(format!(
            "{} acknowledged messages never delivered to every member",
            f.never_delivered
        ));
    }
    if f.achieved_per_min < 0.95 * f.offered_per_min {
        reasons.push(format!(
            "acknowledged {:.0}/min < 95% of the {:.0}/min offered",
            f.achieved_per_min, f.offered_per_min
        ));
    }
    if f.generator.saturated {
        // Its figures measure this machine, not the server: neither pass nor fail.
        let g = f.generator;
        let why = if g.cpu_cores > MAX_CPU_CORES {
            format!(
                "it used {:.0}% of a core (limit {:.0}%)",
                g.cpu_cores * 100.0,
                MAX_CPU_CORES * 100.0
            )
        } else {
            // Lag without CPU use: other processes (often the servers on the same cores) kept
            // it from running, and every latency it measured includes that wait.
            format!(
                "its event loop ran {} ms late at p99 (limit {MAX_LAG_P99_MS} ms) while it used only {:.1}% of a core: the machine's CPU is taken by other processes",
                g.loop_lag_p99_ms,
                g.cpu_cores * 100.0
            )
        };
        reasons.insert(0, format!("the load generator itself was saturated: {why}"));
        return (Verdict::GeneratorLimited, reasons);
    }
    let v = if reasons.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    (v, reasons)
}
