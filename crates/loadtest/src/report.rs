//! The `--json` result (schema `mxstack-loadtest/1`; docs/LOADTEST.md) and the human summary.
//! Field names and order are part of the schema: a test pins them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::StepStats;
use crate::profile::{Arrival, Rates};
use crate::setup::Cleanup;
use crate::stats::{judge, Counts, GeneratorLoad, Percentiles, Slo, StepFigures, Verdict};

pub const SCHEMA: &str = "mxstack-loadtest/1";

#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    pub url: String,
    pub ccu: usize,
    pub duration_s: f64,
    pub profile: String,
    pub rates: Rates,
    pub arrival: Arrival,
    pub ramp: bool,
    pub slo: Slo,
    pub grace_s: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SetupInfo {
    pub users: usize,
    pub rooms: usize,
    pub room_sizes: BTreeMap<String, usize>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Requests {
    pub send: Counts,
    pub sync: Counts,
    pub upload: Counts,
    pub typing: Counts,
    pub receipt: Counts,
}

impl Requests {
    fn all(&self) -> [Counts; 5] {
        [self.send, self.sync, self.upload, self.typing, self.receipt]
    }

    /// Failed requests of every kind over all requests.
    pub fn error_rate(&self) -> f64 {
        let (req, err) = self
            .all()
            .iter()
            .fold((0, 0), |(r, e), c| (r + c.requests, e + c.errors()));
        if req == 0 {
            0.0
        } else {
            err as f64 / req as f64
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Goodput {
    pub messages_per_min: f64,
    pub deliveries_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub target_per_min: f64,
    pub offered_per_min: f64,
    pub duration_s: f64,
    pub attempted: u64,
    pub not_sent_backlog: u64,
    pub acknowledged: u64,
    pub deliveries: u64,
    pub goodput: Goodput,
    pub send_latency_ms: Percentiles,
    pub delivery_latency_ms: Percentiles,
    pub requests: Requests,
    pub error_rate: f64,
    pub sync_gaps: u64,
    pub acknowledged_but_never_delivered: u64,
    pub missing_deliveries: u64,
    pub generator: GeneratorLoad,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
}

impl StepReport {
    pub fn from_stats(s: &StepStats, slo: &Slo) -> StepReport {
        let secs = s.load_seconds.max(0.001);
        let requests = Requests {
            send: s.send,
            sync: s.sync,
            upload: s.upload,
            typing: s.typing,
            receipt: s.receipt,
        };
        let lag = s.lag.summary();
        let generator = GeneratorLoad::new(
            s.cpu_seconds / secs,
            lag.p99.unwrap_or(0.0),
            lag.max.unwrap_or(0.0),
        );
        let delivery = s.delivery_latency.summary();
        let goodput = Goodput {
            messages_per_min: round1(s.acknowledged as f64 * 60.0 / secs),
            deliveries_per_s: round1(s.deliveries as f64 / secs),
        };
        let error_rate = requests.error_rate();
        let (verdict, reasons) = judge(
            &StepFigures {
                offered_per_min: (s.attempted + s.not_sent_backlog) as f64 * 60.0 / secs,
                achieved_per_min: goodput.messages_per_min,
                delivery_p99_ms: delivery.p99,
                error_rate,
                never_delivered: s.never_delivered,
                generator,
            },
            slo,
        );
        StepReport {
            target_per_min: round1(s.target_per_min),
            offered_per_min: round1((s.attempted + s.not_sent_backlog) as f64 * 60.0 / secs),
            duration_s: round1(s.load_seconds),
            attempted: s.attempted,
            not_sent_backlog: s.not_sent_backlog,
            acknowledged: s.acknowledged,
            deliveries: s.deliveries,
            goodput,
            send_latency_ms: s.send_latency.summary(),
            delivery_latency_ms: delivery,
            requests,
            error_rate: (error_rate * 1e6).round() / 1e6,
            sync_gaps: s.sync_gaps,
            acknowledged_but_never_delivered: s.never_delivered,
            missing_deliveries: s.missing_deliveries,
            generator,
            verdict,
            reasons,
        }
    }
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub run_id: String,
    pub inputs: Inputs,
    pub setup: SetupInfo,
    /// pass, fail or generator-limited: of the tier's rate (a ramp's first step).
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    /// Ramp: the highest target rate whose step was sustained (null when none was).
    pub highest_sustained_per_min: Option<f64>,
    /// Over every step; must be 0.
    pub acknowledged_but_never_delivered: u64,
    /// The judged step's figures, repeated at the top for scripts.
    pub send_latency_ms: Percentiles,
    pub delivery_latency_ms: Percentiles,
    pub goodput: Goodput,
    pub requests: Requests,
    pub error_rate: f64,
    pub generator: GeneratorLoad,
    pub steps: Vec<StepReport>,
    pub interrupted: bool,
    pub cleanup: Cleanup,
}

impl Report {
    /// The verdict of a run: its first step's (the tier's rate); a ramp adds the highest rate
    /// sustained in a row from the first step.
    pub fn new(
        run_id: String,
        inputs: Inputs,
        setup: SetupInfo,
        steps: Vec<StepReport>,
        interrupted: bool,
        cleanup: Cleanup,
    ) -> Report {
        let judged = steps.first().cloned();
        let highest = inputs
            .ramp
            .then(|| {
                steps
                    .iter()
                    .take_while(|s| s.verdict == Verdict::Pass)
                    .map(|s| s.target_per_min)
                    .last()
            })
            .flatten();
        let (mut verdict, mut reasons) = match &judged {
            Some(s) => (s.verdict, s.reasons.clone()),
            None => (Verdict::Fail, vec!["no load step ran".to_string()]),
        };
        if interrupted {
            verdict = Verdict::Fail;
            reasons.insert(
                0,
                "interrupted (Ctrl-C) before the run finished".to_string(),
            );
        }
        let j =
            judged.unwrap_or_else(|| StepReport::from_stats(&StepStats::default(), &inputs.slo));
        Report {
            schema: SCHEMA,
            run_id,
            setup,
            verdict,
            reasons,
            highest_sustained_per_min: highest,
            acknowledged_but_never_delivered: steps
                .iter()
                .map(|s| s.acknowledged_but_never_delivered)
                .sum(),
            send_latency_ms: j.send_latency_ms,
            delivery_latency_ms: j.delivery_latency_ms,
            goodput: j.goodput,
            requests: j.requests,
            error_rate: j.error_rate,
            generator: j.generator,
            inputs,
            steps,
            interrupted,
            cleanup,
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.verdict.exit_code()
    }

    /// The human summary (stdout without --json).
    pub fn text(&self) -> String {
        let ms = |p: Option<f64>| p.map(|v| format!("{v} ms")).unwrap_or_else(|| "-".into());
        let mut out = format!(
            "mxstack loadtest {}: {} CCU, {} users in {} rooms ({:?}), setup {:.0}s\n",
            self.run_id,
            self.inputs.ccu,
            self.setup.users,
            self.setup.rooms,
            self.setup.room_sizes,
            self.setup.seconds
        );
        for (k, s) in self.steps.iter().enumerate() {
            let e = |c: &Counts| {
                format!(
                    "{}/{}/{}/{}",
                    c.rate_limited_429, c.server_error_5xx, c.timeout, c.other
                )
            };
            out += &format!(
                "step {}: target {}/min, acked {} ({}/min), deliveries {} ({}/s)\n  send p50/p95/p99/max {} {} {} {}\n  delivery p50/p95/p99/max {} {} {} {}\n  errors 429/5xx/timeout/other: send {} sync {} upload {} typing {} receipt {} (rate {:.3}%)\n  never delivered {}, generator {:.2} cores, loop lag p99 {} ms: {:?}\n",
                k + 1, s.target_per_min, s.acknowledged, s.goodput.messages_per_min, s.deliveries, s.goodput.deliveries_per_s,
                ms(s.send_latency_ms.p50), ms(s.send_latency_ms.p95), ms(s.send_latency_ms.p99), ms(s.send_latency_ms.max),
                ms(s.delivery_latency_ms.p50), ms(s.delivery_latency_ms.p95), ms(s.delivery_latency_ms.p99), ms(s.delivery_latency_ms.max),
                e(&s.requests.send), e(&s.requests.sync), e(&s.requests.upload), e(&s.requests.typing), e(&s.requests.receipt), s.error_rate * 100.0,
                s.acknowledged_but_never_delivered, s.generator.cpu_cores, s.generator.loop_lag_p99_ms, s.verdict,
            );
        }
        if let Some(h) = self.highest_sustained_per_min {
            out += &format!("highest sustained rate: {h}/min\n");
        }
        out += &format!(
            "cleanup: {} rooms purged, {} users deactivated, {} errors\nverdict: {}",
            self.cleanup.rooms_purged,
            self.cleanup.users_deactivated,
            self.cleanup.errors,
            serde_json::to_value(self.verdict)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        );
        for r in &self.reasons {
            out += &format!("\n  - {r}");
        }
        out
    }
}
