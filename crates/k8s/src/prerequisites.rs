//! What a cluster must already run for the rendered objects to apply (issue 19, "prerequisites
//! as data"): for every custom resource kind render can emit, the operator (or CRD bundle) that
//! serves it, the lowest version with every field mxstack uses, and the version the rendered
//! objects are validated against (schemas/crds/SOURCES.md). `mxstack plan` lists the ones a
//! config needs; `check --cluster` and `deploy` (not yet) will compare them with a live cluster.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

/// An operator or CRD bundle a render can need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Operator {
    pub name: &'static str,
    /// The lowest release with everything mxstack renders for it, and why that one.
    pub minimum: &'static str,
    pub minimum_because: &'static str,
    /// The release whose CRDs the rendered objects are validated against in the tests.
    pub validated: &'static str,
    /// The release mxstack pins: the one `render --with-operators` writes from
    /// crates/k8s/vendor/operators/ (see [`crate::operators`]), or the one it tells to install by
    /// hand where no release manifest is vendored. For Traefik, the Helm chart's version.
    pub release: &'static str,
    /// The namespace it is usually installed in (the NetworkPolicies allow it there).
    pub namespace: Option<&'static str>,
    pub install: &'static str,
}

/// A custom resource kind and who serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Kind {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub operator: &'static Operator,
}

pub const CLOUDNATIVE_PG: Operator = Operator {
    name: "CloudNativePG",
    minimum: "1.26",
    minimum_because: "the Barman Cloud plugin (`spec.plugins`, WAL archiving) needs 1.26; `Database` objects 1.25",
    validated: "1.30",
    release: "1.30.0",
    namespace: Some("cnpg-system"),
    install: "https://cloudnative-pg.io/documentation/current/installation_upgrade/",
};
pub const BARMAN_CLOUD_PLUGIN: Operator = Operator {
    name: "Barman Cloud plugin for CloudNativePG",
    minimum: "0.4",
    minimum_because: "`ObjectStore` (barmancloud.cnpg.io/v1), the first releases documented for CloudNativePG 1.26; installed in CloudNativePG's namespace, with cert-manager for its TLS; releases from 0.16 need CloudNativePG 1.30",
    validated: "0.14",
    release: "0.14.0",
    namespace: Some("cnpg-system"),
    install: "https://cloudnative-pg.io/plugin-barman-cloud/docs/installation/",
};
pub const CERT_MANAGER: Operator = Operator {
    name: "cert-manager",
    minimum: "1.15",
    minimum_because: "ACME HTTP-01 through the Gateway API (`gatewayHTTPRoute` solver, beta from 1.15) needs cert-manager started with Gateway API support (Helm: config.enableGatewayAPI=true); Ingress mode needs only cert-manager.io/v1",
    validated: "1.21",
    release: "1.21.1",
    namespace: Some("cert-manager"),
    install: "https://cert-manager.io/docs/installation/",
};
pub const GATEWAY_API: Operator = Operator {
    name: "Gateway API CRDs (standard channel)",
    minimum: "1.0",
    minimum_because: "`Gateway` and `HTTPRoute` at gateway.networking.k8s.io/v1",
    validated: "main after 1.6 (2026-08)",
    release: "1.6.1",
    namespace: None,
    install: "https://gateway-api.sigs.k8s.io/guides/#installing-gateway-api",
};
pub const ENVOY_GATEWAY: Operator = Operator {
    name: "Envoy Gateway",
    minimum: "1.2",
    minimum_because:
        "`SecurityPolicy` with basic auth and client-CIDR authorization for the LI hosts",
    validated: "1.9",
    release: "1.9.0",
    namespace: Some("envoy-gateway-system"),
    install: "https://gateway.envoyproxy.io/docs/install/",
};
pub const TRAEFIK: Operator = Operator {
    name: "Traefik (Ingress mode)",
    minimum: "3.0",
    minimum_because:
        "`Middleware` at traefik.io/v1alpha1 (basic auth, IP allow-list) for the LI hosts",
    validated: "3.7 (chart 41.3)",
    release: "41.3.0",
    namespace: Some("traefik"),
    install: "https://doc.traefik.io/traefik/getting-started/install-traefik/",
};
pub const PROMETHEUS_OPERATOR: Operator = Operator {
    name: "prometheus-operator",
    minimum: "0.63",
    minimum_because:
        "`ServiceMonitor`, `PodMonitor` and `PrometheusRule` at monitoring.coreos.com/v1",
    validated: "0.93",
    release: "0.93.0",
    namespace: Some("monitoring"),
    install: "https://prometheus-operator.dev/docs/getting-started/installation/",
};
pub const MINIO_OPERATOR: Operator = Operator {
    name: "MinIO operator (media.backend: minio-legacy only)",
    minimum: "5.0",
    minimum_because: "`Tenant` at minio.min.io/v2",
    validated: "7.1.1",
    release: "7.1.1",
    namespace: Some("minio-operator"),
    install: "https://min.io/docs/minio/kubernetes/upstream/operations/installation.html",
};

/// Every custom resource kind render can emit.
pub const KINDS: &[Kind] = &[
    kind("postgresql.cnpg.io/v1", "Cluster", &CLOUDNATIVE_PG),
    kind("postgresql.cnpg.io/v1", "Database", &CLOUDNATIVE_PG),
    kind("postgresql.cnpg.io/v1", "ScheduledBackup", &CLOUDNATIVE_PG),
    kind(
        "barmancloud.cnpg.io/v1",
        "ObjectStore",
        &BARMAN_CLOUD_PLUGIN,
    ),
    kind("cert-manager.io/v1", "Certificate", &CERT_MANAGER),
    kind("cert-manager.io/v1", "ClusterIssuer", &CERT_MANAGER),
    kind("gateway.networking.k8s.io/v1", "Gateway", &GATEWAY_API),
    kind("gateway.networking.k8s.io/v1", "HTTPRoute", &GATEWAY_API),
    kind(
        "gateway.envoyproxy.io/v1alpha1",
        "SecurityPolicy",
        &ENVOY_GATEWAY,
    ),
    kind("traefik.io/v1alpha1", "Middleware", &TRAEFIK),
    kind(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        &PROMETHEUS_OPERATOR,
    ),
    kind(
        "monitoring.coreos.com/v1",
        "PodMonitor",
        &PROMETHEUS_OPERATOR,
    ),
    kind(
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        &PROMETHEUS_OPERATOR,
    ),
    kind("minio.min.io/v2", "Tenant", &MINIO_OPERATOR),
];

const fn kind(api_version: &'static str, kind: &'static str, operator: &'static Operator) -> Kind {
    Kind {
        api_version,
        kind,
        operator,
    }
}

/// API groups Kubernetes itself serves (everything else needs an operator or CRDs).
pub const BUILT_IN: [&str; 7] = [
    "v1",
    "apps/v1",
    "batch/v1",
    "policy/v1",
    "autoscaling/v2",
    "networking.k8s.io/v1",
    "rbac.authorization.k8s.io/v1",
];

/// One operator a render needs, with the kinds that need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Needed {
    pub operator: &'static Operator,
    pub kinds: BTreeSet<&'static str>,
}

/// The operators `objects` need, in the order of [`KINDS`]; the kinds nobody serves, if any (a
/// renderer that emits a new custom kind without a row here).
pub fn needed(objects: &[Value]) -> (Vec<Needed>, BTreeSet<String>) {
    let mut out: Vec<Needed> = Vec::new();
    let mut unknown = BTreeSet::new();
    for o in objects {
        let (api, k) = (
            o["apiVersion"].as_str().unwrap_or_default(),
            o["kind"].as_str().unwrap_or_default(),
        );
        if BUILT_IN.contains(&api) {
            continue;
        }
        let Some(row) = KINDS.iter().find(|r| r.api_version == api && r.kind == k) else {
            unknown.insert(format!("{api} {k}"));
            continue;
        };
        match out.iter_mut().find(|n| n.operator == row.operator) {
            Some(n) => {
                n.kinds.insert(row.kind);
            }
            None => out.push(Needed {
                operator: row.operator,
                kinds: [row.kind].into(),
            }),
        }
    }
    let order = |n: &Needed| KINDS.iter().position(|k| k.operator == n.operator);
    out.sort_by_key(order);
    (out, unknown)
}
