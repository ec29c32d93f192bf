//! `mxstack loadtest`: the arguments; the work is mxstack-loadtest's.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::CmdResult;

#[derive(clap::Args)]
pub struct Args {
    /// The deployment's client URL: http://127.0.0.1:PORT for `mxstack up`, or a cluster's
    /// public URL (https://matrix.example.org).
    #[arg(long)]
    pub url: String,
    /// Concurrent users: each keeps a /sync long-poll open.
    #[arg(long)]
    pub ccu: usize,
    /// Load per step (e.g. 60s, 5m).
    #[arg(long, default_value = "60s")]
    pub duration: String,
    /// `seed` (the seed's peak per CCU: 4 messages/min, 0.2 uploads/hour, 2 typing and 2
    /// receipts/min, 0.75 rooms) or a YAML/JSON profile file (docs/LOADTEST.md).
    #[arg(long, default_value = "seed")]
    pub profile: String,
    /// Messages per minute, instead of the profile's rate for --ccu; typing, receipts and uploads
    /// keep their ratio to it.
    #[arg(long, value_name = "MSGS_PER_MIN")]
    pub rate: Option<f64>,
    /// Raise the rate step by step (×--ramp-factor per step of --duration) until a step misses
    /// the SLO; report the highest rate sustained.
    #[arg(long)]
    pub ramp: bool,
    #[arg(long, default_value_t = 1.25, requires = "ramp")]
    pub ramp_factor: f64,
    /// At most this many ramp steps.
    #[arg(long, default_value_t = 10, requires = "ramp")]
    pub ramp_steps: usize,
    /// A spike: --duration at the tier's rate, then this many times the rate for
    /// --spike-duration, then the tier's rate again at once for --duration. Reports the spike's
    /// goodput, how fast refused sends were refused, and how long p99 took to come back.
    #[arg(long, value_name = "FACTOR", conflicts_with = "ramp")]
    pub spike: Option<f64>,
    #[arg(long, default_value = "5m", requires = "spike")]
    pub spike_duration: String,
    /// With --spike: p99 delivery must be back within the SLO this long after the spike.
    #[arg(long, default_value = "30s", requires = "spike")]
    pub recovery: String,
    /// A local deployment's mxstack.yaml: users are created with the registration shared
    /// secret from the secrets.yaml next to it (one admin user of the run, removed afterwards).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A server admin's access token (instead of --config), e.g. for a cluster
    /// [default: the MXSTACK_ADMIN_TOKEN environment variable, which keeps it out of `ps`].
    #[arg(long)]
    pub admin_token: Option<String>,
    /// SLO: p99 delivery latency at most this.
    #[arg(long, default_value = "1s")]
    pub slo_p99: String,
    /// SLO: failed requests at most this share (0.1% or 0.001).
    #[arg(long, default_value = "0.1%")]
    pub slo_errors: String,
    /// After the load stops, how long deliveries may still arrive before a missing one counts
    /// as never delivered.
    #[arg(long, default_value = "30s")]
    pub grace: String,
    /// Bound on creating users, rooms and the first syncs.
    #[arg(long, default_value = "10m")]
    pub setup_timeout: String,
    /// Seed of the run's random choices (members, arrivals, rooms and senders): the same seed
    /// repeats the same load, to compare runs or a change [default: a random one, reported in
    /// the result as `inputs.seed`].
    #[arg(long)]
    pub seed: Option<u64>,
    /// One JSON result object on stdout (schema mxstack-loadtest/3, docs/LOADTEST.md).
    #[arg(long)]
    pub json: bool,
}

pub fn loadtest(a: Args) -> CmdResult {
    // The environment only stands in when no --config chose shared-secret registration.
    let admin_token = match (&a.admin_token, &a.config) {
        (Some(t), _) => Some(t.clone()),
        (None, None) => std::env::var("MXSTACK_ADMIN_TOKEN").ok(),
        (None, Some(_)) => None,
    }
    .filter(|t| !t.is_empty());
    let o = mxstack_loadtest::Options {
        url: a.url,
        ccu: a.ccu,
        duration: a.duration,
        profile: a.profile,
        rate: a.rate,
        ramp: a.ramp,
        ramp_factor: a.ramp_factor,
        ramp_steps: a.ramp_steps,
        spike: a.spike,
        spike_duration: a.spike_duration,
        recovery: a.recovery,
        config: a.config,
        admin_token,
        slo_p99: a.slo_p99,
        slo_errors: a.slo_errors,
        grace: a.grace,
        setup_timeout: a.setup_timeout,
        seed: a.seed,
        json: a.json,
    };
    Ok(ExitCode::from(mxstack_loadtest::main(&o)))
}
