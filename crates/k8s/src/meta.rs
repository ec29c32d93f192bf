//! Shared building blocks: labels, object metadata, and the pieces every workload is made of.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, Container,
    ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Service, ServiceAccountTokenProjection, ServicePort, ServiceSpec,
    TCPSocketAction, Toleration, Volume, VolumeMount, VolumeProjection, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPort;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mxstack_topology::registry::Component;
use mxstack_topology::sizing::Resources;
use serde_json::Value;

use crate::Ctx;

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Synapse worker group (`main` for the main process).
pub const LABEL_GROUP: &str = "mxstack.io/group";
pub const PART_OF: &str = "mxstack";
/// Hash of the configuration a pod reads: a config change rolls the pods.
pub const CONFIG_HASH: &str = "mxstack.io/config-hash";

pub type Labels = BTreeMap<String, String>;

pub fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).expect("json values serialize to yaml")
}

pub fn map(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The labels every object carries.
pub fn labels(app: &str) -> Labels {
    map(&[
        (LABEL_NAME, app),
        (LABEL_PART_OF, PART_OF),
        (LABEL_MANAGED_BY, PART_OF),
    ])
}

/// Namespaced object metadata.
pub fn meta(ctx: &Ctx, name: &str, app: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ctx.ns().to_string()),
        labels: Some(labels(app)),
        ..Default::default()
    }
}

/// Cluster-scoped object metadata (no namespace).
pub fn cluster_meta(name: &str, app: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(labels(app)),
        ..Default::default()
    }
}

/// Metadata as JSON, for custom resources written as JSON values.
pub fn meta_json(ctx: &Ctx, name: &str, app: &str) -> Value {
    serde_json::to_value(meta(ctx, name, app)).expect("metadata serializes")
}

pub fn config_map(ctx: &Ctx, name: &str, app: &str, data: Labels) -> ConfigMap {
    ConfigMap {
        metadata: meta(ctx, name, app),
        data: Some(data),
        ..Default::default()
    }
}

pub fn secret(ctx: &Ctx, name: &str, app: &str, type_: &str, data: Labels) -> Secret {
    Secret {
        metadata: meta(ctx, name, app),
        type_: Some(type_.to_string()),
        string_data: Some(data),
        ..Default::default()
    }
}

/// FNV-1a over the parts: a short, stable fingerprint (not a security measure).
pub fn config_hash(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0u8)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

pub fn quantity(s: impl Into<String>) -> Quantity {
    Quantity(s.into())
}

pub fn resources(r: &Resources) -> ResourceRequirements {
    // Memory limit = request (no overcommit of memory); no CPU limit (throttling hurts latency).
    ResourceRequirements {
        requests: Some(
            [
                ("cpu".to_string(), quantity(r.cpu())),
                ("memory".to_string(), quantity(r.memory())),
            ]
            .into(),
        ),
        limits: Some([("memory".to_string(), quantity(r.memory()))].into()),
        ..Default::default()
    }
}

pub fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

pub fn env_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A variable from a Secret key that may be absent (then the variable is unset).
pub fn env_secret_optional(name: &str, secret: &str, key: &str) -> EnvVar {
    let mut v = env_secret(name, secret, key);
    if let Some(r) = v
        .value_from
        .as_mut()
        .and_then(|f| f.secret_key_ref.as_mut())
    {
        r.optional = Some(true);
    }
    v
}

pub fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn container_port(name: &str, port: u16, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        protocol: Some(protocol.into()),
        ..Default::default()
    }
}

pub fn service_port(name: &str, port: u16, protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some(protocol.into()),
        ..Default::default()
    }
}

/// A declared port (registry) as a container port: its name, number and protocol.
pub fn container_port_of(p: mxstack_topology::registry::Port) -> ContainerPort {
    container_port(p.name, p.number, protocol_of(p))
}

/// A declared port (registry) as a Service port targeting the container port of that name.
pub fn service_port_of(p: mxstack_topology::registry::Port) -> ServicePort {
    service_port(p.name, p.number, protocol_of(p))
}

fn protocol_of(p: mxstack_topology::registry::Port) -> &'static str {
    protocol_name(p.protocol)
}

/// A protocol as Kubernetes writes it.
pub fn protocol_name(p: mxstack_topology::flows::Protocol) -> &'static str {
    match p {
        mxstack_topology::flows::Protocol::Tcp => "TCP",
        mxstack_topology::flows::Protocol::Udp => "UDP",
    }
}

/// A declared span of ports (registry) as a NetworkPolicy port.
pub fn policy_port_of(s: mxstack_topology::registry::PortSpan) -> NetworkPolicyPort {
    if s.first == s.last {
        port(protocol_name(s.protocol), s.first)
    } else {
        port_range(protocol_name(s.protocol), s.first, s.last)
    }
}

pub fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

pub fn mount_rw(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        read_only: None,
        ..mount(name, path)
    }
}

pub fn mount_file(name: &str, path: &str, key: &str) -> VolumeMount {
    VolumeMount {
        sub_path: Some(key.into()),
        ..mount(name, path)
    }
}

pub fn volume_config_map(name: &str, config_map: &str) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A Secret volume; `items` limits it to some keys (key, file name); empty means every key.
pub fn volume_secret(name: &str, secret: &str, items: &[(&str, &str)]) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            // Group-readable: pods set fsGroup, so the container user reads through the group.
            default_mode: Some(0o440),
            items: (!items.is_empty()).then(|| {
                items
                    .iter()
                    .map(|(k, p)| KeyToPath {
                        key: k.to_string(),
                        path: p.to_string(),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn volume_empty(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

pub fn http_probe(path: &str, port: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Default::default()
    }
}

/// The readiness probe on a component's declared health endpoint (registry), with the
/// workload's timing.
pub fn ready_probe(c: &Component, period: i32, failures: i32) -> Probe {
    let h = c
        .health
        .expect("the component declares its health endpoint");
    http_probe(h.ready, h.port.name, period, failures)
}

/// The liveness probe on a component's declared health endpoint (registry).
pub fn live_probe(c: &Component, period: i32, failures: i32) -> Probe {
    let h = c
        .health
        .expect("the component declares its health endpoint");
    http_probe(h.live, h.port.name, period, failures)
}

pub fn tcp_probe(port: &str, period: i32, failures: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(port.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Default::default()
    }
}

pub fn exec_probe(command: &[&str], period: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(k8s_openapi::api::core::v1::ExecAction {
            command: Some(command.iter().map(|s| s.to_string()).collect()),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Default::default()
    }
}

/// Pod-level hardening: a fixed non-root user, files group-owned by it, the runtime's seccomp profile.
pub fn pod_security(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Container hardening: no privilege escalation, no capabilities.
pub fn container_security(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(read_only_root),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Prefer spreading replicas over hosts (preferred: a small cluster still schedules them).
pub fn spread(selector: &Labels) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(label_selector(selector)),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..Default::default()
                    },
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn label_selector(l: &Labels) -> LabelSelector {
    LabelSelector {
        match_labels: Some(l.clone()),
        ..Default::default()
    }
}

pub fn container(name: &str, image: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        security_context: Some(container_security(true)),
        ..Default::default()
    }
}

/// A pod workload before it becomes a Deployment or a StatefulSet.
pub struct Workload {
    pub name: String,
    pub app: String,
    pub replicas: u32,
    /// Labels that select the pods (also on the pods).
    pub selector: Labels,
    pub pod: PodSpec,
    pub config_hash: Option<String>,
}

impl Workload {
    pub fn new(name: &str, app: &str, replicas: u32, selector: Labels, pod: PodSpec) -> Self {
        Workload {
            name: name.into(),
            app: app.into(),
            replicas,
            selector,
            pod,
            config_hash: None,
        }
    }

    fn template(&self) -> PodTemplateSpec {
        let mut pod_labels = labels(&self.app);
        pod_labels.extend(self.selector.clone());
        let annotations = self.config_hash.as_ref().map(|h| map(&[(CONFIG_HASH, h)]));
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(pod_labels),
                annotations,
                ..Default::default()
            }),
            spec: Some(self.pod.clone()),
        }
    }

    pub fn deployment(&self, ctx: &Ctx) -> Deployment {
        Deployment {
            metadata: meta(ctx, &self.name, &self.app),
            spec: Some(DeploymentSpec {
                replicas: Some(self.replicas as i32),
                selector: label_selector(&self.selector),
                template: self.template(),
                revision_history_limit: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn stateful_set(
        &self,
        ctx: &Ctx,
        service: &str,
        claims: Vec<PersistentVolumeClaim>,
    ) -> StatefulSet {
        StatefulSet {
            metadata: meta(ctx, &self.name, &self.app),
            spec: Some(StatefulSetSpec {
                replicas: Some(self.replicas as i32),
                selector: label_selector(&self.selector),
                service_name: Some(service.into()),
                // Pods do not depend on each other's start order; start them together.
                pod_management_policy: Some("Parallel".into()),
                template: self.template(),
                volume_claim_templates: (!claims.is_empty()).then_some(claims),
                revision_history_limit: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// One pod per eligible node (`replicas` does not apply).
    pub fn daemon_set(&self, ctx: &Ctx) -> DaemonSet {
        DaemonSet {
            metadata: meta(ctx, &self.name, &self.app),
            spec: Some(DaemonSetSpec {
                selector: label_selector(&self.selector),
                template: self.template(),
                revision_history_limit: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// At most one pod down at a time during voluntary disruptions (drains, upgrades).
    pub fn pdb(&self, ctx: &Ctx) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: meta(ctx, &self.name, &self.app),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(label_selector(&self.selector)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

pub fn service(
    ctx: &Ctx,
    name: &str,
    app: &str,
    selector: &Labels,
    ports: Vec<ServicePort>,
    headless: bool,
) -> Service {
    Service {
        metadata: meta(ctx, name, app),
        spec: Some(ServiceSpec {
            selector: Some(selector.clone()),
            ports: Some(ports),
            cluster_ip: headless.then(|| "None".to_string()),
            // Stable per-pod DNS names exist as soon as a pod has an address: clients of headless
            // services (HAProxy, Sentinel, Synapse replication) do their own health checking.
            publish_not_ready_addresses: headless.then_some(true),
            type_: Some("ClusterIP".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn pvc_template(ctx: &Ctx, name: &str, size: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: ctx.cfg.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), quantity(size))].into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Parses a Kubernetes size like `500Gi` or `2Ti` into GiB.
pub fn size_gib(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(t) = s.strip_suffix("Ti") {
        return t.parse::<u64>().ok().map(|v| v * 1024);
    }
    if let Some(g) = s.strip_suffix("Gi") {
        return g.parse().ok();
    }
    None
}

/// Formats GiB back as the largest exact unit.
pub fn gib_size(gib: u64) -> String {
    if gib >= 1024 && gib.is_multiple_of(1024) {
        format!("{}Ti", gib / 1024)
    } else {
        format!("{gib}Gi")
    }
}

/// Label of a CloudNativePG cluster's instance pods.
pub const CNPG_CLUSTER_LABEL: &str = "cnpg.io/cluster";
/// Label of a MinIO Tenant's pods.
pub const MINIO_TENANT_LABEL: &str = "v1.min.io/tenant";
/// Label on the Services the ServiceMonitors select.
pub const METRICS_LABEL: &str = "mxstack.io/metrics";

/// The labels that select a registry component's pods.
pub fn selector_of(c: &mxstack_topology::registry::Component) -> Labels {
    use mxstack_topology::registry::Selector;
    match c.selector {
        Selector::Name => map(&[(LABEL_NAME, c.name())]),
        Selector::CnpgCluster(cluster) => map(&[(CNPG_CLUSTER_LABEL, cluster)]),
        Selector::MinioTenant(tenant) => map(&[(MINIO_TENANT_LABEL, tenant)]),
        Selector::SynapseGroup(group) => map(&[
            (
                LABEL_NAME,
                mxstack_topology::registry::synapse::COMPONENT.name(),
            ),
            (LABEL_GROUP, group),
        ]),
    }
}

/// Label `svc` so that the ServiceMonitor of `job` (a registry component's name) selects it.
pub fn label_for_scraping(svc: &mut k8s_openapi::api::core::v1::Service, job: &str) {
    svc.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(METRICS_LABEL.into(), job.into());
}

pub fn port(protocol: &str, port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(i32::from(port))),
        end_port: None,
    }
}

pub fn port_range(protocol: &str, from: u16, to: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(i32::from(from))),
        end_port: Some(i32::from(to)),
    }
}

// ---------------------------------------------------------------------------------------------
// Placement and API access, for the LI workloads and the pods that must follow them there (the
// log collector)

/// A projected volume with a pod's API token, mounted only into the containers that call the API.
pub const API_ACCESS_VOLUME: &str = "kube-api-access";
/// Where client-go's in-cluster config reads the token and the cluster's CA.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The CA bundle of the API server, which Kubernetes publishes in every namespace.
const KUBE_ROOT_CA: &str = "kube-root-ca.crt";
/// Lifetime of a projected API token; the kubelet renews it well before it expires.
const API_TOKEN_SECONDS: i64 = 600;

/// `li.node_label` as (key, value). The config check MX-CFG-013 refuses a malformed label before
/// anything is rendered; a label without `=` is taken as a key with an empty value.
pub fn li_node_label(ctx: &Ctx) -> (String, String) {
    let label = &ctx.cfg.li.node_label;
    let (key, value) = label.split_once('=').unwrap_or((label, ""));
    (key.to_string(), value.to_string())
}

/// Tolerates the LI nodes' taint (`key=value:NoSchedule`), which keeps everything else off them.
pub fn li_tolerations(ctx: &Ctx) -> Vec<Toleration> {
    let (key, value) = li_node_label(ctx);
    vec![Toleration {
        key: Some(key),
        operator: Some("Equal".into()),
        value: Some(value),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }]
}

/// A pod's API token and the cluster's CA, as the automatic mount would provide them (pods keep
/// `automountServiceAccountToken: false` and mount this where it is needed, visibly).
pub fn api_access_volume() -> Volume {
    Volume {
        name: API_ACCESS_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o440),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(API_TOKEN_SECONDS),
                        audience: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: KUBE_ROOT_CA.into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            ..Default::default()
                        }]),
                        optional: Some(false),
                    }),
                    ..Default::default()
                },
            ]),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_roundtrip() {
        assert_eq!(size_gib("2Ti"), Some(2048));
        assert_eq!(size_gib("500Gi"), Some(500));
        assert_eq!(gib_size(2048), "2Ti");
        assert_eq!(gib_size(250), "250Gi");
        assert_eq!(size_gib("1.5T"), None);
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        assert_eq!(config_hash(&["a", "b"]), config_hash(&["a", "b"]));
        assert_ne!(config_hash(&["ab", ""]), config_hash(&["a", "b"]));
    }
}
