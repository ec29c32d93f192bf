//! Runs translated pods with podman, as the kubelet would: a network of the test's own, a DNS
//! server (dnsmasq) answering the cluster's names on its gateway, the volumes' host files, init
//! containers to completion, then the containers, whose probes are evaluated from the host.
//! Everything it creates carries the options' prefix, and [`Harness::stop`] (also on drop)
//! removes exactly that.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{chown, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::translate::{ContainerRun, Options, PodRun, Probe, ProbeAction};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("`{program}` could not be run: {source} (install it: apt-get install {package})")]
    Missing {
        program: String,
        package: &'static str,
        source: std::io::Error,
    },
    #[error("`podman {args}` failed: {stderr}")]
    Podman { args: String, stderr: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("init container {container} exited with {code}:\n{log}")]
    InitFailed {
        container: String,
        code: i32,
        log: String,
    },
    #[error("{container} is not ready after {secs} s ({probe}: {last}); its log ends:\n{log}")]
    NotReady {
        container: String,
        secs: u64,
        probe: &'static str,
        last: String,
        log: String,
    },
    #[error("{container} runs as `{user}`, but its pod spec says runAsNonRoot")]
    RunsAsRoot { container: String, user: String },
}

pub struct Harness {
    pub opts: Options,
    gateway: Ipv4Addr,
    conf: PathBuf,
    dnsmasq: Option<Child>,
    pods: Vec<String>,
    network: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.into(),
        source,
    }
}

impl Harness {
    /// Creates the network `opts.network` on `subnet` (a /24: `a.b.c.0`), its gateway `.1`.
    pub fn new(opts: Options, subnet: Ipv4Addr) -> Result<Harness, RunError> {
        std::fs::create_dir_all(&opts.work).map_err(io(&opts.work))?;
        // The containers.conf `mxstack images` uses: runc and ulimits this machine allows.
        let conf = mxstack_images::tools::Tools::in_dir(&opts.work)
            .map_err(|e| RunError::Podman {
                args: "(containers.conf)".into(),
                stderr: e.to_string(),
            })?
            .conf()
            .to_path_buf();
        let o = subnet.octets();
        let gateway = Ipv4Addr::new(o[0], o[1], o[2], 1);
        let mut h = Harness {
            opts,
            gateway,
            conf,
            dnsmasq: None,
            pods: vec![],
            network: false,
        };
        // Leftovers of an earlier run with the same prefix (a crash, a kill) go first.
        let leftovers = h
            .podman(&["pod", "ls", "--format={{.Name}}"])
            .unwrap_or_default();
        for pod in leftovers.lines().filter(|p| p.starts_with(&h.opts.prefix)) {
            h.podman_quiet(&["pod", "rm", "-f", "--time=2", pod]);
        }
        h.podman_quiet(&["network", "rm", "-f", &h.opts.network]);
        h.podman(&[
            "network",
            "create",
            "--disable-dns",
            &format!("--subnet={subnet}/24"),
            &format!("--gateway={gateway}"),
            &h.opts.network.clone(),
        ])?;
        h.network = true;
        Ok(h)
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf).args(args);
        c
    }

    /// Runs podman, returning its stdout.
    pub fn podman(&self, args: &[&str]) -> Result<String, RunError> {
        let out = self
            .command(args)
            .output()
            .map_err(|source| RunError::Missing {
                program: "podman".into(),
                package: "podman",
                source,
            })?;
        if !out.status.success() {
            return Err(RunError::Podman {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn podman_quiet(&self, args: &[&str]) {
        let _ = self
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Serves `records` (name -> addresses) on the gateway, port 53, for the pods' resolvers.
    /// The records go on dnsmasq's command line: it drops its privileges before it would read a
    /// hosts file, which then must be readable by nobody all the way up.
    pub fn serve_dns(&mut self, records: &BTreeMap<String, Vec<Ipv4Addr>>) -> Result<(), RunError> {
        if let Some(mut old) = self.dnsmasq.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        let log = self.opts.work.join("dnsmasq.log");
        let log_file = std::fs::File::create(&log).map_err(io(&log))?;
        let mut args: Vec<String> = [
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-dynamic",
            "--port=53",
            "--log-facility=-",
            // Answers only what it holds; anything else is "no such name".
            "--local=/",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--listen-address={}", self.gateway));
        for (name, ips) in records {
            args.extend(ips.iter().map(|ip| format!("--host-record={name},{ip}")));
        }
        let child = Command::new("dnsmasq")
            .args(&args)
            .stdout(log_file.try_clone().map_err(io(&log))?)
            .stderr(log_file)
            .spawn()
            .map_err(|source| RunError::Missing {
                program: "dnsmasq".into(),
                package: "dnsmasq-base",
                source,
            })?;
        self.dnsmasq = Some(child);
        Ok(())
    }

    fn materialise(&self, run: &PodRun) -> Result<(), RunError> {
        for h in &run.host_paths {
            match &h.content {
                None => std::fs::create_dir_all(&h.path).map_err(io(&h.path))?,
                Some(bytes) => {
                    if let Some(dir) = h.path.parent() {
                        std::fs::create_dir_all(dir).map_err(io(dir))?;
                    }
                    std::fs::write(&h.path, bytes).map_err(io(&h.path))?;
                }
            }
            if let Some(g) = h.gid {
                chown(&h.path, Some(0), Some(g as u32)).map_err(io(&h.path))?;
            }
            std::fs::set_permissions(&h.path, std::fs::Permissions::from_mode(h.mode))
                .map_err(io(&h.path))?;
        }
        for c in run.init.iter().chain(&run.containers) {
            let (path, content) = &c.env_file;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .map_err(io(path))?;
            f.write_all(content.as_bytes()).map_err(io(path))?;
        }
        Ok(())
    }

    /// Makes the pod's files, creates it, runs its init containers to completion and starts
    /// its containers.
    pub fn start(&mut self, run: &PodRun) -> Result<(), RunError> {
        self.podman_quiet(&["pod", "rm", "-f", &run.name]);
        let _ = std::fs::remove_dir_all(self.opts.work.join(pod_dir(run, &self.opts)));
        self.materialise(run)?;
        let create: Vec<&str> = run.create.iter().map(String::as_str).collect();
        self.podman(&create)?;
        self.pods.push(run.name.clone());
        for c in &run.init {
            let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
            let status = self
                .command(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(io(Path::new("podman")))?;
            if !status.success() {
                return Err(RunError::InitFailed {
                    container: c.name.clone(),
                    code: status.code().unwrap_or(-1),
                    log: self.logs(&c.name),
                });
            }
        }
        for c in &run.containers {
            let mut args: Vec<&str> = c.args.iter().map(String::as_str).collect();
            args.insert(1, "--detach");
            self.podman(&args)?;
        }
        Ok(())
    }

    /// A Job's pod: started, then its containers waited for; a failed attempt is retried (the
    /// whole pod, as `restartPolicy: OnFailure` and `backoffLimit` do) up to `attempts` times.
    pub fn run_job(&mut self, run: &PodRun, attempts: u32) -> Result<(), RunError> {
        let mut last = None;
        for _ in 0..attempts.max(1) {
            self.start(run)?;
            let mut failed = None;
            for c in &run.containers {
                let code = self
                    .podman(&["wait", &c.name])?
                    .trim()
                    .parse::<i32>()
                    .unwrap_or(-1);
                if code != 0 {
                    failed = Some(RunError::InitFailed {
                        container: c.name.clone(),
                        code,
                        log: self.logs(&c.name),
                    });
                }
            }
            match failed {
                None => return Ok(()),
                Some(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_secs(3));
        }
        Err(last.expect("at least one attempt"))
    }

    /// The last lines a container wrote.
    pub fn logs(&self, container: &str) -> String {
        self.command(&["logs", "--tail=40", container])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_default()
    }

    fn running(&self, container: &str) -> bool {
        self.podman(&["inspect", "--format={{.State.Running}}", container])
            .map(|s| s.trim() == "true")
            .unwrap_or(false)
    }

    /// One evaluation of a probe: Ok, or what failed.
    pub fn probe(&self, ip: Ipv4Addr, c: &ContainerRun, p: &Probe) -> Result<(), String> {
        let timeout = Duration::from_secs(u64::from(p.timeout.max(1)));
        match &p.action {
            ProbeAction::Http { port, path } => {
                let url = format!("http://{ip}:{port}{path}");
                let client = reqwest::blocking::Client::builder()
                    .timeout(timeout)
                    .build()
                    .map_err(|e| e.to_string())?;
                let r = client
                    .get(&url)
                    .send()
                    .map_err(|e| format!("GET {url}: {e}"))?;
                // The kubelet counts 200-399 as success.
                let code = r.status().as_u16();
                if (200..400).contains(&code) {
                    Ok(())
                } else {
                    Err(format!("GET {url}: {code}"))
                }
            }
            ProbeAction::Tcp { port } => {
                TcpStream::connect_timeout(&SocketAddr::from((ip, *port)), timeout)
                    .map(|_| ())
                    .map_err(|e| format!("connect {ip}:{port}: {e}"))
            }
            ProbeAction::Exec { command } => {
                let mut args = vec!["exec", c.name.as_str()];
                args.extend(command.iter().map(String::as_str));
                self.podman(&args).map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }

    /// Waits until every container passes its startup and readiness probes within `limit`
    /// (and its liveness probe once ready), and checks runAsNonRoot against the user it runs as.
    pub fn wait_ready(&self, run: &PodRun, limit: Duration) -> Result<(), RunError> {
        let start = Instant::now();
        for c in &run.containers {
            if c.non_root {
                let user = self
                    .podman(&["inspect", "--format={{.Config.User}}", &c.name])?
                    .trim()
                    .to_string();
                let uid = user.split(':').next().unwrap_or_default();
                if uid.is_empty() || uid == "0" || uid == "root" {
                    return Err(RunError::RunsAsRoot {
                        container: c.name.clone(),
                        user,
                    });
                }
            }
            for (kind, p) in [
                ("startupProbe", &c.startup),
                ("readinessProbe", &c.readiness),
                ("livenessProbe", &c.liveness),
            ] {
                let Some(p) = p else { continue };
                let mut last;
                loop {
                    last = if self.running(&c.name) {
                        match self.probe(run.ip, c, p) {
                            Ok(()) => break,
                            Err(e) => e,
                        }
                    } else {
                        "the container exited".into()
                    };
                    if start.elapsed() > limit || last == "the container exited" {
                        return Err(RunError::NotReady {
                            container: c.name.clone(),
                            secs: start.elapsed().as_secs(),
                            probe: kind,
                            last,
                            log: self.logs(&c.name),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        Ok(())
    }

    /// Removes every pod it created, the network and the DNS server.
    pub fn stop(&mut self) {
        // One call for all, killed at once: a test has nothing to drain, and a graceful stop of
        // every container one after another took over a minute.
        let pods = std::mem::take(&mut self.pods);
        if !pods.is_empty() {
            let mut args = vec!["pod", "rm", "-f", "--time=0"];
            args.extend(pods.iter().map(String::as_str));
            self.podman_quiet(&args);
        }
        if let Some(mut d) = self.dnsmasq.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        if std::mem::take(&mut self.network) {
            self.podman_quiet(&["network", "rm", "-f", &self.opts.network]);
        }
    }
}

fn pod_dir(run: &PodRun, opts: &Options) -> String {
    run.name.trim_start_matches(&opts.prefix).to_string()
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop();
    }
}
