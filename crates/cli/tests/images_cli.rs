//! Why: the `images` commands' contract at the command line, without building anything:
//! `render --pin` pins what the lock has and reports what it lacks, a stale lock refuses the
//! render naming the image, `images list` names every rendered image, and `images build`
//! without podman names the package to install.

mod common;

use std::process::Command;

use common::{init_site, mxstack, ok};
use mxstack_images::{catalog, Lock, LockEntry};

fn entry(name: &str) -> LockEntry {
    let def = catalog::find(name).unwrap();
    LockEntry {
        serves: def.serves.into(),
        reference: def.local_reference(),
        tag: def.tag.into(),
        digest: format!("sha256:{}", mxstack_images::sha256_hex(name.as_bytes())),
        size: 1,
        archive: def.archive_name(),
        archive_bytes: 1,
        recipe: def.recipe_hash(),
        inputs: "0".repeat(64),
        binary_sha256: None,
        mxstack_version: env!("CARGO_PKG_VERSION").into(),
    }
}

fn lock_file(dir: &std::path::Path, names: &[&str]) -> (std::path::PathBuf, Lock) {
    let mut lock = Lock::default();
    for n in names {
        lock.images.insert(n.to_string(), entry(n));
    }
    let p = dir.join("images.lock");
    lock.save(&p).unwrap();
    (p, lock)
}

#[test]
fn render_pin_pins_locked_images_and_reports_the_rest() {
    let (dir, cfg) = init_site("acme-pin.eu", "100", "li,antivirus");
    let (lock_path, lock) = lock_file(dir.path(), &["synapse", "mxstack"]);
    let out = dir.path().join("k8s");
    let o = mxstack(&[
        "render",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--pin",
        lock_path.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(v["written"], true);
    let main = std::fs::read_to_string(out.join("20-main/synapse-main.yaml")).unwrap();
    // (The YAML writer may fold a long scalar onto the next line.)
    let want = format!(
        "ghcr.io/mxstack/synapse:1.163.2@{}",
        lock.images["synapse"].digest
    );
    assert!(main.contains(&want), "{want}");
    let scanner = std::fs::read_to_string(out.join("20-main/antivirus.yaml")).unwrap();
    assert!(scanner.contains(&lock.images["mxstack"].digest));
    // Everything else the render names is reported with a fix, as a warning.
    let findings = v["findings"].as_array().unwrap();
    let img: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["rule"] == "MX-IMG-001")
        .collect();
    let pg = img
        .iter()
        .find(|f| f["message"].as_str().unwrap().contains("images.postgres"))
        .expect("postgres is reported");
    assert!(pg["fix"].as_str().unwrap().contains("@sha256:"));
    let haproxy = img
        .iter()
        .find(|f| f["message"].as_str().unwrap().contains("images.haproxy"))
        .expect("haproxy is reported");
    assert!(haproxy["fix"]
        .as_str()
        .unwrap()
        .contains("mxstack images push"));
    assert!(!img
        .iter()
        .any(|f| f["message"].as_str().unwrap().contains("images.synapse is")));
}

#[test]
fn render_pin_refuses_a_stale_lock_naming_the_image() {
    let (dir, cfg) = init_site("acme-stale.eu", "100", "antivirus");
    let (lock_path, mut lock) = lock_file(dir.path(), &["synapse", "haproxy"]);
    lock.images.get_mut("haproxy").unwrap().recipe = "f".repeat(64);
    lock.save(&lock_path).unwrap();
    let out = dir.path().join("k8s");
    let o = mxstack(&[
        "render",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--pin",
        lock_path.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("MX-IMG-002"), "{err}");
    assert!(err.contains("`haproxy` is stale"), "{err}");
    assert!(err.contains("images/haproxy/Containerfile"), "{err}");
    assert!(!out.exists(), "nothing written");
}

#[test]
fn images_list_names_every_rendered_image() {
    let (dir, cfg) = init_site("acme-list.eu", "100", "li,antivirus,calls");
    let (lock_path, lock) = lock_file(dir.path(), &["synapse"]);
    let o = mxstack(&[
        "images",
        "list",
        "--config",
        cfg.to_str().unwrap(),
        "--lock",
        lock_path.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    let rows = v["images"].as_array().unwrap();
    let find = |s: &str| {
        rows.iter()
            .find(|r| r["image"].as_str().unwrap().contains(s))
            .unwrap_or_else(|| panic!("{s} listed"))
    };
    assert_eq!(find("mxstack/synapse")["buildable"], "synapse");
    assert_eq!(
        find("mxstack/synapse")["locked_digest"],
        lock.images["synapse"].digest.as_str()
    );
    assert_eq!(find("coturn")["buildable"], "coturn");
    assert_eq!(find("clamav")["fields"][0], "clamav");
    assert!(find("cloudnative-pg")["buildable"].is_null());
    assert!(find("kubectl").is_object());
}

#[test]
fn images_build_without_podman_names_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mxstack"))
        .args(["images", "build", "--out"])
        .arg(dir.path().join("out"))
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("podman is not installed; install the Debian package: apt-get install podman"),
        "{err}"
    );
    let o = mxstack(&[
        "images",
        "build",
        "--only",
        "nginx",
        "--out",
        "/nonexistent",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown image \"nginx\""));
}
