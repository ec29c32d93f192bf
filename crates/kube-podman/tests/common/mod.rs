//! What the podman tests share: the images (built into the cache when missing or stale, as
//! `mxstack images build` does; an empty cache works, a warm one is fast) and a rendered site.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mxstack_images::{build, BuildOptions, Lock};
use mxstack_spec::{Config, Feature, Secrets, Tier};
use mxstack_topology::Topology;
use serde_json::Value;

static BUILDS: Mutex<()> = Mutex::new(());

fn cache() -> PathBuf {
    std::env::var_os("MXSTACK_IMAGES_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/mxstack/images"))
}

/// The mxstack binary cargo built beside this test (the image packages it).
fn binary() -> PathBuf {
    if let Some(b) = std::env::var_os("MXSTACK_BINARY") {
        return PathBuf::from(b);
    }
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let b = profile.join("mxstack");
    assert!(
        b.is_file(),
        "build the mxstack binary first (cargo build -p mxstack)"
    );
    b
}

/// Builds (or reuses) `only` and returns the lock.
pub fn images(only: &[&str]) -> Lock {
    let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let report = build(&BuildOptions {
        out: cache(),
        only: Some(only.iter().map(|s| s.to_string()).collect()),
        binary: Some(binary()),
        progress: true,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("images build: {e}"));
    Lock::load(&report.lock).unwrap()
}

/// The rendered objects of a 100-user site with `features`, and its secrets.
pub fn rendered(features: &[Feature]) -> (Config, Vec<Value>, Secrets) {
    let mut c = Config::new(
        "run-proof.test",
        Tier::T100,
        features.iter().copied().collect(),
    );
    c.antivirus.signature_updates = false;
    let secrets = Secrets::generate_all().unwrap();
    let objects = mxstack_k8s::render(&Topology::build(&c), &secrets)
        .objects
        .into_iter()
        .map(|o| o.value)
        .collect();
    (c, objects, secrets)
}

/// Removes a test's work directory (rendered files, secrets among them) when the test ends,
/// passed or failed.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
