//! From rendered manifests to a running cluster: `mxstack deploy` (server-side apply phase by
//! phase, waits on what matters, ApplySet-style prune) and `mxstack check --cluster` (the
//! operators, CRDs, StorageClass, nodes and CNI a render needs).
//!
//! Everything talks to the API server through kube-rs; the tests run the same code against
//! `mxstack_kube_mock::MockApiServer`, the one mock mxstack allows (no API server runs here).

pub mod apply;
pub mod client;
pub mod cluster;
pub mod coordinate;
pub mod deploy;
mod error;
pub mod objects;
pub mod prune;
pub mod wait;

pub use client::Cluster;
pub use deploy::{deploy, Event, Options, Stopped, Summary};
pub use error::Error;
pub use objects::Item;

/// The field manager of every server-side apply mxstack makes.
pub const FIELD_MANAGER: &str = "mxstack";
