//! Least privilege: every pod of the render can read only the generated secrets its component
//! declares (`registry::Component::reads`), and reads each of them. A secret is "readable" by a
//! pod when a Secret it mounts or takes into its environment (the keys it names, or all of
//! them) holds the secret's value, whole or inside a derived file (an S3 identities file, a
//! LiveKit key list). Secrets made by operators or cert-manager are not in the render and not
//! ours.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use mxstack_spec::{Config, Feature, SecretName, Secrets, Tier};
use mxstack_topology::registry::{self, Component, Selector};
use mxstack_topology::Topology;
use serde_json::Value;

/// (Secret name, key) -> decoded value, for every Secret of the render.
fn secret_data(objects: &[Value]) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for o in objects.iter().filter(|o| o["kind"] == "Secret") {
        let name = o["metadata"]["name"].as_str().unwrap().to_string();
        for (field, b64) in [("data", true), ("stringData", false)] {
            for (k, v) in o[field].as_object().into_iter().flatten() {
                let v = v.as_str().unwrap();
                let value = if b64 {
                    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v).unwrap())
                        .unwrap()
                } else {
                    v.to_string()
                };
                out.insert((name.clone(), k.clone()), value);
            }
        }
    }
    out
}

/// The pod template and its labels of a workload.
fn pod(o: &Value) -> Option<&Value> {
    match o["kind"].as_str()? {
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => Some(&o["spec"]["template"]),
        "CronJob" => Some(&o["spec"]["jobTemplate"]["spec"]["template"]),
        _ => None,
    }
}

/// (Secret, Some(key) | None for every key) the pod can read.
fn references(template: &Value) -> Vec<(String, Option<String>)> {
    let spec = &template["spec"];
    let mut refs = Vec::new();
    let mut from_secret = |s: &Value, name_field: &str| {
        let name = s[name_field].as_str().unwrap().to_string();
        match s["items"].as_array() {
            Some(items) => refs.extend(
                items
                    .iter()
                    .map(|i| (name.clone(), Some(i["key"].as_str().unwrap().to_string()))),
            ),
            None => refs.push((name, None)),
        }
    };
    for v in spec["volumes"].as_array().into_iter().flatten() {
        if v["secret"].is_object() {
            from_secret(&v["secret"], "secretName");
        }
        for src in v["projected"]["sources"].as_array().into_iter().flatten() {
            if src["secret"].is_object() {
                from_secret(&src["secret"], "name");
            }
        }
    }
    let containers = spec["containers"]
        .as_array()
        .into_iter()
        .chain(spec["initContainers"].as_array())
        .flatten();
    for c in containers {
        for e in c["env"].as_array().into_iter().flatten() {
            let r = &e["valueFrom"]["secretKeyRef"];
            if r.is_object() {
                refs.push((
                    r["name"].as_str().unwrap().into(),
                    Some(r["key"].as_str().unwrap().into()),
                ));
            }
        }
        for e in c["envFrom"].as_array().into_iter().flatten() {
            if let Some(n) = e["secretRef"]["name"].as_str() {
                refs.push((n.into(), None));
            }
        }
    }
    refs
}

/// The registry component whose pods these are (the most specific selector wins: Synapse's main
/// over Synapse).
fn component_of(labels: &Value) -> Option<&'static Component> {
    let name = labels["app.kubernetes.io/name"].as_str()?;
    let group = labels["mxstack.io/group"].as_str();
    let specific = registry::ALL.iter().copied().find(|c| {
        matches!(c.selector, Selector::SynapseGroup(g) if name == registry::synapse::COMPONENT.name() && group == Some(g))
    });
    specific.or_else(|| {
        registry::ALL
            .iter()
            .copied()
            .find(|c| c.selector == Selector::Name && c.name() == name)
    })
}

#[test]
fn every_pod_reads_exactly_the_secrets_its_component_declares() {
    let config = Config::new("acme.test", Tier::T1k, Feature::ALL.into_iter().collect());
    let secrets = Secrets::generate_all().unwrap();
    let objects: Vec<Value> = mxstack_k8s::render(&Topology::build(&config), &secrets)
        .objects
        .into_iter()
        .map(|o| o.value)
        .collect();
    let data = secret_data(&objects);
    let mut readable: BTreeMap<&str, BTreeSet<SecretName>> = BTreeMap::new();
    let mut problems = Vec::new();
    for o in &objects {
        let Some(template) = pod(o) else { continue };
        let Some(c) = component_of(&template["metadata"]["labels"]) else {
            continue; // the LI jobs: no component of their own
        };
        let mut reads = BTreeSet::new();
        for (secret, key) in references(template) {
            for ((s, k), value) in &data {
                if *s != secret || key.as_ref().is_some_and(|key| key != k) {
                    continue;
                }
                for name in SecretName::ALL {
                    if value.contains(secrets.get(name)) {
                        reads.insert(name);
                    }
                }
            }
        }
        let declared: BTreeSet<SecretName> = c.reads.iter().copied().collect();
        let extra: Vec<_> = reads.difference(&declared).collect();
        if !extra.is_empty() {
            problems.push(format!(
                "{} {} can read {extra:?}, which {} does not declare",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap(),
                c.name()
            ));
        }
        readable.entry(c.name()).or_default().extend(reads);
    }
    for c in registry::ALL {
        let got = readable.get(c.name()).cloned().unwrap_or_default();
        let unused: Vec<_> = c.reads.iter().filter(|r| !got.contains(r)).collect();
        // Operator-run components (no pod template here) declare nothing to check.
        if !unused.is_empty() {
            problems.push(format!(
                "{} declares {unused:?} but none of its pods reads them",
                c.name()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
