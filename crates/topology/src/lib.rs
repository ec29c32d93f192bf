//! The deployment as processes, sizes and connections, independent of where it runs.
//!
//! `spec::Config` -> [`Topology`] -> targets (Kubernetes manifests, local processes). Every list that
//! two files must agree on (the worker list, `instance_map`, `stream_writers`, HAProxy backends,
//! NetworkPolicy flows, connection budgets) is computed once here and read by every target.

pub mod addressing;
pub mod antivirus;
pub mod backpressure;
pub mod backup;
pub mod budget;
pub mod change;
pub mod coturn;
pub mod escrow;
pub mod flows;
pub mod haproxy;
pub mod li;
pub mod li_browsing;
pub mod li_console;
pub mod party;
pub mod pgsql;
pub mod push;
pub mod ratelimits;
pub mod registry;
pub mod routing;
pub mod rtc_auth;
pub mod seaweedfs;
pub mod sizing;
pub mod synapse;
pub mod valkey;
pub mod workers;

use mxstack_spec::{Config, Feature};
use serde::Serialize;
use serde_json::Value;

pub use addressing::{Addressing, HostPort, SynapsePaths};
pub use budget::ConnectionBudget;
pub use sizing::Sizing;
pub use workers::{Stream, SynapseProcess, WorkerGroup, WorkerKind};

/// Everything derived from one config.
#[derive(Debug, Clone, Serialize)]
pub struct Topology {
    #[serde(skip)]
    pub config: Config,
    pub sizing: Sizing,
    /// Worker groups (main is not a group; see [`Topology::processes`]).
    pub groups: Vec<WorkerGroup>,
    pub budget: ConnectionBudget,
}

impl Topology {
    pub fn build(config: &Config) -> Topology {
        let sizing = Sizing::for_tier(config.scale, config);
        let groups = workers::groups(config, &sizing);
        let budget = ConnectionBudget::compute(&sizing, &groups);
        Topology {
            config: config.clone(),
            sizing,
            groups,
            budget,
        }
    }

    /// The same deployment as one Synapse process with no workers: every route falls back to
    /// main. For small evaluations and as the baseline the benchmarks compare workers against.
    pub fn single_process(config: &Config) -> Topology {
        let sizing = Sizing::for_tier(config.scale, config);
        let groups = Vec::new();
        let budget = ConnectionBudget::compute(&sizing, &groups);
        Topology {
            config: config.clone(),
            sizing,
            groups,
            budget,
        }
    }

    pub fn has(&self, f: Feature) -> bool {
        self.config.has(f)
    }

    /// Every Synapse process that can exist (autoscaled groups up to their maximum), main first.
    pub fn processes(&self) -> Vec<SynapseProcess> {
        workers::processes(&self.groups)
    }

    /// Processes at the replica count they start with (what `up` runs; what Kubernetes starts).
    pub fn initial_processes(&self) -> Vec<SynapseProcess> {
        self.processes()
            .into_iter()
            .filter(|p| p.ordinal < p.initial_replicas)
            .collect()
    }

    pub fn group(&self, name: &str) -> Option<&WorkerGroup> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn groups_of(&self, kind: WorkerKind) -> impl Iterator<Item = &WorkerGroup> {
        self.groups.iter().filter(move |g| g.kind == kind)
    }
}

/// A service's config (a `mxstack_service_config` type) as the JSON value the targets write out.
/// Field order is the type's, and unset optional fields are left out.
pub(crate) fn service_config_value<T: Serialize>(config: &T) -> Value {
    // Only fails on non-string map keys or non-UTF-8 paths; these types have neither (their
    // paths are built from strings).
    serde_json::to_value(config).expect("a service config is plain data")
}
