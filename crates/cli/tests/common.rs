//! Shared helpers for the CLI's integration tests: run the real binary, find the real tools, and
//! materialise rendered pods' mounted files.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

pub fn venv() -> PathBuf {
    std::env::var_os("MXSTACK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv"))
}

/// The venv's python with Synapse 1.163.2; panics with the fix when it is missing.
pub fn python() -> PathBuf {
    let py = venv().join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/setup.sh (it installs Synapse into the venv)",
        py.display()
    );
    py
}

pub fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("`{name}` is not installed: run scripts/setup.sh");
}

pub fn mxstack(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mxstack"))
        .args(args)
        .output()
        .expect("run mxstack")
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `mxstack init` into a fresh temp dir; returns (tempdir, path of mxstack.yaml).
pub fn init_site(domain: &str, scale: &str, features: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().unwrap();
    ok(&mxstack(&[
        "init",
        "--domain",
        domain,
        "--scale",
        scale,
        "--features",
        features,
        "--dir",
        d,
    ]));
    let cfg = dir.path().join("mxstack.yaml");
    (dir, cfg)
}

/// `mxstack init` + `render` into a fresh temp dir; returns (tempdir, out dir).
pub fn init_and_render(
    domain: &str,
    scale: &str,
    features: &str,
    edit: impl FnOnce(&mut String),
) -> (tempfile::TempDir, PathBuf) {
    let (dir, cfg) = init_site(domain, scale, features);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    edit(&mut text);
    std::fs::write(&cfg, text).unwrap();
    let out = dir.path().join("out");
    ok(&mxstack(&[
        "render",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    (dir, out)
}

/// Every object in a rendered tree, with the file it came from.
pub fn objects(out: &Path) -> Vec<(String, Value)> {
    let mut files = Vec::new();
    collect(out, out, &mut files);
    files.sort();
    let mut objs = Vec::new();
    for rel in files {
        if rel.ends_with("kustomization.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(out.join(&rel)).unwrap();
        for doc in text.split("\n---\n") {
            let doc = doc.trim_start_matches("---\n");
            if doc.trim().is_empty() {
                continue;
            }
            let v: Value = serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{rel}: {e}"));
            objs.push((rel.clone(), v));
        }
    }
    objs
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(root, &p, out);
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
}

pub fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}
pub fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

fn data(o: &Value) -> BTreeMap<String, Vec<u8>> {
    use base64::Engine;
    let mut m = BTreeMap::new();
    if let Some(d) = o["data"].as_object() {
        for (k, v) in d {
            let s = v.as_str().unwrap_or("");
            let bytes = if kind(o) == "Secret" {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .expect("secret data is base64")
            } else {
                s.as_bytes().to_vec()
            };
            m.insert(k.clone(), bytes);
        }
    }
    if let Some(d) = o["stringData"].as_object() {
        for (k, v) in d {
            m.insert(k.clone(), v.as_str().unwrap_or("").as_bytes().to_vec());
        }
    }
    m
}

/// Writes the ConfigMap and Secret volumes a workload's main container mounts under `root`,
/// at their mount paths (so `/mxstack/config/x` lands at `root/mxstack/config/x`).
/// Returns the mount paths.
pub fn materialise(workload: &Value, all: &[(String, Value)], root: &Path) -> Vec<String> {
    let spec = &workload["spec"]["template"]["spec"];
    let mut mounts = Vec::new();
    let container = &spec["containers"][0];
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let mount = m["mountPath"].as_str().unwrap();
        mounts.push(mount.to_string());
        let vol = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .expect("volume for mount");
        let (k, n) = if let Some(n) = vol["configMap"]["name"].as_str() {
            ("ConfigMap", n)
        } else if let Some(n) = vol["secret"]["secretName"].as_str() {
            ("Secret", n)
        } else {
            std::fs::create_dir_all(root.join(mount.trim_start_matches('/'))).unwrap();
            continue;
        };
        let (_, obj) = all
            .iter()
            .find(|(_, o)| kind(o) == k && name(o) == n)
            .unwrap_or_else(|| panic!("{k} {n} is rendered"));
        let source = if k == "ConfigMap" {
            &vol["configMap"]
        } else {
            &vol["secret"]
        };
        let d = data(obj);
        let files: Vec<(String, Vec<u8>)> = match source["items"].as_array() {
            Some(items) => items
                .iter()
                .map(|i| {
                    (
                        i["path"].as_str().unwrap().to_string(),
                        d[i["key"].as_str().unwrap()].clone(),
                    )
                })
                .collect(),
            None => d.into_iter().collect(),
        };
        let base = root.join(mount.trim_start_matches('/'));
        if let Some(sub) = m["subPath"].as_str() {
            let (_, bytes) = files.iter().find(|(p, _)| p == sub).expect("subPath key");
            std::fs::create_dir_all(base.parent().unwrap()).unwrap();
            std::fs::write(&base, bytes).unwrap();
            continue;
        }
        std::fs::create_dir_all(&base).unwrap();
        for (p, bytes) in files {
            std::fs::write(base.join(p), bytes).unwrap();
        }
    }
    mounts
}

/// Runs `script` in a private mount namespace where each materialised mount path under `root` is
/// bind-mounted at that same absolute path, so config paths resolve as they do in the pod.
pub fn run_in_mounts(root: &Path, mounts: &[String], script: &str, env: &[(&str, &str)]) -> Output {
    let mut binds = String::new();
    let mut sorted = mounts.to_vec();
    sorted.sort();
    sorted.dedup();
    // An empty scratch mount over a parent of `root` (an emptyDir at /tmp, say) would hide the
    // bind sources and the test's own files; the host directory serves as scratch instead.
    sorted.retain(|m| {
        let src = root.join(m.trim_start_matches('/'));
        let empty = std::fs::read_dir(&src).is_ok_and(|mut d| d.next().is_none());
        !(root.starts_with(m) && empty)
    });
    for m in sorted {
        let src = root.join(m.trim_start_matches('/'));
        if src.is_dir() {
            // An empty mount point is all this leaves on the host.
            binds.push_str(&format!(
                "mkdir -p '{m}' && mount --bind '{}' '{m}' && ",
                src.display()
            ));
        }
    }
    let mut cmd = Command::new("unshare");
    // A private network namespace too: nothing a proof runs may reach the network, and name
    // lookups of cluster hostnames fail at once instead of waiting for a resolver.
    cmd.args([
        "--net",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &format!("{binds}{script}"),
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("unshare (util-linux) runs")
}
