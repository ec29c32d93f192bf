//! The rendered objects a run-proof needs: Secrets, ConfigMaps, Services and the workloads,
//! expanded into pods with an address each, and the DNS records the cluster's DNS would serve.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use base64::Engine;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

use crate::Error;

/// A Deployment, StatefulSet or Job (a Job's pod runs to completion).
#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: String,
    pub name: String,
    pub replicas: u32,
    /// A StatefulSet's governing (headless) Service: its pods get DNS names under it.
    pub service_name: Option<String>,
    /// A StatefulSet's volumeClaimTemplates (name, requested storage): each pod gets its own.
    pub claim_templates: Vec<(String, String)>,
    pub template: PodTemplateSpec,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub headless: bool,
    pub selector: BTreeMap<String, String>,
    /// (port, targetPort as written: a number or a container port's name)
    pub ports: Vec<(i32, String)>,
}

/// One pod of a workload, with its address.
#[derive(Debug, Clone)]
pub struct Pod {
    /// `<workload>-<ordinal>` (Deployments too: stable names for tests).
    pub name: String,
    pub workload: Workload,
    pub ordinal: u32,
    pub ip: Ipv4Addr,
    pub labels: BTreeMap<String, String>,
}

/// Everything rendered that pods refer to.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub namespace: String,
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    pub services: Vec<Service>,
    pub workloads: Vec<Workload>,
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

impl Cluster {
    /// Reads the objects of one namespace (`render`'s output, in any order).
    pub fn from_objects(namespace: &str, objects: &[Value]) -> Result<Cluster, Error> {
        let mut c = Cluster {
            namespace: namespace.into(),
            ..Default::default()
        };
        for o in objects {
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            match o["kind"].as_str().unwrap_or_default() {
                "Secret" => {
                    let mut data: BTreeMap<String, Vec<u8>> = string_map(&o["stringData"])
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    for (k, v) in string_map(&o["data"]) {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(v)
                            .unwrap_or_default();
                        data.insert(k, bytes);
                    }
                    c.secrets.insert(name, data);
                }
                "ConfigMap" => {
                    c.config_maps.insert(name, string_map(&o["data"]));
                }
                "Service" => c.services.push(Service {
                    name,
                    headless: o["spec"]["clusterIP"] == "None",
                    selector: string_map(&o["spec"]["selector"]),
                    ports: o["spec"]["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| {
                            let port = p["port"].as_i64().unwrap_or_default() as i32;
                            let target = match &p["targetPort"] {
                                Value::Null => port.to_string(),
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            (port, target)
                        })
                        .collect(),
                }),
                kind @ ("Deployment" | "StatefulSet" | "Job") => {
                    let template = serde_json::from_value(o["spec"]["template"].clone()).map_err(
                        |source| Error::Parse {
                            what: format!("{kind} {name}"),
                            source,
                        },
                    )?;
                    c.workloads.push(Workload {
                        kind: kind.into(),
                        name,
                        replicas: o["spec"]["replicas"].as_u64().unwrap_or(1) as u32,
                        service_name: o["spec"]["serviceName"].as_str().map(String::from),
                        claim_templates: o["spec"]["volumeClaimTemplates"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|t| {
                                let name = t["metadata"]["name"].as_str()?;
                                let size =
                                    t["spec"]["resources"]["requests"]["storage"].as_str()?;
                                Some((name.to_string(), size.to_string()))
                            })
                            .collect(),
                        template,
                    });
                }
                _ => {}
            }
        }
        Ok(c)
    }

    /// The pods of the workloads `wanted` picks, addressed from `first` upwards.
    pub fn pods(&self, first: Ipv4Addr, wanted: impl Fn(&Workload) -> bool) -> Vec<Pod> {
        let mut next = u32::from(first);
        // Jobs have no replicas field: one pod each.
        let mut pods = Vec::new();
        for w in self.workloads.iter().filter(|w| wanted(w)) {
            for ordinal in 0..w.replicas {
                let labels = w
                    .template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                pods.push(Pod {
                    name: format!("{}-{ordinal}", w.name),
                    workload: w.clone(),
                    ordinal,
                    ip: Ipv4Addr::from(next),
                    labels: labels.into_iter().collect(),
                });
                next += 1;
            }
        }
        pods
    }

    fn domain(&self) -> String {
        format!("{}.svc.cluster.local", self.namespace)
    }

    /// A pod's fully qualified names: a StatefulSet pod's name under its governing Service.
    pub fn pod_names(&self, pod: &Pod) -> Vec<String> {
        match &pod.workload.service_name {
            Some(svc) if pod.workload.kind == "StatefulSet" => {
                vec![format!("{}.{svc}.{}", pod.name, self.domain())]
            }
            _ => vec![],
        }
    }

    /// `name -> addresses` as the cluster DNS answers: each Service's name to the addresses of
    /// the pods it selects (no virtual IPs: ports are checked to be equal, see
    /// [`Cluster::check_service_ports`]), and StatefulSet pods' own names.
    pub fn dns(&self, pods: &[Pod]) -> BTreeMap<String, Vec<Ipv4Addr>> {
        let mut records: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
        for s in &self.services {
            let ips: Vec<Ipv4Addr> = pods
                .iter()
                .filter(|p| {
                    !s.selector.is_empty()
                        && s.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
                })
                .map(|p| p.ip)
                .collect();
            if !ips.is_empty() {
                records.insert(format!("{}.{}", s.name, self.domain()), ips);
            }
        }
        for p in pods {
            for n in self.pod_names(p) {
                records.entry(n).or_default().push(p.ip);
            }
        }
        records
    }

    /// Without kube-proxy a Service name leads straight to its pods, so each Service port must
    /// be the number of the container port it targets.
    pub fn check_service_ports(&self, pods: &[Pod]) -> Result<(), Error> {
        for s in &self.services {
            for p in pods.iter().filter(|p| {
                !s.selector.is_empty() && s.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
            }) {
                let declared: Vec<(Option<String>, i32)> = p
                    .workload
                    .template
                    .spec
                    .iter()
                    .flat_map(|s| s.containers.iter())
                    .flat_map(|c| c.ports.iter().flatten())
                    .map(|cp| (cp.name.clone(), cp.container_port))
                    .collect();
                for (port, target) in &s.ports {
                    let ok = match target.parse::<i32>() {
                        Ok(n) => n == *port,
                        Err(_) => declared
                            .iter()
                            .any(|(n, num)| n.as_deref() == Some(target) && num == port),
                    };
                    if !ok {
                        return Err(Error::ServicePort {
                            service: s.name.clone(),
                            port: *port,
                            target: target.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
