//! The kinds the server knows, its discovery answers, and URL paths to (kind, namespace, name).

use serde_json::{json, Value};

/// A kind the server serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// "" for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

impl Resource {
    /// `api_version` as in manifests ("v1", "apps/v1", "postgresql.cnpg.io/v1").
    pub fn new(api_version: &str, kind: &str, plural: &str, namespaced: bool) -> Resource {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        Resource {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

pub(crate) fn built_in() -> Vec<Resource> {
    let r = Resource::new;
    vec![
        r("v1", "Namespace", "namespaces", false),
        r("v1", "Node", "nodes", false),
        r("v1", "Secret", "secrets", true),
        r("v1", "ConfigMap", "configmaps", true),
        r("v1", "Service", "services", true),
        r("v1", "ServiceAccount", "serviceaccounts", true),
        r(
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            true,
        ),
        r("v1", "Pod", "pods", true),
        r("v1", "Event", "events", true),
        r("apps/v1", "Deployment", "deployments", true),
        r("apps/v1", "StatefulSet", "statefulsets", true),
        r("apps/v1", "DaemonSet", "daemonsets", true),
        r("batch/v1", "Job", "jobs", true),
        r("batch/v1", "CronJob", "cronjobs", true),
        r(
            "policy/v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
        ),
        r(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
        ),
        r(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
        ),
        r("networking.k8s.io/v1", "Ingress", "ingresses", true),
        r("rbac.authorization.k8s.io/v1", "Role", "roles", true),
        r(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            "rolebindings",
            true,
        ),
        r(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        r(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        ),
        r("storage.k8s.io/v1", "StorageClass", "storageclasses", false),
        r(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            false,
        ),
        r(
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            false,
        ),
        r(
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicy",
            "validatingadmissionpolicies",
            false,
        ),
        r(
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
            false,
        ),
        r(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        ),
    ]
}

/// The discovery document for `path`, if it is one the server serves.
pub(crate) fn discovery(resources: &[Resource], path: &str) -> Option<Value> {
    let path = path.trim_end_matches('/');
    if path == "/api" {
        return Some(
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        );
    }
    if path == "/apis" {
        let mut groups: Vec<(String, String)> = Vec::new();
        for r in resources.iter().filter(|r| !r.group.is_empty()) {
            if !groups.contains(&(r.group.clone(), r.version.clone())) {
                groups.push((r.group.clone(), r.version.clone()));
            }
        }
        let groups: Vec<Value> = groups
            .iter()
            .map(|(g, v)| {
                let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
            })
            .collect();
        return Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}));
    }
    let gv = if path == "/api/v1" {
        "v1".to_string()
    } else {
        let rest = path.strip_prefix("/apis/")?;
        let (g, v) = rest.split_once('/')?;
        if v.contains('/') {
            return None;
        }
        format!("{g}/{v}")
    };
    let list: Vec<Value> = resources
        .iter()
        .filter(|r| r.api_version() == gv)
        .map(|r| {
            json!({"name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                   "kind": r.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
        })
        .collect();
    if list.is_empty() {
        return None;
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

/// What a resource URL names.
pub(crate) struct Target {
    pub res: Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Target {
    pub fn resource_name(&self) -> String {
        if self.res.group.is_empty() {
            self.res.plural.clone()
        } else {
            format!("{}.{}", self.res.plural, self.res.group)
        }
    }

    /// The API server's words for a refused request.
    pub fn forbidden_message(&self, verb: &str) -> String {
        let what = match &self.name {
            Some(n) => format!("{} \"{n}\"", self.resource_name()),
            None => self.resource_name(),
        };
        let scope = match &self.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        format!(
            "{what} is forbidden: User \"system:serviceaccount:default:deployer\" cannot {verb} resource \"{}\" in API group \"{}\" {scope}",
            self.res.plural, self.res.group
        )
    }
}

pub(crate) fn parse_path(resources: &[Resource], path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    // namespaces/{ns}/{plural}[/{name}] is namespaced; anything else is {plural}[/{name}].
    let (namespace, plural, name) = match rest {
        ["namespaces", ns, plural, more @ ..] => (Some(ns.to_string()), *plural, more.first()),
        [plural, more @ ..] => (None, *plural, more.first()),
        [] => return None,
    };
    let res = resources
        .iter()
        .find(|r| r.api_version() == api_version && r.plural == plural)?
        .clone();
    Some(Target {
        res,
        namespace,
        name: name.map(|n| n.to_string()),
    })
}

/// Every custom kind mxstack renders (`prerequisites::KINDS`), as its CRD serves it: the
/// cluster after the operators are installed.
pub fn mxstack_crds() -> Vec<Resource> {
    mxstack_k8s::prerequisites::KINDS
        .iter()
        .map(|k| {
            let plural = match k.kind {
                "SecurityPolicy" => "securitypolicies".to_string(),
                other => format!("{}s", other.to_lowercase()),
            };
            // ClusterIssuer is the one cluster-scoped kind.
            Resource::new(k.api_version, k.kind, &plural, k.kind != "ClusterIssuer")
        })
        .collect()
}
