//! A kubelet stand-in for tests: the pods of rendered Deployments and StatefulSets, translated
//! into podman pods and containers exactly as their pod specs say (command, args, env with
//! Secret and ConfigMap references, volumes at their mount paths, user and group,
//! read-only root filesystem, capabilities), with the probes left for the caller to evaluate as
//! the kubelet would. No Kubernetes API server can run on the test machines; this crate is the
//! part of one that a run-proof needs, and it refuses any pod-spec field it does not map rather
//! than ignore it (see README.md for the table).
//!
//! [`Cluster::from_objects`] reads the rendered objects, [`Cluster::pods`] expands the
//! workloads into pods with their addresses and DNS records, and [`translate::pod`] turns one
//! pod into the files to write and the podman commands to run.

pub mod cluster;
pub mod cnpg_standin;
pub mod proof;
pub mod run;
pub mod translate;

pub use cluster::{Cluster, Pod};
pub use run::{Harness, RunError};
pub use translate::{ContainerRun, Options, PodRun, Probe, ProbeAction};

/// What the harness cannot do with a pod spec.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{pod}: {field} is not mapped by kube-podman (see crates/kube-podman/README.md)")]
    Unmapped { pod: String, field: String },
    #[error("{pod}: references {kind} `{name}`, which the rendered objects do not contain")]
    Missing {
        pod: String,
        kind: &'static str,
        name: String,
    },
    #[error("{pod}: key `{key}` not in {kind} `{name}`")]
    MissingKey {
        pod: String,
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("{what}: {source}")]
    Parse {
        what: String,
        source: serde_json::Error,
    },
    #[error("Service {service}: port {port} targets `{target}`, which its pods do not declare with that number (DNS-only Services need equal numbers)")]
    ServicePort {
        service: String,
        port: i32,
        target: String,
    },
}
