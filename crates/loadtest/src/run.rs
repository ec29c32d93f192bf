//! The run: check the input, set up, load step by step, wait for deliveries, clean up, report.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::engine::{
    cpu_seconds, lag_monitor, ticker, Engine, StepStats, MAX_IN_FLIGHT, SEND_TIMEOUT,
};
use crate::error::LoadError;
use crate::matrix::Api;
use crate::mix::{self, Kind, Stream};
use crate::profile::{Profile, Rates};
use crate::report::{Inputs, Report, SetupInfo, SpikeInputs, StepReport};
use crate::setup::{self, Admin, Cleanup, Created};
use crate::stats::{Slo, Verdict};

/// The command line, as the CLI hands it over (strings parsed here, so the errors are this
/// crate's and tested).
#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    pub ccu: usize,
    pub duration: String,
    pub profile: String,
    pub rate: Option<f64>,
    pub ramp: bool,
    pub ramp_factor: f64,
    pub ramp_steps: usize,
    /// The spike's factor over the tier's rate (None: no spike).
    pub spike: Option<f64>,
    pub spike_duration: String,
    pub recovery: String,
    pub config: Option<PathBuf>,
    pub admin_token: Option<String>,
    pub slo_p99: String,
    pub slo_errors: String,
    pub grace: String,
    pub setup_timeout: String,
    /// The random streams' seed (None: a random one, reported so the run can be repeated).
    pub seed: Option<u64>,
    pub json: bool,
}

/// Checked input.
pub struct Plan {
    pub url: String,
    pub ccu: usize,
    pub duration: Duration,
    pub profile: Profile,
    pub rates: Rates,
    pub slo: Slo,
    pub grace: Duration,
    pub setup_timeout: Duration,
    pub spike: Option<SpikeInputs>,
    pub seed: u64,
}

/// Every refusal before any request: one clear error each.
pub fn check(o: &Options) -> Result<Plan, LoadError> {
    let url = o.url.trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(LoadError::BadInput(format!("--url `{url}`: expected http://HOST[:PORT] or https://HOST (the deployment's client URL)")));
    }
    if o.ccu < 2 {
        return Err(LoadError::BadInput(
            "--ccu must be at least 2 (a room needs two members)".into(),
        ));
    }
    if o.admin_token.is_none() && o.config.is_none() {
        return Err(LoadError::NoCredentials);
    }
    if o.admin_token.is_some() && o.config.is_some() {
        return Err(LoadError::BadInput(
            "--admin-token and --config: give one".into(),
        ));
    }
    if let Some(r) = o.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(LoadError::BadInput(format!(
                "--rate {r}: messages per minute must be > 0"
            )));
        }
    }
    if o.ramp && !(o.ramp_factor > 1.0 && o.ramp_steps >= 1) {
        return Err(LoadError::BadInput(
            "--ramp needs --ramp-factor > 1 and --ramp-steps >= 1".into(),
        ));
    }
    let spike = match o.spike {
        None => None,
        Some(_) if o.ramp => {
            return Err(LoadError::BadInput("--spike and --ramp: give one".into()))
        }
        Some(f) if !(f.is_finite() && f > 1.0) => {
            return Err(LoadError::BadInput(format!(
                "--spike {f}: the factor over the tier's rate must be > 1 (e.g. 10)"
            )))
        }
        Some(factor) => Some(SpikeInputs {
            factor,
            duration_s: crate::profile::parse_duration(&o.spike_duration)?.as_secs_f64(),
            recovery_limit_s: crate::profile::parse_duration(&o.recovery)?.as_secs_f64(),
        }),
    };
    let duration = crate::profile::parse_duration(&o.duration)?;
    let profile = Profile::load(&o.profile)?;
    let rates = profile.rates(o.ccu, o.rate);
    Ok(Plan {
        url,
        ccu: o.ccu,
        duration,
        rates,
        profile,
        slo: Slo {
            p99_delivery_ms: crate::profile::parse_duration(&o.slo_p99)?.as_secs_f64() * 1000.0,
            max_error_rate: crate::profile::parse_fraction(&o.slo_errors)?,
        },
        grace: crate::profile::parse_duration(&o.grace)?,
        setup_timeout: crate::profile::parse_duration(&o.setup_timeout)?,
        spike,
        seed: o.seed.unwrap_or_else(|| fastrand::u64(..)),
    })
}

/// Connections the run holds at most: one long-poll per user plus concurrent senders (two
/// seconds' worth of the highest request rate, within [64, MAX_IN_FLIGHT]).
pub fn connections_needed(ccu: usize, rates: &Rates, max_rate_factor: f64) -> usize {
    let per_s = (rates.messages_per_min + rates.typing_per_min + rates.receipts_per_min) / 60.0
        * max_rate_factor;
    ccu + ((per_s * 2.0).ceil() as usize).clamp(64, MAX_IN_FLIGHT)
}

/// CPU time the generator spends per request or delivery it handles (send, typing, receipt,
/// one event in a sync response): measured on this project's 2-core machine with the debug
/// build, about 100 µs (docs/LOADTEST.md). A faster machine or a release build does better;
/// runs still measure their own saturation, this only refuses what clearly cannot work.
pub const COST_PER_OP_US: f64 = 100.0;

/// Requests and deliveries per second the run makes the generator handle: a message goes to a
/// room with probability proportional to its weight (members^exponent), so the mean fan-out is
/// Σ w·(size−1) / Σ w.
pub fn ops_per_s(rates: &Rates, sizes: &[usize], exponent: f64, factor: f64) -> f64 {
    let fanout = mix::mean_fanout(sizes, exponent);
    let msgs = rates.messages_per_min * factor / 60.0;
    msgs * (1.0 + fanout) + (rates.typing_per_min + rates.receipts_per_min) * factor / 60.0
}

/// Refuses a load one single-threaded generator could not drive (more than one core's worth at
/// the measured cost per operation): its figures would be this machine's limit.
pub fn check_generator_cpu(ccu: usize, ops: f64) -> Result<(), LoadError> {
    let cores = ops * COST_PER_OP_US / 1e6;
    if cores > 1.0 {
        return Err(LoadError::GeneratorCapacity(format!(
            "--ccu {ccu} at this rate means about {ops:.0} requests and deliveries per second, about {cores:.1} cores of this generator (one core at most): run {} generators with --ccu split between them, or lower --rate",
            cores.ceil()
        )));
    }
    Ok(())
}

/// Raises the soft open-files limit to the hard one, and refuses a run that would run out.
pub fn check_open_files(ccu: usize, needed: usize) -> Result<u64, LoadError> {
    // SAFETY: get/setrlimit only read and write the struct given.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    let have: u64 = lim.rlim_cur;
    // Some files besides the sockets: the runtime, DNS, stdio.
    if (needed as u64 + 64) > have {
        return Err(LoadError::GeneratorCapacity(format!(
            "--ccu {} needs about {} connections but this process may open {have} files (ulimit -n): this machine cannot drive that load; raise the limit or run several generators",
            ccu, needed + 64
        )));
    }
    Ok(have)
}

/// Runs everything; the exit code: 0 pass, 1 fail, 2 bad input, 3 generator-limited.
pub fn main(o: &Options) -> u8 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mxstack loadtest: cannot start the runtime: {e}");
            return 2;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&rt, run(o)) {
        Ok(report) => {
            if o.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serializable")
                );
            } else {
                println!("{}", report.text());
            }
            report.exit_code()
        }
        Err(e) => {
            eprintln!("mxstack loadtest: {e}");
            e.exit_code()
        }
    }
}

async fn run(o: &Options) -> Result<Report, LoadError> {
    let plan = check(o)?;
    let factor = match (o.ramp, plan.spike) {
        (true, _) => o.ramp_factor.powi(o.ramp_steps as i32 - 1),
        (false, Some(s)) => s.factor,
        (false, None) => 1.0,
    };
    let pool = connections_needed(plan.ccu, &plan.rates, factor);
    check_open_files(plan.ccu, pool)?;
    let sizes = mix::room_sizes(&plan.profile.room_mix, plan.rates.rooms, plan.ccu);
    let exponent = plan.profile.room_activity_exponent;
    check_generator_cpu(plan.ccu, ops_per_s(&plan.rates, &sizes, exponent, factor))?;
    let secret = match &o.config {
        Some(c) => Some(setup::shared_secret(c)?),
        None => None,
    };
    let api = Api::new(&plan.url, pool).map_err(LoadError::BadInput)?;
    api.get("/_matrix/client/versions", None, Duration::from_secs(10))
        .await
        .map_err(|e| LoadError::Unreachable {
            url: plan.url.clone(),
            reason: e.to_string(),
        })?;
    let run_id = setup::random_hex(3);
    let admin = setup::admin(&api, o.admin_token.as_deref(), secret.as_deref(), &run_id).await?;
    let created = Rc::new(RefCell::new(Created::default()));
    // Setup, load and the grace are one bounded future; Ctrl-C ends it, cleanup runs anyway.
    let work = drive(&api, &admin, &plan, o, &run_id, &created);
    let (outcome, interrupted) = tokio::select! {
        r = work => (r, false),
        _ = tokio::signal::ctrl_c() => (Err(LoadError::Setup("interrupted".into())), true),
    };
    if interrupted {
        eprintln!("\nmxstack loadtest: interrupted, cleaning up (Ctrl-C again to leave it)");
    }
    let cleanup = {
        let snapshot = created.borrow().clone();
        eprintln!(
            "mxstack loadtest {run_id}: removing {} users and {} rooms",
            snapshot.users.len(),
            snapshot.rooms.len()
        );
        let patient = api.patient();
        let c = setup::cleanup(&patient, &admin, &snapshot);
        tokio::select! {
            c = c => c,
            _ = tokio::signal::ctrl_c() => { eprintln!("mxstack loadtest: cleanup skipped; run {run_id}'s users and rooms remain (prefix mxlt-{run_id}-)"); Cleanup::default() }
        }
    };
    let (setup_info, steps) = match outcome {
        Ok(x) => x,
        Err(_) if interrupted => (SetupInfo::default(), Vec::new()),
        Err(e) => return Err(e),
    };
    let inputs = Inputs {
        url: plan.url.clone(),
        ccu: plan.ccu,
        duration_s: plan.duration.as_secs_f64(),
        profile: o.profile.clone(),
        rates: plan.rates,
        room_activity_exponent: plan.profile.room_activity_exponent,
        arrival: plan.profile.arrival,
        ramp: o.ramp,
        slo: plan.slo,
        grace_s: plan.grace.as_secs_f64(),
        spike: plan.spike,
        seed: plan.seed,
    };
    Ok(Report::new(
        run_id,
        inputs,
        setup_info,
        steps,
        interrupted,
        cleanup,
    ))
}

/// Setup (bounded by --setup-timeout), then the steps.
async fn drive(
    api: &Api,
    admin: &Admin,
    plan: &Plan,
    o: &Options,
    run_id: &str,
    created: &Rc<RefCell<Created>>,
) -> Result<(SetupInfo, Vec<StepReport>), LoadError> {
    let t = Instant::now();
    let sizes = mix::room_sizes(&plan.profile.room_mix, plan.rates.rooms, plan.ccu);
    let members = mix::assign(
        &sizes,
        plan.ccu,
        &mut mix::rng(plan.seed, Stream::Members.id()),
    );
    // Setup of thousands of users takes minutes: say how far it is.
    let watch = created.clone();
    let (n_users, n_rooms) = (plan.ccu, sizes.len());
    let setup_progress = AbortOnDrop(vec![tokio::task::spawn_local(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let c = watch.borrow();
            eprintln!(
                "setup: {}/{n_users} users, {}/{n_rooms} rooms created (then members join)",
                c.users.len(),
                c.rooms.len()
            );
        }
    })]);
    let prepared = tokio::time::timeout(plan.setup_timeout, async {
        eprintln!(
            "mxstack loadtest {run_id}: creating {} users and {} rooms (--seed {})",
            plan.ccu,
            sizes.len(),
            plan.seed
        );
        // Setup waits out 429s as a client would (the router refuses bursts beyond its slots).
        let patient = api.patient();
        let users = setup::users(&patient, admin, run_id, plan.ccu, created).await?;
        let rooms = setup::rooms(&patient, admin, &users, members, run_id, created).await?;
        let created_sizes: Vec<usize> = rooms.iter().map(|r| r.members.len()).collect();
        let engine = Rc::new(Engine::new(
            api.clone(),
            format!("mxlt {run_id}"),
            users,
            rooms,
            &mix::weights(&created_sizes, plan.profile.room_activity_exponent),
            plan.profile.upload_bytes,
            plan.seed,
        ));
        let firsts = (0..plan.ccu)
            .map(|u| engine.clone().initial_sync(u))
            .collect();
        let since = setup::bounded(setup::SETUP_CONCURRENCY, firsts)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LoadError::Setup(format!("first sync: {e}")))?;
        Ok::<_, LoadError>((engine, since))
    })
    .await
    .map_err(|_| {
        LoadError::Setup(format!(
            "setup took longer than --setup-timeout ({}s)",
            plan.setup_timeout.as_secs()
        ))
    })??;
    drop(setup_progress);
    let (engine, since) = prepared;
    let info = SetupInfo {
        users: plan.ccu,
        rooms: sizes.len(),
        room_sizes: mix::histogram(&sizes),
        seconds: crate::report::round1(t.elapsed().as_secs_f64()),
    };
    engine.steps.borrow_mut().push(StepStats::default());
    // Dropped when the steps end or when Ctrl-C drops this future: the long-polls stop either way.
    let mut tasks = AbortOnDrop(Vec::new());
    for (u, since) in since.into_iter().enumerate() {
        tasks
            .0
            .push(tokio::task::spawn_local(engine.clone().sync_loop(u, since)));
    }
    tasks
        .0
        .push(tokio::task::spawn_local(lag_monitor(engine.clone())));
    let steps = steps(&engine, plan, o).await;
    drop(tasks);
    Ok((info, steps))
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn steps(engine: &Rc<Engine>, plan: &Plan, o: &Options) -> Vec<StepReport> {
    if let Some(spike) = plan.spike {
        return spike_steps(engine, plan, spike).await;
    }
    let mut out: Vec<StepReport> = Vec::new();
    let n = if o.ramp { o.ramp_steps } else { 1 };
    for k in 0..n {
        let rate = plan.rates.messages_per_min * o.ramp_factor.powi(k as i32);
        begin(engine, k, rate);
        load(engine, plan, k, rate, plan.duration).await;
        settle(engine, plan, &[k]).await;
        let r = StepReport::from_stats(&engine.steps.borrow()[k], &plan.slo);
        let stop = r.verdict != Verdict::Pass;
        out.push(r);
        if stop {
            break;
        }
    }
    out
}

/// Before (settled), then the spike and after back to back: recovery starts when the spike ends.
async fn spike_steps(engine: &Rc<Engine>, plan: &Plan, spike: SpikeInputs) -> Vec<StepReport> {
    let rate = plan.rates.messages_per_min;
    let spike_duration = Duration::from_secs_f64(spike.duration_s);
    begin(engine, 0, rate);
    load(engine, plan, 0, rate, plan.duration).await;
    settle(engine, plan, &[0]).await;
    begin(engine, 1, rate * spike.factor);
    load(engine, plan, 1, rate * spike.factor, spike_duration).await;
    begin(engine, 2, rate);
    load(engine, plan, 2, rate, plan.duration).await;
    settle(engine, plan, &[1, 2]).await;
    let steps = engine.steps.borrow();
    steps
        .iter()
        .map(|s| StepReport::from_stats(s, &plan.slo))
        .collect()
}

/// One request task of the load.
type Job = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// Step `k` starts: new requests count for it (requests in flight keep their own step).
fn begin(engine: &Rc<Engine>, k: usize, rate: f64) {
    let mut steps = engine.steps.borrow_mut();
    if steps.len() <= k {
        steps.push(StepStats::default());
    }
    steps[k].target_per_min = rate;
    steps[k].started = Some(Instant::now());
}

/// The load of step `k` for `duration` at `rate` messages per minute (typing, receipts and
/// uploads scaled with it).
async fn load(engine: &Rc<Engine>, plan: &Plan, k: usize, rate: f64, duration: Duration) {
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let end = start + duration;
    let arrival = plan.profile.arrival;
    let spawn = |f: fn(Rc<Engine>) -> Job| {
        let e = engine.clone();
        move || {
            tokio::task::spawn_local(f(e.clone()));
        }
    };
    let scale = rate / plan.rates.messages_per_min.max(f64::MIN_POSITIVE);
    let gaps = |kind| mix::rng(plan.seed, Stream::Arrivals(kind, k).id());
    tokio::join!(
        ticker(
            rate,
            end,
            arrival,
            gaps(Kind::Message),
            spawn(|e| Box::pin(e.send_one()))
        ),
        ticker(
            plan.rates.typing_per_min * scale,
            end,
            arrival,
            gaps(Kind::Typing),
            spawn(|e| Box::pin(e.typing_one()))
        ),
        ticker(
            plan.rates.receipts_per_min * scale,
            end,
            arrival,
            gaps(Kind::Receipt),
            spawn(|e| Box::pin(e.receipt_one()))
        ),
        ticker(
            plan.rates.uploads_per_hour / 60.0 * scale,
            end,
            arrival,
            gaps(Kind::Upload),
            spawn(|e| Box::pin(e.upload_one()))
        ),
        progress(engine, k, rate, start, end),
    );
    let mut s = engine.steps.borrow_mut();
    s[k].load_seconds = start.elapsed().as_secs_f64();
    s[k].cpu_seconds = cpu_seconds() - cpu0;
}

/// Sends still in flight end within their timeout; then the bounded grace for deliveries; what
/// is still missing then is never delivered.
async fn settle(engine: &Rc<Engine>, plan: &Plan, ks: &[usize]) {
    let settle = Instant::now() + SEND_TIMEOUT + Duration::from_secs(1);
    while engine.in_flight.get() > 0 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let owed = || ks.iter().map(|&k| engine.outstanding(k).0).sum::<u64>();
    let n = owed();
    if n > 0 {
        eprintln!(
            "waiting up to {}s for {n} messages still owed to members",
            plan.grace.as_secs()
        );
    }
    let grace_end = Instant::now() + plan.grace;
    while owed() > 0 && Instant::now() < grace_end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for &k in ks {
        engine.close_step(k);
    }
}

/// The live line on stderr, once a second until `end`.
async fn progress(engine: &Rc<Engine>, k: usize, rate: f64, start: Instant, end: Instant) {
    // SAFETY: isatty only inspects the descriptor.
    let tty = unsafe { libc::isatty(2) } == 1;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while Instant::now() < end {
        tick.tick().await;
        let el = start.elapsed().as_secs_f64();
        let line = {
            let steps = engine.steps.borrow();
            let s = &steps[k];
            let errs = s.send.errors()
                + s.sync.errors()
                + s.upload.errors()
                + s.typing.errors()
                + s.receipt.errors();
            format!(
                "[{:>4.0}s/{:.0}s] step {} target {:.0}/min actual {:.0}/min acked {} p99 {} errors {} syncs open {}/{} in flight {}",
                el, (end - start).as_secs_f64(), k + 1, rate, s.acknowledged as f64 * 60.0 / el.max(1.0), s.acknowledged,
                s.delivery_latency.p99_ms().map(|p| format!("{p:.0}ms")).unwrap_or_else(|| "-".into()),
                errs, engine.syncs_open.get(), engine.users.len(), engine.in_flight.get()
            )
        };
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }
    if tty {
        eprintln!();
    }
}
