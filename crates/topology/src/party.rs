//! The parties of the network flows and the flow type: who talks to whom is declared with each
//! component (crates/topology/src/registry.rs) and collected by `flows::flows`.

use serde::Serialize;

/// A party in a flow: one of our components, or something outside the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Party {
    Synapse,
    Router,
    Valkey,
    ValkeyMaster,
    Postgres,
    Seaweedfs,
    Minio,
    Element,
    Coturn,
    Livekit,
    /// The MatrixRTC authorization service (`mxstack serve rtc-auth`): LiveKit tokens for our users.
    RtcAuth,
    Sygnal,
    ContentScanner,
    Clamav,
    /// The LI PostgreSQL cluster (`li-pg`): the replica and the browsing stack's working copy.
    LiPostgres,
    /// li-sync: keeps the replica (schema, subscription, history) and copies media.
    LiSync,
    /// The Job that prepares main for logical replication (runs on main's side, as superuser).
    LiPrepareMain,
    /// The dump-mode CronJob (`li.sync: dump`): pg_dump of main restored into the replica.
    LiDump,
    /// The CronJob that refreshes the browsing stack's working copy from the replica.
    LiWorkingCopy,
    /// Synapse LI: the read-only browsing homeserver on the working copy.
    SynapseLi,
    /// The key vault: escrowed E2EE keys (on the LI nodes).
    KeyVault,
    /// Synapse's main process only (it alone serves the escrow endpoint and holds the store key).
    SynapseMain,
    ElementLi,
    SynapseAdminLi,
    /// The LI console: investigators' web app (warrants, evidence, escrowed keys) on the LI
    /// nodes; reads the replica, retrieves keys from the key vault, reads LI media.
    LiConsole,
    /// Loki, the log store (feature `monitoring`).
    Loki,
    /// Grafana Alloy, one per node: tails pod logs through the Kubernetes API into Loki.
    Alloy,
    /// The Gateway / Ingress controller (another namespace).
    Edge,
    /// Prometheus (monitoring namespace).
    Monitoring,
    /// The CloudNativePG operator (cnpg-system namespace).
    CnpgOperator,
    /// The Kubernetes API server. It is not a pod, so a NetworkPolicy can only name it by
    /// address: any address on its ports (443 of the `kubernetes` Service, 6443 where the
    /// server listens, which some CNIs see after the Service's address translation).
    KubernetesApi,
    /// Anything on the internet (federation, push gateways, external S3).
    Internet,
    /// Cluster DNS.
    Dns,
}

impl Party {
    /// The LI workloads that run on the LI nodes: all but `li-prepare-main`, which holds main's
    /// superuser and so never runs there. (The LI PostgreSQL's pods come from its operator.)
    pub const ON_LI_NODES: [Party; 8] = [
        Party::LiSync,
        Party::KeyVault,
        Party::LiConsole,
        Party::LiDump,
        Party::LiWorkingCopy,
        Party::SynapseLi,
        Party::ElementLi,
        Party::SynapseAdminLi,
    ];

    /// The party's name; in Kubernetes also the `app.kubernetes.io/name` of its pods.
    pub const fn as_str(self) -> &'static str {
        match self {
            Party::Synapse => "synapse",
            Party::Router => "synapse-router",
            Party::Valkey => "valkey",
            Party::ValkeyMaster => "valkey-master",
            Party::Postgres => "postgres",
            Party::Seaweedfs => "seaweedfs",
            Party::Minio => "minio",
            Party::Element => "element",
            Party::Coturn => "coturn",
            Party::Livekit => "livekit",
            Party::RtcAuth => "rtc-auth",
            Party::Sygnal => "sygnal",
            Party::ContentScanner => "content-scanner",
            Party::Clamav => "clamav",
            Party::LiPostgres => "li-postgres",
            Party::LiSync => "li-sync",
            Party::LiPrepareMain => "li-prepare-main",
            Party::LiDump => "li-dump",
            Party::LiWorkingCopy => "li-working-copy",
            Party::SynapseLi => "synapse-li",
            Party::KeyVault => "key-vault",
            Party::SynapseMain => "synapse-main",
            Party::ElementLi => "element-li",
            Party::SynapseAdminLi => "synapse-admin-li",
            Party::LiConsole => "li-console",
            Party::Loki => "loki",
            Party::Alloy => "alloy",
            Party::Edge => "edge",
            Party::Monitoring => "monitoring",
            Party::CnpgOperator => "cnpg-operator",
            Party::KubernetesApi => "kubernetes-api",
            Party::Internet => "internet",
            Party::Dns => "dns",
        }
    }

    /// Pods of this party live in our namespace.
    pub fn in_namespace(self) -> bool {
        !matches!(
            self,
            Party::Edge
                | Party::Monitoring
                | Party::CnpgOperator
                | Party::KubernetesApi
                | Party::Internet
                | Party::Dns
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Flow {
    pub from: Party,
    pub to: Party,
    pub protocol: Protocol,
    pub ports: Vec<u16>,
    pub why: &'static str,
}

/// A TCP flow.
pub fn tcp(from: Party, to: Party, ports: &[u16], why: &'static str) -> Flow {
    Flow {
        from,
        to,
        protocol: Protocol::Tcp,
        ports: ports.to_vec(),
        why,
    }
}

/// The Kubernetes API: the `kubernetes` Service's port and the port the API server listens on.
pub const KUBERNETES_API_PORTS: [u16; 2] = [443, 6443];
