//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeSet;

use mxstack_spec::{Config, Feature, IngressMode, MediaBackend, Secrets, Tier};
use mxstack_topology::Topology;
use serde_json::Value;

pub fn config(tier: Tier, features: &[Feature]) -> Config {
    Config::new("acme.test", tier, features.iter().copied().collect())
}

pub fn all_features() -> Vec<Feature> {
    Feature::ALL.to_vec()
}

pub fn render(config: &Config) -> (mxstack_k8s::Rendered, Secrets) {
    let secrets = Secrets::generate_all().expect("randomness");
    (
        mxstack_k8s::render(&Topology::build(config), &secrets),
        secrets,
    )
}

/// Feature sets every matrix test covers.
pub fn feature_sets() -> Vec<BTreeSet<Feature>> {
    vec![
        Feature::ALL.into_iter().collect(),
        BTreeSet::new(),
        mxstack_spec::default_features(),
        [Feature::Federation, Feature::Push].into_iter().collect(),
    ]
}

/// Every tier x feature set x ingress mode x media backend.
pub fn matrix() -> Vec<Config> {
    let mut out = Vec::new();
    for tier in Tier::ALL {
        for features in feature_sets() {
            for mode in [IngressMode::Gateway, IngressMode::Ingress] {
                for backend in [
                    MediaBackend::Seaweedfs,
                    MediaBackend::MinioLegacy,
                    MediaBackend::S3,
                ] {
                    let mut c = Config::new("acme.test", tier, features.clone());
                    c.ingress.mode = mode;
                    c.media.backend = backend;
                    if backend == MediaBackend::S3 {
                        c.media.endpoint = Some("https://s3.eu-west-1.amazonaws.com".into());
                    }
                    out.push(c);
                }
            }
        }
    }
    out
}

pub fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}

pub fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

pub fn objects<'a>(
    r: &'a mxstack_k8s::Rendered,
    k: &'a str,
) -> impl Iterator<Item = &'a Value> + 'a {
    r.objects
        .iter()
        .map(|o| &o.value)
        .filter(move |v| kind(v) == k)
}

pub fn find<'a>(r: &'a mxstack_k8s::Rendered, k: &str, n: &str) -> Option<&'a Value> {
    r.objects
        .iter()
        .map(|o| &o.value)
        .find(|v| kind(v) == k && name(v) == n)
}

/// Pod templates of every workload, CronJobs included: (kind, name, template).
pub fn pod_templates(r: &mxstack_k8s::Rendered) -> Vec<(String, String, &Value)> {
    r.objects
        .iter()
        .map(|o| &o.value)
        .filter_map(|v| {
            let template = match kind(v) {
                "Deployment" | "StatefulSet" | "Job" | "DaemonSet" => &v["spec"]["template"],
                "CronJob" => &v["spec"]["jobTemplate"]["spec"]["template"],
                _ => return None,
            };
            Some((kind(v).to_string(), name(v).to_string(), template))
        })
        .collect()
}

/// Whether `labels` contains every pair of `selector`.
pub fn matches(selector: &Value, labels: &Value) -> bool {
    let Some(sel) = selector.as_object() else {
        return false;
    };
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}
