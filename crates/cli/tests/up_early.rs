//! Issue 16: every early failure of `mxstack up` ends at once, with a one-line cause and its fix,
//! and leaves no process behind; a supervisor that dies before the stack is ready is noticed
//! within a second. Real binary, real runtime (the venv with Synapse), real PostgreSQL.
//!
//! The binary is copied out of the build tree and run from a directory outside the repository,
//! as a user who installed it would, so the checkout's `.venv` is never found by accident.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Ports of this file's stacks, each test its own block. Below the kernel's ephemeral range
/// (32768 up) with SeaweedFS's gRPC ports (+10013..10015) too: a port there can be held at any
/// moment by some connection's local end, and `up` would rightly refuse it.
const PORTS_IN_USE: u16 = 21300;
const CLOSED_STATE: u16 = 21400;
const KILLED: u16 = 21500;

struct Site {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Site {
    /// A site made by `init` (no features: the smallest stack) and a copy of the binary.
    fn new(parent: Option<&Path>) -> Site {
        let dir = match parent {
            Some(p) => tempfile::tempdir_in(p),
            None => tempfile::Builder::new()
                .prefix("mxstack-up-early-")
                .tempdir_in("/var/tmp"),
        }
        .unwrap();
        let site = Site {
            dir,
            bin: installed_binary().to_path_buf(),
        };
        let out = site.run(
            &[
                "init",
                "--domain",
                "early.test",
                "--scale",
                "100",
                "--features",
                "",
                "--dir",
                site.path().to_str().unwrap(),
            ],
            &[],
        );
        common::ok(&out);
        site
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> String {
        self.path().join("mxstack.yaml").display().to_string()
    }

    /// Runs the copied binary in the site's directory with a clean runtime environment plus `env`.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .current_dir(self.path())
            .env_remove("MXSTACK_VENV")
            .env_remove("MXSTACK_HOME");
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        retry_busy(|| self.command(args, env).output())
    }

    /// `up` with the real runtime; returns its output and how long it took.
    fn up(&self, base_port: u16, env: &[(&str, &str)]) -> (Output, Duration) {
        let start = Instant::now();
        let cfg = self.config();
        let port = base_port.to_string();
        let out = self.run(&["up", "--config", &cfg, "--base-port", &port], env);
        (out, start.elapsed())
    }

    /// No process anywhere on the machine names this site, and `status` says nothing runs.
    fn assert_nothing_left(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut left = processes_naming(self.path());
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            left = processes_naming(self.path());
        }
        assert!(left.is_empty(), "processes left behind: {left:?}");
        let cfg = self.config();
        let status = self.run(&["status", "--config", &cfg], &[]);
        assert_eq!(
            status.status.code(),
            Some(3),
            "status says nothing runs: {}",
            String::from_utf8_lossy(&status.stdout)
        );
    }
}

/// One copy of the binary outside the repository for every test of this file, as a user who
/// installed it would have it.
fn installed_binary() -> &'static Path {
    static BIN: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    &BIN.get_or_init(|| {
        // A static is never dropped, so its TempDir outlives the process: copies of earlier
        // runs (their test process gone) are removed here instead.
        remove_stale_copies();
        let dir = tempfile::Builder::new()
            .prefix(&format!("mxstack-up-early-bin-{}-", std::process::id()))
            .tempdir_in("/var/tmp")
            .unwrap();
        let bin = dir.path().join("mxstack");
        std::fs::copy(env!("CARGO_BIN_EXE_mxstack"), &bin).unwrap();
        (dir, bin)
    })
    .1
}

/// Removes the copies of test processes that have ended (`mxstack-up-early-bin-<pid>-...`
/// whose pid no longer runs); a copy without a pid in its name is from before this scheme and
/// goes once it is an hour old (a run of that older code may still use it).
fn remove_stale_copies() {
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for e in std::fs::read_dir("/var/tmp")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("mxstack-up-early-bin-") else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let gone = match pid {
            Some(p) => !std::path::Path::new(&format!("/proc/{p}")).exists(),
            None => e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < hour_ago),
        };
        if gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Runs `spawn` again while it fails with ETXTBSY: a test thread that forks while another has
/// the fresh copy open for writing keeps that descriptor until its child execs, and the kernel
/// refuses to exec a file open for writing (a race of the harness, not of mxstack).
fn retry_busy<T>(mut spawn: impl FnMut() -> std::io::Result<T>) -> T {
    for _ in 0..50 {
        match spawn() {
            Err(e) if e.raw_os_error() == Some(26) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other.unwrap(),
        }
    }
    spawn().unwrap()
}

/// (pid, command line) of every process whose command line mentions `dir`, but this test's own.
fn processes_naming(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.display().to_string();
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            // A zombie has an empty command line and holds nothing.
            cmd.contains(&needle).then_some((pid, cmd))
        })
        .collect()
}

/// The one-line cause: exit 1 within 5 s, `error: ...` on one line naming `needle` and `fix`.
fn assert_fails_fast(out: &Output, took: Duration, needle: &str, fix: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(needle), "names {needle:?}: {stderr}");
    assert!(lines[0].contains(fix), "gives the fix {fix:?}: {stderr}");
    stderr
}

fn venv() -> String {
    common::venv().display().to_string()
}

#[test]
fn without_the_runtime_up_fails_at_once_with_the_fix() {
    let site = Site::new(None);
    let home = tempfile::tempdir().unwrap();
    let home = home.path().to_str().unwrap();
    let (out, took) = site.up(18700, &[("MXSTACK_HOME", home)]);
    assert_fails_fast(
        &out,
        took,
        "no Python venv with Synapse",
        "run `mxstack setup`",
    );
    site.assert_nothing_left();
    assert!(
        !site.path().join(".mxstack-state").exists(),
        "nothing was created"
    );

    // doctor says the same, item by item, and exits 1.
    let doctor = site.run(&["doctor", "--json"], &[("MXSTACK_HOME", home)]);
    assert_eq!(doctor.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let venv_check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["what"] == "venv")
        .unwrap();
    assert_eq!(venv_check["ok"], false);

    // A wrong MXSTACK_VENV is named, not passed over.
    let (out, took) = site.up(18700, &[("MXSTACK_VENV", "/nonexistent/venv")]);
    assert_fails_fast(&out, took, "MXSTACK_VENV=/nonexistent/venv", "unset it");
    site.assert_nothing_left();
}

#[test]
fn with_the_runtime_doctor_is_happy() {
    let site = Site::new(None);
    let cfg = site.config();
    let out = site.run(&["doctor", "--config", &cfg], &[("MXSTACK_VENV", &venv())]);
    let text = common::ok(&out);
    assert!(
        text.contains("everything `mxstack up` needs is here"),
        "{text}"
    );
}

#[test]
fn a_port_of_the_block_in_use_is_named_with_its_owner() {
    let site = Site::new(None);
    // The router's port: the base port.
    let held = std::net::TcpListener::bind(("127.0.0.1", PORTS_IN_USE)).unwrap();
    let (out, took) = site.up(PORTS_IN_USE, &[("MXSTACK_VENV", &venv())]);
    let err = assert_fails_fast(
        &out,
        took,
        &format!("port {PORTS_IN_USE} (router)"),
        "--base-port",
    );
    assert!(
        err.contains(&format!("by pid {}", std::process::id())),
        "names the owner: {err}"
    );
    site.assert_nothing_left();
    drop(held);
}

#[test]
fn a_state_directory_postgres_cannot_reach_is_named() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: only root runs PostgreSQL as another user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let top = tempfile::Builder::new()
        .prefix("mxstack-closed-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let site = Site::new(Some(top.path()));
    let (out, took) = site.up(CLOSED_STATE, &[("MXSTACK_VENV", &venv())]);
    assert_fails_fast(
        &out,
        took,
        &format!("{} (mode 700)", top.path().display()),
        "--state",
    );
    site.assert_nothing_left();
}

/// Defect 1 of issue 16: the supervisor dies while the stack is starting (killed here; any
/// early error ends the same way). `up` notices within a second, exits 1 with the cause and
/// stops what the supervisor had started.
#[test]
fn a_supervisor_that_dies_before_ready_ends_up_at_once() {
    let site = Site::new(None);
    let cfg = site.config();
    let port = KILLED.to_string();
    let up = retry_busy(|| {
        site.command(
            &["up", "--config", &cfg, "--base-port", &port, "--json"],
            &[("MXSTACK_VENV", &venv())],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    });
    // Should an assertion fail, `up` and the stack go with the test, not on running.
    let mut up = StopOnDrop {
        child: Some(up),
        site: &site,
    };
    let up = &mut up;
    let state = site.path().join(".mxstack-state");
    // Wait until the supervisor has started PostgreSQL, so there is something to leave behind.
    let start = Instant::now();
    let supervisor = loop {
        let status = std::fs::read_to_string(state.join("status.json")).unwrap_or_default();
        let pid = std::fs::read_to_string(state.join("supervisor.pid")).unwrap_or_default();
        let postgres_ready = serde_json::from_str::<serde_json::Value>(&status)
            .ok()
            .and_then(|v| v["processes"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .any(|p| p["name"] == "postgres" && p["state"] == "ready");
        if postgres_ready && !pid.trim().is_empty() {
            break pid.trim().parse::<i32>().unwrap();
        }
        if up.child().try_wait().unwrap().is_some() {
            let out = up.take().wait_with_output().unwrap();
            panic!(
                "up ended before PostgreSQL was ready: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "PostgreSQL did not start: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: the supervisor this test's `up` started.
    unsafe { libc::kill(supervisor, libc::SIGKILL) };
    let killed = Instant::now();
    let out = loop {
        if up.child().try_wait().unwrap().is_some() {
            break up.take().wait_with_output().unwrap();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "up still waits for a dead supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = killed.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_millis(1500), "noticed in {took:?}");
    assert!(stderr.contains("the supervisor exited"), "{stderr}");
    assert!(stderr.contains("signal: 9"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ready"], false);
    site.assert_nothing_left();
}

struct StopOnDrop<'a> {
    child: Option<std::process::Child>,
    site: &'a Site,
}

impl StopOnDrop<'_> {
    fn child(&mut self) -> &mut std::process::Child {
        self.child.as_mut().expect("up is still ours")
    }
    fn take(&mut self) -> std::process::Child {
        self.child.take().expect("up is still ours")
    }
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let cfg = self.site.config();
        let _ = self.site.run(&["down", "--config", &cfg], &[]);
        // What a killed supervisor left (the code under test may be what failed to stop it).
        for (pid, _) in processes_naming(self.site.path()) {
            // SAFETY: a process of this test's stack (its command line names the site).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}
