//! Proof 1: every rendered Synapse process configuration, with its mounted files materialised at
//! their mount paths, loads in real Synapse 1.163.2 (`python -m synapse.config`), for every tier
//! and for feature combinations.

mod common;

use common::*;
use serde_json::Value;

/// Loads each config set with the function `python -m synapse.config` runs, in one interpreter
/// (Synapse takes ~2 s to import; a tier has up to ~70 processes): the loader `mxstack upgrade`
/// proves a new version with. The first set also runs as a separate `python -m synapse.config`
/// process, the literal command.
use mxstack_local::synapse_version::CONFIG_PROOF as LOADER;

fn prove(scale: &str, features: &str, edit: impl FnOnce(&mut String)) -> usize {
    let (dir, out) = init_and_render("acme.test", scale, features, edit);
    let objs = objects(&out);
    let root = dir.path().join("root");
    let mut sets: Vec<(String, Vec<String>)> = Vec::new();
    let mut mounts = Vec::new();
    let synapse: Vec<&Value> = objs
        .iter()
        .map(|(_, o)| o)
        .filter(|o| {
            kind(o) == "StatefulSet"
                && o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
                    == "synapse"
        })
        .collect();
    assert!(!synapse.is_empty(), "no Synapse StatefulSets rendered");
    for sts in &synapse {
        mounts.extend(materialise(sts, &objs, &root));
        let args: Vec<String> = sts["spec"]["template"]["spec"]["containers"][0]["command"]
            .as_array()
            .unwrap()
            .iter()
            .chain(
                sts["spec"]["template"]["spec"]["containers"][0]["args"]
                    .as_array()
                    .into_iter()
                    .flatten(),
            )
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let configs: Vec<String> = args
            .windows(2)
            .filter(|w| w[0] == "--config-path" || w[0] == "-c")
            .map(|w| w[1].clone())
            .collect();
        assert!(
            !configs.is_empty(),
            "{}: no --config-path in {args:?}",
            name(sts)
        );
        // Every pod this StatefulSet (or its autoscaler) can create.
        let hpa_max = objs
            .iter()
            .find(|(_, o)| {
                kind(o) == "HorizontalPodAutoscaler"
                    && o["spec"]["scaleTargetRef"]["name"] == sts["metadata"]["name"]
            })
            .and_then(|(_, h)| h["spec"]["maxReplicas"].as_u64());
        let pods = hpa_max.or(sts["spec"]["replicas"].as_u64()).unwrap_or(1);
        for ordinal in 0..pods {
            let pod = format!("{}-{ordinal}", name(sts));
            let paths: Vec<String> = configs
                .iter()
                .map(|c| c.replace("$(POD_NAME)", &pod))
                .collect();
            for p in &paths {
                assert!(
                    root.join(p.trim_start_matches('/')).exists(),
                    "{pod}: {p} is not provided by any mounted volume"
                );
            }
            sets.push((pod, paths));
        }
    }
    let list = dir.path().join("sets.json");
    std::fs::write(&list, serde_json::to_string(&sets).unwrap()).unwrap();
    let loader = dir.path().join("loader.py");
    std::fs::write(&loader, LOADER).unwrap();
    let py = python();
    let first: Vec<String> = sets[0]
        .1
        .iter()
        .flat_map(|p| ["-c".to_string(), p.clone()])
        .collect();
    let script = format!(
        "'{py}' -m synapse.config {} && '{py}' '{}' < '{}'",
        first.join(" "),
        loader.display(),
        list.display(),
        py = py.display()
    );
    // The Synapse image carries python/mxstack_synapse (images/synapse/Containerfile); here the
    // source tree stands in for it, so the module's own parse_config runs too.
    let modules = workspace().join("python");
    let res = run_in_mounts(
        &root,
        &mounts,
        &script,
        &[("PYTHONPATH", modules.to_str().unwrap())],
    );
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{scale}/{features}: {stdout}\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(
        stdout.contains("Config parses OK!"),
        "python -m synapse.config did not confirm: {stdout}"
    );
    // (process, error) of every set that does not load.
    let failures: Value =
        serde_json::from_str(stdout.lines().last().unwrap()).expect("loader report");
    assert_eq!(
        failures,
        serde_json::json!([]),
        "{scale}/{features}: Synapse rejected configs"
    );
    sets.len()
}

#[test]
fn every_tier_with_every_feature_loads_in_synapse() {
    let all = "federation,li,antivirus,calls,push,monitoring";
    let mut total = 0;
    for scale in ["100", "1k", "5k", "10k", "20k"] {
        total += prove(scale, all, |_| {});
    }
    assert!(
        total > 150,
        "expected every process of every tier, got {total}"
    );
}

#[test]
fn feature_combinations_load_in_synapse() {
    prove("100", "", |_| {});
    prove("1k", "li,antivirus,calls,monitoring", |_| {});
    prove("5k", "federation,push", |t| {
        *t = t.replace(
            "  backend: seaweedfs\n",
            "  backend: s3\n  endpoint: https://s3.eu-central-1.amazonaws.com\n",
        );
        assert!(t.contains("backend: s3"));
    });
}

/// Synapse LI (the LI browsing stack's homeserver, `topology::li_browsing`) loads in real
/// Synapse with its mounted files, even when main federates: it has no federation listener.
#[test]
fn synapse_li_config_loads_in_synapse() {
    let (dir, out) = init_and_render(
        "acme.test",
        "1k",
        "federation,li,antivirus,monitoring",
        |_| {},
    );
    let objs = objects(&out);
    let (_, deployment) = objs
        .iter()
        .find(|(_, o)| kind(o) == "Deployment" && name(o) == "synapse-li")
        .expect("Synapse LI is rendered");
    let root = dir.path().join("root");
    let mounts = materialise(deployment, &objs, &root);
    let command: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let config = command
        .windows(2)
        .find(|w| w[0] == "--config-path")
        .map(|w| w[1].clone())
        .expect("--config-path");
    assert!(root.join(config.trim_start_matches('/')).exists());
    let hs: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root.join(config.trim_start_matches('/'))).unwrap(),
    )
    .unwrap();
    assert!(!serde_json::to_string(&hs["listeners"])
        .unwrap()
        .contains("federation"));
    let script = format!("'{}' -m synapse.config -c '{config}'", python().display());
    let res = run_in_mounts(&root, &mounts, &script, &[]);
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success() && stdout.contains("Config parses OK!"),
        "Synapse rejected Synapse LI's config: {stdout}\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
}
