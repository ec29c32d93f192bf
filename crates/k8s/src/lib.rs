//! Kubernetes manifests for an mxstack deployment, rendered from a [`Topology`] and its [`Secrets`].
//!
//! The output is a kustomize tree: one folder per phase (namespace, infrastructure, Synapse,
//! lawful intercept, edge, calls, push, monitoring), each with a `kustomization.yaml`, plus a
//! top-level one listing the folders. Every list two objects must agree on (worker processes, HAProxy backends, network flows)
//! is read from the topology; nothing here repeats it.
//!
//! Rendering is a pure function: the same input gives byte-identical files.

mod addressing;

mod antivirus;
mod calls;
mod edge;
mod element;
mod htpasswd;
mod li;
mod logs;
mod media;
mod meta;
mod monitoring;
mod network;
pub mod operators;
mod postgres;
pub mod prerequisites;
mod push;
pub mod rollout;
mod router;
mod rtc_auth;
mod secrets;
mod synapse;
mod valkey;

use std::collections::BTreeMap;

use mxstack_spec::{Config, Feature, Secrets};
use mxstack_topology::{Addressing, SynapsePaths, Topology};

pub use addressing::KubernetesAddressing;
use serde::Serialize;

pub use meta::{LABEL_GROUP, LABEL_MANAGED_BY, LABEL_NAME, LABEL_PART_OF, PART_OF};
pub use network::{EDGE_NAMESPACE_GATEWAY, EDGE_NAMESPACE_INGRESS};

/// One rendered object and where it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedObject {
    /// Phase folder, e.g. `20-main`.
    pub phase: String,
    /// File name inside the phase folder, e.g. `synapse-main.yaml`.
    pub file: String,
    pub value: serde_json::Value,
}

/// Everything `render` produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// every object, in output order
    pub objects: Vec<RenderedObject>,
    /// relative path (e.g. "20-main/synapse-main.yaml", "20-main/kustomization.yaml",
    /// "kustomization.yaml") -> file content; BTreeMap so output is deterministic
    pub files: BTreeMap<String, String>,
}

/// Apply order. Each phase only depends on the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Namespace,
    Infrastructure,
    Main,
    /// The lawful-intercept workloads (feature `li`): li-sync, its jobs, the browsing stack.
    Li,
    Edge,
    Calls,
    Push,
    Monitoring,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Namespace,
        Phase::Infrastructure,
        Phase::Main,
        Phase::Li,
        Phase::Edge,
        Phase::Calls,
        Phase::Push,
        Phase::Monitoring,
    ];

    pub fn dir(self) -> &'static str {
        match self {
            Phase::Namespace => "00-namespace",
            Phase::Infrastructure => "10-infrastructure",
            Phase::Main => "20-main",
            Phase::Li => "25-lawful-intercept",
            Phase::Edge => "30-edge",
            Phase::Calls => "40-calls",
            Phase::Push => "50-push",
            Phase::Monitoring => "60-monitoring",
        }
    }
}

/// What every renderer reads: the model, the secrets and the Kubernetes addresses.
pub(crate) struct Ctx<'a> {
    pub t: &'a Topology,
    pub cfg: &'a Config,
    pub secrets: &'a Secrets,
    pub addr: KubernetesAddressing,
    pub paths: SynapsePaths,
}

impl<'a> Ctx<'a> {
    fn new(topology: &'a Topology, secrets: &'a Secrets) -> Ctx<'a> {
        let addr = KubernetesAddressing::new(&topology.config);
        let paths = addr.synapse_paths();
        Ctx {
            t: topology,
            cfg: &topology.config,
            secrets,
            addr,
            paths,
        }
    }

    pub fn ns(&self) -> &str {
        &self.cfg.namespace
    }
    pub fn has(&self, f: Feature) -> bool {
        self.t.has(f)
    }
}

/// Collects objects in output order.
#[derive(Default)]
pub(crate) struct Out {
    objects: Vec<RenderedObject>,
}

impl Out {
    pub fn add(&mut self, phase: Phase, file: &str, object: impl Serialize) {
        let value = serde_json::to_value(object).expect("manifests serialize to JSON");
        self.objects.push(RenderedObject {
            phase: phase.dir().to_string(),
            file: file.to_string(),
            value,
        });
    }
}

pub fn render(topology: &Topology, secrets: &Secrets) -> Rendered {
    let ctx = Ctx::new(topology, secrets);
    let mut out = Out::default();
    network::render(&ctx, &mut out);
    secrets::render(&ctx, &mut out);
    postgres::render(&ctx, &mut out);
    valkey::render(&ctx, &mut out);
    media::render(&ctx, &mut out);
    synapse::render(&ctx, &mut out);
    router::render(&ctx, &mut out);
    element::render(&ctx, &mut out);
    edge::render(&ctx, &mut out);
    if ctx.has(Feature::Antivirus) {
        antivirus::render(&ctx, &mut out);
    }
    if ctx.has(Feature::Li) {
        li::render(&ctx, &mut out);
    }
    if ctx.has(Feature::Calls) {
        calls::render(&ctx, &mut out);
        rtc_auth::render(&ctx, &mut out);
    }
    if ctx.has(Feature::Push) {
        push::render(&ctx, &mut out);
    }
    if ctx.has(Feature::Monitoring) {
        monitoring::render(&ctx, &mut out);
        logs::render(&ctx, &mut out);
    }
    rollout::annotate(&mut out.objects, secrets);
    assemble(out.objects)
}

/// The CloudNativePG recovery of main as cluster `name` (to `target_time`, RFC 3339, or the end
/// of the archive): the Cluster with `bootstrap.recovery` from the Barman Cloud plugin's
/// ObjectStore, its ScheduledBackup, and the Service that switches `main-pg-rw` over to it.
pub fn postgres_recovery(
    topology: &Topology,
    secrets: &Secrets,
    name: &str,
    target_time: Option<&str>,
) -> Vec<serde_json::Value> {
    let ctx = Ctx::new(topology, secrets);
    postgres::recovery(&ctx, name, target_time)
}

/// The CloudNativePG recovery of the LI cluster as `name` (feature li): always to the end of
/// its archive, whatever main's target (docs/BACKUP.md), its ScheduledBackup and the Service
/// that switches `li-pg-rw` over to it. Empty without feature li.
pub fn li_postgres_recovery(
    topology: &Topology,
    secrets: &Secrets,
    name: &str,
) -> Vec<serde_json::Value> {
    let ctx = Ctx::new(topology, secrets);
    if !ctx.has(mxstack_spec::Feature::Li) {
        return Vec::new();
    }
    li::recovery(&ctx, name)
}

pub(crate) fn kustomization(resources: &[String]) -> String {
    let k = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
    });
    meta::to_yaml(&k)
}

/// Groups objects into files (phase order, then first appearance) and writes the kustomizations.
fn assemble(mut objects: Vec<RenderedObject>) -> Rendered {
    // Stable sort: phase order first, the order objects were added within a phase.
    objects.sort_by_key(|o| {
        Phase::ALL
            .iter()
            .position(|p| p.dir() == o.phase)
            .expect("known phase")
    });
    let mut files = BTreeMap::new();
    let mut phase_dirs = Vec::new();
    for phase in Phase::ALL {
        let mut file_order: Vec<String> = Vec::new();
        let mut docs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for o in objects.iter().filter(|o| o.phase == phase.dir()) {
            if !file_order.contains(&o.file) {
                file_order.push(o.file.clone());
            }
            docs.entry(o.file.clone())
                .or_default()
                .push(meta::to_yaml(&o.value));
        }
        if file_order.is_empty() {
            continue;
        }
        for f in &file_order {
            files.insert(format!("{}/{f}", phase.dir()), docs[f].join("---\n"));
        }
        files.insert(
            format!("{}/kustomization.yaml", phase.dir()),
            kustomization(&file_order),
        );
        phase_dirs.push(phase.dir().to_string());
    }
    files.insert("kustomization.yaml".into(), kustomization(&phase_dirs));
    Rendered { objects, files }
}
