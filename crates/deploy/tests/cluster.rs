//! `mxstack check --cluster` with the real kube-rs client against MockApiServer (the one mock
//! mxstack allows): a cluster ready for the render passes; each missing or wrong prerequisite
//! is one finding with its rule.

mod common;

use common::*;
use mxstack_deploy::cluster::{check, Report};
use mxstack_deploy::{Error, Item};
use mxstack_kube_mock::{mxstack_crds, MockApiServer};
use mxstack_spec::{Feature, Tier};
use serde_json::{json, Value};

fn deployment(ns: &str, name: &str, image: &str, args: &[&str]) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
           "spec": {"template": {"spec": {"containers": [{"name": "c", "image": image, "args": args}]}}},
           "status": {}})
}

fn node(name: &str, labels: Value, taints: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}, "status": {}})
}

/// A cluster with everything the default render needs.
fn ready_cluster(version: &str) -> MockApiServer {
    let s = MockApiServer::start(version, &mxstack_crds());
    for d in [
        deployment(
            "cnpg-system",
            "cnpg-controller-manager",
            "ghcr.io/cloudnative-pg/cloudnative-pg:1.27.0",
            &[],
        ),
        deployment(
            "cnpg-system",
            "barman-cloud",
            "ghcr.io/cloudnative-pg/plugin-barman-cloud:v0.6.0",
            &[],
        ),
        deployment(
            "cert-manager",
            "cert-manager",
            "quay.io/jetstack/cert-manager-controller:v1.18.2",
            &["--v=2", "--enable-gateway-api"],
        ),
        deployment(
            "envoy-gateway-system",
            "envoy-gateway",
            "docker.io/envoyproxy/gateway:v1.5.0",
            &[],
        ),
        deployment(
            "monitoring",
            "prometheus-operator",
            "quay.io/prometheus-operator/prometheus-operator:v0.85.0",
            &[],
        ),
    ] {
        s.seed(d);
    }
    s.seed(json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gateways.gateway.networking.k8s.io", "annotations": {"gateway.networking.k8s.io/bundle-version": "v1.3.0"}},
        "status": {}}));
    s.seed(json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "fast", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}}));
    s.seed(json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "calico-node", "namespace": "kube-system"}, "status": {}}));
    s.seed(node("worker-1", json!({}), json!([])));
    s.seed(node(
        "li-1",
        json!({"mxstack.io/role": "li"}),
        json!([{"key": "mxstack.io/role", "value": "li", "effect": "NoSchedule"}]),
    ));
    s
}

fn default_items() -> Vec<Item> {
    items(
        &config(
            Tier::T1k,
            &[
                Feature::Li,
                Feature::Antivirus,
                Feature::Calls,
                Feature::Monitoring,
            ],
        ),
        &secrets(),
    )
}

fn run(
    server: &MockApiServer,
    items: &[Item],
    storage_class: Option<&str>,
) -> Result<Report, Error> {
    let rt = runtime();
    let (_d, cluster) = connect(&rt, server);
    rt.block_on(check(&cluster, items, storage_class))
}

fn rules(r: &Report) -> Vec<&str> {
    r.findings.iter().map(|f| f.rule).collect()
}

#[test]
fn a_cluster_with_every_prerequisite_passes_and_reports_the_versions_it_found() {
    let server = ready_cluster("v1.33.1");
    let r = run(&server, &default_items(), None).expect("check");
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert_eq!(r.kubernetes, "v1.33.1");
    let found: Vec<(&str, Option<&str>)> = r
        .operators
        .iter()
        .map(|o| (o.operator, o.version.as_deref()))
        .collect();
    assert!(
        found.contains(&("CloudNativePG", Some("1.27.0"))),
        "{found:?}"
    );
    assert!(
        found.contains(&("Gateway API CRDs (standard channel)", Some("v1.3.0"))),
        "{found:?}"
    );
}

#[test]
fn a_bare_cluster_gets_one_finding_per_missing_prerequisite() {
    let server = MockApiServer::start("v1.28.4", &[]);
    server.seed(json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "kube-flannel-ds", "namespace": "kube-flannel"}, "status": {}}));
    server.seed(node("worker-1", json!({}), json!([])));
    let r = run(&server, &default_items(), None).expect("check");
    let got = rules(&r);
    // Kubernetes too old; each of the five operators missing; no default StorageClass; no LI
    // node; NetworkPolicies not enforced by flannel.
    assert_eq!(
        got.iter().filter(|r| **r == "MX-CLU-002").count(),
        6,
        "{got:?}"
    );
    for want in ["MX-CLU-001", "MX-CLU-005", "MX-CLU-006", "MX-CLU-009"] {
        assert!(got.contains(&want), "{want} missing: {got:?}");
    }
    let text: Vec<String> = r
        .findings
        .iter()
        .map(|f| format!("{} {}", f.message, f.fix))
        .collect();
    let text = text.join("\n");
    for want in [
        "Kubernetes v1.28.4",
        "CloudNativePG 1.26 or later",
        "Cluster (postgresql.cnpg.io/v1)",
        "mxstack.io/role=li",
        "kube-flannel-ds",
        "silently ignored",
        "kubectl taint node NODE mxstack.io/role=li:NoSchedule",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

#[test]
fn old_or_unreadable_operator_versions_and_half_prepared_nodes_are_named() {
    let server = ready_cluster("v1.31.0");
    server.seed(deployment(
        "cnpg-system",
        "cnpg-controller-manager",
        "ghcr.io/cloudnative-pg/cloudnative-pg:1.25.1",
        &[],
    ));
    server.seed(deployment(
        "monitoring",
        "prometheus-operator",
        "quay.io/prometheus-operator/prometheus-operator@sha256:0123",
        &[],
    ));
    server.seed(deployment(
        "cert-manager",
        "cert-manager",
        "quay.io/jetstack/cert-manager-controller:v1.18.2",
        &["--v=2"],
    ));
    server.seed(node("li-1", json!({"mxstack.io/role": "li"}), json!([])));
    server.seed(node(
        "li-2",
        json!({"mxstack.io/role": "li"}),
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
    ));
    let r = run(&server, &default_items(), Some("ceph-rbd")).expect("check");
    let by_rule = |id: &str| {
        r.findings
            .iter()
            .filter(|f| f.rule == id)
            .map(|f| f.message.clone())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        by_rule("MX-CLU-003").contains("CloudNativePG 1.25.1 is older than 1.26"),
        "{:#?}",
        r.findings
    );
    assert!(
        by_rule("MX-CLU-004").contains("prometheus-operator"),
        "{:#?}",
        r.findings
    );
    assert!(
        by_rule("MX-CLU-008").contains("--enable-gateway-api"),
        "{:#?}",
        r.findings
    );
    assert!(
        by_rule("MX-CLU-005").contains("`ceph-rbd`") && by_rule("MX-CLU-005").contains("fast"),
        "{:#?}",
        r.findings
    );
    assert!(
        by_rule("MX-CLU-007").contains("node li-1"),
        "{:#?}",
        r.findings
    );
    assert!(
        by_rule("MX-CLU-006").contains("node li-2")
            && by_rule("MX-CLU-006").contains("dedicated=gpu:NoSchedule"),
        "{:#?}",
        r.findings
    );
    assert!(!rules(&r).contains(&"MX-CLU-001"), "1.31 is recent enough");
}

#[test]
fn cert_manager_configured_by_helm_values_has_gateway_api_support() {
    let server = ready_cluster("v1.33.1");
    let cm = |on: bool| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cert-manager", "namespace": "cert-manager"},
               "data": {"config.yaml": format!("apiVersion: controller.config.cert-manager.io/v1alpha1\nkind: ControllerConfiguration\nenableGatewayAPI: {on}\n")}})
    };
    server.seed(deployment(
        "cert-manager",
        "cert-manager",
        "quay.io/jetstack/cert-manager-controller:v1.21.1",
        &["--config=/var/cert-manager/config/config.yaml"],
    ));
    server.seed(cm(false));
    let r = run(&server, &default_items(), None).expect("check");
    assert_eq!(rules(&r), ["MX-CLU-008"]);
    server.seed(cm(true));
    let r = run(&server, &default_items(), None).expect("check");
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn a_config_without_li_or_monitoring_needs_neither_their_nodes_nor_their_operator() {
    let server = ready_cluster("v1.33.1");
    let items = items(&config(Tier::T100, &[]), &secrets());
    let r = run(&server, &items, None).expect("check");
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert!(!r
        .operators
        .iter()
        .any(|o| o.operator == "prometheus-operator"));
}

#[test]
fn a_missing_read_permission_is_named() {
    let server = ready_cluster("v1.33.1");
    server.forbid("list", "nodes");
    let e = run(&server, &default_items(), None).expect_err("forbidden");
    let text = e.to_string();
    assert!(matches!(e, Error::Forbidden { .. }), "{text}");
    assert!(
        text.contains("grant the deploying identity `list` on `nodes`"),
        "{text}"
    );
}

#[test]
fn a_pod_or_service_network_outside_coturns_denied_ranges_is_named() {
    let server = ready_cluster("v1.33.1");
    // Pods on RFC 1918 space are covered by the default ranges; a public pod range is not.
    server.seed(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-2", "labels": {}},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "203.1.0.0/24"]}, "status": {}}));
    let r = run(&server, &default_items(), None).expect("check");
    let m: Vec<&str> = r
        .findings
        .iter()
        .filter(|f| f.rule == "MX-CLU-010")
        .map(|f| f.message.as_str())
        .collect();
    assert_eq!(m.len(), 1, "{:#?}", r.findings);
    assert!(m[0].contains("203.1.0.0/24"), "{m:?}");

    // Listed in calls.cluster_cidrs, coturn denies it and the finding goes.
    let mut c = config(
        Tier::T1k,
        &[
            Feature::Li,
            Feature::Antivirus,
            Feature::Calls,
            Feature::Monitoring,
        ],
    );
    c.calls.cluster_cidrs = vec!["203.1.0.0/16".into()];
    let r = run(&server, &items(&c, &secrets()), None).expect("check");
    assert!(
        r.findings.iter().all(|f| f.rule != "MX-CLU-010"),
        "{:#?}",
        r.findings
    );
}
