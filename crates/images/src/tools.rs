//! Why: every external program (podman, skopeo, mmdebstrap) is run from here, so each one is
//! checked for before use (a missing one is an error naming the Debian package to install), runs
//! with mxstack's own containers.conf (runc and ulimits this machine kind needs; nothing global
//! has to be configured) and fails with its output attached.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;

/// The containers.conf every podman/skopeo call uses (CONTAINERS_CONF). crun, podman's default
/// runtime, fails on hosts with hybrid cgroups; runc works. Container ulimits above the caller's
/// own limits make runc fail with "setrlimit ... Operation not permitted".
pub const CONTAINERS_CONF: &str =
    "# written by mxstack images: the runtime and limits its podman calls use
[containers]
default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]
[engine]
runtime = \"runc\"
";

/// The programs a step needs and the Debian package each comes from.
pub const PODMAN: (&str, &str) = ("podman", "podman");
pub const RUNC: (&str, &str) = ("runc", "runc");
pub const SKOPEO: (&str, &str) = ("skopeo", "skopeo");
pub const MMDEBSTRAP: (&str, &str) = ("mmdebstrap", "mmdebstrap");

/// Where `program` is on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Error unless every program is installed.
pub fn require(tools: &[(&'static str, &'static str)]) -> Result<(), Error> {
    for &(program, package) in tools {
        if which(program).is_none() {
            return Err(Error::MissingTool { program, package });
        }
    }
    Ok(())
}

/// Runs the container tools with mxstack's containers.conf.
#[derive(Debug, Clone)]
pub struct Tools {
    conf: PathBuf,
}

impl Tools {
    /// Writes `dir/containers.conf` (if it differs) and uses it.
    pub fn in_dir(dir: &Path) -> Result<Tools, Error> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let conf = dir.join("containers.conf");
        if std::fs::read_to_string(&conf).ok().as_deref() != Some(CONTAINERS_CONF) {
            std::fs::write(&conf, CONTAINERS_CONF).map_err(Error::io(&conf))?;
        }
        Ok(Tools { conf })
    }

    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// `program` with CONTAINERS_CONF set.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("CONTAINERS_CONF", &self.conf);
        c
    }

    /// Runs `cmd`; its stdout on success. `log`: where stdout and stderr go instead (the error
    /// then quotes the log's tail).
    pub fn run(&self, mut cmd: Command, what: &str, log: Option<&Path>) -> Result<String, Error> {
        cmd.stdin(Stdio::null());
        if let Some(log) = log {
            let f = std::fs::File::create(log).map_err(Error::io(log))?;
            let g = f.try_clone().map_err(Error::io(log))?;
            cmd.stdout(f).stderr(g);
            let status = cmd.status().map_err(|e| Error::Failed {
                what: what.into(),
                status: e.to_string(),
                log: String::new(),
            })?;
            if !status.success() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                return Err(Error::Failed {
                    what: what.into(),
                    status: status.to_string(),
                    log: format!("; last lines of {}:\n{}", log.display(), tail(&text, 25)),
                });
            }
            return Ok(String::new());
        }
        let out = cmd.output().map_err(|e| Error::Failed {
            what: what.into(),
            status: e.to_string(),
            log: String::new(),
        })?;
        if !out.status.success() {
            return Err(Error::Failed {
                what: what.into(),
                status: out.status.to_string(),
                log: format!(":\n{}", tail(&String::from_utf8_lossy(&out.stderr), 25)),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `podman image exists REF`.
    pub fn image_exists(&self, reference: &str) -> bool {
        self.command("podman")
            .args(["image", "exists", reference])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// The manifest digest (`sha256:...`) of the image in an OCI archive: the SHA-256 of its
    /// manifest, which a registry keeps when skopeo copies the archive (--preserve-digests).
    pub fn archive_digest(&self, archive: &Path) -> Result<String, Error> {
        let mut c = self.command("skopeo");
        c.arg("inspect")
            .arg("--raw")
            .arg(format!("oci-archive:{}", archive.display()));
        let out = c.output().map_err(Error::io(archive))?;
        if !out.status.success() {
            return Err(Error::Failed {
                what: format!("skopeo inspect {}", archive.display()),
                status: out.status.to_string(),
                log: format!(":\n{}", tail(&String::from_utf8_lossy(&out.stderr), 10)),
            });
        }
        Ok(format!("sha256:{}", crate::sha256_hex(&out.stdout)))
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_its_package() {
        let e = require(&[("mxstack-no-such-program", "mxstack-pkg")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "mxstack-no-such-program is not installed; install the Debian package: apt-get install mxstack-pkg"
        );
    }

    #[test]
    fn the_conf_selects_runc_and_caps_ulimits() {
        let d = tempfile::tempdir().unwrap();
        let t = Tools::in_dir(d.path()).unwrap();
        let text = std::fs::read_to_string(t.conf()).unwrap();
        assert!(text.contains("runtime = \"runc\""));
        assert!(text.contains("nofile=1024:1024"));
        let c = t.command("podman");
        assert!(c
            .get_envs()
            .any(|(k, v)| k == "CONTAINERS_CONF" && v == Some(t.conf().as_os_str())));
    }
}
