//! The local target: the topology the Kubernetes target renders, run as real processes on 127.0.0.1
//! under one supervisor. Synapse, worker and HAProxy configuration come from the same
//! `mxstack_topology` functions; only the `Addressing` differs (fixed host, allocated ports, paths
//! under the state directory).

pub mod addressing;
pub mod backup;
pub mod control;
mod coturn;
pub mod http;
pub mod layout;
mod monitoring;
mod parts;
pub mod plan;
pub mod preflight;
mod programs;
pub mod rotation;
mod rtc_auth;
pub mod runtime;
pub mod shape;
pub mod status;
pub mod supervisor;
pub mod synapse_version;
pub mod users;

pub use addressing::LocalAddressing;
pub use layout::StateLayout;
pub use plan::{LocalPlan, Readiness, Service};
pub use shape::Shape;
pub use status::{ProcessState, ProcessStatus, StackStatus};
