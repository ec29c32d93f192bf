//! Who talks to whom: every network flow the system needs. NetworkPolicies are generated from this
//! list (default deny, then exactly these), and docs/NETWORK.md lists it, so the two cannot differ.

use crate::registry as reg;
use mxstack_spec::{Feature, LiSyncMode, MediaBackend};
use serde::Serialize;

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

fn tcp(from: Party, to: Party, ports: &[u16], why: &'static str) -> Flow {
    Flow {
        from,
        to,
        protocol: Protocol::Tcp,
        ports: ports.to_vec(),
        why,
    }
}

/// The numbers of [`reg::seaweedfs::INTERNAL`] (a flow lists numbers).
pub const SEAWEEDFS_INTERNAL_PORTS: [u16; 6] = {
    let p = reg::seaweedfs::INTERNAL;
    [
        p[0].number,
        p[1].number,
        p[2].number,
        p[3].number,
        p[4].number,
        p[5].number,
    ]
};
/// The Kubernetes API: the `kubernetes` Service's port and the port the API server listens on.
pub const KUBERNETES_API_PORTS: [u16; 2] = [443, 6443];

/// The S3 endpoint of the media backend as a flow target: (party, port).
fn s3_target(t: &Topology) -> (Party, u16) {
    match t.config.media.backend {
        MediaBackend::Seaweedfs => (Party::Seaweedfs, reg::seaweedfs::S3.number),
        MediaBackend::MinioLegacy => (Party::Minio, reg::minio::S3.number),
        MediaBackend::S3 => (Party::Internet, 443),
    }
}

/// The flows of one part of the system.
type Part = fn(&Topology) -> Vec<Flow>;

/// Every part with the feature that brings it (None: always there). A part owns the flows its
/// component takes part in, including Prometheus scraping a feature's own components.
const PARTS: &[(Option<Feature>, Part)] = &[
    (None, router_flows),
    (None, element_flows),
    (None, synapse_flows),
    (None, valkey_flows),
    (None, postgres_flows),
    (None, media_flows),
    (Some(Feature::Push), push_flows),
    (Some(Feature::Calls), calls_flows),
    (Some(Feature::Antivirus), antivirus_flows),
    (Some(Feature::Monitoring), monitoring_flows),
    (Some(Feature::Li), li_flows),
];

/// All flows, sorted: the order of the parts does not show in the policies or in NETWORK.md.
pub fn flows(t: &Topology) -> Vec<Flow> {
    let mut f: Vec<Flow> = PARTS
        .iter()
        .filter(|(feature, _)| feature.is_none_or(|x| t.has(x)))
        .flat_map(|(_, part)| part(t))
        .collect();
    f.sort();
    f
}

/// Client and federation requests: edge -> router -> Synapse.
fn router_flows(_: &Topology) -> Vec<Flow> {
    use Party::*;
    vec![
        tcp(
            Edge,
            Router,
            &[reg::router::HTTP.number],
            "client and federation HTTPS terminated at the edge",
        ),
        tcp(
            Router,
            Synapse,
            &[reg::synapse::HTTP.number],
            "routed client/federation requests",
        ),
    ]
}

fn element_flows(_: &Topology) -> Vec<Flow> {
    vec![tcp(
        Party::Edge,
        Party::Element,
        &[reg::element::HTTP.number],
        "Element Web static files",
    )]
}

/// Between Synapse's processes, and out to the internet.
fn synapse_flows(t: &Topology) -> Vec<Flow> {
    use Party::*;
    let mut f = vec![tcp(
        Synapse,
        Synapse,
        &[reg::synapse::REPLICATION.number],
        "HTTP replication between main and workers",
    )];
    // Inbound federation needs no flow of its own: /.well-known/matrix/server delegates it to the
    // matrix host on 443, so it arrives like client traffic (edge -> router 8080); neither the edge
    // nor the router listens on 8448.
    if t.has(Feature::Federation) {
        f.push(tcp(
            Synapse,
            Internet,
            &[443, 8448],
            "outbound federation and key fetches",
        ));
    }
    if t.config.synapse.url_previews {
        f.push(tcp(
            Synapse,
            Internet,
            &[80, 443],
            "URL previews (media workers)",
        ));
    }
    f
}

fn valkey_flows(_: &Topology) -> Vec<Flow> {
    use Party::*;
    vec![
        tcp(
            Synapse,
            ValkeyMaster,
            &[reg::valkey::REDIS.number],
            "replication stream pub/sub via the master endpoint",
        ),
        tcp(
            ValkeyMaster,
            Valkey,
            &[reg::valkey::REDIS.number],
            "master endpoint health checks and proxying",
        ),
        tcp(
            Valkey,
            Valkey,
            &[reg::valkey::REDIS.number, reg::valkey::SENTINEL.number],
            "Valkey replication and Sentinel gossip",
        ),
    ]
}

/// Main's PostgreSQL cluster (the LI cluster's flows are in [`li_flows`]).
fn postgres_flows(_: &Topology) -> Vec<Flow> {
    use Party::*;
    vec![
        tcp(
            Synapse,
            Postgres,
            &[reg::cnpg::POSTGRES.number],
            "Synapse database",
        ),
        tcp(
            Postgres,
            Postgres,
            &[reg::cnpg::POSTGRES.number, reg::cnpg::STATUS.number],
            "streaming replication and instance manager",
        ),
        tcp(
            CnpgOperator,
            Postgres,
            &[reg::cnpg::STATUS.number, reg::cnpg::POSTGRES.number],
            "CloudNativePG operator manages instances",
        ),
    ]
}

/// Media and backups go to the S3 endpoint of the media backend.
fn media_flows(t: &Topology) -> Vec<Flow> {
    use Party::*;
    match t.config.media.backend {
        MediaBackend::Seaweedfs => vec![
            tcp(
                Synapse,
                Seaweedfs,
                &[reg::seaweedfs::S3.number],
                "media objects (S3)",
            ),
            tcp(
                Postgres,
                Seaweedfs,
                &[reg::seaweedfs::S3.number],
                "WAL archive and base backups (Barman Cloud plugin)",
            ),
            tcp(
                Seaweedfs,
                Seaweedfs,
                &SEAWEEDFS_INTERNAL_PORTS,
                "SeaweedFS master, volume and filer traffic",
            ),
        ],
        MediaBackend::MinioLegacy => vec![
            tcp(
                Synapse,
                Minio,
                &[reg::minio::S3.number],
                "media objects (S3)",
            ),
            tcp(
                Postgres,
                Minio,
                &[reg::minio::S3.number],
                "WAL archive and base backups (Barman Cloud plugin)",
            ),
            tcp(
                Minio,
                Minio,
                &[reg::minio::S3.number],
                "MinIO erasure-set traffic",
            ),
        ],
        MediaBackend::S3 => vec![
            tcp(
                Synapse,
                Internet,
                &[443],
                "media objects on the external S3 endpoint",
            ),
            tcp(
                Postgres,
                Internet,
                &[443],
                "backups on the external S3 endpoint",
            ),
        ],
    }
}

fn push_flows(_: &Topology) -> Vec<Flow> {
    use Party::*;
    vec![
        tcp(
            Synapse,
            Sygnal,
            &[reg::sygnal::HTTP.number],
            "pushers notify the push gateway",
        ),
        tcp(Sygnal, Internet, &[443], "APNs / FCM"),
    ]
}

fn calls_flows(_: &Topology) -> Vec<Flow> {
    vec![tcp(
        Party::Edge,
        Party::Livekit,
        &[reg::livekit::HTTP.number],
        "LiveKit signalling (WebSocket)",
    )]
}

/// The content scanner between clients and media, and clamd behind it.
fn antivirus_flows(t: &Topology) -> Vec<Flow> {
    use Party::*;
    let mut f = vec![
        tcp(
            Router,
            ContentScanner,
            &[reg::content_scanner::HTTP.number],
            "media downloads and thumbnails pass through the content scanner",
        ),
        tcp(
            ContentScanner,
            Synapse,
            &[reg::synapse::HTTP.number],
            "the scanner fetches media from the media workers",
        ),
        tcp(
            Synapse,
            ContentScanner,
            &[reg::content_scanner::HTTP.number],
            "media workers have each upload scanned before it is stored",
        ),
        tcp(
            ContentScanner,
            Clamav,
            &[reg::clamav::CLAMD.number],
            "zINSTREAM scans on clamd",
        ),
    ];
    if t.config.antivirus.signature_updates {
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
            &[reg::content_scanner::HTTP.number],
            "content scanner metrics",
        ));
    }
    f
}

/// Prometheus scraping the components every deployment has.
fn monitoring_flows(_: &Topology) -> Vec<Flow> {
    use Party::*;
    vec![
        tcp(
            Monitoring,
            Synapse,
            &[reg::synapse::METRICS.number],
            "Synapse metrics",
        ),
        tcp(
            Monitoring,
            Router,
            &[reg::router::STATS.number],
            "HAProxy metrics",
        ),
        tcp(
            Monitoring,
            Postgres,
            &[reg::cnpg::METRICS.number],
            "PostgreSQL metrics",
        ),
        tcp(
            Monitoring,
            Valkey,
            &[reg::valkey::EXPORTER.number],
            "Valkey metrics exporter",
        ),
    ]
}

/// The lawful-intercept flows (feature `li`). Nothing LI reaches the internet, except the S3
/// endpoint when media lives on an external S3 service (a NetworkPolicy can only name it by
/// address). The same holds for the Kubernetes API the working-copy job calls: its rule allows
/// the API's ports at any address.
fn li_flows(t: &Topology) -> Vec<Flow> {
    [
        li_replica_flows,
        li_sync_mode_flows,
        li_browsing_flows,
        li_console_flows,
        li_monitoring_flows,
    ]
    .iter()
    .flat_map(|part| part(t))
    .collect()
}

/// The replica: li-sync keeps it, the LI cluster's own traffic, and the working copy from it.
fn li_replica_flows(t: &Topology) -> Vec<Flow> {
    use Party::*;
    let (s3, s3_port) = s3_target(t);
    vec![
        tcp(
            LiSync,
            Postgres,
            &[reg::cnpg::POSTGRES.number],
            "li-sync reads main's schema and replication status (read-only role li_replicator)",
        ),
        tcp(
            LiSync,
            LiPostgres,
            &[reg::cnpg::POSTGRES.number],
            "li-sync keeps the replica: schema, subscription, history",
        ),
        tcp(
            LiSync,
            s3,
            &[s3_port],
            "li-sync copies every media object into the LI bucket",
        ),
        tcp(
            LiPrepareMain,
            Postgres,
            &[reg::cnpg::POSTGRES.number],
            "the li-prepare-main Job sets replica identities, the event trigger and the publication (superuser)",
        ),
        tcp(
            LiWorkingCopy,
            LiPostgres,
            &[reg::cnpg::POSTGRES.number],
            "the working-copy CronJob refreshes synapse_li_work from the replica",
        ),
        tcp(
            LiWorkingCopy,
            KubernetesApi,
            &KUBERNETES_API_PORTS,
            "the working-copy CronJob restarts Synapse LI after a refresh (kubectl; its Role allows deployment synapse-li only)",
        ),
        tcp(
            LiPostgres,
            LiPostgres,
            &[reg::cnpg::POSTGRES.number, reg::cnpg::STATUS.number],
            "LI streaming replication and instance manager",
        ),
        tcp(
            CnpgOperator,
            LiPostgres,
            &[reg::cnpg::STATUS.number, reg::cnpg::POSTGRES.number],
            "CloudNativePG operator manages the LI instances",
        ),
    ]
}

/// How main's data reaches the replica: a subscription, or a dump restored on a schedule.
fn li_sync_mode_flows(t: &Topology) -> Vec<Flow> {
    use Party::*;
    match t.config.li.sync {
        LiSyncMode::Logical => vec![tcp(
            LiPostgres,
            Postgres,
            &[reg::cnpg::POSTGRES.number],
            "the LI subscription streams main's changes (logical replication)",
        )],
        LiSyncMode::Dump => vec![
            tcp(
                LiDump,
                Postgres,
                &[reg::cnpg::POSTGRES.number],
                "the dump CronJob reads main (one snapshot, COPY, as li_replicator)",
            ),
            tcp(
                LiDump,
                LiPostgres,
                &[reg::cnpg::POSTGRES.number],
                "the dump CronJob restores into the replica",
            ),
        ],
    }
}

/// The browsing stack: Synapse LI on the working copy, and its two web UIs.
fn li_browsing_flows(t: &Topology) -> Vec<Flow> {
    use Party::*;
    let (s3, s3_port) = s3_target(t);
    vec![
        tcp(
            SynapseLi,
            LiPostgres,
            &[reg::cnpg::POSTGRES.number],
            "Synapse LI's database (the working copy)",
        ),
        tcp(
            SynapseLi,
            s3,
            &[s3_port],
            "Synapse LI reads LI media (read-only S3 identity)",
        ),
        tcp(
            Edge,
            SynapseLi,
            &[reg::synapse::HTTP.number],
            "LI client and admin API (allowed networks only)",
        ),
        tcp(
            Edge,
            ElementLi,
            &[reg::li_web::HTTP.number],
            "Element Web LI (allowed networks, basic-auth gate)",
        ),
        tcp(
            Edge,
            SynapseAdminLi,
            &[reg::li_web::HTTP.number],
            "Synapse Admin LI (allowed networks, basic-auth gate)",
        ),
    ]
}

/// The key vault (Synapse main stores, the console retrieves) and the LI console.
fn li_console_flows(t: &Topology) -> Vec<Flow> {
    use Party::*;
    let (s3, s3_port) = s3_target(t);
    let mut f = vec![
        tcp(
            SynapseMain,
            KeyVault,
            &[reg::key_vault::HTTP.number],
            "escrow store: Synapse main's escrow module stores users' E2EE keys (store API key)",
        ),
        tcp(
            Edge,
            LiConsole,
            &[reg::li_console::HTTP.number],
            "LI console (allowed networks; its own login with a second factor)",
        ),
        tcp(
            LiConsole,
            LiPostgres,
            &[reg::cnpg::POSTGRES.number],
            "the LI console reads the replica (read-only role li_console)",
        ),
        tcp(
            LiConsole,
            KeyVault,
            &[reg::key_vault::HTTP.number],
            "escrow retrieval: the LI console retrieves escrowed keys under a warrant (retrieval API key)",
        ),
        tcp(
            LiConsole,
            s3,
            &[s3_port],
            "the LI console reads LI media (the read-only S3 identity of Synapse LI)",
        ),
    ];
    if t.has(Feature::Antivirus) {
        f.push(tcp(
            LiConsole,
            Clamav,
            &[reg::clamav::CLAMD.number],
            "the LI console has LI media scanned before it is shown or exported",
        ));
    }
    f
}

fn li_monitoring_flows(t: &Topology) -> Vec<Flow> {
    use Party::*;
    if !t.has(Feature::Monitoring) {
        return vec![];
    }
    vec![
        tcp(
            Monitoring,
            LiSync,
            &[reg::li_sync::HTTP.number],
            "li-sync metrics (lag, apply errors, media backlog)",
        ),
        tcp(
            Monitoring,
            KeyVault,
            &[reg::key_vault::HTTP.number],
            "key vault metrics (keys stored, retrievals, auth failures)",
        ),
        tcp(
            Monitoring,
            LiConsole,
            &[reg::li_console::METRICS.number],
            "LI console metrics (actions by kind, refused logins, audit write failures)",
        ),
        tcp(
            Monitoring,
            LiPostgres,
            &[reg::cnpg::METRICS.number],
            "LI PostgreSQL metrics",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxstack_spec::{Config, Tier};

    fn li(sync: LiSyncMode, backend: MediaBackend) -> Vec<Flow> {
        let mut c = Config::new("acme.test", Tier::T1k, [Feature::Li].into_iter().collect());
        c.li.sync = sync;
        c.media.backend = backend;
        flows(&Topology::build(&c))
    }

    fn has(f: &[Flow], from: Party, to: Party) -> bool {
        f.iter().any(|x| x.from == from && x.to == to)
    }

    #[test]
    fn li_flows_follow_the_sync_mode() {
        let logical = li(LiSyncMode::Logical, MediaBackend::Seaweedfs);
        assert!(has(&logical, Party::LiPostgres, Party::Postgres));
        assert!(!has(&logical, Party::LiDump, Party::Postgres));
        let dump = li(LiSyncMode::Dump, MediaBackend::Seaweedfs);
        assert!(!has(&dump, Party::LiPostgres, Party::Postgres));
        assert!(has(&dump, Party::LiDump, Party::Postgres));
        assert!(has(&dump, Party::LiDump, Party::LiPostgres));
        let none = flows(&Topology::build(&Config::new(
            "acme.test",
            Tier::T1k,
            Default::default(),
        )));
        assert!(none
            .iter()
            .all(|f| f.from != Party::LiSync && f.to != Party::LiPostgres));
    }

    #[test]
    fn li_reaches_the_internet_only_for_external_s3() {
        for backend in [MediaBackend::Seaweedfs, MediaBackend::MinioLegacy] {
            let f = li(LiSyncMode::Logical, backend);
            assert!(f.iter().all(|x| !(Party::ON_LI_NODES.contains(&x.from)
                || x.from == Party::LiPostgres)
                || x.to != Party::Internet));
        }
        let f = li(LiSyncMode::Logical, MediaBackend::S3);
        for x in f.iter().filter(|x| x.to == Party::Internet) {
            if Party::ON_LI_NODES.contains(&x.from) {
                assert_eq!(x.ports, [443], "{x:?}");
            }
        }
        assert!(has(&f, Party::SynapseLi, Party::Internet));
        // The web UIs reach nothing.
        assert!(f
            .iter()
            .all(|x| x.from != Party::ElementLi && x.from != Party::SynapseAdminLi));
    }

    #[test]
    fn only_the_working_copy_job_reaches_the_kubernetes_api() {
        for sync in [LiSyncMode::Logical, LiSyncMode::Dump] {
            let f = li(sync, MediaBackend::Seaweedfs);
            let api: Vec<&Flow> = f
                .iter()
                .filter(|x| x.to == Party::KubernetesApi || x.from == Party::KubernetesApi)
                .collect();
            assert_eq!(api.len(), 1, "{api:?}");
            assert_eq!(api[0].from, Party::LiWorkingCopy);
            assert_eq!(api[0].ports, KUBERNETES_API_PORTS);
        }
        assert!(!Party::KubernetesApi.in_namespace());
    }

    #[test]
    fn only_synapse_main_the_li_console_and_monitoring_reach_the_key_vault_and_it_reaches_nothing()
    {
        let mut c = Config::new(
            "acme.test",
            Tier::T1k,
            [Feature::Li, Feature::Monitoring].into_iter().collect(),
        );
        for monitoring in [true, false] {
            if !monitoring {
                c.features.remove(&Feature::Monitoring);
            }
            let f = flows(&Topology::build(&c));
            let to: Vec<(Party, Vec<u16>)> = f
                .iter()
                .filter(|x| x.to == Party::KeyVault)
                .map(|x| (x.from, x.ports.clone()))
                .collect();
            let mut expected = vec![
                (Party::SynapseMain, vec![reg::key_vault::HTTP.number]),
                (Party::LiConsole, vec![reg::key_vault::HTTP.number]),
            ];
            if monitoring {
                expected.push((Party::Monitoring, vec![reg::key_vault::HTTP.number]));
            }
            assert_eq!(to, expected);
            assert!(f.iter().all(|x| x.from != Party::KeyVault));
        }
        assert_eq!(Party::KeyVault.as_str(), reg::key_vault::COMPONENT.name());
    }

    #[test]
    fn the_li_console_reaches_the_replica_the_vault_and_li_media_and_only_the_edge_reaches_it() {
        for (antivirus, backend) in [
            (true, MediaBackend::Seaweedfs),
            (false, MediaBackend::Seaweedfs),
            (true, MediaBackend::MinioLegacy),
            (false, MediaBackend::S3),
        ] {
            let mut c = Config::new(
                "acme.test",
                Tier::T1k,
                [Feature::Li, Feature::Monitoring].into_iter().collect(),
            );
            if antivirus {
                c.features.insert(Feature::Antivirus);
            }
            c.media.backend = backend;
            let t = Topology::build(&c);
            let f = flows(&t);
            let (s3, s3_port) = s3_target(&t);
            let from: Vec<(Party, Vec<u16>)> = f
                .iter()
                .filter(|x| x.from == Party::LiConsole)
                .map(|x| (x.to, x.ports.clone()))
                .collect();
            let mut want = vec![
                (Party::LiPostgres, vec![reg::cnpg::POSTGRES.number]),
                (Party::KeyVault, vec![reg::key_vault::HTTP.number]),
                (s3, vec![s3_port]),
            ];
            if antivirus {
                want.push((Party::Clamav, vec![reg::clamav::CLAMD.number]));
            }
            want.sort();
            let mut got = from.clone();
            got.sort();
            assert_eq!(got, want, "{backend:?} antivirus={antivirus}");
            // The console reaches S3 the way Synapse LI does.
            assert!(f
                .iter()
                .any(|x| x.from == Party::SynapseLi && x.to == s3 && x.ports == [s3_port]));
            // Only the edge reaches its pages; Prometheus (with monitoring) its metrics port.
            let to: Vec<(Party, Vec<u16>)> = f
                .iter()
                .filter(|x| x.to == Party::LiConsole)
                .map(|x| (x.from, x.ports.clone()))
                .collect();
            assert_eq!(
                to,
                [
                    (Party::Edge, vec![reg::li_console::HTTP.number]),
                    (Party::Monitoring, vec![reg::li_console::METRICS.number])
                ]
            );
            // The key vault: Synapse main stores, the console retrieves, Prometheus scrapes.
            let mut vault: Vec<Party> = f
                .iter()
                .filter(|x| x.to == Party::KeyVault)
                .map(|x| x.from)
                .collect();
            vault.sort();
            assert_eq!(
                vault,
                [Party::SynapseMain, Party::LiConsole, Party::Monitoring]
            );
        }
        let none = flows(&Topology::build(&Config::new(
            "acme.test",
            Tier::T1k,
            [Feature::Antivirus].into_iter().collect(),
        )));
        assert!(none
            .iter()
            .all(|f| f.from != Party::LiConsole && f.to != Party::LiConsole));
        assert_eq!(Party::LiConsole.as_str(), reg::li_console::COMPONENT.name());
        assert!(Party::ON_LI_NODES.contains(&Party::LiConsole));
    }

    #[test]
    fn li_sync_is_named_like_its_address() {
        assert_eq!(Party::LiSync.as_str(), reg::li_sync::COMPONENT.name());
        assert!(Party::ON_LI_NODES.iter().all(|p| p.in_namespace()));
        assert!(!Party::ON_LI_NODES.contains(&Party::LiPrepareMain));
    }
}
