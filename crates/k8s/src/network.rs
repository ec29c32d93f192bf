//! NetworkPolicies: deny everything, allow DNS, then allow exactly the flows the topology lists
//! (`mxstack_topology::flows`), one policy per party in the namespace with its ingress and egress.
//! Ports clients reach directly (call media) come from the registry's `direct` declarations. A few
//! flows the topology does not model yet (the Kubernetes API for CloudNativePG instances) are
//! added here, each with its reason.

use mxstack_topology::registry as reg;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use mxstack_spec::{Feature, IngressMode};
use mxstack_topology::flows::{flows, Party, Protocol};

use crate::meta::*;
use crate::{Ctx, Out, Phase};

const FILE: &str = "network-policies.yaml";
/// Namespace of the Gateway API implementation (Envoy Gateway's default install namespace).
pub const EDGE_NAMESPACE_GATEWAY: &str = "envoy-gateway-system";
/// Namespace of the Ingress controller in ingress mode. ingress-nginx is retired (see FACTS), so the
/// default is Traefik's usual namespace; change this constant for another controller.
pub const EDGE_NAMESPACE_INGRESS: &str = "traefik";
pub const MONITORING_NAMESPACE: &str = "monitoring";
pub const CNPG_NAMESPACE: &str = "cnpg-system";
pub const MINIO_OPERATOR_NAMESPACE: &str = "minio-operator";
/// The internet: everything except private address space (federation, push gateways, external S3).
pub const PRIVATE_RANGES: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

/// Pod labels of a party in the namespace; the same labels its workloads put on their pods
/// (the registry's selector, or `app.kubernetes.io/name` for the jobs, which have no ports).
pub fn party_selector(p: Party) -> Option<Labels> {
    if !p.in_namespace() {
        return None;
    }
    Some(match reg::component(p) {
        Some(c) => selector_of(c),
        None => map(&[(LABEL_NAME, p.as_str())]),
    })
}

fn namespace_peer(ns: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(map(&[("kubernetes.io/metadata.name", ns)])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn internet_peer() -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: "0.0.0.0/0".into(),
            except: Some(PRIVATE_RANGES.iter().map(|s| s.to_string()).collect()),
        }),
        ..Default::default()
    }
}

fn anywhere_peer() -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: "0.0.0.0/0".into(),
            except: None,
        }),
        ..Default::default()
    }
}

/// The peer a party stands for in a rule.
fn peer(ctx: &Ctx, p: Party) -> NetworkPolicyPeer {
    if let Some(labels) = party_selector(p) {
        return NetworkPolicyPeer {
            pod_selector: Some(label_selector(&labels)),
            ..Default::default()
        };
    }
    match p {
        Party::Edge => namespace_peer(edge_namespace(ctx)),
        Party::Monitoring => namespace_peer(MONITORING_NAMESPACE),
        Party::CnpgOperator => namespace_peer(CNPG_NAMESPACE),
        // Not a pod: only its address can be named, and that is not known when rendering.
        Party::KubernetesApi => anywhere_peer(),
        Party::Internet => internet_peer(),
        Party::Dns => dns_peer(),
        _ => unreachable!("in-namespace parties have selectors"),
    }
}

pub fn edge_namespace(ctx: &Ctx) -> &'static str {
    match ctx.cfg.ingress.mode {
        IngressMode::Gateway => EDGE_NAMESPACE_GATEWAY,
        IngressMode::Ingress => EDGE_NAMESPACE_INGRESS,
    }
}

fn dns_peer() -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(map(&[("kubernetes.io/metadata.name", "kube-system")])),
            ..Default::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(map(&[("k8s-app", "kube-dns")])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

/// Rules for one party, before they become a policy.
#[derive(Default)]
struct Rules {
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Vec<NetworkPolicyEgressRule>,
}

fn policy(ctx: &Ctx, name: &str, selector: Labels, rules: Rules) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(ctx, name, "network-policy"),
        spec: Some(NetworkPolicySpec {
            // An empty selector (`{}`) selects every pod in the namespace.
            pod_selector: Some(if selector.is_empty() {
                LabelSelector::default()
            } else {
                label_selector(&selector)
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(rules.ingress),
            egress: Some(rules.egress),
        }),
    }
}

/// Flows the topology does not list yet, as (party, rules).
fn extra_rules(ctx: &Ctx, rules: &mut BTreeMap<Party, Rules>) {
    // CloudNativePG's instance manager in every Postgres pod watches its Cluster through the
    // Kubernetes API. The API server is not a pod, so it can only be named by address.
    let mut clusters = vec![Party::Postgres];
    if ctx.has(Feature::Li) {
        clusters.push(Party::LiPostgres);
    }
    for cluster in clusters {
        rules
            .entry(cluster)
            .or_default()
            .egress
            .push(NetworkPolicyEgressRule {
                to: Some(vec![anywhere_peer()]),
                ports: Some(vec![port("TCP", 443), port("TCP", 6443)]),
            });
    }
    if ctx.cfg.media.backend == mxstack_spec::MediaBackend::MinioLegacy {
        // The MinIO operator manages tenant pods; their sidecar talks to the Kubernetes API.
        let minio = rules.entry(Party::Minio).or_default();
        minio.ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![namespace_peer(MINIO_OPERATOR_NAMESPACE)]),
            ports: Some(vec![port("TCP", reg::minio::S3.number)]),
        });
        minio.egress.push(NetworkPolicyEgressRule {
            to: Some(vec![anywhere_peer()]),
            ports: Some(vec![port("TCP", 443), port("TCP", 6443)]),
        });
    }
    // Call media comes straight from clients anywhere (not through the edge), each component
    // sending back out to the internet as its declaration says.
    for c in reg::ALL {
        let Some(direct) = c.direct.filter(|_| c.feature.is_none_or(|f| ctx.has(f))) else {
            continue;
        };
        let rules = rules.entry(c.id).or_default();
        rules.ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![anywhere_peer()]),
            ports: Some(
                (direct.from_anywhere)(ctx.cfg)
                    .into_iter()
                    .map(policy_port_of)
                    .collect(),
            ),
        });
        rules.egress.push(NetworkPolicyEgressRule {
            to: Some(vec![internet_peer()]),
            ports: direct
                .to_internet
                .map(|spans| spans.iter().copied().map(policy_port_of).collect()),
        });
    }
}

pub fn render(ctx: &Ctx, out: &mut Out) {
    let ns = Namespace {
        metadata: {
            let mut m = cluster_meta(ctx.ns(), "namespace");
            // Warn about (not block) pods that fall short of the restricted profile: the LI and
            // antivirus stacks may bring images this crate does not control.
            m.labels.get_or_insert_with(Default::default).extend(map(&[
                ("pod-security.kubernetes.io/enforce", "baseline"),
                ("pod-security.kubernetes.io/warn", "restricted"),
                ("pod-security.kubernetes.io/audit", "restricted"),
            ]));
            m
        },
        ..Default::default()
    };
    out.add(Phase::Namespace, "namespace.yaml", ns);

    out.add(
        Phase::Namespace,
        FILE,
        policy(ctx, "default-deny", Labels::new(), Rules::default()),
    );
    out.add(
        Phase::Namespace,
        FILE,
        policy(
            ctx,
            "allow-dns",
            Labels::new(),
            Rules {
                ingress: vec![],
                egress: vec![NetworkPolicyEgressRule {
                    to: Some(vec![dns_peer()]),
                    ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
                }],
            },
        ),
    );
    let mut rules: BTreeMap<Party, Rules> = BTreeMap::new();
    for f in flows(ctx.t) {
        let ports: Vec<NetworkPolicyPort> = f
            .ports
            .iter()
            .map(|p| port(protocol(f.protocol), *p))
            .collect();
        if f.to.in_namespace() {
            rules
                .entry(f.to)
                .or_default()
                .ingress
                .push(NetworkPolicyIngressRule {
                    from: Some(vec![peer(ctx, f.from)]),
                    ports: Some(ports.clone()),
                });
        }
        if f.from.in_namespace() {
            rules
                .entry(f.from)
                .or_default()
                .egress
                .push(NetworkPolicyEgressRule {
                    to: Some(vec![peer(ctx, f.to)]),
                    ports: Some(ports),
                });
        }
    }
    extra_rules(ctx, &mut rules);
    for (party, r) in rules {
        let selector = party_selector(party).expect("only in-namespace parties get policies");
        out.add(
            Phase::Namespace,
            FILE,
            policy(ctx, &format!("allow-{}", party.as_str()), selector, r),
        );
    }
}
