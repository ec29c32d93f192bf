//! Why: the images are only worth something if they really build and really run. These tests
//! build them with podman (into the cache /var/cache/mxstack/images, or MXSTACK_IMAGES_CACHE;
//! an empty cache works, a warm one makes them fast), then run each image's check as its pods
//! run it: as the pod's non-root user with a read-only root filesystem. They also show a second
//! build reuses everything, that the archive and the lock agree on the digest, and that a push
//! keeps it (a docker-registry on 127.0.0.1:22050 when the Debian package is installed, and an
//! OCI layout). Real containers, no mocks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use mxstack_images::tools::{self, Tools};
use mxstack_images::{build, catalog, BuildOptions, Lock, PushOptions, Status, LOCK_FILE};

/// One build at a time in this process (they share the cache directory and its lock file).
static BUILDS: Mutex<()> = Mutex::new(());

fn cache() -> PathBuf {
    std::env::var_os("MXSTACK_IMAGES_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/mxstack/images"))
}

fn require_tools() {
    for (p, pkg) in [tools::PODMAN, tools::RUNC, tools::SKOPEO, tools::MMDEBSTRAP] {
        assert!(
            tools::which(p).is_some(),
            "{p} is not installed: apt-get install {pkg} (scripts/setup.sh installs it)"
        );
    }
}

/// The mxstack binary to package: MXSTACK_BINARY, else the one cargo built next to this test
/// (same profile), else a release build. Never a nested `cargo build` into the running target
/// directory (cargo holds its lock while tests run).
fn binary() -> PathBuf {
    if let Some(b) = std::env::var_os("MXSTACK_BINARY") {
        return PathBuf::from(b);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let target = profile_dir.parent().unwrap().to_path_buf();
    for candidate in [profile_dir.join("mxstack"), target.join("release/mxstack")] {
        if candidate.is_file() {
            return candidate;
        }
    }
    let nested = target.join("images-test");
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let st = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "mxstack",
            "--target-dir",
        ])
        .arg(&nested)
        .current_dir(ws)
        .status()
        .unwrap();
    assert!(st.success(), "cargo build of the mxstack binary");
    nested.join("release/mxstack")
}

fn build_only(names: &[&str]) -> mxstack_images::BuildReport {
    require_tools();
    build(&BuildOptions {
        out: cache(),
        only: Some(names.iter().map(|s| s.to_string()).collect()),
        binary: Some(binary()),
        progress: true,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("images build: {e}"))
}

fn podman(tools: &Tools) -> Command {
    tools.command("podman")
}

/// Loads the image from its archive when podman's storage lacks it (a cache copied from
/// elsewhere, or storage that was reset).
fn ensure_loaded(tools: &Tools, entry: &mxstack_images::LockEntry) {
    if !tools.image_exists(&entry.reference) {
        let st = podman(tools)
            .args(["load", "-q", "-i"])
            .arg(cache().join(&entry.archive))
            .status()
            .unwrap();
        assert!(st.success(), "podman load {}", entry.archive);
    }
}

/// Runs `args` in the image as its pods do: their user, read-only root, no network.
fn run_as_pod(tools: &Tools, def: &catalog::ImageDef, reference: &str, args: &[&str]) -> String {
    let out = podman(tools)
        .args(["run", "--rm", "--read-only", "--network", "none"])
        .args(["--user", def.user, "--tmpfs", "/tmp"])
        .args(["--entrypoint", args[0]])
        .arg(reference)
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} in {reference} as {}: exit {:?}\n{}\n{}",
        args.join(" "),
        def.user,
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn mxstack_image_builds_runs_read_only_as_10001_and_is_reused() {
    let _g = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let first = build_only(&["mxstack"]);
    let tools = Tools::in_dir(&cache()).unwrap();
    let lock = Lock::load(&cache().join(LOCK_FILE)).unwrap();
    let entry = &lock.images["mxstack"];
    assert_eq!(first.images[0].digest, entry.digest);
    // The archive's manifest is the digest the lock records.
    assert_eq!(
        tools.archive_digest(&cache().join(&entry.archive)).unwrap(),
        entry.digest
    );
    ensure_loaded(&tools, entry);
    let def = catalog::find("mxstack").unwrap();
    // As the pod runs it: `mxstack ...` by name, uid 10001, read-only root.
    let v = run_as_pod(&tools, def, &entry.reference, &["mxstack", "--version"]);
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
    let id = run_as_pod(&tools, def, &entry.reference, &["id", "-u"]);
    assert_eq!(id.trim(), "10001");
    // The image's own entrypoint, as `podman run IMAGE --version`.
    let out = podman(&tools)
        .args(["run", "--rm", "--read-only", "--network", "none"])
        .arg(&entry.reference)
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("mxstack"));
    let user = podman(&tools)
        .args(["image", "inspect", "--format", "{{.Config.User}}"])
        .arg(&entry.reference)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "10001:10001");
    // A second build with the same inputs reuses the archive.
    let second = build_only(&["mxstack"]);
    assert_eq!(second.images[0].status, Status::Cached);
    assert_eq!(second.base_status, Status::Cached);
    assert_eq!(second.images[0].digest, entry.digest);
}

#[test]
fn every_image_runs_its_check_as_its_pod_user_and_carries_no_compiler_or_cache() {
    let _g = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let names: Vec<&str> = catalog::IMAGES.iter().map(|d| d.name).collect();
    build_only(&names);
    let tools = Tools::in_dir(&cache()).unwrap();
    let lock = Lock::load(&cache().join(LOCK_FILE)).unwrap();
    for def in catalog::IMAGES {
        let entry = &lock.images[def.name];
        ensure_loaded(&tools, entry);
        run_as_pod(&tools, def, &entry.reference, def.check);
        let (uid, _) = def.user.split_once(':').unwrap();
        let id = run_as_pod(&tools, def, &entry.reference, &["id", "-u"]);
        assert_eq!(id.trim(), uid, "{}", def.name);
        // Inspected as root, so nothing is hidden by permissions.
        let out = podman(&tools)
            .args([
                "run",
                "--rm",
                "--read-only",
                "--network",
                "none",
                "--user",
                "0",
            ])
            .args(["--entrypoint", "sh"])
            .arg(&entry.reference)
            .args([
                "-c",
                "for p in gcc cc c++ make pip pip3; do command -v $p && exit 1; done; \
                 ls -A /var/lib/apt/lists | grep -v -e '^lock$' -e '^partial$' && exit 2; \
                 ls /var/cache/apt/archives/*.deb 2>/dev/null && exit 3; \
                 test -e /root/.cache/pip && exit 4; exit 0",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: a compiler or a package cache is left (exit {:?}): {}",
            def.name,
            out.status.code(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn push_keeps_the_digest_in_an_oci_layout_and_a_local_registry() {
    let _g = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    build_only(&["mxstack"]);
    let lock = Lock::load(&cache().join(LOCK_FILE)).unwrap();
    let digest = lock.images["mxstack"].digest.clone();
    let tmp = tempfile::tempdir().unwrap();

    let layout = tmp.path().join("layout");
    let pushed = mxstack_images::push(&PushOptions {
        dir: cache(),
        registry: format!("oci:{}", layout.display()),
        only: Some(vec!["mxstack".into()]),
        tls_verify: true,
        progress: true,
    })
    .unwrap();
    assert_eq!(pushed[0].digest, digest);
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap();
    assert!(index.contains(&digest), "{index}");

    let Some(registry) = tools::which("docker-registry") else {
        panic!(
            "docker-registry is not installed: apt-get install docker-registry (scripts/setup.sh)"
        );
    };
    let conf = tmp.path().join("registry.yml");
    std::fs::write(
        &conf,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:22050\n",
            tmp.path().join("registry").display()
        ),
    )
    .unwrap();
    let _reg = Registry(
        Command::new(registry)
            .arg("serve")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::net::TcpStream::connect("127.0.0.1:22050").is_ok()
    });
    assert!(up, "docker-registry listens on 127.0.0.1:22050");
    let pushed = mxstack_images::push(&PushOptions {
        dir: cache(),
        registry: "127.0.0.1:22050/mxstack".into(),
        only: Some(vec!["mxstack".into()]),
        tls_verify: false,
        progress: true,
    })
    .unwrap();
    assert_eq!(pushed[0].digest, digest);
    assert_eq!(
        pushed[0].config_value.as_deref(),
        Some(
            format!(
                "127.0.0.1:22050/mxstack/mxstack:{}@{digest}",
                env!("CARGO_PKG_VERSION")
            )
            .as_str()
        )
    );
    // The registry serves that digest under the tag.
    let tools = Tools::in_dir(&cache()).unwrap();
    let out = tools
        .command("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!(
            "docker://127.0.0.1:22050/mxstack/mxstack:{}",
            env!("CARGO_PKG_VERSION")
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest);
}
