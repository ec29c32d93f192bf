//! Why: `mxstack images build` turns the catalog into OCI archives and a lock without any image
//! registry: the base root filesystem comes from Debian's archive (mmdebstrap, imported into
//! podman), Python packages from PyPI, the mxstack binary from the host's cargo. Builds are
//! slow (minutes for Synapse), so every image is keyed by the hash of everything it reads and
//! rebuilt only when that changed; the rest is reported `cached`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::catalog::{self, ImageDef, BASE};
use crate::lock::{BaseEntry, Lock, LockEntry, LOCK_FILE};
use crate::tools::{self, Tools};
use crate::{sha256_hex, Error};

/// Where the host's CA bundle is mounted during a build's RUN steps (pip behind a
/// TLS-inspecting proxy trusts what the host trusts; nothing of it stays in the image).
const CA_IN_BUILD: &str = "/run/mxstack/host-ca.crt";

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Output directory: archives, images.lock, the base, logs, containers.conf.
    pub out: PathBuf,
    /// Build only these images (default: all).
    pub only: Option<Vec<String>>,
    /// The mxstack binary to put in the mxstack image (default: `cargo build --release` in
    /// `workspace`).
    pub binary: Option<PathBuf>,
    /// The mxstack checkout to build the binary in (default: the one around the current
    /// directory).
    pub workspace: Option<PathBuf>,
    /// CA bundle for the builds' network access (default: SSL_CERT_FILE or Debian's bundle).
    pub ca_bundle: Option<PathBuf>,
    /// Progress lines on stderr.
    pub progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Built,
    Cached,
}

#[derive(Debug, Clone, Serialize)]
pub struct Built {
    pub name: String,
    pub status: Status,
    pub reference: String,
    pub digest: String,
    pub size: u64,
    pub archive: PathBuf,
    pub archive_bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub out: PathBuf,
    pub lock: PathBuf,
    pub base: String,
    pub base_status: Status,
    pub images: Vec<Built>,
    pub seconds: f64,
}

fn say(opts: &BuildOptions, msg: impl AsRef<str>) {
    if opts.progress {
        eprintln!("images: {}", msg.as_ref());
    }
}

/// The images `only` selects, in catalog order.
pub fn select(only: Option<&[String]>) -> Result<Vec<&'static ImageDef>, Error> {
    let Some(only) = only else {
        return Ok(catalog::IMAGES.iter().collect());
    };
    for n in only {
        if catalog::find(n).is_none() {
            return Err(Error::UnknownImage(n.clone(), catalog::names()));
        }
    }
    Ok(catalog::IMAGES
        .iter()
        .filter(|d| only.iter().any(|n| n == d.name))
        .collect())
}

/// Hash of everything one build of `def` reads.
pub fn inputs_hash(def: &ImageDef, base_sha256: &str, binary_sha256: Option<&str>) -> String {
    sha256_hex(
        format!(
            "{}\0base={base_sha256}\0binary={}",
            def.recipe_hash(),
            binary_sha256.unwrap_or("-")
        )
        .as_bytes(),
    )
}

/// Builds what is stale, reuses the rest, writes the archives and the lock into `opts.out`.
pub fn build(opts: &BuildOptions) -> Result<BuildReport, Error> {
    let started = Instant::now();
    let selected = select(opts.only.as_deref())?;
    tools::require(&[tools::PODMAN, tools::RUNC, tools::SKOPEO])?;
    let out = &opts.out;
    std::fs::create_dir_all(out.join("logs")).map_err(Error::io(out))?;
    let out = out.canonicalize().map_err(Error::io(out))?;
    let tools = Tools::in_dir(&out)?;
    let lock_path = out.join(LOCK_FILE);
    let mut lock = Lock::load_or_default(&out)?;

    let (base, base_status) = ensure_base(opts, &tools, &out, &mut lock)?;
    lock.save(&lock_path)?;

    let binary = if selected.iter().any(|d| d.needs_binary) {
        let path = match &opts.binary {
            Some(p) => p.clone(),
            None => cargo_build(opts)?,
        };
        let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
        Some((path, sha256_hex(&bytes)))
    } else {
        None
    };

    let ca = opts.ca_bundle.clone().or_else(default_ca_bundle);
    let mut images = Vec::new();
    for def in selected {
        let t = Instant::now();
        let bin_sha = binary
            .as_ref()
            .filter(|_| def.needs_binary)
            .map(|(_, s)| s.as_str());
        let inputs = inputs_hash(def, &base.archive_sha256, bin_sha);
        let archive = out.join(def.archive_name());
        let cached = lock.images.get(def.name).filter(|e| {
            e.inputs == inputs
                && std::fs::metadata(out.join(&e.archive))
                    .map(|m| m.len() == e.archive_bytes)
                    .unwrap_or(false)
        });
        if let Some(e) = cached {
            say(opts, format!("{}: cached ({})", def.name, e.digest));
            images.push(built(def.name, e, &out, Status::Cached, t));
            continue;
        }
        say(
            opts,
            format!(
                "{}: building {} (log: {})",
                def.name,
                def.local_reference(),
                out.join("logs").join(format!("{}.log", def.name)).display()
            ),
        );
        let context = stage_context(def, &out, binary.as_ref().map(|(p, _)| p.as_path()))?;
        let log = out.join("logs").join(format!("{}.log", def.name));
        let mut cmd = tools.command("podman");
        cmd.args(["build", "--network", "host", "--pull=never", "--layers"])
            .arg("-f")
            .arg(context.join("Containerfile"))
            .args(["-t", &def.local_reference()])
            .arg("--build-arg")
            .arg(format!("BASE={}", base.reference));
        for (k, v) in def.build_args {
            cmd.arg("--build-arg").arg(format!("{k}={v}"));
        }
        if def.containerfile.contains("ARG PIP_CERT") {
            if let Some(ca) = &ca {
                cmd.arg("--volume")
                    .arg(format!("{}:{CA_IN_BUILD}:ro", ca.display()))
                    .arg("--build-arg")
                    .arg(format!("PIP_CERT={CA_IN_BUILD}"));
            }
        }
        cmd.arg(&context);
        tools.run(cmd, &format!("podman build of {}", def.name), Some(&log))?;

        let tmp = out.join(format!(".{}.tmp", def.archive_name()));
        let _ = std::fs::remove_file(&tmp);
        let mut save = tools.command("podman");
        save.args(["save", "--format", "oci-archive", "-o"])
            .arg(&tmp)
            .arg(def.local_reference());
        tools.run(save, &format!("podman save of {}", def.name), None)?;
        std::fs::rename(&tmp, &archive).map_err(Error::io(&archive))?;
        let digest = tools.archive_digest(&archive)?;
        let mut inspect = tools.command("podman");
        inspect.args([
            "image",
            "inspect",
            "--format",
            "{{.Size}}",
            &def.local_reference(),
        ]);
        let size = tools
            .run(inspect, &format!("podman image inspect {}", def.name), None)?
            .trim()
            .parse()
            .unwrap_or(0);
        let entry = LockEntry {
            serves: def.serves.into(),
            reference: def.local_reference(),
            tag: def.tag.into(),
            digest,
            size,
            archive: def.archive_name(),
            archive_bytes: std::fs::metadata(&archive)
                .map_err(Error::io(&archive))?
                .len(),
            recipe: def.recipe_hash(),
            inputs,
            binary_sha256: bin_sha.map(str::to_string),
            mxstack_version: env!("CARGO_PKG_VERSION").into(),
        };
        let _ = std::fs::remove_dir_all(&context);
        lock.images.insert(def.name.into(), entry.clone());
        lock.save(&lock_path)?;
        let b = built(def.name, &entry, &out, Status::Built, t);
        say(
            opts,
            format!(
                "{}: built in {:.0} s, {} MB ({})",
                def.name,
                b.seconds,
                entry.size / 1_000_000,
                entry.digest
            ),
        );
        images.push(b);
    }
    Ok(BuildReport {
        out: out.clone(),
        lock: lock_path,
        base: base.reference,
        base_status,
        images,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn built(name: &str, e: &LockEntry, out: &Path, status: Status, t: Instant) -> Built {
    Built {
        name: name.into(),
        status,
        reference: e.reference.clone(),
        digest: e.digest.clone(),
        size: e.size,
        archive: out.join(&e.archive),
        archive_bytes: e.archive_bytes,
        seconds: t.elapsed().as_secs_f64(),
    }
}

/// The Debian base: made by mmdebstrap once, kept as an archive in `out`, imported into podman
/// under a name carrying the archive's hash (so a changed base never hides behind an old name).
fn ensure_base(
    opts: &BuildOptions,
    tools: &Tools,
    out: &Path,
    lock: &mut Lock,
) -> Result<(BaseEntry, Status), Error> {
    let archive_name = format!("base-{}.tar", BASE.suite);
    let archive = out.join(&archive_name);
    let recipe = BASE.recipe_hash();
    let current = lock.base.clone().filter(|b| {
        b.recipe == recipe
            && std::fs::read(&archive)
                .map(|bytes| sha256_hex(&bytes) == b.archive_sha256)
                .unwrap_or(false)
    });
    let (entry, status) = match current {
        Some(b) => (b, Status::Cached),
        None => {
            tools::require(&[tools::MMDEBSTRAP])?;
            say(
                opts,
                format!("base: mmdebstrap {} (about a minute)", BASE.suite),
            );
            let t = Instant::now();
            let tmp = out.join(format!(".{archive_name}.tmp"));
            let mut cmd = tools.command("mmdebstrap");
            cmd.args(BASE.mmdebstrap_args)
                .arg("--format=tar")
                .arg(BASE.suite)
                .arg(&tmp);
            tools.run(cmd, "mmdebstrap", Some(&out.join("logs/base.log")))?;
            std::fs::rename(&tmp, &archive).map_err(Error::io(&archive))?;
            let bytes = std::fs::read(&archive).map_err(Error::io(&archive))?;
            let sha = sha256_hex(&bytes);
            say(
                opts,
                format!("base: made in {:.0} s", t.elapsed().as_secs_f64()),
            );
            (
                BaseEntry {
                    reference: format!("{}:{}-{}", BASE.repository, BASE.suite, &sha[..12]),
                    suite: BASE.suite.into(),
                    recipe,
                    archive: archive_name,
                    archive_sha256: sha,
                },
                Status::Built,
            )
        }
    };
    if !tools.image_exists(&entry.reference) {
        let mut cmd = tools.command("podman");
        cmd.arg("import").arg(&archive).arg(&entry.reference);
        tools.run(cmd, "podman import of the base", None)?;
    }
    lock.base = Some(entry.clone());
    Ok((entry, status))
}

/// A fresh build context for `def` under `out/.context`: its Containerfile, its context files
/// and, for the mxstack image, the binary.
fn stage_context(def: &ImageDef, out: &Path, binary: Option<&Path>) -> Result<PathBuf, Error> {
    let dir = out.join(".context").join(def.name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let cf = dir.join("Containerfile");
    std::fs::write(&cf, def.containerfile).map_err(Error::io(&cf))?;
    for (path, content) in def.context {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("has a parent")).map_err(Error::io(&p))?;
        std::fs::write(&p, content).map_err(Error::io(&p))?;
    }
    if def.needs_binary {
        let src = binary.ok_or_else(|| Error::Usage("the mxstack image needs a binary".into()))?;
        let dst = dir.join("mxstack");
        std::fs::copy(src, &dst).map_err(Error::io(src))?;
    }
    Ok(dir)
}

fn default_ca_bundle() -> Option<PathBuf> {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/etc/ssl/certs/ca-certificates.crt")])
        .find(|p| p.is_file())
}

/// The mxstack checkout around `start`: a directory with Cargo.toml and crates/cli.
pub fn find_workspace(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| d.join("Cargo.toml").is_file() && d.join("crates/cli/Cargo.toml").is_file())
        .map(Path::to_path_buf)
}

/// `cargo build --release --locked -p mxstack` in the checkout; the binary's path.
fn cargo_build(opts: &BuildOptions) -> Result<PathBuf, Error> {
    let ws = match &opts.workspace {
        Some(w) => w.clone(),
        None => std::env::current_dir()
            .ok()
            .and_then(|d| find_workspace(&d))
            .ok_or_else(|| {
                Error::Usage(
                    "the mxstack image needs the mxstack binary: run in an mxstack checkout \
                     (cargo builds it) or pass --binary PATH (a release build for Debian 12)"
                        .into(),
                )
            })?,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    say(
        opts,
        format!(
            "mxstack: cargo build --release -p mxstack in {}",
            ws.display()
        ),
    );
    let out = std::process::Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "mxstack",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(&ws)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::Failed {
            what: "cargo build".into(),
            status: e.to_string(),
            log: String::new(),
        })?;
    if !out.status.success() {
        return Err(Error::Failed {
            what: "cargo build --release -p mxstack".into(),
            status: out.status.to_string(),
            log: String::new(),
        });
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "mxstack")
        .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
        .next_back()
        .ok_or_else(|| Error::Failed {
            what: "cargo build".into(),
            status: "no mxstack executable in its output".into(),
            log: String::new(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_keeps_catalog_order_and_refuses_unknown_names() {
        let s = select(Some(&["coturn".into(), "synapse".into()])).unwrap();
        assert_eq!(
            s.iter().map(|d| d.name).collect::<Vec<_>>(),
            ["synapse", "coturn"]
        );
        let e = select(Some(&["nginx".into()])).unwrap_err().to_string();
        assert!(
            e.contains("unknown image \"nginx\"") && e.contains("synapse"),
            "{e}"
        );
        assert_eq!(select(None).unwrap().len(), catalog::IMAGES.len());
    }

    #[test]
    fn inputs_change_with_base_and_binary() {
        let d = catalog::find("mxstack").unwrap();
        let a = inputs_hash(d, "base1", Some("bin1"));
        assert_eq!(a, inputs_hash(d, "base1", Some("bin1")));
        assert_ne!(a, inputs_hash(d, "base2", Some("bin1")));
        assert_ne!(a, inputs_hash(d, "base1", Some("bin2")));
    }

    #[test]
    fn the_context_holds_what_the_containerfile_copies() {
        let d = tempfile::tempdir().unwrap();
        let syn = catalog::find("synapse").unwrap();
        let ctx = stage_context(syn, d.path(), None).unwrap();
        assert!(ctx.join("python/mxstack_synapse/__init__.py").is_file());
        assert!(ctx.join("Containerfile").is_file());
        let bin = d.path().join("fake-mxstack");
        std::fs::write(&bin, "binary").unwrap();
        let ctx = stage_context(catalog::find("mxstack").unwrap(), d.path(), Some(&bin)).unwrap();
        assert_eq!(
            std::fs::read_to_string(ctx.join("mxstack")).unwrap(),
            "binary"
        );
    }

    #[test]
    fn the_workspace_is_found_from_inside_it() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let ws = find_workspace(here).unwrap();
        assert!(ws.join("crates/images").is_dir());
    }
}
