//! The supervisor: starts services in dependency order with readiness checks, restarts a crashed
//! process with backoff, shuts everything down in reverse order, keeps one log file per process,
//! and writes `status.json` whenever something changes.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::control::{self, Action, Outcome};
use crate::layout::StateLayout;
use crate::plan::{GeneratedFile, LocalPlan, Readiness, Service};
use crate::runtime::user_ids;
use crate::status::{ProcessState, ProcessStatus, StackStatus};

#[path = "reshape.rs"]
mod reshape;

static STOP: AtomicBool = AtomicBool::new(false);
static CONTROL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_hup(_: libc::c_int) {
    CONTROL.store(true, Ordering::SeqCst);
}

/// SIGTERM and SIGINT ask for an orderly shutdown; SIGHUP says a control request is waiting
/// (`crate::control`).
pub fn install_signal_handlers() {
    // SAFETY: the handlers only store to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, on_hup as *const () as libc::sighandler_t);
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

const READY_TIMEOUT: Duration = Duration::from_secs(300);
const STOP_GRACE: Duration = Duration::from_secs(20);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct Running {
    child: Child,
    started: Instant,
}

/// Builds the plan again from the config and secrets.yaml on disk (a control `Reload`).
pub type Rebuild<'a> = Box<dyn Fn() -> Result<LocalPlan, String> + 'a>;

pub struct Supervisor<'a> {
    /// Shared so a method can walk its services while starting them; replaced on `Reload`.
    plan: Rc<LocalPlan>,
    rebuild: Option<Rebuild<'a>>,
    layout: &'a StateLayout,
    running: BTreeMap<String, Running>,
    status: StackStatus,
    log: File,
}

fn chown(path: &Path, ids: (u32, u32)) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(ids.0), Some(ids.1))
}

/// The command that runs `s` as the supervisor does: its arguments, environment and user, output
/// appended to `log`, in a process group of its own, dying with its parent. `mxstack restore`
/// starts PostgreSQL and SeaweedFS through it while the stack is down.
pub fn command(s: &Service, layout: &StateLayout, log: &Path) -> Result<Command, String> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open log for {}: {e}", s.name))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&s.program);
    cmd.args(&s.args)
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .stdout(log)
        .stderr(err)
        .stdin(if s.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .current_dir(&layout.root)
        .process_group(0);
    if let Some(user) = &s.run_as {
        let (uid, gid) = user_ids(user).ok_or(format!(
            "system user `{user}` does not exist (install postgresql-15)"
        ))?;
        cmd.uid(uid).gid(gid);
        cmd.env("HOME", &layout.root);
    }
    // SAFETY: prctl is async-signal-safe; children die with the supervisor, not orphaned.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    Ok(cmd)
}

impl<'a> Supervisor<'a> {
    pub fn new(plan: LocalPlan, layout: &'a StateLayout) -> Result<Supervisor<'a>, String> {
        std::fs::create_dir_all(layout.logs())
            .map_err(|e| format!("cannot create {}: {e}", layout.logs().display()))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(layout.supervisor_log())
            .map_err(|e| format!("cannot open the supervisor log: {e}"))?;
        let status = StackStatus {
            supervisor_pid: std::process::id(),
            phase: "starting".into(),
            error: None,
            client_url: plan.client_url.clone(),
            postgres_dsn: plan.postgres_dsn.clone(),
            s3_endpoint: plan.s3_endpoint.clone(),
            s3_bucket: plan.bucket.clone(),
            processes: plan
                .services
                .iter()
                .map(|s| ProcessStatus::waiting(&s.name, s.port))
                .collect(),
        };
        Ok(Supervisor {
            plan: Rc::new(plan),
            rebuild: None,
            layout,
            running: BTreeMap::new(),
            status,
            log,
        })
    }

    /// How a control `Reload` rebuilds the plan (without one, `Reload` fails).
    pub fn with_rebuild(mut self, rebuild: Rebuild<'a>) -> Supervisor<'a> {
        self.rebuild = Some(rebuild);
        self
    }

    fn say(&mut self, msg: &str) {
        let _ = writeln!(self.log, "{} {msg}", unix_time());
    }

    fn set(&mut self, name: &str, state: ProcessState, pid: Option<u32>) {
        if let Some(p) = self.status.processes.iter_mut().find(|p| p.name == name) {
            p.state = state;
            p.pid = pid;
        }
        let _ = self.status.save(&self.layout.status_file());
    }

    /// Writes every generated file and prepares directories (ownership for PostgreSQL).
    pub fn prepare(&mut self) -> Result<(), String> {
        let l = self.layout;
        for dir in [
            l.root.clone(),
            l.sockets(),
            l.logs(),
            l.seaweedfs_dir().join("data"),
            l.root.join("postgres"),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        for f in &self.plan.files {
            if let Some(parent) = f.path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            write_generated(f)?;
        }
        if let Some(ids) = user_ids("postgres") {
            use std::os::unix::fs::PermissionsExt;
            // PostgreSQL runs as `postgres`: it must reach its data dir, sockets and init password.
            for ancestor in l.root.ancestors() {
                let meta = std::fs::metadata(ancestor).map_err(|e| e.to_string())?;
                if meta.permissions().mode() & 0o001 == 0 && ancestor != l.root {
                    return Err(format!(
                        "{} is not traversable by the postgres user (mode {:o}); choose a --state directory under a world-traversable path, or `chmod o+x {}`",
                        ancestor.display(),
                        meta.permissions().mode() & 0o777,
                        ancestor.display()
                    ));
                }
            }
            std::fs::set_permissions(&l.root, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| e.to_string())?;
            for p in [
                l.root.join("postgres"),
                l.sockets(),
                l.root.join("postgres/initdb-password"),
            ] {
                if p.exists() {
                    chown(&p, ids)
                        .map_err(|e| format!("cannot hand {} to postgres: {e}", p.display()))?;
                }
            }
            if l.postgres_data().exists() {
                chown(&l.postgres_data(), ids).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    fn spawn(&mut self, s: &Service) -> Result<Child, String> {
        let mut cmd = command(s, self.layout, &self.layout.log_file(&s.name))?;
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {} ({}): {e}", s.name, s.program.display()))?;
        if let Some(input) = &s.stdin {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(input.as_bytes());
            }
        }
        Ok(child)
    }

    fn ready(&self, r: &Readiness) -> bool {
        match r {
            Readiness::Tcp { port } => connect(*port).is_some(),
            Readiness::Http { port, path } => {
                crate::http::request(*port, "GET", path, None, Duration::from_secs(2))
                    .map(|r| r.status == 200)
                    .unwrap_or(false)
            }
            Readiness::Redis { port } => redis_ping(*port, &self.plan.redis_password),
            Readiness::Exited => true,
        }
    }

    /// Starts one service and waits until it is ready (or, for a one-shot, finished).
    fn start_and_wait(&mut self, s: &Service) -> Result<(), String> {
        if let Some(p) = &s.skip_if_exists {
            if p.exists() {
                self.set(&s.name, ProcessState::Done, None);
                return Ok(());
            }
        }
        if let Some(p) = self.status.processes.iter().find(|p| p.name == s.name) {
            if p.state == ProcessState::Ready && self.running.contains_key(&s.name) {
                return Ok(());
            }
        }
        self.say(&format!("starting {}", s.name));
        let mut child = self.spawn(s)?;
        let pid = child.id();
        self.set(&s.name, ProcessState::Starting, Some(pid));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if stop_requested() {
                let _ = child.kill();
                return Err("stop requested during start".into());
            }
            if let Some(exit) = child.try_wait().map_err(|e| e.to_string())? {
                if s.one_shot && exit.success() {
                    self.set(&s.name, ProcessState::Done, None);
                    self.say(&format!("{} finished", s.name));
                    return Ok(());
                }
                self.set(&s.name, ProcessState::Failed, None);
                return Err(format!(
                    "{} exited with {exit} while starting; see {}",
                    s.name,
                    self.layout.log_file(&s.name).display()
                ));
            }
            if !s.one_shot && self.ready(&s.readiness) {
                self.running.insert(
                    s.name.clone(),
                    Running {
                        child,
                        started: Instant::now(),
                    },
                );
                self.set(&s.name, ProcessState::Ready, Some(pid));
                self.say(&format!("{} ready (pid {pid})", s.name));
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                self.set(&s.name, ProcessState::Failed, None);
                return Err(format!(
                    "{} was not ready within {}s; see {}",
                    s.name,
                    READY_TIMEOUT.as_secs(),
                    self.layout.log_file(&s.name).display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts everything in dependency waves; processes of one wave start together.
    pub fn start_all(&mut self) -> Result<(), String> {
        let plan = Rc::clone(&self.plan);
        let order = plan.start_order();
        let mut done: Vec<String> = Vec::new();
        let mut pending: Vec<&Service> = order;
        while !pending.is_empty() {
            let (wave, rest): (Vec<&Service>, Vec<&Service>) = pending
                .into_iter()
                .partition(|s| s.after.iter().all(|a| done.contains(a)));
            if wave.is_empty() {
                return Err("dependency cycle in the local plan".into());
            }
            // Spawn the whole wave, then wait for each: Synapse workers start in parallel.
            let mut starting = Vec::new();
            for s in &wave {
                if s.one_shot || s.skip_if_exists.as_ref().is_some_and(|p| p.exists()) {
                    self.start_and_wait(s)?;
                } else {
                    starting.push(*s);
                }
            }
            self.start_wave(&starting)?;
            done.extend(wave.iter().map(|s| s.name.clone()));
            pending = rest;
        }
        self.status.phase = "ready".into();
        let _ = self.status.save(&self.layout.status_file());
        self.say("all services ready");
        Ok(())
    }

    fn start_wave(&mut self, wave: &[&Service]) -> Result<(), String> {
        let mut children: Vec<(&Service, Child)> = Vec::new();
        for s in wave {
            self.say(&format!("starting {}", s.name));
            let child = self.spawn(s)?;
            self.set(&s.name, ProcessState::Starting, Some(child.id()));
            children.push((s, child));
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        while !children.is_empty() {
            if stop_requested() {
                for (_, c) in children.iter_mut() {
                    let _ = c.kill();
                }
                return Err("stop requested during start".into());
            }
            let mut still = Vec::new();
            for (s, mut child) in children {
                if let Some(exit) = child.try_wait().map_err(|e| e.to_string())? {
                    self.set(&s.name, ProcessState::Failed, None);
                    return Err(format!(
                        "{} exited with {exit} while starting; see {}",
                        s.name,
                        self.layout.log_file(&s.name).display()
                    ));
                }
                if self.ready(&s.readiness) {
                    let pid = child.id();
                    self.running.insert(
                        s.name.clone(),
                        Running {
                            child,
                            started: Instant::now(),
                        },
                    );
                    self.set(&s.name, ProcessState::Ready, Some(pid));
                    self.say(&format!("{} ready (pid {pid})", s.name));
                } else {
                    still.push((s, child));
                }
            }
            children = still;
            if Instant::now() > deadline {
                let names: Vec<&str> = children.iter().map(|(s, _)| s.name.as_str()).collect();
                return Err(format!(
                    "not ready within {}s: {}",
                    READY_TIMEOUT.as_secs(),
                    names.join(", ")
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }

    /// Watches children until a stop is requested; restarts crashed ones with backoff.
    pub fn watch(&mut self) {
        let mut backoff: BTreeMap<String, (Duration, Option<Instant>)> = BTreeMap::new();
        let mut restarting: BTreeMap<String, (Option<Child>, Instant)> = BTreeMap::new();
        while !stop_requested() {
            if CONTROL.swap(false, Ordering::SeqCst) {
                self.control();
            }
            let names: Vec<String> = self.running.keys().cloned().collect();
            for name in names {
                let exited = {
                    let r = self.running.get_mut(&name).expect("running");
                    r.child
                        .try_wait()
                        .ok()
                        .flatten()
                        .map(|e| (e, r.started.elapsed()))
                };
                if let Some((exit, uptime)) = exited {
                    self.running.remove(&name);
                    let entry = backoff
                        .entry(name.clone())
                        .or_insert((Duration::from_secs(1), None));
                    // A process that ran for a minute starts its backoff over.
                    if uptime > Duration::from_secs(60) {
                        entry.0 = Duration::from_secs(1);
                    }
                    let delay = entry.0;
                    entry.0 = (entry.0 * 2).min(MAX_BACKOFF);
                    self.say(&format!(
                        "{name} exited ({exit}) after {}s; restarting in {}s",
                        uptime.as_secs(),
                        delay.as_secs()
                    ));
                    if let Some(p) = self.status.processes.iter_mut().find(|p| p.name == name) {
                        p.restarts += 1;
                        p.last_exit = Some(exit.to_string());
                    }
                    self.set(&name, ProcessState::Restarting, None);
                    restarting.insert(name, (None, Instant::now() + delay));
                }
            }
            // Respawn due processes, and promote respawned ones once ready.
            let due: Vec<String> = restarting.keys().cloned().collect();
            for name in due {
                let (child, at) = restarting.remove(&name).expect("entry");
                // `mxstack scale` removed it from the plan while it was in backoff.
                let Some(service) = self.plan.service(&name).cloned() else {
                    if let Some(mut c) = child {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    continue;
                };
                match child {
                    None if Instant::now() >= at => match self.spawn(&service) {
                        Ok(c) => {
                            self.set(&name, ProcessState::Starting, Some(c.id()));
                            restarting.insert(name, (Some(c), at));
                        }
                        Err(e) => {
                            self.say(&e);
                            restarting.insert(name, (None, Instant::now() + MAX_BACKOFF));
                        }
                    },
                    None => {
                        restarting.insert(name, (None, at));
                    }
                    Some(mut c) => {
                        if let Ok(Some(exit)) = c.try_wait() {
                            let delay = backoff.get(&name).map(|b| b.0).unwrap_or(MAX_BACKOFF);
                            self.say(&format!(
                                "{name} exited again ({exit}); retrying in {}s",
                                delay.as_secs()
                            ));
                            if let Some(b) = backoff.get_mut(&name) {
                                b.0 = (b.0 * 2).min(MAX_BACKOFF);
                            }
                            self.set(&name, ProcessState::Restarting, None);
                            restarting.insert(name, (None, Instant::now() + delay));
                        } else if self.ready(&service.readiness) {
                            let pid = c.id();
                            self.running.insert(
                                name.clone(),
                                Running {
                                    child: c,
                                    started: Instant::now(),
                                },
                            );
                            self.set(&name, ProcessState::Ready, Some(pid));
                            self.say(&format!("{name} ready again (pid {pid})"));
                        } else {
                            restarting.insert(name, (Some(c), at));
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for (_, (child, _)) in restarting {
            if let Some(mut c) = child {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Stops everything in reverse start order: SIGTERM, then SIGKILL after a grace period.
    pub fn stop_all(&mut self) {
        self.status.phase = "stopping".into();
        let _ = self.status.save(&self.layout.status_file());
        let order: Vec<String> = self
            .plan
            .start_order()
            .iter()
            .rev()
            .map(|s| s.name.clone())
            .collect();
        // Reverse start order: the router and Synapse stop before their backends.
        for name in order {
            let Some(r) = self.running.remove(&name) else {
                continue;
            };
            self.terminate(&name, r);
        }
        self.status.phase = "stopped".into();
        let _ = self.status.save(&self.layout.status_file());
    }

    /// SIGTERM, then SIGKILL after the service's grace period.
    fn terminate(&mut self, name: &str, mut r: Running) {
        let name = name.to_string();
        self.set(&name, ProcessState::Stopping, Some(r.child.id()));
        // SAFETY: sending SIGTERM to our own child process.
        unsafe {
            libc::kill(r.child.id() as i32, libc::SIGTERM);
        }
        let grace = self
            .plan
            .service(&name)
            .map(|s| Duration::from_secs(s.stop_grace_secs))
            .unwrap_or(STOP_GRACE);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = r.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if r.child.try_wait().ok().flatten().is_none() {
            self.say(&format!(
                "{name} did not stop within {}s; killing",
                grace.as_secs()
            ));
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        self.set(&name, ProcessState::Stopped, None);
        self.say(&format!("{name} stopped"));
    }

    /// Performs the pending control request and writes its outcome (`crate::control`).
    fn control(&mut self) {
        let Some(req) = control::read_request(self.layout) else {
            self.say("SIGHUP without a readable control request; ignored");
            return;
        };
        self.say(&format!("control request {}: {:?}", req.id, req.actions));
        let mut done = Vec::new();
        let result = req.actions.iter().try_for_each(|a| self.act(a, &mut done));
        if let Err(e) = &result {
            self.say(&format!("control request {} failed: {e}", req.id));
        }
        let outcome = Outcome {
            id: req.id,
            ok: result.is_ok(),
            error: result.err(),
            done,
        };
        if let Err(e) = control::write_outcome(self.layout, &outcome) {
            self.say(&format!("cannot write the control outcome: {e}"));
        }
    }

    fn act(&mut self, action: &Action, done: &mut Vec<String>) -> Result<(), String> {
        match action {
            Action::Reload => {
                let changed = self.reload()?;
                done.push(format!("reloaded: {changed} files rewritten"));
            }
            Action::Restart(names) => {
                let plan = Rc::clone(&self.plan);
                for s in plan
                    .start_order()
                    .into_iter()
                    .filter(|s| names.contains(&s.name))
                {
                    if self.restart(s)? {
                        done.push(format!("restarted {}", s.name));
                    }
                }
            }
            Action::Run(names) => {
                let plan = Rc::clone(&self.plan);
                for name in names {
                    let s = plan.service(name).ok_or(format!("no task `{name}`"))?;
                    self.start_and_wait(s)?;
                    done.push(format!("ran {name}"));
                }
            }
            Action::Hup(names) => {
                for name in names {
                    let r = self
                        .running
                        .get(name)
                        .ok_or(format!("`{name}` is not running"))?;
                    // SAFETY: a signal to our own child, by its pid; SIGHUP makes it re-read config.
                    if unsafe { libc::kill(r.child.id() as i32, libc::SIGHUP) } != 0 {
                        return Err(format!("cannot signal {name}"));
                    }
                    done.push(format!("{name} re-reads its config (SIGHUP)"));
                }
                // SeaweedFS reloads in its signal handler, asynchronously: give it the time it
                // takes (milliseconds, measured) with a wide margin before the next step.
                std::thread::sleep(HUP_SETTLE);
            }
            Action::ValkeyAccept => {
                done.extend(control::valkey_accept(&self.plan).map_err(|e| e.to_string())?)
            }
            Action::ValkeyRetire => {
                done.extend(control::valkey_retire(&self.plan).map_err(|e| e.to_string())?)
            }
            Action::Reshape { coordinated } => self.reshape(*coordinated, done)?,
        }
        Ok(())
    }

    /// Rebuilds the plan and rewrites every generated file whose content changed (only those:
    /// Sentinel rewrites its own file with its runtime state). Returns how many it wrote.
    fn reload(&mut self) -> Result<usize, String> {
        let rebuild = self
            .rebuild
            .as_ref()
            .ok_or("this supervisor cannot reload")?;
        let new = rebuild()?;
        let mut changed = 0;
        for f in &new.files {
            let old = self.plan.files.iter().find(|o| o.path == f.path);
            if old.map(|o| &o.content) != Some(&f.content) {
                write_generated(f)?;
                changed += 1;
            }
        }
        self.plan = Rc::new(new);
        Ok(changed)
    }

    /// Stops a running process and starts it from the current plan, waiting until it is ready.
    /// A process not running (crashed, in backoff) is left to `watch`: false.
    fn restart(&mut self, s: &Service) -> Result<bool, String> {
        let Some(r) = self.running.remove(&s.name) else {
            return Ok(false);
        };
        self.terminate(&s.name, r);
        self.start_and_wait(s)?;
        Ok(true)
    }

    pub fn fail(&mut self, error: &str) {
        self.say(&format!("failed: {error}"));
        self.status.error = Some(error.to_string());
        self.stop_all();
        self.status.phase = "failed".into();
        let _ = self.status.save(&self.layout.status_file());
    }
}

/// How long a process is given to re-read its config after SIGHUP.
const HUP_SETTLE: Duration = Duration::from_secs(2);

fn connect(port: u16) -> Option<TcpStream> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()
}

/// AUTH + PING over RESP.
pub fn redis_ping(port: u16, password: &str) -> bool {
    let Some(mut s) = connect(port) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let cmd = format!(
        "*2\r\n$4\r\nAUTH\r\n${}\r\n{}\r\n*1\r\n$4\r\nPING\r\n",
        password.len(),
        password
    );
    if s.write_all(cmd.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && !String::from_utf8_lossy(&got).contains("PONG") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.starts_with("+OK") && text.contains("+PONG")
}

/// Writes a plan's file, handed to its owner when it has one (written as a new file, so a
/// rewrite on `Reload` would otherwise belong to the supervisor's user).
fn write_generated(f: &GeneratedFile) -> Result<(), String> {
    write_file(&f.path, f.content.as_bytes(), f.mode)
        .map_err(|e| format!("cannot write {}: {e}", f.path.display()))?;
    if let Some(ids) = f.owner.and_then(user_ids) {
        chown(&f.path, ids)
            .map_err(|e| format!("cannot hand {} to {:?}: {e}", f.path.display(), f.owner))?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("mxtmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
    }
    std::fs::rename(tmp, path)
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
