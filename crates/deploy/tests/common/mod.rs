//! Shared by the deploy and cluster-check tests: renders, and a MockApiServer (the one mock
//! mxstack allows: no Kubernetes API server can run here) serving every kind they use.
#![allow(dead_code)]

use std::time::Duration;

use mxstack_deploy::wait::WaitOptions;
use mxstack_deploy::{objects, Cluster, Item, Options};
use mxstack_kube_mock::{mxstack_crds, MockApiServer};
use mxstack_spec::{Config, Feature, Secrets, Tier};
use mxstack_topology::Topology;

pub const HOME: &str = "matrix";

pub fn config(tier: Tier, features: &[Feature]) -> Config {
    Config::new("acme.test", tier, features.iter().copied().collect())
}

/// The rendered objects of `config`, with fixed secrets `s`.
pub fn items(config: &Config, s: &Secrets) -> Vec<Item> {
    objects::items(&mxstack_k8s::render(&Topology::build(config), s))
}

pub fn secrets() -> Secrets {
    Secrets::generate_all().expect("randomness")
}

pub fn server() -> MockApiServer {
    MockApiServer::start("v1.33.1", &mxstack_crds())
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A kubeconfig file for `server` (kept alive by the returned TempDir).
pub fn kubeconfig(server: &MockApiServer, token: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, server.kubeconfig(token)).expect("write kubeconfig");
    (dir, path)
}

pub fn connect(
    rt: &tokio::runtime::Runtime,
    server: &MockApiServer,
) -> (tempfile::TempDir, Cluster) {
    let (dir, path) = kubeconfig(server, "t");
    let c = rt.block_on(Cluster::connect(Some(&path))).expect("connect");
    (dir, c)
}

/// Fast waits: the mock's controller answers at once.
pub fn options() -> Options {
    Options {
        dry_run: false,
        prune: false,
        force_conflicts: false,
        coordinated: false,
        wait: WaitOptions {
            timeout: Duration::from_secs(20),
            poll: Duration::from_millis(10),
            report_every: Duration::from_millis(0),
        },
    }
}
