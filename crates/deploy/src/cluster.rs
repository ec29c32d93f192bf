//! `mxstack check --cluster`: does the live cluster have what the render needs? Kubernetes
//! version, the custom kinds and the operators serving them, the StorageClass, nodes for every
//! node selector the pods use, and a CNI that enforces NetworkPolicies.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::ListParams;
use mxstack_checks::Finding;
use mxstack_k8s::prerequisites::{self, Operator};
use serde::Serialize;
use serde_json::Value;

use crate::{Cluster, Error, Item};

/// The oldest Kubernetes minor mxstack supports: the oldest CloudNativePG 1.26 supports.
pub const MIN_KUBERNETES: (u64, u64) = (1, 30);

/// How to recognise an operator's controller: the end of its image's repository.
const CONTROLLER_IMAGES: &[(&Operator, &str)] = &[
    (
        &prerequisites::CLOUDNATIVE_PG,
        "cloudnative-pg/cloudnative-pg",
    ),
    (
        &prerequisites::BARMAN_CLOUD_PLUGIN,
        "cloudnative-pg/plugin-barman-cloud",
    ),
    (
        &prerequisites::CERT_MANAGER,
        "jetstack/cert-manager-controller",
    ),
    (&prerequisites::ENVOY_GATEWAY, "envoyproxy/gateway"),
    (&prerequisites::TRAEFIK, "traefik"),
    (
        &prerequisites::PROMETHEUS_OPERATOR,
        "prometheus-operator/prometheus-operator",
    ),
    (&prerequisites::MINIO_OPERATOR, "minio/operator"),
];

/// DaemonSets of CNIs that enforce NetworkPolicies, and of those that do not.
const ENFORCING_CNI: &[&str] = &[
    "calico-node",
    "cilium",
    "antrea-agent",
    "kube-router",
    "weave-net",
    "canal",
    "kube-ovn-cni",
    "ovnkube-node",
    "anetd",
    "azure-npm",
];
const NON_ENFORCING_CNI: &[&str] = &["kube-flannel-ds", "flannel"];

/// What the check saw, besides its findings.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub server: String,
    pub kubernetes: String,
    pub operators: Vec<Seen>,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub operator: &'static str,
    pub minimum: &'static str,
    /// The version found, when it could be read.
    pub version: Option<String>,
    pub missing_kinds: Vec<String>,
}

/// Checks `cluster` against the rendered `items`, with `storage_class` from the config.
pub async fn check(
    cluster: &Cluster,
    items: &[Item],
    storage_class: Option<&str>,
) -> Result<Report, Error> {
    let kubernetes = cluster.version().await?;
    let mut findings = Vec::new();
    if let Some(f) = kubernetes_version(&kubernetes) {
        findings.push(f);
    }
    let values: Vec<Value> = items.iter().map(|i| i.value.clone()).collect();
    let (needed, _) = prerequisites::needed(&values);
    let deployments = list(cluster, "apps/v1", "Deployment").await?;
    let mut operators = Vec::new();
    for n in &needed {
        let seen = operator(cluster, n.operator, items, &deployments).await?;
        findings.extend(operator_findings(&seen, n.operator));
        operators.push(seen);
    }
    if needed.iter().any(|n| n.kinds.contains("Gateway")) {
        findings.extend(cert_manager_gateway_api(cluster, &deployments).await?);
    }
    findings.extend(storage(cluster, storage_class).await?);
    let nodes = list(cluster, "v1", "Node").await?;
    findings.extend(node_roles(items, &nodes));
    let daemonsets = list(cluster, "apps/v1", "DaemonSet").await?;
    findings.extend(cni(&daemonsets));
    findings.extend(turn_into_cluster(cluster, items, &nodes).await?);
    Ok(Report {
        server: cluster.server.clone(),
        kubernetes,
        operators,
        findings,
    })
}

async fn list(cluster: &Cluster, api_version: &str, kind: &str) -> Result<Vec<Value>, Error> {
    let served = cluster.require(api_version, kind).await?;
    let l = cluster
        .api(&served, None)
        .list(&ListParams::default())
        .await
        .map_err(|e| cluster.error(&served, kind, "list", e))?;
    Ok(l.items
        .into_iter()
        .map(|o| serde_json::to_value(o).expect("objects serialize"))
        .collect())
}

/// "v1.33.1" (or "1.33+") as (major, minor).
fn parse_version(v: &str) -> Option<Vec<u64>> {
    let v = v.trim_start_matches('v');
    let core = v.split(['-', '+', '@']).next()?;
    let parts: Option<Vec<u64>> = core.split('.').map(|p| p.parse().ok()).collect();
    parts.filter(|p| !p.is_empty())
}

/// `found` >= `minimum`, comparing as many numeric parts as `minimum` has.
fn at_least(found: &str, minimum: &str) -> Option<bool> {
    let (f, m) = (parse_version(found)?, parse_version(minimum)?);
    let f: Vec<u64> = (0..m.len())
        .map(|i| f.get(i).copied().unwrap_or(0))
        .collect();
    Some(f >= m)
}

fn kubernetes_version(v: &str) -> Option<Finding> {
    let min = format!("{}.{}", MIN_KUBERNETES.0, MIN_KUBERNETES.1);
    (at_least(v, &min) == Some(false)).then(|| {
        Finding::new(
            "MX-CLU-001",
            format!("the cluster runs Kubernetes {v}; mxstack needs {min} or later"),
        )
    })
}

async fn operator(
    cluster: &Cluster,
    op: &'static Operator,
    items: &[Item],
    deployments: &[Value],
) -> Result<Seen, Error> {
    let mut missing = BTreeSet::new();
    for i in items {
        let row = prerequisites::KINDS
            .iter()
            .find(|k| k.api_version == i.api_version && k.kind == i.kind);
        if row.is_some_and(|r| r.operator == op)
            && cluster.served(&i.api_version, &i.kind).await?.is_none()
        {
            missing.insert(format!("{} ({})", i.kind, i.api_version));
        }
    }
    let version = if op == &prerequisites::GATEWAY_API {
        gateway_api_bundle(cluster).await?
    } else {
        controller_version(op, deployments)
    };
    Ok(Seen {
        operator: op.name,
        minimum: op.minimum,
        version,
        missing_kinds: missing.into_iter().collect(),
    })
}

fn operator_findings(seen: &Seen, op: &Operator) -> Vec<Finding> {
    let install = format!(
        "install {} {} or later ({}), or render with --with-operators",
        op.name, op.minimum, op.install
    );
    if !seen.missing_kinds.is_empty() {
        let m = format!(
            "the cluster does not serve {}: {} is not installed",
            seen.missing_kinds.join(", "),
            op.name
        );
        return vec![Finding::new("MX-CLU-002", m).fix(install)];
    }
    match &seen.version {
        Some(v) if at_least(v, op.minimum) == Some(false) => vec![Finding::new(
            "MX-CLU-003",
            format!("{} {v} is older than {}: {}", op.name, op.minimum, op.minimum_because),
        )
        .fix(format!("upgrade {} to {} or later (docs/DEPLOY.md: upgrading operators)", op.name, op.minimum))],
        Some(_) => Vec::new(),
        None => vec![Finding::new(
            "MX-CLU-004",
            format!("{}'s kinds are served, but its version could not be read (no controller Deployment with a tagged image was found)", op.name),
        )],
    }
}

/// Every (Deployment, container image) whose image repository is the operator's controller
/// image (any registry in front of it; a tag, a digest or both after it).
fn controller_images<'a>(
    op: &Operator,
    deployments: &'a [Value],
) -> impl Iterator<Item = (&'a Value, &'a str)> {
    let repo = CONTROLLER_IMAGES
        .iter()
        .find(|(o, _)| *o == op)
        .map(|(_, r)| *r);
    deployments
        .iter()
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |c| c["image"].as_str().map(|i| (d, i)))
        })
        .filter(move |(_, image)| {
            let name = image.split('@').next().unwrap_or_default();
            let name = match name.rsplit_once(':') {
                Some((n, tag)) if !tag.contains('/') => n,
                _ => name,
            };
            repo.is_some_and(|r| name == r || name.ends_with(&format!("/{r}")))
        })
}

/// The tag of the operator's controller image; None when only digests name it.
fn controller_version(op: &Operator, deployments: &[Value]) -> Option<String> {
    controller_images(op, deployments).find_map(|(_, image)| {
        let image = image.split('@').next().unwrap_or_default();
        let (_, tag) = image.rsplit_once(':').filter(|(_, t)| !t.contains('/'))?;
        Some(tag.to_string())
    })
}

/// The Gateway API bundle version its CRDs carry.
async fn gateway_api_bundle(cluster: &Cluster) -> Result<Option<String>, Error> {
    let served = cluster
        .require("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        .await?;
    let crd = cluster
        .api(&served, None)
        .get_opt("gateways.gateway.networking.k8s.io")
        .await
        .map_err(|e| {
            cluster.error(
                &served,
                "CustomResourceDefinition/gateways.gateway.networking.k8s.io",
                "get",
                e,
            )
        })?;
    Ok(crd.and_then(|c| {
        c.metadata
            .annotations
            .and_then(|a| a.get("gateway.networking.k8s.io/bundle-version").cloned())
    }))
}

/// cert-manager must run with Gateway API support for the gatewayHTTPRoute solver: the flag
/// `--enable-gateway-api`, or (Helm `config.enableGatewayAPI=true`) `enableGatewayAPI: true` in
/// the ControllerConfiguration its `--config` file comes from.
async fn cert_manager_gateway_api(
    cluster: &Cluster,
    deployments: &[Value],
) -> Result<Option<Finding>, Error> {
    let Some((controller, _)) = controller_images(&prerequisites::CERT_MANAGER, deployments).next()
    else {
        return Ok(None);
    };
    let text = controller["spec"]["template"]["spec"]["containers"].to_string();
    if text.contains("--enable-gateway-api") {
        return Ok(None);
    }
    if text.contains("--config=") {
        let ns = controller["metadata"]["namespace"]
            .as_str()
            .unwrap_or("cert-manager");
        let served = cluster.require("v1", "ConfigMap").await?;
        let maps = cluster
            .api(&served, Some(ns))
            .list(&ListParams::default())
            .await
            .map_err(|e| cluster.error(&served, "ConfigMap", "list", e))?;
        let on = maps.items.iter().any(|m| {
            serde_json::to_string(&m.data)
                .unwrap_or_default()
                .replace(' ', "")
                .contains("enableGatewayAPI:true")
        });
        if on {
            return Ok(None);
        }
    }
    Ok(Some(Finding::new(
        "MX-CLU-008",
        "cert-manager runs without Gateway API support (no `--enable-gateway-api`, no `enableGatewayAPI: true` in its config): the gatewayHTTPRoute ACME solver will not issue the certificates",
    )))
}

async fn storage(cluster: &Cluster, wanted: Option<&str>) -> Result<Vec<Finding>, Error> {
    let classes = list(cluster, "storage.k8s.io/v1", "StorageClass").await?;
    let name = |c: &Value| {
        c["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let names: Vec<String> = classes.iter().map(name).collect();
    let finding = match wanted {
        Some(w) if !names.iter().any(|n| n == w) => {
            Some(format!(
            "the StorageClass `{w}` named by storage_class does not exist (the cluster has: {})",
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        ))
        }
        Some(_) => None,
        None => {
            let default = classes.iter().any(|c| {
                c["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
                    == "true"
            });
            (!default).then(|| "storage_class is not set and the cluster has no default StorageClass: every volume would stay Pending".to_string())
        }
    };
    Ok(finding
        .map(|m| Finding::new("MX-CLU-005", m))
        .into_iter()
        .collect())
}

/// A pod's nodeSelector as (label, value) pairs.
type Selector = Vec<(String, String)>;
/// The tolerations that go with a selector, and the objects using it.
type Users = (Vec<Value>, BTreeSet<String>);

/// Every node selector a rendered pod uses (with its tolerations) and the objects using it.
fn selectors(items: &[Item]) -> BTreeMap<Selector, Users> {
    let mut out: BTreeMap<Selector, Users> = BTreeMap::new();
    for i in items {
        let mut found = Vec::new();
        collect_selectors(&i.value, &mut found);
        for (sel, tolerations) in found {
            let e = out.entry(sel).or_default();
            e.0 = tolerations;
            e.1.insert(i.id());
        }
    }
    out
}

fn collect_selectors(v: &Value, out: &mut Vec<(Selector, Vec<Value>)>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(sel)) = m.get("nodeSelector") {
                let sel: Selector = sel
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let tol = m
                    .get("tolerations")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                out.push((sel, tol));
            }
            m.values().for_each(|c| collect_selectors(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| collect_selectors(c, out)),
        _ => {}
    }
}

fn tolerated(taint: &Value, tolerations: &[Value]) -> bool {
    tolerations.iter().any(|t| {
        let key_ok = t["key"].is_null() || t["key"] == taint["key"];
        let value_ok = t["operator"] == "Exists"
            || t["value"].as_str().unwrap_or_default()
                == taint["value"].as_str().unwrap_or_default();
        let effect_ok = t["effect"].is_null() || t["effect"] == taint["effect"];
        key_ok && value_ok && effect_ok
    })
}

/// Nodes for every node selector: some must match, their taints must be tolerated, and a
/// dedicated role's nodes should carry the taint that keeps everything else off them.
fn node_roles(items: &[Item], nodes: &[Value]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (sel, (tolerations, users)) in selectors(items) {
        let label = sel
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let users = users.into_iter().collect::<Vec<_>>().join(", ");
        let matching: Vec<&Value> = nodes
            .iter()
            .filter(|n| {
                sel.iter()
                    .all(|(k, v)| n["metadata"]["labels"][k].as_str() == Some(v))
            })
            .collect();
        if matching.is_empty() {
            findings.push(Finding::new("MX-CLU-006", format!("no node carries the label {label}, so {users} cannot be scheduled"))
                .fix(format!("label the nodes of that role: kubectl label node NODE {label}; and taint them: kubectl taint node NODE {label}:NoSchedule")));
            continue;
        }
        let name = |n: &Value| {
            n["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        for n in &matching {
            let taints = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
            let blocking: Vec<&Value> = taints
                .iter()
                .filter(|t| t["effect"] == "NoSchedule" || t["effect"] == "NoExecute")
                .filter(|t| !tolerated(t, &tolerations))
                .collect();
            if !blocking.is_empty() {
                findings.push(Finding::new(
                    "MX-CLU-006",
                    format!(
                        "node {} carries {label} but also taints that {users} do not tolerate: {}",
                        name(n),
                        blocking
                            .iter()
                            .map(|t| format!(
                                "{}={}:{}",
                                t["key"].as_str().unwrap_or(""),
                                t["value"].as_str().unwrap_or(""),
                                t["effect"].as_str().unwrap_or("")
                            ))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            let dedicated = taints.iter().any(|t| tolerated(t, &tolerations));
            if !tolerations.is_empty() && !dedicated {
                findings.push(Finding::new("MX-CLU-007", format!(
                    "node {} carries {label} but not its NoSchedule taint: other workloads can be scheduled onto it", name(n)))
                    .fix(format!("kubectl taint node {} {label}:NoSchedule", name(n))));
            }
        }
    }
    findings
}

/// A CNI that enforces NetworkPolicies, judged by the DaemonSets it runs.
fn cni(daemonsets: &[Value]) -> Option<Finding> {
    let names: Vec<&str> = daemonsets
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    let has = |list: &[&str]| {
        names
            .iter()
            .find(|n| list.iter().any(|c| n.starts_with(c)))
            .copied()
    };
    if has(ENFORCING_CNI).is_some() {
        return None;
    }
    let m = match has(NON_ENFORCING_CNI) {
        Some(n) => format!("the cluster's CNI ({n}) does not enforce NetworkPolicies: the rendered default-deny policies (LI isolation included) would be silently ignored"),
        None => "no NetworkPolicy-enforcing CNI (Calico, Cilium, Antrea, kube-router, ...) was found among the DaemonSets: without one the rendered default-deny policies (LI isolation included) are silently ignored".to_string(),
    };
    Some(Finding::new("MX-CLU-009", m))
}

/// The `denied-peer-ip` ranges of the rendered coturn (its container arguments), as address pairs.
fn denied_ranges(items: &[Item]) -> Vec<(std::net::IpAddr, std::net::IpAddr)> {
    let mut out = Vec::new();
    for i in items.iter().filter(|i| i.kind == "Deployment") {
        let containers = i.value["spec"]["template"]["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for a in containers
            .iter()
            .flat_map(|c| c["args"].as_array().cloned().unwrap_or_default())
        {
            let Some(r) = a.as_str().and_then(|a| a.strip_prefix("--denied-peer-ip=")) else {
                continue;
            };
            let (first, last) = r.split_once('-').unwrap_or((r, r));
            if let (Ok(f), Ok(l)) = (first.parse(), last.parse()) {
                out.push((f, l));
            }
        }
    }
    out
}

/// Pod CIDRs (from the nodes) and service CIDRs (ServiceCIDR objects, Kubernetes 1.33+) that the
/// rendered coturn would relay to.
async fn turn_into_cluster(
    cluster: &Cluster,
    items: &[Item],
    nodes: &[Value],
) -> Result<Vec<Finding>, Error> {
    let denied = denied_ranges(items);
    if denied.is_empty() {
        return Ok(Vec::new()); // no coturn in this render
    }
    let mut cidrs: BTreeSet<String> = BTreeSet::new();
    for n in nodes {
        cidrs.extend(
            n["spec"]["podCIDRs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_string)),
        );
        cidrs.extend(n["spec"]["podCIDR"].as_str().map(str::to_string));
    }
    if cluster
        .served("networking.k8s.io/v1", "ServiceCIDR")
        .await?
        .is_some()
    {
        for s in list(cluster, "networking.k8s.io/v1", "ServiceCIDR").await? {
            cidrs.extend(
                s["spec"]["cidrs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().map(str::to_string)),
            );
        }
    }
    let covered = |net: &ipnet::IpNet| {
        let (a, b) = (net.network(), net.broadcast());
        denied
            .iter()
            .any(|(f, l)| *f <= a && b <= *l && f.is_ipv4() == a.is_ipv4())
    };
    Ok(cidrs
        .iter()
        .filter_map(|c| c.parse::<ipnet::IpNet>().ok().filter(|n| !covered(n)).map(|_| c))
        .map(|c| Finding::new("MX-CLU-010", format!("the cluster uses {c}, which coturn's denied-peer-ip ranges do not cover: a TURN client could relay into it")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically_to_the_minimums_precision() {
        assert_eq!(at_least("v1.9.2", "1.26"), Some(false));
        assert_eq!(at_least("1.26.0", "1.26"), Some(true));
        assert_eq!(at_least("v1.30.4-gke.1", "1.30"), Some(true));
        assert_eq!(at_least("v0.63.0", "0.63"), Some(true));
        assert_eq!(at_least("main", "1.0"), None);
    }

    #[test]
    fn a_controller_is_recognised_by_its_image_and_a_digest_hides_nothing_else() {
        let d = |image: &str| serde_json::json!({"spec": {"template": {"spec": {"containers": [{"image": image}]}}}});
        let op = &prerequisites::CLOUDNATIVE_PG;
        assert_eq!(
            controller_version(op, &[d("ghcr.io/cloudnative-pg/cloudnative-pg:1.26.1")]),
            Some("1.26.1".into())
        );
        assert_eq!(
            controller_version(
                op,
                &[d(
                    "registry.local:5000/cloudnative-pg/cloudnative-pg:1.27.0@sha256:ab"
                )]
            ),
            Some("1.27.0".into())
        );
        assert_eq!(
            controller_version(op, &[d("ghcr.io/cloudnative-pg/cloudnative-pg@sha256:ab")]),
            None
        );
        assert_eq!(
            controller_version(op, &[d("ghcr.io/other/cloudnative-pg-fork:1.26.1")]),
            None
        );
    }
}
