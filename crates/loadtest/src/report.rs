//! The `--json` result (schema `mxstack-loadtest/3`; docs/LOADTEST.md) and the human summary.
//! Field names and order are part of the schema: a test pins them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::engine::StepStats;
use crate::profile::{Arrival, Rates};
use crate::setup::Cleanup;
use crate::stats::{
    judge, recovery_seconds, Counts, GeneratorLoad, Percentiles, Slo, StepFigures, Verdict,
};

/// Recovery is judged over windows of this many seconds (by acknowledgement time).
pub const RECOVERY_WINDOW_S: f32 = 5.0;
/// At least this share of the refused sends must be refused within 1 s.
pub const FAST_REFUSALS: f64 = 0.99;

pub const SCHEMA: &str = "mxstack-loadtest/3";

#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    pub url: String,
    pub ccu: usize,
    pub duration_s: f64,
    pub profile: String,
    pub rates: Rates,
    pub room_activity_exponent: f64,
    pub arrival: Arrival,
    pub ramp: bool,
    pub slo: Slo,
    pub grace_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spike: Option<SpikeInputs>,
    /// `--seed`, or the one drawn: `--seed` with it repeats the run's rooms, members, arrivals
    /// and picks.
    pub seed: u64,
}

/// `--spike`: the tier's rate, then `factor` times it for `duration_s`, then the tier's rate
/// again at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpikeInputs {
    pub factor: f64,
    pub duration_s: f64,
    /// The p99 must be back within the SLO this long after the spike ends.
    pub recovery_limit_s: f64,
}

/// What a spike run showed: does the deployment degrade instead of collapsing?
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpikeReport {
    /// Acknowledged messages per minute during the spike.
    pub goodput_per_min: f64,
    pub refused: u64,
    pub refused_under_1s: Option<f64>,
    pub refused_send_latency_ms: Percentiles,
    /// After the spike ended, until every window's p99 was within the SLO (null: not within
    /// the after phase).
    pub recovery_s: Option<f64>,
    pub acknowledged_but_never_delivered: u64,
}

impl SpikeReport {
    /// From the phases before, spike and after; the reasons it fails (empty: it held).
    pub fn judge(steps: &[StepReport], limits: &SpikeInputs) -> (SpikeReport, Vec<String>) {
        let spike = &steps[1];
        let after = &steps[2];
        let r = SpikeReport {
            goodput_per_min: spike.goodput.messages_per_min,
            refused: spike.requests.send.errors(),
            refused_under_1s: spike.refused_under_1s,
            refused_send_latency_ms: spike.refused_send_latency_ms.clone(),
            recovery_s: after.recovery_s,
            acknowledged_but_never_delivered: steps
                .iter()
                .map(|s| s.acknowledged_but_never_delivered)
                .sum(),
        };
        let mut why = Vec::new();
        if steps[0].verdict != Verdict::Pass {
            why.push("the tier's rate before the spike was not sustained".to_string());
        }
        if let Some(share) = r.refused_under_1s.filter(|s| *s < FAST_REFUSALS) {
            why.push(format!(
                "{:.1}% of the refused sends were refused within 1 s (at least {:.0}%)",
                share * 100.0,
                FAST_REFUSALS * 100.0
            ));
        }
        match r.recovery_s {
            Some(s) if s <= limits.recovery_limit_s => {}
            Some(s) => why.push(format!(
                "p99 delivery came back within the SLO {s} s after the spike (at most {} s)",
                limits.recovery_limit_s
            )),
            None => why.push("p99 delivery was not back within the SLO by the end".to_string()),
        }
        if r.acknowledged_but_never_delivered > 0 {
            why.push(format!(
                "{} acknowledged messages were never delivered",
                r.acknowledged_but_never_delivered
            ));
        }
        (r, why)
    }
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
    /// A spike run's phase: before, spike, after (absent in a plain or ramp run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<&'static str>,
    pub target_per_min: f64,
    pub offered_per_min: f64,
    pub duration_s: f64,
    pub attempted: u64,
    pub not_sent_backlog: u64,
    pub acknowledged: u64,
    pub deliveries: u64,
    pub goodput: Goodput,
    pub send_latency_ms: Percentiles,
    /// How long the failed sends took to fail.
    pub refused_send_latency_ms: Percentiles,
    /// The share of failed sends that failed within 1 s (null: none failed).
    pub refused_under_1s: Option<f64>,
    pub delivery_latency_ms: Percentiles,
    /// Seconds from the step's start until every 5 s window's p99 delivery was within the SLO
    /// (null: the last window still broke it). After a spike: how long recovery took.
    pub recovery_s: Option<f64>,
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
            phase: None,
            target_per_min: round1(s.target_per_min),
            offered_per_min: round1((s.attempted + s.not_sent_backlog) as f64 * 60.0 / secs),
            duration_s: round1(s.load_seconds),
            attempted: s.attempted,
            not_sent_backlog: s.not_sent_backlog,
            acknowledged: s.acknowledged,
            deliveries: s.deliveries,
            goodput,
            send_latency_ms: s.send_latency.summary(),
            refused_send_latency_ms: s.refusal_latency.summary(),
            refused_under_1s: s
                .refusal_latency
                .share_at_most(Duration::from_secs(1))
                .map(|x| (x * 1e4).round() / 1e4),
            delivery_latency_ms: delivery,
            recovery_s: recovery_seconds(&s.timeline, slo.p99_delivery_ms, RECOVERY_WINDOW_S),
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spike: Option<SpikeReport>,
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
        mut steps: Vec<StepReport>,
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
        let mut spike = None;
        if let Some(limits) = inputs.spike.filter(|_| steps.len() == 3) {
            for (s, phase) in steps.iter_mut().zip(["before", "spike", "after"]) {
                s.phase = Some(phase);
            }
            let (r, why) = SpikeReport::judge(&steps, &limits);
            if !why.is_empty() && verdict != Verdict::GeneratorLimited {
                verdict = Verdict::Fail;
                reasons.extend(why);
            }
            spike = Some(r);
        }
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
            spike,
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
            "mxstack loadtest {}: {} CCU, {} users in {} rooms ({:?}), setup {:.0}s, --seed {}\n",
            self.run_id,
            self.inputs.ccu,
            self.setup.users,
            self.setup.rooms,
            self.setup.room_sizes,
            self.setup.seconds,
            self.inputs.seed
        );
        for (k, s) in self.steps.iter().enumerate() {
            let e = |c: &Counts| {
                format!(
                    "{}/{}/{}/{}",
                    c.rate_limited_429, c.server_error_5xx, c.timeout, c.other
                )
            };
            if let Some(p) = s.phase {
                out += &format!("{p}: ");
            }
            out += &format!(
                "step {}: target {}/min, acked {} ({}/min), deliveries {} ({}/s)\n  send p50/p95/p99/max {} {} {} {}\n  delivery p50/p95/p99/max {} {} {} {}\n  errors 429/5xx/timeout/other: send {} sync {} upload {} typing {} receipt {} (rate {:.3}%)\n  never delivered {}, generator {:.2} cores, loop lag p99 {} ms: {:?}\n",
                k + 1, s.target_per_min, s.acknowledged, s.goodput.messages_per_min, s.deliveries, s.goodput.deliveries_per_s,
                ms(s.send_latency_ms.p50), ms(s.send_latency_ms.p95), ms(s.send_latency_ms.p99), ms(s.send_latency_ms.max),
                ms(s.delivery_latency_ms.p50), ms(s.delivery_latency_ms.p95), ms(s.delivery_latency_ms.p99), ms(s.delivery_latency_ms.max),
                e(&s.requests.send), e(&s.requests.sync), e(&s.requests.upload), e(&s.requests.typing), e(&s.requests.receipt), s.error_rate * 100.0,
                s.acknowledged_but_never_delivered, s.generator.cpu_cores, s.generator.loop_lag_p99_ms, s.verdict,
            );
        }
        if let Some(sp) = &self.spike {
            out += &format!(
                "spike: goodput {}/min, {} refused ({} within 1 s, p99 {}), recovered {}, never delivered {}\n",
                sp.goodput_per_min,
                sp.refused,
                sp.refused_under_1s.map(|x| format!("{:.1}%", x * 100.0)).unwrap_or_else(|| "-".into()),
                ms(sp.refused_send_latency_ms.p99),
                sp.recovery_s.map(|x| format!("after {x} s")).unwrap_or_else(|| "not by the end".into()),
                sp.acknowledged_but_never_delivered
            );
        }
        if let Some(h) = self.highest_sustained_per_min {
            out += &format!("highest sustained rate: {h}/min\n");
        }
        out += &format!(
            "cleanup: {} rooms purged ({} still purging), {} users deactivated, {} errors\nverdict: {}",
            self.cleanup.rooms_purged,
            self.cleanup.purges_unfinished,
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
