//! `mxstack render --with-operators` (issue 19): a `05-operators` phase written from pinned
//! upstream release manifests, vendored byte for byte under `crates/k8s/vendor/operators/` (each
//! with a SOURCE.md: release, repository, tag, commit, sha256 of every file, license, images, how
//! to update) and embedded in the binary, so an installed `mxstack` needs no checkout.
//!
//! Only the operators a config needs ([`prerequisites::needed`]) are written. Upstream's own
//! namespaces (cnpg-system, minio-operator, ...) are kept: nothing here rewrites a vendored file.
//! Operators whose release manifest is a build artifact that is not in their repository
//! (cert-manager, Envoy Gateway, Traefik, the Barman Cloud plugin) are not vendored: render lists
//! them, with the exact upstream command to install the pinned release, as still to be installed
//! by hand. The phase is off by default, for clusters that manage their operators themselves.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::prerequisites::{
    self, Operator, BARMAN_CLOUD_PLUGIN, CERT_MANAGER, CLOUDNATIVE_PG, ENVOY_GATEWAY, GATEWAY_API,
    MINIO_OPERATOR, PROMETHEUS_OPERATOR, TRAEFIK,
};

/// The phase folder, applied before `10-infrastructure`.
pub const PHASE_DIR: &str = "05-operators";

/// One vendored file: its path in the upstream repository at the release tag, and its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VendoredFile {
    pub path: &'static str,
    pub text: &'static str,
}

/// An operator's vendored release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vendored {
    pub operator: &'static Operator,
    /// `<folder>/<release>` under crates/k8s/vendor/operators/ and under 05-operators/.
    pub root: &'static str,
    pub repository: &'static str,
    pub tag: &'static str,
    pub commit: &'static str,
    /// What the release asset is and how the vendored files make it up.
    pub asset: &'static str,
    pub source_md: &'static str,
    /// Every vendored file, in apply order.
    pub files: &'static [VendoredFile],
    /// Whether upstream's own kustomization (the first file) is the install, so that
    /// 05-operators/kustomization.yaml lists the folder (MinIO operator); otherwise it lists the
    /// files in order.
    pub upstream_kustomization: bool,
}

macro_rules! vendored {
    ($root:literal: $($path:literal),+ $(,)?) => {
        &[$(VendoredFile {
            path: $path,
            text: include_str!(concat!("../vendor/operators/", $root, "/", $path)),
        }),+]
    };
}

const CNPG_FILES: &[VendoredFile] = vendored!("cloudnative-pg/1.30.0": "releases/cnpg-1.30.0.yaml");

const GATEWAY_API_FILES: &[VendoredFile] = vendored!("gateway-api/1.6.1":
    "config/crd/standard/gateway.networking.k8s.io_backendtlspolicies.yaml",
    "config/crd/standard/gateway.networking.k8s.io_gatewayclasses.yaml",
    "config/crd/standard/gateway.networking.k8s.io_gateways.yaml",
    "config/crd/standard/gateway.networking.k8s.io_grpcroutes.yaml",
    "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml",
    "config/crd/standard/gateway.networking.k8s.io_listenersets.yaml",
    "config/crd/standard/gateway.networking.k8s.io_referencegrants.yaml",
    "config/crd/standard/gateway.networking.k8s.io_tcproutes.yaml",
    "config/crd/standard/gateway.networking.k8s.io_tlsroutes.yaml",
    "config/crd/standard/gateway.networking.k8s.io_udproutes.yaml",
    "config/crd/standard/gateway.networking.k8s.io_vap_safeupgrades.yaml",
);

const PROMETHEUS_OPERATOR_FILES: &[VendoredFile] = vendored!("prometheus-operator/0.93.0":
    "example/rbac/prometheus-operator/prometheus-operator-cluster-role-binding.yaml",
    "example/rbac/prometheus-operator/prometheus-operator-cluster-role.yaml",
    "example/rbac/prometheus-operator/prometheus-operator-deployment.yaml",
    "example/rbac/prometheus-operator/prometheus-operator-service-account.yaml",
    "example/rbac/prometheus-operator/prometheus-operator-service.yaml",
    "example/prometheus-operator-crd/monitoring.coreos.com_alertmanagerconfigs.yaml",
    "example/prometheus-operator-crd/monitoring.coreos.com_alertmanagers.yaml",
    "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
    "example/prometheus-operator-crd/monitoring.coreos.com_probes.yaml",
    "example/prometheus-operator-crd/monitoring.coreos.com_prometheusagents.yaml",
    "example/prometheus-operator-crd/monitoring.coreos.com_prometheuses.yaml",
    "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
    "example/prometheus-operator-crd/monitoring.coreos.com_scrapeconfigs.yaml",
    "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
    "example/prometheus-operator-crd/monitoring.coreos.com_thanosrulers.yaml",
);

const MINIO_OPERATOR_FILES: &[VendoredFile] = vendored!("minio-operator/7.1.1":
    "kustomization.yaml",
    "resources/base/namespace.yaml",
    "resources/base/service-account.yaml",
    "resources/base/cluster-role.yaml",
    "resources/base/cluster-role-binding.yaml",
    "resources/base/crds/kustomization.yaml",
    "resources/base/crds/minio.min.io_tenants.yaml",
    "resources/base/crds/sts.min.io_policybindings.yaml",
    "resources/base/service.yaml",
    "resources/base/deployment.yaml",
);

/// Every vendored operator release, in the order of [`prerequisites::KINDS`].
pub const VENDORED: &[Vendored] = &[
    Vendored {
        operator: &CLOUDNATIVE_PG,
        root: "cloudnative-pg/1.30.0",
        repository: "https://github.com/cloudnative-pg/cloudnative-pg",
        tag: "v1.30.0",
        commit: "4b5e244a7d031f67e025c83c1555e7726ecbbfa1",
        asset: "the release manifest, committed upstream as releases/cnpg-1.30.0.yaml",
        source_md: include_str!("../vendor/operators/cloudnative-pg/1.30.0/SOURCE.md"),
        files: CNPG_FILES,
        upstream_kustomization: false,
    },
    Vendored {
        operator: &GATEWAY_API,
        root: "gateway-api/1.6.1",
        repository: "https://github.com/kubernetes-sigs/gateway-api",
        tag: "v1.6.1",
        commit: "8bb74df00e56ec8f944d48c25e6c1c9c2f6848e3",
        asset: "the files standard-install.yaml concatenates (hack/build-install-yaml.sh): config/crd/standard/gateway*.yaml",
        source_md: include_str!("../vendor/operators/gateway-api/1.6.1/SOURCE.md"),
        files: GATEWAY_API_FILES,
        upstream_kustomization: false,
    },
    Vendored {
        operator: &PROMETHEUS_OPERATOR,
        root: "prometheus-operator/0.93.0",
        repository: "https://github.com/prometheus-operator/prometheus-operator",
        tag: "v0.93.0",
        commit: "f8fafd475f3d132e239432ae6172de60a6cb6516",
        asset: "the files bundle.yaml concatenates (scripts/generate-bundle.sh), in its order",
        source_md: include_str!("../vendor/operators/prometheus-operator/0.93.0/SOURCE.md"),
        files: PROMETHEUS_OPERATOR_FILES,
        upstream_kustomization: false,
    },
    Vendored {
        operator: &MINIO_OPERATOR,
        root: "minio-operator/7.1.1",
        repository: "https://github.com/minio/operator",
        tag: "v7.1.1",
        commit: "6eee6a7caa70555ad009e522ce04861297e9e2be",
        asset: "the kustomization upstream installs from (`kubectl kustomize github.com/minio/operator?ref=v7.1.1`) and the files it lists",
        source_md: include_str!("../vendor/operators/minio-operator/7.1.1/SOURCE.md"),
        files: MINIO_OPERATOR_FILES,
        upstream_kustomization: true,
    },
];

/// The vendored release of `op`, if there is one.
pub fn vendored(op: &Operator) -> Option<&'static Vendored> {
    VENDORED.iter().find(|v| v.operator == op)
}

/// The upstream command that installs the pinned release of an operator that is not vendored.
/// `gateway_api`: whether the config uses the Gateway API (cert-manager then needs its Gateway
/// API support, and Envoy Gateway takes the Gateway API CRDs from 05-operators).
pub fn install_by_hand(op: &Operator, gateway_api: bool) -> Option<String> {
    let v = op.release;
    let cmd = if *op == CERT_MANAGER {
        let mut c = format!(
            "helm install cert-manager oci://quay.io/jetstack/charts/cert-manager --version v{v} \
             --namespace cert-manager --create-namespace --set crds.enabled=true"
        );
        if gateway_api {
            c.push_str(
                " --set config.apiVersion=controller.config.cert-manager.io/v1alpha1 \
                 --set config.kind=ControllerConfiguration --set config.enableGatewayAPI=true",
            );
        }
        c
    } else if *op == BARMAN_CLOUD_PLUGIN {
        format!(
            "kubectl apply -f https://github.com/cloudnative-pg/plugin-barman-cloud/releases/download/v{v}/manifest.yaml"
        )
    } else if *op == ENVOY_GATEWAY {
        format!(
            "helm template eg-crds oci://docker.io/envoyproxy/gateway-crds-helm --version v{v} \
             --set crds.gatewayAPI.enabled=false --set crds.envoyGateway.enabled=true \
             | kubectl apply --server-side -f - && \
             helm install eg oci://docker.io/envoyproxy/gateway-helm --version v{v} \
             --namespace envoy-gateway-system --create-namespace --set crds.enabled=false"
        )
    } else if *op == TRAEFIK {
        format!(
            "helm install traefik oci://ghcr.io/traefik/helm/traefik --version {v} \
             --namespace traefik --create-namespace"
        )
    } else {
        return None;
    };
    Some(cmd)
}

/// An operator written into 05-operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Written {
    pub name: &'static str,
    pub version: &'static str,
    /// Its folder, e.g. `05-operators/cloudnative-pg/1.30.0`.
    pub path: String,
    pub source: String,
    pub namespace: Option<&'static str>,
}

/// An operator the config needs that 05-operators does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ByHand {
    pub name: &'static str,
    pub version: &'static str,
    pub namespace: Option<&'static str>,
    pub command: String,
}

/// What [`add_phase`] wrote and what it left to the operator of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorsPhase {
    pub phase: &'static str,
    pub written: Vec<Written>,
    pub install_by_hand: Vec<ByHand>,
}

/// Adds the 05-operators phase to `files` for the operators `objects` need (vendored files
/// unchanged, a kustomization listing them, a README naming what is written and what must be
/// installed by hand) and lists the phase first in the top-level kustomization.
pub fn add_phase(objects: &[Value], files: &mut BTreeMap<String, String>) -> OperatorsPhase {
    let (needed, _) = prerequisites::needed(objects);
    let gateway_api = needed.iter().any(|n| *n.operator == GATEWAY_API);
    let mut written = Vec::new();
    let mut by_hand = Vec::new();
    let mut resources = Vec::new();
    for n in &needed {
        let op = n.operator;
        if let Some(v) = vendored(op) {
            for f in v.files {
                files.insert(
                    format!("{PHASE_DIR}/{}/{}", v.root, f.path),
                    f.text.to_string(),
                );
            }
            files.insert(
                format!("{PHASE_DIR}/{}/SOURCE.md", v.root),
                v.source_md.to_string(),
            );
            if v.upstream_kustomization {
                resources.push(v.root.to_string());
            } else {
                resources.extend(v.files.iter().map(|f| format!("{}/{}", v.root, f.path)));
            }
            written.push(Written {
                name: op.name,
                version: op.release,
                path: format!("{PHASE_DIR}/{}", v.root),
                source: format!("{} {} ({})", v.repository, v.tag, v.commit),
                namespace: op.namespace,
            });
        } else {
            by_hand.push(ByHand {
                name: op.name,
                version: op.release,
                namespace: op.namespace,
                command: install_by_hand(op, gateway_api)
                    .expect("every operator is vendored or has an install command"),
            });
        }
    }
    // The Barman Cloud plugin's manifest has cert-manager objects: it goes after cert-manager.
    by_hand.sort_by_key(|b| b.name == BARMAN_CLOUD_PLUGIN.name);
    files.insert(
        format!("{PHASE_DIR}/kustomization.yaml"),
        crate::kustomization(&resources),
    );
    let phase = OperatorsPhase {
        phase: PHASE_DIR,
        written,
        install_by_hand: by_hand,
    };
    files.insert(format!("{PHASE_DIR}/README.md"), readme(&phase));
    // The phase folders sort in apply order (00-, 05-, 10-, ...).
    let phases: Vec<String> = files
        .keys()
        .filter_map(|k| k.strip_suffix("/kustomization.yaml"))
        .filter(|d| !d.contains('/'))
        .map(str::to_string)
        .collect();
    files.insert("kustomization.yaml".into(), crate::kustomization(&phases));
    phase
}

fn readme(p: &OperatorsPhase) -> String {
    let mut s = format!(
        "# {PHASE_DIR}\n\n\
         Written by `mxstack render --with-operators`: the operators this config needs, from \
         their pinned upstream release manifests, unchanged (each folder's SOURCE.md names the \
         release, its source, the sha256 of every file and the images it pulls). They install \
         into their own namespaces. Apply this phase first, server-side (some CRDs are too large \
         for client-side apply), and wait for the operators before the next phases:\n\n    \
         kubectl apply --server-side -k {PHASE_DIR}\n\n## Written here\n\n"
    );
    if p.written.is_empty() {
        s.push_str("(none)\n");
    }
    for w in &p.written {
        s.push_str(&format!(
            "- {} {}: `{}` from {}\n",
            w.name, w.version, w.path, w.source
        ));
    }
    s.push_str("\n## Not vendored: install these by hand before the next phases\n\n");
    if p.install_by_hand.is_empty() {
        s.push_str("(none)\n");
    }
    for b in &p.install_by_hand {
        s.push_str(&format!(
            "- {} {}:\n\n      {}\n\n",
            b.name, b.version, b.command
        ));
    }
    s
}
