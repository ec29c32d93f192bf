//! `mxstack setup` and `mxstack doctor`: the runtime a local stack needs (Debian packages and the
//! Python venv with Synapse), installed into one documented home and checked from anywhere.
//! The list is scripts/deps.txt, built into the binary (crates/local/src/runtime.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use mxstack_local::runtime::{self, Check, Source};
use mxstack_spec::Config;
use serde_json::json;

type CmdResult = Result<ExitCode, String>;

fn step(what: &str) {
    // Progress goes to stderr, so `--json` keeps stdout to the one document.
    eprintln!("== setup: {what}");
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    // The tools' own output goes to stderr too.
    let status = cmd
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status}); its output is above"))
    }
}

/// Install the runtime: the Debian packages (as root), the venv and its pip packages.
/// Idempotent: only what is missing or at the wrong version is installed.
pub fn setup(home: Option<&Path>, json: bool) -> CmdResult {
    if let Some(h) = home {
        // Single-threaded here: nothing else reads the environment yet.
        std::env::set_var("MXSTACK_HOME", h);
    }
    let home = runtime::home();
    let deps: Vec<runtime::Dep> = runtime::deps()
        .into_iter()
        .filter(|d| d.installed_by_setup())
        .collect();
    let mut installed: Vec<String> = Vec::new();

    let missing_apt: Vec<&str> = deps
        .iter()
        .filter(|d| d.source == Source::Apt && !runtime::dpkg_installed(&d.package))
        .map(|d| d.package.as_str())
        .collect();
    if !missing_apt.is_empty() {
        if !runtime::is_root() {
            return Err(format!(
                "Debian packages are missing and only root can install them: run `sudo apt-get install {}`, then `mxstack setup` again",
                missing_apt.join(" ")
            ));
        }
        step(&format!("apt: {}", missing_apt.join(" ")));
        apt_install(&missing_apt)?;
        installed.extend(missing_apt.iter().map(|p| format!("apt:{p}")));
    }

    let venv = home.join("venv");
    if !venv.join("bin/python").exists() {
        step(&format!("python venv at {}", venv.display()));
        std::fs::create_dir_all(&home)
            .map_err(|e| format!("cannot create {}: {e}", home.display()))?;
        run(
            Command::new("/usr/bin/python3")
                .arg("-m")
                .arg("venv")
                .arg(&venv),
            "python3 -m venv",
        )?;
    }
    let have = runtime::pip_installed(&venv);
    let missing_pip: Vec<&str> = deps
        .iter()
        .filter(|d| d.source == Source::Pip)
        .filter(|d| {
            let (name, pin) = d.pip_name_and_pin();
            match have.get(&runtime::normalize(&name)) {
                None => true,
                Some(v) => pin.is_some_and(|p| &p != v),
            }
        })
        .map(|d| d.package.as_str())
        .collect();
    if !missing_pip.is_empty() {
        step(&format!("pip: {}", missing_pip.join(" ")));
        let pip = venv.join("bin/pip");
        run(
            Command::new(&pip).args(["install", "-q", "--upgrade", "pip", "wheel"]),
            "pip install pip wheel",
        )?;
        run(
            Command::new(&pip)
                .args(["install", "-q"])
                .args(&missing_pip),
            "pip install",
        )?;
        installed.extend(missing_pip.iter().map(|p| format!("pip:{p}")));
    }

    let checks = runtime::doctor(None);
    let ok = checks.iter().all(|c| c.ok);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "home": home, "venv": venv, "installed": installed, "ok": ok, "checks": checks,
            }))
            .expect("json")
        );
    } else {
        step(&format!(
            "done: {} installed into {}",
            if installed.is_empty() {
                "nothing needed to be".to_string()
            } else {
                format!("{} packages", installed.len())
            },
            home.display()
        ));
        print_checks(&checks);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn apt_install(packages: &[&str]) -> Result<(), String> {
    // Package post-install scripts must not start system-wide daemons: mxstack runs its own.
    let policy = PathBuf::from("/usr/sbin/policy-rc.d");
    let had_policy = policy.exists();
    if !had_policy {
        std::fs::write(&policy, "#!/bin/sh\nexit 101\n")
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o755))
            })
            .map_err(|e| format!("cannot write {}: {e}", policy.display()))?;
    }
    let result = run(
        Command::new("apt-get").args(["update", "-q"]),
        "apt-get update",
    )
    .and_then(|()| {
        run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(packages),
            "apt-get install",
        )
    });
    if !had_policy {
        let _ = std::fs::remove_file(&policy);
    }
    result
}

fn print_checks(checks: &[Check]) {
    for c in checks {
        let detail = if c.ok {
            c.found.clone().unwrap_or_default()
        } else {
            c.problem.clone().unwrap_or_default()
        };
        println!(
            "{:<8} {:<32} {detail}",
            if c.ok { "ok" } else { "MISSING" },
            c.what
        );
    }
}

/// Report what `up` needs and what is missing, with the fix for each; exit 1 when anything is.
pub fn doctor(config: Option<&Path>, json: bool) -> CmdResult {
    let config = match config {
        Some(p) => Some(Config::load(p).map_err(|e| e.to_string())?.0),
        None => None,
    };
    let checks = runtime::doctor(config.as_ref());
    let missing = checks.iter().filter(|c| !c.ok).count();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "home": runtime::home(), "ok": missing == 0, "checks": checks,
            }))
            .expect("json")
        );
    } else {
        println!("mxstack runtime (home {})", runtime::home().display());
        print_checks(&checks);
        if missing == 0 {
            println!("everything `mxstack up` needs is here");
        } else {
            println!("{missing} missing: run `mxstack setup`");
        }
    }
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
