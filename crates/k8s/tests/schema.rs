//! Schema validation of every rendered object.
//!
//! Core kinds: `kubernetes-validate --strict` against Kubernetes 1.33 (unknown fields are errors).
//! Custom resources: the CRDs' openAPIV3Schema from ../shared/crds (or schemas/crds), tightened so that unknown fields
//! are errors too, checked with the `jsonschema` Python module. Both tools live in the project's
//! virtualenv (`scripts/setup.sh`); a missing tool fails the test, it never skips it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use mxstack_spec::{Feature, IngressMode, MediaBackend, Tier};

const KUBERNETES_VERSION: &str = "1.33.0";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn venv() -> PathBuf {
    std::env::var_os("MXSTACK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv"))
}

fn tool(name: &str) -> PathBuf {
    let p = venv().join("bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (or set MXSTACK_VENV to the virtualenv that has kubernetes-validate)",
        p.display()
    );
    p
}

/// `MXSTACK_CRDS` if set, else the team's shared copy next to the checkout, else the copy in
/// `schemas/crds` (the same files byte for byte, so a lone clone still validates).
fn crd_dir() -> PathBuf {
    let candidates = [
        std::env::var_os("MXSTACK_CRDS").map(PathBuf::from),
        Some(workspace().join("../shared/crds")),
        Some(workspace().join("schemas/crds")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|d| d.join("postgresql.cnpg.io_clusters.yaml").exists())
        .expect(
            "CRDs not found: schemas/crds is part of the repository (see schemas/crds/SOURCES.md)",
        )
}

/// Configs that together render every kind and every optional part.
fn configs() -> Vec<mxstack_spec::Config> {
    let mut a = config(Tier::T1k, &all_features());
    a.storage_class = Some("fast-ssd".into());
    a.li.allowed_cidrs = vec!["198.51.100.0/24".into(), "2001:db8::/64".into()];
    // Air-gapped antivirus: the signature PVC instead of freshclam.
    let mut b = config(
        Tier::T100,
        &[Feature::Federation, Feature::Push, Feature::Antivirus],
    );
    b.antivirus.signature_updates = false;
    b.ingress.mode = IngressMode::Ingress;
    b.ingress.ingress_class = Some("traefik".into());
    b.media.backend = MediaBackend::MinioLegacy;
    let mut c = config(Tier::T20k, &[]);
    c.media.backend = MediaBackend::S3;
    c.media.endpoint = Some("https://s3.eu-west-1.amazonaws.com".into());
    // LI in ingress mode (Traefik middlewares) and dump mode (the dump CronJob).
    let mut d = config(Tier::T100, &[Feature::Li, Feature::Monitoring]);
    d.ingress.mode = IngressMode::Ingress;
    d.li.sync = mxstack_spec::LiSyncMode::Dump;
    d.li.allowed_cidrs = vec!["203.0.113.0/24".into()];
    vec![a, b, c, d]
}

/// Writes the objects as JSON files, split into core kinds and custom resources.
fn write_objects(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut core, mut custom) = (Vec::new(), Vec::new());
    for (i, c) in configs().iter().enumerate() {
        let (r, _) = render(c);
        for (j, o) in r.objects.iter().enumerate() {
            let api = o.value["apiVersion"].as_str().unwrap();
            let p = dir.join(format!(
                "{i}-{j:03}-{}-{}.json",
                kind(&o.value),
                name(&o.value)
            ));
            std::fs::write(&p, serde_json::to_string_pretty(&o.value).unwrap()).unwrap();
            if mxstack_k8s::prerequisites::BUILT_IN.contains(&api) {
                core.push(p);
            } else {
                custom.push(p);
            }
        }
    }
    (core, custom)
}

#[test]
fn core_objects_pass_strict_kubernetes_validation() {
    let validator = tool("kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    let (core, _) = write_objects(dir.path());
    assert!(core.len() > 50);
    for k in [
        "CronJob",
        "Job",
        "Deployment",
        "NetworkPolicy",
        "ServiceAccount",
        "Role",
        "RoleBinding",
    ] {
        assert!(
            core.iter().any(|p| p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .contains(&format!("-{k}-"))),
            "no {k} validated"
        );
    }
    let out = Command::new(&validator)
        .args(["-k", KUBERNETES_VERSION, "--strict", "--quiet"])
        .args(&core)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate failed:\n{text}");
    assert!(!text.contains("ERROR"), "{text}");
}

/// Validates custom resources against their CRD schema, with unknown fields refused.
const CRD_VALIDATOR: &str = r#"
import glob, json, sys, yaml, jsonschema

def tighten(s):
    if isinstance(s, dict):
        if s.get("type") == "object" and "properties" in s \
                and not s.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in s:
            s["additionalProperties"] = False
        for v in list(s.values()):
            tighten(v)
    elif isinstance(s, list):
        for v in s:
            tighten(v)
    return s

schemas = {}
for f in glob.glob(sys.argv[1] + "/**/*.yaml", recursive=True):
    with open(f) as fh:
        for crd in yaml.safe_load_all(fh):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for v in crd["spec"]["versions"]:
                if v.get("served"):
                    schemas[(group + "/" + v["name"], kind)] = tighten(v["schema"]["openAPIV3Schema"])

failed = 0
for f in sys.argv[2:]:
    with open(f) as fh:
        obj = json.load(fh)
    key = (obj["apiVersion"], obj["kind"])
    if key not in schemas:
        print(f"{f}: no CRD for {key}")
        failed += 1
        continue
    errors = list(jsonschema.Draft7Validator(schemas[key]).iter_errors(obj))
    for e in errors:
        print(f"{f}: {'/'.join(str(p) for p in e.absolute_path)}: {e.message[:300]}")
    failed += bool(errors)
print(f"checked {len(sys.argv) - 2} objects, {failed} invalid")
sys.exit(1 if failed else 0)
"#;

fn validate_custom(files: &[PathBuf]) -> (bool, String) {
    let python = tool("python");
    let out = Command::new(&python)
        .args(["-c", CRD_VALIDATOR])
        .arg(crd_dir())
        .args(files)
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn custom_resources_match_their_crds() {
    let dir = tempfile::tempdir().unwrap();
    let (_, custom) = write_objects(dir.path());
    let kinds: std::collections::BTreeSet<String> = custom
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .split('-')
                .nth(2)
                .unwrap()
                .to_string()
        })
        .collect();
    for k in [
        "Cluster",
        "ObjectStore",
        "ScheduledBackup",
        "Tenant",
        "Gateway",
        "HTTPRoute",
        "Certificate",
        "ClusterIssuer",
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
        "Database",
        "SecurityPolicy",
        "Middleware",
    ] {
        assert!(kinds.contains(k), "no {k} rendered: {kinds:?}");
    }
    let (ok, text) = validate_custom(&custom);
    assert!(ok, "custom resources do not match their CRDs:\n{text}");
}

#[test]
fn crd_validation_refuses_unknown_fields() {
    // The validator must catch a misspelt field, or the test above proves nothing.
    let dir = tempfile::tempdir().unwrap();
    let (r, _) = render(&config(Tier::T100, &[]));
    let mut cluster = find(&r, "Cluster", "main-pg").unwrap().clone();
    cluster["spec"]["bootstrap"]["initdb"]["localeCtype"] = serde_json::json!("C");
    let p = dir.path().join("bad-cluster.json");
    std::fs::write(&p, cluster.to_string()).unwrap();
    let (ok, text) = validate_custom(&[p]);
    assert!(!ok, "a misspelt field passed:\n{text}");
    assert!(text.contains("localeCtype"), "{text}");
}

/// `mxstack restore --kubernetes`: the recovered Clusters (main's, and LI's with feature li) and
/// their ScheduledBackups pass the CRDs, the switch-over Services pass strict Kubernetes
/// validation, for every config (LI included), to a time and to the end of the archive.
#[test]
fn the_postgres_recovery_passes_the_crds_and_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, mut custom) = (Vec::new(), Vec::new());
    for (i, c) in configs().iter().enumerate() {
        let secrets = mxstack_spec::Secrets::generate_all().unwrap();
        let t = mxstack_topology::Topology::build(c);
        for (j, target) in [Some("2026-05-01T12:00:00Z"), None].iter().enumerate() {
            let objects = mxstack_k8s::postgres_recovery(&t, &secrets, "main-pg-restore", *target);
            let cluster = &objects[0];
            let recovery = &cluster["spec"]["bootstrap"]["recovery"];
            assert_eq!(recovery["source"], "origin");
            assert_eq!(
                recovery["recoveryTarget"]["targetTime"].as_str(),
                *target,
                "{recovery}"
            );
            assert_eq!(
                cluster["spec"]["externalClusters"][0]["plugin"]["parameters"]["serverName"],
                "main-pg"
            );
            assert_eq!(
                cluster["spec"]["plugins"][0]["parameters"]["serverName"],
                "main-pg-restore"
            );
            // With feature li, the LI cluster's recovery (to the end of its archive) too.
            let li = mxstack_k8s::li_postgres_recovery(&t, &secrets, "li-pg-restore");
            assert_eq!(li.is_empty(), !c.features.contains(&Feature::Li));
            for (k, o) in objects.iter().chain(&li).enumerate() {
                let p = dir.path().join(format!("{i}-{j}-{k}.json"));
                std::fs::write(&p, serde_json::to_string_pretty(o).unwrap()).unwrap();
                if o["apiVersion"] == "v1" {
                    core.push(p);
                } else {
                    custom.push(p);
                }
            }
        }
    }
    let (ok, text) = validate_custom(&custom);
    assert!(ok, "{text}");
    let out = Command::new(tool("kubernetes-validate"))
        .args(["-k", KUBERNETES_VERSION, "--strict", "--quiet"])
        .args(&core)
        .output()
        .expect("run kubernetes-validate");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
