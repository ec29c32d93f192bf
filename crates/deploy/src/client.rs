//! The connection to a cluster and the kinds it serves (discovery, cached per kind).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use kube::api::{Api, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::Client;
use mxstack_k8s::prerequisites;

use crate::Error;

/// A kind the cluster serves.
#[derive(Debug, Clone)]
pub struct Served {
    pub resource: ApiResource,
    pub namespaced: bool,
}

impl Served {
    /// `deployments.apps`: the name RBAC and error messages use.
    pub fn resource_name(&self) -> String {
        if self.resource.group.is_empty() {
            self.resource.plural.clone()
        } else {
            format!("{}.{}", self.resource.plural, self.resource.group)
        }
    }
}

pub struct Cluster {
    pub client: Client,
    /// The API server's URL, for messages.
    pub server: String,
    served: Mutex<BTreeMap<(String, String), Option<Served>>>,
}

impl Cluster {
    /// Connects with `kubeconfig`, else the usual places (KUBECONFIG, ~/.kube/config, in-cluster).
    pub async fn connect(kubeconfig: Option<&Path>) -> Result<Cluster, Error> {
        let config = match kubeconfig {
            Some(p) => {
                let bad = |m: String| Error::Kubeconfig {
                    path: p.display().to_string(),
                    message: m,
                };
                let kc = Kubeconfig::read_from(p).map_err(|e| bad(e.to_string()))?;
                kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| bad(e.to_string()))?
            }
            None => kube::Config::infer().await.map_err(|e| Error::Kubeconfig {
                path: "(KUBECONFIG, ~/.kube/config or in-cluster)".into(),
                message: e.to_string(),
            })?,
        };
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| Error::Unreachable {
            server: server.clone(),
            message: e.to_string(),
        })?;
        Ok(Cluster {
            client,
            server,
            served: Mutex::new(BTreeMap::new()),
        })
    }

    /// The Kubernetes version the API server reports, e.g. "v1.33.1".
    pub async fn version(&self) -> Result<String, Error> {
        let v = self
            .client
            .apiserver_version()
            .await
            .map_err(|e| Error::from_kube(&self.server, "/version", "get", "/version", e))?;
        Ok(v.git_version)
    }

    /// Whether, and how, the cluster serves `api_version`/`kind`; `None` when it does not.
    pub async fn served(&self, api_version: &str, kind: &str) -> Result<Option<Served>, Error> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(s) = self.served.lock().expect("cache").get(&key) {
            return Ok(s.clone());
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let found = match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok((resource, caps)) => Some(served(resource, &caps)),
            Err(kube::Error::Discovery(_)) => None,
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => {
                let what = format!("/apis/{api_version}");
                return Err(Error::from_kube(&self.server, &what, "get", &what, e));
            }
        };
        self.served
            .lock()
            .expect("cache")
            .insert(key, found.clone());
        Ok(found)
    }

    /// Like [`served`](Self::served), but a kind the cluster lacks is an error naming what
    /// installs it.
    pub async fn require(&self, api_version: &str, kind: &str) -> Result<Served, Error> {
        self.served(api_version, kind)
            .await?
            .ok_or_else(|| Error::MissingKind {
                api_version: api_version.into(),
                kind: kind.into(),
                needs: installs(api_version, kind),
            })
    }

    /// The API for objects of `s` in `namespace` (all namespaces, or cluster-scoped, for None).
    pub fn api(&self, s: &Served, namespace: Option<&str>) -> Api<DynamicObject> {
        match (s.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &s.resource),
            _ => Api::all_with(self.client.clone(), &s.resource),
        }
    }

    /// The API for one object: a namespaced object without a namespace goes where kubectl would
    /// put it, `default` (upstream operator manifests rely on that).
    pub fn api_for(&self, s: &Served, namespace: Option<&str>) -> Api<DynamicObject> {
        let ns = namespace.or(s.namespaced.then_some("default"));
        self.api(s, ns)
    }

    /// `e`, a failure of `verb` on `object` of kind `s`, as an [`Error`].
    pub fn error(&self, s: &Served, object: &str, verb: &str, e: kube::Error) -> Error {
        Error::from_kube(&self.server, object, verb, &s.resource_name(), e)
    }
}

fn served(resource: ApiResource, caps: &ApiCapabilities) -> Served {
    Served {
        namespaced: caps.scope == Scope::Namespaced,
        resource,
    }
}

/// What serves a kind: its operator from the prerequisites table, else "its CRD".
fn installs(api_version: &str, kind: &str) -> String {
    prerequisites::KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.kind == kind)
        .map(|k| format!("{} >= {}", k.operator.name, k.operator.minimum))
        .unwrap_or_else(|| format!("the CustomResourceDefinition for {kind}"))
}
