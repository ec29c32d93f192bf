//! Who talks to whom: every network flow the system needs. NetworkPolicies are generated from this
//! list (default deny, then exactly these), and docs/NETWORK.md lists it, so the two cannot differ.

use mxstack_spec::{Feature, MediaBackend};
use serde::Serialize;

use crate::addressing::{
    CLAMD_PORT, CONTENT_SCANNER_PORT, HTTP_PORT, METRICS_PORT, POSTGRES_PORT, REDIS_PORT,
    REPLICATION_PORT, ROUTER_PORT, ROUTER_STATS_PORT, SEAWEEDFS_S3_PORT, SENTINEL_PORT,
};
use crate::Topology;

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
    Sygnal,
    ContentScanner,
    Clamav,
    /// The Gateway / Ingress controller (another namespace).
    Edge,
    /// Prometheus (monitoring namespace).
    Monitoring,
    /// The CloudNativePG operator (cnpg-system namespace).
    CnpgOperator,
    /// Anything on the internet (federation, push gateways, external S3).
    Internet,
    /// Cluster DNS.
    Dns,
}

impl Party {
    pub fn as_str(self) -> &'static str {
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
            Party::Sygnal => "sygnal",
            Party::ContentScanner => "content-scanner",
            Party::Clamav => "clamav",
            Party::Edge => "edge",
            Party::Monitoring => "monitoring",
            Party::CnpgOperator => "cnpg-operator",
            Party::Internet => "internet",
            Party::Dns => "dns",
        }
    }

    /// Pods of this party live in our namespace.
    pub fn in_namespace(self) -> bool {
        !matches!(
            self,
            Party::Edge | Party::Monitoring | Party::CnpgOperator | Party::Internet | Party::Dns
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

fn tcp(from: Party, to: Party, ports: &[u16], why: &'static str) -> Flow {
    Flow {
        from,
        to,
        protocol: Protocol::Tcp,
        ports: ports.to_vec(),
        why,
    }
}

pub const SEAWEEDFS_INTERNAL_PORTS: [u16; 6] = [9333, 19333, 8080, 18080, 8888, 18888];
pub const CNPG_STATUS_PORT: u16 = 8000;
pub const ELEMENT_PORT: u16 = 8080;
pub const LIVEKIT_PORT: u16 = 7880;
pub const SYGNAL_PORT: u16 = 5000;
pub const MINIO_PORT: u16 = 9000;

pub fn flows(t: &Topology) -> Vec<Flow> {
    use Party::*;
    let c = &t.config;
    let mut f = vec![
        tcp(
            Edge,
            Router,
            &[ROUTER_PORT],
            "client and federation HTTPS terminated at the edge",
        ),
        tcp(Edge, Element, &[ELEMENT_PORT], "Element Web static files"),
        tcp(
            Router,
            Synapse,
            &[HTTP_PORT],
            "routed client/federation requests",
        ),
        tcp(
            Synapse,
            Synapse,
            &[REPLICATION_PORT],
            "HTTP replication between main and workers",
        ),
        tcp(
            Synapse,
            ValkeyMaster,
            &[REDIS_PORT],
            "replication stream pub/sub via the master endpoint",
        ),
        tcp(
            ValkeyMaster,
            Valkey,
            &[REDIS_PORT],
            "master endpoint health checks and proxying",
        ),
        tcp(
            Valkey,
            Valkey,
            &[REDIS_PORT, SENTINEL_PORT],
            "Valkey replication and Sentinel gossip",
        ),
        tcp(Synapse, Postgres, &[POSTGRES_PORT], "Synapse database"),
        tcp(
            Postgres,
            Postgres,
            &[POSTGRES_PORT, CNPG_STATUS_PORT],
            "streaming replication and instance manager",
        ),
        tcp(
            CnpgOperator,
            Postgres,
            &[CNPG_STATUS_PORT, POSTGRES_PORT],
            "CloudNativePG operator manages instances",
        ),
    ];
    match c.media.backend {
        MediaBackend::Seaweedfs => {
            f.push(tcp(
                Synapse,
                Seaweedfs,
                &[SEAWEEDFS_S3_PORT],
                "media objects (S3)",
            ));
            f.push(tcp(
                Postgres,
                Seaweedfs,
                &[SEAWEEDFS_S3_PORT],
                "WAL archive and base backups (Barman Cloud plugin)",
            ));
            f.push(tcp(
                Seaweedfs,
                Seaweedfs,
                &SEAWEEDFS_INTERNAL_PORTS,
                "SeaweedFS master, volume and filer traffic",
            ));
        }
        MediaBackend::MinioLegacy => {
            f.push(tcp(Synapse, Minio, &[MINIO_PORT], "media objects (S3)"));
            f.push(tcp(
                Postgres,
                Minio,
                &[MINIO_PORT],
                "WAL archive and base backups (Barman Cloud plugin)",
            ));
            f.push(tcp(
                Minio,
                Minio,
                &[MINIO_PORT],
                "MinIO erasure-set traffic",
            ));
        }
        MediaBackend::S3 => {
            f.push(tcp(
                Synapse,
                Internet,
                &[443],
                "media objects on the external S3 endpoint",
            ));
            f.push(tcp(
                Postgres,
                Internet,
                &[443],
                "backups on the external S3 endpoint",
            ));
        }
    }
    if t.has(Feature::Federation) {
        f.push(tcp(
            Edge,
            Router,
            &[8448],
            "federation port when not delegated through 443",
        ));
        f.push(tcp(
            Synapse,
            Internet,
            &[443, 8448],
            "outbound federation and key fetches",
        ));
    }
    if c.synapse.url_previews {
        f.push(tcp(
            Synapse,
            Internet,
            &[80, 443],
            "URL previews (media workers)",
        ));
    }
    if t.has(Feature::Push) {
        f.push(tcp(
            Synapse,
            Sygnal,
            &[SYGNAL_PORT],
            "pushers notify the push gateway",
        ));
        f.push(tcp(Sygnal, Internet, &[443], "APNs / FCM"));
    }
    if t.has(Feature::Calls) {
        f.push(tcp(
            Edge,
            Livekit,
            &[LIVEKIT_PORT],
            "LiveKit signalling (WebSocket)",
        ));
    }
    if t.has(Feature::Antivirus) {
        f.push(tcp(
            Router,
            ContentScanner,
            &[CONTENT_SCANNER_PORT],
            "media downloads and thumbnails pass through the content scanner",
        ));
        f.push(tcp(
            ContentScanner,
            Synapse,
            &[HTTP_PORT],
            "the scanner fetches media from the media workers",
        ));
        f.push(tcp(
            Synapse,
            ContentScanner,
            &[CONTENT_SCANNER_PORT],
            "media workers have each upload scanned before it is stored",
        ));
        f.push(tcp(
            ContentScanner,
            Clamav,
            &[CLAMD_PORT],
            "zINSTREAM scans on clamd",
        ));
        if c.antivirus.signature_updates {
            f.push(tcp(
                Clamav,
                Internet,
                &[80, 443],
                "freshclam signature updates from the configured mirror",
            ));
        }
        if t.has(Feature::Monitoring) {
            f.push(tcp(
                Monitoring,
                ContentScanner,
                &[CONTENT_SCANNER_PORT],
                "content scanner metrics",
            ));
        }
    }
    if t.has(Feature::Monitoring) {
        f.push(tcp(Monitoring, Synapse, &[METRICS_PORT], "Synapse metrics"));
        f.push(tcp(
            Monitoring,
            Router,
            &[ROUTER_STATS_PORT],
            "HAProxy metrics",
        ));
        f.push(tcp(Monitoring, Postgres, &[9187], "PostgreSQL metrics"));
        f.push(tcp(Monitoring, Valkey, &[9121], "Valkey metrics exporter"));
    }
    f.sort();
    f
}
