//! Synapse versions side by side, for `mxstack upgrade`: each version in a venv of its own under
//! the runtime's home (`synapse/<version>/venv`), a pin in the state directory saying which one
//! a stack runs, and what a version says about itself (its database schema versions) and about
//! the stack's configs (whether they load in it).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::layout::StateLayout;
use crate::runtime;

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("`{0}` is not a Synapse version (expected e.g. 1.163.2)")]
    BadVersion(String),
    #[error("installing Synapse {version} into {venv} failed: {detail}. Fix the cause (network to PyPI, a compiler for psycopg2: `mxstack setup`) and run the command again")]
    Install {
        version: String,
        venv: String,
        detail: String,
    },
    #[error("{python} cannot tell its Synapse version: {detail}")]
    Inspect { python: String, detail: String },
}

/// What a Synapse installation says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SynapseBuild {
    pub version: String,
    /// The database schema version it migrates to (`SCHEMA_VERSION`).
    pub schema: u32,
    /// The oldest schema its database stays readable by (`SCHEMA_COMPAT_VERSION`).
    pub compat: u32,
}

/// `1.163.2` and the like: digits and dots only (it becomes a path and a pip pin).
pub fn check_version(v: &str) -> Result<(), VersionError> {
    let parts: Vec<&str> = v.split('.').collect();
    if parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        Ok(())
    } else {
        Err(VersionError::BadVersion(v.to_string()))
    }
}

/// Where a version's venv lives.
pub fn venv_for(version: &str) -> PathBuf {
    runtime::home().join("synapse").join(version).join("venv")
}

/// The venv a stack is pinned to, if `mxstack upgrade` pinned one.
pub fn pinned(layout: &StateLayout) -> Option<PathBuf> {
    let text = std::fs::read_to_string(pin_file(layout)).ok()?;
    let venv = PathBuf::from(text.trim());
    venv.join("bin/python").exists().then_some(venv)
}

/// Pins the stack to `venv` (None: back to the runtime's own venv).
pub fn pin(layout: &StateLayout, venv: Option<&Path>) -> std::io::Result<()> {
    match venv {
        Some(v) => {
            std::fs::create_dir_all(&layout.root)?;
            std::fs::write(pin_file(layout), format!("{}\n", v.display()))
        }
        None => match std::fs::remove_file(pin_file(layout)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

fn pin_file(layout: &StateLayout) -> PathBuf {
    layout.root.join("synapse-venv")
}

/// Version and schema versions of the Synapse `python` imports.
pub fn inspect(python: &Path) -> Result<SynapseBuild, VersionError> {
    let out = Command::new(python)
        .args(["-c", "import synapse\nfrom synapse.storage.schema import SCHEMA_VERSION, SCHEMA_COMPAT_VERSION\nprint(SCHEMA_VERSION, SCHEMA_COMPAT_VERSION, synapse.__version__)"])
        .output()
        .map_err(|e| inspect_error(python, e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // A checkout's version carries a suffix: `1.163.2 (b=main,3bc174e)`.
    let f: Vec<&str> = text.split_whitespace().collect();
    match (out.status.success(), f.as_slice()) {
        (true, [s, c, v, ..]) => Ok(SynapseBuild {
            version: v.to_string(),
            schema: s
                .parse()
                .map_err(|_| inspect_error(python, text.to_string()))?,
            compat: c
                .parse()
                .map_err(|_| inspect_error(python, text.to_string()))?,
        }),
        _ => Err(inspect_error(
            python,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )),
    }
}

fn inspect_error(python: &Path, detail: String) -> VersionError {
    VersionError::Inspect {
        python: python.display().to_string(),
        detail,
    }
}

/// Installs `version` with the same extras and S3 provider the runtime's venv has, unless its
/// venv already imports that version. Every other package is held to the version the runtime's
/// venv (`runtime_python`) has: left free, pip takes the newest a release allows, which need not
/// work with it (Synapse 1.162.0 fails to start with txredisapi 1.6.0). `progress` sees what is
/// happening.
pub fn install(
    version: &str,
    runtime_python: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, VersionError> {
    check_version(version)?;
    let venv = venv_for(version);
    let python = venv.join("bin/python");
    if inspect(&python).is_ok_and(|b| b.version == version) {
        return Ok(venv);
    }
    let fail = |detail: String| VersionError::Install {
        version: version.to_string(),
        venv: venv.display().to_string(),
        detail,
    };
    progress(&format!("creating {}", venv.display()));
    std::fs::create_dir_all(&venv).map_err(|e| fail(e.to_string()))?;
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv)).map_err(fail)?;
    let frozen = Command::new(runtime_python)
        .args(["-m", "pip", "freeze", "--exclude", "matrix-synapse"])
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let constraints = venv.join("constraints.txt");
    let pins: String = String::from_utf8_lossy(&frozen.stdout)
        .lines()
        .filter(|l| l.contains("==")) // not editable or local installs
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&constraints, pins).map_err(|e| fail(e.to_string()))?;
    progress(&format!(
        "pip install matrix-synapse=={version} (a few minutes: psycopg2 is compiled)"
    ));
    let extras = format!("matrix-synapse[postgres,redis]=={version}");
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "-c"])
        .arg(&constraints)
        .args([&extras, "synapse-s3-storage-provider"]))
    .map_err(fail)?;
    match inspect(&python) {
        Ok(b) if b.version == version => Ok(venv),
        Ok(b) => Err(fail(format!("the venv imports Synapse {}", b.version))),
        Err(e) => Err(fail(e.to_string())),
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.lines().rev().take(5).collect::<Vec<_>>().join(" | "))
    }
}

/// Loads each process's config files (`--config-path` of its command) with `python -m
/// synapse.config`'s own function in one interpreter; returns (process, error) of those that do
/// not load.
pub const CONFIG_PROOF: &str = r#"
import json, sys, io, contextlib
from synapse.config.__main__ import main
failures = []
for name, paths in json.load(sys.stdin):
    args = ["synapse.config"]
    for p in paths:
        args += ["-c", p]
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            main(args)
    except SystemExit as e:
        if e.code not in (0, None):
            failures.append((name, err.getvalue().strip()[-600:]))
    except Exception as e:
        failures.append((name, repr(e)[-600:]))
print(json.dumps(failures))
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_three_numbers() {
        assert!(check_version("1.163.2").is_ok());
        for bad in ["1.163", "1.163.x", "../1.2.3", "1.2.3rc1", ""] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }
}
