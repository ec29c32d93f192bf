//! What verify talks to: the deployment's model (the config) and where to reach it. The CLI
//! fills it: for a local stack from its state, for a cluster from `--url` and friends.

use std::net::IpAddr;

use mxstack_spec::Config;

use crate::secret::Secret;

/// A named HTTP endpoint (a process's metrics, a service's status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub url: String,
}

/// The internal endpoints a local stack exposes on 127.0.0.1 (a cluster keeps them inside).
#[derive(Debug, Clone, Default)]
pub struct LocalEndpoints {
    /// Every Synapse process's metrics (what Prometheus scrapes).
    pub synapse_metrics: Vec<Endpoint>,
    pub scanner_metrics: Option<Endpoint>,
    /// The content scanner's readiness (it pings clamd).
    pub scanner_ready: Option<Endpoint>,
    pub li_sync_status: Option<Endpoint>,
    /// The local Prometheus (feature `monitoring`).
    pub prometheus: Option<Endpoint>,
}

#[derive(Debug)]
pub struct Target {
    pub config: Config,
    /// The client API's base URL, without a trailing slash.
    pub client_url: String,
    /// The TURN URIs Synapse must hand out (from the target's addressing).
    pub turn_uris: Vec<String>,
    /// Set for a stack started by `mxstack up`.
    pub local: Option<LocalEndpoints>,
    pub registration_secret: Option<Secret>,
    /// Prometheus' base URL (a cluster: e.g. through `kubectl port-forward`).
    pub prometheus: Option<String>,
    /// li-sync's base URL (a cluster).
    pub li_sync: Option<String>,
    /// Extra trusted CA certificates (PEM).
    pub extra_ca: Vec<Vec<u8>>,
    /// Send every hostname of the deployment to this address instead of DNS.
    pub connect_to: Option<IpAddr>,
}

impl Target {
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// The public client URL the model gives clients.
    pub fn public_client_url(&self) -> String {
        format!("https://{}", self.config.hostnames().matrix)
    }

    /// Every hostname of the deployment (for `--connect-to`).
    pub fn hostnames(&self) -> Vec<String> {
        let h = self.config.hostnames();
        let mut v = vec![
            self.config.domain.clone(),
            h.matrix,
            h.element,
            h.turn,
            h.livekit,
            h.livekit_jwt,
            h.matrix_li,
            h.element_li,
            h.admin_li,
            h.li_console,
            h.keyvault,
        ];
        v.dedup();
        v
    }
}
