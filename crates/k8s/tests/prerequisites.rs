//! Issue 19, prerequisites as data: every custom resource kind any render emits (every tier,
//! feature set, media backend and edge mode) has a row naming the operator that serves it, and a
//! config needs exactly the operators of the kinds it renders.

mod common;

use common::*;
use mxstack_k8s::prerequisites::{self, Needed};
use mxstack_spec::{Feature, IngressMode, MediaBackend, Tier};

fn names(needed: &[Needed]) -> Vec<&'static str> {
    needed.iter().map(|n| n.operator.name).collect()
}

#[test]
fn every_custom_kind_of_every_render_has_its_operator() {
    // Every tier x feature set x edge mode x media backend.
    for c in &matrix() {
        let (r, _) = render(c);
        let objects: Vec<_> = r.objects.iter().map(|o| o.value.clone()).collect();
        let (_, unknown) = prerequisites::needed(&objects);
        assert!(unknown.is_empty(), "no operator row for {unknown:?}");
    }
}

#[test]
fn a_config_needs_the_operators_of_what_it_renders() {
    let objects = |c: &mxstack_spec::Config| -> Vec<serde_json::Value> {
        render(c).0.objects.into_iter().map(|o| o.value).collect()
    };
    let (n, _) = prerequisites::needed(&objects(&config(Tier::T100, &all_features())));
    assert_eq!(
        names(&n),
        [
            "CloudNativePG",
            "Barman Cloud plugin for CloudNativePG",
            "cert-manager",
            "Gateway API CRDs (standard channel)",
            "Envoy Gateway",
            "prometheus-operator",
        ]
    );
    // Without monitoring, no prometheus-operator; Ingress mode: Traefik, not Envoy Gateway.
    let mut c = config(Tier::T100, &[Feature::Li]);
    c.ingress.mode = IngressMode::Ingress;
    let (n, _) = prerequisites::needed(&objects(&c));
    let got = names(&n);
    assert!(got.contains(&"Traefik (Ingress mode)"), "{got:?}");
    assert!(!got
        .iter()
        .any(|o| o.starts_with("Envoy") || o.starts_with("prometheus")));
    let mut c = config(Tier::T100, &[]);
    c.media.backend = MediaBackend::MinioLegacy;
    let (n, _) = prerequisites::needed(&objects(&c));
    assert!(names(&n).contains(&"MinIO operator (media.backend: minio-legacy only)"));
}
