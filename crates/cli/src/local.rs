//! `up`, `status`, `logs`, `down`, `user add` and the hidden `supervise`: the local target.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use mxstack_local::plan::Programs;
use mxstack_local::preflight;
use mxstack_local::status::alive;
use mxstack_local::supervisor::{self, Supervisor};
use mxstack_local::{LocalPlan, ProcessState, Shape, StackStatus, StateLayout};
use mxstack_spec::{Config, SecretName, Secrets};
use serde_json::{json, Value};

type CmdResult = Result<ExitCode, String>;

pub struct Target {
    pub config: PathBuf,
    pub secrets: PathBuf,
    pub layout: StateLayout,
}

impl Target {
    pub fn new(config: &Path, state: Option<&Path>, secrets: Option<&Path>) -> Target {
        let secrets = secrets.map(Path::to_path_buf).unwrap_or_else(|| {
            config
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join("secrets.yaml")
        });
        Target {
            config: config.to_path_buf(),
            secrets,
            layout: StateLayout::for_config(config, state),
        }
    }

    pub fn load(&self) -> Result<(Config, Secrets), String> {
        let (config, locator) = Config::load(&self.config).map_err(|e| e.to_string())?;
        let errors: Vec<String> = mxstack_checks::config::check(&config, &locator)
            .into_iter()
            .filter(|f| f.is_error())
            .map(|f| f.to_string())
            .collect();
        if !errors.is_empty() {
            return Err(format!(
                "the config has errors (run `mxstack check`):\n{}",
                errors.join("\n")
            ));
        }
        let secrets = Secrets::load(&self.secrets).map_err(|e| e.to_string())?;
        secrets
            .require_complete(&self.secrets.display().to_string())
            .map_err(|e| e.to_string())?;
        Ok((config, secrets))
    }

    /// The pid of this stack's supervisor, when it runs.
    pub fn running_supervisor_pid(&self) -> Option<u32> {
        self.running_supervisor()
    }

    pub fn running_supervisor(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.layout.supervisor_pid())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

/// The shape `up --replicas R --base-port P` runs: the recorded one when it was started the
/// same way (so a stack `mxstack scale` changed comes back as it was), otherwise a new one.
pub fn shape_for(t: &Target, base_port: u16, replicas: u32) -> Shape {
    t.layout
        .shape()
        .filter(|s| s.base_port == base_port && s.replicas == replicas)
        .unwrap_or_else(|| Shape::new(base_port, replicas))
}

pub fn supervise(t: &Target, replicas: u32, base_port: u16) -> CmdResult {
    let (config, secrets) = t.load()?;
    let programs = Programs::for_stack(&config, &t.layout)?;
    let mut shape = shape_for(t, base_port, replicas);
    let plan = LocalPlan::build(&config, &secrets, &t.layout, &shape, &programs);
    supervisor::install_signal_handlers();
    std::fs::create_dir_all(&t.layout.root).map_err(|e| e.to_string())?;
    std::fs::write(t.layout.supervisor_pid(), std::process::id().to_string())
        .map_err(|e| e.to_string())?;
    shape.order = plan.addressing.process_order.clone();
    shape
        .save(&t.layout.up_args_file())
        .map_err(|e| e.to_string())?;
    // A control `Reload` (`mxstack rotate`, `upgrade`, `scale`) builds the plan again from the
    // files on disk: the shape, and Synapse's pinned version.
    let rebuild = move || -> Result<LocalPlan, String> {
        let (config, secrets) = t.load()?;
        let programs = Programs::for_stack(&config, &t.layout)?;
        let shape = t
            .layout
            .shape()
            .ok_or("the stack's shape (up-args.json) is unreadable")?;
        Ok(LocalPlan::build(
            &config, &secrets, &t.layout, &shape, &programs,
        ))
    };
    let mut sup = Supervisor::new(plan, &t.layout)?.with_rebuild(Box::new(rebuild));
    let result = sup.prepare().and_then(|_| sup.start_all());
    let code = match result {
        Ok(()) => {
            sup.watch();
            sup.stop_all();
            ExitCode::SUCCESS
        }
        Err(e) => {
            sup.fail(&e);
            ExitCode::from(1)
        }
    };
    let _ = std::fs::remove_file(t.layout.supervisor_pid());
    Ok(code)
}

/// `announce`: print the outcome on stdout (off when `restore` starts the stack and reports).
pub fn up(
    t: &Target,
    replicas: u32,
    base_port: u16,
    foreground: bool,
    json: bool,
    announce: bool,
) -> CmdResult {
    let (config, secrets) = t.load()?;
    if let Some(pid) = t.running_supervisor() {
        if let Some(s) = StackStatus::load(&t.layout.status_file()) {
            if s.phase == "ready" {
                if announce && json {
                    print_json(
                        &json!({ "already_running": true, "supervisor_pid": pid, "client_url": s.client_url }),
                    );
                } else if announce {
                    println!("already running (supervisor pid {pid}): {}", s.client_url);
                }
                return Ok(ExitCode::SUCCESS);
            }
        }
        return wait_ready(t, Watched::Attached(pid), json, announce);
    }
    // Before anything starts: the runtime, every port of the block, the state directory. A
    // stack that cannot start says so at once and leaves nothing behind.
    let checked = preflight::programs(&config, &t.layout).and_then(|programs| {
        let shape = shape_for(t, base_port, replicas);
        let plan = LocalPlan::build(&config, &secrets, &t.layout, &shape, &programs);
        preflight::check(&plan, &t.layout.root)
    });
    if let Err(e) = checked {
        return failed(json, &e.to_string());
    }
    if foreground {
        return supervise(t, replicas, base_port);
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let args: Vec<String> = vec![
        "supervise".into(),
        "--config".into(),
        t.config.display().to_string(),
        "--state".into(),
        t.layout.root.display().to_string(),
        "--replicas".into(),
        replicas.to_string(),
        "--base-port".into(),
        base_port.to_string(),
        "--secrets".into(),
        t.secrets.display().to_string(),
    ];
    // A fresh status file, so we never read the previous run's outcome.
    let _ = std::fs::remove_file(t.layout.status_file());
    std::fs::create_dir_all(t.layout.logs())
        .map_err(|e| format!("cannot create {}: {e}", t.layout.logs().display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(t.layout.supervisor_log())
        .map_err(|e| e.to_string())?;
    let child = {
        use std::os::unix::process::CommandExt;
        Command::new(exe)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the supervisor: {e}"))?
    };
    wait_ready(t, Watched::Child(child), json, announce)
}

/// `up` failed: the cause on stderr (and as JSON), exit status 1.
fn failed(json: bool, message: &str) -> CmdResult {
    if json {
        print_json(&json!({ "ready": false, "error": message }));
    }
    eprintln!("error: {message}");
    Ok(ExitCode::from(1))
}

/// The supervisor `up` waits for: its own child (reaped with `try_wait`, so an exit is seen at
/// once: a zombie still answers signal 0), or one a previous `up` started.
enum Watched {
    Child(std::process::Child),
    Attached(u32),
}

impl Watched {
    fn pid(&self) -> u32 {
        match self {
            Watched::Child(c) => c.id(),
            Watched::Attached(p) => *p,
        }
    }

    /// How it ended, once it has.
    fn exit(&mut self) -> Option<String> {
        match self {
            Watched::Child(c) => match c.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(e) => Some(format!("unknown ({e})")),
            },
            Watched::Attached(p) => (!alive(*p)).then(|| "exited".to_string()),
        }
    }
}

/// Follows status.json until the stack is ready or failed, printing progress to stderr.
fn wait_ready(t: &Target, mut sup: Watched, json: bool, announce: bool) -> CmdResult {
    let start = Instant::now();
    let pid = sup.pid();
    let mut shown: std::collections::BTreeMap<String, ProcessState> = Default::default();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let status = StackStatus::load(&t.layout.status_file());
        if let Some(s) = &status {
            for p in &s.processes {
                if shown.get(&p.name) != Some(&p.state)
                    && matches!(
                        p.state,
                        ProcessState::Ready | ProcessState::Done | ProcessState::Failed
                    )
                {
                    if !json {
                        eprintln!(
                            "[{:>4}s] {:<28} {:?}",
                            start.elapsed().as_secs(),
                            p.name,
                            p.state
                        );
                    }
                    shown.insert(p.name.clone(), p.state);
                }
            }
            match s.phase.as_str() {
                "ready" => {
                    if announce && json {
                        print_json(
                            &json!({ "ready": true, "supervisor_pid": pid, "client_url": s.client_url, "seconds": start.elapsed().as_secs() }),
                        );
                    } else if announce {
                        println!("ready in {}s: {}", start.elapsed().as_secs(), s.client_url);
                        println!(
                            "create a user: mxstack user add --config {} alice --admin",
                            t.config.display()
                        );
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                "failed" | "stopped" => {
                    let err = s
                        .error
                        .clone()
                        .unwrap_or_else(|| "the supervisor stopped".into());
                    return failed(
                        json,
                        &format!(
                            "{err}\n(supervisor log: {})",
                            t.layout.supervisor_log().display()
                        ),
                    );
                }
                _ => {}
            }
        }
        if let Some(how) = sup.exit() {
            let left = stop_leftovers(t, status.as_ref());
            return failed(
                json,
                &format!(
                    "the supervisor exited ({how}) before the stack was ready: {}{}\n(supervisor log: {})",
                    last_error(&t.layout.supervisor_log())
                        .unwrap_or_else(|| "it logged no error".into()),
                    if left > 0 {
                        format!("; stopped {left} processes it had started")
                    } else {
                        String::new()
                    },
                    t.layout.supervisor_log().display()
                ),
            );
        }
    }
}

/// The supervisor's own last error line (main prints `error: ...`), else its last line.
fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .or(lines.last().copied())
        .map(str::to_owned)
}

/// A supervisor that died without stopping its processes (killed): its children get SIGTERM
/// from the kernel (PR_SET_PDEATHSIG), which not every program obeys at once (SeaweedFS kept
/// running), so the ones its status lists are killed, those whose command line names this
/// stack's state directory (a reused pid is never touched). Returns how many were stopped.
fn stop_leftovers(t: &Target, status: Option<&StackStatus>) -> usize {
    let given = t.layout.root.display().to_string();
    let canonical = std::fs::canonicalize(&t.layout.root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| given.clone());
    let ours = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains(&given) || c.contains(&canonical)
            })
            .unwrap_or(false)
    };
    let pids: Vec<u32> = status
        .map(|s| s.processes.iter().filter_map(|p| p.pid).collect())
        .unwrap_or_default();
    let mut stopped = 0;
    for pid in pids.into_iter().filter(|p| alive(*p) && ours(*p)) {
        // SAFETY: a process our supervisor started (checked above); its group, as started.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
            libc::kill(pid as i32, libc::SIGKILL);
        }
        stopped += 1;
    }
    stopped
}

pub fn status(t: &Target, json: bool) -> CmdResult {
    let running = t.running_supervisor();
    let Some(s) = StackStatus::load(&t.layout.status_file()) else {
        if json {
            print_json(&json!({ "running": false, "state_dir": t.layout.root }));
        } else {
            println!("not running (no status in {})", t.layout.root.display());
        }
        return Ok(ExitCode::from(3));
    };
    let live = running.is_some();
    let alerts = live.then(|| firing_alerts(&s)).flatten();
    if json {
        let mut v = serde_json::to_value(&s).expect("status");
        v["running"] = json!(live);
        v["state_dir"] = json!(t.layout.root);
        if let Some(a) = &alerts {
            v["alerts"] = json!(a);
        }
        print_json(&v);
    } else {
        println!(
            "supervisor: {} ({}), client URL {}",
            if live { "running" } else { "not running" },
            s.phase,
            s.client_url
        );
        println!(
            "{:<30} {:>8} {:<11} {:>8} {:>6}",
            "process", "pid", "state", "restarts", "port"
        );
        for p in &s.processes {
            let pid = p.pid.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
            let port = p.port.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
            println!(
                "{:<30} {:>8} {:<11} {:>8} {:>6}",
                p.name,
                pid,
                format!("{:?}", p.state).to_lowercase(),
                p.restarts,
                port
            );
        }
        if let Some(a) = &alerts {
            print_alerts(a);
        }
    }
    Ok(if live {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// The alerts the local Prometheus has pending or firing (feature `monitoring`): None when it
/// does not run or does not answer.
fn firing_alerts(s: &StackStatus) -> Option<Vec<Value>> {
    let port = s.processes.iter().find(|p| p.name == "prometheus")?.port?;
    let r =
        mxstack_local::http::request(port, "GET", "/api/v1/alerts", None, Duration::from_secs(5))
            .ok()?;
    let alerts = r.json()?["data"]["alerts"].as_array()?.clone();
    Some(
        alerts
            .into_iter()
            .map(|a| {
                let mut labels = a["labels"].clone();
                let name = labels["alertname"].take();
                let severity = labels["severity"].take();
                let labels: serde_json::Map<String, Value> = labels
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, v)| !v.is_null() && k.as_str() != "namespace")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                json!({"alert": name, "state": a["state"], "severity": severity,
                       "labels": labels, "since": a["activeAt"],
                       "summary": a["annotations"]["summary"]})
            })
            .collect(),
    )
}

fn print_alerts(alerts: &[Value]) {
    if alerts.is_empty() {
        println!("alerts: none firing (Prometheus port shown above)");
        return;
    }
    println!("alerts:");
    for a in alerts {
        let labels: Vec<String> = a["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        println!(
            "  {:<8} {:<9} {} {{{}}} since {}: {}",
            a["state"].as_str().unwrap_or_default(),
            a["severity"].as_str().unwrap_or_default(),
            a["alert"].as_str().unwrap_or_default(),
            labels.join(", "),
            a["since"].as_str().unwrap_or_default(),
            a["summary"].as_str().unwrap_or_default()
        );
    }
}

pub fn logs(t: &Target, process: Option<&str>, follow: bool) -> CmdResult {
    let files: Vec<PathBuf> = match process {
        Some(p) => {
            let f = t.layout.log_file(p);
            if !f.exists() {
                let known: Vec<String> = std::fs::read_dir(t.layout.logs())
                    .map(|d| {
                        d.filter_map(|e| {
                            e.ok()?
                                .file_name()
                                .to_str()?
                                .strip_suffix(".log")
                                .map(str::to_owned)
                        })
                        .collect()
                    })
                    .unwrap_or_default();
                return Err(format!("no log for `{p}`; known: {}", known.join(", ")));
            }
            vec![f]
        }
        None => {
            let mut v: Vec<PathBuf> = std::fs::read_dir(t.layout.logs())
                .map_err(|e| format!("no logs in {}: {e}", t.layout.logs().display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            v.sort();
            v
        }
    };
    let mut offsets = vec![0u64; files.len()];
    let out = std::io::stdout();
    loop {
        for (i, f) in files.iter().enumerate() {
            let Ok(mut file) = std::fs::File::open(f) else {
                continue;
            };
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if len < offsets[i] {
                offsets[i] = 0;
            }
            if len == offsets[i] {
                continue;
            }
            let _ = file.seek(SeekFrom::Start(offsets[i]));
            let mut buf = String::new();
            let _ = file.read_to_string(&mut buf);
            offsets[i] = len;
            let name = f.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let mut lock = out.lock();
            for line in buf.lines() {
                if files.len() > 1 {
                    let _ = writeln!(lock, "{name:<24} | {line}");
                } else {
                    let _ = writeln!(lock, "{line}");
                }
            }
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn down(t: &Target, purge: bool, json: bool) -> CmdResult {
    let stopped = stop(t)?;
    let mut deleted = None;
    if purge && t.layout.root.exists() {
        std::fs::remove_dir_all(&t.layout.root)
            .map_err(|e| format!("cannot delete {}: {e}", t.layout.root.display()))?;
        deleted = Some(t.layout.root.display().to_string());
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"stopped": stopped, "deleted": deleted})
        );
    } else {
        println!("{}", if stopped { "stopped" } else { "not running" });
        if let Some(d) = deleted {
            println!("deleted {d}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Stops the stack's supervisor (which stops every process in reverse order) and waits for it;
/// false when none was running.
pub fn stop(t: &Target) -> Result<bool, String> {
    let Some(pid) = t.running_supervisor() else {
        return Ok(false);
    };
    eprintln!("stopping (supervisor pid {pid}) ...");
    // SAFETY: asking our own supervisor process to shut down.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
    }
    if alive(pid) {
        return Err(format!(
            "the supervisor (pid {pid}) did not stop within 180s; see {}",
            t.layout.supervisor_log().display()
        ));
    }
    Ok(true)
}

pub fn user_add(
    t: &Target,
    name: &str,
    admin: bool,
    password: Option<&str>,
    json: bool,
) -> CmdResult {
    let (_, secrets) = t.load()?;
    let status = StackStatus::load(&t.layout.status_file())
        .filter(|s| s.phase == "ready")
        .ok_or("the local stack is not running: run `mxstack up` first")?;
    let port: u16 = status
        .client_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or("bad client URL in status")?;
    let password = match password {
        Some(p) => p.to_string(),
        None => mxstack_spec::generate(mxstack_spec::SecretShape::Alnum(20))
            .map_err(|e| e.to_string())?,
    };
    let user = mxstack_local::users::register(
        port,
        secrets.get(SecretName::RegistrationSharedSecret),
        name,
        &password,
        admin,
    )?;
    if json {
        print_json(
            &json!({ "user_id": user.user_id, "password": user.password, "access_token": user.access_token,
                            "device_id": user.device_id, "admin": admin, "client_url": status.client_url }),
        );
    } else {
        println!("user_id:      {}\npassword:     {}\naccess_token: {}\nlog in at {} (Element: set the homeserver to that URL)", user.user_id, user.password, user.access_token, status.client_url);
    }
    Ok(ExitCode::SUCCESS)
}
