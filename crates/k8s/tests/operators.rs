//! Issue 19, `render --with-operators`: the 05-operators phase holds exactly the operators a
//! config needs, from vendored upstream files that match their SOURCE.md records byte for byte,
//! whose CRDs serve every kind prerequisites.rs says the operator serves.
//!
//! Schema validation (tests/schema.rs) covers the rendered objects, which the phase does not
//! change; the vendored files are upstream's bytes, held here to their hashes and kinds instead.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;
use mxstack_k8s::operators::{self, OperatorsPhase, PHASE_DIR, VENDORED};
use mxstack_k8s::prerequisites::{self, KINDS};
use mxstack_spec::{Config, Feature, IngressMode, MediaBackend, Tier};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn vendor_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/vendor/operators"))
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn with_operators(
    c: &Config,
) -> (
    BTreeMap<String, String>,
    BTreeMap<String, String>,
    OperatorsPhase,
) {
    let (r, _) = render(c);
    let objects: Vec<Value> = r.objects.iter().map(|o| o.value.clone()).collect();
    let mut files = r.files.clone();
    let phase = operators::add_phase(&objects, &mut files);
    (r.files, files, phase)
}

fn names<T>(items: &[T], name: impl Fn(&T) -> &'static str) -> Vec<&'static str> {
    items.iter().map(name).collect()
}

fn docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .expect("vendored YAML parses")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

#[test]
fn the_phase_is_written_only_with_the_flag_and_changes_nothing_else() {
    let c = config(
        Tier::T1k,
        &mxstack_spec::default_features()
            .into_iter()
            .collect::<Vec<_>>(),
    );
    let (plain, with, _) = with_operators(&c);
    assert!(
        plain.keys().all(|k| !k.starts_with("05-")),
        "render alone writes no operators"
    );
    // Every file of the plain render is unchanged, except the top-level kustomization.
    for (k, v) in &plain {
        if k != "kustomization.yaml" {
            assert_eq!(with.get(k), Some(v), "{k} changed");
        }
    }
    let top: Value = serde_saphyr::from_str(&with["kustomization.yaml"]).unwrap();
    let phases: Vec<&str> = top["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let plain_top: Value = serde_saphyr::from_str(&plain["kustomization.yaml"]).unwrap();
    let mut expected: Vec<&str> = plain_top["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(expected[0], "00-namespace");
    expected.insert(1, PHASE_DIR);
    assert_eq!(
        phases, expected,
        "05-operators comes before 10-infrastructure"
    );
    // The phase's kustomization names only files (or upstream kustomizations) that are there.
    let k: Value =
        serde_saphyr::from_str(&with[&format!("{PHASE_DIR}/kustomization.yaml")]).unwrap();
    for r in k["resources"].as_array().unwrap() {
        let r = r.as_str().unwrap();
        let p = format!("{PHASE_DIR}/{r}");
        assert!(
            with.contains_key(&p) || with.contains_key(&format!("{p}/kustomization.yaml")),
            "{p} listed but not written"
        );
    }
    // Adding the phase again changes nothing.
    let objects: Vec<Value> = render(&c).0.objects.into_iter().map(|o| o.value).collect();
    let mut again = with.clone();
    operators::add_phase(&objects, &mut again);
    assert_eq!(again, with);
}

#[test]
fn the_phase_holds_exactly_the_operators_the_config_needs() {
    // The default config: Gateway API edge, monitoring.
    let c = config(
        Tier::T1k,
        &mxstack_spec::default_features()
            .into_iter()
            .collect::<Vec<_>>(),
    );
    let (_, files, p) = with_operators(&c);
    assert_eq!(
        names(&p.written, |w| w.name),
        [
            "CloudNativePG",
            "Gateway API CRDs (standard channel)",
            "prometheus-operator"
        ]
    );
    assert_eq!(
        names(&p.install_by_hand, |b| b.name),
        [
            "cert-manager",
            "Envoy Gateway",
            "Barman Cloud plugin for CloudNativePG"
        ],
        "the plugin needs cert-manager, so it comes last"
    );
    let cm = &p.install_by_hand[0].command;
    assert!(
        cm.contains("--version v1.21.1") && cm.contains("config.enableGatewayAPI=true"),
        "{cm}"
    );
    // Exactly the vendored files of those operators, byte for byte, their SOURCE.md, the
    // kustomization and the README.
    let mut expected = BTreeSet::from([
        format!("{PHASE_DIR}/kustomization.yaml"),
        format!("{PHASE_DIR}/README.md"),
    ]);
    for w in &p.written {
        let v = VENDORED.iter().find(|v| v.operator.name == w.name).unwrap();
        assert_eq!(w.path, format!("{PHASE_DIR}/{}", v.root));
        expected.insert(format!("{PHASE_DIR}/{}/SOURCE.md", v.root));
        for f in v.files {
            let key = format!("{PHASE_DIR}/{}/{}", v.root, f.path);
            assert_eq!(files[&key], f.text, "{key} is not upstream's bytes");
            expected.insert(key);
        }
    }
    let got: BTreeSet<String> = files
        .keys()
        .filter(|k| k.starts_with(PHASE_DIR))
        .cloned()
        .collect();
    assert_eq!(got, expected);
    let readme = &files[&format!("{PHASE_DIR}/README.md")];
    for b in &p.install_by_hand {
        assert!(readme.contains(&b.command), "README lacks {}", b.name);
    }

    // Ingress mode with LI: Traefik (by hand), no Gateway API, no Envoy Gateway; cert-manager
    // without Gateway API support; no monitoring, no prometheus-operator.
    let mut c = config(Tier::T100, &[Feature::Li]);
    c.ingress.mode = IngressMode::Ingress;
    let (_, files, p) = with_operators(&c);
    assert_eq!(names(&p.written, |w| w.name), ["CloudNativePG"]);
    assert_eq!(
        names(&p.install_by_hand, |b| b.name),
        [
            "cert-manager",
            "Traefik (Ingress mode)",
            "Barman Cloud plugin for CloudNativePG"
        ]
    );
    assert!(!p.install_by_hand[0].command.contains("GatewayAPI"));
    assert!(p.install_by_hand[1].command.contains("--version 41.3.0"));
    assert!(!files
        .keys()
        .any(|k| k.contains("gateway-api") || k.contains("prometheus")));

    // MinIO (legacy media backend): its operator, from upstream's own kustomization.
    let mut c = config(Tier::T100, &[]);
    c.media.backend = MediaBackend::MinioLegacy;
    let (_, files, p) = with_operators(&c);
    assert_eq!(
        names(&p.written, |w| w.name),
        [
            "CloudNativePG",
            "Gateway API CRDs (standard channel)",
            "MinIO operator (media.backend: minio-legacy only)"
        ]
    );
    let k = &files[&format!("{PHASE_DIR}/kustomization.yaml")];
    assert!(k.contains("- minio-operator/7.1.1\n"), "{k}");
    assert!(files.contains_key(&format!(
        "{PHASE_DIR}/minio-operator/7.1.1/kustomization.yaml"
    )));
    // Never for the other backends.
    for c in &matrix() {
        let (_, _, p) = with_operators(c);
        let minio = p.written.iter().any(|w| w.name.starts_with("MinIO"));
        assert_eq!(minio, c.media.backend == MediaBackend::MinioLegacy);
        // Every operator the config needs is written or listed to install by hand, once.
        let (needed, _) = prerequisites::needed(
            &render(c)
                .0
                .objects
                .into_iter()
                .map(|o| o.value)
                .collect::<Vec<_>>(),
        );
        let mut all: Vec<&str> = names(&p.written, |w| w.name);
        all.extend(names(&p.install_by_hand, |b| b.name));
        all.sort();
        let mut want: Vec<&str> = needed.iter().map(|n| n.operator.name).collect();
        want.sort();
        assert_eq!(all, want);
    }
}

#[test]
fn vendored_files_match_their_source_records() {
    for v in VENDORED {
        let dir = v.root.split('/').next().unwrap();
        assert_eq!(
            v.root,
            format!("{dir}/{}", v.operator.release),
            "the vendored folder is the release prerequisites.rs pins"
        );
        assert_eq!(v.tag, format!("v{}", v.operator.release));
        let source = v.source_md;
        assert_eq!(
            std::fs::read_to_string(vendor_dir().join(v.root).join("SOURCE.md")).unwrap(),
            source
        );
        for needle in [
            format!("| Release | {} |", v.operator.release),
            format!("| Tag | `{}` |", v.tag),
            format!("| Commit | `{}`", v.commit),
            format!("| Repository | {} |", v.repository),
        ] {
            assert!(
                source.contains(&needle),
                "{}/SOURCE.md lacks {needle}",
                v.root
            );
        }
        let rows: Vec<&str> = source.lines().filter(|l| l.starts_with("| `")).collect();
        assert_eq!(
            rows.len(),
            v.files.len(),
            "{}: one SOURCE.md row per file",
            v.root
        );
        for f in v.files {
            let row = rows
                .iter()
                .find(|r| r.starts_with(&format!("| `{}` |", f.path)))
                .unwrap_or_else(|| panic!("{}/SOURCE.md has no row for {}", v.root, f.path));
            let hash = sha256(f.text);
            assert!(
                row.contains(&format!("| {} | `{hash}` |", f.text.len())),
                "{}/{}: sha256 {hash} ({} bytes) is not the recorded one: {row}",
                v.root,
                f.path,
                f.text.len()
            );
        }
        // Nothing else lies in the folder.
        let mut on_disk = BTreeSet::new();
        let mut stack = vec![vendor_dir().join(v.root)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(vendor_dir().join(v.root)).unwrap();
                    on_disk.insert(rel.to_string_lossy().into_owned());
                }
            }
        }
        let mut expected: BTreeSet<String> = v.files.iter().map(|f| f.path.to_string()).collect();
        expected.insert("SOURCE.md".into());
        assert_eq!(on_disk, expected, "{}", v.root);
    }
}

#[test]
fn vendored_crds_serve_every_kind_render_emits_for_their_operator() {
    for v in VENDORED {
        let crds: Vec<Value> = v
            .files
            .iter()
            .filter(|f| !f.path.ends_with("kustomization.yaml"))
            .flat_map(|f| docs(f.text))
            .filter(|d| d["kind"] == "CustomResourceDefinition")
            .collect();
        assert!(!crds.is_empty(), "{}: no CRDs", v.root);
        let rows: Vec<_> = KINDS.iter().filter(|k| k.operator == v.operator).collect();
        assert!(!rows.is_empty(), "{}: serves no kind render emits", v.root);
        for k in rows {
            let (group, version) = k.api_version.split_once('/').unwrap();
            let served = crds.iter().any(|c| {
                c["spec"]["group"] == group
                    && c["spec"]["names"]["kind"] == k.kind
                    && c["spec"]["versions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|ver| ver["name"] == version && ver["served"] == true)
            });
            assert!(
                served,
                "{} does not serve {} {}",
                v.root, k.api_version, k.kind
            );
        }
    }
}

#[test]
fn vendored_manifests_keep_upstreams_namespaces() {
    // Every namespaced object is in the operator's own namespace (prometheus-operator's bundle:
    // `default`, as upstream ships it; MinIO: set by upstream's kustomization).
    for v in VENDORED {
        let mut namespaces = BTreeSet::new();
        for f in v
            .files
            .iter()
            .filter(|f| !f.path.ends_with("kustomization.yaml"))
        {
            for d in docs(f.text) {
                assert!(
                    d["apiVersion"].is_string() && d["kind"].is_string(),
                    "{}",
                    f.path
                );
                if let Some(ns) = d["metadata"]["namespace"].as_str() {
                    namespaces.insert(ns.to_string());
                }
            }
        }
        if v.upstream_kustomization {
            // Upstream's kustomization sets the namespace of everything it installs.
            let k: Value = serde_saphyr::from_str(v.files[0].text).unwrap();
            assert_eq!(v.files[0].path, "kustomization.yaml");
            assert_eq!(k["namespace"].as_str(), v.operator.namespace, "{}", v.root);
            continue;
        }
        let want: BTreeSet<String> = match v.operator.name {
            "prometheus-operator" => ["default".to_string()].into(),
            _ => v
                .operator
                .namespace
                .into_iter()
                .map(str::to_string)
                .collect(),
        };
        assert_eq!(namespaces, want, "{}", v.root);
    }
}

#[test]
fn pinned_releases_meet_the_minimums() {
    let parse = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap()).collect() };
    let mut seen = BTreeSet::new();
    for k in KINDS {
        let o = k.operator;
        if !seen.insert(o.name) {
            continue;
        }
        let traefik_chart = o.name.starts_with("Traefik");
        if !traefik_chart {
            assert!(
                parse(o.release) >= parse(o.minimum),
                "{} {} < {}",
                o.name,
                o.release,
                o.minimum
            );
        }
        let vendored = operators::vendored(o).is_some();
        let by_hand = operators::install_by_hand(o, true);
        assert!(
            vendored != by_hand.is_some(),
            "{}: vendored or installed by hand, not both",
            o.name
        );
        if let Some(cmd) = by_hand {
            assert!(cmd.contains(o.release), "{cmd}");
        }
    }
}

#[test]
fn the_operators_table_has_every_install_command() {
    let table = std::fs::read_to_string(vendor_dir().join("README.md"))
        .unwrap()
        .replace("\\|", "|");
    let deploy =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/DEPLOY.md"))
            .unwrap();
    let mut seen = BTreeSet::new();
    for k in KINDS {
        let o = k.operator;
        if !seen.insert(o.name) {
            continue;
        }
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| {} |", o.name)))
            .unwrap_or_else(|| panic!("no row for {}", o.name));
        assert!(row.contains(o.release), "{row}");
        assert!(
            deploy.contains(o.release),
            "docs/DEPLOY.md lacks {} {}",
            o.name,
            o.release
        );
        for gateway_api in [true, false] {
            if let Some(cmd) = operators::install_by_hand(o, gateway_api) {
                assert!(row.contains(&cmd), "{}: the table lacks `{cmd}`", o.name);
                assert!(deploy.contains(&cmd), "docs/DEPLOY.md lacks `{cmd}`");
            }
        }
    }
}
